"""``FileDataLayer``: Chainlit's ``BaseDataLayer`` on top of :class:`ArchiveStore`.

This is the only module that imports Chainlit. It maps Chainlit's objects onto the
storage core and back, keeps ``queue_until_user_message`` where Chainlit's own layers
have it, and turns storage errors into log lines where Chainlit fires calls and forgets
them (a failed write must never crash the chat app).

It also tells the storage core who is calling. Chainlit checks authorship on some routes
only: its element routes take the thread id from the client, its feedback routes check
nothing but login, and ``edit_message`` deletes steps by client-chosen ids. So every
write names its *actor*: the logged-in user of the Chainlit session the call runs in
(socket events, the element routes), else the logged-in user of the HTTP request being
served (the feedback routes), else nobody, which is the app itself. The store refuses
a write by an actor to a thread another user wrote (:class:`~filelayer.errors.NotAuthorError`).

Every store call goes through :class:`~filelayer.chainlit.offload.Offload`, which runs it on
the event loop when nothing can make it wait and in a worker thread otherwise: a lock
held by another process, a maintenance command, a scan of every journal never freeze the
app's other chats.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from chainlit.context import ChainlitContextException, get_context
from chainlit.data.base import BaseDataLayer
from chainlit.data.utils import queue_until_user_message
from chainlit.session import WebsocketSession
from chainlit.types import (
    Feedback,
    PageInfo,
    PaginatedResponse,
    Pagination,
    ThreadDict,
    ThreadFilter,
)
from chainlit.user import PersistedUser, User

from .._io import aio as _aio
from ..errors import FileLayerError, NotAuthorError, StorageWriteError, UnknownStepError
from ..format.codec import encode_new_line
from ..format.ids import check_id
from ..format.journal import element_record
from ..format.layout import DEFAULT_ROOT, ROOT_ENV, default_root
from ..format.records import check_element_fields
from ..index.records import DEFAULT_SEARCH_CHARS
from ..store.archive import ArchiveStore, Durability, ElementUrl
from ..store.views import element_file_fields
from . import export_route as _export_route  # noqa: F401  (registers the export route)
from . import serve
from .access import ElementSource
from .caller import request_user, serving_request
from .offload import Offload

if TYPE_CHECKING:
    from chainlit.element import Element, ElementDict
    from chainlit.step import StepDict

log = logging.getLogger("filelayer")

if "chainlit.server" in sys.modules:
    # ``chainlit run`` imports the app (and so this module) before its server starts:
    # the caller middleware joins the stack before the first request, not during it.
    serve.watch_callers()

_Method = TypeVar("_Method", bound=Callable[..., Awaitable[Any]])


def _reported(method: _Method) -> _Method:
    """Log a failed call with what it was about, then let the error propagate.

    Chainlit fires most writes as tasks nobody awaits; without this line the only trace
    of a full disk would be asyncio's "exception was never retrieved" at some later GC.
    """

    @functools.wraps(method)
    async def wrapper(self: FileDataLayer, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        except (FileLayerError, OSError) as exc:
            log.error("filelayer: %s failed: %s", method.__name__, exc)
            raise

    return cast(_Method, wrapper)


def _queued(method: _Method) -> _Method:
    """Chainlit's ``queue_until_user_message``, typed: in a websocket session, before
    the first user message, the call is queued on the session instead of run.

    Queued, it runs at that message in the session owner's context, as the owner's
    write: a call made for another user's request in that session (see
    :meth:`FileDataLayer.actor`) is refused first, queued or not."""
    queued = queue_until_user_message()(method)  # type: ignore[no-untyped-call]

    @functools.wraps(method)
    async def wrapper(self: FileDataLayer, *args: Any, **kwargs: Any) -> Any:
        await _refuse_stranger(method.__name__)
        return await queued(self, *args, **kwargs)

    return cast(_Method, wrapper)


_ELEMENT_TRIES = 3
"""How many times an element's bytes are written when their directory was removed
meanwhile (see ``FileDataLayer._send_element``)."""

_SHARING_KEYS = frozenset(["is_shared", "shared_at"])
"""The metadata keys Chainlit's share route sets (see ``FileDataLayer._shared_change``)."""

_ELEMENT_FIELDS = (
    "id",
    "type",
    "name",
    "display",
    "size",
    "language",
    "page",
    "props",
    "autoPlay",
    "playerConfig",
    "forId",
    "mime",
    "url",
    "chainlitKey",
    "objectKey",
)


