"""Which thread holds a step or an element, for the calls that give no thread id
(Chainlit's ``delete_step``, some feedback paths, ``delete_element``): the threads this
process saw them in, then a scan of the journals."""

from __future__ import annotations

import logging
import os
from typing import Literal

from .._io import fs as _fs
from ..format import journal
from ..format.ids import id_problem, is_valid_id
from ..format.layout import Layout
from ..index.thread_index import ThreadIndex
from .authors import OWNER_CACHE_SIZE
from .cache import Lru
from .folds import FoldedJournals

log = logging.getLogger("filelayer")


def deletable(kind: str, value: object) -> bool:
    """Whether a delete has anything to look for. An invalid id (empty, a path...) names
    nothing in the archive: the delete answers "nothing deleted", as a read of it answers
    "not found", instead of raising (Chainlit would answer the request with a 500)."""
    problem = id_problem(value)
    if problem is not None:
        log.debug("filelayer: nothing to delete for %s id %r: %s", kind, value, problem)
    return problem is None


def thread_ids(layout: Layout) -> list[str]:
    """Every thread directory's id (from the file system, not the index)."""
    if not layout.threads.is_dir():
        return []
    return sorted(
        entry.name
        for entry in os.scandir(layout.threads)
        if entry.is_dir() and not entry.name.startswith(".") and is_valid_id(entry.name)
    )


class Locator:
    """Step and element ids -> their thread, as far as this process saw them."""

    __slots__ = ("elements", "folds", "index", "layout", "steps")

    def __init__(self, layout: Layout, index: ThreadIndex, folds: FoldedJournals) -> None:
        self.layout = layout
        self.index = index
        self.folds = folds
        self.steps: Lru[str, str] = Lru(OWNER_CACHE_SIZE)
        """Step id -> the thread it was last seen in."""
        self.elements: Lru[str, str] = Lru(OWNER_CACHE_SIZE)
        """Element id -> the thread it was last seen in."""

    def forget(self) -> None:
        self.steps.clear()
        self.elements.clear()

    def locate_step(
        self, step_id: str, prefer: str | None = None, *, scan: bool = True
    ) -> str | None:
        """The thread holding ``step_id``: ``prefer`` if it holds it, then recent
        writes, then (unless ``scan`` is false) a scan of the journals, most recently
        active thread first (Chainlit's delete_step and some feedback paths give no
        thread id).

        Step ids are chosen by the client, so two threads can hold the same id:
        ``prefer`` (the caller's own session thread) keeps a delete in the thread it
        was meant for."""
        if (
            prefer
            and is_valid_id(prefer)
            and self.layout.journal(prefer).exists()
            and step_id in self.folds.folded(prefer).state.steps
        ):
            return prefer
        owner = self.steps.get(step_id)
        if owner is not None or not scan:
            return owner
        return self.scan_journals("step", step_id, self.scan_order())

    def locate_element(self, element_id: str, *, scan: bool = True) -> str | None:
        owner = self.elements.get(element_id)
        if owner is not None or not scan:
            return owner
        return self.scan_journals("element", element_id, self.scan_order())

    def scan_order(self) -> list[str]:
        """The indexed threads, most recently active first: where a scan for an id
        looks (the threads the index does not know come after, see
        :meth:`scan_journals`)."""
        self.index.refresh()
        return list(self.index.newest_first())

    def scan_journals(
        self, kind: Literal["step", "element"], key: str, order: list[str]
    ) -> str | None:
        """The first thread of ``order``, then of the thread directories, whose journal
        holds the live step (or element) ``key``; ``None`` if none does.

        Reads files only, never the store's caches: the adapter runs it in a worker
        thread, without holding :attr:`ArchiveStore.mutex`, while other calls go on."""
        if not is_valid_id(key):
            return None
        needle = f'"{key}"'.encode()
        seen = set(order)
        for ids in (order, (t for t in thread_ids(self.layout) if t not in seen)):
            for thread_id in ids:
                data = _fs.read_bytes(self.layout.journal(thread_id))
                if data and needle in data:
                    state = journal.fold(journal.parse(data).records)
                    if key in (state.steps if kind == "step" else state.elements):
                        return thread_id
        return None
