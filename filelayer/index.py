"""The thread index: what ``list_threads`` needs, without opening any thread.

``index/threads.jsonl`` is a derived, append-only log of small records (a thread's
fields, a message's searchable text, a feedback value, a favorite flag, a deletion).
Each process keeps the folded log in memory and, before answering, reads only the bytes
appended since it last looked (or everything again if another process compacted the file
under it). Appends happen under ``locks/index.lock``; when dead records outweigh the
live ones the log is rewritten in one atomic step. Deleting the file loses nothing:
``rebuild`` makes it again from the thread directories.
"""

from __future__ import annotations

import base64
import bisect
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _codec, _fs, _locks

log = logging.getLogger("filelayer")

DEFAULT_SEARCH_CHARS = 2000
"""How much of each message the index keeps for search (characters)."""

_COMPACT_MIN_RECORDS = 2000


@dataclass(slots=True)
class ThreadSummary:
    id: str
    user_id: str | None = None
    user_identifier: str | None = None
    name: str | None = None
    created_at: str = ""
    updated_at: str = ""
    tags: list[str] | None = None
    texts: dict[str, tuple[str, str]] = field(default_factory=dict)
    """step id -> (time, text) of message steps; text as written (clipped)."""
    feedback: dict[str, tuple[str, int]] = field(default_factory=dict)
    """feedback id -> (step id, value)."""
    favorites: set[str] = field(default_factory=set)
    folded_name: str = ""
    folded_text: str = ""
    last_text_at: str = ""

    @property
    def activity(self) -> str:
        """Most recent activity: the last thread change or the last message."""
        return max(self.updated_at or self.created_at, self.last_text_at)

    def refold(self) -> None:
        self.folded_name = (self.name or "").casefold()
        self.folded_text = "\n".join(text for _, text in self.texts.values()).casefold()

    def record(self) -> dict[str, Any]:
        return {
            "k": "t",
            "id": self.id,
            "user": self.user_id,
            "ident": self.user_identifier,
            "name": self.name,
            "created": self.created_at,
            "updated": self.updated_at,
            "tags": self.tags,
        }

    def records(self) -> Iterator[dict[str, Any]]:
        yield self.record()
        for sid in sorted(self.texts):
            t, text = self.texts[sid]
            yield text_record(self.id, sid, t, text)
        for fid in sorted(self.feedback):
            sid, value = self.feedback[fid]
            yield feedback_record(self.id, fid, sid, value)
        for sid in sorted(self.favorites):
            yield favorite_record(self.id, sid, True)


def thread_record(
    thread_id: str,
    *,
    user_id: str | None,
    user_identifier: str | None,
    name: str | None,
    created_at: str,
    updated_at: str,
    tags: list[str] | None,
) -> dict[str, Any]:
    return ThreadSummary(
        id=thread_id,
        user_id=user_id,
        user_identifier=user_identifier,
        name=name,
        created_at=created_at,
        updated_at=updated_at,
        tags=tags,
    ).record()


def text_record(thread_id: str, step_id: str, at: str, text: str | None) -> dict[str, Any]:
    return {"k": "x", "id": thread_id, "s": step_id, "at": at, "x": text}


def feedback_record(
    thread_id: str, feedback_id: str, step_id: str | None, value: int | None
) -> dict[str, Any]:
    return {"k": "f", "id": thread_id, "f": feedback_id, "s": step_id, "v": value}


def favorite_record(thread_id: str, step_id: str, on: bool) -> dict[str, Any]:
    return {"k": "s", "id": thread_id, "s": step_id, "on": on}


def delete_record(thread_id: str) -> dict[str, Any]:
    return {"k": "d", "id": thread_id}


def encode_cursor(summary: ThreadSummary) -> str:
    raw = f"{summary.activity}\x1f{summary.id}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str] | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    activity, sep, thread_id = raw.partition("\x1f")
    return (activity, thread_id) if sep else None


@dataclass
class Page:
    items: list[ThreadSummary]
    has_next: bool
    start_cursor: str | None
    end_cursor: str | None


