"""Power cuts after a name that the call which made it never made durable.

A file's name is on the disk once its directory was fsynced after it was made. The call
that makes a thread (its directory, its journal, ``elements/``), ``deleted.jsonl`` or
``sessions/`` has those directories fsynced before it returns; but it may be killed
before, or fail after making them, or (in a group commit) release the thread's lock
before its group fsyncs them. A later call, in this process or another, finds the files
there: its acknowledged writes must not go with names nobody made durable.

Each test runs scripts under strace (``powercut.trace_scripts``: one process each, one
after the other) and replays their system calls on the power-cut model; the last script
ends where the power goes, right after its acknowledgement (``os._exit``: nothing flushed
at exit). ``strict()`` is what that power cut keeps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support.powercut import FsModel, trace_scripts, tracer_problem

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the explorer records with strace (Linux)"
)


def traced(tmp_path: Path, *scripts: str) -> FsModel:
    problem = tracer_problem()
    if problem:
        pytest.fail(problem, pytrace=False)
    return trace_scripts(tmp_path, list(scripts))


HEAD = r"""
import os, sys
from filelayer._io import commit, fs
from filelayer._io.flusher import FLUSHER
from filelayer.store.archive import ArchiveStore
root = sys.argv[1]

def step(sid, tid, text):
    return {"id": sid, "threadId": tid, "type": "user_message", "output": text,
            "createdAt": "2026-01-01T00:00:00.000000Z"}
"""


def journal_after_cut(model: FsModel, thread: str = "t1") -> bytes:
    """The thread's journal as the power cut leaves it (``b""``: gone)."""
    assert model.volatile().get(f"threads/{thread}/steps.jsonl")  # the run wrote it
    return model.strict().get(f"threads/{thread}/steps.jsonl") or b""


DIES_BEFORE_THREAD_NAMES = (
    HEAD
    + r"""
store = ArchiveStore(root, durability="MODE")
store.upsert_user("alice")
real = fs.fsync_dirs
def dying(dirs):
    dirs = list(dirs)
    if store.layout.threads in dirs:
        os._exit(9)  # killed before the new thread's directories are fsynced
    real(dirs)
fs.fsync_dirs = dying
FLUSHER.add = lambda files, dirs: os._exit(9)  # the flush mode: killed within its second
store.write_step(step("s1", "t1", "first"))
"""
)

ACKNOWLEDGED_STEP = (
    HEAD
    + r"""
store = ArchiveStore(root, durability="MODE")
store.write_step(step("s2", "t1", "ACKED"))
FLUSHER.flush()  # the flush mode: the flush due a second later came
print("acknowledged", flush=True)
os._exit(0)
"""
)


@pytest.mark.parametrize("mode", ["fsync", "flush"])
def test_a_step_after_a_restart_keeps_the_thread_a_killed_call_made(
    tmp_path: Path, mode: str
) -> None:
    """The call that made the thread was killed before its directories were fsynced;
    after the restart every call is acknowledged (in the flush mode, flushed): the first
    one makes the thread's names durable."""
    model = traced(
        tmp_path,
        DIES_BEFORE_THREAD_NAMES.replace("MODE", mode),
        ACKNOWLEDGED_STEP.replace("MODE", mode),
    )
    assert b"ACKED" in journal_after_cut(model)
    assert "threads/t1/thread.json" in model.strict()


def test_a_retry_after_a_failed_call_keeps_the_thread_it_made(tmp_path: Path) -> None:
    """The call that made the thread failed after making it (the index's lock timed
    out): its names are made durable all the same, and its retry is kept."""
    script = (
        HEAD
        + r"""
from filelayer.errors import ArchiveLockTimeout
store = ArchiveStore(root, durability="fsync")
store.upsert_user("alice")
real = store.index.append
calls = []
def failing(records):
    calls.append(records)
    if len(calls) == 2:  # the step's rows (the first call: the new thread's)
        raise ArchiveLockTimeout(store.layout.index_lock, 30.0)
    return real(records)
store.index.append = failing
try:
    store.write_step(step("s1", "t1", "ACKED"))
except ArchiveLockTimeout:
    pass
else:
    raise SystemExit("the first call did not fail")
store.write_step(step("s1", "t1", "ACKED"))
print("acknowledged", flush=True)
os._exit(0)
"""
    )
    model = traced(tmp_path, script)
    assert b"ACKED" in journal_after_cut(model)


