"""The index across processes: each process keeps its own view and reads only what the
others appended, or the whole file again when another process compacted it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from conftest import subprocess_env

from filelayer import ArchiveStore
from filelayer.index import ThreadIndex


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


def count_folds(index: ThreadIndex) -> list[int]:
    """Count the lines each refresh folds in (wrapping the index's own method)."""
    counts: list[int] = []
    fold = index._apply_lines

    def counting(data: bytes, off: int) -> None:
        counts.append(data.count(b"\n") + 1)
        fold(data, off)

    index._apply_lines = counting  # type: ignore[method-assign]
    return counts


def test_a_refresh_reads_nothing_when_nothing_changed_and_only_the_tail_otherwise(
    tmp_path: Path,
) -> None:
    root = tmp_path / "chats"
    store = ArchiveStore(root)
    user = store.upsert_user("alice@example.com")["id"]
    for n in range(30):
        store.update_thread(f"t{n}", name=f"chat {n}", user_id=user)
    store.index.refresh()
    counts = count_folds(store.index)
    for _ in range(5):
        assert len(listing(store, user)) == 30
    assert counts == []  # five calls, not one byte of the index read again
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
    assert sum(counts) == 9  # three threads: created, a message, named
    assert listing(store, user, search="elsewhere") == [(f"new{n}", f"new {n}") for n in (2, 1, 0)]


def test_a_compaction_by_another_process_is_picked_up(tmp_path: Path) -> None:
    root = tmp_path / "chats"
    store = ArchiveStore(root)
    user = store.upsert_user("bob@example.com")["id"]
    for rename in range(3):
        for n in range(40):
            store.update_thread(f"t{n}", name=f"name {rename} {n}", user_id=user)
    store.write_step({"id": "m", "threadId": "t7", "type": "user_message", "output": "tax"})
    store.upsert_feedback(for_id="m", value=0, feedback_id="fb", thread_id="t7")
    before = listing(store, user)
    index_file = root / "index" / "threads.jsonl"
    inode, size = index_file.stat().st_ino, index_file.stat().st_size
    run_elsewhere(root, "store.index.compact()\n")
    assert index_file.stat().st_ino != inode and index_file.stat().st_size < size
    assert listing(store, user) == before
    assert listing(store, user, search="tax") == [("t7", "name 2 7")]
    assert listing(store, user, feedback=0) == [("t7", "name 2 7")]
    assert store.index.feedback_owner("fb") == "t7"
    # This process goes on writing to the compacted file, and a new one agrees.
    store.update_thread("t3", name="after")
    assert store.delete_feedback("fb")
    assert listing(store, user, feedback=0) == []
    assert listing(ArchiveStore(root), user) == listing(store, user)
    assert dict(listing(store, user))["t3"] == "after"


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