class FileDataLayer(BaseDataLayer):
    """Persist Chainlit conversations as plain files under ``root``.

    ``durability``: ``"flush"`` (default) survives the app being killed and loses at
    most the last second or so to a power cut; ``"fsync"`` loses nothing to a power
    cut, at one fsync per write. ``element_url`` maps
    ``(thread_id, element_id)`` to the URL the UI loads a stored element from; by default
    the element route that filelayer adds to Chainlit's server is used when available.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        durability: Durability = "flush",
        lock_timeout: float = 30.0,
        search_chars: int = DEFAULT_SEARCH_CHARS,
        element_url: ElementUrl | None = None,
        serve_elements: bool = True,
    ) -> None:
        self.store = ArchiveStore(
            root if root is not None else default_root(),
            durability=durability,
            lock_timeout=lock_timeout,
            search_chars=search_chars,
            heal="background",  # never the first page waiting for a whole rebuild
        )
        _log_root(self.store, root)
        self.calls = Offload(self.store)
        self._element_turns = _Turns()
        self._element_url = element_url
        source = ElementSource(self.store, self.calls, self.get_thread)
        serve.watch_callers(source)
        if element_url is None and serve_elements:
            self._element_url = serve.install(source)

    @property
    def root(self) -> Path:
        return self.store.root

    @staticmethod
    async def actor() -> str | None:
        """The identifier of the logged-in user this call is made for; ``None`` for the
        app itself (no Chainlit session with a user, no authenticated request).

        Chainlit's session comes first: on its element and action routes Chainlit itself
        checks that the session belongs to the requester. Where there is none (its
        feedback routes), the request's own login answers. Where an HTTP request of
        another logged-in user runs in a websocket session, no write is made at all
        (:class:`NotAuthorError`): Chainlit's ``PUT /feedback`` runs the app's
        ``on_feedback`` in the session whose id the request names without that check,
        and what the callback writes there is neither the owner's nor, in the owner's
        thread (or the one the owner's first message will make), the requester's.
        """
        await _refuse_stranger("a write")
        user = getattr(_session(), "user", None)
        if user is None:
            user = await request_user()
        identifier = getattr(user, "identifier", None)
        return identifier if isinstance(identifier, str) else None

    # -- users ---------------------------------------------------------------------

    @_reported
    async def get_user(self, identifier: str) -> PersistedUser | None:
        doc = await self.calls.read(self.store.get_user, identifier)
        return _persisted_user(doc) if doc else None

    @_reported
    async def create_user(self, user: User) -> PersistedUser | None:
        doc = await self.calls.write_durable(
            self.store.upsert_user,
            user.identifier,
            metadata=user.metadata,
            display_name=user.display_name,
        )
        return _persisted_user(doc)

    @_reported
    async def delete_user_session(self, id: str) -> bool:
        """Older Chainlit versions call this; sessions are not persisted, so: done."""
        return True

    # -- feedback ------------------------------------------------------------------

    @_reported
    async def upsert_feedback(self, feedback: Feedback) -> str:
        actor = await self.actor()
        thread_id = feedback.threadId
        located = thread_id is None
        if thread_id is None:  # Slack, Teams, Discord: found in the journals
            thread_id = await self._locate("step", feedback.forId)
            if thread_id is None:
                raise UnknownStepError(feedback.forId, None)
        try:
            feedback_id = await self.calls.write(
                self.store.upsert_feedback,
                for_id=feedback.forId,
                value=feedback.value,
                comment=feedback.comment,
                feedback_id=feedback.id,
                thread_id=thread_id,
                actor=actor,
            )
        except NotAuthorError:
            if not located:
                raise
            # The step is in another user's thread, which the caller did not name:
            # the error must not tell them which one (Chainlit shows its text).
            raise UnknownStepError(feedback.forId, None) from None
        feedback.id = feedback_id
        return feedback_id

    @_reported
    async def delete_feedback(self, feedback_id: str) -> bool:
        actor = await self.actor()
        store = self.store
        done = await self.calls.write(store.delete_feedback, feedback_id, actor=actor, scan=False)
        if done is not None:
            return done
        # The index may lag and does not know the id (the client's, any it likes): the
        # journals are read in a worker thread without the store's lock, so that the
        # app's other calls never wait behind that reading.
        thread_id = await self.calls.scan("feedback", feedback_id)
        if thread_id is None:
            return True
        found = await self.calls.write(
            store.delete_feedback, feedback_id, actor=actor, thread_id=thread_id
        )
        return bool(found)

    async def _locate(self, kind: str, key: str, prefer: str | None = None) -> str | None:
        """The thread holding step (or element) ``key``: from what this process knows,
        else by a scan of the journals in a worker thread."""
        if not isinstance(key, str):
            return None
        if kind == "step":
            found = await self.calls.read(self.store.locate_step, key, prefer, scan=False)
            return found or await self.calls.scan("step", key)
        found = await self.calls.read(self.store.locate_element, key, scan=False)
        return found or await self.calls.scan("element", key)

    # -- elements ------------------------------------------------------------------

    @_queued
    @_reported
    async def create_element(self, element: Element) -> None:
        await self._create_element(element)

    async def _create_element(self, element: Element) -> None:
        # Chainlit sends a task list or a custom element again at each change, each
        # send a task of its own: the sends of one element take turns, in the order
        # they were made (the bytes are written between two locked steps, and two
        # sends interleaved could leave an older version, or a record describing
        # other bytes than the file's).
        async with self._element_turns.turn((element.thread_id, element.id)):
            await self._send_element(element)

    async def _send_element(self, element: Element) -> None:
        thread_id = element.thread_id
        fields: dict[str, Any] = element.to_dict()  # type: ignore[assignment]
        record = {k: fields.get(k) for k in _ELEMENT_FIELDS}
        # Refused before anything is written (the file's name is made of the name and
        # the mime type, and the bytes are written before the record).
        check_element_fields(record, check_id("element", record["id"]))
        encode_new_line(element_record(record))
        actor = await self.actor()
        data = await _element_bytes(element)
        if data is not None:
            relative = self.store.element_relative_path(element.id, element.name, element.mime)
            target = self.store.layout.element_file(thread_id, relative)
            assert target is not None
            for attempt in range(_ELEMENT_TRIES):
                directory = await self.calls.write(
                    self.store.prepare_element, thread_id, record, actor=actor
                )
                if directory is None:
                    return  # the thread, the element or its step was deleted
                try:
                    written = await _aio.write_file(target, data, durable=self.store.durable)
                    break
                except StorageWriteError as exc:
                    # The bytes are written between two locked steps: in between,
                    # another process may have removed the directory. A deletion of the
                    # thread makes this a late write to a deleted thread, ignored like
                    # every other one; the git hook's removal of an empty elements/ is
                    # undone by preparing the thread again.
                    if await self.calls.read(self.store.is_deleted, thread_id):
                        return
                    if exc.errno != errno.ENOENT or attempt == _ELEMENT_TRIES - 1:
                        raise
            digest = (
                await asyncio.to_thread(hashlib.sha256, data)
                if len(data) > 1 << 20
                else hashlib.sha256(data)
            )
            record.update(element_file_fields(relative, b""))
            record.update({"bytes": len(data), "sha256": digest.hexdigest()})
            # Recorded only if the file is still this send's: the same element sent by
            # another process meanwhile replaced it, and records it.
            await self.calls.write(
                self.store.record_element, thread_id, record, actor=actor, written=written
            )
            return
        await self.calls.write(self.store.record_element, thread_id, record, actor=actor)

    @_reported
    async def get_element(self, thread_id: str, element_id: str) -> ElementDict | None:
        element = await self.calls.read(
            self.store.get_element, thread_id, element_id, self._element_url
        )
        return cast("ElementDict | None", element)

    @_queued
    @_reported
    async def delete_element(self, element_id: str, thread_id: str | None = None) -> None:
        actor = await self.actor()
        thread_id = thread_id or await self._locate("element", element_id)
        if thread_id:
            await self.calls.write(self.store.delete_element, element_id, thread_id, actor=actor)

    # -- steps ---------------------------------------------------------------------

    @_queued
    @_reported
    async def create_step(self, step_dict: StepDict) -> None:
        step: dict[str, Any] = dict(step_dict)
        actor = await self.actor()
        if not step.get("threadId"):
            step["threadId"] = await self._locate("step", step.get("id"))  # type: ignore[arg-type]
        await self.calls.write(self.store.write_step, step, actor=actor)

    @_queued
    @_reported
    async def update_step(self, step_dict: StepDict) -> None:
        step: dict[str, Any] = dict(step_dict)
        actor = await self.actor()
        if not step.get("threadId"):
            step["threadId"] = await self._locate("step", step.get("id"))  # type: ignore[arg-type]
        await self.calls.write(self.store.write_step, step, actor=actor)

    @_queued
    @_reported
    async def delete_step(self, step_id: str) -> None:
        actor = await self.actor()
        # Step ids come from the client and may repeat another thread's: look in the
        # caller's own session thread first.
        prefer = getattr(_session(), "thread_id", None)
        thread_id = await self._locate("step", step_id, prefer if isinstance(prefer, str) else None)
        if thread_id:
            await self.calls.write(self.store.delete_step, step_id, thread_id, actor=actor)

    @_reported
    async def get_favorite_steps(self, user_id: str) -> list[StepDict]:
        steps = await self.calls.read(self.store.favorite_steps, user_id)
        return cast("list[StepDict]", steps)

    # -- threads -------------------------------------------------------------------

    @_reported
    async def get_thread_author(self, thread_id: str) -> str:
        return await self.calls.read(self.store.thread_author, thread_id)

    @_reported
    async def delete_thread(self, thread_id: str) -> None:
        actor = await self.actor()
        await self.calls.write_durable(self.store.delete_thread, thread_id, actor=actor)

    @_reported
    async def list_threads(
        self, pagination: Pagination, filters: ThreadFilter
    ) -> PaginatedResponse[ThreadDict]:
        # A search may read the records of all the user's threads: never on the loop.
        run = self.calls.read_off_loop if filters.search else self.calls.read
        threads, page = await run(
            self.store.list_threads,
            user_id=filters.userId,
            first=pagination.first,
            cursor=pagination.cursor,
            search=filters.search,
            feedback=filters.feedback,
        )
        return PaginatedResponse(
            pageInfo=PageInfo(
                hasNextPage=page.has_next,
                startCursor=page.start_cursor,
                endCursor=page.end_cursor,
            ),
            data=threads,  # type: ignore[arg-type]
        )

    @_reported
    async def get_thread(self, thread_id: str) -> ThreadDict | None:
        thread = await self.calls.read(
            self.store.get_thread, thread_id, self._element_url, viewer=await _viewer()
        )
        return cast("ThreadDict | None", thread)

    @_reported
    async def update_thread(
        self,
        thread_id: str,
        name: str | None = None,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        tags: list[str] | None = None,
    ) -> None:
        actor = await self.actor()
        if isinstance(metadata, dict) and "is_shared" in metadata:
            metadata = await self._shared_change(thread_id, metadata)
        await self.calls.write(
            self.store.update_thread,
            thread_id,
            name=name,
            user_id=user_id,
            metadata=metadata,
            tags=tags,
            actor=actor,
        )

    async def _shared_change(self, thread_id: str, metadata: dict[str, Any]) -> dict[str, Any]:
        """What a share or unshare changes, out of the metadata it hands back whole.

        Chainlit's ``PUT /project/thread/share`` reads the thread (its metadata with the
        saved session over it), sets ``is_shared`` and passes all of it back. Whole, it
        looked like a session save once a session with a chat profile was saved (whose
        sharing keys are never taken: the unshare was lost, the thread stayed readable
        by everyone), and else committed the session into ``thread.json``. So outside a
        websocket session (Chainlit saves sessions from its socket, in one), metadata
        that is the thread's own as it reads but for the sharing keys is that change
        alone (on an unshare that left ``shared_at`` out, as the route does, it is
        removed); any other metadata is passed on as given.
        """
        if isinstance(_session(), WebsocketSession):
            return metadata
        thread = await self.calls.read(self.store.get_thread, thread_id)
        current: dict[str, Any] = (thread or {}).get("metadata") or {}
        if any(
            k not in current or current[k] != v
            for k, v in metadata.items()
            if k not in _SHARING_KEYS
        ):
            return metadata
        change = {k: v for k, v in metadata.items() if k in _SHARING_KEYS}
        if not metadata.get("is_shared") and "shared_at" in current and "shared_at" not in metadata:
            change["shared_at"] = None
        return change

    # -- misc ----------------------------------------------------------------------

    @_reported
    async def build_debug_url(self) -> str:
        return ""

    @_reported
    async def close(self) -> None:
        await self.calls.close()


async def _stranger() -> str | None:
    """The logged-in user of the HTTP request being served when it runs in another
    user's websocket session (Chainlit's ``PUT /feedback`` runs the app's
    ``on_feedback`` in the session the request names, unchecked); else ``None``. A
    request without a login (its token expired, a transport that sends none) is no
    stranger: the session's own checks admitted it."""
    session = _session()
    user = getattr(session, "user", None)
    if user is None or not isinstance(session, WebsocketSession):
        return None
    requester = getattr(await request_user(), "identifier", None)
    if isinstance(requester, str) and requester != getattr(user, "identifier", None):
        return requester
    return None


