"""Archives written by earlier releases open, verify and read the same with this one.

``tests/conformance/release-<release>/archive/`` is an archive as that release wrote it,
byte for byte (made once by the script beside it with that release's code), and
``recorded.json`` what that release answered. The conformance test
(tests/format/test_conformance.py) reads the same archives in the corpus's own shape. The
committed bytes are the source of truth: never regenerate them. Opening such an archive
also brings the files the layer owns up to date (``.gitignore``), and says so in the log;
the user's own lines stay.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from filelayer import ArchiveStore
from filelayer.cli import main
from filelayer.errors import StorageWriteError
from filelayer.format import gitattributes
from filelayer.format.layout import GITIGNORE_0_1_0, GITIGNORE_BLOCK
from tests.support.git import git_out

CORPUS = Path(__file__).resolve().parent.parent / "conformance"
RELEASES = ["0.1.0"]


def release_dir(release: str) -> Path:
    return CORPUS / f"release-{release}"


HAS_GIT = shutil.which("git") is not None


def recorder() -> Any:
    """The script that recorded the expected answers: the same questions are asked."""
    spec = importlib.util.spec_from_file_location(
        "make_v1_fixture", release_dir("0.1.0") / "make_v1_fixture.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def expected(release: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((release_dir(release) / "recorded.json").read_text("utf-8"))
    return result


def answers(root: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(json.dumps(recorder().expected(root)))
    return result


def tree(root: Path) -> dict[str, bytes | None]:
    return {
        p.relative_to(root).as_posix(): None if p.is_dir() else p.read_bytes()
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture(params=RELEASES)
def release(request: Any) -> str:
    return str(request.param)


@pytest.fixture
def old(release: str, tmp_path: Path) -> Path:
    """A copy of the release's archive, untouched."""
    root = tmp_path / "project" / "chats"
    shutil.copytree(release_dir(release) / "archive", root)
    return root


@pytest.mark.skipif(not HAS_GIT, reason="git is not installed")
def test_the_fixture_is_committed_whole(release: str) -> None:
    """Every file of the fixture is in git, its own .gitignore and the files that
    .gitignore hides included (they are part of what the release wrote)."""
    fixture = release_dir(release) / "archive"
    inside = subprocess.run(
        ["git", "-C", str(fixture), "rev-parse", "--is-inside-work-tree"],
        capture_output=True,
        text=True,
    )
    if inside.returncode != 0:
        pytest.skip("not a git checkout")
    tracked = set(git_out(fixture, "ls-files", "--full-name", ".").splitlines())
    prefix = f"tests/conformance/release-{release}/archive/"
    on_disk = {prefix + p for p, data in tree(fixture).items() if data is not None}
    assert on_disk <= tracked, sorted(on_disk - tracked)
    assert prefix + ".gitignore" in tracked
    assert (fixture / ".gitignore").read_text() == GITIGNORE_0_1_0


