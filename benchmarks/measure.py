"""What one benchmark subprocess measures, for one layer.

Each measurement runs in a fresh interpreter (``python -m benchmarks.measure ROLE ...``)
so that the fast and the zero-dependency modes never share a process (the mode is
chosen at import by ``FILELAYER_PURE``), and so that memory figures are those of one
process serving one archive. Every process imports Chainlit's server, as a Chainlit app
does, so the peers' memory figures start from the same base. Results are printed as one
JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks import workload
from benchmarks.archives import ArchiveSpec

SEARCH_HIT = "espresso"
"""A word of one topic out of thirty: in names and messages of ~3% of the threads."""
SEARCH_MISS = "zyzzyva"
"""A word no thread contains: the whole of the user's threads is searched."""
PAGE = 35
"""The sidebar's page size (Chainlit's ThreadHistory asks for 35 threads at a time)."""
SEARCH_PAGE = 20
"""The search box's page size (Chainlit's Search asks for 20)."""


def status_mb(key: str) -> float:
    """A memory figure of this process from /proc (VmRSS now, VmHWM the peak), in MB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    if key == "VmHWM":  # elsewhere: the peak is all there is
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)
    return float("nan")


async def timed(
    fn: Callable[[], Awaitable[Any]], *, budget: float, min_runs: int = 5, max_runs: int = 200
) -> dict[str, float]:
    """Median, 99th percentile and best of repeated awaits of ``fn``, in ms, and the
    time of the first call (made before them: the first of its kind in the process)."""
    t = time.perf_counter()
    await fn()
    first = (time.perf_counter() - t) * 1000
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < max_runs and (
        len(samples) < min_runs or time.perf_counter() - start < budget
    ):
        t = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - t) * 1000)
    ordered = sorted(samples)
    return {
        "median_ms": statistics.median(samples),
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "best_ms": ordered[0],
        "first_ms": first,
        "runs": len(samples),
    }


def evict(kind: str, target: str) -> None:
    """Drop the files of an archive (or a SQLite database) from the page cache, as after
    a reboot: ``posix_fadvise(DONTNEED)`` needs no privilege. A PostgreSQL server keeps
    its own cache, which this cannot drop (its figures stay warm)."""
    paths: list[str] = []
    if kind == "file":
        for dirpath, _dirs, files in os.walk(target):
            paths += [os.path.join(dirpath, name) for name in files]
    elif kind == "sqlite":
        paths = [p for p in (target, target + "-wal") if os.path.exists(p)]
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


# -- layers -------------------------------------------------------------------------------


async def open_layer(kind: str, target: str, durability: str = "flush") -> Any:
    """A data layer of ``kind`` on ``target`` (a root, a SQLite file or a database URL)."""
    import chainlit.server  # noqa: F401  - a Chainlit app process has its server loaded

    logging.getLogger("chainlit").setLevel(logging.ERROR)
    if kind == "file":
        from filelayer import FileDataLayer

        return FileDataLayer(target, durability=durability)  # type: ignore[arg-type]
    if kind == "sqlite":
        from chainlit.data.sql_alchemy import SQLAlchemyDataLayer

        return SQLAlchemyDataLayer(conninfo=f"sqlite+aiosqlite:///{target}")
    if kind == "postgres":
        from chainlit.data.chainlit_data_layer import ChainlitDataLayer

        layer = ChainlitDataLayer(database_url=target)
        await layer.connect()
        return layer
    raise ValueError(f"unknown layer {kind!r}")


def import_layer(kind: str) -> None:
    """Import what a Chainlit app has imported before its first call: Chainlit's server
    and the data layer's module (a start-up figure times the layer, not the imports)."""
    import chainlit.server

    if kind == "file":
        import filelayer.chainlit.datalayer  # noqa: F401
    elif kind == "sqlite":
        import chainlit.data.sql_alchemy
    elif kind == "postgres":
        import chainlit.data.chainlit_data_layer  # noqa: F401


def mode_of(kind: str) -> str:
    if kind != "file":
        return kind
    from filelayer import MODE

    return f"file-{MODE}"


# -- roles --------------------------------------------------------------------------------


