"""Issue #17, part 2: only a thread's author changes it; a shared thread is read-only for
everyone else.

A real ``chainlit run`` of tests/apps/auth_app.py (login required, a FileDataLayer on a
temporary root) is attacked over HTTP and socket.io the way a browser talks to it. alice
posts threads (each answer carries an image and a file whose bytes the layer stores) and
shares some; mallory, logged in with her own sessions, and anonymous clients with no,
forged or ``alg: none`` tokens try to read and change them through every route that
reaches the data layer. After every attempt everything of alice's is compared with what
it was before: every file of her thread directories byte for byte, her threads as the
index lists them, the tombstones in ``deleted.jsonl``, her user file, and no thread
directory appeared that is not mallory's.

Chainlit 2.12 itself leaves holes that reach the data layer; the tests for them fail
until the layer closes them (see each section). Writes that Chainlit fires as background
tasks are awaited through a barrier: a write of mallory's own, made the same way after
the attack, that lands after it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

pytest.importorskip("chainlit")
pytest.importorskip("socketio")
pytest.importorskip("aiohttp")  # the socket.io client's websocket transport
httpx = pytest.importorskip("httpx")

from tests.chainlit.test_example_app import chat, get_thread, login, wait_for  # noqa: E402
from tests.support.apps import App, chainlit_running  # noqa: E402
from tests.support.layer import needs_thread_sharing, tree  # noqa: E402
from tests.support.processes import subprocess_env  # noqa: E402

# The app registers on_shared_thread_view, which Chainlit 2.0 does not have.
pytestmark = [pytest.mark.asyncio(loop_scope="module"), needs_thread_sharing()]

APP_SOURCE = Path(__file__).resolve().parent.parent / "apps" / "auth_app.py"
SECRET = "authorization-test-secret-" + "z" * 40
FEEDBACK = "/feedback"  # Chainlit 2.12's route (PUT and DELETE), at the router's root
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- the app and its users ------------------------------------------------------------


@dataclass
class Posted:
    """One of alice's threads, as posted: one message, the app's answer, its files."""

    id: str
    text: str
    user_step: str
    answer_step: str
    image: str
    file: str


@dataclass
class World:
    app: App
    alice: str  # access tokens
    mallory: str
    alice_id: str
    mallory_id: str
    alice_session: str  # a live session of alice's, with a thread of its own
    mallory_session: str  # mallory's session, past its first message
    mallory_thread: str
    mallory_answer: str  # a message of mallory's own
    shared: Posted  # posted once for the read-only tests
    private: Posted
    alice_threads: set[str] = field(default_factory=set)

    @property
    def threads(self) -> Path:
        return self.app.root / "threads"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    work = tmp_path_factory.mktemp("authorization")
    (work / "app").mkdir()
    shutil.copy(APP_SOURCE, work / "app" / "app.py")
    root = work / "chats"
    extra = {"FILELAYER_ROOT": str(root), "CHAINLIT_AUTH_SECRET": SECRET}
    if "FILELAYER_PURE" in os.environ:  # the app runs in the mode the suite runs in
        extra["FILELAYER_PURE"] = os.environ["FILELAYER_PURE"]
    log = work / "chainlit.log"
    with chainlit_running(work / "app", subprocess_env(**extra), log) as url:
        yield App(url=url, root=root, log=log)


class Session:
    """A socket.io session of the app, opened the way the browser opens one; each
    ``send`` or ``edit`` returns when the app has answered (``task_end``)."""

    def __init__(
        self,
        app: App,
        token: str | None,
        *,
        session_id: str | None = None,
        thread_id: str | None = None,
    ) -> None:
        import socketio

        self.app = app
        self.token = token
        self.id = session_id or str(uuid.uuid4())
        self.resume = thread_id
        self.thread: str | None = None
        self.client = socketio.AsyncClient(reconnection=False)
        self._ended = asyncio.Event()
        self.client.on("task_end", self._task_end)
        self.client.on("first_interaction", self._first_interaction)

    async def _task_end(self, *_: Any) -> None:
        self._ended.set()

    async def _first_interaction(self, data: dict[str, Any]) -> None:
        self.thread = data["thread_id"]

    async def _round(self, event: str, data: Any = None) -> None:
        self._ended.clear()
        await self.client.emit(event, data)
        await asyncio.wait_for(self._ended.wait(), timeout=60)

    async def open(self) -> Session:
        auth: dict[str, Any] = {"sessionId": self.id, "clientType": "webapp"}
        if self.resume:
            auth["threadId"] = self.resume
        await self.client.connect(
            self.app.url,
            socketio_path="/ws/socket.io",
            headers={"Cookie": f"access_token={self.token}"} if self.token else {},
            auth=auth,
            transports=["websocket"],
            wait_timeout=60,
        )
        await self._round("connection_successful")
        return self

    async def send(self, text: str, message_id: str | None = None) -> str:
        message_id = message_id or str(uuid.uuid4())
        message = {
            "id": message_id,
            "threadId": self.thread or "",
            "name": "user",
            "type": "user_message",
            "output": text,
            "createdAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        }
        await self._round("client_message", {"message": message, "fileReferences": []})
        return message_id

    async def edit(self, message_id: str, text: str) -> None:
        await self._round("edit_message", {"message": {"id": message_id, "output": text}})

    async def close(self) -> None:
        await self.client.disconnect()

    async def __aenter__(self) -> Session:
        return await self.open()

    async def __aexit__(self, *_: object) -> None:
        await self.close()


def manifest_of(app: App, thread_id: str) -> dict[str, Any] | None:
    try:
        doc = json.loads((app.root / "threads" / thread_id / "thread.json").read_bytes())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def journal_of(app: App, thread_id: str) -> str:
    try:
        return (app.root / "threads" / thread_id / "steps.jsonl").read_text("utf-8")
    except OSError:
        return ""


def settled(app: App, token: str, thread_id: str, answers: int = 1) -> dict[str, Any]:
    """The thread once every write of its (closed) session has landed: the messages,
    their answers with both files on disk, the run steps ended, and the session's
    metadata that Chainlit writes when the socket goes away."""

    def done() -> dict[str, Any] | None:
        response = get_thread(app, token, thread_id)
        if response.status_code != 200:
            return None
        thread: dict[str, Any] = response.json()
        steps = thread["steps"]
        answered = [s for s in steps if s["type"] == "assistant_message" and s["output"]]
        if len(answered) < answers or any(not s.get("end") for s in steps):
            return None
        elements = thread["elements"]
        if len(elements) < 2 * answers:
            return None
        folder = app.root / "threads" / thread_id / "elements"
        if len(list(folder.glob("*"))) < 2 * answers:
            return None
        # The session Chainlit saves at the disconnect (kept beside the manifest).
        meta = thread.get("metadata") or {}
        return thread if "client_type" in meta else None

    thread = wait_for(done)
    assert thread, f"thread {thread_id} never settled:\n{journal_of(app, thread_id)}"
    return thread


def posted(thread: dict[str, Any]) -> Posted:
    user = next(s for s in thread["steps"] if s["type"] == "user_message")
    answer = next(s for s in thread["steps"] if s["type"] == "assistant_message")
    image = next(e for e in thread["elements"] if e["type"] == "image")
    file = next(e for e in thread["elements"] if e["type"] == "file")
    assert image["forId"] == file["forId"] == answer["id"]
    return Posted(
        id=thread["id"],
        text=user["output"],
        user_step=user["id"],
        answer_step=answer["id"],
        image=image["id"],
        file=file["id"],
    )


def share(app: App, token: str, thread_id: str, on: bool = True) -> httpx.Response:
    return call(app, "PUT", "/project/thread/share", token, {"threadId": thread_id, "isShared": on})


async def post(world: World, *, shared: bool) -> Posted:
    """A new thread of alice's, from a session of its own, settled (and shared)."""
    text = f"alice's words {uuid.uuid4().hex[:8]}"
    thread_id = await chat(world.app, world.alice, text)
    world.alice_threads.add(thread_id)
    settled(world.app, world.alice, thread_id)
    if shared:
        assert share(world.app, world.alice, thread_id).status_code == 200
    return posted(settled(world.app, world.alice, thread_id))


