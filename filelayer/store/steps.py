"""Writing steps and feedback: a step created or merged, a step deleted with its
feedback and elements, a rating given or withdrawn; each journaled under the thread's
lock, then told to the index."""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Any

from .._io import commit as _commit
from .._io import locks as _locks
from ..errors import InvalidFieldError, InvalidIdError, InvalidValueError, UnknownStepError
from ..format import codec as _codec
from ..format import journal
from ..format.ids import check_id, is_valid_id
from ..format.layout import Layout
from ..format.records import check_object, check_step_fields
from ..index.records import feedback_record
from ..index.thread_index import ThreadIndex
from .appender import JournalAppender
from .authors import Authors
from .deleted import DeletedThreads
from .folds import FoldedJournals
from .indexing import IndexBook
from .locate import Locator, deletable
from .locking import WriteLocks
from .writers import dead_sessions

log = logging.getLogger("filelayer")


def forgets_feedback(index_records: list[dict[str, Any]]) -> bool:
    """Whether ``index_records`` take a feedback out of the index (withdrawn, replaced
    by another id for its step, or gone with its step).

    The journal line of such a write reaches the disk before the index forgets the
    feedback, in the ``fsync`` mode even inside a group commit (``sync``): that write
    is not deferred to its group. A later ``delete_feedback`` of the same id, in any
    process, finds no feedback in the index and answers without a reading of the
    journals, writing nothing: the deletion it acknowledges must already be on the
    disk, not in another worker's group that a power cut may lose. A call that changes
    nothing makes what it found durable first (as a write to a deleted step does); here
    the index no longer says which journal that was, so the writer that made the
    change makes it durable before the index can stop saying so.

    The other ways were dearer: remembering in the index the thread of every feedback
    withdrawn (a table that ``reindex`` would have to derive from the journals, which
    fold such lines away), or reading the journals for every unknown id. What it costs
    is one fsync of its own per rating withdrawn or replaced, which the group does not
    share; writing a step or giving a new rating costs nothing more."""
    return any(r.get("k") == "f" and r.get("v") is None for r in index_records)


