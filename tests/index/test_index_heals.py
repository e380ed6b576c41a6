"""The index heals itself (issue #13, part 3).

A crash between a thread's files and its index rows, a power cut that keeps one and not
the other, a torn, missing or old index, and ``git checkout`` under a running process:
in each case the sidebar must come back to what the thread directories say, without
anyone running ``filelayer reindex``. The oracle is a rebuild from scratch of a copy of
the archive: a healed index lists exactly what a new one lists.

Crashed writers are real processes ended by ``os._exit`` (no ``close``, no exit
handlers: what SIGKILL leaves), and what a power cut keeps is built directly from
snapshots the writer took of its own files just before its last call.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from filelayer import ArchiveStore
from filelayer.store.heal import dead_sessions
from tests.support.git import git_out
from tests.support.processes import subprocess_env

SETUP = """
def step(tid, sid, text, at):
    store.write_step({"id": sid, "threadId": tid, "type": "user_message",
                      "output": text, "createdAt": at})

for n in range(30):
    tid = f"t{n:02d}"
    store.update_thread(tid, name=f"chat {n}")
    step(tid, f"{tid}-m", f"message {n} about bread", f"2026-01-01T00:00:{n:02d}.000000Z")
"""

LAST_CALLS = {
    "new thread": """
store.update_thread("tnew", name="the newest chat")
step("tnew", "tnew-m", "a brand new crumpet", "2026-02-01T00:00:00.000000Z")
""",
    "rename": 'store.update_thread("t05", name="renamed at the end")\n',
    "delete": 'store.delete_thread("t07")\n',
    "message": 'step("t03", "t03-late", "a late crumpet", "2026-03-01T00:00:00.000000Z")\n',
}


def run_writer(root: Path, body: str, *, end: str = "crash") -> None:
    """Run ``body`` in a child process with ``store`` open on ``root``; ``end``: "crash"
    (``os._exit``: no close, no exit handlers), "close" or "exit" (returns normally)."""
    finish = {
        "crash": "os._exit(0)",
        "close": "store.close()",
        "exit": "pass",
    }[end]
    script = (
        "import os, shutil, sys\nfrom filelayer import ArchiveStore\n"
        f"root = {str(root)!r}\nstore = ArchiveStore(root)\n"
        + textwrap.dedent(SETUP)
        + textwrap.dedent(body)
        + finish
        + "\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


SNAPSHOT_INDEX = """
snap = root + ".index-snap"
os.makedirs(snap)
for name in os.listdir(root + "/index"):
    if name.startswith("threads-") and not name.endswith("-shm"):
        shutil.copy2(root + "/index/" + name, snap)
"""

SNAPSHOT_FILES = """
shutil.copytree(root + "/threads", root + ".threads-snap")
if os.path.exists(root + "/deleted.jsonl"):
    shutil.copy2(root + "/deleted.jsonl", root + ".deleted-snap")
"""


def restore_index(root: Path) -> None:
    """The index as it was before the last call: its rows were lost, the files kept."""
    snap = Path(f"{root}.index-snap")
    for p in (root / "index").glob("threads-*"):
        p.unlink()
    for p in snap.iterdir():
        shutil.copy2(p, root / "index" / p.name)


def restore_files(root: Path) -> None:
    """The thread files as they were before the last call: the index kept its rows."""
    shutil.rmtree(root / "threads")
    shutil.copytree(Path(f"{root}.threads-snap"), root / "threads")
    deleted = Path(f"{root}.deleted-snap")
    if deleted.exists():
        shutil.copy2(deleted, root / "deleted.jsonl")
    else:
        (root / "deleted.jsonl").unlink(missing_ok=True)


def sidebar(store: ArchiveStore) -> dict[str, Any]:
    """Everything the sidebar can show: every thread listed, and searches."""
    threads, _ = store.list_threads(user_id=None, first=1000)
    return {
        "threads": [(t["id"], t["name"], t["createdAt"], t["updatedAt"]) for t in threads],
        "search": {
            term: [t["id"] for t in store.list_threads(user_id=None, first=1000, search=term)[0]]
            for term in ("crumpet", "bread", "renamed")
        },
    }


def rebuilt_sidebar(root: Path, tmp_path: Path) -> dict[str, Any]:
    """What an index built from scratch from the same thread directories shows."""
    copy = tmp_path / "oracle"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("index", "locks"))
    store = ArchiveStore(copy)
    try:
        return sidebar(store)
    finally:
        store.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "chats"


# -- crash states, built directly ------------------------------------------------------


@pytest.mark.parametrize("last", sorted(LAST_CALLS))
def test_a_writer_killed_after_its_files_and_before_its_index_rows(
    root: Path, tmp_path: Path, last: str
) -> None:
    """Index one call behind: the last call's files are there, its rows are not."""
    run_writer(root, SNAPSHOT_INDEX + LAST_CALLS[last])
    restore_index(root)
    store = ArchiveStore(root)
    assert store.healer.last is not None, "the dead writer was not noticed"
    assert store.healer.last.read <= 2, "more than the threads the crash touched was read"
    shown = sidebar(store)
    assert shown == rebuilt_sidebar(root, tmp_path)
    if last == "new thread":
        assert shown["threads"][0][0] == "tnew"
    if last == "delete":
        assert "t07" not in [t[0] for t in shown["threads"]]
    assert dead_sessions(root / "index") == []