def test_another_workers_step_in_a_new_thread_before_its_group_commit(tmp_path: Path) -> None:
    """Worker A makes thread t1 in a group commit: its lock is released when the call
    returns, before the group fsyncs ``threads/`` and ``threads/t1``. Worker B appends to
    t1 meanwhile and is acknowledged; the power goes before A's group commit."""
    worker_b = (
        HEAD
        + r"""
store = ArchiveStore(root, durability="fsync")
store.write_step(step("s2", "t1", "B-ACKED"))
print("acknowledged", flush=True)
"""
    )
    worker_a = (
        HEAD
        + r"""
import subprocess
store = ArchiveStore(root, durability="fsync")
store.upsert_user("alice")
with commit.deferring(commit.SyncGroup()):  # what the adapter's worker lane does
    store.write_step(step("s1", "t1", "A"))
subprocess.run([sys.executable, "-c", WORKER_B, root], check=True)
os._exit(0)  # the power goes before A's group is committed
"""
    ).replace("WORKER_B", repr(worker_b))
    model = traced(tmp_path, worker_a)
    assert b"B-ACKED" in journal_after_cut(model)


def test_a_journal_another_worker_made_after_this_one_knew_the_thread(tmp_path: Path) -> None:
    """Worker B knows t1 (it named it, before it had a journal). Worker A writes t1's
    first step in a group commit, which has not fsynced the journal's name when B
    appends: B, which knew the thread but not this journal, makes its name durable.
    (Two stores in one process: each knows only what it made durable, as two workers.)"""
    script = (
        HEAD
        + r"""
a = ArchiveStore(root, durability="fsync")
b = ArchiveStore(root, durability="fsync")
b.update_thread("t1", name="chat")
with commit.deferring(commit.SyncGroup()):
    a.write_step(step("s1", "t1", "A"))
b.write_step(step("s2", "t1", "B-ACKED"))
print("acknowledged", flush=True)
os._exit(0)  # before A's group commit
"""
    )
    model = traced(tmp_path, script)
    assert b"B-ACKED" in journal_after_cut(model)


def test_a_later_group_does_not_lean_on_an_earlier_groups_fsyncs(tmp_path: Path) -> None:
    """One store, two group commits: the first makes t1, the second appends to it. The
    first group's commit fails (its calls fail with it): the second is acknowledged, so
    it must have made t1's names durable itself, not taken them for done."""
    script = (
        HEAD
        + r"""
store = ArchiveStore(root, durability="fsync")
store.upsert_user("alice")
first = commit.SyncGroup()
with commit.deferring(first):
    store.write_step(step("s1", "t1", "first"))
second = commit.SyncGroup()
with commit.deferring(second):
    store.write_step(step("s2", "t1", "ACKED"))
first.abandon()  # its fsyncs failed: its calls failed
second.commit()
print("acknowledged", flush=True)
os._exit(0)
"""
    )
    model = traced(tmp_path, script)
    assert b"ACKED" in journal_after_cut(model)


def test_an_element_in_the_elements_directory_another_call_made(tmp_path: Path) -> None:
    """Worker B wrote to t1 before; worker A made t1's ``elements/`` in a group commit
    not yet fsynced. B stores an element there and is acknowledged: its bytes and its
    record survive."""
    script = (
        HEAD
        + r"""
a = ArchiveStore(root, durability="fsync")
b = ArchiveStore(root, durability="fsync")
b.write_step(step("s1", "t1", "first"))
with commit.deferring(commit.SyncGroup()):
    a.prepare_element("t1")
b.put_element("t1", {"id": "e2", "name": "b.txt", "forId": "s1"}, b"ACKED-BYTES")
print("acknowledged", flush=True)
os._exit(0)
"""
    )
    model = traced(tmp_path, script)
    assert model.volatile().get("threads/t1/elements/e2.txt") == b"ACKED-BYTES"
    assert model.strict().get("threads/t1/elements/e2.txt") == b"ACKED-BYTES"
    assert b'"e2"' in journal_after_cut(model)