def test_opening_upgrades_the_gitignore_and_says_so(
    old: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = tree(old)
    caplog.set_level(logging.INFO, logger="filelayer")
    ArchiveStore(old).close()
    assert (old / ".gitignore").read_text() == GITIGNORE_BLOCK
    after = tree(old)
    changed = {k for k in set(after) | set(before) if after.get(k) != before.get(k)}
    # Besides the .gitignore and the new .gitattributes, only derived files changed: the
    # release's JSON-lines log was replaced by a database built from the threads, and
    # that fill was announced as maintenance on a lock file (made if missing).
    derived = ("index/", "locks/maintenance.lock")
    assert {k for k in changed if not k.startswith(derived)} == {".gitignore", ".gitattributes"}
    assert (old / ".gitattributes").read_text() == gitattributes.BLOCK
    assert "index/threads.jsonl" in before and "index/threads.jsonl" not in after
    assert "index/current" in after
    messages = [r.getMessage() for r in caplog.records if r.name == "filelayer"]
    assert [m for m in messages if ".gitignore" in m and "updated" in m], messages
    caplog.clear()
    ArchiveStore(old, create=False).close()  # up to date now: nothing written, no word
    assert not [r for r in caplog.records if ".gitignore" in r.getMessage()]
    assert tree(old) == after


def test_it_verifies_clean_and_reads_the_same(
    release: str, old: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--root", str(old), "verify"]) == 0
    assert "no problems" in capsys.readouterr().err
    assert (old / ".gitignore").read_text() == GITIGNORE_BLOCK  # the CLI upgrades too
    assert answers(old) == expected(release)
    before = tree(old)
    assert main(["--root", str(old), "verify", "--repair"]) == 0
    repaired = tree(old)
    # Maintenance announces itself on a lock file (derived, made if missing): the
    # index's fill when the old archive was first opened, and the repair.
    assert repaired.pop("locks/maintenance.lock", b"") == b""
    before.pop("locks/maintenance.lock", None)
    assert repaired == before  # nothing to repair: not a file moved nor removed
    assert main(["--root", str(old), "compact"]) == 0
    assert main(["--root", str(old), "verify"]) == 0
    assert answers(old) == expected(release)
    for key, record in expected(release)["element_files"].items():
        thread_id = key.split("/", 1)[0]
        assert (old / "threads" / thread_id / record["file"]).is_file(), key


def test_a_checkout_without_the_derived_files_reads_the_same(release: str, old: Path) -> None:
    """What a git clone of the archive holds: no index, no locks."""
    shutil.rmtree(old / "index")
    shutil.rmtree(old / "locks")
    ArchiveStore(old).close()  # rebuilds the index from the threads
    assert main(["--root", str(old), "verify"]) == 0
    assert answers(old) == expected(release)


@pytest.mark.skipif(not HAS_GIT, reason="git is not installed")
def test_once_opened_git_commits_every_element_file(release: str, old: Path) -> None:
    repo = old.parent
    git_out(repo, "init", "-q")
    git_out(repo, "config", "user.email", "test@example.com")
    git_out(repo, "config", "user.name", "Test")
    git_out(repo, "add", "-A")
    tracked = set(git_out(repo, "ls-files").splitlines())
    files = {
        f"chats/threads/{key.split('/', 1)[0]}/{record['file']}"
        for key, record in expected(release)["element_files"].items()
    }
    assert files - tracked  # the release's own rules hid some of them
    ArchiveStore(old).close()
    git_out(repo, "add", "-A")
    git_out(repo, "commit", "-q", "-m", "archive")
    tracked = set(git_out(repo, "ls-files").splitlines())
    assert files <= tracked, sorted(files - tracked)
    assert not [t for t in tracked if t.startswith(("chats/index/", "chats/locks/"))]


# -- the upgrade keeps what the user wrote ------------------------------------------------


def test_the_users_lines_around_the_old_rules_are_kept(
    old: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (old / ".gitignore").write_text("/exports/\n" + GITIGNORE_0_1_0 + "*.bak\n")
    caplog.set_level(logging.INFO, logger="filelayer")
    ArchiveStore(old).close()
    text = (old / ".gitignore").read_text()
    assert text == "/exports/\n*.bak\n\n" + GITIGNORE_BLOCK
    assert "*.lock" not in text.splitlines()
    assert any("updated" in r.getMessage() for r in caplog.records)


def test_a_gitignore_of_the_users_own_gets_the_block_at_its_end(tmp_path: Path) -> None:
    root = tmp_path / "chats"
    root.mkdir()
    (root / ".gitignore").write_text("# mine\n*.lock\n")
    ArchiveStore(root).close()  # a new archive in a directory that had a .gitignore
    assert (root / ".gitignore").read_text() == "# mine\n*.lock\n\n" + GITIGNORE_BLOCK
    text = (root / ".gitignore").read_text()
    (root / ".gitignore").write_text(text + "*.log\n")  # added below the block
    ArchiveStore(root).close()
    assert (root / ".gitignore").read_text() == "# mine\n*.lock\n*.log\n\n" + GITIGNORE_BLOCK


def test_an_outdated_block_is_replaced_in_place_of_nothing_else(tmp_path: Path) -> None:
    root = tmp_path / "chats"
    ArchiveStore(root).close()
    stale = "# >>> filelayer: an older block\n/index/\n*.lock\n# <<< filelayer\n"
    (root / ".gitignore").write_text("a\n" + stale + "b\n")
    ArchiveStore(root, create=False).close()
    assert (root / ".gitignore").read_text() == "a\nb\n\n" + GITIGNORE_BLOCK


def test_a_missing_gitignore_is_written_again(tmp_path: Path) -> None:
    root = tmp_path / "chats"
    ArchiveStore(root).close()
    (root / ".gitignore").unlink()
    ArchiveStore(root, create=False).close()
    assert (root / ".gitignore").read_text() == GITIGNORE_BLOCK


def test_line_endings_alone_are_no_reason_to_rewrite(tmp_path: Path) -> None:
    root = tmp_path / "chats"
    ArchiveStore(root).close()
    crlf = GITIGNORE_BLOCK.replace("\n", "\r\n").encode()
    (root / ".gitignore").write_bytes(crlf)  # a checkout with core.autocrlf
    ArchiveStore(root).close()
    assert (root / ".gitignore").read_bytes() == crlf


def test_upgrade_false_and_a_failed_write_leave_the_file(
    old: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    ArchiveStore(old, upgrade=False).close()
    assert (old / ".gitignore").read_text() == GITIGNORE_0_1_0

    def refuse(path: Path, data: bytes, *, durable: bool = True) -> None:
        raise StorageWriteError(path, OSError(30, "Read-only file system"))

    monkeypatch.setattr("filelayer._io.fs.atomic_write", refuse)
    caplog.set_level(logging.INFO, logger="filelayer")
    store = ArchiveStore(old, create=False)  # still opens, and reads
    assert store.get_thread("uploads") is not None
    assert (old / ".gitignore").read_text() == GITIGNORE_0_1_0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any(".gitignore" in r.getMessage() for r in warnings)


async def test_a_dry_run_copy_writes_nothing_not_even_the_gitignore(
    old: Path, tmp_path: Path
) -> None:
    from filelayer.transfer.copier import copy_archive

    other = tmp_path / "other"
    store = ArchiveStore(other)
    store.write_step({"id": "m1", "threadId": "new", "type": "user_message", "output": "hi"})
    store.close()
    before = tree(old)
    summary = await copy_archive(str(other), str(old), dry_run=True)
    assert "dry run" in summary.render()
    summary = await copy_archive(str(old), str(other), dry_run=True)
    assert tree(old) == before
