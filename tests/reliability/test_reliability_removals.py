"""Power cuts after removals: what a deletion, an erasure or a repair removed stays
removed once the call returned.

The scripts run one after another, each its own process, under one trace; the trace is
replayed on the power-cut model (``tests.support.powercut``), and ``strict()`` is what a
power cut right after the last script keeps. A script in between stands for the kernel's
writeback minutes later: it fsyncs every file and directory, so what the last script
removes was on the disk before it.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from filelayer import ArchiveStore
from filelayer.maintenance.verify import verify
from tests.support.powercut import trace_scripts, tracer_problem

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the model replays strace's record (Linux)"
)

SECRETS = (b"SECRETTEXT", b"SECRETSESSION")

WRITE = r"""
import sys
from filelayer import ArchiveStore
store = ArchiveStore(sys.argv[1], durability="fsync")
user = store.upsert_user("alice@example.com")
store.update_thread("t1", name="mine", user_id=user["id"])
for i in range(40):  # long enough for a view (index/views/t1.json) at close
    store.write_step({"id": f"s{i}", "threadId": "t1", "type": "user_message",
                      "output": "SECRETTEXT " + "x" * 1000,
                      "createdAt": f"2026-01-01T00:00:{i:02d}.000000Z"})
store.update_thread("t1", metadata={"chat_settings": {}, "chat_profile": None,
                                    "client_type": "webapp", "memory": "SECRETSESSION"})
