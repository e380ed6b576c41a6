"""Validation of ids before they become part of a path.

Thread, step, element and feedback ids come from the network. A valid id is a single,
portable path component: it can never name a parent directory, an absolute path, a
device on Windows, or a hidden file of ours.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from ..errors import InvalidIdError

MAX_ID_LENGTH = 128

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"COM{i}" for i in range(10)]
    + [f"LPT{i}" for i in range(10)]
)


def id_problem(value: object) -> str | None:
    """Say why ``value`` is not a valid id, or ``None`` when it is."""
    if not isinstance(value, str):
        return f"expected a string, got {type(value).__name__}"
    if not value:
        return "it is empty"
    if len(value) > MAX_ID_LENGTH:
        return f"it is longer than {MAX_ID_LENGTH} characters"
    if not _ID_RE.fullmatch(value):
        return "it contains a character that is not allowed in a path component"
    if value.endswith("."):
        return "it ends with '.'"
    if value.split(".", 1)[0].upper() in _WINDOWS_RESERVED:
        return "it is a reserved device name on Windows"
    return None


def is_valid_id(value: object) -> bool:
    return id_problem(value) is None


def case_twin(value: str, names: Iterable[str]) -> str | None:
    """The one of ``names`` that differs from ``value`` only in letter case, if any.

    Thread ids name directories and element ids files: on a file system that ignores
    case (macOS's and Windows' by default) ``T1`` and ``t1`` are one directory, so a new
    id that differs from an existing one only in case is refused (docs/format.md,
    "Ids"), on every system, so that an archive stays whole wherever it is cloned."""
    folded = value.lower()
    return next((n for n in names if n != value and n.lower() == folded), None)


def refuse_case_twin(kind: str, value: str, twin: str | None) -> None:
    """:class:`InvalidIdError` naming ``twin`` (see :func:`case_twin`) if there is one."""
    if twin is not None:
        raise InvalidIdError(
            kind,
            value,
            f"{kind} {twin!r} has the same id but for letter case, and a file system that "
            "ignores case (macOS's, Windows') keeps both in one place; nothing was written",
        )


def check_id(kind: str, value: object) -> str:
    """Return ``value`` if it is a valid id, else raise :class:`InvalidIdError`."""
    problem = id_problem(value)
    if problem is not None:
        raise InvalidIdError(kind, value, problem)
    assert isinstance(value, str)
    return value


_SLUG_RE = re.compile(r"[^a-z0-9]+")


def slug(text: str, limit: int, fallback: str) -> str:
    """``text`` as lowercase ASCII words joined by ``-``, at most ``limit`` characters
    (``fallback`` when nothing is left): readable in a file name on any file system.
    User files and exported threads are named with it."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _SLUG_RE.sub("-", ascii_text.lower()).strip("-")[:limit].strip("-") or fallback
