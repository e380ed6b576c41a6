"""What the endpoints of Chainlit's two SQL schemas share: connecting, checking and
creating the schema, the storage client, the element-bytes policy, and handing reads and
writes to the schema's own reader and writer.

An endpoint for a SQL schema (:mod:`~filelayer.transfer.postgres`,
:mod:`~filelayer.transfer.sqla`) subclasses :class:`SQLEndpoint` and fills in its hooks:
how to connect, which tables are missing, how to create them, and, once the database is
there, a :class:`RowReader` (rows into the neutral shape) and a :class:`RowWriter` (plans
as rows). A schema that does not exist yet (a dry run with ``--create-schema``) reads as
empty and has neither.
"""

from __future__ import annotations

import contextlib
import logging
import re
from datetime import datetime, timezone
from typing import Any, Protocol

from .._time import format_time
from . import storage as _storage
from .model import (
    CopyState,
    CopyUsageError,
    ElementData,
    Endpoint,
    Summary,
    ThreadData,
    ThreadPlan,
    ThreadRef,
)

log = logging.getLogger("filelayer")

INSTALL_HINT = "pip install 'chainlit-filelayer[sql]'"

COPIED_TABLE = "filelayer_copied"
"""The copy's own table in a database it writes into: the ids of the threads it wrote or
found there already. Chainlit's layers delete a thread's rows outright, so a thread
listed here that has no row was deleted by the app, where one never copied is not
listed: the first is not copied back to life, and is deleted in an archive a copy from
the database goes to."""
CREATE_COPIED_TABLE = f"CREATE TABLE IF NOT EXISTS {COPIED_TABLE} (id TEXT PRIMARY KEY)"
BYTES_TABLE = "filelayer_copied_bytes"
"""The copy's table of the element files it uploaded into the SQLAlchemy layer's schema,
whose ``elements`` table has no room for it: element id, the storage key and the SHA-256
of the bytes put there, the row's URL when it is the element's own and not the one the
upload gave, and whether the copy chose the key (the element had none). Without it, an
element whose bytes changed in the source would read as unchanged (its row is), and the
storage would keep the old bytes; a URL of the element's own beside a key would read as
a storage link, to be dropped; and an archive would gain a key its element never had."""
CREATE_BYTES_TABLE = (
    f'CREATE TABLE IF NOT EXISTS {BYTES_TABLE} (id TEXT PRIMARY KEY, "objectKey" TEXT, '
    'sha256 TEXT, "ownUrl" TEXT, "chosenKey" INTEGER)'
)
STATE_TABLE = "filelayer_copy_state"
"""The copy's record, per thread, of what its last copy left in this database: digests
of the source as copied and of the thread as held here after it (see
:class:`~.model.CopyState`). A repeated copy tells by it, not by times (the SQLAlchemy
layer keeps no update time of a thread, and an app edits a message in place), whether
the app changed the thread here since."""
CREATE_STATE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} (id TEXT PRIMARY KEY, source TEXT, dest TEXT)"
)


def not_tracked(
    exc: Exception, table: str = COPIED_TABLE, create: str = CREATE_COPIED_TABLE
) -> bool:
    """Say (in the log) that the copy's ``table`` could not be created, and return
    ``False``: the copy goes on without it, as before the table existed. Only later
    copies lose something: a thread the app deletes there reads as never copied
    (:data:`COPIED_TABLE`), an element file is uploaded again (:data:`BYTES_TABLE`)."""
    log.warning(
        "filelayer: cannot create the table %s (%s): copying without it; later copies "
        "will know less of what this one wrote (have the database's owner run: %s)",
        table,
        exc,
        create,
    )
    return False


def own_bytes(el: ElementData) -> bool:
    """Whether the source holds the element's bytes itself beside a URL of its own."""
    return el.fetch is not None and not el.elsewhere and bool(el.fields.get("url"))


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


async def connect_asyncpg(url: str, label: str) -> Any:
    """An asyncpg connection to ``url``; a missing asyncpg or an unreachable server is a
    :class:`CopyUsageError` that says what to do (``label``: the URL without password)."""
    try:
        import asyncpg  # type: ignore[import-untyped]
    except ImportError as exc:
        raise CopyUsageError(
            f"asyncpg is needed to use a PostgreSQL database ({label}): {INSTALL_HINT}"
        ) from exc
    try:
        return await asyncpg.connect(url, timeout=15)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise CopyUsageError(
            f"cannot connect to {label}: {exc}. Check the URL (user, password, "
            "host, port, database) and that the server accepts connections."
        ) from exc


