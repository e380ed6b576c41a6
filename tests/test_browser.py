"""A real browser on the example app: resumed threads look exactly like live ones.

Debian's headless Chromium, driven by Playwright, against `chainlit run examples/app.py`
on a temporary root. Screenshots of the key screens go to test-artifacts/.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chainlit")
playwright_api = pytest.importorskip("playwright.sync_api")

from conftest import REPO, App  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "test-artifacts"
TIMEOUT = 30_000

if not os.path.exists(CHROMIUM):
    if os.environ.get("CI"):
        pytest.fail("Chromium is missing: install Debian's chromium package", pytrace=False)
    pytest.skip("Chromium is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield instance
        finally:
            instance.close()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def log_in(page: Any, app: App, user: str) -> None:
    frames: list[str] = []
    page.on(
        "websocket",
        lambda ws: ws.on("framereceived", lambda payload: frames.append(str(payload))),
    )
    page.goto(app.url)
    page.wait_for_selector("#email", timeout=TIMEOUT)
    page.fill("#email", user)
    page.fill("#password", user)
    page.press("#password", "Enter")
    page.wait_for_selector("#chat-input", timeout=TIMEOUT)
    # Chainlit answers the client's "connection_successful" with task_end once its
    # session exists; an upload before that fails with "Session not found".
    for _ in range(TIMEOUT // 100):
        if any(frame.startswith('42["task_end"') for frame in frames):
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"the websocket never connected: {frames[:5]}")


def send(page: Any, text: str) -> None:
    page.wait_for_selector("#chat-input:not([disabled])", timeout=TIMEOUT)
    page.fill("#chat-input", text)
    page.click("#chat-submit")


def images_decoded(page: Any) -> list[int]:
    return page.eval_on_selector_all(
        "img[src*='/filelayer/elements/'], img[src*='/project/file/']",
        "els => els.map(e => e.complete ? e.naturalWidth : 0)",
    )


def wait_images(page: Any, count: int) -> None:
    page.wait_for_function(
        r"""n => {
            const imgs = [...document.querySelectorAll("img")]
              .filter(e => /\/filelayer\/elements\/|\/project\/file\//.test(e.src));
            return imgs.length >= n && imgs.every(e => e.complete && e.naturalWidth > 0);
        }""",
        arg=count,
        timeout=TIMEOUT,
    )


def open_thread_menu(page: Any, thread_id: str) -> None:
    item = page.locator(f"#thread-{thread_id}")
    item.hover()
    item.locator("#thread-options").click()


def manifest(app: App, thread_id: str) -> dict[str, Any]:
    path = app.root / "threads" / thread_id / "thread.json"
    return json.loads(path.read_text("utf-8")) if path.exists() else {}


def test_chat_resume_rename_search_share_delete(
    browser: Any, example_app: App, tmp_path: Path
) -> None:
    app = example_app
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    try:
        journey(browser, app, page, tmp_path)
    except Exception:
        shot(page, "failure")
        raise
    finally:
        context.close()


def journey(browser: Any, app: App, page: Any, tmp_path: Path) -> None:
    log_in(page, app, "admin")

    # Chat, with a file attached from the composer.
    upload = tmp_path / "shopping-list.txt"
    upload.write_text("flour\nwater\nsalt\n")
    page.set_input_files("#upload-button-input", str(upload))
    page.wait_for_selector("#attachments >> text=shopping-list.txt")
    send(page, "show me everything")
    page.wait_for_url("**/thread/**")
    answer = page.locator("[data-step-type='assistant_message']", has_text="Turn 1")
    answer.wait_for()
    page.wait_for_selector("text=search_notes")
    wait_images(page, 1)
    page.wait_for_selector(".js-plotly-plot")
    page.wait_for_selector("#custom-counter")
    thread_id = page.url.rstrip("/").split("/")[-1]
    shot(page, "1-live-answer")

    # Thumbs up with a comment, on the answer.
    page.locator(".positive-feedback-off").last.click()
    page.locator("textarea").last.fill("Exactly what I needed")
    page.click("#submit-feedback")
    page.wait_for_selector(".positive-feedback-on")

    # Reload: the thread is in the sidebar under its name; open it.
    page.reload()
    page.wait_for_selector(f"#thread-{thread_id}")
    assert "show me everything" in page.inner_text(f"#thread-{thread_id}")
    page.goto(app.url)
    page.wait_for_selector(f"#thread-{thread_id}")
    page.click(f"#thread-{thread_id}")
    page.wait_for_url(f"**/thread/{thread_id}")
    page.locator("[data-step-type='assistant_message']", has_text="Turn 1").wait_for()
    page.wait_for_selector("text=show me everything")
    page.wait_for_selector("text=search_notes")
    page.wait_for_selector("text=shopping-list.txt")
    wait_images(page, 1)
    assert all(width > 0 for width in images_decoded(page))
    page.wait_for_selector(".js-plotly-plot")
    page.wait_for_selector("table")
    page.wait_for_selector("#custom-counter")
    page.wait_for_selector(".positive-feedback-on")
    shot(page, "2-resumed-thread")
    if os.environ.get("FILELAYER_UPDATE_SCREENSHOT") == "1":  # the README's picture
        page.screenshot(path=str(REPO / "docs" / "screenshots" / "resumed-thread.png"))

    # Continue the conversation in the resumed thread.
    send(page, "and one more thing")
    page.locator("[data-step-type='assistant_message']", has_text="Turn 2").wait_for()

    # Rename it from the sidebar.
    open_thread_menu(page, thread_id)
    page.click("#rename-thread")
    page.fill("#name", "Bread plans")
    page.locator("[role='dialog'] button", has_text="Confirm").click()
    page.wait_for_selector(f"#thread-{thread_id} >> text=Bread plans")
    assert manifest(app, thread_id)["name"] == "Bread plans"

    # Search the sidebar.
    page.click("#search-chats-button")
    page.keyboard.type("bread plans")
    page.wait_for_selector("[cmdk-item] >> text=Bread plans")
    shot(page, "3-search")
    page.keyboard.press("Escape")

    # Share it, and open the link logged out.
    open_thread_menu(page, thread_id)
    page.click("#share-thread")
    dialog = page.locator("[role='dialog']")
    dialog.locator("button", has_text="Share").first.click()
    for _ in range(50):  # the share request lands in the manifest
        if manifest(app, thread_id).get("metadata", {}).get("is_shared"):
            break
        page.wait_for_timeout(200)
    assert manifest(app, thread_id)["metadata"]["is_shared"] is True
    page.keyboard.press("Escape")
    # Another user, in a fresh browser: Chainlit's UI sends logged-out visitors of an
    # app that requires login to its login page first.
    visitor = browser.new_context(viewport={"width": 1280, "height": 900})
    shared = visitor.new_page()
    shared.set_default_timeout(TIMEOUT)
    log_in(shared, app, "guest")
    shared.goto(f"{app.url}/share/{thread_id}")
    shared.locator("text=Turn 1").first.wait_for()
    wait_images(shared, 1)
    shot(shared, "4-shared-with-another-user")
    visitor.close()

    # Delete it: gone from the sidebar and from the disk.
    open_thread_menu(page, thread_id)
    page.click("#delete-thread")
    page.click("[role='alertdialog'] button.bg-primary")
    page.wait_for_selector(f"#thread-{thread_id}", state="detached")
    for _ in range(50):
        if not (app.root / "threads" / thread_id).exists():
            break
        page.wait_for_timeout(200)
    assert not (app.root / "threads" / thread_id).exists()
