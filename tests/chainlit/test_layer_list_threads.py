"""list_threads: the sidebar's query — user, order, pages, search, feedback."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chainlit")

from chainlit.types import Feedback, Pagination, ThreadFilter
from chainlit.user import User

from filelayer import FileDataLayer


def at(n: int) -> str:
    return (
        f"2026-02-{1 + n // 86400:02d}T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}.000000Z"
    )


async def make_thread(layer: Any, tid: str, user_id: str, n: int, text: str = "") -> None:
    await layer.create_step(
        {
            "id": f"{tid}-u",
            "threadId": tid,
            "type": "user_message",
            "output": text or f"message {n}",
            "createdAt": at(n),
        }
    )
    await layer.create_step(
        {"id": f"{tid}-run", "threadId": tid, "type": "run", "createdAt": at(n)}
    )
    await layer.update_thread(tid, name=f"thread {n}", user_id=user_id)


async def all_pages(layer: Any, first: int, **filters: Any) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page = await layer.list_threads(
            Pagination(first=first, cursor=cursor), ThreadFilter(**filters)
        )
        pages.append([t["id"] for t in page.data])
        if not page.pageInfo.hasNextPage:
            return pages
        assert page.pageInfo.endCursor
        cursor = page.pageInfo.endCursor


async def test_only_the_filtered_users_threads(layer: Any, user: Any) -> None:
    bob = await layer.create_user(User(identifier="bob"))
    await make_thread(layer, "a1", user.id, 1)
    await make_thread(layer, "b1", bob.id, 2)
    page = await layer.list_threads(Pagination(first=10), ThreadFilter(userId=user.id))
    assert [t["id"] for t in page.data] == ["a1"]
    t = page.data[0]
    assert t["userIdentifier"] == "alice@example.com"
    assert t["name"] == "thread 1"
    assert t["createdAt"]


async def test_most_recent_activity_first(layer: Any, user: Any) -> None:
    for n in range(5):
        await make_thread(layer, f"t{n}", user.id, n * 10)
    page = await layer.list_threads(Pagination(first=10), ThreadFilter(userId=user.id))
    ids = [t["id"] for t in page.data]
    # update_thread ran last for t4, then a new message in t0 makes it the newest.
    assert ids[0] == "t4"
    await layer.create_step(
        {
            "id": "t0-late",
            "threadId": "t0",
            "type": "user_message",
            "output": "back again",
            "createdAt": "2099-01-01T00:00:00.000000Z",
        }
    )
    page = await layer.list_threads(Pagination(first=10), ThreadFilter(userId=user.id))
    assert next(t["id"] for t in page.data) == "t0"


@pytest.mark.parametrize("first", [1, 10, 35])
async def test_cursor_pagination_visits_every_thread_once(
    layer: Any, user: Any, first: int
) -> None:
    for n in range(57):
        await make_thread(layer, f"t{n:02d}", user.id, n)
    pages = await all_pages(layer, first, userId=user.id)
    seen = [tid for page in pages for tid in page]
    assert len(seen) == 57 and len(set(seen)) == 57
    assert all(len(p) == first for p in pages[:-1])


async def test_threads_created_while_paging_are_not_shown_twice_nor_skip_others(
    layer: Any, user: Any
) -> None:
    for n in range(30):
        await make_thread(layer, f"old{n:02d}", user.id, n)
    seen: list[str] = []
    cursor = None
    extra = 0
    while True:
        page = await layer.list_threads(
            Pagination(first=7, cursor=cursor), ThreadFilter(userId=user.id)
        )
        seen += [t["id"] for t in page.data]
        await make_thread(layer, f"new{extra}", user.id, 100 + extra)  # lands at the top
        extra += 1
        if not page.pageInfo.hasNextPage:
            break
        cursor = page.pageInfo.endCursor
    assert len(seen) == len(set(seen))
    assert {f"old{n:02d}" for n in range(30)} <= set(seen)


async def test_search_is_case_insensitive_on_name_and_message_text(layer: Any, user: Any) -> None:
    await make_thread(layer, "bread", user.id, 1, text="How do I bake SOURDOUGH bread?")
    await make_thread(layer, "cake", user.id, 2, text="Chocolate cake recipe")
    await layer.update_thread("cake", name="Crème Brûlée Ideas")
    await layer.create_step(
        {
            "id": "cake-a",
            "threadId": "cake",
            "type": "assistant_message",
            "output": "Use Ünïcödé flour",
            "createdAt": at(3),
        }
    )

    async def search(q: str) -> list[str]:
        page = await layer.list_threads(
            Pagination(first=20), ThreadFilter(userId=user.id, search=q)
        )
        return sorted(t["id"] for t in page.data)

    assert await search("sourdough") == ["bread"]
    assert await search("CRÈME brûlée") == ["cake"]
    assert await search("ünïcödé") == ["cake"]
    assert await search("thread") == ["bread"]  # "thread 1" is the bread thread's name
    assert await search("recipe") == ["cake"]
    assert await search("nothing like this") == []


async def test_feedback_filter_works_for_one_and_zero(layer: Any, user: Any) -> None:
    for tid, n in [("up", 1), ("down", 2), ("none", 3)]:
        await make_thread(layer, tid, user.id, n)
    await layer.upsert_feedback(Feedback(forId="up-run", value=1, threadId="up"))
    await layer.upsert_feedback(Feedback(forId="down-run", value=0, threadId="down"))

    async def with_feedback(value: int) -> list[str]:
        page = await layer.list_threads(
            Pagination(first=20), ThreadFilter(userId=user.id, feedback=value)
        )
        return [t["id"] for t in page.data]

    assert await with_feedback(1) == ["up"]
    assert await with_feedback(0) == ["down"]


async def test_deleting_the_index_loses_nothing(layer: Any, user: Any, root: Path) -> None:
    for n in range(12):
        await make_thread(layer, f"t{n:02d}", user.id, n)
    await layer.upsert_feedback(Feedback(forId="t03-run", value=0, threadId="t03"))
    before = await all_pages(layer, 5, userId=user.id)
    shutil.rmtree(root / "index")
    reopened = FileDataLayer(root)
    # The app's layer fills the new index in the background, newest threads first.
    assert reopened.store.wait_healed(60)
    assert await all_pages(reopened, 5, userId=user.id) == before
    page = await reopened.list_threads(
        Pagination(first=5), ThreadFilter(userId=user.id, feedback=0)
    )
    assert [t["id"] for t in page.data] == ["t03"]


async def test_an_unknown_cursor_starts_from_the_top(layer: Any, user: Any) -> None:
    await make_thread(layer, "t1", user.id, 1)
    page = await layer.list_threads(
        Pagination(first=5, cursor="not-a-cursor"), ThreadFilter(userId=user.id)
    )
    assert [t["id"] for t in page.data] == ["t1"]
