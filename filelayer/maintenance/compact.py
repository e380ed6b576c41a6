"""Folding a journal into its canonical form: one line per step, in conversation order.

Safe while the app is running: see :meth:`ArchiveStore.compact_journal`, which the
store also runs by itself on a journal whose dead bytes outweigh its live ones. A
journal with damaged lines is left alone (compacting would drop them): ``verify
--repair`` first.
"""

from __future__ import annotations

from ..store.archive import ArchiveStore
from ..store.compaction import Compaction

__all__ = ["Compaction", "compact_thread"]


def compact_thread(store: ArchiveStore, thread_id: str) -> Compaction:
    return store.compact_journal(thread_id)
