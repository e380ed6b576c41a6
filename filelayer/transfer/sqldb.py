"""Where a database of Chainlit's SQLAlchemy schema is, and talking to it: SQLite through
the standard library's ``sqlite3``, PostgreSQL through asyncpg (imported only then), both
behind one small interface (:class:`Database`: SQL with ``?`` placeholders, rows as dicts
of plain Python values), so that the endpoint's SQL is written once."""

from __future__ import annotations

import contextlib
import re
import sqlite3
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from .model import CopyUsageError
from .sqlbase import connect_asyncpg, redact


def is_sqlite_url(location: str) -> bool:
    return re.match(r"(?i)sqlite(\+\w+)?://", location) is not None


def is_sqlalchemy_postgres_url(location: str) -> bool:
    """``postgresql+asyncpg://`` and the like: how the SQLAlchemy layer is configured."""
    return re.match(r"(?i)postgres(ql)?\+\w+://", location) is not None


def sqlite_path(location: str) -> Path:
    """The file of a SQLAlchemy SQLite URL (``sqlite:///rel.db``, ``sqlite:////abs.db``)."""
    rest = re.sub(r"(?i)^sqlite(\+\w+)?://", "", location)
    if not rest.startswith("/") or rest in ("/", "/:memory:"):
        raise CopyUsageError(
            f"{location}: give a database file, as sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db"
        )
    path = urllib.parse.unquote(rest[1:].split("?", 1)[0])
    return Path(path).expanduser()


def asyncpg_url(location: str) -> str:
    """The URL without SQLAlchemy's ``+driver`` part, as asyncpg takes it."""
    return re.sub(r"(?i)^postgres(ql)?\+\w+://", "postgresql://", location)


async def detect_postgres_schema(url: str) -> str:
    """``"sqlalchemy"`` when the database has the SQLAlchemy layer's tables and not the
    official ones, else ``"official"`` (also for an empty or unreachable database: the
    official endpoint then says what is wrong)."""
    try:
        import asyncpg  # type: ignore[import-untyped]
    except ImportError:
        return "official"
    try:
        conn = await asyncpg.connect(url, timeout=15)
    except Exception:
        return "official"
    try:
        official = await conn.fetchval("SELECT to_regclass('\"Thread\"') IS NOT NULL")
        sqlalchemy = await conn.fetchval("SELECT to_regclass('threads') IS NOT NULL")
    finally:
        await conn.close()
    if official and sqlalchemy:
        raise CopyUsageError(
            f"{redact(url)} has the tables of both Chainlit schemas (Thread and threads): "
            "say which to use with --schema official or --schema sqlalchemy"
        )
    return "sqlalchemy" if sqlalchemy else "official"


# -- the two databases behind one small interface ----------------------------------------


class Database:
    """SQL with ``?`` placeholders, rows as dicts of plain Python values."""

    dialect = ""
    label = ""

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def execute(self, sql: str, *args: Any) -> int:
        raise NotImplementedError

    def transaction(self) -> contextlib.AbstractAsyncContextManager[None]:
        raise NotImplementedError

    async def columns(self, table: str) -> list[str]:
        """The table's columns; empty if there is no such table."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


def _text(raw: bytes) -> str:
    """A TEXT value as a string, whatever bytes it holds: SQLite keeps what a writer put
    there, and bytes that are no UTF-8 made reading the row raise, stopping the whole
    copy. Such bytes come through as lone surrogates, which every destination refuses
    for that one item, and the copy lists it
    (:func:`~filelayer.transfer.model.text_problem`)."""
    return raw.decode("utf-8", "surrogateescape")


class SqliteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, path: Path, *, create: bool) -> None:
        self.path = path
        self.label = f"sqlite:///{path}"
        if not create and not path.is_file():
            raise CopyUsageError(f"no SQLite database at {path}: check the SOURCE path")
        try:
            self.conn = sqlite3.connect(str(path), isolation_level=None, timeout=30)
            self.conn.row_factory = sqlite3.Row
            self.conn.text_factory = _text
            self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            raise CopyUsageError(f"cannot open {path}: {exc}") from exc

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute(sql, args).fetchall()]

    async def execute(self, sql: str, *args: Any) -> int:
        return self.conn.execute(sql, args).rowcount

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    async def columns(self, table: str) -> list[str]:
        return [r["name"] for r in await self.fetch(f'PRAGMA table_info("{table}")')]

    async def close(self) -> None:
        self.conn.close()


def _pg_sql(sql: str) -> str:
    n = 0

    def number(_: re.Match[str]) -> str:
        nonlocal n
        n += 1
        return f"${n}"

    return re.sub(r"\?", number, sql)


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, uuid.UUID) else value


class PostgresDatabase(Database):
    dialect = "postgresql"

    def __init__(self, conn: Any, label: str) -> None:
        self.conn = conn
        self.label = label

    @classmethod
    async def connect(cls, url: str) -> PostgresDatabase:
        label = redact(url)
        conn = await connect_asyncpg(asyncpg_url(url), label)
        return cls(conn, label)

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        rows = await self.conn.fetch(_pg_sql(sql), *args)
        return [{k: _plain(v) for k, v in r.items()} for r in rows]

    async def execute(self, sql: str, *args: Any) -> int:
        status = await self.conn.execute(_pg_sql(sql), *args)
        tail = str(status).rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        async with self.conn.transaction():
            yield

    async def columns(self, table: str) -> list[str]:
        rows = await self.fetch(
            "SELECT column_name AS name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
            table,
        )
        return [r["name"] for r in rows]

    async def close(self) -> None:
        await self.conn.close()
