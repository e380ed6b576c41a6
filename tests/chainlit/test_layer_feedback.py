"""Feedback: on the rated step, with or without a thread id, deletable by id."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("chainlit")

from chainlit.types import Feedback, Pagination, ThreadFilter

from filelayer import FileDataLayer, UnknownStepError


async def turn(layer: Any, thread: str = "t1") -> None:
    await layer.create_step(
        {
            "id": f"{thread}-u",
            "threadId": thread,
            "type": "user_message",
            "output": "q",
            "createdAt": "2026-01-01T00:00:01.000000Z",
        }
    )
    await layer.create_step(
        {
            "id": f"{thread}-run",
            "threadId": thread,
            "type": "run",
            "name": "on_message",
            "createdAt": "2026-01-01T00:00:02.000000Z",
        }
    )
    await layer.create_step(
        {
            "id": f"{thread}-a",
            "threadId": thread,
            "parentId": f"{thread}-run",
            "type": "assistant_message",
            "output": "answer",
            "createdAt": "2026-01-01T00:00:03.000000Z",
        }
    )


def feedback_of(thread: dict[str, Any]) -> dict[str, Any]:
    return {s["id"]: s["feedback"] for s in thread["steps"] if s["feedback"]}


async def test_feedback_shows_on_the_rated_run_step(layer: Any) -> None:
    await turn(layer)
    fid = await layer.upsert_feedback(
        Feedback(forId="t1-run", value=1, comment="great", threadId="t1")
    )
    assert isinstance(fid, str) and fid
    assert feedback_of(await layer.get_thread("t1")) == {
        "t1-run": {"id": fid, "forId": "t1-run", "value": 1, "comment": "great"}
    }


async def test_feedback_without_a_thread_id_finds_its_step(layer: Any, root: Any) -> None:
    await turn(layer)
    # A fresh process has no memory of which thread the step is in.
    other = FileDataLayer(root)
    fid = await other.upsert_feedback(Feedback(forId="t1-run", value=0, comment="meh"))
    assert feedback_of(await layer.get_thread("t1"))["t1-run"]["id"] == fid


async def test_upserting_the_same_id_updates_it(layer: Any) -> None:
    await turn(layer)
    fid = await layer.upsert_feedback(Feedback(forId="t1-run", value=1, threadId="t1"))
    again = await layer.upsert_feedback(
        Feedback(id=fid, forId="t1-run", value=0, comment="changed my mind", threadId="t1")
    )
    assert again == fid
    fb = feedback_of(await layer.get_thread("t1"))["t1-run"]
    assert (fb["id"], fb["value"], fb["comment"]) == (fid, 0, "changed my mind")


async def test_delete_feedback_takes_only_the_id(layer: Any, user: Any, root: Any) -> None:
    await turn(layer)
    await layer.update_thread("t1", user_id=user.id)
    fid = await layer.upsert_feedback(Feedback(forId="t1-run", value=0, threadId="t1"))
    other = FileDataLayer(root)
    assert await other.delete_feedback(fid) is True
    assert feedback_of(await layer.get_thread("t1")) == {}
    page = await layer.list_threads(Pagination(first=5), ThreadFilter(userId=user.id, feedback=0))
    assert page.data == []
    assert await layer.delete_feedback(fid) is True  # twice is fine
    assert await layer.delete_feedback("unknown-id") is True


async def test_feedback_for_a_step_nowhere_without_thread_id_is_refused(layer: Any) -> None:
    with pytest.raises(ValueError):
        await layer.upsert_feedback(Feedback(forId="no-such-step", value=1))


async def test_feedback_before_its_step_is_refused_and_creates_nothing(layer: Any) -> None:
    """Feedback rates a step the user saw; like Chainlit's PostgreSQL layer (whose
    feedback row needs its thread), it never creates a thread."""
    with pytest.raises(UnknownStepError):
        await layer.upsert_feedback(Feedback(forId="t1-run", value=1, threadId="t1"))
    assert await layer.get_thread("t1") is None
    assert not (layer.root / "threads" / "t1").exists()
    await turn(layer)
    fid = await layer.upsert_feedback(Feedback(forId="t1-run", value=1, threadId="t1"))
    assert feedback_of(await layer.get_thread("t1"))["t1-run"]["id"] == fid


async def test_invalid_values_are_refused(layer: Any) -> None:
    await turn(layer)
    with pytest.raises(ValueError):
        await layer.store.upsert_feedback(for_id="t1-run", value=2, thread_id="t1")
