"""Shared fixtures. Nothing here imports Chainlit at module level: the suite also runs
in an environment without Chainlit, where the modules that need it skip themselves."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
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


@dataclass
class App:
    url: str
    root: Path
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def example_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    work = tmp_path_factory.mktemp("example")
    shutil.copytree(REPO / "examples", work / "app", ignore=shutil.ignore_patterns("chats"))
    root = work / "chats"
    port = _free_port()
    log = work / "chainlit.log"
    env = subprocess_env(FILELAYER_ROOT=str(root), CHAINLIT_AUTH_SECRET="test-secret-" + "x" * 40)
    chainlit = Path(sys.executable).with_name("chainlit")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(chainlit),
                "run",
                "app.py",
                "--headless",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=work / "app",
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"chainlit exited early:\n{log.read_text()[-3000:]}")
            try:
                if _httpx().get(url + "/auth/config", timeout=2).status_code == 200:
                    break
            except _httpx().HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"chainlit did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield App(url=url, root=root, log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _httpx() -> Any:
    import httpx

    return httpx


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("FILELAYER_PURE", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env
