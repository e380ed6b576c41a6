"""No fsync on the event loop in the ``flush`` mode (issue #11): a manifest replaced by
``update_thread`` must be fsynced before its rename once a version of it is on the disk,
and that wait belongs in a worker thread, not on the loop every chat shares."""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chainlit")

from filelayer._io import flusher as _flusher
from filelayer._io import fs as _fs

pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="names open files through /proc (Linux)"
)


@pytest.fixture
async def layer(root: Path, in_tmp: Path) -> AsyncIterator[Any]:
    from chainlit.context import init_http_context

    from filelayer import FileDataLayer

    init_http_context()
    layer = FileDataLayer(root)
    yield layer
    await layer.close()


async def test_a_renamed_thread_is_not_fsynced_on_the_loop(
    layer: Any, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await layer.update_thread("t1", name="first")
    await layer.create_step({"id": "s1", "threadId": "t1", "type": "user_message", "output": "hi"})
    _flusher.FLUSHER.flush()  # the manifest is on the disk: replacing it needs an fsync
    on_loop: list[str] = []
    real = _fs.fsync_fd
    loop_thread = threading.current_thread()

    def fsync_fd(fd: int) -> None:
        if threading.current_thread() is loop_thread:
            on_loop.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(_fs, "fsync_fd", fsync_fd)
    before = layer.calls.offloaded
    await layer.update_thread("t1", name="renamed", metadata={"k": 1})
    assert on_loop == []
    assert layer.calls.offloaded == before + 1
    thread = await layer.get_thread("t1")
    assert thread["name"] == "renamed" and thread["metadata"] == {"k": 1}
    # A change that makes no fsync (the step's journal) still runs on the loop.
    await layer.create_step(
        {"id": "s2", "threadId": "t1", "type": "user_message", "output": "again"}
    )
    assert layer.calls.offloaded == before + 1


async def test_a_persisted_session_is_not_fsynced_on_the_loop(
    layer: Any, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chainlit's session, kept in ``sessions/``, is durable as the manifest: once on the
    disk, its replacement is fsynced before the rename, in a worker thread."""

    def session(memory: str) -> dict[str, Any]:
        return {"chat_settings": {}, "chat_profile": None, "client_type": "webapp", "m": memory}

    await layer.update_thread("t1", name="first")
    await layer.update_thread("t1", metadata=session("one"))
    _flusher.FLUSHER.flush()  # the session file is on the disk
    on_loop: list[str] = []
    real = _fs.fsync_fd
    loop_thread = threading.current_thread()

    def fsync_fd(fd: int) -> None:
        if threading.current_thread() is loop_thread:
            on_loop.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(_fs, "fsync_fd", fsync_fd)
    before = layer.calls.offloaded
    await layer.update_thread("t1", metadata=session("two"))
    assert on_loop == []
    assert layer.calls.offloaded == before + 1
    assert (await layer.get_thread("t1"))["metadata"]["m"] == "two"
    await layer.update_thread("t1", metadata=session("two"))  # kept as it is: on the loop
    assert layer.calls.offloaded == before + 1


@pytest.mark.parametrize("deleted", ["element", "step"])
async def test_a_deletion_that_removes_an_element_file_is_not_fsynced_on_the_loop(
    layer: Any, root: Path, monkeypatch: pytest.MonkeyPatch, deleted: str
) -> None:
    """The record that hides an element file reaches the disk before the file goes, in
    the flush mode too: an fsync, made in a worker thread, not on the loop."""
    await layer.create_step({"id": "s1", "threadId": "t1", "type": "user_message", "output": "hi"})
    element = {"id": "e1", "forId": "s1", "type": "file", "name": "a.txt", "mime": "text/plain"}
    assert layer.store.put_element("t1", element, b"hello")
    on_loop: list[str] = []
    real = _fs.fsync_fd
    loop_thread = threading.current_thread()

    def fsync_fd(fd: int) -> None:
        if threading.current_thread() is loop_thread:
            on_loop.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(_fs, "fsync_fd", fsync_fd)
    before = layer.calls.offloaded
    if deleted == "element":
        await layer.delete_element("e1", "t1")
    else:
        await layer.delete_step("s1")
    assert on_loop == []
    assert layer.calls.offloaded == before + 1
    assert not list((root / "threads" / "t1" / "elements").iterdir())
    state = layer.store.read_state("t1")
    assert "e1" not in state.elements
