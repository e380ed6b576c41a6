"""The PostgreSQL side of ``filelayer copy``: Chainlit's official schema, read and written
with plain SQL so that ids and times are kept exactly.

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

import contextlib
import hashlib
import inspect
import json
import os
import re
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from .._time import format_time, ms_key, parse_time, round_ms
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
    normalise_times,
)
from .pgschema import STATEMENTS, STEP_TYPES, TABLES

STASH = "_filelayer"
"""The metadata key holding what a row's columns cannot say (see the module docstring)."""

FEEDBACK_NAME = "user_feedback"
EPOCH = datetime(1970, 1, 1)

_STEP_COLUMNS = (
    "id",
    "threadId",
    "parentId",
    "input",
    "metadata",
    "name",
    "output",
    "type",
    "showInput",
    "isError",
    "createdAt",
    "startTime",
    "endTime",
)
_ELEMENT_COLUMNS = (
    "id",
    "threadId",
    "stepId",
    "metadata",
    "mime",
    "name",
    "objectKey",
    "url",
    "chainlitKey",
    "display",
    "size",
    "language",
    "page",
    "props",
)
_INSTALL_HINT = "pip install 'chainlit-filelayer[sql]'"


# -- encoding: neutral dicts <-> rows --------------------------------------------------


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _json_value(raw: Any) -> Any:
    """JSONB arrives as text (asyncpg without a codec): parse it."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return None
    return raw


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)


def _split_metadata(raw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A row's metadata without the stash, and the stash."""
    meta = _json_value(raw)
    if not isinstance(meta, dict):
        return {}, {}
    stash = meta.get(STASH)
    plain = {k: v for k, v in meta.items() if k != STASH}
    return plain, stash if isinstance(stash, dict) else {}


