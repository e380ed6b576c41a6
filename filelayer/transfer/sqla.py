"""The side of ``filelayer copy`` that speaks the schema of Chainlit's ``SQLAlchemyDataLayer``
(tables ``users``, ``threads``, ``steps``, ``elements``, ``feedbacks``), on SQLite or on
PostgreSQL.

Named the way that layer's users name their database: ``sqlite:///chainlit.db``,
``sqlite+aiosqlite:///chainlit.db`` (a path after three slashes is relative, after four
absolute), ``postgresql+asyncpg://...``; a plain ``postgresql://`` URL whose database has
these tables (or ``--schema sqlalchemy``) is read the same way.

SQLite is read and written with the standard library's ``sqlite3``, so copying from or to
a SQLite file needs no extra package; PostgreSQL goes through asyncpg, imported only then.

What the layer stores, and how this module reads it:

* Times are text, copied exactly (no rounding, unlike the official schema).
* JSON columns (``metadata``, ``generation``, ``props``, ``modes``, ``playerConfig``) are
  written by the layer as JSON text. Read back they are parsed again, so a thread's
  metadata arrives as the dict the app gave, not as a string (the layer's own reader hands
  the string on).
* SQLite keeps booleans as 0 and 1: read back as booleans. The layer stores
  ``showInput`` as ``str(value).lower()``: ``"true"`` and ``"false"`` read back as booleans.
* SQLite cannot bind a list, so the layer cannot store tags there at all (its write of a
  thread or step with tags fails as a whole). A copy into SQLite leaves thread tags out
  (listed in the summary); a step's tags, like every step field a column cannot hold, are
  kept in the step's metadata under ``_filelayer`` and read back from there.
* The schema has no thread update time: it reads as the latest of the thread's creation
  and its steps' creation, as the layer's own sidebar orders threads.
* Elements have no metadata column; what no column holds (the archive's file name and
  checksum) is not kept there. An element's bytes live in the layer's storage client;
  its ``url`` column holds a link that may be signed and expire, so bytes are read through
  the storage client when one is configured, else from the ``url`` or ``objectKey`` when
  it names a local file, else from an http(s) ``url``.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import urllib.parse
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from .._time import ms_key
from ..format import journal
from .model import (
    CopyUsageError,
    ElementData,
    Endpoint,
    Fetch,
    Summary,
    ThreadData,
    ThreadPlan,
    ThreadRef,
    fetch_url,
)
from .sqlaschema import STATEMENTS, TABLES

STASH = "_filelayer"
"""The step metadata key holding what the step's columns cannot say."""

EPOCH = "1970-01-01T00:00:00.000Z"
_INSTALL_HINT = "pip install 'chainlit-filelayer[sql]'"

_STEP_BOOLS = ("streaming", "waitForAnswer", "isError", "defaultOpen", "autoCollapse")
_STEP_JSON = ("generation", "modes")
_STEP_TEXT = ("input", "output", "command", "language", "createdAt", "start", "end")
_ELEMENT_TEXT = (
    "type",
    "url",
    "chainlitKey",
    "display",
    "objectKey",
    "size",
    "language",
    "mime",
)
_ELEMENT_JSON = ("props", "playerConfig")


# -- where the database is ---------------------------------------------------------------


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


def redact(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


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


class _Database:
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


class _Sqlite(_Database):
    dialect = "sqlite"

    def __init__(self, path: Path, *, create: bool) -> None:
        self.path = path
        self.label = f"sqlite:///{path}"
        if not create and not path.is_file():
            raise CopyUsageError(f"no SQLite database at {path}: check the SOURCE path")
        try:
            self.conn = sqlite3.connect(str(path), isolation_level=None, timeout=30)
            self.conn.row_factory = sqlite3.Row
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


class _Postgres(_Database):
    dialect = "postgresql"

    def __init__(self, conn: Any, label: str) -> None:
        self.conn = conn
        self.label = label

    @classmethod
    async def connect(cls, url: str) -> _Postgres:
        try:
            import asyncpg
        except ImportError as exc:
            raise CopyUsageError(
                f"asyncpg is needed to use a PostgreSQL database: {_INSTALL_HINT}"
            ) from exc
        label = redact(url)
        try:
            conn = await asyncpg.connect(asyncpg_url(url), timeout=15)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise CopyUsageError(
                f"cannot connect to {label}: {exc}. Check the URL (user, password, "
                "host, port, database) and that the server accepts connections."
            ) from exc
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


# -- values: what the layer writes, and reading it back ----------------------------------


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)


