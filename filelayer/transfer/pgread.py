"""Reading a database with Chainlit's official schema into the copy's neutral shape."""

from __future__ import annotations

from typing import Any

from .._time import format_time, ms_key
from ..format import journal
from .model import ElementData, Fetch, ThreadData, ThreadRef, fetch_url
from .pgrows import StepCodec, element_read, feedback_plain, thread_plain, user_plain
from .sqlbase import COPIED_TABLE
from .stash import not_an_object, one_per_step
from .storage import clean_key


class PostgresReader:
    """Rows of the official schema, through one asyncpg connection, as neutral dicts.

    ``step_types``: the labels of the database's ``StepType`` enum; ``storage``: the
    client holding element bytes (``None``: only http(s) URLs on public addresses are
    fetched, and only with ``fetch_urls``)."""

    def __init__(
        self, conn: Any, step_types: frozenset[str], storage: Any, *, fetch_urls: bool
    ) -> None:
        self.conn = conn
        self.step_types = step_types
        self.storage = storage
        self.fetch_urls = fetch_urls
        self._tracked: bool | None = None
        self.lossy_users: dict[str, str] = {}

    async def _tracks_copies(self) -> bool:
        if self._tracked is None:
            self._tracked = bool(
                await self.conn.fetchval("SELECT to_regclass($1) IS NOT NULL", COPIED_TABLE)
            )
        return self._tracked

    async def app_deleted(self) -> list[str]:
        if not await self._tracks_copies():
            return []
        rows = await self.conn.fetch(
            f"SELECT c.id FROM {COPIED_TABLE} c "
            'WHERE NOT EXISTS (SELECT 1 FROM "Thread" t WHERE t.id = c.id) ORDER BY c.id'
        )
        return [r[0] for r in rows]

    async def feedback_threads(self, ids: list[str]) -> dict[str, str]:
        rows = await self.conn.fetch(
            'SELECT f.id, s."threadId" FROM "Feedback" f JOIN "Step" s ON s.id = f."stepId" '
            "WHERE f.id = ANY($1::text[])",
            ids,
        )
        return {str(r[0]): str(r[1]) for r in rows}

    async def item_threads(self, kind: str, ids: list[str]) -> dict[str, str]:
        table = {"steps": "Step", "elements": "Element"}[kind]
        rows = await self.conn.fetch(
            f'SELECT id, "threadId" FROM "{table}" WHERE id = ANY($1::text[])', ids
        )
        return {str(r[0]): str(r[1]) for r in rows if r[1] is not None}

    async def list_users(self, identifier: str | None) -> list[dict[str, Any]]:
        rows = await self.conn.fetch(
            'SELECT * FROM "User" WHERE $1::text IS NULL OR identifier = $1 '
            'ORDER BY "createdAt", id',
            identifier,
        )
        for r in rows:
            why = not_an_object(r["metadata"], layers=1)
            if why is not None:
                self.lossy_users[str(r["id"])] = why
        return [user_plain(dict(r)) for r in rows]

    async def user_ids(self) -> set[str]:
        return {r[0] for r in await self.conn.fetch('SELECT id FROM "User"')}

    async def list_threads(self, identifier: str | None, since: str | None) -> list[ThreadRef]:
        rows = await self.conn.fetch(
            """
            SELECT t.id, t."deletedAt",
                   GREATEST(t."createdAt", t."updatedAt",
                            (SELECT max(s."createdAt") FROM "Step" s WHERE s."threadId" = t.id))
                       AS activity
            FROM "Thread" t LEFT JOIN "User" u ON u.id = t."userId"
            WHERE $1::text IS NULL OR u.identifier = $1
            ORDER BY t.id
            """,
            identifier,
        )
        refs = []
        for r in rows:
            deleted = r["deletedAt"]
            when = ms_key(deleted or r["activity"])
            if since is not None and when < since:
                continue
            refs.append(ThreadRef(r["id"], deleted_at=format_time(deleted) if deleted else None))
        return refs

    async def is_deleted(self, thread_id: str) -> bool:
        """Marked deleted, or written by a copy and deleted by the app since."""
        row = await self.conn.fetchrow('SELECT "deletedAt" FROM "Thread" WHERE id = $1', thread_id)
        if row is not None:
            return row["deletedAt"] is not None
        if not await self._tracks_copies():
            return False
        return bool(
            await self.conn.fetchval(
                f"SELECT count(*) FROM {COPIED_TABLE} WHERE id = $1", thread_id
            )
        )

    async def read_thread(self, thread_id: str) -> ThreadData | None:
        row = await self.conn.fetchrow(
            'SELECT t.*, u.identifier AS "userIdentifier" FROM "Thread" t '
            'LEFT JOIN "User" u ON u.id = t."userId" WHERE t.id = $1',
            thread_id,
        )
        if row is None or row["deletedAt"] is not None:
            return None
        data = ThreadData(thread=thread_plain(dict(row)))
        step_rows = await self.conn.fetch(
            'SELECT * FROM "Step" WHERE "threadId" = $1 ORDER BY "startTime", "createdAt", id',
            thread_id,
        )
        codec = StepCodec(self.step_types, {r["id"] for r in step_rows}, row["createdAt"])
        steps = [codec.read(dict(r)) for r in step_rows]
        data.steps = journal.order_steps(steps, {s["id"]: n for n, s in enumerate(steps)})
        for kind, r in [("threads", row)] + [("steps", r) for r in step_rows]:
            why = not_an_object(r["metadata"], layers=1)
            if why is not None:
                data.lossy.append((kind, str(r["id"]), why))
        feedback = await self.conn.fetch(
            'SELECT f.* FROM "Feedback" f JOIN "Step" s ON s.id = f."stepId" '
            'WHERE s."threadId" = $1 ORDER BY f."createdAt", f.id',
            thread_id,
        )
        data.feedback = one_per_step([feedback_plain(dict(r)) for r in feedback])
        for r in await self.conn.fetch(
            'SELECT * FROM "Element" WHERE "threadId" = $1 ORDER BY "createdAt", id', thread_id
        ):
            fields, stash = element_read(dict(r))
            item = ElementData(fields=fields)
            if stash.get("uploaded"):
                item.sha256 = stash.get("sha256") if isinstance(stash.get("sha256"), str) else None
                size = stash.get("bytes")
                item.size = size if isinstance(size, int) else None
            item.origin = str(r["objectKey"] or r["url"] or f"element {r['id']}")
            item.elsewhere = bool(r["objectKey"] or r["url"])
            item.fetch = self._fetcher(r["objectKey"], r["url"])
            data.elements.append(item)
        return data

    def _fetcher(self, object_key: str | None, url: str | None) -> Fetch | None:
        storage = self.storage
        if object_key and clean_key(object_key) and storage is not None:

            async def from_storage() -> bytes | None:
                try:
                    read_url = await storage.get_read_url(object_key=object_key)
                except Exception:  # kept as a reference and listed, as an unreadable URL
                    return None
                return await fetch_url(str(read_url), public_only=False)  # the app's bucket

            return from_storage
        if url and self.fetch_urls and url.lower().startswith(("http://", "https://")):

            async def from_url() -> bytes | None:
                return await fetch_url(url, public_only=True)

            return from_url
        return None
