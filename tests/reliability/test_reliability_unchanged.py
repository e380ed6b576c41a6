"""Power cuts after a call that found nothing to change, and after what no fsync covered.

A call that finds the archive already as it asks (a thread renamed to the name it has,
a session saved again unchanged, a user logging in again, a write to a step already
deleted) writes nothing. But what it found may not be on the disk yet: another worker's
group commit made it and has not fsynced it, or a call that made it was killed before
its fsyncs. Acknowledged, the call must leave the state it reports durable all the same
(``durability="fsync"``). The same question for what a crashed flush-mode app left
unflushed, and for the two directories of a file that ``verify --repair`` sets aside.

Each test runs its scripts under strace (``powercut.trace_scripts``) and replays their
system calls on the power-cut model; the power goes right after the last
acknowledgement (``os._exit``). ``strict()`` is what that power cut keeps.
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
from filelayer.store.archive import ArchiveStore
root = sys.argv[1]

def step(sid, tid, text):
    return {"id": sid, "threadId": tid, "type": "user_message", "output": text,
            "createdAt": "2026-01-01T00:00:00.000000Z"}
"""

SESSION = (
    '{"chat_settings": {}, "chat_profile": None, "client_type": "webapp", '
    '"memory": "ACKED-SESSION"}'
)


def test_a_rename_to_the_name_another_workers_pending_group_gave(tmp_path: Path) -> None:
    """Worker A makes t1 named "chat" in a group commit not yet fsynced; worker B names
    t1 "chat" too, finds nothing to change and is acknowledged: the thread and its name
    survive the power cut."""
    script = (
        HEAD
        + r"""
a = ArchiveStore(root, durability="fsync")
b = ArchiveStore(root, durability="fsync")
with commit.deferring(commit.SyncGroup()):
    a.update_thread("t1", name="ACKED-NAME")
b.update_thread("t1", name="ACKED-NAME")
print("acknowledged", flush=True)
os._exit(0)  # before A's group commit
"""
    )
    model = traced(tmp_path, script)
    assert b"ACKED-NAME" in (model.volatile().get("threads/t1/thread.json") or b"")
    assert b"ACKED-NAME" in (model.strict().get("threads/t1/thread.json") or b"")


def test_the_same_name_again_after_a_restart_keeps_the_thread(tmp_path: Path) -> None:
    """``update_thread`` made t1 and was killed before ``threads/`` was fsynced; after
    the restart the app names it the same again (nothing to change), acknowledged."""
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
store.update_thread("t1", name="ACKED-NAME")
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


def test_a_session_saved_again_as_another_workers_pending_group_saved_it(
    tmp_path: Path,
) -> None:
    """Worker A saves t1's session in a group commit not yet fsynced; worker B saves the
    same session, finds nothing to change, and is acknowledged: the session survives."""
    script = (
        HEAD
        + r"""
a = ArchiveStore(root, durability="fsync")
b = ArchiveStore(root, durability="fsync")
b.update_thread("t1", name="chat")
with commit.deferring(commit.SyncGroup()):
    a.update_thread("t1", metadata=SESSION)
b.update_thread("t1", metadata=SESSION)
print("acknowledged", flush=True)
os._exit(0)  # before A's group commit
"""
    ).replace("SESSION", SESSION)
    model = traced(tmp_path, script)
    assert b"ACKED-SESSION" in (model.volatile().get("sessions/t1.json") or b"")
    assert b"ACKED-SESSION" in (model.strict().get("sessions/t1.json") or b"")


def test_a_write_to_a_step_another_workers_pending_group_deleted(tmp_path: Path) -> None:
    """Worker A deletes s1 in a group commit not yet fsynced; worker B's update of s1 is
    ignored (deleted steps stay deleted) and acknowledged: after the power cut, s1 is
    deleted, not back with its old text."""
    script = (
        HEAD
        + r"""
a = ArchiveStore(root, durability="fsync")
b = ArchiveStore(root, durability="fsync")
b.write_step(step("s1", "t1", "ORIGINAL"))
with commit.deferring(commit.SyncGroup()):
    a.delete_step("s1", "t1")
b.write_step(step("s1", "t1", "UPDATED"))
assert "s1" not in b.read_state("t1").steps
print("acknowledged", flush=True)
os._exit(0)  # before A's group commit
"""
    )
    model = traced(tmp_path, script)
    journal = model.strict().get("threads/t1/steps.jsonl") or b""
    assert b"ORIGINAL" in journal
    assert b'"op":"step.delete"' in journal.replace(b" ", b"")


