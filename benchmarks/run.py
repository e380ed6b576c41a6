"""Run the whole benchmark: ``python -m benchmarks`` (``--quick`` for small sizes only).

Drives the same Chainlit-shaped workload (:mod:`benchmarks.workload`) through the public
``BaseDataLayer`` API of

- ``FileDataLayer`` in the fast mode and in the zero-dependency mode
  (``FILELAYER_PURE=1``), each in its own processes;
- Chainlit's ``SQLAlchemyDataLayer`` on SQLite (aiosqlite);
- Chainlit's ``ChainlitDataLayer`` on a PostgreSQL server this script starts on
  127.0.0.1 in a temporary directory and stops at the end (skipped, and said so, when
  no PostgreSQL server binaries are installed);

then prints a Markdown table with the ratios and the issue's targets, and appends every
figure to ``benchmarks/results.csv``. The file layer also gets figures of its own: the
event loop of a serving process while another process runs ``filelayer reindex`` and
``filelayer compact``, and a progress-style thread (a step updated again and again).
Everything it writes besides that file lives in a temporary directory, removed at the
end.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CSV = REPO / "benchmarks" / "results.csv"

LAYERS: dict[str, tuple[str, dict[str, str]]] = {
    "file-fast": ("file", {}),
    "file-pure": ("file", {"FILELAYER_PURE": "1"}),
    "sqlite": ("sqlite", {}),
    "postgres": ("postgres", {}),
}
START_100K_MS = 50.0
"""The issue asked for 500 ms; the database opens in milliseconds at any size, so the
target is what was measured (about 10-25 ms with a cold page cache) with a margin."""

LABELS = {
    "file-fast": "filelayer, fast",
    "file-pure": "filelayer, zero-dep",
    "sqlite": "SQLAlchemy + SQLite",
    "postgres": "Chainlit + PostgreSQL",
}
SETTLE_SECONDS = 5.0
FILE_LAYERS = ("file-fast", "file-pure")
SQL_LAYERS = ("sqlite", "postgres")
PARTS = ("writes", "queries", "users", "lag", "progress")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def load_average() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


# -- subprocesses -------------------------------------------------------------------------


class MeasureError(RuntimeError):
    pass


def measure(
    role: str, layer: str, target: str, workdir: Path, *extra: str, timeout: float = 3600
) -> dict[str, Any]:
    """Run one ``benchmarks.measure`` subprocess and return its JSON result."""
    kind, env_extra = LAYERS[layer]
    env = dict(os.environ)
    env.pop("FILELAYER_PURE", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env.update(env_extra)
    cmd = [sys.executable, "-m", "benchmarks.measure", role, kind, target, *extra]
    done = subprocess.run(
        cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise MeasureError(
            f"{role} {layer} failed ({done.returncode}):\n{done.stderr.strip()[-3000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# -- PostgreSQL ---------------------------------------------------------------------------


class Postgres:
    """The throwaway server the tests use too (``benchmarks/pgserver.py``), one database per
    archive, each with Chainlit's official schema."""

    def __init__(self) -> None:
        from benchmarks import pgserver

        self.server = pgserver.PostgresServer()
        self._apply_schema = pgserver.apply_schema
        self._count = 0

    @staticmethod
    def available() -> bool:
        from benchmarks import pgserver

        return pgserver.find_bindir() is not None

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def new_database(self) -> str:
        import asyncpg

        self._count += 1
        name = f"bench{self._count}"
        base = self.server.url.rsplit("/", 1)[0]

        async def create() -> None:
            conn = await asyncpg.connect(self.server.url)
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()
            await self._apply_schema(f"{base}/{name}")

        asyncio.run(create())
        return f"{base}/{name}"

    def drop_database(self, url: str) -> None:
        import asyncpg

        name = url.rsplit("/", 1)[1]

        async def drop() -> None:
            conn = await asyncpg.connect(self.server.url)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            finally:
                await conn.close()

        asyncio.run(drop())


# -- results ------------------------------------------------------------------------------


