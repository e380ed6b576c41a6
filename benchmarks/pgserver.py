"""A throwaway PostgreSQL server on loopback, for tests and benchmarks.

Uses the server binaries of Debian's ``postgresql`` package: ``initdb`` into a temporary
directory, ``pg_ctl`` to start it on a free port bound to 127.0.0.1 only, and as the
``postgres`` user when running as root (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def find_bindir() -> Path | None:
    """The directory holding initdb and pg_ctl, or ``None`` if PostgreSQL is absent."""
    env = os.environ.get("FILELAYER_PG_BINDIR")
    candidates = [env] if env else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for c in candidates:
        if c and (Path(c) / "initdb").exists() and (Path(c) / "pg_ctl").exists():
            return Path(c)
    return None


_PORT_ATTEMPTS = 5
"""Ports tried before giving up on starting the server."""

_log = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """Start with :meth:`start`, stop with :meth:`stop` (or use it as a context manager)."""

    def __init__(self, bindir: Path | None = None, database: str = "chainlit") -> None:
        found = bindir or find_bindir()
        if found is None:
            raise RuntimeError(
                "PostgreSQL server binaries not found: install Debian's `postgresql` package"
            )
        self.bindir = found
        self.database = database
        self.port = _free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="filelayer-pg-"))
        self.datadir = self.workdir / "data"
        self.logfile = self.workdir / "server.log"
        self._as_postgres = os.geteuid() == 0 if hasattr(os, "geteuid") else False
        self.started = False

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            log = self.logfile.read_text() if self.logfile.exists() else ""
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({result.returncode}): "
                f"{result.stderr.strip()}\n{log[-2000:]}"
            )

    def start(self) -> PostgresServer:
        if self._as_postgres:
            shutil.chown(self.workdir, user="postgres", group="postgres")
        self._run(
            "initdb",
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-instructions",
        )
        # The port was free when it was chosen, but another process may take it before
        # the server binds it (tests start servers side by side): then a new one.
        for attempt in range(_PORT_ATTEMPTS):
            try:
                self._start_server()
                break
            except RuntimeError as exc:
                if attempt + 1 == _PORT_ATTEMPTS or not self._port_was_taken():
                    raise
                _log.info("PostgreSQL could not bind port %d (%s); trying another", self.port, exc)
                self.port = _free_port()
        self.started = True
        self._run(
            "createdb",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            self.database,
        )
        return self

    def _start_server(self) -> None:
        with contextlib.suppress(OSError):  # each attempt is judged on its own log
            self.logfile.unlink()
        options = (
            f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c max_connections=50"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.datadir),
            "-o",
            options,
            "-l",
            str(self.logfile),
            "-w",
            "-t",
            "60",
            "start",
        )

    def _port_was_taken(self) -> bool:
        """Whether the last start failed because the port was in use (its log says so)."""
        try:
            text = self.logfile.read_text(errors="replace")
        except OSError:
            return False
        return "could not bind" in text or "Address already in use" in text

    def stop(self) -> None:
        try:
            if self.started:
                self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "stop")
        finally:
            self.started = False
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def apply_schema(url: str) -> None:
    """Create Chainlit's official schema in the database at ``url``."""
    import asyncpg

    from filelayer.transfer.pgschema import STATEMENTS

    conn = await asyncpg.connect(url)
    try:
        for statement in STATEMENTS:
            await conn.execute(statement)
    finally:
        await conn.close()
