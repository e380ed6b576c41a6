"""Group commit: the ``fsync`` mode's writes made in one worker thread share their fsyncs.

In the ``fsync`` mode every call waits for the disk before it returns. Made one call at a
time, that is one ``fsync`` per call, each waiting for the file system's journal to
commit (milliseconds on a busy disk), while the 20 chats of a busy app queue behind one
another. PostgreSQL and SQLite's WAL answer this with group commit: the transactions
that arrive while one flush runs share the next one. Here the writes queued for the
adapter's worker thread run one after the other, as before (each under its locks,
which it releases when it returns), but the fsyncs of their journal appends and of the
directories whose names they changed are collected in a :class:`SyncGroup` instead of
being made on the spot; when the queue is empty (or a write is about to wait for a lock)
the group is committed (in a committer thread, while the next group's writes run): each
file once, the files in parallel (ext4 and XFS put concurrent fsyncs into one journal
commit), then the directories, deepest first. Only then are the calls of the group
acknowledged, group after group in their order: no call returns before its fsync.

A manifest replaced by ``update_thread`` is written to its temporary file and left to
the group too (:meth:`SyncGroup.replace_later`): the group fsyncs the new files in
parallel, renames them over the old ones, and only then releases the threads' locks
(held until that moment, so no other writer reads or replaces the old manifest
meanwhile) and fsyncs the directories; a queued call that may touch one of those
threads waits until they are renamed. What is never deferred: any other whole file
replaced (an element file: its bytes are fsynced before the rename publishes them, as
always), and an append that must reach the disk before the call goes on (``sync``: the
deletion record before the element files it hides are removed, and the line that takes a
feedback out of the index before the index forgets it: see
:func:`filelayer.store.steps.forgets_feedback`). A call whose append was
deferred released the thread's lock before its fsync: another writer may append after
it, and that writer's fsync of the same file covers both lines; a compaction that
replaces the file meanwhile wrote (and fsynced) a file holding the line, and the fsync
of the old one is then harmless. The names such a call made (a new thread, journal,
``elements/``) are not on the disk yet either: another process that writes there
meanwhile makes them durable itself (each store does, the first time it writes behind a
name: ``DurableNames`` in :mod:`filelayer.store.appender`).
If a group's fsync fails, every call of the group fails with it (its line may or may
not be on the disk, as with any call that did not return).

The store opts in with ``Changes(..., group=current())``: a group is only active in a
thread that runs calls inside :func:`deferring`, the adapter's worker thread; a store
used directly (the command line, scripts, tests) fsyncs each call where it writes.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ..errors import StorageWriteError
from . import fs as _fs
from .flusher import FLUSHER

if TYPE_CHECKING:
    from .fs import AppendFile

_PARALLEL = 16
"""Fsyncs made at once, at most: enough for the journals of many chats to share one
commit of the file system's journal."""


