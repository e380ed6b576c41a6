"""Exports in a real browser: the HTML page, the Markdown as GitHub would render it, the
chart pages, and the example app's "Export this conversation" button.

Debian's headless Chromium driven by Playwright, as in test_browser.py. Screenshots go
to test-artifacts/. With FILELAYER_UPDATE_EXAMPLE=1 the app test also rewrites
examples/exported/ from the conversation it had.
"""

from __future__ import annotations

import io
import os
import shutil
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chainlit")
playwright_api = pytest.importorskip("playwright.sync_api")

from filelayer import ArchiveStore  # noqa: E402
from filelayer.cli import main  # noqa: E402
from filelayer.export.elements import plotly_script  # noqa: E402
from tests.chainlit.test_browser import ARTIFACTS, CHROMIUM, FLAGS, TIMEOUT, log_in, send, shot  # noqa: E402
from tests.support.apps import App  # noqa: E402
from tests.support.export import THREAD, every_element_archive  # noqa: E402
from tests.support.processes import REPO  # noqa: E402

if not os.path.exists(CHROMIUM):
    pytest.skip("Chromium is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(TIMEOUT)
    dialogs: list[str] = []
    opened.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    opened.dialogs = dialogs
    try:
        yield opened
    finally:
        context.close()


def decoded_images(page: Any) -> list[int]:
    page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=TIMEOUT)
    return page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")


