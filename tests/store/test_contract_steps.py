"""Steps: upserts that merge whatever order Chainlit's fire-and-forget tasks land in, and
the order the UI needs back (time order, parents first, each id once).

The contract of ``tests/support/drivers.py``: each test runs on ``ArchiveStore`` and
through ``FileDataLayer``. Chainlit's own ``Message``/``Step`` calling the layer is in
``tests/chainlit/test_layer_steps.py``."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from filelayer import FileLayerError
from tests.support.drivers import Driver
from tests.support.layer import at, step, tree


async def steps_of(driver: Driver, thread: str = "t1") -> list[dict[str, Any]]:
    got = await driver.get_thread(thread)
    assert got is not None
    return list(got["steps"])


async def ids_of(driver: Driver, thread: str = "t1") -> list[str]:
    return [s["id"] for s in await steps_of(driver, thread)]


async def listed(driver: Driver, user_id: str, **filters: Any) -> list[str]:
    return (await driver.list_threads(user_id, **filters)).ids


async def test_a_step_round_trips_with_every_field(driver: Driver) -> None:
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
    await driver.create_step(full)
    [got] = await steps_of(driver)
    for key, value in full.items():
        assert got[key] == value, key
    assert got["feedback"] is None
    assert got["streaming"] is False


# -- merging (Chainlit #2789 and friends) ------------------------------------------------

WRITES = {
    "send": step("a", type="assistant_message", output="", metadata={}, createdAt=at(1)),
    "update": step("a", type="assistant_message", output="the final answer", end=at(3)),
    "late-empty": step("a", type="assistant_message", output="", metadata={}),
}


@pytest.mark.parametrize("order", list(itertools.permutations(WRITES)), ids=lambda o: ">".join(o))
async def test_the_final_text_survives_every_arrival_order(driver: Driver, order: Any) -> None:
    for name in order:
        method = driver.create_step if name == "send" else driver.update_step
        await method(dict(WRITES[name]))
    [got] = await steps_of(driver)
    assert got["output"] == "the final answer"
    assert got["createdAt"] == at(1)
    assert got["end"] == at(3)
    assert got["type"] == "assistant_message"


async def test_update_step_before_create_step_keeps_the_update(driver: Driver) -> None:
    await driver.update_step(
        step("a", type="assistant_message", output="final", metadata={"k": 1}, end=at(3))
    )
    await driver.create_step(
        step("a", type="assistant_message", output="", metadata={}, createdAt=at(1), start=at(1))
    )
    [got] = await steps_of(driver)
    assert (got["output"], got["metadata"]) == ("final", {"k": 1})
    assert (got["createdAt"], got["start"], got["end"]) == (at(1), at(1), at(3))


async def test_a_newer_non_empty_write_wins(driver: Driver) -> None:
    await driver.create_step(step("a", type="run", output="draft", metadata={"v": 1}))
    await driver.update_step(step("a", output="edited", metadata={"v": 2}, isError=True))
    [got] = await steps_of(driver)
    assert (got["output"], got["metadata"], got["isError"]) == ("edited", {"v": 2}, True)


async def test_an_update_without_type_or_name_keeps_them(driver: Driver) -> None:
    await driver.create_step(step("a", name="Assistant", type="assistant_message", output="x"))
    await driver.update_step(step("a", output="y"))
    [got] = await steps_of(driver)
    assert (got["name"], got["type"], got["output"]) == ("Assistant", "assistant_message", "y")


async def test_many_concurrent_empty_writes_never_wipe_the_text(driver: Driver) -> None:
    await driver.create_step(step("a", type="assistant_message", output="", createdAt=at(1)))
    await asyncio.gather(
        *(driver.update_step(step("a", output="")) for _ in range(50)),
        driver.update_step(step("a", output="final")),
        *(driver.update_step(step("a", output="")) for _ in range(50)),
    )
    [got] = await steps_of(driver)
    assert got["output"] == "final"


# -- order -----------------------------------------------------------------------------


async def test_steps_come_in_time_order_parents_first_each_id_once(driver: Driver) -> None:
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
        await driver.create_step(w)
    ids = await ids_of(driver)
    assert len(ids) == len(set(ids)) == 6
    assert ids[0] == "u1" and ids[-1] == "u2"
    for child, parent in [("a1", "run"), ("tool", "run"), ("nested", "tool")]:
        assert ids.index(parent) < ids.index(child)
    assert ids.index("tool") < ids.index("a1")  # siblings by time


async def test_a_child_written_and_timestamped_before_its_parent_comes_after_it(
    driver: Driver,
) -> None:
    # Chainlit #1788: the on_message run step and its children race to be written.
    await driver.create_step(
        step("child", type="assistant_message", parentId="run", createdAt=at(1))
    )
    await driver.create_step(step("grandchild", type="tool", parentId="child", createdAt=at(0)))
    await driver.create_step(step("run", type="run", name="on_message", createdAt=at(2)))
    assert await ids_of(driver) == ["run", "child", "grandchild"]


async def test_steps_with_the_same_time_keep_their_arrival_order(driver: Driver) -> None:
    for sid in ["first", "second", "third", "fourth"]:
        await driver.create_step(step(sid, type="run", createdAt=at(7)))
    await driver.update_step(step("first", output="updated later"))
    assert await ids_of(driver) == ["first", "second", "third", "fourth"]


async def test_time_order_not_arrival_order(driver: Driver) -> None:
    for n in [5, 1, 4, 2, 3]:
        await driver.create_step(step(f"s{n}", type="run", createdAt=at(n)))
    assert await ids_of(driver) == ["s1", "s2", "s3", "s4", "s5"]


async def test_a_step_whose_parent_is_missing_is_still_returned(driver: Driver) -> None:
    await driver.create_step(step("orphan", type="tool", parentId="gone", createdAt=at(1)))
    assert await ids_of(driver) == ["orphan"]


async def test_a_step_may_arrive_before_its_thread_exists(driver: Driver, alice: Any) -> None:
    await driver.create_step(step("u1", thread="new", type="user_message", output="first"))
    await driver.update_thread("new", name="first", user_id=alice["id"])
    thread = await driver.get_thread("new")
    assert thread["userIdentifier"] == "alice@example.com"
    assert thread["name"] == "first"
    assert [s["output"] for s in thread["steps"]] == ["first"]
    assert await listed(driver, alice["id"]) == ["new"]


# -- field types -----------------------------------------------------------------------

WRONG_TYPES = [
    ("output", 123),
    ("input", {"q": "bread"}),
    ("name", ["a"]),
    ("type", 1),
    ("metadata", "x"),
    ("tags", "abc"),
    ("tags", ["a", 1]),
    ("parentId", 5),
    ("generation", "scripted"),
    ("showInput", 1),
    ("isError", "yes"),
    ("streaming", "no"),
    ("waitForAnswer", 1),
    ("defaultOpen", "true"),
    ("autoCollapse", 0),
    ("language", 5),
    ("createdAt", 1_700_000_000),
    ("start", 1.5),
    ("end", []),
    ("command", 1),
    ("modes", "x"),
    ("icon", 3),
    ("feedback", "up"),
]


def archive_files(root: Path) -> dict[str, bytes | None]:
    """The archive's own files, byte for byte (not the locks, not the derived index,
    which is compared through ``list_threads``)."""
    return {
        rel: data
        for rel, data in tree(root).items()
        if not rel.startswith(("index", "locks")) and not rel.endswith(".lock")
    }


@pytest.mark.parametrize(("field", "value"), WRONG_TYPES, ids=lambda v: repr(v)[:20])
async def test_a_step_field_of_the_wrong_type_is_refused_and_nothing_changes(
    driver: Driver, alice: Any, root: Path, field: str, value: Any
) -> None:
    """Stored as given, such a value broke every later reader (the UI, exports, search).
    Refused with a ``ValueError`` of filelayer's own, before anything is written."""
    await driver.update_thread("t1", name="chat", user_id=alice["id"])
    await driver.create_step(step("s1", type="user_message", output="hello", createdAt=at(1)))
    files, thread = archive_files(root), await driver.get_thread("t1")
    listing = await driver.list_threads(alice["id"])
    bad_writes = [
        (driver.update_step, {**step("s1", output="changed"), field: value}),
        (driver.create_step, {**step("s2", type="run", output="ghost"), field: value}),
        (driver.create_step, {**step("s3", thread="t-new", output="ghost"), field: value}),
    ]
    for write, bad in bad_writes:
        with pytest.raises(ValueError) as caught:
            await write(bad)
        assert isinstance(caught.value, FileLayerError)
        assert getattr(caught.value, "field", None) == field
        assert field in str(caught.value) and "nothing was written" in str(caught.value)
    assert archive_files(root) == files
    assert await driver.get_thread("t1") == thread
    assert await driver.get_thread("t-new") is None
    assert (await driver.list_threads(alice["id"])).threads == listing.threads
    assert await listed(driver, alice["id"], search="ghost") == []
    assert await listed(driver, alice["id"], search="changed") == []


