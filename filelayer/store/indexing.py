"""What the index must hear of each write, decided from what it holds now and what the
write changes; and what it should hold for a thread, computed from its files (for the
reconciler and the rebuild)."""

from __future__ import annotations

from typing import Any

from .._io import fs as _fs
from ..format import journal
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
from .folds import TombstoneCache, read_state


class IndexBook:
    """The index records a store write implies (the writer holds the thread's lock and
    gives them to :meth:`ThreadIndex.append`), and a thread's summary from its files."""

    __slots__ = ("authors", "index", "layout", "search_chars", "tombstones")

    def __init__(
        self,
        layout: Layout,
        index: ThreadIndex,
        authors: Authors,
        tombstones: TombstoneCache,
        search_chars: int,
    ) -> None:
        self.layout = layout
        self.index = index
        self.authors = authors
        self.tombstones = tombstones
        self.search_chars = search_chars

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

        The journal's tombstones are consulted only when the index does not know the
        step yet, which is where a deleted step would otherwise come back."""
        metadata = step.get("metadata")
        if (
            "type" in step
            and step["type"] not in journal.MESSAGE_TYPES
            and not (isinstance(metadata, dict) and "favorite" in metadata)
        ):
            return []  # a run or tool step: nothing the index keeps (most writes)
        known = self.index.text(thread_id, step_id)
        records: list[dict[str, Any]] = []
        # A message is indexed from its first write, even while its text is still
        # empty: a later update may leave out the type, and must still be recognised.
        is_message = step.get("type") in journal.MESSAGE_TYPES or (
            "type" not in step and known is not None
        )
        if is_message:
            output = step.get("output")
            text = searchable(output[: self.search_chars]) if isinstance(output, str) else ""
            if known is not None and not text:
                text = known[1]  # as in the journal: an empty write keeps the text
            at = index_time(step.get("createdAt") or step.get("start"))
            if known is not None and known[0]:
                at = min(at, known[0]) if at else known[0]
            if known != (at, text):
                records.append(text_record(thread_id, step_id, at, text))
        if isinstance(metadata, dict) and "favorite" in metadata:
            on = bool(metadata["favorite"])
            if on != self.index.is_favorite(thread_id, step_id):
                records.append(favorite_record(thread_id, step_id, on))
        if known is None and records and step_id in self.tombstones.of(thread_id, opened).steps:
            return None
        return records

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
            if step.get("type") in journal.MESSAGE_TYPES:
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
