"""Folding a journal into its canonical form: one line per step, in conversation order.

Safe while the app is running: see :meth:`ArchiveStore.compact_journal`, which the
store also runs by itself on a journal whose dead bytes outweigh its live ones. A
journal with damaged lines is left alone (compacting would drop them): ``verify
--repair`` first.
"""

from __future__ import annotations

from ..store.archive import ArchiveStore
from ..store.compaction import Compaction
from .announce import maintaining

__all__ = ["Compaction", "compact_thread"]


def compact_thread(store: ArchiveStore, thread_id: str) -> Compaction:
    """Compact one thread's journal, announced as maintenance while it runs: a script
    that compacts every thread this way is covered as ``filelayer compact`` is (the
    announcement costs an ``open`` and a ``flock``, next to a rewrite of the journal)."""
    with maintaining(store.layout):
        return store.compact_journal(thread_id)
