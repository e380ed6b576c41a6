"""The index across processes: each process asks the same database, sees what the others
wrote at once without reading anything again, follows a rebuild made by another process,
and a rebuild made while another process writes loses none of its writes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import filelayer.index.db
from filelayer import ArchiveStore
from filelayer.maintenance.verify import verify
from tests.support.processes import subprocess_env


def run_elsewhere(root: Path, body: str) -> None:
    """Run ``body`` in another Python process, with ``store`` open on ``root``."""
    script = "from filelayer import ArchiveStore\n"
    script += f"store = ArchiveStore({str(root)!r})\n" + textwrap.dedent(body)
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def listing(store: ArchiveStore, user: str, **filters: Any) -> list[tuple[str, str | None]]:
    threads, _ = store.list_threads(user_id=user, first=1000, **filters)
    return [(t["id"], t["name"]) for t in threads]


def count_opens(monkeypatch: pytest.MonkeyPatch, root: Path) -> list[Path]:
    """Every index database of ``root`` this process opens from now on (the patch
    catches every thread of the process: a database of another test's archive, opened
    by a thread it left behind, is not this test's to count)."""
    opened: list[Path] = []
    real = filelayer.index.db._Db.open

    def counting(path: Path, timeout: float) -> filelayer.index.db._Db:
        if Path(path).is_relative_to(root):
            opened.append(path)
        return real(path, timeout)

    monkeypatch.setattr(filelayer.index.db._Db, "open", staticmethod(counting))
    return opened


def test_writes_of_another_process_are_seen_at_once_without_reopening_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "chats"
    store = ArchiveStore(root)
    user = store.upsert_user("alice@example.com")["id"]
    for n in range(30):
        store.update_thread(f"t{n}", name=f"chat {n}", user_id=user)
    opened = count_opens(monkeypatch, root)
    for _ in range(5):
        assert len(listing(store, user)) == 30
    run_elsewhere(
        root,
        f"""
        for n in range(3):
            store.write_step({{"id": f"x{{n}}", "threadId": f"new{{n}}",
                              "type": "user_message", "output": "from elsewhere"}})
            store.update_thread(f"new{{n}}", name=f"new {{n}}", user_id={user!r})
        """,
    )
    names = dict(listing(store, user))
    assert [names[f"new{n}"] for n in range(3)] == ["new 0", "new 1", "new 2"]
    assert listing(store, user, search="elsewhere") == [(f"new{n}", f"new {n}") for n in (2, 1, 0)]
    assert opened == []  # the same database all along: nothing was read again


def test_a_rebuild_by_another_process_is_picked_up(tmp_path: Path) -> None:
    root = tmp_path / "chats"
    store = ArchiveStore(root)
    user = store.upsert_user("bob@example.com")["id"]
    for rename in range(3):
        for n in range(40):
            store.update_thread(f"t{n}", name=f"name {rename} {n}", user_id=user)
    store.write_step({"id": "m", "threadId": "t7", "type": "user_message", "output": "tax"})
    store.upsert_feedback(for_id="m", value=0, feedback_id="fb", thread_id="t7")
    before = listing(store, user)
    pointer = root / "index" / "current"
    old = root / "index" / pointer.read_text().strip()
    run_elsewhere(root, "store.reindex()\n")
    new = root / "index" / pointer.read_text().strip()
    assert new != old and new.exists() and not old.exists()  # switched, the old one gone
    assert listing(store, user) == before
    assert listing(store, user, search="tax") == [("t7", "name 2 7")]
    assert listing(store, user, feedback=0) == [("t7", "name 2 7")]
    assert store.index.feedback_owner("fb") == "t7"
    # This process goes on writing, into the new database, and a new one agrees.
    store.update_thread("t3", name="after")
    assert store.delete_feedback("fb")
    assert listing(store, user, feedback=0) == []
    assert listing(ArchiveStore(root), user) == listing(store, user)
    assert dict(listing(store, user))["t3"] == "after"


def test_a_rebuild_while_another_process_writes_loses_none_of_its_writes(
    tmp_path: Path,
) -> None:
    """The rebuild reads the threads while the other process writes to the old index;
    once the new index is in place, every thread whose files moved meanwhile is read
    again: the index ends as the files say, without a word from verify."""
    root = tmp_path / "chats"
    store = ArchiveStore(root)
    user = store.upsert_user("dana@example.com")["id"]
    for n in range(200):
        store.write_step({"id": f"s{n}", "threadId": f"t{n}", "type": "user_message",
                          "output": f"first {n}"})  # fmt: skip
        store.update_thread(f"t{n}", name=f"chat {n}", user_id=user)
    stop = tmp_path / "stop"
    body = f"""
        import os
        print("ready", flush=True)
        n = 0
        while not os.path.exists({str(stop)!r}):
            tid = f"t{{n * 7 % 230}}"
            store.write_step({{"id": f"w{{n}}", "threadId": tid, "type": "assistant_message",
                              "output": f"written meanwhile {{n}}"}})
            store.update_thread(tid, name=f"renamed {{n}}", user_id={user!r})
            if n % 50 == 0:
                store.delete_thread(f"t{{n // 50 + 100}}")
            n += 1
        store.write_step({{"id": "last", "threadId": "t1", "type": "user_message",
                          "output": "the very last word"}})
        """
    script = "from filelayer import ArchiveStore\n"
    script += f"store = ArchiveStore({str(root)!r})\n" + textwrap.dedent(body)
    other = subprocess.Popen(
        [sys.executable, "-c", script],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout is not None and other.stdout.readline() == "ready\n"
        # Two rebuilds, each begun and ended while the other process writes: it writes
        # until told to stop (a writer that stopped on its own clock could be done
        # before a second rebuild ended on a loaded machine).
        for _ in range(2):
            store.reindex()
            assert other.poll() is None, other.stderr.read() if other.stderr else ""
    finally:
        stop.touch()
    assert other.wait(timeout=120) == 0, other.stderr.read() if other.stderr else ""
    report = verify(ArchiveStore(root))
    assert report.problems == [], report.problems
    assert [tid for tid, _ in listing(store, user, search="the very last")] == ["t1"]


def test_two_processes_writing_at_once_end_with_one_index(tmp_path: Path) -> None:
    root = tmp_path / "chats"
    store = ArchiveStore(root)
    user = store.upsert_user("carol@example.com")["id"]
    body = f"""
        import sys
        tag = sys.argv[1] if len(sys.argv) > 1 else "b"
        for n in range(60):
            store.write_step({{"id": f"{{tag}}{{n}}", "threadId": f"t{{n % 12}}",
                              "type": "assistant_message", "output": f"{{tag}} says {{n}}"}})
            store.update_thread(f"t{{n % 12}}", user_id={user!r}, name=f"{{tag}} {{n}}")
        """
    script = "from filelayer import ArchiveStore\n"
    script += f"store = ArchiveStore({str(root)!r})\n" + textwrap.dedent(body)
    other = subprocess.Popen(
        [sys.executable, "-c", script, "b"], env=subprocess_env(), stderr=subprocess.PIPE
    )
    for n in range(60):
        store.write_step(
            {"id": f"a{n}", "threadId": f"t{n % 12}", "type": "user_message", "output": f"a {n}"}
        )
        listing(store, user)  # reading while the other process appends
    assert other.wait(timeout=120) == 0, other.stderr.read() if other.stderr else ""
    mine = listing(store, user)
    fresh = ArchiveStore(root)
    assert listing(fresh, user) == mine and len(mine) == 12
    for tid in (f"t{n}" for n in range(12)):
        want, have = fresh.summarise(tid), store.index.threads[tid]
        assert want is not None
        assert (have.name, have.texts, have.activity) == (want.name, want.texts, want.activity)
    assert len(listing(store, user, search="b says")) == 12
    assert [tid for tid, _ in listing(store, user, search="a 59")] == ["t11"]


def test_writes_made_while_a_rebuild_reads_the_threads_are_caught_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer (a store of its own, like another process) writes into the old
    index while the rebuild reads the thread directories: to a thread already read, to
    the one being read, a new thread, a deletion. The rebuilt index has them all."""
    root = tmp_path / "chats"
    store, writer = ArchiveStore(root), ArchiveStore(root)
    user = store.upsert_user("erin@example.com")["id"]
    for n in range(30):
        store.write_step({"id": f"s{n}", "threadId": f"t{n:02d}", "type": "user_message",
                          "output": f"first {n}"})  # fmt: skip
        store.update_thread(f"t{n:02d}", name=f"chat {n}", user_id=user)
    real = store.summarise
    once = [True]

    def summarise(thread_id: str) -> Any:
        summary = real(thread_id)
        if thread_id == "t10" and once and once.pop():
            writer.write_step({"id": "late", "threadId": "t10", "type": "assistant_message",
                               "output": "said meanwhile"})  # fmt: skip
            writer.update_thread("t03", name="renamed meanwhile")
            writer.write_step({"id": "n1", "threadId": "t99", "type": "user_message",
                               "output": "a new thread"})  # fmt: skip
            writer.update_thread("t99", name="new", user_id=user)
            writer.delete_thread("t05")
            writer.delete_thread("t20")
            writer.upsert_feedback(for_id="s25", value=1, thread_id="t25")
        return summary

    monkeypatch.setattr(store, "summarise", summarise)
    assert store.reindex() == 29
    monkeypatch.undo()
    names = dict(listing(store, user))
    assert names["t03"] == "renamed meanwhile" and names["t99"] == "new"
    assert "t05" not in names and "t20" not in names
    assert [tid for tid, _ in listing(store, user, search="meanwhile")] == ["t10", "t03"]
    assert [tid for tid, _ in listing(store, user, feedback=1)] == ["t25"]
    assert listing(writer, user) == listing(store, user)  # the writer follows the switch
    assert verify(ArchiveStore(root)).problems == []
