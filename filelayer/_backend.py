"""The one place where the fast path or the standard-library path is chosen.

The choice is made once, at import: ``FILELAYER_PURE=1`` (or any optional package
missing) selects the standard library for everything, so that both modes are easy to
test and never mixed within one process. Files written in either mode are
byte-identical, because encoding is always done by the standard library (see _codec).
"""

from __future__ import annotations

import importlib.util
import os

_OPTIONAL = ("orjson", "aiofiles", "filelock")


def _pure_requested() -> bool:
    return os.environ.get("FILELAYER_PURE", "").strip().lower() not in ("", "0", "false", "no")


def _all_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in _OPTIONAL)


PURE: bool = _pure_requested() or not _all_available()
"""True when only the standard library is used."""

MODE: str = "pure" if PURE else "fast"
"""``"fast"`` (orjson, aiofiles, filelock) or ``"pure"`` (standard library only)."""