@dataclass
class Results:
    values: dict[tuple[str, str], float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def put(self, layer: str, metric: str, value: float) -> None:
        self.values[(layer, metric)] = float(value)

    def get(self, layer: str, metric: str) -> float | None:
        return self.values.get((layer, metric))


@dataclass
class Row:
    title: str
    metric: str
    unit: str
    higher_is_better: bool = False
    ratio: bool = True


def metric_at(name: str, size: int | str) -> str:
    return f"{name}@{size}"


START_RUNS = 5
"""Fresh processes timed for each start-up figure (the median is reported)."""


@dataclass(frozen=True)
class UsersCase:
    """Many users with as many threads each: one user's sidebar must cost what a small
    archive's does, whatever the others hold."""

    users: int
    per_user: int

    @property
    def key(self) -> str:
        return f"{self.users}x{self.per_user}"

    @property
    def threads(self) -> int:
        return self.users * self.per_user

    @property
    def title(self) -> str:
        return f"{self.users:,} users × {self.per_user:,} threads"

    @property
    def rank(self) -> int:
        """Whose sidebar: a user in the middle (all own as many threads)."""
        return self.users // 2

    @staticmethod
    def parse(text: str) -> UsersCase | None:
        if text in ("", "none"):
            return None
        users, _, per_user = text.partition("x")
        return UsersCase(int(users), int(per_user))


def rows_for(
    sizes: list[int],
    turns: int = 50,
    users_case: UsersCase | None = None,
    lag_sizes: list[int] | None = None,
    chats: int = 20,
) -> list[Row]:
    rows = [
        Row("write calls/s, default durability", "write_calls_per_s", "calls/s", True),
        Row("write calls/s, durability=fsync", "write_calls_per_s_fsync", "calls/s", True),
        Row(f"{chats} concurrent chats, calls/s", "concurrent_calls_per_s", "calls/s", True),
        Row(f"{chats} concurrent chats, p99 of one call", "concurrent_p99_ms", "ms"),
        Row(
            f"{chats} concurrent chats, calls/s, durability=fsync",
            "concurrent_calls_per_s_fsync",
            "calls/s",
            True,
        ),
        Row(
            f"{chats} concurrent chats, p99 of one call, durability=fsync",
            "concurrent_p99_ms_fsync",
            "ms",
        ),
        Row(
            f"get_thread, {turns}-turn thread, first read in a process", "get_thread_first_ms", "ms"
        ),
        Row(
            f"get_thread, {turns}-turn thread, first read, written by another live process",
            "get_thread_first_live_ms",
            "ms",
        ),
        Row(
            f"get_thread, {turns}-turn thread, first read, written by another live process"
            " 2 s before",
            "get_thread_first_quiet_ms",
            "ms",
        ),
        Row(f"get_thread, {turns}-turn thread, repeated read", "get_thread_ms", "ms"),
    ]
    for n in sizes:
        label = f"{n:,} threads"
        rows += [
            Row(f"list_threads first page, {label}", metric_at("list_ms", n), "ms"),
            Row(f"list_threads first page, p99, {label}", metric_at("list_p99_ms", n), "ms"),
            Row(f"search (hit), {label}", metric_at("search_hit_ms", n), "ms"),
            Row(f"search (hit), p99, {label}", metric_at("search_hit_p99_ms", n), "ms"),
            Row(
                f"search (hit), first in a fresh process, {label}",
                metric_at("first_search_hit_ms", n),
                "ms",
            ),
            Row(
                f"search (hit), first in a fresh process, cold page cache, {label}",
                metric_at("first_search_hit_evicted_ms", n),
                "ms",
                ratio=False,
            ),
            Row(f"search (no match), {label}", metric_at("search_miss_ms", n), "ms"),
            Row(f"search (no match), p99, {label}", metric_at("search_miss_p99_ms", n), "ms"),
            Row(
                f"search (no match), first in a fresh process, {label}",
                metric_at("first_search_miss_ms", n),
                "ms",
            ),
            Row(
                f"search (no match), first in a fresh process, cold page cache, {label}",
                metric_at("first_search_miss_evicted_ms", n),
                "ms",
                ratio=False,
            ),
            Row(f"feedback filter, {label}", metric_at("feedback_ms", n), "ms"),
            Row(f"open + first page, fresh process, {label}", metric_at("start_ms", n), "ms"),
            Row(
                f"open + first page, fresh process, cold page cache, {label}",
                metric_at("start_evicted_ms", n),
                "ms",
                ratio=False,
            ),
            Row(
                f"memory of the layer beyond Chainlit's, {label}",
                metric_at("layer_rss_mb", n),
                "MB",
                ratio=False,
            ),
            Row(f"RSS after the queries, {label}", metric_at("rss_mb", n), "MB", ratio=False),
            Row(f"peak RSS, {label}", metric_at("peak_rss_mb", n), "MB", ratio=False),
        ]
    if users_case is not None:
        k, title = users_case.key, users_case.title
        rows += [
            Row(f"{title}: one user's first page", metric_at("list_ms", k), "ms"),
            Row(f"{title}: one user's search (hit)", metric_at("search_hit_ms", k), "ms"),
            Row(f"{title}: one user's search (no match)", metric_at("search_miss_ms", k), "ms"),
            Row(f"{title}: open + first page, fresh process", metric_at("start_ms", k), "ms"),
            Row(
                f"{title}: open + first page, fresh process, cold page cache",
                metric_at("start_evicted_ms", k),
                "ms",
                ratio=False,
            ),
        ]
    for n in lag_sizes or []:
        label = f"{n:,} threads"
        during = "while another process runs reindex + compact"
        rows += [
            Row(f"worst event-loop lag {during}, {label}", metric_at("loop_lag_ms", n), "ms",
                ratio=False),
            Row(f"the same, durability=fsync, {label}", metric_at("loop_lag_ms_fsync", n), "ms",
                ratio=False),
            Row(f"worst event-loop lag, no maintenance running, {label}",
                metric_at("quiet_lag_ms", n), "ms", ratio=False),
            Row(f"longest layer call on the loop {during}, {label}",
                metric_at("loop_inline_ms", n), "ms", ratio=False),
            Row(f"longest create_step {during}, {label}", metric_at("loop_write_ms", n), "ms",
                ratio=False),
        ]  # fmt: skip
    rows += [
        Row("progress-style thread: journal bytes / live bytes", "progress_ratio", "×",
            ratio=False),
        Row("progress-style thread: the most while written", "progress_ratio_max", "×",
            ratio=False),
        Row("progress-style thread, first read in a process", "progress_first_read_ms", "ms",
            ratio=False),
        Row("1,000-step thread, first read in a process", "thousand_first_read_ms", "ms",
            ratio=False),
    ]  # fmt: skip
    rows += [
        Row("disk per thread (file sizes)", "disk_kb_per_thread", "KB", ratio=False),
        Row("disk per thread (allocated blocks)", "disk_alloc_kb_per_thread", "KB", ratio=False),
    ]
    return rows


def extrapolate(results: Results, layer: str, metric: str, sizes: list[int]) -> float | None:
    """A linear extrapolation from the two largest sizes measured for ``layer``; none
    for a figure that shrank between them (noise: a line through it would go below
    zero)."""
    name, _, at = metric.partition("@")
    if not at.isdigit():
        return None
    target = int(at)
    measured = [n for n in sizes if results.get(layer, metric_at(name, n)) is not None]
    if len(measured) < 2 or target <= max(measured):
        return None
    a, b = measured[-2], measured[-1]
    va, vb = results.get(layer, metric_at(name, a)), results.get(layer, metric_at(name, b))
    assert va is not None and vb is not None
    if vb < va:
        return None
    return vb + (vb - va) / (b - a) * (target - b)


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "calls/s":
        return f"{value:,.0f}"
    if unit in ("MB", "KB"):
        return f"{value:,.1f}"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def ratio_text(ours: float | None, theirs: float | None, row: Row, approx: bool) -> str:
    if ours is None or theirs is None or not row.ratio or ours <= 0 or theirs <= 0:
        return "—"
    r = ours / theirs if row.higher_is_better else theirs / ours
    text = f"{r:,.0f}×" if r >= 100 else f"{r:.1f}×"
    return ("≈" + text) if approx else text


def markdown(
    results: Results,
    layers: list[str],
    sizes: list[int],
    sql_sizes: list[int],
    turns: int,
    users_case: UsersCase | None = None,
    lag_sizes: list[int] | None = None,
    chats: int = 20,
) -> str:
    peers = [p for p in SQL_LAYERS if p in layers]
    head = ["", *(LABELS[x] for x in layers)]
    head += [f"fast vs {LABELS[p].split(' ')[-1]}" for p in peers if "file-fast" in layers]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows_for(sizes, turns, users_case, lag_sizes, chats):
        cells = [f"{row.title} ({row.unit})"]
        any_value = False
        approx_of: dict[str, float] = {}
        for layer in layers:
            value = results.get(layer, row.metric)
            if value is None and layer in SQL_LAYERS and row.ratio:
                guess = extrapolate(results, layer, row.metric, sql_sizes)
                if guess is not None:
                    approx_of[layer] = guess
                    cells.append(f"≈{fmt(guess, row.unit)}¹")
                    continue
            any_value = any_value or value is not None
            cells.append(fmt(value, row.unit))
        if not any_value:
            continue
        if "file-fast" in layers:
            ours = results.get("file-fast", row.metric)
            for peer in peers:
                theirs = results.get(peer, row.metric)
                approx = theirs is None and peer in approx_of
                cells.append(ratio_text(ours, approx_of.get(peer, theirs), row, approx))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass
class Target:
    text: str
    check: Callable[[Results, str], tuple[str, bool | None]]


def _ratio(
    results: Results, ours: str, layer: str, peer: str, metric: str, higher: bool
) -> float | None:
    a, b = results.get(layer, ours), results.get(peer, metric)
    if a is None or b is None or a <= 0 or b <= 0:
        return None
    return a / b if higher else b / a


def targets(turns: int = 50) -> list[Target]:
    def ratio_target(
        metric: str, peer: str, at_least: float, higher: bool, ours: str | None = None
    ) -> Callable[[Results, str], tuple[str, bool | None]]:
        def check(results: Results, layer: str) -> tuple[str, bool | None]:
            r = _ratio(results, ours or metric, layer, peer, metric, higher)
            if r is None:
                return "not measured", None
            return f"{r:,.1f}×", r >= at_least

        return check

    def at_most(
        metric: str, limit: float, unit: str, *honest: str
    ) -> Callable[[Results, str], tuple[str, bool | None]]:
        """``metric`` (and the worst of the ``honest`` figures measured with it: p99,
        first call in a fresh process, cold page cache) at most ``limit``."""

        def check(results: Results, layer: str) -> tuple[str, bool | None]:
            values = [results.get(layer, m) for m in (metric, *honest)]
            if values[0] is None:
                return "not measured", None
            v = max(x for x in values if x is not None)
            return f"{fmt(v, unit)} {unit}", v <= limit

        return check

    return [
        Target(
            "write calls ≥ 20× SQLAlchemy (default durability)",
            ratio_target("write_calls_per_s", "sqlite", 20, True),
        ),
        Target(
            "write calls ≥ 10× Postgres (default durability)",
            ratio_target("write_calls_per_s", "postgres", 10, True),
        ),
        Target(
            "write calls ≥ 25× Postgres (flush mode, issue #11)",
            ratio_target("write_calls_per_s", "postgres", 25, True),
        ),
        Target(
            "write calls ≥ 2× Postgres (fsync mode)",
            ratio_target("write_calls_per_s", "postgres", 2, True, ours="write_calls_per_s_fsync"),
        ),
        Target(
            "write calls ≥ 5× Postgres (fsync mode, one chat, issue #11)",
            ratio_target("write_calls_per_s", "postgres", 5, True, ours="write_calls_per_s_fsync"),
        ),
        Target(
            "20 concurrent chats: calls/s ≥ 10× Postgres (fsync mode, group commit)",
            ratio_target(
                "concurrent_calls_per_s", "postgres", 10, True, ours="concurrent_calls_per_s_fsync"
            ),
        ),
        Target(
            "20 concurrent chats: p99 of one call below Postgres's (fsync mode)",
            ratio_target(
                "concurrent_p99_ms", "postgres", 1.0001, False, ours="concurrent_p99_ms_fsync"
            ),
        ),
        Target("list_threads first page at 10k threads ≤ 5 ms", at_most("list_ms@10000", 5, "ms")),
        Target(
            "list_threads at 10k ≥ 100× SQLAlchemy",
            ratio_target("list_ms@10000", "sqlite", 100, False),
        ),
        Target(
            "list_threads at 10k faster than Postgres",
            ratio_target("list_ms@10000", "postgres", 1.0001, False),
        ),
        Target(
            "list_threads first page at 100k threads ≤ 5 ms (p99)",
            at_most("list_ms@100000", 5, "ms", "list_p99_ms@100000"),
        ),
        Target(
            "open + first page in a fresh process at 10k ≤ 100 ms (cold page cache)",
            at_most("start_ms@10000", 100, "ms", "start_evicted_ms@10000"),
        ),
        Target(
            f"open + first page in a fresh process at 100k ≤ {START_100K_MS:g} ms "
            "(cold page cache)",
            at_most("start_ms@100000", START_100K_MS, "ms", "start_evicted_ms@100000"),
        ),
        Target(
            "search (no match) at 100k ≤ 20 ms (p99, first in a fresh process)",
            at_most(
                "search_miss_ms@100000",
                20,
                "ms",
                "search_miss_p99_ms@100000",
                "first_search_miss_ms@100000",
            ),
        ),
        Target(
            "search (hit) at 100k ≤ 20 ms (p99, first in a fresh process)",
            at_most(
                "search_hit_ms@100000",
                20,
                "ms",
                "search_hit_p99_ms@100000",
                "first_search_hit_ms@100000",
            ),
        ),
        Target(
            "memory of the index at 100k ≤ 40 MB beyond Chainlit's",
            at_most("layer_rss_mb@100000", 40, "MB", "layer_peak_rss_mb@100000"),
        ),
        # Judged on the first read of a thread in a process: a repeated read is mostly
        # served from the folded journal the layer keeps in memory.
        Target(
            f"get_thread ({turns} turns, first read) ≥ 5× faster than SQLAlchemy",
            ratio_target("get_thread_first_ms", "sqlite", 5, False),
        ),
        Target(
            f"get_thread ({turns} turns, first read) ≥ 2× faster than Postgres",
            ratio_target("get_thread_first_ms", "postgres", 2, False),
        ),
        Target(
            f"get_thread ({turns} turns, first read) ≥ 5× faster than Postgres (issue #11)",
            ratio_target("get_thread_first_ms", "postgres", 5, False),
        ),
        Target(
            f"get_thread ({turns} turns, repeated read) ≥ 10× faster than Postgres",
            ratio_target("get_thread_ms", "postgres", 10, False),
        ),
        Target("RSS serving a 100k-thread index < 200 MB", at_most("rss_mb@100000", 200, "MB")),
        Target(
            "peak RSS serving a 100k-thread index < 200 MB",
            at_most("peak_rss_mb@100000", 200, "MB"),
        ),
        Target(
            "event-loop lag during reindex + compact at 100k ≤ 20 ms (flush)",
            at_most("loop_lag_ms@100000", 20, "ms"),
        ),
        Target(
            "event-loop lag during reindex + compact at 100k ≤ 20 ms (fsync)",
            at_most("loop_lag_ms_fsync@100000", 20, "ms"),
        ),
        Target(
            "progress-style thread: journal ≤ 2× its live bytes",
            at_most("progress_ratio", 2, "×"),
        ),
        Target(
            "1,000-step thread: first read ≤ 20 ms",
            at_most("thousand_first_read_ms", 20, "ms"),
        ),
    ]


def targets_markdown(results: Results, layers: list[str], turns: int = 50) -> str:
    ours = [x for x in FILE_LAYERS if x in layers]
    lines = [
        "| target | " + " | ".join(LABELS[x] for x in ours) + " |",
        "|---|" + "---|" * len(ours),
    ]
    for target in targets(turns):
        cells = []
        for layer in ours:
            text, ok = target.check(results, layer)
            mark = "" if ok is None else (" ✅" if ok else " ❌")
            cells.append(text + mark)
        lines.append(f"| {target.text} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def append_csv(path: Path, results: Results, command: str, when: str, host: str) -> None:
    new = not path.exists() or path.stat().st_size == 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["date", "machine", "command", "mode", "metric", "value"])
        for (layer, metric), value in sorted(results.values.items()):
            writer.writerow([when, host, command, layer, metric, f"{value:.6g}"])


# -- the run ------------------------------------------------------------------------------


def parse_sizes(text: str) -> list[int]:
    return sorted({int(x.replace("_", "").replace(",", "")) for x in text.split(",") if x.strip()})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="filelayer against Chainlit's SQL data layers, through the data-layer API.",
    )
    p.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    p.add_argument("--sizes", help="archive sizes in threads (default 1000,10000,100000)")
    p.add_argument(
        "--sql-sizes",
        help="sizes at which the SQL layers are measured (default 1000,10000; larger sizes "
        "are extrapolated)",
    )
    p.add_argument("--layers", default=",".join(LAYERS), help="which of " + ", ".join(LAYERS))
    p.add_argument("--write-threads", type=int, help="threads written in the write test")
    p.add_argument("--turns", type=int, default=5, help="turns per thread in the write test")
    p.add_argument("--get-thread-turns", type=int, default=50)
    p.add_argument(
        "--get-thread-threads",
        type=int,
        help="long threads read once each for get_thread's first read (default 11)",
    )
    p.add_argument("--budget", type=float, help="seconds spent repeating each timed query")
    p.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="where runs are appended")
    p.add_argument("--no-csv", action="store_true", help="do not append to the CSV")
    p.add_argument("--markdown", type=Path, help="also write the tables to this file")
    p.add_argument(
        "--users-case",
        help="USERSxTHREADS: many users with as many threads each, one user's sidebar "
        "measured (default 1000x100; 'none' to skip)",
    )
    p.add_argument(
        "--start-runs", type=int, help=f"fresh processes per start-up figure ({START_RUNS})"
    )
    p.add_argument("--chats", type=int, help="concurrent chats in the write test (default 20)")
    p.add_argument(
        "--lag-sizes",
        help="archive sizes at which the event-loop lag is measured during reindex + compact "
        "(default 10000,100000; each size of --sizes only)",
    )
    p.add_argument(
        "--parts",
        default=",".join(PARTS),
        help="what to run, of " + ", ".join(PARTS) + " (default: all)",
    )
    args = p.parse_args(argv)
    args.layers = [x.strip() for x in args.layers.split(",") if x.strip()]
    unknown = [x for x in args.layers if x not in LAYERS]
    if unknown:
        p.error(f"unknown layers: {', '.join(unknown)}")
    default_sizes = "200,1000" if args.quick else "1000,10000,100000"
    args.sizes = parse_sizes(args.sizes or default_sizes)
    args.sql_sizes = parse_sizes(args.sql_sizes or ("200,1000" if args.quick else "1000,10000"))
    args.write_threads = args.write_threads or (6 if args.quick else 40)
    args.budget = args.budget if args.budget is not None else (0.2 if args.quick else 1.0)
    args.get_thread_threads = args.get_thread_threads or (4 if args.quick else 11)
    if args.quick:
        args.get_thread_turns = min(args.get_thread_turns, 10)
    default_case = "20x10" if args.quick else "1000x100"
    args.users_case = UsersCase.parse(args.users_case or default_case)
    args.start_runs = args.start_runs or (2 if args.quick else START_RUNS)
    args.chats = args.chats or (4 if args.quick else 20)
    args.lag_sizes = [
        n
        for n in parse_sizes(args.lag_sizes or ("" if args.quick else "10000,100000"))
        if n in args.sizes
    ]
    args.parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    if set(args.parts) - set(PARTS):
        p.error(f"unknown parts: {', '.join(sorted(set(args.parts) - set(PARTS)))}")
    return args


