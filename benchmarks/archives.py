"""Build large archives quickly, with the same conversations for every layer.

Replaying 100,000 conversations through a data layer's API would take hours for the SQL
layers (a few hundred calls a second). These builders write the state those calls would
have produced directly: the file layer's thread directories, users and index (fed the
records a live server writes, in the order it writes them, old values superseded by new
ones included), and the rows of Chainlit's SQL schemas. The conversations come from
:mod:`benchmarks.workload`, so every layer holds the same users, names, messages and
feedback. Write speed is measured separately, through the API.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks import workload
from benchmarks.workload import Conversation, UserRef


@dataclass
class ArchiveSpec:
    """What to build: the same spec gives the same conversations for every layer."""

    threads: int
    seed: int = 1
    users: int | None = None
    turns: tuple[int, int] = (1, 5)
    even: bool = False
    """Every user owns as many threads (else a few users own most of them)."""

    def conversations(self) -> Iterator[Conversation]:
        return workload.archive_conversations(
            self.threads, seed=self.seed, users=self.users, turns=self.turns, even=self.even
        )

    @property
    def identifiers(self) -> list[str]:
        return workload.user_identifiers(
            self.users if self.users is not None else workload.users_for(self.threads)
        )

    def user_id(self, identifier: str) -> str:
        """A stable persisted id for each user (what ``create_user`` returned)."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench:{self.seed}:{identifier}"))


# -- the file layer -----------------------------------------------------------------------

_INDEX_BATCH = 5000


@dataclass
class _ThreadBuild:
    doc: dict[str, Any] | None = None
    lines: list[bytes] = field(default_factory=list)
    texts: dict[str, tuple[str, str]] = field(default_factory=dict)
    remaining: int = 0


def build_file_archive(root: Path, spec: ArchiveSpec) -> int:
    """Write ``spec``'s conversations as a filelayer archive under ``root``.

    Journals get exactly the lines the data layer appends for each call; the index gets
    the records the store writes, in arrival order across conversations (a few thousand
    to a transaction, where a live server makes one per call: the result is the same).
    """
    from filelayer import ArchiveStore
    from filelayer.format import codec as _codec
    from filelayer.format import journal, manifest, users
    from filelayer.index.records import (
        DEFAULT_SEARCH_CHARS,
        feedback_record,
        index_time,
        manifest_record,
        searchable,
        text_record,
    )

    store = ArchiveStore(root)  # creates the layout and an empty index
    layout = store.layout
    created = "2024-01-01T00:00:00.000000Z"
    for identifier in spec.identifiers:
        users.write(
            layout.user_file(identifier),
            {
                "id": spec.user_id(identifier),
                "identifier": identifier,
                "displayName": None,
                "metadata": {"provider": "bench"},
                "createdAt": created,
            },
            durable=False,
        )

    builds: dict[str, _ThreadBuild] = {}

    def counted(conversations: Iterable[Conversation]) -> Iterator[Conversation]:
        for conv in conversations:
            builds[conv.thread_id] = _ThreadBuild(remaining=len(conv.calls))
            yield conv

    def thread_record(doc: dict[str, Any]) -> dict[str, Any]:
        # The store's own builder. The owner is the manifest's userId: the user files
        # written above give every user that id, which is what the store resolves.
        return manifest_record(doc, doc.get("userId"))

    count = 0
    pending: list[dict[str, Any]] = []
    for call in workload.interleaved(counted(spec.conversations())):
        tid = call.thread_id
        assert tid is not None
        build = builds[tid]
        records: list[dict[str, Any]] = []
        if call.method == "update_thread":
            # ArchiveStore.update_thread: a record only when something changed.
            created_now = build.doc is None
            if build.doc is None:
                build.doc = manifest.new(tid, call.at)
            doc = build.doc
            before = dict(doc)
            kwargs = call.kwargs
            if kwargs.get("name") is not None:
                doc["name"] = kwargs["name"]
            user = kwargs.get("user_id")
            if isinstance(user, UserRef):
                doc["userId"] = spec.user_id(user.identifier)
                doc["userIdentifier"] = user.identifier
            if kwargs.get("metadata") is not None:
                doc["metadata"] = manifest.merge_metadata(
                    doc.get("metadata") or {}, kwargs["metadata"]
                )
            if created_now or doc != before:
                if not created_now:
                    doc["updatedAt"] = max(call.at, before.get("updatedAt") or "")
                records.append(thread_record(doc))
        elif build.doc is None:
            # A write to a thread that does not exist yet creates it.
            build.doc = manifest.new(tid, call.at)
            records.append(thread_record(build.doc))
        doc = build.doc
        if call.method in ("create_step", "update_step"):
            step = call.args[0]
            record = journal.step_record(dict(step))
            build.lines.append(_codec.encode_line(record))
            body = record["step"]
            output = body.get("output")
            if body.get("type") in journal.MESSAGE_TYPES and isinstance(output, str) and output:
                known = build.texts.get(body["id"])
                at = index_time(body.get("createdAt") or body.get("start"))
                if known is not None and known[0]:
                    at = min(at, known[0]) if at else known[0]
                text = searchable(output[:DEFAULT_SEARCH_CHARS])
                if known != (at, text):
                    build.texts[body["id"]] = (at, text)
                    records.append(text_record(tid, body["id"], at, text))
        elif call.method == "upsert_feedback":
            fb = call.args[0]
            build.lines.append(
                _codec.encode_line(
                    journal.feedback_record(
                        {
                            "id": fb["id"],
                            "forId": fb["forId"],
                            "value": fb["value"],
                            "comment": fb.get("comment"),
                        }
                    )
                )
            )
            records.append(feedback_record(tid, fb["id"], fb["forId"], fb["value"]))
        pending += records
        if len(pending) >= _INDEX_BATCH:
            store.index.append(pending)
            pending = []
        build.remaining -= 1
        if build.remaining == 0:
            directory = layout.thread_dir(tid)
            directory.mkdir()
            manifest.write(layout.manifest(tid), doc, durable=False)
            with open(layout.journal(tid), "wb") as f:
                f.write(b"".join(build.lines))
            del builds[tid]
            count += 1
    store.index.append(pending)
    store.close()
    return count


