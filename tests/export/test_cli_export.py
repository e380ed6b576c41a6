"""`filelayer export`: Markdown that renders on GitHub, stable across runs."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from filelayer.cli import main
from tests.support.cli import build_archive
from tests.support.processes import subprocess_env


@pytest.fixture
def archive(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    build_archive(root)
    monkeypatch.setenv("FILELAYER_ROOT", str(root))
    return root


def tree(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_export_all_to_a_directory(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["export", "--all", "-o", str(out)]) == 0
    names = sorted(p.name for p in out.glob("*.md"))
    assert len(names) == 3
    [bread] = [n for n in names if "sourdough-bread" in n]
    assert bread.endswith("-bread.md") and bread[:4].isdigit()
    text = (out / bread).read_text("utf-8")
    head, body = text.split("---\n", 2)[1:]
    assert 'id: "bread"' in head and 'author: "alice@example.com"' in head
    assert 'tags: ["baking"]' in head and 'name: "Sourdough bread"' in head
    assert body.startswith("\n# Sourdough bread\n")
    # Order, authors and times of each message; markdown kept as it is.
    assert body.index("**alice@example.com** · 2026-03-01 10:00 UTC") < body.index(
        "How do I bake **sourdough**?"
    )
    assert body.index("**Assistant** · 2026-03-01 10:03 UTC") < body.index("- flour\n- water")
    # Tool steps folded, feedback shown, elements copied and linked.
    assert "<details>\n<summary>search_notes (tool)</summary>" in body
    assert body.count("<details>") == body.count("</details>") == 2
    assert "> 👍 Very helpful" in body
    stem = bread[: -len(".md")]
    assert f"![loaf.png]({stem}.files/img1.png)" in body
    assert f"📎 [recipe.pdf]({stem}.files/doc1.pdf)" in body
    assert (out / f"{stem}.files" / "img1.png").read_bytes() == b"\x89PNG fake"
    cake = (out / next(n for n in names if "chocolate" in n)).read_text("utf-8")
    assert "> 👎 Too short" in cake


def test_export_all_leaves_out_a_deleted_thread_whose_directory_is_still_there(
    archive: Path, tmp_path: Path
) -> None:
    """A tombstone whose thread directory is still on disk (a merge before ``filelayer
    resolve``, a crash between the two steps of a deletion) is a deleted thread:
    ``export --all`` used to stop at it with "no thread", exporting nothing after it."""
    with (archive / "deleted.jsonl").open("ab") as tombstones:
        tombstones.write(b'{"deletedAt":"2026-04-01T00:00:00.000000Z","id":"cake"}\n')
    assert (archive / "threads" / "cake").is_dir()
    out = tmp_path / "out"
    assert main(["export", "--all", "-o", str(out)]) == 0
    names = sorted(p.name for p in out.glob("*.md"))
    assert len(names) == 2 and not [n for n in names if "chocolate" in n]
    assert main(["export", "cake"]) == 2  # named, it is still an error


def test_re_exporting_an_unchanged_archive_is_byte_identical(archive: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    main(["export", "--all", "-o", str(first)])
    main(["export", "--all", "-o", str(second)])
    assert tree(first) == tree(second)
    mtimes = {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()}
    main(["export", "--all", "-o", str(first)])
    assert {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()} == mtimes


def test_export_by_user_and_by_date(archive: Path, tmp_path: Path) -> None:
    main(["export", "--user", "bob", "-o", str(tmp_path / "bob")])
    assert [p.name.split("-", 3)[-1] for p in (tmp_path / "bob").glob("*.md")] == ["hi-hello.md"]
    assert main(["export", "--since", "2999-01-01", "-o", str(tmp_path / "none")]) == 1


def test_export_one_thread_to_stdout_and_as_json(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", "cake"]) == 0
    out = capsys.readouterr().out
    assert out.startswith('---\nid: "cake"') and "Melt the chocolate." in out
    assert main(["export", "cake", "--format", "json"]) == 0
    thread = json.loads(capsys.readouterr().out)
    assert thread["id"] == "cake" and len(thread["steps"]) == 4


def test_export_needs_a_selection(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export"]) == 2
    assert "say what to export" in capsys.readouterr().err


def test_the_cli_runs_without_chainlit_or_optional_packages(archive: Path, tmp_path: Path) -> None:
    prelude = "".join(
        f"import sys; sys.modules[{m!r}] = None\n"
        for m in ("chainlit", "orjson", "aiofiles", "filelock")
    )
    code = prelude + (
        "import runpy, sys\n"
        f"sys.argv = ['filelayer', '--root', {str(archive)!r}, 'export', 'bread']\n"
        "runpy.run_module('filelayer', run_name='__main__')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "# Sourdough bread" in result.stdout


def test_python_dash_m_and_the_console_script_agree(archive: Path, tmp_path: Path) -> None:
    by_module = subprocess.run(
        [sys.executable, "-m", "filelayer", "list", "--json"],
        capture_output=True,
        text=True,
        env=subprocess_env(FILELAYER_ROOT=str(archive)),
        cwd=tmp_path,
        check=True,
    ).stdout
    script = Path(sys.executable).with_name("filelayer")
    if script.exists():
        by_script = subprocess.run(
            [str(script), "list", "--json"],
            capture_output=True,
            text=True,
            env=subprocess_env(FILELAYER_ROOT=str(archive)),
            cwd=tmp_path,
            check=True,
        ).stdout
        assert by_script == by_module
    assert len(by_module.splitlines()) == 3


@pytest.mark.parametrize("inside", [".", "threads", "threads/bread", "users", "exports/../threads"])
def test_export_refuses_the_root_and_the_layer_s_own_directories(
    archive: Path, capsys: pytest.CaptureFixture[str], inside: str
) -> None:
    """Pages and files exported into the archive itself became a thread of their own
    (a ``.files`` directory in ``threads/``, which repair then gave a manifest) and
    copies of conversations that an erasure does not look for."""
    before = sorted(p.relative_to(archive).as_posix() for p in archive.rglob("*"))
    target = archive / inside
    assert main(["--root", str(archive), "export", "--all", "-o", str(target)]) == 2
    assert "one of its own directories" in capsys.readouterr().err
    after = sorted(p.relative_to(archive).as_posix() for p in archive.rglob("*"))
    assert [p for p in after if p not in before and not p.startswith(("index", "locks"))] == []


class _Terminal(io.StringIO):
    encoding = "utf-8"

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("fmt", ["markdown", "html", "json"])
def test_an_export_printed_on_a_terminal_cannot_drive_it(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread printed to a terminal holds what a chat user typed: an escape sequence
    (clear the screen, set the window's title, write the clipboard), a C1 control (CSI in
    one character) or a bidirectional override reached the terminal as it was, as
    ``show`` never lets it. Printed as escapes there; a pipe or a file still gets the
    export byte for byte."""
    from filelayer import ArchiveStore

    nasty = "hi\x1b[2J\x1b]52;c;Y3VybCBldmlsfHNo\x07\x9b31m\u202eforged"
    store = ArchiveStore(tmp_path)
    store.write_step(
        {"id": "s1", "threadId": "t1", "type": "user_message", "output": nasty, "name": "x"}
    )
    store.update_thread("t1", name=nasty)
    store.close()
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    assert main(["--root", str(tmp_path), "export", "t1", "--format", fmt]) == 0
    shown = terminal.getvalue()
    assert not any(c in shown for c in "\x1b\x07\x9b\u202e"), shown
    assert "forged" in shown and "\n" in shown
    if fmt == "json":
        assert json.loads(shown)["name"] == nasty  # still JSON, with JSON's escapes


