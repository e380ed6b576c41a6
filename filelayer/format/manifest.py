"""The thread manifest: ``thread.json``, the thread's own fields.

It holds what ``update_thread`` sets (name, author, tags, metadata) plus the creation
time and the time of the last real change. It is rewritten atomically, and only when
something changed, so a chat turn (which only appends to the journal) leaves it alone
and a git diff of that turn touches the journal alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._io import fs as _fs
from . import codec as _codec

MANIFEST_NAME = "thread.json"

UNKNOWN_AUTHOR = "(unknown author)"
"""The ``userId`` of a thread whose author was lost and could not be recovered (its
manifest lost, and the index no longer holding it): ``verify --repair`` writes it into
the new manifest. No user has it (user ids are UUIDs, and a match is refused anyway:
see ``Authors.author_of``), so the thread is nobody's to write, as a thread whose
manifest cannot be read is, until the app gives it to its author; without it, the new
manifest would have no author, and a thread without one is everyone's to write."""

FIELDS = ("id", "name", "userId", "userIdentifier", "tags", "metadata", "createdAt", "updatedAt")


def new(thread_id: str, now: str) -> dict[str, Any]:
    return {
        "id": thread_id,
        "name": None,
        "userId": None,
        "userIdentifier": None,
        "tags": None,
        "metadata": {},
        "createdAt": now,
        "updatedAt": now,
    }


def read(path: Path) -> dict[str, Any] | None:
    """The manifest at ``path``, ``None`` if there is none; damaged: CorruptFileError."""
    return _codec.read_document(path, ("id",))


def encode(manifest: dict[str, Any]) -> bytes:
    """The file's bytes; ``ValueError`` for what JSON cannot hold (checked before any
    directory is made, so a refused thread leaves nothing behind)."""
    return _codec.encode_document({key: manifest.get(key) for key in FIELDS})


def write(
    path: Path,
    manifest: dict[str, Any],
    *,
    durable: bool = True,
    changes: _fs.Changes | None = None,
) -> None:
    write_encoded(path, encode(manifest), durable=durable, changes=changes)


def write_encoded(
    path: Path, data: bytes, *, durable: bool = True, changes: _fs.Changes | None = None
) -> None:
    """Write a manifest already encoded by :func:`encode`."""
    _fs.atomic_write(path, data, durable=durable, changes=changes)


def merge_metadata(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Chainlit's rule: merged key by key; a key set to ``None`` is removed."""
    merged = {k: v for k, v in base.items() if not (k in update and update[k] is None)}
    merged.update({k: v for k, v in update.items() if v is not None})
    return merged
