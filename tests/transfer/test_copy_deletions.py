"""``filelayer copy`` and deletions: what one side deleted (or could never hold) must not
take anything else with it, on either side, however often the copy runs.

One throwaway PostgreSQL server serves the module; every test gets its own database.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("asyncpg")

import asyncpg

from filelayer import ArchiveStore
from filelayer.maintenance.retention import erase_user
from filelayer.transfer.copier import copy_archive
from filelayer.transfer.model import KINDS, Summary


def t(second: int) -> str:
    return f"2026-03-01T10:00:{second:02d}.000Z"


class Blobs:
    """A storage client like Chainlit's, keeping objects in memory."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    async def upload_file(
        self, object_key: str, data: Any, mime: str = "", overwrite: bool = True, **kw: Any
    ) -> dict[str, Any]:
        self.objects[object_key] = data if isinstance(data, bytes) else data.encode()
        return {"object_key": object_key, "url": "http://127.0.0.1:9/" + object_key}

    async def delete_file(self, object_key: str) -> bool:
        return self.objects.pop(object_key, None) is not None

    async def get_read_url(self, object_key: str) -> str:
        return "http://127.0.0.1:9/" + object_key

    async def close(self) -> None:
        pass


def counts(summary: Summary) -> dict[str, dict[str, int]]:
    return {kind: {k: v for k, v in summary.counts[kind].items() if v} for kind in KINDS}


def nothing_written(summary: Summary) -> bool:
    return all(not summary.counts[k][o] for k in KINDS for o in ("copied", "updated", "deleted"))


def tree(root: Path) -> ArchiveStore:
    """An archive with one thread: run1 -> tool1 -> {sub1, ans1}; feedback on ans1, a
    file on tool1 and one on sub1."""
    s = ArchiveStore(root, create=True)
    u = s.upsert_user("bob")
    s.update_thread("t1", name="n", user_id=u["id"])
    s.write_step({"id": "run1", "threadId": "t1", "type": "run", "name": "r", "createdAt": t(1)})
    for n, (sid, parent) in enumerate(
        (("tool1", "run1"), ("sub1", "tool1"), ("ans1", "tool1")), start=2
    ):
        s.write_step(
            {
                "id": sid,
                "threadId": "t1",
                "type": "tool",
                "name": sid,
                "parentId": parent,
                "createdAt": t(n),
                "output": sid,
            }
        )
    s.upsert_feedback(for_id="ans1", value=1, comment="good", thread_id="t1", feedback_id="fb1")
    for eid, step in (("el1", "tool1"), ("el2", "sub1")):
        s.put_element(
            "t1", {"id": eid, "type": "file", "name": eid, "forId": step}, b"x" + eid.encode()
        )
    return s


def shape(s: ArchiveStore) -> tuple[dict[str, Any], list[str], list[str]]:
    th = s.get_thread("t1")
    assert th is not None
    steps = {x["id"]: x.get("parentId") for x in th["steps"]}
    elements = sorted(e["id"] for e in th["elements"])
    feedback = sorted(x["feedback"]["id"] for x in th["steps"] if x.get("feedback"))
    return steps, elements, feedback


async def test_a_deleted_step_takes_nothing_else_with_it(db: str, tmp_path: Path) -> None:
    """Deleting a step cascades in Chainlit's schema (sub-steps, their elements and
    feedback): its children are detached first, keep their parent for the way back, and
    nothing the archive still holds is lost on either side."""
    blobs = Blobs()
    root = tmp_path / "a"
    s = tree(root)
    assert not (await copy_archive(str(root), db, create_schema=True, storage=blobs)).problems
    s.delete_step("run1", "t1")
    before = shape(s)
    assert before == (
        {"tool1": "run1", "sub1": "tool1", "ans1": "tool1"},
        ["el1", "el2"],
        ["fb1"],
    )
    summary = await copy_archive(str(root), db, storage=blobs)
    assert counts(summary)["steps"].get("deleted") == 1, summary.render()
    conn = await asyncpg.connect(db)
    try:
        steps = dict(await conn.fetch('SELECT id, "parentId" FROM "Step"'))
        elements = dict(await conn.fetch('SELECT id, "stepId" FROM "Element"'))
        feedback = dict(await conn.fetch('SELECT id, "stepId" FROM "Feedback"'))
    finally:
        await conn.close()
    assert steps == {"tool1": None, "sub1": "tool1", "ans1": "tool1"}
    assert elements == {"el1": "tool1", "el2": "sub1"}
    assert feedback == {"fb1": "ans1"}
    again = await copy_archive(str(root), db, storage=blobs)
    assert nothing_written(again), again.render()
    # Back into the original archive: nothing is taken for deleted, tool1 keeps its parent.
    back = await copy_archive(db, str(root), storage=blobs)
    assert nothing_written(back), back.render()
    assert shape(ArchiveStore(root, create=False)) == before
    # ...and into a new one, the same conversation (the test's storage serves no bytes).
    other = tmp_path / "b"
    await copy_archive(db, str(other), storage=blobs)
    assert shape(ArchiveStore(other, create=False))[0] == before[0]


