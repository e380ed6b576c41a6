"""The side of ``filelayer copy`` that speaks the schema of Chainlit's ``SQLAlchemyDataLayer``
(tables ``users``, ``threads``, ``steps``, ``elements``, ``feedbacks``), on SQLite or on
PostgreSQL.

Named the way that layer's users name their database: ``sqlite:///chainlit.db``,
``sqlite+aiosqlite:///chainlit.db`` (a path after three slashes is relative, after four
absolute), ``postgresql+asyncpg://...``; a plain ``postgresql://`` URL whose database has
these tables (or ``--schema sqlalchemy``) is read the same way.

SQLite is read and written with the standard library's ``sqlite3``, so copying from or to
a SQLite file needs no extra package; PostgreSQL goes through asyncpg, imported only then.

This module is the endpoint (opening the database, the schema, comparing in the schema's
terms); :mod:`~filelayer.transfer.sqldb` connects, :mod:`~filelayer.transfer.sqlarows`
encodes the rows (and says what the layer stores and how it reads back),
:mod:`~filelayer.transfer.sqlaread` reads them and :mod:`~filelayer.transfer.sqlawrite`
writes them.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

from .model import CopyUsageError, ElementData, ThreadPlan
from .sqlaread import SQLAlchemyReader
from .sqlarows import EPOCH, Codec
from .sqlaschema import STATEMENTS, TABLES
from .sqlawrite import SQLAlchemyWriter
from .sqlbase import SQLEndpoint, own_bytes
from .sqldb import Database, PostgresDatabase, SqliteDatabase, is_sqlite_url, sqlite_path
from .storage import clean_key


class SQLAlchemySchemaEndpoint(SQLEndpoint):
    """A database with the schema of Chainlit's ``SQLAlchemyDataLayer``."""

    tables_are = "the tables of Chainlit's SQLAlchemy data layer"
    create_hint = (
        "Run the copy with --create-schema, or create them with the SQL of "
        "Chainlit's SQLAlchemy data layer documentation."
    )
    source_hint = "Is this the database of a Chainlit app using SQLAlchemyDataLayer?"

    def __init__(
        self, location: str, *, fetch_urls: bool = False, files_dir: str | None = None
    ) -> None:
        super().__init__(location, fetch_urls=fetch_urls)
        self.files_dir = Path(files_dir) if files_dir else None
        """The only directory whose files a row's ``url`` or ``objectKey`` may name
        (``--files-dir``): none unless the operator names one. The database's own
        directory is an app's (its ``.env``, the database itself), not a store of files."""
        self.sqlite = is_sqlite_url(location)
        self.db: Database | None = None
        self.codec = Codec({}, sqlite=self.sqlite)
        self.bases: list[Path] = []
        self.dropped_tags: Counter[str] = Counter()
        self.stashed_columns: set[str] = set()

    # opening and closing

    async def _connect(self, *, create: bool, dry_run: bool, create_schema: bool) -> bool:
        if not self.sqlite:
            self.db = await PostgresDatabase.connect(self.location)
            return True
        path = sqlite_path(self.location)
        self.bases = [self.files_dir] if self.files_dir is not None else []
        if self.files_dir is not None and path.resolve().is_relative_to(self.files_dir.resolve()):
            raise CopyUsageError(
                f"--files-dir {self.files_dir} holds the database itself, whose rows would "
                "then reach every user's conversations: name the directory of the element "
                "files only"
            )
        if create and not path.exists():
            if not create_schema:
                raise CopyUsageError(
                    f"no SQLite database at {path}: run the copy with --create-schema "
                    "to create it with the tables of Chainlit's SQLAlchemy data layer"
                )
            if dry_run:
                return False  # a dry run into a new file: all would be copied
        if create and not path.parent.is_dir():
            raise CopyUsageError(f"no directory {path.parent} for the SQLite database")
        self.db = SqliteDatabase(path, create=create)
        self.label = self.db.label
        return True

    def _need(self) -> Database:
        assert self.db is not None
        return self.db

    async def apply_schema(self) -> None:
        db = self._need()
        async with db.transaction():
            for statement in STATEMENTS:
                await db.execute(statement)

    async def _missing_tables(self) -> list[str]:
        return [t for t in TABLES if not await self._need().columns(t)]

    async def _open_rows(self) -> None:
        db = self._need()
        self.codec = Codec({t: await db.columns(t) for t in TABLES}, sqlite=self.sqlite)
        self.reader = SQLAlchemyReader(
            db, self.codec, self.storage, self.bases, fetch_urls=self.fetch_urls
        )
        self.writer = SQLAlchemyWriter(
            db, self.codec, self.storage, self.element_fields, self.dropped_tags
        )

    async def _disconnect(self) -> None:
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

    # comparing, in this side's terms

    def same_user(self, dest: dict[str, Any], src: dict[str, Any]) -> bool:
        wanted = self.codec.user_read(self.codec.user_row(src))
        return all(dest.get(k) == wanted.get(k) for k in ("id", "identifier", "metadata")) and (
            dest.get("createdAt") == (src.get("createdAt") or EPOCH)
        )

    def same_thread(self, dest: dict[str, Any], src: dict[str, Any]) -> bool:
        wanted = self.codec.thread_projection(src)
        return all(dest.get(k) == v for k, v in wanted.items())

    def same_feedback(self, dest: dict[str, Any], src: dict[str, Any]) -> bool:
        # On PostgreSQL the comment is held without NUL (no stash): that is its value.
        return super().same_feedback(
            dest, {**src, "comment": self.codec.name_text(src.get("comment"))}
        )

    def same_step(self, dest: dict[str, Any], src: dict[str, Any], plan: ThreadPlan) -> bool:
        row = self.codec.step_row(src, plan.thread_id)
        return self.codec.step_read(row) == dest

    def wants_bytes(self, el: ElementData) -> bool:
        # A stored link that only points at the bytes (signed, or a local path) is no
        # URL of the element's own: the bytes go to the storage, as the layer's would.
        return not el.fields.get("url") or el.transient_url

    def will_upload(self, el: ElementData) -> bool:
        """Also the bytes the source holds itself beside a URL of the element's own (an
        archive after a copy with ``--fetch-urls``): the row keeps the URL, which the app
        serves, and its key the bytes, so that an archive comes back whole (without a
        client they are not listed as left behind: the row needs none)."""
        return super().will_upload(el) or (self.storage is not None and own_bytes(el))

    def _object_key(self, el: ElementData, plan: ThreadPlan) -> str:
        """Where the bytes go in the storage: where they were, or where the layer itself
        would put them (``<user id>/<element id>/<name>``).

        Only a plain relative key (:func:`~filelayer.transfer.storage.clean_key`) is
        taken: a name such as ``../../x`` is any text an app accepted, and as a key it
        would write outside the element's place in a storage over a directory, and never
        be read back (the copy hands no such key to a client). The key then leaves the
        name out, and past that the user id too."""
        key = el.fields.get("objectKey")
        if isinstance(key, str) and clean_key(key):
            return key
        name = el.fields.get("name")
        base = f"{plan.user_id or 'unknown'}/{el.fields['id']}"
        for candidate in (base + (f"/{name}" if name else ""), base):
            if clean_key(candidate):
                return candidate
        return f"unknown/{hashlib.sha256(str(el.fields['id']).encode()).hexdigest()}"

    def element_fields(self, el: ElementData, plan: ThreadPlan) -> tuple[dict[str, Any], bool]:
        """The fields the row will have (the url of an upload is known only after it),
        and whether the bytes are uploaded first."""
        fields = dict(el.fields)
        uploading = self.will_upload(el)
        if uploading:
            fields["objectKey"] = self._object_key(el, plan)
            if el.transient_url or not own_bytes(el):
                fields.pop("url", None)
        return fields, uploading

    def same_element(self, dest: ElementData, src: ElementData, plan: ThreadPlan) -> bool:
        fields, uploading = self.element_fields(src, plan)
        wanted = self.codec.element_projection(fields, plan.thread_id)
        held = dict(dest.fields)
        if not uploading:
            return held == wanted
        if "url" not in fields:
            held.pop("url", None)
        if held != wanted:
            return False
        # The row says nothing of the bytes: the copy's record of its upload does (a
        # source that cannot say which bytes it holds: uploaded once is enough).
        return dest.sha256 == src.sha256 if src.sha256 is not None else dest.sha256 is not None

    def holds_id(self, value: str) -> bool:
        return self.codec.valid_id(value)

    def unstored_thread_fields(self) -> tuple[str, ...]:
        return () if self.codec.can_bind_lists else ("tags",)

    def planned_step(self, step: dict[str, Any]) -> None:
        for key in ("command", "defaultOpen", "autoCollapse", "modes", "tags"):
            if step.get(key) is not None and not self.codec.has("steps", key):
                if self.missing_schema:
                    continue
                self.stashed_columns.add(key)
