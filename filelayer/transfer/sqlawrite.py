"""Writing the copy's plans as rows of the schema of Chainlit's ``SQLAlchemyDataLayer``."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from typing import Any

from .model import CopyState, ElementData, Summary, ThreadPlan
from .sqlarows import Codec
from .sqlbase import (
    BYTES_TABLE,
    COPIED_TABLE,
    CREATE_BYTES_TABLE,
    CREATE_COPIED_TABLE,
    CREATE_STATE_TABLE,
    STATE_TABLE,
    delete_objects,
    not_tracked,
)
from .sqldb import Database
from .storage import upload

ElementFields = Callable[[ElementData, ThreadPlan], tuple[dict[str, Any], bool]]
"""The fields an element's row will have, and whether its bytes are uploaded first."""


class SQLAlchemyWriter:
    """Users, deletions and each thread's plan written as rows; a thread's rows in one
    transaction, its element bytes uploaded before it (storage is not transactional).

    ``element_fields``: the endpoint's rule for an element's row; ``dropped_tags``
    counts what SQLite could not hold, for the summary."""

    def __init__(
        self,
        db: Database,
        codec: Codec,
        storage: Any,
        element_fields: ElementFields,
        dropped_tags: Counter[str],
    ) -> None:
        self.db = db
        self.tracking = True
        self.tracking_bytes = True
        self.tracking_state = True
        self.codec = codec
        self.storage = storage
        self.element_fields = element_fields
        self.dropped_tags = dropped_tags

    async def write_user(self, user: dict[str, Any]) -> None:
        self._check_id("user", user["id"])
        row = self.codec.user_row(user)
        await self._upsert("users", row, "id", update=("identifier", "metadata", "createdAt"))

    async def track_copies(self) -> None:
        if not await self.db.columns(COPIED_TABLE):
            # no CREATE, which a role with rights to the tables only may not run
            try:
                await self.db.execute(CREATE_COPIED_TABLE)
            except Exception as exc:  # no right to create it: copy, without the record
                self.tracking = not_tracked(exc)
        if not await self.db.columns(BYTES_TABLE):
            try:
                await self.db.execute(CREATE_BYTES_TABLE)
            except Exception as exc:  # without it, every file is uploaded on every run
                self.tracking_bytes = not_tracked(exc, BYTES_TABLE, CREATE_BYTES_TABLE)
        if not await self.db.columns(STATE_TABLE):
            try:
                await self.db.execute(CREATE_STATE_TABLE)
            except Exception as exc:  # without it, times decide, as they did before it
                self.tracking_state = not_tracked(exc, STATE_TABLE, CREATE_STATE_TABLE)

    async def copy_state(self, thread_id: str) -> CopyState | None:
        if not await self.db.columns(STATE_TABLE):
            return None
        found = await self.db.fetch(
            f"SELECT source, dest FROM {STATE_TABLE} WHERE id = ?", thread_id
        )
        if not found or not found[0]["source"] or not found[0]["dest"]:
            return None
        return CopyState(source=str(found[0]["source"]), dest=str(found[0]["dest"]))

    async def record_state(self, thread_id: str, state: CopyState) -> None:
        if not self.tracking_state:
            return
        await self.db.execute(
            f"INSERT INTO {STATE_TABLE} (id, source, dest) VALUES (?, ?, ?) ON CONFLICT (id) "
            "DO UPDATE SET source = excluded.source, dest = excluded.dest",
            thread_id,
            state.source,
            state.dest,
        )

    async def record_copy(self, thread_id: str) -> None:
        if not self.tracking:
            return
        await self.db.execute(
            f"INSERT INTO {COPIED_TABLE} (id) VALUES (?) ON CONFLICT (id) DO NOTHING", thread_id
        )

    async def delete_thread(self, thread_id: str, deleted_at: str) -> None:
        """As the layer deletes a thread: its rows go (its files stay in the storage);
        its id stays in the copy's table, so that it reads as deleted."""
        if not self.codec.valid_id(thread_id):
            return
        db = self.db
        async with db.transaction():
            for table in ("feedbacks", "elements", "steps"):
                await db.execute(f'DELETE FROM {table} WHERE "threadId" = ?', thread_id)
            await db.execute("DELETE FROM threads WHERE id = ?", thread_id)

    async def erase_thread(self, thread_id: str) -> list[str]:
        """Its rows deleted, then its files in the storage."""
        if not self.codec.valid_id(thread_id):
            return []
        rows = await self.db.fetch(
            'SELECT "objectKey" FROM elements WHERE "threadId" = ? AND "objectKey" IS NOT NULL',
            thread_id,
        )
        await self.delete_thread(thread_id, "")
        if await self.db.columns(STATE_TABLE):  # digests of the user's data
            await self.db.execute(f"DELETE FROM {STATE_TABLE} WHERE id = ?", thread_id)
        if self.tracking_bytes:
            for r in rows:
                await self.db.execute(
                    f'DELETE FROM {BYTES_TABLE} WHERE "objectKey" = ?', str(r["objectKey"])
                )
        return await delete_objects(self.storage, [str(r["objectKey"]) for r in rows])

    async def erase_user(self, user_id: str) -> None:
        if self.codec.valid_id(user_id):
            await self.db.execute("DELETE FROM users WHERE id = ?", user_id)

    def _check_id(self, kind: str, value: Any) -> None:
        if not self.codec.valid_id(value):
            raise ValueError(
                f"{kind} id {value!r} is not a UUID in its canonical spelling (lower case, "
                "with hyphens), and this PostgreSQL schema's id columns are of type UUID, "
                "which would not keep it as it is (copy into SQLite or an archive instead)"
            )

    async def apply(self, plan: ThreadPlan, summary: Summary) -> None:
        tid = plan.thread_id
        self._check_id("thread", tid)
        for step in plan.steps:
            self._check_id("step", step["id"])
            if isinstance(step.get("parentId"), str):
                self._check_id("parent step", step["parentId"])
        for el in plan.elements:
            self._check_id("element", el.fields["id"])
            if isinstance(el.fields.get("forId"), str):
                self._check_id("element's step", el.fields["forId"])
        for fb in plan.feedback:
            self._check_id("feedback", fb["id"])
        db = self.db
        if plan.thread is None and not await db.fetch("SELECT id FROM threads WHERE id = ?", tid):
            raise ValueError(f"thread {tid} has no row to add to")
        rows: dict[str, dict[str, Any]] = {}
        uploaded: dict[str, tuple[str, str, Any, int]] = {}
        for el in plan.elements:  # uploads first: storage is not transactional
            fields, uploading = self.element_fields(el, plan)
            eid = el.fields["id"]
            if uploading:
                assert el.fetch is not None
                data = await el.fetch()
                if data is None:
                    summary.stayed_behind(f"{el.origin or eid}: could not be read from the source")
                    fields = dict(el.fields)
                else:
                    mime = str(el.fields.get("mime") or "application/octet-stream")
                    done = await upload(self.storage, fields["objectKey"], data, mime)
                    if isinstance(done.get("url"), str) and not fields.get("url"):
                        fields["url"] = done["url"]  # not over a URL of the element's own
                    if isinstance(done.get("object_key"), str):
                        fields["objectKey"] = done["object_key"]
                    summary.bytes_copied += len(data)
                    digest = hashlib.sha256(data).hexdigest()
                    own = fields.get("url") if fields.get("url") != done.get("url") else None
                    chosen = el.fields.get("objectKey") != fields["objectKey"]
                    uploaded[eid] = (str(fields["objectKey"]), digest, own, int(chosen))
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
            await self.record_copy(tid)
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
            for eid, (key, digest, own, chosen) in uploaded.items() if self.tracking_bytes else ():
                await db.execute(
                    f'INSERT INTO {BYTES_TABLE} (id, "objectKey", sha256, "ownUrl", "chosenKey") '
                    'VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "objectKey" = '
                    'excluded."objectKey", sha256 = excluded.sha256, "ownUrl" = excluded."ownUrl", '
                    '"chosenKey" = excluded."chosenKey"',
                    eid,
                    key,
                    digest,
                    own,
                    chosen,
                )
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
                        "comment": self.codec.name_text(fb.get("comment")),
                    },
                    "id",
                    update=("forId", "threadId", "value", "comment"),
                )

    async def _write_owned(self, table: str, row: dict[str, Any], thread_id: str) -> None:
        """Insert or update a step or element row, refusing one of another thread."""
        owner = await self.db.fetch(f'SELECT "threadId" FROM {table} WHERE id = ?', row["id"])
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
        await self.db.execute(
            f'INSERT INTO {table} ({names}) VALUES ({marks}) ON CONFLICT ("{key}") {action}',
            *[row[c] for c in cols],
        )
