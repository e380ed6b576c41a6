"""How ``FileDataLayer`` learns who is calling, and hands it to the store.

In a Chainlit session (socket events, Chainlit's element routes) the caller is the
session's user; in Chainlit's plain HTTP routes (feedback) it is the logged-in user of
the request being served; elsewhere (the app's own code, scripts) nobody, which is the
app itself. The end-to-end attacks through a real ``chainlit run`` are in
``test_authorization.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chainlit")

from chainlit.context import init_http_context
from chainlit.types import Feedback
from chainlit.user import User
from starlette.requests import Request

from filelayer import FileDataLayer, NotAuthorError, UnknownStepError
from filelayer.chainlit import serve


def step(thread: str, sid: str, text: str = "hi") -> dict[str, Any]:
    return {
        "id": sid,
        "threadId": thread,
        "type": "assistant_message",
        "output": text,
        "createdAt": "2026-01-01T00:00:01.000000Z",
    }


@pytest.fixture
async def layer(root: Any, in_tmp: Any) -> AsyncIterator[FileDataLayer]:
    """alice's thread ``ta`` and mallory's ``tm``, written by the app itself."""
    layer = FileDataLayer(root)
    for who, thread in (("alice", "ta"), ("mallory", "tm")):
        user = layer.store.upsert_user(who)
        layer.store.update_thread(thread, name=who, user_id=user["id"])
        layer.store.write_step(step(thread, f"{thread}-s1"))
    yield layer


def as_session_of(who: str | None, thread: str = "tm") -> None:
    """Run the rest of the test inside a Chainlit session of ``who``."""
    init_http_context(thread_id=thread, user=User(identifier=who) if who else None)


def request_of(who: str | None) -> Request:
    """An HTTP request whose login was already checked (what the middleware's
    authentication keeps with the request)."""
    user = User(identifier=who) if who else None
    return Request({"type": "http", "headers": [], "state": {serve._USER_KEY: user}})


async def test_no_user_in_sight_is_the_app(layer: FileDataLayer) -> None:
    assert await layer.actor() is None
    as_session_of(None)  # an app without login
    assert await layer.actor() is None
    await layer.update_step(step("ta", "ta-s1", "edited by the app"))  # type: ignore[arg-type]


async def test_a_session_user_is_the_caller(layer: FileDataLayer) -> None:
    as_session_of("mallory")
    assert await layer.actor() == "mallory"
    with pytest.raises(NotAuthorError):
        await layer.update_step(step("ta", "ta-s1", "pwned"))  # type: ignore[arg-type]
    with pytest.raises(NotAuthorError):
        await layer.delete_element("ea", "ta")
    with pytest.raises(NotAuthorError):
        await layer.update_thread("ta", name="pwned")
    await layer.update_step(step("tm", "tm-s1", "her own"))  # type: ignore[arg-type]
    thread = await layer.get_thread("ta")
    assert thread is not None and thread["steps"][0]["output"] == "hi"


async def test_the_request_user_is_the_caller_of_plain_http_routes(
    layer: FileDataLayer,
) -> None:
    with serve.serving(request_of("mallory")):
        assert await layer.actor() == "mallory"
        with pytest.raises(NotAuthorError):
            await layer.upsert_feedback(Feedback(forId="ta-s1", value=0, threadId="ta"))
        # Found by lookup in a thread the caller did not name: refused without naming it.
        with pytest.raises(UnknownStepError) as refused:
            await layer.upsert_feedback(Feedback(forId="ta-s1", value=0))
        assert "ta" not in str(refused.value).replace("ta-s1", "")
        with pytest.raises(UnknownStepError):
            await layer.upsert_feedback(Feedback(forId="ta-s1", value=0, threadId="junk"))
    with serve.serving(request_of("alice")):
        fid = await layer.upsert_feedback(Feedback(forId="ta-s1", value=1, threadId="ta"))
    with serve.serving(request_of("mallory")), pytest.raises(NotAuthorError):
        await layer.delete_feedback(fid)
    with serve.serving(request_of(None)):
        assert await layer.actor() is None  # an anonymous request: Chainlit refuses it first
    thread = await layer.get_thread("ta")
    assert thread is not None and thread["steps"][0]["feedback"]["value"] == 1
    assert not (layer.root / "threads" / "junk").exists()


async def test_a_request_run_in_another_users_session_writes_nothing(
    layer: FileDataLayer,
) -> None:
    """Chainlit's ``PUT /feedback`` runs the app's ``on_feedback`` in the websocket
    session whose id the request names, without checking that it is the requester's
    (its element and action routes check): what the callback writes (a message, the
    thread's tags) is refused: neither the session owner's write nor the requester's."""
    from chainlit.context import init_ws_context
    from chainlit.session import WebsocketSession

    from tests.support.layer import end_session

    async def emit_call(*args: Any) -> None:
        return None

    alices = WebsocketSession(
        id="alices-session",
        socket_id="alices-socket",
        emit=lambda *args: None,
        emit_call=emit_call,
        user_env={},
        client_type="webapp",
        thread_id="ta",
        user=User(identifier="alice"),
    )
    alices.has_first_interaction = True
    try:
        init_ws_context(alices)
        with serve.serving(request_of("mallory")):
            with pytest.raises(NotAuthorError):
                await layer.actor()
            with pytest.raises(NotAuthorError):
                await layer.create_step(step("ta", "ta-s2", "injected"))  # type: ignore[arg-type]
            with pytest.raises(NotAuthorError):
                await layer.update_thread("ta", tags=["injected"])
        with serve.serving(request_of("alice")):  # her own request: her own session
            assert await layer.actor() == "alice"
        with serve.serving(request_of(None)):  # no login in the request: the session's
            assert await layer.actor() == "alice"
    finally:
        await end_session(alices)
    thread = await layer.get_thread("ta")
    assert thread is not None and [s["id"] for s in thread["steps"]] == ["ta-s1"]
    assert thread["tags"] != ["injected"]


async def test_a_request_in_another_users_session_before_its_first_message_queues_nothing(
    layer: FileDataLayer,
) -> None:
    """Before a session's first message Chainlit queues its writes, and runs them at
    that message in the session owner's own context: a write queued by another user's
    request (the app's ``on_feedback``, run in the session the request names) would land
    as the owner's, in the thread that first message makes. It is refused at once."""
    from chainlit.context import init_ws_context
    from chainlit.session import WebsocketSession

    from tests.support.layer import end_session

    async def emit_call(*args: Any) -> None:
        return None

    alices = WebsocketSession(
        id="alices-new-session",
        socket_id="alices-new-socket",
        emit=lambda *args: None,
        emit_call=emit_call,
        user_env={},
        client_type="webapp",
        thread_id="tnew",
        user=User(identifier="alice"),
    )
    alice = layer.store.get_user("alice")
    assert alice is not None

    async def mallorys_request() -> None:
        init_ws_context(alices)
        with serve.serving(request_of("mallory")):
            with pytest.raises(NotAuthorError):
                await layer.create_step(step("tnew", "injected", "pwned"))  # type: ignore[arg-type]
            with pytest.raises(NotAuthorError):
                await layer.delete_step("ta-s1")
            with pytest.raises(NotAuthorError):  # not queued, and no author to check yet
                await layer.update_thread("tnew", metadata={"is_shared": True})

    async def alices_first_message() -> None:
        init_ws_context(alices)
        alices.has_first_interaction = True
        await layer.update_thread("tnew", name="hi", user_id=alice["id"])
        await alices.flush_method_queue()

    try:
        await asyncio.create_task(mallorys_request())
        assert not alices.thread_queues
        await asyncio.create_task(alices_first_message())
    finally:
        await end_session(alices)
    thread = await layer.get_thread("tnew")
    assert thread is not None and thread["steps"] == []
    assert not thread["metadata"].get("is_shared")


async def test_a_delete_by_a_repeated_step_id_stays_in_the_session_thread(
    layer: FileDataLayer,
) -> None:
    """``edit_message`` deletes later messages by their (client-chosen) ids alone."""
    layer.store.write_step(step("tm", "ta-s1"))
    await layer.get_thread("ta")  # mallory viewed alice's shared thread
    as_session_of("mallory", thread="tm")
    await layer.delete_step("ta-s1")
    alice = await layer.get_thread("ta")
    mallory = await layer.get_thread("tm")
    assert alice is not None and [s["id"] for s in alice["steps"]] == ["ta-s1"]
    assert mallory is not None and [s["id"] for s in mallory["steps"]] == ["tm-s1"]


def test_the_middleware_is_installed_once() -> None:
    import chainlit.server as server

    serve.watch_callers()
    serve.watch_callers()
    ours = [m for m in server.app.user_middleware if m.cls is serve.CallerMiddleware]
    assert len(ours) == 1


def test_sharing_is_detected_wherever_chainlit_has_it() -> None:
    """The end-to-end attack suite is skipped on releases without thread sharing; it
    must never be skipped by mistake on one that has it (a skip is silent in CI)."""
    import chainlit.server

    from tests.support.layer import needs_thread_sharing

    source = Path(chainlit.server.__file__).read_text(encoding="utf-8")
    if "/project/thread/share" in source:
        assert not needs_thread_sharing().args[0]


async def test_an_anonymous_visitor_gets_no_saved_session_of_a_thread_without_author(
    layer: FileDataLayer,
) -> None:
    """In an app without login threads have no author, and Chainlit's share page answers
    every visitor (there is no login to ask for): an anonymous visitor is not known to be
    whoever wrote the thread, and no resume needs the session (Chainlit resumes for a
    logged-in user only). The app itself still reads it back."""
    saved = {
        "chat_settings": {},
        "chat_profile": None,
        "client_type": "webapp",
        "notes": "the app's private notes",
    }
    layer.store.update_thread("tn", name="no login")
    layer.store.update_thread("tn", metadata=saved)
    own = await layer.get_thread("tn")
    assert own is not None and own["metadata"]["notes"] == "the app's private notes"
    with serve.serving(request_of(None)):
        shown = await layer.get_thread("tn")
    assert shown is not None and "notes" not in shown["metadata"]
    with serve.serving(request_of("mallory")):
        shown = await layer.get_thread("tn")
    assert shown is not None and "notes" not in shown["metadata"]
