"""The HTTP route that serves stored element files back to Chainlit's UI.

(The export route beside it, ``{root_path}/filelayer/export/{thread}``, is in
:mod:`filelayer.chainlit.export_route`, which registers it here with :func:`add_route`:
it builds on this module, so this module does not import it.)

On resume the frontend loads every element from its ``url``: the live session's file is
gone by then. This module adds ``GET {root_path}/filelayer/elements/{thread}/{element}``
to Chainlit's own FastAPI app, ahead of Chainlit's catch-all route (which would
otherwise answer first with the UI's HTML page, Chainlit #1819).

Who may read: the thread's author, authenticated the way Chainlit authenticates every
request (its ``access_token`` cookie, or an ``Authorization: Bearer`` header), or any
logged-in user when the thread is shared the way Chainlit shares threads
(``metadata.is_shared``, or the app's ``on_shared_thread_view``); in an app without login,
anyone. Everyone else gets 401 (not logged in) or 404 (logged in), and the answer is the
same whether the thread exists or not, so ids cannot be probed. The permission check
comes before any look at the element, so neither a missing element nor a damaged
journal tells a stranger anything.

Who is calling: Chainlit's plain HTTP routes (``/feedback``) call the data layer with
no Chainlit context for the caller. A small ASGI middleware keeps the request being
served in a context variable, and :func:`request_user` authenticates it (once per
request, only when a write asks) the same way as the element route, so the data layer
can refuse a write to a thread its caller did not write.

What is sent: the stored type (cleaned up, never trusted as a header), a
``Content-Disposition`` with the original file name in both the plain and the RFC 6266
``filename*`` form, ``inline`` only for types a browser cannot run script from
(``attachment`` plus a ``sandbox`` policy for everything else: an uploaded HTML or SVG
file must not run in the app's origin), ``ETag``/``Last-Modified`` with ``304`` answers
to conditional requests, and byte ranges (``206``) for audio and video seeking.

Where from: the path is built by the storage core from validated ids and the file name
it chose itself; this module then resolves it and serves it only if the real file sits
directly in that thread's ``elements/`` directory under the real root, so neither a
hand-edited journal record nor a symbolic link can lead outside.
"""

from __future__ import annotations

import email.utils
import json
import logging
import mimetypes
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fastapi import HTTPException, Request
from starlette.responses import FileResponse, JSONResponse, Response

from ..errors import NotAuthorError
from ..format.ids import is_valid_id
from ..format.layout import ELEMENTS_DIR, THREADS_DIR

if TYPE_CHECKING:
    from ..store.archive import ArchiveStore
    from .offload import Offload

log = logging.getLogger("filelayer")

ROUTE_NAME = "filelayer_element"
REFUSE_NAME = "filelayer_element_refused"
ROUTE_PREFIX = "/filelayer/elements"
ROUTE_SUFFIX = ROUTE_PREFIX + "/{thread_id}/{element_id}"
# Anything else under our prefix (extra segments, "..", encoded slashes) is ours to
# refuse: left to Chainlit's catch-all it would get the UI's page with a 200.
REFUSE_SUFFIX = ROUTE_PREFIX + "/{rest:path}"

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


@dataclass(frozen=True)
class ElementSource:
    """What the route needs from a data layer: its store, the offload its store calls go
    through (so the route never blocks the event loop either), and ``get_thread`` (the
    shared-thread check hands Chainlit's own callback the thread as the layer shapes it).

    The route depends on these three, not on the data layer, so the adapter imports the
    route and never the other way round.
    """

    store: ArchiveStore
    calls: Offload
    get_thread: Callable[[str], Awaitable[Any]]


_current: list[ElementSource] = []


@dataclass(frozen=True)
class ExtraRoute:
    """A route added to Chainlit's app with the element route (under the same prefix,
    ahead of Chainlit's catch-all)."""

    name: str
    suffix: str
    endpoint: Callable[..., Awaitable[Response]]
    methods: tuple[str, ...]


_extra_routes: list[ExtraRoute] = []


def add_route(route: ExtraRoute) -> None:
    """Serve ``route`` too, from the next :func:`install` on (a route of the same name
    is replaced)."""
    _extra_routes[:] = [r for r in _extra_routes if r.name != route.name] + [route]


