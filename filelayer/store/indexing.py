"""What the index must hear of each write, decided from what it holds now and what the
write changes; and what it should hold for a thread, computed from its files (for the
reconciler and the rebuild)."""

from __future__ import annotations

from typing import Any

from .._io import fs as _fs
from ..format import journal
from ..format.fold import merge_step
from ..format.layout import Layout
from ..index.records import (
    favorite_record,
    feedback_record,
    index_time,
    manifest_record,
    searchable,
    text_record,
)
from ..index.summary import ThreadSummary
from ..index.thread_index import ThreadIndex
from .authors import Authors
from .cache import Lru
from .folds import FoldedJournals, TombstoneCache, read_state

_KINDS_KEPT = 256
"""Threads whose message step ids a process keeps in memory: those it is writing to."""

_RECOGNISE = 64
"""Bytes before ``end`` compared to make sure a journal read on from there is the same
file (a journal replaced twice can come back with its inode number, as in
:class:`~filelayer._io.tail.Tail`)."""


def _sets_type(value: object) -> bool:
    """Whether a step write's ``type`` replaces the stored one (:func:`merge_step`:
    an empty string or dict never overwrites a stored value)."""
    if value is None:
        return False
    if type(value) is str or value == {}:
        return bool(value)
    return True


class _StepKinds:
    """Which steps of a thread are messages and which are not, as the first ``end``
    bytes of its journal ``file`` say, followed as this process appends (a journal
    another process appended to is read on; one replaced is learnt again). ``complete``:
    every step of the journal is in one of the two sets (learnt from its fold, or the
    journal was empty); else a step in neither is asked of the index, once. ``last``:
    the bytes just before ``end``, to recognise the file. ``pending``: the step being
    written and whether it will be a message, taken once its line is appended."""

    __slots__ = ("complete", "end", "file", "last", "messages", "others", "pending")

    def __init__(self, file: tuple[int, int], end: int, last: bytes) -> None:
        self.file = file
        self.end = end
        self.last = last
        self.complete = not end
        self.messages: set[str] = set()
        self.others: set[str] = set()
        self.pending: tuple[str, bool] | None = None


def _read_on(kinds: _StepKinds, opened: _fs.AppendFile) -> bool:
    """Take into ``kinds`` the lines another process appended to the journal since
    ``kinds.end`` (they follow every line before them in the journal's order); ``False``
    if the journal did not grow by whole, sound lines from there, or the bytes before
    ``end`` are not the ones seen there (another file with the same inode number): it
    is learnt again."""
    if opened.size < kinds.end:
        return False
    keep = len(kinds.last)
    data = _fs.pread_all(opened.fd, opened.size - kinds.end + keep, kinds.end - keep)
    if data[:keep] != kinds.last:
        return False
    parsed = journal.parse(data[keep:])
    if parsed.bad_lines or parsed.torn_tail:
        return False
    messages, others = kinds.messages, kinds.others
    for record in parsed.records:
        op = record["op"]
        if op == journal.OP_STEP:
            body = record[op]
            step_id, kind = body["id"], body.get("type")
            if not _sets_type(kind):
                # Of a step not seen yet, only a complete knowledge tells its type.
                if step_id not in messages and (kinds.complete or step_id in others):
                    others.add(step_id)
            elif isinstance(kind, str) and kind in journal.MESSAGE_TYPES:
                messages.add(step_id)
                others.discard(step_id)
            else:
                others.add(step_id)
                messages.discard(step_id)
        elif op == journal.OP_STEP_DELETE:
            messages.discard(record["id"])
            others.discard(record["id"])
    kinds.end = opened.size
    kinds.last = data[-_RECOGNISE:]
    return True


