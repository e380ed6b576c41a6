"""Thread views kept on disk, so that the first read of a long thread in a new process
(an app restarted, another worker) decodes one document instead of reading and folding
its whole journal.

A view is a thread's steps and elements as its journal folds to them, in the shape
``get_thread`` serves, written to ``index/views/<thread id>.json``: derived, like the
rest of ``index/``, and ignored by git. Its first line names the journal it was made
from: device, inode, size, modification and change times (from one ``stat`` taken
before the journal was read whole), and the journal's last bytes. A view is used only
while the journal is still exactly that file; a line appended since, a compaction, a
repair or a ``git checkout`` makes it stale, and the journal is folded as before. The
change time cannot be set by any program, so even a file rewritten in place with its
old size and modification time put back does not match, nor one changed while it was
read.

A store writes views when it closes (Chainlit closes its data layer on shutdown), or
when the interpreter exits with it still open (a script, a test harness), for the long
threads it wrote, the last ones first; the Chainlit adapter also has them written while
the app runs, for a thread that has had no write for a second (up to
:data:`LIVE_MAX_BYTES`), so that another worker's first read of it is fast too. Reads
never write them. They are
written without an fsync (a power cut may leave one empty or torn: it then does not
decode or does not match, and is ignored). Threads shorter than :data:`VIEW_MIN_BYTES`
get none: folding them costs a fraction of a millisecond. A view goes with its thread
(``delete_thread``, retention, erasure, a reconcile that finds it gone) and with its
journal's compaction (it may still hold deleted steps); one made while either happened
is not put in place: its writer checks the journal under the thread's lock, which both
hold, as it puts the view in place.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._io import commit as _commit
from .._io import fs as _fs
from .._io import locks as _locks
from ..format import codec as _codec
from ..format.ids import is_valid_id
from ..format.journal import no_collection
from ..format.layout import VIEWS_DIR, Layout

VIEW_MIN_BYTES = 32 * 1024
"""Journals shorter than this get no view: their first read is already fast."""

LOOP_VIEW_BYTES = 1024 * 1024
"""View bytes a read on the event loop decodes at most (about 3 ms): a longer view is
read in a worker thread (:class:`~filelayer._io.commit.DiskWait`), as a long journal is
folded there."""

VIEW_FORMAT = 1
"""The version of the view file; a view of another version is not read. Bumped with any
change to what ``get_thread`` makes of a journal (``store/views``, ``format/fold``)."""

LIVE_MAX_BYTES = 4 * 1024 * 1024
"""Journals longer than this get their view only when the store closes, not while it
serves an app: decoding and encoding them in one piece holds the interpreter (and so
the app's event loop) for more than a few milliseconds."""

PLACE_TIMEOUT = 5.0
"""Seconds a view waits at most for its thread's lock to be put in place (a write of
the thread holds it for milliseconds); past that, the view is not written."""

CLOSE_BUDGET_BYTES = 64 * 1024 * 1024
"""Journal bytes a closing store reads at most for views (64 threads of a megabyte)."""

TEMP_ABANDONED = 60.0
"""Seconds since its last write past which a temporary file in ``index/views/`` that no
process holds is taken for a killed writer's (see :meth:`ThreadSnapshots.sweep`)."""

_TAIL = 64
"""Bytes of the journal's end a view keeps, to recognise the file it was made from."""

_ENABLED = os.name == "posix"
"""Views need a change time no program can set: on Windows ``st_ctime`` is the creation
time, so there are no views there (every first read folds the journal)."""

_BINARY = getattr(os, "O_BINARY", 0)

Key = tuple[int, int, int, int, int]
"""A journal file's identity and state: device, inode, size, mtime_ns, ctime_ns."""


def key_of(st: os.stat_result) -> Key:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def journal_key(layout: Layout, thread_id: str) -> Key | None:
    """The key of the thread's journal as it is now; ``None`` if there is none."""
    try:
        return key_of(os.stat(layout.journal(thread_id)))
    except OSError:
        return None


@dataclass(frozen=True)
class ViewBytes:
    """A view file's bytes, to decode its body (from ``start``) again."""

    data: bytes
    start: int
    plain: bool
    """The body holds no run of 19 digits (see :func:`filelayer.format.codec.decode_plain`)."""

    def decode_body(self) -> Any:
        body = memoryview(self.data)[self.start :]  # not copied
        with no_collection(len(body)):
            if self.plain:
                return _codec.decode_plain(body)
            return _codec.decode(body.tobytes())

    def decode(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """New copies of the steps and elements."""
        body = self.decode_body()
        return body["steps"], body["elements"]


@dataclass
class View:
    """A thread's view as read from its file: the steps and elements (the caller owns
    these objects) and the bytes they were decoded from."""

    key: Key
    steps: list[dict[str, Any]]
    elements: list[dict[str, Any]]
    source: ViewBytes


class ThreadSnapshots:
    """Reads, writes and removes the views of one archive (see the module's docstring)."""

    __slots__ = ("layout",)

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def load(self, thread_id: str) -> View | None:
        """The thread's view, if its file matches the journal as it is now. On the
        event loop, :class:`~filelayer._io.commit.DiskWait` for a view longer than
        :data:`LOOP_VIEW_BYTES` (nothing was read: the read is made again in a worker
        thread)."""
        if not _ENABLED:
            return None
        if _commit.on_loop():
            with contextlib.suppress(OSError):
                if os.stat(self.layout.thread_view(thread_id)).st_size > LOOP_VIEW_BYTES:
                    raise _commit.DiskWait(self.layout.thread_view(thread_id))
        flags = os.O_RDONLY | _BINARY | _fs.NOFOLLOW | getattr(os, "O_NONBLOCK", 0)
        try:  # not blocking: a FIFO in the journal's place must not hang the read
            fd = os.open(self.layout.journal(thread_id), flags)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size < VIEW_MIN_BYTES:
                return None
            data = _read_view(self.layout.thread_view(thread_id))
            if not data:
                return None
            end = data.find(b"\n")
            key = key_of(st)
            try:
                if end <= 0:
                    return None
                head = _codec.decode(data[:end])
                if not _fits(head, thread_id, key, fd):
                    return None
                plain = head.get("plain") is True
                source = ViewBytes(data, end + 1, plain)
                body = source.decode_body()
            except _codec.DecodeError:
                return None
        except OSError:
            return None
        finally:
            os.close(fd)
        if type(body) is not dict:
            return None
        steps: Any = body.get("steps")
        elements: Any = body.get("elements")
        if not (_records(steps, thread_id) and _records(elements, thread_id)):
            return None
        return View(key, steps, elements, source)

    def matches(self, thread_id: str, key: Key) -> bool:
        """Whether the thread's view file fits the journal ``key`` names (its first
        line only: for a writer deciding whether to write it again)."""
        try:
            data = _read_view(self.layout.thread_view(thread_id), head_only=True)
            if data is None:
                return False
            head = _codec.decode(data.split(b"\n", 1)[0])
            fd = os.open(self.layout.journal(thread_id), os.O_RDONLY | _BINARY | _fs.NOFOLLOW)
        except (OSError, *_codec.DecodeError):
            return False
        try:
            return key_of(os.fstat(fd)) == key and _fits(head, thread_id, key, fd)
        except OSError:
            return False
        finally:
            os.close(fd)

    def save(
        self,
        thread_id: str,
        key: Key,
        tail: bytes,
        steps: list[dict[str, Any]],
        elements: list[dict[str, Any]],
    ) -> None:
        """Keep the view of the journal ``key`` names, ending with ``tail`` (its last
        bytes, at least :data:`_TAIL` of them). Best effort: a view is derived, so a
        full disk or a read-only archive only costs the next first read its fold."""
        if not _ENABLED or key[2] < VIEW_MIN_BYTES or len(tail) < _TAIL:
            return
        try:
            body = _codec.encode_derived({"steps": steps, "elements": elements}) + b"\n"
        except (TypeError, ValueError):
            return
        head = {
            "format": VIEW_FORMAT,
            "thread": thread_id,
            "journal": list(key),
            "tail": tail[-_TAIL:].hex(),
            "plain": not _codec.holds_digit_run(body),  # read without looking again
        }
        data = _codec.encode_line(head) + body
        path = self.layout.thread_view(thread_id)
        try:
            path.parent.mkdir(exist_ok=True)
            # Held until it is in place or gone: a live writer's file is never taken
            # for a dead one's (see sweep).
            fd, tmp = _fs.write_temp(path, data, opened=_locks.hold_file)
        except OSError:
            return
        try:
            # Put in place under the thread's lock, and only if the journal is still the
            # one it was made from: a deletion (here or in another process) holds that
            # lock from the rename of the thread's directory to the fsync of its view's
            # removal, so a view can neither get in after that removal nor be removed
            # after the deletion returned, without an fsync (a power cut would bring it
            # back). A compaction swaps the journal under the lock too.
            with _locks.locked(self.layout.thread_lock(thread_id), PLACE_TIMEOUT):
                if journal_key(self.layout, thread_id) != key:
                    raise FileNotFoundError(path)  # deleted, compacted: no view
                os.replace(tmp, path)
        except (OSError, _locks.LockBusy):  # a lock timeout too: a view is best effort
            with contextlib.suppress(OSError):
                tmp.unlink()
            return
        finally:
            os.close(fd)
        # Changed since behind the layer's back (a git checkout takes no lock).
        if journal_key(self.layout, thread_id) != key:
            self.remove(thread_id)

    def sweep(self) -> int:
        """Remove the temporary files that view writers killed midway left in
        ``index/views/`` (each a copy of a conversation, which only a reindex removed
        before): those older than :data:`TEMP_ABANDONED` that no process holds. A
        writer holds its temporary file from the moment it makes it to the moment it
        is in place or gone (:func:`~filelayer._io.locks.hold_file`), and the kernel
        lets go of it when the writer dies; the age covers the instant between the
        file's making and its hold. Returns how many files went."""
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return 0
        limit = time.time() - TEMP_ABANDONED
        removed = 0
        for entry in entries:
            if not _is_temp(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_mtime < limit:
                removed += _locks.remove_unheld(Path(entry.path))
        return removed

    def prune(self) -> int:
        """Remove the views of threads that have no journal any more (removed by git or
        by hand, behind the layer's back) and whatever else is in ``index/views/``:
        what ``filelayer reindex`` does, so that no copy of a conversation outlives it.
        But a temporary file that a live writer holds (see :meth:`sweep`) is its own to
        put in place or remove: taken from under it, its view would be lost, and the
        writer would find nothing to rename. Returns how many files went."""
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return 0
        removed = 0
        for entry in entries:
            thread_id = entry.name.removesuffix(".json")
            if (
                entry.name != thread_id
                and is_valid_id(thread_id)
                and self.layout.journal(thread_id).exists()
            ):
                continue
            if _is_temp(entry.name) and entry.is_file(follow_symlinks=False):
                removed += _locks.remove_unheld(Path(entry.path))
                continue
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed += 1
        return removed

    def remove(self, thread_id: str) -> bool:
        """Remove the thread's view (the thread is deleted, or its journal compacted),
        and the temporary files of its view that no process holds, whatever their age:
        a writer killed midway left there a copy of the conversation (or of steps the
        compaction dropped), which must not outlive it. A writer that made its file but
        holds it not yet has written nothing in it, and could not put it in place any
        more. Whether anything went. The removal is not fsynced here: a deletion fsyncs
        the views' directory with its own (see ``Threads.delete_thread``)."""
        path = self.layout.thread_view(thread_id)
        removed = False
        try:
            os.unlink(path)
            removed = True
        except OSError:
            pass
        prefix = f"{_fs.RESERVED_PREFIX}{path.name}."  # as fs.temp_path names them
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return removed
        for entry in entries:
            if entry.name.startswith(prefix) and _is_temp(entry.name):
                removed = _locks.remove_unheld(Path(entry.path)) or removed
        return removed

    @property
    def directory(self) -> Path:
        """Where the views are: ``index/views/``."""
        return self.layout.index_dir / VIEWS_DIR


def _is_temp(name: str) -> bool:
    """Whether ``name`` is that of a view's temporary file (:func:`~filelayer._io.fs.temp_path`)."""
    return name.startswith(_fs.RESERVED_PREFIX) and name.endswith(_fs.TEMP_SUFFIX)


_MAX_VIEW_BYTES = 256 * 1024 * 1024
"""A view file larger than this is not read (a thread that large folds anyway)."""


def _read_view(path: Path, *, head_only: bool = False) -> bytes | None:
    """A view file's bytes (its first 4 KB with ``head_only``), or ``None`` if it is not
    a regular file of a sane size: ``index/`` is derived and trusted less than the
    thread files, and a pipe or a device put there must not hang a read."""
    try:
        fd = os.open(path, os.O_RDONLY | _BINARY | getattr(os, "O_NONBLOCK", 0) | _fs.NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_VIEW_BYTES:
            return None
        return _fs.pread_all(fd, min(st.st_size, 4096) if head_only else st.st_size, 0)
    finally:
        os.close(fd)


def _fits(head: Any, thread_id: str, key: Key, fd: int) -> bool:
    """Whether a view's first line names the journal open as ``fd``, whose key is
    ``key``: the same format, thread, key, and last bytes."""
    return (
        type(head) is dict
        and head.get("format") == VIEW_FORMAT
        and head.get("thread") == thread_id
        and head.get("journal") == list(key)
        and head.get("tail") == _fs.pread_all(fd, _TAIL, key[2] - _TAIL).hex()
    )


def _records(value: Any, thread_id: str) -> bool:
    """Whether ``value`` is a list of the thread's records, each with an id: what a
    read needs of a view to use it (a hand-made view could hold anything)."""
    if type(value) is not list:
        return False
    for item in value:  # a loop: twice as fast as all() over a generator here
        if (
            type(item) is not dict
            or type(item.get("id")) is not str
            or item.get("threadId", thread_id) != thread_id
        ):
            return False
    return True
