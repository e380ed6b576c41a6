"""A damaged ``filelayer.json`` (the format marker every command reads first): the
message says what to do that works, not a command that refuses to run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from filelayer.cli import main
from tests.support.cli import build_archive

MARKER = '{"format": 1, "generator": "filelayer"}'


@pytest.fixture
def archive(root: Path) -> Path:
    build_archive(root).close()
    return root


def test_a_damaged_marker_says_how_to_mend_it_and_that_works(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (archive / "filelayer.json").write_text('{"format', "utf-8")
    for command in (["list"], ["verify", "--repair"]):
        assert main(["--root", str(archive), *command]) == 2
        err = capsys.readouterr().err
        assert "filelayer.json is damaged" in err and "not valid JSON" in err
        assert "verify --repair" not in err  # it cannot run on such an archive
        assert MARKER in err, err
    # What the message says to do:
    (archive / "filelayer.json").write_text(json.dumps(json.loads(MARKER)), "utf-8")
    assert main(["--root", str(archive), "list"]) == 0
    assert main(["--root", str(archive), "verify"]) == 0
