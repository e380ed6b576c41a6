"""The index database: the SQLite schema, its trigram search table, and :class:`_Db`,
one open connection with the statements that fold records into rows.

:class:`~filelayer.index.thread_index.ThreadIndex` decides which database is current
and answers queries; this module owns the rows."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
from collections.abc import (
    Iterable,
    Iterator,
    Mapping,
)
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..format import codec as _codec
from .records import searchable
from .summary import ThreadSummary
from .wal import _Checkpointer

log = logging.getLogger("filelayer")

INDEX_FORMAT = 2
"""The layout of the index database (1 was the JSON-lines log ``index/threads.jsonl``).
A database of another format is not opened: it is rebuilt from the thread directories."""


_USER_BITS = 32
"""The row ids of a user's searchable texts are ``u << 32 | n``: one range per user."""

_FTS_CANDIDATES = 2000
"""A term whose trigrams are all in more of a user's texts than this is common: its
threads are checked newest first (the page fills after a few), instead of checking
every text the trigram index names."""

_TRIGRAMS_MAX = 24
"""At most this many of a term's trigrams are looked up (the rest only narrow down
what the exact check that follows decides anyway)."""


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

_MARKS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS marks (id TEXT PRIMARY KEY, mark TEXT NOT NULL) WITHOUT ROWID"
)
"""Per thread, the watermark of its files (:func:`filelayer.store.heal.watermark`) that the
thread's rows are known to agree with. Added to a database of format 2 in place when a
writer opens it (a database without it has no watermarks: every thread is read again by
the next reconcile), so that filelayer versions before it keep using the same file.

The invariant the reconciler rests on: a thread whose files have the watermark stored
here has rows that say what its files say. It is kept by setting a watermark only in
the transaction that writes the rows it vouches for (a rebuild, a reconcile), or by a
compare-and-set from the watermark a write found to the one it left, applied after the
write's own rows (see :meth:`ThreadIndex.note_mark`). Anything else leaves a watermark
that differs from the files, which only costs a read of the thread."""

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

ABSENT = "0:0:0/0:0:0"
"""The watermark of a thread with no files (see :func:`filelayer.store.heal.watermark`)."""

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
        self.marks_added = False  # opened a database from before watermarks: added now

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
            marks_added = False
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if meta.get("format") != str(INDEX_FORMAT):
                raise LookupError(f"index format {meta.get('format')!r}")
            fts = meta.get("fts") == "1"
            if (
                not readonly
                and not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'marks'").fetchone()
            ):
                conn.execute(_MARKS_SCHEMA)
                marks_added = True
        except BaseException:
            conn.close()
            raise
        db = cls(conn, path, fts=fts, readonly=readonly)
        db.timeout = timeout
        db.marks_added = marks_added
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
        conn.execute(_MARKS_SCHEMA)
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
        self.conn.execute("DELETE FROM marks WHERE id = ?", (tid,))
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

    def apply_marks(self, changes: Iterable[tuple[str, str, str]]) -> None:
        """Compare-and-set watermarks, in the order the writes made them: (thread id,
        the one a write found, the one it left); a thread whose stored watermark is not
        the first keeps it. A thread whose files did not exist gets the one its first
        write left, unless one is stored (a thread removed behind the index's back)."""
        conn = self.conn
        for tid, old, new in changes:
            if old == ABSENT:
                conn.execute("INSERT OR IGNORE INTO marks (id, mark) VALUES (?, ?)", (tid, new))
            else:
                conn.execute("UPDATE marks SET mark = ? WHERE id = ? AND mark = ?", (new, tid, old))

    def put(self, summary: ThreadSummary, mark: str | None = None) -> None:
        """Make the index hold exactly ``summary`` for its thread, and ``mark`` as the
        watermark of the files it was read from (none: unknown)."""
        self.delete_thread(summary.id)
        if mark is not None:
            self.conn.execute("INSERT INTO marks (id, mark) VALUES (?, ?)", (summary.id, mark))
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
