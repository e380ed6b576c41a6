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


@pytest.mark.parametrize(
    ("marker", "detail"),
    [
        ('{"format": true}', "format true is no version"),
        ('{"format": 1.0}', "format 1.0 is no version"),
        ('{"format": "1"}', 'format "1" is no version'),
        ('{"format": 0}', "format 0 is no version"),
        ('{"generator": "filelayer"}', "no format version"),
        ("[1]", "not a JSON object"),
        ("null", "not a JSON object"),
    ],
)
def test_a_marker_without_an_integer_version_is_damaged_not_newer(
    archive: Path, marker: str, detail: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``True == 1`` in Python: a bool is no version, nor is a list; neither is read as
    version 1 nor sent to an upgrade that does not exist."""
    (archive / "filelayer.json").write_text(marker, "utf-8")
    assert main(["--root", str(archive), "list"]) == 2
    err = capsys.readouterr().err
    assert f"filelayer.json is damaged ({detail})" in err, err
    assert "Upgrade" not in err and MARKER in err


def test_a_newer_version_still_asks_for_a_newer_filelayer(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (archive / "filelayer.json").write_text('{"format": 2}', "utf-8")
    assert main(["--root", str(archive), "list"]) == 2
    err = capsys.readouterr().err
    assert "has format version 2" in err and "Upgrade chainlit-filelayer" in err
