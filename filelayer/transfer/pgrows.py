"""Rows of Chainlit's official PostgreSQL schema <-> the copy's neutral shape.

The schema has fewer columns than Chainlit's step and element dicts (no step tags,
language, generation, ``defaultOpen``...), a ``StepType`` enum, a ``TEXT`` ``showInput``
and millisecond times; what a step's or an element's columns cannot say goes to the
stash (:mod:`~filelayer.transfer.stash`). Thread and user rows carry no stash (their
metadata belongs to the app: Chainlit restores a thread's metadata into the user
session), so their times keep milliseconds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .._time import format_time, parse_time, round_ms
from .stash import STASH, apply_stash, column_safe, int_column, json_value, make_stash, text

FEEDBACK_NAME = "user_feedback"
EPOCH = datetime(1970, 1, 1)

STEP_COLUMNS = (
    "id",
    "threadId",
    "parentId",
    "input",
    "metadata",
    "name",
    "output",
    "type",
    "showInput",
    "isError",
    "createdAt",
    "startTime",
    "endTime",
)
ELEMENT_COLUMNS = (
    "id",
    "threadId",
    "stepId",
    "metadata",
    "mime",
    "name",
    "objectKey",
    "url",
    "chainlitKey",
    "display",
    "size",
    "language",
    "page",
    "props",
)


def _split_metadata(raw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A row's metadata without the stash, and the stash."""
    meta = json_value(raw, layers=1)
    if not isinstance(meta, dict):
        return {}, {}
    stash = meta.get(STASH)
    plain = {k: v for k, v in meta.items() if k != STASH}
    return plain, stash if isinstance(stash, dict) else {}


class StepCodec:
    """Steps <-> ``Step`` rows for one thread (its step ids and creation time matter:
    a parent must be in the thread, a step without a time takes the thread's)."""

    def __init__(self, step_types: frozenset[str], parents: set[str], thread_created: Any) -> None:
        self.step_types = step_types
        self.parents = parents
        self.fallback = round_ms(parse_time(thread_created) or EPOCH)

    def columns(self, step: dict[str, Any], thread_id: str) -> dict[str, Any]:
        created = parse_time(step.get("createdAt")) or parse_time(step.get("start"))
        created = created or self.fallback
        start = parse_time(step.get("start")) or created
        end = parse_time(step.get("end")) or start
        kind = step.get("type")
        show = step.get("showInput")
        parent = step.get("parentId")
        metadata = step.get("metadata")
        is_error = step.get("isError")
        return {
            "id": step["id"],
            "threadId": thread_id,
            # Chainlit's UI drops a step whose parent it has not seen: only a parent
            # present in the thread becomes a foreign key; any other is stashed.
            "parentId": parent
            if isinstance(parent, str) and parent in self.parents and parent != step["id"]
            else None,
            "input": text(step.get("input")),
            # The stash's key is the copy's: an app's own key of that name goes to the
            # stash with the rest of its metadata, and is read back from there.
            "metadata": column_safe({k: v for k, v in metadata.items() if k != STASH})
            if isinstance(metadata, dict)
            else {},
            "name": text(step.get("name")),
            "output": text(step.get("output")),
            "type": kind if isinstance(kind, str) and kind in self.step_types else "undefined",
            # TEXT column: a language or "json" shows the input, NULL hides it (the
            # strings "True"/"False" would both read as truthy in Chainlit's UI).
            "showInput": show if isinstance(show, str) else ("json" if show is True else None),
            "isError": is_error if isinstance(is_error, bool) else False,
            "createdAt": round_ms(created),
            "startTime": round_ms(start),
            "endTime": round_ms(end),
        }

    @staticmethod
    def plain(cols: dict[str, Any]) -> dict[str, Any]:
        """What the columns alone say, in Chainlit's ``StepDict`` terms."""
        step: dict[str, Any] = {
            "id": cols["id"],
            "threadId": cols["threadId"],
            "type": cols["type"],
            "metadata": cols["metadata"],
            "createdAt": format_time(cols["createdAt"]),
            "start": format_time(cols["startTime"]),
            "end": format_time(cols["endTime"]),
        }
        for key in ("parentId", "name", "input", "output", "showInput", "isError"):
            if cols.get(key) is not None:
                step[key] = cols[key]
        return step

    def row_values(self, step: dict[str, Any], thread_id: str) -> dict[str, Any]:
        """The columns to write, with the stash in the metadata when one is needed."""
        cols = self.columns(step, thread_id)
        stash = make_stash(step, self.plain(cols))
        if stash:
            cols["metadata"] = {**cols["metadata"], STASH: stash}
        return cols

    def read(self, row: dict[str, Any]) -> dict[str, Any]:
        metadata, stash = _split_metadata(row["metadata"])
        cols = {k: row.get(k) for k in STEP_COLUMNS}
        cols["metadata"] = metadata
        cols["type"] = str(cols["type"])
        for key in ("createdAt", "startTime", "endTime"):
            cols[key] = cols[key] or self.fallback
        thread_id = str(cols["threadId"])

        def consistent(candidate: dict[str, Any]) -> bool:
            return self.columns(candidate, thread_id) == cols

        return apply_stash(self.plain(cols), stash, consistent)


