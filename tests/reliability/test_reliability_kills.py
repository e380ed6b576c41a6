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
from typing import Any

import pytest

from filelayer import ArchiveStore
from filelayer.maintenance.verify import verify
from tests.support.processes import subprocess_env
from tests.support.reliability import have_chainlit

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL and flock are POSIX")
needs_chainlit = pytest.mark.skipif(not have_chainlit(), reason="FileDataLayer needs Chainlit")

REINDEX_KILLED_BEFORE_CATCH_UP = r"""
import os, signal, sys, time
from pathlib import Path
from typing import Any
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
import os, signal, sys
from filelayer import ArchiveStore
from filelayer._io import fs
from filelayer.maintenance.retention import erase_user
import filelayer.store.threads as threads
root, where = sys.argv[1:3]

def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if where == "after the tombstone":  # the directory is not renamed aside yet
    threads.deleting_path = killed
else:  # renamed aside, not removed yet
    fs.remove_tree = killed
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


FEEDBACK_KILLED_BEFORE_ITS_ROW = r"""
import os, signal, sys
from filelayer import ArchiveStore
store = ArchiveStore(sys.argv[1])

def killed(*args, **kwargs):  # the journal has the rating, the index never hears of it
    os.kill(os.getpid(), signal.SIGKILL)