async def _refuse_stranger(what: str) -> None:
    """:class:`NotAuthorError` when the call runs for another user's request in a
    websocket session (see :func:`_stranger`)."""
    stranger = await _stranger()
    if stranger is not None:
        thread_id = getattr(_session(), "thread_id", None)
        log.error("filelayer: %s refused: %r is not the session's user", what, stranger)
        raise NotAuthorError(str(thread_id), stranger)


async def _viewer() -> str | None:
    """Who a read is made for: the identifier of the Chainlit session's user, else of
    the HTTP request's (``""``: an anonymous visitor); ``None`` for the app itself (no
    session with a user, no request being served), which reads everything."""
    user = getattr(_session(), "user", None)
    if user is None:
        if not serving_request():
            return None
        user = await request_user()
    identifier = getattr(user, "identifier", None)
    return identifier if isinstance(identifier, str) else ""


def _session() -> Any:
    """The Chainlit session this call runs in, if any (none in scripts and tests, nor in
    Chainlit's plain HTTP routes)."""
    try:
        return get_context().session
    except ChainlitContextException:
        return None


def _log_root(store: ArchiveStore, requested: str | os.PathLike[str] | None) -> None:
    """Say where the chats are: a relative root (the default ``./chats`` is one) depends
    on the directory the app was started from, and a new, empty archive there is the
    usual reason for a sidebar without the conversations one expected."""
    log.info("filelayer: chat history in %s", store.root)
    if not store.created or store.thread_ids():
        return
    if requested is not None:
        how = f"the root given to FileDataLayer, {os.fspath(requested)!r}"
        relative = not Path(requested).expanduser().is_absolute()
    elif os.environ.get(ROOT_ENV):
        how = f"${ROOT_ENV}={os.environ[ROOT_ENV]}"
        relative = not Path(os.environ[ROOT_ENV]).expanduser().is_absolute()
    else:
        how, relative = f"the default root {DEFAULT_ROOT}", True
    if relative:
        how += f", relative to the working directory {Path.cwd()}"
    log.warning(
        "filelayer: created a new, empty archive at %s (%s): the sidebar will show no "
        "past conversations. If your chats are elsewhere, set %s=/path/to/chats (or pass "
        "the root to FileDataLayer) and restart the app.",
        store.root,
        how,
        ROOT_ENV,
    )