# -- SQLAlchemyDataLayer on SQLite ---------------------------------------------------------

SQLITE_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS users (
        "id" TEXT PRIMARY KEY,
        "identifier" TEXT NOT NULL UNIQUE,
        "metadata" TEXT NOT NULL,
        "createdAt" TEXT
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS threads (
        "id" TEXT PRIMARY KEY,
        "createdAt" TEXT,
        "name" TEXT,
        "userId" TEXT,
        "userIdentifier" TEXT,
        "tags" TEXT,
        "metadata" TEXT,
        FOREIGN KEY ("userId") REFERENCES users("id") ON DELETE CASCADE
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS steps (
        "id" TEXT PRIMARY KEY,
        "name" TEXT NOT NULL,
        "type" TEXT NOT NULL,
        "threadId" TEXT NOT NULL,
        "parentId" TEXT,
        "streaming" BOOLEAN NOT NULL,
        "waitForAnswer" BOOLEAN,
        "isError" BOOLEAN,
        "metadata" TEXT,
        "tags" TEXT,
        "input" TEXT,
        "output" TEXT,
        "createdAt" TEXT,
        "command" TEXT,
        "modes" TEXT,
        "start" TEXT,
        "end" TEXT,
        "generation" TEXT,
        "showInput" TEXT,
        "language" TEXT,
        "indent" INT,
        "defaultOpen" BOOLEAN,
        "autoCollapse" BOOLEAN,
        FOREIGN KEY ("threadId") REFERENCES threads("id") ON DELETE CASCADE
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS elements (
        "id" TEXT PRIMARY KEY,
        "threadId" TEXT,
        "type" TEXT,
        "url" TEXT,
        "chainlitKey" TEXT,
        "name" TEXT NOT NULL,
        "display" TEXT,
        "objectKey" TEXT,
        "size" TEXT,
        "page" INT,
        "language" TEXT,
        "forId" TEXT,
        "mime" TEXT,
        "props" TEXT,
        "autoPlay" BOOLEAN,
        "playerConfig" TEXT,
        FOREIGN KEY ("threadId") REFERENCES threads("id") ON DELETE CASCADE
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS feedbacks (
        "id" TEXT PRIMARY KEY,
        "forId" TEXT NOT NULL,
        "threadId" TEXT NOT NULL,
        "value" INT NOT NULL,
        "comment" TEXT,
        FOREIGN KEY ("threadId") REFERENCES threads("id") ON DELETE CASCADE
    )
    """,
)
"""The tables ``SQLAlchemyDataLayer`` queries, in SQLite's types, written from the
columns its queries name (Chainlit documents the PostgreSQL version of this schema).
``modes`` and ``autoCollapse`` are there because Chainlit 2.12's ``StepDict`` sends them;
without them every step insert fails and the layer only logs a warning."""


def create_sqlite_schema(path: Path) -> None:
    with sqlite3.connect(path) as db:
        for statement in SQLITE_SCHEMA:
            db.execute(statement)


def _final_state(
    conv: Conversation,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """The thread fields, final steps and feedback a layer ends up with for ``conv``."""
    thread: dict[str, Any] = {"metadata": {}}
    for call in conv.calls:
        if call.method == "update_thread":
            thread.setdefault("createdAt", call.at)
            thread["updatedAt"] = call.at
            if call.kwargs.get("name") is not None:
                thread["name"] = call.kwargs["name"]
            if call.kwargs.get("metadata"):
                thread["metadata"].update(call.kwargs["metadata"])
    steps = workload.final_steps(conv.calls)
    feedback = [c.args[0] for c in conv.calls if c.method == "upsert_feedback"]
    return thread, steps, feedback


def build_sqlite_archive(path: Path, spec: ArchiveSpec) -> int:
    """Rows as ``SQLAlchemyDataLayer`` writes them for ``spec``'s conversations."""
    create_sqlite_schema(path)
    db = sqlite3.connect(path)
    count = 0
    try:
        db.executemany(
            'INSERT INTO users ("id","identifier","metadata","createdAt") VALUES (?,?,?,?)',
            [
                (spec.user_id(i), i, json.dumps({"provider": "bench"}), "2024-01-01T00:00:00Z")
                for i in spec.identifiers
            ],
        )
        step_columns = (
            "id",
            "name",
            "type",
            "threadId",
            "parentId",
            "streaming",
            "waitForAnswer",
            "isError",
            "metadata",
            "input",
            "output",
            "createdAt",
            "start",
            "end",
            "generation",
            "showInput",
            "language",
            "defaultOpen",
            "autoCollapse",
        )
        step_sql = (
            f"INSERT INTO steps ({','.join(f'{chr(34)}{c}{chr(34)}' for c in step_columns)})"
            f" VALUES ({','.join('?' * len(step_columns))})"
        )
        for conv in spec.conversations():
            thread, steps, feedback = _final_state(conv)
            db.execute(
                'INSERT INTO threads ("id","createdAt","name","userId","userIdentifier","metadata")'
                " VALUES (?,?,?,?,?,?)",
                (
                    conv.thread_id,
                    thread["createdAt"],
                    thread.get("name"),
                    spec.user_id(conv.identifier),
                    conv.identifier,
                    json.dumps(thread["metadata"]),
                ),
            )
            rows = []
            for s in steps.values():
                row = dict(s)
                row["metadata"] = json.dumps(s.get("metadata", {}))
                row["generation"] = json.dumps(s.get("generation"))
                row["showInput"] = str(s.get("showInput", "")).lower() if "showInput" in s else None
                rows.append(tuple(row.get(c) for c in step_columns))
            db.executemany(step_sql, rows)
            db.executemany(
                'INSERT INTO feedbacks ("id","forId","threadId","value","comment")'
                " VALUES (?,?,?,?,?)",
                [
                    (f["id"], f["forId"], f["threadId"], f["value"], f.get("comment"))
                    for f in feedback
                ],
            )
            count += 1
        db.commit()
    finally:
        db.close()
    return count


# -- ChainlitDataLayer on PostgreSQL ------------------------------------------------------


def _pg_time(value: str) -> datetime:
    return datetime.strptime(value, workload.TIME_FORMAT)


async def build_postgres_archive(url: str, spec: ArchiveSpec) -> int:
    """Rows as ``ChainlitDataLayer`` writes them for ``spec``'s conversations (COPY)."""
    import asyncpg

    conn = await asyncpg.connect(url)
    count = 0
    try:
        created = _pg_time("2024-01-01T00:00:00.000000Z")
        await conn.copy_records_to_table(
            "User",
            columns=["id", "identifier", "metadata", "createdAt", "updatedAt"],
            records=[
                (spec.user_id(i), i, json.dumps({"provider": "bench"}), created, created)
                for i in spec.identifiers
            ],
        )
        threads: list[tuple[Any, ...]] = []
        steps: list[tuple[Any, ...]] = []
        feedback: list[tuple[Any, ...]] = []

        async def flush() -> None:
            if threads:
                await conn.copy_records_to_table(
                    "Thread",
                    columns=["id", "createdAt", "updatedAt", "name", "metadata", "userId"],
                    records=threads,
                )
            if steps:
                await conn.copy_records_to_table(
                    "Step",
                    columns=[
                        "id",
                        "createdAt",
                        "updatedAt",
                        "threadId",
                        "parentId",
                        "input",
                        "metadata",
                        "name",
                        "output",
                        "type",
                        "startTime",
                        "endTime",
                        "showInput",
                        "isError",
                    ],
                    records=steps,
                )
            if feedback:
                await conn.copy_records_to_table(
                    "Feedback",
                    columns=["id", "stepId", "name", "value", "comment"],
                    records=feedback,
                )
            threads.clear()
            steps.clear()
            feedback.clear()

        for conv in spec.conversations():
            thread, final, fbs = _final_state(conv)
            threads.append(
                (
                    conv.thread_id,
                    _pg_time(thread["createdAt"]),
                    _pg_time(thread["updatedAt"]),
                    (thread.get("name") or "")[:255] or None,
                    json.dumps(thread["metadata"]),
                    spec.user_id(conv.identifier),
                )
            )
            for s in final.values():
                start = _pg_time(s["createdAt"])
                steps.append(
                    (
                        s["id"],
                        start,
                        start,
                        s["threadId"],
                        s.get("parentId"),
                        s.get("input"),
                        json.dumps(s.get("metadata", {})),
                        s.get("name"),
                        s.get("output"),
                        s["type"],
                        start,
                        start,
                        str(s.get("showInput", "json")),
                        bool(s.get("isError", False)),
                    )
                )
            for f in fbs:
                feedback.append(
                    (f["id"], f["forId"], "user_feedback", float(f["value"]), f.get("comment"))
                )
            count += 1
            if len(steps) > 20000:
                await flush()
        await flush()
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return count


def tree_size(root: Path) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) of every file under ``root``."""
    apparent = allocated = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return apparent, allocated