def run(args: argparse.Namespace, command: str) -> tuple[Results, str]:
    results = Results()
    layers: list[str] = list(args.layers)
    started = datetime.now(timezone.utc)
    work = Path(tempfile.mkdtemp(prefix="filelayer-bench-"))
    pg: Postgres | None = None
    if "postgres" in layers:
        if Postgres.available():
            pg = Postgres()
            log("starting PostgreSQL on 127.0.0.1")
            pg.start()
            # A new cluster writes its files for a few seconds after it starts; measured
            # meanwhile, the first layer's writes competed with it for the disk.
            os.sync()
            time.sleep(SETTLE_SECONDS)
        else:
            message = (
                "PostgreSQL server binaries not found (Debian: apt-get install postgresql): "
                "measuring the other layers only"
            )
            log(message)
            results.notes.append(message)
            layers.remove("postgres")
    budget = ["--budget", str(args.budget)]
    try:
        if "writes" in args.parts:
            run_writes(args, layers, work, pg, results, budget)
        if "progress" in args.parts:
            run_progress(layers, work, results)
        if "queries" in args.parts or "lag" in args.parts:
            for n in args.sizes:
                run_size(args, n, layers, work, pg, results, budget)
        if args.users_case is not None and "users" in args.parts:
            run_users_case(args, args.users_case, layers, work, pg, results, budget)
    finally:
        if pg is not None:
            log("stopping PostgreSQL")
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    report = render(args, results, layers, command, started)
    return results, report


