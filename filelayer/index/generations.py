"""Which index database is current: ``index/current`` names it, this process holds it
open, notices when another process switched to a new one, and switches itself.

One database per generation: a rebuild writes a new file and switches the one-line
pointer under ``locks/index.lock``, and the old file is removed. Renaming a new
database over the old path instead would be unsafe: SQLite names its write-ahead log
and shared-memory files after the database, so a process still holding the old file
open and a process opening the new one would share one log."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._io import fs as _fs
from .._io import locks as _locks
from ..errors import ArchiveLockTimeout, StorageWriteError
from .db import SQLITE_BUSY, SQLITE_ERRNO, SQLITE_LOCKED, _Db, is_damage

log = logging.getLogger("filelayer")

POINTER_FILE = "current"
LEGACY_FILE = "threads.jsonl"
NAME = re.compile(r"threads-[0-9a-f]{16}\.sqlite")
"""The file name of a generation."""
SIDE_FILES = ("", "-wal", "-shm", "-journal")
"""The suffixes of a database's files: itself and what SQLite names after it."""


class Generations:
    """The current database of one archive's index, as this process sees it.

    Every use goes through :meth:`reading` or, under :attr:`lock`, :meth:`writable`:
    both look at ``index/current`` first (one ``stat``), so a switch by another process
    is seen at the next call. A database found damaged is dropped and not opened again
    until a new generation replaces it. ``lock`` serialises the threads of the process
    (the connection is shared); the reader, the writer and the pages all take it.
    """

    def __init__(self, directory: Path, lock_path: Path, *, lock_timeout: float) -> None:
        self.directory = directory
        self.pointer = directory / POINTER_FILE
        self.lock_path = lock_path
        self.lock_timeout = lock_timeout
        self.lock = threading.RLock()
        self._db: _Db | None = None
        self._pointer_id: tuple[int, int, int] | None = None
        self._damaged: str | None = None  # the generation found damaged
        self._closer: weakref.finalize[Any, Any] | None = None

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
        if not NAME.fullmatch(name):
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size), name

    def current(self) -> _Db | None:
        """The database ``index/current`` names, open (reopened if it changed). Called
        under :attr:`lock`."""
        db = self._db
        try:
            st = os.stat(self.pointer)
        except OSError:
            if db is not None:
                self.drop()
            return None
        if (
            db is not None
            and (st.st_ino, st.st_mtime_ns, st.st_size) == self._pointer_id
            and db.pid == os.getpid()
        ):
            return db
        found = self._read_pointer()
        if found is None:
            self.drop()
            return None
        pointer_id, name = found
        path = self.directory / name
        if db is not None and db.path == path and db.pid == os.getpid():
            self._pointer_id = pointer_id
            return db
        # Another process switched to a new generation. Closing the last connection to
        # the old one folds its write-ahead log into a file nobody will read again:
        # work this call (maybe on an event loop) does not wait for.
        self.drop(aside=True)
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

    def opened(self) -> _Db | None:
        """The database this process has open, if any, without looking at
        ``index/current`` nor taking :attr:`lock` (for a look at a flag of it)."""
        return self._db

    def seen(self) -> str | None:
        """The name of the generation this process uses now (looked up only if it has
        none open): what a write's index rows go to, unless it sees a switch first."""
        with self.lock:
            db = self._db
            if db is None or db.pid != os.getpid():
                db = self.current()
            return None if db is None else db.path.name

    def exists(self) -> bool:
        """Whether there is a usable index (of this format) to open."""
        with self.lock:
            return self.current() is not None

    def refresh(self) -> None:
        """Look at ``index/current`` again (one ``stat``)."""
        with self.lock:
            self.current()

    def close(self) -> None:
        """Close the database (the next call opens it again)."""
        with self.lock:
            self.drop()

    def drop(self, *, aside: bool = False) -> None:
        """Close the database; called under :attr:`lock` (see :meth:`close`).
        ``aside``: in a thread of its own, the caller does not wait for it."""
        if self._closer is not None:
            if self._db is not None and self._db.pid != os.getpid():
                self._closer.detach()  # the parent's connection: never closed by a child
            elif aside and self._closer.detach() is not None and self._db is not None:
                threading.Thread(
                    target=self._db.close, name="filelayer-index-close", daemon=True
                ).start()
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
        self.drop()

    @property
    def damaged(self) -> bool:
        """Whether the current database was found damaged (it needs a rebuild)."""
        if self._damaged is None:
            return False
        with self.lock:
            found = self._read_pointer()
            return found is not None and found[1] == self._damaged

    def take_marks_added(self) -> bool:
        """Whether the current database was opened without watermarks (made by a
        version before them): every thread needs reading once. Answered once."""
        with self.lock:
            db = self.current()
            if db is None or not db.marks_added:
                return False
            db.marks_added = False
            return True

    @contextlib.contextmanager
    def reading(self) -> Iterator[_Db | None]:
        """The current database for a read, ``None`` without one; damage is logged and
        reads as an empty index (the block is left, and the caller's default follows)."""
        with self.lock:
            db = self.current()
            try:
                yield db
            except sqlite3.DatabaseError as exc:
                if db is None or not is_damage(exc):
                    raise
                self._damage(db, exc)

    def writable(self) -> _Db | None:
        """The current database for a write (called under :attr:`lock`), ``None``
        without one; ``StorageWriteError`` if it can only be read."""
        db = self.current()
        if db is not None and db.readonly:  # the file system may be writable again
            self.drop()
            db = self.current()
            if db is not None and db.readonly:
                raise StorageWriteError(db.path, OSError(errno.EROFS, os.strerror(errno.EROFS)))
        return db

    def write_failed(self, db: _Db, exc: sqlite3.Error) -> None:
        """A write to ``db`` failed: damage drops the database (the write is lost with
        it, a rebuild brings it back); anything else is raised as the project's error."""
        if is_damage(exc):
            self._damage(db, exc)
            return
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code in (SQLITE_BUSY, SQLITE_LOCKED):
            raise ArchiveLockTimeout(db.path, self.lock_timeout) from exc
        number = SQLITE_ERRNO.get(code, errno.EIO)
        raise StorageWriteError(db.path, OSError(number, str(exc))) from exc

    def switch(self, built: Path, name: str, *, replace: bool) -> None:
        """Make the database ``built`` the current one, named ``name``, and remove the
        files of the others (a process still reading one keeps it until it notices).
        ``replace=False`` keeps a usable current database instead, dropping ``built``."""
        with _locks.locked(self.lock_path, self.lock_timeout):
            if not replace:
                with self.lock:
                    self._damaged = None
                    if self.current() is not None:
                        os.unlink(built)
                        return
            os.replace(built, self.directory / name)
            _fs.atomic_write(self.pointer, (name + "\n").encode("ascii"))
            for entry in os.scandir(self.directory):
                base = entry.name
                for suffix in SIDE_FILES[1:]:
                    base = base.removesuffix(suffix)
                stale = NAME.fullmatch(base) and base != name
                if stale or entry.name == LEGACY_FILE:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
        with self.lock:
            self._damaged = None
            self.current()