@pytest.mark.parametrize(
    ("pending", "kept"),
    [
        # A withdrew f1 itself: its deletion line is what B's answer relies on.
        ('a.delete_feedback("f1")', b'"feedback.delete"'),
        # A rated s1 again with a new id: f1 left the index; f2's line replaced it.
        ('a.upsert_feedback(for_id="s1", value=0, feedback_id="f2", thread_id="t1")', b'"id":"f2"'),
        # A deleted s1, which f1 rates: f1 left the index with it.
        ('a.delete_step("s1", "t1")', b'"op":"step.delete"'),
    ],
    ids=["withdrawn", "replaced", "step-deleted"],
)
def test_a_feedback_deleted_while_another_workers_pending_group_took_it_out(
    tmp_path: Path, pending: str, kept: bytes
) -> None:
    """Worker A takes feedback f1 out of the index in a group commit not yet fsynced;
    worker B deletes f1 and is acknowledged, answered from the index alone: after the
    power cut, f1 stays gone (A's line that took it out is on the disk)."""
    script = (
        HEAD
        + r"""
a = ArchiveStore(root, durability="fsync")
b = ArchiveStore(root, durability="fsync")
b.write_step(step("s1", "t1", "one"))
b.upsert_feedback(for_id="s1", value=1, feedback_id="f1", thread_id="t1")
with commit.deferring(commit.SyncGroup()):
    PENDING
assert b.delete_feedback("f1")
print("acknowledged", flush=True)
os._exit(0)  # before A's group commit
""".replace("PENDING", pending)
    )
    model = traced(tmp_path, script)
    journal = (model.strict().get("threads/t1/steps.jsonl") or b"").replace(b" ", b"")
    assert kept in journal


@pytest.mark.parametrize(
    ("pending", "again", "kept"),
    [
        # A deleted s1 (no feedback, no element file): B, given no thread, finds it
        # nowhere in the journals and answers that there is nothing to delete.
        ('a.delete_step("s1", "t1")', 'b.delete_step("s1")', b'"op":"step.delete"'),
        # The same for an element without a file.
        ('a.delete_element("e1", "t1")', 'b.delete_element("e1")', b'"op":"element.delete"'),
    ],
    ids=["step", "element"],
)
def test_a_deletion_again_without_its_thread_while_another_workers_group_is_pending(
    tmp_path: Path, pending: str, again: str, kept: bytes
) -> None:
    """Worker A deletes s1 (or e1) in a group commit not yet fsynced; worker B, which
    never saw it, deletes it again without naming its thread (Chainlit's
    ``delete_step``, ``delete_element``), finds it live in no journal, writes nothing
    and is acknowledged: after the power cut, it stays deleted (A's line is on the
    disk)."""
    script = (
        HEAD
        + r"""
a = ArchiveStore(root, durability="fsync")
writer = ArchiveStore(root, durability="fsync")
writer.write_step(step("s1", "t1", "one"))
writer.record_element("t1", {"id": "e1", "forId": "s1", "type": "text", "name": "n"})
b = ArchiveStore(root, durability="fsync")  # it saw neither written
with commit.deferring(commit.SyncGroup()):
    PENDING
AGAIN
print("acknowledged", flush=True)
os._exit(0)  # before A's group commit
""".replace("PENDING", pending).replace("AGAIN", again)
    )
    model = traced(tmp_path, script)
    journal = (model.strict().get("threads/t1/steps.jsonl") or b"").replace(b" ", b"")
    assert kept in journal


@pytest.mark.parametrize(
    ("pending", "again", "kept"),
    [
        ('a.delete_step("s1", "t1")', 'b.delete_step("s1")', b'"op":"step.delete"'),
        ('a.delete_element("e1", "t1")', 'b.delete_element("e1")', b'"op":"element.delete"'),
    ],
    ids=["step", "element"],
)
def test_a_deletion_again_without_its_thread_while_the_first_ones_fsync_is_under_way(
    tmp_path: Path, pending: str, again: str, kept: bytes
) -> None:
    """Worker A's deletion of s1 (or e1) is written and its fsync under way (the thread's
    lock held); B's scan for it, which takes no lock, reads the line, finds it live in no
    journal and B is acknowledged before A's fsync ends: after the power cut, it stays
    deleted."""
    script = (
        HEAD
        + r"""
a = ArchiveStore(root, durability="fsync")
writer = ArchiveStore(root, durability="fsync")
writer.write_step(step("s1", "t1", "one"))
writer.record_element("t1", {"id": "e1", "forId": "s1", "type": "text", "name": "n"})
b = ArchiveStore(root, durability="fsync")  # it saw neither written
real = fs.fsync_fd
def under_way(fd):
    if not os.readlink(f"/proc/self/fd/{fd}").endswith("steps.jsonl"):
        return real(fd)
    fs.fsync_fd = real
    AGAIN
    print("acknowledged", flush=True)
    os._exit(0)  # before A's fsync
fs.fsync_fd = under_way
PENDING
""".replace("PENDING", pending).replace("AGAIN", again)
    )
    model = traced(tmp_path, script)
    journal = (model.strict().get("threads/t1/steps.jsonl") or b"").replace(b" ", b"")
    assert kept in journal


