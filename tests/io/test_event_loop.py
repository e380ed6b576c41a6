"""The event loop is never blocked by what another process does (issue #11, item 1).

A Chainlit app is one asyncio loop shared by every user. These tests run a heartbeat
task next to the data layer's calls while another process holds the locks the calls
need, or replaces the index under them, and check that the heartbeat kept beating while
the calls waited, that the calls then landed, in the order they were made, and that the
store stayed consistent. No timing is asserted: only what happened while a call waited.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chainlit")

from filelayer import ArchiveStore
from filelayer._io import locks as _locks

pytestmark = pytest.mark.skipif(_locks.fcntl is None, reason="flock locks (POSIX)")

HOLDER = """
import fcntl, os, sys
held = {}
for line in sys.stdin:
    verb, _, path = line.strip().partition(" ")
    if verb == "hold":
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        held[path] = fd
    elif verb == "release":
        os.close(held.pop(path))
    print("ok", flush=True)
"""


class LockHolder:
    """Another process that takes and gives back lock files when told to."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _say(self, line: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ok"

    def hold(self, path: Path) -> None:
        self._say(f"hold {path}")

    def release(self, path: Path) -> None:
        self._say(f"release {path}")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Heartbeat:
    """A task that counts how often the loop let it run."""

    def __init__(self) -> None:
        self.beats = 0
        self._task: asyncio.Task[None] | None = None

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(0.001)
            self.beats += 1

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._beat())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task

    async def until(self, beats: int) -> None:
        """Wait until the heartbeat beat ``beats`` more times."""
        target = self.beats + beats
        while self.beats < target:
            await asyncio.sleep(0.001)


@pytest.fixture
def holder() -> Iterator[LockHolder]:
    h = LockHolder()
    yield h
    h.close()


@pytest.fixture
async def layer(root: Path, in_tmp: Path) -> AsyncIterator[Any]:
    from chainlit.context import init_http_context

    from filelayer import FileDataLayer

    init_http_context()
    layer = FileDataLayer(root, lock_timeout=20)
    await layer.update_thread("t1", name="first")
    await layer.create_step({"id": "q1", "threadId": "t1", "type": "user_message", "output": "hi"})
    yield layer
    await layer.close()


def message(step_id: str, output: str, thread_id: str = "t1") -> dict[str, Any]:
    return {
        "id": step_id,
        "threadId": thread_id,
        "type": "assistant_message",
        "output": output,
        "createdAt": f"2026-01-01T00:00:{len(step_id) % 60:02d}.000000Z",
    }


@pytest.mark.parametrize("lock", ["thread", "users"])
async def test_a_write_waiting_for_another_process_leaves_the_loop_free(
    layer: Any, holder: LockHolder, lock: str
) -> None:
    from chainlit.user import User

    store = layer.store
    if lock == "thread":
        path = store.layout.thread_lock("t1")
        call = layer.create_step(message("a1", "answer"))
    else:
        path = store.layout.users_lock
        call = layer.create_user(User(identifier="bob@example.com"))
    beat = Heartbeat()
    beat.start()
    holder.hold(path)
    write = asyncio.ensure_future(call)
    # The write waits for the lock; meanwhile the loop runs the heartbeat, many times.
    await beat.until(50)
    assert not write.done()
    holder.release(path)
    await asyncio.wait_for(write, 60)
    await beat.stop()
    if lock == "thread":
        thread = await layer.get_thread("t1")
        assert [s["output"] for s in thread["steps"]] == ["hi", "answer"]
    else:
        assert (await layer.get_user("bob@example.com")) is not None