@pytest.mark.parametrize("last", sorted(LAST_CALLS))
def test_a_power_cut_that_kept_the_index_rows_and_lost_the_files(
    root: Path, tmp_path: Path, last: str
) -> None:
    """Index one call ahead: its rows say what the files no longer do."""
    run_writer(root, SNAPSHOT_FILES + LAST_CALLS[last])
    restore_files(root)
    store = ArchiveStore(root)
    shown = sidebar(store)
    assert shown == rebuilt_sidebar(root, tmp_path)
    assert "tnew" not in [t[0] for t in shown["threads"]]
    assert ("t05", "chat 5") in [t[:2] for t in shown["threads"]]


def test_only_the_threads_written_since_the_last_clean_state_are_read(root: Path) -> None:
    """The marks follow every write: after a crash, the reconcile reads the threads
    whose files moved past their stored watermark, not all thirty."""
    run_writer(root, LAST_CALLS["message"] + LAST_CALLS["rename"])
    store = ArchiveStore(root)
    assert store.healer.last is not None
    assert store.healer.last.threads == 30
    assert store.healer.last.read <= 2


def test_the_stored_watermark_follows_every_kind_of_write(root: Path) -> None:
    """Writes that change no index row (a run step, a tool step's update) move the
    watermark too, in order with those that do: a clean close leaves every thread's
    stored watermark equal to its files', so a later crash reads only what it touched."""
    from filelayer.store.heal import watermark

    store = ArchiveStore(root)
    for n in range(3):
        tid = f"t{n}"
        store.update_thread(tid, name=f"chat {n}")
        for sid, kind, out in [("u", "user_message", "hi"), ("r", "run", None)]:
            store.write_step(
                {
                    "id": f"{tid}-{sid}",
                    "threadId": tid,
                    "type": kind,
                    "output": out,
                    "createdAt": "2026-01-01T00:00:00Z",
                }
            )
        store.write_step({"id": f"{tid}-r", "threadId": tid, "output": "done"})
        store.update_thread(tid, metadata={"env": "x"})
    store.delete_thread("t1")
    store.close()
    marks = store.index.marks()
    assert marks == {t: watermark(store, t) for t in ("t0", "t2")}


@pytest.mark.parametrize("end", ["close", "exit"])
def test_a_clean_start_skips_the_check(root: Path, end: str, caplog: Any) -> None:
    run_writer(root, LAST_CALLS["rename"], end=end)
    assert list((root / "index").glob("writer-*")) == []
    with caplog.at_level(logging.INFO, logger="filelayer"):
        store = ArchiveStore(root)
    assert store.healer.last is None
    assert "reconciled" not in caplog.text
    assert ("t05", "renamed at the end") in [t[:2] for t in sidebar(store)["threads"]]


def test_a_live_writer_is_not_taken_for_a_dead_one(root: Path) -> None:
    writer = ArchiveStore(root)
    writer.update_thread("t1", name="one")
    assert len(list((root / "index").glob("writer-*"))) == 1
    reader = ArchiveStore(root)
    assert reader.healer.last is None
    writer.close()
    assert list((root / "index").glob("writer-*")) == []


# -- torn, missing, old ------------------------------------------------------------------


def _database(root: Path) -> Path:
    name = (root / "index" / "current").read_text().strip()
    return root / "index" / name