async def delete_objects(storage: Any, keys: list[str]) -> list[str]:
    """Delete these objects from the storage; the keys that could not be (all of them
    without a client), for the report: each is tried whatever the others did."""
    if storage is None:
        return list(keys)
    failed = []
    for key in keys:
        try:
            await storage.delete_file(object_key=key)
        except Exception:  # reported by the caller; the others are deleted all the same
            failed.append(key)
    return failed


class RowReader(Protocol):
    """A schema's rows read into the neutral shape (see :class:`~.model.Endpoint`)."""

    async def list_users(self, identifier: str | None) -> list[dict[str, Any]]: ...

    async def user_ids(self) -> set[str]: ...

    async def list_threads(self, identifier: str | None, since: str | None) -> list[ThreadRef]: ...

    async def is_deleted(self, thread_id: str) -> bool: ...

    async def read_thread(self, thread_id: str) -> ThreadData | None: ...

    lossy_users: dict[str, str]
    """Why each user row read so far lost its metadata (see ``Endpoint.lossy_users``)."""

    async def app_deleted(self) -> list[str]:
        """The threads the copy wrote here that are gone (see :data:`COPIED_TABLE`)."""
        ...

    async def feedback_threads(self, ids: list[str]) -> dict[str, str]:
        """The thread each of these feedback ids rates a step of, for those held here."""
        ...

    async def item_threads(self, kind: str, ids: list[str]) -> dict[str, str]:
        """The thread of each of these step or element (``kind``) ids held here."""
        ...


class RowWriter(Protocol):
    """Plans written as a schema's rows (see :class:`~.model.Endpoint`)."""

    async def write_user(self, user: dict[str, Any]) -> None: ...

    async def delete_thread(self, thread_id: str, deleted_at: str) -> None: ...

    async def erase_thread(self, thread_id: str) -> list[str]:
        """The thread's rows deleted, and its element files in the storage; the storage
        keys that could not be deleted."""
        ...

    async def erase_user(self, user_id: str) -> None: ...

    async def apply(self, plan: ThreadPlan, summary: Summary) -> None:
        """Write the plan, and record its thread in :data:`COPIED_TABLE`."""
        ...

    async def track_copies(self) -> None:
        """Create :data:`COPIED_TABLE` if missing."""
        ...

    async def record_copy(self, thread_id: str) -> None:
        """Add the thread to :data:`COPIED_TABLE`."""
        ...

    async def copy_state(self, thread_id: str) -> CopyState | None:
        """The thread's line of :data:`STATE_TABLE`, if any."""
        ...

    async def record_state(self, thread_id: str, state: CopyState) -> None:
        """Set the thread's line of :data:`STATE_TABLE`."""
        ...


