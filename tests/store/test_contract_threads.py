"""Threads: update_thread, get_thread's ThreadDict, the author, deletion and tombstones.

The contract of ``tests/support/drivers.py``: each test runs on ``ArchiveStore`` and
through ``FileDataLayer``. Chainlit's own code calling the layer (its resume, its ACL) is
in ``tests/chainlit/test_layer_threads.py``."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from filelayer import FileLayerError
from filelayer._time import time_key
from filelayer.format import users
from tests.support.drivers import Driver
from tests.support.layer import at, step, tree

THREAD_KEYS = {
    "id",
    "createdAt",
    "name",
    "userId",
    "userIdentifier",
    "tags",
    "metadata",
    "steps",
    "elements",
}
STEP_KEYS = {
    "id",
    "threadId",
    "parentId",
    "name",
    "type",
    "input",
    "output",
    "createdAt",
    "start",
    "end",
    "metadata",
    "isError",
    "showInput",
    "language",
    "feedback",
}


async def listed(driver: Driver, user_id: str | None, **filters: Any) -> list[str]:
    """The ids on the first sidebar page of ``user_id``."""
    return (await driver.list_threads(user_id, **filters)).ids


# -- update_thread ---------------------------------------------------------------------


async def test_update_thread_creates_a_missing_thread(driver: Driver, alice: Any) -> None:
    await driver.update_thread("t1", name="First", user_id=alice["id"], tags=["a", "b"])
    thread = await driver.get_thread("t1")
    assert thread is not None
    assert thread["id"] == "t1"
    assert thread["name"] == "First"
    assert thread["userId"] == alice["id"]
    assert thread["userIdentifier"] == "alice@example.com"
    assert thread["tags"] == ["a", "b"]
    assert thread["metadata"] == {}
    assert thread["steps"] == [] and thread["elements"] == []
    assert isinstance(thread["createdAt"], str) and thread["createdAt"].endswith("Z")


async def test_update_thread_with_only_metadata_creates_the_thread(driver: Driver) -> None:
    await driver.update_thread("t1", metadata={"chat_profile": "default"})
    thread = await driver.get_thread("t1")
    assert thread is not None
    assert thread["metadata"] == {"chat_profile": "default"}
    assert thread["name"] is None and thread["userId"] is None


async def test_metadata_is_merged_key_by_key_and_a_key_set_to_none_is_removed(
    driver: Driver,
) -> None:
    await driver.update_thread("t1", metadata={"a": 1, "b": {"x": 1}, "c": 3})
    await driver.update_thread("t1", metadata={"b": {"y": 2}, "c": None, "d": "new"})
    assert (await driver.get_thread("t1"))["metadata"] == {"a": 1, "b": {"y": 2}, "d": "new"}
    await driver.update_thread("t1", metadata={})
    assert (await driver.get_thread("t1"))["metadata"] == {"a": 1, "b": {"y": 2}, "d": "new"}
    await driver.update_thread("t1", metadata={"a": None, "missing": None})
    assert (await driver.get_thread("t1"))["metadata"] == {"b": {"y": 2}, "d": "new"}


async def test_metadata_keys_that_are_not_strings_merge_as_the_strings_stored(
    driver: Driver, root: Path
) -> None:
    """A key that is a number, ``True``, ``False`` or ``None`` is stored as the string
    Python's json makes of it (docs/format.md), so the next update's same key is that
    stored key: it replaces it, or removes it when set to ``None``. Merged as it was
    given, it sat beside the stored string, and the manifest was refused as holding
    one key twice: the same update sent again failed (a session an app keeps under a
    number, saved at each session end)."""
    await driver.update_thread("t1", metadata={1: "a", False: "x", None: "n", "k": 1})
    manifest = root / "threads" / "t1" / "thread.json"
    before = manifest.read_bytes()
    await driver.update_thread("t1", metadata={1: "a", False: "x", None: "n", "k": 1})
    assert manifest.read_bytes() == before  # nothing changed: nothing rewritten
    await driver.update_thread("t1", metadata={1: "b", False: None})
    assert (await driver.get_thread("t1"))["metadata"] == {"1": "b", "null": "n", "k": 1}
    await driver.update_thread("t1", metadata={None: None, 1.5: 2})
    assert (await driver.get_thread("t1"))["metadata"] == {"1": "b", "1.5": 2, "k": 1}


async def test_name_user_and_tags_are_set_when_given_and_kept_otherwise(
    driver: Driver, alice: Any
) -> None:
    bob = await driver.create_user("bob")
    await driver.update_thread(
        "t1", name="Name", user_id=alice["id"], tags=["t"], metadata={"k": 1}
    )
    await driver.update_thread("t1", metadata={"other": 2})
    thread = await driver.get_thread("t1")
    assert (thread["name"], thread["userId"], thread["tags"]) == ("Name", alice["id"], ["t"])
    await driver.update_thread("t1", name="Renamed")
    assert (await driver.get_thread("t1"))["name"] == "Renamed"
    await driver.update_thread("t1", tags=["x", "y"])
    await driver.update_thread("t1", user_id=bob["id"])
    thread = await driver.get_thread("t1")
    assert (thread["name"], thread["tags"]) == ("Renamed", ["x", "y"])
    assert (thread["userId"], thread["userIdentifier"]) == (bob["id"], "bob")
    assert thread["metadata"] == {"k": 1, "other": 2}


async def test_an_update_that_changes_nothing_rewrites_nothing(driver: Driver, root: Path) -> None:
    await driver.update_thread("t1", name="Same", metadata={"k": 1})
    manifest = root / "threads" / "t1" / "thread.json"
    before = manifest.read_bytes()
    stat = manifest.stat()
    await driver.update_thread("t1", name="Same", metadata={"k": 1})
    assert manifest.read_bytes() == before
    assert manifest.stat().st_ino == stat.st_ino


async def test_an_update_that_changes_nothing_rewrites_nothing_whatever_its_types(
    driver: Driver, root: Path
) -> None:
    """The same update again changes nothing, though its metadata holds a tuple or a
    key that is a number deeper in (stored as a list, and as a string): compared as
    given with the manifest as stored, it differed every time, and each session save
    of such an app rewrote the manifest and moved its ``updatedAt`` (a change in git
    for nothing)."""
    metadata = {"chat_settings": {"range": (1, 2), "by_id": {7: "seven"}}, "k": [(1,)]}
    await driver.update_thread("t1", name="Same", metadata=metadata)
    manifest = root / "threads" / "t1" / "thread.json"
    before = manifest.read_bytes()
    stat = manifest.stat()
    await driver.update_thread("t1", name="Same", metadata=metadata)
    assert manifest.read_bytes() == before
    assert manifest.stat().st_ino == stat.st_ino
    assert (await driver.get_thread("t1"))["metadata"] == {
        "chat_settings": {"range": [1, 2], "by_id": {"7": "seven"}},
        "k": [[1]],
    }


@pytest.mark.parametrize(
    "stored",
    [12345, ["2026-01-01T00:00:00Z"], "soon"],
    ids=["number", "list", "offset-ahead-as-text"],
)
async def test_a_change_after_an_updated_at_that_is_no_later_time_is_stamped_now(
    driver: Driver, root: Path, stored: Any
) -> None:
    """``updatedAt`` never goes back, and is compared as an instant: a manifest written
    by another program (a number, a list) or one whose time is written with an offset
    (later as text, earlier as an instant) still takes a change, stamped with the
    present."""
    if stored == "soon":  # an hour ago, written 13 hours ahead of UTC
        ahead = datetime.now(timezone.utc) + timedelta(hours=13)
        stored = ahead.strftime("%Y-%m-%dT%H:%M:%S.%f+14:00")
    driver.store.put_manifest(
        {
            "id": "t1",
            "name": "old",
            "userId": None,
            "userIdentifier": None,
            "tags": None,
            "metadata": {},
            "createdAt": "2026-01-01T00:00:00Z",
            "updatedAt": stored,
        }
    )
    before = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    await driver.update_thread("t1", name="renamed")
    doc = json.loads((root / "threads" / "t1" / "thread.json").read_text())
    assert doc["name"] == "renamed"
    assert isinstance(doc["updatedAt"], str)
    assert time_key(doc["updatedAt"]) >= time_key(before)


async def test_the_manifest_is_readable_deterministic_json(driver: Driver, root: Path) -> None:
    await driver.update_thread("t1", name="Crème brûlée ☕", metadata={"z": 1, "a": 2})
    text = (root / "threads" / "t1" / "thread.json").read_text("utf-8")
    assert "Crème brûlée ☕" in text
    assert text.endswith("}\n")
    doc = json.loads(text)
    assert list(doc) == sorted(doc)
    assert list(doc["metadata"]) == ["a", "z"]


async def test_the_user_identifier_is_resolved_from_a_user_made_by_another_worker(
    driver: Driver,
) -> None:
    bob = await driver.another_worker().create_user("bob@example.com")
    await driver.update_thread("t1", user_id=bob["id"])
    assert (await driver.get_thread("t1"))["userIdentifier"] == "bob@example.com"
    assert await driver.thread_author("t1") == "bob@example.com"


def archive_files(root: Path) -> dict[str, bytes | None]:
    """The archive's own files, byte for byte (not the locks, not the derived index,
    which is compared through ``list_threads``)."""
    return {
        rel: data
        for rel, data in tree(root).items()
        if not rel.startswith(("index", "locks")) and not rel.endswith(".lock")
    }


def age_users_directory(root: Path) -> None:
    """Date the users directory's last change an hour back, as in an archive whose
    users all logged in before: no recent change to distrust."""
    users = root / "users"
    past = time.time() - 3600
    os.utime(users, (past, past))


async def test_an_unknown_user_id_is_refused_and_the_author_keeps_the_thread(
    driver: Driver, alice: Any, root: Path
) -> None:
    """An id no user has made the thread an unknown user's: its real author was
    locked out of it (a write by them is refused as another user's). Refused with a
    ``ValueError`` of filelayer's own, and nothing changes."""
    await driver.update_thread("t1", name="mine", user_id=alice["id"])
    await driver.create_step(step("m1", type="user_message", output="hello", createdAt=at(1)))
    files, thread = archive_files(root), await driver.get_thread("t1")
    for unknown in ("no-such-user", "0f1e2d3c-4b5a-5968-8776-a5b4c3d2e1f0"):
        for thread_id in ("t1", "t-new"):
            with pytest.raises(ValueError) as caught:
                await driver.update_thread(thread_id, name="taken", user_id=unknown)
            assert isinstance(caught.value, FileLayerError)
            assert getattr(caught.value, "user_id", None) == unknown
            assert unknown in str(caught.value) and "nothing was written" in str(caught.value)
    assert archive_files(root) == files
    assert await driver.get_thread("t1") == thread
    assert await driver.get_thread("t-new") is None
    assert await driver.thread_author("t1") == "alice@example.com"
    assert await listed(driver, alice["id"]) == ["t1"]


async def test_a_user_made_by_another_worker_after_a_refusal_is_known(
    driver: Driver, alice: Any, root: Path
) -> None:
    """Whatever a refused look-up remembered, a user another process makes later
    (Chainlit's login on another worker) is found at once."""
    age_users_directory(root)
    with pytest.raises(ValueError):
        await driver.update_thread("t1", user_id=users.user_id("bob@example.com"))
    bob = await driver.another_worker().create_user("bob@example.com")
    assert bob["id"] == users.user_id("bob@example.com")
    await driver.update_thread("t1", name="bob's", user_id=bob["id"])
    assert await driver.thread_author("t1") == "bob@example.com"


async def test_a_known_user_costs_no_read_and_an_unknown_one_no_scan_each_time(
    driver: Driver, alice: Any, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user of a login (or of create_user) is looked up in memory; an unknown id is
    answered from one reading of the users directory while it does not change."""
    other = driver.another_worker()
    for n in range(20):
        await other.create_user(f"user{n}@example.com")
    age_users_directory(root)
    reads: list[Path] = []
    real_read = users.read

    def counting(path: Path) -> dict[str, Any] | None:
        reads.append(path)
        return real_read(path)

    monkeypatch.setattr(users, "read", counting)
    await driver.update_thread("t1", name="mine", user_id=alice["id"])
    assert reads == []
    with pytest.raises(ValueError):
        await driver.update_thread("t1", user_id="no-such-user")
    assert len(reads) == 21  # the first miss reads the directory once
    reads.clear()
    for _ in range(5):
        with pytest.raises(ValueError):
            await driver.update_thread("t1", user_id="no-such-user")
    assert reads == []


async def test_list_threads_shows_the_change_as_soon_as_update_thread_returns(
    driver: Driver, alice: Any
) -> None:
    # Chainlit re-lists the sidebar right after first_interaction.
    await driver.create_step(step("m1", type="user_message", output="hello", createdAt=at(1)))
    assert await listed(driver, alice["id"]) == []  # no author yet
    await driver.update_thread("t1", name="hello", user_id=alice["id"])
    page = await driver.list_threads(alice["id"], first=5)
    assert [(t["id"], t["name"]) for t in page.threads] == [("t1", "hello")]
    await driver.update_thread("t1", name="renamed", metadata={"is_shared": True})
    page = await driver.list_threads(alice["id"], first=5)
    assert page.threads[0]["name"] == "renamed"
    assert page.threads[0]["metadata"]["is_shared"] is True


async def test_another_worker_lists_the_thread_as_soon_as_update_thread_returns(
    driver: Driver, alice: Any
) -> None:
    other = driver.another_worker()
    assert await listed(other, alice["id"]) == []
    await driver.update_thread("t1", name="shared", user_id=alice["id"])
    assert await listed(other, alice["id"]) == ["t1"]
    assert (await other.get_thread("t1"))["name"] == "shared"
    await driver.update_thread("t1", name="renamed")
    page = await other.list_threads(alice["id"], first=5)
    assert page.threads[0]["name"] == "renamed"


# -- get_thread ------------------------------------------------------------------------


async def test_get_thread_returns_a_complete_thread_dict(driver: Driver, alice: Any) -> None:
    await driver.update_thread(
        "t1", name="Bread", user_id=alice["id"], metadata={"chat_profile": "p"}
    )
    await driver.create_step(step("u1", type="user_message", output="How?", createdAt=at(1)))
    await driver.create_step(step("run", type="run", name="on_message", createdAt=at(2)))
    await driver.create_step(
        step("a1", type="assistant_message", parentId="run", output="Knead.", createdAt=at(3))
    )
    fid = await driver.upsert_feedback("run", 1, comment="useful", thread_id="t1")
    await driver.create_element(
        "e-loaf", "t1", "a1", "loaf.png", type="image", content=b"\x89PNG-bytes", mime="image/png"
    )

    thread = await driver.get_thread("t1")
    assert set(thread) >= THREAD_KEYS
    assert (thread["name"], thread["userId"], thread["userIdentifier"]) == (
        "Bread",
        alice["id"],
        "alice@example.com",
    )
    assert thread["metadata"] == {"chat_profile": "p"}
    assert [s["id"] for s in thread["steps"]] == ["u1", "run", "a1"]
    for s in thread["steps"]:
        assert set(s) >= STEP_KEYS, STEP_KEYS - set(s)
        assert s["threadId"] == "t1"
    by_id = {s["id"]: s for s in thread["steps"]}
    assert by_id["a1"]["parentId"] == "run"
    assert by_id["u1"]["parentId"] is None
    assert by_id["run"]["feedback"] == {
        "id": fid,
        "forId": "run",
        "value": 1,
        "comment": "useful",
    }
    assert by_id["a1"]["feedback"] is None and by_id["u1"]["feedback"] is None
    [element] = thread["elements"]
    assert (element["id"], element["forId"], element["name"]) == ("e-loaf", "a1", "loaf.png")
    assert element["threadId"] == "t1"


async def test_get_thread_of_an_unknown_thread_is_none(driver: Driver) -> None:
    assert await driver.get_thread("never-created") is None


# -- the author ------------------------------------------------------------------------


async def test_get_thread_author_is_the_identifier_or_an_empty_string(
    driver: Driver, alice: Any
) -> None:
    await driver.update_thread("mine", user_id=alice["id"])
    await driver.update_thread("nobodys", name="no author")
    assert await driver.thread_author("mine") == "alice@example.com"
    assert await driver.thread_author("nobodys") == ""
    assert await driver.thread_author("unknown-thread") == ""
    for invalid in ["", "../mine", "/etc/passwd", "a/b", "x\x00y", "CON", "a" * 200]:
        assert await driver.thread_author(invalid) == ""


# -- delete_thread ---------------------------------------------------------------------


async def test_delete_thread_removes_the_whole_directory(
    driver: Driver, alice: Any, root: Path
) -> None:
    await driver.update_thread("t1", name="Bye", user_id=alice["id"])
    await driver.update_thread("t2", name="Stays", user_id=alice["id"])
    await driver.create_step(step("s1", type="user_message", output="x", createdAt=at(1)))
    await driver.create_element("e-p", "t1", "s1", "p.png", type="image", content=b"png")
    assert (root / "threads" / "t1" / "elements").is_dir()
    await driver.delete_thread("t1")
    assert not (root / "threads" / "t1").exists()
    assert [p.name for p in (root / "threads").iterdir()] == ["t2"]
    assert await driver.get_thread("t1") is None
    assert await driver.thread_author("t1") == ""
    assert await listed(driver, alice["id"]) == ["t2"]
    assert await driver.another_worker().get_thread("t1") is None
    await driver.delete_thread("t2")
    assert await listed(driver, alice["id"]) == []
    assert not list((root / "threads").iterdir())


async def test_deleting_an_unknown_or_already_deleted_thread_is_harmless(driver: Driver) -> None:
    await driver.delete_thread("never-existed")
    assert await driver.get_thread("never-existed") is None
    await driver.update_thread("t1", name="x")
    await driver.delete_thread("t1")
    await driver.delete_thread("t1")
    assert await driver.get_thread("t1") is None


async def test_a_late_update_thread_does_not_resurrect_a_deleted_thread(
    driver: Driver, alice: Any, root: Path
) -> None:
    await driver.update_thread("t1", name="Doomed", user_id=alice["id"])
    await driver.create_step(step("s1", type="user_message", output="hi", createdAt=at(1)))
    await driver.delete_thread("t1")
    # What Chainlit sends on disconnect, and stray writes still in flight.
    await driver.update_thread("t1", metadata={"chat_settings": {}}, user_id=alice["id"])
    await driver.update_thread("t1", name="ghost")
    await driver.create_step(step("late", type="run", createdAt=at(2)))
    await driver.update_step(step("s1", output="late text"))
    await driver.create_element("e-late", "t1", "s1", "late.png", type="image", content=b"x")
    assert await driver.get_thread("t1") is None
    assert await listed(driver, alice["id"]) == []
    assert await listed(driver, alice["id"], search="ghost") == []
    assert not (root / "threads" / "t1").exists()
    # ...even for another worker that never saw the deletion.
    other = driver.another_worker()
    await other.update_thread("t1", name="ghost")
    assert await other.get_thread("t1") is None


async def test_a_late_update_from_another_worker_does_not_resurrect_it_either(
    driver: Driver, alice: Any, root: Path
) -> None:
    other = driver.another_worker()
    await other.update_thread("t1", name="seen by the other worker", user_id=alice["id"])
    assert await other.get_thread("t1") is not None
    await driver.delete_thread("t1")
    await other.update_thread("t1", metadata={"chat_settings": {}}, user_id=alice["id"])
    await other.create_step(step("late", type="run", createdAt=at(2)))
    for worker in (driver, other, driver.another_worker()):
        assert await worker.get_thread("t1") is None
        assert await listed(worker, alice["id"]) == []
    assert not (root / "threads" / "t1").exists()


async def test_a_session_that_cannot_be_stored_changes_nothing(driver: Driver, root: Path) -> None:
    """Chainlit's persisted user session goes partly to ``thread.json`` and partly to a
    local session file: a value neither can hold (NaN) is refused before either is
    written, and the thread is not made."""
    before = tree(root / "threads")
    session = {
        "id": "session-1",
        "env": {},
        "chat_settings": {},
        "chat_profile": "gpt",
        "client_type": "webapp",
        "user_session": {"score": float("nan")},
    }
    try:
        await driver.update_thread("t-nan", name="first message", metadata=session)
    except ValueError:
        pass
    else:
        raise AssertionError("a NaN in the session was stored")
    assert tree(root / "threads") == before
    assert await driver.get_thread("t-nan") is None


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


async def test_a_manifest_or_user_copied_in_too_deep_to_read_back_is_refused(
    tmp_path: Path,
) -> None:
    """``put_manifest`` and the copy's user write (``filelayer copy`` into an archive)
    bring new data in, held to the limit ``update_thread`` and ``upsert_user`` keep
    (docs/format.md: writers refuse new data nested deeper than 512 levels, so that every
    reader reads back what was written). Metadata nested 1,100 levels deep was written
    as it was: a manifest no reader takes, so the copied thread lost its name and its
    author (it read as nobody's), and a user file no login finds."""
    from filelayer import ArchiveStore
    from filelayer.transfer.archive import ArchiveEndpoint

    root = tmp_path / "chats"
    store = ArchiveStore(root)
    alice = store.upsert_user("alice", {})
    doc = {
        "id": "t9",
        "name": "copied",
        "metadata": {"d": _nested(1100)},
        "createdAt": "2001-01-01T00:00:00Z",
        "updatedAt": "2001-01-01T00:00:00Z",
        "userId": alice["id"],
        "userIdentifier": "alice",
        "tags": None,
    }
    with pytest.raises(ValueError, match="nested deeper"):
        store.put_manifest(doc)
    assert not (root / "threads" / "t9").exists()
    store.put_manifest({**doc, "metadata": {"d": _nested(100)}})
    assert store.thread_author("t9") == "alice"
    store.close()

    endpoint = ArchiveEndpoint(str(root))
    await endpoint.open(create=False, dry_run=False, create_schema=False)
    try:
        user = {**alice, "identifier": "bob", "id": "b0b", "metadata": {"d": _nested(1100)}}
        with pytest.raises(ValueError, match="nested deeper"):
            await endpoint.write_user(user)
        await endpoint.write_user({**user, "metadata": {"ok": True}})
    finally:
        await endpoint.close()
    store = ArchiveStore(root)
    assert (store.get_user("bob") or {}).get("metadata") == {"ok": True}
    store.close()
