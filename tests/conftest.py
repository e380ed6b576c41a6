"""Shared fixtures and helpers. Nothing here imports Chainlit at module level: the suite
also runs in an environment without Chainlit, where the modules that need it skip
themselves (``pytest.importorskip("chainlit")``) and the storage-core tests still run."""

from __future__ import annotations

import importlib.util
import inspect
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

_CHAINLIT_HOME: list[str] = []


def _load_hypothesis_profile() -> None:
    """Hypothesis profiles, loaded before any test module is collected.

    ``ci`` (every normal run): derandomized, so a run tries the same examples as the
    last one and a red CI means a real regression, not an unlucky draw; no example
    database (nothing written into the repository); a failure prints the blob that
    replays it. ``stress`` (``FILELAYER_STRESS=1``): random exploration, to find new
    bugs. The README's "Stress runs and regression tests" says how a find becomes a test.
    """
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:  # the tests that need Hypothesis say so themselves
        return
    from reliability_support import hypothesis_profile

    common: dict[str, Any] = {
        "database": None,
        "deadline": None,
        "print_blob": True,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    }
    settings.register_profile("ci", derandomize=True, **common)
    settings.register_profile("stress", derandomize=False, **common)
    settings.load_profile(hypothesis_profile())


_load_hypothesis_profile()


def pytest_report_header(config: pytest.Config) -> str:
    from reliability_support import hypothesis_profile, seed, stress

    run = "stress run (FILELAYER_STRESS=1)" if stress() else "deterministic run"
    return f"filelayer: {run}, FILELAYER_SEED={seed()}, Hypothesis profile {hypothesis_profile()!r}"


def pytest_configure(config: pytest.Config) -> None:
    """Import Chainlit once from a scratch directory before any test module does.

    Chainlit fixes its application root (where it writes ``.chainlit/`` and ``.files/``)
    to the current directory the first time it is imported, and test modules import it
    while being collected, from the repository. Importing it here first, from a
    temporary directory, keeps the repository clean; the directory goes at the end.
    """
    if importlib.util.find_spec("chainlit") is None or "chainlit" in sys.modules:
        return
    home = tempfile.mkdtemp(prefix="filelayer-chainlit-home-")
    _CHAINLIT_HOME.append(home)
    here = os.getcwd()
    os.chdir(home)
    try:
        import chainlit  # noqa: F401
    except Exception:  # a broken Chainlit install: the modules that need it will say so
        pass
    finally:
        os.chdir(here)


def pytest_unconfigure(config: pytest.Config) -> None:
    for home in _CHAINLIT_HOME:
        shutil.rmtree(home, ignore_errors=True)


# -- archive fixtures ------------------------------------------------------------------


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
    await dl.close()


@pytest.fixture
async def user(layer: Any) -> Any:
    from chainlit.user import User

    return await layer.create_user(User(identifier="alice@example.com"))


