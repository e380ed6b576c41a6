"""Reading a database with the schema of Chainlit's ``SQLAlchemyDataLayer`` into the
copy's neutral shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._time import ms_key
from ..format import journal
from .model import ElementData, Fetch, ThreadData, ThreadRef
from .sqlarows import Codec
from .sqlbase import BYTES_TABLE, COPIED_TABLE
from .sqldb import Database
from .stash import not_an_object, one_per_step
from .storage import clean_key, local_file, read_reference


class SQLAlchemyReader:
    """The schema's rows as neutral dicts.

    An element's bytes are read through the storage client when one is configured, else
    from its ``url`` or ``objectKey`` when it names a local file (relative to ``bases``),
    else from an http(s) ``url`` on a public address (with ``fetch_urls``): the ``url``
    column may hold a signed link that has expired."""

    def __init__(
        self, db: Database, codec: Codec, storage: Any, bases: list[Path], *, fetch_urls: bool
    ) -> None:
        self.db = db
        self.codec = codec
        self.storage = storage
        self.bases = bases
        self.fetch_urls = fetch_urls
        self._tracked: bool | None = None
        self._has_bytes: bool | None = None
        self.lossy_users: dict[str, str] = {}

    async def _tracks_copies(self) -> bool:
        if self._tracked is None:
            self._tracked = bool(await self.db.columns(COPIED_TABLE))
        return self._tracked

    async def app_deleted(self) -> list[str]:
        if not await self._tracks_copies():
            return []
        rows = await self.db.fetch(
            f"SELECT c.id AS id FROM {COPIED_TABLE} c WHERE NOT EXISTS "
            "(SELECT 1 FROM threads t WHERE CAST(t.id AS TEXT) = c.id) ORDER BY c.id"
        )
        return [str(r["id"]) for r in rows]

    async def feedback_threads(self, ids: list[str]) -> dict[str, str]:
        owners: dict[str, str] = {}
        for fid in ids:
            if not self.codec.valid_id(fid):
                continue  # no row can have it
            rows = await self.db.fetch(
                'SELECT f."threadId" AS own, s."threadId" AS rated FROM feedbacks f '
                'LEFT JOIN steps s ON s.id = f."forId" WHERE f.id = ?',
                fid,
            )
            for r in rows:
                owner = r["own"] if r["own"] is not None else r["rated"]
                if owner is not None:
                    owners[fid] = str(owner)
        return owners

    async def item_threads(self, kind: str, ids: list[str]) -> dict[str, str]:
        owners: dict[str, str] = {}
        for item_id in ids:
            if not self.codec.valid_id(item_id):
                continue  # no row can have it
            table = {"steps": "steps", "elements": "elements"}[kind]
            for r in await self.db.fetch(f'SELECT "threadId" FROM {table} WHERE id = ?', item_id):
                if r["threadId"] is not None:
                    owners[item_id] = str(r["threadId"])
        return owners

    async def list_users(self, identifier: str | None) -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            "SELECT * FROM users WHERE CAST(? AS TEXT) IS NULL OR identifier = ? "
            'ORDER BY "createdAt", id',
            identifier,
            identifier,
        )
        for r in rows:
            why = not_an_object(r.get("metadata"), layers=3)
            if why is not None:
                self.lossy_users[str(r["id"])] = why
        return [self.codec.user_read(r) for r in rows]

    async def user_ids(self) -> set[str]:
        return {str(r["id"]) for r in await self.db.fetch("SELECT id FROM users")}

    async def list_threads(self, identifier: str | None, since: str | None) -> list[ThreadRef]:
        rows = await self.db.fetch(
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
        """Written by a copy and deleted since (the layer keeps no trace of its own)."""
        if not await self._tracks_copies():
            return False
        found = await self.db.fetch(
            f"SELECT c.id FROM {COPIED_TABLE} c WHERE c.id = ? AND NOT EXISTS "
            "(SELECT 1 FROM threads t WHERE CAST(t.id AS TEXT) = c.id)",
            thread_id,
        )
        return bool(found)

    async def read_thread(self, thread_id: str) -> ThreadData | None:
        if not self.codec.valid_id(thread_id):
            return None
        db = self.db
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
        for kind, r in [("threads", row)] + [("steps", r) for r in step_rows]:
            why = not_an_object(r.get("metadata"), layers=3)
            if why is not None:
                data.lossy.append((kind, str(r["id"]), why))
        step_ids = {s["id"] for s in steps}
        feedback = [
            self.codec.feedback_read(r)
            for r in await db.fetch(
                'SELECT * FROM feedbacks WHERE "threadId" = ? ORDER BY id', thread_id
            )
        ]
        data.feedback = one_per_step([fb for fb in feedback if fb["forId"] in step_ids])
        uploaded = await self._uploaded(thread_id)
        for r in await db.fetch(
            'SELECT * FROM elements WHERE "threadId" = ? ORDER BY id', thread_id
        ):
            fields = self.codec.element_read(r)
            key, url = fields.get("objectKey"), fields.get("url")
            item = ElementData(fields=fields)
            record = uploaded.get((str(fields["id"]), key))
            item.sha256 = record[0] if record is not None else None
            item.chosen_key = record is not None and bool(record[2])
            item.origin = str(key or url or f"element {fields['id']}")
            item.elsewhere = bool(key or url)
            # A stored link to bytes in the storage (signed, it may expire) or to a
            # local file: not worth keeping where the bytes themselves are kept.
            own = record is not None and record[1] is not None and record[1] == url
            item.transient_url = bool(url) and (
                (bool(key) and not own) or not str(url).lower().startswith(("http://", "https://"))
            )
            item.fetch = self._fetcher(key, url)
            data.elements.append(item)
        return data

    async def _uploaded(self, thread_id: str) -> dict[tuple[str, Any], tuple[str, Any, Any]]:
        """The SHA-256 of each element file of the thread a copy uploaded, the URL of the
        element's own its row kept (``None``: the upload's) and whether the copy chose
        the key, by element id and storage key (see
        :data:`~filelayer.transfer.sqlbase.BYTES_TABLE`)."""
        if self._has_bytes is None:
            self._has_bytes = bool(await self.db.columns(BYTES_TABLE))
        if not self._has_bytes:
            return {}
        rows = await self.db.fetch(
            f'SELECT b.id AS id, b."objectKey" AS key, b.sha256 AS sha256, b."ownUrl" AS own, '
            'b."chosenKey" AS chosen '
            f"FROM {BYTES_TABLE} b JOIN elements e ON CAST(e.id AS TEXT) = b.id "
            'WHERE e."threadId" = ?',
            thread_id,
        )
        return {(str(r["id"]), r["key"]): (str(r["sha256"]), r["own"], r["chosen"]) for r in rows}

    def _fetcher(self, object_key: Any, url: Any) -> Fetch | None:
        storage, bases, fetch_urls = self.storage, self.bases, self.fetch_urls
        ways: list[Fetch] = []
        if isinstance(object_key, str) and clean_key(object_key) and storage is not None:

            async def from_storage() -> bytes | None:
                try:
                    read_url = await storage.get_read_url(object_key=object_key)
                except Exception:
                    return None
                # The app's own client: its read URL may be a local file or a bucket on
                # the local network, and is read as it says.
                return await read_reference(str(read_url), fetch_urls=True, trusted=True)

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