def _persisted_user(doc: dict[str, Any]) -> PersistedUser:
    """Chainlit's user from a user record. A display name that is no string (stored by
    hand or by an earlier release, which took any) is none, metadata that is no object
    is empty: Chainlit's model refuses them, and the user could not log in."""
    name = doc.get("displayName")
    metadata = doc.get("metadata")
    return PersistedUser(
        id=doc["id"],
        identifier=doc["identifier"],
        display_name=name if isinstance(name, str) else None,
        metadata=metadata if isinstance(metadata, dict) else {},
        createdAt=doc["createdAt"],
    )


async def _element_bytes(element: Element) -> bytes | None:
    """The element's bytes, read now: the session's files are deleted when it ends."""
    content = getattr(element, "content", None)
    if isinstance(content, bytes | bytearray):
        return bytes(content)
    if isinstance(content, str):
        return content.encode("utf-8")
    path = getattr(element, "path", None)
    if path:
        try:
            return await _aio.read_file(Path(path))
        except OSError as exc:
            log.error("filelayer: element %s: cannot read %s: %s", element.id, path, exc)
            return None
    return None  # only an external url: kept as it is


class _Turns:
    """Calls that take turns by key, first come first served (``asyncio.Lock`` is
    fair); a key is forgotten once nobody holds or awaits its turn."""

    def __init__(self) -> None:
        self._locks: dict[Any, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def turn(self, key: Any) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
