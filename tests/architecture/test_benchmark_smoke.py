"""The benchmark runs: its quick mode, for the file layer in both modes, produces the
table and the CSV rows; its workload is reproducible and shaped as Chainlit issues it;
the archives it builds for the SQL peers are what their layers read. No timing is
asserted anywhere: figures are the benchmark's output, not a test's."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import workload
from tests.support.processes import subprocess_env


def test_the_workload_is_reproducible_and_shaped_like_chainlit_calls() -> None:
    def generate() -> list[workload.Conversation]:
        return list(workload.archive_conversations(12, seed=4, turns=(3, 3)))

    first, again = generate(), generate()
    assert [c.calls for c in first] == [c.calls for c in again]
    conv = first[0]
    methods = [c.method for c in conv.calls]
    assert methods[0] == "update_thread" and methods[-1] == "update_thread"
    turn = [m for m in methods[1:-1] if m != "upsert_feedback"]
    assert turn == ["create_step", "create_step", "create_step", "update_step", "create_step",
                    "update_step", "update_step"] * 3  # fmt: skip
    steps = [c.args[0] for c in conv.calls if c.method.endswith("_step")]
    assert [s["type"] for s in steps[:7]] == [
        "user_message", "run", "tool", "tool", "assistant_message", "assistant_message", "run",
    ]  # fmt: skip
    assert steps[4]["output"] == "" and steps[5]["output"]  # send(), then update()
    run_id = steps[1]["id"]
    assert steps[1]["parentId"] == steps[0]["id"] and steps[2]["parentId"] == run_id
    feedback = [c.args[0] for c in conv.calls if c.method == "upsert_feedback"]
    assert all(f["forId"] in {s["id"] for s in steps if s["type"] == "run"} for f in feedback)
    final = workload.final_steps(conv.calls)
    assert final[steps[4]["id"]]["output"] == steps[5]["output"]
    # Calls of overlapping chats come out in time order, none lost.
    merged = list(workload.interleaved(iter(first)))
    assert len(merged) == sum(len(c.calls) for c in first)
    assert [c.at for c in merged] == sorted(c.at for c in merged)


def test_get_thread_is_reported_first_and_repeated_and_judged_on_the_first_read() -> None:
    from benchmarks import run

    results = run.Results()
    for layer, first, repeated in (("file-fast", 10.0, 1.0), ("sqlite", 20.0, 20.0)):
        results.put(layer, "get_thread_first_ms", first)
        results.put(layer, "get_thread_ms", repeated)
    table = run.markdown(results, ["file-fast", "sqlite"], [], [], 50)
    assert "| get_thread, 50-turn thread, first read in a process (ms) | 10.0 | 20.0 | 2.0× |" in (
        table
    )
    assert "| get_thread, 50-turn thread, repeated read (ms) | 1.00 | 20.0 | 20.0× |" in table
    targets = run.targets_markdown(results, ["file-fast", "sqlite"])
    assert "| get_thread (50 turns, first read) ≥ 5× faster than SQLAlchemy | 2.0× ❌ |" in targets


def test_the_quick_benchmark_prints_its_table_and_appends_csv_rows(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    pytest.importorskip("chainlit")
    out_csv, out_md = tmp_path / "results.csv", tmp_path / "table.md"
    cmd = [
        sys.executable, "-m", "benchmarks", "--quick", "--layers", "file-fast,file-pure",
        "--sizes", "40", "--write-threads", "2", "--turns", "2", "--get-thread-turns", "3",
        "--budget", "0.01", "--csv", str(out_csv), "--markdown", str(out_md),
    ]  # fmt: skip
    # A temporary directory of its own: other benchmark runs on the machine (another
    # checkout's tests) make and remove theirs in the shared one meanwhile.
    private_tmp = tmp_path_factory.mktemp("bench-tmp")
    env = subprocess_env(TMPDIR=str(private_tmp))

    def scratch() -> set[Path]:
        return set(private_tmp.glob("filelayer-bench-*"))

    before = scratch()
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    table = out_md.read_text("utf-8")
    assert done.stdout.strip() == table.strip()
    assert "| filelayer, fast | filelayer, zero-dep |" in table
    for row in ("write calls/s, default durability", "write calls/s, durability=fsync",
                "get_thread, 3-turn thread, first read in a process",
                "get_thread, 3-turn thread, repeated read", "list_threads first page, 40 threads",
                "search (no match), 40 threads", "feedback filter, 40 threads",
                "RSS after the queries, 40 threads", "disk per thread"):  # fmt: skip
        assert f"| {row}" in table, row
    assert "| target |" in table and "write calls ≥ 20× SQLAlchemy" in table
    # get_thread's targets are judged on the first read of a thread, not on a repeated one
    # (answered mostly from what the layer keeps in memory).
    assert "get_thread (3 turns, first read) ≥ 5× faster than SQLAlchemy" in table
    rows = list(csv.DictReader(out_csv.open(encoding="utf-8")))
    assert set(rows[0]) == {"date", "machine", "command", "mode", "metric", "value"}
    got = {(r["mode"], r["metric"]) for r in rows}
    for mode in ("file-fast", "file-pure"):
        for metric in ("write_calls_per_s", "write_calls_per_s_fsync", "get_thread_ms",
                       "get_thread_first_ms",
                       "list_ms@40", "search_hit_ms@40", "search_miss_ms@40", "feedback_ms@40",
                       "rss_mb@40", "peak_rss_mb@40", "disk_kb_per_thread"):  # fmt: skip
            assert (mode, metric) in got, (mode, metric)
    assert all(float(r["value"]) >= 0 for r in rows)
    assert {r["command"] for r in rows} == {"python -m benchmarks " + " ".join(cmd[3:])}
    # The listing found the heavy user's threads: the measurements measured something.
    items = {r["metric"]: float(r["value"]) for r in rows if r["mode"] == "file-fast"}
    assert items["list_items@40"] > 0 and items["search_miss_items@40"] == 0
    # A second run (of one layer) appends below the first.
    cmd[cmd.index("file-fast,file-pure")] = "file-pure"
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    more = list(csv.DictReader(out_csv.open(encoding="utf-8")))
    assert more[: len(rows)] == rows
    assert {r["mode"] for r in more[len(rows) :]} == {"file-pure"}
    # Everything but the CSV was written in a temporary directory, removed at the end;
    # Chainlit's .chainlit/ and .files/ did not land in the directory it was run from.
    assert scratch() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv", "table.md"]


async def test_the_sqlite_archive_is_what_sqlalchemys_layer_reads(
    tmp_path: Path, in_tmp: Path
) -> None:
    pytest.importorskip("chainlit")
    pytest.importorskip("aiosqlite")
    pytest.importorskip("sqlalchemy")
    from chainlit.context import init_http_context
    from chainlit.data.sql_alchemy import SQLAlchemyDataLayer
    from chainlit.types import Pagination, ThreadFilter

    from benchmarks.archives import ArchiveSpec, build_sqlite_archive

    spec = ArchiveSpec(30, seed=2)
    db = tmp_path / "bench.sqlite"
    assert build_sqlite_archive(db, spec) == 30
    init_http_context()
    layer = SQLAlchemyDataLayer(conninfo=f"sqlite+aiosqlite:///{db}")
    try:
        conversations = {c.thread_id: c for c in spec.conversations()}
        heavy = spec.identifiers[0]
        page = await layer.list_threads(
            Pagination(first=100), ThreadFilter(userId=spec.user_id(heavy))
        )
        mine = {tid for tid, c in conversations.items() if c.identifier == heavy}
        assert {t["id"] for t in page.data} == mine
        conv = next(iter(conversations.values()))
        thread = await layer.get_thread(conv.thread_id)
        assert thread is not None and thread["name"] == conv.name
        final = workload.final_steps(conv.calls)
        assert {s["id"]: s["output"] for s in thread["steps"]} == {
            sid: s.get("output", "") for sid, s in final.items()
        }
    finally:
        await layer.close()
