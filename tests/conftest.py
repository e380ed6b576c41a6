"""Shared fixtures. Nothing here imports Chainlit at module level: the suite also runs
in an environment without Chainlit, where the modules that need it skip themselves."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Where the archive under test lives (created by the layer itself)."""
    return tmp_path / "chats"


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from a temporary directory: importing Chainlit writes .chainlit/ and .files/
    into the current directory."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def store(root: Path) -> Any:
    from filelayer import ArchiveStore

    return ArchiveStore(root)


@pytest.fixture
async def layer(root: Path, in_tmp: Path) -> AsyncIterator[Any]:
    """A FileDataLayer on a fresh root, inside an HTTP-like Chainlit context (where the
    queued methods run at once, as in Chainlit's own tests)."""
    from chainlit.context import init_http_context

    from filelayer import FileDataLayer

    init_http_context()
    dl = FileDataLayer(root)
    yield dl


@pytest.fixture
async def user(layer: Any) -> Any:
    from chainlit.user import User

    return await layer.create_user(User(identifier="alice@example.com"))


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("FILELAYER_PURE", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env