class SQLEndpoint(Endpoint):
    """A database with one of Chainlit's SQL schemas (subclasses say which)."""

    records_deletions = False  # Chainlit's layers delete rows outright
    keeps_state = True
    erases_users = True
    tables_are = ""
    """Whose tables these are, for messages ("Chainlit's tables")."""
    create_hint = ""
    """How to get the tables, when a destination lacks them."""
    source_hint = ""
    """What to check, when a source lacks them."""

    def __init__(self, location: str, *, fetch_urls: bool = False) -> None:
        self.location = location
        self.label = redact(location)
        self.fetch_urls = fetch_urls
        self.storage: Any = None
        self.missing_schema = False
        self.reader: RowReader | None = None
        self.writer: RowWriter | None = None

    # -- the hooks ------------------------------------------------------------------

    async def _connect(self, *, create: bool, dry_run: bool, create_schema: bool) -> bool:
        """Connect; ``False`` when there is no database yet and a dry run would make it."""
        raise NotImplementedError

    async def _missing_tables(self) -> list[str]:
        raise NotImplementedError

    async def apply_schema(self) -> None:
        """Create the schema's tables (idempotent)."""
        raise NotImplementedError

    async def _open_rows(self) -> None:
        """The schema is there: learn what it holds, set :attr:`reader` and :attr:`writer`."""
        raise NotImplementedError

    async def _disconnect(self) -> None:
        raise NotImplementedError

    # -- opening and closing --------------------------------------------------------

    async def open(self, *, create: bool, dry_run: bool, create_schema: bool) -> None:
        if not await self._connect(create=create, dry_run=dry_run, create_schema=create_schema):
            self.missing_schema = True  # a dry run into a new database: all would be copied
        else:
            missing = await self._missing_tables()
            if missing and create and create_schema and not dry_run:
                await self.apply_schema()
                missing = await self._missing_tables()
            if missing:
                if not (create and create_schema and dry_run):
                    where = "destination" if create else "source"
                    raise CopyUsageError(
                        f"the {where} database {self.label} lacks {self.tables_are} "
                        f"({', '.join(missing)}). "
                        + (self.create_hint if create else self.source_hint)
                    )
                self.missing_schema = True  # would be created: the database reads as empty
        if self.storage_override is not None:
            self.storage = self.storage_override
        else:
            self.storage = _storage.storage_client_from_env()
        if not self.missing_schema:
            await self._open_rows()
            if create and not dry_run:
                await self._need_writer().track_copies()

    async def close(self) -> None:
        # A client given by the caller is the caller's to close.
        if self.storage is not None and self.storage is not self.storage_override:
            with contextlib.suppress(Exception):  # closing must not hide the copy's result
                await self.storage.close()
        await self._disconnect()

    # -- reading and writing: the schema's reader and writer ------------------------

    async def list_users(self, identifier: str | None) -> list[dict[str, Any]]:
        return [] if self.reader is None else await self.reader.list_users(identifier)

    def lossy_users(self) -> dict[str, str]:
        return {} if self.reader is None else dict(self.reader.lossy_users)

    async def user_by_identifier(self, identifier: str) -> dict[str, Any] | None:
        found = await self.list_users(identifier)
        return found[0] if found else None

    async def user_ids(self) -> set[str]:
        return set() if self.reader is None else await self.reader.user_ids()

    async def list_threads(self, identifier: str | None, since: str | None) -> list[ThreadRef]:
        """The threads, then those the app deleted after a copy wrote them: when and by
        whom is not known any more, so they are listed whatever the filters (a copy
        deletes only what its destination holds, by the filter's author)."""
        if self.reader is None:
            return []
        refs = await self.reader.list_threads(identifier, since)
        now = format_time(datetime.now(timezone.utc))
        return refs + [ThreadRef(tid, deleted_at=now) for tid in await self.reader.app_deleted()]

    async def is_deleted(self, thread_id: str) -> bool:
        return self.reader is not None and await self.reader.is_deleted(thread_id)

    async def read_thread(self, thread_id: str) -> ThreadData | None:
        return None if self.reader is None else await self.reader.read_thread(thread_id)

    async def feedback_elsewhere(self, thread_id: str, ids: list[str]) -> set[str]:
        if self.reader is None or not ids:
            return set()
        owners = await self.reader.feedback_threads(ids)
        return {fid for fid, owner in owners.items() if owner != thread_id}

    async def ids_elsewhere(self, kind: str, thread_id: str, ids: list[str]) -> set[str]:
        if kind == "feedback":
            return await self.feedback_elsewhere(thread_id, ids)
        if self.reader is None or not ids:
            return set()
        owners = await self.reader.item_threads(kind, ids)
        return {item_id for item_id, owner in owners.items() if owner != thread_id}

    def _need_writer(self) -> RowWriter:
        assert self.writer is not None, "written before the database was opened"
        return self.writer

    async def write_user(self, user: dict[str, Any]) -> None:
        await self._need_writer().write_user(user)

    async def delete_thread(self, thread_id: str, deleted_at: str) -> None:
        await self._need_writer().delete_thread(thread_id, deleted_at)

    async def holds_copy(self, thread_id: str) -> None:
        await self._need_writer().record_copy(thread_id)

    async def copy_state(self, thread_id: str) -> CopyState | None:
        return None if self.writer is None else await self.writer.copy_state(thread_id)

    async def record_state(self, thread_id: str, state: CopyState) -> None:
        await self._need_writer().record_state(thread_id, state)

    async def erase_thread(self, thread_id: str, deleted_at: str) -> list[str]:
        return await self._need_writer().erase_thread(thread_id)

    async def erase_user(self, user_id: str) -> None:
        await self._need_writer().erase_user(user_id)

    async def apply(self, plan: ThreadPlan, summary: Summary) -> None:
        await self._need_writer().apply(plan, summary)

    # -- element bytes --------------------------------------------------------------

    def wants_bytes(self, el: ElementData) -> bool:
        """Whether the element's row here needs its bytes in the storage. Not when it
        has a URL of its own: Chainlit reads the URL first and serves it from there."""
        return not el.fields.get("url")

    def will_upload(self, el: ElementData) -> bool:
        return self.storage is not None and el.fetch is not None and self.wants_bytes(el)

    def element_problem(self, el: ElementData, plan: ThreadPlan) -> str | None:
        step = el.fields.get("forId")
        if isinstance(step, str) and step not in plan.all_step_ids:
            return f"its step {step} is not in the thread"
        return None

    def bytes_behind(self, src: ElementData, held: ElementData | None) -> str | None:
        if src.fetch is not None and self.storage is None and self.wants_bytes(src):
            return (
                "no storage client is configured (set Chainlit's BUCKET_NAME and S3, GCS "
                "or Azure variables, or name your app's client with --storage-client); only "
                "the element row is copied"
            )
        return None
