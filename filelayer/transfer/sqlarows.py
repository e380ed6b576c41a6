"""Rows of the schema of Chainlit's ``SQLAlchemyDataLayer`` <-> the copy's neutral shape.

What the layer stores, and how it is read back:

* Times are text, copied exactly (no rounding, unlike the official schema).
* JSON columns (``metadata``, ``generation``, ``props``, ``modes``, ``playerConfig``) are
  written by the layer as JSON text. Read back they are parsed again, so a thread's
  metadata arrives as the dict the app gave, not as a string (the layer's own reader hands
  the string on).
* SQLite keeps booleans as 0 and 1: read back as booleans. The layer stores
  ``showInput`` as ``str(value).lower()``: ``"true"`` and ``"false"`` read back as booleans.
* SQLite cannot bind a list, so tags are left out of its rows; a step's tags, like every
  step field a column cannot hold, are kept in the step's stash
  (:mod:`~filelayer.transfer.stash`) and read back from there.
* The schema has no thread update time: it reads as the latest of the thread's creation
  and its steps' creation, as the layer's own sidebar orders threads.
* Elements have no metadata column, so they have no stash.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from .._time import ms_key
from ..format import journal
from .stash import (
    STASH,
    apply_stash,
    exact_text,
    int_column,
    json_value,
    jsonb_text,
    make_stash,
    text,
)

EPOCH = "1970-01-01T00:00:00.000Z"

_STEP_BOOLS = ("streaming", "waitForAnswer", "isError", "defaultOpen", "autoCollapse")
_STEP_JSON = ("generation", "modes")
_STEP_TEXT = ("input", "output", "command", "language", "createdAt", "start", "end")
_ELEMENT_TEXT = (
    "type",
    "url",
    "chainlitKey",
    "display",
    "objectKey",
    "size",
    "language",
    "mime",
)
_ELEMENT_JSON = ("props", "playerConfig")


def _bool(value: Any) -> bool | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "t", "yes")
    return bool(value)


def _tags(raw: Any) -> list[str] | None:
    value = _json(raw)
    if isinstance(value, list | tuple):
        return [str(t) for t in value]
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _is_uuid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        # Only the spelling PostgreSQL's uuid type hands back: it would rewrite another
        # (upper case, no hyphens, braces) into it, and the id would not be kept.
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


class Codec:
    """Neutral dicts <-> rows of this schema, for the columns one database has.

    ``sqlite``: the database is SQLite, which cannot bind a list (no tags) and takes
    any id; PostgreSQL's id columns are ``UUID``."""

    def __init__(self, columns: dict[str, list[str]], *, sqlite: bool) -> None:
        self.columns = columns
        self.can_bind_lists = not sqlite
        self.uuid_ids = not sqlite
        self.int_bits = 64 if sqlite else 32  # what an INT column holds there
        # PostgreSQL's JSONB gives a float such as 1e16 back as an int: spelled for it.
        # SQLite holds every character (PostgreSQL no NUL): its values go as they are.
        self.json_text = exact_text if sqlite else jsonb_text
        self.name_text = exact_text if sqlite else text

    def has(self, table: str, column: str) -> bool:
        return column in self.columns.get(table, ())

    def valid_id(self, value: Any) -> bool:
        """Whether ``value`` can be an id here."""
        return isinstance(value, str) and (not self.uuid_ids or _is_uuid(value))

    # users

    def user_row(self, user: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": user["id"],
            "identifier": user["identifier"],
            "metadata": self.json_text(user.get("metadata") or {}),
            "createdAt": text(user.get("createdAt")),
        }

    @staticmethod
    def user_read(row: dict[str, Any]) -> dict[str, Any]:
        metadata = _json(row.get("metadata"))
        return {
            "id": str(row["id"]),
            "identifier": row["identifier"],
            "displayName": None,
            "metadata": metadata if isinstance(metadata, dict) else {},
            "createdAt": row.get("createdAt") or EPOCH,
        }

    # threads

    def thread_row(self, thread: dict[str, Any]) -> dict[str, Any]:
        tags = thread.get("tags")
        row = {
            "id": thread["id"],
            "createdAt": text(thread.get("createdAt") or thread.get("updatedAt")),
            "name": self.name_text(thread.get("name")),
            "userId": thread.get("userId"),
            "userIdentifier": thread.get("userIdentifier") if thread.get("userId") else None,
            "tags": [self.name_text(str(t)) for t in tags]
            if isinstance(tags, list) and self.can_bind_lists
            else None,
            "metadata": self.json_text(thread.get("metadata") or {}),
        }
        return {k: v for k, v in row.items() if self.has("threads", k)}

    @staticmethod
    def thread_read(row: dict[str, Any], steps: Sequence[dict[str, Any]]) -> dict[str, Any]:
        metadata = _json(row.get("metadata"))
        created = row.get("createdAt")
        times = [s.get("createdAt") or s.get("start") for s in steps]
        known = [t for t in times if isinstance(t, str) and t]
        if not isinstance(created, str) or not created:
            created = min(known, key=ms_key) if known else EPOCH
        updated = max([created, *known], key=ms_key)
        return {
            "id": str(row["id"]),
            "name": row.get("name"),
            "userId": None if row.get("userId") is None else str(row["userId"]),
            "userIdentifier": row.get("userIdentifier"),
            "tags": _tags(row.get("tags")),
            "metadata": metadata if isinstance(metadata, dict) else {},
            "createdAt": created,
            "updatedAt": updated,
        }

    def thread_projection(self, thread: dict[str, Any]) -> dict[str, Any]:
        """What reading the thread back would give (times aside)."""
        row = self.thread_row(thread)
        metadata = _json(row.get("metadata"))
        return {
            "name": row.get("name"),
            "userId": row.get("userId"),
            "tags": _tags(row.get("tags")),
            "metadata": metadata if isinstance(metadata, dict) else {},
            "createdAt": row.get("createdAt"),
        }

    # steps

    def step_columns(self, step: dict[str, Any], thread_id: str) -> dict[str, Any]:
        """The columns the layer itself would write for ``step`` (those this database has)."""
        show = step.get("showInput")
        metadata = step.get("metadata")
        tags = step.get("tags")
        row: dict[str, Any] = {
            "id": step["id"],
            "threadId": thread_id,
            "parentId": step.get("parentId") if isinstance(step.get("parentId"), str) else None,
            "name": text(step.get("name")) or "",
            "type": text(step.get("type")) or "undefined",
            "metadata": self.json_text(metadata if isinstance(metadata, dict) else {}),
            # Without NUL on PostgreSQL, whose text[] refuses it (the stash keeps it).
            "tags": [self.name_text(str(t)) for t in tags]
            if isinstance(tags, list) and self.can_bind_lists
            else None,
            # As the layer writes it: str(value).lower() ("true", "false", "json", ...).
            "showInput": str(show).lower() if isinstance(show, bool) else text(show),
            "indent": int_column(_int(step.get("indent")), bits=self.int_bits),
        }
        for key in _STEP_BOOLS:
            row[key] = _bool(step.get(key))
        row["streaming"] = bool(row["streaming"])  # NOT NULL in the schema
        for key in _STEP_TEXT:
            row[key] = text(step.get(key))
        for key in _STEP_JSON:
            row[key] = self.json_text(step.get(key))
        return {k: v for k, v in row.items() if self.has("steps", k)}

    @staticmethod
    def step_plain(row: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """What a step row's columns say, in ``StepDict`` terms, and its stash."""
        metadata = _json(row.get("metadata"))
        metadata = metadata if isinstance(metadata, dict) else {}
        stash = metadata.pop(STASH, None) if STASH in metadata else None
        step: dict[str, Any] = {
            "id": str(row["id"]),
            "threadId": str(row["threadId"]),
            "name": row.get("name"),
            "type": row.get("type"),
            "metadata": metadata,
        }
        if row.get("parentId") is not None:
            step["parentId"] = str(row["parentId"])
        for key in _STEP_TEXT:
            if row.get(key) is not None:
                step[key] = row[key]
        for key in _STEP_BOOLS:
            value = _bool(row.get(key))
            if value is not None:
                step[key] = value
        for key in _STEP_JSON:
            value = _json(row.get(key))
            if value is not None:
                step[key] = value
        tags = _tags(row.get("tags"))
        if tags is not None:
            step["tags"] = tags
        indent = _int(row.get("indent"))
        if indent is not None:
            step["indent"] = indent
        show = row.get("showInput")
        if isinstance(show, str):
            step["showInput"] = {"true": True, "false": False}.get(show, show)
        return step, stash if isinstance(stash, dict) else {}

    def step_row(self, step: dict[str, Any], thread_id: str) -> dict[str, Any]:
        """The columns, with what they cannot say kept in the metadata's stash."""
        cols = self.step_columns(step, thread_id)
        plain, _ = self.step_plain(cols)
        original = dict(step)
        original["threadId"] = thread_id
        stash = make_stash(original, plain, ignored=_NOT_STASHED, none_is_absent=True)
        if stash:
            metadata = _json(cols["metadata"]) if "metadata" in cols else {}
            cols["metadata"] = self.json_text({**metadata, STASH: stash})
        return cols

    def step_read(self, row: dict[str, Any]) -> dict[str, Any]:
        plain, stash = self.step_plain(row)
        thread_id = plain["threadId"]

        def consistent(candidate: dict[str, Any]) -> bool:
            return self.step_plain(self.step_columns(candidate, thread_id))[0] == plain

        return apply_stash(plain, stash, consistent)

    # elements

    def element_row(self, el: dict[str, Any], thread_id: str) -> dict[str, Any]:
        row: dict[str, Any] = {
            "id": el["id"],
            "threadId": thread_id,
            "name": text(el.get("name")) or "",
            "forId": el.get("forId") if isinstance(el.get("forId"), str) else None,
            "page": int_column(_int(el.get("page")), bits=self.int_bits),
            "autoPlay": _bool(el.get("autoPlay")),
        }
        for key in _ELEMENT_TEXT:
            row[key] = text(el.get(key))
        for key in _ELEMENT_JSON:
            row[key] = self.json_text(el.get(key))
        return {k: v for k, v in row.items() if self.has("elements", k)}

    @staticmethod
    def element_read(row: dict[str, Any]) -> dict[str, Any]:
        el: dict[str, Any] = {"id": str(row["id"]), "name": row.get("name")}
        if row.get("forId") is not None:
            el["forId"] = str(row["forId"])
        for key in _ELEMENT_TEXT:
            if row.get(key) is not None:
                el[key] = row[key]
        for key in _ELEMENT_JSON:
            value = _json(row.get(key))
            if value is not None:
                el[key] = value
        page = _int(row.get("page"))
        if page is not None:
            el["page"] = page
        auto = _bool(row.get("autoPlay"))
        if auto is not None:
            el["autoPlay"] = auto
        return el

    def element_projection(self, el: dict[str, Any], thread_id: str) -> dict[str, Any]:
        return self.element_read(self.element_row(el, thread_id))

    # feedback

    @staticmethod
    def feedback_read(row: dict[str, Any]) -> dict[str, Any]:
        value = row.get("value")
        return {
            "id": str(row["id"]),
            "forId": str(row["forId"]),
            "value": int(value) if value in (0, 1) else value,  # 0.6 is no thumbs down
            "comment": row.get("comment"),
        }


_NOT_STASHED = journal.READ_ONLY_STEP_FIELDS | {"threadId"}
"""Never in a step's stash: the fields readers add, which are not part of a stored step
(its feedback, and ``streaming``, which the schema requires and the layer writes anyway),
and the thread, which the row's own column says."""


def _json(raw: Any) -> Any:
    """A JSON column as the value it holds: the layer writes JSON text, which a JSONB
    column may keep as a JSON string, and SQLite hands text back."""
    return json_value(raw, layers=3)
