"""The index's record vocabulary: what a write tells the index.

Each record states a value (never a change), so applying one twice, or applying an
older one again after a newer one was rebuilt, gives the same index. The store builds
them from what it wrote; the index applies them; the benchmark builds archives with them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import _time as _times

DEFAULT_SEARCH_CHARS = 2000
"""How much of each message the index keeps for search (characters)."""


# -- records ------------------------------------------------------------------------------
# The vocabulary of writes: each states a value (never a change), so applying one twice,
# or applying an older one again after a newer one was rebuilt, gives the same index.


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
    return {
        "k": "t",
        "id": thread_id,
        "user": user_id,
        "ident": user_identifier,
        "name": name,
        "created": created_at,
        "updated": updated_at,
        "tags": tags,
    }


def manifest_record(manifest: Mapping[str, Any], user_id: str | None) -> dict[str, Any]:
    """The thread record of a thread's manifest (what the index keeps of it). The owner
    is ``user_id``, not the manifest's ``userId``: the store resolves which id the
    owner's user file gives it on this archive (``ArchiveStore.owner_id``)."""
    return thread_record(
        manifest["id"],
        user_id=user_id,
        user_identifier=manifest.get("userIdentifier"),
        name=manifest.get("name"),
        created_at=index_time(manifest.get("createdAt")),
        updated_at=manifest.get("updatedAt") or "",
        tags=manifest.get("tags"),
    )


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


def searchable(text: str) -> str:
    """The form in which the index keeps and compares text: case-folded, so that a
    search for ``STRASSE`` finds ``Straße``."""
    return text.casefold()


def index_time(value: object) -> str:
    """A time as the index keeps it (see :func:`filelayer._time.canonical`): the
    index compares its times as strings, so they must all have one form."""
    return _times.canonical(value) if isinstance(value, str) else ""
