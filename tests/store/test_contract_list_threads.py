"""list_threads: the sidebar's query — user, order, pages, search, feedback.

The contract of ``tests/support/drivers.py``: each test runs on ``ArchiveStore`` and
through ``FileDataLayer`` (with Chainlit's ``Pagination`` and ``ThreadFilter``)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support.drivers import Driver


def at(n: int) -> str:
    return (
        f"2026-02-{1 + n // 86400:02d}T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}.000000Z"
    )


async def make_thread(driver: Driver, tid: str, user_id: str, n: int, text: str = "") -> None:
    await driver.create_step(
        {
            "id": f"{tid}-u",
            "threadId": tid,
            "type": "user_message",
            "output": text or f"message {n}",
            "createdAt": at(n),
        }
    )
    await driver.create_step(
        {"id": f"{tid}-run", "threadId": tid, "type": "run", "createdAt": at(n)}
    )
    await driver.update_thread(tid, name=f"thread {n}", user_id=user_id)


async def all_pages(driver: Driver, first: int, user_id: str) -> list[list[str]]:
    """Every page, following ``end_cursor`` as the sidebar does while there is more."""
    pages: list[list[str]] = []
    cursor = None
    for _ in range(10_000):
        page = await driver.list_threads(user_id, first=first, cursor=cursor)
        pages.append(page.ids)
        if not page.has_next:
            return pages
        assert page.end_cursor, "has_next without an end cursor"
        cursor = page.end_cursor
    raise AssertionError("pagination never ends")


async def test_only_the_filtered_users_threads(driver: Driver, alice: Any) -> None:
    bob = await driver.create_user("bob")
    await make_thread(driver, "a1", alice["id"], 1)
    await make_thread(driver, "b1", bob["id"], 2)
    page = await driver.list_threads(alice["id"], first=10)
    assert page.ids == ["a1"]
    t = page.threads[0]
    assert t["userIdentifier"] == "alice@example.com"
    assert t["name"] == "thread 1"
    assert t["createdAt"]


async def test_most_recent_activity_first(driver: Driver, alice: Any) -> None:
    for n in range(5):
        await make_thread(driver, f"t{n}", alice["id"], n * 10)
    page = await driver.list_threads(alice["id"], first=10)
    # update_thread ran last for t4, then a new message in t0 makes it the newest.
    assert page.ids[0] == "t4"
    await driver.create_step(
        {
            "id": "t0-late",
            "threadId": "t0",
            "type": "user_message",
            "output": "back again",
            "createdAt": "2099-01-01T00:00:00.000000Z",
        }
    )
    page = await driver.list_threads(alice["id"], first=10)
    assert page.ids[0] == "t0"


@pytest.mark.parametrize("first", [1, 10, 35])
async def test_cursor_pagination_visits_every_thread_once(
    driver: Driver, alice: Any, first: int
) -> None:
    for n in range(57):
        await make_thread(driver, f"t{n:02d}", alice["id"], n)
    pages = await all_pages(driver, first, alice["id"])
    seen = [tid for page in pages for tid in page]
    assert len(seen) == 57 and len(set(seen)) == 57
    assert all(len(p) == first for p in pages[:-1])


async def test_threads_created_while_paging_are_not_shown_twice_nor_skip_others(
    driver: Driver, alice: Any
) -> None:
    for n in range(30):
        await make_thread(driver, f"old{n:02d}", alice["id"], n)
    seen: list[str] = []
    cursor = None
    extra = 0
    while True:
        page = await driver.list_threads(alice["id"], first=7, cursor=cursor)
        seen += page.ids
        await make_thread(driver, f"new{extra}", alice["id"], 100 + extra)  # lands at the top
        extra += 1
        if not page.has_next:
            break
        cursor = page.end_cursor
    assert len(seen) == len(set(seen))
    assert {f"old{n:02d}" for n in range(30)} <= set(seen)


async def test_search_is_case_insensitive_on_name_and_message_text(
    driver: Driver, alice: Any
) -> None:
    await make_thread(driver, "bread", alice["id"], 1, text="How do I bake SOURDOUGH bread?")
    await make_thread(driver, "cake", alice["id"], 2, text="Chocolate cake recipe")
    await driver.update_thread("cake", name="Crème Brûlée Ideas")
    await driver.create_step(
        {
            "id": "cake-a",
            "threadId": "cake",
            "type": "assistant_message",
            "output": "Use Ünïcödé flour",
            "createdAt": at(3),
        }
    )

    async def search(q: str) -> list[str]:
        return sorted((await driver.list_threads(alice["id"], first=20, search=q)).ids)

    assert await search("sourdough") == ["bread"]
    assert await search("CRÈME brûlée") == ["cake"]
    assert await search("ünïcödé") == ["cake"]
    assert await search("thread") == ["bread"]  # "thread 1" is the bread thread's name
    assert await search("recipe") == ["cake"]
    assert await search("nothing like this") == []


async def test_feedback_filter_works_for_one_and_zero(driver: Driver, alice: Any) -> None:
    for tid, n in [("up", 1), ("down", 2), ("none", 3)]:
        await make_thread(driver, tid, alice["id"], n)
    await driver.upsert_feedback("up-run", 1, thread_id="up")
    await driver.upsert_feedback("down-run", 0, thread_id="down")

    async def with_feedback(value: int) -> list[str]:
        return (await driver.list_threads(alice["id"], first=20, feedback=value)).ids

    assert await with_feedback(1) == ["up"]
    assert await with_feedback(0) == ["down"]


async def test_deleting_the_index_loses_nothing(driver: Driver, alice: Any, root: Path) -> None:
    for n in range(12):
        await make_thread(driver, f"t{n:02d}", alice["id"], n)
    await driver.upsert_feedback("t03-run", 0, thread_id="t03")
    before = await all_pages(driver, 5, alice["id"])
    shutil.rmtree(root / "index")
    reopened = driver.another_worker()
    # The app's layer fills the new index in the background, newest threads first.
    assert reopened.store.wait_healed(60)
    assert await all_pages(reopened, 5, alice["id"]) == before
    page = await reopened.list_threads(alice["id"], first=5, feedback=0)
    assert page.ids == ["t03"]


async def test_an_unknown_cursor_starts_from_the_top(driver: Driver, alice: Any) -> None:
    await make_thread(driver, "t1", alice["id"], 1)
    page = await driver.list_threads(alice["id"], first=5, cursor="not-a-cursor")
    assert page.ids == ["t1"]


async def test_a_cursor_naming_another_users_thread_starts_from_the_top(
    driver: Driver, alice: Any
) -> None:
    """A plain thread id works as a cursor, but only one of the listed user's threads:
    the cursor comes from the client, and another user's thread id there must not tell
    where that thread stands among the caller's (when its author last wrote in it), nor
    that it exists."""
    bob = await driver.create_user("bob")
    for n in range(1, 6):  # activity in this order: a1, a2, b3, a4, a5
        tid, user = ("b3", bob) if n == 3 else (f"a{n}", alice)
        await make_thread(driver, tid, user["id"], n)
    unknown = await driver.list_threads(alice["id"], first=10, cursor="nobody-has-this-id")
    assert unknown.ids == ["a5", "a4", "a2", "a1"]
    page = await driver.list_threads(alice["id"], first=10, cursor="b3")
    assert page.ids == unknown.ids
    assert (await driver.list_threads(alice["id"], first=10, cursor="a4")).ids == ["a2", "a1"]


@pytest.mark.parametrize("first", [2**63, 10**30])
async def test_a_page_larger_than_any_archive_holds_every_thread(
    driver: Driver, alice: Any, first: int
) -> None:
    """The page size comes from the client's request body, any integer: one beyond what
    the index's query can take is a page of every thread, not a server error."""
    for n in (1, 2):
        await make_thread(driver, f"t{n}", alice["id"], n)
    page = await driver.list_threads(alice["id"], first=first)
    assert page.ids == ["t2", "t1"] and not page.has_next
    for search, feedback in (("message", None), ("mess", None), (None, 1)):
        await driver.list_threads(alice["id"], first=first, search=search, feedback=feedback)


