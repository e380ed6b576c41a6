"""What each durability mode flushes, call by call (the fsyncs counted in-process).

The power-cut explorer (``test_reliability_powercut.py``) checks the outcome from the
real system calls; these tests pin down the mechanism cheaply: which files and which
directories each call fsyncs in the ``fsync`` mode (every name it made, each directory
once), what the ``flush`` mode leaves to its background flusher, and that a deleted
thread stays deleted whatever survived of its directory.
"""

from __future__ import annotations

import os
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from filelayer import ArchiveStore, StorageWriteError
from filelayer._io import aio as _aio
from filelayer._io import flusher as _flusher
from filelayer._io import fs as _fs
from filelayer.maintenance.compact import compact_thread
from filelayer.store import lifecycle as store_module


class Fsyncs:
    """Records the fsyncs of files (by path) and of directories, in order."""

    def __init__(self) -> None:
        self.files: list[str] = []
        self.dirs: list[Path] = []
        self.locks = 0

    def clear(self) -> None:
        self.files.clear()
        self.dirs.clear()
        self.locks = 0


@pytest.fixture
def fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fsyncs]:
    """Counts the fsyncs of this test's own paths (under ``tmp_path``) alone.

    Patching the module also catches every other thread that calls it: the process's
    own flusher (``_flusher.FLUSHER``) fsyncs the writes of earlier tests in the flush
    mode, the default, about a second after them, through ``fs.fsync_fd`` too. On a
    loaded machine that second can fall inside this test and add an earlier test's
    ``thread.json`` to ``files``. So the earlier writes are flushed before the patch,
    and a path of another test is not counted if one still comes."""
    seen = Fsyncs()
    real_fd, real_dir = _fs.fsync_fd, _fs.fsync_dir
    _flusher.FLUSHER.flush()  # what earlier tests left pending: not this test's to count
    own = os.path.realpath(tmp_path)

    def mine(path: str) -> bool:
        return os.path.commonpath([own, os.path.realpath(path)]) == own

    def fsync_fd(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if not stat.S_ISDIR(os.fstat(fd).st_mode) and mine(path):  # dirs: see fsync_dir
            seen.files.append(path)
        real_fd(fd)

    def fsync_dir(path: Path) -> None:
        if not mine(str(path)):
            pass  # another test's, through the process's flusher
        elif Path(path).name == "locks":  # a lock file's first use: see its own test
            seen.locks += 1
        else:
            seen.dirs.append(Path(path))
        real_dir(path)

    monkeypatch.setattr(_fs, "fsync_fd", fsync_fd)
    monkeypatch.setattr(_fs, "fsync_dir", fsync_dir)
    yield seen


def step(sid: str, tid: str = "t1", **extra: object) -> dict[str, object]:
    return {"id": sid, "threadId": tid, "type": "user_message", "output": sid, **extra}


KNOWN = (
    "thread.json",
    "steps.jsonl",
    "deleted.jsonl",
    "filelayer.json",
    "gitignore",
    "gitattributes",
    "e1",
)


def names(paths: list[str]) -> list[str]:
    """Which known file each path is (a temporary file is named after its target)."""
    return [next((k for k in KNOWN if k in Path(p).name), Path(p).name) for p in paths]


pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="names open files through /proc (Linux)"
)


def test_a_new_archive_is_durable_up_to_its_name(tmp_path: Path, fsyncs: Fsyncs) -> None:
    root = tmp_path / "deep" / "chats"
    ArchiveStore(root, durability="flush")
    # The marker, .gitignore and .gitattributes, then the root (its four directories and three files
    # with one fsync), then each directory made above it, deepest first. (The derived
    # index makes its own files durable as it sees fit.)
    index = root / "index"
    ours = [f for f in fsyncs.files if not f.startswith(str(index))]
    assert names(ours) == ["gitignore", "gitattributes", "filelayer.json"]
    assert [d for d in fsyncs.dirs if d != index] == [root, root.parent, tmp_path]
    fsyncs.clear()
    ArchiveStore(root, durability="fsync")  # opening an archive flushes nothing
    assert fsyncs.files == [] and fsyncs.dirs == []