@pytest.mark.parametrize("how", ["missing", "torn header", "torn pages", "old format", "no marks"])
def test_an_unusable_index_is_made_again(root: Path, tmp_path: Path, how: str) -> None:
    run_writer(root, LAST_CALLS["new thread"], end="close")
    db = _database(root)
    if how == "missing":
        shutil.rmtree(root / "index")
    elif how == "torn header":
        with open(db, "r+b") as f:
            f.write(b"\x00" * 4096)
    elif how == "torn pages":
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        with open(db, "r+b") as f:
            f.seek(4096 * 2)
            f.write(b"\xa5" * 4096 * 6)
    elif how == "old format":
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE meta SET value = '1' WHERE key = 'format'")
    else:  # a database from the version before watermarks
        with sqlite3.connect(db) as conn:
            conn.execute("DROP TABLE marks")
    store = ArchiveStore(root)
    assert sidebar(store) == rebuilt_sidebar(root, tmp_path)
    assert set(store.index.marks()) == set(store.thread_ids())
    store.close()
    assert list((root / "index").glob("writer-*")) == []


def test_the_app_fills_a_missing_index_in_the_background(root: Path, tmp_path: Path) -> None:
    """The app's store (``heal="background"``) opens at once on an empty index and fills
    it newest first; the sidebar is whole once the fill is done."""
    run_writer(root, LAST_CALLS["new thread"], end="close")
    shutil.rmtree(root / "index")
    store = ArchiveStore(root, heal="background")
    assert store.index.exists()  # the empty index is there before the fill ends
    assert store.wait_healed(60)
    assert sidebar(store) == rebuilt_sidebar(root, tmp_path)
    store.close()
    assert list((root / "index").glob("writer-*")) == []


def test_a_fill_cut_short_is_taken_up_by_the_next_opening(root: Path, tmp_path: Path) -> None:
    run_writer(root, "", end="close")
    shutil.rmtree(root / "index")
    script = (
        "import os, filelayer.store.heal as h\nfrom filelayer import ArchiveStore\n"
        "real = h.reconcile_thread\nseen = []\n"
        "def dying(store, tid):\n"
        "    seen.append(tid)\n"
        "    if len(seen) > 5: os._exit(0)\n"
        "    real(store, tid)\n"
        "h.reconcile_thread = dying\n"
        f"ArchiveStore({str(root)!r})\n"
    )
    subprocess.run([sys.executable, "-c", script], env=subprocess_env(), check=True, timeout=60)
    assert len(ArchiveStore(root, create=False, upgrade=False).index.threads) == 5
    store = ArchiveStore(root)
    assert sidebar(store) == rebuilt_sidebar(root, tmp_path)


# -- the command ---------------------------------------------------------------------------


