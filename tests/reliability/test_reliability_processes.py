"""Several processes write one archive at once while another compacts and reindexes it.

Four or more writer processes (``tests.support.reliability.proc_writer``) write to the same
threads and to their own (message steps created empty then updated, feedback, renames,
metadata merges, threads deleted and then written to late), each recording every call
that returned. Meanwhile a maintenance process runs ``filelayer compact`` and
``filelayer reindex`` over and over. Afterwards every acknowledged write is there, the
index agrees with the thread directories, ``list_threads`` from a fresh process shows each
user exactly their threads, ``verify`` is clean and no temporary file is left.

Store-level: runs without Chainlit. ``FILELAYER_STRESS=1``: more processes and calls.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from filelayer import ArchiveStore
from tests.support.processes import subprocess_env
from tests.support.reliability import HERE, cli, scaled, seed

FRESH_LISTING = """
import json, sys
from filelayer import ArchiveStore
store = ArchiveStore(sys.argv[1])
out = {}
for identifier in sys.argv[2:]:
    user = store.get_user(identifier)
    ids, cursor = [], None
    while True:
        threads, page = store.list_threads(user_id=user["id"], first=3, cursor=cursor)
        ids += [(t["id"], t["name"]) for t in threads]
        cursor = page.end_cursor
        if not page.has_next:
            break
    out[identifier] = ids