_Scope = MutableMapping[str, Any]
_Asgi = Callable[[_Scope, Any, Any], Awaitable[None]]
# The HTTP request being served (set by CallerMiddleware), for the data layer's writes.
_request: ContextVar[Request | None] = ContextVar("filelayer_request", default=None)
_USER_KEY = "filelayer_user"


def install(source: ElementSource) -> Callable[[str, str], str]:
    """Route requests to ``source`` and return the URL builder for its elements.

    The routes are added once per process; a later data layer replaces the earlier one
    (Chainlit builds its data layer once, tests build many).
    """
    _current[:] = [source]
    _add_routes()
    return element_url


class CallerMiddleware:
    """Keep the HTTP request being served where the data layer can find its caller.

    Nothing is authenticated here: :func:`request_user` does it when a write needs to
    know who asks, so serving Chainlit's page and assets costs one context-variable set.

    One route is also guarded up front: Chainlit's ``PUT``/``DELETE /project/element``
    answers before the data layer runs (the write is a background task, or queued until
    the session's first message), so a refusal there could never reach the client. A
    request naming another user's thread is answered 403 here, by the store's own rule;
    the store still refuses the write itself if the request gets through some other way.
    """

    def __init__(self, app: _Asgi) -> None:
        self.app = app

    async def __call__(self, scope: _Scope, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        token = _request.set(request)
        try:
            if _is_element_update(scope):
                body = await _read_body(receive)
                refusal = await _element_refusal(request, body)
                if refusal is not None:
                    await refusal(scope, receive, send)
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send)
        finally:
            _request.reset(token)


def _is_element_update(scope: _Scope) -> bool:
    path = str(scope.get("path", ""))
    return scope.get("method") in ("PUT", "DELETE") and path.endswith("/project/element")


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message.get("type") != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that gives the body read already, then whatever follows."""
    sent = False

    async def replay() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _element_refusal(request: Request, body: bytes) -> Response | None:
    """403 when a logged-in user's element request names a thread another user wrote."""
    source = _current[0] if _current else None
    try:
        element = json.loads(body).get("element") or {}
        thread_id = element.get("threadId")
    except (ValueError, AttributeError):
        return None  # Chainlit answers a malformed body itself
    if source is None or not isinstance(thread_id, str) or not is_valid_id(thread_id):
        return None
    identifier = getattr(await _current_user(request), "identifier", None)
    if not isinstance(identifier, str):
        return None
    try:
        await source.calls.read(source.store.authorize, thread_id, identifier)
    except NotAuthorError as exc:
        return JSONResponse(
            {"detail": str(exc)}, status_code=403, headers={"Cache-Control": "no-store"}
        )
    return None


@contextmanager
def serving(request: Request | None) -> Iterator[None]:
    """Treat ``request`` as the request being served (what the middleware does; for
    callers that drive the data layer from their own routes, and for tests)."""
    token = _request.set(request)
    try:
        yield
    finally:
        _request.reset(token)


async def request_user() -> Any:
    """The logged-in user of the HTTP request being served; ``None`` when no request is
    being served, or its visitor is anonymous (no token, or a bad one)."""
    request = _request.get()
    return None if request is None else await _current_user(request)


def _add_middleware(app: Any) -> None:
    """Add :class:`CallerMiddleware` to Chainlit's app, once.

    Chainlit builds its data layer on the first request that needs it, after Starlette
    has assembled the middleware stack, which cannot take a new member any more: the
    built stack is wrapped, and the middleware is listed so a rebuild keeps it.
    """
    from starlette.middleware import Middleware

    if any(m.cls is CallerMiddleware for m in app.user_middleware):
        return
    app.user_middleware.insert(0, Middleware(CallerMiddleware))
    if app.middleware_stack is not None:
        app.middleware_stack = CallerMiddleware(app.middleware_stack)


def element_url(thread_id: str, element_id: str) -> str:
    """The URL the browser loads a stored element from (computed at each call, so it
    follows the root path Chainlit runs under)."""
    thread, element = quote(thread_id, safe=""), quote(element_id, safe="")
    return f"{url_prefix()}{ROUTE_PREFIX}/{thread}/{element}"


