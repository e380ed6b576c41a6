"""Chainlit saves the whole user session into the thread at every disconnect
(``persist_user_session(thread, session.to_persistable())``): with Chainlit's own code,
visits to a committed thread leave ``git status`` clean, and ``resume_thread`` still
gets the chat settings and the app's session back."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chainlit")

from filelayer.cli import main
from tests.git.test_git_snapshot import init
from tests.support.git import git_out
from tests.support.layer import end_session

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


async def test_chainlits_own_session_saves_leave_git_status_clean(
    registered: object, user: object, root: Path
) -> None:
    """Chainlit's own code: ``persist_user_session(thread, session.to_persistable())`` at
    each disconnect, from a new session with the app's own keys, then ``resume_thread``."""
    from chainlit.session import WebsocketSession
    from chainlit.socket import persist_user_session, resume_thread
    from chainlit.user_session import user_sessions

    layer: object = registered
    await layer.update_thread("t", name="chat", user_id=user.id)  # type: ignore[attr-defined]

    async def emit_call(*args: object) -> None:
        return None

    def visit(n: int) -> WebsocketSession:
        return WebsocketSession(
            id=f"session-{n}",
            socket_id=f"socket-{n}",
            emit=lambda *args: None,
            emit_call=emit_call,
            user_env={},
            client_type="webapp",
            thread_id="t",
            user=user,  # type: ignore[arg-type]
        )

    first = visit(0)
    first.chat_settings = {"temperature": 0.3}
    user_sessions[first.id] = {"history": ["hello"]}
    await persist_user_session("t", first.to_persistable())
    user_sessions.pop(first.id, None)
    await end_session(first)
    init(root)
    assert main(["--root", str(root), "snapshot", "-m", "first visit"]) == 0
    for n in range(1, 4):
        session = visit(n)
        try:
            assert await resume_thread(session) is not None
            assert session.chat_settings == {"temperature": 0.3}
            assert user_sessions[session.id]["history"][0] == "hello"
            user_sessions[session.id]["history"].append(f"visit {n}")
            await persist_user_session("t", session.to_persistable())
        finally:
            user_sessions.pop(session.id, None)
            await end_session(session)
        assert git_out(root, "status", "--porcelain") == "", n
    thread = await layer.get_thread("t")  # type: ignore[attr-defined]
    assert thread["metadata"]["history"] == ["hello", "visit 1", "visit 2", "visit 3"]


async def test_a_session_saved_after_an_unshare_does_not_share_the_thread_again(
    registered: object, user: object, root: Path
) -> None:
    """Chainlit copies a reopened thread's metadata (``is_shared`` with it) into the
    tab's session and saves that session back when the tab closes: a thread the
    author unshared meanwhile was shared again, readable by every logged-in user. A
    session save never decides sharing; the share and unshare calls do."""
    from chainlit.session import WebsocketSession
    from chainlit.socket import persist_user_session, resume_thread
    from chainlit.user_session import user_sessions

    layer: Any = registered
    await layer.update_thread("t", name="chat", user_id=user.id)  # type: ignore[attr-defined]
    shared = {"is_shared": True, "shared_at": "2026-03-01T10:00:00.000000Z"}
    await layer.update_thread("t", metadata=shared)  # Chainlit's share route

    async def emit_call(*args: object) -> None:
        return None

    session = WebsocketSession(
        id="tab",
        socket_id="socket-tab",
        emit=lambda *args: None,
        emit_call=emit_call,
        user_env={},
        client_type="webapp",
        thread_id="t",
        user=user,  # type: ignore[arg-type]
    )
    try:
        assert await resume_thread(session) is not None  # the tab reopens the thread
        assert user_sessions[session.id].get("is_shared") is True
        await layer.update_thread("t", metadata={"is_shared": False})  # unshared
        await persist_user_session("t", session.to_persistable())  # the tab closes
    finally:
        user_sessions.pop(session.id, None)
        await end_session(session)
    thread = await layer.get_thread("t")
    assert thread["metadata"].get("is_shared") is False
    manifest = (root / "threads" / "t" / "thread.json").read_text("utf-8")
    assert '"is_shared": false' in manifest


