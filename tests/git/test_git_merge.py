"""Sharing an archive through git: two clones written independently merge, both ways,
without a conflict a person has to resolve, and read as the union of both sides.

Real git in temporary repositories; the merge driver and the hooks are the ones
``filelayer git-setup`` registers, run by git itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from filelayer import ArchiveStore
from filelayer.cli import main
from tests.support.git import ENV, git

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def turn(store: ArchiveStore, thread: str, tag: str, minute: int) -> None:
    store.write_step(
        {
            "id": f"u-{tag}",
            "threadId": thread,
            "type": "user_message",
            "output": f"question {tag}",
            "createdAt": f"2026-05-01T10:{minute:02d}:00.000000Z",
        }
    )
    store.write_step(
        {
            "id": f"a-{tag}",
            "threadId": thread,
            "type": "assistant_message",
            "output": f"answer {tag}",
            "createdAt": f"2026-05-01T10:{minute:02d}:01.000000Z",
        }
    )


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    origin = tmp_path / "origin"
    origin.mkdir()
    git(origin, "init", "-q", "-b", "main")
    store = ArchiveStore(origin / "chats")
    alice = store.upsert_user("alice@example.com")
    for thread in ("shared", "doomed"):
        store.update_thread(thread, name=thread, user_id=alice["id"])
        turn(store, thread, f"{thread}-base", 0)
    store.close()
    git(origin, "add", "-A")
    git(origin, "commit", "-q", "-m", "archive")
    return origin


def clone(origin: Path, name: str) -> Path:
    target = origin.parent / name
    subprocess.run(["git", "clone", "-q", str(origin), str(target)], check=True, env=ENV)
    assert main(["--root", str(target / "chats"), "git-setup"]) == 0
    return target


def work(repo: Path, tag: str, minute: int) -> None:
    """One clone's day: bob logs in for the first time and starts a thread; alice adds a
    turn to the shared thread, renames it, rates the answer, attaches a file."""
    store = ArchiveStore(repo / "chats")
    bob = store.upsert_user("bob@example.com", {"clone": tag})
    store.update_thread(f"bob-{tag}", name=f"bob on {tag}", user_id=bob["id"])
    turn(store, f"bob-{tag}", f"bob-{tag}", minute)
    turn(store, "shared", tag, minute)
    store.update_thread("shared", name=f"renamed on {tag}", metadata={tag: True})
    store.upsert_feedback(for_id=f"a-{tag}", value=1, thread_id="shared", feedback_id=f"fb-{tag}")
    store.put_element(
        "shared",
        {"id": f"el-{tag}", "type": "file", "name": "notes.txt", "forId": f"a-{tag}"},
        f"notes\r\nfrom {tag}\n".encode(),
    )
    if tag == "one":
        assert store.delete_thread("doomed")
    store.close()
    assert main(["--root", str(repo / "chats"), "snapshot", "-m", f"work on {tag}"]) == 0
    git(repo, "branch", f"side-{tag}")


def check_merged(repo: Path) -> None:
    tracked = git(repo, "ls-files").stdout.split()
    for path in tracked:
        data = (repo / path).read_bytes()
        assert b"<<<<<<<" not in data and b">>>>>>>" not in data, path
    assert git(repo, "status", "--porcelain").stdout == ""
    assert main(["--root", str(repo / "chats"), "verify"]) == 0
    store = ArchiveStore(repo / "chats")
    thread = store.get_thread("shared")
    assert thread is not None
    outputs = {s["id"]: s["output"] for s in thread["steps"]}
    for tag in ("shared-base", "one", "two"):
        assert outputs[f"u-{tag}"] == f"question {tag}"
        assert outputs[f"a-{tag}"] == f"answer {tag}"
    assert {s["id"]: (s["feedback"] or {}).get("value") for s in thread["steps"]}["a-two"] == 1
    assert {e["id"] for e in thread["elements"]} == {"el-one", "el-two"}
    assert thread["metadata"] == {"one": True, "two": True}
    assert thread["name"] in ("renamed on one", "renamed on two")
    assert store.get_thread("doomed") is None
    bob = store.get_user("bob@example.com")
    alice = store.get_user("alice@example.com")
    assert bob is not None and alice is not None
    bobs, _ = store.list_threads(user_id=bob["id"])
    assert sorted(t["id"] for t in bobs) == ["bob-one", "bob-two"]
    alices, _ = store.list_threads(user_id=alice["id"])
    assert [t["id"] for t in alices] == ["shared"]
    store.close()


def test_two_clones_merge_both_ways_without_conflicts(origin: Path) -> None:
    one, two = clone(origin, "one"), clone(origin, "two")
    work(one, "one", 1)
    work(two, "two", 2)
    git(one, "pull", "-q", "--no-rebase", "--no-edit", str(two), "side-two")
    git(two, "pull", "-q", "--no-rebase", "--no-edit", str(one), "side-one")
    check_merged(one)
    check_merged(two)
    # The merge does not depend on its direction: the same files, byte for byte.
    assert (
        git(one, "rev-parse", "HEAD^{tree}").stdout == git(two, "rev-parse", "HEAD^{tree}").stdout
    )


def test_pull_rebase_replays_through_the_driver(origin: Path) -> None:
    one, two = clone(origin, "one"), clone(origin, "two")
    work(one, "one", 1)
    work(two, "two", 2)
    git(two, "pull", "-q", "--rebase", str(one), "side-one")
    check_merged(two)


def test_a_thread_deleted_on_one_side_and_continued_on_the_other_stays_deleted(
    origin: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one, two = clone(origin, "one"), clone(origin, "two")
    store = ArchiveStore(one / "chats")
    assert store.delete_thread("doomed")
    store.close()
    assert main(["--root", str(one / "chats"), "snapshot", "-m", "delete"]) == 0
    store = ArchiveStore(two / "chats")
    turn(store, "doomed", "late", 5)
    store.close()
    assert main(["--root", str(two / "chats"), "snapshot", "-m", "continue"]) == 0
    merged = git(two, "pull", "-q", "--no-rebase", "--no-edit", str(one), "HEAD", check=False)
    assert merged.returncode != 0  # git stops: a modify/delete conflict reaches no driver
    capsys.readouterr()
    assert main(["--root", str(two / "chats"), "resolve"]) == 0
    out = capsys.readouterr().out
    assert "thread doomed: deleted on one side, kept deleted" in out
    git(two, "commit", "-q", "--no-edit")
    assert not (two / "chats" / "threads" / "doomed").exists()
    assert main(["--root", str(two / "chats"), "verify"]) == 0
    assert ArchiveStore(two / "chats").get_thread("doomed") is None


@pytest.mark.parametrize("target", ["a directory", "nothing"])
def test_resolve_removes_a_deleted_thread_s_link_never_what_it_points_to(
    origin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    """A branch can bring a link where a thread directory was (git keeps links). The
    thread was deleted on the other side: ``resolve`` removes the link itself, as
    ``verify --repair`` does, and nothing it points to (it crashed on such a link)."""
    one, two = clone(origin, "one"), clone(origin, "two")
    store = ArchiveStore(one / "chats")
    assert store.delete_thread("doomed")
    store.close()
    assert main(["--root", str(one / "chats"), "snapshot", "-m", "delete"]) == 0
    outside = tmp_path / "outside"
    if target == "a directory":
        outside.mkdir()
        (outside / "thread.json").write_bytes(b"not yours\n")
        (outside / "steps.jsonl").write_bytes(b"not yours either\n")
    before = {str(p): p.read_bytes() for p in tmp_path.glob("outside/*")}
    doomed = two / "chats" / "threads" / "doomed"
    shutil.rmtree(doomed)
    doomed.symlink_to(outside, target_is_directory=True)
    git(two, "add", "-A")
    git(two, "commit", "-q", "-m", "a link in place of a thread")
    git(two, "pull", "-q", "--no-rebase", "--no-edit", str(one), "HEAD", check=False)
    capsys.readouterr()
    assert main(["--root", str(two / "chats"), "resolve"]) == 0
    assert "thread doomed: deleted on one side, kept deleted" in capsys.readouterr().out
    assert not os.path.lexists(doomed)
    assert {str(p): p.read_bytes() for p in tmp_path.glob("outside/*")} == before
    assert git(two, "ls-files", "chats/threads/doomed").stdout == ""
    assert main(["--root", str(two / "chats"), "verify"]) == 0
    assert ArchiveStore(two / "chats").get_thread("doomed") is None


@pytest.mark.parametrize("link", ["threads", "deleted.jsonl"])
def test_resolve_through_a_linked_archive_directory_removes_nothing(
    origin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], link: str
) -> None:
    """A branch can replace ``threads/`` with a link out of the archive, and add a
    tombstone naming a directory there: ``resolve`` refuses before removing anything
    (it removed the directory the link led to, then refused)."""
    two = clone(origin, "two")
    outside = tmp_path / "outside"
    (outside / "victim").mkdir(parents=True)
    (outside / "victim" / "keep.txt").write_bytes(b"precious\n")
    chats = two / "chats"
    tombstone = b'{"deletedAt":"2026-01-01T00:00:00.000000Z","id":"victim"}\n'
    if link == "threads":
        git(two, "rm", "-r", "-q", "chats/threads")
        shutil.rmtree(chats / "threads", ignore_errors=True)
        (chats / "threads").symlink_to(outside, target_is_directory=True)
        with (chats / "deleted.jsonl").open("ab") as f:
            f.write(tombstone)
    else:
        (outside / "deleted.jsonl").write_bytes(tombstone)
        (chats / "threads" / "victim").mkdir()
        (chats / "threads" / "victim" / "keep.txt").write_bytes(b"precious\n")
        (chats / "deleted.jsonl").unlink(missing_ok=True)
        (chats / "deleted.jsonl").symlink_to(outside / "deleted.jsonl")
    git(two, "add", "-A")
    git(two, "commit", "-q", "--no-verify", "-m", "a link out of the archive")  # another clone's
    capsys.readouterr()
    assert main(["--root", str(chats), "resolve"]) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert (outside / "victim" / "keep.txt").read_bytes() == b"precious\n"
    if link == "deleted.jsonl":
        assert (chats / "threads" / "victim" / "keep.txt").exists()


def test_git_keeps_the_bytes_of_element_files(origin: Path) -> None:
    one = clone(origin, "one")
    attributes = git(
        one,
        "check-attr",
        "-a",
        "chats/threads/shared/steps.jsonl",
        "chats/threads/x/elements/e.txt",
    ).stdout
    assert "steps.jsonl: merge: filelayer" in attributes
    assert "steps.jsonl: text: unset" in attributes
    assert "e.txt: binary: set" in attributes
    assert "e.txt: merge: unset" in attributes


def test_a_user_first_seen_on_two_clones_before_derived_ids_is_one_user(
    origin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Archives written before user ids were derived from identifiers gave bob a random
    id on each clone; after the merge one user file (one id) remains, and his sidebar
    still holds the threads of both clones."""
    import uuid

    from filelayer.format import users

    one, two = clone(origin, "one"), clone(origin, "two")
    with monkeypatch.context() as patched:
        patched.setattr(users, "user_id", lambda identifier: str(uuid.uuid4()))
        work(one, "one", 1)
        work(two, "two", 2)
    git(one, "pull", "-q", "--no-rebase", "--no-edit", str(two), "side-two")
    check_merged(one)