def run_writes(
    args: argparse.Namespace,
    layers: list[str],
    work: Path,
    pg: Postgres | None,
    results: Results,
    budget: list[str],
) -> None:
    common = [
        "--threads", str(args.write_threads), "--turns", str(args.turns),
        "--get-thread-turns", str(args.get_thread_turns),
        "--get-thread-threads", str(args.get_thread_threads), "--chats", str(args.chats),
        *budget,
    ]  # fmt: skip
    for layer in layers:
        for durability in ("flush", "fsync") if layer in FILE_LAYERS else ("default",):
            label = f"{LABELS[layer]}, {durability}"
            log(f"write calls and get_thread: {label}")
            if layer in FILE_LAYERS:
                target = str(work / f"writes-{layer}-{durability}")
                extra = ["--durability", durability]
            elif layer == "sqlite":
                target = str(work / "writes.sqlite")
                from benchmarks.archives import create_sqlite_schema

                create_sqlite_schema(Path(target))
                extra = []
            else:
                assert pg is not None
                target = pg.new_database()
                extra = []
            if durability == "fsync":
                extra += ["--get-thread-turns", "0"]
            r = measure("writes", layer, target, work, *common, *extra)
            suffix = "_fsync" if durability == "fsync" else ""
            results.put(layer, "write_calls_per_s" + suffix, r["write_calls_per_s"])
            for name in ("concurrent_calls_per_s", "concurrent_p99_ms", "concurrent_p50_ms"):
                if name in r:
                    results.put(layer, name + suffix, r[name])
            for name in (
                "get_thread_first_ms",
                "get_thread_first_live_ms",
                "get_thread_first_quiet_ms",
                "get_thread_ms",
            ):
                if name in r:
                    results.put(layer, name, r[name])
            if layer == "postgres" and pg is not None:
                pg.drop_database(target)
            elif layer == "sqlite":
                Path(target).unlink(missing_ok=True)
            else:
                shutil.rmtree(target, ignore_errors=True)


