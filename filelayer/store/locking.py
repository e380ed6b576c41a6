"""The locks a write takes, in their order, and the reconciler's marks around it.

Lock order, always: a thread's stripe lock, then ``users.lock`` / ``deleted.lock`` /
the index database's own write lock (taken at once with the others by a write on the
event loop, without waiting; elsewhere for the time of the index's transaction). Every
write method takes all the locks it needs when it begins, before it changes anything
(see :mod:`filelayer.store.archive`)."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

from .._io import commit as _commit
from .._io import locks as _locks
from ..errors import CorruptFileError
from ..format import journal, manifest
from ..format.ids import case_twin, refuse_case_twin
from ..format.layout import Layout
from ..index.thread_index import ThreadIndex
from .deleted import DeletedThreads
from .folds import LOOP_FOLD_BYTES as LOOP_FOLD_BYTES  # the threshold, named here too
from .folds import FoldedJournals
from .heal import thread_watermark
from .lifecycle import IndexLifecycle

log = logging.getLogger("filelayer")


class WriteLocks:
    """The locks of one store's writes, and the marks that tell the reconciler which
    threads this store's writes moved."""

    def __init__(
        self,
        layout: Layout,
        index: ThreadIndex,
        lifecycle: IndexLifecycle,
        lock_timeout: float,
        deleted: DeletedThreads,
        folds: FoldedJournals,
    ) -> None:
        self.layout = layout
        self.folds = folds
        self.index = index
        self.lifecycle = lifecycle
        self.lock_timeout = lock_timeout
        self.deleted = deleted
        self._marking = threading.local()  # the threads whose writes this OS thread marks

    def thread_lock(self, thread_id: str) -> contextlib.AbstractContextManager[None]:
        """The lock that serialises every write to one thread (across processes). Whoever
        takes it may write: this store's writer session begins first (see
        :mod:`filelayer.store.heal`)."""
        self.lifecycle.begin_session()
        return _locks.locked(self.layout.thread_lock(thread_id), self.lock_timeout)

    @contextlib.contextmanager
    def writing(
        self, thread_id: str, *, deleted: bool = False, reserve: bool = True
    ) -> Iterator[None]:
        """Every lock a write to one thread takes, taken in order when it begins: the
        thread's, then (for a deletion) the tombstones'. The index database has its own
        write lock, held for the time of its transaction.

        Under them, the write is marked for the reconciler (:mod:`filelayer.store.heal`): this
        store's writer session exists before the first byte is written, and the thread's
        watermark before and after a write that ends without error is noted, so that the
        index's stored watermark follows the files once the write's rows are in."""
        paths = [self.layout.thread_lock(thread_id)]
        if deleted:
            paths.append(self.layout.deleted_lock)
        with _locks.locked_all(paths, self.lock_timeout), contextlib.ExitStack() as held:
            self._refuse_case_alias(thread_id)
            marking: set[str] | None = getattr(self._marking, "ids", None)
            if marking is None:
                marking = self._marking.ids = set()
            if thread_id in marking:  # an outer write of this thread marks it
                yield
                return
            if reserve and _commit.on_loop():
                # The index's write lock too, before anything changes, without waiting:
                # held by another process, the write runs again in a worker thread.
                # (``reserve=False``: the caller takes it itself when it knows it needs
                # it, see :meth:`reserve_index`.)
                held.enter_context(self.index.reserved())
            self.lifecycle.begin_session()
            generation = self.index.generation()  # where this write's rows go
            before = thread_watermark(self.layout, thread_id)
            marking.add(thread_id)
            try:
                yield
            except BaseException:
                # Files written, then a failure (the index's transaction, say): the rows
                # may not say what the files do. The next opening must read it again.
                if thread_watermark(self.layout, thread_id) != before:
                    self.lifecycle.unsettled()
                raise
            finally:
                marking.discard(thread_id)
            after = thread_watermark(self.layout, thread_id)
            if after != before:
                self.index.note_mark(thread_id, before, after, generation)

    def reserve_index(self, stack: contextlib.ExitStack) -> None:
        """On the event loop, take the index database's write lock into ``stack`` now,
        without waiting (see :meth:`writing`): for a write that took its locks with
        ``reserve=False`` and now knows it changes the index, before it changes
        anything. A step write that leaves the index alone (a tool or run step, most of
        them) so takes no lock of the index's at all."""
        if _commit.on_loop():
            stack.enter_context(self.index.reserved())

    def _refuse_case_alias(self, thread_id: str) -> None:
        """:class:`InvalidIdError` if, on a file system that ignores case, the directory
        ``thread_id`` names is another thread's, whose id differs only in case (``T1``
        finds ``t1``'s): the write, its deletion too, would change that thread's files
        and file them in the index under another id. Its manifest says whose it is: one
        read per write, on such a file system only."""
        if not self.layout.case_blind():
            return
        try:
            doc = manifest.read(self.layout.manifest(thread_id))
        except (CorruptFileError, OSError):
            return  # damaged: its id unknown (``verify --repair`` makes it again)
        other = doc.get("id") if doc is not None else None
        if isinstance(other, str):
            refuse_case_twin("thread", thread_id, case_twin(thread_id, [other]))

    @contextlib.contextmanager
    def state(self, thread_id: str) -> Iterator[journal.ThreadState | None]:
        """Hold the thread's locks and give its folded journal (``None``: no thread, or
        a deleted one whose directory a crash left behind: its tombstone decides); not
        to be changed by the caller.

        The fold kept for reads (:class:`FoldedJournals`) is brought up to date under
        the lock: a thread deleted from again costs the lines appended since, where
        folding the whole journal anew took 86 ms for 10,000 steps, on the event loop.
        A long journal this process holds no fold of (or a fold of a file replaced
        since, which is folded anew) is not folded on the loop:
        :class:`~filelayer._io.commit.DiskWait` is raised, before any change, and the
        call runs in a worker thread (see :data:`LOOP_FOLD_BYTES`)."""
        self.folds.refuse_on_loop(thread_id)
        with self.writing(thread_id):
            if self.deleted.has(thread_id) or not self.layout.manifest(thread_id).exists():
                yield None
            else:
                # Checked against the journal as it is: what the deletion removes is
                # what it holds now, after an edit in place too.
                yield self.folds.folded(thread_id).state
