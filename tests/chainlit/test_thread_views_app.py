"""A Chainlit app's shutdown leaves the view files of the long threads it wrote (see
``filelayer.store.snapshots``): its next start reads them instead of folding journals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from filelayer import ArchiveStore
from tests.support.thread_views import folded, view_path

TID = "t1"

pytest.importorskip("chainlit")


async def test_an_app_that_shuts_down_leaves_views_its_next_start_reads(tmp_path: Path) -> None:
    """Through the Chainlit adapter: Chainlit closes its data layer on shutdown."""
    from chainlit.context import init_http_context

    from filelayer import FileDataLayer

    init_http_context()
    root = tmp_path / "a"
    layer = FileDataLayer(root)
    user = await layer.create_user(_user("alice@example.com"))
    assert user is not None
    await layer.update_thread(TID, name="long", user_id=user.id)
    for n in range(40):
        await layer.create_step(
            {
                "id": f"s{n:03d}",
                "threadId": TID,
                "type": "assistant_message",
                "output": "y" * 1000,
                "createdAt": f"2026-12-01T00:00:{n:02d}.000000Z",
            }
        )
    await layer.close()
    assert view_path(root).exists()
    restarted = FileDataLayer(root)
    thread = await restarted.get_thread(TID)
    await restarted.close()
    assert thread is not None and len(thread["steps"]) == 40
    assert thread["steps"] == folded(root)["steps"]


def _user(identifier: str) -> Any:
    from chainlit.user import User

    return User(identifier=identifier)


async def _long_thread(layer: Any, thread_id: str, steps: int = 40) -> None:
    user = await layer.create_user(_user("alice@example.com"))
    assert user is not None
    await layer.update_thread(thread_id, name="long", user_id=user.id)
    for n in range(steps):
        await layer.create_step(
            {
                "id": f"{thread_id}-s{n:03d}",
                "threadId": thread_id,
                "type": "assistant_message",
                "output": "y" * 1000,
                "createdAt": f"2026-12-01T00:00:{n:02d}.000000Z",
            }
        )


async def _until(condition: Any, seconds: float = 10.0) -> bool:
    import asyncio

    for _ in range(int(seconds / 0.01)):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


async def test_a_running_app_writes_the_view_of_a_thread_gone_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker resuming the thread reads the view the live writer left, without
    the writer closing: the view matches the journal and reads as the fold does."""
    from chainlit.context import init_http_context

    from filelayer import FileDataLayer
    from filelayer.chainlit import offload

    monkeypatch.setattr(offload, "VIEW_IDLE", 0.05)
    init_http_context()
    root = tmp_path / "a"
    layer = FileDataLayer(root)
    try:
        await _long_thread(layer, TID)
        assert await _until(view_path(root).exists)
        other = ArchiveStore(root)  # another worker's first read
        try:
            view = other.views.snapshots.load(TID)
            assert view is not None  # it matches the journal as it is
            thread = other.get_thread(TID)
        finally:
            other.close()
        assert thread is not None and thread["steps"] == folded(root)["steps"]
    finally:
        await layer.close()


async def test_no_view_of_a_thread_deleted_before_it_went_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deleted conversation leaves no copy: the pending view is never written."""
    import asyncio

    from chainlit.context import init_http_context

    from filelayer import FileDataLayer
    from filelayer.chainlit import offload

    monkeypatch.setattr(offload, "VIEW_IDLE", 0.05)
    init_http_context()
    root = tmp_path / "a"
    layer = FileDataLayer(root)
    try:
        await _long_thread(layer, TID)
        await _long_thread(layer, "t2")
        await layer.delete_thread(TID)
        assert await _until(lambda: view_path(root, "t2").exists())
        await asyncio.sleep(0.2)
        assert not view_path(root, TID).exists()
    finally:
        await layer.close()
    assert not view_path(root, TID).exists()


async def test_a_thread_still_written_gets_its_view_only_once_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While writes keep coming the view waits (it would be stale at once); a layer
    closed before the thread went quiet writes it as it closes."""
    from chainlit.context import init_http_context

    from filelayer import FileDataLayer
    from filelayer.chainlit import offload

    monkeypatch.setattr(offload, "VIEW_IDLE", 3600.0)
    init_http_context()
    root = tmp_path / "a"
    layer = FileDataLayer(root)
    await _long_thread(layer, TID)
    assert not view_path(root).exists()
    await layer.close()
    assert view_path(root).exists()


def test_a_thread_deleted_while_its_view_is_made_leaves_no_view(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The view is made outside the store's mutex: a deletion between the fold and the
    file's rename must still leave no copy of the conversation."""
    from filelayer.store import snapshots

    root = tmp_path / "a"
    store = ArchiveStore(root)
    store.update_thread(TID, name="long")
    for n in range(40):
        store.write_step(
            {"id": f"s{n:03d}", "threadId": TID, "type": "assistant_message", "output": "y" * 1000}
        )
    save = snapshots.ThreadSnapshots.save

    def deleted_meanwhile(self: Any, *args: Any, **kwargs: Any) -> None:
        store.delete_thread(TID)
        save(self, *args, **kwargs)

    monkeypatch.setattr(snapshots.ThreadSnapshots, "save", deleted_meanwhile)
    assert store.save_quiet_views(0.0) is False
    assert not view_path(root).exists()
    assert store.get_thread(TID) is None
    store.close()


async def test_a_thread_written_while_other_views_are_made_gets_its_view_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread written while the maintenance thread writes the views of others is not
    left without a view until the app stops: the next look is made for it."""
    import threading

    from chainlit.context import init_http_context

    from filelayer import FileDataLayer
    from filelayer.chainlit import offload

    monkeypatch.setattr(offload, "VIEW_IDLE", 0.05)
    init_http_context()
    root = tmp_path / "a"
    layer = FileDataLayer(root)
    store = layer.store
    original = store.save_quiet_views
    taken, go_on = threading.Event(), threading.Event()

    def held(idle: float) -> bool:
        left = original(idle)
        if view_path(root).exists() and not taken.is_set():  # t1's view is made
            taken.set()
            go_on.wait(10)
        return left

    monkeypatch.setattr(store, "save_quiet_views", held)
    try:
        await _long_thread(layer, TID)
        assert await _until(taken.is_set)
        await _long_thread(layer, "t2")  # written while the views of t1 are made
        monkeypatch.setattr(store, "save_quiet_views", original)
        go_on.set()
        assert await _until(lambda: view_path(root, "t2").exists(), 3.0)
    finally:
        go_on.set()
        await layer.close()
