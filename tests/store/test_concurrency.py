"""Many coroutines, and several processes, writing one root at once lose nothing."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from filelayer import ArchiveStore


def _writer(root: str, worker: int, threads: list[str], turns: int) -> None:
    """One process: its own store on the shared root, as a second Chainlit worker."""
    store = ArchiveStore(root)
    user = store.upsert_user(f"user-{worker % 2}")
    for n in range(turns):
        for thread in threads:
            sid = f"w{worker}-{thread}-{n}"
            store.write_step(
                {
                    "id": sid,
                    "threadId": thread,
                    "type": "user_message",
                    "output": "",
                    "createdAt": f"2026-01-01T00:{worker:02d}:{n:02d}.000000Z",
                }
            )
            store.write_step({"id": sid, "threadId": thread, "output": f"text {sid}"})
            if n % 3 == 0:
                store.upsert_feedback(
                    for_id=sid, value=n % 2, thread_id=thread, feedback_id=f"fb-{sid}"
                )
        store.update_thread(threads[n % len(threads)], name=f"w{worker}-{n}", user_id=user["id"])


def test_processes_writing_the_same_and_different_threads_lose_nothing(root: Path) -> None:
    ArchiveStore(root)  # create the archive once, as an app's first start would
    ctx = multiprocessing.get_context("spawn")
    shared = ["shared-a", "shared-b"]
    turns = 12
    procs = [
        ctx.Process(target=_writer, args=(str(root), w, [*shared, f"own-{w}"], turns))
        for w in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
        assert p.exitcode == 0
    store = ArchiveStore(root)
    for w in range(4):
        for thread in [*shared, f"own-{w}"]:
            got = store.get_thread(thread)
            assert got is not None
            steps = {s["id"]: s for s in got["steps"]}
            fb = {s["id"]: s["feedback"] for s in got["steps"] if s["feedback"]}
            for n in range(turns):
                sid = f"w{w}-{thread}-{n}"
                assert steps[sid]["output"] == f"text {sid}"
                if n % 3 == 0:
                    assert fb[sid]["id"] == f"fb-{sid}"
    # The index, as a fresh process sees it, agrees with the directories.
    fresh = ArchiveStore(root)
    fresh.index.refresh()
    for thread in fresh.thread_ids():
        expected = fresh.summarise(thread)
        indexed = fresh.index.threads[thread]
        assert expected is not None
        assert (indexed.name, indexed.user_id, indexed.texts, indexed.feedback) == (
            expected.name,
            expected.user_id,
            expected.texts,
            expected.feedback,
        )
    assert not list(root.rglob("*.tmp"))


async def test_hundreds_of_coroutines_on_one_thread_lose_nothing(root: Path, in_tmp: Path) -> None:
    pytest.importorskip("chainlit")
    from chainlit.context import init_http_context
    from chainlit.element import Text
    from chainlit.types import Feedback

    from filelayer import FileDataLayer

    init_http_context()
    layer = FileDataLayer(root)

    async def turn(n: int) -> None:
        sid = f"s{n}"
        await layer.create_step(
            {
                "id": sid,
                "threadId": "t",
                "type": "assistant_message",
                "output": "",
                "createdAt": f"2026-01-01T00:00:{n % 60:02d}Z",
            }
        )
        await layer.update_step({"id": sid, "threadId": "t", "output": f"answer {n}"})
        if n % 4 == 0:
            await layer.upsert_feedback(Feedback(forId=sid, value=1, threadId="t", id=f"f{n}"))
        if n % 5 == 0:
            await layer.create_element(
                Text(name=f"n{n}.txt", content=f"note {n}", for_id=sid, thread_id="t", id=f"e{n}")
            )

    tasks: list[Any] = [turn(n) for n in range(250)]
    await asyncio.gather(*tasks)
    thread = await layer.get_thread("t")
    steps = {s["id"]: s for s in thread["steps"]}
    assert len(steps) == 250
    assert all(steps[f"s{n}"]["output"] == f"answer {n}" for n in range(250))
    assert sum(1 for s in steps.values() if s["feedback"]) == len(range(0, 250, 4))
    assert sorted(e["id"] for e in thread["elements"]) == sorted(f"e{n}" for n in range(0, 250, 5))
    files = {p.name for p in (root / "threads" / "t" / "elements").iterdir()}
    assert len(files) == len(range(0, 250, 5))


def test_a_lock_held_by_another_process_times_out_clearly(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    from filelayer import ArchiveLockTimeout

    root = tmp_path / "chats"
    store = ArchiveStore(root, lock_timeout=0.3)
    store.update_thread("t1", name="x")
    lock = store.layout.thread_lock("t1")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            "f = open(sys.argv[1], 'a')\n"
            "fcntl.flock(f, fcntl.LOCK_EX)\n"
            "print('held', flush=True)\n"
            "time.sleep(30)\n",
            str(lock),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(ArchiveLockTimeout) as raised:
            store.write_step({"id": "s1", "threadId": "t1", "type": "run"})
        # It waited its timeout, never less (the upper bound is for a stuck call only).
        assert 0.25 <= time.monotonic() - started < 120
        assert str(lock) in str(raised.value)
    finally:
        holder.kill()
        holder.wait()
    # Released: the same write goes through, and nothing was half-written before.
    store.write_step({"id": "s1", "threadId": "t1", "type": "run", "output": "ok"})
    thread = store.get_thread("t1")
    assert thread is not None and [s["output"] for s in thread["steps"]] == ["ok"]
