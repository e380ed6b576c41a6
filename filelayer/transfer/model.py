"""The neutral shape a copy moves, and the :class:`Endpoint` each side implements.

Every endpoint (the archive, Chainlit's official PostgreSQL schema, its SQLAlchemy
schema, the next one) depends on this module and nothing else of the copy, so a new
endpoint is one new module plus a line in :mod:`filelayer.transfer.endpoints`."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import ipaddress
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .._time import format_time, ms_key, parse_time, round_ms
from ..errors import FileLayerError

KINDS = ("users", "threads", "steps", "feedback", "elements")
OUTCOMES = ("copied", "updated", "unchanged", "skipped", "deleted")
TIME_KEYS = ("createdAt", "updatedAt", "start", "end")
_ARCHIVE_ONLY_ELEMENT_KEYS = ("file", "bytes", "sha256", "threadId")
_FETCH_TIMEOUT = 60.0
MAX_FETCH_BYTES = 500 * 1024 * 1024
"""The most bytes one element file is read or fetched with (Chainlit's own default upload
limit): a row cannot make the copy fill memory or the archive."""


class CopyUsageError(FileLayerError):
    """Wrong arguments, a missing package or an unreachable side: exit code 2."""


def normalise_times(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with its times at millisecond precision: what both sides can agree on."""
    out = dict(d)
    for key in TIME_KEYS:
        if isinstance(out.get(key), str) and parse_time(out[key]) is not None:
            out[key] = ms_key(out[key])
    return out


def text_problem(value: object) -> str | None:
    """Why ``value`` cannot be copied as text: it holds bytes that are no UTF-8 (read
    from SQLite as lone surrogates). ``None`` when it can (or is no string)."""
    if not isinstance(value, str):
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return f"{value!r} holds bytes that are not UTF-8 text"
    return None


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
    chosen_key: bool = False
    """The ``objectKey`` is one a copy chose when it uploaded the bytes of an element
    that had none: a destination that keeps the bytes themselves leaves it out."""


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
    unreadable: list[str] = field(default_factory=list)
    """What this side holds of the thread and could not read (a damaged journal line):
    left out of the copy, so the summary must say so."""
    lossy: list[tuple[str, str, str]] = field(default_factory=list)
    """(kind, id, why) of each part of the thread copied without a value this side holds
    and could not read (metadata that is no JSON object): the summary must say so."""

    def activity(self) -> str:
        """The last change this side knows of (thread update or step), in ms."""
        times = [ms_key(self.thread.get("updatedAt"))]
        times += [ms_key(s.get("createdAt") or s.get("start")) for s in self.steps]
        return max(times)


