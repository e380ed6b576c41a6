"""The thread index: what ``list_threads`` needs, without opening any thread.

``index/threads.jsonl`` is a derived, append-only log of small records (a thread's
fields, a message's searchable text, a feedback value, a favorite flag, a deletion).
Each process keeps the folded log in memory and, before answering, reads only the bytes
appended since it last looked (or everything again if another process compacted the file
under it). Appends happen under ``locks/index.lock``; when dead records outweigh the
live ones the log is rewritten in one atomic step. Deleting the file loses nothing:
``rebuild`` makes it again from the thread directories.

What stays in memory is what ordering and filtering need, column by column, about 300
bytes a thread: the id, the owner, the creation / change / last-message times, where
the thread's records lie in the file, and its feedback ids. A 100,000-thread index
therefore costs tens of megabytes, not the gigabyte its text would. Names, tags and
message text stay in the file: a page's names are read back with one ``pread`` per
thread, and a search reads the records of the user's threads newest first (one ``pread``
per contiguous run of records, a byte-level pre-check before any JSON is decoded) until
the page is full. The full detail of the threads being written (their texts and
feedback, which the writer compares against) is kept for a few hundred threads.

A thread's *activity*, which orders the sidebar, is the later of its creation and its
last message (the message's own ``createdAt``, not when it was written): renaming,
sharing, feedback or the session metadata Chainlit saves on every disconnect do not
move a thread. The order of each user's threads (newest activity first) is kept sorted
and updated in place when a batch of records touches a few threads, so a call after a
write costs a binary search, not a sort of all the user's threads.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import json
import logging
import os
import re
import weakref
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _codec, _fs, _locks
from .layout import temp_path

log = logging.getLogger("filelayer")

DEFAULT_SEARCH_CHARS = 2000
"""How much of each message the index keeps for search (characters)."""

_COMPACT_MIN_RECORDS = 2000
"""Below this many records a rewrite would save too little to be worth doing."""

_CHUNK = 1 << 20
"""Bytes read at a time when loading: a 500 MB index never sits in memory whole."""

_DETAIL_CACHE = 256
"""Threads whose texts and feedback are kept decoded: those being written right now."""

_X_PREFIX = b'{"at":'
_X_FIELD = b',"x":'


# -- records ------------------------------------------------------------------------------


def thread_record(
    thread_id: str,
    *,
    user_id: str | None,
    user_identifier: str | None,
    name: str | None,
    created_at: str,
    updated_at: str,
    tags: list[str] | None,
) -> dict[str, Any]:
    return {
        "k": "t",
        "id": thread_id,
        "user": user_id,
        "ident": user_identifier,
        "name": name,
        "created": created_at,
        "updated": updated_at,
        "tags": tags,
    }


def text_record(thread_id: str, step_id: str, at: str, text: str | None) -> dict[str, Any]:
    return {"k": "x", "id": thread_id, "s": step_id, "at": at, "x": text}


def feedback_record(
    thread_id: str, feedback_id: str, step_id: str | None, value: int | None
) -> dict[str, Any]:
    return {"k": "f", "id": thread_id, "f": feedback_id, "s": step_id, "v": value}


def favorite_record(thread_id: str, step_id: str, on: bool) -> dict[str, Any]:
    return {"k": "s", "id": thread_id, "s": step_id, "on": on}


def delete_record(thread_id: str) -> dict[str, Any]:
    return {"k": "d", "id": thread_id}


# -- a thread's summary -------------------------------------------------------------------

_UNSET: Any = object()


class ThreadSummary:
    """What the index knows about one thread.

    Built by hand (``reindex`` computes one from a thread's files) it simply holds its
    fields. Handed out by :class:`ThreadIndex` it is a view: the name, tags, texts and
    feedback, which the index keeps on disk, are read when first asked for.
    """

    __slots__ = (
        "_activity",
        "_favorites",
        "_feedback",
        "_index",
        "_name",
        "_tags",
        "_texts",
        "created_at",
        "id",
        "updated_at",
        "user_id",
        "user_identifier",
    )

    def __init__(
        self,
        id: str,
        user_id: str | None = None,
        user_identifier: str | None = None,
        name: str | None = None,
        created_at: str = "",
        updated_at: str = "",
        tags: list[str] | None = None,
        texts: dict[str, tuple[str, str]] | None = None,
        feedback: dict[str, tuple[str, int]] | None = None,
        favorites: set[str] | None = None,
    ) -> None:
        self.id = id
        self.user_id = user_id
        self.user_identifier = user_identifier
        self.created_at = created_at
        self.updated_at = updated_at
        self._name = name
        self._tags = tags
        self._texts = texts if texts is not None else {}
        self._feedback = feedback if feedback is not None else {}
        self._favorites = favorites if favorites is not None else set()
        self._activity: str | None = None
        self._index: ThreadIndex | None = None

    def __repr__(self) -> str:
        return f"ThreadSummary(id={self.id!r}, user_id={self.user_id!r}, name={self.name!r})"

    def _load_thread_fields(self) -> None:
        fields = self._index._thread_fields(self.id) if self._index is not None else None
        self._name, self._tags = fields if fields is not None else (None, None)

    @property
    def name(self) -> str | None:
        if self._name is _UNSET:
            self._load_thread_fields()
        return self._name

    @name.setter
    def name(self, value: str | None) -> None:
        self._name = value

    @property
    def tags(self) -> list[str] | None:
        if self._tags is _UNSET:
            self._load_thread_fields()
        return self._tags

    @tags.setter
    def tags(self, value: list[str] | None) -> None:
        self._tags = value

    @property
    def texts(self) -> dict[str, tuple[str, str]]:
        """step id -> (time, text) of message steps; text as written (clipped)."""
        if self._texts is _UNSET:
            detail = self._index._detail_of(self.id) if self._index is not None else None
            self._texts = detail.texts if detail is not None else {}
        return self._texts

    @property
    def feedback(self) -> dict[str, tuple[str, int]]:
        """feedback id -> (step id, value)."""
        if self._feedback is _UNSET:
            detail = self._index._detail_of(self.id) if self._index is not None else None
            self._feedback = detail.feedback if detail is not None else {}
        return self._feedback

    @property
    def favorites(self) -> set[str]:
        return self._favorites

    @property
    def last_text_at(self) -> str:
        return max((t for t, _ in self.texts.values()), default="")

    @property
    def activity(self) -> str:
        """Most recent activity: the later of the thread's creation and its last message
        (that message's time). What orders the sidebar; a change to the thread itself
        (a rename, a share, Chainlit's session metadata) is not activity."""
        if self._activity is not None:
            return self._activity
        return max(self.created_at, self.last_text_at)

    @property
    def changed(self) -> str:
        """The last change of any kind: the thread's own (``updatedAt``) or a message."""
        return max(self.updated_at or self.created_at, self.last_text_at)

    def record(self) -> dict[str, Any]:
        return thread_record(
            self.id,
            user_id=self.user_id,
            user_identifier=self.user_identifier,
            name=self.name,
            created_at=self.created_at,
            updated_at=self.updated_at,
            tags=self.tags,
        )

    def records(self) -> Iterator[dict[str, Any]]:
        yield self.record()
        texts = self.texts
        for sid in sorted(texts):
            t, text = texts[sid]
            yield text_record(self.id, sid, t, text)
        feedback = self.feedback
        for fid in sorted(feedback):
            sid, value = feedback[fid]
            yield feedback_record(self.id, fid, sid, value)
        for sid in sorted(self.favorites):
            yield favorite_record(self.id, sid, True)


def encode_cursor(summary: ThreadSummary) -> str:
    raw = f"{summary.activity}\x1f{summary.id}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str] | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    activity, sep, thread_id = raw.partition("\x1f")
    return (activity, thread_id) if sep else None


@dataclass
class Page:
    items: list[ThreadSummary]
    has_next: bool
    start_cursor: str | None
    end_cursor: str | None


# -- in-memory columns --------------------------------------------------------------------

_CREATED, _UPDATED, _LAST_TEXT, _ACTIVITY = range(4)
_TIME_FIELDS = 4
_CANONICAL_TIME = re.compile(rb"20\d\d-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
_TIME_PUNCTUATION = b"-T:."


def _time_code(value: bytes) -> int:
    """A Chainlit timestamp (``2026-11-25T04:29:55.691608Z``) as a positive integer
    that orders as the string does; 0 for anything else."""
    if len(value) == 27 and _CANONICAL_TIME.fullmatch(value):
        return int(value[2:26].translate(None, _TIME_PUNCTUATION)) + 1
    return 0


_TIME_TEXTS: dict[int, str] = {}


def _time_text(code: int) -> str:
    text = _TIME_TEXTS.get(code)
    if text is None:
        d = f"{code - 1:018d}"
        text = f"20{d[0:2]}-{d[2:4]}-{d[4:6]}T{d[6:8]}:{d[8:10]}:{d[10:12]}.{d[12:18]}Z"
        if len(_TIME_TEXTS) >= 4096:  # the times of the threads in use, not of all
            _TIME_TEXTS.clear()
        _TIME_TEXTS[code] = text
    return text


class _Times:
    """Four timestamps per thread (created, changed, last message, activity) in one
    array of 64-bit integers: 32 bytes a thread instead of four strings (300 bytes).

    Chainlit's timestamps (this century) are stored as their digits, which order as the
    strings do; 0 is "no time"; anything else (another client's format) is kept aside
    as a string, marked -1, and compared as a string.
    """

    __slots__ = ("odd", "values")

    def __init__(self) -> None:
        self.values = array("q")
        self.odd: dict[int, str] = {}

    def grow(self, slots: int) -> None:
        missing = slots * _TIME_FIELDS - len(self.values)
        if missing > 0:
            self.values.frombytes(bytes(8 * missing))

    def get(self, slot: int, field: int) -> str:
        code = self.values[slot * _TIME_FIELDS + field]
        if code > 0:
            return _time_text(code)
        return "" if code == 0 else self.odd[slot * _TIME_FIELDS + field]

    def set(self, slot: int, field: int, value: str) -> None:
        key = slot * _TIME_FIELDS + field
        code = _time_code(value.encode("utf-8", "replace")) if value else 0
        if code or not value:
            self.values[key] = code
            if self.odd:
                self.odd.pop(key, None)
        else:
            self.values[key] = -1
            self.odd[key] = value

    def raise_to(self, slot: int, field: int, value: bytes) -> None:
        """Set the field to ``value`` (UTF-8) if that is later than what it holds."""
        key = slot * _TIME_FIELDS + field
        current = self.values[key]
        code = _time_code(value)
        if code and current >= 0:
            if code > current:
                self.values[key] = code
        elif value:
            text = value.decode("utf-8", "replace")
            if text > self.get(slot, field):
                self.set(slot, field, text)

    def settle_activity(self, slot: int) -> None:
        """activity = the later of the creation and the last message (a change to the
        thread itself does not count: see :attr:`ThreadSummary.activity`)."""
        base = slot * _TIME_FIELDS
        values = self.values
        created, last = values[base + _CREATED], values[base + _LAST_TEXT]
        if created >= 0 and last >= 0:
            values[base + _ACTIVITY] = max(created, last)
        else:
            self.set(slot, _ACTIVITY, max(self.get(slot, _CREATED), self.get(slot, _LAST_TEXT)))

    def clear(self, slot: int) -> None:
        for field in range(_TIME_FIELDS):
            self.set(slot, field, "")


@dataclass(slots=True)
class _Detail:
    """A thread's fields that the index keeps on disk, decoded."""

    name: str | None
    tags: list[str] | None
    texts: dict[str, tuple[str, str]]
    feedback: dict[str, tuple[str, int]]
    updated: str = ""


_OldKey = tuple[str | None, str, str]  # (user id, activity, thread id) before a batch

# A text record as filelayer's encoder writes it (sorted keys): everything but the text
# is read without decoding the (large) text itself.
_X_LINE = re.compile(rb'\{"at":"([^"\\]*)","id":"([^"\\]*)","k":"x","s":"([^"\\]*)","x":(["n])')


# A thread record as filelayer's encoder writes it: what the columns need, without
# decoding the name (which the index leaves on disk).
_JSON_STRING = rb'"[^"\\]*(?:\\.[^"\\]*)*"'
_T_LINE = re.compile(
    rb'\{"created":"([^"\\]*)","id":"([^"\\]*)","ident":(null|' + _JSON_STRING + rb'),"k":"t",'
    rb'"name":(?:null|' + _JSON_STRING + rb'),"tags":(?:null|\[[^\]]*\]),'
    rb'"updated":"([^"\\]*)","user":(null|' + _JSON_STRING + rb")\}"
)


def _pread(fd: int, size: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, size, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # pragma: no cover - Windows
    return os.read(fd, size)  # pragma: no cover - Windows


def _escaped(text: str) -> str:
    """``text`` as it appears inside a JSON string written by filelayer's encoder."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


class _Needle:
    """A search term in the shapes the search compares against."""

    __slots__ = ("ascii", "escaped", "escaped_bytes", "text")

    def __init__(self, search: str) -> None:
        self.text = search.casefold()
        self.escaped = _escaped(self.text)
        self.ascii = self.escaped.isascii()
        self.escaped_bytes = self.escaped.encode("utf-8")


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class _IdTable:
    """A set of ids, each with a number (its entry), found by id in an open-addressing
    table: no dict, no string per id.

    Chainlit's ids are lowercase UUIDs; such an id is kept as its 16 bytes (any other id
    as a string aside), so 100,000 thread ids cost about 4 MB instead of 15 MB (a string,
    a dict entry and an int object each). Lookups hash the id's UTF-8 bytes, so the
    loader finds the bytes it reads without making a string first.
    """

    __slots__ = ("count", "filled", "free", "hashes", "kind", "other", "raw16", "table")

    _FREE, _UUID, _OTHER = 0, 1, 2

    def __init__(self) -> None:
        self.raw16 = bytearray()
        self.kind = bytearray()
        self.other: dict[int, str] = {}
        self.hashes = array("q")
        self.table = array("i", [-1]) * 16
        self.free: list[int] = []
        self.count = 0  # live entries
        self.filled = 0  # live entries and tombstones in the table

    def __len__(self) -> int:
        return len(self.kind)

    def id_of(self, entry: int) -> str | None:
        kind = self.kind[entry]
        if kind == self._UUID:
            h = self.raw16[16 * entry : 16 * entry + 16].hex()
            return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        return self.other.get(entry) if kind == self._OTHER else None

    def find(self, key: str) -> int:
        """The entry of ``key``, or -1."""
        return self.find_raw(key.encode("utf-8", "surrogatepass"), key)

    def find_raw(self, raw: bytes, key: str | None = None) -> int:
        h = hash(raw)
        table, hashes = self.table, self.hashes
        mask = len(table) - 1
        i = h & mask
        while True:
            entry = table[i]
            if entry == -1:
                return -1
            if entry >= 0 and hashes[entry] == h:
                found = self.id_of(entry)
                if found is not None and (
                    found == key
                    if key is not None
                    else found.encode("utf-8", "surrogatepass") == raw
                ):
                    return entry
            i = (i + 1) & mask

    def add(self, key: str) -> int:
        """Add ``key`` (not present yet) and return its entry."""
        if (self.filled + 1) * 2 > len(self.table):
            self._resize(max(16, 1 << (self.count * 3).bit_length()))
        if self.free:
            entry = self.free.pop()
        else:
            entry = len(self.kind)
            self.kind.append(self._FREE)
            self.raw16.extend(bytes(16))
            self.hashes.append(0)
        raw = key.encode("utf-8", "surrogatepass")
        if len(key) == 36 and _UUID.fullmatch(key):
            self.raw16[16 * entry : 16 * entry + 16] = bytes.fromhex(key.replace("-", ""))
            self.kind[entry] = self._UUID
        else:
            self.other[entry] = key
            self.kind[entry] = self._OTHER
        h = self.hashes[entry] = hash(raw)
        table = self.table
        mask = len(table) - 1
        i = h & mask
        while table[i] >= 0:
            i = (i + 1) & mask
        if table[i] == -1:
            self.filled += 1
        table[i] = entry
        self.count += 1
        return entry

    def remove(self, entry: int) -> None:
        table = self.table
        mask = len(table) - 1
        i = self.hashes[entry] & mask
        while table[i] != entry:
            if table[i] == -1:  # pragma: no cover - not in the table
                return
            i = (i + 1) & mask
        table[i] = -2  # a tombstone: later entries of the same probe run stay reachable
        self.kind[entry] = self._FREE
        self.other.pop(entry, None)
        self.free.append(entry)
        self.count -= 1

    def _resize(self, size: int) -> None:
        table = array("i", [-1]) * size
        mask = size - 1
        for entry in self.live():
            i = self.hashes[entry] & mask
            while table[i] != -1:
                i = (i + 1) & mask
            table[i] = entry
        self.table = table
        self.filled = self.count

    def live(self) -> Iterator[int]:
        """Every entry that holds an id."""
        kind = self.kind
        return (entry for entry in range(len(kind)) if kind[entry])


class ThreadIndex:
    """The in-memory view of the index log, kept up to date with the file."""

    def __init__(self, path: Path, lock_path: Path, *, lock_timeout: float) -> None:
        self.path = path
        self.lock_path = lock_path
        self.lock_timeout = lock_timeout
        self._fd: int | None = None
        self._fd_closer: weakref.finalize[Any, Any] | None = None
        self._init_state()

    def _init_state(self) -> None:
        self._file_id: tuple[int, int] | None = None
        self._offset = 0
        self._records = 0
        self._dead = 0
        # Columns, one entry per slot (a slot is a thread's number in this process).
        self._slots = _IdTable()  # thread id -> slot
        self._free: list[int] = []
        self._owner = array("i")  # index into _owners: (user id, user identifier)
        self._owners: list[tuple[str | None, str | None]] = [(None, None)]
        self._owner_ix: dict[tuple[str | None, str | None], int] = {(None, None): 0}
        self._owner_raw: dict[tuple[bytes, bytes], int] = {}  # the same, by raw JSON
        self._times = _Times()
        self._fb_count = array("H")  # feedback given with value 0, with value 1
        # Where a thread's records lie: its first run of adjacent records, then further
        # runs chained through the _run_* arrays (records of concurrent chats interleave).
        self._span = array("q")  # start, end of the first run
        self._chain = array("i")  # first, last further run (-1: none)
        self._run_start = array("q")
        self._run_end = array("q")
        self._run_next = array("i")
        # Sparse.
        self._feedback_ids = _IdTable()  # feedback id -> entry in _fb_owner
        self._fb_owner = array("q")  # by feedback entry: slot << 1 | value
        self._favorites: dict[int, set[str]] = {}
        self._details: OrderedDict[int, _Detail] = OrderedDict()
        # Order: each user's slots sorted by (activity, id), oldest first.
        self._order: dict[str | None, array[int]] = {}
        self._all_order: array[int] | None = None
        self._touched: dict[int, _OldKey | None] = {}
        self._recent: dict[bytes, int] = {}  # raw thread id -> slot, of recent records

    # -- the file ------------------------------------------------------------------

    def exists(self) -> bool:
        return self.path.exists()

    def close(self) -> None:
        """Release the index file's descriptor and the memory (the next refresh
        reads the file again)."""
        if self._fd_closer is not None:
            self._fd_closer()
        self._fd = None
        self._fd_closer = None
        self._init_state()

    def _use_fd(self, fd: int) -> None:
        if self._fd_closer is not None:
            self._fd_closer()
        self._fd = fd
        self._fd_closer = weakref.finalize(self, os.close, fd)

    def _reset(self) -> None:
        self.close()

    @property
    def threads(self) -> Mapping[str, ThreadSummary]:
        """Every indexed thread by id (summaries are built on access)."""
        return _ThreadsView(self)

    # -- reading -------------------------------------------------------------------

    def refresh(self) -> None:
        """Apply whatever was appended since the last call (cheap when nothing was)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._file_id is not None:
                self._reset()
            return
        file_id = (st.st_dev, st.st_ino)
        if file_id == self._file_id and st.st_size == self._offset:
            return
        if file_id != self._file_id or st.st_size < self._offset or self._fd is None:
            # Another process compacted (or someone deleted) the file: start again.
            self._reset()
            try:
                fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            except FileNotFoundError:
                return
            self._use_fd(fd)
            fst = os.fstat(fd)
            self._file_id = (fst.st_dev, fst.st_ino)
            size = fst.st_size
        else:
            assert self._fd is not None
            size = os.fstat(self._fd).st_size
        self._read(size)

    def _read(self, size: int) -> None:
        fd = self._fd
        assert fd is not None
        pos = self._offset
        chunk_size = _CHUNK
        try:
            while pos < size:
                chunk = _pread(fd, min(chunk_size, size - pos), pos)
                if not chunk:
                    break
                end = chunk.rfind(b"\n")
                if end < 0:
                    if pos + len(chunk) >= size:
                        break  # a torn last line: its writer is mid-append or died
                    chunk_size *= 2  # one line longer than a chunk
                    continue
                self._apply_lines(chunk[:end], pos)
                pos += end + 1
                chunk_size = _CHUNK
        finally:
            self._offset = pos
            self._settle()

    def _apply_lines(self, data: bytes, off: int) -> None:
        """Fold complete lines starting at file offset ``off`` into the columns.

        Most records are message texts, and loading a 100,000-thread index means
        folding some 600,000 of them, so their common case (a thread whose texts are
        not decoded in memory, a text being set) is handled inline, from the bytes.
        """
        match, match_thread = _X_LINE.match, _T_LINE.fullmatch
        find_raw = self._slots.find_raw
        recent = self._recent  # thread ids just seen: chats come in bursts
        details, touched = self._details, self._touched
        span, chain = self._span, self._chain
        times = self._times.values
        for line in data.split(b"\n"):
            n = len(line) + 1
            m = match(line) if line else None
            if m is not None and line[-1] == 0x7D:  # "}": not a torn fragment
                at, raw_tid, _, value = m.groups()
                slot = recent.get(raw_tid, -1)
                if slot < 0:
                    slot = find_raw(raw_tid)
                    if len(recent) > 512:
                        recent.clear()
                    if slot >= 0:
                        recent[raw_tid] = slot
                if (
                    slot >= 0
                    and value == b'"'
                    and slot not in details
                    and slot in touched
                    and chain[2 * slot + 1] < 0
                    and span[2 * slot + 1] == off
                ):
                    # The common case, inline: the next record of a thread that this
                    # batch already touched, right after its previous one.
                    self._records += 1
                    span[2 * slot + 1] = off + n
                    code = _time_code(at)
                    i = slot * _TIME_FIELDS + _LAST_TEXT
                    if code and times[i] >= 0:
                        if code > times[i]:
                            times[i] = code
                    else:
                        self._times.raise_to(slot, _LAST_TEXT, at)
                    off += n
                    continue
                tid = raw_tid.decode("utf-8", "replace")
                if tid and "\ufffd" not in tid and (slot < 0 or slot not in details):
                    self._records += 1
                    if slot < 0:
                        slot = self._new_slot(tid)
                    self._add_span(slot, off, n)
                    sid = m.group(3).decode("utf-8", "replace")
                    self._apply_text(slot, sid, at, value == b'"')
                    off += n
                    continue
            t = match_thread(line) if line.startswith(b'{"created":') else None
            if t is not None and self._apply_thread_line(t, off, n):
                off += n
                continue
            if line:
                try:
                    record = _codec.decode(line)
                except _codec.DecodeError:
                    record = None  # a torn fragment from a crashed writer: derived, skip
                if isinstance(record, dict):
                    self._apply(record, off, n)
            off += n

    # -- folding records into the columns ---------------------------------------------

    def _touch(self, slot: int) -> None:
        """Remember where ``slot`` sat in the order before this batch changed it."""
        if slot not in self._touched:
            tid = self._slots.id_of(slot)
            self._touched[slot] = (
                None
                if tid is None
                else (self._owners[self._owner[slot]][0], self._times.get(slot, _ACTIVITY), tid)
            )

    def _new_slot(self, tid: str) -> int:
        slot = self._slots.add(tid)
        if slot == len(self._owner):
            self._owner.append(0)
            self._fb_count.extend((0, 0))
            self._span.extend((-1, -1))
            self._chain.extend((-1, -1))
            self._times.grow(slot + 1)
        self._touched.setdefault(slot, None)
        return slot

    def _apply_thread_line(self, m: re.Match[bytes], off: int, n: int) -> bool:
        """A "t" record as filelayer writes it, folded without decoding its name."""
        created, raw_tid, ident, updated, user = m.groups()
        slot = self._slots.find_raw(raw_tid)
        if slot >= 0 and slot in self._details:
            return False  # its decoded name must be updated: take the general path
        owner = self._owner_raw.get((user, ident))
        if owner is None:
            try:
                owner = self._owner_index(_codec.decode(user), _codec.decode(ident))
            except _codec.DecodeError:
                return False
            self._owner_raw[(user, ident)] = owner
        self._records += 1
        if slot < 0:
            try:
                slot = self._new_slot(raw_tid.decode("utf-8"))
            except UnicodeDecodeError:
                self._records -= 1
                return False
        else:
            self._dead += 1  # the thread's previous "t" record
            self._touch(slot)
        self._add_span(slot, off, n)
        self._owner[slot] = owner
        for field, value in ((_CREATED, created), (_UPDATED, updated)):
            if value:
                code = _time_code(value)
                if code:
                    self._times.values[slot * _TIME_FIELDS + field] = code
                    if self._times.odd:
                        self._times.odd.pop(slot * _TIME_FIELDS + field, None)
                else:
                    self._times.set(slot, field, value.decode("utf-8", "replace"))
        return True

    def _owner_index(self, user: object, ident: object) -> int:
        key = (user if isinstance(user, str) else None, ident if isinstance(ident, str) else None)
        ix = self._owner_ix.get(key)
        if ix is None:
            ix = self._owner_ix[key] = len(self._owners)
            self._owners.append(key)
        return ix

    def _add_span(self, slot: int, off: int, n: int) -> None:
        span = self._span
        if span[2 * slot] < 0:
            span[2 * slot] = off
            span[2 * slot + 1] = off + n
            return
        last = self._chain[2 * slot + 1]
        if last < 0:
            if span[2 * slot + 1] == off:
                span[2 * slot + 1] = off + n
                return
        elif self._run_end[last] == off:
            self._run_end[last] = off + n
            return
        run = len(self._run_start)
        self._run_start.append(off)
        self._run_end.append(off + n)
        self._run_next.append(-1)
        if last < 0:
            self._chain[2 * slot] = run
        else:
            self._run_next[last] = run
        self._chain[2 * slot + 1] = run

    def _apply(self, r: dict[str, Any], off: int, n: int) -> None:
        kind = r.get("k")
        tid = r.get("id")
        if not isinstance(tid, str) or not tid or kind not in ("t", "x", "f", "s", "d"):
            return
        self._records += 1
        slot = self._slots.find(tid)
        if kind == "d":
            self._dead += 1
            if slot >= 0:
                self._delete_slot(slot)
            return
        if slot < 0:
            slot = self._new_slot(tid)
        elif kind == "t":
            self._dead += 1  # the thread's previous "t" record
        self._add_span(slot, off, n)
        if kind == "t":
            self._apply_thread(slot, r, off, n)
        elif kind == "x":
            sid, text = r.get("s"), r.get("x")
            if isinstance(sid, str):
                at = r.get("at")
                at_bytes = at.encode("utf-8", "replace") if isinstance(at, str) else b""
                self._apply_text(slot, sid, at_bytes, text is not None, text)
        elif kind == "f":
            self._apply_feedback(slot, r)
        else:
            self._apply_favorite(slot, r)

    def _apply_thread(self, slot: int, r: dict[str, Any], off: int, n: int) -> None:
        self._touch(slot)
        self._owner[slot] = self._owner_index(r.get("user"), r.get("ident"))
        created, updated = r.get("created"), r.get("updated")
        if isinstance(created, str) and created:
            self._times.set(slot, _CREATED, created)
        if isinstance(updated, str) and updated:
            self._times.set(slot, _UPDATED, updated)
        detail = self._details.get(slot)
        if detail is not None:
            name, tags = r.get("name"), r.get("tags")
            detail.name = name if isinstance(name, str) else None
            detail.tags = tags if isinstance(tags, list) else None

    def _apply_text(
        self, slot: int, sid: str, at: bytes, present: bool, text: object = None
    ) -> None:
        self._touch(slot)
        detail = self._details.get(slot)
        if present:
            if detail is not None and isinstance(text, str):
                if sid in detail.texts:
                    self._dead += 1
                detail.texts[sid] = (at.decode("utf-8", "replace"), text)
            self._times.raise_to(slot, _LAST_TEXT, at)
            return
        self._dead += 1
        if detail is None:
            detail = self._detail(slot)  # its fold already includes this removal
        elif detail.texts.pop(sid, None) is not None:
            self._dead += 1
        self._times.set(slot, _LAST_TEXT, max((t for t, _ in detail.texts.values()), default=""))

    def _apply_feedback(self, slot: int, r: dict[str, Any]) -> None:
        fid, rated, value = r.get("f"), r.get("s"), r.get("v")
        if not isinstance(fid, str) or not fid:
            return
        detail = self._details.get(slot)
        entry = self._feedback_ids.find(fid)
        if entry >= 0:
            self._dead += 1  # the feedback's previous record
            previous = self._fb_owner[entry]
            old_slot = previous >> 1
            count = 2 * old_slot + (previous & 1)
            self._fb_count[count] = max(self._fb_count[count] - 1, 0)
            old_detail = self._details.get(old_slot)
            if old_detail is not None:
                old_detail.feedback.pop(fid, None)
        if value in (0, 1) and isinstance(rated, str):
            value = int(value)
            if entry < 0:
                entry = self._feedback_ids.add(fid)
                if entry == len(self._fb_owner):
                    self._fb_owner.append(0)
            self._fb_owner[entry] = slot << 1 | value
            count = 2 * slot + value
            self._fb_count[count] = min(self._fb_count[count] + 1, 0xFFFF)
            if detail is not None:
                detail.feedback[fid] = (rated, value)
        else:
            self._dead += 1
            if entry >= 0:
                self._feedback_ids.remove(entry)

    def _apply_favorite(self, slot: int, r: dict[str, Any]) -> None:
        fav = r.get("s")
        if not isinstance(fav, str):
            return
        favs = self._favorites.get(slot)
        if r.get("on"):
            if favs is None:
                favs = self._favorites[slot] = set()
            if fav in favs:
                self._dead += 1
            favs.add(fav)
        else:
            self._dead += 1
            if favs is not None and fav in favs:
                self._dead += 1
                favs.discard(fav)
                if not favs:
                    del self._favorites[slot]

    def _delete_slot(self, slot: int) -> None:
        self._recent.clear()  # the slot may come back as another thread
        self._touch(slot)
        self._dead += self._raw(slot).count(b"\n")
        self._slots.remove(slot)
        if self._fb_count[2 * slot] or self._fb_count[2 * slot + 1]:
            owner = self._fb_owner
            for entry in [e for e in self._feedback_ids.live() if owner[e] >> 1 == slot]:
                self._feedback_ids.remove(entry)
            self._fb_count[2 * slot] = self._fb_count[2 * slot + 1] = 0
        self._favorites.pop(slot, None)
        self._details.pop(slot, None)
        self._span[2 * slot] = self._span[2 * slot + 1] = -1
        self._chain[2 * slot] = self._chain[2 * slot + 1] = -1  # its runs are left as garbage
        self._owner[slot] = 0
        self._times.clear(slot)
        self._free.append(slot)

    # -- keeping the order ---------------------------------------------------------

    def _key(self, slot: int) -> tuple[str, str]:
        return (self._times.get(slot, _ACTIVITY), self._slots.id_of(slot) or "")

    def _settle(self) -> None:
        """Recompute the activity of the threads this batch touched and put them back
        in their user's sorted order (all of it re-sorted after a large batch)."""
        touched = self._touched
        if not touched:
            return
        self._touched = {}
        self._all_order = None
        times = self._times
        for slot in touched:
            if self._slots.kind[slot]:
                times.settle_activity(slot)
        if len(touched) > 256 and len(touched) * 4 > self._slots.count:
            self._rebuild_order()
            return
        touched = {slot: k for slot, k in touched.items() if not self._stays(slot, k, touched)}
        if not touched:
            return
        old_keys = {slot: (k[1], k[2]) for slot, k in touched.items() if k is not None}

        def before(slot: int) -> tuple[str, str]:
            key = old_keys.get(slot)
            return key if key is not None else self._key(slot)

        # Take every touched thread out (finding each by the key it was sorted by),
        # then put the live ones back by their new key.
        for slot, k in touched.items():
            if k is None:
                continue
            order = self._order.get(k[0])
            if order is None:
                continue
            i = bisect.bisect_left(order, (k[1], k[2]), key=before)
            if i < len(order) and order[i] == slot:
                del order[i]
            else:  # pragma: no cover - only if an order was corrupted
                with contextlib.suppress(ValueError):
                    order.remove(slot)
            if not order:
                del self._order[k[0]]
        for slot in touched:
            if not self._slots.kind[slot]:
                continue
            user = self._owners[self._owner[slot]][0]
            order = self._order.get(user)
            if order is None:
                order = self._order[user] = array("i")
            bisect.insort(order, slot, key=self._key)

    def _stays(self, slot: int, old: _OldKey | None, touched: dict[int, _OldKey | None]) -> bool:
        """Whether ``slot`` keeps its place: same user and key, or (the usual write to a
        chat) it was and still is its user's most recent thread."""
        if old is None or not self._slots.kind[slot]:
            return False
        user = self._owners[self._owner[slot]][0]
        if user != old[0]:
            return False
        key = self._key(slot)
        if key == (old[1], old[2]):
            return True
        if len(touched) != 1:
            return False
        order = self._order.get(user)
        return (
            order is not None
            and order[-1] == slot
            and (len(order) == 1 or self._key(order[-2]) < key)
        )

    def _rebuild_order(self) -> None:
        groups: dict[str | None, list[int]] = {}
        owners = self._owners
        owner = self._owner
        for slot in self._slots.live():
            groups.setdefault(owners[owner[slot]][0], []).append(slot)
        key = self._key
        if not self._times.odd:  # every time is Chainlit's: sort on the integers
            values, id_of = self._times.values, self._slots.id_of

            def key(slot: int) -> tuple[Any, str]:
                return (values[slot * _TIME_FIELDS + _ACTIVITY], id_of(slot) or "")

        self._order = {user: array("i", sorted(slots, key=key)) for user, slots in groups.items()}

    def _ordered(self, user_id: str | None) -> array[int]:
        if user_id is not None:
            return self._order.get(user_id) or array("i")
        if self._all_order is None:
            self._all_order = array("i", sorted(self._slots.live(), key=self._key))
        return self._all_order

    # -- reading what stays on disk ------------------------------------------------

    def _spans(self, slot: int) -> Iterator[tuple[int, int]]:
        start, end = self._span[2 * slot], self._span[2 * slot + 1]
        if start >= 0:
            yield start, end
        run = self._chain[2 * slot]
        while run >= 0:
            yield self._run_start[run], self._run_end[run]
            run = self._run_next[run]

    def _raw(self, slot: int) -> bytes:
        """Every record of the thread, as the bytes in the file (in log order)."""
        fd = self._fd
        if fd is None:
            return b""
        if self._chain[2 * slot] < 0:
            start, end = self._span[2 * slot], self._span[2 * slot + 1]
            return _pread(fd, end - start, start) if start >= 0 else b""
        return b"".join(_pread(fd, end - start, start) for start, end in self._spans(slot))

    def _thread_record(self, slot: int) -> dict[str, Any] | None:
        """The thread's latest "t" record, read back from the file."""
        data = self._raw(slot)
        cut = data.rfind(b'\n{"created":', 0, len(data) - 1) + 1
        if data.startswith(b'{"created":', cut):
            try:
                r = _codec.decode(data[cut : data.index(b"\n", cut)])
            except _codec.DecodeError:
                r = None
            if isinstance(r, dict) and r.get("k") == "t":
                return r
        found: dict[str, Any] | None = None  # not as filelayer writes it: decode it all
        for line in data.split(b"\n"):
            try:
                r = _codec.decode(line) if line else None
            except _codec.DecodeError:
                continue
            if isinstance(r, dict) and r.get("k") == "t":
                found = r
        return found

    def _thread_fields(self, thread_id: str) -> tuple[str | None, list[str] | None] | None:
        """The name and tags of a thread."""
        slot = self._slots.find(thread_id)
        if slot < 0:
            return None
        detail = self._details.get(slot)
        if detail is not None:
            return detail.name, detail.tags
        r = self._thread_record(slot) or {}
        name, tags = r.get("name"), r.get("tags")
        return (name if isinstance(name, str) else None, tags if isinstance(tags, list) else None)

    @staticmethod
    def _fold(data: bytes) -> _Detail:
        detail = _Detail(name=None, tags=None, texts={}, feedback={})
        for line in data.split(b"\n"):
            if not line:
                continue
            try:
                r = _codec.decode(line)
            except _codec.DecodeError:
                continue
            if not isinstance(r, dict):
                continue
            kind = r.get("k")
            if kind == "t":
                name, tags, updated = r.get("name"), r.get("tags"), r.get("updated")
                detail.name = name if isinstance(name, str) else None
                detail.tags = tags if isinstance(tags, list) else None
                if isinstance(updated, str) and updated:
                    detail.updated = updated
            elif kind == "x":
                sid, text = r.get("s"), r.get("x")
                if isinstance(sid, str):
                    if text is not None:
                        detail.texts[sid] = (str(r.get("at") or ""), str(text))
                    else:
                        detail.texts.pop(sid, None)
            elif kind == "f":
                fid, rated, value = r.get("f"), r.get("s"), r.get("v")
                if isinstance(fid, str):
                    if value in (0, 1) and isinstance(rated, str):
                        detail.feedback[fid] = (rated, int(value))
                    else:
                        detail.feedback.pop(fid, None)
        return detail

    def _detail(self, slot: int, *, keep: bool = True) -> _Detail:
        detail = self._details.get(slot)
        if detail is not None:
            self._details.move_to_end(slot)
            return detail
        detail = self._fold(self._raw(slot))
        if keep:
            self._details[slot] = detail
            while len(self._details) > _DETAIL_CACHE:
                self._details.popitem(last=False)
        return detail

    def _detail_of(self, thread_id: str) -> _Detail | None:
        slot = self._slots.find(thread_id)
        return None if slot < 0 else self._detail(slot)

    def _summary(self, slot: int, tid: str | None = None) -> ThreadSummary:
        tid = tid or self._slots.id_of(slot)
        assert tid is not None
        user, ident = self._owners[self._owner[slot]]
        times = self._times
        favorites = self._favorites.get(slot)
        s = ThreadSummary(
            tid,
            user_id=user,
            user_identifier=ident,
            created_at=times.get(slot, _CREATED),
            updated_at=times.get(slot, _UPDATED),
            favorites=set(favorites) if favorites else None,
        )
        s._activity = times.get(slot, _ACTIVITY)
        s._name = s._tags = s._texts = s._feedback = _UNSET
        s._index = self
        return s

    # -- writing -------------------------------------------------------------------

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        data = b"".join(_codec.encode_line(r) for r in records)
        if not data:
            return
        with _locks.locked(self.lock_path, self.lock_timeout):
            _fs.append(self.path, data)
            self.refresh()
            if self._records > _COMPACT_MIN_RECORDS and self._dead * 2 > self._records:
                self._compact_locked()

    @property
    def garbage(self) -> tuple[int, int]:
        """(dead records, all records) in the file, as far as this process can tell.

        A message text rewritten (an edited message) counts as dead only when this
        process had the thread's texts decoded; it is removed by the next compaction
        either way.
        """
        return self._dead, self._records

    def compact(self) -> None:
        """Rewrite the log with only its live records (what ``append`` does by itself
        once dead records outweigh live ones)."""
        with _locks.locked(self.lock_path, self.lock_timeout):
            self.refresh()
            self._compact_locked()

    def _compact_locked(self) -> None:
        """Write the live records, thread by thread, to a new file and rename it over.

        Streams one thread at a time, so its memory does not grow with the index, and
        notes the new positions as it writes: nothing is read back afterwards.
        """
        slots = sorted(self._slots.live(), key=lambda s: self._slots.id_of(s) or "")
        tmp = temp_path(self.path)
        span = array("q", self._span)
        pos = records = 0
        try:
            with open(tmp, "xb") as out:
                for slot in slots:
                    detail = self._detail(slot, keep=False)
                    summary = self._summary(slot)
                    summary._name, summary._tags = detail.name, detail.tags
                    summary._texts, summary._feedback = detail.texts, detail.feedback
                    lines = [_codec.encode_line(r) for r in summary.records()]
                    data = b"".join(lines)
                    out.write(data)
                    span[2 * slot], span[2 * slot + 1] = pos, pos + len(data)
                    pos += len(data)
                    records += len(lines)
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            log.warning("filelayer: could not compact %s (%s); it stays as it is", self.path, exc)
            return
        fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        self._use_fd(fd)
        fst = os.fstat(fd)
        self._file_id = (fst.st_dev, fst.st_ino)
        self._offset = pos
        self._span = span
        self._chain = array("i", [-1]) * len(self._chain)
        self._run_start, self._run_end, self._run_next = array("q"), array("q"), array("i")
        self._records, self._dead = records, 0

    def mark(self) -> tuple[tuple[int, int], int] | None:
        """Where the log ends now (file identity, size): ``reindex`` notes it before
        reading the threads, to replay what writers append while it reads."""
        with _locks.locked(self.lock_path, self.lock_timeout):
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                return None
            return (st.st_dev, st.st_ino), st.st_size

    def replace_all(
        self,
        summaries: Iterable[ThreadSummary],
        since: tuple[tuple[int, int], int] | None = None,
    ) -> bool:
        """Write a whole new index (``reindex``), streaming: ``summaries`` may be a
        generator over 100,000 threads.

        ``since`` (from :meth:`mark`) says when the summaries began to be computed: the
        records appended after it, by writers that did not wait for the rebuild, are
        copied after them, and since every record states a value rather than a change,
        they win where they are newer. ``False`` (nothing written) when the log was
        replaced meanwhile, so that those records cannot be found: compute again.
        """
        with _locks.locked(self.lock_path, self.lock_timeout):
            tail = b""
            if since is not None:
                try:
                    st = os.stat(self.path)
                except FileNotFoundError:
                    return False
                file_id, offset = since
                if (st.st_dev, st.st_ino) != file_id or st.st_size < offset:
                    return False
                with open(self.path, "rb") as f:
                    f.seek(offset)
                    lines, _ = _fs.split_lines(f.read(st.st_size - offset))
                tail = b"".join(line + b"\n" for line in lines if line)
            tmp = temp_path(self.path)
            try:
                with open(tmp, "xb") as out:
                    for s in summaries:
                        out.write(b"".join(_codec.encode_line(r) for r in s.records()))
                    out.write(tail)
                os.replace(tmp, self.path)
            except OSError:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
            self._reset()
            self.refresh()
        return True

    # -- queries -------------------------------------------------------------------

    def feedback_owner(self, feedback_id: str) -> str | None:
        entry = self._feedback_ids.find(feedback_id) if isinstance(feedback_id, str) else -1
        return None if entry < 0 else self._slots.id_of(self._fb_owner[entry] >> 1)

    def page(
        self,
        *,
        user_id: str | None,
        first: int,
        cursor: str | None = None,
        search: str | None = None,
        feedback: int | None = None,
    ) -> Page:
        """Threads newest activity first, after ``cursor``, filtered.

        The cursor is the (activity, id) key of the last thread shown, so a new thread
        written while the user scrolls lands before it and is neither skipped nor
        shown twice.
        """
        order = self._ordered(user_id)
        end = len(order)
        if cursor:
            key = decode_cursor(cursor)
            if key is None and self._slots.find(cursor) >= 0:  # a plain thread id works too
                key = self._key(self._slots.find(cursor))
            if key is not None:
                end = bisect.bisect_left(order, key, key=self._key)
        needle = _Needle(search) if search else None
        first = max(first, 0)
        items: list[ThreadSummary] = []
        has_next = False
        counts = self._fb_count
        wanted = int(feedback) if feedback in (0, 1) else None
        for i in range(end - 1, -1, -1):
            slot = order[i]
            if feedback is not None and (wanted is None or not counts[2 * slot + wanted]):
                continue
            if needle is not None and not self._matches(slot, needle):
                continue
            if len(items) == first:
                has_next = True
                break
            items.append(self._summary(slot))
        return Page(
            items=items,
            has_next=has_next,
            start_cursor=encode_cursor(items[0]) if items else None,
            end_cursor=encode_cursor(items[-1]) if items else None,
        )

    def _matches(self, slot: int, needle: _Needle) -> bool:
        """Whether the thread's name or indexed message text contains the needle.

        The raw records are checked first: the encoding rules escape only quotes,
        backslashes and control characters, and the needle is escaped the same way, so
        a needle absent from the raw bytes is absent from the text. Only a thread that
        passes is decoded.
        """
        detail = self._details.get(slot)
        if detail is None:
            data = self._raw(slot)
            if data.isascii():
                if not needle.ascii or needle.escaped_bytes not in data.lower():
                    return False
            elif needle.escaped not in data.decode("utf-8", "replace").casefold():
                return False
            detail = self._fold(data)
        text = needle.text
        if detail.name and text in detail.name.casefold():
            return True
        return any(text in t.casefold() for _, t in detail.texts.values())

    def favorites_of(self, user_id: str) -> list[tuple[str, set[str]]]:
        result = []
        for slot, favs in self._favorites.items():
            tid = self._slots.id_of(slot)
            if tid is not None and favs and self._owners[self._owner[slot]][0] == user_id:
                result.append((tid, set(favs)))
        return result

    def newest_first(self) -> Iterator[str]:
        """Every thread id, most recent activity first (for scans that stop early)."""
        order = self._ordered(None)
        for i in range(len(order) - 1, -1, -1):
            tid = self._slots.id_of(order[i])
            if tid is not None:
                yield tid


class _ThreadsView(Mapping[str, ThreadSummary]):
    """``index.threads``: a read-only mapping that builds summaries on access."""

    def __init__(self, index: ThreadIndex) -> None:
        self._index = index

    def __getitem__(self, thread_id: str) -> ThreadSummary:
        slot = self._index._slots.find(thread_id) if isinstance(thread_id, str) else -1
        if slot < 0:
            raise KeyError(thread_id)
        return self._index._summary(slot, thread_id)

    def __contains__(self, thread_id: object) -> bool:
        return isinstance(thread_id, str) and self._index._slots.find(thread_id) >= 0

    def __iter__(self) -> Iterator[str]:
        slots = self._index._slots
        return iter([tid for tid in map(slots.id_of, slots.live()) if tid is not None])

    def __len__(self) -> int:
        return self._index._slots.count