async def test_what_the_database_could_not_hold_is_not_deleted_from_the_archive(
    db: str, tmp_path: Path
) -> None:
    """Copying back into the archive a database was filled from: an element attached to
    no step (which Chainlit's schema cannot hold) and thread tags (which SQLite cannot)
    are not taken for deleted there."""
    blobs = Blobs()
    root = tmp_path / "a"
    s = tree(root)
    s.put_element("t1", {"id": "loose", "type": "file", "name": "loose"}, b"no step")
    s.update_thread("t1", tags=["x", "y"])
    s.update_thread("t2", name="untagged", tags=[])
    s.write_step({"id": "q", "threadId": "t2", "type": "user_message", "createdAt": t(9)})
    loose = s.element_file("t1", "loose")
    assert loose is not None
    before = {tid: s.get_thread(tid) for tid in ("t1", "t2")}
    first = await copy_archive(str(root), db, create_schema=True, storage=blobs)
    assert [x.id for x in first.skipped] == ["loose"], first.render()
    back = await copy_archive(db, str(root), storage=blobs)
    assert nothing_written(back), back.render()
    lite = f"sqlite:///{tmp_path / 'c.db'}"
    await copy_archive(str(root), lite, create_schema=True, storage=blobs)
    back = await copy_archive(lite, str(root), storage=blobs)
    assert nothing_written(back), back.render()
    after = ArchiveStore(root, create=False)
    assert {tid: after.get_thread(tid) for tid in ("t1", "t2")} == before
    assert after.element_file("t1", "loose") == loose and loose[1].read_bytes() == b"no step"


@pytest.mark.parametrize("schema", ["official", "sqlite"])
async def test_a_thread_the_app_deleted_is_not_copied_back_to_life(
    schema: str, db: str, tmp_path: Path
) -> None:
    """Chainlit's layers delete a thread's rows outright. The copy records the threads
    it wrote, so it tells a thread the app deleted from one it never copied: the next
    copy from the archive does not bring it back, and a copy to the archive deletes it
    there (with a tombstone, as the app would)."""
    blobs = Blobs()
    root = tmp_path / "a"
    s = tree(root)
    s.update_thread("t2", name="other")
    s.write_step({"id": "q", "threadId": "t2", "type": "user_message", "createdAt": t(9)})
    url = db if schema == "official" else f"sqlite:///{tmp_path / 'c.db'}"
    assert not (await copy_archive(str(root), url, create_schema=True, storage=blobs)).problems
    # A database filled before the copy kept its table learns its threads at a re-run.
    if schema == "official":
        conn = await asyncpg.connect(db)
        try:
            await conn.execute("DROP TABLE filelayer_copied")
        finally:
            await conn.close()
    else:
        lite = sqlite3.connect(tmp_path / "c.db")
        lite.execute("DROP TABLE filelayer_copied")
        lite.commit()
        lite.close()
    assert nothing_written(await copy_archive(str(root), url, storage=blobs))
    if schema == "official":  # as ChainlitDataLayer.delete_thread does
        conn = await asyncpg.connect(db)
        try:
            await conn.execute('DELETE FROM "Thread" WHERE id = $1', "t2")
        finally:
            await conn.close()
    else:  # as SQLAlchemyDataLayer.delete_thread does
        lite = sqlite3.connect(tmp_path / "c.db")
        for table in ("feedbacks", "elements", "steps"):
            lite.execute(f'DELETE FROM {table} WHERE "threadId" = ?', ("t2",))
        lite.execute("DELETE FROM threads WHERE id = ?", ("t2",))
        lite.commit()
        lite.close()
    again = await copy_archive(str(root), url, storage=blobs)
    assert nothing_written(again), again.render()
    assert [(x.id, x.problem) for x in again.skipped] == [("t2", False)], again.render()
    assert "deleted in the destination" in again.skipped[0].reason
    back = await copy_archive(url, str(root), storage=blobs)
    assert counts(back)["threads"] == {"deleted": 1, "unchanged": 1}, back.render()
    after = ArchiveStore(root, create=False)
    assert after.is_deleted("t2") and after.get_thread("t2") is None
    assert after.get_thread("t1") is not None
    # A thread the copy never wrote is not taken for deleted.
    fresh = tmp_path / "fresh"
    ArchiveStore(fresh, create=True).update_thread("t3", name="new")
    assert counts(await copy_archive(str(fresh), url, storage=blobs))["threads"] == {"copied": 1}


