"""The HTTP route that serves stored element files back to Chainlit's UI.

On resume the frontend loads every element from its ``url``: the live session's file is
gone by then. This module adds ``GET {root_path}/filelayer/elements/{thread}/{element}``
to Chainlit's own FastAPI app, ahead of Chainlit's catch-all route (which would
otherwise shadow it, Chainlit #1819), and answers only the thread's author, or anyone
when the thread is shared the way Chainlit shares threads. A refusal never tells
whether the thread exists.
"""

from __future__ import annotations

import email.utils
import logging
import mimetypes
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException, Request
from starlette.responses import FileResponse, Response

if TYPE_CHECKING:
    from .datalayer import FileDataLayer

log = logging.getLogger("filelayer")

ROUTE_NAME = "filelayer_element"
ROUTE_SUFFIX = "/filelayer/elements/{thread_id}/{element_id}"

# Served inline only when a browser cannot run script from them.
_INLINE_PREFIXES = ("image/", "audio/", "video/")
_INLINE_TYPES = frozenset(["application/pdf", "text/plain", "application/json", "text/csv"])
_SCRIPTABLE = frozenset(["image/svg+xml", "text/html", "application/xhtml+xml", "text/xml"])

_current: list[FileDataLayer] = []


def install(layer: FileDataLayer) -> Callable[[str, str], str]:
    """Route requests to ``layer`` and return the URL builder for its elements.

    The route is added once per process; a later data layer replaces the earlier one
    (Chainlit builds its data layer once, tests build many).
    """
    _current[:] = [layer]
    root_path = _add_route()
    prefix = (root_path or "").rstrip("/")

    def element_url(thread_id: str, element_id: str) -> str:
        return f"{prefix}/filelayer/elements/{thread_id}/{element_id}"

    return element_url


def _add_route() -> str:
    """Register the route on Chainlit's app if Chainlit's server is loaded."""
    server: Any = sys.modules.get("chainlit.server")
    if server is None:
        # Chainlit builds the data layer from inside its server, so this happens only
        # when the layer is used outside a running app (scripts, tests): URLs are still
        # given, and the route is added when the server module is imported later.
        try:
            import chainlit.server as server
        except Exception as exc:  # pragma: no cover - depends on the environment
            log.debug("filelayer: Chainlit server not available, no element route: %s", exc)
            return ""
    from chainlit.config import config

    app = server.app
    root_path = str(getattr(config.run, "root_path", "") or "")
    if any(getattr(r, "name", None) == ROUTE_NAME for r in app.router.routes):
        return root_path
    app.add_api_route(
        root_path + ROUTE_SUFFIX, _serve_element, methods=["GET", "HEAD"], name=ROUTE_NAME
    )
    routes = app.router.routes
    ours = routes.pop()
    first_shadow = next((i for i, r in enumerate(routes) if _has_catch_all(r)), len(routes))
    routes.insert(first_shadow, ours)
    return root_path


def _has_catch_all(route: Any) -> bool:
    """Whether a route (or a router included as one entry, as recent FastAPI does)
    holds a ``{...:path}`` route that would answer our URL first."""
    if str(getattr(route, "path", "")).endswith(":path}"):
        return True
    inner = getattr(route, "routes", None)
    for holder in ("router", "original_router"):  # a Mount; FastAPI's included router
        if inner is None and getattr(route, holder, None) is not None:
            inner = getattr(getattr(route, holder), "routes", None)
    return any(_has_catch_all(r) for r in inner or ())


async def _current_user(request: Request) -> Any:
    """Chainlit's own authentication: its cookie, or an ``Authorization`` header."""
    from chainlit.auth import authenticate_user, reuseable_oauth

    token = await reuseable_oauth(request)
    if not token:
        return None
    return await authenticate_user(token)


async def _serve_element(request: Request, thread_id: str, element_id: str) -> Response:
    from chainlit.auth import require_login
    from starlette.responses import Response

    if not _current:
        raise HTTPException(status_code=404, detail="Not found")
    layer = _current[0]
    login_required = bool(require_login())  # type: ignore[no-untyped-call]
    user = await _current_user(request) if login_required else None
    denied = HTTPException(
        status_code=401 if (login_required and user is None) else 404, detail="Not found"
    )

    found = layer.store.element_file(thread_id, element_id)
    if found is None:
        raise denied
    if login_required:
        author = layer.store.thread_author(thread_id)
        is_author = user is not None and bool(author) and author == user.identifier
        if not is_author and not await _is_shared_with(layer, thread_id, user):
            raise denied

    record, path = found
    mime = str(record.get("mime") or "") or (
        mimetypes.guess_type(str(record.get("name") or path.name))[0] or "application/octet-stream"
    )
    etag = f'"{record["sha256"]}"' if isinstance(record.get("sha256"), str) else None
    headers = {
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, max-age=0, must-revalidate",
    }
    if mime in _SCRIPTABLE:
        headers["Content-Security-Policy"] = "sandbox"
    if etag:
        headers["ETag"] = etag
        if _etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
    if_modified_since = request.headers.get("if-modified-since")
    if if_modified_since and not request.headers.get("if-none-match"):
        since = (
            email.utils.parsedate_to_datetime(if_modified_since)
            if _is_http_date(if_modified_since)
            else None
        )
        if since is not None and int(path.stat().st_mtime) <= since.timestamp():
            return Response(status_code=304, headers=headers)
    inline = (mime.startswith(_INLINE_PREFIXES) and mime not in _SCRIPTABLE) or (
        mime in _INLINE_TYPES
    )
    return FileResponse(
        path,
        media_type=mime,
        filename=_download_name(record, path.name),
        content_disposition_type="inline" if inline else "attachment",
        headers=headers,
    )


async def _is_shared_with(layer: FileDataLayer, thread_id: str, user: Any) -> bool:
    from chainlit.config import config

    thread = await layer.get_thread(thread_id)
    if thread is None:
        return False
    metadata = thread.get("metadata") or {}
    if isinstance(metadata, dict) and metadata.get("is_shared"):
        return True
    hook = getattr(config.code, "on_shared_thread_view", None)
    if hook is None:
        return False
    try:
        return bool(await hook(thread, user))
    except Exception:
        return False


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    candidates = [c.strip().removeprefix("W/") for c in header.split(",")]
    return etag in candidates


def _is_http_date(value: str) -> bool:
    try:
        return email.utils.parsedate_to_datetime(value) is not None
    except (TypeError, ValueError):
        return False


def _download_name(record: dict[str, Any], fallback: str) -> str:
    """The original file name, reduced to what is safe in a header."""
    name = str(record.get("name") or "") or fallback
    name = "".join(ch for ch in name if ch.isprintable() and ch not in '"\\/\r\n')
    name = name.strip().lstrip(".") or fallback
    return name[:200]
