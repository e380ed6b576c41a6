"""Maintenance killed at a chosen point while an app process writes the same root.

The maintenance job runs in a child process that stops at a known point (a file
handshake), lets the test's own store write, and is then ended by SIGKILL at a chosen
call (the call is patched to kill its process). Another store opening the root
afterwards must lose nothing acknowledged, and its index must heal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from filelayer import ArchiveStore
from filelayer.maintenance.verify import verify
from tests.support.processes import subprocess_env

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL and flock are POSIX")

REINDEX_KILLED_BEFORE_CATCH_UP = r"""
import os, signal, sys, time
from pathlib import Path
from filelayer import ArchiveStore
import filelayer.store.reindex as reindex
root, ready, go = sys.argv[1:4]
store = ArchiveStore(root)

def killed(*args, **kwargs):  # the catch-up after the switch never runs
    os.kill(os.getpid(), signal.SIGKILL)

reindex.reconcile_changed = killed

def progress(n, total):
    if n == total:  # every thread read into the new database, not yet switched in
        Path(ready).touch()
        while not os.path.exists(go):
            time.sleep(0.01)

store.reindex(progress)
"""


def wait_for(path: Path, proc: subprocess.Popen[bytes]) -> None:
    while not path.exists():
        assert proc.poll() is None, "the maintenance process ended before its handshake"
        time.sleep(0.01)


def test_a_thread_made_during_a_rebuild_killed_before_its_catch_up_is_listed(
    tmp_path: Path,
) -> None:
    """A rebuild killed between its switch and its catch-up: a thread the app made while
    it read the threads (its rows went to the old database) must still be listed once
    the next opening reconciled the dead session. The app's pending compare-and-set of
    the thread's watermark landed in the new database, which has no row for it, so the
    reconcile took the thread for indexed and never read it."""
    root = tmp_path / "chats"
    app = ArchiveStore(root)
    alice = app.upsert_user("alice@example.com")
    app.update_thread("before", name="made before", user_id=alice["id"])
    ready, go = tmp_path / "ready", tmp_path / "go"
    job = subprocess.Popen(
        [sys.executable, "-c", REINDEX_KILLED_BEFORE_CATCH_UP, str(root), str(ready), str(go)],
        env=subprocess_env(same_mode=True),
    )
    try:
        wait_for(ready, job)
        assert app.update_thread("during", name="made during the rebuild", user_id=alice["id"])
        go.touch()
        assert job.wait(timeout=120) == -signal.SIGKILL
    finally:
        if job.poll() is None:
            job.kill()
    app.close()  # its last watermark goes with its last transaction

    fresh = ArchiveStore(root)  # finds the rebuild's dead session and reconciles
    listed = [t["id"] for t in fresh.list_threads(user_id=alice["id"], first=10)[0]]
    assert sorted(listed) == ["before", "during"]
    assert [p.what for p in verify(fresh).problems] == []
    fresh.close()


SECRET = "my first pet was called Zanzibar-4471"

ERASURE_KILLED = r"""
import os, signal, sys, types
from filelayer import ArchiveStore
from filelayer.maintenance.retention import erase_user
import filelayer.store.threads as threads
root, where = sys.argv[1:3]

def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if where == "after the tombstone":  # the directory is not renamed aside yet
    threads.deleting_path = killed
else:  # renamed aside, not removed yet
    threads.shutil = types.SimpleNamespace(rmtree=killed)
erase_user(ArchiveStore(root), "alice@example.com")
"""


def files_holding(root: Path, needles: list[bytes]) -> list[str]:
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            found += [str(path.relative_to(root)) for n in needles if n in data]
    return found


@pytest.mark.parametrize("where", ["after the tombstone", "after the rename"])
def test_an_erasure_killed_mid_deletion_then_run_again_leaves_nothing_of_the_user(
    tmp_path: Path, where: str
) -> None:
    """An erasure is run again after it was cut short (the remedy the docs give). The
    deletion the kill interrupted left the thread's whole directory under the root
    (tombstoned, or renamed aside); the second run found no thread of the user's, as
    readers skip deleted threads, and reported a complete erasure with the user's
    conversation still on the disk."""
    root = tmp_path / "chats"
    store = ArchiveStore(root)
    alice = store.upsert_user("alice@example.com")
    bob = store.upsert_user("bob@example.com")
    store.update_thread("mine", name="alice's", user_id=alice["id"])
    store.write_step({"id": "m1", "threadId": "mine", "type": "user_message", "output": SECRET})
    store.update_thread("his", name="bob's", user_id=bob["id"])
    store.write_step({"id": "b1", "threadId": "his", "type": "user_message", "output": "hi"})
    store.close()
    job = subprocess.run(
        [sys.executable, "-c", ERASURE_KILLED, str(root), where],
        env=subprocess_env(same_mode=True),
        timeout=120,
    )
    assert job.returncode == -signal.SIGKILL

    from filelayer.maintenance.retention import erase_user

    again = ArchiveStore(root)
    erase_user(again, "alice@example.com")
    assert again.get_thread("mine") is None
    assert again.get_thread("his") is not None
    again.close()
    assert files_holding(root, [SECRET.encode(), b"alice@example.com"]) == []