def test_a_deletion_after_a_restart_keeps_the_tombstones_file(tmp_path: Path) -> None:
    """The first deletion made ``deleted.jsonl`` and was killed before the root was
    fsynced; the next process's deletion is acknowledged: the file's name is on the
    disk with its tombstone (deleted threads stay deleted)."""
    first = (
        HEAD
        + r"""
store = ArchiveStore(root, durability="fsync")
store.write_step(step("s1", "t1", "one"))
store.write_step(step("s2", "t2", "two"))
real = fs.fsync_dir
def dying(path):
    if str(path) == str(store.root):
        os._exit(9)  # killed before deleted.jsonl's name is on the disk
    real(path)
fs.fsync_dir = dying
store.delete_thread("t1")
"""
    )
    second = (
        HEAD
        + r"""
store = ArchiveStore(root, durability="fsync")
assert store.delete_thread("t2")
print("acknowledged", flush=True)
os._exit(0)
"""
    )
    model = traced(tmp_path, first, second)
    tombstones = model.strict().get("deleted.jsonl") or b""
    assert b'"t2"' in tombstones


@pytest.mark.parametrize("mode", ["fsync", "flush"])
def test_a_persisted_session_survives_a_power_cut(tmp_path: Path, mode: str) -> None:
    """Chainlit's session, kept in ``sessions/<thread>.json`` (what a resume gets back),
    is durable as the call's mode says, and so is ``sessions/``."""
    script = (
        HEAD
        + r"""
store = ArchiveStore(root, durability="MODE")
store.update_thread("t1", name="chat")
store.update_thread("t1", metadata={"chat_settings": {}, "chat_profile": None,
                                    "client_type": "webapp", "memory": "ACKED-SESSION"})
assert store.get_thread("t1")["metadata"]["memory"] == "ACKED-SESSION"
FLUSHER.flush()  # the flush mode: the flush due a second later came
print("acknowledged", flush=True)
os._exit(0)
"""
    ).replace("MODE", mode)
    model = traced(tmp_path, script)
    assert b"ACKED-SESSION" in (model.volatile().get("sessions/t1.json") or b"")
    assert b"ACKED-SESSION" in (model.strict().get("sessions/t1.json") or b"")


def test_a_session_after_a_restart_keeps_the_sessions_directory(tmp_path: Path) -> None:
    """The first session persisted made ``sessions/`` and was killed before the root was
    fsynced; after the restart a session is persisted and acknowledged."""
    session = '{"chat_settings": {}, "chat_profile": None, "client_type": "webapp", "memory": M}'
    first = (
        HEAD
        + r"""
store = ArchiveStore(root, durability="fsync")
store.update_thread("t1", name="chat")
real = fs.fsync_dirs
def dying(dirs):
    dirs = list(dirs)
    if store.root in dirs:
        os._exit(9)  # killed before sessions/ is on the disk
    real(dirs)
fs.fsync_dirs = dying
store.update_thread("t1", metadata=SESSION)
"""
    ).replace("SESSION", session.replace("M", repr("first")))
    second = (
        HEAD
        + r"""
store = ArchiveStore(root, durability="fsync")
store.update_thread("t1", metadata=SESSION)
print("acknowledged", flush=True)
os._exit(0)
"""
    ).replace("SESSION", session.replace("M", repr("ACKED-SESSION")))
    model = traced(tmp_path, first, second)
    assert b"ACKED-SESSION" in (model.volatile().get("sessions/t1.json") or b"")
    assert b"ACKED-SESSION" in (model.strict().get("sessions/t1.json") or b"")


def test_a_rename_after_a_restart_keeps_the_thread_a_killed_call_made(tmp_path: Path) -> None:
    """``update_thread`` made the thread and was killed before ``threads/`` was fsynced;
    after the restart the thread is renamed, acknowledged: its directory's name is made
    durable with its new manifest."""
    first = (
        HEAD
        + r"""
store = ArchiveStore(root, durability="fsync")
real = fs.fsync_dirs
def dying(dirs):
    dirs = list(dirs)
    if store.layout.threads in dirs:
        os._exit(9)
    real(dirs)
fs.fsync_dirs = dying
store.update_thread("t1", name="first")
"""
    )
    second = (
        HEAD
        + r"""
store = ArchiveStore(root, durability="fsync")
store.update_thread("t1", name="ACKED-NAME")
print("acknowledged", flush=True)
os._exit(0)
"""
    )
    model = traced(tmp_path, first, second)
    assert b"ACKED-NAME" in (model.strict().get("threads/t1/thread.json") or b"")
