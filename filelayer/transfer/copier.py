"""``filelayer copy SOURCE DEST``: carry conversations between an archive and a database.

Either side is an archive root (a directory) or the URL of a database with one of
Chainlit's schemas: the official one (``postgresql://``, :mod:`filelayer.pgcopy`) or the
one of Chainlit's ``SQLAlchemyDataLayer`` (``sqlite:///``, ``postgresql+asyncpg://``,
:mod:`filelayer.sqlacopy`). The copy is meant for moving an app from files to
PostgreSQL (or back) without losing anything, and for re-running until both sides agree:

* Every entity keeps its id and its times, so a thread copied twice is one thread.
* Both sides are read into one neutral shape (the archive's own dicts, which hold every
  field Chainlit sends); each destination says how it compares and writes that shape.
* A re-run writes only what is missing or different; identical entities count as
  "unchanged", so a completed copy re-run reports nothing to do. A thread whose
  destination copy changed more recently than the source is left alone (the app now
  writes there), and deleted threads, steps and elements are never brought back.
* Each thread is written as a unit (one transaction in PostgreSQL); a failure is
  reported and the copy goes on, so an interrupted copy is finished by running it again.

This module imports neither Chainlit nor asyncpg: the database sides live in their own
modules, imported only when a URL is given, so the rest of the command line keeps
working without the optional packages (SQLite needs none: it is in the standard library).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import importlib
import os
import re
import sys
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TextIO

from .._io import locks as _locks
from ..errors import ArchiveError, FileLayerError
from ..format import journal, manifest, users
from ..format.ids import is_valid_id
from ..maintenance.retention import is_erased
from ..progress import Progress
from ..store.archive import ArchiveStore

KINDS = ("users", "threads", "steps", "feedback", "elements")
OUTCOMES = ("copied", "updated", "unchanged", "skipped", "deleted")
TIME_KEYS = ("createdAt", "updatedAt", "start", "end")
_ARCHIVE_ONLY_ELEMENT_KEYS = ("file", "bytes", "sha256", "threadId")
_FETCH_TIMEOUT = 60.0

ISO = "%Y-%m-%dT%H:%M:%S.%fZ"
_TIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?$"
)


class CopyUsageError(FileLayerError):
    """Wrong arguments, a missing package or an unreachable side: exit code 2."""


# -- times ---------------------------------------------------------------------------


def parse_time(value: object) -> datetime | None:
    """A naive UTC datetime from the ISO 8601 text Chainlit and the archive write.

    Written by hand because ``datetime.fromisoformat`` of Python 3.10 refuses ``Z`` and
    fractions of other than 3 or 6 digits, both of which appear in real data.
    """
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value
    if not isinstance(value, str):
        return None
    m = _TIME_RE.match(value.strip())
    if not m:
        return None
    year, month, day, hour, minute, second, fraction, zone = m.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        dt = datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0)
        )
    except ValueError:
        return None
    dt += timedelta(microseconds=micro)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        dt -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return dt


def format_time(dt: datetime) -> str:
    """Chainlit's own format, so that times written by either side compare as text."""
    return dt.strftime(ISO)


def round_ms(dt: datetime) -> datetime:
    """Round to the millisecond the way PostgreSQL stores ``TIMESTAMP(3)`` (half up)."""
    micro = dt.microsecond
    base = dt - timedelta(microseconds=micro % 1000)
    return base + timedelta(milliseconds=1) if micro % 1000 >= 500 else base


def time_key(value: object) -> str:
    """A time as comparable text at the precision both sides share (milliseconds)."""
    dt = parse_time(value)
    return format_time(round_ms(dt)) if dt else ""


def normalise_times(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with its times at millisecond precision: what both sides can agree on."""
    out = dict(d)
    for key in TIME_KEYS:
        if isinstance(out.get(key), str) and parse_time(out[key]) is not None:
            out[key] = time_key(out[key])
    return out


def since_bound(value: str | None) -> str | None:
    """``--since``: a date or a time, as a comparable millisecond time string."""
    if value is None:
        return None
    dt = parse_time(value)
    if dt is None:
        raise CopyUsageError(f"--since takes a date (YYYY-MM-DD) or an ISO time, not {value!r}")
    return format_time(round_ms(dt))


# -- the neutral shape ---------------------------------------------------------------


Fetch = Callable[[], Awaitable[bytes | None]]


@dataclass
class ElementData:
    """An element's fields (``ElementDict`` without thread id) and how to get its bytes."""

    fields: dict[str, Any]
    sha256: str | None = None
    size: int | None = None
    fetch: Fetch | None = None
    origin: str = ""
    """Where the bytes are, for the report (a file of the archive, a URL, a key)."""
    elsewhere: bool = False
    """The bytes live outside the source (a bucket, a URL): a destination that keeps
    bytes should fetch them, and say so when it cannot."""
    transient_url: bool = False
    """The ``url`` only points at the bytes (a signed storage link that expires, a local
    path): a destination that keeps the bytes themselves leaves it out."""


@dataclass
class ThreadData:
    """One conversation in the neutral shape, plus the ids its side knows were deleted."""

    thread: dict[str, Any]
    steps: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)
    elements: list[ElementData] = field(default_factory=list)
    deleted_steps: set[str] = field(default_factory=set)
    deleted_elements: set[str] = field(default_factory=set)
    deleted_feedback: set[str] = field(default_factory=set)

    def activity(self) -> str:
        """The last change this side knows of (thread update or step), in ms."""
        times = [time_key(self.thread.get("updatedAt"))]
        times += [time_key(s.get("createdAt") or s.get("start")) for s in self.steps]
        return max(times)


