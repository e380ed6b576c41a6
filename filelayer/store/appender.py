"""Appending to a thread's journal: the thread made first if it is new, every line
stamped by the journal's clock, the store's durability applied, the live bytes followed
for compaction; and the one way a deletion is written (its records first, then the
element files they hide). Callers hold the thread's lock (:class:`WriteLocks`)."""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

from .._io import commit as _commit
from .._io import fs as _fs
from .._time import now_iso
from ..errors import CorruptFileError, StorageWriteError
from ..format import clock, manifest
from ..format import codec as _codec
from ..format.ids import case_twin, refuse_case_twin
from ..format.layout import Layout
from ..index.thread_index import ThreadIndex
from .authors import OWNER_CACHE_SIZE
from .cache import Lru
from .compaction import Compactor
from .deleted import DeletedThreads
from .folds import TombstoneCache
from .indexing import IndexBook

log = logging.getLogger("filelayer")

WRITTEN_KEPT = 64
"""Threads a store remembers having written, for their views (at its close, or once
they are quiet in a running app)."""


class DurableNames:
    """The names of thread files this store made durable: each is fsynced once per
    store, not by every call that writes behind it.

    A name is on the disk once its directory was fsynced after it was made. The call
    that makes a name has its directory fsynced (``Changes.entry``), but that call may
    die before it does, or fail, or (in a group commit) release the thread's lock
    before its group fsyncs it; a later call that finds the file there cannot tell, and
    without its names an acknowledged line goes with the directory at a power cut. So
    the first time a store writes behind a name, it makes that name durable itself: a
    thread's directory in ``threads/``, its journal or ``elements/`` in it, a directory
    of the root (``sessions/``). That is one fsync of each directory, the first time
    (shared by a group commit; in the flush mode handed to the flusher), noted only
    once done (``Changes.then``: a failed fsync is made again by the next call).

    A journal is known by its file (device, inode): one made since it was noted (a
    compaction, the first line another writer gave a thread known without a journal)
    has its name made durable again. Entries are noted under a lock, by the thread that
    made them durable (a group's committer, say); the write path only looks (one
    dictionary lookup), and a process remembers the last ``size`` threads."""

    def __init__(self, layout: Layout, size: int = OWNER_CACHE_SIZE) -> None:
        self.layout = layout
        self.size = size
        self._threads: dict[str, tuple[int, int] | None] = {}
        """Threads whose directory's name is durable -> the journal (device, inode)
        whose name is too (``None``: none known)."""
        self._elements: dict[str, None] = {}  # threads whose elements/ name is durable
        self._manifests: dict[str, tuple[int, int, int]] = {}
        """Threads -> the manifest (device, inode, change time) this store wrote or found
        and made durable, with its name: one found again needs no fsync."""
        self._dirs: dict[Path, None] = {}  # other directories whose name is durable
        self._lock = threading.Lock()

    def journal(self, thread_id: str, opened: _fs.AppendFile, changes: _fs.Changes) -> None:
        """The thread's journal ``opened`` is written to by this call."""
        if self._threads.get(thread_id) != opened.id:
            changes.entry(opened.path.parent)
            if thread_id not in self._threads:
                changes.entry(self.layout.threads)
            changes.then(partial(self._note, thread_id, opened.id, False))

    def thread(self, thread_id: str, changes: _fs.Changes) -> None:
        """A file in the thread's directory is written by this call (which records
        the directory itself, if it makes a name there)."""
        if thread_id not in self._threads:
            changes.entry(self.layout.threads)
            changes.then(partial(self._note, thread_id, None, False))

    def elements(self, thread_id: str, changes: _fs.Changes) -> None:
        """A file in the thread's ``elements/`` is written by this call."""
        if thread_id not in self._elements:
            changes.entry(self.layout.thread_dir(thread_id))
            if thread_id not in self._threads:
                changes.entry(self.layout.threads)
            changes.then(partial(self._note, thread_id, None, True))

    def directory(self, directory: Path, changes: _fs.Changes) -> None:
        """A file in ``directory`` (one of the root's, as ``sessions/``) is written."""
        if directory not in self._dirs:
            changes.entry(directory.parent)
            changes.then(partial(self._note_dir, directory))

    def manifest_known(self, thread_id: str, path: Path) -> bool:
        """Whether the manifest at ``path`` is one this store made durable (or handed to
        the flusher), name and data: not replaced since."""
        known = self._manifests.get(thread_id)
        return known is not None and known == _identity(path)

    def manifest(self, thread_id: str, path: Path, changes: _fs.Changes) -> None:
        """The manifest at ``path`` (written or found by this call, under the thread's
        lock) is made durable by ``changes``, name included: noted once it is."""
        identity = _identity(path)
        if identity is not None:
            changes.then(partial(self._note_manifest, thread_id, identity))

    def _note_manifest(self, thread_id: str, identity: tuple[int, int, int]) -> None:
        with self._lock:
            self._manifests[thread_id] = identity
            while len(self._manifests) > self.size:
                del self._manifests[next(iter(self._manifests))]

    def _note(self, thread_id: str, journal: tuple[int, int] | None, elements: bool) -> None:
        with self._lock:
            threads = self._threads
            if journal is not None or thread_id not in threads:
                threads[thread_id] = journal
            if elements:
                self._elements[thread_id] = None
            for kept in (threads, self._elements):
                while len(kept) > self.size:
                    del kept[next(iter(kept))]  # the oldest noted

    def _note_dir(self, directory: Path) -> None:
        with self._lock:
            self._dirs[directory] = None

    def forget_thread(self, thread_id: str) -> None:
        with self._lock:
            self._threads.pop(thread_id, None)
            self._elements.pop(thread_id, None)
            self._manifests.pop(thread_id, None)

    def forget(self) -> None:
        """Files changed behind the layer's back (``git checkout`` writes without
        fsyncs): every name is made durable again by the next write behind it."""
        with self._lock:
            self._threads.clear()
            self._elements.clear()
            self._dirs.clear()
            self._manifests.clear()


