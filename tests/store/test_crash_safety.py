"""Crash safety: torn journal tails, atomic whole files, the fsync mode, rebuilds."""

from __future__ import annotations

import re
from pathlib import Path

from filelayer import ArchiveStore
from filelayer.format import journal


def _journal(root: Path, thread: str = "t1") -> Path:
    return root / "threads" / thread / "steps.jsonl"


def test_a_torn_last_line_is_ignored_and_the_next_write_starts_a_new_line(root: Path) -> None:
    store = ArchiveStore(root)
    store.write_step({"id": "s1", "threadId": "t1", "type": "user_message", "output": "kept"})
    with open(_journal(root), "ab") as f:
        f.write(b'{"op":"step","step":{"id":"s2","output":"half a rec')  # the crash
    reopened = ArchiveStore(root)
    assert [s["id"] for s in reopened.get_thread("t1")["steps"]] == ["s1"]
    reopened.write_step({"id": "s3", "threadId": "t1", "type": "run", "output": "after"})
    got = ArchiveStore(root).get_thread("t1")
    assert [s["id"] for s in got["steps"]] == ["s1", "s3"]
    lines = _journal(root).read_bytes().split(b"\n")
    assert lines[-1] == b""  # ends with a newline
    assert any(line.startswith(b'{"op":"step","step":{"id":"s2"') for line in lines)
    read = journal.read(_journal(root))
    assert read.bad_lines and not read.torn_tail


def test_a_damaged_middle_line_is_skipped_and_the_rest_kept(root: Path) -> None:
    store = ArchiveStore(root)
    for n in range(3):
        store.write_step({"id": f"s{n}", "threadId": "t1", "type": "run", "output": str(n)})
    lines = _journal(root).read_bytes().split(b"\n")
    lines[1] = b"\x00\xff garbage"
    _journal(root).write_bytes(b"\n".join(lines))
    assert [s["id"] for s in ArchiveStore(root).get_thread("t1")["steps"]] == ["s0", "s2"]


def test_whole_files_leave_no_temporary_file_behind(root: Path) -> None:
    store = ArchiveStore(root, durability="fsync")
    store.upsert_user("alice", {"a": 1})
    store.upsert_user("alice", {"a": 2})
    for n in range(5):
        store.update_thread("t1", name=f"name {n}", metadata={"n": n})
    store.put_element("t1", {"id": "e1", "type": "file", "name": "a.txt"}, b"bytes")
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_the_fsync_mode_stores_the_same_thing(tmp_path: Path) -> None:
    results = []
    for mode in ("flush", "fsync"):
        store = ArchiveStore(tmp_path / mode, durability=mode)  # type: ignore[arg-type]
        store.write_step(
            {
                "id": "s",
                "threadId": "t",
                "type": "run",
                "output": "x",
                "createdAt": "2026-01-01T00:00:00.000000Z",
            }
        )
        store.upsert_feedback(for_id="s", value=1, thread_id="t", feedback_id="f")
        # The same records; each line's stamp is the time it was written.
        results.append(re.sub(rb'"at":"[^"]*",', b"", _journal(tmp_path / mode, "t").read_bytes()))
    assert results[0] == results[1]


def test_a_damaged_manifest_does_not_hide_the_conversation(root: Path) -> None:
    store = ArchiveStore(root)
    store.update_thread("t1", name="ok")
    store.write_step({"id": "s1", "threadId": "t1", "type": "user_message", "output": "hi"})
    (root / "threads" / "t1" / "thread.json").write_text("{ not json")
    got = ArchiveStore(root).get_thread("t1")
    assert got is not None
    assert [s["output"] for s in got["steps"]] == ["hi"]


def test_a_new_archive_has_its_format_marker_and_gitignore(root: Path) -> None:
    ArchiveStore(root)
    assert '"format": 1' in (root / "filelayer.json").read_text()
    ignored = (root / ".gitignore").read_text().splitlines()
    assert {"/index/", "/locks/", ".filelayer-*"} <= set(ignored)
    assert "*.tmp" not in ignored and "*.lock" not in ignored  # uploads have such names


def test_a_late_write_to_a_thread_whose_deletion_a_crash_cut_short_is_ignored(
    tmp_path: Path,
) -> None:
    """A process killed between a deletion's tombstone and the removal of the thread's
    directory leaves both. The tombstone decides: a late write (Chainlit updating a
    thread the user just deleted, another worker) is ignored, and the thread never
    comes back to the sidebar; it went back there, named by the late write."""
    import json
    import subprocess
    import sys

    from tests.support.processes import subprocess_env

    root = tmp_path / "chats"
    store = ArchiveStore(root)
    store.update_thread("t1", name="doomed")
    store.write_step({"id": "s1", "threadId": "t1", "type": "user_message", "output": "hi"})
    store.upsert_feedback(for_id="s1", value=1, feedback_id="fb1", thread_id="t1")
    store.put_element("t1", {"id": "e1", "type": "text", "name": "a.txt", "forId": "s1"}, b"x")
    store.update_thread("t2", name="kept")
    store.close()
    script = (
        "import os, sys\n"
        "from filelayer import ArchiveStore\n"
        "import filelayer.store.threads as threads\n"
        "store = ArchiveStore(sys.argv[1])\n"
        "threads.deleting_path = lambda d: os._exit(0)  # killed before the removal\n"
        "store.delete_thread('t1')\n"
    )
    subprocess.run([sys.executable, "-c", script, str(root)], check=True, env=subprocess_env())
    assert (root / "threads" / "t1").is_dir()
    store = ArchiveStore(root)
    try:
        journal_before = store.layout.journal("t1").read_bytes()
        store.write_step({"id": "s2", "threadId": "t1", "type": "user_message", "output": "late"})
        store.write_step({"id": "s1", "threadId": "t1", "output": "edited late"})
        store.update_thread("t1", name="back again")
        store.delete_step("s1", "t1")
        store.delete_element("e1", "t1")
        store.delete_feedback("fb1")
        assert store.layout.journal("t1").read_bytes() == journal_before
        assert json.loads(store.layout.manifest("t1").read_text())["name"] == "doomed"
        assert store.get_thread("t1") is None
        ids = [t["id"] for t in store.list_threads(user_id=None)[0]]
        assert "t1" not in ids and "t2" in ids
    finally:
        store.close()
    store = ArchiveStore(root)
    try:
        assert "t1" not in [t["id"] for t in store.list_threads(user_id=None)[0]]
    finally:
        store.close()