def url_prefix() -> str:
    """The path under which the browser sees Chainlit: the prefix Chainlit puts in front
    of its own page's links (``--root-path``, or the mount path of ``mount_chainlit``
    under the parent app's root path)."""
    root = os.environ.get("CHAINLIT_ROOT_PATH")
    if root is None:
        config_module: Any = sys.modules.get("chainlit.config")
        run = getattr(getattr(config_module, "config", None), "run", None)
        root = str(getattr(run, "root_path", "") or "")
    return (os.environ.get("CHAINLIT_PARENT_ROOT_PATH", "") + root).rstrip("/")


def _chainlit_server() -> Any:
    """Chainlit's server module, or ``None`` where it cannot be imported."""
    server: Any = sys.modules.get("chainlit.server")
    if server is None:
        # Chainlit builds the data layer from inside its server, so this happens only
        # when the layer is used outside a running app (scripts, tests).
        try:
            import chainlit.server as server
        except Exception as exc:  # pragma: no cover - depends on the environment
            log.debug("filelayer: Chainlit server not available: %s", exc)
            return None
    return server


def watch_callers(source: ElementSource | None = None) -> None:
    """Install :class:`CallerMiddleware` on Chainlit's app (once per process), for
    ``source`` when given (a later data layer replaces an earlier one, as in
    :func:`install`)."""
    if source is not None:
        _current[:] = [source]
    server = _chainlit_server()
    if server is not None:
        _add_middleware(server.app)


def _add_routes() -> None:
    """Register the routes on Chainlit's app, next to Chainlit's own routes."""
    server = _chainlit_server()
    if server is None:
        return
    app = server.app
    # The prefix Chainlit's own router was built with (its --root-path; empty when
    # mounted, where the mount adds the prefix).
    prefix = str(getattr(getattr(server, "router", None), "prefix", "") or "").rstrip("/")
    wanted = {
        ROUTE_NAME: prefix + ROUTE_SUFFIX,
        REFUSE_NAME: prefix + REFUSE_SUFFIX,
        **{extra.name: prefix + extra.suffix for extra in _extra_routes},
    }
    routes = app.router.routes
    present = [r for r in routes if getattr(r, "name", None) in wanted]
    if len(present) == len(wanted) and all(r.path == wanted[r.name] for r in present):
        return
    for route in present:
        routes.remove(route)
    app.add_api_route(
        wanted[ROUTE_NAME],
        _serve_element,
        methods=["GET", "HEAD"],
        name=ROUTE_NAME,
        include_in_schema=False,
    )
    app.add_api_route(
        wanted[REFUSE_NAME],
        _refuse_path,
        methods=["GET", "HEAD"],
        name=REFUSE_NAME,
        include_in_schema=False,
    )
    for extra in _extra_routes:
        app.add_api_route(
            wanted[extra.name],
            extra.endpoint,
            methods=list(extra.methods),
            name=extra.name,
            include_in_schema=False,
        )
    added = 2 + len(_extra_routes)
    ours = routes[-added:]
    del routes[-added:]
    first_shadow = next((i for i, r in enumerate(routes) if _has_catch_all(r)), len(routes))
    routes[first_shadow:first_shadow] = ours


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


# -- the request ---------------------------------------------------------------------


async def _serve_element(request: Request, thread_id: str, element_id: str) -> Response:
    login_required = _login_required()
    user = await _current_user(request) if login_required else None

    def refuse() -> Response:
        return _refusal(401 if login_required and user is None else 404)

    source = _current[0] if _current else None
    if source is None or not (is_valid_id(thread_id) and is_valid_id(element_id)):
        return refuse()
    manifest = await source.calls.read(source.store.read_manifest, thread_id)
    if manifest is None or not await _may_read(source, manifest, user, login_required):
        return refuse()

    # From here on the caller may know that the thread exists.
    found = await source.calls.read(source.store.element_file, thread_id, element_id)
    path = _contained(source, thread_id, found[1]) if found else None
    if found is None or path is None:
        if found is not None:
            log.warning(
                "filelayer: element %s of thread %s points outside its directory; refused",
                element_id,
                thread_id,
            )
        return _refusal(404)
    record = found[0]
    try:
        stat = path.stat()
    except OSError:
        return _refusal(404)

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
    headers["Content-Disposition"] = _content_disposition(
        "inline" if _is_inline(mime) else "attachment", _download_name(record, path.name)
    )
    return FileResponse(path, media_type=mime, headers=headers, stat_result=stat)