def run_progress(layers: list[str], work: Path, results: Results) -> None:
    """The progress-style thread and the 1,000-step thread, in each file mode."""
    for layer in (x for x in layers if x in FILE_LAYERS):
        log(f"progress-style thread: {LABELS[layer]}")
        root = work / f"progress-{layer}"
        r = measure("progress", layer, str(root), work)
        for name in ("progress_ratio", "progress_ratio_max", "progress_first_read_ms"):
            results.put(layer, name, r[name])
        results.put(layer, "progress_calls_per_s", r["progress_calls_per_s"])
        results.put(layer, "thousand_first_read_ms", r["thousand_steps_first_read_ms"])
        shutil.rmtree(root, ignore_errors=True)


def run_loop_lag(n: int, root: Path, work: Path, results: Results) -> None:
    """The event loop of a serving process (fast mode) while another process runs
    ``filelayer reindex`` then ``filelayer compact`` on the archive, in both durability
    modes. Each mode gets a copy of the archive as it was built: the compaction of the
    first run would otherwise leave the second nothing to rewrite (and far less to
    stall on). The copy is synced before the run, so that its own writes are not what
    the run measures; the load average (the machine is shared) is kept with the
    figures."""
    for durability in ("flush", "fsync"):
        copy = work / f"{root.name}-lag-{durability}"
        shutil.rmtree(copy, ignore_errors=True)
        log(f"copying the {n:,}-thread archive for the {durability} run")
        shutil.copytree(root, copy, symlinks=True)
        os.sync()
        log(f"event-loop lag at {n:,} threads during reindex + compact, {durability}")
        try:
            r = measure("loop_lag", "file-fast", str(copy), work, "--durability", durability)
        finally:
            shutil.rmtree(copy, ignore_errors=True)
        suffix = "_fsync" if durability == "fsync" else ""
        results.put("file-fast", metric_at("loop_load" + suffix, n), r["load_avg"])
        results.put("file-fast", metric_at("loop_own_lag_ms" + suffix, n), r["own_lag_max_ms"])
        results.put("file-fast", metric_at("loop_lag_ms" + suffix, n), r["lag_max_ms"])
        results.put("file-fast", metric_at("loop_lag_p99_ms" + suffix, n), r["lag_p99_ms"])
        results.put("file-fast", metric_at("quiet_lag_ms" + suffix, n), r["quiet_lag_max_ms"])
        results.put("file-fast", metric_at("loop_inline_ms" + suffix, n), r["inline_max_ms"])
        results.put(
            "file-fast", metric_at("loop_inline_cpu_ms" + suffix, n), r["inline_cpu_max_ms"]
        )
        results.put("file-fast", metric_at("loop_write_ms" + suffix, n), r["write_max_ms"])
        results.put("file-fast", metric_at("reindex_s" + suffix, n), r["reindex_s"])
        results.put("file-fast", metric_at("compact_s" + suffix, n), r["compact_s"])


