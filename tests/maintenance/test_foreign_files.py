"""What a hostile branch (or a careless hand) can put in an archive besides files:
symbolic links (git keeps them), FIFOs, directories where files belong. No command
follows a link out of the root, reads through it, or writes through it; none hangs or
stops for one bad thread; ``verify`` says what it found and ``--repair`` removes the
links themselves, never what they point to."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from filelayer import ArchiveStore
from filelayer.cli import main
from filelayer.errors import ArchiveError, NotRegularFileError
from tests.support.processes import subprocess_env

SECRET = b"root:x:0:0:the secret outside the archive\n"
_SESSION = {"chat_settings": {}, "chat_profile": None, "client_type": "webapp", "id": "x"}
"""Metadata as Chainlit persists a session: written to ``sessions/``."""


def _archive(root: Path) -> ArchiveStore:
    store = ArchiveStore(root)
    store.write_step({"id": "s1", "threadId": "ta", "type": "user_message", "output": "hi"})
    store.put_element(
        "ta", {"id": "ta-e1", "type": "text", "name": "notes.txt", "forId": "s1"}, b"mine"
    )
    store.write_step({"id": "s2", "threadId": "tb", "type": "user_message", "output": "hey"})
    return store


def _outside(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    outside = tmp_path / "outside"
    (outside / "tz").mkdir(parents=True)
    (outside / "passwd").write_bytes(SECRET)
    (outside / "tz" / "steps.jsonl").write_bytes(b"not yours\n")
    return outside, {str(p): p.read_bytes() for p in outside.rglob("*") if p.is_file()}


def test_links_are_never_read_nor_written_through(tmp_path: Path) -> None:
    root = tmp_path / "a"
    _archive(root).close()
    outside, before = _outside(tmp_path)
    element = root / "threads" / "ta" / "elements" / "ta-e1.txt"
    element.unlink()
    element.symlink_to(outside / "passwd")
    (root / "threads" / "tz").symlink_to(outside / "tz", target_is_directory=True)

    out, copied = tmp_path / "out", tmp_path / "copied"
    assert main(["--root", str(root), "export", "--all", "-o", str(out)]) == 0
    main(["copy", str(root), str(copied)])  # says the linked element stayed behind
    for directory in (out, copied):
        for path in directory.rglob("*"):
            assert path.is_symlink() or not path.is_file() or SECRET not in path.read_bytes()
    for command in (["compact"], ["reindex"], ["verify"]):
        main(["--root", str(root), *command])
    assert {str(p): p.read_bytes() for p in outside.rglob("*") if p.is_file()} == before

    store = ArchiveStore(root)
    try:
        assert store.element_file("ta", "ta-e1") is None
        assert "tz" not in store.thread_ids()
    finally:
        store.close()
    main(["--root", str(root), "verify", "--repair"])
    assert not element.is_symlink() and not (root / "threads" / "tz").exists()
    assert {str(p): p.read_bytes() for p in outside.rglob("*") if p.is_file()} == before


def test_verify_names_the_links_it_finds(tmp_path: Path) -> None:
    root = tmp_path / "a"
    _archive(root).close()
    outside, _ = _outside(tmp_path)
    (root / "threads" / "tz").symlink_to(outside / "tz", target_is_directory=True)
    journal = root / "threads" / "tb" / "steps.jsonl"
    journal.unlink()
    journal.symlink_to(outside / "tz" / "steps.jsonl")
    done = subprocess.run(
        [sys.executable, "-m", "filelayer", "--root", str(root), "verify"],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
    )
    assert "tz: a symbolic link, not a thread directory" in done.stdout
    assert "steps.jsonl: a symbolic link in a thread directory" in done.stdout


def test_a_fifo_or_a_directory_in_place_of_a_file_stops_nothing(tmp_path: Path) -> None:
    """Each command finishes (a FIFO read blocked forever before) and reports the bad
    thread; the other threads are still checked and listed."""
    root = tmp_path / "a"
    store = _archive(root)
    store.write_step({"id": "s3", "threadId": "tc", "type": "user_message", "output": "yo"})
    store.close()
    os.unlink(root / "threads" / "ta" / "steps.jsonl")
    os.mkfifo(root / "threads" / "ta" / "steps.jsonl")
    (root / "threads" / "tb" / "thread.json").unlink()
    (root / "threads" / "tb" / "thread.json").mkdir()
    for command in (["verify"], ["stats"], ["show", "tc"], ["list"], ["reindex"], ["verify"]):
        done = subprocess.run(
            [sys.executable, "-m", "filelayer", "--root", str(root), *command],
            capture_output=True,
            text=True,
            timeout=60,
            env=subprocess_env(),
        )
        assert "Traceback" not in done.stderr, (command, done.stderr)
        if command == ["verify"]:
            assert "ta" in done.stdout and "tb" in done.stdout, done.stdout


def test_the_error_for_a_file_that_is_not_one_is_an_is_a_directory_error() -> None:
    import pickle

    error = NotRegularFileError("/archive/threads/t1/steps.jsonl")
    assert isinstance(error, IsADirectoryError)
    again = pickle.loads(pickle.dumps(error))
    assert again.path == error.path and str(again) == str(error)


def test_a_thread_directory_that_is_a_link_is_never_written_nor_read(tmp_path: Path) -> None:
    """Named on purpose (``compact tb``, a write to ``tb``), a linked thread directory
    is still not followed: nothing outside the root changes, and reads find no thread."""

    root = tmp_path / "a"
    store = _archive(root)
    store.close()
    outside = tmp_path / "outside" / "tb"
    outside.parent.mkdir()
    (root / "threads" / "tb").rename(outside)
    (root / "threads" / "tb").symlink_to(outside, target_is_directory=True)
    with (outside / "steps.jsonl").open("ab") as f:  # something to compact
        f.write((outside / "steps.jsonl").read_bytes())
    before = {str(p): p.read_bytes() for p in outside.rglob("*") if p.is_file()}
    main(["--root", str(root), "compact", "tb"])
    store = ArchiveStore(root)
    try:
        assert store.get_thread("tb") is None
        for write in (
            lambda: store.write_step({"id": "x", "threadId": "tb", "type": "run"}),
            lambda: store.update_thread("tb", name="renamed"),
            lambda: store.upsert_feedback(for_id="s2", value=1, thread_id="tb"),
            lambda: store.put_element("tb", {"id": "e9", "type": "file", "name": "a"}, b"a"),
            lambda: store.put_manifest({"id": "tb", "name": "copied", "createdAt": "2026"}),
        ):
            with pytest.raises(OSError):
                write()
    finally:
        store.close()
    assert {str(p): p.read_bytes() for p in outside.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("name", ["steps.jsonl", "thread.json"])
def test_a_linked_journal_or_manifest_is_never_read_nor_written_through(
    tmp_path: Path, name: str
) -> None:
    """A thread directory that is no link may still hold its journal or its manifest as
    one (a branch can bring it): reading the thread, exporting it and writing to it
    never reach what the link points to (the journal was read and served, the
    manifest decided who the author was, and a write appended outside the root)."""
    root = tmp_path / "a"
    store = _archive(root)
    store.update_thread("ta", name="mine")
    store.close()
    outside = tmp_path / "outside"
    outside.mkdir()
    planted = root / "threads" / "ta" / name
    if name == "steps.jsonl":
        secret = planted.read_bytes().replace(b'"hi"', b'"the secret outside the archive"')
    else:
        secret = planted.read_bytes().replace(b'"mine"', b'"the secret outside the archive"')
    (outside / name).write_bytes(secret)
    planted.unlink()
    planted.symlink_to(outside / name)
    before = {str(p): p.read_bytes() for p in outside.rglob("*") if p.is_file()}

    store = ArchiveStore(root)
    try:
        thread = None
        with contextlib.suppress(OSError, ValueError):
            thread = store.get_thread("ta")
        assert b"the secret" not in repr(thread).encode()
        for write in (
            lambda: store.write_step({"id": "x", "threadId": "ta", "type": "run"}),
            lambda: store.update_thread("ta", name="renamed"),
        ):
            with contextlib.suppress(OSError, ValueError):  # refused: not the thread's file
                write()
    finally:
        store.close()
    out = tmp_path / "out"
    main(["--root", str(root), "export", "ta", "-o", str(out)])
    for path in out.rglob("*"):
        assert not path.is_file() or b"the secret" not in path.read_bytes()
    assert {str(p): p.read_bytes() for p in outside.rglob("*") if p.is_file()} == before


def test_a_deleted_linked_thread_leaves_nothing_that_repair_keeps_repairing(
    tmp_path: Path,
) -> None:
    """Deleting a thread whose directory is a link moves the link aside; the next
    repair removes that link (not what it points to), and the one after finds nothing."""
    root = tmp_path / "a"
    _archive(root).close()
    outside, before = _outside(tmp_path)
    (root / "threads" / "tz").symlink_to(outside / "tz", target_is_directory=True)
    store = ArchiveStore(root)
    try:
        store.delete_thread("tz")
    finally:
        store.close()
    main(["--root", str(root), "verify", "--repair"])
    leftovers = [p for p in (root / "threads").iterdir() if p.name.startswith(".")]
    assert leftovers == [] and not (root / "threads" / "tz").exists()
    assert main(["--root", str(root), "verify"]) == 0
    assert {str(p): p.read_bytes() for p in outside.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(
    "name", ["index", "locks", "sessions", "threads", "users", "deleted.jsonl"]
)
def test_a_link_in_place_of_a_directory_of_the_layer_is_refused_at_opening(
    tmp_path: Path, name: str
) -> None:
    """The root is a boundary: ``index/`` or ``locks/`` (derived, kept out of git, so
    placed by a hand) or ``threads/`` (which a branch can bring: git keeps links) as a
    link had every write go outside it. Opening refuses such a link with an error that
    says what to do, before anything is written; nothing outside the root changes."""
    root = tmp_path / "a"
    store = _archive(root)
    assert store.delete_thread("tb")  # a deleted.jsonl to link
    store.close()
    outside = tmp_path / "outside"
    if name in ("threads", "users", "deleted.jsonl"):  # data: what the link points to
        (root / name).rename(outside)
    else:  # derived or local: an empty directory to fill
        shutil.rmtree(root / name, ignore_errors=True)
        outside.mkdir()
    (root / name).symlink_to(outside, target_is_directory=outside.is_dir())

    def files() -> dict[str, bytes]:
        found = [outside] if outside.is_file() else sorted(outside.rglob("*"))
        return {str(p): p.read_bytes() for p in found if p.is_file()}

    before = files()
    refused: ArchiveError | None = None
    try:
        store = ArchiveStore(root)
    except ArchiveError as exc:
        refused = exc
    else:
        try:
            store.write_step({"id": "s9", "threadId": "tc", "type": "user_message"})
            store.update_thread("tc", metadata=_SESSION)
            store.upsert_user("carol")
            store.delete_thread("ta")
        finally:
            store.close()
    main(["--root", str(root), "git-hook", "post-checkout"])
    assert files() == before, "written outside the root"
    assert refused is not None and "symbolic link" in str(refused)
    assert str(root / name) in str(refused)
    if name in ("index", "locks", "sessions"):  # as the error says: the link goes
        (root / name).unlink()
        store = ArchiveStore(root)
        try:
            assert store.get_thread("ta") is not None
        finally:
            store.close()


def test_a_link_in_users_is_removed_by_repair_and_the_user_can_log_in_again(
    tmp_path: Path,
) -> None:
    """A user record that is a link (a merge can bring one) is never read through;
    ``verify`` named it but ``--repair`` left it, so every verify failed forever and the
    user could not log in again. Repair removes the link itself, never its target."""
    root = tmp_path / "a"
    store = _archive(root)
    record = store.layout.user_file("alice")
    store.close()
    outside, before = _outside(tmp_path)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.symlink_to(outside / "passwd")
    assert main(["--root", str(root), "verify"]) == 1
    assert main(["--root", str(root), "verify", "--repair"]) == 0  # all of it repaired
    assert not record.is_symlink()
    assert main(["--root", str(root), "verify"]) == 0
    store = ArchiveStore(root)
    try:
        assert store.upsert_user("alice")["identifier"] == "alice"
    finally:
        store.close()
    assert {str(p): p.read_bytes() for p in outside.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("kind", ["fifo", "directory"])
@pytest.mark.parametrize("place", ["threads/ta/steps.jsonl", "deleted.jsonl"])
def test_a_fifo_or_a_directory_in_place_of_a_journal_or_the_tombstones_stops_nothing(
    tmp_path: Path, kind: str, place: str
) -> None:
    """No command hangs on a FIFO where the layer reads a file (a read blocked forever
    in ``show``, ``export``, ``compact`` and ``verify``), nor ends in a traceback on a
    directory there (``compact``, ``verify``): each finishes and says what it found."""
    root = tmp_path / "a"
    _archive(root).close()
    path = root / place
    path.unlink(missing_ok=True)  # an archive with no deletion yet has no tombstones
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    commands = [["show", "ta"], ["export", "ta"], ["compact"], ["verify"], ["verify", "--repair"]]
    for command in commands:
        done = subprocess.run(
            [sys.executable, "-m", "filelayer", "--root", str(root), *command],
            capture_output=True,
            text=True,
            timeout=20,
            env=subprocess_env(),
        )
        assert "Traceback" not in done.stderr, (command, done.stderr)
        assert done.returncode in (0, 1, 2), (command, done.returncode)


@pytest.mark.parametrize("place", ["threads/ta", "threads"])
def test_a_file_where_a_thread_directory_or_threads_goes_is_named_and_stops_nothing(
    tmp_path: Path, place: str
) -> None:
    """A regular file in place of a thread's directory or of ``threads/`` itself: no
    command ends in a traceback, and verify names what it found (it said "no problems",
    or that a valid id was not one)."""
    root = tmp_path / "a"
    _archive(root).close()
    shutil.rmtree(root / place)
    (root / place).write_text("not a directory\n")
    commands = [
        ["show", "ta"],
        ["export", "--all"],
        ["export", "ta", "--format", "html"],
        ["list"],
        ["reindex"],
        ["reconcile"],
        ["verify"],
        ["verify", "--repair"],
    ]
    for command in commands:
        done = subprocess.run(
            [sys.executable, "-m", "filelayer", "--root", str(root), *command],
            capture_output=True,
            text=True,
            timeout=60,
            env=subprocess_env(),
        )
        assert "Traceback" not in done.stderr, (command, done.stderr)
        if command == ["verify"]:
            assert done.returncode == 1
            assert f"{place}: not a" in done.stdout and "valid id" not in done.stdout
