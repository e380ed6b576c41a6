"""Merges git stops on (modify/delete, two versions of one binary file), finished by
``filelayer resolve`` by what the merged archive says, whichever side merges the other.

Real git in temporary repositories; the merge driver and the hooks are the ones
``filelayer git-setup`` registers, run by git itself.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from filelayer import ArchiveStore
from filelayer.cli import main
from tests.support.git import ENV, git

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

ELEMENT = {"id": "e1", "type": "file", "name": "e1.txt", "forId": "s1", "mime": "text/plain"}
FILE = "chats/threads/t1/elements/e1.txt"

Change = Callable[[ArchiveStore], None]


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    origin = tmp_path / "origin"
    origin.mkdir()
    git(origin, "init", "-q", "-b", "main")
    store = ArchiveStore(origin / "chats")
    store.update_thread("t1", name="n")
    store.write_step({"id": "s1", "threadId": "t1", "type": "user_message", "output": "hi"})
    store.put_element("t1", ELEMENT, b"v1")
    store.close()
    git(origin, "add", "-A")
    git(origin, "commit", "-q", "-m", "archive")
    return origin


def clone(origin: Path, name: str) -> Path:
    target = origin.parent / name
    subprocess.run(["git", "clone", "-q", str(origin), str(target)], check=True, env=ENV)
    assert main(["--root", str(target / "chats"), "git-setup"]) == 0
    return target


def write(repo: Path, change: Change) -> None:
    store = ArchiveStore(repo / "chats")
    change(store)
    store.close()
    assert main(["--root", str(repo / "chats"), "snapshot", "-m", "change"]) == 0


def merge_and_resolve(repo: Path, other: Path) -> None:
    """Merge ``other``'s HEAD into ``repo``: git stops, ``resolve`` finishes it."""
    merged = git(repo, "pull", "-q", "--no-rebase", "--no-edit", str(other), "HEAD", check=False)
    assert merged.returncode != 0  # a conflict no driver is handed
    assert main(["--root", str(repo / "chats"), "resolve"]) == 0
    git(repo, "commit", "-q", "--no-edit")
    assert git(repo, "status", "--porcelain").stdout == ""
    assert main(["--root", str(repo / "chats"), "verify"]) == 0


def both_ways(origin: Path, one_side: Change, other_side: Change) -> tuple[Path, Path]:
    """Each side's change on two pairs of clones, merged one way and the other; both
    merges finish with the same tree."""
    one, two = clone(origin, "one"), clone(origin, "two")
    write(one, one_side)
    write(two, other_side)
    three, four = clone(one, "three"), clone(two, "four")
    merge_and_resolve(two, one)
    merge_and_resolve(three, four)
    assert (
        git(two, "rev-parse", "HEAD^{tree}").stdout == git(three, "rev-parse", "HEAD^{tree}").stdout
    )
    return two, three


def resend(data: bytes) -> Change:
    return lambda store: store.put_element("t1", ELEMENT, data) and None


def test_an_element_deleted_on_one_side_and_re_sent_on_the_other_stays_deleted(
    origin: Path,
) -> None:
    def delete(store: ArchiveStore) -> None:
        assert store.delete_element("e1", "t1")

    for repo in both_ways(origin, delete, resend(b"v2")):
        assert not (repo / FILE).exists()
        assert FILE not in git(repo, "ls-files").stdout.split()
        thread = ArchiveStore(repo / "chats").get_thread("t1")
        assert thread is not None and thread["elements"] == []


def test_an_element_re_sent_on_both_sides_keeps_the_newest_send(origin: Path) -> None:
    for repo in both_ways(origin, resend(b"from one"), resend(b"from two, later")):
        assert (repo / FILE).read_bytes() == b"from two, later"
        thread = ArchiveStore(repo / "chats").get_thread("t1")
        assert thread is not None
        assert [e["id"] for e in thread["elements"]] == ["e1"]


def test_an_element_re_sent_for_a_step_deleted_on_the_other_side_goes_with_the_step(
    origin: Path,
) -> None:
    def delete(store: ArchiveStore) -> None:
        assert store.delete_step("s1", "t1")

    for repo in both_ways(origin, delete, resend(b"v2")):
        assert not (repo / FILE).exists()
        thread = ArchiveStore(repo / "chats").get_thread("t1")
        assert thread is not None and thread["steps"] == [] and thread["elements"] == []


def test_resolve_keeps_the_bytes_the_element_record_names(origin: Path) -> None:
    """The merged journal's record names the bytes by size and hash: the version of the
    file that matches them is kept, not the one git left in the work tree."""
    one, two = clone(origin, "one"), clone(origin, "two")
    write(two, resend(b"from two"))
    write(one, resend(b"from one, later"))
    merge_and_resolve(two, one)
    assert (two / FILE).read_bytes() == b"from one, later"
    digest = hashlib.sha256(b"from one, later").hexdigest()
    assert digest.encode() in (two / "chats/threads/t1/steps.jsonl").read_bytes()