async def test_nulls_and_fields_filelayer_does_not_know_are_taken_as_they_are(
    driver: Driver,
) -> None:
    """``None`` is "no value" for every field (Chainlit sends many), and a field of a
    newer Chainlit is kept whatever its type (forward compatibility)."""
    await driver.create_step(
        step(
            "s1",
            type="run",
            output="x",
            parentId=None,
            tags=None,
            generation=None,
            language=None,
            isError=None,
            showInput=True,
            modes={"model": "fast"},
            command="search",
            futureField={"any": [1, None]},
            indent=2,
        )
    )
    await driver.update_step(step("s1", showInput="json", name=None, output=None, tags=[]))
    [got] = await steps_of(driver)
    assert (got["output"], got["showInput"], got["tags"]) == ("x", "json", [])
    assert (got["futureField"], got["indent"]) == ({"any": [1, None]}, 2)


async def test_a_step_stored_with_other_types_before_stays_readable(
    driver: Driver, root: Path
) -> None:
    """The check is on new input only: what an earlier release stored is read as it
    was stored, and the step can still be written."""
    await driver.create_step(step("s1", type="run", output="first", createdAt=at(1)))
    journal = root / "threads" / "t1" / "steps.jsonl"
    with journal.open("ab") as f:
        f.write(b'{"op":"step","step":{"id":"old","output":123,"tags":"abc","threadId":"t1"}}\n')
    by_id = {s["id"]: s for s in await steps_of(driver)}
    assert (by_id["old"]["output"], by_id["old"]["tags"]) == (123, "abc")
    driver.store.compact_journal("t1")  # what is stored is written again as it is
    by_id = {s["id"]: s for s in await steps_of(driver)}
    assert (by_id["old"]["output"], by_id["old"]["tags"]) == (123, "abc")
    await driver.update_step(step("old", output="fixed"))
    by_id = {s["id"]: s for s in await steps_of(driver)}
    assert by_id["old"]["output"] == "fixed"
    # Sent back as it was read (Chainlit un-favourites with the dict it was given):
    # a value stored before stays the step's, not new input to refuse.
    sent_back = {**by_id["old"], "metadata": {"favorite": False}}
    assert sent_back["tags"] == "abc"
    await driver.update_step(sent_back)
    by_id = {s["id"]: s for s in await steps_of(driver)}
    assert by_id["old"]["metadata"] == {"favorite": False}
    with pytest.raises(ValueError):  # a value of the wrong type that is new is refused
        await driver.update_step({**sent_back, "tags": "xyz"})


