"""Group commit in the ``fsync`` mode (issue #11): the data layer's concurrent writes
share their fsyncs, and no call is acknowledged before the fsync that makes it durable.

The fsyncs are watched in-process (what each one covered: the file and its size when it
returned); the power-cut explorer (``test_reliability_powercut.py``) checks the outcome
from the real system calls. No timing is asserted: the lane is held on a fsync until
every call is queued, so that what forms one group does not depend on the machine.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chainlit")

from filelayer._io import fs as _fs
from filelayer.errors import StorageWriteError

pytestmark = pytest.mark.skipif(os.name != "posix", reason="fsync of directories (POSIX)")


class Watch:
    """Every fsync of a file: (device, inode) and the file's size once it returned."""

    def __init__(self) -> None:
        self.synced: list[tuple[tuple[int, int], int]] = []
        self.lock = threading.Lock()
        self.gate: threading.Event | None = None  # the next fsync waits for it
        self.fail: OSError | None = None

    def durable_up_to(self, path: Path) -> int:
        """How many bytes of ``path`` some fsync covered."""
        st = os.stat(path)
        key = (st.st_dev, st.st_ino)
        with self.lock:
            return max((size for k, size in self.synced if k == key), default=0)


@pytest.fixture
def watch(monkeypatch: pytest.MonkeyPatch) -> Watch:
    seen = Watch()
    real = _fs.fsync_fd

    def fsync_fd(fd: int) -> None:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            real(fd)
            return
        gate, seen.gate = seen.gate, None
        if gate is not None:
            assert gate.wait(30)
        if seen.fail is not None:
            raise seen.fail
        real(fd)
        with seen.lock:
            seen.synced.append(((st.st_dev, st.st_ino), os.fstat(fd).st_size))

    monkeypatch.setattr(_fs, "fsync_fd", fsync_fd)
    return seen


@pytest.fixture
async def layer(root: Path, in_tmp: Path) -> AsyncIterator[Any]:
    from chainlit.context import init_http_context

    from filelayer import FileDataLayer

    init_http_context()
    layer = FileDataLayer(root, durability="fsync")
    yield layer
    await layer.close()


def message(step_id: str, thread_id: str, output: str = "hello") -> dict[str, Any]:
    return {
        "id": step_id,
        "threadId": thread_id,
        "type": "assistant_message",
        "output": output,
        "createdAt": "2026-01-01T00:00:00.000000Z",
    }


async def held_until_queued(layer: Any, watch: Watch, calls: list[Any]) -> list[Any]:
    """Run ``calls`` (awaitables) at once, the lane held on its first fsync until every
    other call is queued behind it; their outcomes (exceptions returned)."""
    watch.gate = gate = threading.Event()
    tasks = [asyncio.ensure_future(c) for c in calls]
    for _ in range(10_000):
        if layer.calls._queued >= len(tasks) - 1 and watch.gate is None:
            break  # the first call is in its fsync, the others wait behind it
        await asyncio.sleep(0.001)
    gate.set()
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_each_call_returns_after_the_fsync_that_covers_its_line(
    layer: Any, root: Path, watch: Watch
) -> None:
    threads = [f"t{n}" for n in range(8)]
    for tid in threads:
        await layer.update_thread(tid, name=tid)

    async def chat(tid: str) -> None:
        for n in range(5):
            await layer.create_step(message(f"{tid}-s{n}", tid, "x" * (n + 1)))
            # Returned: the line is in the journal, and an fsync covered it.
            journal = root / "threads" / tid / "steps.jsonl"
            data = journal.read_bytes()
            end = data.index(f'"{tid}-s{n}"'.encode())
            end = data.index(b"\n", end) + 1
            assert watch.durable_up_to(journal) >= end, (tid, n)

    await asyncio.gather(*(chat(tid) for tid in threads))
    thread = await layer.get_thread("t3")
    assert len(thread["steps"]) == 5


async def test_concurrent_writes_share_their_fsyncs(layer: Any, root: Path, watch: Watch) -> None:
    threads = [f"t{n}" for n in range(10)]
    for tid in threads:
        await layer.update_thread(tid, name=tid)
    watch.synced.clear()
    calls = [layer.create_step(message("first", "t0"))]
    for tid in threads:  # two writes to each thread, queued behind the first
        calls.append(layer.create_step(message(f"{tid}-a", tid)))
        calls.append(layer.create_step(message(f"{tid}-b", tid)))
    outcomes = await held_until_queued(layer, watch, calls)
    assert not [o for o in outcomes if isinstance(o, BaseException)]
    # The first call's fsync, then one group: one fsync per journal, not one per call.
    assert len(watch.synced) <= 1 + len(threads) < len(calls)
    for tid in threads:
        journal = root / "threads" / tid / "steps.jsonl"
        assert watch.durable_up_to(journal) == journal.stat().st_size
        steps = {s["id"] for s in (await layer.get_thread(tid))["steps"]}
        assert {f"{tid}-a", f"{tid}-b"} <= steps