def test_a_user_erased_on_one_side_who_logs_in_on_the_other_stays_erased(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``erase-user`` on one clone while the user logs in on another: git stops on the
    user file (deleted against changed); the erasure's user tombstone decides."""
    origin = tmp_path / "origin"
    origin.mkdir()
    git(origin, "init", "-q", "-b", "main")
    store = ArchiveStore(origin / "chats")
    store.upsert_user("alice", metadata={"image": "v1"})
    store.upsert_user("bob")
    store.close()
    git(origin, "add", "-A")
    git(origin, "commit", "-q", "-m", "archive")
    one, two = clone(origin, "one"), clone(origin, "two")
    assert main(["--root", str(one / "chats"), "erase-user", "alice"]) == 0
    git(one, "add", "-A")
    git(one, "commit", "-q", "-m", "erase")
    write(two, lambda store: store.upsert_user("alice", metadata={"image": "v2"}) and None)
    three, four = clone(one, "three"), clone(two, "four")
    merge_and_resolve(two, one)
    merge_and_resolve(three, four)
    assert (
        git(two, "rev-parse", "HEAD^{tree}").stdout == git(three, "rev-parse", "HEAD^{tree}").stdout
    )
    capsys.readouterr()
    for repo in (two, three):
        tracked = git(repo, "ls-files", "chats/users").stdout.split()
        assert len(tracked) == 1 and tracked[0].startswith("chats/users/bob-")
        store = ArchiveStore(repo / "chats")
        assert store.get_user("alice") is None
        assert store.get_user("bob") is not None
        store.close()


@pytest.mark.parametrize("how", ["--no-rebase", "--rebase"])
@pytest.mark.parametrize(
    ("name", "mime", "stored"),
    [("secret.png", "image/png", "e1.png"), ("README", None, "e1")],  # no extension
)
def test_an_element_sent_for_a_step_deleted_on_the_other_side_leaves_no_file(
    tmp_path: Path, how: str, name: str, mime: str | None, stored: str
) -> None:
    """A clean merge of a step's deletion with an element attached to that step: the
    merged journal deletes the element, and its file goes too, as on a single clone
    (which stores no file for an element sent for a deleted step)."""
    origin = tmp_path / "origin"
    origin.mkdir()
    git(origin, "init", "-q", "-b", "main")
    store = ArchiveStore(origin / "chats")
    store.update_thread("T", name="T")
    store.write_step({"id": "s1", "threadId": "T", "type": "assistant_message", "output": "hi"})
    store.close()
    git(origin, "add", "-A")
    git(origin, "commit", "-q", "-m", "archive")
    one, two = clone(origin, "one"), clone(origin, "two")

    def delete(store: ArchiveStore) -> None:
        assert store.delete_step("s1", "T")

    image = {"id": "e1", "type": "file", "name": name, "forId": "s1", "mime": mime}
    write(one, delete)
    write(two, lambda store: store.put_element("T", image, b"PNG bytes") and None)
    three, four = clone(one, "three"), clone(two, "four")
    git(two, "pull", "-q", how, "--no-edit", str(one), "HEAD")
    git(three, "pull", "-q", how, "--no-edit", str(four), "HEAD")
    for repo in (two, three):
        assert not (repo / f"chats/threads/T/elements/{stored}").exists()
        assert main(["--root", str(repo / "chats"), "verify"]) == 0
        thread = ArchiveStore(repo / "chats").get_thread("T")
        assert thread is not None and thread["steps"] == [] and thread["elements"] == []
        assert main(["--root", str(repo / "chats"), "snapshot", "-m", "merged"]) == 0
        assert f"chats/threads/T/elements/{stored}" not in git(repo, "ls-files").stdout.split()
        assert git(repo, "status", "--porcelain").stdout == ""
    assert (
        git(two, "rev-parse", "HEAD^{tree}").stdout == git(three, "rev-parse", "HEAD^{tree}").stdout
    )


def test_the_merge_driver_with_a_version_it_cannot_read_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "filelayer", "merge-driver"),
            *(str(missing / "base"), str(missing / "ours"), str(missing / "theirs")),
            "chats/threads/t/steps.jsonl",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("filelayer: ")
    assert len(done.stderr.strip().splitlines()) == 1


