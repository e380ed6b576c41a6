"""The thread index: what ``list_threads`` needs, without opening any thread.

The index is a derived SQLite database in ``index/`` (the standard library's
``sqlite3``, in WAL mode), named by the one-line file ``index/current``. Every process
opens it and asks it directly: there is nothing to load at start, and nothing to
replay when another process wrote. Deleting ``index/`` loses nothing: the thread
directories hold everything it says, and :meth:`ThreadIndex.rebuild` makes it again.

What it holds, per thread: its fields (owner, name, tags, times), the *searchable form*
of its name and message texts (case-folded, each message clipped by the store to
``search_chars`` characters), its feedback values and its favorite steps. The ordering
key is the thread's *activity*: the later of its creation and its last message (the
message's own ``createdAt``, not when it was written); renaming, sharing, feedback or
the session metadata Chainlit saves on every disconnect do not move a thread.

Search is exact (a case-folded substring of the name or of a message text). A term of
three characters or more is looked up in an FTS5 ``trigram`` index when the Python
build has one: the user's newest threads are checked first, which answers a common
term at once, and the trigram index finds the matches further down, which answers a
rare term (or none) without reading the texts. The index rows of each user's texts
have row ids in a range of their own, so a search reads only that user's entries.
docs/architecture.md ("The index engine") gives the measurements behind the choice.

A rebuild writes a new database aside and switches ``index/current`` to it under
``locks/index.lock``, which takes milliseconds; processes notice the switch at their
next call (one ``stat``) and open the new file. Writes that landed in the old file
meanwhile are caught up by the caller (see :mod:`filelayer.reindex`).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import logging
import os
import re
import secrets
import sqlite3
import threading
import weakref
from collections.abc import (
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    Set,
    ValuesView,
)
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .._io import fs as _fs
from .._io import locks as _locks
from .._io.fs import temp_path
from ..errors import ArchiveLockTimeout, StorageWriteError
from ..format import codec as _codec

log = logging.getLogger("filelayer")

DEFAULT_SEARCH_CHARS = 2000
"""How much of each message the index keeps for search (characters)."""

INDEX_FORMAT = 2
"""The layout of the index database (1 was the JSON-lines log ``index/threads.jsonl``).
A database of another format is not opened: it is rebuilt from the thread directories."""

POINTER_FILE = "current"
LEGACY_FILE = "threads.jsonl"
_NAME = re.compile(r"threads-[0-9a-f]{16}\.sqlite")
_SIDE_FILES = ("", "-wal", "-shm", "-journal")

_USER_BITS = 32
"""The row ids of a user's searchable texts are ``u << 32 | n``: one range per user."""

_FTS_CANDIDATES = 2000
"""A term whose trigrams are all in more of a user's texts than this is common: its
threads are checked newest first (the page fills after a few), instead of checking
every text the trigram index names."""

_TRIGRAMS_MAX = 24
"""At most this many of a term's trigrams are looked up (the rest only narrow down
what the exact check that follows decides anyway)."""

_NEWEST_CHUNK = 2000

_CHECK_ALL = 128
"""Up to this many candidate texts are all checked; beyond, the user's threads are
walked newest first and only their candidates checked, until the page is full."""

_WALK = 1024
"""Threads walked before the candidates left are all checked (see ``_walking``)."""

_IN_LIST = 256
"""Values bound in one ``IN (...)`` list (SQLite allows 999 in its oldest builds)."""

_TODO_BATCH = 64
"""Queued texts applied to the trigram index together (see ``_FTS_SCHEMA``)."""

_WAL_LOOK_EVERY = 32
"""Commits between two looks at the size of the write-ahead log."""
_WAL_CHECKPOINT_BYTES = 4 << 20
"""A log this large is folded back into the database, by a thread of its own."""
_WAL_AUTOCHECKPOINT_PAGES = 16384
"""SQLite folds the log itself, inside a commit, only beyond this (64 MB): if the
thread cannot keep up."""

_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6
_ERRNO = {3: errno.EACCES, 8: errno.EROFS, 13: errno.ENOSPC, 14: errno.EACCES}
"""SQLite's primary result codes (PERM, READONLY, FULL, CANTOPEN) as the errno a
failed write of a file would have given."""


# -- records ------------------------------------------------------------------------------
# The vocabulary of writes: each states a value (never a change), so applying one twice,
# or applying an older one again after a newer one was rebuilt, gives the same index.


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


def searchable(text: str) -> str:
    """The form in which the index keeps and compares text: case-folded, so that a
    search for ``STRASSE`` finds ``Straße``."""
    return text.casefold()


# -- a thread's summary -------------------------------------------------------------------


class ThreadSummary:
    """What the index knows about one thread.

    Built by hand (``reindex`` computes one from a thread's files) it simply holds its
    fields. Handed out by :class:`ThreadIndex` it is a view: texts, feedback and
    favorites are read from the index when first asked for.
    """

    __slots__ = (
        "_activity",
        "_favorites",
        "_feedback",
        "_index",
        "_last",
        "_texts",
        "created_at",
        "id",
        "name",
        "tags",
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
        texts: Mapping[str, tuple[str, str]] | None = None,
        feedback: Mapping[str, tuple[str, int]] | None = None,
        favorites: Set[str] | None = None,
    ) -> None:
        self.id = id
        self.user_id = user_id
        self.user_identifier = user_identifier
        self.name = name
        self.created_at = created_at
        self.updated_at = updated_at
        self.tags = tags
        self._texts: Mapping[str, tuple[str, str]] | None = texts if texts is not None else {}
        self._feedback: Mapping[str, tuple[str, int]] | None = (
            feedback if feedback is not None else {}
        )
        self._favorites: Set[str] | None = favorites if favorites is not None else set()
        self._activity: str | None = None
        self._last: str | None = None
        self._index: ThreadIndex | None = None

    def __repr__(self) -> str:
        return f"ThreadSummary(id={self.id!r}, user_id={self.user_id!r}, name={self.name!r})"

    @property
    def texts(self) -> Mapping[str, tuple[str, str]]:
        """step id -> (time, searchable text) of message steps (see :func:`searchable`)."""
        if self._texts is None:
            assert self._index is not None
            self._texts = _TextsView(self._index, self.id)
        return self._texts

    @property
    def feedback(self) -> Mapping[str, tuple[str, int]]:
        """feedback id -> (step id, value)."""
        if self._feedback is None:
            assert self._index is not None
            self._feedback = self._index._feedback_of(self.id)
        return self._feedback

    @property
    def favorites(self) -> Set[str]:
        if self._favorites is None:
            assert self._index is not None
            self._favorites = self._index._favorites_of_thread(self.id)
        return self._favorites

    @property
    def last_text_at(self) -> str:
        if self._last is not None:
            return self._last
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


