"""Every write of the store takes the locks it needs when it begins, before it changes
anything: in the adapter's no-wait mode, a lock held by another process stops a call
there (LockBusy) with the archive untouched, and the call can be run again elsewhere."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from filelayer import ArchiveStore
from filelayer._io import locks as _locks

pytestmark = pytest.mark.skipif(_locks.fcntl is None, reason="flock locks (POSIX)")

HOLDER = (
    "import fcntl, sys\n"
    "f = open(sys.argv[1], 'a')\n"
    "fcntl.flock(f, fcntl.LOCK_EX)\n"
    "print('held', flush=True)\n"
    "sys.stdin.readline()\n"
)


class Holder:
    """Another process holding one lock file until released."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "held"

    def release(self) -> None:
        self.proc.kill()
        self.proc.wait()


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file's bytes, but the lock files and the index database's shared-memory
    file (which a read changes)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] != "locks" and not p.name.endswith("-shm")
    }


def populate(store: ArchiveStore) -> dict[str, Any]:
    user = store.upsert_user("alice")
    store.update_thread("t1", name="one", user_id=user["id"])
    store.write_step({"id": "q", "threadId": "t1", "type": "user_message", "output": "hi"})
    store.write_step({"id": "run", "threadId": "t1", "type": "run", "parentId": "q"})
    store.write_step({"id": "a", "threadId": "t1", "type": "assistant_message", "output": "yo"})
    store.upsert_feedback(for_id="a", value=1, thread_id="t1", feedback_id="f1")
    store.put_element("t1", {"id": "e1", "forId": "a", "name": "n.txt", "type": "text"}, b"x")
    return user


CALLS: dict[str, Callable[[ArchiveStore], Any]] = {
    "tool step": lambda s: s.write_step({"id": "tool", "threadId": "t1", "type": "tool"}),
    "message": lambda s: s.write_step(
        {"id": "m2", "threadId": "t1", "type": "assistant_message", "output": "more"}
    ),
    "update without type": lambda s: s.write_step({"id": "a", "threadId": "t1", "output": "x"}),
    "step of a new thread": lambda s: s.write_step({"id": "n", "threadId": "t2", "type": "run"}),
    "rename": lambda s: s.update_thread("t1", name="renamed"),
    "new thread": lambda s: s.update_thread("t3", name="three"),
    "delete step": lambda s: s.delete_step("q", "t1"),
    "feedback": lambda s: s.upsert_feedback(for_id="q", value=0, thread_id="t1"),
    "delete feedback": lambda s: s.delete_feedback("f1"),
    "element": lambda s: s.record_element("t1", {"id": "e2", "forId": "a", "type": "text"}),
    "prepare element": lambda s: s.prepare_element("t4", {"id": "e3", "type": "text"}),
    "delete element": lambda s: s.delete_element("e1", "t1"),
    "delete thread": lambda s: s.delete_thread("t1"),
    "user": lambda s: s.upsert_user("bob"),
}

LOCKS: dict[str, Callable[[ArchiveStore], Path]] = {
    "thread": lambda s: s.layout.thread_lock("t1"),
    "index switch": lambda s: s.layout.index_lock,
    "tombstones": lambda s: s.layout.deleted_lock,
    "users": lambda s: s.layout.users_lock,
}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ArchiveStore]:
    store = ArchiveStore(tmp_path / "chats")
    populate(store)
    yield store
    store.close()


@pytest.mark.parametrize("lock", LOCKS)
@pytest.mark.parametrize("call", CALLS)
def test_a_busy_lock_stops_a_write_before_it_changes_anything(
    store: ArchiveStore, call: str, lock: str
) -> None:
    holder = Holder(LOCKS[lock](store))
    before = snapshot(store.root)
    try:
        with _locks.no_wait():
            CALLS[call](store)
    except _locks.LockBusy:
        assert snapshot(store.root) == before
        busy = True
    else:
        busy = False
    finally:
        holder.release()
    # The call either did not need the lock, or it goes through now that it is free.
    if busy:
        with _locks.no_wait():
            CALLS[call](store)
    assert not _locks._state.held
