"""Journal compaction: the live bytes a process follows as it writes a journal
(:class:`_Growth`), when a journal is worth compacting, the compaction itself
(:class:`Compactor`) and the outcome of one (:class:`Compaction`)."""

from __future__ import annotations

import functools
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .._io import fs as _fs
from ..errors import StorageWriteError
from ..format import codec as _codec
from ..format import journal
from ..format.layout import Layout
from .cache import Lru
from .locking import WriteLocks
from .snapshots import ThreadSnapshots

log = logging.getLogger("filelayer")
_Method = TypeVar("_Method", bound=Callable[..., Any])

_COMPACT_MIN_BYTES = 64 * 1024
"""A journal is compacted by itself only past this size: below, there is little to save."""
_GROWTH_KEPT = 4096
"""Journals whose live bytes a process follows as it writes them (the others are read
once when they pass the minimum size, to know them again)."""
_COMPACT_ROUNDS = 4
"""Compactions of one journal in a row, while writers append faster than it folds."""


_DAMAGED = "damaged lines: run `filelayer verify --repair` first"
_NOT_A_FILE = "not a regular file in the journal's place: run `filelayer verify`"
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_BINARY", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOFOLLOW", 0)
)


def then_compact(method: _Method) -> _Method:
    """Run the journal compactions the call made due, once it released its locks
    (unless the caller runs them itself, see :attr:`ArchiveStore.defer_compaction`)."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        finally:
            if self.compactor.has_due and not self.defer_compaction:
                self.compactor.compact_due()

    return wrapper  # type: ignore[return-value]


class _Growth:
    """What a process knows of the live bytes of a journal it writes, to tell when its
    dead bytes may outweigh them without reading it.

    Learnt from a look at the whole journal (a compaction, done or declined), then
    followed as this process appends: a new version of a step counts as live only by
    what it outgrows the largest version written before (the earlier ones are dead but
    for the fields they alone hold), a step's deletion takes its bytes from the live
    ones, and any other line counts whole. The lines other processes appended in
    between are not read: they are *unknown*, and once they outweigh the live bytes
    the journal is looked at again. An estimate, used only to decide when to look: the
    compaction itself measures exactly."""

    __slots__ = ("file", "live", "size", "steps", "unknown")

    def __init__(
        self,
        file: tuple[int, int] | None = None,
        size: int = 0,
        live: int = 0,
        steps: dict[str, int] | None = None,
    ) -> None:
        self.file = file  # the file (device, inode) known; None: not looked at yet
        self.size = size  # where what is known ends
        self.live = live
        self.steps = steps if steps is not None else {}  # step id -> its largest line
        self.unknown = 0  # bytes other processes appended since the last look

    def written(self, at: int, size: int, step: str | None, deleted: str | None) -> None:
        """``size`` bytes appended at offset ``at``: a version of ``step``, the deletion
        of ``deleted``, or other lines."""
        if self.file is None:
            return
        if at != self.size:
            self.unknown += max(0, at - self.size)  # appended by others meanwhile
        if step is not None:
            before = self.steps.get(step, 0)
            if size > before:
                self.live += size - before
                self.steps[step] = size
        else:
            self.live += size
            if deleted is not None:
                self.live -= self.steps.pop(deleted, 0)
        self.size = at + size


_LINKED = "a symbolic link, never written through (filelayer verify --repair removes it)"


@dataclass
class Compaction:
    """What :meth:`ArchiveStore.compact_journal` did to one journal (sizes in bytes)."""

    thread_id: str
    before: int
    after: int
    skipped: str | None = None

    @property
    def changed(self) -> bool:
        return self.skipped is None and self.before != self.after


class Compactor:
    """The compactions of one store: which journals its writes made worth a look
    (due), what it knows of their live bytes, and the compaction of a journal.

    Runs in any thread without the store's :attr:`~ArchiveStore.mutex` (the adapter runs
    it in a worker): it reads files only, and its notes in memory (when to look at the
    journal again, whether it is due again) are single dictionary entries."""

    def __init__(self, layout: Layout, locks: WriteLocks, *, enabled: bool) -> None:
        self.layout = layout
        self.locks = locks
        self.enabled = enabled
        """Whether writes make journals due (``auto_compact``)."""
        self._growth: Lru[str, _Growth] = Lru(_GROWTH_KEPT)  # live bytes, as written
        self._due: dict[str, None] = {}  # journals to look at, in order

    @property
    def has_due(self) -> bool:
        """Whether the last writes made a journal worth a look."""
        return bool(self._due)

    def forget(self) -> None:
        """Forget what was learnt of the journals' live bytes (their files changed)."""
        self._growth.clear()

    def appended(
        self,
        thread_id: str,
        opened: _fs.AppendFile,
        at: int,
        size: int,
        step: str | None,
        deleted: str | None,
    ) -> None:
        """Follow the journal's live bytes as lines are appended (see :class:`_Growth`),
        and make its compaction due once its dead bytes may outweigh them."""
        growth = self._growth.get(thread_id)
        if growth is None or growth.file != opened.id:
            # A journal this write started is known from its first byte; any other is
            # not known until a compaction (done or declined) has read it once.
            growth = _Growth(opened.id) if at == 0 else _Growth()
            self._growth.put(thread_id, growth)
        growth.written(at, size, step, deleted)
        end = opened.size
        if end >= _COMPACT_MIN_BYTES and (
            growth.file is None
            or end > 2 * (growth.live + growth.unknown)
            or growth.unknown > growth.live
        ):
            self._due[thread_id] = None

    def take_due(self) -> list[str]:
        """The threads whose journals the last writes made worth a look, forgotten
        here: the caller runs :meth:`compact_journal`."""
        due = list(self._due)
        self._due.clear()
        return due

    def compact_due(self) -> None:
        """Compact the journals the last writes made worth it; a failure is logged."""
        for thread_id in self.take_due():
            try:
                self.compact_journal(thread_id, only_if_worth_it=True)
            except (OSError, ValueError) as exc:
                log.warning("filelayer: could not compact the journal of %s: %s", thread_id, exc)

    def compact_journal(
        self,
        thread_id: str,
        *,
        only_if_worth_it: bool = False,
        edit: Callable[[journal.ThreadState], None] | None = None,
    ) -> Compaction:
        """Rewrite the thread's journal in its compacted form: one line per step in
        conversation order, then feedback, elements and the tombstones that keep
        deleted ids deleted (:func:`journal.compacted_records`). Every read gives what
        it gave before. ``only_if_worth_it``: only when the dead bytes outweigh the
        live ones.

        Safe while writers go on, in this process or others: the journal is read and
        folded, and the new file written and fsynced beside it, without any lock; then,
        under the thread's lock, held for the swap only, the lines appended meanwhile
        are copied after the compacted ones, unchanged (and fsynced, if any), the new
        file replaces the old one at once and its directory is fsynced. A writer of the
        thread so waits for a few small writes and a rename, not for the whole file to
        reach the disk (tens of milliseconds, under another process's ``filelayer
        compact`` of a large archive). A journal replaced meanwhile (another compaction,
        a repair, a checkout) is read again; a thread deleted meanwhile is left to its
        deletion, which removes the file written aside with the directory. A journal
        with damaged lines (or the torn end a killed writer left) is left alone:
        ``filelayer verify --repair`` first.

        ``edit`` changes the folded state before it is written: what no appended line
        can say, since a later write never empties a stored field (a copy setting a
        step or an element to exactly what its source holds). Lines appended meanwhile
        still come after, and merge into the edited state as into any.

        Runs in any thread without :attr:`mutex` (the adapter runs it in a worker): it
        reads files only, and its notes in memory (when to look at the journal again,
        whether it is due again) are single dictionary entries.
        """
        path = self.layout.journal(thread_id)
        if path.parent.is_symlink() or path.is_symlink():
            # Never rewritten through a link: it would write outside the archive.
            return Compaction(thread_id, 0, 0, skipped=_LINKED)
        first: Compaction | None = None
        heavy = False
        for _ in range(_COMPACT_ROUNDS):
            try:  # not blocking: a FIFO in the journal's place must not hang the command
                fd = os.open(path, _OPEN_FLAGS)
            except FileNotFoundError:
                return Compaction(thread_id, 0, 0)
            except OSError as exc:
                return Compaction(thread_id, 0, 0, skipped=f"cannot be read ({exc.strerror})")
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    return Compaction(thread_id, 0, 0, skipped=_NOT_A_FILE)
                outcome = self.compact_open(thread_id, path, fd, only_if_worth_it, edit)
            finally:
                os.close(fd)
            heavy = False
            if outcome is None:
                continue  # replaced meanwhile: read it again
            done, copied = outcome
            if first is not None:
                done.before = first.before
            first = done
            # Lines appended during the compaction were copied as they came: when they
            # outweigh the compacted ones (a writer going fast), fold them in too (when
            # compacting by itself; on request, once is what was asked).
            if not done.changed or copied <= done.after - copied or not only_if_worth_it:
                return done
            heavy = True
        if heavy:
            # A writer still going faster than the compaction: due again, to be looked
            # at after the next write, or at once by a caller that runs the due ones.
            self._due[thread_id] = None
        if first is not None:
            return first
        return Compaction(thread_id, 0, 0, skipped="it kept being replaced while compacted")

    def compact_open(
        self,
        thread_id: str,
        path: Path,
        fd: int,
        only_if_worth_it: bool,
        edit: Callable[[journal.ThreadState], None] | None = None,
    ) -> tuple[Compaction, int] | None:
        """One compaction of the open journal: what it did and how many bytes were
        appended meanwhile and copied; ``None`` if the journal was replaced (or the new
        file written aside was removed) before the swap. What it learnt of the
        journal's live bytes is noted for the writers (:class:`_Growth`)."""
        st = os.fstat(fd)
        data = _fs.pread_all(fd, st.st_size, 0)
        end = data.rfind(b"\n") + 1  # a line being appended right now is left for later
        parsed = journal.parse(data[:end], path)
        if parsed.bad_lines:
            # Left alone: not looked at again before it doubled.
            self._know(thread_id, (st.st_dev, st.st_ino), len(data), len(data), {})
            return Compaction(thread_id, len(data), len(data), skipped=_DAMAGED), 0
        state = journal.fold(parsed.records)
        if edit is not None:
            edit(state)
            only_if_worth_it = False
        records = list(journal.compacted_records(state))
        lines = [_codec.encode_line(r) for r in records]
        canonical = b"".join(lines)
        live = len(canonical)
        steps = {
            r[journal.OP_STEP]["id"]: len(line)
            for r, line in zip(records, lines, strict=True)
            if r["op"] == journal.OP_STEP
        }
        if only_if_worth_it and len(data) <= 2 * live:
            # Not yet. What was read is known; the lines appended since count as live.
            self._know(thread_id, (st.st_dev, st.st_ino), len(data), live + len(data) - end, steps)
            return Compaction(thread_id, len(data), len(data)), 0
        # The whole new file is written and fsynced aside first, without the lock: a
        # writer of the thread then waits for the swap alone (the lines appended
        # meanwhile, the rename, the directory's fsync), not for this.
        aside: _fs.AsideFile | None = None
        if canonical != data[:end]:
            try:
                aside = _fs.AsideFile(path, canonical)
            except StorageWriteError:
                if not os.path.lexists(path):
                    return Compaction(thread_id, 0, 0), 0  # deleted meanwhile
                raise
        try:
            with self.locks.thread_lock(thread_id):
                try:
                    now = os.stat(path)
                except FileNotFoundError:
                    return Compaction(thread_id, 0, 0), 0  # deleted meanwhile
                if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or now.st_size < end:
                    return None  # replaced meanwhile: read it again
                tail = _fs.pread_all(fd, now.st_size - end, end)
                if tail:
                    appended = journal.parse(tail, path)
                    if appended.bad_lines or appended.torn_tail:
                        file = (now.st_dev, now.st_ino)
                        self._know(thread_id, file, now.st_size, now.st_size, {})
                        skipped = Compaction(thread_id, now.st_size, now.st_size, skipped=_DAMAGED)
                        return skipped, 0
                if aside is None:
                    file = (now.st_dev, now.st_ino)
                    self._know(thread_id, file, now.st_size, live + len(tail), steps)
                    return Compaction(thread_id, now.st_size, now.st_size), 0
                # Always made durable before it replaces the journal, tail included: a
                # power cut must not take acknowledged lines with the old file.
                replaced = aside.replace(tail)
                aside = None
                if not replaced:
                    return None  # the file written aside was removed: again
                new = os.stat(path)
        finally:
            if aside is not None:
                aside.discard()
        # The view was stale already; it goes, for it may still hold deleted steps.
        ThreadSnapshots(self.layout).remove(thread_id)
        self._know(thread_id, (new.st_dev, new.st_ino), new.st_size, live + len(tail), steps)
        return Compaction(thread_id, now.st_size, live + len(tail)), len(tail)

    def _know(
        self, thread_id: str, file: tuple[int, int], size: int, live: int, steps: dict[str, int]
    ) -> None:
        """Note what a compaction learnt of a journal: from here on, the writers follow
        its live bytes without reading it. (A single assignment: a worker thread may do
        it while the event loop writes.)"""
        self._growth[thread_id] = _Growth(file, size, live, steps)
