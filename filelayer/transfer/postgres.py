"""The PostgreSQL side of ``filelayer copy``: Chainlit's official schema, read and written
with plain SQL so that ids and times are kept exactly.

This module is the endpoint (connecting, the schema, comparing in the schema's terms);
the rows are encoded in :mod:`~filelayer.transfer.pgrows`, read by
:mod:`~filelayer.transfer.pgread` and written by :mod:`~filelayer.transfer.pgwrite`.

The schema has fewer columns than Chainlit's step and element dicts (no step tags,
language, generation, ``defaultOpen``...), a ``StepType`` enum, a ``TEXT`` ``showInput``
and millisecond times. So that a copy to PostgreSQL and back loses nothing, whatever a
row's columns cannot say is kept in its JSONB ``metadata`` under one key, ``STASH``.
Reading applies a stashed value only while it still agrees with the columns (encoding it
again gives the same row): a row edited later by Chainlit or by hand reads as its columns
say. Thread and user rows carry no stash (their metadata belongs to the app: Chainlit
restores a thread's metadata into the user session), so their times keep milliseconds.

asyncpg and Chainlit are imported only when a database is opened; the storage client
that holds element bytes is built from Chainlit's own environment variables, and only
when they are set.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from .._time import format_time
from .model import ElementData, ThreadPlan, normalise_times
from .pgread import PostgresReader
from .pgrows import StepCodec, element_read, element_row_values, feedback_plain, ts
from .pgschema import STATEMENTS, STEP_TYPES, TABLES
from .pgwrite import PostgresWriter, upload_key
from .sqlbase import SQLEndpoint, connect_asyncpg
from .stash import column_safe, text


class PostgresEndpoint(SQLEndpoint):
    """A database with Chainlit's official schema, through one asyncpg connection."""

    tables_are = "Chainlit's tables"
    create_hint = "Run the copy with --create-schema, or apply Chainlit's migrations."
    source_hint = "Is this the database of a Chainlit app?"

    def __init__(self, url: str, *, fetch_urls: bool = False) -> None:
        super().__init__(url, fetch_urls=fetch_urls)
        self.url = url
        self.conn: Any = None
        self.step_types = frozenset(STEP_TYPES)
        self.mapped_types: Counter[str] = Counter()

    # opening and closing

    async def _connect(self, *, create: bool, dry_run: bool, create_schema: bool) -> bool:
        self.conn = await connect_asyncpg(self.url, self.label)
        return True

    async def apply_schema(self) -> None:
        async with self.conn.transaction():
            for statement in STATEMENTS:
                await self.conn.execute(statement)

    async def _missing_tables(self) -> list[str]:
        rows = await self.conn.fetch(
            "SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass(quote_ident(t)) IS NULL",
            list(TABLES),
        )
        return [r[0] for r in rows]

    async def _open_rows(self) -> None:
        labels = await self.conn.fetch('SELECT unnest(enum_range(NULL::"StepType"))::text')
        self.step_types = frozenset(r[0] for r in labels)
        self.reader = PostgresReader(
            self.conn, self.step_types, self.storage, fetch_urls=self.fetch_urls
        )
        self.writer = PostgresWriter(self.conn, self.step_types, self.storage, self.will_upload)

    async def _disconnect(self) -> None:
        if self.conn is not None:
            await self.conn.close()
            self.conn = None

    def final_notes(self) -> list[str]:
        if not self.mapped_types:
            return []
        kinds = ", ".join(f"{k!r} ({n})" for k, n in sorted(self.mapped_types.items()))
        return [
            f"step types unknown to the database's StepType enum are stored as 'undefined' "
            f"(the original type is kept in the step's metadata and read back): {kinds}"
        ]

    # comparing, in this side's terms: what writing the source and reading it back gives

    def same_user(self, dest: dict[str, Any], src: dict[str, Any]) -> bool:
        # Users and threads have no stash: their columns hold them without NUL, and the
        # row so held is the source's value, not one to write again on every run.
        # A time that names no instant is held as the copy's stand-in for no time.
        held = {
            **src,
            "metadata": column_safe(src.get("metadata") or {}),
            "createdAt": format_time(ts(src.get("createdAt"))),
        }
        return super().same_user(dest, held)

    def same_thread(self, dest: dict[str, Any], src: dict[str, Any]) -> bool:
        tags = src.get("tags")
        held = {
            **src,
            "name": text(src.get("name")),
            "metadata": column_safe(src.get("metadata") or {}),
            "tags": [text(t) for t in tags] if isinstance(tags, list) else None,
            "createdAt": format_time(ts(src.get("createdAt") or src.get("updatedAt"))),
            "updatedAt": format_time(ts(src.get("updatedAt") or src.get("createdAt"))),
        }
        return super().same_thread(dest, held)

    def same_step(self, dest: dict[str, Any], src: dict[str, Any], plan: ThreadPlan) -> bool:
        codec = StepCodec(self.step_types, plan.all_step_ids, plan.thread_created)
        cols = codec.row_values(src, plan.thread_id)
        cols["metadata"] = json.loads(json.dumps(cols["metadata"]))
        projected = codec.read(cols)
        return normalise_times(projected) == normalise_times(dest)

    def same_feedback(self, dest: dict[str, Any], src: dict[str, Any]) -> bool:
        return feedback_plain(
            {
                "id": src["id"],
                "stepId": src["forId"],
                "value": float(src["value"]),
                "comment": text(src.get("comment")),
            }
        ) == {k: dest.get(k) for k in ("id", "forId", "value", "comment")}

    def same_element(self, dest: ElementData, src: ElementData, plan: ThreadPlan) -> bool:
        uploaded = None
        if self.will_upload(src):
            key = upload_key(plan.thread_id, src.fields["id"])
            uploaded = (key, src.sha256 or "", src.size or 0)
        cols = element_row_values(src.fields, plan.thread_id, uploaded)
        cols["metadata"] = json.loads(json.dumps(cols["metadata"]))
        projected, _ = element_read(cols)
        if projected != dest.fields:
            return False
        if uploaded:
            return src.sha256 is not None and dest.sha256 == src.sha256
        return True

    def element_problem(self, el: ElementData, plan: ThreadPlan) -> str | None:
        if not isinstance(el.fields.get("forId"), str):
            return "it belongs to no step, and Chainlit's schema requires one (Element.stepId)"
        return super().element_problem(el, plan)

    def planned_step(self, step: dict[str, Any]) -> None:
        kind = step.get("type")
        if kind not in self.step_types:
            self.mapped_types[str(kind)] += 1
