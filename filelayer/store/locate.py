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
        # A link is no thread (see filelayer verify): never followed out of the root.
        if entry.is_dir(follow_symlinks=False)
        and not entry.name.startswith(".")
        and is_valid_id(entry.name)
    )


_UNFILED_THREADS = 64
"""Threads read whose step ids may wait to be filed; past it, all of them are filed."""


class Locator:
    """Step and element ids -> their thread, as far as this process saw them."""

    __slots__ = ("_steps", "_unfiled", "durable", "elements", "folds", "index", "layout")

    def __init__(
        self, layout: Layout, index: ThreadIndex, folds: FoldedJournals, *, durable: bool = False
    ) -> None:
        self.layout = layout
        self.index = index
        self.folds = folds
        self.durable = durable
        """The ``fsync`` mode: a journal that names the id but no longer holds it live is
        made durable by the scan that found it so (see :meth:`scan_journals`)."""
        self._steps: Lru[str, str] = Lru(OWNER_CACHE_SIZE)
        """Step id -> the thread it was last seen in."""
        self.elements: Lru[str, str] = Lru(OWNER_CACHE_SIZE)
        """Element id -> the thread it was last seen in."""
        self._unfiled: dict[str, list[str]] = {}
        """Thread id -> the step ids a read saw in it, not in :attr:`_steps` yet (see
        :meth:`saw_steps`), in the order they were seen."""

    def forget(self) -> None:
        self._steps.clear()
        self.elements.clear()
        self._unfiled.clear()

    def saw_steps(self, thread_id: str, step_ids: list[str]) -> None:
        """A read saw ``step_ids`` in ``thread_id``. They are filed at the next lookup or
        change of :attr:`_steps` (or once reads of many threads wait), not now: a read of
        a long thread would otherwise pay for filing hundreds of ids that no call may
        ever look up. Filing keeps the order things were seen in: the last one wins."""
        unfiled = self._unfiled
        unfiled.pop(thread_id, None)
        unfiled[thread_id] = step_ids
        if len(unfiled) > _UNFILED_THREADS:
            self._file_unfiled()

    def saw_step(self, step_id: str, thread_id: str) -> None:
        """A write put ``step_id`` in ``thread_id``."""
        self._file_unfiled()
        self._steps.put(step_id, thread_id)

    def forget_step(self, step_id: str) -> None:
        """``step_id`` was deleted."""
        self._file_unfiled()
        self._steps.pop(step_id)

    def step_owner(self, step_id: str) -> str | None:
        """The thread ``step_id`` was last seen in by this process, if that thread still
        exists (a thread deleted since, by any process, is forgotten here)."""
        self._file_unfiled()
        owner = self._steps.get(step_id)
        if owner is not None and not self.layout.journal(owner).exists():
            self._steps.pop(step_id)
            return None
        return owner

    def _file_unfiled(self) -> None:
        if self._unfiled:
            pending = list(self._unfiled.items())
            self._unfiled.clear()
            for thread_id, step_ids in pending:
                self._steps.put_all(step_ids, thread_id)

    def locate_step(
        self, step_id: str, prefer: str | None = None, *, scan: bool = True
    ) -> str | None:
        """The thread holding ``step_id``: ``prefer`` if it holds it, then recent
        writes, then (unless ``scan`` is false) a scan of the journals, most recently
        active thread first (Chainlit's delete_step and some feedback paths give no
        thread id).

        Step ids are chosen by the client, so two threads can hold the same id:
        ``prefer`` (the caller's own session thread) keeps a delete in the thread it
        was meant for.

        On the event loop, a long ``prefer`` (or kept fold) to fold first raises
        :class:`~filelayer._io.commit.DiskWait`: the lookup runs in a worker thread, as
        the deletion that follows would (see :meth:`FoldedJournals.refuse_on_loop`).
        An id that is no string is in no thread (and no key of the caches)."""
        if not isinstance(step_id, str):
            return None
        if prefer and is_valid_id(prefer) and self.layout.journal(prefer).exists():
            # Checked as the deletion checks it: a ``prefer`` edited in place to hold
            # the step must not send the deletion to another thread with its id.
            self.folds.refuse_on_loop(prefer)
            if step_id in self.folds.folded(prefer).state.steps:
                return prefer
        owner = self.step_owner(step_id)
        if owner is None:
            owner = self.folds.holding(step_id)
            if owner is not None and not self.layout.journal(owner).exists():
                owner = None
        if owner is not None or not scan:
            return owner
        return self.scan_journals("step", step_id, self.scan_order())

    def locate_element(self, element_id: str, *, scan: bool = True) -> str | None:
        if not isinstance(element_id, str):
            return None  # in no thread (and no key of the caches)
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
        self, kind: Literal["step", "element", "feedback"], key: str, order: list[str]
    ) -> str | None:
        """The first thread of ``order``, then of the thread directories, whose journal
        holds the live step (or element, or feedback) ``key``; ``None`` if none does.

        Reads files only, never the store's caches: the adapter runs it in a worker
        thread, without holding :attr:`ArchiveStore.mutex`, while other calls go on.

        In the ``fsync`` mode a journal that names ``key`` without holding it live (it
        was deleted there) is fsynced before the answer: a caller told that there is
        nothing left to delete acknowledges that deletion, whose line may have been read
        before its writer's fsync (or while it waited in another worker's group)."""
        if not is_valid_id(key):
            return None
        needle = f'"{key}"'.encode()
        seen = set(order)
        for ids in (order, (t for t in thread_ids(self.layout) if t not in seen)):
            for thread_id in ids:
                path = self.layout.journal(thread_id)
                data = _fs.read_bytes(path)
                if data and needle in data:
                    state = journal.fold(journal.parse(data).records)
                    held = {"step": state.steps, "element": state.elements}.get(kind)
                    if key in (state.feedback if held is None else held):
                        return thread_id
                    if self.durable:
                        _fs.sync_file(path)
        return None