def element_columns(el: dict[str, Any], thread_id: str, object_key: str | None) -> dict[str, Any]:
    page = el.get("page")
    props = el.get("props")
    return {
        "id": el["id"],
        "threadId": thread_id,
        "stepId": el.get("forId"),
        # What Chainlit's own layer keeps there; its reader takes the type from it.
        "metadata": column_safe(
            {
                "type": el.get("type"),
                "size": el.get("size"),
                "language": el.get("language"),
                "display": el.get("display"),
                "page": page,
            }
        ),
        "mime": text(el.get("mime")),
        "name": text(el.get("name")) or "",
        "objectKey": object_key,
        "url": text(el.get("url")),
        "chainlitKey": text(el.get("chainlitKey")),
        "display": text(el.get("display")),
        "size": text(el.get("size")),
        "language": text(el.get("language")),
        "page": int_column(page),
        "props": column_safe(props) if isinstance(props, dict) else None,
    }


def element_plain(cols: dict[str, Any]) -> dict[str, Any]:
    meta = cols["metadata"]
    el: dict[str, Any] = {
        "id": cols["id"],
        "type": meta.get("type") or "file",
        "forId": cols["stepId"],
        "name": cols["name"],
    }
    for key in ("mime", "objectKey", "url", "chainlitKey", "display", "size", "language"):
        if cols.get(key) is not None:
            el[key] = cols[key]
    if cols.get("page") is not None:
        el["page"] = cols["page"]
    if cols.get("props") is not None:
        el["props"] = cols["props"]
    return el


def element_row_values(
    el: dict[str, Any],
    thread_id: str,
    uploaded: tuple[str, str, int] | None,
) -> dict[str, Any]:
    """Columns and stash of an element; ``uploaded`` is (object key, sha256, size)."""
    key = uploaded[0] if uploaded else text(el.get("objectKey"))
    cols = element_columns(el, thread_id, key)
    stash = make_stash(el, element_plain(cols))
    if uploaded:
        stash.update({"uploaded": True, "sha256": uploaded[1], "bytes": uploaded[2]})
    if stash:
        cols["metadata"] = {**cols["metadata"], STASH: stash}
    return cols


def element_read(row: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An element row as ``ElementDict`` fields, and its stash."""
    metadata, stash = _split_metadata(row["metadata"])
    cols = {k: row.get(k) for k in ELEMENT_COLUMNS}
    cols["metadata"] = metadata
    props = json_value(cols["props"], layers=1)
    cols["props"] = props if isinstance(props, dict) else None
    uploaded = bool(stash.get("uploaded"))

    def consistent(candidate: dict[str, Any]) -> bool:
        key = cols["objectKey"] if uploaded else text(candidate.get("objectKey"))
        return element_columns(candidate, str(cols["threadId"]), key) == cols

    return apply_stash(element_plain(cols), stash, consistent), stash


def thread_plain(row: dict[str, Any]) -> dict[str, Any]:
    metadata = json_value(row["metadata"], layers=1)
    tags = row.get("tags")
    return {
        "id": row["id"],
        "name": row.get("name"),
        "userId": row.get("userId"),
        "userIdentifier": row.get("userIdentifier"),
        "tags": list(tags) if tags is not None else None,
        "metadata": metadata if isinstance(metadata, dict) else {},
        "createdAt": format_time(row["createdAt"]),
        "updatedAt": format_time(row["updatedAt"]),
    }


def user_plain(row: dict[str, Any]) -> dict[str, Any]:
    metadata = json_value(row["metadata"], layers=1)
    return {
        "id": row["id"],
        "identifier": row["identifier"],
        "displayName": None,
        "metadata": metadata if isinstance(metadata, dict) else {},
        "createdAt": format_time(row["createdAt"]),
    }


def feedback_plain(row: dict[str, Any]) -> dict[str, Any]:
    value = row["value"]
    return {
        "id": row["id"],
        "forId": row["stepId"],
        "value": int(value) if value in (0, 1) else value,
        "comment": row.get("comment"),
    }


def ts(value: Any) -> datetime:
    """A time for a ``TIMESTAMP(3)`` column, rounded as the column would store it."""
    return round_ms(parse_time(value) or EPOCH)
