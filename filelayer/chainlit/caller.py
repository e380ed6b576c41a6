"""Who is calling: the HTTP request being served, for the data layer's writes.

Chainlit's plain HTTP routes (``/feedback``) call the data layer with no Chainlit
context for the caller. A small ASGI middleware keeps the request being served in a
context variable, and :func:`request_user` authenticates it (once per request, only
when a write asks) the same way as the element route, so the data layer can refuse a
write to a thread its caller did not write.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from fastapi import Request
from starlette.responses import JSONResponse, Response

from ..errors import NotAuthorError
from ..format.ids import is_valid_id
from .access import current_source, current_user

_Scope = MutableMapping[str, Any]
_Asgi = Callable[[_Scope, Any, Any], Awaitable[None]]
# The HTTP request being served (set by CallerMiddleware), for the data layer's writes.
_request: ContextVar[Request | None] = ContextVar("filelayer_request", default=None)


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
    source = current_source()
    try:
        element = json.loads(body).get("element") or {}
        thread_id = element.get("threadId")
    except (ValueError, AttributeError):
        return None  # Chainlit answers a malformed body itself
    if source is None or not isinstance(thread_id, str) or not is_valid_id(thread_id):
        return None
    identifier = getattr(await current_user(request), "identifier", None)
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


def serving_request() -> bool:
    """Whether an HTTP request is being served (see :class:`CallerMiddleware`)."""
    return _request.get() is not None


async def request_user() -> Any:
    """The logged-in user of the HTTP request being served; ``None`` when no request is
    being served, or its visitor is anonymous (no token, or a bad one)."""
    request = _request.get()
    return None if request is None else await current_user(request)


def add_middleware(app: Any) -> None:
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