async def test_new_threads_in_one_group_are_durable_before_their_calls_return(
    layer: Any, root: Path, watch: Watch
) -> None:
    calls = [layer.update_thread("first", name="first")]
    calls += [layer.create_step(message(f"s{n}", f"new{n}")) for n in range(6)]
    outcomes = await held_until_queued(layer, watch, calls)
    assert not [o for o in outcomes if isinstance(o, BaseException)]
    for n in range(6):
        directory = root / "threads" / f"new{n}"
        for name in ("thread.json", "steps.jsonl"):
            path = directory / name
            assert watch.durable_up_to(path) == path.stat().st_size, path


async def test_a_failed_group_fsync_fails_every_call_of_the_group(
    layer: Any, root: Path, watch: Watch
) -> None:
    for tid in ("t0", "t1", "t2"):
        await layer.update_thread(tid, name=tid)
    calls = [layer.create_step(message("first", "t0"))]
    calls += [layer.create_step(message(f"s{n}", f"t{n % 3}")) for n in range(6)]
    watch.gate = gate = threading.Event()
    tasks = [asyncio.ensure_future(c) for c in calls]
    while not (layer.calls._queued >= len(tasks) - 1 and watch.gate is None):
        await asyncio.sleep(0.001)
    watch.fail = OSError(errno.EIO, "I/O error")  # the first call's fsync fails too
    gate.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, StorageWriteError) for o in outcomes), outcomes
    # The layer keeps serving once the disk recovers.
    watch.fail = None
    await layer.create_step(message("later", "t1"))
    assert "later" in {s["id"] for s in (await layer.get_thread("t1"))["steps"]}


async def test_replaced_manifests_are_fsynced_before_their_rename_and_shared(
    layer: Any, root: Path, watch: Watch, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads = [f"t{n}" for n in range(6)]
    for tid in threads:
        await layer.update_thread(tid, name=tid)
    renamed_unsynced: list[str] = []
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        # A manifest renamed over the old one must have been fsynced first.
        if Path(dst).name == "thread.json" and Path(dst).exists():
            st = os.stat(src)
            with watch.lock:
                if not any(k == (st.st_dev, st.st_ino) for k, _ in watch.synced):
                    renamed_unsynced.append(str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    watch.synced.clear()
    calls = [layer.create_step(message("first", "t0"))]
    calls += [layer.update_thread(tid, name=f"renamed {tid}") for tid in threads]
    for tid in threads:  # after the renames of their threads: they wait for them
        calls.append(layer.create_step(message(f"{tid}-a", tid)))
        calls.append(layer.create_step(message(f"{tid}-b", tid)))
    # Read-your-writes inside a group: a second change of t1 builds on the first.
    calls.append(layer.update_thread("t1", metadata={"k": 1}))
    outcomes = await held_until_queued(layer, watch, calls)
    assert not [o for o in outcomes if isinstance(o, BaseException)]
    assert renamed_unsynced == []
    for tid in threads:
        manifest = root / "threads" / tid / "thread.json"
        assert watch.durable_up_to(manifest) == manifest.stat().st_size
        thread = await layer.get_thread(tid)
        assert thread["name"] == f"renamed {tid}"
    assert (await layer.get_thread("t1"))["metadata"] == {"k": 1}
    # The renames shared one group, the steps another: one fsync per file and group.
    assert len(watch.synced) <= 2 + 2 * len(threads) < len(calls)
    assert not list((root / "threads").glob("*/*.tmp"))


async def test_a_thread_deleted_in_the_group_that_wrote_to_it_fails_no_call(
    layer: Any, root: Path, watch: Watch
) -> None:
    """A thread's first step and its deletion run in one group (a chat deleted while its
    answer is being written): the directory the step made is gone when the group fsyncs
    its directories. Its removal is on the disk already (the deletion fsynced it), so
    no call of the group fails for it, neither the step nor the others' calls."""
    for tid in ("t0", "t1"):
        await layer.update_thread(tid, name=tid)
    calls = [
        layer.create_step(message("a", "t0")),
        layer.create_step(message("first", "t2")),
        layer.create_step(message("b", "t1")),
        layer.delete_thread("t2"),
        layer.create_step(message("c", "t1")),
    ]
    outcomes = await held_until_queued(layer, watch, calls)
    assert outcomes == [None] * len(calls)
    assert not (root / "threads" / "t2").exists()
    assert {"b", "c"} <= {s["id"] for s in (await layer.get_thread("t1"))["steps"]}
