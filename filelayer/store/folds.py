"""What a process keeps of the journals it reads and writes: their folded state (for the
threads being shown) and their tombstones (for the threads being written), each brought
up to date by reading only what was appended since the last look."""

from __future__ import annotations

import os

from .._io import commit as _commit
from .._io import fs as _fs
from ..format import journal
from ..format.layout import Layout
from .cache import Lru

_TOMBSTONE_CACHE = 256
"""Threads whose deleted ids a process keeps in memory: those it is writing to."""
FOLDED_CACHE = 32
"""Threads whose folded journal a process keeps: those being read (resumed, shown)."""
LOOP_FOLD_BYTES = 256 * 1024
"""Journal bytes a call on the event loop folds at most (about 10 ms of folding): past
it, the call is made again in a worker thread (see :meth:`FoldedJournals.refuse_on_loop`)."""
VERIFY_PER_FOLD = 64
"""Journal bytes whose checksum costs what folding one byte does (measured: more than a
hundred), for the bytes a deletion checks again on the loop (see
:meth:`~filelayer._io.tail.Tail.verify`)."""


def read_state(layout: Layout, thread_id: str) -> journal.ThreadState:
    """The thread's journal read and folded now, without any cache."""
    return journal.fold(journal.read(layout.journal(thread_id)).records)


class FoldedJournals:
    """The folded journals of the threads read most recently."""

    __slots__ = ("_cache", "layout")

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._cache: Lru[str, journal.FoldedJournal] = Lru(FOLDED_CACHE)

    def folded(self, thread_id: str) -> journal.FoldedJournal:
        """The thread's folded journal: a thread read again costs a ``stat`` plus the
        lines appended since. Once the journal changed since the fold was last known to
        be its beginning, the fold is also checked against the journal's first bytes,
        and folded again if an edit in place changed them (see
        :meth:`~filelayer._io.tail.Tail.verify`): a deletion must act on what the
        journal holds now, and a read serve what a new process would. The check reads
        and sums the bytes already folded, some hundred times cheaper than the fold,
        and cheaper still than the copy of the steps a read hands out. On the event
        loop, a fold (or check) that would take longer than :data:`LOOP_FOLD_BYTES` of
        folding is refused first (:meth:`refuse_on_loop`): every caller asks before it
        changes anything, so the call runs again in a worker thread."""
        self.refuse_on_loop(thread_id)
        folded = self._cache.take(thread_id, journal.FoldedJournal)
        path = self.layout.journal(thread_id)
        folded.verify(path)
        folded.catch_up(path)
        return folded

    def __contains__(self, thread_id: object) -> bool:
        return thread_id in self._cache

    def refuse_on_loop(self, thread_id: str) -> None:
        """On the event loop, raise :class:`~filelayer._io.commit.DiskWait` (before the
        caller changed anything: it runs again in a worker thread) if bringing the
        thread's fold up to date would fold more than :data:`LOOP_FOLD_BYTES`: a thread
        with no kept fold, or one whose kept fold is of a file replaced since (a
        compaction, here or in another process) or far behind it. The bytes
        :meth:`folded` would check again count too, at what a checksum costs next to a
        fold (:data:`VERIFY_PER_FOLD` of them for a byte folded)."""
        if not _commit.on_loop():
            return
        path = self.layout.journal(thread_id)
        folded = self._cache.get(thread_id)
        if folded is not None:
            unread = folded.unread(path) + folded.unverified(path) // VERIFY_PER_FOLD
        else:
            try:
                unread = os.stat(path).st_size
            except OSError:
                unread = 0
        if unread > LOOP_FOLD_BYTES:
            raise _commit.DiskWait(path)

    def holding(self, step_id: str) -> str | None:
        """The thread whose kept fold holds ``step_id`` (brought up to date before it
        answers), the most recently used first: a deletion folded a long thread, the
        next one in it finds its step here instead of scanning the journals again."""
        for thread_id, folded in reversed(self._cache.items()):
            if step_id in folded.state.steps:
                self.refuse_on_loop(thread_id)
                path = self.layout.journal(thread_id)
                folded.verify(path)
                folded.catch_up(path)
                if step_id in folded.state.steps:
                    return thread_id
        return None

    def forget(self) -> None:
        self._cache.clear()


class TombstoneCache:
    """The deleted step and element ids of the threads written most recently."""

    __slots__ = ("_cache", "layout")

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._cache: Lru[str, journal.Tombstones] = Lru(_TOMBSTONE_CACHE)

    def of(self, thread_id: str, opened: _fs.AppendFile | None = None) -> journal.Tombstones:
        """The thread's deleted step and element ids. Caller holds the thread's lock
        (and has its journal ``opened``, if it has it open)."""
        cached = self._cache.take(thread_id, journal.Tombstones)
        if opened is not None:
            cached.catch_up_open(opened)
        else:
            cached.catch_up(self.layout.journal(thread_id))
        return cached

    def known(self, thread_id: str) -> journal.Tombstones | None:
        """The thread's tombstones as last read, if kept (no file is read)."""
        return self._cache.get(thread_id)

    def forget(self) -> None:
        self._cache.clear()