store.index.append = killed
store.upsert_feedback(for_id="s1", value=0, feedback_id="f1", thread_id="t")
"""


def test_a_rating_the_index_lacks_is_withdrawn_by_a_running_process(tmp_path: Path) -> None:
    """A worker killed between a rating's journal line and its index row leaves a
    rating every reader shows. Another worker, running all along (it reconciles only
    when it opens), is asked to withdraw it: it answered True, found no owner in the
    index and wrote nothing, so the rating stayed, for it and for every later process."""
    root = tmp_path / "chats"
    app = ArchiveStore(root)
    app.update_thread("t", name="chat")
    app.write_step({"id": "s1", "threadId": "t", "type": "assistant_message", "output": "hi"})
    job = subprocess.run(
        [sys.executable, "-c", FEEDBACK_KILLED_BEFORE_ITS_ROW, str(root)],
        env=subprocess_env(same_mode=True),
        timeout=120,
    )
    assert job.returncode == -signal.SIGKILL
    thread = app.get_thread("t")
    assert thread is not None and thread["steps"][0]["feedback"]["id"] == "f1"

    assert app.delete_feedback("f1") is True
    thread = app.get_thread("t")
    assert thread is not None and thread["steps"][0]["feedback"] is None
    app.close()
    fresh = ArchiveStore(root)
    thread = fresh.get_thread("t")
    assert thread is not None and thread["steps"][0]["feedback"] is None
    assert fresh.list_threads(user_id=None, feedback=0)[0] == []
    fresh.close()


def test_withdrawing_a_rating_nobody_gave_reads_no_journal_while_the_index_is_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journals are looked at only while the index may lag (a dead writer, a
    rebuild or a reconcile announced): an id nobody gave costs one query, as before."""
    app = ArchiveStore(tmp_path / "chats")
    app.update_thread("t", name="chat")

    def no_scan(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("every journal was read for an id nobody gave")

    monkeypatch.setattr(type(app.locator), "scan_journals", no_scan)
    assert app.delete_feedback("never-given") is True
    app.close()


@needs_chainlit
async def test_the_data_layer_withdraws_a_rating_the_index_lacks_off_its_loop(
    layer: Any, root: Path
) -> None:
    """The same through Chainlit's data layer: the journals are scanned in its worker
    thread, in the order of its writes, never on the event loop."""
    pytest.importorskip("chainlit")
    await layer.update_thread("t", name="chat")
    await layer.create_step({"id": "s1", "threadId": "t", "type": "assistant_message"})
    job = subprocess.run(
        [sys.executable, "-c", FEEDBACK_KILLED_BEFORE_ITS_ROW, str(root)],
        env=subprocess_env(same_mode=True),
        timeout=120,
    )
    assert job.returncode == -signal.SIGKILL
    offloaded = layer.calls.offloaded
    assert await layer.delete_feedback("f1") is True
    assert layer.calls.offloaded == offloaded + 1
    thread = await layer.get_thread("t")
    assert thread is not None and thread["steps"][0]["feedback"] is None


FORKED_WORKER_KILLED = r"""
import os, signal, sys
from filelayer import ArchiveStore
store = ArchiveStore(sys.argv[1])
store.update_thread("parent", name="written before the fork")  # its writer session begins
pid = os.fork()
if pid == 0:  # a worker of a pool forked from the app, killed before its index rows
    store.index.append = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
    store.update_thread("child", name="written by the forked worker")
    os._exit(0)
_, status = os.waitpid(pid, 0)
assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
store.close()  # the parent ends cleanly
"""


def test_a_forked_worker_killed_mid_write_is_healed(tmp_path: Path) -> None:
    """A worker forked from a process that had written wrote under its parent's writer
    session (the same file and flock): killed between a thread's files and its index
    rows, it left no dead session behind, the parent then ended the session cleanly,
    and no opening ever reconciled the thread, missing from the sidebar for good."""
    root = tmp_path / "chats"
    ArchiveStore(root).close()
    job = subprocess.run(
        [sys.executable, "-c", FORKED_WORKER_KILLED, str(root)],
        env=subprocess_env(same_mode=True),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert job.returncode == 0, job.stderr
    fresh = ArchiveStore(root)
    listed = sorted(t["id"] for t in fresh.list_threads(user_id=None, first=10)[0])
    assert listed == ["child", "parent"]
    fresh.close()


def test_a_write_whose_index_rows_failed_is_healed_after_a_clean_close(tmp_path: Path) -> None:
    """A write whose journal line landed and whose index transaction failed (SQLite out
    of space, or busy past the lock timeout) raises, but the message is in the thread
    files, and get_thread shows it. The process went on and closed cleanly, which
    removed its writer session: no opening reconciled the thread, and the sidebar's
    search never found the message."""
    import errno

    from filelayer.errors import StorageWriteError

    root = tmp_path / "chats"
    app = ArchiveStore(root)
    app.update_thread("t", name="chat")
    real = app.index.append

    def full(records: Any) -> None:
        raise StorageWriteError(root / "index", OSError(errno.ENOSPC, "No space left on device"))

    app.index.append = full  # type: ignore[method-assign]
    with pytest.raises(StorageWriteError):
        app.write_step({"id": "s1", "threadId": "t", "type": "user_message", "output": "crumpets"})
    app.index.append = real  # type: ignore[method-assign]
    thread = app.get_thread("t")
    assert thread is not None and [s["output"] for s in thread["steps"]] == ["crumpets"]
    app.update_thread("other", name="the app goes on")
    app.close()

    fresh = ArchiveStore(root)
    found = [t["id"] for t in fresh.list_threads(user_id=None, search="crumpets")[0]]
    assert found == ["t"]
    assert [p.what for p in verify(fresh).problems] == []
    fresh.close()


NO_SECURE_DELETE = r"""
import sqlite3
_connect = sqlite3.connect

def connect(*args, **kwargs):  # SQLite's own default (Debian's build turns it on)
    conn = _connect(*args, **kwargs)
    conn.execute("PRAGMA secure_delete=0")
    return conn

sqlite3.connect = connect
"""

REINDEX_PAUSED_BEFORE_ITS_SWITCH = (
    NO_SECURE_DELETE
    + r"""
import os, sys, time
from pathlib import Path
from filelayer import ArchiveStore
root, ready, go = sys.argv[1:4]
store = ArchiveStore(root)

def progress(n, total):
    if n == total and not os.path.exists(ready):  # read every thread, not switched in yet
        Path(ready).touch()
        while not os.path.exists(go):
            time.sleep(0.01)

store.reindex(progress)
store.close()
"""
)


def test_a_rebuild_begun_before_an_erasure_leaves_nothing_of_the_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``filelayer reindex`` (or another erasure's, or a repair's rebuild) read the
    threads before ``erase-user`` ran, and switched its database in after the erasure
    had rebuilt its own: the catch-up took the erased threads' rows out, but their texts
    stayed in the free pages of the index everyone uses, and the erasure had reported
    that no file under the root holds them."""
    import sqlite3

    from filelayer.maintenance.retention import erase_user

    connect = sqlite3.connect

    def without_secure_delete(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.execute("PRAGMA secure_delete=0")
        return conn

    monkeypatch.setattr(sqlite3, "connect", without_secure_delete)
    root = tmp_path / "chats"
    store = ArchiveStore(root)
    alice = store.upsert_user("alice@example.com")
    store.update_thread("mine", name="alice's", user_id=alice["id"])
    store.write_step({"id": "m1", "threadId": "mine", "type": "user_message", "output": SECRET})
    store.update_thread("other", name="nobody's")
    store.write_step({"id": "o1", "threadId": "other", "type": "user_message", "output": "hi"})
    store.close()
    ready, go = tmp_path / "ready", tmp_path / "go"
    job = subprocess.Popen(
        [sys.executable, "-c", REINDEX_PAUSED_BEFORE_ITS_SWITCH, str(root), str(ready), str(go)],
        env=subprocess_env(same_mode=True),
    )
    try:
        wait_for(ready, job)
        admin = ArchiveStore(root)
        erase_user(admin, "alice@example.com")
        admin.close()
        assert files_holding(root, [SECRET.encode(), b"alice@example.com"]) == []
        go.touch()
        assert job.wait(timeout=120) == 0
    finally:
        if job.poll() is None:
            job.kill()
    assert files_holding(root, [SECRET.encode(), b"alice@example.com"]) == []


@needs_chainlit
async def test_the_journal_scan_for_an_unknown_rating_leaves_the_other_calls_free(
    layer: Any, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the index may lag (here a dead writer's session), withdrawing a rating the
    index does not know reads every journal. The id is the client's: a logged-in user
    can send a new one with each request, so that reading must not hold the store's
    lock, where every other call of the app (every chat message) waited behind it."""
    pytest.importorskip("chainlit")
    import threading

    await layer.update_thread("t", name="chat")
    await layer.create_step({"id": "s1", "threadId": "t", "type": "assistant_message"})
    (root / "index" / "writer-0123456789abcdef.lock").write_bytes(b"")  # a dead writer's
    store = layer.store
    scan = type(store.locator).scan_journals
    held: list[bool] = []

    def watched(self: Any, *args: Any, **kwargs: Any) -> Any:
        free: list[bool] = []

        def probe() -> None:
            got = store.mutex.acquire(blocking=False)
            if got:
                store.mutex.release()
            free.append(got)

        other = threading.Thread(target=probe)
        other.start()
        other.join()
        held.append(not free[0])
        return scan(self, *args, **kwargs)

    monkeypatch.setattr(type(store.locator), "scan_journals", watched)
    assert await layer.delete_feedback("f-nobody-gave") is True
    assert held == [False]


def test_without_flock_a_writer_does_not_take_its_own_session_for_a_dead_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where there is no flock (Windows) every session file counts as dead, the
    process's own included: once it had written, every rating id nobody gave cost a
    reading of every journal, a request any logged-in user can repeat."""
    import filelayer.store.writers as writers

    monkeypatch.setattr(writers, "fcntl", None)
    app = ArchiveStore(tmp_path / "chats")
    app.update_thread("t", name="chat")  # its writer session begins

    def no_scan(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("every journal was read for an id nobody gave")

    monkeypatch.setattr(type(app.locator), "scan_journals", no_scan)
    assert app.delete_feedback("never-given") is True
    app.close()


APP_DELETION_KILLED = r"""
import os, signal, sys
from filelayer import ArchiveStore
import filelayer.store.threads as threads

def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

threads.deleting_path = killed  # the tombstone is written, the directory stays
ArchiveStore(sys.argv[1]).delete_thread("mine")
"""


def test_an_erasure_run_again_after_its_user_file_went_finishes_the_deletions(
    tmp_path: Path,
) -> None:
    """The docs' remedy for an erasure cut short is to run it again, which finishes
    every thread deletion a crash interrupted. A run that finds the user's record gone
    already (the first run was killed in its final rebuild, or was made by a release
    that left such directories) only rebuilt the index: the user's conversation in a
    tombstoned directory stayed on the disk."""
    from filelayer.maintenance import retention

    root = tmp_path / "chats"
    store = ArchiveStore(root)
    alice = store.upsert_user("alice@example.com")
    store.update_thread("mine", name="alice's", user_id=alice["id"])
    store.write_step({"id": "m1", "threadId": "mine", "type": "user_message", "output": SECRET})
    store.close()
    job = subprocess.run(
        [sys.executable, "-c", APP_DELETION_KILLED, str(root)],
        env=subprocess_env(same_mode=True),
        timeout=120,
    )
    assert job.returncode == -signal.SIGKILL
    # The first erasure got as far as the user's record, then was killed.
    first = ArchiveStore(root)
    retention._write_user_tombstone(first, "alice@example.com", alice)
    first.layout.user_file("alice@example.com").unlink()
    first.close()

    again = ArchiveStore(root)
    retention.erase_user(again, "alice@example.com")
    again.close()
    assert files_holding(root, [SECRET.encode()]) == []