async def test_a_search_for_any_text_answers_and_never_fails(driver: Driver, alice: Any) -> None:
    """The search box sends what the user typed: a NUL (stored texts may hold one),
    an unpaired surrogate (none can), quotes and the trigram index's own syntax are
    all just text, found or not; nothing reaches the user as a server error."""
    await make_thread(driver, "zero", alice["id"], 1, text="before\x00after the NUL")
    await make_thread(driver, "plain", alice["id"], 2, text='say "AND" OR NEAR(x y) *')

    async def search(q: str) -> list[str]:
        return sorted((await driver.list_threads(alice["id"], first=20, search=q)).ids)

    assert await search("e\x00a") == ["zero"]
    assert await search("\x00\x00\x00") == []
    assert await search("ab\ud800cd") == []
    assert await search('"and" or near(') == ["plain"]
    assert await search("*") == ["plain"]


@pytest.mark.parametrize("field", ["cursor", "search", "user_id"])
def test_a_page_asked_with_a_value_of_the_wrong_type_is_a_clear_error(
    tmp_path: Path, field: str
) -> None:
    from filelayer import ArchiveStore

    store = ArchiveStore(tmp_path)
    try:
        kwargs: dict[str, Any] = {"user_id": None, field: 5}
        with pytest.raises(ValueError, match="must be a string"):
            store.list_threads(**kwargs)
    finally:
        store.close()


