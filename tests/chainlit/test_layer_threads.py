"""Threads: update_thread semantics, get_thread's shape, author, delete, tombstones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chainlit")

from chainlit.types import Pagination, ThreadFilter
from chainlit.user import User

from filelayer import FileDataLayer


async def listed(layer: Any, user_id: str, **filters: Any) -> list[str]:
    page = await layer.list_threads(Pagination(first=100), ThreadFilter(userId=user_id, **filters))
    return [t["id"] for t in page.data]


async def test_update_thread_creates_a_missing_thread(layer: Any, user: Any) -> None:
    await layer.update_thread("t1", name="First", user_id=user.id, tags=["a", "b"])
    thread = await layer.get_thread("t1")
    assert thread is not None
    assert thread["id"] == "t1"
    assert thread["name"] == "First"
    assert thread["userId"] == user.id
    assert thread["userIdentifier"] == "alice@example.com"
    assert thread["tags"] == ["a", "b"]
    assert thread["metadata"] == {}
    assert thread["steps"] == [] and thread["elements"] == []
    assert thread["createdAt"].endswith("Z")


async def test_metadata_is_merged_key_by_key_and_none_removes(layer: Any) -> None:
    await layer.update_thread("t1", metadata={"a": 1, "b": {"x": 1}, "c": 3})
    await layer.update_thread("t1", metadata={"b": {"y": 2}, "c": None, "d": "new"})
    thread = await layer.get_thread("t1")
    assert thread["metadata"] == {"a": 1, "b": {"y": 2}, "d": "new"}


async def test_fields_not_given_are_kept(layer: Any, user: Any) -> None:
    await layer.update_thread("t1", name="Name", user_id=user.id, tags=["t"], metadata={"k": 1})
    await layer.update_thread("t1", metadata={"other": 2})
    thread = await layer.get_thread("t1")
    assert (thread["name"], thread["userId"], thread["tags"]) == ("Name", user.id, ["t"])
    await layer.update_thread("t1", name="Renamed")
    assert (await layer.get_thread("t1"))["name"] == "Renamed"


async def test_an_update_that_changes_nothing_rewrites_nothing(layer: Any, root: Path) -> None:
    await layer.update_thread("t1", name="Same", metadata={"k": 1})
    manifest = root / "threads" / "t1" / "thread.json"
    before = manifest.read_bytes()
    stat = manifest.stat()
    await layer.update_thread("t1", name="Same", metadata={"k": 1})
    assert manifest.read_bytes() == before
    assert manifest.stat().st_ino == stat.st_ino


async def test_the_manifest_is_readable_deterministic_json(layer: Any, root: Path) -> None:
    await layer.update_thread("t1", name="Crème brûlée ☕", metadata={"z": 1, "a": 2})
    text = (root / "threads" / "t1" / "thread.json").read_text("utf-8")
    assert "Crème brûlée ☕" in text
    assert text.endswith("}\n")
    doc = json.loads(text)
    assert list(doc) == sorted(doc)
    assert list(doc["metadata"]) == ["a", "z"]


async def test_author_is_the_identifier_or_empty(layer: Any, user: Any) -> None:
    await layer.update_thread("t1", user_id=user.id)
    await layer.update_thread("t2")
    assert await layer.get_thread_author("t1") == "alice@example.com"
    assert await layer.get_thread_author("t2") == ""
    assert await layer.get_thread_author("missing") == ""


async def test_unknown_thread_is_none(layer: Any) -> None:
    assert await layer.get_thread("missing") is None


async def test_delete_thread_removes_its_directory(layer: Any, user: Any, root: Path) -> None:
    await layer.update_thread("t1", name="Bye", user_id=user.id)
    await layer.create_step({"id": "s1", "threadId": "t1", "type": "user_message", "output": "x"})
    assert (root / "threads" / "t1").is_dir()
    await layer.delete_thread("t1")
    assert not (root / "threads" / "t1").exists()
    assert await layer.get_thread("t1") is None
    assert await listed(layer, user.id) == []
    assert not [p for p in (root / "threads").iterdir()]


async def test_a_late_update_does_not_resurrect_a_deleted_thread(
    layer: Any, user: Any, root: Path
) -> None:
    await layer.update_thread("t1", name="Doomed", user_id=user.id)
    await layer.delete_thread("t1")
    # What Chainlit sends on disconnect, and stray writes still in flight.
    await layer.update_thread("t1", metadata={"chat_settings": {}}, user_id=user.id)
    await layer.create_step({"id": "late", "threadId": "t1", "type": "run"})
    assert await layer.get_thread("t1") is None
    assert await listed(layer, user.id) == []
    assert not (root / "threads" / "t1").exists()
    # ...even for another process that never saw the deletion.
    other = FileDataLayer(root)
    await other.update_thread("t1", name="ghost")
    assert await other.get_thread("t1") is None


async def test_deleting_an_unknown_thread_is_harmless(layer: Any) -> None:
    await layer.delete_thread("never-existed")
    assert await layer.get_thread("never-existed") is None


async def test_the_sidebar_sees_the_thread_as_soon_as_update_thread_returns(
    layer: Any, user: Any
) -> None:
    await layer.create_step(
        {"id": "m1", "threadId": "t1", "type": "user_message", "output": "hello"}
    )
    assert await listed(layer, user.id) == []  # no author yet
    await layer.update_thread("t1", name="hello", user_id=user.id)
    assert await listed(layer, user.id) == ["t1"]
    await layer.update_thread("t1", name="renamed")
    page = await layer.list_threads(Pagination(first=5), ThreadFilter(userId=user.id))
    assert page.data[0]["name"] == "renamed"


async def test_another_process_sees_the_thread_too(layer: Any, user: Any, root: Path) -> None:
    other = FileDataLayer(root)
    assert await listed(other, user.id) == []
    await layer.update_thread("t1", name="shared", user_id=user.id)
    assert await listed(other, user.id) == ["t1"]
    assert (await other.get_thread("t1"))["name"] == "shared"


async def test_user_of_a_thread_can_be_a_user_created_by_another_process(
    layer: Any, root: Path
) -> None:
    other = FileDataLayer(root)
    bob = await other.create_user(User(identifier="bob"))
    await layer.update_thread("t1", user_id=bob.id)
    assert await layer.get_thread_author("t1") == "bob"
