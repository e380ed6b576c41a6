"""Uploads named like the layer's own files are stored, verified, repaired, compacted and
committed like any other: only the layer's own transient files (named ``.filelayer-…``,
or 0.1.0's ``.<name>.<8 hex>.tmp``) are ever removed by a repair or ignored by git."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from filelayer import ArchiveStore
from filelayer._io.fs import temp_path
from filelayer.cli import main
from filelayer.format.layout import (
    GITIGNORE_BLOCK,
    RESERVED_PREFIX,
    deleting_path,
    is_layer_leftover,
)
from tests.support.git import git_out

# Upload names: every pattern the layer uses, or used, for its own files.
UPLOAD_NAMES = [
    "x.tmp",
    "draft.TMP",
    "Cargo.lock",
    "poetry.lock",
    "yarn.lock",
    "package-lock.json",
    ".x.tmp",
    "index.lock",
    "users.lock",
    "thread-07.lock",
    "thread-07.lock.held",
    ".deleting.tmp",
    "x.deleting.tmp",
    ".thread.json.abcd1234.tmp",
    ".filelayer-x.tmp",
    ".filelayer-",
    "a.filelayer-tmp",
    "steps.jsonl",
    "steps.jsonl.damaged",
    "thread.json",
    ".gitignore",
    "threads.jsonl",
    "notes~",
    "no extension",
]
# Element ids (so file names) shaped like the layer's names too, each with a name
# without an extension (the file is the id alone) and one with an extension.
ODD_IDS = [
    "index.lock",
    "x.tmp",
    "thread-07.lock",
    "a.1234abcd.tmp",
    "b.1234abcd.deleting.tmp",
    "filelayer-x.1234abcd.tmp",
    "locks",
    "index",
    "unreferenced",
]
# The mime types whose first extension in some systems' tables is not plain.
ODD_MIMES = ["application/x-trash", "text/x-c++src"]


def uploads() -> list[tuple[dict[str, Any], bytes]]:
    made = []
    for n, name in enumerate(UPLOAD_NAMES):
        element = {"id": f"up{n}", "type": "file", "name": name, "forId": "m1"}
        made.append((element, f"upload {name!r}\n".encode()))
    for n, element_id in enumerate(ODD_IDS):
        made.append(
            ({"id": element_id, "type": "file", "name": "upload", "forId": "m1"}, b"plain %d" % n)
        )
        made.append(
            (
                {"id": f"{element_id}.v2", "type": "file", "name": "y.lock", "forId": "m1"},
                b"lock %d" % n,
            )
        )
    for n, mime in enumerate(ODD_MIMES):
        made.append(({"id": f"mime{n}", "type": "file", "mime": mime, "forId": "m1"}, b"m"))
    return made


def fill(root: Path) -> dict[str, bytes]:
    """An archive whose thread ``t1`` holds every odd upload; the element files it made,
    by path relative to the root."""
    store = ArchiveStore(root)
    user = store.upsert_user("ann")
    store.write_step({"id": "m1", "threadId": "t1", "type": "user_message", "output": "files"})
    store.update_thread("t1", name="odd names", user_id=user["id"])
    files = {}
    for element, data in uploads():
        assert store.put_element("t1", element, data)
        found = store.element_file("t1", element["id"])
        assert found is not None, element
        files[found[1].relative_to(root).as_posix()] = data
    store.close()
    assert len(set(files)) == len(uploads())  # no two elements share a file
    return files


def element_tree(root: Path) -> dict[str, bytes]:
    directory = root / "threads" / "t1" / "elements"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(directory.iterdir())}


def cli(root: Path, *args: str) -> int:
    return main(["--root", str(root), *args])


def test_element_file_names_never_take_a_reserved_name(tmp_path: Path) -> None:
    store = ArchiveStore(tmp_path / "chats")
    for element, _ in uploads():
        relative = store.element_relative_path(element["id"], element.get("name"), None)
        name = relative.split("/", 1)[1]
        assert not name.startswith(".") and not is_layer_leftover(name), name
        assert store.layout.element_file("t1", relative) is not None
    for mime in ODD_MIMES:
        name = store.element_relative_path("e1", None, mime).split("/", 1)[1]
        assert name.split(".", 1)[1].isalnum(), name  # e1.bak, e1.cpp: not .~ nor .c++
    target = tmp_path / "chats" / "threads" / "t1" / "elements" / "x.lock"
    for made in (temp_path(target), deleting_path(target.parent.parent)):
        assert made.name.startswith(RESERVED_PREFIX) and is_layer_leftover(made.name)
    # filelayer 0.1.0's names are still recognised as leftovers.
    assert is_layer_leftover(".thread.json.0badc0de.tmp")
    assert is_layer_leftover(".t1.deadbeef.deleting.tmp")
    for name in ("x.tmp", "e2.tmp", "a.1234abcd.tmp", "index.lock", ".gitignore", "x.deleting.tmp"):
        assert not is_layer_leftover(name), name


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("e1", "report.pdf", None), ("e1.pdf", "other", None)),
        (("e1.pdf", "other", None), ("e1", "report.pdf", None)),
        (("e1", None, "application/pdf"), ("e1.pdf", None, None)),
    ],
)
def test_two_elements_never_share_a_file(
    tmp_path: Path, first: tuple[str, str | None, str | None], second: tuple[str, Any, Any]
) -> None:
    """Element ``e1`` named ``report.pdf`` and element ``e1.pdf`` (ids may hold dots)
    were both stored as ``elements/e1.pdf``: the second send replaced the first one's
    bytes. An id with a dot always takes an extension of its own, so no element's file
    name is another's id plus its extension."""
    root = tmp_path / "chats"
    store = ArchiveStore(root)
    store.write_step({"id": "u1", "threadId": "t1", "type": "user_message", "output": "hi"})
    for n, (element_id, name, mime) in enumerate((first, second)):
        element = {"id": element_id, "type": "file", "forId": "u1", "name": name, "mime": mime}
        store.put_element("t1", {k: v for k, v in element.items() if v}, f"bytes {n}".encode())
    store.close()
    store = ArchiveStore(root)
    try:
        for n, (element_id, _, _) in enumerate((first, second)):
            found = store.element_file("t1", element_id)
            assert found is not None and found[1].read_bytes() == f"bytes {n}".encode()
    finally:
        store.close()