def _json_value(raw: Any) -> Any:
    """A JSON column as the value it holds: the layer writes JSON text (which a JSONB
    column may keep as a JSON string), SQLite hands text back; parse until it is not text
    that parses."""
    for _ in range(3):
        if not isinstance(raw, str):
            return raw
        try:
            raw = json.loads(raw)
        except ValueError:
            return raw
    return raw


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _bool(value: Any) -> bool | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "t", "yes")
    return bool(value)


def _tags(raw: Any) -> list[str] | None:
    value = _json_value(raw)
    if isinstance(value, list | tuple):
        return [str(t) for t in value]
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _is_uuid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


class Codec:
    """Neutral dicts <-> rows of this schema, for the columns one database has."""

    def __init__(self, columns: dict[str, list[str]], *, can_bind_lists: bool) -> None:
        self.columns = columns
        self.can_bind_lists = can_bind_lists

    def has(self, table: str, column: str) -> bool:
        return column in self.columns.get(table, ())

    # users

    def user_row(self, user: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": user["id"],
            "identifier": user["identifier"],
            "metadata": _json_text(user.get("metadata") or {}),
            "createdAt": _text(user.get("createdAt")),
        }

    @staticmethod
    def user_read(row: dict[str, Any]) -> dict[str, Any]:
        metadata = _json_value(row.get("metadata"))
        return {
            "id": str(row["id"]),
            "identifier": row["identifier"],
            "displayName": None,
            "metadata": metadata if isinstance(metadata, dict) else {},
            "createdAt": row.get("createdAt") or EPOCH,
        }

    # threads

    def thread_row(self, thread: dict[str, Any]) -> dict[str, Any]:
        tags = thread.get("tags")
        row = {
            "id": thread["id"],
            "createdAt": _text(thread.get("createdAt") or thread.get("updatedAt")),
            "name": _text(thread.get("name")),
            "userId": thread.get("userId"),
            "userIdentifier": thread.get("userIdentifier") if thread.get("userId") else None,
            "tags": [str(t) for t in tags]
            if isinstance(tags, list) and self.can_bind_lists
            else None,
            "metadata": _json_text(thread.get("metadata") or {}),
        }
        return {k: v for k, v in row.items() if self.has("threads", k)}

    @staticmethod
    def thread_read(row: dict[str, Any], steps: Sequence[dict[str, Any]]) -> dict[str, Any]:
        metadata = _json_value(row.get("metadata"))
        created = row.get("createdAt")
        times = [s.get("createdAt") or s.get("start") for s in steps]
        known = [t for t in times if isinstance(t, str) and t]
        if not isinstance(created, str) or not created:
            created = min(known, key=ms_key) if known else EPOCH
        updated = max([created, *known], key=ms_key)
        return {
            "id": str(row["id"]),
            "name": row.get("name"),
            "userId": None if row.get("userId") is None else str(row["userId"]),
            "userIdentifier": row.get("userIdentifier"),
            "tags": _tags(row.get("tags")),
            "metadata": metadata if isinstance(metadata, dict) else {},
            "createdAt": created,
            "updatedAt": updated,
        }

    def thread_projection(self, thread: dict[str, Any]) -> dict[str, Any]:
        """What reading the thread back would give (times aside)."""
        row = self.thread_row(thread)
        metadata = _json_value(row.get("metadata"))
        return {
            "name": row.get("name"),
            "userId": row.get("userId"),
            "tags": _tags(row.get("tags")),
            "metadata": metadata if isinstance(metadata, dict) else {},
            "createdAt": row.get("createdAt"),
        }

    # steps

    def step_columns(self, step: dict[str, Any], thread_id: str) -> dict[str, Any]:
        """The columns the layer itself would write for ``step`` (those this database has)."""
        show = step.get("showInput")
        metadata = step.get("metadata")
        tags = step.get("tags")
        row: dict[str, Any] = {
            "id": step["id"],
            "threadId": thread_id,
            "parentId": step.get("parentId") if isinstance(step.get("parentId"), str) else None,
            "name": _text(step.get("name")) or "",
            "type": _text(step.get("type")) or "undefined",
            "metadata": _json_text(metadata if isinstance(metadata, dict) else {}),
            "tags": [str(t) for t in tags]
            if isinstance(tags, list) and self.can_bind_lists
            else None,
            # As the layer writes it: str(value).lower() ("true", "false", "json", ...).
            "showInput": str(show).lower() if isinstance(show, bool) else _text(show),
            "indent": _int(step.get("indent")),
        }
        for key in _STEP_BOOLS:
            row[key] = _bool(step.get(key))
        row["streaming"] = bool(row["streaming"])  # NOT NULL in the schema
        for key in _STEP_TEXT:
            row[key] = _text(step.get(key))
        for key in _STEP_JSON:
            row[key] = _json_text(step.get(key))
        return {k: v for k, v in row.items() if self.has("steps", k)}

    @staticmethod
    def step_plain(row: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """What a step row's columns say, in ``StepDict`` terms, and its stash."""
        metadata = _json_value(row.get("metadata"))
        metadata = metadata if isinstance(metadata, dict) else {}
        stash = metadata.pop(STASH, None) if STASH in metadata else None
        step: dict[str, Any] = {
            "id": str(row["id"]),
            "threadId": str(row["threadId"]),
            "name": row.get("name"),
            "type": row.get("type"),
            "metadata": metadata,
        }
        if row.get("parentId") is not None:
            step["parentId"] = str(row["parentId"])
        for key in _STEP_TEXT:
            if row.get(key) is not None:
                step[key] = row[key]
        for key in _STEP_BOOLS:
            value = _bool(row.get(key))
            if value is not None:
                step[key] = value
        for key in _STEP_JSON:
            value = _json_value(row.get(key))
            if value is not None:
                step[key] = value
        tags = _tags(row.get("tags"))
        if tags is not None:
            step["tags"] = tags
        indent = _int(row.get("indent"))
        if indent is not None:
            step["indent"] = indent
        show = row.get("showInput")
        if isinstance(show, str):
            step["showInput"] = {"true": True, "false": False}.get(show, show)
        return step, stash if isinstance(stash, dict) else {}

    def step_row(self, step: dict[str, Any], thread_id: str) -> dict[str, Any]:
        """The columns, with what they cannot say kept in the metadata's stash."""
        cols = self.step_columns(step, thread_id)
        plain, _ = self.step_plain(cols)
        original = dict(step)
        original["threadId"] = thread_id
        stash = _make_stash(original, plain)
        if stash:
            metadata = _json_value(cols["metadata"]) if "metadata" in cols else {}
            cols["metadata"] = _json_text({**metadata, STASH: stash})
        return cols

    def step_read(self, row: dict[str, Any]) -> dict[str, Any]:
        plain, stash = self.step_plain(row)
        thread_id = plain["threadId"]

        def consistent(candidate: dict[str, Any]) -> bool:
            return self.step_plain(self.step_columns(candidate, thread_id))[0] == plain

        return _apply_stash(plain, stash, consistent)

    # elements

    def element_row(self, el: dict[str, Any], thread_id: str) -> dict[str, Any]:
        row: dict[str, Any] = {
            "id": el["id"],
            "threadId": thread_id,
            "name": _text(el.get("name")) or "",
            "forId": el.get("forId") if isinstance(el.get("forId"), str) else None,
            "page": _int(el.get("page")),
            "autoPlay": _bool(el.get("autoPlay")),
        }
        for key in _ELEMENT_TEXT:
            row[key] = _text(el.get(key))
        for key in _ELEMENT_JSON:
            row[key] = _json_text(el.get(key))
        return {k: v for k, v in row.items() if self.has("elements", k)}

    @staticmethod
    def element_read(row: dict[str, Any]) -> dict[str, Any]:
        el: dict[str, Any] = {"id": str(row["id"]), "name": row.get("name")}
        if row.get("forId") is not None:
            el["forId"] = str(row["forId"])
        for key in _ELEMENT_TEXT:
            if row.get(key) is not None:
                el[key] = row[key]
        for key in _ELEMENT_JSON:
            value = _json_value(row.get(key))
            if value is not None:
                el[key] = value
        page = _int(row.get("page"))
        if page is not None:
            el["page"] = page
        auto = _bool(row.get("autoPlay"))
        if auto is not None:
            el["autoPlay"] = auto
        return el

    def element_projection(self, el: dict[str, Any], thread_id: str) -> dict[str, Any]:
        return self.element_read(self.element_row(el, thread_id))

    # feedback

    @staticmethod
    def feedback_read(row: dict[str, Any]) -> dict[str, Any]:
        value = row.get("value")
        return {
            "id": str(row["id"]),
            "forId": str(row["forId"]),
            "value": int(value) if isinstance(value, int | float) else value,
            "comment": row.get("comment"),
        }


def _make_stash(original: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
    """What must be kept beside the columns so that ``original`` reads back exactly
    (but for the fields readers add, which are not part of a stored step: its feedback,
    and ``streaming``, which the schema requires and the layer writes anyway)."""
    ignored = journal.READ_ONLY_STEP_FIELDS
    changed = {
        k: v
        for k, v in original.items()
        if v is not None and k not in ignored and (k not in plain or plain[k] != v)
    }
    unset = sorted(
        k for k in plain if original.get(k) is None and k != "threadId" and k not in ignored
    )
    stash: dict[str, Any] = {}
    if changed:
        stash["set"] = changed
    if unset:
        stash["unset"] = unset
    return stash


def _apply_stash(
    plain: dict[str, Any],
    stash: dict[str, Any],
    consistent: Callable[[dict[str, Any]], bool],
) -> dict[str, Any]:
    """``plain`` with each stashed value that still agrees with the row's columns: a row
    edited later (by the app or by hand) reads as its columns say."""
    result = dict(plain)
    changed = stash.get("set")
    if isinstance(changed, dict):
        for key in sorted(changed):
            candidate = {**result, key: changed[key]}
            if consistent(candidate):
                result = candidate
    unset = stash.get("unset")
    if isinstance(unset, list):
        for key in unset:
            if isinstance(key, str) and key in result:
                candidate = {k: v for k, v in result.items() if k != key}
                if consistent(candidate):
                    result = candidate
    return result


# -- element bytes -----------------------------------------------------------------------


def local_file(reference: Any, *bases: Path) -> Path | None:
    """The local file a ``url`` or ``objectKey`` names (``file://`` URL or a path)."""
    if not isinstance(reference, str) or not reference:
        return None
    text = reference
    if text.lower().startswith("file://"):
        parsed = urllib.parse.urlparse(text)
        text = urllib.parse.unquote(parsed.path)
    elif "://" in text:
        return None
    path = Path(text).expanduser()
    candidates = [path] if path.is_absolute() else [path, *(b / path for b in bases)]
    for candidate in candidates:
        with contextlib.suppress(OSError):
            if candidate.is_file():
                return candidate
    return None


async def read_reference(reference: str, *bases: Path, fetch_urls: bool = True) -> bytes | None:
    """The bytes behind a local file or an http(s) URL."""
    path = local_file(reference, *bases)
    if path is not None:
        try:
            return path.read_bytes()
        except OSError:
            return None
    if fetch_urls:
        return await fetch_url(reference)
    return None


async def upload(client: Any, key: str, data: bytes, mime: str) -> dict[str, Any]:
    result = await client.upload_file(object_key=key, data=data, mime=mime, overwrite=True)
    return result if isinstance(result, dict) else {}


# -- the endpoint --------------------------------------------------------------------------


class SQLAlchemySchemaEndpoint(Endpoint):
    """A database with the schema of Chainlit's ``SQLAlchemyDataLayer``."""

    records_deletions = False  # the layer deletes rows outright

    def __init__(self, location: str, *, fetch_urls: bool = True) -> None:
        self.location = location
        self.sqlite = is_sqlite_url(location)
        self.label = redact(location)
        self.fetch_urls = fetch_urls
        self.storage: Any = None
        self.db: _Database | None = None
        self.missing_schema = False
        self.codec = Codec({}, can_bind_lists=not self.sqlite)
        self.bases: list[Path] = []
        self.dropped_tags: Counter[str] = Counter()
        self.stashed_columns: set[str] = set()

    # opening

    async def open(self, *, create: bool, dry_run: bool, create_schema: bool) -> None:
        if self.sqlite:
            path = sqlite_path(self.location)
            self.bases = [path.parent]
            if create and not path.exists():
                if not create_schema:
                    raise CopyUsageError(
                        f"no SQLite database at {path}: run the copy with --create-schema "
                        "to create it with the tables of Chainlit's SQLAlchemy data layer"
                    )
                if dry_run:
                    self.missing_schema = True  # a dry run into a new file: all would be copied
                    await self._open_storage()
                    return
            if create and not path.parent.is_dir():
                raise CopyUsageError(f"no directory {path.parent} for the SQLite database")
            self.db = _Sqlite(path, create=create)
            self.label = self.db.label
        else:
            self.db = await _Postgres.connect(self.location)
        missing = await self._missing_tables()
        if missing and create and create_schema and not dry_run:
            await self.apply_schema()
            missing = await self._missing_tables()
        if missing:
            if create and create_schema and dry_run:
                self.missing_schema = True
            else:
                where = "destination" if create else "source"
                raise CopyUsageError(
                    f"the {where} database {self.label} lacks the tables of Chainlit's "
                    f"SQLAlchemy data layer ({', '.join(missing)}). "
                    + (
                        "Run the copy with --create-schema, or create them with the SQL of "
                        "Chainlit's SQLAlchemy data layer documentation."
                        if create
                        else "Is this the database of a Chainlit app using SQLAlchemyDataLayer?"
                    )
                )
        if not self.missing_schema:
            self.codec = Codec(
                {t: await self._need().columns(t) for t in TABLES},
                can_bind_lists=not self.sqlite,
            )
        await self._open_storage()

    async def _open_storage(self) -> None:
        if self.storage_override is not None:
            self.storage = self.storage_override
            return
        from .postgres import storage_client_from_env

        self.storage = storage_client_from_env()

    async def apply_schema(self) -> None:
        db = self._need()
        async with db.transaction():
            for statement in STATEMENTS:
                await db.execute(statement)

    async def _missing_tables(self) -> list[str]:
        return [t for t in TABLES if not await self._need().columns(t)]

    def _need(self) -> _Database:
        assert self.db is not None
        return self.db

    async def close(self) -> None:
        if self.storage is not None and self.storage is not self.storage_override:
            with contextlib.suppress(Exception):
                await self.storage.close()
        if self.db is not None:
            await self.db.close()
            self.db = None

    def final_notes(self) -> list[str]:
        notes = []
        if self.dropped_tags:
            notes.append(
                f"SQLite cannot store tags in the SQLAlchemy layer's schema: the tags of "
                f"{self.dropped_tags['threads']} thread(s) were left out (a step's tags are "
                "kept in its metadata)"
            )
        if self.stashed_columns:
            notes.append(
                "the database's steps table lacks column(s) "
                + ", ".join(sorted(self.stashed_columns))
                + ": those step fields are kept in the step's metadata (add the columns, as "
                "Chainlit's migration notes say, for the app to see them)"
            )
        return notes

    def _valid(self, value: Any) -> bool:
        """Whether ``value`` can be an id here (PostgreSQL's columns are UUID)."""
        return isinstance(value, str) and (self.sqlite or _is_uuid(value))

    # reading

    async def list_users(self, identifier: str | None) -> list[dict[str, Any]]:
        if self.missing_schema:
            return []
        rows = await self._need().fetch(
            "SELECT * FROM users WHERE CAST(? AS TEXT) IS NULL OR identifier = ? "
            'ORDER BY "createdAt", id',
            identifier,
            identifier,
        )
        return [self.codec.user_read(r) for r in rows]

    async def user_by_identifier(self, identifier: str) -> dict[str, Any] | None:
        found = await self.list_users(identifier)
        return found[0] if found else None

    async def user_ids(self) -> set[str]:
        if self.missing_schema:
            return set()
        return {str(r["id"]) for r in await self._need().fetch("SELECT id FROM users")}

    async def list_threads(self, identifier: str | None, since: str | None) -> list[ThreadRef]:
        if self.missing_schema:
            return []
        rows = await self._need().fetch(
            """
            SELECT t.id AS id, t."createdAt" AS created,
                   (SELECT max(s."createdAt") FROM steps s WHERE s."threadId" = t.id) AS latest
            FROM threads t LEFT JOIN users u ON u.id = t."userId"
            WHERE CAST(? AS TEXT) IS NULL OR u.identifier = ? OR t."userIdentifier" = ?
            ORDER BY t.id
            """,
            identifier,
            identifier,
            identifier,
        )
        refs = []
        for r in rows:
            if since is not None:
                newest = max(ms_key(r["created"]), ms_key(r["latest"]))
                if newest < since:
                    continue
            refs.append(ThreadRef(str(r["id"])))
        return refs

    async def is_deleted(self, thread_id: str) -> bool:
        return False  # the layer keeps no trace of what it deleted

    async def read_thread(self, thread_id: str) -> ThreadData | None:
        if self.missing_schema or not self._valid(thread_id):
            return None
        db = self._need()
        found = await db.fetch("SELECT * FROM threads WHERE id = ?", thread_id)
        if not found:
            return None
        row = found[0]
        if row.get("userId") is not None and not row.get("userIdentifier"):
            owner = await db.fetch("SELECT identifier FROM users WHERE id = ?", row["userId"])
            row["userIdentifier"] = owner[0]["identifier"] if owner else None
        step_rows = await db.fetch(
            'SELECT * FROM steps WHERE "threadId" = ? ORDER BY "createdAt", start, id', thread_id
        )
        steps = [self.codec.step_read(r) for r in step_rows]
        data = ThreadData(thread=self.codec.thread_read(row, steps))
        data.steps = journal.order_steps(steps, {s["id"]: n for n, s in enumerate(steps)})
        step_ids = {s["id"] for s in steps}
        feedback: dict[str, dict[str, Any]] = {}
        for r in await db.fetch(
            'SELECT * FROM feedbacks WHERE "threadId" = ? ORDER BY id', thread_id
        ):
            fb = self.codec.feedback_read(r)
            if fb["forId"] in step_ids:
                feedback[fb["forId"]] = fb  # one per step, as the archive (and the UI) has it
        data.feedback = list(feedback.values())
        for r in await db.fetch(
            'SELECT * FROM elements WHERE "threadId" = ? ORDER BY id', thread_id
        ):
            fields = self.codec.element_read(r)
            key, url = fields.get("objectKey"), fields.get("url")
            item = ElementData(fields=fields)
            item.origin = str(key or url or f"element {fields['id']}")
            item.elsewhere = bool(key or url)
            # A stored link to bytes in the storage (signed, it may expire) or to a
            # local file: not worth keeping where the bytes themselves are kept.
            item.transient_url = bool(url) and (
                bool(key) or not str(url).lower().startswith(("http://", "https://"))
            )
            item.fetch = self._fetcher(key, url)
            data.elements.append(item)
        return data

    def _fetcher(self, object_key: Any, url: Any) -> Fetch | None:
        storage, bases, fetch_urls = self.storage, self.bases, self.fetch_urls
        ways: list[Fetch] = []
        if isinstance(object_key, str) and object_key and storage is not None:

            async def from_storage() -> bytes | None:
                try:
                    read_url = await storage.get_read_url(object_key=object_key)
                except Exception:
                    return None
                return await read_reference(str(read_url), *bases, fetch_urls=True)

            ways.append(from_storage)
        local = [r for r in (url, object_key) if local_file(r, *bases) is not None]
        remote = (
            [url]
            if fetch_urls
            and isinstance(url, str)
            and url.lower().startswith(("http://", "https://"))
            else []
        )
        for reference in [*local, *remote]:

            async def from_reference(ref: str = str(reference)) -> bytes | None:
                return await read_reference(ref, *bases, fetch_urls=fetch_urls)

            ways.append(from_reference)
        if not ways:
            return None

        async def fetch() -> bytes | None:
            for way in ways:
                data = await way()
                if data is not None:
                    return data
            return None

        return fetch

    # comparing, in this side's terms

    def same_user(self, dest: dict[str, Any], src: dict[str, Any]) -> bool:
        wanted = self.codec.user_read(self.codec.user_row(src))
        return all(dest.get(k) == wanted.get(k) for k in ("id", "identifier", "metadata")) and (
            dest.get("createdAt") == (src.get("createdAt") or EPOCH)
        )

    def same_thread(self, dest: dict[str, Any], src: dict[str, Any]) -> bool:
        wanted = self.codec.thread_projection(src)
        return all(dest.get(k) == v for k, v in wanted.items())

    def same_step(self, dest: dict[str, Any], src: dict[str, Any], plan: ThreadPlan) -> bool:
        row = self.codec.step_row(src, plan.thread_id)
        return self.codec.step_read(row) == dest

    def same_feedback(self, dest: dict[str, Any], src: dict[str, Any]) -> bool:
        keys = ("id", "forId", "value", "comment")
        return all(dest.get(k) == src.get(k) for k in keys)

    def _will_upload(self, el: ElementData) -> bool:
        url = el.fields.get("url")
        return self.storage is not None and el.fetch is not None and (not url or el.transient_url)

    def _object_key(self, el: ElementData, plan: ThreadPlan) -> str:
        """Where the bytes go in the storage: where they were, or where the layer itself
        would put them (``<user id>/<element id>/<name>``)."""
        key = el.fields.get("objectKey")
        if isinstance(key, str) and key:
            return key
        name = el.fields.get("name")
        return f"{plan.user_id or 'unknown'}/{el.fields['id']}" + (f"/{name}" if name else "")

    def _element_fields(self, el: ElementData, plan: ThreadPlan) -> dict[str, Any]:
        """The fields the row will have (the url of an upload is known only after it)."""
        fields = dict(el.fields)
        if self._will_upload(el):
            fields["objectKey"] = self._object_key(el, plan)
            fields.pop("url", None)
        return fields

    def same_element(self, dest: ElementData, src: ElementData, plan: ThreadPlan) -> bool:
        wanted = self.codec.element_projection(self._element_fields(src, plan), plan.thread_id)
        held = dict(dest.fields)
        if self._will_upload(src):
            held.pop("url", None)
        return held == wanted

    def element_problem(self, el: ElementData, plan: ThreadPlan) -> str | None:
        step = el.fields.get("forId")
        if isinstance(step, str) and step not in plan.all_step_ids:
            return f"its step {step} is not in the thread"
        return None

    def planned_step(self, step: dict[str, Any]) -> None:
        for key in ("command", "defaultOpen", "autoCollapse", "modes", "tags"):
            if step.get(key) is not None and not self.codec.has("steps", key):
                if self.missing_schema:
                    continue
                self.stashed_columns.add(key)

    def bytes_behind(self, src: ElementData, held: ElementData | None) -> str | None:
        url = src.fields.get("url")
        if src.fetch is not None and self.storage is None and (not url or src.transient_url):
            return (
                "no storage client is configured (set Chainlit's BUCKET_NAME and S3, GCS "
                "or Azure variables, or name your app's client with --storage-client); only "
                "the element row is copied"
            )
        return None

    # writing

    async def write_user(self, user: dict[str, Any]) -> None:
        self._check_id("user", user["id"])
        row = self.codec.user_row(user)
        await self._upsert("users", row, "id", update=("identifier", "metadata", "createdAt"))

    async def delete_thread(self, thread_id: str, deleted_at: str) -> None:
        """As the layer deletes a thread: its rows go (its files stay in the storage)."""
        if not self._valid(thread_id):
            return
        db = self._need()
        async with db.transaction():
            for table in ("feedbacks", "elements", "steps"):
                await db.execute(f'DELETE FROM {table} WHERE "threadId" = ?', thread_id)
            await db.execute("DELETE FROM threads WHERE id = ?", thread_id)

    def _check_id(self, kind: str, value: Any) -> None:
        if not self._valid(value):
            raise ValueError(
                f"{kind} id {value!r} is not a UUID, and this PostgreSQL schema's id columns "
                "are of type UUID (copy into SQLite or an archive instead)"
            )

    async def apply(self, plan: ThreadPlan, summary: Summary) -> None:
        tid = plan.thread_id
        self._check_id("thread", tid)
        for step in plan.steps:
            self._check_id("step", step["id"])
        for el in plan.elements:
            self._check_id("element", el.fields["id"])
        for fb in plan.feedback:
            self._check_id("feedback", fb["id"])
        db = self._need()
        if plan.thread is None and not await db.fetch("SELECT id FROM threads WHERE id = ?", tid):
            raise ValueError(f"thread {tid} has no row to add to")
        rows: dict[str, dict[str, Any]] = {}
        for el in plan.elements:  # uploads first: storage is not transactional
            fields = self._element_fields(el, plan)
            eid = el.fields["id"]
            if self._will_upload(el):
                assert el.fetch is not None
                data = await el.fetch()
                if data is None:
                    summary.stayed_behind(f"{el.origin or eid}: could not be read from the source")
                    fields = dict(el.fields)
                else:
                    mime = str(el.fields.get("mime") or "application/octet-stream")
                    done = await upload(self.storage, fields["objectKey"], data, mime)
                    if isinstance(done.get("url"), str):
                        fields["url"] = done["url"]
                    if isinstance(done.get("object_key"), str):
                        fields["objectKey"] = done["object_key"]
                    summary.bytes_copied += len(data)
            rows[eid] = self.codec.element_row(fields, tid)
        tags = plan.thread.get("tags") if plan.thread is not None else None
        if isinstance(tags, list) and tags and not self.codec.can_bind_lists:
            self.dropped_tags["threads"] += 1
        async with db.transaction():
            if plan.thread is not None:
                await self._upsert(
                    "threads",
                    self.codec.thread_row(plan.thread),
                    "id",
                    update=("createdAt", "name", "userId", "userIdentifier", "tags", "metadata"),
                )
            if plan.delete_steps:
                marks = ", ".join("?" for _ in plan.delete_steps)
                doomed = sorted(plan.delete_steps)
                await db.execute(f'DELETE FROM feedbacks WHERE "forId" IN ({marks})', *doomed)
                await db.execute(f'DELETE FROM elements WHERE "forId" IN ({marks})', *doomed)
                await db.execute(
                    f'DELETE FROM steps WHERE id IN ({marks}) AND "threadId" = ?', *doomed, tid
                )
            for step in plan.steps:
                await self._write_owned("steps", self.codec.step_row(step, tid), tid)
            for eid in plan.delete_elements:
                await db.execute('DELETE FROM elements WHERE id = ? AND "threadId" = ?', eid, tid)
            for row in rows.values():
                await self._write_owned("elements", row, tid)
            for fid in plan.delete_feedback:
                await db.execute("DELETE FROM feedbacks WHERE id = ?", fid)
            for fb in plan.feedback:
                # One feedback per step, as in the archive and in Chainlit's UI.
                await db.execute(
                    'DELETE FROM feedbacks WHERE "forId" = ? AND id <> ?', fb["forId"], fb["id"]
                )
                await self._upsert(
                    "feedbacks",
                    {
                        "id": fb["id"],
                        "forId": fb["forId"],
                        "threadId": tid,
                        "value": int(fb["value"]),
                        "comment": fb.get("comment"),
                    },
                    "id",
                    update=("forId", "threadId", "value", "comment"),
                )

    async def _write_owned(self, table: str, row: dict[str, Any], thread_id: str) -> None:
        """Insert or update a step or element row, refusing one of another thread."""
        owner = await self._need().fetch(f'SELECT "threadId" FROM {table} WHERE id = ?', row["id"])
        if owner and str(owner[0]["threadId"]) != thread_id:
            raise ValueError(f"{table[:-1]} id {row['id']} is already used by another thread")
        await self._upsert(table, row, "id", update=tuple(k for k in row if k != "id"))

    async def _upsert(
        self, table: str, row: dict[str, Any], key: str, *, update: tuple[str, ...]
    ) -> None:
        cols = [c for c in row if self.codec.has(table, c)]
        names = ", ".join(f'"{c}"' for c in cols)
        marks = ", ".join("?" for _ in cols)
        sets = ", ".join(f'"{c}" = excluded."{c}"' for c in update if c in cols)
        action = f"DO UPDATE SET {sets}" if sets else "DO NOTHING"
        await self._need().execute(
            f'INSERT INTO {table} ({names}) VALUES ({marks}) ON CONFLICT ("{key}") {action}',
            *[row[c] for c in cols],
        )
