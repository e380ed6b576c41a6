"""A compaction holds the thread's lock only for the swap.

The new journal is written and fsynced aside before the lock is taken; under it only
the lines appended meanwhile are added (and fsynced again, if there are any), the file
renamed over the journal and the directory fsynced. These tests stop the compaction at
the moment its new file is fsynced aside and do there what another writer, a deletion
or a repair may do at that moment.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from filelayer import ArchiveStore
from filelayer._io import fs as _fs
from filelayer._io import locks as _locks
from filelayer.format import journal
from filelayer.format.layout import is_layer_leftover
from filelayer.maintenance.verify import verify

PROMPT = "You are a helpful assistant. " * 500


def progress(store: ArchiveStore, step_id: str, n: int, thread: str = "t1") -> None:
    store.write_step(
        {
            "id": step_id,
            "threadId": thread,
            "type": "llm",
            "input": PROMPT,
            "output": f"{step_id}: {n}% done",
            "createdAt": "2026-01-01T00:00:01.000000Z",
        }
    )


def worth_compacting(root: Path) -> ArchiveStore:
    store = ArchiveStore(root, auto_compact=False)
    for n in range(20):
        progress(store, "big", n)
    return store


def outputs(root: Path) -> dict[str, Any]:
    thread = ArchiveStore(root).get_thread("t1")
    assert thread is not None
    return {s["id"]: s["output"] for s in thread["steps"]}


def in_another_thread(fn: Callable[[], Any]) -> Any:
    """``fn()`` run in another thread of this process (which does not share this
    thread's locks); what it raised is raised here."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(("ok", fn()))
        except BaseException as exc:  # handed back to the caller
            out.append(("raised", exc))

    t = threading.Thread(target=run)
    t.start()
    t.join()
    kind, value = out[0]
    if kind == "raised":
        raise value
    return value


def lock_free_elsewhere(lock: Path) -> bool:
    return bool(in_another_thread(lambda: _locks.is_free(lock)))


def leftovers(root: Path) -> list[str]:
    found = []
    for directory, dirnames, filenames in os.walk(root / "threads"):
        found += [os.path.join(directory, n) for n in dirnames + filenames if is_layer_leftover(n)]
    return found


class AtAsideFsync:
    """Records every fsync (of a file: its inode, size, and whether the thread's lock was
    free for another thread; of a directory: whether the lock was free) and every rename,
    and calls ``hook`` once, when the compaction's new file is first fsynced aside."""

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, store: ArchiveStore, hook: Callable[[], None]
    ) -> None:
        self.store = store
        self.lock = store.layout.thread_lock("t1")
        self.directory = store.layout.thread_dir("t1")
        self.hook: Callable[[], None] | None = hook
        self.events: list[tuple[Any, ...]] = []
        self.temp_names: list[str] = []
        self._inside = False
        real_fsync, real_replace = _fs.fsync_fd, os.replace

        def fsync(fd: int) -> None:
            if not self._inside:
                self._inside = True
                try:
                    self._saw(fd)
                finally:
                    self._inside = False
            real_fsync(fd)

        def replace(src: Any, dst: Any, **kwargs: Any) -> None:
            real_replace(src, dst, **kwargs)
            if not self._inside:
                self.events.append(("rename", os.fspath(dst)))

        monkeypatch.setattr(_fs, "fsync_fd", fsync)
        monkeypatch.setattr(os, "replace", replace)

    def _temp_inodes(self) -> dict[int, str]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return {}
        found = {}
        for name in names:
            if name.startswith(_fs.RESERVED_PREFIX):
                with contextlib.suppress(FileNotFoundError):
                    found[os.stat(self.directory / name).st_ino] = name
        return found

    def _saw(self, fd: int) -> None:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            self.events.append(("dir", st.st_ino, lock_free_elsewhere(self.lock)))
            return
        self.events.append(("file", st.st_ino, st.st_size, lock_free_elsewhere(self.lock)))
        name = self._temp_inodes().get(st.st_ino)
        if name is not None and self.hook is not None:
            self.temp_names.append(name)
            hook, self.hook = self.hook, None
            hook()

    def of(self, inode: int) -> list[tuple[Any, ...]]:
        return [e for e in self.events if e[0] == "file" and e[1] == inode]


