"""What the index knows about one thread (:class:`ThreadSummary`): a plain value when
the reconciler computes it from a thread's files, a lazy view when the index hands it
out (reading through a :class:`SummaryLoader`, never the index's private state)."""

from __future__ import annotations

from collections.abc import (
    Iterator,
    Mapping,
    Set,
)
from typing import Any, Protocol

from .records import favorite_record, feedback_record, text_record, thread_record

# -- a thread's summary -------------------------------------------------------------------


class SummaryLoader(Protocol):
    """Where a lazy :class:`ThreadSummary` reads what it did not load (the index)."""

    def text(self, thread_id: str, step_id: str) -> tuple[str, str] | None: ...
    def texts_of(self, thread_id: str) -> dict[str, tuple[str, str]]: ...
    def feedback_of(self, thread_id: str) -> dict[str, tuple[str, int]]: ...
    def favorites_of_thread(self, thread_id: str) -> set[str]: ...


class ThreadSummary:
    """What the index knows about one thread.

    Built by hand (``reindex`` computes one from a thread's files) it simply holds its
    fields. Made by :meth:`lazy` (what :class:`ThreadIndex` hands out) it is a view:
    texts, feedback and favorites are read through its :class:`SummaryLoader` when first
    asked for.
    """

    __slots__ = (
        "_activity",
        "_favorites",
        "_feedback",
        "_last",
        "_loader",
        "_texts",
        "created_at",
        "id",
        "name",
        "tags",
        "updated_at",
        "user_id",
        "user_identifier",
    )

    def __init__(
        self,
        id: str,
        user_id: str | None = None,
        user_identifier: str | None = None,
        name: str | None = None,
        created_at: str = "",
        updated_at: str = "",
        tags: list[str] | None = None,
        texts: Mapping[str, tuple[str, str]] | None = None,
        feedback: Mapping[str, tuple[str, int]] | None = None,
        favorites: Set[str] | None = None,
    ) -> None:
        self.id = id
        self.user_id = user_id
        self.user_identifier = user_identifier
        self.name = name
        self.created_at = created_at
        self.updated_at = updated_at
        self.tags = tags
        self._texts: Mapping[str, tuple[str, str]] | None = texts if texts is not None else {}
        self._feedback: Mapping[str, tuple[str, int]] | None = (
            feedback if feedback is not None else {}
        )
        self._favorites: Set[str] | None = favorites if favorites is not None else set()
        self._activity: str | None = None
        self._last: str | None = None
        self._loader: SummaryLoader | None = None

    @classmethod
    def lazy(
        cls,
        id: str,
        loader: SummaryLoader,
        *,
        user_id: str | None,
        user_identifier: str | None,
        name: str | None,
        created_at: str,
        updated_at: str,
        tags: list[str] | None,
        activity: str,
        last: str,
    ) -> ThreadSummary:
        """A summary whose fields are known and whose texts, feedback and favorites
        ``loader`` reads when first asked for."""
        s = cls(
            id,
            user_id=user_id,
            user_identifier=user_identifier,
            name=name,
            created_at=created_at,
            updated_at=updated_at,
            tags=tags,
        )
        s._activity, s._last = activity, last
        s._texts = s._feedback = s._favorites = None
        s._loader = loader
        return s

    def __repr__(self) -> str:
        return f"ThreadSummary(id={self.id!r}, user_id={self.user_id!r}, name={self.name!r})"

    @property
    def texts(self) -> Mapping[str, tuple[str, str]]:
        """step id -> (time, searchable text) of message steps (see :func:`searchable`)."""
        if self._texts is None:
            assert self._loader is not None
            self._texts = _TextsView(self._loader, self.id)
        return self._texts

    @property
    def feedback(self) -> Mapping[str, tuple[str, int]]:
        """feedback id -> (step id, value)."""
        if self._feedback is None:
            assert self._loader is not None
            self._feedback = self._loader.feedback_of(self.id)
        return self._feedback

    @property
    def favorites(self) -> Set[str]:
        if self._favorites is None:
            assert self._loader is not None
            self._favorites = self._loader.favorites_of_thread(self.id)
        return self._favorites

    @property
    def last_text_at(self) -> str:
        if self._last is not None:
            return self._last
        return max((t for t, _ in self.texts.values()), default="")

    @property
    def activity(self) -> str:
        """Most recent activity: the later of the thread's creation and its last message
        (that message's time). What orders the sidebar; a change to the thread itself
        (a rename, a share, Chainlit's session metadata) is not activity."""
        if self._activity is not None:
            return self._activity
        return max(self.created_at, self.last_text_at)

    @property
    def changed(self) -> str:
        """The last change of any kind: the thread's own (``updatedAt``) or a message."""
        return max(self.updated_at or self.created_at, self.last_text_at)

    def record(self) -> dict[str, Any]:
        return thread_record(
            self.id,
            user_id=self.user_id,
            user_identifier=self.user_identifier,
            name=self.name,
            created_at=self.created_at,
            updated_at=self.updated_at,
            tags=self.tags,
        )

    def records(self) -> Iterator[dict[str, Any]]:
        yield self.record()
        texts = self.texts
        for sid in sorted(texts):
            t, text = texts[sid]
            yield text_record(self.id, sid, t, text)
        feedback = self.feedback
        for fid in sorted(feedback):
            sid, value = feedback[fid]
            yield feedback_record(self.id, fid, sid, value)
        for sid in sorted(self.favorites):
            yield favorite_record(self.id, sid, True)


class _TextsView(Mapping[str, tuple[str, str]]):
    """A thread's texts, read from the index: one step at a time (what a writer asks
    for) or all at once (what ``verify`` compares)."""

    __slots__ = ("_all", "_loader", "_thread")

    def __init__(self, loader: SummaryLoader, thread_id: str) -> None:
        self._loader = loader
        self._thread = thread_id
        self._all: dict[str, tuple[str, str]] | None = None

    def __getitem__(self, step_id: str) -> tuple[str, str]:
        if self._all is not None:
            return self._all[step_id]
        found = self._loader.text(self._thread, step_id)
        if found is None:
            raise KeyError(step_id)
        return found

    def _load(self) -> dict[str, tuple[str, str]]:
        if self._all is None:
            self._all = self._loader.texts_of(self._thread)
        return self._all

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def __repr__(self) -> str:
        return repr(self._load())
