"""Users: one small JSON file each under ``users/``.

A user identifier can be any string (an e-mail address, a name in any script, a very
long SSO subject), so it never becomes a path as it is: the file name is a readable slug
of it plus a hash, and the identifier itself lives inside the file.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

from .._io import fs as _fs
from ..errors import CorruptFileError, InvalidValueError
from . import codec as _codec
from .ids import slug
from .manifest import UNKNOWN_AUTHOR

_ID_NAMESPACE = uuid.UUID("5b0f3f4e-8a55-5e0c-9d4c-6c1a3a7f1e2d")
"""The namespace of user ids derived from identifiers (fixed: changing it would give a
person who logs in again another id)."""


def user_id(identifier: str) -> str:
    """The id of the user ``identifier``: a name-based UUID (version 5, RFC 4122) of it,
    so that the same person gets the same id in every clone of an archive and the
    index, keyed by user id, keeps their threads together after a git merge. Users
    created before this keep the random id their file holds."""
    digest = hashlib.sha1(  # the UUID version 5 algorithm, not a security use
        _ID_NAMESPACE.bytes + identifier.encode("utf-8", "surrogatepass")
    ).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


def file_name(identifier: str) -> str:
    """A safe, stable, readable file name for ``identifier``."""
    readable = slug(identifier, 40, "user")
    digest = hashlib.sha256(identifier.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{readable}-{digest}.json"


def read(path: Path) -> dict[str, Any] | None:
    """The user record at ``path``, ``None`` if there is none; damaged: CorruptFileError.
    A record whose id is the unknown author's (:data:`manifest.UNKNOWN_AUTHOR`) is
    damaged too: whoever held it would be handed every thread whose author was lost."""
    doc = _codec.read_document(path, ("id", "identifier"))
    if doc is not None and doc["id"] == UNKNOWN_AUTHOR:
        raise CorruptFileError(path, "its id is the unknown author's, which no user may have")
    return doc


def write(path: Path, user: dict[str, Any], *, durable: bool) -> None:
    if user["id"] == UNKNOWN_AUTHOR:
        raise InvalidValueError(
            "user id", f"{UNKNOWN_AUTHOR!r} is the id of no user: it names a lost author"
        )
    doc = {
        "id": user["id"],
        "identifier": user["identifier"],
        "displayName": user.get("displayName"),
        "metadata": user.get("metadata") or {},
        "createdAt": user["createdAt"],
    }
    _fs.atomic_write(path, _codec.encode_document(doc), durable=durable)