class _TextsView(Mapping[str, tuple[str, str]]):
    """A thread's texts, read from the index: one step at a time (what a writer asks
    for) or all at once (what ``verify`` compares)."""

    __slots__ = ("_all", "_index", "_thread")

    def __init__(self, index: ThreadIndex, thread_id: str) -> None:
        self._index = index
        self._thread = thread_id
        self._all: dict[str, tuple[str, str]] | None = None

    def __getitem__(self, step_id: str) -> tuple[str, str]:
        if self._all is not None:
            return self._all[step_id]
        found = self._index._text_of(self._thread, step_id)
        if found is None:
            raise KeyError(step_id)
        return found

    def _load(self) -> dict[str, tuple[str, str]]:
        if self._all is None:
            self._all = self._index._texts_of(self._thread)
        return self._all

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def __repr__(self) -> str:
        return repr(self._load())


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


# -- the database ---------------------------------------------------------------------------

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    # u = 0 is "no user"; the others number the user ids as they come.
    "CREATE TABLE users (u INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE)",
    """CREATE TABLE threads (
        n INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        u INTEGER NOT NULL,
        ident TEXT,
        name TEXT,
        tags TEXT,
        created TEXT NOT NULL,
        updated TEXT NOT NULL,
        last TEXT NOT NULL,
        activity TEXT NOT NULL,
        fb0 INTEGER NOT NULL DEFAULT 0,
        fb1 INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX threads_order ON threads (u, activity, id)",
    "CREATE INDEX threads_fb0 ON threads (u, activity, id) WHERE fb0 > 0",
    "CREATE INDEX threads_fb1 ON threads (u, activity, id) WHERE fb1 > 0",
    # One row per searchable text: a message (step = its id) or the name (step NULL).
    # r = u << 32 | a number: the row ids of one user's texts form a range of their own.
    """CREATE TABLE docs (
        r INTEGER PRIMARY KEY,
        n INTEGER NOT NULL,
        step TEXT,
        at TEXT NOT NULL,
        doc TEXT NOT NULL
    )""",
    "CREATE UNIQUE INDEX docs_step ON docs (n, step)",
    """CREATE TABLE feedback (
        id TEXT PRIMARY KEY,
        n INTEGER NOT NULL,
        step TEXT NOT NULL,
        value INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX feedback_thread ON feedback (n)",
    """CREATE TABLE favorites (
        n INTEGER NOT NULL,
        step TEXT NOT NULL,
        PRIMARY KEY (n, step)
    ) WITHOUT ROWID""",
    # Texts whose entry in the trigram index is not up to date yet: `old` is what the
    # trigram index holds for row r (NULL: nothing). Searches read these texts directly.
    "CREATE TABLE fts_todo (r INTEGER PRIMARY KEY, old TEXT)",
)

_FTS_SCHEMA = (
    "CREATE VIRTUAL TABLE fts USING fts5(doc, content='docs', content_rowid='r', "
    "detail=none, columnsize=0, tokenize='trigram case_sensitive 1')"
)
"""The trigram index of ``docs.doc`` (already case-folded, so compared as it is).
``detail=none`` keeps only which rows hold a trigram, not where: a fifth of the size of
a full index; it narrows a search down to candidates, which ``instr`` then checks.

Writes do not touch it: they queue the rows they change in ``fts_todo``, and the queue
is applied a few dozen rows at a time (:meth:`_Db.apply_todo`), which costs a fifth of
what a transaction per row does; until then searches read the queued texts directly."""

_THREAD_COLUMNS = "n, id, u, ident, name, tags, created, updated, last, activity"

_fts5: bool | None = None


def fts5_available() -> bool:
    """Whether this Python's SQLite has FTS5 with the trigram tokenizer (3.34+)."""
    global _fts5
    if _fts5 is None:
        try:
            with contextlib.closing(sqlite3.connect(":memory:")) as db:
                db.execute("CREATE VIRTUAL TABLE t USING fts5(x, tokenize='trigram')")
            _fts5 = True
        except sqlite3.Error:
            _fts5 = False
    return _fts5


def _is_damage(exc: sqlite3.Error) -> bool:
    """A damaged or foreign file (as opposed to a busy lock, a full disk or a bug)."""
    return type(exc) is sqlite3.DatabaseError


def _fts_query(needle: str) -> str:
    """The trigrams of ``needle``, all required: a superset of the rows holding it."""
    grams = sorted({needle[i : i + 3] for i in range(len(needle) - 2)})
    if len(grams) > _TRIGRAMS_MAX:
        step = len(grams) / _TRIGRAMS_MAX
        grams = [grams[int(i * step)] for i in range(_TRIGRAMS_MAX)]
    return " AND ".join('"' + g.replace('"', '""') + '"' for g in grams)


def _tags_text(tags: object) -> str | None:
    if not isinstance(tags, list):
        return None
    return _codec.encode_line(tags).decode("utf-8").rstrip("\n")


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


