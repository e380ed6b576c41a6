"""Steps: out-of-order writes merge into the newest data, the order the UI needs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chainlit")

from chainlit.element import Image
from chainlit.types import Feedback

from tests.support.layer import needs_base_method


def step(sid: str, thread: str = "t1", **fields: Any) -> dict[str, Any]:
    return {"id": sid, "threadId": thread, "type": "undefined", **fields}


def at(second: int) -> str:
    return f"2026-03-01T10:00:{second:02d}.000000Z"


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
        metadata={"icon": "🔎", "n": 3},
        isError=False,
        showInput="json",
        language="json",
        tags=["x"],
        generation={"model": "scripted"},
        defaultOpen=True,
        waitForAnswer=False,
    )
    await layer.create_step(full)
    got = (await layer.get_thread("t1"))["steps"][0]
    for key, value in full.items():
        assert got[key] == value, key
    assert got["feedback"] is None
    assert got["streaming"] is False


async def test_update_before_create_keeps_the_final_output(layer: Any) -> None:
    await layer.update_step(step("a", type="assistant_message", output="final", end=at(3)))
    await layer.create_step(step("a", type="assistant_message", output="", createdAt=at(1)))
    got = (await layer.get_thread("t1"))["steps"][0]
    assert got["output"] == "final"
    assert got["createdAt"] == at(1)
    assert got["end"] == at(3)


async def test_an_empty_send_after_the_final_update_does_not_wipe_it(layer: Any) -> None:
    # Chainlit #2789: Message.send() persists "", update() the final text; the tasks race.
    await layer.create_step(step("a", type="assistant_message", output="", createdAt=at(1)))
    await layer.update_step(step("a", type="assistant_message", output="the answer"))
    await layer.update_step(step("a", type="assistant_message", output=""))
    got = (await layer.get_thread("t1"))["steps"][0]
    assert got["output"] == "the answer"


async def test_a_newer_non_empty_write_wins(layer: Any) -> None:
    await layer.create_step(step("a", output="draft", metadata={"v": 1}))
    await layer.update_step(step("a", output="edited", metadata={"v": 2}))
    got = (await layer.get_thread("t1"))["steps"][0]
    assert (got["output"], got["metadata"]) == ("edited", {"v": 2})


async def test_steps_come_in_time_order_parents_first_each_once(layer: Any) -> None:
    writes = [
        step("a1", type="assistant_message", parentId="run", output="hi", createdAt=at(3)),
        step("tool", type="tool", parentId="run", createdAt=at(2)),
        step("u1", type="user_message", output="hello", createdAt=at(1)),
        step("run", type="run", createdAt=at(2)),
        step("a1", type="assistant_message", output="hi there"),
        step("u2", type="user_message", output="more", createdAt=at(5)),
        step("nested", type="llm", parentId="tool", createdAt=at(1)),
    ]
    for w in writes:
        await layer.create_step(w)
    ids = [s["id"] for s in (await layer.get_thread("t1"))["steps"]]
    assert sorted(ids) == sorted({w["id"] for w in writes})
    assert ids[0] == "u1" and ids[-1] == "u2"
    for child, parent in [("a1", "run"), ("tool", "run"), ("nested", "tool")]:
        assert ids.index(parent) < ids.index(child)
    assert ids.index("tool") < ids.index("a1")  # siblings by time


async def test_a_step_may_arrive_before_its_thread(layer: Any, user: Any) -> None:
    await layer.create_step(step("u1", thread="new", type="user_message", output="first"))
    await layer.update_thread("new", name="first", user_id=user.id)
    thread = await layer.get_thread("new")
    assert thread["userIdentifier"] == "alice@example.com"
    assert [s["output"] for s in thread["steps"]] == ["first"]


async def test_delete_step_removes_it_with_feedback_and_elements(layer: Any, root: Path) -> None:
    await layer.create_step(step("keep", type="run", createdAt=at(1)))
    await layer.create_step(step("gone", type="run", createdAt=at(2)))
    fid = await layer.upsert_feedback(Feedback(forId="gone", value=1, threadId="t1"))
    image = Image(name="p.png", content=b"\x89PNG...", for_id="gone", thread_id="t1")
    await layer.create_element(image)
    assert len(list((root / "threads" / "t1" / "elements").iterdir())) == 1
    await layer.delete_step("gone")
    thread = await layer.get_thread("t1")
    assert [s["id"] for s in thread["steps"]] == ["keep"]
    assert thread["elements"] == []
    assert list((root / "threads" / "t1" / "elements").iterdir()) == []
    assert await layer.get_element("t1", image.id) is None
    # The deleted step's feedback is gone too: re-creating nothing brings it back.
    await layer.update_step(step("gone", output="late"))
    assert [s["id"] for s in (await layer.get_thread("t1"))["steps"]] == ["keep"]
    assert fid


async def test_deleting_an_unknown_step_is_harmless(layer: Any) -> None:
    await layer.delete_step("never")


@needs_base_method("set_step_favorite")
async def test_favorites(layer: Any, user: Any) -> None:
    await layer.update_thread("t1", user_id=user.id)
    await layer.create_step(step("m1", type="assistant_message", output="keep me"))
    await layer.create_step(step("m2", type="assistant_message", output="not me"))
    s1 = (await layer.get_thread("t1"))["steps"][0]
    returned = await layer.set_step_favorite(s1, True)
    assert returned["metadata"]["favorite"] is True
    favorites = await layer.get_favorite_steps(user.id)
    assert [f["id"] for f in favorites] == ["m1"]
    assert favorites[0]["output"] == "keep me"
    await layer.set_step_favorite((await layer.get_thread("t1"))["steps"][0], False)
    assert await layer.get_favorite_steps(user.id) == []
    assert await layer.get_favorite_steps("someone-else") == []


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


async def test_many_concurrent_writes_to_one_step_keep_the_newest_text(layer: Any) -> None:
    await layer.create_step(step("a", type="assistant_message", output="", createdAt=at(1)))
    await asyncio.gather(
        *(layer.update_step(step("a", output="")) for _ in range(50)),
        layer.update_step(step("a", output="final")),
        *(layer.update_step(step("a", output="")) for _ in range(50)),
    )
    assert (await layer.get_thread("t1"))["steps"][0]["output"] == "final"
