"""Shared fixtures (their helpers are in ``tests/support/``). Nothing here imports
Chainlit at module level: the suite also runs in an environment without Chainlit, where
the modules that need it skip themselves (``pytest.importorskip("chainlit")``) and the
storage-core tests still run."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.apps import App, chainlit_running
from tests.support.processes import REPO, subprocess_env

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
    from tests.support.reliability import hypothesis_profile

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
    from tests.support.reliability import hypothesis_profile, seed, stress

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


# -- the example app -------------------------------------------------------------------


@pytest.fixture(scope="session")
def example_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    work = tmp_path_factory.mktemp("example")
    shutil.copytree(REPO / "examples", work / "app", ignore=shutil.ignore_patterns("chats"))
    root = work / "chats"
    log = work / "chainlit.log"
    env = subprocess_env(FILELAYER_ROOT=str(root), CHAINLIT_AUTH_SECRET="test-secret-" + "x" * 40)
    with chainlit_running(work / "app", env, log) as url:
        yield App(url=url, root=root, log=log)
