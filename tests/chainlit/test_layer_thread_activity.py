"""The sidebar shows recent activity first (issue #17).

Chainlit's UI re-sorts the threads ``list_threads`` gives it by ``createdAt`` and groups
them by that date ("Today", "Yesterday", "Previous 7 days"…). So ``list_threads`` gives
each thread's *activity* as ``createdAt`` (the later of its creation and its last
message, by the message's own time), pages by that same key, and keeps the true creation
time for ``get_thread`` and the manifest. Only a message is activity: a rename, a share,
feedback, or the session metadata Chainlit saves on every disconnect leave a thread where
it is.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chainlit")

from chainlit.types import Feedback, Pagination, ThreadFilter

from filelayer import ArchiveStore, FileDataLayer
from filelayer._time import now_iso
from filelayer.transfer.copier import copy_archive

BASE = datetime(2026, 10, 1, 9, 0, tzinfo=timezone.utc)


def when(days: int, seconds: int = 0) -> str:
    """A time ``days`` after 1 October 2026 (before these tests ran), Chainlit's format."""
    moment = BASE + timedelta(days=days, seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def tid(n: int) -> str:
    return f"t{n:02d}"


async def old_thread(layer: Any, user_id: str, n: int, *, messages: bool = True) -> None:
    """Thread ``n``, made ``n`` days after BASE with a question and its answer, as
    ``filelayer copy`` or an import brings it: its own times, not the present."""
    layer.store.put_manifest(
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
        await message(layer, tid(n), f"{tid(n)}-q", "user_message", when(n, 60))
        await message(layer, tid(n), f"{tid(n)}-a", "assistant_message", when(n, 90))


async def message(layer: Any, thread_id: str, step_id: str, kind: str, at: str) -> None:
    await layer.create_step(
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


async def history(layer: Any, user_id: str, count: int) -> None:
    for n in range(count):
        await old_thread(layer, user_id, n)


async def page(layer: Any, user_id: str, first: int, cursor: str | None = None) -> Any:
    return await layer.list_threads(
        Pagination(first=first, cursor=cursor), ThreadFilter(userId=user_id)
    )


async def sidebar(layer: Any, user_id: str, first: int = 35) -> list[tuple[str, str]]:
    """Every (id, createdAt), page after page, as the UI loads them while scrolling."""
    shown: list[tuple[str, str]] = []
    cursor = None
    while True:
        result = await page(layer, user_id, first, cursor)
        shown += [(t["id"], t["createdAt"]) for t in result.data]
        if not result.pageInfo.hasNextPage:
            return shown
        cursor = result.pageInfo.endCursor


def as_the_ui_sorts(shown: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """What Chainlit's UI does with the threads it has loaded: newest createdAt first
    (JavaScript's sort is stable)."""
    return sorted(shown, key=lambda t: datetime.fromisoformat(t[1]), reverse=True)


def manifest(root: Path, thread_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((root / "threads" / thread_id / "thread.json").read_text())
    return doc


# -- an old thread continued ----------------------------------------------------------


async def test_an_old_thread_continued_today_is_first_and_dated_by_its_new_message(
    layer: Any, user: Any, root: Path
) -> None:
    await history(layer, user.id, 50)
    first = await page(layer, user.id, 35)
    assert tid(0) not in [t["id"] for t in first.data]  # on the second sidebar page

    asked, answered = now_iso(), now_iso()
    await message(layer, tid(0), "late-q", "user_message", asked)
    await message(layer, tid(0), "late-a", "assistant_message", answered)

    top = (await page(layer, user.id, 35)).data[0]
    assert (top["id"], top["createdAt"]) == (tid(0), answered)
    # The true creation time stays where it belongs.
    thread = await layer.get_thread(tid(0))
    assert thread["createdAt"] == when(0)
    assert manifest(root, tid(0))["createdAt"] == when(0)


async def test_every_thread_is_dated_by_its_last_message_and_pages_are_in_that_order(
    layer: Any, user: Any
) -> None:
    await history(layer, user.id, 40)
    await old_thread(layer, user.id, 40, messages=False)  # no message yet: its creation
    shown = await sidebar(layer, user.id)
    assert shown[0] == (tid(40), when(40))
    assert shown[1:] == [(tid(n), when(n, 90)) for n in range(39, -1, -1)]
    assert as_the_ui_sorts(shown) == shown


async def test_a_continued_thread_from_a_later_page_never_shows_twice_nor_jumps(
    layer: Any, user: Any
) -> None:
    await history(layer, user.id, 50)
    first = await page(layer, user.id, 35)
    loaded = [(t["id"], t["createdAt"]) for t in first.data]
    assert [i for i, _ in loaded] == [tid(n) for n in range(49, 14, -1)]

    # While the first page is on screen, an old thread of the second page gets a message.
    await message(layer, tid(3), "late", "user_message", now_iso())

    second = await page(layer, user.id, 35, first.pageInfo.endCursor)
    more = [(t["id"], t["createdAt"]) for t in second.data]
    assert [i for i, _ in more] == [tid(n) for n in range(14, -1, -1) if n != 3]
    assert not second.pageInfo.hasNextPage
    # Nothing of the second page sorts above what the first showed: the UI appends it.
    assert as_the_ui_sorts(loaded + more) == loaded + more
    # The next load of the sidebar has it on top, once.
    again = await sidebar(layer, user.id)
    assert again[0][0] == tid(3)
    assert [i for i, _ in again].count(tid(3)) == 1
    assert len(again) == 50
    assert as_the_ui_sorts(again) == again  # and the UI leaves it there


async def test_threads_active_at_the_same_moment_page_in_a_stable_order(
    layer: Any, user: Any
) -> None:
    for n in range(6):
        await old_thread(layer, user.id, n, messages=False)
        await message(layer, tid(n), f"{tid(n)}-q", "user_message", when(10))
    shown = await sidebar(layer, user.id, first=1)
    assert shown == [(tid(n), when(10)) for n in range(5, -1, -1)]  # ties: id, descending
    assert await sidebar(layer, user.id, first=4) == shown


# -- what is not activity -------------------------------------------------------------


async def session_saved(layer: Any, thread_id: str) -> None:
    # What Chainlit's persist_user_session sends on every disconnect, resumes included.
    await layer.update_thread(
        thread_id,
        metadata={"id": "session-2", "env": {}, "chat_settings": {}, "client_type": "webapp"},
    )


async def renamed(layer: Any, thread_id: str) -> None:
    await layer.update_thread(thread_id, name="A better name")


async def shared(layer: Any, thread_id: str) -> None:
    await layer.update_thread(thread_id, metadata={"is_shared": True, "shared_at": now_iso()})


async def tagged(layer: Any, thread_id: str) -> None:
    await layer.update_thread(thread_id, tags=["later"])


async def resumed(layer: Any, thread_id: str) -> None:
    thread = await layer.get_thread(thread_id)
    assert thread is not None
    await session_saved(layer, thread_id)


async def rated(layer: Any, thread_id: str) -> None:
    await layer.upsert_feedback(Feedback(forId=f"{thread_id}-a", value=0, threadId=thread_id))


async def answer_updated(layer: Any, thread_id: str) -> None:
    # update_step sends the whole step again, with its own createdAt (an edit, a
    # favorite, the end of a stream).
    thread = await layer.get_thread(thread_id)
    answer = next(s for s in thread["steps"] if s["id"] == f"{thread_id}-a")
    await layer.update_step({**answer, "output": "edited", "metadata": {"favorite": True}})


@pytest.mark.parametrize(
    "change", [session_saved, renamed, shared, tagged, resumed, rated, answer_updated]
)
async def test_a_change_that_is_no_message_leaves_the_thread_in_its_place(
    layer: Any, user: Any, root: Path, change: Any
) -> None:
    await history(layer, user.id, 12)
    await old_thread(layer, user.id, 12, messages=False)
    before = await sidebar(layer, user.id, first=5)
    on_a_message = change in (rated, answer_updated)
    for n in (4, 12):  # a thread with messages, one without
        if n == 12 and on_a_message:
            continue
        updated = manifest(root, tid(n))["updatedAt"]
        await change(layer, tid(n))
        if not on_a_message:
            # A real change of the thread, and it says so...
            assert manifest(root, tid(n))["updatedAt"] > updated
    # ...but the sidebar is as it was, dates included.
    assert await sidebar(layer, user.id, first=5) == before
    assert (await layer.get_thread(tid(4)))["createdAt"] == when(4)


async def test_updated_at_in_the_list_is_the_last_change_of_any_kind(
    layer: Any, user: Any, root: Path
) -> None:
    await history(layer, user.id, 3)
    await renamed(layer, tid(1))
    listed = {t["id"]: t for t in (await page(layer, user.id, 10)).data}
    assert listed[tid(1)]["createdAt"] == when(1, 90)
    assert listed[tid(1)]["updatedAt"] == manifest(root, tid(1))["updatedAt"] > when(1, 90)
    assert listed[tid(2)]["updatedAt"] == when(2, 90)  # its answer came after its update


# -- the message's own time ------------------------------------------------------------


async def test_a_message_counts_at_its_own_time_not_when_it_was_written(
    layer: Any, user: Any
) -> None:
    """A replay or an import writes old messages today: they keep the order of their
    times, and a message that arrives late with an earlier time does not lower it."""
    await history(layer, user.id, 10)
    await message(layer, tid(2), "replayed", "assistant_message", when(6, 120))
    shown = await sidebar(layer, user.id)
    assert [i for i, _ in shown][:5] == [tid(9), tid(8), tid(7), tid(2), tid(6)]
    assert dict(shown)[tid(2)] == when(6, 120)
    await message(layer, tid(9), "straggler", "user_message", when(9, 1))
    assert (await sidebar(layer, user.id))[0] == (tid(9), when(9, 90))


async def test_deleting_the_last_message_gives_the_thread_its_previous_place(
    layer: Any, user: Any
) -> None:
    await history(layer, user.id, 5)
    before = await sidebar(layer, user.id)
    await message(layer, tid(1), "late", "user_message", now_iso())
    assert (await sidebar(layer, user.id))[0][0] == tid(1)
    await layer.delete_step("late")
    assert await sidebar(layer, user.id) == before


# -- a rebuilt index, a copy ----------------------------------------------------------


async def scenario(layer: Any, user_id: str) -> list[tuple[str, str]]:
    await history(layer, user_id, 40)
    await old_thread(layer, user_id, 40, messages=False)
    await message(layer, tid(5), "late", "user_message", now_iso())
    await message(layer, tid(7), "replayed", "assistant_message", when(20, 30))
    for n in (30, 38, 40):
        await session_saved(layer, tid(n))
        await renamed(layer, tid(n))
    return await sidebar(layer, user_id)


async def test_a_rebuilt_index_gives_the_same_activity(layer: Any, user: Any, root: Path) -> None:
    shown = await scenario(layer, user.id)
    shutil.rmtree(root / "index")
    reopened = FileDataLayer(root)
    assert reopened.store.wait_healed(60)  # the app's layer fills it in the background
    assert await sidebar(reopened, user.id) == shown
    layer.store.reindex()
    assert await sidebar(layer, user.id) == shown


async def test_a_copied_archive_gives_the_same_activity(
    layer: Any, user: Any, root: Path, tmp_path: Path
) -> None:
    shown = await scenario(layer, user.id)
    other = tmp_path / "copy"
    await copy_archive(str(root), str(other))
    copied = ArchiveStore(other, create=False)
    threads, _ = copied.list_threads(user_id=user.id, first=100)
    assert [(t["id"], t["createdAt"]) for t in threads] == shown


async def test_copy_since_still_takes_a_thread_changed_without_a_message(
    layer: Any, user: Any, root: Path, tmp_path: Path
) -> None:
    """``copy --since`` means "changed since": a rename counts there, while it does not
    move the thread in the sidebar."""
    await history(layer, user.id, 3)
    await renamed(layer, tid(0))
    other = tmp_path / "copy"
    await copy_archive(str(root), str(other), since=now_iso()[:10])
    copied = ArchiveStore(other, create=False)
    assert copied.thread_ids() == [tid(0)]
    assert copied.get_thread(tid(0))["name"] == "A better name"