@dataclass
class ThreadRef:
    """A thread to consider: a live one, or a deleted one (``deleted_at``)."""

    id: str
    deleted_at: str | None = None


@dataclass
class ThreadPlan:
    """What a destination must write for one thread (``thread`` None: manifest as is)."""

    thread_id: str
    thread: dict[str, Any] | None
    steps: list[dict[str, Any]] = field(default_factory=list)
    delete_steps: list[str] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)
    delete_feedback: list[str] = field(default_factory=list)
    elements: list[ElementData] = field(default_factory=list)
    delete_elements: list[str] = field(default_factory=list)
    all_step_ids: set[str] = field(default_factory=set)
    thread_created: str = ""
    user_id: str | None = None
    source_steps: list[dict[str, Any]] = field(default_factory=list)

    def empty(self) -> bool:
        return self.thread is None and not (
            self.steps
            or self.delete_steps
            or self.feedback
            or self.delete_feedback
            or self.elements
            or self.delete_elements
        )


@dataclass
class Skip:
    kind: str
    id: str
    reason: str
    problem: bool


@dataclass
class Summary:
    """Counts per kind and outcome, bytes carried, and everything left out, with why."""

    dry_run: bool = False
    counts: dict[str, Counter[str]] = field(
        default_factory=lambda: {kind: Counter() for kind in KINDS}
    )
    bytes_copied: int = 0
    skipped: list[Skip] = field(default_factory=list)
    behind: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def count(self, kind: str, outcome: str, n: int = 1) -> None:
        self.counts[kind][outcome] += n

    def skip(self, kind: str, id: str, reason: str, *, problem: bool) -> None:
        self.counts[kind]["skipped"] += 1
        self.skipped.append(Skip(kind, id, reason, problem))

    def stayed_behind(self, what: str) -> None:
        self.behind.append(what)

    @property
    def problems(self) -> bool:
        return bool(self.behind) or any(s.problem for s in self.skipped)

    def merge(self, other: Summary) -> None:
        for kind in KINDS:
            self.counts[kind].update(other.counts[kind])
        self.bytes_copied += other.bytes_copied
        self.skipped += other.skipped
        self.behind += other.behind
        self.notes += other.notes

    def render(self) -> str:
        verb = "would be " if self.dry_run else ""
        lines = ["dry run: nothing was written" if self.dry_run else "copy finished"]
        for kind in KINDS:
            c = self.counts[kind]
            parts = [
                f"{c[o]} {verb if o in ('copied', 'updated', 'deleted') else ''}{o}"
                for o in OUTCOMES
                if c[o] or o != "deleted"
            ]
            lines.append(f"  {kind:<9} " + ", ".join(parts))
        lines.append(f"  bytes     {self.bytes_copied} {verb}copied (element files)")
        for note in self.notes:
            lines.append(f"note: {note}")
        for s in self.skipped:
            label = "problem" if s.problem else "skipped"
            lines.append(f"{label}: {s.kind[:-1]} {s.id}: {s.reason}")
        if self.behind:
            stay = "would stay" if self.dry_run else "stayed"
            lines.append(
                f"{len(self.behind)} element file(s) {stay} behind (the elements are "
                "copied, their bytes are not):"
            )
            lines += [f"  {what}" for what in self.behind]
        return "\n".join(lines) + "\n"


# -- endpoints -----------------------------------------------------------------------