@pytest.mark.parametrize("detector", ["running store", "opening"])
def test_without_hooks_a_merge_of_users_is_noticed(
    origin: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, detector: str
) -> None:
    """The same merge with no hook run: a store open across the pull notices git moved
    at its next ``list_threads``, and a store opened after it at opening; either way the
    one reconciler re-files bob's threads under the id the kept user file holds."""
    import json

    from filelayer.format import users

    one, two = clone(origin, "one"), clone(origin, "two")
    for repo, tag in ((one, "one"), (two, "two")):
        with monkeypatch.context() as patched:
            patched.setattr(users, "user_id", lambda identifier, tag=tag: f"bob-id-{tag}")
            work(repo, tag, 1 if tag == "one" else 2)
    no_hooks = tmp_path / "no-hooks"
    no_hooks.mkdir()
    running = ArchiveStore(one / "chats") if detector == "running store" else None
    pull = ("pull", "-q", "--no-rebase", "--no-edit", str(two), "side-two")
    git(one, "-c", f"core.hooksPath={no_hooks}", *pull)
    (bob_file,) = (one / "chats" / "users").glob("bob*.json")
    bob_id = json.loads(bob_file.read_text("utf-8"))["id"]
    store = running or ArchiveStore(one / "chats")
    try:
        bobs, _ = store.list_threads(user_id=bob_id)
        assert sorted(t["id"] for t in bobs) == ["bob-one", "bob-two"]
    finally:
        store.close()
    assert main(["--root", str(one / "chats"), "verify"]) == 0


def test_an_octopus_merge_stopped_as_text_is_finished_by_resolve(
    origin: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Git's octopus strategy runs no merge driver: where two of the branches changed
    one archive file it merges it as text and stops with conflict markers in the work
    tree. ``resolve`` merges those files as the driver would have, so the octopus ends
    as the same tree as merging the branches one at a time."""
    one, two, three = clone(origin, "one"), clone(origin, "two"), clone(origin, "three")
    work(two, "one", 1)
    work(three, "two", 2)
    for repo in (one, three):
        git(repo, "fetch", "-q", str(two), "side-one:side-one")
    git(one, "fetch", "-q", str(three), "side-two:side-two")
    assert git(one, "merge", "--no-edit", "side-one", "side-two", check=False).returncode != 0
    capsys.readouterr()
    assert main(["--root", str(one / "chats"), "resolve"]) == 0
    git(one, "commit", "-q", "--no-edit")
    assert len(git(one, "log", "--format=%P", "-1").stdout.split()) == 2
    check_merged(one)
    git(three, "merge", "-q", "--no-edit", "side-one")
    assert (
        git(one, "rev-parse", "HEAD^{tree}").stdout == git(three, "rev-parse", "HEAD^{tree}").stdout
    )
