"""``filelayer copy`` given arguments it cannot use: exit code 2, one line saying what is
wrong, and nothing written anywhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from filelayer import ArchiveStore
from tests.support.processes import subprocess_env


def copy_command(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "filelayer", "copy", *argv],
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_usage_error(done: subprocess.CompletedProcess[str], needle: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("filelayer copy: "), done.stderr
    assert needle in lines[0], done.stderr


def test_an_empty_location_is_a_usage_error(tmp_path: Path) -> None:
    """An empty SOURCE or DEST (an unset shell variable) is not the current directory."""
    source = tmp_path / "chats"
    ArchiveStore(source, create=True).close()
    project = tmp_path / "project"
    project.mkdir()
    (project / ".gitignore").write_text("node_modules/\n")
    for argv in ((str(source), ""), ("", str(source)), (str(source), "  ")):
        assert_usage_error(copy_command(project, *argv), "empty")
        assert sorted(p.name for p in project.iterdir()) == [".gitignore"]
        assert (project / ".gitignore").read_text() == "node_modules/\n"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://user:pw@127.0.0.1:notaport/db",
        "postgresql://user:pw@127.0.0.1:99999/db",
        "postgresql://user:pw@[::1/db",
        "postgresql+asyncpg://user:pw@127.0.0.1:notaport/db",
    ],
)
def test_a_malformed_postgres_url_is_a_usage_error(tmp_path: Path, url: str) -> None:
    pytest.importorskip("asyncpg")
    source = tmp_path / "chats"
    ArchiveStore(source, create=True).close()
    assert_usage_error(copy_command(tmp_path, str(source), url), "URL")
    assert_usage_error(copy_command(tmp_path, url, str(tmp_path / "out")), "URL")
    assert not (tmp_path / "out").exists()


def test_create_schema_into_an_archive_names_both_databases(tmp_path: Path) -> None:
    source = tmp_path / "chats"
    ArchiveStore(source, create=True).close()
    done = copy_command(tmp_path, str(source), str(tmp_path / "out"), "--create-schema")
    assert_usage_error(done, "postgresql:// or sqlite:///")
    assert not (tmp_path / "out").exists()
