"""Steps: upserts that merge whatever order Chainlit's fire-and-forget tasks land in, and
the order the UI needs back (time order, parents first, each id once)."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chainlit")

from chainlit.element import File, Image
from chainlit.types import Feedback

from filelayer import FileDataLayer
from tests.support.layer import at, listed, needs_base_method, step


async def steps_of(layer: Any, thread: str = "t1") -> list[dict[str, Any]]:
    got = await layer.get_thread(thread)
    assert got is not None
    return list(got["steps"])


async def ids_of(layer: Any, thread: str = "t1") -> list[str]:
    return [s["id"] for s in await steps_of(layer, thread)]


async def test_a_step_round_trips_with_every_field(layer: Any) -> None:
    full = step(
        "s1",
        name="search",
        type="tool",
        parentId=None,
        input='{"q": "bread"}',
        output="3 results",
        createdAt=at(1),
        start=at(1),
        end=at(2),
        metadata={"icon": "🔎", "n": 3, "nested": {"list": [1, "two", None]}},
        isError=False,
        showInput="json",
        language="json",
        tags=["x", "y"],
        generation={"model": "scripted", "temperature": 0.5},
        defaultOpen=True,
        autoCollapse=False,
        waitForAnswer=False,
    )
    await layer.create_step(full)
    [got] = await steps_of(layer)
    for key, value in full.items():
        assert got[key] == value, key
    assert got["feedback"] is None


# -- merging (Chainlit #2789 and friends) ------------------------------------------------

WRITES = {
    "send": step("a", type="assistant_message", output="", metadata={}, createdAt=at(1)),
    "update": step("a", type="assistant_message", output="the final answer", end=at(3)),
    "late-empty": step("a", type="assistant_message", output="", metadata={}),
}


@pytest.mark.parametrize("order", list(itertools.permutations(WRITES)), ids=lambda o: ">".join(o))
async def test_the_final_text_survives_every_arrival_order(layer: Any, order: Any) -> None:
    for name in order:
        method = layer.create_step if name == "send" else layer.update_step
        await method(dict(WRITES[name]))
    [got] = await steps_of(layer)
    assert got["output"] == "the final answer"
    assert got["createdAt"] == at(1)
    assert got["end"] == at(3)
    assert got["type"] == "assistant_message"


async def test_update_step_before_create_step_keeps_the_update(layer: Any) -> None:
    await layer.update_step(
        step("a", type="assistant_message", output="final", metadata={"k": 1}, end=at(3))
    )
    await layer.create_step(
        step("a", type="assistant_message", output="", metadata={}, createdAt=at(1), start=at(1))
    )
    [got] = await steps_of(layer)
    assert (got["output"], got["metadata"]) == ("final", {"k": 1})
    assert (got["createdAt"], got["start"], got["end"]) == (at(1), at(1), at(3))


async def test_a_newer_non_empty_write_wins(layer: Any) -> None:
    await layer.create_step(step("a", type="run", output="draft", metadata={"v": 1}))
    await layer.update_step(step("a", output="edited", metadata={"v": 2}, isError=True))
    [got] = await steps_of(layer)
    assert (got["output"], got["metadata"], got["isError"]) == ("edited", {"v": 2}, True)


async def test_an_update_without_type_or_name_keeps_them(layer: Any) -> None:
    await layer.create_step(step("a", name="Assistant", type="assistant_message", output="x"))
    await layer.update_step(step("a", output="y"))
    [got] = await steps_of(layer)
    assert (got["name"], got["type"], got["output"]) == ("Assistant", "assistant_message", "y")


async def test_many_concurrent_empty_writes_never_wipe_the_text(layer: Any) -> None:
    await layer.create_step(step("a", type="assistant_message", output="", createdAt=at(1)))
    await asyncio.gather(
        *(layer.update_step(step("a", output="")) for _ in range(50)),
        layer.update_step(step("a", output="final")),
        *(layer.update_step(step("a", output="")) for _ in range(50)),
    )
    [got] = await steps_of(layer)
    assert got["output"] == "final"


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


# -- order -----------------------------------------------------------------------------


async def test_steps_come_in_time_order_parents_first_each_id_once(layer: Any) -> None:
    writes = [
        step("a1", type="assistant_message", parentId="run", output="hi", createdAt=at(3)),
        step("tool", type="tool", parentId="run", createdAt=at(2)),
        step("u1", type="user_message", output="hello", createdAt=at(1)),
        step("run", type="run", createdAt=at(2)),
        step("a1", type="assistant_message", output="hi there"),
        step("u2", type="user_message", output="more", createdAt=at(5)),
        step("nested", type="llm", parentId="tool", createdAt=at(1)),
        step("tool", output="tool output"),
    ]
    for w in writes:
        await layer.create_step(w)
    ids = await ids_of(layer)
    assert len(ids) == len(set(ids)) == 6
    assert ids[0] == "u1" and ids[-1] == "u2"
    for child, parent in [("a1", "run"), ("tool", "run"), ("nested", "tool")]:
        assert ids.index(parent) < ids.index(child)
    assert ids.index("tool") < ids.index("a1")  # siblings by time


async def test_a_child_written_and_timestamped_before_its_parent_comes_after_it(
    layer: Any,
) -> None:
    # Chainlit #1788: the on_message run step and its children race to be written.
    await layer.create_step(
        step("child", type="assistant_message", parentId="run", createdAt=at(1))
    )
    await layer.create_step(step("grandchild", type="tool", parentId="child", createdAt=at(0)))
    await layer.create_step(step("run", type="run", name="on_message", createdAt=at(2)))
    ids = await ids_of(layer)
    assert ids == ["run", "child", "grandchild"]


async def test_steps_with_the_same_time_keep_their_arrival_order(layer: Any) -> None:
    for sid in ["first", "second", "third", "fourth"]:
        await layer.create_step(step(sid, type="run", createdAt=at(7)))
    await layer.update_step(step("first", output="updated later"))
    assert await ids_of(layer) == ["first", "second", "third", "fourth"]


async def test_time_order_not_arrival_order(layer: Any) -> None:
    for n in [5, 1, 4, 2, 3]:
        await layer.create_step(step(f"s{n}", type="run", createdAt=at(n)))
    assert await ids_of(layer) == ["s1", "s2", "s3", "s4", "s5"]


async def test_a_step_whose_parent_is_missing_is_still_returned(layer: Any) -> None:
    await layer.create_step(step("orphan", type="tool", parentId="gone", createdAt=at(1)))
    assert await ids_of(layer) == ["orphan"]


async def test_a_step_may_arrive_before_its_thread_exists(layer: Any, user: Any) -> None:
    await layer.create_step(step("u1", thread="new", type="user_message", output="first"))
    await layer.update_thread("new", name="first", user_id=user.id)
    thread = await layer.get_thread("new")
    assert thread["userIdentifier"] == "alice@example.com"
    assert thread["name"] == "first"
    assert [s["output"] for s in thread["steps"]] == ["first"]
    assert await listed(layer, user.id) == ["new"]


# -- delete_step -----------------------------------------------------------------------


async def test_delete_step_removes_the_step_its_feedback_and_its_elements(
    layer: Any, user: Any, root: Path
) -> None:
    await layer.update_thread("t1", user_id=user.id)
    await layer.create_step(step("keep", type="run", createdAt=at(1)))
    await layer.create_step(step("gone", type="run", createdAt=at(2)))
    await layer.upsert_feedback(Feedback(forId="gone", value=0, threadId="t1"))
    image = Image(name="p.png", content=b"\x89PNG-gone", for_id="gone", thread_id="t1")
    kept = File(name="k.txt", content=b"kept", for_id="keep", thread_id="t1")
    await layer.create_element(image)
    await layer.create_element(kept)
    assert len(list((root / "threads" / "t1" / "elements").iterdir())) == 2
    assert await listed(layer, user.id, feedback=0) == ["t1"]

    await layer.delete_step("gone")

    thread = await layer.get_thread("t1")
    assert [s["id"] for s in thread["steps"]] == ["keep"]
    assert [e["id"] for e in thread["elements"]] == [kept.id]
    assert [p.read_bytes() for p in (root / "threads" / "t1" / "elements").iterdir()] == [b"kept"]
    assert await layer.get_element("t1", image.id) is None
    assert await listed(layer, user.id, feedback=0) == []
    # A late write does not bring the deleted step back.
    await layer.update_step(step("gone", output="late"))
    assert await ids_of(layer) == ["keep"]


async def test_delete_step_by_id_alone_from_another_worker(layer: Any, root: Path) -> None:
    await layer.create_step(step("keep", type="run", createdAt=at(1)))
    await layer.create_step(step("gone", thread="t2", type="run", createdAt=at(1)))
    other = FileDataLayer(root)  # knows nothing of which thread holds the step
    await other.delete_step("gone")
    assert await ids_of(layer, "t2") == []
    assert await ids_of(layer) == ["keep"]


async def test_deleting_an_unknown_step_is_harmless(layer: Any) -> None:
    await layer.create_step(step("keep", type="run"))
    await layer.delete_step("never-existed")
    assert await ids_of(layer) == ["keep"]


# -- favorites -------------------------------------------------------------------------


@needs_base_method("set_step_favorite")
async def test_set_step_favorite_and_get_favorite_steps(layer: Any, user: Any) -> None:
    await layer.update_thread("t1", user_id=user.id)
    await layer.update_thread("t2", user_id=user.id)
    await layer.create_step(step("m1", type="assistant_message", output="keep me", createdAt=at(1)))
    await layer.create_step(step("m2", type="assistant_message", output="not me", createdAt=at(2)))
    await layer.create_step(
        step("m3", thread="t2", type="user_message", output="me too", createdAt=at(3))
    )
    s1 = (await steps_of(layer))[0]
    returned = await layer.set_step_favorite(s1, True)
    assert returned["metadata"]["favorite"] is True
    s3 = (await steps_of(layer, "t2"))[0]
    await layer.set_step_favorite(s3, True)

    favorites = await layer.get_favorite_steps(user.id)
    assert sorted(f["id"] for f in favorites) == ["m1", "m3"]
    outputs = {f["id"]: f["output"] for f in favorites}
    assert outputs == {"m1": "keep me", "m3": "me too"}
    assert all(f["metadata"]["favorite"] is True for f in favorites)
    assert (await steps_of(layer))[0]["output"] == "keep me"  # the text survives

    # Chainlit un-favorites with the dict get_favorite_steps gave it.
    fav = next(f for f in favorites if f["id"] == "m1")
    await layer.set_step_favorite(fav, False)
    assert [f["id"] for f in await layer.get_favorite_steps(user.id)] == ["m3"]
    assert await layer.get_favorite_steps("someone-else") == []
    await layer.delete_thread("t2")
    assert await layer.get_favorite_steps(user.id) == []
