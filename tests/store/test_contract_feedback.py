"""Feedback: on the rated step, with or without a thread id, deletable by id.

The contract of ``tests/support/drivers.py``: each test runs on ``ArchiveStore`` and
through ``FileDataLayer`` (with Chainlit's ``Feedback``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from filelayer import UnknownStepError
from tests.support.drivers import Driver


async def turn(driver: Driver, thread: str = "t1") -> None:
    await driver.create_step(
        {
            "id": f"{thread}-u",
            "threadId": thread,
            "type": "user_message",
            "output": "q",
            "createdAt": "2026-01-01T00:00:01.000000Z",
        }
    )
    await driver.create_step(
        {
            "id": f"{thread}-run",
            "threadId": thread,
            "type": "run",
            "name": "on_message",
            "createdAt": "2026-01-01T00:00:02.000000Z",
        }
    )
    await driver.create_step(
        {
            "id": f"{thread}-a",
            "threadId": thread,
            "parentId": f"{thread}-run",
            "type": "assistant_message",
            "output": "answer",
            "createdAt": "2026-01-01T00:00:03.000000Z",
        }
    )


async def feedback_of(driver: Driver, thread_id: str = "t1") -> dict[str, Any]:
    thread = await driver.get_thread(thread_id)
    assert thread is not None
    return {s["id"]: s["feedback"] for s in thread["steps"] if s["feedback"]}


async def test_feedback_shows_on_the_rated_run_step(driver: Driver) -> None:
    await turn(driver)
    fid = await driver.upsert_feedback("t1-run", 1, comment="great", thread_id="t1")
    assert isinstance(fid, str) and fid
    assert await feedback_of(driver) == {
        "t1-run": {"id": fid, "forId": "t1-run", "value": 1, "comment": "great"}
    }


async def test_feedback_without_a_thread_id_finds_its_step(driver: Driver) -> None:
    await turn(driver)
    # A fresh process has no memory of which thread the step is in.
    fid = await driver.another_worker().upsert_feedback("t1-run", 0, comment="meh")
    assert (await feedback_of(driver))["t1-run"]["id"] == fid


async def test_upserting_the_same_id_updates_it(driver: Driver) -> None:
    await turn(driver)
    fid = await driver.upsert_feedback("t1-run", 1, thread_id="t1")
    again = await driver.upsert_feedback(
        "t1-run", 0, comment="changed my mind", feedback_id=fid, thread_id="t1"
    )
    assert again == fid
    fb = (await feedback_of(driver))["t1-run"]
    assert (fb["id"], fb["value"], fb["comment"]) == (fid, 0, "changed my mind")


async def test_delete_feedback_takes_only_the_id(driver: Driver, alice: Any) -> None:
    await turn(driver)
    await driver.update_thread("t1", user_id=alice["id"])
    fid = await driver.upsert_feedback("t1-run", 0, thread_id="t1")
    assert await driver.another_worker().delete_feedback(fid) is True
    assert await feedback_of(driver) == {}
    assert (await driver.list_threads(alice["id"], first=5, feedback=0)).threads == []
    assert await driver.delete_feedback(fid) is True  # twice is fine
    assert await driver.delete_feedback("unknown-id") is True


async def test_feedback_for_a_step_nowhere_without_thread_id_is_refused(driver: Driver) -> None:
    with pytest.raises(ValueError):
        await driver.upsert_feedback("no-such-step", 1)


async def test_feedback_before_its_step_is_refused_and_creates_nothing(
    driver: Driver, root: Path
) -> None:
    """Feedback rates a step the user saw; like Chainlit's PostgreSQL layer (whose
    feedback row needs its thread), it never creates a thread."""
    with pytest.raises(UnknownStepError):
        await driver.upsert_feedback("t1-run", 1, thread_id="t1")
    assert await driver.get_thread("t1") is None
    assert not (root / "threads" / "t1").exists()
    await turn(driver)
    fid = await driver.upsert_feedback("t1-run", 1, thread_id="t1")
    assert (await feedback_of(driver))["t1-run"]["id"] == fid


async def test_invalid_values_are_refused(driver: Driver) -> None:
    await turn(driver)
    with pytest.raises(ValueError):
        await driver.upsert_feedback("t1-run", 2, thread_id="t1")
    with pytest.raises(ValueError):
        driver.store.upsert_feedback(for_id="t1-run", value=2, thread_id="t1")
    assert await feedback_of(driver) == {}
