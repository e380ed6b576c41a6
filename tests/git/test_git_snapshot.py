"""Commits that stay small and whole.

- Chainlit saves the whole user session into the thread at every disconnect: such saves
  leave ``git status`` clean, and a resume still gets the session back (Chainlit's own
  session code: tests/chainlit/test_session_saves.py).
- ``filelayer snapshot`` commits while a writer goes on: every commit holds whole
  journal lines and no thread without its manifest.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from filelayer import ArchiveStore
from filelayer.cli import main
from filelayer.store import session
from tests.support.git import git_out
from tests.support.processes import subprocess_env

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def init(repo: Path) -> None:
    git_out(repo, "init", "-q")
    git_out(repo, "config", "user.email", "test@example.com")
    git_out(repo, "config", "user.name", "Test")


def persisted_session(session_id: str, **app: object) -> dict[str, object]:
    """What Chainlit's ``WebsocketSession.to_persistable`` hands ``update_thread``."""
    return {
        "id": session_id,
        "env": {},
        "chat_settings": {"temperature": 0.2},
        "user": {"identifier": "alice", "metadata": {}},
        "chat_profile": "default",
        "client_type": "webapp",
        **app,
    }


def test_a_persisted_session_changes_no_committed_file(tmp_path: Path) -> None:
    root = tmp_path / "chats"
    store = ArchiveStore(root)
    store.update_thread("t", name="hello", metadata={"is_shared": True})
    store.update_thread("t", metadata=persisted_session("s1", history=["hi"]))
    init(root)
    assert main(["--root", str(root), "snapshot", "-m", "first"]) == 0
    manifest = (root / "threads" / "t" / "thread.json").read_text()
    for n in range(2, 5):
        store.update_thread("t", metadata=persisted_session(f"s{n}", history=["hi"] * n))
        assert git_out(root, "status", "--porcelain") == ""
    assert (root / "threads" / "t" / "thread.json").read_text() == manifest
    got = store.get_thread("t")
    assert got is not None
    assert got["metadata"]["chat_settings"] == {"temperature": 0.2}
    assert got["metadata"]["chat_profile"] == "default"
    assert got["metadata"]["is_shared"] is True
    assert got["metadata"]["history"] == ["hi"] * 4
    assert "id" not in got["metadata"]  # the session's own id is never kept
    # A clone without the session file still resumes with its settings and profile.
    shutil.rmtree(root / "sessions")
    again = ArchiveStore(root).get_thread("t")
    assert again is not None
    assert again["metadata"] == {
        "chat_profile": "default",
        "chat_settings": {"temperature": 0.2},
        "is_shared": True,
    }


def test_a_session_stored_by_an_earlier_version_moves_out_once(tmp_path: Path) -> None:
    root = tmp_path / "chats"
    store = ArchiveStore(root)
    store.put_manifest(
        {
            "id": "t",
            "name": "old",
            "metadata": {"id": "old-session", "env": {}, "chat_profile": "p", "k": 1},
            "createdAt": "2026-01-01T00:00:00.000000Z",
            "updatedAt": "2026-01-01T00:00:00.000000Z",
        }
    )
    store.update_thread("t", metadata=persisted_session("new", k=1))
    doc = (root / "threads" / "t" / "thread.json").read_text()
    assert "old-session" not in doc and '"k"' not in doc and '"chat_profile": "default"' in doc
    kept = session.read(session.path(root, "t"))
    assert kept["k"] == 1 and "id" not in kept
    assert b"new" not in session.path(root, "t").read_bytes()


WRITER = """
import sys
from filelayer import ArchiveStore
store = ArchiveStore(sys.argv[1])
for n in range(int(sys.argv[2])):
    thread = f"t{n % 7}-{n // 40}"
    store.write_step({"id": f"s{n}", "threadId": thread, "type": "user_message",
                      "output": "words " * (50 + n % 300)})
"""


def test_snapshots_taken_while_an_app_writes_are_whole(tmp_path: Path) -> None:
    root = tmp_path / "chats"
    ArchiveStore(root).close()
    init(root)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), "1500"], env=subprocess_env()
    )
    commits: list[str] = []
    try:
        while writer.poll() is None and len(commits) < 8:
            if not any((root / "threads").iterdir()):
                time.sleep(0.05)  # the writer is still starting
                continue
            assert main(["--root", str(root), "snapshot", "-m", f"snapshot {len(commits)}"]) == 0
            head = git_out(root, "rev-parse", "HEAD").strip()
            if head not in commits:
                commits.append(head)
    finally:
        writer.wait(timeout=120)
    assert main(["--root", str(root), "snapshot", "-m", "last"]) == 0
    commits.append(git_out(root, "rev-parse", "HEAD").strip())
    for commit in dict.fromkeys(commits):
        files = git_out(root, "ls-tree", "-r", "--name-only", commit).split()
        threads = {f.split("/")[1] for f in files if f.startswith("threads/")}
        for thread in threads:
            assert f"threads/{thread}/thread.json" in files, (commit, thread)
            journal = f"threads/{thread}/steps.jsonl"
            if journal in files:
                data = subprocess.run(
                    ["git", "-C", str(root), "show", f"{commit}:{journal}"],
                    capture_output=True,
                    check=True,
                ).stdout
                assert data.endswith(b"\n"), (commit, journal)
    checkout = tmp_path / "checkout"
    assert len(commits) > 2, "no snapshot was taken while the writer wrote"
    for commit in commits[:3]:
        shutil.rmtree(checkout, ignore_errors=True)
        git_out(root, "worktree", "prune")
        git_out(root, "worktree", "add", "-q", "--detach", str(checkout), commit)
        assert main(["--root", str(checkout), "verify"]) == 0, commit