class Endpoint:
    """One side of a copy. Readers give the neutral shape; writers take plans.

    ``same_*`` say whether the destination already holds what the source has, each in
    the destination's own terms (what it can store, how it merges writes).
    """

    label = ""
    storage_override: Any = None
    """A storage client given on the command line (``--storage-client``), used instead of
    the one Chainlit's environment variables configure."""
    records_deletions = True
    """Whether this side keeps the ids of deleted steps and elements (the archive's
    journal does). When a source does not, whatever the destination holds of a copied
    thread and the source lacks was deleted there."""

    async def open(self, *, create: bool, dry_run: bool, create_schema: bool) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections; nothing to do for an archive."""

    def final_notes(self) -> list[str]:
        """What the summary should say about how this side stored things."""
        return []

    async def list_users(self, identifier: str | None) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def list_threads(self, identifier: str | None, since: str | None) -> list[ThreadRef]:
        raise NotImplementedError

    async def read_thread(self, thread_id: str) -> ThreadData | None:
        raise NotImplementedError

    async def is_deleted(self, thread_id: str) -> bool:
        raise NotImplementedError

    async def user_by_identifier(self, identifier: str) -> dict[str, Any] | None:
        raise NotImplementedError

    async def is_erased_user(self, user_id: object, identifier: object, created: object) -> bool:
        """Whether this side erased the user (``filelayer erase-user``) after ``created``
        (a user record's or a thread's creation): what was erased is never copied into it
        again. Only an archive erases."""
        return False

    async def user_ids(self) -> set[str]:
        raise NotImplementedError

    async def write_user(self, user: dict[str, Any]) -> None:
        raise NotImplementedError

    async def delete_thread(self, thread_id: str, deleted_at: str) -> None:
        raise NotImplementedError

    async def apply(self, plan: ThreadPlan, summary: Summary) -> None:
        raise NotImplementedError

    def same_user(self, dest: dict[str, Any], src: dict[str, Any]) -> bool:
        keys = ("id", "identifier", "metadata")
        return all(dest.get(k) == src.get(k) for k in keys) and time_key(
            dest.get("createdAt")
        ) == time_key(src.get("createdAt"))

    def same_thread(self, dest: dict[str, Any], src: dict[str, Any]) -> bool:
        keys = ("name", "userId", "tags", "metadata", "createdAt", "updatedAt")
        a, b = normalise_times(dest), normalise_times(src)
        return all(a.get(k) == b.get(k) for k in keys)

    def same_step(self, dest: dict[str, Any], src: dict[str, Any], plan: ThreadPlan) -> bool:
        raise NotImplementedError

    def same_feedback(self, dest: dict[str, Any], src: dict[str, Any]) -> bool:
        keys = ("id", "forId", "value", "comment")
        return all(dest.get(k) == src.get(k) for k in keys)

    def same_element(self, dest: ElementData, src: ElementData, plan: ThreadPlan) -> bool:
        raise NotImplementedError

    def element_problem(self, el: ElementData, plan: ThreadPlan) -> str | None:
        """Why this destination cannot hold the element at all (``None``: it can)."""
        return None

    def planned_step(self, step: dict[str, Any]) -> None:
        """A step is about to be written here (dry run or not): note what matters."""

    def bytes_behind(self, src: ElementData, held: ElementData | None) -> str | None:
        """Why the element's bytes will not be in the destination (``None``: they will,
        or a fetch will be tried and its failure reported when it happens)."""
        return None


async def fetch_url(url: str) -> bytes | None:
    """The bytes behind an http(s) URL, ``None`` if it cannot be fetched."""
    if not url.lower().startswith(("http://", "https://")):
        return None

    def get() -> bytes | None:
        request = urllib.request.Request(url, headers={"User-Agent": "filelayer-copy"})
        try:
            with urllib.request.urlopen(request, timeout=_FETCH_TIMEOUT) as response:
                data: bytes = response.read()
                return data
        except (urllib.error.URLError, OSError, ValueError):
            return None

    return await asyncio.to_thread(get)


class ArchiveEndpoint(Endpoint):
    """A filelayer archive, through :class:`ArchiveStore` and the format's own modules.

    Writing keeps ids and times, so the manifest and user files are written directly
    (the store's ``update_thread``/``upsert_user`` stamp new times and new ids, which is
    right for an app and wrong for a copy), under the same locks the store takes.
    """

    def __init__(self, root: str, *, fetch_urls: bool = True) -> None:
        self.root = Path(root).expanduser()
        self.label = str(self.root)
        self.store: ArchiveStore | None = None
        self.fetch_urls = fetch_urls

    async def open(self, *, create: bool, dry_run: bool, create_schema: bool) -> None:
        if not create and not self.root.exists():
            raise CopyUsageError(f"no archive at {self.root}: check the SOURCE path")
        if create and dry_run and not self.root.exists():
            return  # a dry run into a new archive: everything would be copied
        try:
            self.store = ArchiveStore(self.root, create=create and not dry_run, upgrade=not dry_run)
        except ArchiveError as exc:
            raise CopyUsageError(str(exc)) from exc

    def _need(self) -> ArchiveStore:
        assert self.store is not None
        return self.store

    # reading

    async def list_users(self, identifier: str | None) -> list[dict[str, Any]]:
        if self.store is None:
            return []
        if identifier is not None:
            user = self.store.get_user(identifier)
            return [user] if user else []
        return list(self.store.iter_users())

    async def list_threads(self, identifier: str | None, since: str | None) -> list[ThreadRef]:
        if self.store is None:
            return []
        store = self.store
        user_id = None
        if identifier is not None:
            user = store.get_user(identifier)
            if user is None:
                return []
            user_id = user["id"]
        store.index.refresh()
        tombstones = self._need().deleted_threads()
        refs = []
        for thread_id in store.thread_ids():
            if thread_id in tombstones:
                continue
            doc = store.read_manifest(thread_id) or {}
            if user_id is not None and doc.get("userId") != user_id:
                continue
            if since is not None:
                summary = store.index.threads.get(thread_id)
                # Any change counts here (a rename too), not only the sidebar's activity.
                changed = summary.changed if summary else str(doc.get("updatedAt") or "")
                newest = max(time_key(changed), time_key(doc.get("createdAt")))
                if newest < since:
                    continue
            refs.append(ThreadRef(thread_id))
        for thread_id, deleted_at in sorted(tombstones.items()):
            if since is None or time_key(deleted_at) >= since:
                refs.append(ThreadRef(thread_id, deleted_at=deleted_at or "deleted"))
        return refs

    async def is_deleted(self, thread_id: str) -> bool:
        return self.store is not None and self.store.is_deleted(thread_id)

    async def read_thread(self, thread_id: str) -> ThreadData | None:
        store = self.store
        if store is None or store.is_deleted(thread_id) or not is_valid_id(thread_id):
            return None
        path = store.layout.manifest(thread_id)
        doc = manifest.read(path) if path.exists() else None
        if doc is None:
            return None
        parsed = journal.read(store.layout.journal(thread_id))
        state = journal.fold(parsed.records)
        data = ThreadData(
            thread={k: doc.get(k) for k in manifest.FIELDS},
            steps=[dict(s) for s in state.ordered_steps()],
            feedback=[dict(f) for f in state.feedback_by_step().values()],
            deleted_steps=set(state.deleted_steps),
            deleted_elements=set(state.deleted_elements),
            deleted_feedback={
                r["id"] for r in parsed.records if r["op"] == journal.OP_FEEDBACK_DELETE
            },
        )
        live_feedback = {f["id"] for f in data.feedback}
        data.deleted_feedback -= live_feedback
        for el in state.live_elements():
            fields = {k: v for k, v in el.items() if k not in _ARCHIVE_ONLY_ELEMENT_KEYS}
            item = ElementData(fields=fields)
            if isinstance(el.get("file"), str):
                item.sha256 = el.get("sha256") if isinstance(el.get("sha256"), str) else None
                item.size = el.get("bytes") if isinstance(el.get("bytes"), int) else None
                item.origin = f"threads/{thread_id}/{el['file']}"
                item.fetch = self._file_fetcher(thread_id, el["id"])
            data.elements.append(item)
        return data

    def _file_fetcher(self, thread_id: str, element_id: str) -> Fetch:
        store = self._need()

        async def fetch() -> bytes | None:
            found = store.element_file(thread_id, element_id)
            if found is None:
                return None
            try:
                return found[1].read_bytes()
            except OSError:
                return None

        return fetch

    # writing

    async def user_by_identifier(self, identifier: str) -> dict[str, Any] | None:
        return self.store.get_user(identifier) if self.store else None

    async def is_erased_user(self, user_id: object, identifier: object, created: object) -> bool:
        return self.store is not None and is_erased(self.store, user_id, identifier, created)

    async def user_ids(self) -> set[str]:
        return {u["id"] for u in await self.list_users(None)}

    async def write_user(self, user: dict[str, Any]) -> None:
        store = self._need()
        path = store.layout.user_file(user["identifier"])
        with _locks.locked(store.layout.users_lock, store.lock_timeout):
            existing = users.read(path)
            doc = dict(user)
            if existing is not None and doc.get("displayName") is None:
                doc["displayName"] = existing.get("displayName")
            users.write(path, doc, durable=True)

    async def delete_thread(self, thread_id: str, deleted_at: str) -> None:
        self._need().delete_thread(thread_id)

    def same_step(self, dest: dict[str, Any], src: dict[str, Any], plan: ThreadPlan) -> bool:
        # The journal merges writes (empty text never overwrites, the earliest start
        # wins): the step is unchanged if storing the source would change nothing (its
        # feedback and streaming flag, which readers add, are not stored).
        merged = copy.deepcopy(dest)
        journal.merge_step(merged, journal.step_body(src))
        return normalise_times(merged) == normalise_times(dest)

    def same_element(self, dest: ElementData, src: ElementData, plan: ThreadPlan) -> bool:
        merged = dict(dest.fields)
        merged.update(journal.drop_none(_kept_fields(src, dest.sha256 is not None)))
        if merged != dest.fields:
            return False
        if dest.sha256 is not None:
            return src.sha256 is None or src.sha256 == dest.sha256
        return src.fetch is None  # bytes to fetch that the archive does not hold yet

    def bytes_behind(self, src: ElementData, held: ElementData | None) -> str | None:
        if held is not None and held.sha256 is not None:
            return None
        if src.fetch is None and src.elsewhere:
            return "kept as a reference (its bytes could not be read from the source)"
        return None

    async def apply(self, plan: ThreadPlan, summary: Summary) -> None:
        store = self._need()
        tid = plan.thread_id
        if plan.thread is not None:
            self._need().put_manifest(plan.thread)
        elif not store.layout.manifest(tid).exists():
            raise FileLayerError(f"thread {tid} has no manifest to add to")
        for step in plan.steps:
            store.write_step({**journal.drop_none(step), "threadId": tid})
        for sid in plan.delete_steps:
            store.delete_step(sid, tid)
        for fid in plan.delete_feedback:
            store.delete_feedback(fid)
        for fb in plan.feedback:
            store.upsert_feedback(
                for_id=fb["forId"],
                value=fb["value"],
                comment=fb.get("comment"),
                feedback_id=fb["id"],
                thread_id=tid,
            )
        for el in plan.elements:
            data = await el.fetch() if el.fetch is not None else None
            if data is None and el.fetch is not None:
                summary.stayed_behind(
                    f"{el.origin or el.fields['id']}: could not be fetched; kept as a reference"
                )
            elif el.fetch is None and not el.fields.get("url"):
                # Nothing a browser could load it from: say so rather than keep a blank.
                summary.stayed_behind(
                    f"{el.origin or el.fields['id']}: "
                    + (
                        "stored under a storage key, and no storage client is configured "
                        "(set Chainlit's BUCKET_NAME and S3, GCS or Azure variables)"
                        if el.elsewhere
                        else "the source holds no bytes for it (no file, URL or storage key)"
                    )
                )
            fields = _kept_fields(el, data is not None)
            store.put_element(tid, journal.drop_none(fields), data)
            if data is not None:
                summary.bytes_copied += len(data)
        for eid in plan.delete_elements:
            store.delete_element(eid, tid)


def _kept_fields(el: ElementData, bytes_kept: bool) -> dict[str, Any]:
    """An element's fields as an archive keeps them: without a link that only pointed at
    bytes the archive now holds itself."""
    if bytes_kept and el.transient_url:
        return {k: v for k, v in el.fields.items() if k != "url"}
    return el.fields


SCHEMAS = ("official", "sqlalchemy")


def endpoint_kind(location: str, schema: str | None = None) -> str:
    """What a SOURCE or DEST names: ``archive``, ``official`` (Chainlit's PostgreSQL
    schema), ``sqlalchemy`` (the SQLAlchemy data layer's schema, on SQLite or PostgreSQL)
    or ``postgresql`` (a plain PostgreSQL URL whose schema is found from its tables)."""
    lowered = location.lower()
    if re.match(r"sqlite(\+\w+)?://", lowered):
        if schema == "official":
            raise CopyUsageError("Chainlit's official schema is PostgreSQL only, not SQLite")
        return "sqlalchemy"
    if re.match(r"postgres(ql)?\+\w+://", lowered):  # SQLAlchemy's own URL form
        return schema or "sqlalchemy"
    if lowered.startswith(("postgresql://", "postgres://")):
        return schema or "postgresql"
    if "://" in location:
        raise CopyUsageError(
            f"{location.split('://')[0]}:// is not supported: give an archive directory, "
            "a postgresql:// URL or a sqlite:/// URL"
        )
    return "archive"


async def open_endpoint(
    location: str, *, fetch_urls: bool, schema: str | None = None, storage: Any = None
) -> Endpoint:
    """The endpoint for ``location``; a plain PostgreSQL URL is looked at to see which of
    Chainlit's two schemas its database has (a database with neither gets the official
    one, unless ``schema`` says otherwise)."""
    kind = endpoint_kind(location, schema)
    endpoint: Endpoint
    if kind == "postgresql":
        from ..transfer.sqla import detect_postgres_schema

        kind = await detect_postgres_schema(location)
    if kind == "official":
        from ..transfer.postgres import PostgresEndpoint

        endpoint = PostgresEndpoint(location, fetch_urls=fetch_urls)
    elif kind == "sqlalchemy":
        from ..transfer.sqla import SQLAlchemySchemaEndpoint

        endpoint = SQLAlchemySchemaEndpoint(location, fetch_urls=fetch_urls)
    else:
        endpoint = ArchiveEndpoint(location, fetch_urls=fetch_urls)
    endpoint.storage_override = storage
    return endpoint


# -- the copy ------------------------------------------------------------------------


@dataclass
class CopyOptions:
    dry_run: bool = False
    user: str | None = None
    since: str | None = None
    create_schema: bool = False


class Copier:
    """Copies users, then thread by thread, each as one unit of work."""

    def __init__(self, source: Endpoint, dest: Endpoint, options: CopyOptions) -> None:
        self.source = source
        self.dest = dest
        self.options = options
        self.summary = Summary(dry_run=options.dry_run)
        self.user_map: dict[str, str] = {}
        self.dest_user_ids: set[str] = set()

    async def run(self, progress: Callable[[int, int], None] | None = None) -> Summary:
        since = since_bound(self.options.since)
        await self.copy_users()
        refs = await self.source.list_threads(self.options.user, since)
        for n, ref in enumerate(refs, start=1):
            if ref.deleted_at is not None:
                await self.propagate_delete(ref)
            else:
                await self.copy_thread(ref.id)
            if progress is not None:
                progress(n, len(refs))
        self.summary.notes += self.dest.final_notes()
        return self.summary

    async def copy_users(self) -> None:
        self.dest_user_ids = await self.dest.user_ids()
        for user in await self.source.list_users(self.options.user):
            if await self.dest.is_erased_user(user["id"], user["identifier"], user["createdAt"]):
                self.summary.skip(
                    "users",
                    user["id"],
                    "erased in the destination (filelayer erase-user); not brought back",
                    problem=False,
                )
                continue
            existing = await self.dest.user_by_identifier(user["identifier"])
            wanted = dict(user)
            if existing is not None and existing["id"] != user["id"]:
                # The identifier is unique on both sides: keep the destination's id and
                # attach this user's threads to it.
                self.user_map[user["id"]] = existing["id"]
                wanted["id"] = existing["id"]
                wanted["createdAt"] = existing["createdAt"]
                self.summary.notes.append(
                    f"user {user['identifier']} already exists in the destination with id "
                    f"{existing['id']}; its threads were attached to that id"
                )
            if existing is not None and self.dest.same_user(existing, wanted):
                self.summary.count("users", "unchanged")
                continue
            if not self.options.dry_run:
                await self.dest.write_user(wanted)
            self.dest_user_ids.add(wanted["id"])
            self.summary.count("users", "copied" if existing is None else "updated")

    async def propagate_delete(self, ref: ThreadRef) -> None:
        """A thread deleted in the source is deleted in the destination too, never
        copied; nothing is reported for tombstones the destination never held."""
        existing = await self.dest.read_thread(ref.id)
        if existing is None:
            return
        if self.options.user is not None:
            author = existing.thread.get("userIdentifier")
            if author != self.options.user:
                return
        if not self.options.dry_run:
            await self.dest.delete_thread(ref.id, ref.deleted_at or "")
        self.summary.count("threads", "deleted")

    async def copy_thread(self, thread_id: str) -> None:
        local = Summary(dry_run=self.options.dry_run)
        try:
            src = await self.source.read_thread(thread_id)
            if src is None:
                return
            if await self.dest.is_deleted(thread_id):
                self.summary.skip(
                    "threads",
                    thread_id,
                    "deleted in the destination; not brought back",
                    problem=False,
                )
                return
            thread = src.thread
            if await self.dest.is_erased_user(
                thread.get("userId"), thread.get("userIdentifier"), thread.get("createdAt")
            ):
                self.summary.skip(
                    "threads",
                    thread_id,
                    "its author was erased in the destination; not brought back",
                    problem=False,
                )
                return
            dest = await self.dest.read_thread(thread_id)
            if dest is not None and dest.activity() > src.activity():
                self.summary.skip(
                    "threads",
                    thread_id,
                    f"changed in the destination ({dest.activity()}) after the source "
                    f"({src.activity()}); left as it is",
                    problem=False,
                )
                return
            plan = self.plan(src, dest, local)
            if not self.options.dry_run and not plan.empty():
                await self.dest.apply(plan, local)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # reported, and the copy goes on: a re-run retries it
            self.summary.skip(
                "threads",
                thread_id,
                f"not copied ({type(exc).__name__}: {exc}); run the copy again",
                problem=True,
            )
            return
        self.summary.merge(local)

    def plan(self, src: ThreadData, dest: ThreadData | None, local: Summary) -> ThreadPlan:
        tid = src.thread["id"]
        thread = dict(src.thread)
        uid = thread.get("userId")
        if uid:
            uid = self.user_map.get(uid, uid)
            thread["userId"] = uid
            if uid not in self.dest_user_ids:
                local.notes.append(
                    f"thread {tid}: its author (user id {uid}) is not in the source's "
                    "users; copied without an author"
                )
                thread["userId"] = None
                thread["userIdentifier"] = None
        plan = ThreadPlan(thread_id=tid, thread=None, source_steps=src.steps)
        plan.user_id = thread.get("userId")
        plan.thread_created = str(thread.get("createdAt") or thread.get("updatedAt") or "")
        if dest is None:
            plan.thread = thread
            local.count("threads", "copied")
        elif self.dest.same_thread(dest.thread, thread):
            local.count("threads", "unchanged")
        else:
            plan.thread = thread
            local.count("threads", "updated")
        dest = dest or ThreadData(thread={})
        if not self.source.records_deletions:
            src.deleted_steps |= {s["id"] for s in dest.steps} - {s["id"] for s in src.steps}
            src.deleted_elements |= {e.fields["id"] for e in dest.elements} - {
                e.fields["id"] for e in src.elements
            }
            src.deleted_feedback |= {f["id"] for f in dest.feedback} - {
                f["id"] for f in src.feedback
            }

        dest_steps = {s["id"]: s for s in dest.steps}
        plan.all_step_ids = {s["id"] for s in src.steps if s["id"] not in dest.deleted_steps}
        plan.all_step_ids |= set(dest_steps)
        for step in src.steps:
            sid = step["id"]
            if sid in dest.deleted_steps:
                local.skip("steps", sid, "deleted in the destination", problem=False)
            elif sid in dest_steps and self.dest.same_step(dest_steps[sid], step, plan):
                local.count("steps", "unchanged")
            else:
                plan.steps.append(step)
                self.dest.planned_step(step)
                local.count("steps", "updated" if sid in dest_steps else "copied")
        for sid in sorted(src.deleted_steps & set(dest_steps)):
            plan.delete_steps.append(sid)
            plan.all_step_ids.discard(sid)
            local.count("steps", "deleted")

        dest_fb = {f["id"]: f for f in dest.feedback}
        src_for = {f["forId"] for f in src.feedback}
        for fb in src.feedback:
            if fb.get("value") not in (0, 1):
                local.skip(
                    "feedback", fb["id"], f"value {fb.get('value')!r} is not 0 or 1", problem=True
                )
            elif fb["forId"] not in plan.all_step_ids:
                local.skip("feedback", fb["id"], "its step is not in the thread", problem=True)
            elif fb["id"] in dest_fb and self.dest.same_feedback(dest_fb[fb["id"]], fb):
                local.count("feedback", "unchanged")
            else:
                plan.feedback.append(fb)
                local.count("feedback", "updated" if fb["id"] in dest_fb else "copied")
        for fid, fb in sorted(dest_fb.items()):
            replaced = fb.get("forId") in src_for and fid not in {f["id"] for f in src.feedback}
            if fid in src.deleted_feedback or replaced:
                plan.delete_feedback.append(fid)
                local.count("feedback", "deleted")

        dest_el = {e.fields["id"]: e for e in dest.elements}
        for el in src.elements:
            eid = el.fields["id"]
            problem = self.dest.element_problem(el, plan)
            held = dest_el.get(eid)
            if eid in dest.deleted_elements:
                local.skip("elements", eid, "deleted in the destination", problem=False)
                continue
            if problem is not None:
                local.skip("elements", eid, problem, problem=True)
                continue
            if held is not None and self.dest.same_element(held, el, plan):
                local.count("elements", "unchanged")
            else:
                plan.elements.append(el)
                local.count("elements", "updated" if held is not None else "copied")
                if self.options.dry_run and el.size and not self.dest.bytes_behind(el, held):
                    local.bytes_copied += el.size
            behind = self.dest.bytes_behind(el, held)
            if behind is not None:
                local.stayed_behind(f"{el.origin or eid}: {behind}")
        for eid in sorted(src.deleted_elements & set(dest_el)):
            plan.delete_elements.append(eid)
            local.count("elements", "deleted")
        return plan


# -- command line --------------------------------------------------------------------

DESCRIPTION = "copy conversations between an archive and Chainlit's SQL databases"

EPILOG = """\
SOURCE and DEST are each an archive directory or a database URL:
  postgresql://...           Chainlit's official schema (ChainlitDataLayer), or the
                             SQLAlchemy layer's if the database has its tables
  postgresql+asyncpg://...   the schema of Chainlit's SQLAlchemyDataLayer
  sqlite:///chainlit.db      the same on SQLite (also sqlite+aiosqlite:///...)