def test_a_long_search_term_is_looked_for_in_memory_near_its_size(tmp_path: Path) -> None:
    """The search box's term comes from the client, of any length: a term of a million
    characters holds less than ten times its size while it is looked for. Every trigram
    of it was gathered and sorted to choose the few the trigram index is asked for: a
    quarter of a gigabyte and seconds of a worker holding the interpreter, for one
    request of a few megabytes."""
    import random
    import tracemalloc

    from filelayer import ArchiveStore

    size = 1_000_000
    draw = random.Random(17)  # most of its trigrams distinct
    term = "".join(chr(draw.randrange(0x4E00, 0x9FFF)) for _ in range(size))
    store = ArchiveStore(tmp_path)
    try:
        user = store.upsert_user("alice")
        store.write_step(
            {"id": "s1", "threadId": "t1", "type": "user_message", "output": "a" + term[:50]}
        )
        store.update_thread("t1", name="t1", user_id=user["id"])
        tracemalloc.start()
        try:
            threads, _ = store.list_threads(user_id=user["id"], search=term)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert threads == []
        assert store.list_threads(user_id=user["id"], search=term[:50])[0][0]["id"] == "t1"
    finally:
        store.close()
    assert peak < 10 * len(term.encode()), peak


async def test_a_cursor_or_user_id_no_text_can_hold_answers_and_never_fails(
    driver: Driver, alice: Any
) -> None:
    """The cursor comes from the client (the sidebar sends back what it was given, or
    anything): one holding an unpaired surrogate, which no stored id or cursor can,
    starts from the top like any other unknown cursor instead of failing in the index's
    query (UnicodeEncodeError, a server error); a user id holding one names nobody,
    for a page as for favorites."""
    await make_thread(driver, "t1", alice["id"], 1)
    page = await driver.list_threads(alice["id"], first=5, cursor="ab\ud800cd")
    assert page.ids == ["t1"]
    page = await driver.list_threads("ab\udc00", first=5)
    assert page.ids == []
    assert await driver.favorite_steps("ab\udc00") == []


async def test_a_time_holding_the_cursors_separator_skips_no_thread(
    driver: Driver, alice: Any
) -> None:
    """A client may send any text as a message's time, and a time that is no instant is
    the thread's activity as it is, control characters included: the cursor built from
    it still resumes right after that thread."""
    for tid, when in (("t1", "2030-01-01\x1fzzz"), ("t2", "2030-01-01\x1faaa")):
        await driver.create_step(
            {
                "id": f"{tid}-u",
                "threadId": tid,
                "type": "user_message",
                "output": "hi",
                "createdAt": when,
            }
        )
        await driver.update_thread(tid, name=tid, user_id=alice["id"])
    await make_thread(driver, "t3", alice["id"], 3)
    assert await all_pages(driver, 1, alice["id"]) == [["t1"], ["t2"], ["t3"]]
