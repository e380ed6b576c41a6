"""Output to a stdout that cannot hold every character (an ASCII or Latin-1 terminal, a
C locale): what it cannot hold is printed escaped, JSON stays JSON, never a traceback."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from filelayer import ArchiveStore
from filelayer.cli import main
from tests.support.processes import subprocess_env

SNOWMAN = "Snowman \u2603 caf\u00e9 \U0001f600"


@pytest.fixture
def archive(root: Path) -> Path:
    store = ArchiveStore(root)
    user = store.upsert_user("carol \u2603")
    store.write_step(
        {
            "id": "m1",
            "threadId": "t1",
            "type": "user_message",
            "name": "x",
            "output": f"snow {SNOWMAN}",
            "createdAt": "2026-03-01T10:00:00.000000Z",
        }
    )
    store.update_thread("t1", name=SNOWMAN, user_id=user["id"])
    store.close()
    return root


def run_into(
    encoding: str, monkeypatch: pytest.MonkeyPatch, *argv: str, errors: str = "strict"
) -> tuple[int, str, io.TextIOWrapper]:
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding=encoding, errors=errors, newline="\n")
    monkeypatch.setattr(sys, "stdout", out)
    code = main(list(argv))
    out.flush()
    return code, raw.getvalue().decode(encoding), out


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_list_and_show_escape_what_stdout_cannot_hold(
    archive: Path, encoding: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run_into(encoding, monkeypatch, "--root", str(archive), "list")
    assert code == 0 and "\\u2603" in out and "\\U0001f600" in out
    code, out, _ = run_into(encoding, monkeypatch, "--root", str(archive), "show", "t1")
    assert code == 0 and "snow Snowman \\u2603" in out
    code, out, _ = run_into(encoding, monkeypatch, "--root", str(archive), "export", "t1")
    assert code == 0 and "snow Snowman \\u2603" in out
    argv = ("--root", str(archive), "export", "t1", "--format", "html")
    code, out, _ = run_into(encoding, monkeypatch, *argv)
    assert code == 0 and "Snowman &#9731; caf&#233;" in out  # references: still HTML


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_json_stays_json_on_a_stdout_that_is_not_utf8(
    archive: Path, encoding: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run_into(encoding, monkeypatch, "--root", str(archive), "list", "--json")
    assert code == 0
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert row["name"] == SNOWMAN and row["author"] == "carol \u2603"
    code, out, _ = run_into(
        encoding, monkeypatch, "--root", str(archive), "export", "t1", "--format", "json"
    )
    assert code == 0 and json.loads(out)["name"] == SNOWMAN


def test_a_callers_stdout_is_left_as_it_was(archive: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``main`` called from a script escapes while it runs, and hands the stream back."""
    _, _, out = run_into("ascii", monkeypatch, "--root", str(archive), "list")
    assert out.errors == "strict"


@pytest.mark.parametrize(
    "env",
    [
        {"PYTHONIOENCODING": "ascii"},
        {"LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"},
    ],
)
def test_the_command_prints_no_traceback_on_an_ascii_stdout(
    archive: Path, env: dict[str, str]
) -> None:
    child = subprocess_env(**env)
    if "PYTHONIOENCODING" not in env:
        child.pop("PYTHONIOENCODING", None)  # the locale's encoding, ASCII in C
    for command in (["list"], ["list", "--json"], ["show", "t1"], ["list", "--help"]):
        done = subprocess.run(
            [sys.executable, "-m", "filelayer", "--root", str(archive), *command],
            capture_output=True,
            env=child,
            timeout=60,
        )
        assert done.returncode == 0, (command, done.stderr.decode("utf-8", "replace"))
        assert b"Traceback" not in done.stderr
        done.stdout.decode("ascii")  # nothing the stream could not hold went out raw
        if command == ["list", "--json"]:
            assert json.loads(done.stdout)["name"] == SNOWMAN