class _Db:
    """One open index database (one generation) and what this process caches of it."""

    def __init__(
        self, conn: sqlite3.Connection, path: Path, *, fts: bool, readonly: bool = False
    ) -> None:
        self.conn = conn
        self.path = path
        self.fts = fts  # the database has a trigram index (kept by FTS5-capable processes)
        self.readonly = readonly  # opened on a read-only file system
        self.queued = 0  # texts this process queued for the trigram index since it looked
        self.pid = os.getpid()
        self.commits = 0
        self.checkpointer: _Checkpointer | None = None
        self.timeout = 5.0
        self.users: dict[str, int] = {}
        self.user_ids: dict[int, str | None] = {0: None}
        self.next_doc: dict[int, int] | None = None  # only while building

    @classmethod
    def open(cls, path: Path, timeout: float) -> _Db:
        """Open an existing database; ``sqlite3.Error`` or ``LookupError`` (another
        format) if it is not a usable index."""
        try:
            return cls._open(path, timeout, readonly=False)
        except sqlite3.OperationalError:
            if os.access(path.parent, os.W_OK):
                raise
            # A read-only file system: nobody can change the file, so it is read as it
            # is, without the shared-memory file WAL mode otherwise needs.
            return cls._open(path, timeout, readonly=True)

    @classmethod
    def _open(cls, path: Path, timeout: float, *, readonly: bool) -> _Db:
        mode = "mode=ro&immutable=1" if readonly else "mode=rw"
        conn = sqlite3.connect(
            f"file:{quote(str(path))}?{mode}",
            uri=True,
            timeout=timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA wal_autocheckpoint={_WAL_AUTOCHECKPOINT_PAGES}")
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if meta.get("format") != str(INDEX_FORMAT):
                raise LookupError(f"index format {meta.get('format')!r}")
            fts = meta.get("fts") == "1"
        except BaseException:
            conn.close()
            raise
        db = cls(conn, path, fts=fts, readonly=readonly)
        db.timeout = timeout
        return db

    @classmethod
    def create(cls, path: Path, *, fts: bool) -> _Db:
        """A new empty database at ``path`` (a temporary name, renamed into place once
        filled): no journal while it is built, nobody else sees it."""
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        for statement in _SCHEMA:
            conn.execute(statement)
        if fts:
            conn.execute(_FTS_SCHEMA)
        conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [("format", str(INDEX_FORMAT)), ("fts", "1" if fts else "0")],
        )
        db = cls(conn, path, fts=fts)
        db.next_doc = {}
        return db

    def finish(self) -> None:
        """End the build: commit, make the trigram index of all the texts at once (in one
        segment), switch the file to WAL mode and close it."""
        conn = self.conn
        conn.execute("COMMIT")
        if self.fts:
            conn.execute("INSERT INTO fts (fts) VALUES ('rebuild')")
            conn.execute("INSERT INTO fts (fts) VALUES ('optimize')")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.close()

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()

    # -- transactions --------------------------------------------------------------

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self.users.clear()
            self.user_ids = {0: None}
            raise
        conn.execute("COMMIT")
        self.commits += 1
        if self.queued >= _TODO_BATCH and fts5_available():
            self.queued = 0
            try:  # the write is done: the queue can wait for the next batch
                self.apply_todo()
            except sqlite3.Error as exc:
                log.debug("filelayer: the trigram index queue waits (%s)", exc)
        if self.commits % _WAL_LOOK_EVERY == 0:
            self._look_at_the_log()

    def apply_todo(self) -> None:
        """Bring the trigram index up to date with the queued texts (all of them: a
        few dozen, or more if processes without FTS5 queued them)."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "INSERT INTO fts (fts, rowid, doc) SELECT 'delete', r, old FROM fts_todo "
                "WHERE old IS NOT NULL"
            )
            conn.execute(
                "INSERT INTO fts (rowid, doc) SELECT d.r, d.doc FROM fts_todo q "
                "CROSS JOIN docs d ON d.r = q.r WHERE d.doc != ''"  # the queue drives
            )
            conn.execute("DELETE FROM fts_todo")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _look_at_the_log(self) -> None:
        try:
            size = os.stat(f"{self.path}-wal").st_size
        except OSError:
            return
        if size < _WAL_CHECKPOINT_BYTES:
            return
        if self.checkpointer is None or not self.checkpointer.alive():
            self.checkpointer = _Checkpointer(self.path, self.timeout)
        self.checkpointer.wanted.set()

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """One snapshot for a read made of several statements."""
        conn = self.conn
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("COMMIT")

    # -- users ---------------------------------------------------------------------

    def user_no(self, user: str | None, *, create: bool) -> int | None:
        if user is None:
            return 0
        u = self.users.get(user)
        if u is None:
            row = self.conn.execute("SELECT u FROM users WHERE id = ?", (user,)).fetchone()
            if row is not None:
                u = int(row[0])
            elif not create:
                return None
            else:
                cur = self.conn.execute("INSERT INTO users (id) VALUES (?)", (user,))
                u = int(cur.lastrowid or 0)
            self.users[user] = u
            self.user_ids[u] = user
        return u

    def user_of(self, u: int) -> str | None:
        if u in self.user_ids:
            return self.user_ids[u]
        row = self.conn.execute("SELECT id FROM users WHERE u = ?", (u,)).fetchone()
        user = None if row is None else str(row[0])
        self.user_ids[u] = user
        if user is not None:
            self.users[user] = u
        return user

    # -- searchable texts ----------------------------------------------------------

    def _new_doc_id(self, u: int) -> int:
        """While building: the texts are numbered in order, nothing to look up."""
        assert self.next_doc is not None
        r = self.next_doc.get(u, u << _USER_BITS) + 1
        self.next_doc[u] = r
        return r

    def _queue(self, r: int, old: str | None) -> None:
        """Note that row r's entry in the trigram index is out of date. ``old`` is what
        the entry holds, unless the row was queued already (then it still holds what
        the queue says)."""
        if self.fts and self.next_doc is None:
            self.conn.execute("INSERT OR IGNORE INTO fts_todo (r, old) VALUES (?, ?)", (r, old))
            self.queued += 1

    def add_doc(self, n: int, u: int, step: str | None, at: str, doc: str) -> None:
        if self.next_doc is not None:
            r = self._new_doc_id(u)
            self.conn.execute(
                "INSERT INTO docs (r, n, step, at, doc) VALUES (?, ?, ?, ?, ?)",
                (r, n, step, at, doc),
            )
            return
        # The next number of the owner's range, found in the same statement.
        low = u << _USER_BITS
        cur = self.conn.execute(
            "INSERT INTO docs (r, n, step, at, doc) VALUES (coalesce((SELECT r FROM docs "
            "WHERE r BETWEEN ? AND ? ORDER BY r DESC LIMIT 1), ?) + 1, ?, ?, ?, ?)",
            (low, low + (1 << _USER_BITS) - 1, low, n, step, at, doc),
        )
        r = int(cur.lastrowid or 0)
        if r >= low + (1 << _USER_BITS):  # pragma: no cover - four billion texts
            raise OverflowError("too many texts for one user in the index")
        if doc:
            self._queue(r, None)

    def drop_doc(self, r: int, doc: str) -> None:
        self.conn.execute("DELETE FROM docs WHERE r = ?", (r,))
        self._queue(r, doc or None)

    def set_doc(self, r: int, at: str, old: str, new: str) -> None:
        self.conn.execute("UPDATE docs SET at = ?, doc = ? WHERE r = ?", (at, new, r))
        if old != new:
            self._queue(r, old or None)

    # -- threads -------------------------------------------------------------------

    def thread_no(self, thread_id: str) -> tuple[int, int, str, str] | None:
        """(n, u, created, last) of a thread."""
        row = self.conn.execute(
            "SELECT n, u, created, last FROM threads WHERE id = ?", (thread_id,)
        ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]), str(row[2]), str(row[3]))

    def thread_no_or_new(self, thread_id: str) -> tuple[int, int, str, str]:
        """A thread the index did not know is added without an owner (a record about it
        arrived before its own; the usual order puts the thread record first)."""
        found = self.thread_no(thread_id)
        if found is not None:
            return found
        cur = self.conn.execute(
            "INSERT INTO threads (id, u, created, updated, last, activity) "
            "VALUES (?, 0, '', '', '', '')",
            (thread_id,),
        )
        return int(cur.lastrowid or 0), 0, "", ""

    def set_last(self, n: int, created: str, last: str) -> None:
        self.conn.execute(
            "UPDATE threads SET last = ?, activity = ? WHERE n = ?",
            (last, max(created, last), n),
        )

    def recompute_last(self, n: int) -> str:
        row = self.conn.execute(
            "SELECT max(at) FROM docs WHERE n = ? AND step IS NOT NULL", (n,)
        ).fetchone()
        return str(row[0]) if row is not None and row[0] is not None else ""

    def apply(self, r: Mapping[str, Any]) -> None:
        kind = r.get("k")
        tid = r.get("id")
        if not isinstance(tid, str) or not tid:
            return
        if kind == "t":
            self.apply_thread(tid, r)
        elif kind == "x":
            sid = r.get("s")
            if isinstance(sid, str):
                text = r.get("x")
                at = r.get("at")
                self.apply_text(
                    tid,
                    sid,
                    at if isinstance(at, str) else "",
                    None if text is None else str(text),
                )
        elif kind == "f":
            self.apply_feedback(tid, r.get("f"), r.get("s"), r.get("v"))
        elif kind == "s":
            sid = r.get("s")
            if isinstance(sid, str):
                self.apply_favorite(tid, sid, bool(r.get("on")))
        elif kind == "d":
            self.delete_thread(tid)

    def apply_thread(self, tid: str, r: Mapping[str, Any]) -> None:
        conn = self.conn
        user, ident, name = _str_or_none(r.get("user")), _str_or_none(r.get("ident")), None
        name = _str_or_none(r.get("name"))
        created, updated = _str_or_none(r.get("created")) or "", _str_or_none(r.get("updated"))
        tags = _tags_text(r.get("tags"))
        u = self.user_no(user, create=True)
        assert u is not None
        row = conn.execute(
            "SELECT n, u, name, created, updated, last FROM threads WHERE id = ?", (tid,)
        ).fetchone()
        if row is None:
            cur = conn.execute(
                "INSERT INTO threads (id, u, ident, name, tags, created, updated, last, activity)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, '', ?)",
                (tid, u, ident, name, tags, created, updated or "", created),
            )
            if name is not None:
                self.add_doc(int(cur.lastrowid or 0), u, None, "", searchable(name))
            return
        n, old_u, old_name, old_created, old_updated, last = row
        created = created or old_created
        conn.execute(
            "UPDATE threads SET u = ?, ident = ?, name = ?, tags = ?, created = ?, updated = ?,"
            " activity = ? WHERE n = ?",
            (u, ident, name, tags, created, updated or old_updated, max(created, last), n),
        )
        if u != old_u:
            self._move_docs(n, u)
        if name != old_name:
            self._set_name(n, u, name)

    def _set_name(self, n: int, u: int, name: str | None) -> None:
        row = self.conn.execute(
            "SELECT r, doc FROM docs WHERE n = ? AND step IS NULL", (n,)
        ).fetchone()
        if name is None:
            if row is not None:
                self.drop_doc(int(row[0]), str(row[1]))
        elif row is None:
            self.add_doc(n, u, None, "", searchable(name))
        else:
            self.set_doc(int(row[0]), "", str(row[1]), searchable(name))

    def _move_docs(self, n: int, u: int) -> None:
        """Give a thread's texts row ids in its new owner's range."""
        rows = self.conn.execute(
            "SELECT r, step, at, doc FROM docs WHERE n = ? ORDER BY r", (n,)
        ).fetchall()
        for r, _, _, doc in rows:
            self.drop_doc(int(r), str(doc))
        for _, step, at, doc in rows:
            self.add_doc(n, u, step, str(at), str(doc))

    def apply_text(self, tid: str, sid: str, at: str, text: str | None) -> None:
        found = self.conn.execute(
            "SELECT t.n, t.u, t.created, t.last, d.r, d.at, d.doc FROM threads t "
            "LEFT JOIN docs d ON d.n = t.n AND d.step = ? WHERE t.id = ?",
            (sid, tid),
        ).fetchone()
        if found is None:
            n, u, created, last = self.thread_no_or_new(tid)
            row = None
        else:
            n, u, created, last = int(found[0]), int(found[1]), str(found[2]), str(found[3])
            row = None if found[4] is None else found[4:]
        if text is None:
            if row is not None:
                self.drop_doc(int(row[0]), str(row[2]))
                self.set_last(n, created, self.recompute_last(n))
            return
        doc = searchable(text)
        if row is None:
            self.add_doc(n, u, sid, at, doc)
            if at > last:
                self.set_last(n, created, at)
            return
        r, old_at, old_doc = int(row[0]), str(row[1]), str(row[2])
        if (old_at, old_doc) == (at, doc):
            return
        self.set_doc(r, at, old_doc, doc)
        if at != old_at:
            self.set_last(n, created, at if at > last else self.recompute_last(n))

    def apply_feedback(self, tid: str, fid: object, rated: object, value: object) -> None:
        if not isinstance(fid, str) or not fid:
            return
        conn = self.conn
        n = self.thread_no_or_new(tid)[0]
        old = conn.execute("SELECT n, value FROM feedback WHERE id = ?", (fid,)).fetchone()
        if old is not None:
            column = "fb1" if old[1] else "fb0"
            conn.execute(
                f"UPDATE threads SET {column} = max({column} - 1, 0) WHERE n = ?", (old[0],)
            )
            conn.execute("DELETE FROM feedback WHERE id = ?", (fid,))
        if value in (0, 1) and isinstance(rated, str):
            conn.execute(
                "INSERT INTO feedback (id, n, step, value) VALUES (?, ?, ?, ?)",
                (fid, n, rated, int(value)),
            )
            column = "fb1" if value else "fb0"
            conn.execute(f"UPDATE threads SET {column} = {column} + 1 WHERE n = ?", (n,))

    def apply_favorite(self, tid: str, sid: str, on: bool) -> None:
        n = self.thread_no_or_new(tid)[0]
        if on:
            self.conn.execute("INSERT OR IGNORE INTO favorites (n, step) VALUES (?, ?)", (n, sid))
        else:
            self.conn.execute("DELETE FROM favorites WHERE n = ? AND step = ?", (n, sid))

    def delete_thread(self, tid: str) -> None:
        found = self.thread_no(tid)
        if found is None:
            return
        n = found[0]
        conn = self.conn
        for r, doc in conn.execute("SELECT r, doc FROM docs WHERE n = ?", (n,)).fetchall():
            self.drop_doc(int(r), str(doc))
        conn.execute("DELETE FROM feedback WHERE n = ?", (n,))
        conn.execute("DELETE FROM favorites WHERE n = ?", (n,))
        conn.execute("DELETE FROM threads WHERE n = ?", (n,))

    def put(self, summary: ThreadSummary) -> None:
        """Make the index hold exactly ``summary`` for its thread."""
        self.delete_thread(summary.id)
        u = self.user_no(summary.user_id, create=True)
        assert u is not None
        texts = dict(summary.texts)
        last = max((t for t, _ in texts.values()), default="")
        created = summary.created_at or ""
        feedback = dict(summary.feedback)
        fb = [0, 0]
        for _, value in feedback.values():
            fb[1 if value else 0] += 1
        cur = self.conn.execute(
            "INSERT INTO threads (id, u, ident, name, tags, created, updated, last, activity,"
            " fb0, fb1) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                summary.id,
                u,
                summary.user_identifier,
                summary.name,
                _tags_text(summary.tags),
                created,
                summary.updated_at or "",
                last,
                max(created, last),
                fb[0],
                fb[1],
            ),
        )
        n = int(cur.lastrowid or 0)
        if summary.name is not None:
            self.add_doc(n, u, None, "", searchable(summary.name))
        for sid in sorted(texts):
            at, text = texts[sid]
            self.add_doc(n, u, sid, at, searchable(text))
        if feedback:
            self.conn.executemany(
                "INSERT INTO feedback (id, n, step, value) VALUES (?, ?, ?, ?)",
                [(fid, n, sid, int(v)) for fid, (sid, v) in sorted(feedback.items())],
            )
        if summary.favorites:
            self.conn.executemany(
                "INSERT INTO favorites (n, step) VALUES (?, ?)",
                [(n, sid) for sid in sorted(summary.favorites)],
            )


class _Checkpointer:
    """Folds the write-ahead log back into the database from a thread of its own.

    SQLite would do it inside whichever commit makes the log reach 1,000 pages: copying
    megabytes and two ``fsync`` calls, milliseconds that one write (on the event loop)
    would wait for. A passive checkpoint waits for nobody and nobody waits for it.
    """

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self.wanted = threading.Event()
        self.stopped = False
        self.thread = threading.Thread(
            target=self._run, name="filelayer-index-checkpoint", daemon=True
        )
        self.thread.start()

    def alive(self) -> bool:
        return self.thread.is_alive() and not self.stopped

    def stop(self) -> None:
        self.stopped = True
        self.wanted.set()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(
                f"file:{quote(str(self.path))}?mode=rw",
                uri=True,
                timeout=self.timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error:
            return
        try:
            while True:
                self.wanted.wait()
                self.wanted.clear()
                if self.stopped:
                    return
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            conn.close()


# -- the index -----------------------------------------------------------------------------


class ThreadIndex:
    """The index of one archive, as this process sees it (see the module docstring).

    Thread-safe: calls from several threads of a process are serialised.
    """

    def __init__(self, directory: Path, lock_path: Path, *, lock_timeout: float) -> None:
        self.directory = directory
        self.pointer = directory / POINTER_FILE
        self.lock_path = lock_path
        self.lock_timeout = lock_timeout
        self._lock = threading.RLock()
        self._db: _Db | None = None
        self._pointer_id: tuple[int, int, int] | None = None
        self._damaged: str | None = None  # the generation found damaged
        self._closer: weakref.finalize[Any, Any] | None = None

    # -- the current database -------------------------------------------------------

    def _read_pointer(self) -> tuple[tuple[int, int, int], str] | None:
        try:
            with open(self.pointer, "rb") as f:
                st = os.fstat(f.fileno())
                name = f.read(256).decode("utf-8", "replace").strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("filelayer: cannot read %s (%s)", self.pointer, exc)
            return None
        if not _NAME.fullmatch(name):
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size), name

    def _current(self) -> _Db | None:
        """The database ``index/current`` names, open (reopened if it changed)."""
        db = self._db
        try:
            st = os.stat(self.pointer)
        except OSError:
            if db is not None:
                self._drop()
            return None
        if (
            db is not None
            and (st.st_ino, st.st_mtime_ns, st.st_size) == self._pointer_id
            and db.pid == os.getpid()
        ):
            return db
        found = self._read_pointer()
        if found is None:
            self._drop()
            return None
        pointer_id, name = found
        path = self.directory / name
        if db is not None and db.path == path and db.pid == os.getpid():
            self._pointer_id = pointer_id
            return db
        self._drop()
        if name == self._damaged:
            return None
        try:
            db = _Db.open(path, self.lock_timeout)
        except (sqlite3.Error, LookupError) as exc:
            if not (isinstance(exc, sqlite3.OperationalError) and not path.exists()):
                log.warning("filelayer: the index %s cannot be used (%s)", path, exc)
            return None
        self._db, self._pointer_id = db, pointer_id
        self._closer = weakref.finalize(self, db.close)
        return db

    def _drop(self) -> None:
        if self._closer is not None:
            if self._db is not None and self._db.pid != os.getpid():
                self._closer.detach()  # the parent's connection: never closed by a child
            else:
                self._closer()
        self._db = None
        self._closer = None
        self._pointer_id = None

    def _damage(self, db: _Db, exc: sqlite3.Error) -> None:
        log.error(
            "filelayer: the index %s is damaged (%s); it is rebuilt from the threads at the "
            "next opening of the archive, or now by `filelayer reindex`",
            db.path,
            exc,
        )
        self._damaged = db.path.name
        self._drop()

    @property
    def damaged(self) -> bool:
        """Whether the current database was found damaged (it needs a rebuild)."""
        if self._damaged is None:
            return False
        with self._lock:
            found = self._read_pointer()
            return found is not None and found[1] == self._damaged

    def exists(self) -> bool:
        """Whether there is a usable index (of this format) to open."""
        with self._lock:
            return self._current() is not None

    def refresh(self) -> None:
        """Look at ``index/current`` again (one ``stat``): after a rebuild by another
        process, the next call reads the new database. Cheap; calls do it anyway."""
        with self._lock:
            self._current()

    def close(self) -> None:
        """Close the database (the next call opens it again)."""
        with self._lock:
            self._drop()

    @property
    def threads(self) -> Mapping[str, ThreadSummary]:
        """Every indexed thread by id (summaries are built on access)."""
        return _ThreadsView(self)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[_Db | None]:
        """The current database for a read, ``None`` without one; damage is logged and
        reads as an empty index."""
        with self._lock:
            db = self._current()
            try:
                yield db
            except sqlite3.DatabaseError as exc:
                if db is None or not _is_damage(exc):
                    raise
                self._damage(db, exc)

    # -- writing -------------------------------------------------------------------

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Apply ``records`` in one transaction (nothing when there is no index yet:
        the next rebuild reads everything from the thread directories)."""
        batch = list(records)
        if not batch:
            return
        with self._lock:
            db = self._writable()
            if db is None:
                return
            try:
                with db.write():
                    for r in batch:
                        db.apply(r)
            except sqlite3.Error as exc:
                self._write_failed(db, exc)

    def put(self, thread_id: str, summary: ThreadSummary | None) -> None:
        """Make the index hold exactly ``summary`` for ``thread_id`` (``None``: nothing)."""
        with self._lock:
            db = self._writable()
            if db is None:
                return
            try:
                with db.write():
                    if summary is None:
                        db.delete_thread(thread_id)
                    else:
                        db.put(summary)
            except sqlite3.Error as exc:
                self._write_failed(db, exc)

    def _writable(self) -> _Db | None:
        db = self._current()
        if db is not None and db.readonly:  # the file system may be writable again
            self._drop()
            db = self._current()
            if db is not None and db.readonly:
                raise StorageWriteError(db.path, OSError(errno.EROFS, os.strerror(errno.EROFS)))
        return db

    def _write_failed(self, db: _Db, exc: sqlite3.Error) -> None:
        if _is_damage(exc):
            self._damage(db, exc)
            return
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
            raise ArchiveLockTimeout(db.path, self.lock_timeout) from exc
        number = _ERRNO.get(code, errno.EIO)
        raise StorageWriteError(db.path, OSError(number, str(exc))) from exc

    # -- rebuilding ----------------------------------------------------------------

    def rebuild(self, summaries: Iterable[ThreadSummary], *, replace: bool = True) -> int:
        """Write a whole new index from ``summaries`` (a generator over 100,000 threads
        is fine: nothing is kept in memory) into a new file, then make it the current
        one (under ``index.lock``, for milliseconds). Returns the thread count.

        Writes that other processes make to the old file meanwhile are not carried
        over: the caller catches up with them from the thread directories.
        ``replace=False`` keeps a usable index that another process made meanwhile
        (for the empty index of a new archive, where there is nothing to catch up)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"threads-{secrets.token_hex(8)}.sqlite"
        tmp = temp_path(self.directory / name)
        count = 0
        try:
            db = _Db.create(tmp, fts=fts5_available())
            try:
                for summary in summaries:
                    db.put(summary)
                    count += 1
                db.finish()
            except BaseException:
                db.close()
                raise
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._switch(tmp, name, replace=replace)
        except BaseException as exc:
            for suffix in _SIDE_FILES:
                with contextlib.suppress(OSError):
                    os.unlink(f"{tmp}{suffix}")
            if isinstance(exc, sqlite3.Error):
                raise StorageWriteError(tmp, OSError(0, str(exc))) from exc
            raise
        return count

    def _switch(self, built: Path, name: str, *, replace: bool) -> None:
        """Make the database ``built`` the current one, named ``name``, and remove the
        files of the others (a process still reading one keeps it until it notices)."""
        with _locks.locked(self.lock_path, self.lock_timeout):
            if not replace:
                with self._lock:
                    self._damaged = None
                    if self._current() is not None:
                        os.unlink(built)
                        return
            os.replace(built, self.directory / name)
            _fs.atomic_write(self.pointer, (name + "\n").encode("ascii"))
            for entry in os.scandir(self.directory):
                base = entry.name
                for suffix in _SIDE_FILES[1:]:
                    base = base.removesuffix(suffix)
                stale = _NAME.fullmatch(base) and base != name
                if stale or entry.name == LEGACY_FILE:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
        with self._lock:
            self._damaged = None
            self._current()

    # -- queries -------------------------------------------------------------------

    def _summary(self, db: _Db, row: tuple[Any, ...]) -> ThreadSummary:
        _, tid, u, ident, name, tags, created, updated, last, activity = row
        decoded = None
        if tags is not None:
            with contextlib.suppress(*_codec.DecodeError):
                decoded = _codec.decode(tags)
        s = ThreadSummary(
            tid,
            user_id=db.user_of(int(u)),
            user_identifier=ident,
            name=name,
            created_at=created,
            updated_at=updated,
            tags=decoded if isinstance(decoded, list) else None,
        )
        s._activity, s._last = activity, last
        s._texts = s._feedback = s._favorites = None
        s._index = self
        return s

    def _thread(self, thread_id: str) -> ThreadSummary | None:
        with self._reading() as db:
            if db is None:
                return None
            row = db.conn.execute(
                f"SELECT {_THREAD_COLUMNS} FROM threads WHERE id = ?", (thread_id,)
            ).fetchone()
            return None if row is None else self._summary(db, row)
        return None

    def _text_of(self, thread_id: str, step_id: str) -> tuple[str, str] | None:
        with self._reading() as db:
            if db is None:
                return None
            row = db.conn.execute(
                "SELECT d.at, d.doc FROM threads t JOIN docs d ON d.n = t.n "
                "WHERE t.id = ? AND d.step = ?",
                (thread_id, step_id),
            ).fetchone()
            return None if row is None else (str(row[0]), str(row[1]))
        return None

    def text(self, thread_id: str, step_id: str) -> tuple[str, str] | None:
        """(time, searchable text) of one message of a thread, ``None`` if the index
        does not hold it (what a writer compares a new text with)."""
        return self._text_of(thread_id, step_id)

    def is_favorite(self, thread_id: str, step_id: str) -> bool:
        with self._reading() as db:
            if db is None:
                return False
            row = db.conn.execute(
                "SELECT 1 FROM threads t JOIN favorites f ON f.n = t.n "
                "WHERE t.id = ? AND f.step = ?",
                (thread_id, step_id),
            ).fetchone()
            return row is not None
        return False

    def _texts_of(self, thread_id: str) -> dict[str, tuple[str, str]]:
        with self._reading() as db:
            if db is None:
                return {}
            rows = db.conn.execute(
                "SELECT d.step, d.at, d.doc FROM threads t JOIN docs d ON d.n = t.n "
                "WHERE t.id = ? AND d.step IS NOT NULL",
                (thread_id,),
            ).fetchall()
            return {str(s): (str(a), str(d)) for s, a, d in rows}
        return {}

    def _feedback_of(self, thread_id: str) -> dict[str, tuple[str, int]]:
        with self._reading() as db:
            if db is None:
                return {}
            rows = db.conn.execute(
                "SELECT f.id, f.step, f.value FROM threads t JOIN feedback f ON f.n = t.n "
                "WHERE t.id = ?",
                (thread_id,),
            ).fetchall()
            return {str(f): (str(s), int(v)) for f, s, v in rows}
        return {}

    def _favorites_of_thread(self, thread_id: str) -> set[str]:
        with self._reading() as db:
            if db is None:
                return set()
            rows = db.conn.execute(
                "SELECT f.step FROM threads t JOIN favorites f ON f.n = t.n WHERE t.id = ?",
                (thread_id,),
            ).fetchall()
            return {str(s) for (s,) in rows}
        return set()

    def feedback_owner(self, feedback_id: str) -> str | None:
        if not isinstance(feedback_id, str):
            return None
        with self._reading() as db:
            if db is None:
                return None
            row = db.conn.execute(
                "SELECT t.id FROM feedback f JOIN threads t ON t.n = f.n WHERE f.id = ?",
                (feedback_id,),
            ).fetchone()
            return None if row is None else str(row[0])
        return None

    def favorites_of(self, user_id: str) -> list[tuple[str, set[str]]]:
        with self._reading() as db:
            if db is None:
                return []
            u = db.user_no(user_id, create=False)
            if u is None:
                return []
            found: dict[str, set[str]] = {}
            for tid, step in db.conn.execute(
                "SELECT t.id, f.step FROM threads t JOIN favorites f ON f.n = t.n "
                "WHERE t.u = ? ORDER BY t.id",
                (u,),
            ):
                found.setdefault(str(tid), set()).add(str(step))
            return list(found.items())
        return []

    def newest_first(self) -> Iterator[str]:
        """Every thread id, most recent activity first (for scans that stop early)."""
        key: tuple[str, str] | None = None
        while True:
            with self._reading() as db:
                if db is None:
                    return
                if key is None:
                    rows = db.conn.execute(
                        "SELECT activity, id FROM threads ORDER BY activity DESC, id DESC LIMIT ?",
                        (_NEWEST_CHUNK,),
                    ).fetchall()
                else:
                    rows = db.conn.execute(
                        "SELECT activity, id FROM threads WHERE (activity, id) < (?, ?) "
                        "ORDER BY activity DESC, id DESC LIMIT ?",
                        (*key, _NEWEST_CHUNK),
                    ).fetchall()
            if not rows:
                return
            for _, tid in rows:
                yield str(tid)
            key = (str(rows[-1][0]), str(rows[-1][1]))

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
        shown twice. A plain thread id works as a cursor too.
        """
        first = max(int(first), 0)
        items: list[ThreadSummary] = []
        with self._reading() as db:
            if db is not None:
                with db.read() as conn:
                    rows = self._page_rows(db, conn, user_id, first + 1, cursor, search, feedback)
                items = [self._summary(db, row) for row in rows]
        has_next = len(items) > first
        del items[first:]
        return Page(
            items=items,
            has_next=has_next,
            start_cursor=encode_cursor(items[0]) if items else None,
            end_cursor=encode_cursor(items[-1]) if items else None,
        )

    @staticmethod
    def _matching(
        conn: sqlite3.Connection,
        candidates: list[int],
        needle: str,
        where: list[str],
        params: list[Any],
        limit: int,
    ) -> list[tuple[Any, ...]]:
        """The threads, newest first, of the ``candidates`` texts that hold ``needle``."""
        marks = ", ".join("?" * _IN_LIST)
        threads: set[int] = set()
        for chunk in _chunks(candidates):
            threads.update(
                n
                for (n,) in conn.execute(
                    f"SELECT n FROM docs WHERE r IN ({marks}) AND instr(doc, ?) > 0",
                    (*chunk, needle),
                )
            )
        rows: list[tuple[Any, ...]] = []
        sql = (  # found by row id: the user's ordered index would be walked whole
            f"SELECT {_THREAD_COLUMNS} FROM threads NOT INDEXED "
            f"{_where([f'n IN ({marks})', *where])}"
        )
        for chunk in _chunks(sorted(threads)):
            rows += conn.execute(sql, (*chunk, *params)).fetchall()
        rows.sort(key=lambda row: (row[9], row[1]), reverse=True)  # activity, id
        return rows[:limit]

    @staticmethod
    def _walking(
        conn: sqlite3.Connection,
        candidates: set[int],
        needle: str,
        where: list[str],
        params: list[Any],
        limit: int,
    ) -> list[tuple[Any, ...]]:
        """The same as :meth:`_matching` for many candidates (a term found in many
        threads): the user's newest threads are walked a batch at a time in the ordered
        index, and only the candidates among their texts are checked (the index of
        ``docs`` says which texts a thread has), so that the texts read are those of the
        threads shown, or nearly. After ``_WALK`` threads, the candidates left (older
        threads) are all checked instead."""
        marks = ", ".join("?" * _IN_LIST)
        order = "ORDER BY activity DESC, id DESC LIMIT ?"
        first = f"SELECT n, activity, id FROM threads {_where(where)} {order}"
        older = _where([*where, "(activity, id) < (?, ?)"])
        after = f"SELECT n, activity, id FROM threads {older} {order}"
        texts = f"SELECT r, n FROM docs WHERE n IN ({marks})"
        check = f"SELECT n FROM docs WHERE r IN ({marks}) AND instr(doc, ?) > 0"
        found: list[int] = []
        walked = 0
        batch = conn.execute(first, (*params, _IN_LIST)).fetchall()
        while batch:
            mine = [r for r, _ in conn.execute(texts, _padded([n for n, _, _ in batch]))]
            mine = [r for r in mine if r in candidates]
            candidates.difference_update(mine)
            matched: set[int] = set()
            for chunk in _chunks(mine):
                matched.update(n for (n,) in conn.execute(check, (*chunk, needle)))
            found += [n for n, _, _ in batch if n in matched]
            walked += len(batch)
            key = (batch[-1][1], batch[-1][2])
            if len(found) >= limit or not candidates or walked >= _WALK:
                break
            batch = conn.execute(after, (*params, *key, _IN_LIST)).fetchall()
        rows: list[tuple[Any, ...]] = []
        for chunk in _chunks(found[:limit]):
            rows += conn.execute(
                f"SELECT {_THREAD_COLUMNS} FROM threads WHERE n IN ({marks})", chunk
            ).fetchall()
        rows.sort(key=lambda row: (row[9], row[1]), reverse=True)  # activity, id
        if len(rows) < limit and candidates and batch:
            rest = ThreadIndex._matching(
                conn,
                list(candidates),
                needle,
                [*where, "(activity, id) < (?, ?)"],
                [*params, *key],
                limit - len(rows),
            )
            rows += rest
        return rows[:limit]

    def _page_rows(
        self,
        db: _Db,
        conn: sqlite3.Connection,
        user_id: str | None,
        limit: int,
        cursor: str | None,
        search: str | None,
        feedback: int | None,
    ) -> list[tuple[Any, ...]]:
        where: list[str] = []
        params: list[Any] = []
        u: int | None = None
        if user_id is not None:
            u = db.user_no(user_id, create=False)
            if u is None:
                return []
            where.append("u = ?")
            params.append(u)
        if cursor:
            key = decode_cursor(cursor)
            if key is None:
                row = conn.execute(
                    "SELECT activity, id FROM threads WHERE id = ?", (cursor,)
                ).fetchone()
                key = None if row is None else (str(row[0]), str(row[1]))
            if key is not None:
                where.append("(activity, id) < (?, ?)")
                params += key
        if feedback is not None:
            if feedback not in (0, 1):
                return []
            where.append("fb1 > 0" if feedback else "fb0 > 0")
        order = "ORDER BY activity DESC, id DESC"
        if not search:
            sql = f"SELECT {_THREAD_COLUMNS} FROM threads {_where(where)} {order} LIMIT ?"
            return conn.execute(sql, (*params, limit)).fetchall()
        needle = searchable(search)
        matches = "EXISTS (SELECT 1 FROM docs d WHERE d.n = t.n AND instr(d.doc, ?) > 0)"
        scan = (
            f"SELECT {_THREAD_COLUMNS} FROM threads t {_where([*where, matches])} {order} LIMIT ?"
        )
        if db.fts and len(needle) >= 3 and fts5_available():
            # The rows of this user's texts holding every trigram of the term, and those
            # not in the trigram index yet: a few (a rare term, or none) are each checked
            # exactly, and their threads sorted.
            docs = "SELECT rowid FROM fts WHERE fts MATCH ?"
            queued = "SELECT r FROM fts_todo"
            doc_params: list[Any] = [_fts_query(needle)]
            if u is not None:
                low, high = u << _USER_BITS, ((u + 1) << _USER_BITS) - 1
                docs += " AND rowid BETWEEN ? AND ?"
                queued += f" WHERE r BETWEEN {low} AND {high}"
                doc_params += [low, high]
            found = conn.execute(f"{docs} LIMIT ?", (*doc_params, _FTS_CANDIDATES + 1))
            candidates = [r for (r,) in found]
            if len(candidates) <= _FTS_CANDIDATES:
                candidates += [r for (r,) in conn.execute(queued)]
                if u is None or len(candidates) <= _CHECK_ALL:
                    return self._matching(conn, candidates, needle, where, params, limit)
                return self._walking(conn, set(candidates), needle, where, params, limit)
        # A common term (or a short one, or a Python without FTS5): the threads are
        # checked newest first, and a common term fills the page after a few of them.
        return conn.execute(scan, (*params, needle, limit)).fetchall()