def test_the_layer_writes_only_reserved_temporary_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    renamed: list[tuple[str, str]] = []
    real_replace = os.replace

    def recording(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        renamed.append((Path(src).name, Path(dst).name))
        real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", recording)
    root = tmp_path / "chats"
    fill(root)
    store = ArchiveStore(root)
    store.update_thread("t1", name="renamed")
    store.write_step({"id": "m1", "threadId": "t1", "output": "again"})
    assert cli(root, "compact") == 0
    store.reindex()
    store.write_step({"id": "m9", "threadId": "gone", "type": "user_message", "output": "x"})
    store.delete_thread("gone")
    # A write renames a temporary file over its target; a deletion renames the thread
    # directory away before removing it.
    deleted = [(src, dst) for src, dst in renamed if src == "gone"]
    assert len(deleted) == 1 and deleted[0][1].startswith(RESERVED_PREFIX + "gone.")
    written = [src for src, _ in renamed if src != "gone"]
    assert len(written) > 20 and [n for n in written if not n.startswith(RESERVED_PREFIX)] == []


def test_odd_uploads_verify_repair_and_compact_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "chats"
    files = fill(root)
    assert element_tree(root) == files
    assert cli(root, "verify") == 0
    assert "no problems" in capsys.readouterr().err
    assert cli(root, "verify", "--repair") == 0
    out = capsys.readouterr()
    assert "repaired" not in out.out and "no problems" in out.err
    assert element_tree(root) == files
    assert cli(root, "compact") == 0
    assert cli(root, "verify") == 0
    assert element_tree(root) == files
    assert not (root / "threads" / "t1" / "unreferenced").exists()
    store = ArchiveStore(root)
    for element, data in uploads():
        found = store.element_file("t1", element["id"])
        assert found is not None and found[1].read_bytes() == data
        assert found[0]["sha256"] == hashlib.sha256(data).hexdigest()


def test_leftovers_of_both_schemes_are_removed_and_only_they(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "chats"
    files = fill(root)
    thread = root / "threads" / "t1"
    leftovers = [
        thread / "elements" / ".filelayer-up0.tmp.0badc0de.tmp",
        thread / "elements" / ".up1.lock.0badc0de.tmp",  # 0.1.0
        thread / ".filelayer-thread.json.12345678.tmp",
        thread / ".steps.jsonl.12345678.tmp",  # 0.1.0
        root / "users" / ".filelayer-ann-0123.json.aaaaaaaa.tmp",
        root / "index" / ".filelayer-threads.jsonl.bbbbbbbb.tmp",
        root / ".filelayer-.gitignore.cccccccc.tmp",
        root / ".filelayer.json.dddddddd.tmp",  # 0.1.0
    ]
    for path in leftovers:
        path.write_text("half")
    doomed = [
        root / "threads" / ".filelayer-gone.deadbeef.deleting.tmp",
        root / "threads" / ".gone2.deadbeef.deleting.tmp",  # 0.1.0
    ]
    for directory in doomed:
        (directory / "elements").mkdir(parents=True)
        (directory / "elements" / "e1.lock").write_text("deleted")
    assert cli(root, "verify") == 1
    out = capsys.readouterr().out
    for path in leftovers + doomed:
        assert f"{path.relative_to(root).as_posix()}: leftover temporary file" in out
    assert out.count("problem:") == len(leftovers) + len(doomed)
    assert cli(root, "verify", "--repair") == 0
    assert not [p for p in leftovers + doomed if p.exists()]
    assert element_tree(root) == files
    assert cli(root, "verify") == 0


def test_a_file_the_journal_names_is_kept_whatever_its_name(tmp_path: Path) -> None:
    """A hand-edited journal may name a file the layer would never write: verify says
    so, and --repair neither removes nor moves that file."""
    root = tmp_path / "chats"
    files = fill(root)
    store = ArchiveStore(root)
    odd = root / "threads" / "t1" / "elements" / ".filelayer-up0.tmp.0badc0de.tmp"
    odd.write_bytes(b"precious")
    line = (
        b'{"element":{"file":"elements/.filelayer-up0.tmp.0badc0de.tmp","forId":"m1",'
        b'"id":"hand","name":"h.tmp","type":"file"},"op":"element"}\n'
    )
    with open(store.layout.journal("t1"), "ab") as journal:
        journal.write(line)
    assert cli(root, "verify", "--repair") == 1  # the odd name is reported, not repaired
    assert odd.read_bytes() == b"precious"
    assert {k: v for k, v in element_tree(root).items() if k in files} == files


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_commits_every_element_file_and_ignores_the_layers_files(tmp_path: Path) -> None:
    repo = tmp_path / "project"
    root = repo / "chats"
    files = fill(root)
    thread = root / "threads" / "t1"
    ours = [
        thread / "elements" / ".filelayer-up0.tmp.0badc0de.tmp",
        thread / ".filelayer-thread.json.12345678.tmp",
        thread / ".steps.jsonl.12345678.tmp",
        root / "users" / ".filelayer-x.json.aaaaaaaa.tmp",
    ]
    for path in ours:
        path.write_text("half")
    # The project's own rules, and a global excludes file, ignore what uploads are named.
    (repo / ".gitignore").write_text("*.lock\n*.tmp\n*~\n*.damaged\n")
    excludes = tmp_path / "global-excludes"
    excludes.write_text("*.lock\n*.tmp\n*.held\n*~\n*.bak\n")
    git_out(repo, "init", "-q")
    git_out(repo, "config", "user.email", "test@example.com")
    git_out(repo, "config", "user.name", "Test")
    git_out(repo, "config", "core.excludesFile", str(excludes))
    git_out(repo, "add", "-A")
    git_out(repo, "commit", "-q", "-m", "archive")
    tracked = set(git_out(repo, "ls-files").splitlines())
    assert {f"chats/{path}" for path in files} <= tracked
    assert "chats/.gitignore" in tracked and "chats/threads/t1/steps.jsonl" in tracked
    assert not [t for t in tracked if t.startswith(("chats/index/", "chats/locks/"))]
    status = git_out(repo, "status", "--porcelain", "--ignored", "--untracked-files=all")
    ignored = {line[3:] for line in status.splitlines() if line.startswith("!! ")}
    for path in ours:
        assert path.relative_to(repo).as_posix() in ignored
    assert any(p.startswith("chats/locks/") for p in ignored)
    assert "chats/index/current" in ignored
    assert not {line for line in status.splitlines() if not line.startswith("!! ")}
    assert (root / ".gitignore").read_text() == GITIGNORE_BLOCK


async def test_uploads_through_the_data_layer(
    root: Path, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("chainlit")
    from chainlit.context import init_http_context
    from chainlit.element import File

    from filelayer import FileDataLayer

    init_http_context()
    layer = FileDataLayer(root)
    stored = {}
    for name in UPLOAD_NAMES:
        element = File(name=name, content=f"{name}\n".encode(), for_id="m1", thread_id="t1")
        await layer.create_element(element)
        stored[element.id] = f"{name}\n".encode()
    directory = root / "threads" / "t1" / "elements"
    assert len(list(directory.iterdir())) == len(UPLOAD_NAMES)
    assert cli(root, "verify", "--repair") == 0
    assert "no problems" in capsys.readouterr().err
    assert cli(root, "compact") == 0
    for element_id, data in stored.items():
        found = layer.store.element_file("t1", element_id)
        assert found is not None and found[1].read_bytes() == data
    await layer.close()