class JournalAppender:
    """The journal writes of one store (see the module's docstring)."""

    def __init__(
        self,
        layout: Layout,
        index: ThreadIndex,
        book: IndexBook,
        deleted: DeletedThreads,
        tombstones: TombstoneCache,
        compactor: Compactor,
        *,
        durable: bool,
    ) -> None:
        self.layout = layout
        self.index = index
        self.book = book
        self.deleted = deleted
        self.tombstones = tombstones
        self.compactor = compactor
        self.durable = durable
        self._existing: Lru[str, None] = Lru(OWNER_CACHE_SIZE)  # threads seen to exist
        self.names = DurableNames(layout)
        self.written: Lru[str, float] = Lru(WRITTEN_KEPT)
        """The threads whose journals this store appended to most recently, with the
        monotonic time of the last append: those whose views it writes once they are
        quiet, or when it closes (see :mod:`filelayer.store.snapshots`)."""
        self.at_close: Lru[str, None] = Lru(WRITTEN_KEPT)
        """Threads taken from :attr:`written` once quiet whose views wait for the
        store's close all the same: too long to be written while it serves an app."""

    def forget(self) -> None:
        self._existing.clear()
        self.names.forget()

    def forget_thread(self, thread_id: str) -> None:
        """The thread is being deleted: it no longer exists."""
        self._existing.pop(thread_id)
        self.written.pop(thread_id)
        self.names.forget_thread(thread_id)

    def changes(self) -> _fs.Changes:
        """What one write call changes, made durable as the store's mode says when the
        call is done (see :class:`~filelayer._io.fs.Changes`)."""
        return _fs.Changes(self.durable, _commit.current())

    def known_to_exist(self, thread_id: str) -> bool:
        """Whether this process saw the thread exist (:meth:`open_journal` then makes
        nothing: no directory, no manifest, no index record)."""
        return thread_id in self._existing

    def open_journal(self, thread_id: str, changes: _fs.Changes) -> _fs.AppendFile | None:
        """The thread's journal, open to append to, the thread created first if it is
        new; ``None`` if it was deleted. Caller holds the thread's lock.

        A thread this process saw exist is taken to exist while its journal does (the
        manifest is made before the first line) and no tombstone names it: no look at
        its manifest."""
        path = self.layout.journal(thread_id)
        if thread_id in self._existing and not self.deleted.has(thread_id):
            try:
                return _fs.AppendFile(path, create=False)
            except FileNotFoundError:
                pass  # not written yet, or deleted since: look properly
        if not self.ensure_thread(thread_id, changes):
            return None
        return _fs.AppendFile(path)

    def append_records(
        self,
        thread_id: str,
        records: list[dict[str, Any]],
        changes: _fs.Changes,
        *,
        sync: bool = False,
        deleted: str | None = None,
    ) -> None:
        data = b"".join(_codec.encode_line(r) for r in records)
        self.append_lines(thread_id, data, changes, sync=sync, deleted=deleted)

    def refuse_link(self, thread_id: str) -> None:
        """``StorageWriteError`` if the thread's directory is a symbolic link (a merge
        can bring one: git keeps links): written through, it would write outside the
        archive. ``filelayer verify --repair`` removes such links."""
        directory = self.layout.thread_dir(thread_id)
        if directory.is_symlink():
            raise StorageWriteError(
                directory,
                OSError(errno.ELOOP, "a symbolic link, not a thread directory: never written"),
            )

    def append_lines(
        self,
        thread_id: str,
        data: bytes,
        changes: _fs.Changes,
        *,
        sync: bool = False,
        deleted: str | None = None,
    ) -> None:
        self.refuse_link(thread_id)
        with _fs.AppendFile(self.layout.journal(thread_id)) as opened:
            self.append_to(thread_id, opened, data, changes, sync=sync, deleted=deleted)

    def append_to(
        self,
        thread_id: str,
        opened: _fs.AppendFile,
        data: bytes,
        changes: _fs.Changes,
        *,
        sync: bool = False,
        step: str | None = None,
        deleted: str | None = None,
    ) -> None:
        """Append lines to the thread's open journal: a version of ``step``, or the
        deletion of step ``deleted``, or other lines. The tombstones of a thread being
        written were read up to its end: they tell that the file ends with a complete
        line, and take the new lines without reading them back."""
        dead = self.tombstones.known(thread_id)
        whole = dead is not None and dead.ends_at(opened)
        # Every record gets the next stamp of the journal's clock (docs/format.md,
        # "Ordering records"): what a merge of two clones' lines is ordered by.
        last = dead.last_stamp if dead is not None and whole else _last_stamp(opened)
        data, _ = clock.stamp_lines(data, last)
        at = opened.write(data, changes=changes, sync=sync, whole=whole)
        self.names.journal(thread_id, opened, changes)
        self.written.put(thread_id, time.monotonic())
        if dead is not None:
            dead.appended(opened, at, data)
        self.book.appended(thread_id, opened, at, data, step, deleted)
        if self.compactor.enabled:
            self.compactor.appended(thread_id, opened, at, len(data), step, deleted)

    def take_quiet(self, before: float) -> tuple[list[str], bool]:
        """The threads written last at monotonic time ``before`` or earlier, the last
        written first, forgotten here; and whether threads written since are left."""
        quiet = [thread_id for thread_id, at in self.written.items() if at <= before]
        for thread_id in quiet:
            self.written.pop(thread_id)
        return quiet[::-1], len(self.written.keys()) > 0

    def found(self, thread_id: str, opened: _fs.AppendFile, changes: _fs.Changes) -> None:
        """The call appends nothing to the open journal but acknowledges what it holds
        (a write ignored because the journal deleted its step): made durable as an
        append would be, since another worker's group commit may not have fsynced it."""
        if changes.durable:
            try:
                if changes.group is not None:
                    opened.kept = changes.group.keep(opened)
                else:
                    _fs.fsync_fd(opened.fd)
            except OSError as exc:
                raise StorageWriteError(opened.path, exc) from exc
        else:
            changes.wrote(opened.path)
        self.names.journal(thread_id, opened, changes)

    def found_journal(self, thread_id: str, changes: _fs.Changes) -> None:
        """:meth:`found` for the thread's journal, opened here (none: nothing to do)."""
        try:
            opened = _fs.AppendFile(self.layout.journal(thread_id), create=False)
        except FileNotFoundError:
            return
        with opened:
            self.found(thread_id, opened, changes)

    def hide(
        self,
        thread_id: str,
        records: list[dict[str, Any]],
        files: list[str],
        changes: _fs.Changes,
        *,
        deleted: str | None = None,
        sync: bool = False,
    ) -> None:
        """Journal deletion ``records``, then remove the element ``files`` they hide
        (relative to the thread's directory). The records reach the disk before the
        files go (in either mode): a power cut must not leave an element without its
        bytes. ``deleted``: the step whose deletion this is; ``sync``: the records reach
        the disk before the call goes on even without files (see
        :func:`filelayer.store.steps.forgets_feedback`). Either way an fsync: on the
        event loop, ``DiskWait`` before any change."""
        sync = sync or bool(files)
        if sync and _commit.on_loop():  # an fsync: in a worker thread, before any change
            raise _commit.DiskWait(self.layout.journal(thread_id))
        self.append_records(thread_id, records, changes, sync=sync, deleted=deleted)
        for relative in files:
            self.remove_element_file(thread_id, relative, changes)

    def remove_element_file(self, thread_id: str, relative: str, changes: _fs.Changes) -> None:
        path = self.layout.element_file(thread_id, relative)
        if path is not None:
            try:
                path.unlink()
            except FileNotFoundError:
                return
            changes.entry(path.parent)

    def make_dir(self, directory: Path, changes: _fs.Changes) -> None:
        try:
            _fs.make_dirs(directory, changes)
        except OSError as exc:
            raise StorageWriteError(directory, exc) from exc

    def ensure_thread(self, thread_id: str, changes: _fs.Changes) -> bool:
        """Create the thread if it is new; ``False`` if it was deleted. Caller locks."""
        path = self.layout.manifest(thread_id)
        self.refuse_link(thread_id)
        if self.deleted.has(thread_id):
            # Also while its directory is still there: a deletion a crash cut short
            # between its tombstone and the removal (``verify --repair`` finishes it).
            self._existing.pop(thread_id)
            log.debug("filelayer: ignoring a late write to deleted thread %s", thread_id)
            return False
        if path.exists():
            if self.layout.case_blind():  # the manifest found may be another thread's
                self.refuse_case_twin(thread_id, _manifest_if_readable(path))
            self._existing.put(thread_id, None)
            return True
        self._existing.pop(thread_id)
        self.refuse_case_twin(thread_id, None)
        now = now_iso()
        self.make_dir(path.parent, changes)
        doc = manifest.new(thread_id, now)
        manifest.write(path, doc, changes=changes)
        self.index.append([self.book.thread_record(doc)])
        self._existing.put(thread_id, None)
        return True

    def refuse_case_twin(self, thread_id: str, found: dict[str, Any] | None) -> None:
        """:class:`InvalidIdError` if ``thread_id`` differs only in letter case from a
        thread that exists (:func:`~filelayer.format.ids.case_twin`). ``found``: the
        manifest read at the thread's path, ``None`` for a new thread. A file system that
        ignores case finds the other thread's manifest there, with that thread's id; one
        that does not finds none, and the index answers (an indexed lookup of the ids
        folded to lowercase: a listing of ``threads/`` took 82 ms at 100,000 threads,
        and a copy makes thousands). A thread another process is making at the same
        moment, whose row is not in yet, is not seen."""
        if found is not None:
            other = found.get("id")
            twin = case_twin(thread_id, [other] if isinstance(other, str) else [])
        else:
            twin = case_twin(thread_id, self.index.ids_ignoring_case(thread_id))
        refuse_case_twin("thread", thread_id, twin)


