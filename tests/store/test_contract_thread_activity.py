"""The sidebar shows recent activity first (issue #17).

Chainlit's UI re-sorts the threads ``list_threads`` gives it by ``createdAt`` and groups
them by that date ("Today", "Yesterday", "Previous 7 days"…). So ``list_threads`` gives
each thread's *activity* as ``createdAt`` (the later of its creation and its last
message, by the message's own time), pages by that same key, and keeps the true creation
time for ``get_thread`` and the manifest. Only a message is activity: a rename, a share,
feedback, or the session metadata Chainlit saves on every disconnect leave a thread where
it is.

The contract of ``tests/support/drivers.py``: each test runs on ``ArchiveStore`` and
through ``FileDataLayer``.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from filelayer import ArchiveStore
from filelayer._time import now_iso
from filelayer.transfer.copier import copy_archive
from tests.support.drivers import Driver, Page

BASE = datetime(2026, 10, 1, 9, 0, tzinfo=timezone.utc)


def when(days: int, seconds: int = 0) -> str:
    """A time ``days`` after 1 October 2026 (before these tests ran), Chainlit's format."""
    moment = BASE + timedelta(days=days, seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def tid(n: int) -> str:
    return f"t{n:02d}"


async def old_thread(driver: Driver, user_id: str, n: int, *, messages: bool = True) -> None:
    """Thread ``n``, made ``n`` days after BASE with a question and its answer, as
    ``filelayer copy`` or an import brings it: its own times, not the present."""
    driver.store.put_manifest(
        {
            "id": tid(n),
            "name": f"chat {n}",
            "userId": user_id,
            "tags": None,
            "metadata": {},
            "createdAt": when(n),
            "updatedAt": when(n, 5),
        }
    )
    if messages:
        await message(driver, tid(n), f"{tid(n)}-q", "user_message", when(n, 60))
        await message(driver, tid(n), f"{tid(n)}-a", "assistant_message", when(n, 90))


async def message(driver: Driver, thread_id: str, step_id: str, kind: str, at: str) -> None:
    await driver.create_step(
        {
            "id": step_id,
            "threadId": thread_id,
            "type": kind,
            "name": "alice" if kind == "user_message" else "Assistant",
            "output": f"text of {step_id}",
            "createdAt": at,
            "start": at,
            "end": at,
        }
    )


async def history(driver: Driver, user_id: str, count: int) -> None:
    for n in range(count):
        await old_thread(driver, user_id, n)


async def page(driver: Driver, user_id: str, first: int, cursor: str | None = None) -> Page:
    return await driver.list_threads(user_id, first=first, cursor=cursor)


async def sidebar(driver: Driver, user_id: str, first: int = 35) -> list[tuple[str, str]]:
    """Every (id, createdAt), page after page, as the UI loads them while scrolling."""
    shown: list[tuple[str, str]] = []
    cursor = None
    while True:
        result = await page(driver, user_id, first, cursor)
        shown += [(t["id"], t["createdAt"]) for t in result.threads]
        if not result.has_next:
            return shown
        cursor = result.end_cursor


def as_the_ui_sorts(shown: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """What Chainlit's UI does with the threads it has loaded: newest createdAt first
    (JavaScript's sort is stable)."""
    return sorted(shown, key=lambda t: datetime.fromisoformat(t[1]), reverse=True)


def manifest(root: Path, thread_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((root / "threads" / thread_id / "thread.json").read_text())
    return doc


# -- an old thread continued ----------------------------------------------------------


async def test_an_old_thread_continued_today_is_first_and_dated_by_its_new_message(
    driver: Driver, alice: Any, root: Path
) -> None:
    await history(driver, alice["id"], 50)
    first = await page(driver, alice["id"], 35)
    assert tid(0) not in [t["id"] for t in first.threads]  # on the second sidebar page

    asked, answered = now_iso(), now_iso()
    await message(driver, tid(0), "late-q", "user_message", asked)
    await message(driver, tid(0), "late-a", "assistant_message", answered)

    top = (await page(driver, alice["id"], 35)).threads[0]
    assert (top["id"], top["createdAt"]) == (tid(0), answered)
    # The true creation time stays where it belongs.
    thread = await driver.get_thread(tid(0))
    assert thread["createdAt"] == when(0)
    assert manifest(root, tid(0))["createdAt"] == when(0)


async def test_every_thread_is_dated_by_its_last_message_and_pages_are_in_that_order(
    driver: Driver, alice: Any
) -> None:
    await history(driver, alice["id"], 40)
    await old_thread(driver, alice["id"], 40, messages=False)  # no message yet: its creation
    shown = await sidebar(driver, alice["id"])
    assert shown[0] == (tid(40), when(40))
    assert shown[1:] == [(tid(n), when(n, 90)) for n in range(39, -1, -1)]
    assert as_the_ui_sorts(shown) == shown


async def test_a_continued_thread_from_a_later_page_never_shows_twice_nor_jumps(
    driver: Driver, alice: Any
) -> None:
    await history(driver, alice["id"], 50)
    first = await page(driver, alice["id"], 35)
    loaded = [(t["id"], t["createdAt"]) for t in first.threads]
    assert [i for i, _ in loaded] == [tid(n) for n in range(49, 14, -1)]

    # While the first page is on screen, an old thread of the second page gets a message.
    await message(driver, tid(3), "late", "user_message", now_iso())

    second = await page(driver, alice["id"], 35, first.end_cursor)
    more = [(t["id"], t["createdAt"]) for t in second.threads]
    assert [i for i, _ in more] == [tid(n) for n in range(14, -1, -1) if n != 3]
    assert not second.has_next
    # Nothing of the second page sorts above what the first showed: the UI appends it.
    assert as_the_ui_sorts(loaded + more) == loaded + more
    # The next load of the sidebar has it on top, once.
    again = await sidebar(driver, alice["id"])
    assert again[0][0] == tid(3)
    assert [i for i, _ in again].count(tid(3)) == 1
    assert len(again) == 50
    assert as_the_ui_sorts(again) == again  # and the UI leaves it there


async def test_threads_active_at_the_same_moment_page_in_a_stable_order(
    driver: Driver, alice: Any
) -> None:
    for n in range(6):
        await old_thread(driver, alice["id"], n, messages=False)
        await message(driver, tid(n), f"{tid(n)}-q", "user_message", when(10))
    shown = await sidebar(driver, alice["id"], first=1)
    assert shown == [(tid(n), when(10)) for n in range(5, -1, -1)]  # ties: id, descending
    assert await sidebar(driver, alice["id"], first=4) == shown


# -- what is not activity -------------------------------------------------------------


async def session_saved(driver: Driver, thread_id: str) -> None:
    # What Chainlit's persist_user_session sends on every disconnect, resumes included.
    await driver.update_thread(
        thread_id,
        metadata={"id": "session-2", "env": {}, "chat_settings": {}, "client_type": "webapp"},
    )


async def renamed(driver: Driver, thread_id: str) -> None:
    await driver.update_thread(thread_id, name="A better name")


async def shared(driver: Driver, thread_id: str) -> None:
    await driver.update_thread(thread_id, metadata={"is_shared": True, "shared_at": now_iso()})


async def tagged(driver: Driver, thread_id: str) -> None:
    await driver.update_thread(thread_id, tags=["later"])


async def resumed(driver: Driver, thread_id: str) -> None:
    thread = await driver.get_thread(thread_id)
    assert thread is not None
    await session_saved(driver, thread_id)


async def rated(driver: Driver, thread_id: str) -> None:
    await driver.upsert_feedback(f"{thread_id}-a", 0, thread_id=thread_id)


async def answer_updated(driver: Driver, thread_id: str) -> None:
    # update_step sends the whole step again, with its own createdAt (an edit, a
    # favorite, the end of a stream).
    thread = await driver.get_thread(thread_id)
    answer = next(s for s in thread["steps"] if s["id"] == f"{thread_id}-a")
    await driver.update_step({**answer, "output": "edited", "metadata": {"favorite": True}})


@pytest.mark.parametrize(
    "change", [session_saved, renamed, shared, tagged, resumed, rated, answer_updated]
)
async def test_a_change_that_is_no_message_leaves_the_thread_in_its_place(
    driver: Driver, alice: Any, root: Path, change: Any
) -> None:
    await history(driver, alice["id"], 12)
    await old_thread(driver, alice["id"], 12, messages=False)
    before = await sidebar(driver, alice["id"], first=5)
    on_a_message = change in (rated, answer_updated)
    for n in (4, 12):  # a thread with messages, one without
        if n == 12 and on_a_message:
            continue
        updated = manifest(root, tid(n))["updatedAt"]
        await change(driver, tid(n))
        if not on_a_message:
            # A real change of the thread, and it says so...
            assert manifest(root, tid(n))["updatedAt"] > updated
    # ...but the sidebar is as it was, dates included.
    assert await sidebar(driver, alice["id"], first=5) == before
    assert (await driver.get_thread(tid(4)))["createdAt"] == when(4)


async def test_updated_at_in_the_list_is_the_last_change_of_any_kind(
    driver: Driver, alice: Any, root: Path
) -> None:
    await history(driver, alice["id"], 3)
    await renamed(driver, tid(1))
    listed = {t["id"]: t for t in (await page(driver, alice["id"], 10)).threads}
    assert listed[tid(1)]["createdAt"] == when(1, 90)
    assert listed[tid(1)]["updatedAt"] == manifest(root, tid(1))["updatedAt"] > when(1, 90)
    assert listed[tid(2)]["updatedAt"] == when(2, 90)  # its answer came after its update


# -- the message's own time ------------------------------------------------------------


async def test_a_message_counts_at_its_own_time_not_when_it_was_written(
    driver: Driver, alice: Any
) -> None:
    """A replay or an import writes old messages today: they keep the order of their
    times, and a message that arrives late with an earlier time does not lower it."""
    await history(driver, alice["id"], 10)
    await message(driver, tid(2), "replayed", "assistant_message", when(6, 120))
    shown = await sidebar(driver, alice["id"])
    assert [i for i, _ in shown][:5] == [tid(9), tid(8), tid(7), tid(2), tid(6)]
    assert dict(shown)[tid(2)] == when(6, 120)
    await message(driver, tid(9), "straggler", "user_message", when(9, 1))
    assert (await sidebar(driver, alice["id"]))[0] == (tid(9), when(9, 90))


async def test_deleting_the_last_message_gives_the_thread_its_previous_place(
    driver: Driver, alice: Any
) -> None:
    await history(driver, alice["id"], 5)
    before = await sidebar(driver, alice["id"])
    await message(driver, tid(1), "late", "user_message", now_iso())
    assert (await sidebar(driver, alice["id"]))[0][0] == tid(1)
    await driver.delete_step("late")
    assert await sidebar(driver, alice["id"]) == before


# -- a rebuilt index, a copy ----------------------------------------------------------


async def scenario(driver: Driver, user_id: str) -> list[tuple[str, str]]:
    await history(driver, user_id, 40)
    await old_thread(driver, user_id, 40, messages=False)
    await message(driver, tid(5), "late", "user_message", now_iso())
    await message(driver, tid(7), "replayed", "assistant_message", when(20, 30))
    for n in (30, 38, 40):
        await session_saved(driver, tid(n))
        await renamed(driver, tid(n))
    return await sidebar(driver, user_id)


async def test_a_rebuilt_index_gives_the_same_activity(
    driver: Driver, alice: Any, root: Path
) -> None:
    shown = await scenario(driver, alice["id"])
    shutil.rmtree(root / "index")
    reopened = driver.another_worker()
    assert reopened.store.wait_healed(60)  # the app's driver fills it in the background
    assert await sidebar(reopened, alice["id"]) == shown
    driver.store.reindex()
    assert await sidebar(driver, alice["id"]) == shown


async def test_a_copied_archive_gives_the_same_activity(
    driver: Driver, alice: Any, root: Path, tmp_path: Path
) -> None:
    shown = await scenario(driver, alice["id"])
    other = tmp_path / "copy"
    await copy_archive(str(root), str(other))
    copied = ArchiveStore(other, create=False)
    threads, _ = copied.list_threads(user_id=alice["id"], first=100)
    assert [(t["id"], t["createdAt"]) for t in threads] == shown


async def test_copy_since_still_takes_a_thread_changed_without_a_message(
    driver: Driver, alice: Any, root: Path, tmp_path: Path
) -> None:
    """``copy --since`` means "changed since": a rename counts there, while it does not
    move the thread in the sidebar."""
    await history(driver, alice["id"], 3)
    await renamed(driver, tid(0))
    other = tmp_path / "copy"
    await copy_archive(str(root), str(other), since=now_iso()[:10])
    copied = ArchiveStore(other, create=False)
    assert copied.thread_ids() == [tid(0)]
    assert copied.get_thread(tid(0))["name"] == "A better name"