async def role_writes(args: argparse.Namespace) -> dict[str, Any]:
    """Write calls per second through the API, and get_thread of 50-turn threads."""
    from chainlit.context import init_http_context

    init_http_context()
    layer = await open_layer(args.layer, args.target, args.durability)
    result: dict[str, Any] = {"mode": mode_of(args.layer), "durability": args.durability}
    try:
        people = workload.user_identifiers(3)
        user_ids = await workload.ensure_users(layer, people)
        conversations = list(
            workload.archive_conversations(
                args.threads, seed=7, users=3, turns=(args.turns, args.turns)
            )
        )
        # Four rounds of a quarter of the threads each: the median rate is steadier than
        # one figure on a machine where other work competes for the disk.
        rounds = [conversations[i::4] for i in range(4) if conversations[i::4]]
        rates, count, elapsed = [], 0, 0.0
        for group in rounds:
            calls = [c for conv in group for c in conv.calls]
            start = time.perf_counter()
            done = await workload.replay(layer, calls, user_ids)
            took = time.perf_counter() - start
            rates.append(done / took)
            count, elapsed = count + done, elapsed + took
        result.update(
            write_calls=count,
            write_seconds=elapsed,
            write_calls_per_s=statistics.median(rates),
            write_calls_per_s_overall=count / elapsed,
        )
        if args.chats:
            result.update(await concurrent_chats(layer, args, user_ids))
        if args.get_thread_turns:
            result.update(await measure_get_thread(args, people, user_ids, layer))
    finally:
        await layer.close()
    return result


QUIET_SECONDS = 2.0
"""How long after another live process wrote a thread it is read in the "quiet" case."""


async def measure_get_thread(
    args: argparse.Namespace, people: list[str], user_ids: dict[str, str], writer: Any
) -> dict[str, Any]:
    """``get_thread`` of a long thread: its first read in a process, and a repeated one.

    ``--get-thread-threads`` threads of ``--get-thread-turns`` turns are written by a
    layer that is then closed, as an app is before it restarts; then a reader is opened
    on the same archive or database, as the restarted app would be, and reads one of
    them (so that connecting is not counted). Each of the others is then read once: the
    first read of that thread in the process, the figure the targets are judged on
    (filelayer keeps the folded journals of recently read threads, so a repeated read is
    answered mostly from memory). The same number of threads is also written by
    ``writer``, still open: their first reads by the reader are those of a thread that
    another live process just wrote (another worker), reported apart; and as many again,
    written by ``writer`` :data:`QUIET_SECONDS` before the reader opens (a user resuming
    in another worker a conversation they had a moment ago), reported apart too. The repeated read
    is timed last. "First" is first in the process: the operating system's file cache
    (and the database's buffers) are warm from the writes.
    """
    import random

    count = max(2, args.get_thread_threads)
    rng = random.Random(50)
    clock = workload.Clock()

    def chats_of(n: int) -> list[workload.Conversation]:
        return [
            workload.conversation(
                rng, clock, people[0], turns=args.get_thread_turns, feedback_rate=0.15
            )
            for _ in range(n)
        ]

    chats, quiet, live = chats_of(count), chats_of(count - 1), chats_of(count - 1)
    restarted = await open_layer(args.layer, args.target, args.durability)
    try:
        for chat in chats:
            await workload.replay(restarted, chat.calls, user_ids)
    finally:
        await restarted.close()
    for chat in quiet:
        await workload.replay(writer, chat.calls, user_ids)
    # The user resumes them in another worker a little later (every layer waits alike).
    await asyncio.sleep(QUIET_SECONDS)
    for chat in live:
        await workload.replay(writer, chat.calls, user_ids)
    reader = await open_layer(args.layer, args.target, args.durability)
    try:
        warm_up, *measured = chats

        seen: list[int] = [0]

        async def first_reads(threads: list[workload.Conversation]) -> list[float]:
            times = []
            for chat in threads:
                start = time.perf_counter()
                thread = await reader.get_thread(chat.thread_id)
                times.append((time.perf_counter() - start) * 1000)
                assert thread is not None
                seen.append(len(thread["steps"]))
            return times

        assert await reader.get_thread(warm_up.thread_id) is not None
        firsts = await first_reads(measured)
        firsts_live = await first_reads(live)
        firsts_quiet = await first_reads(quiet)
        steps = max(seen)
        again = measured[0].thread_id

        async def get() -> Any:
            thread = await reader.get_thread(again)
            assert thread is not None
            return thread

        repeated = await timed(get, budget=args.budget)
    finally:
        await reader.close()
    return {
        "get_thread_steps": steps,
        "get_thread_first_ms": statistics.median(firsts),
        "get_thread_first_best_ms": min(firsts),
        "get_thread_first_runs": len(firsts),
        "get_thread_first_live_ms": statistics.median(firsts_live),
        "get_thread_first_quiet_ms": statistics.median(firsts_quiet),
        "get_thread_ms": repeated["median_ms"],
        "get_thread_best_ms": repeated["best_ms"],
    }


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def concurrent_chats(
    layer: Any, args: argparse.Namespace, user_ids: dict[str, str]
) -> dict[str, Any]:
    """``args.chats`` chats at once through one layer, each awaiting its calls in turn
    (as Chainlit does for one user): calls per second over all of them, and the p99
    latency of one call. Three rounds of new chats; the medians."""
    rates, p99s, p50s = [], [], []
    for n in range(3):
        chats = list(
            workload.archive_conversations(
                args.chats, seed=1000 + n, users=3, turns=(args.turns, args.turns)
            )
        )
        latencies: list[float] = []

        async def chat(conv: workload.Conversation, latencies: list[float] = latencies) -> None:
            for call in conv.calls:
                t = time.perf_counter()
                await workload.perform(layer, call, user_ids)
                latencies.append(time.perf_counter() - t)

        start = time.perf_counter()
        await asyncio.gather(*(chat(c) for c in chats))
        took = time.perf_counter() - start
        rates.append(len(latencies) / took)
        p99s.append(percentile(latencies, 0.99) * 1000)
        p50s.append(percentile(latencies, 0.5) * 1000)
    return {
        "concurrent_chats": args.chats,
        "concurrent_calls_per_s": statistics.median(rates),
        "concurrent_p99_ms": statistics.median(p99s),
        "concurrent_p50_ms": statistics.median(p50s),
    }