def test_the_same_user_again_after_a_restart_keeps_the_user(tmp_path: Path) -> None:
    """``upsert_user`` wrote the user's file and was killed before ``users/`` was
    fsynced; after the restart the user logs in again with the same record (nothing to
    change), acknowledged: the record survives the power cut."""
    first = (
        HEAD
        + r"""
store = ArchiveStore(root, durability="fsync")
real = fs.fsync_dir
def dying(path):
    if str(path) == str(store.layout.users):
        os._exit(9)  # killed before the user file's name is on the disk
    real(path)
fs.fsync_dir = dying
store.upsert_user("bob", metadata={"plan": "ACKED-USER"})
"""
    )
    second = (
        HEAD
        + r"""
store = ArchiveStore(root, durability="fsync")
store.upsert_user("bob", metadata={"plan": "ACKED-USER"})
print("acknowledged", flush=True)
os._exit(0)
"""
    )
    model = traced(tmp_path, first, second)
    kept = [data for path, data in model.strict().items() if path.startswith("users/bob-")]
    assert kept and b"ACKED-USER" in (kept[0] or b"")


def test_a_crashed_flush_mode_writers_calls_are_flushed_after_the_restart(
    tmp_path: Path,
) -> None:
    """The flush mode: the app was killed before the background flush of its last calls
    came (it never will: the flusher died with it). The restarted app finds its writer
    session dead; by then a power cut must keep those calls, acknowledged long before
    (more than the flusher's second), though the new process never writes that thread."""
    crashed = (
        HEAD
        + r"""
from filelayer._io.flusher import FLUSHER
FLUSHER.interval = 3600  # the flush due for the call never comes before the kill
store = ArchiveStore(root, durability="flush")
store.write_step(step("s1", "t1", "ACKED"))
print("acknowledged", flush=True)
os._exit(9)  # the app crashes
"""
    )
    restarted = (
        HEAD
        + r"""
import time
from filelayer._io.flusher import FLUSHER
store = ArchiveStore(root, durability="flush")
store.wait_healed()
time.sleep(1.2)  # more than the flusher's second since the restart
FLUSHER.flush()
os._exit(0)  # the power goes
"""
    )
    model = traced(tmp_path, crashed, restarted)
    assert b"ACKED" in (model.volatile().get("threads/t1/steps.jsonl") or b"")
    assert b"ACKED" in (model.strict().get("threads/t1/steps.jsonl") or b"")


def test_an_element_sent_again_while_another_workers_deletion_is_pending(
    tmp_path: Path,
) -> None:
    """Worker A deletes element e2 (a link, no file) in a group commit not yet fsynced;
    worker B sends e2 again: refused (deleted elements stay deleted) and acknowledged.
    After the power cut, e2 stays deleted rather than back with its old link."""
    script = (
        HEAD
        + r"""
a = ArchiveStore(root, durability="fsync")
b = ArchiveStore(root, durability="fsync")
b.write_step(step("s1", "t1", "one"))
b.record_element("t1", {"id": "e2", "name": "link", "forId": "s1", "url": "http://x/1"})
with commit.deferring(commit.SyncGroup()):
    a.delete_element("e2", "t1")
assert not b.record_element("t1", {"id": "e2", "name": "link", "forId": "s1",
                                   "url": "http://x/2"})
print("acknowledged", flush=True)
os._exit(0)  # before A's group commit
"""
    )
    model = traced(tmp_path, script)
    journal = (model.strict().get("threads/t1/steps.jsonl") or b"").replace(b" ", b"")
    assert b'"http://x/1"' in journal
    assert b'"element.delete"' in journal


def test_a_repair_setting_an_element_file_aside_never_loses_it(tmp_path: Path) -> None:
    """``verify --repair`` moves an element file no record refers to out of
    ``elements/``, keeping its bytes. Its name leaves ``elements/`` and arrives in the
    directory it is set aside in: a power cut between the fsyncs of the two must not
    leave it in neither (here: the power goes right after the first of them)."""
    setup = (
        HEAD
        + r"""
store = ArchiveStore(root, durability="fsync")
store.write_step(step("s1", "t1", "one"))
store.prepare_element("t1")
(store.layout.thread_dir("t1") / "elements" / "orphan.txt").write_bytes(b"KEPT-BYTES")
store.close()
os.sync()
"""
    )
    repair = (
        HEAD
        + r"""
from filelayer.maintenance.verify import verify
store = ArchiveStore(root, durability="fsync")
thread_dir = store.layout.thread_dir("t1")
real = fs.fsync_dir
def once(path):
    real(path)
    if str(path).startswith(str(thread_dir) + "/"):
        os._exit(0)  # the power goes after the first fsync of a directory in t1
fs.fsync_dir = once
verify(store, repair=True)
os._exit(3)
"""
    )
    model = traced(tmp_path, setup, repair)
    assert model.volatile().get("threads/t1/unreferenced/orphan.txt") == b"KEPT-BYTES"
    kept = [p for p, data in model.strict().items() if data == b"KEPT-BYTES"]
    assert kept, "the element file's bytes are in no directory"
