"""A Chainlit app run for real (``chainlit run``) on a free loopback port, for the tests
that talk to it over HTTP, a websocket or a browser."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


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


def _httpx() -> Any:
    import httpx

    return httpx