examples:
  filelayer copy ./chats postgresql://user:pass@localhost/chainlit --dry-run
  filelayer copy ./chats postgresql://user:pass@localhost/chainlit --create-schema
  filelayer copy postgresql://user:pass@localhost/chainlit ./chats-backup
  filelayer copy ./chats postgresql://… --user alice@example.com --since 2026-01-01
  filelayer copy sqlite:///chainlit.db ./chats
  filelayer copy ./chats sqlite:///chainlit.db --create-schema

Re-running a copy writes only what is missing or changed. Element bytes go to (and come
from) the storage client that Chainlit's own environment variables configure, or the one
--storage-client names.
exit codes: 0 done, 1 something was left out (listed), 2 usage or connection error
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``copy`` on the ``filelayer`` command's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "copy",
        help=DESCRIPTION,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", metavar="SOURCE", help="archive directory or database URL")
    p.add_argument("dest", metavar="DEST", help="archive directory or database URL")
    p.add_argument("--dry-run", action="store_true", help="show what would be copied")
    p.add_argument("--user", metavar="IDENTIFIER", help="only this user and their threads")
    p.add_argument(
        "--since", metavar="DATE", help="only threads created or updated on or after DATE"
    )
    p.add_argument(
        "--create-schema",
        action="store_true",
        help="create Chainlit's tables in the destination database first (idempotent)",
    )
    p.add_argument(
        "--no-fetch",
        action="store_true",
        help="do not download element bytes from http(s) URLs",
    )
    p.add_argument(
        "--schema",
        choices=SCHEMAS,
        help="which Chainlit schema a postgresql:// URL holds (default: found from its "
        "tables; official for an empty database)",
    )
    p.add_argument(
        "--storage-client",
        metavar="MODULE:NAME",
        help="your app's storage client for element files (a BaseStorageClient, or a "
        "function returning one), instead of Chainlit's storage environment variables",
    )
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """The ``copy`` command: 0 done, 1 something left out, 2 usage/connection error."""
    out = out or sys.stdout
    try:
        summary = asyncio.run(_run(args))
    except CopyUsageError as exc:
        print(f"filelayer copy: {exc}", file=sys.stderr)
        return 2
    except FileLayerError as exc:
        print(f"filelayer copy: {exc}", file=sys.stderr)
        return 2
    out.write(summary.render())
    return 1 if summary.problems else 0


