"""Steps, as Chainlit's own code writes them: ``Message.send``/``stream_token``/``update``
and ``Step`` as fire-and-forget tasks, and a favorite toggled with the dict Chainlit
holds. What the step calls do is the contract in ``tests/store/test_contract_steps.py``
(run through this layer too)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chainlit")

from chainlit.types import Feedback

from tests.support.layer import needs_base_method, options_of


async def steps_of(layer: Any, thread: str = "t1") -> list[dict[str, Any]]:
    got = await layer.get_thread(thread)
    assert got is not None
    return list(got["steps"])


async def test_chainlits_own_message_send_stream_and_update_persist_the_final_text(
    registered: Any,
) -> None:
    import chainlit as cl
    from chainlit.context import init_http_context

    context = init_http_context(thread_id="8d0c3c52-5b1f-4a0e-9a53-3a2c1b0d9e11")
    message = cl.Message(content="")
    await message.send()
    for token in ["Hello", ", ", "world"]:
        await message.stream_token(token)
    await message.update()
    async with cl.Step(name="lookup", type="tool") as tool:
        tool.output = "found it"
    await settle()
    steps = await steps_of(registered, context.session.thread_id)
    by_id = {s["id"]: s for s in steps}
    assert by_id[message.id]["output"] == "Hello, world"
    assert by_id[message.id]["type"] == "assistant_message"
    assert by_id[tool.id]["output"] == "found it"
    assert len(steps) == 2


async def settle() -> None:
    """Wait for the tasks Chainlit fired and forgot (its data-layer writes)."""
    for _ in range(10):
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if not pending:
            return
        await asyncio.wait(pending, timeout=30)


@needs_base_method("set_step_favorite")
async def test_unfavouriting_stores_only_the_step(layer: Any, user: Any, root: Path) -> None:
    """Chainlit un-favourites with the dict get_favorite_steps gave it (feedback and
    ``streaming`` included, as get_thread made them) and live steps send ``streaming``:
    neither is stored, so no stale copy of the feedback outlives the real one."""
    import json

    from chainlit.step import Step

    await layer.update_thread("t1", user_id=user.id)
    live = Step(name="Assistant", type="assistant_message", thread_id="t1")
    live.output, live.streaming = "keep me", True
    await layer.create_step(live.to_dict())
    await layer.upsert_feedback(Feedback(forId=live.id, value=1, threadId="t1", id="f1"))
    [read] = (await layer.get_thread("t1"))["steps"]
    await layer.set_step_favorite(read, True)
    [favorite] = await layer.get_favorite_steps(user.id)
    assert favorite["feedback"]["value"] == 1
    await layer.set_step_favorite(favorite, False)  # what Chainlit's socket handler does
    await layer.delete_feedback("f1")

    lines = (root / "threads" / "t1" / "steps.jsonl").read_text("utf-8").splitlines()
    bodies = [r["step"] for r in map(json.loads, lines) if r["op"] == "step"]
    assert len(bodies) == 3
    assert [sorted({"feedback", "streaming"} & set(b)) for b in bodies] == [[], [], []]
    [step] = (await layer.get_thread("t1"))["steps"]
    assert (step["feedback"], step["streaming"]) == (None, False)
    assert step["metadata"]["favorite"] is False and step["output"] == "keep me"
    assert await layer.get_favorite_steps(user.id) == []


async def test_every_field_chainlits_own_steps_send_is_accepted(layer: Any) -> None:
    """The field types the store checks are the ones Chainlit's ``Step.to_dict()`` and
    ``Message.to_dict()`` produce, with every option set."""
    import chainlit as cl
    from chainlit.context import init_http_context

    init_http_context(thread_id="t1")
    tool = cl.Step(
        **options_of(
            cl.Step,
            name="lookup",
            type="tool",
            metadata={"k": 1},
            tags=["a"],
            language="python",
            icon="search",
            default_open=True,
            auto_collapse=True,
            show_input="python",
        )
    )
    tool.input = {"q": "bread"}  # Chainlit makes text of it
    tool.output = 42
    tool.is_error = True
    tool.start, tool.end = tool.created_at, tool.created_at
    message = cl.Message(
        **options_of(
            cl.Message,
            content="hi",
            author="Bot",
            language="markdown",
            metadata={"m": 1},
            tags=["t"],
            parent_id=tool.id,
            command="search",
            modes={"model": "fast"},
        )
    )
    for sent in (tool.to_dict(), message.to_dict()):
        await layer.create_step(sent)
        await layer.update_step(sent)
    by_id = {s["id"]: s for s in await steps_of(layer)}
    assert by_id[tool.id]["output"] == "42" and by_id[tool.id]["showInput"] == "python"
    assert by_id[message.id].get("modes") == message.to_dict().get("modes")


async def test_a_message_whose_content_is_no_text_changes_nothing_stored(
    registered: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An app that sets ``content`` to a number after ``send()`` made Chainlit send
    ``output=5``: refused (and logged, the task being Chainlit's own), the text stays."""
    import chainlit as cl
    from chainlit.context import init_http_context

    context = init_http_context(thread_id="t1")
    message = cl.Message(content="the answer")
    await message.send()
    await settle()
    message.content = 5  # type: ignore[assignment]
    await message.update()
    await settle()
    [stored] = await steps_of(registered, context.session.thread_id)
    assert stored["output"] == "the answer"
    assert "output" in caplog.text