print(json.dumps(out))
"""


def read_acks(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_processes(tmp_path: Path, writers: int, turns: int, min_rounds: int) -> dict[str, Any]:
    seed_value = seed()
    root = tmp_path / "chats"
    ArchiveStore(root)  # the app's first start creates the archive
    stop, report = tmp_path / "stop", tmp_path / "maintainer.json"
    env = subprocess_env(same_mode=True)
    maintainer = subprocess.Popen(
        [
            sys.executable,
            str(HERE),
            "maintainer",
            str(root),
            str(stop),
            str(report),
            str(min_rounds),
        ],
        cwd=tmp_path,
        env=env,
    )
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE),
                "proc-writer",
                str(root),
                str(w),
                str(seed_value),
                str(turns),
                str(tmp_path / f"acks-{w}.jsonl"),
            ],
            cwd=tmp_path,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(writers)
    ]
    try:
        for p in procs:
            _, err = p.communicate(timeout=1800)
            assert p.returncode == 0, f"FILELAYER_SEED={seed_value}: a writer failed:\n{err}"
    finally:
        stop.touch()
        maintainer.wait(timeout=1800)
    maintenance = json.loads(report.read_text())
    return {
        "seed": seed_value,
        "root": root,
        "maintenance": maintenance,
        "acks": {w: read_acks(tmp_path / f"acks-{w}.jsonl") for w in range(writers)},
    }


def index_drift(root: Path) -> list[str]:
    """How the index, read by a fresh process, differs from the thread directories."""
    fresh = ArchiveStore(root)
    fresh.index.refresh()
    on_disk = {t for t in fresh.thread_ids() if not fresh.is_deleted(t)}
    problems = []
    if set(fresh.index.threads) != on_disk:
        problems.append(f"indexed threads {sorted(fresh.index.threads)} != {sorted(on_disk)}")
    for thread_id in sorted(on_disk & set(fresh.index.threads)):
        want, have = fresh.summarise(thread_id), fresh.index.threads[thread_id]
        assert want is not None
        for field in ("name", "user_id", "user_identifier", "tags", "texts", "feedback"):
            if getattr(have, field) != getattr(want, field):
                problems.append(f"the index differs from {thread_id}'s files in {field}")
    return problems


def check(tmp_path: Path, run: dict[str, Any]) -> None:
    root: Path = run["root"]
    store = ArchiveStore(root)
    steps: dict[tuple[str, str], str] = {}
    feedback: dict[tuple[str, str], tuple[str, int]] = {}
    names: dict[str, str] = {}
    owners: dict[str, str] = {}
    shared_meta: dict[str, dict[str, int]] = {}
    shared_names: dict[str, set[str]] = {}
    doomed: set[str] = set()
    users: dict[str, str] = {}
    for acks in run["acks"].values():
        for a in acks:
            op = a["op"]
            if op == "user":
                users[a["identifier"]] = a["id"]
            elif op == "step":
                steps[(a["thread"], a["id"])] = a["output"]
            elif op == "feedback":
                feedback[(a["thread"], a["step"])] = (a["id"], a["value"])
            elif op == "name":
                names[a["thread"]] = a["name"]
                owners[a["thread"]] = a["user"]
            elif op == "meta":
                shared_meta.setdefault(a["thread"], {})[a["key"]] = a["value"]
                shared_names.setdefault(a["thread"], set()).add(a["name"])
            elif op == "deleted":
                doomed.add(a["thread"])

    threads = {}
    for thread_id in {t for t, _ in steps} | set(names) | set(shared_meta):
        got = store.get_thread(thread_id)
        assert got is not None, f"thread {thread_id} is gone"
        threads[thread_id] = got
    for (thread_id, step_id), output in steps.items():
        by_id = {s["id"]: s for s in threads[thread_id]["steps"]}
        assert step_id in by_id, f"step {step_id} of {thread_id} was lost"
        assert by_id[step_id]["output"] == output, f"step {step_id}: text lost"
    for (thread_id, step_id), (fid, value) in feedback.items():
        fb = {s["id"]: s["feedback"] for s in threads[thread_id]["steps"]}[step_id]
        assert fb is not None and (fb["id"], fb["value"]) == (fid, value)
    for thread_id, name in names.items():
        assert threads[thread_id]["name"] == name
        assert threads[thread_id]["userId"] == owners[thread_id]
    for thread_id, meta in shared_meta.items():
        stored = threads[thread_id]["metadata"]
        missing = {k for k in meta if stored.get(k) != meta[k]}
        assert not missing, f"metadata merges of {thread_id} were lost: {sorted(missing)}"
        assert threads[thread_id]["name"] in shared_names[thread_id]
    for thread_id in doomed:
        assert store.get_thread(thread_id) is None, f"deleted thread {thread_id} came back"
        assert not (root / "threads" / thread_id).exists()

    # The index agrees with the directories, as a fresh process reads both.
    assert not index_drift(root), index_drift(root)

    # Every user sees exactly their threads, once each, from a fresh process.
    listing = subprocess.run(
        [sys.executable, "-c", FRESH_LISTING, str(root), *sorted(users)],
        cwd=tmp_path,
        env=subprocess_env(same_mode=True),
        capture_output=True,
        text=True,
        check=True,
    )
    listed = json.loads(listing.stdout)
    for identifier, user_id in users.items():
        expected = {(t, n) for t, n in names.items() if owners[t] == user_id}
        got = [tuple(pair) for pair in listed[identifier]]
        assert len(got) == len(set(got)), f"{identifier}: a thread listed twice"
        assert set(got) == expected, f"{identifier}: listed {got}, expected {expected}"

    leftovers = [str(p) for p in root.rglob("*.tmp")]
    assert not leftovers, f"temporary files left: {leftovers}"
    done = cli(root, "verify", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_writers_and_maintenance_in_parallel_lose_nothing(tmp_path: Path) -> None:
    writers, turns = scaled(4, 6), scaled(30, 250)
    run = run_processes(tmp_path, writers, turns, min_rounds=scaled(2, 5))
    try:
        check(tmp_path, run)
        failures = run["maintenance"]["failures"]
        assert not failures, failures
    except BaseException:
        print(f"\nFAILED with FILELAYER_SEED={run['seed']}")
        raise
    calls = sum(len(a) for a in run["acks"].values())
    print(
        f"\n{writers} processes x {calls // writers} acknowledged calls (seed {run['seed']}), "
        f"maintenance rounds {run['maintenance']['rounds']}"
    )


def test_a_write_during_reindex_stays_in_the_index(tmp_path: Path) -> None:
    root = tmp_path / "chats"
    app = ArchiveStore(root)
    for n in range(3):
        app.write_step(
            {"id": f"s{n}", "threadId": f"t{n}", "type": "user_message", "output": f"hello {n}"}
        )
    maintenance = ArchiveStore(root)  # `filelayer reindex`, another process
    wrote = []

    def progress(done: int, total: int) -> None:
        if done == 1:
            # The app answers a message in thread t0 after reindex has read t0.
            app.write_step(
                {"id": "late", "threadId": "t0", "type": "assistant_message", "output": "zebra"}
            )
            wrote.append(True)

    maintenance.reindex(progress=progress)
    assert wrote
    fresh = ArchiveStore(root)
    threads, _ = fresh.list_threads(user_id=None, search="zebra")
    assert [t["id"] for t in threads] == ["t0"]


def test_compact_while_a_thread_is_being_created(tmp_path: Path) -> None:
    root = tmp_path / "chats"
    store = ArchiveStore(root)
    store.write_step({"id": "s1", "threadId": "t1", "type": "user_message", "output": "hi"})
    # update_thread of a new thread, in another process, between its mkdir and the
    # rename of its manifest into place:
    (root / "threads" / "t2").mkdir()
    done = cli(root, "compact", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