def _make_stash(original: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
    """What must be kept beside the columns so that ``original`` reads back exactly."""
    changed = {k: v for k, v in original.items() if k not in plain or plain[k] != v}
    unset = sorted(k for k in plain if k not in original)
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
    """``plain`` with each stashed value that still agrees with the row's columns."""
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


class StepCodec:
    """Steps <-> ``Step`` rows for one thread (its step ids and creation time matter:
    a parent must be in the thread, a step without a time takes the thread's)."""

    def __init__(self, step_types: frozenset[str], parents: set[str], thread_created: Any) -> None:
        self.step_types = step_types
        self.parents = parents
        self.fallback = round_ms(parse_time(thread_created) or EPOCH)

    def columns(self, step: dict[str, Any], thread_id: str) -> dict[str, Any]:
        created = parse_time(step.get("createdAt")) or parse_time(step.get("start"))
        created = created or self.fallback
        start = parse_time(step.get("start")) or created
        end = parse_time(step.get("end")) or start
        kind = step.get("type")
        show = step.get("showInput")
        parent = step.get("parentId")
        metadata = step.get("metadata")
        is_error = step.get("isError")
        return {
            "id": step["id"],
            "threadId": thread_id,
            # Chainlit's UI drops a step whose parent it has not seen: only a parent
            # present in the thread becomes a foreign key; any other is stashed.
            "parentId": parent
            if isinstance(parent, str) and parent in self.parents and parent != step["id"]
            else None,
            "input": _text(step.get("input")),
            "metadata": metadata if isinstance(metadata, dict) else {},
            "name": _text(step.get("name")),
            "output": _text(step.get("output")),
            "type": kind if isinstance(kind, str) and kind in self.step_types else "undefined",
            # TEXT column: a language or "json" shows the input, NULL hides it (the
            # strings "True"/"False" would both read as truthy in Chainlit's UI).
            "showInput": show if isinstance(show, str) else ("json" if show is True else None),
            "isError": is_error if isinstance(is_error, bool) else False,
            "createdAt": round_ms(created),
            "startTime": round_ms(start),
            "endTime": round_ms(end),
        }

    @staticmethod
    def plain(cols: dict[str, Any]) -> dict[str, Any]:
        """What the columns alone say, in Chainlit's ``StepDict`` terms."""
        step: dict[str, Any] = {
            "id": cols["id"],
            "threadId": cols["threadId"],
            "type": cols["type"],
            "metadata": cols["metadata"],
            "createdAt": format_time(cols["createdAt"]),
            "start": format_time(cols["startTime"]),
            "end": format_time(cols["endTime"]),
        }
        for key in ("parentId", "name", "input", "output", "showInput", "isError"):
            if cols.get(key) is not None:
                step[key] = cols[key]
        return step

    def row_values(self, step: dict[str, Any], thread_id: str) -> dict[str, Any]:
        """The columns to write, with the stash in the metadata when one is needed."""
        cols = self.columns(step, thread_id)
        stash = _make_stash(step, self.plain(cols))
        if stash:
            cols["metadata"] = {**cols["metadata"], STASH: stash}
        return cols

    def read(self, row: dict[str, Any]) -> dict[str, Any]:
        metadata, stash = _split_metadata(row["metadata"])
        cols = {k: row.get(k) for k in _STEP_COLUMNS}
        cols["metadata"] = metadata
        cols["type"] = str(cols["type"])
        for key in ("createdAt", "startTime", "endTime"):
            cols[key] = cols[key] or self.fallback
        thread_id = str(cols["threadId"])

        def consistent(candidate: dict[str, Any]) -> bool:
            return self.columns(candidate, thread_id) == cols

        return _apply_stash(self.plain(cols), stash, consistent)


def element_columns(el: dict[str, Any], thread_id: str, object_key: str | None) -> dict[str, Any]:
    page = el.get("page")
    props = el.get("props")
    return {
        "id": el["id"],
        "threadId": thread_id,
        "stepId": el.get("forId"),
        # What Chainlit's own layer keeps there; its reader takes the type from it.
        "metadata": {
            "type": el.get("type"),
            "size": el.get("size"),
            "language": el.get("language"),
            "display": el.get("display"),
            "page": page,
        },
        "mime": _text(el.get("mime")),
        "name": _text(el.get("name")) or "",
        "objectKey": object_key,
        "url": _text(el.get("url")),
        "chainlitKey": _text(el.get("chainlitKey")),
        "display": _text(el.get("display")),
        "size": _text(el.get("size")),
        "language": _text(el.get("language")),
        "page": page if isinstance(page, int) and not isinstance(page, bool) else None,
        "props": props if isinstance(props, dict) else None,
    }


def element_plain(cols: dict[str, Any]) -> dict[str, Any]:
    meta = cols["metadata"]
    el: dict[str, Any] = {
        "id": cols["id"],
        "type": meta.get("type") or "file",
        "forId": cols["stepId"],
        "name": cols["name"],
    }
    for key in ("mime", "objectKey", "url", "chainlitKey", "display", "size", "language"):
        if cols.get(key) is not None:
            el[key] = cols[key]
    if cols.get("page") is not None:
        el["page"] = cols["page"]
    if cols.get("props") is not None:
        el["props"] = cols["props"]
    return el


def element_row_values(
    el: dict[str, Any],
    thread_id: str,
    uploaded: tuple[str, str, int] | None,
) -> dict[str, Any]:
    """Columns and stash of an element; ``uploaded`` is (object key, sha256, size)."""
    key = uploaded[0] if uploaded else _text(el.get("objectKey"))
    cols = element_columns(el, thread_id, key)
    stash = _make_stash(el, element_plain(cols))
    if uploaded:
        stash.update({"uploaded": True, "sha256": uploaded[1], "bytes": uploaded[2]})
    if stash:
        cols["metadata"] = {**cols["metadata"], STASH: stash}
    return cols


def element_read(row: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An element row as ``ElementDict`` fields, and its stash."""
    metadata, stash = _split_metadata(row["metadata"])
    cols = {k: row.get(k) for k in _ELEMENT_COLUMNS}
    cols["metadata"] = metadata
    props = _json_value(cols["props"])
    cols["props"] = props if isinstance(props, dict) else None
    uploaded = bool(stash.get("uploaded"))

    def consistent(candidate: dict[str, Any]) -> bool:
        key = cols["objectKey"] if uploaded else _text(candidate.get("objectKey"))
        return element_columns(candidate, str(cols["threadId"]), key) == cols

    return _apply_stash(element_plain(cols), stash, consistent), stash


def thread_plain(row: dict[str, Any]) -> dict[str, Any]:
    metadata = _json_value(row["metadata"])
    tags = row.get("tags")
    return {
        "id": row["id"],
        "name": row.get("name"),
        "userId": row.get("userId"),
        "userIdentifier": row.get("userIdentifier"),
        "tags": list(tags) if tags is not None else None,
        "metadata": metadata if isinstance(metadata, dict) else {},
        "createdAt": format_time(row["createdAt"]),
        "updatedAt": format_time(row["updatedAt"]),
    }


def user_plain(row: dict[str, Any]) -> dict[str, Any]:
    metadata = _json_value(row["metadata"])
    return {
        "id": row["id"],
        "identifier": row["identifier"],
        "displayName": None,
        "metadata": metadata if isinstance(metadata, dict) else {},
        "createdAt": format_time(row["createdAt"]),
    }


def feedback_plain(row: dict[str, Any]) -> dict[str, Any]:
    value = row["value"]
    return {
        "id": row["id"],
        "forId": row["stepId"],
        "value": int(value) if value in (0, 1) else value,
        "comment": row.get("comment"),
    }


def _ts(value: Any) -> datetime:
    """A time for a ``TIMESTAMP(3)`` column, rounded as the column would store it."""
    return round_ms(parse_time(value) or EPOCH)


# -- the storage client ----------------------------------------------------------------


def storage_client_from_env() -> Any:
    """The storage client Chainlit itself would use for element files, or ``None``.

    Chainlit chooses it from environment variables (S3, Google Cloud Storage or Azure
    Blob, with ``BUCKET_NAME``); the same variables mean the same here, so bytes land
    where the app will look for them. Chainlit is imported only when one is configured.
    """
    env = os.environ.get
    bucket = env("BUCKET_NAME")
    s3 = bool(env("APP_AWS_ACCESS_KEY") and env("APP_AWS_SECRET_KEY") and env("APP_AWS_REGION"))
    gcs = bool(env("APP_GCS_PROJECT_ID"))
    azure = bool(env("APP_AZURE_STORAGE_ACCOUNT") and env("APP_AZURE_STORAGE_ACCESS_KEY"))
    if s3 + gcs + azure == 0:
        return None
    if s3 + gcs + azure > 1:
        raise CopyUsageError(
            "more than one storage client is configured (S3, GCS, Azure variables); "
            "unset all but one, as Chainlit would ignore them all"
        )
    if not bucket:
        raise CopyUsageError(
            "a storage client is configured but BUCKET_NAME is not set: set it to the "
            "bucket (or container) your Chainlit app uses"
        )
    try:
        if s3:
            from chainlit.data.storage_clients.s3 import S3StorageClient

            return S3StorageClient(
                bucket=bucket,
                region_name=env("APP_AWS_REGION"),
                aws_access_key_id=env("APP_AWS_ACCESS_KEY"),
                aws_secret_access_key=env("APP_AWS_SECRET_KEY"),
                endpoint_url=env("DEV_AWS_ENDPOINT"),
            )
        if gcs:
            from chainlit.data.storage_clients.gcs import GCSStorageClient

            return GCSStorageClient(
                project_id=env("APP_GCS_PROJECT_ID"),
                client_email=env("APP_GCS_CLIENT_EMAIL"),
                private_key=env("APP_GCS_PRIVATE_KEY"),
                bucket_name=bucket,
            )
        from chainlit.data.storage_clients.azure_blob import AzureBlobStorageClient

        return AzureBlobStorageClient(
            container_name=bucket,
            storage_account=str(env("APP_AZURE_STORAGE_ACCOUNT")),
            storage_key=str(env("APP_AZURE_STORAGE_ACCESS_KEY")),
        )
    except ImportError as exc:
        raise CopyUsageError(
            f"a storage client is configured but cannot be loaded ({exc}): install Chainlit "
            "and its client package (boto3, google-cloud-storage or azure-storage-blob)"
        ) from exc


async def _upload(client: Any, key: str, data: bytes, mime: str, name: str) -> None:
    kwargs: dict[str, Any] = {"object_key": key, "data": data, "mime": mime, "overwrite": True}
    try:
        accepts = "content_disposition" in inspect.signature(client.upload_file).parameters
    except (TypeError, ValueError):
        accepts = False
    # As Chainlit does: a download name, except on GCS, whose client sets its own.
    if accepts and type(client).__name__ != "GCSStorageClient":
        kwargs["content_disposition"] = f'attachment; filename="{name}"'
    await client.upload_file(**kwargs)


# -- the endpoint ----------------------------------------------------------------------


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


class PostgresEndpoint(Endpoint):
    """A database with Chainlit's official schema, through one asyncpg connection."""

    records_deletions = False  # Chainlit's layer deletes rows outright

    def __init__(self, url: str, *, fetch_urls: bool = True) -> None:
        self.url = url
        self.label = redact(url)
        self.fetch_urls = fetch_urls
        self.conn: Any = None
        self.storage: Any = None
        self.missing_schema = False
        self.step_types = frozenset(STEP_TYPES)
        self.mapped_types: Counter[str] = Counter()

    async def open(self, *, create: bool, dry_run: bool, create_schema: bool) -> None:
        try:
            import asyncpg  # type: ignore[import-untyped]
        except ImportError as exc:
            raise CopyUsageError(
                f"asyncpg is needed to use a postgresql:// URL: {_INSTALL_HINT}"
            ) from exc
        try:
            self.conn = await asyncpg.connect(self.url, timeout=15)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise CopyUsageError(
                f"cannot connect to {self.label}: {exc}. Check the URL (user, password, "
                "host, port, database) and that the server accepts connections."
            ) from exc
        missing = await self._missing_tables()
        if missing and create and create_schema and not dry_run:
            await self.apply_schema()
            missing = await self._missing_tables()
        if missing:
            if create and create_schema and dry_run:
                self.missing_schema = True  # would be created: the database reads as empty
            else:
                where = "destination" if create else "source"
                raise CopyUsageError(
                    f"the {where} database {self.label} lacks Chainlit's tables "
                    f"({', '.join(missing)}). "
                    + (
                        "Run the copy with --create-schema, or apply Chainlit's migrations."
                        if create
                        else "Is this the database of a Chainlit app?"
                    )
                )
        if not self.missing_schema:
            labels = await self.conn.fetch('SELECT unnest(enum_range(NULL::"StepType"))::text')
            self.step_types = frozenset(r[0] for r in labels)
        self.storage = self.storage_override or storage_client_from_env()

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

    async def close(self) -> None:
        if self.storage is not None:
            with contextlib.suppress(Exception):  # closing must not hide the copy's result
                await self.storage.close()
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

    # reading

    async def list_users(self, identifier: str | None) -> list[dict[str, Any]]:
        if self.missing_schema:
            return []
        rows = await self.conn.fetch(
            'SELECT * FROM "User" WHERE $1::text IS NULL OR identifier = $1 '
            'ORDER BY "createdAt", id',
            identifier,
        )
        return [user_plain(dict(r)) for r in rows]

    async def user_by_identifier(self, identifier: str) -> dict[str, Any] | None:
        found = await self.list_users(identifier)
        return found[0] if found else None

    async def user_ids(self) -> set[str]:
        if self.missing_schema:
            return set()
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
        if self.missing_schema:
            return False
        deleted = await self.conn.fetchval(
            'SELECT "deletedAt" IS NOT NULL FROM "Thread" WHERE id = $1', thread_id
        )
        return bool(deleted)

    async def read_thread(self, thread_id: str) -> ThreadData | None:
        if self.missing_schema:
            return None
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
        feedback: dict[str, dict[str, Any]] = {}
        for r in await self.conn.fetch(
            'SELECT f.* FROM "Feedback" f JOIN "Step" s ON s.id = f."stepId" '
            'WHERE s."threadId" = $1 ORDER BY f."createdAt", f.id',
            thread_id,
        ):
            fb = feedback_plain(dict(r))
            feedback[fb["forId"]] = fb  # one per step, as the archive (and the UI) has it
        data.feedback = list(feedback.values())
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
        if object_key and storage is not None:

            async def from_storage() -> bytes | None:
                read_url = await storage.get_read_url(object_key=object_key)
                return await fetch_url(str(read_url))

            return from_storage
        if url and self.fetch_urls and url.lower().startswith(("http://", "https://")):

            async def from_url() -> bytes | None:
                return await fetch_url(url)

            return from_url
        return None

    # comparing, in this side's terms

    def _codec(self, plan: ThreadPlan) -> StepCodec:
        return StepCodec(self.step_types, plan.all_step_ids, plan.thread_created)

    def same_step(self, dest: dict[str, Any], src: dict[str, Any], plan: ThreadPlan) -> bool:
        codec = self._codec(plan)
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
                "comment": src.get("comment"),
            }
        ) == {k: dest.get(k) for k in ("id", "forId", "value", "comment")}

    def _will_upload(self, el: ElementData) -> bool:
        # An element with its own URL is served from there (Chainlit reads the URL
        # first), so its bytes need no copy in the bucket.
        return self.storage is not None and el.fetch is not None and not el.fields.get("url")

    def same_element(self, dest: ElementData, src: ElementData, plan: ThreadPlan) -> bool:
        uploaded = None
        if self._will_upload(src):
            key = f"threads/{plan.thread_id}/files/{src.fields['id']}"
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
        step = el.fields.get("forId")
        if not isinstance(step, str):
            return "it belongs to no step, and Chainlit's schema requires one (Element.stepId)"
        if step not in plan.all_step_ids:
            return f"its step {step} is not in the thread"
        return None

    def planned_step(self, step: dict[str, Any]) -> None:
        kind = step.get("type")
        if kind not in self.step_types:
            self.mapped_types[str(kind)] += 1

    def bytes_behind(self, src: ElementData, held: ElementData | None) -> str | None:
        if src.fetch is not None and self.storage is None and not src.fields.get("url"):
            return (
                "no storage client is configured (set Chainlit's BUCKET_NAME and S3, GCS "
                "or Azure variables to upload element files); only the element row is copied"
            )
        return None

    # writing

    async def write_user(self, user: dict[str, Any]) -> None:
        created = _ts(user.get("createdAt"))
        await self.conn.execute(
            'INSERT INTO "User" (id, identifier, metadata, "createdAt", "updatedAt") '
            "VALUES ($1, $2, $3::jsonb, $4, $4) ON CONFLICT (id) DO UPDATE SET "
            "identifier = EXCLUDED.identifier, metadata = EXCLUDED.metadata, "
            '"createdAt" = EXCLUDED."createdAt", "updatedAt" = CURRENT_TIMESTAMP',
            user["id"],
            user["identifier"],
            _dump(user.get("metadata") or {}),
            created,
        )

    async def delete_thread(self, thread_id: str, deleted_at: str) -> None:
        """Marked deleted (``deletedAt``), which Chainlit's layer honours; reversible."""
        when = parse_time(deleted_at) or datetime.now(timezone.utc).replace(tzinfo=None)
        await self.conn.execute(
            'UPDATE "Thread" SET "deletedAt" = $2 WHERE id = $1', thread_id, round_ms(when)
        )

    async def apply(self, plan: ThreadPlan, summary: Summary) -> None:
        tid = plan.thread_id
        uploads: dict[str, tuple[str, str, int]] = {}
        for el in plan.elements:  # outside the transaction: storage is not transactional
            if not self._will_upload(el):
                continue
            assert el.fetch is not None
            data = await el.fetch()
            eid = el.fields["id"]
            if data is None:
                summary.stayed_behind(f"{el.origin or eid}: its file is missing in the source")
                continue
            key = f"threads/{tid}/files/{eid}"
            mime = str(el.fields.get("mime") or "application/octet-stream")
            await _upload(self.storage, key, data, mime, str(el.fields.get("name") or eid))
            uploads[eid] = (key, hashlib.sha256(data).hexdigest(), len(data))
            summary.bytes_copied += len(data)
        codec = self._codec(plan)
        conn = self.conn
        async with conn.transaction():
            if plan.thread is not None:
                await self._write_thread(plan.thread)
            doomed = set(plan.delete_steps)
            steps = list(plan.steps)
            # Deleting a step cascades to its children in this schema (not in the
            # archive, where they stay): write those children again, unparented.
            planned = {s["id"] for s in steps}
            steps += [
                s
                for s in plan.source_steps
                if s.get("parentId") in doomed and s["id"] not in planned | doomed
            ]
            if doomed:
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

    async def _write_thread(self, thread: dict[str, Any]) -> None:
        tags = thread.get("tags")
        await self.conn.execute(
            'INSERT INTO "Thread" (id, "createdAt", "updatedAt", name, metadata, tags, "userId") '
            "VALUES ($1, $2, $3, $4, $5::jsonb, $6::text[], $7) ON CONFLICT (id) DO UPDATE SET "
            '"createdAt" = EXCLUDED."createdAt", "updatedAt" = EXCLUDED."updatedAt", '
            "name = EXCLUDED.name, metadata = EXCLUDED.metadata, tags = EXCLUDED.tags, "
            '"userId" = EXCLUDED."userId"',
            thread["id"],
            _ts(thread.get("createdAt") or thread.get("updatedAt")),
            _ts(thread.get("updatedAt") or thread.get("createdAt")),
            _text(thread.get("name")),
            _dump(thread.get("metadata") or {}),
            list(tags) if isinstance(tags, list) else None,
            thread.get("userId"),
        )

    async def _write_step(self, cols: dict[str, Any]) -> None:
        names = ", ".join(f'"{c}"' for c in _STEP_COLUMNS)
        values = ", ".join(
            f"${n}::jsonb" if c == "metadata" else f'${n}::"StepType"' if c == "type" else f"${n}"
            for n, c in enumerate(_STEP_COLUMNS, start=1)
        )
        updates = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in _STEP_COLUMNS if c != "id")
        params = [_dump(cols[c]) if c == "metadata" else cols[c] for c in _STEP_COLUMNS]
        status = await self.conn.execute(
            f'INSERT INTO "Step" ({names}) VALUES ({values}) ON CONFLICT (id) DO UPDATE SET '
            f'{updates}, "updatedAt" = CURRENT_TIMESTAMP '
            'WHERE "Step"."threadId" IS NOT DISTINCT FROM EXCLUDED."threadId"',
            *params,
        )
        if status.endswith(" 0"):
            raise ValueError(f"step id {cols['id']} is already used by another thread")

    async def _write_element(self, cols: dict[str, Any]) -> None:
        names = ", ".join(f'"{c}"' for c in _ELEMENT_COLUMNS)
        values = ", ".join(
            f"${n}::jsonb" if c in ("metadata", "props") else f"${n}"
            for n, c in enumerate(_ELEMENT_COLUMNS, start=1)
        )
        updates = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in _ELEMENT_COLUMNS if c != "id")
        params = [
            _dump(cols[c]) if c in ("metadata", "props") else cols[c] for c in _ELEMENT_COLUMNS
        ]
        status = await self.conn.execute(
            f'INSERT INTO "Element" ({names}) VALUES ({values}) ON CONFLICT (id) DO UPDATE SET '
            f'{updates}, "updatedAt" = CURRENT_TIMESTAMP '
            'WHERE "Element"."threadId" IS NOT DISTINCT FROM EXCLUDED."threadId"',
            *params,
        )
        if status.endswith(" 0"):
            raise ValueError(f"element id {cols['id']} is already used by another thread")

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
            fb.get("comment"),
        )