def _run_queue_wait() -> float:
    """Seconds this thread has spent waiting for a core (Linux's schedstat), 0 elsewhere."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def _watch_loop(stop: asyncio.Event, result: dict[str, Any]) -> None:
    """Sample the loop thread's stack whenever the loop has not run a callback for
    20 ms (a diagnosis aid: FILELAYER_LAG_STACKS=1), counting the innermost frames of
    the project, so a lag can be traced to the code that held the loop."""
    import collections
    import threading
    import traceback

    loop = asyncio.get_running_loop()
    loop_thread = threading.get_ident()
    beat = [time.perf_counter()]
    counts: collections.Counter[str] = collections.Counter()

    def tick() -> None:
        beat[0] = time.perf_counter()
        if not stop.is_set():
            loop.call_later(0.002, tick)

    def watch() -> None:
        while not stop.is_set():
            time.sleep(0.004)
            if time.perf_counter() - beat[0] > 0.020:
                frame = sys._current_frames().get(loop_thread)
                if frame is None:
                    continue
                stack = traceback.extract_stack(frame)
                ours = [f for f in stack if "filelayer" in f.filename]
                where = " < ".join(
                    f"{'/'.join(f.filename.split('/')[-2:])}:{f.lineno} {f.name}"
                    for f in reversed((ours or stack)[-4:])
                )
                counts[f"{stack[-1].name} @ {where}"] += 1
        result["lag_stacks"] = counts.most_common(15)

    loop.call_soon(tick)
    threading.Thread(target=watch, daemon=True).start()


async def role_loop_lag(args: argparse.Namespace) -> dict[str, Any]:
    """The event loop of a serving process while another process runs ``filelayer
    reindex`` and then ``filelayer compact`` on its archive.

    The app writes a message every 10 ms (a create, then an update with its text) and
    a heartbeat task sleeps 5 ms at a time; every heartbeat's lateness is its lag. A
    quiet phase first gives the lag the machine itself causes (other processes), and
    ``load_avg`` the machine's 1-minute load average, the highest of the run (the
    machine may be shared: a figure taken under a high load says less)."""
    from chainlit.context import init_http_context
    from chainlit.types import Pagination, ThreadFilter
    from chainlit.user import User

    init_http_context()
    layer = await open_layer("file", args.target, args.durability)
    result: dict[str, Any] = {"mode": mode_of("file"), "durability": args.durability}
    phase = "warm-up"
    lags: dict[str, list[float]] = {}
    own: dict[str, list[float]] = {}
    writes: dict[str, list[float]] = {}
    spent: dict[str, list[float]] = {}
    spent_cpu: dict[str, list[float]] = {}
    slowest: list[tuple[float, str, str]] = []
    collections: dict[str, list[float]] = {}
    stop = asyncio.Event()
    try:
        user = await layer.create_user(User(identifier="lag@example.com"))
        await layer.list_threads(Pagination(first=PAGE), ThreadFilter(userId=user.id))

        async def heartbeat() -> None:
            while not stop.is_set():
                t, queued = time.perf_counter(), _run_queue_wait()
                await asyncio.sleep(0.005)
                lag = time.perf_counter() - t - 0.005
                lags.setdefault(phase, []).append(lag)
                # Without the time the loop's thread waited for a core: the lag the
                # process itself caused, apart from the machine's load.
                own.setdefault(phase, []).append(max(0.0, lag - (_run_queue_wait() - queued)))

        async def chat() -> None:
            n = 0
            thread_id = ""
            while not stop.is_set():
                if n % 100 == 0:
                    thread_id = f"lag-{uuid.uuid4().hex[:12]}"
                    await layer.update_thread(thread_id, name=f"lag {n}", user_id=user.id)
                sid = f"{thread_id}-{n}"
                at = workload.format_time(datetime.now(timezone.utc))
                message = {
                    "id": sid,
                    "threadId": thread_id,
                    "type": "assistant_message",
                    "name": "Assistant",
                    "output": "",
                    "createdAt": at,
                    "start": at,
                }
                for output in ("", f"answer {n} " * 20):
                    t = time.perf_counter()
                    await (layer.create_step if not output else layer.update_step)(
                        {**message, "output": output}
                    )
                    writes.setdefault(phase, []).append(time.perf_counter() - t)
                    await asyncio.sleep(0.010)
                n += 1

        # What the loop itself spent in the layer's calls, and in garbage collection
        # (which stops every thread): apart from the machine's own noise.
        calls = getattr(layer, "calls", None)  # absent before the layer had one
        inline = calls._inline if calls is not None else None

        def timed_inline(*a: Any) -> Any:
            t, cpu, queued = time.perf_counter(), time.thread_time(), _run_queue_wait()
            assert inline is not None
            try:
                return inline(*a)
            finally:
                took = time.perf_counter() - t
                used = time.thread_time() - cpu
                waited = _run_queue_wait() - queued
                spent.setdefault(phase, []).append(took)
                spent_cpu.setdefault(phase, []).append(used)
                # Wall time = CPU + waiting for a core (the machine's load) + blocked
                # (a lock, the disk): only the last is the layer's to answer for.
                blocked = max(0.0, took - used - waited) * 1000
                name = getattr(a[0], "__name__", "?")
                slowest.append((took * 1000, phase, f"{name}, blocked {blocked:.1f} ms"))
                slowest.sort(reverse=True)
                del slowest[5:]

        if calls is not None:
            calls._inline = timed_inline
        gc_started = [0.0]

        def on_gc(stage: str, info: dict[str, Any]) -> None:
            if stage == "start":
                gc_started[0] = time.perf_counter()
            else:
                collections.setdefault(phase, []).append(time.perf_counter() - gc_started[0])

        gc.callbacks.append(on_gc)
        if os.environ.get("FILELAYER_LAG_STACKS"):
            _watch_loop(stop, result)
        tasks = [asyncio.ensure_future(heartbeat()), asyncio.ensure_future(chat())]
        await asyncio.sleep(1.0)
        phase = "quiet"
        await asyncio.sleep(args.quiet)
        base = [sys.executable, "-m", "filelayer", "--root", args.target]
        loads = [os.getloadavg()[0]] if hasattr(os, "getloadavg") else [0.0]
        for command in ("reindex", "compact"):
            phase = command
            start = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                *base, command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            code = await proc.wait()
            if code != 0:
                raise RuntimeError(f"filelayer {command} failed ({code})")
            result[f"{command}_s"] = time.perf_counter() - start
            loads.append(os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0)
        phase = "after"
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*tasks)
        gc.callbacks.remove(on_gc)
    finally:
        await layer.close()
    busy_phases = ("reindex", "compact", "after")
    busy = lags.get("reindex", []) + lags.get("compact", []) + lags.get("after", [])
    busy_writes = writes.get("reindex", []) + writes.get("compact", []) + writes.get("after", [])
    result.update(
        lag_max_ms=max(busy) * 1000,
        lag_p99_ms=percentile(busy, 0.99) * 1000,
        own_lag_max_ms=max(sum((own.get(p, []) for p in busy_phases), [0.0])) * 1000,
        own_quiet_lag_max_ms=max(own.get("quiet", [0.0])) * 1000,
        lag_reindex_max_ms=max(lags.get("reindex", [0.0])) * 1000,
        lag_compact_max_ms=max(lags.get("compact", [0.0])) * 1000,
        quiet_lag_max_ms=max(lags.get("quiet", [0.0])) * 1000,
        quiet_lag_p99_ms=percentile(lags.get("quiet", [0.0]), 0.99) * 1000,
        write_max_ms=max(busy_writes) * 1000,
        write_p99_ms=percentile(busy_writes, 0.99) * 1000,
        writes=len(busy_writes),
        load_avg=max(loads),
        offloaded=getattr(getattr(layer, "calls", None), "offloaded", 0),
        inline_max_ms=max(sum((spent.get(p, []) for p in busy_phases), [0.0])) * 1000,
        inline_cpu_max_ms=max(sum((spent_cpu.get(p, []) for p in busy_phases), [0.0])) * 1000,
        quiet_inline_max_ms=max(spent.get("quiet", [0.0])) * 1000,
        inline_slowest=[f"{ms:.1f} ms {name} ({where})" for ms, where, name in slowest],
        gc_max_ms=max(sum((collections.get(p, []) for p in busy_phases), [0.0])) * 1000,
    )
    return result


async def role_progress(args: argparse.Namespace) -> dict[str, Any]:
    """A progress-style thread: steps that carry a large prompt, each updated again and
    again (``step.update()`` to show progress). Its journal against its live bytes, and
    its first read in a process; then the first read of a 1,000-step thread."""
    from chainlit.context import init_http_context

    from filelayer.format import codec as _codec
    from filelayer.format import journal

    init_http_context()
    layer = await open_layer("file", args.target, args.durability)
    result: dict[str, Any] = {"mode": mode_of("file"), "durability": args.durability}
    prompt = "You are a careful assistant. Answer from the documents below.\n" + (
        "A paragraph of retrieved context, as a retrieval chain would pass it. " * 230
    )
    thread_id = "progress"
    path = layer.store.layout.journal(thread_id)

    def live() -> int:
        state = journal.fold(journal.read(path).records)
        return sum(len(_codec.encode_line(r)) for r in journal.compacted_records(state))

    ratios: list[float] = []
    writing = 0.0
    calls = 0
    try:
        await layer.update_thread(thread_id, name="progress")
        for k in range(args.progress_steps):
            at = f"2026-01-01T00:{k // 60:02d}:{k % 60:02d}.000000Z"
            step = {
                "id": f"llm-{k}",
                "threadId": thread_id,
                "type": "llm",
                "name": "ChatOpenAI",
                "input": prompt,
                "output": "",
                "createdAt": at,
                "start": at,
            }
            t = time.perf_counter()
            await layer.create_step(step)
            for u in range(1, args.progress_updates + 1):
                await layer.update_step({**step, "output": f"working… {u}% " * (1 + u // 10)})
            writing += time.perf_counter() - t
            calls += 1 + args.progress_updates
            await layer.calls.idle()
            size = path.stat().st_size
            if size > 2 * 65536:
                ratios.append(size / live())
        await layer.calls.idle()
        result.update(
            progress_steps=args.progress_steps,
            progress_updates=args.progress_updates,
            progress_calls_per_s=calls / writing,
            progress_journal_bytes=path.stat().st_size,
            progress_live_bytes=live(),
            progress_ratio_max=max(ratios, default=0.0),
            progress_written_bytes=calls * len(prompt),
        )
        result["progress_ratio"] = result["progress_journal_bytes"] / result["progress_live_bytes"]
        result["progress_first_read_ms"] = await first_read(args, thread_id)

        # A 1,000-step thread: 250 turns of a message, a run, a tool and an answer.
        big = "thousand"
        await layer.update_thread(big, name="a long thread")
        for turn in range(250):
            at = f"2026-01-02T{turn // 3600:02d}:{turn // 60 % 60:02d}:{turn % 60:02d}.000000Z"
            q, r, tool, a = (f"{big}-{turn}-{x}" for x in "qrta")
            for s in (
                {"id": q, "type": "user_message", "output": f"question {turn}"},
                {"id": r, "type": "run", "parentId": q, "name": "on_message"},
                {"id": tool, "type": "tool", "parentId": r, "input": "{}", "output": "x" * 300},
                {"id": a, "type": "assistant_message", "parentId": r, "output": "y" * 600},
            ):
                await layer.create_step({**s, "threadId": big, "createdAt": at, "start": at})
        result["thousand_steps_first_read_ms"] = await first_read(args, big)
        result["thousand_steps_journal_bytes"] = layer.store.layout.journal(big).stat().st_size
    finally:
        await layer.close()
    return result


async def first_read(args: argparse.Namespace, thread_id: str) -> float:
    """get_thread of a thread no layer of this process read yet (a fresh layer each
    time, opened before the clock starts): the median of several, in ms."""
    samples = []
    for _ in range(7):
        fresh = await open_layer("file", args.target, args.durability)
        t = time.perf_counter()
        thread = await fresh.get_thread(thread_id)
        samples.append((time.perf_counter() - t) * 1000)
        assert thread is not None and thread["steps"]
        await fresh.close()
    return statistics.median(samples)


def heavy_user(args: argparse.Namespace) -> str:
    """The user whose sidebar is measured: by default the one with the most threads."""
    spec = ArchiveSpec(args.threads, seed=args.seed, users=args.users, even=args.even)
    return spec.user_id(spec.identifiers[args.user_rank])


async def role_queries(args: argparse.Namespace) -> dict[str, Any]:
    """list_threads, search and the feedback filter on a built archive of one size."""
    from chainlit.context import init_http_context
    from chainlit.types import Pagination, ThreadFilter

    import_layer(args.layer)  # before the base memory figure
    user_id = heavy_user(args)
    init_http_context()
    base = status_mb("VmRSS")
    started = time.perf_counter()
    layer = await open_layer(args.layer, args.target)
    page = await layer.list_threads(Pagination(first=PAGE), ThreadFilter(userId=user_id))
    cold = (time.perf_counter() - started) * 1000
    result: dict[str, Any] = {
        "mode": mode_of(args.layer),
        "threads": args.threads,
        "cold_first_page_ms": cold,
        "page_items": len(page.data),
        "base_rss_mb": base,
    }

    async def listing(**filters: Any) -> Callable[[], Awaitable[Any]]:
        first = SEARCH_PAGE if "search" in filters else PAGE

        async def call() -> Any:
            return await layer.list_threads(
                Pagination(first=first), ThreadFilter(userId=user_id, **filters)
            )

        return call

    try:
        for name, filters in (
            ("list", {}),
            ("search_hit", {"search": SEARCH_HIT}),
            ("search_miss", {"search": SEARCH_MISS}),
            ("feedback", {"feedback": 1}),
        ):
            fn = await listing(**filters)
            timing = await timed(fn, budget=args.budget, max_runs=args.max_runs)
            found = await fn()
            result[f"{name}_ms"] = timing["median_ms"]
            result[f"{name}_p99_ms"] = timing["p99_ms"]
            result[f"{name}_first_ms"] = timing["first_ms"]
            result[f"{name}_items"] = len(found.data)
        if args.layer == "file":
            # The second page too: the cursor must work as well as the first page.
            cursor = page.pageInfo.endCursor

            async def second() -> Any:
                return await layer.list_threads(
                    Pagination(first=PAGE, cursor=cursor), ThreadFilter(userId=user_id)
                )

            result["second_page_ms"] = (await timed(second, budget=args.budget))["median_ms"]
        result["rss_mb"] = status_mb("VmRSS")
        result["peak_rss_mb"] = status_mb("VmHWM")
        result["layer_rss_mb"] = result["rss_mb"] - base
        result["layer_peak_rss_mb"] = result["peak_rss_mb"] - base
    finally:
        await layer.close()
    return result


async def role_start(args: argparse.Namespace) -> dict[str, Any]:
    """The first calls of a fresh process (an app restarted, a new worker): open the
    layer and list the first page, then a search that matches nothing and one that
    matches, each the first of its kind. ``--evict`` drops the archive from the page
    cache first, as after a reboot."""
    from chainlit.context import init_http_context
    from chainlit.types import Pagination, ThreadFilter

    import_layer(args.layer)
    user_id = heavy_user(args)
    init_http_context()
    if args.evict:
        evict(args.layer, args.target)
    result: dict[str, Any] = {"mode": mode_of(args.layer), "evicted": args.evict}
    started = time.perf_counter()
    layer = await open_layer(args.layer, args.target)
    try:
        page = await layer.list_threads(Pagination(first=PAGE), ThreadFilter(userId=user_id))
        result["start_ms"] = (time.perf_counter() - started) * 1000
        result["page_items"] = len(page.data)
        for name, search in (("miss", SEARCH_MISS), ("hit", SEARCH_HIT)):
            t = time.perf_counter()
            await layer.list_threads(
                Pagination(first=SEARCH_PAGE), ThreadFilter(userId=user_id, search=search)
            )
            result[f"first_search_{name}_ms"] = (time.perf_counter() - t) * 1000
    finally:
        await layer.close()
    return result


async def role_build(args: argparse.Namespace) -> dict[str, Any]:
    """Build one archive (not timed as a benchmark figure; reported for information)."""
    from benchmarks import archives

    spec = ArchiveSpec(args.threads, seed=args.seed, users=args.users, even=args.even)
    start = time.perf_counter()
    if args.layer == "file":
        count = archives.build_file_archive(Path(args.target), spec)
        apparent, allocated = archives.tree_size(Path(args.target))
        size = {"disk_bytes": apparent, "disk_allocated_bytes": allocated}
    elif args.layer == "sqlite":
        count = archives.build_sqlite_archive(Path(args.target), spec)
        size = {"disk_bytes": os.path.getsize(args.target)}
    else:
        count = await archives.build_postgres_archive(args.target, spec)
        size = {"disk_bytes": await postgres_size(args.target)}
    return {"threads": count, "build_seconds": time.perf_counter() - start, **size}


async def postgres_size(url: str) -> int:
    """The database's size beyond an empty one's (the template it was created from)."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CHECKPOINT")
        own = await conn.fetchval("SELECT pg_database_size(current_database())")
        empty = await conn.fetchval("SELECT pg_database_size('template1')")
        return int(own) - int(empty)
    finally:
        await conn.close()


