"""The answer to a permitted element request: which file, and the headers it goes with.

What is sent: the stored type (cleaned up, never trusted as a header), a
``Content-Disposition`` with the original file name in both the plain and the RFC 6266
``filename*`` form, ``inline`` only for types a browser cannot run script from
(``attachment`` plus a ``sandbox`` policy for everything else: an uploaded HTML or SVG
file must not run in the app's origin), ``ETag``/``Last-Modified`` with ``304`` answers
to conditional requests, and byte ranges (``206``, Starlette's ``FileResponse``) for
audio and video seeking.

Where from: the path is built by the storage core from validated ids and the file name
it chose itself; :func:`contained` then resolves it and lets it be served only if the
real file sits directly in that thread's ``elements/`` directory under the real root, so
neither a hand-edited journal record nor a symbolic link can lead outside.

Nothing here decides who may read: :mod:`filelayer.chainlit.access` has done that
before any of this runs.
"""

from __future__ import annotations

import email.utils
import mimetypes
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from starlette.responses import FileResponse, Response

from ..format.layout import ELEMENTS_DIR, THREADS_DIR

# Shown by the browser itself when opened: types that cannot run script.
_INLINE_TYPES = frozenset(
    [
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/bmp",
        "image/x-icon",
        "image/vnd.microsoft.icon",
        "image/apng",
        "application/pdf",
        "text/plain",
        "text/csv",
        "application/json",
    ]
)
_INLINE_PREFIXES = ("audio/", "video/")
# Chrome's PDF viewer does not run in a sandboxed document; every other answer gets one.
_UNSANDBOXED = frozenset(["application/pdf"])
_MIME_RE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
_NAME_LIMIT = 200
_CACHE_CONTROL = "private, max-age=0, must-revalidate"


def contained(root: Path, thread_id: str, path: Path) -> Path | None:
    """The real path of an element file, if it lies directly in the thread's element
    directory under the real ``root`` (no link out, whatever the record says)."""
    try:
        real = path.resolve(strict=True)
        base = root.resolve(strict=True) / THREADS_DIR / thread_id / ELEMENTS_DIR
    except (OSError, RuntimeError):
        return None
    if real.parent != base or not real.is_file():
        return None
    return real


def file_response(
    request: Request, record: Mapping[str, Any], path: Path, stat: os.stat_result
) -> Response:
    """The element file at ``path`` (already :func:`contained`) as the browser gets it:
    a 304 to a matching conditional request, else the file with its headers."""
    mime = _content_type(record, path)
    etag = _etag(record, stat)
    headers = {
        "Cache-Control": _CACHE_CONTROL,
        "X-Content-Type-Options": "nosniff",
        "ETag": etag,
        "Last-Modified": email.utils.formatdate(stat.st_mtime, usegmt=True),
    }
    if mime not in _UNSANDBOXED:
        headers["Content-Security-Policy"] = "sandbox"
    if _not_modified(request.headers, etag, stat.st_mtime):
        return Response(status_code=304, headers=headers)
    headers["Content-Disposition"] = content_disposition(
        "inline" if _is_inline(mime) else "attachment", _download_name(record, path.name)
    )
    return FileResponse(path, media_type=mime, headers=headers, stat_result=stat)


def _content_type(record: Mapping[str, Any], path: Path) -> str:
    """The stored MIME type if it is a well-formed one, else a guess from the names.

    The type came from the app or from the uploading browser: it is reduced to
    ``type/subtype`` (no parameters, no header injection) before use.
    """
    stored = str(record.get("mime") or "").split(";", 1)[0].strip().lower()
    if _MIME_RE.fullmatch(stored):
        return stored
    for name in (str(record.get("name") or ""), path.name):
        guessed = mimetypes.guess_type(name)[0]
        if guessed and _MIME_RE.fullmatch(guessed.lower()):
            return guessed.lower()
    return "application/octet-stream"


def _is_inline(mime: str) -> bool:
    return mime in _INLINE_TYPES or mime.startswith(_INLINE_PREFIXES)


def _etag(record: Mapping[str, Any], stat: os.stat_result) -> str:
    """A strong validator: the content hash the layer recorded, plus size and time so
    that a file replaced by hand is never taken for the old one."""
    digest = record.get("sha256")
    head = f"{digest[:24]}-" if isinstance(digest, str) and digest.isalnum() else ""
    return f'"{head}{stat.st_size:x}-{stat.st_mtime_ns:x}"'


def _not_modified(headers: Mapping[str, str], etag: str, mtime: float) -> bool:
    """RFC 9110 section 13.2.2: ``If-None-Match`` decides when present (weak
    comparison), else ``If-Modified-Since`` (to the second)."""
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        if if_none_match.strip() == "*":
            return True
        tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
        return etag in tags
    if_modified_since = headers.get("if-modified-since")
    if not if_modified_since:
        return False
    try:
        since = email.utils.parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError, IndexError, OverflowError):  # junk is ignored (RFC 9110)
        return False
    if since.tzinfo is None:
        return False
    return int(mtime) <= since.timestamp()


def _download_name(record: Mapping[str, Any], fallback: str) -> str:
    """The original file name without anything that could act as a path or break a
    header: control characters, slashes, quotes; never hidden or empty."""
    name = str(record.get("name") or "")
    name = "".join(ch for ch in name if ch.isprintable() and ch not in '"\\/;')
    name = name.strip().lstrip(".").strip()
    return name[:_NAME_LIMIT] or fallback


def content_disposition(kind: str, name: str) -> str:
    """Both forms of RFC 6266: an ASCII ``filename`` for old clients and the exact name
    as UTF-8 in ``filename*``."""
    ascii_name = "".join(ch if " " <= ch <= "~" and ch not in '"\\%' else "_" for ch in name)
    encoded = quote(name, safe="!#$&+-.^_`|~")
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{encoded}"