def _padded(values: list[Any]) -> list[Any]:
    return values + [None] * (_IN_LIST - len(values))


def _chunks(values: list[Any]) -> Iterator[list[Any]]:
    """``values`` in lists of ``_IN_LIST`` (the last one padded with NULLs): one SQL
    text for every ``IN`` list, which SQLite prepares once."""
    for start in range(0, len(values), _IN_LIST):
        chunk = values[start : start + _IN_LIST]
        yield chunk + [None] * (_IN_LIST - len(chunk))


def _where(conditions: list[str]) -> str:
    return ("WHERE " + " AND ".join(conditions)) if conditions else ""


class _ThreadsView(Mapping[str, ThreadSummary]):
    """``index.threads``: a read-only mapping that builds summaries on access."""

    def __init__(self, index: ThreadIndex) -> None:
        self._index = index

    def __getitem__(self, thread_id: str) -> ThreadSummary:
        found = self._index._thread(thread_id) if isinstance(thread_id, str) else None
        if found is None:
            raise KeyError(thread_id)
        return found

    def __contains__(self, thread_id: object) -> bool:
        return isinstance(thread_id, str) and self._index._thread(thread_id) is not None

    def _all(self) -> list[ThreadSummary]:
        index = self._index
        with index._reading() as db:
            if db is None:
                return []
            rows = db.conn.execute(f"SELECT {_THREAD_COLUMNS} FROM threads ORDER BY id").fetchall()
            return [index._summary(db, row) for row in rows]
        return []

    def __iter__(self) -> Iterator[str]:
        with self._index._reading() as db:
            if db is None:
                return iter([])
            return iter([str(t) for (t,) in db.conn.execute("SELECT id FROM threads ORDER BY id")])
        return iter([])

    def __len__(self) -> int:
        with self._index._reading() as db:
            if db is None:
                return 0
            return int(db.conn.execute("SELECT count(*) FROM threads").fetchone()[0])
        return 0

    def keys(self) -> KeysView[str]:
        return KeysView(self)

    def values(self) -> ValuesView[ThreadSummary]:
        return _Values(self._all())

    def items(self) -> ItemsView[str, ThreadSummary]:
        return _Items({s.id: s for s in self._all()})


class _Values(ValuesView[ThreadSummary]):
    def __init__(self, summaries: list[ThreadSummary]) -> None:
        super().__init__({s.id: s for s in summaries})


class _Items(ItemsView[str, ThreadSummary]):
    pass