async def _refuse_path(request: Request, rest: str) -> Response:
    """Any other path under the prefix: no thread id and element id can be read from it."""
    return _refusal(404)


def _refusal(status: int) -> Response:
    if status == 401:
        return JSONResponse(
            {"detail": "Not authenticated"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer", "Cache-Control": "no-store"},
        )
    return JSONResponse(
        {"detail": "Not found"}, status_code=404, headers={"Cache-Control": "no-store"}
    )


def _login_required() -> bool:
    from chainlit.auth import require_login

    return bool(require_login())  # type: ignore[no-untyped-call]


async def _current_user(request: Request) -> Any:
    """Chainlit's own authentication: its cookie, or an ``Authorization`` header.

    A missing, expired or forged token is an anonymous visitor. The answer is kept with
    the request, so a request that writes several times is authenticated once.
    """
    state = request.scope.setdefault("state", {})
    if _USER_KEY in state:
        return state[_USER_KEY]
    from chainlit.auth import authenticate_user, reuseable_oauth

    user = None
    try:
        token = await reuseable_oauth(request)
        if token:
            user = await authenticate_user(token)
    except HTTPException:
        user = None
    state[_USER_KEY] = user
    return user


async def _may_read(
    source: ElementSource, manifest: Mapping[str, Any], user: Any, login_required: bool
) -> bool:
    """The author, or any logged-in user if the thread is shared (Chainlit's own share
    page answers 401 to anonymous visitors in an app with login); in an app without
    login, where threads have no author, a thread without an author is nobody's secret
    and a shared thread is anyone's to read."""
    author = str(manifest.get("userIdentifier") or "")
    identifier = getattr(user, "identifier", None)
    if author and identifier == author:
        return True
    if not login_required and not author:
        return True
    if login_required and user is None:
        return False
    return await _is_shared(source, manifest, user)


async def _is_shared(source: ElementSource, manifest: Mapping[str, Any], user: Any) -> bool:
    """Chainlit's own rule for ``/project/share/{id}``: ``metadata.is_shared``, or the
    app's ``on_shared_thread_view(thread, viewer)`` says yes."""
    metadata: Any = manifest.get("metadata") or {}
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            metadata = {}
    if isinstance(metadata, dict) and metadata.get("is_shared"):
        return True
    from chainlit.config import config

    hook = getattr(config.code, "on_shared_thread_view", None)
    if hook is None:
        return False
    thread = await source.get_thread(str(manifest.get("id") or ""))
    if thread is None:
        return False
    try:
        return bool(await hook(thread, user))
    except Exception as exc:
        log.warning("filelayer: on_shared_thread_view failed, access refused: %s", exc)
        return False


def _contained(source: ElementSource, thread_id: str, path: Path) -> Path | None:
    """The real path of an element file, if it lies directly in the thread's element
    directory under the real root (no link out, whatever the record says)."""
    try:
        real = path.resolve(strict=True)
        base = source.store.root.resolve(strict=True) / THREADS_DIR / thread_id / ELEMENTS_DIR
    except (OSError, RuntimeError):
        return None
    if real.parent != base or not real.is_file():
        return None
    return real


# -- headers ----------------------------------------------------------------------


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
    except (TypeError, ValueError, IndexError):
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


def _content_disposition(kind: str, name: str) -> str:
    """Both forms of RFC 6266: an ASCII ``filename`` for old clients and the exact name
    as UTF-8 in ``filename*``."""
    ascii_name = "".join(ch if " " <= ch <= "~" and ch not in '"\\%' else "_" for ch in name)
    encoded = quote(name, safe="!#$&+-.^_`|~")
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{encoded}"