def test_fsync_mode_makes_each_new_name_durable_once(tmp_path: Path, fsyncs: Fsyncs) -> None:
    store = ArchiveStore(tmp_path / "chats", durability="fsync")
    threads = store.layout.threads
    fsyncs.clear()
    store.write_step(step("s1"))  # a new thread: directory, manifest, journal
    assert names(fsyncs.files) == ["thread.json", "steps.jsonl"]
    # index/ first: the process's writer session, once (see filelayer.store.heal).
    assert fsyncs.dirs == [store.layout.index_dir, threads / "t1", threads]
    fsyncs.clear()
    store.write_step(step("s2"))  # an append: the journal alone
    assert names(fsyncs.files) == ["steps.jsonl"] and fsyncs.dirs == []
    fsyncs.clear()
    store.update_thread("t1", name="renamed")  # a manifest replaced: file, directory
    assert names(fsyncs.files) == ["thread.json"] and fsyncs.dirs == [threads / "t1"]
    fsyncs.clear()
    store.update_thread("t2", name="new")  # a new thread without a step
    assert names(fsyncs.files) == ["thread.json"]
    assert fsyncs.dirs == [threads / "t2", threads]
    fsyncs.clear()
    store.update_thread("t2", name="new")  # nothing changed: nothing written
    assert fsyncs.files == [] and fsyncs.dirs == []


def test_fsync_mode_elements_and_deletions(tmp_path: Path, fsyncs: Fsyncs) -> None:
    store = ArchiveStore(tmp_path / "chats", durability="fsync")
    store.write_step(step("s1"))
    thread_dir = store.layout.thread_dir("t1")
    fsyncs.clear()
    store.put_element("t1", {"id": "e1", "name": "a.txt", "forId": "s1"}, b"bytes")
    # elements/ is new: the thread directory; the file: its data, then elements/.
    assert fsyncs.dirs == [thread_dir, thread_dir / "elements"]
    assert names(fsyncs.files) == ["e1", "steps.jsonl"]
    fsyncs.clear()
    store.delete_element("e1", "t1")  # the journal, then the file's removal
    assert names(fsyncs.files) == ["steps.jsonl"] and fsyncs.dirs == [thread_dir / "elements"]
    fsyncs.clear()
    store.delete_thread("t1")  # the first tombstone: its name in the root too
    assert names(fsyncs.files) == ["deleted.jsonl"]
    assert fsyncs.dirs == [store.root, store.layout.threads]
    fsyncs.clear()
    store.write_step(step("s1", "t3"))
    fsyncs.clear()
    store.delete_thread("t3")  # tombstones exist: the rename is what remains
    assert names(fsyncs.files) == ["deleted.jsonl"] and fsyncs.dirs == [store.layout.threads]