def fingerprint(data: ThreadData) -> str:
    """A digest of what a side holds of a thread, as read (its ids, fields and element
    bytes), in an order of its own: equal digests of two reads of one side mean nothing
    of the thread changed in between, whatever its times say."""

    def by_id(item: dict[str, Any]) -> str:
        return str(item.get("id"))

    shape = {
        "thread": data.thread,
        "steps": sorted(data.steps, key=by_id),
        "feedback": sorted(data.feedback, key=by_id),
        "elements": sorted(({**e.fields, " sha256": e.sha256} for e in data.elements), key=by_id),
    }
    text = json.dumps(shape, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class CopyState:
    """What the last copy of a thread into a side left there: the digests
    (:func:`fingerprint`) of the source as it was copied and of the destination as it
    held the thread after it."""

    source: str
    dest: str


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

    def partly(self, kind: str, id: str, reason: str) -> None:
        """Something copied without a part of it that could not be read (listed as a
        problem, and not counted as skipped: the rest of it was copied)."""
        self.skipped.append(Skip(kind, id, reason, True))

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
            lines.append(f"{label}: {s.kind.removesuffix('s')} {s.id}: {s.reason}")
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
    erases_users = False
    """Whether a copy into this side deletes the records of users erased in the source
    (an archive leaves that to its own ``filelayer erase-user``)."""
    keeps_state = False
    """Whether this side keeps a record of what the last copy of each thread left in it
    (:meth:`copy_state`): a database does, in a table of the copy's own."""
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

    def lossy_users(self) -> dict[str, str]:
        """Why each user read so far (by id) was read without a value this side holds
        (metadata that is no JSON object): the summary must say so."""
        return {}

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

    async def holds_copy(self, thread_id: str) -> None:
        """The thread, already as the source has it, is a copy's (writing a plan says so
        too): a side whose app deletes without a trace records it, so that the thread
        missing later reads as deleted, not as never copied."""

    async def erase_thread(self, thread_id: str, deleted_at: str) -> list[str]:
        """Delete a thread whose author was erased (``filelayer erase-user``): nothing of
        it may stay, where :meth:`delete_thread` may keep a reversible mark. Returns
        what could not be deleted (files of a storage), for the report."""
        await self.delete_thread(thread_id, deleted_at)
        return []

    async def erase_user(self, user_id: str) -> None:
        """Delete the record of a user erased in the source (see :attr:`erases_users`)."""

    async def unwrite_user(self, user: dict[str, Any]) -> None:
        """Take back a user record just written, whose user was erased here meanwhile
        (see :meth:`is_erased_user`). Only an archive erases."""

    async def copy_state(self, thread_id: str) -> CopyState | None:
        """What the last copy of the thread into this side left (``None``: no copy is
        known, or this side keeps no such record): what a repeated copy decides by,
        where times cannot tell whether the thread changed here since."""
        return None

    async def record_state(self, thread_id: str, state: CopyState) -> None:
        """Keep ``state`` for :meth:`copy_state` (nothing, on a side that keeps none)."""

    async def apply(self, plan: ThreadPlan, summary: Summary) -> None:
        raise NotImplementedError

    def same_user(self, dest: dict[str, Any], src: dict[str, Any]) -> bool:
        keys = ("id", "identifier", "metadata")
        return all(dest.get(k) == src.get(k) for k in keys) and ms_key(
            dest.get("createdAt")
        ) == ms_key(src.get("createdAt"))

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

    def item_problem(self, kind: str, item: dict[str, Any]) -> str | None:
        """Why this destination cannot store a step, feedback or element (``kind``, with
        the item's fields) at all, ``None`` if it can. Every item of a thread is asked
        before anything of it is written: one refused item is listed, and the rest of the
        thread copied, rather than a thread left half written on every run."""
        return None

    def element_problem(self, el: ElementData, plan: ThreadPlan) -> str | None:
        """Why this destination cannot hold the element at all (``None``: it can)."""
        return None

    async def feedback_elsewhere(self, thread_id: str, ids: list[str]) -> set[str]:
        """Which of these feedback ids another thread holds here: written into this
        thread, each would be taken from that one (asked before anything is written)."""
        return set()

    async def ids_elsewhere(self, kind: str, thread_id: str, ids: list[str]) -> set[str]:
        """Which of these step, element or feedback (``kind``) ids another thread holds
        here: a side that holds each id once would take it from that thread (asked
        before anything is written). An archive keeps steps and elements thread by
        thread, so only its feedback ids are one for all."""
        if kind == "feedback":
            return await self.feedback_elsewhere(thread_id, ids)
        return set()

    def holds_id(self, value: str) -> bool:
        """Whether a step, element or feedback can have this id here."""
        return True

    def unstored_thread_fields(self) -> tuple[str, ...]:
        """Thread fields this side cannot store: read from it, their value is unknown
        (not empty), and a destination keeps its own."""
        return ()

    def planned_step(self, step: dict[str, Any]) -> None:
        """A step is about to be written here (dry run or not): note what matters."""

    def bytes_behind(self, src: ElementData, held: ElementData | None) -> str | None:
        """Why the element's bytes will not be in the destination (``None``: they will,
        or a fetch will be tried and its failure reported when it happens)."""
        return None


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def refused_address(address: str) -> str | None:
    """Why a row's URL may not be fetched from ``address`` (``None``: it may).

    A URL in a database row is data anyone who could write a row chose: fetched from the
    copy's machine, ``http://169.254.169.254/`` or ``http://localhost:...`` would bring a
    cloud's credentials or an internal service's answer into the archive. Only global
    addresses are fetched."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an address"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.teredo is not None:
            return f"{ip} is a Teredo address (a tunnel to an IPv4 address)"
        # An IPv4 address inside an IPv6 one reaches that IPv4 address: it is judged.
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if not ip.is_global or ip.is_multicast:
        return f"{ip} is a private, loopback, link-local or reserved address"
    return None


def _check_host(host: str | None, port: int | None) -> None:
    if not host:
        raise ValueError("no host")
    for info in socket.getaddrinfo(host, port or 80, proto=socket.IPPROTO_TCP):
        why = refused_address(str(info[4][0]))
        if why is not None:
            raise ValueError(why)


def _connect_public(conn: http.client.HTTPConnection, connect: Callable[[], None]) -> None:
    """Connect ``conn`` only to a global address: checked before, and again on the
    socket itself, so a name that resolves differently the second time (or a redirect)
    cannot reach inside."""
    _check_host(conn.host, conn.port)
    connect()
    why = refused_address(str(conn.sock.getpeername()[0]))
    if why is not None:
        conn.sock.close()
        raise OSError(why)


class _PublicHTTPConnection(http.client.HTTPConnection):
    def connect(self) -> None:
        _connect_public(self, super().connect)


class _PublicHTTPSConnection(http.client.HTTPSConnection):
    def connect(self) -> None:
        _connect_public(self, super().connect)


class _PublicHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_PublicHTTPConnection, req)


class _PublicHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_PublicHTTPSConnection, req)


class _HttpRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to another http(s) URL (each hop's address is checked
    when it connects)."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise urllib.error.HTTPError(
                newurl, code, "a redirect out of http(s) is not followed", headers, fp
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


async def fetch_url(url: str, *, public_only: bool = True) -> bytes | None:
    """The bytes behind an http(s) URL, ``None`` if it cannot be fetched, is refused
    (``public_only``: a row's URL reaches only global addresses, see
    :func:`refused_address`; no proxy, which would hide where it leads) or is larger than
    ``MAX_FETCH_BYTES``."""
    if not url.lower().startswith(("http://", "https://")):
        return None

    def get() -> bytes | None:
        request = urllib.request.Request(url, headers={"User-Agent": "filelayer-copy"})
        if public_only:
            # Built by hand: urllib's default opener also speaks ftp, file and data, and
            # follows a redirect to ftp://, whose connection no address check covers.
            opener = urllib.request.OpenerDirector()
            for handler in (
                urllib.request.ProxyHandler({}),
                _PublicHTTPHandler(),
                _PublicHTTPSHandler(),
                _HttpRedirectsOnly(),
                urllib.request.HTTPDefaultErrorHandler(),
                urllib.request.HTTPErrorProcessor(),
            ):
                opener.add_handler(handler)
        else:
            opener = urllib.request.build_opener()
        try:
            with opener.open(request, timeout=_FETCH_TIMEOUT) as response:
                data: bytes = response.read(MAX_FETCH_BYTES + 1)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError):
            return None
        return data if len(data) <= MAX_FETCH_BYTES else None

    return await asyncio.to_thread(get)
