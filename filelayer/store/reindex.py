"""Rebuilding the index without stopping writers, and the reconciler that catches up.

A rebuild reads every thread directory and writes a new index database aside, which
takes minutes at 100,000 threads; writers go on meanwhile, into the old database. Then
the new one is switched in (under ``locks/index.lock``, for milliseconds) and
:func:`reconcile` brings it up to date: every thread whose files changed since they were
read is summarised again, under the thread's own lock, and put into the index as a
whole. New threads are added and vanished ones removed the same way.

A thread's *watermark* says whether its files changed: the inode, size and modification
time of its journal and of its manifest. Every write to a thread changes one of them
(a journal only grows, or is replaced by compaction; a manifest is always replaced), and
every writer writes the thread's files before the index, holding the thread's lock. So
once the new database is current, a write is either in what the rebuild read, or it
moved the watermark and is read again by :func:`reconcile`, or it comes later and goes
into the new database itself.

:func:`reconcile` takes any watermarks, not only a rebuild's: given those recorded when
the index was last known to agree with the files, it is the way to heal an index that
went stale (a crash between a thread's write and its index write, or thread directories
changed by ``git checkout``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Protocol

from ..format.layout import Layout
from ..index.summary import ThreadSummary
from ..index.thread_index import ThreadIndex


class ArchiveStore(Protocol):
    """What the reconciler needs of a store: its files, its index, its locks and how it
    summarises a thread. A protocol rather than the class, so that the store imports
    the reconciler and not the other way round."""

    layout: Layout
    index: ThreadIndex

    def thread_ids(self) -> list[str]: ...
    def is_deleted(self, thread_id: str) -> bool: ...
    def summarise(self, thread_id: str) -> ThreadSummary | None: ...
    def thread_lock(self, thread_id: str) -> AbstractContextManager[None]: ...


Watermark = tuple[int, ...]
"""(inode, size, mtime in ns) of the journal, then of the manifest; zeros for a file
that does not exist."""

Progress = Callable[[int, int], None]


def _stat(path: str) -> tuple[int, int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0, 0)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def watermark(store: ArchiveStore, thread_id: str) -> Watermark:
    """What changes whenever the thread's files change (see the module docstring)."""
    layout = store.layout
    return _stat(str(layout.journal(thread_id))) + _stat(str(layout.manifest(thread_id)))


def _current_summary(store: ArchiveStore, thread_id: str) -> ThreadSummary | None:
    if store.is_deleted(thread_id):
        return None
    return store.summarise(thread_id)


def rebuild(store: ArchiveStore, progress: Progress | None = None) -> int:
    """Rebuild ``store``'s index from its thread directories; returns the thread count.

    Threads are read (and written into the new index) in the order their journals were
    last written, which is nearly the order of their activity: each user's recent
    threads and texts end up side by side in the file, as live writes leave them, and
    a sidebar page or a search reads a few pages of it rather than one per thread."""
    # Every watermark is noted before any file is read.
    marks: dict[str, Watermark] = {t: watermark(store, t) for t in store.thread_ids()}
    ids = sorted(marks, key=lambda t: (marks[t][2], t))

    def summaries() -> Iterator[ThreadSummary]:
        for n, thread_id in enumerate(ids, start=1):
            summary = _current_summary(store, thread_id)
            if summary is not None:
                yield summary
            if progress is not None:
                progress(n, len(ids))

    store.index.rebuild(summaries())
    reconcile(store, marks)
    return len(store.index.threads)


def reconcile(store: ArchiveStore, marks: Mapping[str, Watermark]) -> int:
    """Summarise again every thread whose watermark is not the one in ``marks`` (and
    every thread directory ``marks`` does not name), and put it into the index as its
    files say, under the thread's lock. Returns how many threads were summarised."""
    done = 0
    for thread_id in sorted(set(store.thread_ids()) | set(marks)):
        mark = marks.get(thread_id)
        if mark is not None and watermark(store, thread_id) == mark:
            continue
        reconcile_thread(store, thread_id)
        done += 1
    return done


def reconcile_thread(store: ArchiveStore, thread_id: str) -> None:
    """Make the index hold what one thread's files say (nothing if it is gone)."""
    with store.thread_lock(thread_id):
        store.index.put(thread_id, _current_summary(store, thread_id))