# -- delete_step -----------------------------------------------------------------------


async def test_delete_step_removes_the_step_its_feedback_and_its_elements(
    driver: Driver, alice: Any, root: Path
) -> None:
    await driver.update_thread("t1", user_id=alice["id"])
    await driver.create_step(step("keep", type="run", createdAt=at(1)))
    await driver.create_step(step("gone", type="run", createdAt=at(2)))
    await driver.upsert_feedback("gone", 0, thread_id="t1")
    await driver.create_element(
        "e-gone", "t1", "gone", "p.png", type="image", content=b"\x89PNG-gone"
    )
    await driver.create_element("e-kept", "t1", "keep", "k.txt", type="file", content=b"kept")
    assert len(list((root / "threads" / "t1" / "elements").iterdir())) == 2
    assert await listed(driver, alice["id"], feedback=0) == ["t1"]

    await driver.delete_step("gone")

    thread = await driver.get_thread("t1")
    assert [s["id"] for s in thread["steps"]] == ["keep"]
    assert [e["id"] for e in thread["elements"]] == ["e-kept"]
    assert [p.read_bytes() for p in (root / "threads" / "t1" / "elements").iterdir()] == [b"kept"]
    assert await driver.get_element("t1", "e-gone") is None
    assert await listed(driver, alice["id"], feedback=0) == []
    # A late write does not bring the deleted step back.
    await driver.update_step(step("gone", output="late"))
    assert await ids_of(driver) == ["keep"]


