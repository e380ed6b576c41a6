"""The shared fixtures hold on a busy machine: ``chainlit_running`` tries another port
when the one it found free was taken before Chainlit could bind it, whether the
program that took it answers HTTP or not, so a test never talks to a stranger."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("chainlit")
httpx = pytest.importorskip("httpx")
pytest.importorskip("psutil")

from tests.support import apps  # noqa: E402
from tests.support.apps import chainlit_running  # noqa: E402
from tests.support.processes import subprocess_env  # noqa: E402

APP = """
import chainlit as cl


@cl.on_message
async def on_message(message: cl.Message) -> None:
    await cl.Message(content="ours").send()
"""


class _Stranger(http.server.BaseHTTPRequestHandler):
    """Another program's server: it answers every GET with 200."""

    def do_GET(self) -> None:  # the standard library names it so
        self.send_response(200)
        self.send_header("Content-Length", "8")
        self.end_headers()
        self.wfile.write(b"stranger")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def taken_port(request: pytest.FixtureRequest) -> Iterator[int]:
    """A loopback port another program holds: a bare listening socket, or a server that
    answers HTTP."""
    if request.param == "silent":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            yield int(s.getsockname()[1])
        return
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stranger)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("taken_port", ["silent", "answering"], indirect=True)
def test_a_port_taken_before_chainlit_binds_it_is_not_used(
    taken_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "app.py").write_text(APP)
    real = apps._free_port
    handed = iter([taken_port])
    monkeypatch.setattr(apps, "_free_port", lambda: next(handed, None) or real())
    env = subprocess_env(FILELAYER_ROOT=str(tmp_path / "chats"))
    with chainlit_running(app, env, tmp_path / "chainlit.log") as url:
        assert not url.endswith(f":{taken_port}")
        answer = httpx.get(url + "/auth/config", timeout=20)
        assert answer.status_code == 200 and answer.text != "stranger"
