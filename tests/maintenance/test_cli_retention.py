"""`filelayer prune` and `filelayer erase-user`: retention and the right to erasure.

Erasure is judged by what remains: after it, no file under the root (the derived index
included) holds the user's identifier, a text they wrote or the bytes of their elements,
and neither a re-run copy from a database or archive copied before, nor a live app that
goes on writing, brings any of it back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from filelayer import ArchiveStore
from filelayer.cli import main
from filelayer.maintenance.retention import is_erased, prune, select_old
from tests.support.cli import build_archive
from tests.support.git import git
from tests.support.processes import subprocess_env

ALICE = "alice@example.com"
SECRET_TEXT = "my mother's maiden name is Quetzalcoatl-7731"
SECRET_BYTES = b"\x00ALICE-ELEMENT-BYTES-5f2e9c\x01" * 40


def alice_archive(root: Path) -> ArchiveStore:
    """The CLI's three-thread archive, plus what a real Chainlit app writes for alice:
    a user message named after her identifier, a secret text and an element file."""
    store = build_archive(root)
    store.write_step(
        {
            "id": "bread-u9",
            "threadId": "bread",
            "type": "user_message",
            "name": ALICE,
            "output": SECRET_TEXT,
            "createdAt": "2026-03-05T10:00:00.000000Z",
        }
    )
    store.put_element(
        "cake",
        {"id": "note1", "type": "file", "name": "secret.bin", "forId": "cake-a3"},
        SECRET_BYTES,
    )
    # Threads begun in March (the archive's own were created today).
    for thread, day in (("bread", 1), ("cake", 3), ("hello", 4)):
        doc = store.read_manifest(thread)
        assert doc is not None
        store.put_manifest({**doc, "createdAt": f"2026-03-{day:02d}T09:00:00.000000Z"})
    return store


def leaks(root: Path, needles: list[bytes]) -> list[str]:
    """Every file under ``root`` (index, WAL, locks included) holding one of ``needles``."""
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path.relative_to(root)}: {n[:30]!r}" for n in needles if n in data]
    return found


NEEDLES = [
    ALICE.encode(),
    SECRET_TEXT.encode(),
    SECRET_BYTES[:60],
    b"Melt the chocolate",
    b"Feed the starter",
    b"sourdough",
]


def listed(store: ArchiveStore, search: str | None = None) -> list[str]:
    """The sidebar, as the index answers it (every user's threads)."""
    return [t["id"] for t in store.list_threads(user_id=None, first=10, search=search)[0]]


@pytest.fixture
def archive(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    alice_archive(root)
    monkeypatch.setenv("FILELAYER_ROOT", str(root))
    return root


# -- prune ---------------------------------------------------------------------------


def test_prune_is_a_dry_run_by_default(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prune", "--before", "2026-03-04"]) == 0
    out, err = capsys.readouterr()
    # bread was begun on March 1st but its last message is from March 5th: not old.
    assert [line.split()[0] for line in out.splitlines()] == ["cake"]
    assert "would delete 1 thread(s) with activity before 2026-03-04" in err
    assert "--yes" in err
    assert sorted(p.name for p in (archive / "threads").iterdir()) == ["bread", "cake", "hello"]


def test_prune_deletes_by_last_activity_not_by_creation(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["prune", "--before", "2026-03-04", "--yes"]) == 0
    err = capsys.readouterr().err
    assert "deleted 1 thread(s)" in err
    store = ArchiveStore(archive)
    assert store.is_deleted("cake") and not store.is_deleted("bread")
    assert sorted(p.name for p in (archive / "threads").iterdir()) == ["bread", "hello"]
    assert listed(store) == ["bread", "hello"]
    # a late write from a session still open does not bring it back
    store.write_step({"id": "late", "threadId": "cake", "type": "user_message", "output": "x"})
    assert store.get_thread("cake") is None
    assert main(["verify"]) == 0


def test_prune_for_one_user(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prune", "--before", "2027-01-01", "--user", "bob", "--yes"]) == 0
    assert "deleted 1 thread(s) with activity before 2027-01-01 by bob" in capsys.readouterr().err
    assert sorted(p.name for p in (archive / "threads").iterdir()) == ["bread", "cake"]


def test_prune_refuses_a_malformed_date(archive: Path) -> None:
    assert main(["prune", "--before", "March"]) == 2


@pytest.mark.parametrize(
    "date",
    [
        "\uff12\uff10\uff12\uff15-01-01",  # full-width digits: sorts after every year
        "2O26-01-01",  # a letter O
        "2026-13-45",  # no such month or day
        "2026-02-30",
        "0000-01-01",
        "2026-1-011",
        "+026-01-01",
    ],
)
def test_prune_refuses_what_is_no_date_and_deletes_nothing(
    archive: Path, date: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["prune", "--before", date, "--yes"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "YYYY-MM-DD" in err
    assert sorted(p.name for p in (archive / "threads").iterdir()) == ["bread", "cake", "hello"]
    # the other date options refuse it too, rather than filtering by it as text
    for option in ("--since", "--until"):
        assert main(["list", option, date]) == 2
        assert main(["export", "--all", option, date, "-o", str(archive.parent / "x")]) == 2
    capsys.readouterr()


def test_select_old_refuses_what_is_no_date_or_time(archive: Path) -> None:
    store = ArchiveStore(archive)
    for before in ("\uff12\uff10\uff12\uff15-01-01", "2O26-01-01", "2026-13-45", "soon", ""):
        with pytest.raises(ValueError, match="before"):
            select_old(store, before)
        with pytest.raises(ValueError, match="before"):
            prune(store, before, act=True)
    assert sorted(p.name for p in (archive / "threads").iterdir()) == ["bread", "cake", "hello"]
    # a date, or a time with an offset (compared as the instant it names)
    assert [c.id for c in select_old(store, "2026-03-04")] == ["cake"]
    assert [c.id for c in select_old(store, "2026-03-04T00:00:00+01:00")] == ["cake"]


def test_prune_keeps_a_thread_that_became_active_after_it_was_selected(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The app writes a message to a selected thread while prune deletes the ones before
    it: that message was acknowledged, so the thread is no longer old and stays."""
    store = ArchiveStore(archive)
    app = ArchiveStore(archive)  # the app's own store, on the same root

    def progress(n: int, total: int) -> None:
        if n == 1:  # cake is deleted; hello and bread are still to come
            app.write_step(
                {
                    "id": "fresh",
                    "threadId": "bread",
                    "type": "user_message",
                    "output": "KEEP ME",
                    "createdAt": "2026-04-01T00:00:00.000000Z",
                }
            )

    report = prune(store, "2026-03-06", act=True, progress=progress)
    assert [c.id for c in report.threads] == ["cake", "hello"]
    assert [c.id for c in report.kept] == ["bread"]
    bread = ArchiveStore(archive).get_thread("bread")
    assert bread is not None and "KEEP ME" in [s["output"] for s in bread["steps"]]
    assert not store.is_deleted("bread")
    assert sorted(p.name for p in (archive / "threads").iterdir()) == ["bread"]
    assert main(["verify"]) == 0


def test_prune_says_which_threads_it_kept(
    archive: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import filelayer.cli.retention as command

    class AppWritesMeanwhile:
        def __init__(self, label: str) -> None:
            pass

        def __call__(self, done: int, total: int) -> None:
            if done == 1:
                ArchiveStore(archive).write_step(
                    {
                        "id": "fresh",
                        "threadId": "bread",
                        "type": "user_message",
                        "output": "x",
                        "createdAt": "2026-04-01T00:00:00.000000Z",
                    }
                )

        def close(self) -> None:
            pass

    monkeypatch.setattr(command, "Progress", AppWritesMeanwhile)
    assert main(["prune", "--before", "2026-03-06", "--yes"]) == 0
    out, err = capsys.readouterr()
    assert [line.split()[0] for line in out.splitlines()] == ["cake", "hello"]
    assert "deleted 2 thread(s)" in err
    assert "kept 1 thread(s) written to while pruning (no longer old): bread" in err
    assert sorted(p.name for p in (archive / "threads").iterdir()) == ["bread"]


def test_prune_prints_names_escaped(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A chat user names the thread: an escape sequence or a new line in the name
    reaches the terminal as text, never as a control."""
    store = ArchiveStore(archive)
    doc = store.read_manifest("cake")
    assert doc is not None
    name = "Cake\x1b]0;pwned\x07\x1b[2J\rdeleted 0 thread(s)\nhello  forged"
    store.put_manifest({**doc, "name": name})
    assert main(["prune", "--before", "2026-03-04"]) == 0
    out, err = capsys.readouterr()
    assert "\x1b" not in out + err and "\x07" not in out
    assert "\r" not in out
    assert len(out.splitlines()) == 1  # no forged line
    assert out.startswith("cake ")
    assert "\\x1b]0;pwned\\x07" in out


# -- erase-user ----------------------------------------------------------------------


def test_erasure_leaves_no_byte_of_the_user_under_the_root(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert leaks(archive, NEEDLES)  # the search finds them before
    assert main(["erase-user", ALICE]) == 0
    err = capsys.readouterr().err
    assert "erased 2 thread(s)" in err and "the user's record" in err
    assert leaks(archive, NEEDLES) == []
    store = ArchiveStore(archive)
    assert store.get_user(ALICE) is None
    assert store.get_user("bob") is not None
    assert listed(store) == ["hello"]
    assert listed(store, search="chocolate") == []
    assert main(["verify"]) == 0
    # erasing again finds nothing more and says so
    assert main(["erase-user", ALICE]) == 1
    assert "nothing erased" in capsys.readouterr().err


def test_erasing_no_one_changes_nothing(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deleted = archive / "deleted.jsonl"
    before = deleted.read_bytes() if deleted.exists() else None
    assert main(["erase-user", "dave@example.com"]) == 1
    assert "nothing erased" in capsys.readouterr().err
    assert (deleted.read_bytes() if deleted.exists() else None) == before
    store = ArchiveStore(archive)
    assert not is_erased(store, None, "dave@example.com")
    # dave signing up afterwards is not taken for an erased user come back
    store.upsert_user("dave@example.com")
    assert main(["verify"]) == 0


def test_a_user_whose_record_is_gone_is_erased_all_the_same(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    user_file = next(p for p in (archive / "users").iterdir() if p.name.startswith("alice"))
    user_file.unlink()
    assert main(["erase-user", ALICE]) == 0
    assert "erased 2 thread(s)" in capsys.readouterr().err
    assert leaks(archive, NEEDLES) == []
    assert is_erased(ArchiveStore(archive), None, ALICE)


@pytest.mark.parametrize("where", ["renamed", "leftover of a crashed write"])
def test_a_copy_of_the_user_record_under_another_name_is_erased_too(
    archive: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    """The user's record under another name (renamed by a hand or a merge) or in a
    temporary file a crashed write left in ``users/``: erased with the rest (both
    stayed, with the identifier in them, while the command said it had erased)."""
    user_file = next(p for p in (archive / "users").iterdir() if p.name.startswith("alice"))
    if where == "renamed":
        user_file.rename(user_file.with_name("alice-old-name.json"))
    else:
        (archive / "users" / ".filelayer-1234abcd.tmp").write_bytes(user_file.read_bytes()[:-9])
    assert main(["erase-user", ALICE]) == 0
    capsys.readouterr()
    assert leaks(archive, NEEDLES) == []
    assert main(["verify"]) == 0


def test_a_renamed_record_alone_is_reported_erased_and_another_users_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only a renamed record of bob's (no thread): the command said "nothing erased"
    and exited 1 after removing it. And a crashed write's temporary file holding
    bobby's record is bobby's, though it holds the text "bob": it stays."""
    root = tmp_path / "chats"
    store = ArchiveStore(root)
    store.upsert_user("bob")
    store.upsert_user("bobby")
    store.close()
    users_dir = root / "users"
    bob = next(p for p in users_dir.iterdir() if p.name.startswith("bob-"))
    bobby = next(p for p in users_dir.iterdir() if p.name.startswith("bobby-"))
    bob.rename(users_dir / "renamed.json")
    leftover = users_dir / ".filelayer-bobby.json.1a2b3c4d.tmp"
    leftover.write_bytes(bobby.read_bytes()[:-3])  # torn
    capsys.readouterr()
    assert main(["--root", str(root), "erase-user", "bob"]) == 0
    assert "the user's record" in capsys.readouterr().err
    assert not (users_dir / "renamed.json").exists()
    assert leftover.exists() and bobby.exists()


def test_a_cutoff_may_be_an_iso_time_without_seconds(tmp_path: Path) -> None:
    store = ArchiveStore(tmp_path / "chats")
    store.write_step(
        {
            "id": "s1",
            "threadId": "t1",
            "type": "user_message",
            "output": "hi",
            "createdAt": "2020-01-01T00:00:00.000000Z",
        }
    )
    try:
        assert [c.id for c in select_old(store, "2030-01-01T10:00")] == ["t1"]
        assert [c.id for c in select_old(store, "2030-01-01T10:00Z")] == ["t1"]
        with pytest.raises(ValueError):
            select_old(store, "2030-01-01T1O:00")
    finally:
        store.close()


def test_prune_never_selects_a_thread_whose_time_is_not_an_instant(tmp_path: Path) -> None:
    """A time another program or a hand edit wrote in another form (a day alone, no
    seconds, words) names no instant the cutoff can be compared with: compared as text,
    a thread active on the very day of the cutoff sorted before it and was deleted.
    Prune is destructive, so such a thread is never selected (and stays listed by
    nothing: a person decides)."""
    store = ArchiveStore(tmp_path / "chats")
    user = store.upsert_user("alice")
    times = {
        "dateonly": "2026-03-04",
        "nosecs": "2026-03-04 10:00",
        "words": "yesterday",
        "old": "2026-03-03T23:59:59.000000Z",
        "same": "2026-03-04T00:00:00.000000Z",
    }
    for tid, created in times.items():
        store.put_manifest(
            {
                "id": tid,
                "name": tid,
                "userId": user["id"],
                "userIdentifier": "alice",
                "tags": None,
                "metadata": {},
                "createdAt": created,
                "updatedAt": created,
            }
        )
    try:
        assert [c.id for c in select_old(store, "2026-03-04")] == ["old"]
        report = prune(store, "2026-03-04", act=True)
        assert [c.id for c in report.threads] == ["old"]
        assert sorted(p.name for p in store.layout.threads.iterdir()) == sorted(
            set(times) - {"old"}
        )
    finally:
        store.close()


def test_a_re_run_copy_from_an_archive_copied_before_brings_nothing_back(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = tmp_path / "before"
    assert main(["copy", str(archive), str(before)]) == 0
    assert main(["erase-user", ALICE]) == 0
    capsys.readouterr()
    assert main(["copy", str(before), str(archive)]) == 0
    out = capsys.readouterr().out
    assert "erased in the destination" in out
    assert leaks(archive, NEEDLES) == []
    assert sorted(p.name for p in (archive / "threads").iterdir()) == ["hello"]
    assert main(["verify"]) == 0


def test_an_erasure_covers_a_record_made_while_the_clock_ran_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user who logged in while the machine's clock ran ahead has a record created
    "later" than an erasure made once the clock is right: the erasure is dated no
    earlier than what it erased, so a copy made before it brings nothing back."""
    import filelayer.store.accounts

    root = tmp_path / "chats"
    monkeypatch.setattr(filelayer.store.accounts, "now_iso", lambda: "2099-01-01T00:00:00.000000Z")
    store = ArchiveStore(root)
    store.upsert_user("carol@example.com")
    store.close()
    monkeypatch.undo()
    before = tmp_path / "before"
    assert main(["--root", str(root), "copy", str(root), str(before)]) == 0
    assert main(["--root", str(root), "erase-user", "carol@example.com"]) == 0
    assert main(["--root", str(root), "copy", str(before), str(root)]) == 0
    assert "erased in the destination" in capsys.readouterr().out
    assert ArchiveStore(root).get_user("carol@example.com") is None


@pytest.mark.parametrize("created", ["not a date", "2026-99-99T99:99:99Z", "２０９９-01-01"])
def test_an_erasure_covers_a_copied_record_whose_creation_is_no_time(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], created: str
) -> None:
    """A record whose ``createdAt`` names no instant (another program's, a hand edit)
    cannot be said to be made after the erasure: a copy does not bring it back."""
    before = tmp_path / "before"
    assert main(["copy", str(archive), str(before)]) == 0
    [record] = [p for p in (before / "users").iterdir() if p.name.startswith("alice")]
    doc = json.loads(record.read_text("utf-8"))
    record.write_text(json.dumps({**doc, "createdAt": created}), "utf-8")
    assert main(["erase-user", ALICE]) == 0
    capsys.readouterr()
    assert main(["copy", str(before), str(archive)]) == 0
    assert ArchiveStore(archive).get_user(ALICE) is None


def test_the_history_command_names_the_exact_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    root = repo / "data" / "chats"
    alice_archive(root)
    user_file = next(p.name for p in (root / "users").iterdir() if p.name.startswith("alice"))
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    subprocess.run(["git", "init", "-q", str(repo)], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "chats"], check=True, env=env)
    assert main(["--root", str(root), "erase-user", ALICE]) == 0
    out, err = capsys.readouterr()
    assert "git history and every clone still hold the erased files" in err
    assert out.startswith("git filter-repo --invert-paths")
    paths = [line.split("--path ")[1].rstrip(" \\") for line in out.splitlines()[1:]]
    assert paths == [
        "data/chats/threads/bread/",
        "data/chats/threads/cake/",
        f"data/chats/users/{user_file}",
    ]
    # git sees the deletions: every erased path is in the working tree's diff
    status = subprocess.run(
        ["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True
    ).stdout
    assert f"data/chats/users/{user_file}" in status
    assert "data/chats/threads/cake/steps.jsonl" in status


def test_the_history_command_keeps_the_whitespace_of_the_directory_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    root = repo / " chats "
    alice_archive(root)
    git(tmp_path, "init", "-q", str(repo))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "chats")
    assert main(["--root", str(root), "erase-user", ALICE]) == 0
    out = capsys.readouterr().out
    assert "--path ' chats /threads/bread/'" in out
    assert "--path ' chats /threads/cake/'" in out
    assert "--path chats" not in out


def test_the_history_command_names_the_threads_the_user_deleted_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A thread alice deleted herself last month is gone from the working tree, not from
    history: erasing her must name it too, or its texts stay in every commit."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    root = repo / "chats"
    store = alice_archive(root)
    git(tmp_path, "init", "-q", str(repo))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "chats")
    assert store.delete_thread("cake")  # alice deletes it in the app
    store.write_step({"id": "h9", "threadId": "hello", "type": "user_message", "output": "hi"})
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "later")
    store.close()
    assert main(["--root", str(root), "erase-user", ALICE]) == 0
    out, err = capsys.readouterr()
    assert "erased 1 thread(s)" in err
    paths = [line.split("--path ")[1].rstrip(" \\") for line in out.splitlines()[1:]]
    assert paths[:2] == ["chats/threads/bread/", "chats/threads/cake/"]
    assert len(paths) == 3 and paths[2].startswith("chats/users/alice")
    # bob's thread, in the same commits, is not named
    assert "hello" not in out
    # and once nothing of alice's is left in the working tree, history still is
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "erase alice")
    assert main(["--root", str(root), "erase-user", ALICE]) == 1
    out, err = capsys.readouterr()
    assert "nothing erased" in err
    assert "chats/threads/cake/" in out and "chats/threads/bread/" in out


def test_the_history_command_quotes_control_characters_of_names_in_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A directory a merge once brought in may have any name: the command still names
    it exactly, and no escape sequence of it reaches the terminal."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    root = repo / "chats"
    alice_archive(root)
    odd = root / "threads" / "x\x1b[2J\u202ey"
    odd.mkdir()
    (odd / "thread.json").write_text('{"id": "x", "userIdentifier": "alice@example.com"}')
    git(tmp_path, "init", "-q", str(repo))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "chats")
    shutil.rmtree(odd)
    assert main(["--root", str(root), "erase-user", ALICE]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "\u202e" not in out
    odd_line = next(line for line in out.splitlines() if "threads/x" in line)
    argument = odd_line.split("--path ")[1].rstrip(" \\")
    assert argument == "$'chats/threads/x\\x1b[2J\\xe2\\x80\\xaey/'"
    if shutil.which("bash"):  # the shell reads back the exact name
        echoed = subprocess.run(
            ["bash", "-c", f"printf %s {argument}"], capture_output=True, text=True
        ).stdout
        assert echoed == "chats/threads/x\x1b[2J\u202ey/"


def test_the_history_command_names_paths_holding_a_newline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A thread directory and a copy of the user's record whose names hold a newline
    (a merge or a hand brought them in, then they were deleted): git's object listing
    cuts such a path at the newline, so they were neither found nor named."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    root = repo / "chats"
    alice_archive(root)
    odd = root / "threads" / "x\ny"
    odd.mkdir()
    (odd / "thread.json").write_text('{"id": "x", "userIdentifier": "alice@example.com"}')
    record = next(p for p in (root / "users").iterdir() if p.name.startswith("alice"))
    copy = root / "users" / "alice\ncopy.json"
    copy.write_bytes(record.read_bytes())
    git(tmp_path, "init", "-q", str(repo))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "chats")
    shutil.rmtree(odd)
    copy.unlink()
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "tidy")
    assert main(["--root", str(root), "erase-user", ALICE]) == 0
    out = capsys.readouterr().out
    arguments = [line.split("--path ")[1].rstrip(" \\") for line in out.splitlines()[1:]]
    assert "$'chats/threads/x\\x0ay/'" in arguments
    assert "$'chats/users/alice\\x0acopy.json'" in arguments


def test_the_history_scan_does_not_depend_on_the_users_git_config(tmp_path: Path) -> None:
    """``diff.relative`` (paths relative to the archive), ``log.diffMerges=combined``
    (a merge as a combined diff) in the repository's configuration: a thread added only
    in a merge commit, and one added in an ordinary commit, both deleted since, are
    still found in history."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    from filelayer.maintenance.retention import in_history

    repo = tmp_path / "repo"
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    root = repo / "chats"

    def manifest(thread_id: str) -> Path:
        path = root / "threads" / thread_id / "thread.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"id": thread_id, "userIdentifier": ALICE}), "utf-8")
        return path

    manifest("t1")
    (root / "keep").write_text("k")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "one")
    git(repo, "checkout", "-qb", "side")
    (repo / "side").write_text("s")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "side")
    git(repo, "checkout", "-q", "main")
    (repo / "main").write_text("m")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "main")
    git(repo, "merge", "-q", "--no-commit", "side")
    manifest("t2")  # only the merge commit adds it
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "merge")
    git(repo, "rm", "-rq", "chats/threads")
    git(repo, "commit", "-qm", "gone")
    git(repo, "config", "diff.relative", "true")
    git(repo, "config", "log.diffMerges", "combined")
    assert in_history(root, ALICE) == ["threads/t1/", "threads/t2/"]


# -- while the app writes ------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from filelayer import ArchiveStore

    root, stop = Path(sys.argv[1]), Path(sys.argv[2])
    store = ArchiveStore(root)
    n = 0
    while not stop.exists():
        n += 1
        for thread in ("hello", "cake"):
            store.write_step({
                "id": f"{thread}-live{n}", "threadId": thread, "type": "assistant_message",
                "name": "Assistant", "output": f"live turn {n}",
                "createdAt": "2026-04-01T00:00:00.000000Z",
            })
        (stop.parent / "turns.tmp").write_text(str(n))
        (stop.parent / "turns.tmp").replace(stop.parent / "turns")
        time.sleep(0.002)
    print(n)
    """
)


def wait_for_turns(tmp_path: Path, turns: int, proc: subprocess.Popen[str]) -> int:
    """Wait until the writer has written ``turns`` turns (bounded for a stuck writer)."""
    deadline = time.monotonic() + 120  # a bound for a stuck writer, not a timing claim
    done = tmp_path / "turns"
    while not (done.exists() and int(done.read_text()) >= turns):
        assert proc.poll() is None, "the writer died"
        assert time.monotonic() < deadline, "the writer is stuck"
        time.sleep(0.01)
    return int(done.read_text())


@pytest.fixture
def live_writer(archive: Path, tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    stop = tmp_path / "stop"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(archive), str(stop)],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_turns(tmp_path, 1, proc)
        yield stop, proc
    finally:
        stop.touch()
        proc.wait(timeout=60)


def test_erasure_and_prune_while_an_app_writes(
    archive: Path,
    live_writer: tuple[Path, subprocess.Popen[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    stop, proc = live_writer
    store = ArchiveStore(archive)
    store.write_step(
        {"id": "a1", "threadId": "ancient", "type": "user_message", "output": "2025 talk"}
    )
    doc = store.read_manifest("ancient")
    assert doc is not None
    store.put_manifest({**doc, "createdAt": "2025-01-01T00:00:00.000000Z"})
    store.write_step({"id": "a1", "threadId": "ancient", "createdAt": "2025-01-01T00:00:00Z"})
    assert main(["erase-user", ALICE]) == 0
    assert main(["prune", "--before", "2026-01-01", "--yes"]) == 0
    assert "deleted 1 thread(s)" in capsys.readouterr().err
    assert store.is_deleted("ancient")
    # The writer goes on, into the erased thread too: two more turns after the erasure,
    # counted (a fixed sleep could pass with none on a loaded machine).
    turns = int((stop.parent / "turns").read_text())
    wait_for_turns(stop.parent, turns + 2, proc)
    stop.touch()
    turns = int(proc.communicate(timeout=60)[0])
    assert leaks(archive, NEEDLES) == []
    store = ArchiveStore(archive)
    assert store.get_thread("cake") is None and store.get_thread("bread") is None
    hello = store.get_thread("hello")
    assert hello is not None
    assert {f"hello-live{n}" for n in range(1, turns + 1)} <= {s["id"] for s in hello["steps"]}
    assert main(["verify"]) == 0
    assert listed(store) == ["hello"]


# -- a re-run copy from PostgreSQL ---------------------------------------------------


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    from benchmarks.pgserver import PostgresServer, find_bindir

    if find_bindir() is None:
        pytest.skip("PostgreSQL server binaries not found (install Debian's `postgresql`)")
    with PostgresServer() as pg:
        yield pg.url


def test_a_re_run_copy_from_postgresql_copied_before_brings_nothing_back(
    archive: Path, postgres: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("asyncpg")
    # Chainlit's own data layer's schema, filled from the archive before the erasure
    # (no storage client: the element rows are copied, their bytes stay behind).
    assert main(["copy", str(archive), postgres, "--create-schema"]) in (0, 1)
    assert main(["erase-user", ALICE]) == 0
    capsys.readouterr()
    assert main(["copy", postgres, str(archive)]) in (0, 1)
    out = capsys.readouterr().out
    assert "erased in the destination" in out
    assert leaks(archive, NEEDLES) == []
    store = ArchiveStore(archive)
    assert store.get_user(ALICE) is None
    assert sorted(p.name for p in (archive / "threads").iterdir()) == ["hello"]
    assert main(["verify"]) == 0
    # and the other way: the archive's tombstones delete the erased threads there
    assert main(["copy", str(archive), postgres]) in (0, 1)
    assert "2 deleted" in capsys.readouterr().out


def test_a_user_record_brought_back_by_a_merge_is_found_and_removed(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    user_file = next(p for p in (archive / "users").iterdir() if p.name.startswith("alice"))
    old = user_file.read_bytes()
    assert main(["erase-user", ALICE]) == 0
    user_file.write_bytes(old)  # what a merge from a clone made before does
    capsys.readouterr()
    assert main(["verify"]) == 1
    assert "the user was erased" in capsys.readouterr().out
    assert main(["verify", "--repair"]) == 0
    assert not user_file.exists()
    # the same person logging in again afterwards is a new user, and is left alone
    store = ArchiveStore(archive)
    store.upsert_user(ALICE)
    assert main(["verify"]) == 0


# -- a merge from a clone made before the erasure --------------------------------------


def live_turn(root: Path, thread: str, text: str) -> None:
    ArchiveStore(root).write_step(
        {
            "id": f"{thread}-{len(text)}",
            "threadId": thread,
            "type": "user_message",
            "output": text,
            "createdAt": "2026-04-01T00:00:00.000000Z",
        }
    )


@pytest.fixture
def two_clones(tmp_path: Path) -> tuple[Path, Path]:
    """A repository holding the archive at ``chats/``, and a clone of it made before
    anything is erased."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo, clone = tmp_path / "repo", tmp_path / "clone"
    alice_archive(repo / "chats")
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "chats")
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    return repo, clone


def test_a_merge_from_a_clone_made_before_brings_nothing_back(
    two_clones: tuple[Path, Path],
) -> None:
    repo, clone = two_clones
    live_turn(clone / "chats", "hello", "bob goes on chatting on the clone")
    git(clone, "add", "-A")
    git(clone, "commit", "-qm", "a turn on the clone")
    assert main(["--root", str(repo / "chats"), "erase-user", ALICE]) == 0
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "erase alice")
    merged = git(repo, "pull", "-q", "--no-rebase", str(clone), "main", check=False)
    assert merged.returncode == 0, merged.stdout + merged.stderr
    root = repo / "chats"
    # what the git hooks of the archive's git setup do after a merge
    assert main(["--root", str(root), "reindex"]) == 0
    assert leaks(root, NEEDLES) == []
    assert sorted(p.name for p in (root / "threads").iterdir()) == ["hello"]
    hello = ArchiveStore(root).get_thread("hello")
    assert hello is not None
    assert "bob goes on chatting on the clone" in [s["output"] for s in hello["steps"]]
    assert main(["--root", str(root), "verify"]) == 0


def test_an_erased_thread_a_merge_puts_back_stays_deleted(two_clones: tuple[Path, Path]) -> None:
    """The clone went on writing to a thread that was erased meanwhile: git stops on a
    modify/delete conflict, and whoever keeps the clone's side gets the directory back.
    The tombstone still decides: no read shows it, and `verify --repair` removes it."""
    repo, clone = two_clones
    live_turn(clone / "chats", "cake", "alice goes on chatting on the clone")
    git(clone, "add", "-A")
    git(clone, "commit", "-qm", "a turn on the clone")
    assert main(["--root", str(repo / "chats"), "erase-user", ALICE]) == 0
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "erase alice")
    merged = git(repo, "pull", "-q", "--no-rebase", str(clone), "main", check=False)
    assert merged.returncode != 0  # modify/delete: git asks a person
    git(repo, "add", "-A")  # the clone's side kept
    git(repo, "commit", "-qm", "merge, keeping the clone's files")
    root = repo / "chats"
    assert (root / "threads" / "cake" / "steps.jsonl").exists()
    store = ArchiveStore(root)
    assert store.get_thread("cake") is None
    assert main(["--root", str(root), "reindex"]) == 0
    assert listed(ArchiveStore(root)) == ["hello"]
    assert main(["--root", str(root), "verify"]) == 1
    assert main(["--root", str(root), "verify", "--repair"]) == 0
    assert leaks(root, NEEDLES) == []


# -- a thread made for the user while the erasure runs --------------------------------

PAUSED_APP = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from filelayer import ArchiveStore, UnknownUserError
    from filelayer._io import locks

    root, user_id = Path(sys.argv[1]), sys.argv[2]
    store = ArchiveStore(root)
    stripe = store.layout.thread_lock("late")
    real = locks._try
    paused = []

    def pausing(key, path):
        # Chainlit's update_thread for a new thread of the user, about to take the
        # thread's lock: it waits here while the erasure runs.
        if path == stripe and not paused:
            paused.append(True)
            print("paused", flush=True)
            sys.stdin.readline()
        return real(key, path)

    locks._try = pausing
    try:
        store.update_thread("late", name="a new chat", user_id=user_id)
    except UnknownUserError:
        print("refused", flush=True)
    else:
        print("written", flush=True)
    """
)


def test_a_thread_given_to_the_user_as_the_erasure_ran_is_refused_after_it(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new thread of the user whose write began before the erasure (its author
    looked up then) and reached the thread's lock after it is refused: the author is
    checked under the thread's lock, so no thread names the erased user afterwards."""
    store = ArchiveStore(archive)
    user = store.get_user(ALICE)
    assert user is not None
    store.close()
    app = subprocess.Popen(
        [sys.executable, "-c", PAUSED_APP, str(archive), str(user["id"])],
        env=subprocess_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert app.stdout is not None and app.stdin is not None
        assert app.stdout.readline().strip() == "paused"
        assert main(["erase-user", ALICE]) == 0
        app.stdin.write("go\n")
        app.stdin.flush()
        out, _ = app.communicate(timeout=60)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
    assert out.strip() == "refused"
    assert not (archive / "threads" / "late").exists()
    assert leaks(archive, [ALICE.encode()]) == []


NEW_THREAD = textwrap.dedent(
    """
    import sys
    from filelayer import ArchiveStore

    store = ArchiveStore(sys.argv[1])
    store.update_thread("late", name="a new chat", user_id=sys.argv[2])
    store.write_step({"id": "late-1", "threadId": "late", "type": "user_message",
                      "name": "alice@example.com", "output": "a late secret"})
    store.close()
    """
)


def test_a_thread_the_user_began_after_the_last_look_is_erased_too(
    archive: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The app of another process gives the user a new thread after the erasure last
    looked for the user's threads and before it removed the user's record: the erasure
    looks once more after the record is gone and the writes under way are done, and
    erases it with the rest."""
    from filelayer.maintenance import retention

    store = ArchiveStore(archive)
    user = store.get_user(ALICE)
    assert user is not None
    store.close()
    real = retention._write_user_tombstone

    def after_the_last_look(*args: object, **kwargs: object) -> None:
        subprocess.run(
            [sys.executable, "-c", NEW_THREAD, str(archive), str(user["id"])],
            env=subprocess_env(),
            check=True,
        )
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(retention, "_write_user_tombstone", after_the_last_look)
    assert main(["erase-user", ALICE]) == 0
    assert "erased 3 thread(s)" in capsys.readouterr().err
    assert not (archive / "threads" / "late").exists()
    assert leaks(archive, [ALICE.encode(), b"a late secret"]) == []
    assert main(["verify"]) == 0


LOGGED_IN_AGAIN = textwrap.dedent(
    """
    import sys
    from filelayer import ArchiveStore

    store = ArchiveStore(sys.argv[1])
    user = store.upsert_user("alice@example.com")
    store.update_thread("fresh", name="hello again", user_id=user["id"])
    store.write_step({"id": "fresh-1", "threadId": "fresh", "type": "user_message",
                      "output": "I am back"})
    store.close()
    """
)


def test_a_user_who_logs_in_again_as_the_erasure_ends_keeps_the_new_thread(
    archive: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The erasure's last look for the user's threads, after their record is gone, takes
    only those made before it began: a user who logged in again meanwhile (another
    worker) is a new user, whose new thread stays."""
    from filelayer.maintenance import retention

    real = retention._authored
    again: list[int] = []

    def logged_in_first(store: ArchiveStore, identifier: str, user_id: str | None) -> list[str]:
        if not again and not store.layout.user_file(identifier).exists():
            again.append(1)
            subprocess.run(
                [sys.executable, "-c", LOGGED_IN_AGAIN, str(archive)],
                env=subprocess_env(),
                check=True,
            )
        return real(store, identifier, user_id)

    monkeypatch.setattr(retention, "_authored", logged_in_first)
    assert main(["erase-user", ALICE]) == 0
    assert again == [1]
    assert "erased 2 thread(s)" in capsys.readouterr().err
    store = ArchiveStore(archive)
    thread = store.get_thread("fresh")
    assert thread is not None and [s["output"] for s in thread["steps"]] == ["I am back"]
    assert store.get_user(ALICE) is not None


def test_a_thread_whose_author_is_lost_is_skipped_and_named_with_exit_0(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A thread nothing names the author of any more (its manifest emptied, the index
    lost too) may be anyone's: the erasure leaves it and says so, but what it did erase
    worked, so it exits 0 (a script that stops on 1 would take a finished erasure for a
    failed one)."""
    store = ArchiveStore(archive)
    store.put_manifest({"id": "lost", "name": "who wrote this", "createdAt": "2026-03-01"})
    store.write_step({"id": "lost-1", "threadId": "lost", "type": "user_message", "output": "?"})
    store.layout.manifest("lost").write_bytes(b"")
    store.close()
    shutil.rmtree(archive / "index")
    assert main(["erase-user", ALICE]) == 0
    err = capsys.readouterr().err
    assert "erased 2 thread(s)" in err
    assert "skipped 1 thread(s)" in err and "lost" in err
    assert ArchiveStore(archive).is_deleted("lost") is False