def run_size(
    args: argparse.Namespace,
    n: int,
    layers: list[str],
    work: Path,
    pg: Postgres | None,
    results: Results,
    budget: list[str],
) -> None:
    size = ["--threads", str(n), *budget]
    ours = [x for x in layers if x in FILE_LAYERS]
    lag = "lag" in args.parts and n in args.lag_sizes and "file-fast" in ours
    if ours and ("queries" in args.parts or lag):
        root = work / f"archive-{n}"
        log(f"building a {n:,}-thread archive (files)")
        built = measure("build", ours[0], str(root), work, "--threads", str(n))
        for layer in ours if "queries" in args.parts else []:
            disk(results, layer, n, built)
            log(f"queries at {n:,} threads: {LABELS[layer]}")
            record_queries(results, layer, n, measure("queries", layer, str(root), work, *size))
            record_starts(args, results, layer, n, str(root), work, size)
        if lag:
            run_loop_lag(n, root, work, results)
        shutil.rmtree(root, ignore_errors=True)
    if "queries" not in args.parts:
        return
    for layer in (x for x in layers if x in SQL_LAYERS):
        if n not in args.sql_sizes:
            continue
        log(f"building a {n:,}-thread archive ({LABELS[layer]})")
        if layer == "sqlite":
            target = str(work / f"archive-{n}.sqlite")
        else:
            assert pg is not None
            target = pg.new_database()
        built = measure("build", layer, target, work, "--threads", str(n))
        disk(results, layer, n, built)
        log(f"queries at {n:,} threads: {LABELS[layer]}")
        record_queries(results, layer, n, measure("queries", layer, target, work, *size))
        record_starts(args, results, layer, n, target, work, size)
        if layer == "sqlite":
            Path(target).unlink(missing_ok=True)
        elif pg is not None:
            pg.drop_database(target)