def test_a_store_makes_the_names_it_writes_behind_durable_once(
    tmp_path: Path, fsyncs: Fsyncs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread made by another process (one that may have died before it fsynced its
    directories): the first write of this store to it fsyncs them, the next ones do not.
    The same for ``deleted.jsonl``, ``elements/`` and ``sessions/``."""
    root = tmp_path / "chats"
    before = ArchiveStore(root, durability="fsync")
    before.write_step(step("s1"))
    before.put_element("t1", {"id": "e1", "name": "a.txt", "forId": "s1"}, b"bytes")
    before.update_thread("t1", metadata=session_metadata("one"))
    before.write_step(step("s1", "t2"))
    before.write_step(step("s1", "t3"))
    before.delete_thread("t2")
    monkeypatch.setattr(_fs, "_NAMED", {})  # what this process knows of deleted.jsonl
    store = ArchiveStore(root, durability="fsync")
    threads, thread_dir = store.layout.threads, store.layout.thread_dir("t1")
    fsyncs.clear()
    store.write_step(step("s2"))
    assert names(fsyncs.files) == ["steps.jsonl"]
    # (index/ first: the process's writer session, once.)
    assert fsyncs.dirs == [store.layout.index_dir, thread_dir, threads]
    fsyncs.clear()
    store.write_step(step("s3"))
    assert names(fsyncs.files) == ["steps.jsonl"] and fsyncs.dirs == []
    fsyncs.clear()
    store.put_element("t1", {"id": "e2", "name": "b.txt", "forId": "s1"}, b"bytes")
    assert fsyncs.dirs == [thread_dir, thread_dir / "elements"]  # elements/ first seen
    fsyncs.clear()
    store.put_element("t1", {"id": "e3", "name": "c.txt", "forId": "s1"}, b"bytes")
    assert fsyncs.dirs == [thread_dir / "elements"]
    fsyncs.clear()
    store.update_thread("t1", metadata=session_metadata("two"))
    # sessions/ first seen; the manifest, unchanged, first seen too: what the call
    # acknowledges of it (the chat settings) is made durable, with its name.
    assert names(fsyncs.files)[0] == "thread.json" and len(fsyncs.files) == 2
    assert fsyncs.dirs == [thread_dir, store.root / "sessions", store.root]
    fsyncs.clear()
    store.update_thread("t1", metadata=session_metadata("three"))
    assert fsyncs.dirs == [store.root / "sessions"]
    fsyncs.clear()
    store.delete_thread("t3")  # deleted.jsonl first appended to by this process
    assert names(fsyncs.files) == ["deleted.jsonl"] and fsyncs.dirs == [store.root, threads]


def test_a_failed_call_makes_the_names_it_made_durable(tmp_path: Path, fsyncs: Fsyncs) -> None:
    """A retry, or another writer, finds the names a failed call made and cannot tell
    that they are not on the disk: they are made durable as the call ends, and the
    call's own error is the one raised (not an error of that fsync)."""
    made = tmp_path / "made"
    made.mkdir()
    with pytest.raises(KeyError), _fs.Changes(durable=True) as changes:
        changes.entry(made)
        changes.entry(tmp_path)
        raise KeyError("the call's own error")
    assert fsyncs.dirs == [made, tmp_path]
    fsyncs.clear()
    with pytest.raises(KeyError), _fs.Changes(durable=True) as changes:
        changes.entry(tmp_path / "gone")  # its fsync fails: the call's error still wins
        raise KeyError("the call's own error")


def test_names_are_noted_only_once_on_the_disk(tmp_path: Path, fsyncs: Fsyncs) -> None:
    """What a store notes as durable is noted once the fsync is done: after its group
    commit, never if it failed (the next call makes the names durable again)."""
    from filelayer._io import commit as _commit

    store = ArchiveStore(tmp_path / "chats", durability="fsync")
    threads = store.layout.threads
    store.write_step(step("s0", "t0"))  # the process's writer session made
    fsyncs.clear()
    failed = _commit.SyncGroup()
    with _commit.deferring(failed):
        store.write_step(step("s1"))
    assert fsyncs.dirs == []  # left to the group
    failed.abandon()
    group = _commit.SyncGroup()
    with _commit.deferring(group):
        store.write_step(step("s2"))
        store.write_step(step("s3"))
    assert set(group.dirs) == {threads / "t1", threads}
    group.commit()
    fsyncs.clear()
    store.write_step(step("s4"))
    assert names(fsyncs.files) == ["steps.jsonl"] and fsyncs.dirs == []


def test_flush_mode_hands_the_names_to_the_flusher_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ArchiveStore(tmp_path / "chats").write_step(step("s1"))
    _flusher.FLUSHER.flush()
    flushed: list[Path] = []
    flusher = _flusher.Flusher(interval=3600, fsync=flushed.append)  # flushed by hand
    monkeypatch.setattr(_fs, "FLUSHER", flusher)
    store = ArchiveStore(tmp_path / "chats")  # another process's store
    threads = store.layout.threads
    store.write_step(step("s2"))
    flusher.flush()
    assert flushed == [threads / "t1" / "steps.jsonl", threads / "t1", threads]
    flushed.clear()
    store.write_step(step("s3"))
    flusher.flush()
    assert flushed == [threads / "t1" / "steps.jsonl"]


def session_metadata(memory: str) -> dict[str, object]:
    """What Chainlit's ``persist_user_session`` passes to ``update_thread``."""
    return {"chat_settings": {}, "chat_profile": None, "client_type": "webapp", "memory": memory}


def test_a_lock_file_is_made_durably_once(tmp_path: Path, fsyncs: Fsyncs) -> None:
    """A new archive makes every lock file under its one fsync of locks/; a lock file
    made later (locks/ is derived: it may be deleted) has its name fsynced then."""
    store = ArchiveStore(tmp_path / "chats", durability="flush")
    assert fsyncs.locks == 1
    assert len(list(store.layout.locks.iterdir())) == len(store.layout.lock_files)
    fsyncs.clear()
    store.write_step(step("s1"))
    store.delete_thread("t1")
    assert fsyncs.locks == 0
    shutil.rmtree(store.layout.locks)  # derived: it comes back when needed
    store.write_step(step("s3", "t2"))  # the thread's stripe lock (and others) made again
    made = len(list(store.layout.locks.iterdir()))
    assert made >= 1 and fsyncs.locks == made and store.root in fsyncs.dirs


def test_a_tombstone_wins_over_a_directory_that_survived(tmp_path: Path) -> None:
    """A power cut after the tombstone reached the disk but before the directory's
    rename did: the thread is deleted, whatever is left of it."""
    root = tmp_path / "chats"
    store = ArchiveStore(root, durability="fsync")
    store.write_step(step("s1"))
    store.put_element("t1", {"id": "e1", "name": "a.txt", "forId": "s1"}, b"bytes")
    kept = tmp_path / "kept"
    os.rename(store.layout.thread_dir("t1"), kept)
    store.delete_thread("t1")
    os.rename(kept, store.layout.thread_dir("t1"))  # as if the rename had been lost
    fresh = ArchiveStore(root, durability="fsync")
    assert fresh.get_thread("t1") is None
    assert fresh.thread_author("t1") == ""
    assert fresh.get_element("t1", "e1") is None
    assert fresh.element_file("t1", "e1") is None


def test_flush_mode_hands_writes_to_the_flusher(
    tmp_path: Path, fsyncs: Fsyncs, monkeypatch: pytest.MonkeyPatch
) -> None:
    flushed: list[Path] = []
    flusher = _flusher.Flusher(interval=3600, fsync=flushed.append)  # flushed by hand
    monkeypatch.setattr(_fs, "FLUSHER", flusher)
    monkeypatch.setattr(store_module, "FLUSHER", flusher)
    store = ArchiveStore(tmp_path / "chats")
    threads = store.layout.threads
    fsyncs.clear()
    store.write_step(step("s1"))
    store.write_step(step("s2"))
    # The calls wait for no disk, but for the process's writer session, once: its name
    # is on the disk before the first write it covers (see filelayer.store.heal).
    assert fsyncs.files == [] and fsyncs.dirs == [store.layout.index_dir]
    assert flusher.pending > 0
    flusher.flush()
    # Files first, then directories, deepest first.
    assert flushed == [
        threads / "t1" / "thread.json",
        threads / "t1" / "steps.jsonl",
        threads / "t1",
        threads,
    ]
    flushed.clear()
    fsyncs.clear()
    store.update_thread("t1", name="renamed")
    # Replacing a file: its new bytes are fsynced before the rename, so that a power
    # cut cannot publish the new name without them and lose the old content.
    assert names(fsyncs.files) == ["thread.json"] and fsyncs.dirs == []
    fsyncs.clear()
    store.put_element("t1", {"id": "e1", "name": "a.txt", "forId": "s1"}, b"bytes")
    store.delete_element("e1", "t1")
    # The record that hides the element reaches the disk before its file goes, in
    # this mode too: a power cut must not leave an element without its bytes.
    assert names(fsyncs.files) == ["steps.jsonl"] and fsyncs.dirs == []
    fsyncs.clear()
    assert compact_thread(store, "t1") is not None  # maintenance: durable in any mode
    store.close()  # flushes what is pending
    elements = threads / "t1" / "elements"
    assert flushed == [
        threads / "t1" / "thread.json",
        elements / "e1.txt",
        threads / "t1" / "steps.jsonl",
        elements,
        threads / "t1",
    ]


def test_a_file_not_flushed_yet_is_replaced_without_an_fsync(
    tmp_path: Path, fsyncs: Fsyncs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manifest this process made a moment ago where there was none, not flushed yet,
    has no version on the disk: replacing it needs no fsync first (its flush takes the
    new one); once flushed, replaced by a file fsynced first, or changed by someone
    else since, it does."""
    flusher = _flusher.Flusher(interval=3600, fsync=lambda path: None)
    monkeypatch.setattr(_fs, "FLUSHER", flusher)
    monkeypatch.setattr(store_module, "FLUSHER", flusher)
    store = ArchiveStore(tmp_path / "chats")
    store.update_thread("t1", name="new")
    fsyncs.clear()
    store.update_thread("t1", name="named a moment later")
    assert fsyncs.files == []
    flusher.flush()
    store.update_thread("t1", name="renamed after the flush")
    assert names(fsyncs.files) == ["thread.json"]
    fsyncs.clear()
    # Its content is on the disk now (fsynced before its rename): the next replacement,
    # before the next flush, must not take it either.
    store.update_thread("t1", name="renamed again")
    assert names(fsyncs.files) == ["thread.json"]
    fsyncs.clear()
    manifest = store.layout.manifest("t1")
    os.utime(manifest, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))  # another writer
    store.update_thread("t1", name="again")
    assert names(fsyncs.files) == ["thread.json"]


async def test_element_bytes_follow_the_rules_of_every_other_file(
    tmp_path: Path, fsyncs: Fsyncs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data layer writes element bytes off the event loop (``_io.aio``) with the one
    atomic write every file goes through, so the same rules hold: in the ``fsync`` mode
    the file, then its directory; in the ``flush`` mode nothing at once, the flusher's
    next pass takes both, and a file replaced before that pass needs no fsync (it has no
    version on the disk) while one already flushed is fsynced before it is replaced."""
    flushed: list[Path] = []
    flusher = _flusher.Flusher(interval=3600, fsync=flushed.append)  # flushed by hand
    monkeypatch.setattr(_fs, "FLUSHER", flusher)
    durable = tmp_path / "e1.png"
    await _aio.write_file(durable, b"png", durable=True)
    assert names(fsyncs.files) == ["e1"] and fsyncs.dirs == [tmp_path]
    assert durable.read_bytes() == b"png" and flusher.pending == 0
    fsyncs.clear()

    later = tmp_path / "e1-flush.txt"
    await _aio.write_file(later, b"one", durable=False)
    await _aio.write_file(later, b"two", durable=False)
    assert fsyncs.files == [] and fsyncs.dirs == []
    flusher.flush()
    assert flushed == [later, tmp_path]
    await _aio.write_file(later, b"three", durable=False)
    assert names(fsyncs.files) == ["e1"] and later.read_bytes() == b"three"

    with pytest.raises(StorageWriteError):
        await _aio.write_file(tmp_path / "no-such-dir" / "e1.txt", b"x", durable=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e1-flush.txt", "e1.png"]


def test_the_flusher_runs_within_its_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flushed: list[tuple[float, Path]] = []
    done = threading.Event()

    def record(path: Path) -> None:
        if tmp_path not in path.parents and path != tmp_path:
            return  # the process's own flusher, still flushing an earlier test's writes
        flushed.append((time.monotonic(), path))
        done.set()

    # Its own fsync, not a patched module: other tests' flushers may still be running.
    flusher = _flusher.Flusher(interval=0.2, fsync=record)
    start = time.monotonic()
    flusher.add([tmp_path / "a"], [tmp_path])
    flusher.add([tmp_path / "b"], [tmp_path])
    deadline = time.monotonic() + 30  # a bound for a stuck thread, not a timing claim
    while flusher.flushes < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [p for _, p in flushed] == [tmp_path / "a", tmp_path / "b", tmp_path]
    assert flushed[0][0] - start >= 0.15  # it waits for its interval, never less
    assert flusher.pending == 0 and flusher.flushes == 1
    done.clear()
    flusher.add([tmp_path / "c"], [])  # the thread goes on with the next batch
    assert done.wait(60)  # a bound for a stuck thread, not a timing claim
    assert flushed[-1][1] == tmp_path / "c"