def test_filelayer_reconcile(root: Path, tmp_path: Path) -> None:
    run_writer(root, SNAPSHOT_INDEX + LAST_CALLS["rename"], end="close")
    restore_index(root)  # a clean close, then a restore behind the layer's back
    done = subprocess.run(
        [sys.executable, "-m", "filelayer", "--root", str(root), "reconcile"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    # t05, renamed; and t29, whose last write's watermark was not stored yet.
    assert "reconciled: 2 of 30 thread(s) read again" in done.stderr
    assert sidebar(ArchiveStore(root)) == rebuilt_sidebar(root, tmp_path)


def test_reconcile_sees_an_edit_that_kept_the_size_and_put_the_time_back(root: Path) -> None:
    """A manifest edited in place to a name of the same length, its modification time
    put back (``touch -r``, a restore, ``cp -p`` over it): inode, size and mtime are
    those of the watermark the index stored. Only the change time tells, and
    ``filelayer reconcile`` must read the thread again."""
    store = ArchiveStore(root)
    store.update_thread("t1", name="chat about bread")
    store.close()
    manifest = root / "threads" / "t1" / "thread.json"
    before = os.stat(manifest)
    data = manifest.read_bytes()
    assert b"chat about bread" in data
    # A kernel whose file times move by the tick (4-10 ms before Linux 6.13) would give
    # the edit the same change time: wait until a new file's time is past the old one.
    probe = root / "probe"
    for _ in range(10_000):  # a bound, not a timing claim
        probe.write_bytes(b"x")
        if os.stat(probe).st_ctime_ns > before.st_ctime_ns:
            break
        time.sleep(0.001)
    probe.unlink()
    with open(manifest, "r+b") as f:
        f.write(data.replace(b"chat about bread", b"chat about toast"))
    os.utime(manifest, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(manifest)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    again = ArchiveStore(root)
    try:
        again.reconcile()
        assert [t["name"] for t in again.list_threads(user_id=None)[0]] == ["chat about toast"]
    finally:
        again.close()


def test_marks_stored_before_the_change_time_still_agree(root: Path) -> None:
    """An archive whose index stored watermarks without the change time (an earlier
    release): the reconcile after the upgrade reads no thread whose files did not
    change, and still reads the one that did."""
    run_writer(root, "", end="close")
    db = _database(root)
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT id, mark FROM marks").fetchall()
        for thread_id, mark in rows:
            parts = [p.rsplit(":", 1)[0] if p.count(":") == 3 else p for p in mark.split("/")]
            conn.execute("UPDATE marks SET mark = ? WHERE id = ?", ("/".join(parts), thread_id))
    assert len(rows) == 30
    (root / "threads" / "t04" / "steps.jsonl").open("ab").write(b"")  # no change
    os.utime(root / "threads" / "t06" / "thread.json", ns=(10**18, 10**18))  # a change
    store = ArchiveStore(root)
    try:
        assert store.reconcile().read == 1
        assert store.reconcile().read == 0
        store.update_thread("t05", name="renamed")
    finally:
        store.close()
    assert store.index.marks()["t05"].count(":") == 6  # the write stored its new mark
    again = ArchiveStore(root)
    try:
        assert again.reconcile().read == 0
    finally:
        again.close()


# -- git -----------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
@pytest.mark.parametrize("mode", ["wait", "background"])
def test_git_checkout_of_an_older_commit_under_a_running_process(tmp_path: Path, mode: str) -> None:
    repo = tmp_path / "project"
    repo.mkdir()
    git_out(repo, "init", "-q")
    git_out(repo, "config", "user.email", "test@example.com")
    git_out(repo, "config", "user.name", "Test")
    root = repo / "chats"
    running = ArchiveStore(root, heal=mode)  # type: ignore[arg-type]
    for n in range(3):
        running.update_thread(f"t{n}", name=f"chat {n}")
    git_out(repo, "add", "-A")
    git_out(repo, "commit", "-q", "-m", "three chats")
    old = git_out(repo, "rev-parse", "HEAD").strip()
    running.update_thread("t0", name="renamed")
    running.delete_thread("t1")
    running.update_thread("t3", name="chat 3")
    git_out(repo, "add", "-A")
    git_out(repo, "commit", "-q", "-m", "later")
    assert [t[:2] for t in sidebar(running)["threads"]] == [
        ("t3", "chat 3"),
        ("t2", "chat 2"),
        ("t0", "renamed"),
    ]

    git_out(repo, "checkout", "-q", old)
    sidebar(running)  # the sidebar's call notices git moved the work tree
    assert running.wait_healed(60)
    shown = sidebar(running)
    assert [t[:2] for t in shown["threads"]] == [
        ("t2", "chat 2"),
        ("t1", "chat 1"),
        ("t0", "chat 0"),
    ]
    assert shown == rebuilt_sidebar(root, tmp_path)
    running.close()

    git_out(repo, "checkout", "-q", "-")  # back to the newest commit, nothing running
    assert sidebar(ArchiveStore(root))["threads"][0][:2] == ("t3", "chat 3")


# -- users/ ---------------------------------------------------------------------------------


def test_a_user_file_changed_behind_the_index_moves_the_threads_it_owns(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A merge can change ``users/`` and no thread's own files: bob had a random id on
    each of two clones, the merge kept one user file, and his threads are filed under
    the id it holds. No thread watermark moved; the reconciler still re-files them (and
    only them), whoever calls it."""
    from filelayer.cli import main
    from filelayer.format import users

    store = ArchiveStore(root)
    with monkeypatch.context() as patched:
        patched.setattr(users, "user_id", lambda identifier: "bob-on-one")
        bob = store.upsert_user("bob@example.com")
    store.update_thread("bob-thread", name="bob's", user_id=bob["id"])
    store.update_thread("alice-thread", name="alice's", user_id=store.upsert_user("a@x")["id"])
    store.close()
    assert main(["--root", str(root), "reconcile"]) == 0
    (path,) = [p for p in (root / "users").iterdir() if p.name.startswith("bob")]
    path.write_text(path.read_text("utf-8").replace("bob-on-one", "bob-on-two"), "utf-8")

    capsys.readouterr()
    assert main(["--root", str(root), "reconcile"]) == 0
    assert "reconciled: 1 of 2 thread(s) read again" in capsys.readouterr().err
    store = ArchiveStore(root)
    try:
        assert store.healer.last is None or store.healer.last.read == 0
        listed, _ = store.list_threads(user_id="bob-on-two")
        assert [t["id"] for t in listed] == ["bob-thread"]
        assert store.list_threads(user_id="bob-on-one")[0] == []
    finally:
        store.close()
    assert main(["--root", str(root), "verify"]) == 0


def test_a_thread_of_a_derived_id_goes_to_the_id_the_user_file_holds(root: Path) -> None:
    """One clone made carol's id as an older release did (random), another derived it
    from her identifier; a merge kept the random one in her user file, and she logs in
    with it. The thread written with the derived id is hers too: it was filed under
    the derived id, in nobody's sidebar, and verify saw nothing wrong."""
    from filelayer.cli import main
    from filelayer.format import users

    store = ArchiveStore(root)
    derived = users.user_id("carol")
    carol = store.upsert_user("carol")
    assert carol["id"] == derived
    store.update_thread("on-a", name="on A", user_id=derived)
    store.close()
    (path,) = [p for p in (root / "users").iterdir() if p.name.startswith("carol")]
    path.write_text(path.read_text("utf-8").replace(derived, "carol-random"), "utf-8")
    for command in (["reconcile"], ["reindex"]):
        assert main(["--root", str(root), *command]) == 0
        store = ArchiveStore(root)
        try:
            listed, _ = store.list_threads(user_id="carol-random")
            assert [t["id"] for t in listed] == ["on-a"]
            assert store.list_threads(user_id=derived)[0] == []
        finally:
            store.close()
        assert main(["--root", str(root), "verify"]) == 0


@pytest.mark.parametrize("how", ["index directory removed", "pointer names no file"])
def test_a_running_store_whose_index_went_missing_builds_it_again(root: Path, how: str) -> None:
    """``index/`` deleted (or ``index/current`` naming a file that is gone) under a
    running app: the index is derived, and the next sidebar builds it again, as a
    damaged one is; the sidebar stayed empty, and later writes unindexed, until the
    app restarted."""
    import shutil

    store = ArchiveStore(root)
    try:
        for n in range(3):
            store.update_thread(f"t{n}", name=f"chat {n}")
        assert len(store.list_threads(user_id=None)[0]) == 3
        if how == "index directory removed":
            shutil.rmtree(root / "index")
        else:
            (root / "index" / "current").write_text("threads-0000000000000000.sqlite\n")
        assert sorted(t["id"] for t in store.list_threads(user_id=None)[0]) == ["t0", "t1", "t2"]
        store.update_thread("t3", name="chat 3")
        assert len(store.list_threads(user_id=None)[0]) == 4
    finally:
        store.close()


@pytest.mark.parametrize("table", ["threads", "docs", "feedback"])
def test_an_index_that_lacks_a_table_is_built_again(root: Path, table: str) -> None:
    """A database that opens but lacks one of the index's tables (a hand, another
    program) is damage like any other: built again, never a crash of every sidebar
    page and every write (the index is derived)."""
    import sqlite3

    from filelayer.cli import main

    store = ArchiveStore(root)
    store.update_thread("t1", name="chat")
    store.write_step({"id": "s1", "threadId": "t1", "type": "user_message", "output": "hi"})
    store.close()
    name = (root / "index" / "current").read_text().strip()
    conn = sqlite3.connect(root / "index" / name)
    conn.execute(f"DROP TABLE {table}")
    conn.commit()
    conn.close()
    store = ArchiveStore(root)
    try:
        store.write_step({"id": "s2", "threadId": "t1", "type": "user_message", "output": "yo"})
        assert [t["id"] for t in store.list_threads(user_id=None)[0]] == ["t1"]
        assert [t["id"] for t in store.list_threads(user_id=None, search="yo")[0]] == ["t1"]
        store.upsert_feedback(for_id="s1", value=1, thread_id="t1")
        assert [t["id"] for t in store.list_threads(user_id=None)[0]] == ["t1"]
        assert [t["id"] for t in store.list_threads(user_id=None, feedback=1)[0]] == ["t1"]
    finally:
        store.close()
    assert main(["--root", str(root), "verify"]) == 0