@pytest.fixture
def exported(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    every_element_archive(root)
    monkeypatch.setenv("FILELAYER_ROOT", str(root))
    out = tmp_path / "exported"
    assert main(["export", THREAD, "-o", str(out)]) == 0
    assert main(["export", THREAD, "--format", "html", "-o", str(out)]) == 0
    return out


def test_the_html_export_reads_like_the_chat(exported: Path, page: Any) -> None:
    [html_page] = exported.glob("*.html")
    page.goto(html_page.as_uri())
    page.wait_for_selector("section.msg.user")
    text = page.inner_text("body")
    assert "Show me everything <script>alert(1)</script>" in text  # shown, never run
    assert page.dialogs == []
    assert "Details in Markdown: knead for ten minutes." in text
    assert "the first 20 of 30 rows" in text and "loaf 19" in text and "loaf 20" not in text
    assert 'return "|" * hours' in text
    assert page.locator("table tbody tr").count() == 20
    widths = decoded_images(page)
    assert widths == [60], widths
    # the user on the right, the assistant on the left
    user = page.locator("section.msg.user .bubble").bounding_box()
    bot = page.locator("section.msg.assistant .bubble").first.bounding_box()
    assert user["x"] > bot["x"]
    if plotly_script() is not None:  # the chart drawn in place, by its own page
        page.locator("iframe.chart").scroll_into_view_if_needed()
        chart = page.frame_locator("iframe.chart")
        chart.locator(".main-svg").first.wait_for()
        assert chart.locator(".bars path").count() == 2
        page.locator("iframe.chart").screenshot(path=str(ARTIFACTS / "export-html-chart.png"))
    # the audio element plays from the file beside the page
    page.wait_for_function("() => document.querySelector('audio').duration > 0.2")
    page.locator("details.step summary").first.click()
    page.wait_for_selector("text=Found 2 notes")
    shot(page, "export-html")


def test_a_script_that_got_into_an_html_export_does_not_run(exported: Path, page: Any) -> None:
    """Every character of the data is escaped; should a renderer bug ever let markup
    through, the page itself forbids scripts (its own policy, as the app's route sends
    one): a script element and an event handler put into the exported file stay inert,
    and the page still shows its images and its chart."""
    [html_page] = exported.glob("*.html")
    text = html_page.read_text("utf-8")
    injected = (
        "<body><script>document.title = 'pwned'; alert(1)</script>"
        '<img src="nowhere.png" onerror="document.title = \'pwned\'">'
    )
    html_page.write_text(text.replace("<body>", injected, 1), "utf-8")
    page.goto(html_page.as_uri())
    page.wait_for_selector("section.msg.user")
    assert [w for w in decoded_images(page) if w] == [60]  # every image loaded or failed
    page.evaluate("() => new Promise(r => setTimeout(r, 50))")  # its error event ran
    assert page.dialogs == []
    assert page.title() != "pwned"


def test_the_markdown_export_renders_with_tables_images_and_text(exported: Path, page: Any) -> None:
    markdown_it = pytest.importorskip("markdown_it")
    [md] = exported.glob("*.md")
    body = md.read_text("utf-8").split("---\n", 2)[2]
    rendered = markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table").render(body)
    # beside the .md, so that its relative links resolve as they would on GitHub
    preview = md.with_suffix(".preview.html")
    preview.write_text(f"<!DOCTYPE html><meta charset=utf-8><body>{rendered}</body>", "utf-8")
    page.goto(preview.as_uri())
    text = page.inner_text("body")
    assert "Details in Markdown: knead for ten minutes." in text
    assert page.locator("table tbody tr").count() == 20
    assert page.locator("table td", has_text="a|b").count() == 1
    assert decoded_images(page) == [60]
    for link in page.eval_on_selector_all("a", "els => els.map(e => e.getAttribute('href'))"):
        assert (exported / link).exists(), link  # every link leads to a file beside it
    shot(page, "export-markdown")


def test_a_chart_page_draws_the_chart(exported: Path, page: Any) -> None:
    if plotly_script() is None:
        pytest.skip("plotly is not installed: charts are exported as JSON")
    [chart] = exported.glob("*.files/_charts/chart.html")
    assert [p.name for p in exported.glob("*.js")] == ["plotly.min.js"]
    page.goto(chart.as_uri())
    page.wait_for_selector(".main-svg")
    assert "Loaves per day" in page.inner_text("body")
    assert page.locator(".main-svg .bars path").count() == 2
    shot(page, "export-chart")


# -- the example app's button -----------------------------------------------------------


def test_the_example_app_exports_a_conversation(
    browser: Any, example_app: App, tmp_path: Path
) -> None:
    app = example_app
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    try:
        log_in(page, app, "admin")
        send(page, "How do I bake sourdough bread? Show me everything")
        page.wait_for_url("**/thread/**")
        page.locator("[data-step-type='assistant_message']", has_text="Turn 1").wait_for()
        page.wait_for_selector(".js-plotly-plot")
        thread_id = page.url.rstrip("/").split("/")[-1]
        if os.environ.get("FILELAYER_UPDATE_EXAMPLE") == "1":
            update_example(app.root, thread_id)
        page.get_by_role("button", name="Export this conversation").first.click()
        link = page.locator("a", has_text="Markdown with its files (zip)")
        link.wait_for()
        zip_href = link.get_attribute("href")
        html_href = page.locator("a", has_text="web page").get_attribute("href")
        assert zip_href == f"/filelayer/export/{thread_id}?format=markdown"
        shot(page, "export-action")

        answer = page.request.get(app.url + zip_href)
        assert answer.status == 200
        members = zipfile.ZipFile(io.BytesIO(answer.body()))
        [md_name] = [n for n in members.namelist() if n.endswith(".md")]
        text = members.read(md_name).decode("utf-8")
        assert "How do I bake sourdough bread? Show me everything" in text
        assert "📊 **words**" in text and "📄 **details**" in text
        names = members.namelist()
        assert any("/_tables/" in n for n in names) and "plotly.min.js" in names

        page.goto(app.url + html_href)
        page.wait_for_selector("section.msg.user")
        assert "How do I bake sourdough bread? Show me everything" in page.inner_text("body")
        assert all(width > 0 for width in decoded_images(page))
        shot(page, "export-served-html")

        # another user gets what they would get for a thread that does not exist
        guest = browser.new_context()
        guest_page = guest.new_page()
        log_in(guest_page, app, "guest")
        refused = guest_page.request.get(app.url + zip_href)
        assert refused.status == 404 and b"sourdough" not in refused.body()
        guest.close()
    except Exception:
        shot(page, "export-failure")
        raise
    finally:
        context.close()


def update_example(root: Path, thread_id: str) -> None:
    """Rewrite examples/exported/ from the conversation this test had (its
    .gitignore, which keeps the 4.6 MB plotly.min.js out of the repository, stays)."""
    target = REPO / "examples" / "exported"
    for path in target.iterdir():
        if path.name != ".gitignore":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    store = ArchiveStore(root)
    for _ in range(100):  # the answer's seven elements are stored
        thread = store.get_thread(thread_id)
        if thread is not None and len(thread["elements"]) >= 7:
            break
        time.sleep(0.1)
    for fmt in ("markdown", "html"):
        assert (
            main(["--root", str(root), "export", thread_id, "--format", fmt, "-o", str(target)])
            == 0
        )