async def test_delete_step_by_id_alone_from_another_worker(driver: Driver) -> None:
    await driver.create_step(step("keep", type="run", createdAt=at(1)))
    await driver.create_step(step("gone", thread="t2", type="run", createdAt=at(1)))
    # Another worker knows nothing of which thread holds the step.
    await driver.another_worker().delete_step("gone")
    assert await ids_of(driver, "t2") == []
    assert await ids_of(driver) == ["keep"]


async def test_deleting_an_unknown_step_is_harmless(driver: Driver) -> None:
    await driver.create_step(step("keep", type="run"))
    await driver.delete_step("never-existed")
    assert await ids_of(driver) == ["keep"]


# -- favorites -------------------------------------------------------------------------


async def test_favorite_steps_are_the_favorited_steps_of_the_users_threads(
    driver: Driver, alice: Any
) -> None:
    await driver.update_thread("t1", user_id=alice["id"])
    await driver.update_thread("t2", user_id=alice["id"])
    await driver.create_step(
        step("m1", type="assistant_message", output="keep me", createdAt=at(1))
    )
    await driver.create_step(step("m2", type="assistant_message", output="not me", createdAt=at(2)))
    await driver.create_step(
        step("m3", thread="t2", type="user_message", output="me too", createdAt=at(3))
    )
    s1 = (await steps_of(driver))[0]
    returned = await driver.set_favorite(s1, True)
    assert returned["metadata"]["favorite"] is True
    s3 = (await steps_of(driver, "t2"))[0]
    await driver.set_favorite(s3, True)

    favorites = await driver.favorite_steps(alice["id"])
    assert sorted(f["id"] for f in favorites) == ["m1", "m3"]
    outputs = {f["id"]: f["output"] for f in favorites}
    assert outputs == {"m1": "keep me", "m3": "me too"}
    assert all(f["metadata"]["favorite"] is True for f in favorites)
    assert (await steps_of(driver))[0]["output"] == "keep me"  # the text survives

    # Chainlit un-favorites with the dict get_favorite_steps gave it.
    fav = next(f for f in favorites if f["id"] == "m1")
    await driver.set_favorite(fav, False)
    assert [f["id"] for f in await driver.favorite_steps(alice["id"])] == ["m3"]
    assert await driver.favorite_steps("someone-else") == []
    await driver.delete_thread("t2")
    assert await driver.favorite_steps(alice["id"]) == []
