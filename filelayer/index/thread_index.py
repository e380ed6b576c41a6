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
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    ValuesView,
)
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._io import fs as _fs
from .._io import locks as _locks
from .._io.fs import temp_path
from ..errors import ArchiveLockTimeout, StorageWriteError
from ..format import codec as _codec
from .db import (
    _ERRNO,
    _FTS_CANDIDATES,
    _SQLITE_BUSY,
    _SQLITE_LOCKED,
    _THREAD_COLUMNS,
    _USER_BITS,
    _Db,
    _fts_query,
    _is_damage,
    fts5_available,
)
from .records import searchable
from .summary import ThreadSummary

log = logging.getLogger("filelayer")


POINTER_FILE = "current"
LEGACY_FILE = "threads.jsonl"
_NAME = re.compile(r"threads-[0-9a-f]{16}\.sqlite")
_SIDE_FILES = ("", "-wal", "-shm", "-journal")


_NEWEST_CHUNK = 2000

_CHECK_ALL = 128
"""Up to this many candidate texts are all checked; beyond, the user's threads are
walked newest first and only their candidates checked, until the page is full."""

_WALK = 1024
"""Threads walked before the candidates left are all checked (see ``_walking``)."""

_IN_LIST = 256
"""Values bound in one ``IN (...)`` list (SQLite allows 999 in its oldest builds)."""


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
        self._marks: list[tuple[str, str, str]] = []  # compare-and-sets not applied yet

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

    def take_marks_added(self) -> bool:
        """Whether the current database was opened without watermarks (made by a
        version before them): every thread needs reading once. Answered once."""
        with self._lock:
            db = self._current()
            if db is None or not db.marks_added:
                return False
            db.marks_added = False
            return True

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
                    self._apply_marks(db)
                    for r in batch:
                        db.apply(r)
            except sqlite3.Error as exc:
                self._write_failed(db, exc)

    def put(self, thread_id: str, summary: ThreadSummary | None, mark: str | None = None) -> None:
        """Make the index hold exactly ``summary`` for ``thread_id`` (``None``: nothing),
        and ``mark`` as the watermark of the files it was read from."""
        with self._lock:
            db = self._writable()
            if db is None:
                return
            try:
                with db.write():
                    self._apply_marks(db)
                    if summary is None:
                        db.delete_thread(thread_id)
                        if mark is not None:  # files without a thread (no manifest)
                            db.conn.execute(
                                "INSERT INTO marks (id, mark) VALUES (?, ?)", (thread_id, mark)
                            )
                    else:
                        db.put(summary, mark)
            except sqlite3.Error as exc:
                self._write_failed(db, exc)

    # -- watermarks (see db._MARKS_SCHEMA) -----------------------------------------

    _MARKS_BATCH = 64

    def note_mark(self, thread_id: str, old: str, new: str) -> None:
        """A write to ``thread_id`` found its files at watermark ``old`` and left them at
        ``new``, its index records (if any) already applied: the stored watermark moves
        to ``new`` if it is ``old``. Applied with this process's next index transaction
        (a crash before that only leaves the watermark behind: the thread is read again)."""
        with self._lock:
            self._marks.append((thread_id, old, new))
            if len(self._marks) < self._MARKS_BATCH:
                return
        self.flush_marks()

    def flush_marks(self) -> None:
        """Apply the noted watermark changes now (at close, or when many are waiting)."""
        with self._lock:
            if not self._marks:
                return
            db = self._current()
            if db is None or db.readonly:
                self._marks.clear()
                return
            try:
                with db.write():
                    self._apply_marks(db)
            except sqlite3.Error as exc:  # they only save reads: never worth failing for
                log.debug("filelayer: watermarks not stored (%s)", exc)
                self._marks.clear()

    def _apply_marks(self, db: _Db) -> None:
        if self._marks:
            db.apply_marks(self._marks)
            self._marks.clear()

    def sync(self) -> None:
        """fsync the current database and its write-ahead log: the index is derived and
        its commits are not fsynced one by one; a writer that ends its session makes
        them durable once (see :mod:`filelayer.store.heal`)."""
        with self._lock:
            db = self._current()
            if db is None or db.readonly:
                return
            for suffix in ("-wal", ""):
                try:
                    fd = os.open(f"{db.path}{suffix}", os.O_RDONLY)
                except FileNotFoundError:
                    continue
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

    def marks(self) -> dict[str, str]:
        """Every stored watermark by thread id."""
        with self._reading() as db:
            if db is None:
                return {}
            try:
                return dict(db.conn.execute("SELECT id, mark FROM marks"))
            except sqlite3.OperationalError:  # a read-only database from before marks
                return {}
        return {}

    def indexed_ids(self) -> set[str]:
        """Every thread id the index holds."""
        with self._reading() as db:
            if db is None:
                return set()
            return {r for (r,) in db.conn.execute("SELECT id FROM threads")}
        return set()

    def threads_by_identifier(self, wanted: Callable[[str], bool]) -> set[str]:
        """The ids of the threads whose indexed user identifier satisfies ``wanted``
        (the reconciler asks for those whose user file changed): one pass over the
        distinct identifiers, then the threads of the few that match."""
        with self._reading() as db:
            if db is None:
                return set()
            idents = [
                i
                for (i,) in db.conn.execute("SELECT DISTINCT ident FROM threads")
                if isinstance(i, str) and wanted(i)
            ]
            ids: set[str] = set()
            for ident in idents:
                ids.update(
                    r
                    for (r,) in db.conn.execute("SELECT id FROM threads WHERE ident = ?", (ident,))
                )
            return ids
        return set()

    def meta(self, key: str) -> str | None:
        """A value of the ``meta`` table (the reconciler keeps its own there)."""
        with self._reading() as db:
            if db is None:
                return None
            row = db.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return None if row is None else str(row[0])
        return None

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            db = self._writable()
            if db is None:
                return
            try:
                with db.write():
                    db.conn.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value)
                    )
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

    def rebuild(
        self,
        summaries: Iterable[ThreadSummary],
        *,
        replace: bool = True,
        marks: Mapping[str, str] | None = None,
    ) -> int:
        """Write a whole new index from ``summaries`` (a generator over 100,000 threads
        is fine: nothing is kept in memory) into a new file, then make it the current
        one (under ``index.lock``, for milliseconds). Returns the thread count.

        Writes that other processes make to the old file meanwhile are not carried
        over: the caller catches up with them from the thread directories.
        ``marks``: the watermark each thread's files had when it was read.
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
                    db.put(summary, None if marks is None else marks.get(summary.id))
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
        return ThreadSummary.lazy(
            tid,
            self,
            user_id=db.user_of(int(u)),
            user_identifier=ident,
            name=name,
            created_at=created,
            updated_at=updated,
            tags=decoded if isinstance(decoded, list) else None,
            activity=activity,
            last=last,
        )

    def _thread(self, thread_id: str) -> ThreadSummary | None:
        with self._reading() as db:
            if db is None:
                return None
            row = db.conn.execute(
                f"SELECT {_THREAD_COLUMNS} FROM threads WHERE id = ?", (thread_id,)
            ).fetchone()
            return None if row is None else self._summary(db, row)
        return None

    def text(self, thread_id: str, step_id: str) -> tuple[str, str] | None:
        """(time, searchable text) of one message of a thread, ``None`` if the index
        does not hold it (what a writer compares a new text with)."""
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

    def texts_of(self, thread_id: str) -> dict[str, tuple[str, str]]:
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

    def feedback_of(self, thread_id: str) -> dict[str, tuple[str, int]]:
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

    def favorites_of_thread(self, thread_id: str) -> set[str]:
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