store.close()
"""

WRITEBACK = r"""
import os, sys
for directory, dirs, files in os.walk(sys.argv[1]):
    for name in files + dirs + ["."]:
        fd = os.open(os.path.join(directory, name), os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
"""


def require_tracer() -> None:
    problem = tracer_problem()
    if problem:
        pytest.fail(problem, pytrace=False)


def holding_secrets(state: dict[str, bytes | None]) -> list[str]:
    return sorted(p for p, data in state.items() if data and any(s in data for s in SECRETS))


@pytest.mark.parametrize("how", ["erase-user", "delete_thread"])
def test_a_deleted_threads_view_and_session_stay_removed(tmp_path: Path, how: str) -> None:
    """Its view (index/views/<id>.json: the whole conversation) and its session file were
    unlinked with no fsync of their directories: a power cut right after the erasure
    returned brought both back, and ``verify --repair`` left them."""
    require_tracer()
    remove = (
        "from filelayer.maintenance.retention import erase_user\n"
        "erase_user(store, 'alice@example.com')"
        if how == "erase-user"
        else "store.delete_thread('t1')"
    )
    act = (
        "import os, sys\n"
        "from filelayer import ArchiveStore\n"
        "store = ArchiveStore(sys.argv[1], durability='fsync')\n"
        f"{remove}\n"
        "os._exit(0)  # the power goes once the call returned\n"
    )
    model = trace_scripts(tmp_path, [WRITE, WRITEBACK, act])
    assert not holding_secrets(model.volatile())
    assert holding_secrets(model.strict()) == []


def test_verify_removes_the_view_and_session_of_a_thread_that_is_gone(tmp_path: Path) -> None:
    """A view or a session file whose thread was deleted (a tombstone) or is gone (no
    directory: removed by git or by hand) is a copy of a conversation nobody can reach:
    reported, and removed by ``--repair``."""
    root = tmp_path / "a"
    store = ArchiveStore(root)
    store.update_thread("kept", name="kept")
    store.write_step({"id": "s", "threadId": "kept", "type": "user_message", "output": "hi"})
    for thread in ("deleted", "gone"):
        store.update_thread(thread, name=thread)
    views = root / "index" / "views"
    views.mkdir(parents=True, exist_ok=True)
    sessions = root / "sessions"
    sessions.mkdir(exist_ok=True)
    store.delete_thread("deleted")
    shutil.rmtree(root / "threads" / "gone")
    for thread in ("kept", "deleted", "gone"):
        (views / f"{thread}.json").write_bytes(b"SECRETTEXT")
        (sessions / f"{thread}.json").write_bytes(b'{"memory": "SECRETSESSION"}')
    report = verify(store)
    orphans = sorted(p.path for p in report.problems if "no thread" in p.what)
    expected = [
        f"{where}/{thread}.json"
        for where in ("index/views", "sessions")
        for thread in ("deleted", "gone")
    ]
    assert orphans == expected
    report = verify(store, repair=True)
    assert sorted(p.path for p in report.problems if "no thread" in p.what and p.repaired) == (
        expected
    )
    assert sorted(os.listdir(views)) == ["kept.json"]
    assert sorted(os.listdir(sessions)) == ["kept.json"]
    assert not [p for p in verify(store).problems if "no thread" in p.what]
    store.close()


ORPHANS = r"""
import shutil, sys
from pathlib import Path
from filelayer import ArchiveStore
root = Path(sys.argv[1])
view, session = root / "index/views/t1.json", root / "sessions/t1.json"
kept = view.read_bytes(), session.read_bytes()
store = ArchiveStore(root, durability="fsync")
store.delete_thread("t1")
store.close()
# What a power cut before the deletion's fix could leave: both back.
view.write_bytes(kept[0])
session.write_bytes(kept[1])
"""

REPAIR = r"""
import os, sys
from filelayer import ArchiveStore
from filelayer.maintenance.verify import verify
store = ArchiveStore(sys.argv[1], durability="fsync")
report = verify(store, repair=True)
assert [p.path for p in report.problems if p.repaired] == [
    "index/views/t1.json", "sessions/t1.json"], report.problems
os._exit(0)  # the power goes once the repair returned
"""


def test_verify_repair_removes_them_durably(tmp_path: Path) -> None:
    """The README's remedy after a power cut, ``verify --repair``, removes the view and
    the session file a deleted thread left, and a power cut right after it keeps them
    removed."""
    require_tracer()
    model = trace_scripts(tmp_path, [WRITE, ORPHANS, WRITEBACK, REPAIR])
    assert holding_secrets(model.strict()) == []


LEFTOVERS = r"""
import sys
from pathlib import Path
from filelayer import ArchiveStore
from filelayer.maintenance.retention import erase_user
root = Path(sys.argv[1])
store = ArchiveStore(root, durability="fsync")
store.upsert_user("bob@example.com", metadata={"secret": "SECRETTEXT"})
record = root / "users" / next(p.name for p in (root / "users").glob("bob*.json"))
kept = record.read_bytes()
erase_user(store, "bob@example.com")
store.close()
record.write_bytes(kept)  # a merge from an older clone brings the record back
# What interrupted writes and a deletion cut short leave.
(root / ".filelayer-deleted.jsonl.0123abcd.tmp").write_bytes(b"SECRETTEXT")
(root / "users" / ".filelayer-bob.json.0123abcd.tmp").write_bytes(b"SECRETTEXT")
doomed = root / "threads" / ".filelayer-t9.0123abcd.deleting"
doomed.mkdir()
(doomed / "steps.jsonl").write_bytes(b"SECRETTEXT\n")
"""

REPAIR_ALL = r"""
import os, sys
from filelayer import ArchiveStore
from filelayer.maintenance.verify import verify
store = ArchiveStore(sys.argv[1], durability="fsync")
report = verify(store, repair=True)
assert len([p for p in report.problems if p.repaired]) == 4, report.problems
os._exit(0)  # the power goes once the repair returned
"""


def test_verify_repairs_removals_are_durable(tmp_path: Path) -> None:
    """README: ``verify --repair``'s repairs are fsynced before they return. The removal
    of an erased user's record that came back, and of leftover temporary files and
    directories, were unlinks with no fsync of their directories: a power cut brought
    them back (the erased user's record among them)."""
    require_tracer()
    model = trace_scripts(tmp_path, [LEFTOVERS, WRITEBACK, REPAIR_ALL])
    assert not [p for p in model.volatile() if p.startswith("users/bob")]
    assert holding_secrets(model.volatile()) == []
    assert holding_secrets(model.strict()) == []


def test_a_link_in_a_deleted_threads_directory_is_repaired(tmp_path: Path) -> None:
    """The link's removal is fsynced at the end, when its directory is gone (the
    deletion that the repair finishes removes it): no error for that."""
    root = tmp_path / "a"
    store = ArchiveStore(root)
    store.write_step({"id": "s", "threadId": "t", "type": "user_message", "output": "hi"})
    (root / "threads" / "t" / "elsewhere").symlink_to(tmp_path)
    kept = root / "threads" / "kept"
    shutil.copytree(root / "threads" / "t", kept, symlinks=True)
    store.delete_thread("t")
    shutil.move(kept, root / "threads" / "t")  # a deletion cut short, with a link inside
    report = verify(store, repair=True)
    assert not report.unrepaired, report.problems
    assert not (root / "threads" / "t").exists()
    store.close()