def persisted_id(app: App, token: str) -> str:
    response = call(app, "GET", "/user", token)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(server: App) -> AsyncIterator[World]:
    app = server
    alice, mallory = login(app, "alice"), login(app, "mallory")

    # alice: a session that stays on the server (for the takeover attempts), with the
    # thread that stays private...
    async with Session(app, alice) as session:
        await session.send("alice's private words")
        alice_session, private_id = session.id, session.thread
    assert private_id
    private = posted(settled(app, alice, private_id))
    # ...and a thread she shares.
    shared_id = await chat(app, alice, "alice's shared words")
    settled(app, alice, shared_id)
    assert share(app, alice, shared_id).status_code == 200
    shared = posted(settled(app, alice, shared_id))

    # mallory: a session past its first message (Chainlit queues a session's data layer
    # calls until then), with a thread of her own.
    async with Session(app, mallory) as session:
        await session.send("mallory's own words")
        mallory_session, mallory_thread = session.id, session.thread
    assert mallory_thread
    mine = settled(app, mallory, mallory_thread)
    mallory_answer = next(s for s in mine["steps"] if s["type"] == "assistant_message")["id"]

    yield World(
        app=app,
        alice=alice,
        mallory=mallory,
        alice_id=persisted_id(app, alice),
        mallory_id=persisted_id(app, mallory),
        alice_session=alice_session,
        mallory_session=mallory_session,
        mallory_thread=mallory_thread,
        mallory_answer=mallory_answer,
        shared=shared,
        private=private,
        alice_threads={private.id, shared.id},
    )


@pytest_asyncio.fixture(loop_scope="module", params=["shared", "private"])
async def target(world: World, request: pytest.FixtureRequest) -> Posted:
    """A new thread of alice's for one attack, so that no attack depends on another."""
    return await post(world, shared=request.param == "shared")


# -- HTTP -----------------------------------------------------------------------------


