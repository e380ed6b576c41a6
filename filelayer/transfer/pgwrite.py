"""Writing the copy's plans as rows of Chainlit's official schema."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from .._time import parse_time, round_ms
from .model import CopyState, ElementData, Summary, ThreadPlan
from .pgrows import (
    ELEMENT_COLUMNS,
    FEEDBACK_NAME,
    STEP_COLUMNS,
    StepCodec,
    element_row_values,
    ts,
)
from .sqlbase import (
    COPIED_TABLE,
    CREATE_COPIED_TABLE,
    CREATE_STATE_TABLE,
    STATE_TABLE,
    delete_objects,
    not_tracked,
)
from .stash import jsonb_text, text
from .storage import upload


def upload_key(thread_id: str, element_id: str) -> str:
    """Where an element's bytes go in the storage."""
    return f"threads/{thread_id}/files/{element_id}"


class PostgresWriter:
    """Users, deletions and each thread's plan written through one asyncpg connection;
    a thread's rows in one transaction, its element bytes uploaded before it.

    ``will_upload``: whether an element's bytes go to ``storage`` (the endpoint's rule)."""

    def __init__(
        self,
        conn: Any,
        step_types: frozenset[str],
        storage: Any,
        will_upload: Callable[[ElementData], bool],
    ) -> None:
        self.conn = conn
        self.step_types = step_types
        self.storage = storage
        self.will_upload = will_upload
        self.tracking = True
        self.tracking_state = True

    async def write_user(self, user: dict[str, Any]) -> None:
        created = ts(user.get("createdAt"))
        await self.conn.execute(
            'INSERT INTO "User" (id, identifier, metadata, "createdAt", "updatedAt") '
            "VALUES ($1, $2, $3::jsonb, $4, $4) ON CONFLICT (id) DO UPDATE SET "
            "identifier = EXCLUDED.identifier, metadata = EXCLUDED.metadata, "
            '"createdAt" = EXCLUDED."createdAt", "updatedAt" = CURRENT_TIMESTAMP',
            user["id"],
            user["identifier"],
            jsonb_text(user.get("metadata") or {}),
            created,
        )

    async def track_copies(self) -> None:
        if not await self.conn.fetchval("SELECT to_regclass($1) IS NOT NULL", COPIED_TABLE):
            # no CREATE, which a role with rights to the tables only may not run
            try:
                await self.conn.execute(CREATE_COPIED_TABLE)
            except Exception as exc:  # no right to create it: copy, without the record
                self.tracking = not_tracked(exc)
        if not await self.conn.fetchval("SELECT to_regclass($1) IS NOT NULL", STATE_TABLE):
            try:
                await self.conn.execute(CREATE_STATE_TABLE)
            except Exception as exc:  # without it, times decide, as they did before it
                self.tracking_state = not_tracked(exc, STATE_TABLE, CREATE_STATE_TABLE)

    async def copy_state(self, thread_id: str) -> CopyState | None:
        if not await self.conn.fetchval("SELECT to_regclass($1) IS NOT NULL", STATE_TABLE):
            return None
        found = await self.conn.fetchrow(
            f"SELECT source, dest FROM {STATE_TABLE} WHERE id = $1", thread_id
        )
        if found is None or not found["source"] or not found["dest"]:
            return None
        return CopyState(source=str(found["source"]), dest=str(found["dest"]))

    async def record_state(self, thread_id: str, state: CopyState) -> None:
        if not self.tracking_state:
            return
        await self.conn.execute(
            f"INSERT INTO {STATE_TABLE} (id, source, dest) VALUES ($1, $2, $3) ON CONFLICT (id) "
            "DO UPDATE SET source = EXCLUDED.source, dest = EXCLUDED.dest",
            thread_id,
            state.source,
            state.dest,
        )

    async def record_copy(self, thread_id: str) -> None:
        if not self.tracking:
            return
        await self.conn.execute(
            f"INSERT INTO {COPIED_TABLE} (id) VALUES ($1) ON CONFLICT (id) DO NOTHING", thread_id
        )

    async def delete_thread(self, thread_id: str, deleted_at: str) -> None:
        """Marked deleted (``deletedAt``), which Chainlit's layer honours; reversible."""
        when = parse_time(deleted_at) or datetime.now(timezone.utc).replace(tzinfo=None)
        await self.conn.execute(
            'UPDATE "Thread" SET "deletedAt" = $2 WHERE id = $1', thread_id, round_ms(when)
        )

    async def erase_thread(self, thread_id: str) -> list[str]:
        """Its rows deleted (steps and elements go with the thread by cascade, feedback
        is only unlinked: deleted first), then its files in the storage."""
        rows = await self.conn.fetch(
            'SELECT "objectKey" FROM "Element" WHERE "threadId" = $1 AND "objectKey" IS NOT NULL',
            thread_id,
        )
        async with self.conn.transaction():
            await self.conn.execute(
                'DELETE FROM "Feedback" WHERE "stepId" IN '
                '(SELECT id FROM "Step" WHERE "threadId" = $1)',
                thread_id,
            )
            await self.conn.execute('DELETE FROM "Thread" WHERE id = $1', thread_id)
            if await self.conn.fetchval("SELECT to_regclass($1) IS NOT NULL", STATE_TABLE):
                # digests of the user's data
                await self.conn.execute(f"DELETE FROM {STATE_TABLE} WHERE id = $1", thread_id)
        return await delete_objects(self.storage, [r[0] for r in rows])

    async def erase_user(self, user_id: str) -> None:
        await self.conn.execute('DELETE FROM "User" WHERE id = $1', user_id)

    async def _upload_all(
        self, plan: ThreadPlan, summary: Summary
    ) -> dict[str, tuple[str, str, int]]:
        """The plan's element bytes put in the storage: element id -> (key, sha256, size)."""
        uploads: dict[str, tuple[str, str, int]] = {}
        for el in plan.elements:
            if not self.will_upload(el):
                continue
            assert el.fetch is not None
            data = await el.fetch()
            eid = el.fields["id"]
            if data is None:
                summary.stayed_behind(f"{el.origin or eid}: its file is missing in the source")
                continue
            key = upload_key(plan.thread_id, eid)
            mime = str(el.fields.get("mime") or "application/octet-stream")
            name = str(el.fields.get("name") or eid)
            await upload(self.storage, key, data, mime, download_name=name)
            uploads[eid] = (key, hashlib.sha256(data).hexdigest(), len(data))
            summary.bytes_copied += len(data)
        return uploads

    async def apply(self, plan: ThreadPlan, summary: Summary) -> None:
        tid = plan.thread_id
        uploads = await self._upload_all(plan, summary)  # storage is not transactional
        codec = StepCodec(self.step_types, plan.all_step_ids, plan.thread_created)
        conn = self.conn
        async with conn.transaction():
            if plan.thread is not None:
                await self._write_thread(plan.thread)
            await self.record_copy(tid)
            doomed = set(plan.delete_steps)
            steps = list(plan.steps)
            if doomed:
                await self._detach_children(sorted(doomed), tid)
                # The detached children the source holds are written again, so that
                # their real parent is kept (stashed) for a copy back.
                planned = {s["id"] for s in steps}
                steps += [
                    s
                    for s in plan.source_steps
                    if s.get("parentId") in doomed and s["id"] not in planned | doomed
                ]
                await conn.execute(
                    'DELETE FROM "Feedback" WHERE "stepId" = ANY($1::text[])', sorted(doomed)
                )
                await conn.execute(
                    'DELETE FROM "Step" WHERE id = ANY($1::text[]) AND "threadId" = $2',
                    sorted(doomed),
                    tid,
                )
            for step in steps:
                await self._write_step(codec.row_values(step, tid))
            if plan.delete_elements:
                await conn.execute(
                    'DELETE FROM "Element" WHERE id = ANY($1::text[]) AND "threadId" = $2',
                    plan.delete_elements,
                    tid,
                )
            for el in plan.elements:
                cols = element_row_values(el.fields, tid, uploads.get(el.fields["id"]))
                await self._write_element(cols)
            if plan.delete_feedback:
                await conn.execute(
                    'DELETE FROM "Feedback" WHERE id = ANY($1::text[])', plan.delete_feedback
                )
            for fb in plan.feedback:
                await self._write_feedback(fb)

    async def _detach_children(self, doomed: list[str], thread_id: str) -> None:
        """Unparent the surviving children of steps about to be deleted. The schema
        cascades a step's deletion to its children (``parentId ON DELETE CASCADE``),
        and from them to their own children, elements (``stepId ON DELETE CASCADE``) and
        feedback links: all of which the archive keeps when it deletes a step, and which
        a copy back would then take for deleted there."""
        await self.conn.execute(
            'UPDATE "Step" SET "parentId" = NULL WHERE "parentId" = ANY($1::text[]) '
            'AND id <> ALL($1::text[]) AND "threadId" = $2',
            doomed,
            thread_id,
        )

    async def _write_thread(self, thread: dict[str, Any]) -> None:
        tags = thread.get("tags")
        await self.conn.execute(
            'INSERT INTO "Thread" (id, "createdAt", "updatedAt", name, metadata, tags, "userId") '
            "VALUES ($1, $2, $3, $4, $5::jsonb, $6::text[], $7) ON CONFLICT (id) DO UPDATE SET "
            '"createdAt" = EXCLUDED."createdAt", "updatedAt" = EXCLUDED."updatedAt", '
            "name = EXCLUDED.name, metadata = EXCLUDED.metadata, tags = EXCLUDED.tags, "
            '"userId" = EXCLUDED."userId"',
            thread["id"],
            ts(thread.get("createdAt") or thread.get("updatedAt")),
            ts(thread.get("updatedAt") or thread.get("createdAt")),
            text(thread.get("name")),
            jsonb_text(thread.get("metadata") or {}),
            # Each tag as its name is, without NUL: text[] refuses it as text does.
            [text(t) for t in tags] if isinstance(tags, list) else None,
            thread.get("userId"),
        )

    async def _write_step(self, cols: dict[str, Any]) -> None:
        await self._write_owned(
            "Step", STEP_COLUMNS, cols, {"metadata": "jsonb", "type": '"StepType"'}
        )

    async def _write_element(self, cols: dict[str, Any]) -> None:
        await self._write_owned(
            "Element", ELEMENT_COLUMNS, cols, {"metadata": "jsonb", "props": "jsonb"}
        )

    async def _write_owned(
        self, table: str, columns: Sequence[str], cols: dict[str, Any], casts: dict[str, str]
    ) -> None:
        """Insert or update a step or element row, refusing one of another thread
        (``casts``: the type each column's parameter is cast to; JSON ones are sent as
        JSON text)."""
        names = ", ".join(f'"{c}"' for c in columns)
        values = ", ".join(
            f"${n}::{casts[c]}" if c in casts else f"${n}" for n, c in enumerate(columns, start=1)
        )
        updates = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in columns if c != "id")
        params = [jsonb_text(cols[c]) if casts.get(c) == "jsonb" else cols[c] for c in columns]
        status = await self.conn.execute(
            f'INSERT INTO "{table}" ({names}) VALUES ({values}) ON CONFLICT (id) DO UPDATE SET '
            f'{updates}, "updatedAt" = CURRENT_TIMESTAMP '
            f'WHERE "{table}"."threadId" IS NOT DISTINCT FROM EXCLUDED."threadId"',
            *params,
        )
        if status.endswith(" 0"):
            raise ValueError(f"{table.lower()} id {cols['id']} is already used by another thread")

    async def _write_feedback(self, fb: dict[str, Any]) -> None:
        # One feedback per step, as in the archive and in Chainlit's UI.
        await self.conn.execute(
            'DELETE FROM "Feedback" WHERE "stepId" = $1 AND id <> $2', fb["forId"], fb["id"]
        )
        await self.conn.execute(
            'INSERT INTO "Feedback" (id, "stepId", name, value, comment) '
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET "
            '"stepId" = EXCLUDED."stepId", value = EXCLUDED.value, '
            'comment = EXCLUDED.comment, "updatedAt" = CURRENT_TIMESTAMP',
            fb["id"],
            fb["forId"],
            FEEDBACK_NAME,
            float(fb["value"]),
            text(fb.get("comment")),  # without NUL, which PostgreSQL's text refuses
        )