class IndexBook:
    """The index records a store write implies (the writer holds the thread's lock and
    gives them to :meth:`ThreadIndex.append`), and a thread's summary from its files."""

    __slots__ = ("_kinds", "authors", "folds", "index", "layout", "search_chars", "tombstones")

    def __init__(
        self,
        layout: Layout,
        index: ThreadIndex,
        authors: Authors,
        tombstones: TombstoneCache,
        folds: FoldedJournals,
        search_chars: int,
    ) -> None:
        self.layout = layout
        self.index = index
        self.authors = authors
        self.tombstones = tombstones
        self.folds = folds
        self.search_chars = search_chars
        self._kinds: Lru[str, _StepKinds] = Lru(_KINDS_KEPT)

    def forget(self) -> None:
        """Forget which steps of the journals are messages (their files changed)."""
        self._kinds.clear()

    def thread_record(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The index record of a thread's manifest."""
        return manifest_record(doc, self.authors.owner_id(doc))

    def indexed(self, thread_id: str) -> ThreadSummary | None:
        """The index's current view of a thread, for a writer holding its lock (the
        database answers with what every process committed, this thread's last writer
        included)."""
        return self.index.threads.get(thread_id)

    def agrees(self, doc: dict[str, Any]) -> bool:
        """Whether the index files the thread of manifest ``doc`` as the manifest says."""
        summary = self.indexed(doc["id"])
        return summary is not None and (
            summary.name,
            summary.user_id,
            summary.user_identifier,
            summary.tags,
        ) == (
            doc.get("name"),
            self.authors.owner_id(doc),
            doc.get("userIdentifier"),
            doc.get("tags"),
        )

    def step_records(
        self, thread_id: str, step_id: str, step: dict[str, Any], opened: _fs.AppendFile
    ) -> list[dict[str, Any]] | None:
        """The index records a step write needs; ``None`` if the step was deleted (the
        write would be ignored by every reader: it is not made at all).

        Whether the step is a message before and after the write is known without a
        look at the index (:class:`_StepKinds`): a run or tool step that stays one asks
        it nothing. A message made another type takes its text out of the index; a step
        made a message puts in the text and time its merged version holds. The
        journal's tombstones are consulted only when the index does not know the step
        yet, which is where a deleted step would otherwise come back."""
        kinds = self._step_kinds(thread_id, opened)
        kinds.pending = None  # set below once the write is known to be made
        kind = step.get("type")
        known: tuple[str, str] | None = None
        asked = False  # the index's text of the step
        if step_id in kinds.messages:
            was_message = True
        elif step_id in kinds.others or kinds.complete:
            was_message = False
        else:  # a message has its text row from its first write
            known, asked = self.index.text(thread_id, step_id), True
            was_message = known is not None
        is_message = (
            (isinstance(kind, str) and kind in journal.MESSAGE_TYPES)
            if _sets_type(kind)
            else was_message
        )
        metadata = step.get("metadata")
        favorite = isinstance(metadata, dict) and "favorite" in metadata
        if not (is_message or was_message or favorite):
            kinds.pending = (step_id, False)
            return []  # a run or tool step, as it was: nothing the index keeps (most writes)
        if not asked:
            known = self.index.text(thread_id, step_id)
        records: list[dict[str, Any]] = []
        if is_message:
            # A message is indexed from its first write, even while its text is still
            # empty: a later update may leave out the type, and must still be recognised.
            merged = None if was_message else self._merged(thread_id, step_id, step, kinds, opened)
            if merged is not None:  # a step of another type made a message
                text, at = merged
            else:
                output = step.get("output")
                text = searchable(output[: self.search_chars]) if isinstance(output, str) else ""
                if known is not None and not text:
                    text = known[1]  # as in the journal: an empty write keeps the text
                at = index_time(step.get("createdAt") or step.get("start"))
                if known is not None and known[0]:
                    at = min(at, known[0]) if at else known[0]
            if known != (at, text):
                records.append(text_record(thread_id, step_id, at, text))
        elif known is not None:  # a message made another type: its text leaves the index
            records.append(text_record(thread_id, step_id, "", None))
        if isinstance(metadata, dict) and "favorite" in metadata:
            on = bool(metadata["favorite"])
            if on != self.index.is_favorite(thread_id, step_id):
                records.append(favorite_record(thread_id, step_id, on))
        if known is None and records and step_id in self.tombstones.of(thread_id, opened).steps:
            return None
        kinds.pending = (step_id, is_message)
        return records

    def _step_kinds(self, thread_id: str, opened: _fs.AppendFile) -> _StepKinds:
        """Which steps of the thread are messages, as its journal ``opened`` says now
        (caller holds the thread's lock): a few dictionary lookups while this process
        follows it; a journal it does not follow starts unknown, each step asked of the
        index when first written, not folded: a run or tool step written to a long
        thread after a restart must not read its whole journal (on the event loop)."""
        kinds = self._kinds.get(thread_id)
        if (
            kinds is not None
            and kinds.file == opened.id
            and (kinds.end == opened.size or _read_on(kinds, opened))
        ):
            self._kinds.put(thread_id, kinds)  # the most recent: the threads being written stay
            return kinds
        keep = min(opened.size, _RECOGNISE)
        last = _fs.pread_all(opened.fd, keep, opened.size - keep)
        kinds = _StepKinds(opened.id, opened.size, last)
        self._kinds.put(thread_id, kinds)
        return kinds

    def _learn(self, thread_id: str, kinds: _StepKinds, opened: _fs.AppendFile) -> None:
        """Every step's kind from the thread's folded journal (kept in memory and
        caught up with the file, which the caller's lock keeps as it is)."""
        messages, others = set(), set()
        for sid, stored in self.folds.folded(thread_id).state.steps.items():
            kind = stored.get("type")
            if isinstance(kind, str) and kind in journal.MESSAGE_TYPES:
                messages.add(sid)
            else:
                others.add(sid)
        keep = min(opened.size, _RECOGNISE)
        kinds.last = _fs.pread_all(opened.fd, keep, opened.size - keep)
        kinds.messages, kinds.others, kinds.end = messages, others, opened.size
        kinds.complete = True

    def _merged(
        self,
        thread_id: str,
        step_id: str,
        step: dict[str, Any],
        kinds: _StepKinds,
        opened: _fs.AppendFile,
    ) -> tuple[str, str] | None:
        """(searchable text, time) of a step of another type made a message by ``step``,
        from its stored version merged with the write, as a rebuild reads it; ``None``
        for a step the journal does not hold. Whether it holds it is learnt from the
        fold when not known (a new message of a thread written after a restart, whose
        journal the tombstones' check reads anyway)."""
        if not kinds.complete:
            self._learn(thread_id, kinds, opened)
        if step_id not in kinds.others:
            return None  # a new step (most message writes): the write says it all
        stored = self.folds.folded(thread_id).state.steps.get(step_id)
        if stored is None:
            return None
        merged = dict(stored)
        merge_step(merged, step)
        output = merged.get("output")
        text = output[: self.search_chars] if isinstance(output, str) else ""
        return searchable(text), index_time(merged.get("createdAt") or merged.get("start"))

    def appended(
        self,
        thread_id: str,
        opened: _fs.AppendFile,
        at: int,
        lines: bytes,
        step: str | None,
        deleted: str | None,
    ) -> None:
        """``lines`` were appended at ``at`` to the thread's journal ``opened``: a
        version of ``step``, the deletion of ``deleted``, or other lines. What is known
        of its steps' kinds follows, if it was known up to ``at``."""
        kinds = self._kinds.get(thread_id)
        if kinds is None:
            return
        pending, kinds.pending = kinds.pending, None
        if kinds.file != opened.id or kinds.end != at:
            return  # appended to by another process meanwhile: learnt again when needed
        kinds.end = at + len(lines)
        kinds.last = (kinds.last + lines[-_RECOGNISE:])[-_RECOGNISE:]
        if pending is not None and pending[0] == step:
            if pending[1]:
                kinds.messages.add(pending[0])
                kinds.others.discard(pending[0])
            else:
                kinds.others.add(pending[0])
                kinds.messages.discard(pending[0])
        if deleted is not None:
            kinds.messages.discard(deleted)
            kinds.others.discard(deleted)

    def step_deleted_records(self, thread_id: str, step_id: str) -> list[dict[str, Any]]:
        """The index records of a step's deletion: its text, feedback and favorite go."""
        summary = self.indexed(thread_id)
        records: list[dict[str, Any]] = []
        if summary is not None:
            if step_id in summary.texts:
                records.append(text_record(thread_id, step_id, "", None))
            for fid, (sid, _) in summary.feedback.items():
                if sid == step_id:
                    records.append(feedback_record(thread_id, fid, None, None))
            if step_id in summary.favorites:
                records.append(favorite_record(thread_id, step_id, False))
        return records

    def feedback_records(
        self, thread_id: str, feedback_id: str, for_id: str, value: int
    ) -> list[dict[str, Any]]:
        """The index records of a rating: it replaces any other feedback of the step."""
        summary = self.indexed(thread_id)
        records = []
        if summary is not None:
            for fid, (sid, _) in summary.feedback.items():
                if sid == for_id and fid != feedback_id:
                    records.append(feedback_record(thread_id, fid, None, None))
        records.append(feedback_record(thread_id, feedback_id, for_id, value))
        return records

    def summarise(self, thread_id: str, doc: dict[str, Any] | None) -> ThreadSummary | None:
        """What the index should hold for a thread, computed from its files (``doc``:
        its manifest as :meth:`ArchiveStore.read_manifest` gives it)."""
        if doc is None:
            return None
        state = read_state(self.layout, thread_id)
        texts: dict[str, tuple[str, str]] = {}
        favorites: set[str] = set()
        for step in state.steps.values():
            if journal.text_or_none(step.get("type")) in journal.MESSAGE_TYPES:
                output = step.get("output")
                text = output[: self.search_chars] if isinstance(output, str) else ""
                at = index_time(step.get("createdAt") or step.get("start"))
                texts[step["id"]] = (at, searchable(text))
            metadata = step.get("metadata")
            if isinstance(metadata, dict) and metadata.get("favorite"):  # a line may say "x"
                favorites.add(step["id"])
        feedback = {
            fb["id"]: (fb["forId"], int(fb.get("value") or 0))
            for fb in state.feedback_by_step().values()
        }
        return ThreadSummary(
            id=thread_id,
            user_id=self.authors.owner_id(doc),
            user_identifier=doc.get("userIdentifier"),
            name=doc.get("name"),
            created_at=index_time(doc.get("createdAt")),
            updated_at=doc.get("updatedAt") or "",
            tags=doc.get("tags"),
            texts=texts,
            feedback=feedback,
            favorites=favorites,
        )
