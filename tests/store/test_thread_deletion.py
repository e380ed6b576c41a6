"""A thread's deletion removes all of its directory, also what another process
creates in it while it is being removed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from filelayer import ArchiveStore
from filelayer._io import fs as _fs
from filelayer.format.layout import DELETING_SUFFIX


def test_a_temporary_file_made_while_its_thread_is_removed_goes_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compaction whose temporary file is created in the thread's directory just as a
    deletion renamed it aside and emptied it (the file lands in the directory being
    removed, after the removal listed it): the deletion still removes all of it."""
    root = tmp_path / "chats"
    store = ArchiveStore(root)
    store.write_step({"id": "s", "threadId": "t1", "type": "run", "output": "x"})
    real = os.rmdir
    planted: list[str] = []

    def rmdir(path: Any, *args: Any, **kwargs: Any) -> None:
        name = os.fspath(path)
        if name.endswith(DELETING_SUFFIX) and not planted and kwargs.get("dir_fd") is None:
            late = os.path.join(name, f"{_fs.RESERVED_PREFIX}steps.jsonl.0123abcd{_fs.TEMP_SUFFIX}")
            os.close(os.open(late, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            planted.append(late)
        real(path, *args, **kwargs)

    monkeypatch.setattr(os, "rmdir", rmdir)
    assert store.delete_thread("t1")
    assert planted
    assert sorted(os.listdir(store.layout.threads)) == []