async def test_a_saved_session_keeps_no_session_id_for_a_threads_viewers(
    registered: object, user: object, root: Path
) -> None:
    """A session that used ``cl.user_session`` holds its own id there, and Chainlit
    saves it with the thread; ``get_thread`` gives the saved session back, and
    Chainlit's share page hands it to every viewer of a shared thread. That id is what
    Chainlit's ``PUT /feedback`` needs to run the app's ``on_feedback`` in the author's
    live session (a reconnecting tab keeps it): it is never kept. A resume does not
    need it: ``cl.user_session`` sets the new session's own id."""
    import chainlit as cl
    from chainlit.context import init_ws_context
    from chainlit.session import WebsocketSession
    from chainlit.socket import persist_user_session, resume_thread
    from chainlit.user_session import user_sessions

    layer: Any = registered
    await layer.update_thread("t", name="chat", user_id=user.id)  # type: ignore[attr-defined]

    async def emit_call(*args: object) -> None:
        return None

    def tab(name: str) -> WebsocketSession:
        return WebsocketSession(
            id=name,
            socket_id=f"socket-{name}",
            emit=lambda *args: None,
            emit_call=emit_call,
            user_env={},
            client_type="webapp",
            thread_id="t",
            user=user,  # type: ignore[arg-type]
        )

    first = tab("authors-live-session")
    try:
        init_ws_context(first)
        cl.user_session.set("history", ["hello"])
        assert cl.user_session.get("history") == ["hello"]  # a get copies the id in
        assert user_sessions[first.id]["id"] == first.id
        await persist_user_session("t", first.to_persistable())
    finally:
        user_sessions.pop(first.id, None)
        await end_session(first)
    thread = await layer.get_thread("t")
    assert thread["metadata"]["history"] == ["hello"]
    assert "authors-live-session" not in repr(thread)
    assert not any(
        b"authors-live-session" in p.read_bytes() for p in root.rglob("*") if p.is_file()
    )
    later = tab("later")
    try:
        assert await resume_thread(later) is not None
        init_ws_context(later)
        assert cl.user_session.get("id") == "later"
        assert cl.user_session.get("history") == ["hello"]
    finally:
        user_sessions.pop(later.id, None)
        await end_session(later)


async def test_chainlits_share_route_shares_and_unshares_and_commits_no_session(
    registered: object, user: object, root: Path
) -> None:
    """Chainlit's ``PUT /project/thread/share`` reads the thread, sets ``is_shared`` and
    hands the whole metadata back, the saved session with it. Once a session with a
    chat profile was saved, that looked like a session save, whose sharing keys are
    never taken: the unshare was lost and the thread stayed readable by every logged-in
    user. Without a profile, the whole session (the app's ``cl.user_session``, the
    user's environment when the app persists it) was committed into ``thread.json``."""
    from chainlit.context import init_ws_context
    from chainlit.server import share_thread
    from chainlit.session import WebsocketSession
    from chainlit.socket import persist_user_session
    from chainlit.types import ShareThreadRequest
    from chainlit.user_session import user_sessions

    layer: Any = registered
    await layer.update_thread("t", name="chat", user_id=user.id)  # type: ignore[attr-defined]

    async def share(on: bool) -> None:
        await share_thread(None, ShareThreadRequest(threadId="t", isShared=on), user)  # type: ignore[arg-type]

    async def emit_call(*args: object) -> None:
        return None

    async def tab_closes(profile: str | None) -> None:
        session = WebsocketSession(
            id=f"tab-{profile}",
            socket_id=f"socket-{profile}",
            emit=lambda *args: None,
            emit_call=emit_call,
            user_env={},
            client_type="webapp",
            thread_id="t",
            user=user,  # type: ignore[arg-type]
            chat_profile=profile,
        )
        try:
            init_ws_context(session)
            user_sessions[session.id] = {"notes": "the app's private notes"}
            await persist_user_session("t", session.to_persistable())
        finally:
            user_sessions.pop(session.id, None)
            await end_session(session)

    manifest = root / "threads" / "t" / "thread.json"
    for profile in ("default", None):
        await share(True)  # shared while the tab is open
        await asyncio.create_task(tab_closes(profile))  # in the socket's own context
        thread = await layer.get_thread("t")
        assert thread["metadata"]["is_shared"] is True
        await share(False)
        thread = await layer.get_thread("t")
        assert thread["metadata"]["is_shared"] is False, profile
        assert thread["metadata"]["notes"] == "the app's private notes"
        await share(True)
        assert (await layer.get_thread("t"))["metadata"]["is_shared"] is True
        assert "private notes" not in manifest.read_text("utf-8"), profile
        await share(False)
