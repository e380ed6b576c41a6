"""One open index database (:class:`_Db`): opening and creating it, its transactions,
and the upkeep that follows a commit (the trigram index's queue, the checkpoint).

What the tables hold is :mod:`~filelayer.index.schema`; the statements that fold writes
into them are :mod:`~filelayer.index.rows`; which database is current is
:mod:`~filelayer.index.generations`."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from .._io import commit as _commit
from .rows import Rows, SearchTexts, UserNumbers
from .schema import FTS_SCHEMA, INDEX_FORMAT, MARKS_SCHEMA, SCHEMA
from .wal import _Checkpointer

log = logging.getLogger("filelayer")

_TODO_BATCH = 64
"""Queued texts applied to the trigram index together (see ``schema.FTS_SCHEMA``)."""

_WAL_LOOK_EVERY = 32
"""Commits between two looks at the size of the write-ahead log."""
_WAL_CHECKPOINT_BYTES = 4 << 20
"""A log this large is folded back into the database, by a thread of its own."""
_WAL_AUTOCHECKPOINT_PAGES = 16384
"""SQLite folds the log itself, inside a commit, only beyond this (64 MB): if the
thread cannot keep up."""

SQLITE_BUSY, SQLITE_LOCKED = 5, 6
SQLITE_ERRNO = {3: errno.EACCES, 8: errno.EROFS, 13: errno.ENOSPC, 14: errno.EACCES}
"""SQLite's primary result codes (PERM, READONLY, FULL, CANTOPEN) as the errno a
failed write of a file would have given."""

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


def is_damage(exc: sqlite3.Error) -> bool:
    """A damaged or foreign file (as opposed to a busy lock, a full disk or a bug): one
    SQLite cannot read, or one that lacks a table or column of the index (a hand or
    another program dropped it; this release's schema has every one)."""
    if type(exc) is sqlite3.DatabaseError:
        return True
    return type(exc) is sqlite3.OperationalError and str(exc).startswith(_MISSING_SCHEMA)


_MISSING_SCHEMA = ("no such table:", "no such column:")


class _Db:
    """One open index database (one generation) and what this process caches of it:
    the user numbers (:attr:`users`), the searchable texts (:attr:`texts`) and the
    statements that fold writes into rows (:attr:`rows`) all use its connection."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        *,
        fts: bool,
        readonly: bool = False,
        building: bool = False,
    ) -> None:
        self.conn = conn
        self.path = path
        self.fts = fts  # the database has a trigram index (kept by FTS5-capable processes)
        self.readonly = readonly  # opened on a read-only file system
        self.pid = os.getpid()
        self.commits = 0
        self.checkpointer: _Checkpointer | None = None
        self.timeout = 5.0
        self.marks_added = False  # opened a database from before watermarks: added now
        self.folded_ids = building
        """It has the index of thread ids folded to lowercase (``schema.SCHEMA``), which
        a database made by an earlier release lacks (until the next rebuild)."""
        self.upkeep_due = False
        self.reserved = False
        """A write transaction is open that :meth:`reserve_nowait` began (a write on the
        event loop, before it changed anything): the next :meth:`write` block runs in it
        and commits it."""
        """The queue of texts is long enough to apply, and a commit on the event loop
        left it for :meth:`upkeep` (the adapter's maintenance thread)."""
        self.users = UserNumbers(conn)
        self.texts = SearchTexts(conn, fts=fts, building=building)
        self.rows = Rows(conn, self.users, self.texts)

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
            folded_ids = bool(
                conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'threads_folded'").fetchone()
            )
            if (
                not readonly
                and not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'marks'").fetchone()
            ):
                conn.execute(MARKS_SCHEMA)
                marks_added = True
        except BaseException:
            conn.close()
            raise
        db = cls(conn, path, fts=fts, readonly=readonly)
        db.timeout = timeout
        db.marks_added = marks_added
        db.folded_ids = folded_ids
        return db

    @classmethod
    def create(cls, path: Path, *, fts: bool) -> _Db:
        """A new empty database at ``path`` (a temporary name, renamed into place once
        filled): no journal while it is built, nobody else sees it."""
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        for statement in SCHEMA:
            conn.execute(statement)
        conn.execute(MARKS_SCHEMA)
        if fts:
            conn.execute(FTS_SCHEMA)
        conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [("format", str(INDEX_FORMAT)), ("fts", "1" if fts else "0")],
        )
        return cls(conn, path, fts=fts, building=True)

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

    def reserve_nowait(self) -> bool:
        """Begin a write transaction now if no other connection holds the database's
        write lock, without waiting for it (``False``: held elsewhere). For a write on
        the event loop: it takes the lock before it changes any file, so that it never
        waits for another process's transaction on the loop (a segment merge of the
        trigram index took 141 ms at 100,000 threads), nor fails at the lock's timeout
        after its thread's files changed."""
        conn = self.conn
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorname", "") in ("SQLITE_BUSY", "SQLITE_LOCKED"):
                return False
            raise
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        self.reserved = True
        return True

    def release(self, *, commit: bool) -> None:
        """End the transaction :meth:`reserve_nowait` began: committed with what the
        :meth:`write` blocks made in it (nothing, for a write with no index rows), or
        rolled back."""
        if not self.reserved:
            return
        self.reserved = False
        if not commit:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            self.users.forget()
            return
        try:
            self.conn.execute("COMMIT")
        except sqlite3.ProgrammingError:  # closed meanwhile (a switch): rolled back
            return
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            self.users.forget()
            raise
        self._committed()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        """One transaction; inside one that :meth:`reserve_nowait` began, a part of it
        (committed by :meth:`release`, so that a write's index changes are one)."""
        conn = self.conn
        reserved = self.reserved
        if not reserved:
            conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.reserved = False
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self.users.forget()
            raise
        if not reserved:
            conn.execute("COMMIT")
            self._committed()

    def _committed(self) -> None:
        """What follows a commit: the trigram index's upkeep when its queue is long,
        a look at the size of the write-ahead log now and then."""
        self.commits += 1
        if self.texts.queued >= _TODO_BATCH and fts5_available():
            if _commit.on_loop():
                # A merge of the trigram index's segments took 141 ms at 100,000
                # threads: not on the event loop (searches read the queue meanwhile).
                self.upkeep_due = True
            else:
                self.upkeep()
        if self.commits % _WAL_LOOK_EVERY == 0:
            self._look_at_the_log()

    def upkeep(self) -> None:
        """Apply the queue of texts to the trigram index, if a commit found it long
        enough; a failure only leaves it for the next batch (the write is done)."""
        if self.texts.queued < _TODO_BATCH:
            return
        self.texts.queued = 0
        self.upkeep_due = False
        try:
            self.apply_todo()
        except sqlite3.Error as exc:
            log.debug("filelayer: the trigram index queue waits (%s)", exc)

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
        """One snapshot for a read made of several statements (the transaction a write
        reserved, if one is open: see :meth:`reserve_nowait`)."""
        conn = self.conn
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("COMMIT")