def run_users_case(
    args: argparse.Namespace,
    case: UsersCase,
    layers: list[str],
    work: Path,
    pg: Postgres | None,
    results: Results,
    budget: list[str],
) -> None:
    """One user's sidebar in an archive of many users with as many threads each, for
    the file layers and PostgreSQL (SQLAlchemy on SQLite, at seconds a query on such an
    archive, is left out)."""
    spec = ["--threads", str(case.threads), "--users", str(case.users), "--even"]
    who = [*spec, "--user-rank", str(case.rank), *budget]
    ours = [x for x in layers if x in FILE_LAYERS]
    if ours:
        root = work / f"archive-{case.key}"
        log(f"building an archive of {case.title} (files)")
        measure("build", ours[0], str(root), work, *spec)
        for layer in ours:
            log(f"queries for one user of {case.title}: {LABELS[layer]}")
            r = measure("queries", layer, str(root), work, *who)
            record_queries(results, layer, case.key, r)
            record_starts(args, results, layer, case.key, str(root), work, who)
        shutil.rmtree(root, ignore_errors=True)
    if "postgres" in layers and pg is not None:
        target = pg.new_database()
        log(f"building an archive of {case.title} ({LABELS['postgres']})")
        measure("build", "postgres", target, work, *spec)
        log(f"queries for one user of {case.title}: {LABELS['postgres']}")
        r = measure("queries", "postgres", target, work, *who)
        record_queries(results, "postgres", case.key, r)
        record_starts(args, results, "postgres", case.key, target, work, who)
        pg.drop_database(target)


