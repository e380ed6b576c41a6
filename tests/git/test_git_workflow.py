"""Committing an archive to git: a chat turn is a few added lines in one thread."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from filelayer import ArchiveStore
from filelayer.cli import main
from tests.support.cli import build_archive
from tests.support.git import git_out

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "project"
    repo.mkdir()
    git_out(repo, "init", "-q")
    git_out(repo, "config", "user.email", "test@example.com")
    git_out(repo, "config", "user.name", "Test")
    build_archive(repo / "chats")
    git_out(repo, "add", "-A")
    git_out(repo, "commit", "-q", "-m", "archive")
    return repo


def test_derived_files_are_ignored(repo: Path) -> None:
    tracked = git_out(repo, "ls-files").split()
    assert not [t for t in tracked if t.startswith(("chats/index/", "chats/locks/"))]
    assert "chats/threads/bread/steps.jsonl" in tracked
    assert "chats/.gitignore" in tracked


def test_a_chat_turn_only_adds_lines_to_that_thread(repo: Path) -> None:
    store = ArchiveStore(repo / "chats")
    for step in [
        {
            "id": "u9",
            "threadId": "cake",
            "type": "user_message",
            "output": "And icing?",
            "createdAt": "2026-03-09T10:00:00.000000Z",
        },
        {"id": "r9", "threadId": "cake", "type": "run", "createdAt": "2026-03-09T10:00:01Z"},
        {
            "id": "a9",
            "threadId": "cake",
            "type": "assistant_message",
            "parentId": "r9",
            "output": "",
            "createdAt": "2026-03-09T10:00:02.000000Z",
        },
        {"id": "a9", "threadId": "cake", "output": "Whip the cream."},
    ]:
        store.write_step(step)
    store.upsert_feedback(for_id="r9", value=1, thread_id="cake", feedback_id="fb9")
    store.put_element(
        "cake",
        {"id": "img9", "type": "image", "name": "icing.png", "forId": "a9", "mime": "image/png"},
        b"\x89PNG icing",
    )
    changed = git_out(repo, "status", "--porcelain", "--untracked-files=all").splitlines()
    paths = sorted(line[3:] for line in changed)
    assert paths == ["chats/threads/cake/elements/img9.png", "chats/threads/cake/steps.jsonl"]
    numstat = git_out(repo, "diff", "--numstat").split()
    added, removed, path = numstat
    assert (int(added), int(removed), path) == (6, 0, "chats/threads/cake/steps.jsonl")


def test_a_compacted_thread_is_byte_stable(repo: Path) -> None:
    main(["--root", str(repo / "chats"), "compact"])
    git_out(repo, "commit", "-q", "-am", "compact")
    for _ in range(3):
        main(["--root", str(repo / "chats"), "compact"])
        assert git_out(repo, "status", "--porcelain") == ""


@pytest.mark.parametrize("name", ["ch\nats", "ch\rats", "ch\u2028ats"])
def test_hooks_of_an_archive_whose_name_breaks_lines_still_run(tmp_path: Path, name: str) -> None:
    """The hooks name the archive in a comment: a line break in its name would end the
    comment and make the rest of it a command, failing every commit. Running git-setup
    again finds its block (and only it) again."""
    repo = tmp_path / "project"
    repo.mkdir()
    git_out(repo, "init", "-q")
    git_out(repo, "config", "user.email", "test@example.com")
    git_out(repo, "config", "user.name", "Test")
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text('#!/bin/sh\necho mine >> "$GIT_DIR/../mine.log"\n', "utf-8")
    root = repo / name
    store = ArchiveStore(root)
    store.write_step({"id": "s1", "threadId": "t", "type": "user_message", "output": "hi"})
    store.close()
    assert main(["--root", str(root), "git-setup"]) == 0
    installed = hook.read_text("utf-8")
    assert main(["--root", str(root), "git-setup"]) == 0
    assert hook.read_text("utf-8") == installed
    assert installed.startswith('#!/bin/sh\necho mine >> "$GIT_DIR/../mine.log"\n')
    git_out(repo, "add", "-A")
    done = subprocess.run(
        ["git", "-C", str(repo), "commit", "-q", "-m", "archive"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "threads/t/steps.jsonl" in git_out(repo, "ls-files", "-z").replace("\0", "\n")