SQL_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("ok", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
print("ok", flush=True)
"""


async def test_a_message_waiting_for_another_process_s_index_transaction_leaves_the_loop_free(
    layer: Any,
) -> None:
    """Another process (another worker applying its trigram index's queue, which took
    141 ms at 100,000 threads) holds the index database's write lock: a write on the
    loop stops before it writes anything, and runs again in the worker lane, which
    waits while the loop goes on; its text is then found by a search."""
    from chainlit.types import Pagination, ThreadFilter

    current = layer.store.layout.root / "index" / "current"
    database = layer.store.layout.root / "index" / current.read_text().strip()
    holder = subprocess.Popen(
        [sys.executable, "-c", SQL_HOLDER, str(database)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "ok"
        before = layer.calls.offloaded
        # A tool step changes nothing in the index: it takes none of its locks, on the loop.
        tool = {"id": "tool1", "threadId": "t1", "type": "tool", "output": "ran"}
        await asyncio.wait_for(layer.create_step(tool), 10)
        assert layer.calls.offloaded == before
        beat = Heartbeat()
        beat.start()
        write = asyncio.ensure_future(layer.create_step(message("a1", "needle answer")))
        await beat.until(50)
        assert not write.done()
        assert layer.calls.offloaded == before + 1  # stopped on the loop, runs in the lane
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "ok"
        await asyncio.wait_for(write, 60)
        await beat.stop()
    finally:
        holder.kill()
        holder.wait()
    found = await layer.list_threads(Pagination(first=5), ThreadFilter(search="needle"))
    assert [t["id"] for t in found.data] == ["t1"]
    thread = await layer.get_thread("t1")
    assert [s["output"] for s in thread["steps"]] == ["hi", "ran", "needle answer"]


async def test_writes_made_while_one_waits_land_in_the_order_they_were_made(
    layer: Any, holder: LockHolder
) -> None:
    layout = layer.store.layout
    other = next(
        f"t{n}" for n in range(2, 100) if layout.thread_lock(f"t{n}") != layout.thread_lock("t1")
    )
    await layer.update_thread(other, name="other")
    path = layout.thread_lock("t1")
    holder.hold(path)
    beat = Heartbeat()
    beat.start()
    first = asyncio.ensure_future(layer.update_thread("t1", name="second"))
    await beat.until(5)
    # A write to another thread needs no lock that is held, but must not overtake the
    # waiting write; a later rename must land after it.
    later = [
        asyncio.ensure_future(layer.update_thread(other, name="renamed")),
        asyncio.ensure_future(layer.update_thread("t1", name="third")),
    ]
    await beat.until(20)
    assert not first.done() and not any(t.done() for t in later)
    holder.release(path)
    await asyncio.wait_for(asyncio.gather(first, *later), 60)
    await beat.stop()
    assert (await layer.get_thread("t1"))["name"] == "third"
    assert (await layer.get_thread(other))["name"] == "renamed"
    # And once the queue drained, calls run on the loop again.
    before = layer.calls.offloaded
    await layer.create_step(message("a2", "more"))
    assert layer.calls.offloaded == before


async def test_reads_go_on_while_a_write_waits(layer: Any, holder: LockHolder) -> None:
    from chainlit.types import Pagination, ThreadFilter

    path = layer.store.layout.thread_lock("t1")
    holder.hold(path)
    write = asyncio.ensure_future(layer.create_step(message("a1", "answer")))
    await asyncio.sleep(0.01)
    for _ in range(20):
        thread = await layer.get_thread("t1")
        assert [s["id"] for s in thread["steps"]] == ["q1"]
        page = await layer.list_threads(Pagination(first=5), ThreadFilter())
        assert [t["id"] for t in page.data] == ["t1"]
    assert not write.done()
    holder.release(path)
    await asyncio.wait_for(write, 60)
    assert len((await layer.get_thread("t1"))["steps"]) == 2


async def test_an_index_rebuilt_by_another_process_is_used_at_once(layer: Any, root: Path) -> None:
    """``filelayer reindex`` in another process switches the index to a new database:
    the next call opens it (milliseconds), on the loop, and sees the same threads."""
    from chainlit.types import Pagination, ThreadFilter

    await layer.list_threads(Pagination(first=5), ThreadFilter())
    before = layer.calls.offloaded
    done = subprocess.run(
        [sys.executable, "-m", "filelayer", "--root", str(root), "reindex"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    await layer.create_step(message("a1", "after the rebuild"))
    page = await layer.list_threads(Pagination(first=5), ThreadFilter(search="rebuild"))
    assert [t["id"] for t in page.data] == ["t1"]
    page = await layer.list_threads(Pagination(first=5), ThreadFilter())
    assert [t["id"] for t in page.data] == ["t1"]
    assert layer.calls.offloaded == before + 1  # the search, which always runs off the loop


async def test_a_step_named_without_its_thread_is_found_off_the_loop(
    layer: Any, root: Path
) -> None:
    """Deleting (or rating) a step this process never saw scans the journals, in a
    worker thread."""
    from chainlit.context import init_http_context
    from chainlit.types import Feedback

    from filelayer import FileDataLayer

    other = ArchiveStore(root)
    other.write_step(message("far", "elsewhere", thread_id="t2"))
    other.write_step(message("rated", "rate me", thread_id="t3"))
    other.close()
    fresh = FileDataLayer(root)
    init_http_context()
    before = fresh.calls.offloaded
    await fresh.delete_step("far")
    fb = await fresh.upsert_feedback(Feedback(forId="rated", value=1))
    assert fresh.calls.offloaded >= before + 2
    t2 = await fresh.get_thread("t2")
    t3 = await fresh.get_thread("t3")
    assert t2 is not None and t2["steps"] == []
    assert t3 is not None and t3["steps"][0]["feedback"]["id"] == fb
    await fresh.close()


async def test_a_deletion_in_a_long_thread_folds_it_off_the_loop_once(root: Path) -> None:
    """Deleting a step or an element checks the thread's elements in its folded
    journal: a long journal this process holds no fold of is folded in a worker thread
    (never on the loop), and the next deletion in it only reads what was appended."""
    from chainlit.context import init_http_context

    from filelayer import FileDataLayer
    from filelayer.store.locking import LOOP_FOLD_BYTES

    other = ArchiveStore(root)
    other.update_thread("t1", name="long")
    count = LOOP_FOLD_BYTES // 1000 + 10
    for n in range(count):
        other.write_step(message(f"s{n}", "x" * 1000))
    other.close()
    fresh = FileDataLayer(root)
    init_http_context()
    try:
        before = fresh.calls.offloaded
        await fresh.delete_step("s1")  # not seen: found by a scan, then folded
        assert fresh.calls.offloaded == before + 2
        await fresh.delete_step("s2")  # seen in the fold: on the loop
        assert fresh.calls.offloaded == before + 2
        thread = await fresh.get_thread("t1")
        assert thread is not None
        ids = [step["id"] for step in thread["steps"]]
        assert len(ids) == count - 2 and "s1" not in ids and "s2" not in ids
    finally:
        await fresh.close()
    assert ArchiveStore(root).get_thread("t1")["steps"] == thread["steps"]  # type: ignore[index]


async def test_a_first_read_of_a_long_thread_without_a_view_folds_off_the_loop(
    root: Path,
) -> None:
    """Another live process wrote a long thread (no view yet: it is written once the
    thread is quiet): the first read here folds the whole journal, which is done in a
    worker thread, never on the loop. The next read answers from the kept fold."""
    from chainlit.context import init_http_context

    from filelayer import FileDataLayer
    from filelayer.store.locking import LOOP_FOLD_BYTES

    other = ArchiveStore(root)
    other.update_thread("t1", name="long")
    count = LOOP_FOLD_BYTES // 1000 + 10
    for n in range(count):
        other.write_step(message(f"s{n}", "x" * 1000))
    fresh = FileDataLayer(root)
    init_http_context()
    try:
        before = fresh.calls.offloaded
        thread = await fresh.get_thread("t1")
        assert fresh.calls.offloaded == before + 1
        assert thread is not None and len(thread["steps"]) == count
        assert await fresh.get_thread("t1") == thread  # from memory: on the loop
        assert fresh.calls.offloaded == before + 1
        other.write_step(message("late", "y"))  # a little more: caught up on the loop
        again = await fresh.get_thread("t1")
        assert again is not None and again["steps"][-1]["id"] == "late"
        assert fresh.calls.offloaded == before + 1
    finally:
        await fresh.close()
        other.close()


async def test_a_rating_in_a_long_thread_read_from_its_view_folds_off_the_loop(
    root: Path,
) -> None:
    """A resumed long thread is read from its view, so the process keeps no fold of it;
    rating one of its messages checks the step in the folded journal, which is then
    folded in a worker thread, not on the loop."""
    from chainlit.context import init_http_context
    from chainlit.types import Feedback

    from filelayer import FileDataLayer
    from filelayer.store.locking import LOOP_FOLD_BYTES

    store = ArchiveStore(root)
    store.update_thread("t1", name="long")
    count = LOOP_FOLD_BYTES // 1000 + 10
    for n in range(count):
        store.write_step(message(f"s{n}", "x" * 1000))
    store.close()  # writes the view
    fresh = FileDataLayer(root)
    init_http_context()
    try:
        assert await fresh.get_thread("t1") is not None  # from the view
        before = fresh.calls.offloaded
        fid = await fresh.upsert_feedback(Feedback(forId="s3", threadId="t1", value=1))
        assert fresh.calls.offloaded == before + 1
        thread = await fresh.get_thread("t1")
        assert thread is not None
        rated = [s for s in thread["steps"] if s["id"] == "s3"]
        assert rated[0]["feedback"]["id"] == fid
    finally:
        await fresh.close()


async def test_a_first_read_of_a_long_view_decodes_it_off_the_loop(root: Path) -> None:
    """A view file larger than a call on the loop decodes at most is read in a worker
    thread; a short thread's view is read on the loop."""
    from chainlit.context import init_http_context

    from filelayer import FileDataLayer
    from filelayer.store.snapshots import LOOP_VIEW_BYTES, VIEW_MIN_BYTES

    store = ArchiveStore(root)
    store.update_thread("long", name="long")
    for n in range(LOOP_VIEW_BYTES // 1000 + 10):
        store.write_step(message(f"l{n}", "x" * 1000, "long"))
    store.update_thread("short", name="short")
    for n in range(VIEW_MIN_BYTES // 1000 + 10):
        store.write_step(message(f"s{n}", "x" * 1000, "short"))
    store.close()  # writes both views
    assert store.layout.thread_view("long").stat().st_size > LOOP_VIEW_BYTES
    assert store.layout.thread_view("short").is_file()
    fresh = FileDataLayer(root)
    init_http_context()
    try:
        before = fresh.calls.offloaded
        assert await fresh.get_thread("short") is not None
        assert fresh.calls.offloaded == before
        thread = await fresh.get_thread("long")
        assert fresh.calls.offloaded == before + 1
        assert thread is not None and len(thread["steps"]) == LOOP_VIEW_BYTES // 1000 + 10
    finally:
        await fresh.close()


async def test_the_trigram_upkeep_runs_off_the_loop(layer: Any) -> None:
    """Every few dozen message texts, the queue of texts is applied to the trigram
    index, where a merge of its segments took 141 ms at 100,000 threads: that is done in
    the adapter's maintenance thread, never on the loop, and searches find every text
    before and after."""
    import threading

    from filelayer._io import commit as _commit
    from filelayer.index import db as _db

    ran: list[tuple[str, bool]] = []
    real = _db._Db.apply_todo

    def apply_todo(self: Any) -> None:
        ran.append((threading.current_thread().name, _commit.on_loop()))
        real(self)

    _db._Db.apply_todo = apply_todo  # type: ignore[method-assign]
    try:
        for n in range(3 * _db._TODO_BATCH):
            await layer.create_step(message(f"m{n}", f"needle{n} haystack"))
        await layer.calls.idle()
    finally:
        _db._Db.apply_todo = real  # type: ignore[method-assign]
    assert ran, "the queue was never applied"
    assert all(not on_loop for _, on_loop in ran)
    assert threading.main_thread().name not in {name for name, _ in ran}
    for term in ("needle17 hay", "needle190 hay"):
        found, _ = layer.store.list_threads(user_id=None, search=term)
        assert [t["id"] for t in found] == ["t1"]


async def test_a_write_made_while_the_adapter_closes_starts_no_upkeep(
    layer: Any, root: Path
) -> None:
    """A write Chainlit fired before the app stopped may land on the loop while
    ``close`` shuts the maintenance thread down: the trigram upkeep it makes due is not
    handed to that thread (the write would fail with the executor's error after it was
    made, or start a thread nobody stops); the queue stays in the index, which searches
    read, for the next process to apply."""
    import threading

    n = 0
    while layer.calls._upkeep is None:  # a first upkeep: the maintenance thread exists
        n += 1
        await layer.create_step(message(f"m{n}", f"needle{n} haystack"))
    await layer.calls.idle()
    maintenance = layer.calls._maintenance
    real_shutdown = maintenance.shutdown
    paused, resume = threading.Event(), threading.Event()

    def shutdown(wait: bool = True, **kwargs: Any) -> None:
        real_shutdown(wait=wait, **kwargs)
        paused.set()
        resume.wait(10)

    maintenance.shutdown = shutdown
    closing = asyncio.ensure_future(layer.calls.close())
    try:
        assert await asyncio.to_thread(paused.wait, 10)
        while not layer.store.index_upkeep_due:  # writes until one leaves the upkeep
            n += 1
            await layer.create_step(message(f"m{n}", f"needle{n} haystack"))
    finally:
        resume.set()
        await closing
    assert not [t for t in threading.enumerate() if t.name.startswith("filelayer-compact")]
    again = ArchiveStore(root)
    try:
        found, _ = again.list_threads(user_id=None, search=f"needle{n} hay")
        assert [t["id"] for t in found] == ["t1"]
    finally:
        again.close()


async def test_a_deletion_refused_on_the_loop_changed_nothing(root: Path) -> None:
    """The refusal comes before any change: the journal is as it was."""
    from filelayer._io import commit as _commit
    from filelayer.store.locking import LOOP_FOLD_BYTES

    store = ArchiveStore(root)
    store.update_thread("t1", name="long")
    for n in range(LOOP_FOLD_BYTES // 1000 + 10):
        store.write_step(message(f"s{n}", "x" * 1000))
    store.close()
    store = ArchiveStore(root)
    journal = store.layout.journal("t1")
    size = journal.stat().st_size
    before = _commit.set_on_loop(True)
    try:
        with pytest.raises(_commit.DiskWait):
            store.delete_step("s1", "t1")
    finally:
        _commit.set_on_loop(before)
    assert journal.stat().st_size == size
    assert store.delete_step("s1", "t1") is True
    store.close()


async def test_calls_on_the_loop_and_in_workers_keep_the_store_consistent(
    layer: Any, holder: LockHolder
) -> None:
    """While another process keeps taking and giving back the locks of some threads,
    hundreds of writes (some on the loop, some queued in the worker) and reads run at
    once."""
    from chainlit.types import Feedback, Pagination, ThreadFilter

    store = layer.store
    stop = asyncio.Event()
    paths = sorted({store.layout.thread_lock(f"c{t}") for t in range(3)})
    # Held before the first chat runs: the first call on c0 finds its lock taken, so some
    # calls wait whatever the machine's load (taken only inside the toggler, a slow
    # holder process could let every chat finish before the first hold).
    for path in paths:
        holder.hold(path)

    async def toggle() -> None:
        while True:
            await asyncio.sleep(0.002)
            for path in paths:
                await asyncio.to_thread(holder.release, path)
            if stop.is_set():
                return
            await asyncio.sleep(0.002)
            for path in paths:
                await asyncio.to_thread(holder.hold, path)

    async def chat(n: int) -> None:
        thread = f"c{n % 7}"
        await layer.update_thread(thread, name=f"chat {n % 7}")
        sid = f"m{n}"
        await layer.create_step({**message(sid, ""), "threadId": thread})
        await layer.create_step({"id": f"r{n}", "threadId": thread, "type": "run"})
        await layer.update_step({"id": sid, "threadId": thread, "output": f"text {n}"})
        if n % 3 == 0:
            await layer.upsert_feedback(Feedback(forId=sid, value=n % 2, threadId=thread))
        await layer.get_thread(thread)
        await layer.list_threads(Pagination(first=3), ThreadFilter())

    toggler = asyncio.ensure_future(toggle())
    await asyncio.gather(*(chat(n) for n in range(150)))
    stop.set()
    await toggler
    for t in range(7):
        thread = await layer.get_thread(f"c{t}")
        outputs = {s["id"]: s["output"] for s in thread["steps"]}
        for n in range(t, 150, 7):
            assert outputs[f"m{n}"] == f"text {n}"
            assert f"r{n}" in outputs
    fresh = ArchiveStore(store.root)
    fresh.index.refresh()
    for thread_id in fresh.thread_ids():
        expected = fresh.summarise(thread_id)
        indexed = fresh.index.threads[thread_id]
        assert expected is not None
        assert (indexed.name, indexed.texts, indexed.feedback) == (
            expected.name,
            expected.texts,
            expected.feedback,
        )
    assert layer.calls.offloaded > 0  # some calls did wait


async def test_the_old_index_is_closed_off_the_loop_after_a_rebuild_elsewhere(
    layer: Any, root: Path
) -> None:
    """Closing the last connection to the generation another process replaced folds its
    write-ahead log into a file nobody reads again: not on the loop."""
    import threading

    from chainlit.types import Pagination, ThreadFilter

    from filelayer.index.db import _Db

    await layer.list_threads(Pagination(first=5), ThreadFilter())
    where: list[str] = []
    close = _Db.close

    def spy(self: _Db) -> None:
        where.append(threading.current_thread().name)
        close(self)

    done = subprocess.run(
        [sys.executable, "-m", "filelayer", "--root", str(root), "reindex"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    _Db.close = spy  # type: ignore[method-assign]
    try:
        await layer.create_step(message("a2", "after the rebuild"))
        page = await layer.list_threads(Pagination(first=5), ThreadFilter())
        assert [t["id"] for t in page.data] == ["t1"]
        for _ in range(500):  # the closing thread: started, maybe not finished
            if where:
                break
            await asyncio.sleep(0.01)
    finally:
        _Db.close = close  # type: ignore[method-assign]
    assert where and threading.current_thread().name not in where


def _long_thread_kept_then_compacted_elsewhere(root: Path) -> ArchiveStore:
    """A store that keeps the fold of a long thread whose journal another process
    compacted since: its fold is of a file that is gone."""
    from filelayer.store.locking import LOOP_FOLD_BYTES

    writer = ArchiveStore(root)
    writer.update_thread("t1", name="long")
    for n in range(2 * LOOP_FOLD_BYTES // 1000):
        writer.write_step(message(f"s{n}", "x" * 1000))
    writer.close()
    store = ArchiveStore(root)
    assert store.delete_step("s0", "t1") is True  # off the loop: the fold is kept
    assert "t1" in store.folds
    other = ArchiveStore(root)
    for n in range(1, 100):
        other.delete_step(f"s{n}", "t1")
    assert other.compact_journal("t1").changed
    other.close()
    assert store.layout.journal("t1").stat().st_size > LOOP_FOLD_BYTES
    return store


@pytest.mark.parametrize("call", ["delete_step", "locate_step"])
async def test_a_kept_fold_of_a_journal_replaced_since_is_not_folded_again_on_the_loop(
    root: Path, call: str
) -> None:
    """A fold kept of a journal that a compaction replaced since must be made again
    from the whole new file: on the loop that is refused as for a thread with no fold,
    before any change, and the call made again off the loop does it."""
    from filelayer._io import commit as _commit

    store = _long_thread_kept_then_compacted_elsewhere(root)
    journal = store.layout.journal("t1")
    size = journal.stat().st_size
    run = (
        (lambda: store.delete_step("s250", "t1"))
        if call == "delete_step"
        else (lambda: store.locate_step("s250", scan=False))
    )
    before = _commit.set_on_loop(True)
    try:
        with pytest.raises(_commit.DiskWait):
            run()
    finally:
        _commit.set_on_loop(before)
    assert journal.stat().st_size == size
    assert run() == (True if call == "delete_step" else "t1")
    store.close()


async def test_a_step_looked_up_in_a_long_session_thread_not_folded_here_is_looked_up_off_the_loop(
    root: Path,
) -> None:
    """Chainlit's delete_step looks in the caller's session thread first: a long one
    this process holds no fold of (read from its view file, or never read here) is
    folded in a worker thread, as the deletion that follows would be."""
    from filelayer._io import commit as _commit
    from filelayer.store.locking import LOOP_FOLD_BYTES

    writer = ArchiveStore(root)
    writer.update_thread("t1", name="long")
    for n in range(LOOP_FOLD_BYTES // 1000 + 10):
        writer.write_step(message(f"s{n}", "x" * 1000))
    writer.close()
    store = ArchiveStore(root)
    before = _commit.set_on_loop(True)
    try:
        with pytest.raises(_commit.DiskWait):
            store.locate_step("s5", "t1", scan=False)
    finally:
        _commit.set_on_loop(before)
    assert "t1" not in store.folds
    assert store.locate_step("s5", "t1", scan=False) == "t1"
    store.close()


async def test_an_element_sent_to_a_long_thread_folds_it_off_the_loop(root: Path) -> None:
    """A new element's id is compared with those of its thread's elements (letter
    case): a long journal this process holds no fold of is folded in a worker thread,
    not on the loop, before the element's bytes are written."""
    from chainlit import element as elements
    from chainlit.context import init_http_context

    from filelayer import FileDataLayer
    from filelayer.store.locking import LOOP_FOLD_BYTES

    other = ArchiveStore(root)
    other.update_thread("t1", name="long")
    for n in range(LOOP_FOLD_BYTES // 1000 + 10):
        other.write_step(message(f"s{n}", "x" * 1000))
    other.close()
    fresh = FileDataLayer(root)
    init_http_context()
    try:
        before = fresh.calls.offloaded
        await fresh.create_element(
            elements.File(id="e1", name="a.txt", thread_id="t1", for_id="s1", content=b"x")
        )
        assert fresh.calls.offloaded == before + 1
        got = await fresh.get_element("t1", "e1")
        assert got is not None and got["name"] == "a.txt"
    finally:
        await fresh.close()


async def test_a_new_thread_is_checked_against_the_ids_of_another_case_on_the_loop(
    root: Path,
) -> None:
    """A new thread's id is compared with the ids the index holds, ignoring letter case,
    through an index of the ids folded to lowercase: on the loop, whatever the size of
    the archive. A database an earlier release made lacks that index and is scanned
    (22 ms at 100,000 threads): in a worker thread once it holds thousands of threads."""
    import sqlite3

    from chainlit.context import init_http_context

    from filelayer import FileDataLayer

    store = ArchiveStore(root)
    for n in range(2100):
        store.update_thread(f"other-{n}", name="other")
    store.close()
    init_http_context()
    fresh = FileDataLayer(root)
    try:
        before = fresh.calls.offloaded
        await fresh.create_step(message("s1", "hello", "new1"))
        assert fresh.calls.offloaded == before
        with pytest.raises(Exception, match="case"):
            await fresh.create_step(message("s2", "hello", "OTHER-7"))
    finally:
        await fresh.close()
    current = (root / "index" / "current").read_text().strip()
    with sqlite3.connect(root / "index" / current) as conn:
        conn.execute("DROP INDEX threads_folded")
    fresh = FileDataLayer(root)
    try:
        before = fresh.calls.offloaded
        await fresh.create_step(message("s3", "hello", "new2"))
        assert fresh.calls.offloaded == before + 1
        with pytest.raises(Exception, match="case"):
            await fresh.create_step(message("s4", "hello", "Other-8"))
        thread = await fresh.get_thread("new2")
        assert thread is not None and len(thread["steps"]) == 1
    finally:
        await fresh.close()
    assert not (root / "threads" / "OTHER-7").exists()
    assert not (root / "threads" / "Other-8").exists()