def call(
    app: App,
    method: str,
    path: str,
    token: str | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """One request as the browser sends it (the login cookie, when there is one)."""
    sent = dict(headers or {})
    if token is not None:
        sent["Cookie"] = f"access_token={token}"
    return httpx.request(method, app.url + path, json=body, headers=sent, timeout=60)


def b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def forged_tokens() -> dict[str, str]:
    """Tokens claiming to be alice that Chainlit must not accept."""
    import jwt

    claims = {"identifier": "alice", "metadata": {"provider": "credentials"}}
    later = int(time.time()) + 3600
    return {
        "forged": jwt.encode({**claims, "exp": later}, "not-the-secret-" + "q" * 40, "HS256"),
        "alg-none": b64({"alg": "none", "typ": "JWT"}) + "." + b64({**claims, "exp": later}) + ".",
        "expired": jwt.encode({**claims, "exp": int(time.time()) - 60}, SECRET, "HS256"),
    }


def token_of(world: World, who: str) -> str | None:
    if who == "mallory":
        return world.mallory
    if who == "anonymous":
        return None
    return forged_tokens()[who]


# -- what belongs to alice ------------------------------------------------------------


@dataclass
class Snapshot:
    files: dict[str, dict[str, bytes | None]]  # alice's thread id -> its directory
    listing: list[dict[str, Any]]  # alice's sidebar, as the index gives it
    summaries: dict[str, dict[str, Any]]  # alice's thread id -> what the index holds
    indexed: dict[str, str | None]  # every indexed thread -> its author
    directories: dict[str, str | None]  # every thread directory -> its manifest's author
    deleted: bytes
    user: bytes
    outside: set[str]  # what lies next to the archive root


def snapshot(world: World) -> Snapshot:
    from filelayer import ArchiveStore

    app = world.app
    directories = {
        p.name: (manifest_of(app, p.name) or {}).get("userIdentifier")
        for p in world.threads.iterdir()
        if p.is_dir() and not p.name.startswith(".")
    }
    world.alice_threads.update(t for t, author in directories.items() if author == "alice")
    files = {t: tree(world.threads / t) for t in sorted(world.alice_threads)}
    store = ArchiveStore(app.root, create=False)
    try:
        threads, _ = store.list_threads(user_id=world.alice_id, first=10_000)
        store.index.refresh()
        view = store.index.threads
        summaries = {}
        for thread_id in sorted(world.alice_threads):
            summary = view.get(thread_id)
            summaries[thread_id] = (
                None
                if summary is None
                else {
                    "user": (summary.user_id, summary.user_identifier),
                    "name": summary.name,
                    "tags": summary.tags,
                    "times": (summary.created_at, summary.updated_at, summary.activity),
                    "texts": dict(summary.texts),
                    "feedback": dict(summary.feedback),
                    "favorites": set(summary.favorites),
                }
            )
        indexed = {t: s.user_identifier for t, s in view.items()}
        user_file = store.layout.user_file("alice")
    finally:
        store.close()
    deleted = app.root / "deleted.jsonl"
    return Snapshot(
        files=files,
        listing=threads,
        summaries=summaries,
        indexed=indexed,
        directories=directories,
        deleted=deleted.read_bytes() if deleted.exists() else b"",
        user=user_file.read_bytes(),
        outside={p.name for p in app.root.parent.iterdir()},
    )


def differences(before: Snapshot, after: Snapshot) -> list[str]:
    found: list[str] = []
    for thread_id, was in before.files.items():
        now = after.files.get(thread_id, {})
        for path in sorted(was.keys() | now.keys()):
            where = f"threads/{thread_id}/{path}"
            old, new = was.get(path), now.get(path)
            if path not in now:
                found.append(f"{where} was removed")
            elif path not in was:
                found.append(f"{where} appeared")
            elif old != new:
                if isinstance(old, bytes) and isinstance(new, bytes) and new.startswith(old):
                    added = new[len(old) :].decode("utf-8", "replace").strip()
                    found.append(f"{where} got new lines:\n    {added}")
                else:
                    found.append(f"{where} was rewritten: {new!r:.120}")
    for thread_id in after.files.keys() - before.files.keys():
        found.append(f"threads/{thread_id} appeared as alice's")
    if after.listing != before.listing:
        found.append(f"alice's listing changed:\n    {before.listing}\n -> {after.listing}")
    for thread_id, was in before.summaries.items():
        if after.summaries.get(thread_id) != was:
            found.append(
                f"the index of alice's thread {thread_id} changed:\n"
                f"    {was}\n -> {after.summaries.get(thread_id)}"
            )
    for name in sorted(after.directories.keys() - before.directories.keys()):
        author = after.directories[name]
        if author != "mallory":
            found.append(f"a thread directory threads/{name} appeared (author: {author!r})")
    for thread_id in sorted(after.indexed.keys() - before.indexed.keys()):
        if after.indexed[thread_id] != "mallory":
            found.append(
                f"the index lists a new thread {thread_id} of {after.indexed[thread_id]!r}"
            )
    if after.deleted != before.deleted:
        found.append(f"deleted.jsonl changed: {after.deleted[len(before.deleted) :]!r}")
    if after.user != before.user:
        found.append("alice's user file changed")
    if after.outside != before.outside:
        found.append(f"next to the archive: {sorted(after.outside ^ before.outside)}")
    return found


def assert_unchanged(world: World, before: Snapshot) -> None:
    """Nothing of alice's changed since ``before``, and no thread appeared but mallory's."""
    problems = differences(before, snapshot(world))
    assert not problems, "alice's data changed:\n  " + "\n  ".join(problems)


def refused(response: httpx.Response) -> None:
    assert response.status_code >= 400, (
        f"{response.request.method} {response.request.url.path} answered "
        f"{response.status_code}: {response.text[:300]}"
    )


def mallory_barrier(world: World) -> None:
    """Wait until a write that mallory makes now through ``PUT /project/element`` has
    landed in her own thread: Chainlit runs that write as a background task, so an
    attack through the same route just before it has had its turn too."""
    element_id = str(uuid.uuid4())
    response = call(
        world.app,
        "PUT",
        "/project/element",
        world.mallory,
        {
            "element": {
                "id": element_id,
                "type": "custom",
                "threadId": world.mallory_thread,
                "forId": world.mallory_answer,
                "name": "Barrier",
                "display": "inline",
                "props": {"barrier": True},
            },
            "sessionId": world.mallory_session,
        },
    )
    assert response.status_code == 200, response.text
    assert wait_for(lambda: element_id in journal_of(world.app, world.mallory_thread)), (
        "mallory's own element never landed in her thread"
    )


# -- reading: what already holds --------------------------------------------------------


READ_ENDPOINTS = ["thread", "share", "element-route", "element-api"]


def read_path(thread: Posted, endpoint: str) -> str:
    return {
        "thread": f"/project/thread/{thread.id}",
        "share": f"/project/share/{thread.id}",
        "element-route": f"/filelayer/elements/{thread.id}/{thread.image}",
        "element-api": f"/project/thread/{thread.id}/element/{thread.image}",
    }[endpoint]


def assert_nothing_leaked(response: httpx.Response, thread: Posted) -> None:
    body = response.content
    assert PNG_MAGIC not in body, "the image's bytes were served"
    assert thread.text.encode() not in body, "alice's message was served"


@pytest.mark.parametrize("endpoint", READ_ENDPOINTS)
@pytest.mark.parametrize("who", ["mallory", "anonymous", "forged", "alg-none", "expired"])
async def test_a_private_thread_is_read_by_nobody_else(
    world: World, who: str, endpoint: str
) -> None:
    before = snapshot(world)
    response = call(world.app, "GET", read_path(world.private, endpoint), token_of(world, who))
    refused(response)
    assert_nothing_leaked(response, world.private)
    if who != "mallory":
        assert response.status_code == 401
    assert_unchanged(world, before)


async def test_a_shared_thread_is_read_by_logged_in_users(
    world: World,
) -> None:
    before = snapshot(world)
    thread = world.shared
    shown = call(world.app, "GET", read_path(thread, "share"), world.mallory)
    assert shown.status_code == 200, shown.text
    assert [s["output"] for s in shown.json()["steps"] if s["type"] == "user_message"] == [
        thread.text
    ]
    image = call(world.app, "GET", read_path(thread, "element-route"), world.mallory)
    assert image.status_code == 200 and image.content.startswith(PNG_MAGIC)
    # Resuming (and the element API that goes with it) stays the author's.
    for endpoint in ("thread", "element-api"):
        refused(call(world.app, "GET", read_path(thread, endpoint), world.mallory))
    assert_unchanged(world, before)


@pytest.mark.parametrize("who", ["anonymous", "forged", "alg-none", "expired"])
async def test_a_shared_thread_is_not_shown_without_a_login(world: World, who: str) -> None:
    """Chainlit's own ``/project/share/{id}`` answers 401 in an app with login."""
    before = snapshot(world)
    response = call(world.app, "GET", read_path(world.shared, "share"), token_of(world, who))
    assert response.status_code == 401, response.text
    assert_nothing_leaked(response, world.shared)
    assert_unchanged(world, before)


@pytest.mark.parametrize("who", ["anonymous", "forged", "alg-none", "expired"])
async def test_a_shared_threads_files_are_not_served_without_a_login(
    world: World, who: str
) -> None:
    """HOLE today: the element route serves a shared thread's files to anyone, while
    Chainlit's share route asks for a login. Expected: 401, as for the share route."""
    before = snapshot(world)
    for element in (world.shared.image, world.shared.file):
        path = f"/filelayer/elements/{world.shared.id}/{element}"
        response = call(world.app, "GET", path, token_of(world, who))
        assert response.status_code == 401, (
            f"{who}: the element route answered {response.status_code} "
            f"({len(response.content)} bytes) for a shared thread's file"
        )
        assert_nothing_leaked(response, world.shared)
    assert_unchanged(world, before)


async def test_crafted_ids_reach_nothing(world: World) -> None:
    """Traversal in ids, on the read routes and on the writes that take ids."""
    before = snapshot(world)
    t, e = world.private.id, world.private.image
    crafted = [
        f"..%2F{t}",
        f"%2e%2e%2f%2e%2e%2f{t}",
        f"x%2F..%2F{t}",
        "..%2Fusers",
        "..%2F..%2Fetc%2Fpasswd",
        f"{t}%00",
        f"{t}%2Fsteps.jsonl",
        "%2Fetc%2Fpasswd",
        "..",
    ]
    for who in ("mallory", "anonymous"):
        token = token_of(world, who)
        for bad in crafted:
            for path in (
                f"/filelayer/elements/{bad}/{e}",
                f"/filelayer/elements/{t}/{bad}",
                f"/project/share/{bad}",
                f"/project/thread/{bad}",
                f"/project/thread/{t}/element/{bad}",
            ):
                response = call(world.app, "GET", path, token)
                assert PNG_MAGIC not in response.content, path
                assert b'"op":' not in response.content, path
                assert b'"identifier"' not in response.content, path
                assert world.private.text.encode() not in response.content, path
    raw = [f"../{t}", f"../../{t}", f"x/../{t}", "../users", str(world.threads / t), f"{t}\x00"]
    for bad in raw:
        call(
            world.app,
            "PUT",
            FEEDBACK,
            world.mallory,
            {
                "feedback": {"forId": world.private.answer_step, "value": 0, "threadId": bad},
                "sessionId": world.mallory_session,
            },
        )
        for method, element_id in (("PUT", e), ("DELETE", e), ("PUT", f"../{e}")):
            call(
                world.app,
                method,
                "/project/element",
                world.mallory,
                {
                    "element": {
                        "id": element_id,
                        "type": "custom",
                        "threadId": bad,
                        "forId": world.private.answer_step,
                        "name": "picture.png",
                        "display": "inline",
                        "props": {"crafted": True},
                    },
                    "sessionId": world.mallory_session,
                },
            )
    mallory_barrier(world)
    assert_unchanged(world, before)


# -- the socket: what already holds -----------------------------------------------------


@pytest.mark.parametrize("which", ["shared", "private"])
async def test_another_users_thread_cannot_be_resumed(world: World, which: str) -> None:
    before = snapshot(world)
    import socketio

    thread = world.shared if which == "shared" else world.private
    with pytest.raises(socketio.exceptions.ConnectionError):
        await Session(world.app, world.mallory, thread_id=thread.id).open()
    assert_unchanged(world, before)


@pytest.mark.parametrize("who", ["mallory", "anonymous", "forged"])
async def test_alices_session_cannot_be_taken_over(world: World, who: str) -> None:
    before = snapshot(world)
    import socketio

    with pytest.raises(socketio.exceptions.ConnectionError):
        await Session(world.app, token_of(world, who), session_id=world.alice_session).open()
    assert_unchanged(world, before)


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
async def test_alices_session_id_does_not_lend_her_rights(world: World, method: str) -> None:
    """Chainlit checks that the session named in an element request is the caller's."""
    before = snapshot(world)
    thread = world.private
    response = call(
        world.app,
        method,
        "/project/element",
        world.mallory,
        {
            "element": element_body(thread, "image", "custom"),
            "sessionId": world.alice_session,
        },
    )
    refused(response)  # Chainlit's own answer is 401
    mallory_barrier(world)
    assert_unchanged(world, before)


# -- thread operations: what already holds -------------------------------------------------


THREAD_OPERATIONS: dict[str, tuple[str, str, Callable[[Posted], dict[str, Any]]]] = {
    "rename": ("PUT", "/project/thread", lambda t: {"threadId": t.id, "name": "pwned"}),
    "share": ("PUT", "/project/thread/share", lambda t: {"threadId": t.id, "isShared": True}),
    "unshare": ("PUT", "/project/thread/share", lambda t: {"threadId": t.id, "isShared": False}),
    "delete": ("DELETE", "/project/thread", lambda t: {"threadId": t.id}),
}


@pytest.mark.parametrize("operation", list(THREAD_OPERATIONS))
@pytest.mark.parametrize("which", ["shared", "private"])
@pytest.mark.parametrize("who", ["mallory", "anonymous"])
async def test_only_the_author_renames_shares_or_deletes(
    world: World,
    operation: str,
    which: str,
    who: str,
) -> None:
    before = snapshot(world)
    thread = world.shared if which == "shared" else world.private
    method, path, body = THREAD_OPERATIONS[operation]
    refused(call(world.app, method, path, token_of(world, who), body(thread)))
    assert_unchanged(world, before)


async def test_the_listing_shows_only_the_callers_threads(
    world: World,
) -> None:
    before = snapshot(world)
    for search in (None, "alice"):
        body = {
            "pagination": {"first": 100},
            "filter": {"userId": world.alice_id, "search": search},
        }
        response = call(world.app, "POST", "/project/threads", world.mallory, body)
        assert response.status_code == 200, response.text
        listed = {t["id"] for t in response.json()["data"]}
        if search is None:
            assert world.mallory_thread in listed
        assert not listed & world.alice_threads, "mallory was shown alice's threads"
        assert all(
            (t["userId"], t["userIdentifier"]) == (world.mallory_id, "mallory")
            for t in response.json()["data"]
        )
        refused(call(world.app, "POST", "/project/threads", None, body))
    assert_unchanged(world, before)


async def test_alices_thread_ids_as_cursors_tell_mallory_nothing(world: World) -> None:
    """The sidebar's cursor is the client's: one of alice's thread ids sent as a cursor
    gives mallory the page a cursor naming nothing gives, not her threads older than
    alice's last message there; a page size beyond any integer SQLite takes is a page."""
    before = snapshot(world)

    def page(cursor: str | None, first: int = 100) -> list[str]:
        body = {"pagination": {"first": first, "cursor": cursor}, "filter": {}}
        response = call(world.app, "POST", "/project/threads", world.mallory, body)
        assert response.status_code == 200, response.text
        return [t["id"] for t in response.json()["data"]]

    top = page(None)
    assert world.mallory_thread in top
    assert page(str(uuid.uuid4())) == top
    for thread_id in sorted(world.alice_threads):
        assert page(thread_id) == top, "alice's thread placed mallory's page"
    assert page(None, first=2**63) == top
    assert_unchanged(world, before)


# -- PUT and DELETE /project/element: HOLES today ---------------------------------------------


def element_body(thread: Posted, which: str, claimed: str) -> dict[str, Any]:
    """An element as mallory sends it: ``which`` of alice's elements (or a new id in
    her thread), claimed to be of type ``claimed``."""
    element_id = {"image": thread.image, "file": thread.file}.get(which) or str(uuid.uuid4())
    return {
        "id": element_id,
        "type": claimed,
        "threadId": thread.id,
        "forId": thread.answer_step,
        "name": "picture.png" if which == "image" else "notes.txt",
        "display": "inline",
        "props": {"pwned": True},
    }


ELEMENT_CASES = [
    pytest.param("image", "custom", id="image-as-custom"),
    pytest.param("file", "custom", id="file-as-custom"),
    pytest.param("new", "custom", id="new-element"),
    pytest.param("image", "image", id="image-as-image"),
    pytest.param("file", "file", id="file-as-file"),
]


@pytest.mark.parametrize(("which", "claimed"), ELEMENT_CASES)
async def test_another_user_cannot_overwrite_an_element(
    world: World,
    target: Posted,
    which: str,
    claimed: str,
) -> None:
    """HOLE today (type ``custom``): Chainlit builds a CustomElement from the client's
    ids and checks only that the session is the caller's; the layer writes its JSON over
    alice's file. Chainlit itself turns the other types away (``success: false``)."""
    before = snapshot(world)
    response = call(
        world.app,
        "PUT",
        "/project/element",
        world.mallory,
        {"element": element_body(target, which, claimed), "sessionId": world.mallory_session},
    )
    mallory_barrier(world)
    assert_unchanged(world, before)
    if claimed == "custom":
        refused(response)
    else:
        assert response.status_code >= 400 or response.json() == {"success": False}


@pytest.mark.parametrize(("which", "claimed"), ELEMENT_CASES)
async def test_another_user_cannot_delete_an_element(
    world: World,
    target: Posted,
    which: str,
    claimed: str,
) -> None:
    """HOLE today (type ``custom``): the element and its file go, and an unknown id
    gets a tombstone in alice's journal."""
    before = snapshot(world)
    response = call(
        world.app,
        "DELETE",
        "/project/element",
        world.mallory,
        {"element": element_body(target, which, claimed), "sessionId": world.mallory_session},
    )
    assert_unchanged(world, before)
    if claimed == "custom":
        refused(response)
    else:
        assert response.status_code >= 400 or response.json() == {"success": False}


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
async def test_an_element_request_queued_before_the_first_message_is_refused_too(
    world: World, method: str
) -> None:
    """HOLE today: in a session without a message yet, Chainlit queues the layer's call
    and runs it at the first message, still in mallory's session."""
    thread = await post(world, shared=True)
    before = snapshot(world)
    assert thread.id in before.files
    async with Session(world.app, world.mallory) as fresh:
        response = call(
            world.app,
            method,
            "/project/element",
            world.mallory,
            {"element": element_body(thread, "image", "custom"), "sessionId": fresh.id},
        )
        await fresh.send("now the queue runs")
        assert fresh.thread
        own = fresh.thread
        # Her answer's files land after the queued call has run.
        assert wait_for(lambda: journal_of(world.app, own).count('"op":"element"') >= 2)
    assert_unchanged(world, before)
    refused(response)


# -- PUT and DELETE /feedback: HOLES today ----------------------------------------------------


def feedback(
    world: World, token: str, for_id: str, thread_id: str | None, **more: Any
) -> httpx.Response:
    body: dict[str, Any] = {"forId": for_id, "value": more.pop("value", 0), **more}
    if thread_id is not None:
        body["threadId"] = thread_id
    session = world.alice_session if token == world.alice else world.mallory_session
    return call(world.app, "PUT", FEEDBACK, token, {"feedback": body, "sessionId": session})


async def test_a_rating_naming_alices_session_writes_nothing_of_hers(world: World) -> None:
    """Chainlit's ``PUT /feedback`` runs the app's ``on_feedback`` in the websocket
    session the request names, without checking that it is the caller's (its element
    and action routes do). mallory rates her own message naming alice's session, and
    the app's callback answers with a message in that session: hers to write, never in
    alice's thread."""
    before = snapshot(world)
    body = {
        "forId": world.mallory_answer,
        "threadId": world.mallory_thread,
        "value": 1,
        "comment": "the callback writes: pwned",
    }
    response = call(
        world.app,
        "PUT",
        FEEDBACK,
        world.mallory,
        {"feedback": body, "sessionId": world.alice_session},
    )
    assert response.status_code == 200, response.text  # her own rating stands
    mallory_barrier(world)
    assert_unchanged(world, before)


@pytest.mark.parametrize(
    ("step", "thread_given"),
    [
        pytest.param("answer", True, id="answer-with-thread"),
        pytest.param("user", True, id="user-message-with-thread"),
        pytest.param("missing", True, id="missing-step-with-thread"),
        pytest.param("answer", False, id="answer-without-thread"),
        pytest.param("user", False, id="user-message-without-thread"),
    ],
)
async def test_another_user_cannot_rate_alices_messages(
    world: World,
    target: Posted,
    step: str,
    thread_given: bool,
) -> None:
    """HOLE today: the route checks only the login; the layer journals the rating in
    alice's thread (found by step id when no thread is given), and on a step that
    does not exist as well."""
    before = snapshot(world)
    for_id = {"answer": target.answer_step, "user": target.user_step}.get(step) or str(uuid.uuid4())
    response = feedback(
        world, world.mallory, for_id, target.id if thread_given else None, comment="pwned"
    )
    assert_unchanged(world, before)
    refused(response)
    if not thread_given:  # the answer must not tell mallory which thread holds the step
        assert target.id not in response.text, response.text


@pytest.mark.parametrize("step", ["alices", "unknown"])
async def test_feedback_never_creates_a_thread(world: World, step: str) -> None:
    """HOLE today: a rating for a thread id nobody has creates a directory, a manifest
    without an author and an index record."""
    before = snapshot(world)
    for_id = world.shared.answer_step if step == "alices" else str(uuid.uuid4())
    unknown = str(uuid.uuid4())
    response = feedback(world, world.mallory, for_id, unknown)
    assert_unchanged(world, before)
    assert not (world.threads / unknown).exists(), "feedback created a thread directory"
    refused(response)


async def test_feedback_on_a_missing_step_of_ones_own_thread_is_refused(
    world: World,
) -> None:
    """HOLE today: the rating of a step that does not exist is journaled."""
    before = snapshot(world)
    journal = journal_of(world.app, world.mallory_thread)
    missing = str(uuid.uuid4())
    response = feedback(world, world.mallory, missing, world.mallory_thread)
    assert_unchanged(world, before)
    added = journal_of(world.app, world.mallory_thread)[len(journal) :]
    assert missing not in added, f"the rating of a step that does not exist was kept: {added}"
    refused(response)


async def test_feedback_on_a_deleted_step_is_refused(world: World) -> None:
    """alice edits her first message (Chainlit deletes the messages after it, her own),
    then rates the deleted answer: refused, and nothing written. Today the layer drops
    the rating silently and answers 200."""
    async with Session(world.app, world.alice) as session:
        first = await session.send("first words")
        await session.send("second words")
        assert session.thread
        thread = session.thread
        world.alice_threads.add(thread)
        assert wait_for(lambda: journal_of(world.app, thread).count('"op":"element"') >= 4)
        answer = next(
            s["id"]
            for s in get_thread(world.app, world.alice, thread).json()["steps"]
            if s["type"] == "assistant_message" and s["output"] == "echo: first words"
        )
        await session.edit(first, "first words, edited")
        assert wait_for(lambda: journal_of(world.app, thread).count('"op":"element"') >= 6)
    settled(world.app, world.alice, thread)
    # The author's own edit still deletes her later messages.
    assert f'"id":"{answer}","op":"step.delete"}}' in journal_of(world.app, thread)
    before = snapshot(world)
    response = feedback(world, world.alice, answer, thread, value=1)
    assert_unchanged(world, before)
    refused(response)


async def test_another_user_cannot_withdraw_alices_rating(world: World, target: Posted) -> None:
    """HOLE today: ``DELETE /feedback`` takes any feedback id from anyone logged in."""
    # alice rated first; her rating is part of what must not change
    rated = feedback(world, world.alice, target.answer_step, target.id, value=1)
    assert rated.status_code == 200, rated.text
    feedback_id = rated.json()["feedbackId"]
    before = snapshot(world)
    response = call(world.app, "DELETE", FEEDBACK, world.mallory, {"feedbackId": feedback_id})
    assert_unchanged(world, before)
    refused(response)


async def test_another_user_cannot_take_over_alices_feedback_id(
    world: World, target: Posted
) -> None:
    """mallory rates her own message under the id of alice's rating; alice must still
    be able to withdraw her rating afterwards, and her thread must not change."""
    rated = feedback(world, world.alice, target.answer_step, target.id, value=1)
    assert rated.status_code == 200, rated.text
    feedback_id = rated.json()["feedbackId"]
    before = snapshot(world)
    feedback(world, world.mallory, world.mallory_answer, world.mallory_thread, id=feedback_id)
    assert_unchanged(world, before)
    withdrawn = call(world.app, "DELETE", FEEDBACK, world.alice, {"feedbackId": feedback_id})
    assert withdrawn.status_code == 200, withdrawn.text
    thread = settled(world.app, world.alice, target.id)
    answer = next(s for s in thread["steps"] if s["id"] == target.answer_step)
    assert answer["feedback"] is None, f"alice's rating could not be withdrawn: {answer}"


# -- edit_message: HOLE today -------------------------------------------------------------


async def share_read(world: World, thread: Posted) -> None:
    call(world.app, "GET", f"/project/share/{thread.id}", world.mallory)


async def resume_attempt(world: World, thread: Posted) -> None:
    import socketio

    with pytest.raises(socketio.exceptions.ConnectionError):
        await Session(world.app, world.mallory, thread_id=thread.id).open()


@pytest.mark.parametrize(
    "read",
    [
        pytest.param(share_read, id="share-route"),
        pytest.param(resume_attempt, id="resume-attempt"),
    ],
)
async def test_editing_a_message_deletes_nothing_of_another_user(
    world: World,
    target: Posted,
    read: Callable[[World, Posted], Awaitable[None]],
) -> None:
    """HOLE today: Chainlit deletes the messages after an edited one by step id alone,
    and the client chooses message ids. mallory sends messages whose ids are alice's
    step ids, reads alice's thread (the layer then remembers alice's thread as where
    those ids live), and edits her first message: alice's steps and files go."""
    before = snapshot(world)
    async with Session(world.app, world.mallory) as session:
        first = await session.send("my own words")
        await session.send("borrowed", message_id=target.answer_step)
        await session.send("borrowed", message_id=target.user_step)
        own = session.thread
        assert own
        # Her three answers' files have landed, so her messages have too.
        assert wait_for(lambda: journal_of(world.app, own).count('"op":"element"') >= 6)
        await read(world, target)
        await session.edit(first, "my own words, edited")
        # The removals are queued before the app answers the edit; its answer's files
        # land after them.
        assert wait_for(lambda: journal_of(world.app, own).count('"op":"element"') >= 8)
    assert_unchanged(world, before)


# -- the legitimate paths keep working ----------------------------------------------------


def rating(world: World, thread: Posted) -> dict[str, Any] | None:
    shown = settled(world.app, world.alice, thread.id)
    answer = next(s for s in shown["steps"] if s["id"] == thread.answer_step)
    given: dict[str, Any] | None = answer["feedback"]
    return given


@pytest.mark.parametrize("which", ["shared", "private"])
async def test_alice_rates_rerates_and_unrates_her_own_messages(world: World, which: str) -> None:
    """As the UI does it: the message's thread id, then the same feedback id again."""
    thread = await post(world, shared=which == "shared")
    rated = feedback(world, world.alice, thread.answer_step, thread.id, value=1, comment="ok")
    assert rated.status_code == 200, rated.text
    feedback_id = rated.json()["feedbackId"]
    assert rating(world, thread) == {
        "id": feedback_id,
        "forId": thread.answer_step,
        "value": 1,
        "comment": "ok",
    }
    again = feedback(world, world.alice, thread.answer_step, thread.id, value=0, id=feedback_id)
    assert again.status_code == 200, again.text
    assert (rating(world, thread) or {}).get("value") == 0
    withdrawn = call(world.app, "DELETE", FEEDBACK, world.alice, {"feedbackId": feedback_id})
    assert withdrawn.status_code == 200, withdrawn.text
    assert rating(world, thread) is None


async def test_alice_rates_without_naming_the_thread(world: World) -> None:
    """A rating without ``threadId`` (the layer finds the step) still works for the
    author."""
    thread = await post(world, shared=False)
    rated = feedback(world, world.alice, thread.answer_step, None, value=1)
    assert rated.status_code == 200, rated.text
    assert (rating(world, thread) or {}).get("id") == rated.json()["feedbackId"]


async def test_alice_renames_shares_and_unshares_her_thread(world: World) -> None:
    thread = await post(world, shared=False)
    renamed = call(
        world.app, "PUT", "/project/thread", world.alice, {"threadId": thread.id, "name": "mine"}
    )
    assert renamed.status_code == 200, renamed.text
    assert (manifest_of(world.app, thread.id) or {})["name"] == "mine"
    assert share(world.app, world.alice, thread.id).status_code == 200
    assert call(world.app, "GET", f"/project/share/{thread.id}", world.mallory).status_code == 200
    assert share(world.app, world.alice, thread.id, on=False).status_code == 200
    refused(call(world.app, "GET", f"/project/share/{thread.id}", world.mallory))


async def test_alice_changes_and_deletes_elements_of_her_own_thread(world: World) -> None:
    async with Session(world.app, world.alice) as session:
        await session.send("a thread to edit")
        assert session.thread
        thread = session.thread
        world.alice_threads.add(thread)
        shown = wait_for(
            lambda: (lambda t: t if len(t["elements"]) >= 2 else None)(
                get_thread(world.app, world.alice, thread).json()
            )
        )
        answer = next(s for s in shown["steps"] if s["type"] == "assistant_message")["id"]
        image = next(e for e in shown["elements"] if e["type"] == "image")["id"]
        custom = str(uuid.uuid4())
        body = {
            "id": custom,
            "type": "custom",
            "threadId": thread,
            "forId": answer,
            "name": "Counter",
            "display": "inline",
            "props": {"count": 1},
        }
        put = call(
            world.app,
            "PUT",
            "/project/element",
            world.alice,
            {"element": body, "sessionId": session.id},
        )
        assert put.status_code == 200 and put.json() == {"success": True}, put.text
        assert wait_for(
            lambda: any(
                e["id"] == custom and e["props"] == {"count": 1}
                for e in get_thread(world.app, world.alice, thread).json()["elements"]
            )
        )
        deleted = call(
            world.app,
            "DELETE",
            "/project/element",
            world.alice,
            {
                "element": {**body, "id": image, "name": "picture.png"},
                "sessionId": session.id,
            },
        )
        assert deleted.status_code == 200 and deleted.json() == {"success": True}, deleted.text
        elements = get_thread(world.app, world.alice, thread).json()["elements"]
        assert image not in {e["id"] for e in elements}
        assert not list((world.threads / thread / "elements").glob(f"{image}*"))


async def test_a_shared_threads_viewer_gets_none_of_the_authors_saved_session(
    world: World,
) -> None:
    """Chainlit's share page hands a shared thread's metadata to every viewer, taking out
    only the chat profile, the chat settings and ``env``: the rest of the author's saved
    session (the author's user record, the page they came from, their languages, what
    the app keeps in ``cl.user_session``) is for the author's resume, not for viewers.
    The author's own read still gets it back."""
    own = get_thread(world.app, world.alice, world.shared.id).json()
    kept = set(own["metadata"])
    assert {"client_type", "user", "resumed"} & kept, kept  # the session, for alice
    shown = call(world.app, "GET", f"/project/share/{world.shared.id}", world.mallory)
    assert shown.status_code == 200, shown.text
    seen = set(shown.json()["metadata"])
    assert seen <= {"is_shared", "shared_at"}, seen
    assert shown.json()["steps"] == own["steps"]


async def test_alices_app_session_still_writes_her_shared_thread(world: World) -> None:
    """Her own session keeps writing, and so does a resumed session of a thread she
    shared (the app's own code writes there on her behalf)."""
    thread = await post(world, shared=True)
    async with Session(world.app, world.alice, thread_id=thread.id) as session:
        await session.send("a second message, after resuming")
    shown = settled(world.app, world.alice, thread.id, answers=2)
    said = [s["output"] for s in shown["steps"] if s["type"] == "user_message"]
    assert said == [thread.text, "a second message, after resuming"]
    assert len(shown["elements"]) == 4
