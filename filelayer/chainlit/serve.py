"""The element route on Chainlit's own app: where it is registered, and how it answers.

(The export route beside it, ``{root_path}/filelayer/export/{thread}``, is in
:mod:`filelayer.chainlit.export_route`, which registers it here with :func:`add_route`:
it builds on this module, so this module does not import it.)

On resume the frontend loads every element from its ``url``: the live session's file is
gone by then. This module adds ``GET {root_path}/filelayer/elements/{thread}/{element}``
to Chainlit's own FastAPI app, ahead of Chainlit's catch-all route (which would
otherwise answer first with the UI's HTML page, Chainlit #1819), and builds that URL
under the root path Chainlit runs under.

Each request is handled in three steps, each in its own module: who may read the thread
(:mod:`filelayer.chainlit.access`, the same rule as the export route), which file may be
sent and with what headers (:mod:`filelayer.chainlit.element_response`); who is calling
for the data layer's writes is kept by the middleware of :mod:`filelayer.chainlit.caller`,
which :func:`watch_callers` installs.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import Request
from starlette.responses import Response

# CallerMiddleware, serving and _USER_KEY are used here only by the authorship tests,
# which reach them through this module (it held them before the split).
from .access import USER_KEY as _USER_KEY  # noqa: F401
from .access import ElementSource, readable_thread, refusal, use_source
from .caller import CallerMiddleware as CallerMiddleware
from .caller import add_middleware
from .caller import serving as serving
from .element_response import contained, file_response

log = logging.getLogger("filelayer")

ROUTE_NAME = "filelayer_element"
REFUSE_NAME = "filelayer_element_refused"
ROUTE_PREFIX = "/filelayer/elements"
ROUTE_SUFFIX = ROUTE_PREFIX + "/{thread_id}/{element_id}"
# Anything else under our prefix (extra segments, "..", encoded slashes) is ours to
# refuse: left to Chainlit's catch-all it would get the UI's page with a 200.
REFUSE_SUFFIX = ROUTE_PREFIX + "/{rest:path}"


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


def install(source: ElementSource) -> Callable[[str, str], str]:
    """Route requests to ``source`` and return the URL builder for its elements.

    The routes are added once per process; a later data layer replaces the earlier one
    (Chainlit builds its data layer once, tests build many).
    """
    use_source(source)
    _add_routes()
    return element_url


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
        use_source(source)
    server = _chainlit_server()
    if server is not None:
        add_middleware(server.app)


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
    admitted = await readable_thread(request, thread_id, element_id)
    if isinstance(admitted, Response):
        return admitted
    source = admitted[0]

    # From here on the caller may know that the thread exists.
    found = await source.calls.read(source.store.element_file, thread_id, element_id)
    path = contained(source.store.root, thread_id, found[1]) if found else None
    if found is None or path is None:
        if found is not None:
            log.warning(
                "filelayer: element %s of thread %s points outside its directory; refused",
                element_id,
                thread_id,
            )
        return refusal(404)
    try:
        stat = path.stat()
    except OSError:
        return refusal(404)
    return file_response(request, found[0], path, stat)


async def _refuse_path(request: Request, rest: str) -> Response:
    """Any other path under the prefix: no thread id and element id can be read from it."""
    return refusal(404)
