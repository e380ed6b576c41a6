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
