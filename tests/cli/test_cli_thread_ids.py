"""Thread ids given on the command line: each is taken once, in the order first given."""

from __future__ import annotations

from pathlib import Path

import pytest

from filelayer.cli import main
from tests.support.cli import build_archive


@pytest.fixture
def archive(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    build_archive(root)
    monkeypatch.setenv("FILELAYER_ROOT", str(root))
    return root


def test_compact_takes_a_repeated_id_once(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compact", "cake", "cake"]) == 0
    assert "compacted 1 of 1 thread(s)" in capsys.readouterr().err
    assert main(["compact", "cake", "bread", "cake"]) == 0
    assert "of 2 thread(s)" in capsys.readouterr().err


def test_export_takes_a_repeated_id_once_in_the_order_first_given(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", "cake", "bread", "cake", "bread"]) == 0
    out = capsys.readouterr().out
    assert out.count("# Chocolate cake") == 1 and out.count("# Sourdough bread") == 1
    assert out.index("# Chocolate cake") < out.index("# Sourdough bread")
    assert main(["export", "cake", "cake", "-o", str(tmp_path / "out")]) == 0
    assert "exported 1 thread(s)" in capsys.readouterr().err
    assert len(list((tmp_path / "out").glob("*.md"))) == 1