def _manifest_if_readable(path: Path) -> dict[str, Any] | None:
    """The manifest at ``path``, or ``None`` if it cannot be read (damaged: the writes
    that made it were filelayer's, and ``verify --repair`` mends it)."""
    try:
        return manifest.read(path)
    except (CorruptFileError, OSError):
        return None


def _identity(path: Path) -> tuple[int, int, int] | None:
    """A file's device, inode and change time (a file renamed over it has others)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_ctime_ns


_STAMP_TAIL = 64 * 1024


def _last_stamp(opened: _fs.AppendFile) -> str | None:
    """The newest stamp of a journal open to append to, read from its end: the newest
    of the last 64 KiB, which hold hundreds of lines (a file filelayer wrote is in stamp
    order, but lines a merge without its driver united may not be, and they are the
    last ones); none there means an unstamped journal. Past 64 KiB only as far as the
    start of the last line: a long line's stamp still counts, since a clock that
    stepped back would otherwise stamp the next line before it."""
    size = opened.size
    chunk = _STAMP_TAIL
    while size:
        start = max(0, size - chunk)
        data = _fs.pread_all(opened.fd, size - start, start)
        # From the start of the file, its first line counts; from elsewhere, the first
        # piece may be the middle of a line.
        stamp = clock.newest_stamp(b"\n" + data if start == 0 else data)
        if stamp is not None:
            return stamp
        if start == 0 or data.count(b"\n") > 1:  # complete lines, none stamped
            return None
        chunk *= 4
    return None
