"""Who may read a stored thread's files over HTTP: the rule both routes apply.

The element route (:mod:`filelayer.chainlit.serve`) and the export route
(:mod:`filelayer.chainlit.export_route`) answer the same people, in the same order, so
the rule is written once, here.

Who may read: the thread's author, authenticated the way Chainlit authenticates every
request (its ``access_token`` cookie, or an ``Authorization: Bearer`` header), or any
logged-in user when the thread is shared the way Chainlit shares threads
(``metadata.is_shared``, or the app's ``on_shared_thread_view``); in an app without login,
anyone. Everyone else gets 401 (not logged in) or 404 (logged in), and the answer is the
same whether the thread exists or not, so ids cannot be probed. The permission check
comes before any look at the element, so neither a missing element nor a damaged
journal tells a stranger anything.

The routes and the caller middleware reach the data layer through an
:class:`ElementSource` (its store, its offload, its ``get_thread``), never through the
data layer itself, so the adapter imports them and never the other way round.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException, Request
from starlette.responses import JSONResponse, Response

from ..format.ids import is_valid_id

if TYPE_CHECKING:
    from ..store.archive import ArchiveStore
    from .offload import Offload

log = logging.getLogger("filelayer")

USER_KEY = "filelayer_user"
"""Where the request's authenticated user is kept in its ASGI scope's ``state``."""


@dataclass(frozen=True)
class ElementSource:
    """What the routes need from a data layer: its store, the offload its store calls go
    through (so a route never blocks the event loop either), and ``get_thread`` (the
    shared-thread check hands Chainlit's own callback the thread as the layer shapes it).

    The routes depend on these three, not on the data layer, so the adapter imports the
    routes and never the other way round.
    """

    store: ArchiveStore
    calls: Offload
    get_thread: Callable[[str], Awaitable[Any]]


_current: list[ElementSource] = []


def use_source(source: ElementSource) -> None:
    """Answer requests from ``source`` from now on (a later data layer replaces an
    earlier one: Chainlit builds its data layer once, tests build many)."""
    _current[:] = [source]


def current_source() -> ElementSource | None:
    """The data layer requests are answered from; ``None`` before one is installed."""
    return _current[0] if _current else None


def login_required() -> bool:
    """Whether the app has login (else threads have no author and anyone may read)."""
    from chainlit.auth import require_login

    return bool(require_login())  # type: ignore[no-untyped-call]


async def current_user(request: Request) -> Any:
    """Chainlit's own authentication: its cookie, or an ``Authorization`` header.

    A missing, expired or forged token is an anonymous visitor. The answer is kept with
    the request, so a request that writes several times is authenticated once.
    """
    state = request.scope.setdefault("state", {})
    if USER_KEY in state:
        return state[USER_KEY]
    from chainlit.auth import authenticate_user, reuseable_oauth

    user = None
    try:
        token = await reuseable_oauth(request)
        if token:
            user = await authenticate_user(token)
    except HTTPException:
        user = None
    state[USER_KEY] = user
    return user


def refusal(status: int) -> Response:
    """The 401 (not logged in) or 404 (anything else) every refusal is answered with."""
    if status == 401:
        return JSONResponse(
            {"detail": "Not authenticated"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer", "Cache-Control": "no-store"},
        )
    return JSONResponse(
        {"detail": "Not found"}, status_code=404, headers={"Cache-Control": "no-store"}
    )


async def readable_thread(
    request: Request, thread_id: str, *other_ids: str
) -> tuple[ElementSource, Mapping[str, Any]] | Response:
    """The source and the manifest of ``thread_id`` if the request's caller may read it,
    else the refusal to send (401 to an anonymous visitor in an app with login, 404 to
    everyone else, whether the thread exists or not).

    ``other_ids`` (an element's id) are validated too, before anything is looked up.
    """
    needs_login = login_required()
    user = await current_user(request) if needs_login else None

    def refuse() -> Response:
        return refusal(401 if needs_login and user is None else 404)

    source = current_source()
    if source is None or not all(is_valid_id(i) for i in (thread_id, *other_ids)):
        return refuse()
    manifest = await source.calls.read(source.store.read_manifest, thread_id)
    if manifest is None or not await may_read(source, manifest, user, needs_login):
        return refuse()
    return source, manifest


async def may_read(
    source: ElementSource, manifest: Mapping[str, Any], user: Any, needs_login: bool
) -> bool:
    """The author, or any logged-in user if the thread is shared (Chainlit's own share
    page answers 401 to anonymous visitors in an app with login); in an app without
    login, where threads have no author, a thread without an author is nobody's secret
    and a shared thread is anyone's to read."""
    author = str(manifest.get("userIdentifier") or "")
    identifier = getattr(user, "identifier", None)
    if author and identifier == author:
        return True
    if not needs_login and not author:
        return True
    if needs_login and user is None:
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