class Steps:
    """The writes of steps and feedback (see the module's docstring)."""

    def __init__(
        self,
        layout: Layout,
        index: ThreadIndex,
        deleted: DeletedThreads,
        folds: FoldedJournals,
        authors: Authors,
        book: IndexBook,
        locator: Locator,
        locks: WriteLocks,
        appender: JournalAppender,
    ) -> None:
        self.layout = layout
        self.index = index
        self.deleted = deleted
        self.folds = folds
        self.authors = authors
        self.book = book
        self.locator = locator
        self.locks = locks
        self.appender = appender

    def write_step(self, step: dict[str, Any], *, actor: str | None = None) -> bool:
        """See :meth:`ArchiveStore.write_step`."""
        step_id = check_id("step", check_object("step", step).get("id"))
        thread_id = step.get("threadId") or self.locator.locate_step(step_id)
        if not thread_id:
            raise InvalidValueError(
                "threadId", f"step {step_id!r} has no threadId and is not in the archive"
            )
        check_id("thread", thread_id)
        try:  # refused before anything is written
            check_step_fields(step, step_id)
        except InvalidFieldError:  # unless sent back as stored (rare: look it up)
            stored = self.folds.folded(thread_id).state.steps.get(step_id)
            check_step_fields(step, step_id, stored)
        record = journal.step_record(step)
        line = _codec.encode_new_line(record)  # refuse what cannot be stored before locking
        appender = self.appender
        locks = self.locks
        with (
            locks.writing(thread_id, reserve=False),
            appender.changes() as changes,
            contextlib.ExitStack() as index_lock,
        ):
            self.authors.authorize(thread_id, actor)
            if not appender.known_to_exist(thread_id):  # a new thread goes to the index
                locks.reserve_index(index_lock)
            opened = appender.open_journal(thread_id, changes)
            if opened is None:
                return False
            with opened:
                index_records = self.book.step_records(thread_id, step_id, record["step"], opened)
                if index_records is None:
                    log.debug("filelayer: ignoring a late write to deleted step %s", step_id)
                    # Ignored, the write acknowledges the deletion: on the disk first.
                    appender.found(thread_id, opened, changes)
                    return True
                if index_records:
                    locks.reserve_index(index_lock)
                appender.append_to(thread_id, opened, line, changes, step=step_id)
            if index_records:
                self.index.append(index_records)
        self.locator.saw_step(step_id, thread_id)
        return True

    def delete_step(
        self,
        step_id: str,
        thread_id: str | None = None,
        *,
        prefer: str | None = None,
        actor: str | None = None,
    ) -> bool:
        """See :meth:`ArchiveStore.delete_step`."""
        if not deletable("step", step_id):
            return False
        thread_id = thread_id or self.locator.locate_step(step_id, prefer)
        if not thread_id or not is_valid_id(thread_id):
            return False
        with self.locks.state(thread_id) as state, self.appender.changes() as changes:
            if state is None:
                return False
            self.authors.authorize(thread_id, actor)
            records = [journal.step_delete_record(step_id)]
            doomed_files = []
            for el in state.elements.values():
                if el.get("forId") == step_id:
                    records.append(journal.element_delete_record(el["id"]))
                    if isinstance(el.get("file"), str):
                        doomed_files.append(el["file"])
            index_records = self.book.step_deleted_records(thread_id, step_id)
            self.appender.hide(
                thread_id,
                records,
                doomed_files,
                changes,
                deleted=step_id,
                sync=changes.durable and forgets_feedback(index_records),
            )
            if index_records:
                self.index.append(index_records)
        self.locator.forget_step(step_id)
        return True

    def upsert_feedback(
        self,
        *,
        for_id: str,
        value: int,
        comment: str | None = None,
        feedback_id: str | None = None,
        thread_id: str | None = None,
        actor: str | None = None,
    ) -> str:
        """Rate a step (one feedback per step: a new one replaces the old).

        Refused with :class:`UnknownStepError` unless the step is live in an existing
        thread: feedback never creates a thread, nor rates what was deleted.
        """
        check_id("step", for_id)
        feedback_id = check_id("feedback", feedback_id or str(uuid.uuid4()))
        if value not in (0, 1):  # True and False are 1 and 0
            raise InvalidValueError("value", "feedback value must be 0 or 1")
        value = int(value)
        if comment is not None and not isinstance(comment, str):
            raise InvalidValueError("comment", "a feedback comment must be a string")
        if thread_id is None:
            thread_id = self.locator.locate_step(for_id)
            if thread_id is None:
                raise UnknownStepError(for_id, None)
        check_id("thread", thread_id)
        record = journal.feedback_record(
            {"id": feedback_id, "forId": for_id, "value": int(value), "comment": comment}
        )
        line = _codec.encode_new_line(record)  # refuse what cannot be stored before locking
        with self.locks.writing(thread_id), self.appender.changes() as changes:
            self.authors.authorize(thread_id, actor)
            self.index.refresh()
            owner = self.index.feedback_owner(feedback_id)
            if owner is not None and owner != thread_id:
                raise InvalidIdError("feedback", feedback_id, "it rates a step of another thread")
            if (
                self.deleted.has(thread_id)
                or not self.layout.manifest(thread_id).exists()
                or for_id not in self.folds.folded(thread_id).state.steps
            ):
                raise UnknownStepError(for_id, thread_id)
            index_records = self.book.feedback_records(thread_id, feedback_id, for_id, value)
            # Replacing another id: on the disk before the index forgets it.
            sync = changes.durable and forgets_feedback(index_records)
            self.appender.append_lines(thread_id, line, changes, sync=sync)
            self.index.append(index_records)
        return feedback_id

    def _index_may_lag(self) -> bool:
        """Whether the index may not hold every write yet: a writer died without
        closing (its session is there, unlocked) and no opening reconciled since, or a
        rebuild, a reconcile or a fill of the index runs (they announce themselves)."""
        own = self.locks.lifecycle.own_session()  # dead to a look without flock
        dead = [p for p in dead_sessions(self.layout.index_dir) if p != own]
        return bool(dead) or _locks.announced(self.layout.maintenance_lock)

    def delete_feedback(
        self,
        feedback_id: str,
        *,
        actor: str | None = None,
        scan: bool = True,
        thread_id: str | None = None,
    ) -> bool | None:
        """See :meth:`ArchiveStore.delete_feedback`."""
        if not deletable("feedback", feedback_id):
            return False
        if thread_id is None:
            self.index.refresh()
            thread_id = self.index.feedback_owner(feedback_id)
            if thread_id is None:
                # The index may lag behind the journals (a writer killed before its
                # rows, an index being filled or rebuilt): the journals say whether it
                # was given. Looked for only then: an id nobody gave must not cost every
                # request a reading of the whole archive.
                if not self._index_may_lag():
                    return True
                if not scan:
                    return None  # the caller scans, without holding the store's lock
                if _commit.on_loop():  # a scan of every journal: not on the event loop
                    raise _commit.DiskWait(self.layout.threads)
                order = self.locator.scan_order()
                thread_id = self.locator.scan_journals("feedback", feedback_id, order)
                if thread_id is None or self.deleted.has(thread_id):
                    return True  # never given, or gone with its thread (deletions are final)
        else:  # found by the caller's scan
            if self.deleted.has(check_id("thread", thread_id)):
                return True
            # A feedback id stays with the thread it rates: the one the index files it
            # under, whatever thread the caller names (else the caller's own thread would
            # take another user's rating out of the index, the sidebar's filter with it).
            self.index.refresh()
            thread_id = self.index.feedback_owner(feedback_id) or thread_id
        with self.locks.writing(thread_id), self.appender.changes() as changes:
            self.authors.authorize(thread_id, actor)
            if self.layout.manifest(thread_id).exists() and not self.deleted.has(thread_id):
                # On the disk before the index forgets the feedback: see forgets_feedback.
                self.appender.append_records(
                    thread_id,
                    [journal.feedback_delete_record(feedback_id)],
                    changes,
                    sync=changes.durable,
                )
            self.index.append([feedback_record(thread_id, feedback_id, None, None)])
        return True
