"""Where the chats are: the layer says which root it opened, and warns when it has just
made a new, empty archive (the default ``./chats`` depends on the working directory)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

pytest.importorskip("chainlit")

from filelayer import ArchiveStore, FileDataLayer


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "filelayer" and r.levelno == level]


def open_layer(caplog: pytest.LogCaptureFixture, *args: object) -> FileDataLayer:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="filelayer"):
        return FileDataLayer(*args)  # type: ignore[arg-type]


def test_the_default_root_is_logged_absolute_and_its_creation_warned(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("FILELAYER_ROOT", raising=False)
    open_layer(caplog)
    root = in_tmp / "chats"
    assert root.is_dir()
    assert messages(caplog, logging.INFO) == [f"filelayer: chat history in {root}"]
    [warning] = messages(caplog, logging.WARNING)
    assert f"new, empty archive at {root}" in warning
    assert f"the default root ./chats, relative to the working directory {in_tmp}" in warning
    assert "the sidebar will show no past conversations" in warning
    assert "FILELAYER_ROOT=" in warning

    # Opened again (the next start of the app): where it is, and nothing to warn about.
    open_layer(caplog)
    assert messages(caplog, logging.INFO) == [f"filelayer: chat history in {root}"]
    assert messages(caplog, logging.WARNING) == []


def test_an_existing_archive_is_logged_without_a_warning(
    in_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = in_tmp / "elsewhere" / "chats"
    ArchiveStore(root).update_thread("t1", name="kept")
    open_layer(caplog, root)
    assert messages(caplog, logging.INFO) == [f"filelayer: chat history in {root}"]
    assert messages(caplog, logging.WARNING) == []


def test_a_relative_root_from_the_environment_is_logged_absolute(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FILELAYER_ROOT", "data/chats")
    open_layer(caplog)
    root = in_tmp / "data" / "chats"
    assert messages(caplog, logging.INFO) == [f"filelayer: chat history in {root}"]
    [warning] = messages(caplog, logging.WARNING)
    assert f"at {root} ($FILELAYER_ROOT=data/chats, relative to the working directory" in warning


def test_a_root_given_as_an_absolute_path_is_named_as_given(
    tmp_path: Path, in_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "absolute" / "chats"
    open_layer(caplog, root)
    [warning] = messages(caplog, logging.WARNING)
    assert f"at {root} (the root given to FileDataLayer, {str(root)!r}):" in warning
    assert "working directory" not in warning


def test_an_archive_that_lost_its_marker_is_not_called_empty(
    in_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = in_tmp / "chats"
    ArchiveStore(root).update_thread("t1", name="kept")
    (root / "filelayer.json").unlink()  # damaged behind the layer's back
    layer = open_layer(caplog, root)
    assert messages(caplog, logging.WARNING) == []
    assert layer.store.get_thread("t1") is not None