async def test_an_erasure_erases_in_the_database_too(db: str, tmp_path: Path) -> None:
    """After ``erase-user``, a copy into the database deletes the user's threads there
    for good (rows, elements, stored files: not a ``deletedAt`` mark) and the user's row;
    other users' threads stay."""
    blobs = Blobs()
    root = tmp_path / "a"
    s = tree(root)  # bob's thread t1
    alice = s.upsert_user("alice@example.com")
    s.update_thread("t9", name="alice secret", user_id=alice["id"])
    s.write_step(
        {
            "id": "a1",
            "threadId": "t9",
            "type": "user_message",
            "output": "private",
            "createdAt": t(5),
        }
    )
    s.upsert_feedback(for_id="a1", value=0, thread_id="t9", feedback_id="fa1")
    s.put_element("t9", {"id": "ea1", "type": "file", "name": "scan", "forId": "a1"}, b"%PDF")
    assert not (await copy_archive(str(root), db, create_schema=True, storage=blobs)).problems
    assert "threads/t9/files/ea1" in blobs.objects
    erase_user(s, "alice@example.com")
    dry = await copy_archive(str(root), db, storage=blobs, dry_run=True)
    assert counts(dry)["users"].get("deleted") == 1, dry.render()
    assert "threads/t9/files/ea1" in blobs.objects
    # Into another archive, the user's record is left to that archive's own erase-user.
    other = await copy_archive(str(root), str(tmp_path / "copy"), dry_run=True)
    assert not counts(other)["users"].get("deleted"), other.render()
    summary = await copy_archive(str(root), db, storage=blobs)
    assert counts(summary)["threads"].get("deleted") == 1, summary.render()
    assert counts(summary)["users"].get("deleted") == 1, summary.render()
    conn = await asyncpg.connect(db)
    try:
        for table in ("Thread", "Step", "Element"):
            assert (
                await conn.fetchval(f'SELECT count(*) FROM "{table}" WHERE id LIKE $1', "%9") == 0
            )
        assert await conn.fetchval('SELECT count(*) FROM "Step" WHERE id = $1', "a1") == 0
        assert await conn.fetchval('SELECT count(*) FROM "Element" WHERE id = $1', "ea1") == 0
        assert await conn.fetchval('SELECT count(*) FROM "Feedback" WHERE id = $1', "fa1") == 0
        users = [r[0] for r in await conn.fetch('SELECT identifier FROM "User"')]
        assert users == ["bob"]
        assert await conn.fetchval('SELECT count(*) FROM "Step" WHERE "threadId" = $1', "t1") == 4
    finally:
        await conn.close()
    assert sorted(blobs.objects) == ["threads/t1/files/el1", "threads/t1/files/el2"]
    again = await copy_archive(str(root), db, storage=blobs)
    assert nothing_written(again), again.render()


async def test_floats_keep_their_type_and_value_through_jsonb(db: str, tmp_path: Path) -> None:
    """JSONB keeps numbers as decimals and writes 1e16 back as 10000000000000000: an int,
    and for 1e300 another value. Floats are written so that they read back as they were,
    and a re-run finds them unchanged."""
    floats = {"a": 1e16, "g": 1e300, "c": 0.1, "d": 1e-320, "n": 5, "m": [2.5e20, -3e40]}
    root = tmp_path / "a"
    s = ArchiveStore(root, create=True)
    u = s.upsert_user("carol", metadata=dict(floats))
    s.update_thread("t1", name="n", user_id=u["id"], metadata=dict(floats))
    s.write_step(
        {"id": "s1", "threadId": "t1", "type": "tool", "createdAt": t(1), "metadata": floats}
    )
    s.put_element(
        "t1", {"id": "e1", "type": "text", "name": "e", "forId": "s1", "props": dict(floats)}, b"x"
    )
    await copy_archive(str(root), db, create_schema=True, storage=Blobs())
    again = await copy_archive(str(root), db, storage=Blobs())
    assert nothing_written(again), again.render()
    back = tmp_path / "b"
    await copy_archive(db, str(back), storage=Blobs())
    b = ArchiveStore(back, create=False)
    thread = b.get_thread("t1")
    assert thread is not None
    exact = json.dumps(floats, sort_keys=True)
    assert json.dumps(thread["steps"][0]["metadata"], sort_keys=True) == exact
    assert json.dumps(thread["metadata"], sort_keys=True) == exact
    assert json.dumps(thread["elements"][0]["props"], sort_keys=True) == exact
    user = b.get_user("carol")
    assert user is not None and json.dumps(user["metadata"], sort_keys=True) == exact


async def test_the_apps_own_filelayer_metadata_key_is_kept(db: str, tmp_path: Path) -> None:
    """A step's metadata may hold a key named as the copy's stash: it is the app's, kept
    through PostgreSQL as it was and never read as the copy's."""
    meta = {"note": "x", "_filelayer": {"set": {"tags": ["forged"], "language": "evil"}}}
    root = tmp_path / "a"
    s = ArchiveStore(root, create=True)
    s.update_thread("t1", name="n")
    s.write_step(
        {"id": "s1", "threadId": "t1", "type": "tool", "createdAt": t(1), "metadata": meta}
    )
    await copy_archive(str(root), db, create_schema=True)
    again = await copy_archive(str(root), db)
    assert nothing_written(again), again.render()
    back = tmp_path / "b"
    await copy_archive(db, str(back))
    thread = ArchiveStore(back, create=False).get_thread("t1")
    assert thread is not None
    step = thread["steps"][0]
    assert step["metadata"] == meta
    assert step.get("tags") is None and step.get("language") is None
