"""queue_until_user_message: queued in a websocket session until the first message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chainlit")

from chainlit.context import init_http_context, init_ws_context
from chainlit.element import Text
from chainlit.session import WebsocketSession

from filelayer import FileDataLayer
from tests.support.layer import end_session


def websocket_session(thread_id: str) -> WebsocketSession:
    async def emit_call(*args: Any) -> None:
        return None

    return WebsocketSession(
        id="session-1",
        socket_id="socket-1",
        emit=lambda *args: None,
        emit_call=emit_call,
        user_env={},
        client_type="webapp",
        thread_id=thread_id,
    )


async def test_writes_wait_for_the_first_user_message(root: Path, in_tmp: Path) -> None:
    session = websocket_session("t1")
    init_ws_context(session)
    layer = FileDataLayer(root)
    await layer.create_step(
        {"id": "s1", "threadId": "t1", "type": "assistant_message", "output": "welcome"}
    )
    await layer.update_step({"id": "s1", "threadId": "t1", "output": "welcome!"})
    await layer.create_element(Text(name="t", content="x", for_id="s1", thread_id="t1"))
    assert not (root / "threads" / "t1").exists()
    assert set(session.thread_queues) == {"create_step", "update_step", "create_element"}

    session.has_first_interaction = True
    await session.flush_method_queue()
    thread = await layer.get_thread("t1")
    assert thread is not None
    assert [s["output"] for s in thread["steps"]] == ["welcome!"]
    assert len(thread["elements"]) == 1
    await end_session(session)


async def test_outside_a_websocket_session_writes_run_at_once(root: Path, in_tmp: Path) -> None:
    init_http_context()
    layer = FileDataLayer(root)
    await layer.create_step({"id": "s1", "threadId": "t1", "type": "run"})
    assert (root / "threads" / "t1" / "steps.jsonl").exists()