def record_starts(
    args: argparse.Namespace,
    results: Results,
    layer: str,
    at: int | str,
    target: str,
    work: Path,
    extra: list[str],
) -> None:
    """The median of ``--start-runs`` fresh processes: open + first page, then the first
    search of each kind; for the file layers also with the archive evicted from the
    page cache (a PostgreSQL server keeps its own cache: not measured cold)."""
    modes: list[tuple[str, list[str]]] = [("", [])]
    if layer in FILE_LAYERS or layer == "sqlite":
        modes.append(("_evicted", ["--evict"]))
    for suffix, flags in modes:
        runs = [
            measure("start", layer, target, work, *extra, *flags) for _ in range(args.start_runs)
        ]
        for name in ("start_ms", "first_search_miss_ms", "first_search_hit_ms"):
            value = statistics.median(r[name] for r in runs)
            results.put(layer, metric_at(name.replace("_ms", f"{suffix}_ms"), at), value)


def disk(results: Results, layer: str, n: int, built: dict[str, Any]) -> None:
    """Disk per thread, from the largest archive up to 10k threads (where fixed costs,
    such as an empty database's files, no longer dominate)."""
    if n > 10000 and results.get(layer, "disk_kb_per_thread") is not None:
        return
    results.put(layer, "disk_kb_per_thread", built["disk_bytes"] / 1024 / built["threads"])
    if "disk_allocated_bytes" in built:
        results.put(
            layer,
            "disk_alloc_kb_per_thread",
            built["disk_allocated_bytes"] / 1024 / built["threads"],
        )
    results.put(layer, metric_at("build_s", n), built["build_seconds"])


def record_queries(results: Results, layer: str, n: int | str, r: dict[str, Any]) -> None:
    for name in ("list", "search_hit", "search_miss", "feedback"):
        for figure in ("ms", "p99_ms", "first_ms", "items"):
            if f"{name}_{figure}" in r:
                results.put(layer, metric_at(f"{name}_{figure}", n), r[f"{name}_{figure}"])
    for name in (
        "cold_first_page_ms",
        "rss_mb",
        "peak_rss_mb",
        "base_rss_mb",
        "layer_rss_mb",
        "layer_peak_rss_mb",
        "second_page_ms",
    ):
        if name in r:
            results.put(layer, metric_at(name, n), r[name])


def render(
    args: argparse.Namespace,
    results: Results,
    layers: list[str],
    command: str,
    started: datetime,
) -> str:
    lines = [
        f"Machine: {machine()}  ",
        f"Date: {started.strftime('%Y-%m-%d %H:%M UTC')}, "
        f"load average at the end: {load_average()}  ",
        f"Command: `{command}`",
        "",
        markdown(
            results,
            layers,
            args.sizes,
            args.sql_sizes,
            args.get_thread_turns,
            args.users_case,
            args.lag_sizes,
            args.chats,
        ),
        "",
    ]
    extrapolated = [n for n in args.sizes if n not in args.sql_sizes]
    if extrapolated and any(x in layers for x in SQL_LAYERS):
        lines.append(
            "¹ Not measured: linear extrapolation from the SQL layer's two largest measured "
            f"sizes ({', '.join(f'{n:,}' for n in args.sql_sizes[-2:])} threads)."
        )
        lines.append("")
    lines += [targets_markdown(results, layers, args.get_thread_turns), ""]
    lines += [f"Note: {note}" for note in results.notes]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m benchmarks" + (" " + shlex.join(argv) if argv else "")
    if argv is None and len(sys.argv) > 1:
        command = "python -m benchmarks " + shlex.join(sys.argv[1:])
    try:
        results, report = run(args, command)
    except MeasureError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    print(report)
    if args.markdown:
        args.markdown.write_text(report, encoding="utf-8")
    if not args.no_csv:
        when = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        append_csv(args.csv, results, command, when, machine())
        log(f"figures appended to {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