def test_a_json_export_holds_an_integer_of_any_size(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The format stores integers of more digits than the interpreter converts to text
    (the layer lifts the limit for its own writing and reading): the JSON export wrote
    them with the standard library's writer, held to that limit, and left the whole
    thread out."""
    from filelayer import ArchiveStore

    big = 10**5000 + 7
    limit = sys.get_int_max_str_digits()
    store = ArchiveStore(root)
    store.update_thread("t1", name="numbers", metadata={"n": big})
    store.close()
    monkeypatch.setenv("FILELAYER_ROOT", str(root))
    out = tmp_path / "out"
    assert main(["export", "t1", "--format", "json", "-o", str(out)]) == 0
    [page] = out.glob("*.json")
    text = page.read_text(encoding="utf-8")
    assert str(big % 10**20).zfill(20) in text
    assert sys.get_int_max_str_digits() == limit


def test_an_html_export_streams_its_page_to_the_file(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 20 MB tool output made a page built whole several times over (the escaped
    text, each nesting's join, the page, its bytes, the file read back to compare):
    the page is written to its file piece by piece, and compared piece by piece when
    it is there already. Measured from the moment the thread is read (its own size is
    the store's), the export holds less than the page's size more (it was five times)."""
    import tracemalloc

    from filelayer import ArchiveStore

    size = 4 << 20
    line = "the <quick> brown fox & the lazy dog " * 4 + "\n"
    output = line * (size // len(line))
    store = ArchiveStore(root)
    store.write_step({"id": "u", "threadId": "t", "type": "user_message", "output": "hi"})
    step = {"id": "s", "threadId": "t", "parentId": "u", "type": "tool", "output": output}
    store.write_step(step)
    store.close()
    read = ArchiveStore.get_thread
    base = [0]

    def measured(self: ArchiveStore, *args: object, **kwargs: object) -> object:
        found = read(self, *args, **kwargs)  # type: ignore[arg-type]
        tracemalloc.reset_peak()
        base[0] = tracemalloc.get_traced_memory()[0]
        return found

    monkeypatch.setattr(ArchiveStore, "get_thread", measured)
    out = tmp_path / "out"
    for _ in ("written", "compared"):
        tracemalloc.start()
        try:
            assert (
                main(["--root", str(root), "export", "t", "-o", str(out), "--format", "html"]) == 0
            )
            peak = tracemalloc.get_traced_memory()[1] - base[0]
        finally:
            tracemalloc.stop()
        assert peak < size, peak / size  # it was five times the size
    [page] = out.glob("*.html")
    text = page.read_text()
    assert text.count("the &lt;quick&gt; brown fox &amp; the lazy dog") == output.count("<quick>")
    assert text.endswith("</html>\n")


def test_an_html_export_printed_to_stdout_is_written_as_it_is_made(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``-o`` the page went to stdout built whole first (and copied again for an
    ASCII stdout): more than three times a 15 MB tool output beside the thread. It is
    written to stdout piece by piece, the same page, in less than 4 MB."""
    import tracemalloc

    from filelayer import ArchiveStore

    size = 4 << 20
    line = "the <quick> brown fox & the lazy dog " * 4 + "\n"
    store = ArchiveStore(root)
    store.write_step({"id": "u", "threadId": "t", "type": "user_message", "output": "hi"})
    step = {"id": "s", "threadId": "t", "parentId": "u", "type": "tool", "output": line * 100_000}
    store.write_step(step)
    store.close()
    read = ArchiveStore.get_thread
    base = [0]

    def measured(self: ArchiveStore, *args: object, **kwargs: object) -> object:
        found = read(self, *args, **kwargs)  # type: ignore[arg-type]
        tracemalloc.reset_peak()
        base[0] = tracemalloc.get_traced_memory()[0]
        return found

    monkeypatch.setattr(ArchiveStore, "get_thread", measured)
    printed = tmp_path / "page.html"
    for encoding in ("utf-8", "ascii"):
        with open(printed, "w", encoding=encoding) as stdout:
            monkeypatch.setattr(sys, "stdout", stdout)
            tracemalloc.start()
            try:
                assert main(["--root", str(root), "export", "t", "--format", "html"]) == 0
                peak = tracemalloc.get_traced_memory()[1] - base[0]
            finally:
                tracemalloc.stop()
        assert peak < size, (encoding, peak / size)
        text = printed.read_text(encoding=encoding)
        assert text.count("the &lt;quick&gt; brown fox &amp; the lazy dog") == 400_000
        assert text.startswith("<!DOCTYPE html>") and text.endswith("</html>\n")