def test_the_pre_commit_hook_outside_a_repository_says_so_in_one_line(tmp_path: Path) -> None:
    ArchiveStore(tmp_path / "chats").close()
    done = subprocess.run(
        [sys.executable, "-m", "filelayer", "--root", "chats", "git-hook", "pre-commit"],
        capture_output=True,
        text=True,
        env={**ENV, "GIT_CEILING_DIRECTORIES": str(tmp_path.parent)},
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("filelayer: ")
    assert len(done.stderr.strip().splitlines()) == 1
    assert "usage" not in done.stderr


@pytest.mark.parametrize(
    ("puller", "how"),
    [("erasing", "--no-rebase"), ("writing", "--no-rebase"), ("writing", "--rebase")],
)
def test_a_thread_an_erased_user_began_on_another_clone_before_the_erasure_goes_in_the_merge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], puller: str, how: str
) -> None:
    """``erase-user`` on one clone while the user began a thread on another, before the
    erasure: git merges the new thread in cleanly (no conflict, so no ``resolve``), and
    the ``post-merge`` (or ``post-rewrite``) hook must erase it, or the erased user's
    words come back; whichever clone pulls, though on the writing one the merge leaves
    the thread's files as they were."""
    origin = tmp_path / "origin"
    origin.mkdir()
    git(origin, "init", "-q", "-b", "main")
    store = ArchiveStore(origin / "chats")
    alice = store.upsert_user("alice")
    store.update_thread("t0", name="old", user_id=alice["id"])
    store.close()
    git(origin, "add", "-A")
    git(origin, "commit", "-q", "-m", "archive")
    one, two = clone(origin, "one"), clone(origin, "two")

    def begin(store: ArchiveStore) -> None:
        store.update_thread("t9", name="secret", user_id=alice["id"])
        store.write_step({"id": "x", "threadId": "t9", "type": "user_message", "output": "words"})

    write(two, begin)
    assert main(["--root", str(one / "chats"), "erase-user", "alice"]) == 0
    git(one, "add", "-A")
    git(one, "commit", "-q", "-m", "erase")
    if puller == "writing":
        one, two = two, one
    git(one, "pull", "-q", how, "--no-edit", str(two), "HEAD")
    capsys.readouterr()
    assert git(one, "ls-files", "chats/threads").stdout == ""
    assert not (one / "chats" / "threads" / "t9").exists()
    data = b"".join(p.read_bytes() for p in (one / "chats").rglob("*") if p.is_file())
    assert b"words" not in data and b"secret" not in data
    git(one, "commit", "-q", "-m", "merge the erasure")
    # Its tombstone bears the erasure's time, not the hook's: whichever clone merges,
    # the same bytes.
    lines = [json.loads(x) for x in (one / "chats" / "deleted.jsonl").read_text().splitlines()]
    erasure = next(x["deletedAt"] for x in lines if "identifierSha256" in x)
    assert {x["deletedAt"] for x in lines if x.get("id") == "t9"} == {erasure}
    assert main(["--root", str(one / "chats"), "verify"]) == 0
    store = ArchiveStore(one / "chats")
    assert store.get_thread("t9") is None
    assert store.list_threads(user_id=alice["id"])[0] == []
    store.close()


def test_resolve_merges_the_journals_and_manifests_of_a_merge_made_without_the_driver(
    origin: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A clone where ``git-setup`` never ran: git merges the archive as text and stops
    on a journal both sides appended to and a manifest both renamed. ``resolve`` merges
    them as the driver would have (its result depends only on the three versions), so
    that both sides' turns are read back, rather than leaving conflict markers."""
    one, two = origin.parent / "one", origin.parent / "two"
    for target in (one, two):
        subprocess.run(["git", "clone", "-q", str(origin), str(target)], check=True, env=ENV)
    for repo, tag in ((one, "a"), (two, "b")):
        store = ArchiveStore(repo / "chats")
        store.write_step({"id": tag, "threadId": "t1", "type": "user_message", "output": tag})
        store.update_thread("t1", name=f"named {tag}")
        store.close()
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", tag)
    merged = git(one, "pull", "-q", "--no-rebase", "--no-edit", str(two), "HEAD", check=False)
    assert merged.returncode != 0
    assert main(["--root", str(one / "chats"), "resolve"]) == 0
    capsys.readouterr()
    git(one, "commit", "-q", "--no-edit")
    for path in git(one, "ls-files").stdout.split():
        assert b"<<<<<<<" not in (one / path).read_bytes(), path
    assert main(["--root", str(one / "chats"), "verify"]) == 0
    store = ArchiveStore(one / "chats")
    thread = store.get_thread("t1")
    assert thread is not None
    assert [s["id"] for s in thread["steps"]] == ["s1", "a", "b"]
    assert thread["name"] == "named b"
    store.close()


def test_resolve_in_a_rebase_says_to_continue_the_rebase(
    origin: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rebase git stopped on (here in a clone without the driver) is finished by
    ``git rebase --continue``, not by the ``git commit`` that finishes a merge."""
    one, two = origin.parent / "one", origin.parent / "two"
    for target in (one, two):
        subprocess.run(["git", "clone", "-q", str(origin), str(target)], check=True, env=ENV)
    for repo, tag in ((one, "a"), (two, "b")):
        store = ArchiveStore(repo / "chats")
        store.write_step({"id": tag, "threadId": "t1", "type": "user_message", "output": tag})
        store.close()
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", tag)
    assert git(one, "pull", "-q", "--rebase", str(two), "HEAD", check=False).returncode != 0
    capsys.readouterr()
    assert main(["--root", str(one / "chats"), "resolve"]) == 0
    assert "git rebase --continue" in capsys.readouterr().err
    git(one, "-c", "core.editor=true", "rebase", "--continue")
    store = ArchiveStore(one / "chats")
    thread = store.get_thread("t1")
    assert thread is not None and {s["id"] for s in thread["steps"]} == {"s1", "a", "b"}
    store.close()