def test_the_new_journal_is_fsynced_before_the_lock_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fsync of the whole new file happens while another thread could take the
    thread's lock; with nothing appended meanwhile, it is the new file's only fsync."""
    store = worth_compacting(tmp_path / "chats")
    spy = AtAsideFsync(monkeypatch, store, lambda: None)
    done = store.compact_journal("t1")
    assert done.changed
    new = store.layout.journal("t1").stat()
    assert spy.of(new.st_ino) == [("file", new.st_ino, new.st_size, True)]
    # Named as every temporary file is: a crash leaves what verify --repair removes.
    assert spy.temp_names and all(is_layer_leftover(n) for n in spy.temp_names)
    assert spy.temp_names[0].endswith(_fs.TEMP_SUFFIX)
    assert leftovers(store.root) == []


def test_lines_appended_meanwhile_are_fsynced_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer appends while the new file is written aside: its line is added to the
    new file under the lock, fsynced, and only then the file renamed, and the directory
    fsynced before the lock is released."""
    root = tmp_path / "chats"
    store = worth_compacting(root)
    writer = ArchiveStore(root, auto_compact=False, durability="fsync", lock_timeout=2)
    line = {"id": "meanwhile", "threadId": "t1", "type": "run", "output": "kept"}
    spy = AtAsideFsync(
        monkeypatch, store, lambda: in_another_thread(lambda: writer.write_step(line))
    )
    done = store.compact_journal("t1")
    assert done.changed
    path = store.layout.journal("t1")
    new = path.stat()
    aside, tail = spy.of(new.st_ino)
    assert aside[3] is True and aside[2] < new.st_size  # the whole file, lock free
    assert tail == ("file", new.st_ino, new.st_size, False)  # the line added, under it
    after = spy.events[spy.events.index(tail) + 1 :]
    assert after[0] == ("rename", os.fspath(path))
    thread_dir = os.stat(store.layout.thread_dir("t1")).st_ino
    assert ("dir", thread_dir, False) in after[1:]
    steps = outputs(root)
    assert steps == {"big": "big: 19% done", "meanwhile": "kept"}
    assert journal.read(path).bad_lines == []
    assert leftovers(root) == []


def test_a_thread_deleted_while_the_new_journal_is_written_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deletion is not kept waiting and leaves nothing behind; the compaction
    gives up without an error and makes nothing again."""
    root = tmp_path / "chats"
    store = worth_compacting(root)
    other = ArchiveStore(root, auto_compact=False, lock_timeout=2)
    AtAsideFsync(monkeypatch, store, lambda: in_another_thread(lambda: other.delete_thread("t1")))
    done = store.compact_journal("t1")
    assert not done.changed
    assert not store.layout.thread_dir("t1").exists()
    assert leftovers(root) == []
    assert ArchiveStore(root).get_thread("t1") is None


def test_a_thread_deleted_before_the_new_journal_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deleted after the journal was read, before the temporary file is created: its
    directory is gone, and the compaction gives up without an error."""
    root = tmp_path / "chats"
    store = worth_compacting(root)
    other = ArchiveStore(root, auto_compact=False, lock_timeout=2)
    real = _fs.temp_path
    deleted: list[bool] = []

    def temp_path(path: Path) -> Path:
        if path == store.layout.journal("t1") and not deleted:
            deleted.append(in_another_thread(lambda: other.delete_thread("t1")))
        return real(path)

    monkeypatch.setattr(_fs, "temp_path", temp_path)
    done = store.compact_journal("t1")
    assert deleted == [True]
    assert not done.changed
    assert not store.layout.thread_dir("t1").exists()
    assert leftovers(root) == []


def test_a_journal_replaced_while_the_new_one_is_written_aside_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repair or a checkout replaces the journal meanwhile (here with a line more):
    the file written aside is removed, the new journal read and compacted."""
    root = tmp_path / "chats"
    store = worth_compacting(root)
    path = store.layout.journal("t1")
    extra = b'{"id":"restored","op":"step","step":{"id":"restored","output":"back"}}\n'

    def replace_journal() -> None:
        data = path.read_bytes()
        aside = path.with_name("replacement")
        aside.write_bytes(data + extra)
        os.replace(aside, path)

    AtAsideFsync(monkeypatch, store, replace_journal)
    done = store.compact_journal("t1")
    assert done.changed
    steps = outputs(root)
    assert steps == {"big": "big: 19% done", "restored": "back"}
    assert leftovers(root) == []
    assert not verify(ArchiveStore(root)).problems
