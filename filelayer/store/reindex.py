"""Rebuilding the index without stopping writers.

A rebuild reads every thread directory and writes a new index database aside, which
takes minutes at 100,000 threads; writers go on meanwhile, into the old database. Then
the new one is switched in (under ``locks/index.lock``, for milliseconds) and the
reconciler (:func:`filelayer.store.heal.reconcile_changed`) brings it up to date: every thread
whose files changed since they were read is summarised again, under the thread's own
lock, and put into the index as a whole. New threads are added and vanished ones
removed the same way. A thread whose manifest cannot be read keeps the name and author
the index it replaces held, as a reconcile keeps them (see
:func:`filelayer.store.heal.summary_keeping_known`).

Each thread's watermark (:func:`filelayer.store.heal.watermark`) is noted before its files
are read, and stored with its rows in the new database. Every write to a thread changes
its watermark, and every writer writes the thread's files before the index, holding the
thread's lock. So once the new database is current, a write is either in what the
rebuild read, or it moved the watermark and is read again by the reconciler, or it
comes later and goes into the new database itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..index.summary import ThreadSummary
from .heal import (
    ArchiveStore,
    journal_mtime,
    reconcile_changed,
    reconcile_thread,
    summary_keeping_known,
    users_watermark,
    watermark,
)

__all__ = ["rebuild", "reconcile_thread"]

Progress = Callable[[int, int], None]


def _current_summary(store: ArchiveStore, thread_id: str) -> ThreadSummary | None:
    if store.is_deleted(thread_id):
        return None
    return summary_keeping_known(store, thread_id)


_ERASURE_KEY = b'"identifierSha256"'
"""What a user tombstone in ``deleted.jsonl`` holds and a thread tombstone does not
(docs/format.md): an erasure (``filelayer erase-user``) was made."""
_ROUNDS = 3
"""Rebuilds in a row while erasures land during them (see :func:`rebuild`)."""


def _erasures(store: ArchiveStore) -> int:
    try:
        return store.layout.deleted_file.read_bytes().count(_ERASURE_KEY)
    except OSError:
        return 0


def rebuild(store: ArchiveStore, progress: Progress | None = None) -> int:
    """Rebuild ``store``'s index from its thread directories; returns the thread count.

    Threads are read (and written into the new index) in the order their journals were
    last written, which is nearly the order of their activity: each user's recent
    threads and texts end up side by side in the file, as live writes leave them, and
    a sidebar page or a search reads a few pages of it rather than one per thread.

    A user erased while it ran (their threads read before they were deleted) is built
    again: the catch-up takes their rows out, but their texts would stay in the free
    pages of the file every process then uses, and an erasure leaves no byte of the
    user under the root (its own rebuild may have been switched in before this one)."""
    for _ in range(_ROUNDS):
        erasures = _erasures(store)
        count = _rebuild_once(store, progress)
        if _erasures(store) == erasures:
            break
    return count


def _rebuild_once(store: ArchiveStore, progress: Progress | None) -> int:
    # Every watermark is noted before any file is read.
    users_marks = users_watermark(store.layout.users)
    marks = {t: watermark(store, t) for t in store.thread_ids()}
    ids = sorted(marks, key=lambda t: (journal_mtime(marks[t]), t))

    def summaries() -> Iterator[ThreadSummary]:
        for n, thread_id in enumerate(ids, start=1):
            summary = _current_summary(store, thread_id)
            if summary is not None:
                yield summary
            if progress is not None:
                progress(n, len(ids))

    store.index.rebuild(summaries(), marks=marks)
    reconcile_changed(store, marks, users_marks=users_marks)
    return len(store.index.threads)