class ThreadIndex:
    """The in-memory view of the index log, kept up to date with the file."""

    def __init__(self, path: Path, lock_path: Path, *, lock_timeout: float) -> None:
        self.path = path
        self.lock_path = lock_path
        self.lock_timeout = lock_timeout
        self.threads: dict[str, ThreadSummary] = {}
        self._file_id: tuple[int, int] | None = None
        self._offset = 0
        self._records_read = 0
        self._by_user: dict[str | None, list[tuple[str, str]]] = {}
        self._feedback_owner: dict[str, str] = {}

    # -- reading -------------------------------------------------------------------

    def exists(self) -> bool:
        return self.path.exists()

    def refresh(self) -> None:
        """Apply whatever was appended since the last call (cheap when nothing was)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._file_id is not None:
                self._reset()
            return
        file_id = (st.st_dev, st.st_ino)
        if file_id != self._file_id or st.st_size < self._offset:
            self._reset()
            self._file_id = file_id
        if st.st_size == self._offset:
            return
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        lines, tail = _fs.split_lines(data)
        self._offset += len(data) - len(tail)
        for line in lines:
            if not line:
                continue
            try:
                record = _codec.decode(line)
            except _codec.DecodeError:
                continue  # a torn fragment from a crashed writer: derived data, skip
            if isinstance(record, dict):
                self._apply(record)
                self._records_read += 1

    def _reset(self) -> None:
        self.threads.clear()
        self._by_user.clear()
        self._feedback_owner.clear()
        self._file_id = None
        self._offset = 0
        self._records_read = 0

    def _apply(self, r: dict[str, Any]) -> None:
        kind = r.get("k")
        tid = r.get("id")
        if not isinstance(tid, str):
            return
        if kind == "d":
            old = self.threads.pop(tid, None)
            self._by_user.pop(None, None)
            if old is not None:
                self._by_user.pop(old.user_id, None)
                for gone in old.feedback:
                    self._feedback_owner.pop(gone, None)
            return
        summary = self.threads.get(tid)
        if summary is None:
            summary = self.threads[tid] = ThreadSummary(id=tid)
        self._by_user.pop(summary.user_id, None)
        self._by_user.pop(None, None)
        if kind == "t":
            summary.user_id = r.get("user")
            summary.user_identifier = r.get("ident")
            summary.name = r.get("name")
            summary.created_at = r.get("created") or summary.created_at
            summary.updated_at = r.get("updated") or summary.updated_at
            tags = r.get("tags")
            summary.tags = tags if isinstance(tags, list) else None
            summary.folded_name = (summary.name or "").casefold()
        elif kind == "x":
            sid, text = r.get("s"), r.get("x")
            if isinstance(sid, str):
                if isinstance(text, str):
                    at = str(r.get("at") or "")
                    summary.texts[sid] = (at, text)
                    summary.last_text_at = max(summary.last_text_at, at)
                elif summary.texts.pop(sid, None) is not None:
                    summary.last_text_at = max((t for t, _ in summary.texts.values()), default="")
                summary.folded_text = ""  # refolded lazily by search
        elif kind == "f":
            fid, rated, value = r.get("f"), r.get("s"), r.get("v")
            if isinstance(fid, str):
                if value in (0, 1) and isinstance(rated, str):
                    summary.feedback[fid] = (rated, int(value))
                    self._feedback_owner[fid] = tid
                else:
                    summary.feedback.pop(fid, None)
                    self._feedback_owner.pop(fid, None)
        elif kind == "s":
            fav = r.get("s")
            if isinstance(fav, str):
                if r.get("on"):
                    summary.favorites.add(fav)
                else:
                    summary.favorites.discard(fav)
        self._by_user.pop(summary.user_id, None)

    # -- writing -------------------------------------------------------------------

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        data = b"".join(_codec.encode_line(r) for r in records)
        if not data:
            return
        with _locks.locked(self.lock_path, self.lock_timeout):
            _fs.append(self.path, data)
            self.refresh()
            if self._records_read > _COMPACT_MIN_RECORDS and self._records_read > 4 * (
                self._live_records()
            ):
                self._compact_locked()

    def _live_records(self) -> int:
        return sum(
            1 + len(s.texts) + len(s.feedback) + len(s.favorites) for s in self.threads.values()
        )

    def _compact_locked(self) -> None:
        data = b"".join(
            _codec.encode_line(r)
            for tid in sorted(self.threads)
            for r in self.threads[tid].records()
        )
        _fs.atomic_write(self.path, data, durable=False)
        self._reset()
        self.refresh()

    def replace_all(self, summaries: Iterable[ThreadSummary]) -> None:
        """Write a whole new index (``reindex``)."""
        data = b"".join(_codec.encode_line(r) for s in summaries for r in s.records())
        with _locks.locked(self.lock_path, self.lock_timeout):
            _fs.atomic_write(self.path, data, durable=False)
            self._reset()
            self.refresh()

    # -- queries -------------------------------------------------------------------

    def feedback_owner(self, feedback_id: str) -> str | None:
        return self._feedback_owner.get(feedback_id)

    def _sorted_keys(self, user_id: str | None) -> list[tuple[str, str]]:
        keys = self._by_user.get(user_id)
        if keys is None:
            keys = sorted(
                (s.activity, s.id)
                for s in self.threads.values()
                if user_id is None or s.user_id == user_id
            )
            self._by_user[user_id] = keys
        return keys

    def page(
        self,
        *,
        user_id: str | None,
        first: int,
        cursor: str | None = None,
        search: str | None = None,
        feedback: int | None = None,
    ) -> Page:
        """Threads newest activity first, after ``cursor``, filtered.

        The cursor is the (activity, id) key of the last thread shown, so a new thread
        written while the user scrolls lands before it and is neither skipped nor
        shown twice.
        """
        keys = self._sorted_keys(user_id)
        end = len(keys)
        if cursor:
            key = decode_cursor(cursor)
            if key is None and cursor in self.threads:  # a plain thread id also works
                key = (self.threads[cursor].activity, cursor)
            if key is not None:
                end = bisect.bisect_left(keys, key)
        needle = search.casefold() if search else None
        first = max(first, 0)
        items: list[ThreadSummary] = []
        has_next = False
        for i in range(end - 1, -1, -1):
            summary = self.threads[keys[i][1]]
            if needle is not None and not self._matches(summary, needle):
                continue
            if feedback is not None and not any(
                v == feedback for _, v in summary.feedback.values()
            ):
                continue
            if len(items) == first:
                has_next = True
                break
            items.append(summary)
        return Page(
            items=items,
            has_next=has_next,
            start_cursor=encode_cursor(items[0]) if items else None,
            end_cursor=encode_cursor(items[-1]) if items else None,
        )

    @staticmethod
    def _matches(summary: ThreadSummary, needle: str) -> bool:
        if needle in summary.folded_name:
            return True
        if summary.texts and not summary.folded_text:
            summary.refold()
        return needle in summary.folded_text

    def favorites_of(self, user_id: str) -> list[tuple[str, set[str]]]:
        return [
            (s.id, set(s.favorites))
            for s in self.threads.values()
            if s.user_id == user_id and s.favorites
        ]