@pytest.fixture
def registered(layer: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``layer`` installed the way an app does it (``@cl.data_layer``), so that
    Chainlit's own code (messages, elements, the emitter, the ACL) finds it."""
    import chainlit as cl
    import chainlit.data as chainlit_data
    from chainlit.config import config

    monkeypatch.setattr(config.code, "data_layer", None)
    monkeypatch.setattr(chainlit_data, "_data_layer", None)
    monkeypatch.setattr(chainlit_data, "_data_layer_initialized", False)

    @cl.data_layer
    def data_layer() -> Any:
        return layer

    assert chainlit_data.get_data_layer() is layer
    return layer


# -- helpers shared by the contract tests ------------------------------------------------


def chainlit_version() -> str:
    from importlib.metadata import version

    return version("chainlit")


def needs_base_method(name: str) -> pytest.MarkDecorator:
    """Skip a test of ``name`` on a Chainlit release whose ``BaseDataLayer`` lacks it
    (favorites came after 2.0): the supported range includes releases without it."""
    from chainlit.data.base import BaseDataLayer

    return pytest.mark.skipif(
        not hasattr(BaseDataLayer, name),
        reason=f"Chainlit {chainlit_version()}'s BaseDataLayer has no {name}",
    )


def needs_thread_sharing() -> pytest.MarkDecorator:
    """Skip where Chainlit has no thread sharing yet (``on_shared_thread_view`` and the
    ``/project/thread/share`` route came after 2.0)."""
    from chainlit.config import CodeSettings

    # A pydantic model in recent releases, a (pydantic) dataclass in older ones.
    fields = set(getattr(CodeSettings, "model_fields", None) or ()) | set(
        getattr(CodeSettings, "__dataclass_fields__", None) or ()
    )
    has = "on_shared_thread_view" in fields
    return pytest.mark.skipif(
        not has, reason=f"Chainlit {chainlit_version()} has no thread sharing"
    )


async def end_session(session: Any) -> None:
    """``session.delete()``: a coroutine in recent Chainlit, a plain call in 2.0."""
    result = session.delete()
    if inspect.isawaitable(result):
        await result


def at(second: int, day: int = 1) -> str:
    """A fixed time in Chainlit's format; larger ``second`` is later."""
    return (
        f"2026-03-{day:02d}T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}.000000Z"
    )


def step(sid: str, thread: str = "t1", **fields: Any) -> dict[str, Any]:
    """A StepDict as Chainlit sends it (only the fields given, plus id and thread)."""
    return {"id": sid, "threadId": thread, **fields}


async def listed(layer: Any, user_id: str | None, first: int = 100, **filters: Any) -> list[str]:
    """The ids on the first sidebar page of ``user_id``."""
    from chainlit.types import Pagination, ThreadFilter

    page = await layer.list_threads(
        Pagination(first=first), ThreadFilter(userId=user_id, **filters)
    )
    return [t["id"] for t in page.data]


async def all_pages(layer: Any, first: int, **filters: Any) -> list[list[str]]:
    """Every page, following ``endCursor`` as the sidebar does while ``hasNextPage``."""
    from chainlit.types import Pagination, ThreadFilter

    pages: list[list[str]] = []
    cursor = None
    for _ in range(10_000):
        page = await layer.list_threads(
            Pagination(first=first, cursor=cursor), ThreadFilter(**filters)
        )
        pages.append([t["id"] for t in page.data])
        if not page.pageInfo.hasNextPage:
            return pages
        assert page.pageInfo.endCursor, "hasNextPage without an endCursor"
        cursor = page.pageInfo.endCursor
    raise AssertionError("pagination never ends")


def tree(directory: Path) -> dict[str, bytes | None]:
    """Every path under ``directory`` with its bytes (``None`` for a directory)."""
    result: dict[str, bytes | None] = {}
    if not directory.exists():
        return result
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        result[rel] = None if path.is_dir() else path.read_bytes()
    return result


def temporary_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


# -- the example app -------------------------------------------------------------------


@dataclass
class App:
    url: str
    root: Path
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_PORT_TRIES = 5
"""How many free ports ``chainlit_running`` tries before it gives up."""


def _listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` (or one of its children) listens on loopback ``port``:
    what answers there may be another program that took the port first."""
    import psutil

    try:
        parent = psutil.Process(pid)
        family = [parent, *parent.children(recursive=True)]
        for process in family:
            sockets = getattr(process, "net_connections", None) or process.connections
            for conn in sockets(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                    return True
    except psutil.Error:
        return False
    return False


class _PortTaken(Exception):
    """The free port was taken by another program before Chainlit could bind it."""


@contextmanager
def chainlit_running(
    app_dir: Path, env: dict[str, str], log: Path, *extra: str, health_path: str = "/auth/config"
) -> Iterator[str]:
    """``chainlit run app.py`` in ``app_dir`` on a free loopback port, until the block
    ends; gives the base URL once ``health_path`` answers 200.

    A port found free is free only until someone binds it: on a busy machine another
    program (a client's ephemeral port, another suite's server) can take it while
    Chainlit starts. Chainlit then exits (with status 0) saying so, or the health check
    reaches the other program: either way another port is tried, so that a test never
    runs against a server that is not its own."""
    for attempt in range(_PORT_TRIES):
        try:
            with _chainlit_on_free_port(app_dir, env, log, extra, health_path) as url:
                yield url
            return
        except _PortTaken:
            if attempt == _PORT_TRIES - 1:
                pytest.fail(f"no free port after {_PORT_TRIES} tries:\n{log.read_text()[-3000:]}")


@contextmanager
def _chainlit_on_free_port(
    app_dir: Path, env: dict[str, str], log: Path, extra: tuple[str, ...], health_path: str
) -> Iterator[str]:
    port = _free_port()
    cmd = [sys.executable, "-c", "from chainlit.cli import cli; cli()", "run", "app.py"]
    cmd += ["--headless", "--host", "127.0.0.1", "--port", str(port), *extra]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=app_dir, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                if "address already in use" in log.read_text(errors="replace"):
                    raise _PortTaken(port)
                pytest.fail(f"chainlit exited early:\n{log.read_text()[-3000:]}")
            try:
                if _httpx().get(url + health_path, timeout=2).status_code == 200:
                    if not _listens_on(proc.pid, port):
                        raise _PortTaken(port)  # another program answered
                    break
            except _httpx().HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"chainlit did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def example_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    work = tmp_path_factory.mktemp("example")
    shutil.copytree(REPO / "examples", work / "app", ignore=shutil.ignore_patterns("chats"))
    root = work / "chats"
    log = work / "chainlit.log"
    env = subprocess_env(FILELAYER_ROOT=str(root), CHAINLIT_AUTH_SECRET="test-secret-" + "x" * 40)
    with chainlit_running(work / "app", env, log) as url:
        yield App(url=url, root=root, log=log)


def _httpx() -> Any:
    import httpx

    return httpx


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a child Python: this repository first on its path, and the
    fast mode unless ``FILELAYER_PURE`` is passed explicitly."""
    env = dict(os.environ)
    env.pop("FILELAYER_PURE", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env