ROLES = {
    "writes": role_writes,
    "queries": role_queries,
    "start": role_start,
    "build": role_build,
    "loop_lag": role_loop_lag,
    "progress": role_progress,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.measure")
    parser.add_argument("role", choices=sorted(ROLES))
    parser.add_argument("layer", choices=["file", "sqlite", "postgres"])
    parser.add_argument("target", help="archive root, SQLite file or database URL")
    parser.add_argument("--threads", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--durability", default="flush")
    parser.add_argument("--get-thread-turns", type=int, default=50)
    parser.add_argument(
        "--get-thread-threads",
        type=int,
        default=11,
        help="long threads written for get_thread: one warms the reader up, the others "
        "are each read once for the first-read figure",
    )
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per timed query")
    parser.add_argument("--max-runs", type=int, default=200)
    parser.add_argument("--users", type=int, help="users in the archive (default: by size)")
    parser.add_argument("--even", action="store_true", help="as many threads for each user")
    parser.add_argument("--user-rank", type=int, default=0, help="whose sidebar (0: heaviest)")
    parser.add_argument("--evict", action="store_true", help="drop the archive from the cache")
    parser.add_argument("--chats", type=int, default=0, help="concurrent chats (writes)")
    parser.add_argument("--quiet", type=float, default=2.0, help="seconds (loop_lag)")
    parser.add_argument("--progress-steps", type=int, default=20)
    parser.add_argument("--progress-updates", type=int, default=50)
    args = parser.parse_args(argv)
    result = asyncio.run(ROLES[args.role](args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
