"""Threads: update_thread, get_thread's ThreadDict, the author, deletion and tombstones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chainlit")

from chainlit.element import Image
from chainlit.types import Feedback, Pagination, ThreadFilter
from chainlit.user import User

from filelayer import FileDataLayer
from tests.support.layer import at, end_session, listed, step

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


# -- update_thread ---------------------------------------------------------------------


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
    assert isinstance(thread["createdAt"], str) and thread["createdAt"].endswith("Z")


async def test_update_thread_with_only_metadata_creates_the_thread(layer: Any) -> None:
    await layer.update_thread("t1", metadata={"chat_profile": "default"})
    thread = await layer.get_thread("t1")
    assert thread is not None
    assert thread["metadata"] == {"chat_profile": "default"}
    assert thread["name"] is None and thread["userId"] is None


async def test_metadata_is_merged_key_by_key_and_a_key_set_to_none_is_removed(
    layer: Any,
) -> None:
    await layer.update_thread("t1", metadata={"a": 1, "b": {"x": 1}, "c": 3})
    await layer.update_thread("t1", metadata={"b": {"y": 2}, "c": None, "d": "new"})
    assert (await layer.get_thread("t1"))["metadata"] == {"a": 1, "b": {"y": 2}, "d": "new"}
    await layer.update_thread("t1", metadata={})
    assert (await layer.get_thread("t1"))["metadata"] == {"a": 1, "b": {"y": 2}, "d": "new"}
    await layer.update_thread("t1", metadata={"a": None, "missing": None})
    assert (await layer.get_thread("t1"))["metadata"] == {"b": {"y": 2}, "d": "new"}


async def test_name_user_and_tags_are_set_when_given_and_kept_otherwise(
    layer: Any, user: Any
) -> None:
    bob = await layer.create_user(User(identifier="bob"))
    await layer.update_thread("t1", name="Name", user_id=user.id, tags=["t"], metadata={"k": 1})
    await layer.update_thread("t1", metadata={"other": 2})
    thread = await layer.get_thread("t1")
    assert (thread["name"], thread["userId"], thread["tags"]) == ("Name", user.id, ["t"])
    await layer.update_thread("t1", name="Renamed")
    await layer.update_thread("t1", tags=["x", "y"])
    await layer.update_thread("t1", user_id=bob.id)
    thread = await layer.get_thread("t1")
    assert (thread["name"], thread["tags"]) == ("Renamed", ["x", "y"])
    assert (thread["userId"], thread["userIdentifier"]) == (bob.id, "bob")
    assert thread["metadata"] == {"k": 1, "other": 2}


async def test_the_user_identifier_is_resolved_from_a_user_made_by_another_worker(
    layer: Any, root: Path
) -> None:
    other = FileDataLayer(root)
    bob = await other.create_user(User(identifier="bob@example.com"))
    await layer.update_thread("t1", user_id=bob.id)
    assert (await layer.get_thread("t1"))["userIdentifier"] == "bob@example.com"
    assert await layer.get_thread_author("t1") == "bob@example.com"


async def test_list_threads_shows_the_change_as_soon_as_update_thread_returns(
    layer: Any, user: Any
) -> None:
    # Chainlit re-lists the sidebar right after first_interaction.
    await layer.create_step(step("m1", type="user_message", output="hello", createdAt=at(1)))
    assert await listed(layer, user.id) == []
    await layer.update_thread("t1", name="hello", user_id=user.id)
    page = await layer.list_threads(Pagination(first=5), ThreadFilter(userId=user.id))
    assert [(t["id"], t["name"]) for t in page.data] == [("t1", "hello")]
    await layer.update_thread("t1", name="renamed", metadata={"is_shared": True})
    page = await layer.list_threads(Pagination(first=5), ThreadFilter(userId=user.id))
    assert page.data[0]["name"] == "renamed"
    assert page.data[0]["metadata"]["is_shared"] is True


async def test_another_worker_lists_the_thread_as_soon_as_update_thread_returns(
    layer: Any, user: Any, root: Path
) -> None:
    other = FileDataLayer(root)
    assert await listed(other, user.id) == []
    await layer.update_thread("t1", name="shared", user_id=user.id)
    assert await listed(other, user.id) == ["t1"]
    await layer.update_thread("t1", name="renamed")
    page = await other.list_threads(Pagination(first=5), ThreadFilter(userId=user.id))
    assert page.data[0]["name"] == "renamed"


# -- get_thread ------------------------------------------------------------------------


async def test_get_thread_returns_a_complete_thread_dict(layer: Any, user: Any) -> None:
    await layer.update_thread("t1", name="Bread", user_id=user.id, metadata={"chat_profile": "p"})
    await layer.create_step(step("u1", type="user_message", output="How?", createdAt=at(1)))
    await layer.create_step(step("run", type="run", name="on_message", createdAt=at(2)))
    await layer.create_step(
        step("a1", type="assistant_message", parentId="run", output="Knead.", createdAt=at(3))
    )
    fid = await layer.upsert_feedback(
        Feedback(forId="run", value=1, comment="useful", threadId="t1")
    )
    image = Image(name="loaf.png", content=b"\x89PNG-bytes", for_id="a1", thread_id="t1")
    image.mime = "image/png"
    await layer.create_element(image)

    thread = await layer.get_thread("t1")
    assert set(thread) >= THREAD_KEYS
    assert (thread["name"], thread["userId"], thread["userIdentifier"]) == (
        "Bread",
        user.id,
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
    assert (element["id"], element["forId"], element["name"]) == (image.id, "a1", "loaf.png")
    assert element["threadId"] == "t1"


async def test_get_thread_of_an_unknown_thread_is_none(layer: Any) -> None:
    assert await layer.get_thread("never-created") is None


async def test_chainlits_resume_restores_profile_settings_and_author(
    registered: Any, user: Any
) -> None:
    from chainlit.session import WebsocketSession
    from chainlit.socket import resume_thread
    from chainlit.user_session import user_sessions

    metadata = {"chat_profile": "expert", "chat_settings": {"temperature": 0.2}, "env": {}}
    await registered.update_thread("t-resume", name="old chat", user_id=user.id, metadata=metadata)

    async def emit_call(*args: Any) -> None:
        return None

    session = WebsocketSession(
        id="resume-session",
        socket_id="resume-socket",
        emit=lambda *args: None,
        emit_call=emit_call,
        user_env={},
        client_type="webapp",
        thread_id="t-resume",
        user=user,
    )
    try:
        thread = await resume_thread(session)
        assert thread is not None and thread["id"] == "t-resume"
        assert session.chat_profile == "expert"
        assert session.chat_settings == {"temperature": 0.2}
        assert user_sessions[session.id]["chat_profile"] == "expert"
    finally:
        user_sessions.pop(session.id, None)
        await end_session(session)


# -- the author ------------------------------------------------------------------------


async def test_get_thread_author_is_the_identifier_or_an_empty_string(
    layer: Any, user: Any
) -> None:
    await layer.update_thread("mine", user_id=user.id)
    await layer.update_thread("nobodys", name="no author")
    assert await layer.get_thread_author("mine") == "alice@example.com"
    assert await layer.get_thread_author("nobodys") == ""
    assert await layer.get_thread_author("unknown-thread") == ""
    for invalid in ["", "../mine", "/etc/passwd", "a/b", "x\x00y", "CON", "a" * 200]:
        assert await layer.get_thread_author(invalid) == ""


async def test_chainlits_acl_gives_404_for_unknown_401_for_others_and_passes_the_author(
    registered: Any, user: Any
) -> None:
    from chainlit.data.acl import is_thread_author
    from fastapi import HTTPException

    await registered.update_thread("mine", user_id=user.id)
    assert await is_thread_author("alice@example.com", "mine") is True
    with pytest.raises(HTTPException) as unknown:
        await is_thread_author("alice@example.com", "unknown-thread")
    assert unknown.value.status_code == 404
    with pytest.raises(HTTPException) as invalid:
        await is_thread_author("alice@example.com", "../../etc/passwd")
    assert invalid.value.status_code == 404
    with pytest.raises(HTTPException) as other:
        await is_thread_author("mallory", "mine")
    assert other.value.status_code == 401


# -- delete_thread ---------------------------------------------------------------------


async def test_delete_thread_removes_the_whole_directory(layer: Any, user: Any, root: Path) -> None:
    await layer.update_thread("t1", name="Bye", user_id=user.id)
    await layer.update_thread("t2", name="Stays", user_id=user.id)
    await layer.create_step(step("s1", type="user_message", output="x", createdAt=at(1)))
    await layer.create_element(Image(name="p.png", content=b"png", for_id="s1", thread_id="t1"))
    assert (root / "threads" / "t1" / "elements").is_dir()
    await layer.delete_thread("t1")
    assert not (root / "threads" / "t1").exists()
    assert [p.name for p in (root / "threads").iterdir()] == ["t2"]
    assert await layer.get_thread("t1") is None
    assert await layer.get_thread_author("t1") == ""
    assert await listed(layer, user.id) == ["t2"]
    assert await FileDataLayer(root).get_thread("t1") is None


async def test_deleting_an_unknown_or_already_deleted_thread_is_harmless(layer: Any) -> None:
    await layer.delete_thread("never-existed")
    await layer.update_thread("t1", name="x")
    await layer.delete_thread("t1")
    await layer.delete_thread("t1")
    assert await layer.get_thread("t1") is None


async def test_a_late_update_thread_does_not_resurrect_a_deleted_thread(
    layer: Any, user: Any, root: Path
) -> None:
    await layer.update_thread("t1", name="Doomed", user_id=user.id)
    await layer.create_step(step("s1", type="user_message", output="hi", createdAt=at(1)))
    await layer.delete_thread("t1")
    # What Chainlit sends on disconnect, and stray writes still in flight.
    await layer.update_thread("t1", metadata={"chat_settings": {}}, user_id=user.id)
    await layer.update_thread("t1", name="ghost")
    await layer.create_step(step("late", type="run", createdAt=at(2)))
    await layer.update_step(step("s1", output="late text"))
    await layer.create_element(Image(name="late.png", content=b"x", for_id="s1", thread_id="t1"))
    assert await layer.get_thread("t1") is None
    assert await listed(layer, user.id) == []
    assert await listed(layer, user.id, search="ghost") == []
    assert not (root / "threads" / "t1").exists()


async def test_a_late_update_from_another_worker_does_not_resurrect_it_either(
    layer: Any, user: Any, root: Path
) -> None:
    other = FileDataLayer(root)
    await other.update_thread("t1", name="seen by the other worker", user_id=user.id)
    assert await other.get_thread("t1") is not None
    await layer.delete_thread("t1")
    await other.update_thread("t1", metadata={"chat_settings": {}}, user_id=user.id)
    await other.create_step(step("late", type="run", createdAt=at(2)))
    for dl in (layer, other, FileDataLayer(root)):
        assert await dl.get_thread("t1") is None
        assert await listed(dl, user.id) == []
    assert not (root / "threads" / "t1").exists()