async def _run(args: argparse.Namespace) -> Summary:
    return await copy_archive(
        args.source,
        args.dest,
        dry_run=bool(args.dry_run),
        user=args.user,
        since=args.since,
        create_schema=bool(args.create_schema),
        fetch_urls=not getattr(args, "no_fetch", False),
        schema=getattr(args, "schema", None),
        storage=storage_from_spec(spec)
        if (spec := getattr(args, "storage_client", None))
        else None,
        progress=Progress("copying"),
    )


def storage_from_spec(spec: str) -> Any:
    """``--storage-client MODULE:NAME``: the app's storage client (a Chainlit
    ``BaseStorageClient``), or a function of no arguments that returns one."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise CopyUsageError(
            f"--storage-client takes MODULE:NAME (as in myapp.storage:client), not {spec!r}"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # the app's own modules, as `chainlit run` sees them
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise CopyUsageError(f"--storage-client {spec}: cannot load it ({exc})") from exc
    if callable(obj) and not hasattr(obj, "upload_file"):
        obj = obj()
    if not all(hasattr(obj, m) for m in ("upload_file", "get_read_url")):
        raise CopyUsageError(
            f"--storage-client {spec} is not a storage client (it needs upload_file and "
            "get_read_url, as Chainlit's BaseStorageClient has)"
        )
    return obj


async def copy_archive(
    source: str,
    dest: str,
    *,
    dry_run: bool = False,
    user: str | None = None,
    since: str | None = None,
    create_schema: bool = False,
    fetch_urls: bool = True,
    schema: str | None = None,
    storage: Any = None,
    progress: Progress | None = None,
) -> Summary:
    """Copy from ``source`` to ``dest`` (each an archive root or a database URL) and say
    what happened; the function behind the command, for programs and tests.

    ``schema`` says which of Chainlit's schemas a plain postgresql:// URL holds;
    ``storage`` is a storage client for element bytes on the database side(s)."""
    if source == dest:
        raise CopyUsageError("SOURCE and DEST are the same")
    options = CopyOptions(dry_run=dry_run, user=user, since=since, create_schema=create_schema)
    since_bound(since)  # a bad date is a usage error before connecting
    endpoint_kind(source, schema), endpoint_kind(dest, schema)  # usage errors first
    kw: dict[str, Any] = {"fetch_urls": fetch_urls, "schema": schema, "storage": storage}
    src = await open_endpoint(source, **kw)
    dst = await open_endpoint(dest, **kw)
    if create_schema and not hasattr(dst, "apply_schema"):
        raise CopyUsageError("--create-schema applies to a postgresql:// destination only")
    try:
        await src.open(create=False, dry_run=dry_run, create_schema=False)
        await dst.open(create=True, dry_run=dry_run, create_schema=create_schema)
        return await Copier(src, dst, options).run(progress)
    finally:
        if progress is not None:
            progress.close()
        await src.close()
        await dst.close()