class SyncGroup:
    """The fsyncs left by the calls of one group, made together by :meth:`commit`."""

    __slots__ = ("after", "dirs", "files", "renames", "renaming")

    def __init__(self) -> None:
        self.files: dict[tuple[int, int], tuple[int, Path]] = {}  # file id -> (fd, path)
        self.dirs: dict[Path, None] = {}
        self.after: list[Callable[[], None]] = []
        """Called once the group is on the disk (see :meth:`then`)."""
        # Files that replace others, written and not yet fsynced nor renamed: the
        # descriptor, the temporary file, its target, and what releases the target's
        # lock (held until the rename).
        self.renames: list[tuple[int, Path, Path, Callable[[], None]]] = []
        self.renaming: set[str] = set()
        """What the renames are about (thread ids): a call about one of them must wait
        until they are published (:meth:`publish`)."""

    def __bool__(self) -> bool:
        return bool(self.files or self.dirs or self.renames)

    def replace_later(
        self, fd: int, tmp: Path, path: Path, release: Callable[[], None], about: str
    ) -> None:
        """``tmp`` (open as ``fd``, written) is to replace ``path``: fsynced with the
        group's other new files, then renamed, then ``release`` called (it releases the
        lock that keeps other writers of ``path`` waiting meanwhile); see
        :meth:`publish`. The group's directories are fsynced after that."""
        self.renames.append((fd, tmp, path, release))
        self.renaming.add(about)

    def publish(self, pool: Callable[[], ThreadPoolExecutor] | None = None) -> None:
        """Fsync the files waiting to replace others, in parallel, and rename each over
        its target; release their locks. Runs in the thread that took the locks. A file
        that could not be fsynced is not renamed (its target keeps its old version) and
        :class:`StorageWriteError` is raised after the others were published."""
        renames, self.renames = self.renames, []
        self.renaming = set()
        failed: dict[Path, OSError] = {}

        def sync(item: tuple[int, Path, Path, Callable[[], None]]) -> None:
            try:
                _fs.fsync_fd(item[0])
            except OSError as exc:
                failed[item[1]] = exc

        errors: list[StorageWriteError] = []
        try:
            _each(sync, renames, pool)
            for fd, tmp, path, _ in renames:
                with contextlib.suppress(OSError):
                    os.close(fd)
                exc = failed.get(tmp)
                if exc is None:
                    try:
                        os.replace(tmp, path)
                        FLUSHER.mark(path, fresh=False)
                        continue
                    except OSError as err:
                        exc = err
                with contextlib.suppress(OSError):
                    tmp.unlink()
                errors.append(StorageWriteError(path, exc))
        finally:
            for _, _, _, release in renames:
                release()
        if errors:
            raise errors[0]

    def keep(self, opened: AppendFile) -> bool:
        """Take over the descriptor of ``opened``, just appended to, to fsync it at the
        commit; ``False`` if the group holds that file already (its fsync covers this
        append too: the caller closes its own descriptor)."""
        if opened.id in self.files:
            return False
        self.files[opened.id] = (opened.fd, opened.path)
        return True

    def keep_fd(self, fd: int, path: Path) -> bool:
        """Take over ``fd``, a file just written at ``path`` (see :meth:`keep`)."""
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        if key in self.files:
            return False
        self.files[key] = (fd, path)
        return True

    def entries(self, dirs: list[Path]) -> None:
        """Names were created, renamed or removed in ``dirs``."""
        for directory in dirs:
            self.dirs[directory] = None

    def then(self, callbacks: list[Callable[[], None]]) -> None:
        """Call ``callbacks`` once :meth:`commit` made the group durable (in the thread
        that commits it); never if it failed. See :meth:`filelayer._io.fs.Changes.then`."""
        self.after.extend(callbacks)

    def commit(self, pool: Callable[[], ThreadPoolExecutor] | None = None) -> None:
        """Make every kept file and directory durable, then close the files; raise
        :class:`StorageWriteError` if any of them could not be (after trying all)."""
        files, self.files = self.files, {}
        dirs, self.dirs = self.dirs, {}
        after, self.after = self.after, []
        errors: list[StorageWriteError] = []

        def sync_file(item: tuple[int, Path]) -> None:
            fd, path = item
            try:
                _fs.fsync_fd(fd)
            except OSError as exc:
                errors.append(StorageWriteError(path, exc))

        def sync_dir(path: Path) -> None:
            try:
                _fs.fsync_dir(path)
            except FileNotFoundError:
                # Removed since one of the group's calls made a name in it: a thread
                # deleted after it was written to, by a call that made its removal
                # durable itself (``delete_thread`` fsyncs ``threads/``). What the group
                # wrote there went with it: nothing left to make durable.
                pass
            except OSError as exc:
                errors.append(StorageWriteError(path, exc))

        try:
            _each(sync_file, list(files.values()), pool)
            # A new directory's own entries before its name in its parent.
            by_depth: dict[int, list[Path]] = {}
            for directory in dirs:
                by_depth.setdefault(len(directory.parts), []).append(directory)
            for depth in sorted(by_depth, reverse=True):
                _each(sync_dir, by_depth[depth], pool)
        finally:
            for fd, _ in files.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
        if errors:
            raise errors[0]
        for callback in after:
            callback()

    def abandon(self) -> None:
        """Close the kept files without syncing them (the group's calls failed); the
        files that were to replace others are removed, their locks released."""
        files, self.files = self.files, {}
        self.dirs = {}
        self.after = []
        renames, self.renames = self.renames, []
        self.renaming = set()
        for fd, tmp, _, release in renames:
            with contextlib.suppress(OSError):
                os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            release()
        for fd, _ in files.values():
            with contextlib.suppress(OSError):
                os.close(fd)


_Item = TypeVar("_Item")


def _each(
    fn: Callable[[_Item], None],
    items: list[_Item],
    pool: Callable[[], ThreadPoolExecutor] | None,
) -> None:
    if len(items) > 1 and pool is not None:
        list(pool().map(fn, items))
    else:
        for item in items:
            fn(item)


class DiskWait(Exception):
    """A call running where it must not wait for the disk (the event loop, see
    :func:`on_loop`) would have to, or would read and fold a whole long journal:
    raised before it changed anything, so that its caller runs it again in a worker
    thread."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"writing {path} waits for the disk")
        self.path = path


class _Current(threading.local):
    group: SyncGroup | None = None
    on_loop = False


_current = _Current()


def current() -> SyncGroup | None:
    """The group this thread's calls leave their fsyncs to, if any."""
    return _current.group


def set_group(group: SyncGroup | None) -> SyncGroup | None:
    """Have this thread's calls leave their fsyncs to ``group``; returns the one before."""
    before, _current.group = _current.group, group
    return before


def on_loop() -> bool:
    """Whether this thread runs a call on an event loop, which must not wait for the
    disk (the adapter says so around the calls it runs there)."""
    return _current.on_loop


def set_on_loop(value: bool) -> bool:
    """Say whether this thread runs calls on an event loop; returns what it was."""
    before, _current.on_loop = _current.on_loop, value
    return before


@contextlib.contextmanager
def deferring(group: SyncGroup) -> Iterator[SyncGroup]:
    """In this block, the calls made by this thread leave their fsyncs to ``group``."""
    before = _current.group
    _current.group = group
    try:
        yield group
    finally:
        _current.group = before


def new_pool() -> ThreadPoolExecutor:
    """The threads a group's fsyncs run in."""
    return ThreadPoolExecutor(max_workers=_PARALLEL, thread_name_prefix="filelayer-fsync")
