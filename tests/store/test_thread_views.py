"""The view files of long threads (``index/views/``): a first read in a new process
decodes one of them instead of folding the journal, and must still say exactly what
the files say, whatever changed them since the view was written, whoever wrote it,
and whatever a caller does with what it was given."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from filelayer import ArchiveStore
from filelayer.store.snapshots import VIEW_MIN_BYTES, ViewBytes
from tests.support.processes import REPO, subprocess_env
from tests.support.thread_views import folded, read_thread, view_path

TID = "t1"
BIG = 2**70 + 1  # beyond 64 bits: orjson alone would read it as a float


def _write_long(store: ArchiveStore, thread_id: str = TID, steps: int = 40) -> None:
    store.update_thread(thread_id, name="long")
    for n in range(steps):
        store.write_step(
            {
                "id": f"{thread_id}-s{n:03d}",
                "threadId": thread_id,
                "type": "assistant_message" if n % 2 else "user_message",
                "output": f"réponse {n} " + "x" * 1000,
                "metadata": {"n": n, "big": BIG, "nested": {"deep": [n, {"k": "v"}]}},
                "createdAt": f"2026-12-01T00:00:{n:02d}.000000Z",
            }
        )
    store.upsert_feedback(for_id=f"{thread_id}-s001", value=1, thread_id=thread_id)
    element = {
        "id": f"{thread_id}-el",
        "threadId": thread_id,
        "forId": f"{thread_id}-s001",
        "type": "file",
        "name": "note.txt",
        "mime": "text/plain",
    }
    store.put_element(thread_id, element, b"hello")


def _first_read(root: Path, thread_id: str = TID) -> dict[str, Any]:
    return read_thread(root, thread_id)


def _served_from_view(root: Path, thread_id: str = TID) -> bool:
    store = ArchiveStore(root)
    try:
        return store.views.snapshots.load(thread_id) is not None
    finally:
        store.close()


def test_a_closing_store_writes_the_views_of_the_long_threads_it_wrote(tmp_path: Path) -> None:
    root = tmp_path / "a"
    store = ArchiveStore(root)
    _write_long(store)
    store.write_step({"id": "short-s", "threadId": "short", "type": "run", "output": "hi"})
    assert not view_path(root).exists()
    store.close()
    assert store.layout.journal(TID).stat().st_size >= VIEW_MIN_BYTES
    assert view_path(root).exists()
    assert not view_path(root, "short").exists()  # a short thread reads fast without one
    assert _served_from_view(root)
    thread = _first_read(root)
    assert thread == folded(root)
    assert thread["steps"][0]["metadata"]["big"] == BIG
    assert thread["steps"][1]["feedback"]["value"] == 1
    assert [e["id"] for e in thread["elements"]] == [f"{TID}-el"]


def test_a_read_writes_no_view(tmp_path: Path) -> None:
    """Reads take no lock and write nothing (an encoding would cost the event loop as
    much as the fold): a thread whose writer was killed before it closed gets its view
    at the close of the next store that writes it."""
    root = tmp_path / "a"
    store = ArchiveStore(root)
    _write_long(store)
    store.appender.written.clear()  # a writer killed before it closed
    store.close()
    assert not view_path(root).exists()
    reader = ArchiveStore(root)
    assert reader.get_thread(TID) == folded(root)
    reader.close()
    assert not view_path(root).exists()
    writer = ArchiveStore(root)
    writer.write_step({"id": "more", "threadId": TID, "type": "run", "output": "more"})
    writer.close()
    assert _served_from_view(root)
    assert _first_read(root) == folded(root)


def test_a_process_that_exits_without_closing_its_store_writes_its_views(
    tmp_path: Path,
) -> None:
    """A script or a test harness that writes through the layer and exits without
    ``close()``: the next process still finds the views of the long threads it wrote
    (at exit, as the writer session already ends there), but never of a thread that
    was deleted meanwhile, nor of a short one."""
    root = tmp_path / "a"
    script = (
        "import sys\n"
        "from filelayer import ArchiveStore\n"
        "from tests.store.test_thread_views import _write_long\n"
        "store = ArchiveStore(sys.argv[1])\n"
        "_write_long(store)\n"
        "_write_long(store, 'gone')\n"
        "store.delete_thread('gone')\n"
        "store.write_step({'id': 'short-s', 'threadId': 'short', 'type': 'run'})\n"
        "kept = store  # alive until the interpreter exits\n"
    )
    repo = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]),
    }
    subprocess.run([sys.executable, "-c", script, str(root)], check=True, env=env, cwd=repo)
    assert view_path(root).exists()
    assert not view_path(root, "gone").exists()
    assert not view_path(root, "short").exists()
    assert _served_from_view(root)
    assert _first_read(root) == folded(root)


def test_a_line_appended_by_another_process_makes_the_view_stale(tmp_path: Path) -> None:
    root = tmp_path / "a"
    store = ArchiveStore(root)
    _write_long(store)
    store.close()
    script = (
        "import os, sys\n"
        "from filelayer import ArchiveStore\n"
        "store = ArchiveStore(sys.argv[1])\n"
        "store.write_step({'id': 'late', 'threadId': 't1', 'type': 'run', 'output': 'late'})\n"
        "os._exit(0)\n"  # killed: no close, so no new view
    )
    subprocess.run([sys.executable, "-c", script, str(root)], check=True)
    assert not _served_from_view(root)
    thread = _first_read(root)
    assert thread["steps"][-1]["output"] == "late"
    assert thread == folded(root)


def test_a_journal_changed_in_place_with_its_size_and_mtime_kept_is_read_again(
    tmp_path: Path,
) -> None:
    """An edit that keeps the length and puts the modification time back (``cp -p``
    over the file, a hand edit with ``touch -r``): only the change time tells."""
    root = tmp_path / "a"
    store = ArchiveStore(root)
    _write_long(store)
    store.close()
    journal = store.layout.journal(TID)
    before = journal.stat()
    data = journal.read_bytes()
    assert data.count("réponse 7 ".encode()) == 1
    with open(journal, "r+b") as f:  # the same inode, the same size
        f.write(data.replace("réponse 7 ".encode(), "RÉPONSE 7 ".encode()))
    os.utime(journal, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = journal.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    outputs = [s["output"][:10] for s in _first_read(root)["steps"]]
    assert "RÉPONSE 7 " in outputs


def test_a_journal_replaced_by_one_of_the_same_size_is_read_again(tmp_path: Path) -> None:
    """A ``git checkout`` or a restore from a backup: a new file, same size and times."""
    root = tmp_path / "a"
    store = ArchiveStore(root)
    _write_long(store)
    store.close()
    journal = store.layout.journal(TID)
    before = journal.stat()
    data = journal.read_bytes().replace("réponse 9 ".encode(), b"REPLY  9 " + b"\xc2\xb7")
    assert len(data) == before.st_size
    replacement = journal.with_name("replacement")
    replacement.write_bytes(data)
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(replacement, journal)
    assert any(s["output"].startswith("REPLY  9 ") for s in _first_read(root)["steps"])


def test_views_that_do_not_match_are_ignored(tmp_path: Path) -> None:
    """Another thread's view put in its place, a torn one (a power cut: views are not
    fsynced), an empty one, garbage, a view of another format: each read as nothing,
    and the thread is folded instead; a writer closing writes a good view again."""
    root = tmp_path / "a"
    store = ArchiveStore(root)
    _write_long(store)
    _write_long(store, "t2")
    store.close()
    expected = folded(root)
    good = view_path(root).read_bytes()
    head, body = good.split(b"\n", 1)
    broken = {
        "another thread's": view_path(root, "t2").read_bytes(),
        "torn": good[: len(good) // 2],
        "empty": b"",
        "garbage": b"\x00\xff not json \n {",
        "no body": head + b"\n",
        "another format": head.replace(b'"format":1', b'"format":99') + b"\n" + body,
        "a body of the wrong shape": head + b'\n{"steps": {"a": 1}, "elements": []}\n',
        "a tail of other bytes": head.replace(b'"tail":"', b'"tail":"00') + b"\n" + body,
    }
    for what, data in broken.items():
        view_path(root).write_bytes(data)
        assert not _served_from_view(root), what
        assert _first_read(root) == expected, what
    writer = ArchiveStore(root)
    writer.appender.written.put(TID, None)  # as if it had written the thread
    writer.close()
    assert _served_from_view(root)
    assert _first_read(root) == expected


def test_what_a_caller_does_to_a_thread_does_not_reach_the_next_read(tmp_path: Path) -> None:
    """The first read hands out the objects decoded from the view; the second decodes
    it again; the later ones copy what the store keeps."""
    root = tmp_path / "a"
    store = ArchiveStore(root)
    _write_long(store)
    store.close()
    expected = folded(root)
    reader = ArchiveStore(root)
    for _ in range(4):
        thread = reader.get_thread(TID)
        assert thread == expected
        thread["steps"][0]["metadata"]["nested"]["deep"].append("changed")
        thread["steps"][1]["feedback"]["value"] = 0
        thread["steps"][2]["output"] = "changed"
        thread["elements"][0]["name"] = "changed"
        thread["steps"].clear()


def test_a_read_after_a_write_by_this_process_sees_the_write(tmp_path: Path) -> None:
    root = tmp_path / "a"
    store = ArchiveStore(root)
    _write_long(store)
    store.close()
    app = ArchiveStore(root)
    assert app.get_thread(TID) == folded(root)  # from the view
    app.write_step({"id": "more", "threadId": TID, "type": "run", "output": "more"})
    thread = app.get_thread(TID)
    assert thread is not None and thread["steps"][-1]["output"] == "more"
    app.delete_step(f"{TID}-s000")
    thread = app.get_thread(TID)
    assert thread is not None and thread["steps"][0]["id"] == f"{TID}-s001"


def test_a_deleted_thread_takes_its_view_with_it(tmp_path: Path) -> None:
    root = tmp_path / "a"
    store = ArchiveStore(root)
    _write_long(store)
    store.close()
    assert view_path(root).exists()
    store = ArchiveStore(root)
    store.delete_thread(TID)
    store.close()
    assert not view_path(root).exists()
    assert ArchiveStore(root).get_thread(TID) is None


def test_compaction_takes_the_view_with_it(tmp_path: Path) -> None:
    """The view may hold steps deleted since: compaction, which drops their bytes from
    the journal, drops the view too."""
    root = tmp_path / "a"
    store = ArchiveStore(root)
    _write_long(store)
    store.close()
    store = ArchiveStore(root)
    store.delete_step(f"{TID}-s003")
    store.compact_journal(TID)
    assert not view_path(root).exists()
    assert "réponse 3 ".encode() not in store.layout.journal(TID).read_bytes()
    store.close()


def test_no_view_can_be_written_and_every_read_still_works(tmp_path: Path) -> None:
    """A view is derived: where none can be written (``index/views`` is a file here,
    as a full disk or a read-only archive would refuse it), reads fold as before."""
    root = tmp_path / "a"
    store = ArchiveStore(root)
    _write_long(store)
    (root / "index" / "views").write_bytes(b"not a directory")
    store.close()
    assert _first_read(root) == folded(root)
    reader = ArchiveStore(root)
    assert reader.get_thread(TID) is not None
    reader.close()


def test_a_thread_removed_behind_the_layers_back_loses_its_view_at_the_reconcile(
    tmp_path: Path,
) -> None:
    """``git rm``, a pull that removed it, a person deleting the directory: the
    reconcile that takes the thread out of the index takes its view out too, so that
    no copy of the conversation stays behind in ``index/``."""
    root = tmp_path / "a"
    store = ArchiveStore(root)
    _write_long(store)
    store.close()
    assert view_path(root).exists()
    shutil.rmtree(root / "threads" / TID)
    store = ArchiveStore(root)
    store.reconcile()
    store.close()
    assert not view_path(root).exists()


def _parts(store: ArchiveStore, thread_id: str = TID) -> tuple[Any, bytes, Any, Any]:
    """What a closing store would write a view of: key, tail, steps, elements."""
    from filelayer.store.snapshots import journal_key

    thread = store.get_thread(thread_id)
    assert thread is not None
    key = journal_key(store.layout, thread_id)
    tail = store.layout.journal(thread_id).read_bytes()[-64:]
    return key, tail, thread["steps"], thread["elements"]


def test_a_view_made_while_its_thread_was_deleted_does_not_stay(tmp_path: Path) -> None:
    """A closing store folds and writes a view while the app (or ``filelayer erase``)
    deletes the thread: the deletion's removal of the view comes first, the view after.
    The writer then finds the journal gone and removes what it wrote."""
    root = tmp_path / "a"
    store = ArchiveStore(root)
    _write_long(store)
    key, tail, steps, elements = _parts(store)
    store.delete_thread(TID)
    store.views.snapshots.save(TID, key, tail, steps, elements)
    assert not view_path(root).exists()
    store.close()


def test_a_view_made_while_its_journal_was_compacted_does_not_stay(tmp_path: Path) -> None:
    root = tmp_path / "a"
    store = ArchiveStore(root)
    _write_long(store)
    key, tail, steps, elements = _parts(store)
    store.delete_step(f"{TID}-s003")
    store.compact_journal(TID)
    store.views.snapshots.save(TID, key, tail, steps, elements)
    assert not view_path(root).exists()
    store.close()


def test_a_journal_edited_in_place_while_its_view_is_made_gets_no_view(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """The view's key comes from the ``stat`` taken before the journal was read: an
    edit that keeps the size and puts the modification time back, made after the read,
    still changes the change time, so the view names a file that is no longer there."""
    from filelayer.format import journal as journal_module

    root = tmp_path / "a"
    store = ArchiveStore(root)
    _write_long(store)
    path = store.layout.journal(TID)
    real = journal_module.FoldedJournal.catch_up

    def read_then_edit(self: Any, where: Path) -> None:
        real(self, where)
        before = path.stat()
        data = path.read_bytes()
        with open(path, "r+b") as f:
            f.write(data.replace("réponse 7 ".encode(), "RÉPONSE 7 ".encode()))
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))

    monkeypatch.setattr(journal_module.FoldedJournal, "catch_up", read_then_edit)
    store.close()
    monkeypatch.undo()
    assert not _served_from_view(root)
    outputs = [s["output"][:10] for s in _first_read(root)["steps"]]
    assert "RÉPONSE 7 " in outputs


def test_a_view_whose_records_lack_what_a_read_needs_is_not_used(tmp_path: Path) -> None:
    """A hand-made view: a step without an id, an element of another thread. Not used,
    not kept: every read folds the journal."""
    root = tmp_path / "a"
    store = ArchiveStore(root)
    _write_long(store)
    store.close()
    expected = folded(root)
    good = view_path(root).read_bytes()
    head, _ = good.split(b"\n", 1)
    for body in (
        b'{"steps":[{"output":"x"}],"elements":[]}',
        b'{"steps":[{"id":["x"]}],"elements":[]}',
        b'{"steps":[],"elements":[{"id":"e","threadId":"other"}]}',
    ):
        view_path(root).write_bytes(head + b"\n" + body)
        reader = ArchiveStore(root)
        assert reader.get_thread(TID) == expected, body
        assert reader.get_thread(TID) == expected, body
        reader.close()


def test_a_thread_read_from_its_view_has_the_keys_of_a_folded_one_in_order(
    tmp_path: Path,
) -> None:
    root = tmp_path / "a"
    store = ArchiveStore(root)
    _write_long(store)
    store.close()
    thread = _first_read(root)
    expected = folded(root)
    assert [list(s) for s in thread["steps"]] == [list(s) for s in expected["steps"]]


def test_a_pipe_in_place_of_a_view_does_not_hang_a_read(tmp_path: Path) -> None:
    """``index/`` is derived and trusted less than the thread files: a pipe (or a
    device) put where a view goes is not opened for reading, it is passed by."""
    root = tmp_path / "a"
    store = ArchiveStore(root)
    _write_long(store)
    store.close()
    expected = folded(root)
    view_path(root).unlink()
    os.mkfifo(view_path(root))
    script = (
        "import sys\n"
        "from filelayer import ArchiveStore\n"
        "store = ArchiveStore(sys.argv[1])\n"
        "print(len(store.get_thread('t1')['steps']))\n"
        "store.appender.written.put('t1', None)\n"
        "store.close()\n"  # the view is looked at again, to be written
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(root)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(len(expected["steps"]))


def test_reindex_removes_the_views_of_threads_that_are_gone(tmp_path: Path) -> None:
    """A thread directory removed while no process looked (the index still lists it,
    or no longer does): ``filelayer reindex`` leaves no view of it behind, nor any other
    file in ``index/views/``."""
    root = tmp_path / "a"
    store = ArchiveStore(root)
    _write_long(store)
    _write_long(store, "t2")
    store.close()
    shutil.rmtree(root / "threads" / TID)
    (root / "index" / "views" / "not a view").write_bytes(b"x")
    store = ArchiveStore(root)
    store.reindex()
    store.close()
    assert sorted(p.name for p in (root / "index" / "views").iterdir()) == ["t2.json"]


def test_a_read_tells_where_its_steps_are_and_later_writes_still_win(tmp_path: Path) -> None:
    """A first read, from a view or from a fold, makes the thread's steps findable
    without a scan (Chainlit's ``delete_step`` gives no thread id) even though they are
    filed only when a lookup needs them; a write or a deletion made after the read
    still decides, as it did when the read filed them at once."""
    root = tmp_path / "a"
    store = ArchiveStore(root)
    _write_long(store)
    _write_long(store, "t2", steps=3)  # too short for a view: folded
    store.close()
    assert _served_from_view(root)
    store = ArchiveStore(root)
    try:
        assert store.get_thread(TID) is not None
        assert store.get_thread("t2") is not None
        assert store.locate_step(f"{TID}-s005", scan=False) == TID
        assert store.locate_step("t2-s002", scan=False) == "t2"
        assert store.get_thread(TID) is not None  # read again: filed again, later
        store.write_step({"id": f"{TID}-s007", "threadId": "t2", "type": "run"})
        assert store.delete_step(f"{TID}-s009", TID)
        assert store.locate_step(f"{TID}-s007", scan=False) == "t2"
        assert store.locate_step(f"{TID}-s009", scan=False) is None
        assert store.locate_step(f"{TID}-s011", scan=False) == TID
    finally:
        store.close()


def test_many_reads_between_two_sightings_of_a_step_id_do_not_bring_back_the_older(
    tmp_path: Path,
) -> None:
    """Step ids come from the client: two threads may hold the same one. The last
    thread a process saw it in is where ``delete_step`` looks first, however many other
    threads it read meanwhile; and a thread deleted since, by any process, is never the
    answer: the delete goes to the thread that still holds the step."""
    root = tmp_path / "a"
    store = ArchiveStore(root)
    store.write_step({"id": "dup", "threadId": "A", "type": "run", "output": "in A"})
    for n in range(70):
        store.write_step({"id": f"o{n}", "threadId": f"O{n:02d}", "type": "run"})
    store.close()
    store = ArchiveStore(root)
    try:
        store.write_step({"id": "dup", "threadId": "B", "type": "run", "output": "in B"})
        other = ArchiveStore(root)
        assert other.delete_thread("B")
        other.close()
        assert store.get_thread("A") is not None  # seen in A last
        for n in range(70):
            assert store.get_thread(f"O{n:02d}") is not None
        assert store.locate_step("dup", scan=False) == "A"
        assert store.delete_step("dup")
        thread = store.get_thread("A")
        assert thread is not None and thread["steps"] == []
    finally:
        store.close()


def test_a_step_id_seen_in_a_thread_deleted_since_is_looked_for_again(tmp_path: Path) -> None:
    root = tmp_path / "a"
    store = ArchiveStore(root)
    try:
        store.write_step({"id": "dup", "threadId": "A", "type": "run"})
        store.write_step({"id": "dup", "threadId": "B", "type": "run"})
        store.write_step({"id": "only-b", "threadId": "B", "type": "run"})
        assert store.get_thread("A") is not None
        assert store.get_thread("B") is not None
        assert store.delete_thread("B")
        assert store.locate_step("only-b", scan=False) is None
        # B's answer is gone (A's fold, kept since its read, may answer: it holds it).
        assert store.locate_step("dup", scan=False) in (None, "A")
        assert store.delete_step("dup")  # found by a scan, in A
        thread = store.get_thread("A")
        assert thread is not None and thread["steps"] == []
    finally:
        store.close()


def test_a_write_after_first_reads_from_views_does_not_decode_them_again(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """The steps a read saw are filed for the locator from the ids taken at the read,
    never by decoding the view file again on a later call (which runs on the loop)."""
    root = tmp_path / "a"
    store = ArchiveStore(root)
    for n in range(3):
        _write_long(store, f"t{n}")
    store.close()
    store = ArchiveStore(root)
    try:
        for n in range(3):
            assert store.get_thread(f"t{n}") is not None
        decodes: list[int] = []
        original = ViewBytes.decode_body

        def counted(self: ViewBytes) -> Any:
            decodes.append(1)
            return original(self)

        monkeypatch.setattr(ViewBytes, "decode_body", counted)
        store.write_step({"id": "new", "threadId": "w", "type": "run"})
        assert store.locate_step("t1-s003", scan=False) == "t1"
        assert decodes == []
    finally:
        store.close()


def test_a_thread_too_long_for_a_view_while_the_app_runs_gets_it_when_the_store_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running app leaves the views of the longest threads to its close (their
    encoding would hold the loop): the close still writes them, once they were quiet."""
    from filelayer.store import snapshots

    root = tmp_path / "a"
    store = ArchiveStore(root)
    _write_long(store)
    _write_long(store, "t2")
    monkeypatch.setattr(snapshots, "LIVE_MAX_BYTES", VIEW_MIN_BYTES)  # t1, t2: too long
    assert store.save_quiet_views(0.0) is False
    assert not view_path(root).exists() and not view_path(root, "t2").exists()
    store.delete_thread("t2")
    store.close()
    assert _served_from_view(root)
    assert not view_path(root, "t2").exists()


def test_a_view_made_while_its_thread_is_deleted_is_not_in_place_when_the_deletion_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deletion makes the removal of the thread's view durable before it returns;
    a view the maintenance thread put in place after that removal, and removed only
    later without an fsync, could come back after a power cut: it must not be put in
    place at all."""
    import threading

    from filelayer.store import snapshots

    root = tmp_path / "a"
    store = ArchiveStore(root)
    _write_long(store)
    view = view_path(root)
    written, go_on, placed, let_check = (threading.Event() for _ in range(4))
    write_temp, replace, remove = (
        snapshots._fs.write_temp,
        os.replace,
        snapshots.ThreadSnapshots.remove,
    )

    def temp_then_wait(path: Path, data: bytes, **kwargs: Any) -> Any:
        made = write_temp(path, data, **kwargs)
        written.set()
        go_on.wait(10)
        return made

    def replace_then_wait(src: Any, dst: Any) -> None:
        replace(src, dst)
        if Path(dst) == view:
            placed.set()
            let_check.wait(10)  # its later check comes after the deletion returned

    def removed_then_let_it_place(self: Any, thread_id: str) -> bool:
        gone = remove(self, thread_id)
        if threading.current_thread() is threading.main_thread():  # the deletion's
            go_on.set()
            placed.wait(0.5)  # bounded: the view must not get in
        return gone

    monkeypatch.setattr(snapshots._fs, "write_temp", temp_then_wait)
    monkeypatch.setattr(snapshots.os, "replace", replace_then_wait)
    monkeypatch.setattr(snapshots.ThreadSnapshots, "remove", removed_then_let_it_place)
    maker = threading.Thread(target=store.views.save_views, args=(["t1"],), kwargs={"live": True})
    maker.start()
    try:
        assert written.wait(10)
        assert store.delete_thread(TID) is True
        assert not view.exists()
    finally:
        go_on.set()
        let_check.set()
        maker.join(10)
    assert not view.exists() and not any(view.parent.iterdir())
    store.close()


_PAUSED_WRITER = (
    "import sys\n"
    "from filelayer import ArchiveStore\n"
    "from filelayer.store import snapshots\n"
    "from tests.store.test_thread_views import _write_long\n"
    "locked = snapshots._locks.locked\n"
    "def paused(*args, **kwargs):  # the view's temp file written, not yet in place\n"
    "    print('paused', flush=True)\n"
    "    sys.stdin.readline()\n"
    "    return locked(*args, **kwargs)\n"
    "store = ArchiveStore(sys.argv[1])\n"
    "_write_long(store)\n"
    "snapshots._locks.locked = paused\n"
    "store.close()\n"
)


def _view_temps(root: Path) -> list[Path]:
    return sorted(p for p in (root / "index" / "views").iterdir() if p.name.endswith(".tmp"))


def _paused_writer(root: Path) -> subprocess.Popen[str]:
    """A process whose closing store wrote a view's temp file and waits before placing
    it (a line on its input lets it go on)."""
    child = subprocess.Popen(
        [sys.executable, "-c", _PAUSED_WRITER, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
        cwd=REPO,
    )
    assert child.stdout is not None and child.stdout.readline() == "paused\n"
    return child


def _age(path: Path) -> None:
    """Make ``path`` look written long ago."""
    old = path.stat().st_mtime - 24 * 3600
    os.utime(path, (old, old))


def test_the_temp_file_of_a_view_writer_killed_midway_goes_with_the_next_views(
    tmp_path: Path,
) -> None:
    root = tmp_path / "a"
    child = _paused_writer(root)
    child.kill()  # killed between writing the view and putting it in place
    child.wait()
    [temp] = _view_temps(root)
    _age(temp)
    store = ArchiveStore(root)
    _write_long(store, "t2")
    store.close()  # writes the view of t2, and clears what a dead writer left
    assert _view_temps(root) == []
    assert view_path(root, "t2").exists()


def test_the_temp_file_of_a_live_view_writer_is_left_to_it_however_old(tmp_path: Path) -> None:
    root = tmp_path / "a"
    child = _paused_writer(root)
    try:
        [temp] = _view_temps(root)
        _age(temp)  # a writer stopped for a long time is still alive
        store = ArchiveStore(root)
        _write_long(store, "t2")
        store.close()
        assert _view_temps(root) == [temp]
    finally:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.close()
        assert child.wait() == 0
    assert _view_temps(root) == []
    assert _served_from_view(root)


def test_reindex_leaves_a_live_view_writer_its_temp_file(tmp_path: Path) -> None:
    """``filelayer reindex`` removes whatever else is in ``index/views/``, but not the
    temporary file another process is writing and about to put in place."""
    root = tmp_path / "a"
    child = _paused_writer(root)
    try:
        [temp] = _view_temps(root)
        store = ArchiveStore(root)
        store.reindex()
        store.close()
        assert _view_temps(root) == [temp]
    finally:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.close()
        assert child.wait() == 0
    assert _view_temps(root) == []
    assert _served_from_view(root)


def test_a_deleted_thread_takes_the_temp_file_of_its_killed_view_writer_with_it(
    tmp_path: Path,
) -> None:
    """A copy of a conversation outlives no deletion: not even the view a writer killed
    midway left in a temporary file, however recent."""
    root = tmp_path / "a"
    child = _paused_writer(root)
    child.kill()
    child.wait()
    assert len(_view_temps(root)) == 1
    store = ArchiveStore(root)
    assert store.delete_thread(TID)
    assert _view_temps(root) == []
    store.close()