def test_the_pre_commit_hook_commits_no_half_written_line(tmp_path: Path) -> None:
    """``git add`` caught a journal line half written (the writer holds the thread's
    lock); the hook ``git-setup`` installs stages the archive again once the writer is
    done, so the commit holds the whole line."""
    from filelayer._io import locks as _locks

    root = tmp_path / "chats"
    store = ArchiveStore(root)
    store.write_step({"id": "s1", "threadId": "t", "type": "user_message", "output": "one"})
    init(root)
    assert main(["--root", str(root), "git-setup"]) == 0
    assert main(["--root", str(root), "snapshot", "-m", "first"]) == 0
    journal = store.layout.journal("t")
    line = b'{"op":"step","step":{"id":"s2","output":"two","threadId":"t","type":"run"}}\n'
    with _locks.locked(store.layout.thread_lock("t")):
        with journal.open("ab") as f:
            f.write(line[:20])
        git_out(root, "add", "-A")  # what a person types while the app writes
        commit = subprocess.Popen(
            ["git", "-C", str(root), "commit", "-q", "-m", "second"], env=subprocess_env()
        )
        time.sleep(0.5)  # let the hook reach the lock (it waits however long this takes)
        with journal.open("ab") as f:
            f.write(line[20:])
    assert commit.wait(timeout=120) == 0
    committed = subprocess.run(
        ["git", "-C", str(root), "show", "HEAD:threads/t/steps.jsonl"],
        capture_output=True,
        check=True,
    ).stdout
    assert committed.endswith(line)
    assert git_out(root, "status", "--porcelain") == ""


DELETER = """
import sys
from filelayer import ArchiveStore
from filelayer._io import locks
store = ArchiveStore(sys.argv[1], lock_timeout=5)
real = locks._try
paused = []
def pausing(key, path):
    # delete_thread holds the thread's lock and is about to take the tombstones' lock:
    # it waits here until the snapshot is under way.
    if path == store.layout.deleted_lock and not paused:
        paused.append(True)
        print("holding", flush=True)
        sys.stdin.readline()
    return real(key, path)
locks._try = pausing
print("deleted" if store.delete_thread("t") else "not deleted", flush=True)
"""

WAITING_SNAPSHOT = """
import sys
from filelayer._io import locks
from filelayer.cli import main
real = locks._wait
def waiting(key, path, timeout):
    print("waiting", flush=True)
    return real(key, path, timeout)
locks._wait = waiting
sys.exit(main(["--root", sys.argv[1], "snapshot", "-m", "while deleting"]))
"""


def test_a_snapshot_and_a_deletion_under_way_do_not_wait_for_each_other(tmp_path: Path) -> None:
    """A deletion holds its thread's lock, then takes the tombstones'; a snapshot that
    begins meanwhile takes the locks in that same order, so the deletion finishes and
    the snapshot after it, instead of each holding what the other waits for."""
    root = tmp_path / "chats"
    store = ArchiveStore(root)
    store.write_step({"id": "s1", "threadId": "t", "type": "user_message", "output": "one"})
    store.close()
    init(root)
    deleter = subprocess.Popen(
        [sys.executable, "-c", DELETER, str(root)],
        env=subprocess_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    snapshot = None
    try:
        assert deleter.stdout is not None and deleter.stdin is not None
        assert deleter.stdout.readline().strip() == "holding"
        snapshot = subprocess.Popen(
            [sys.executable, "-c", WAITING_SNAPSHOT, str(root)],
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert snapshot.stdout is not None
        assert snapshot.stdout.readline().strip() == "waiting"  # for the thread's lock
        deleter.stdin.write("go\n")
        deleter.stdin.flush()
        out, _ = deleter.communicate(timeout=60)
        assert deleter.returncode == 0 and out.strip() == "deleted"
        assert snapshot.wait(timeout=60) == 0
    finally:
        for child in (deleter, snapshot):
            if child is not None and child.poll() is None:
                child.kill()
                child.wait()
    assert not (root / "threads" / "t").exists()
