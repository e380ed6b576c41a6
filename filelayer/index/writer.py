"""The write side of the index: a write's records, a thread's whole summary, the
watermarks writes leave, and a whole new generation (a rebuild).

Every change is one transaction on the current database (:meth:`_Db.write`), and what
is folded into which table is :class:`~filelayer.index.rows.Rows`' business. Without
an index (none made yet, or the current one damaged) a write is dropped: the next
rebuild or reconcile reads everything from the thread directories."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

from .._io import commit as _commit
from .._io import locks as _locks
from .._io.fs import temp_path
from ..errors import StorageWriteError
from .db import _Db, fts5_available
from .generations import SIDE_FILES, Generations
from .summary import ThreadSummary

log = logging.getLogger("filelayer")


class IndexWriter:
    """Changes the current database of ``generations``, one transaction each.

    Watermark changes noted by :meth:`note_mark` wait here and ride along with this
    process's next transaction (see ``schema.MARKS_SCHEMA`` for the invariant)."""

    _MARKS_BATCH = 64

    def __init__(self, generations: Generations) -> None:
        self.generations = generations
        self._marks: list[tuple[str, str, str, str | None]] = []
        """Compare-and-sets not applied yet, each with the generation it vouches for."""

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Apply ``records`` in one transaction (nothing when there is no index yet:
        the next rebuild reads everything from the thread directories)."""
        batch = list(records)
        if not batch:
            return
        gen = self.generations
        with gen.lock:
            db = gen.writable()
            if db is None:
                return
            try:
                with db.write():
                    self._apply_marks(db)
                    rows = db.rows
                    for r in batch:
                        rows.apply(r)
            except sqlite3.Error as exc:
                gen.write_failed(db, exc)

    def put(self, thread_id: str, summary: ThreadSummary | None, mark: str | None = None) -> None:
        """Make the index hold exactly ``summary`` for ``thread_id`` (``None``: nothing),
        and ``mark`` as the watermark of the files it was read from."""
        gen = self.generations
        with gen.lock:
            db = gen.writable()
            if db is None:
                return
            try:
                with db.write():
                    self._apply_marks(db)
                    if summary is None:
                        db.rows.put_absent(thread_id, mark)
                    else:
                        db.rows.put(summary, mark)
            except sqlite3.Error as exc:
                gen.write_failed(db, exc)

    def set_meta(self, key: str, value: str) -> None:
        gen = self.generations
        with gen.lock:
            db = gen.writable()
            if db is None:
                return
            try:
                with db.write():
                    db.rows.set_meta(key, value)
            except sqlite3.Error as exc:
                gen.write_failed(db, exc)

    # -- watermarks (see schema.MARKS_SCHEMA) --------------------------------------

    def note_mark(self, thread_id: str, old: str, new: str, generation: str | None) -> None:
        """A write to ``thread_id`` found its files at watermark ``old`` and left them at
        ``new``, its index records (if any) already applied: the stored watermark moves
        to ``new`` if it is ``old``. Applied with this process's next index transaction
        (a crash before that only leaves the watermark behind: the thread is read again).

        ``generation``: the database the process used when the write began. The
        compare-and-set vouches for the write's rows, so it is applied to that database
        only: after a rebuild switched in a new one, whose rows were read before the
        write, it is dropped (the thread is then read again, never wrongly trusted)."""
        with self.generations.lock:
            self._marks.append((thread_id, old, new, generation))
            if len(self._marks) < self._MARKS_BATCH:
                return
        self.flush_marks()

    def flush_marks(self) -> None:
        """Apply the noted watermark changes now (at close, or when many are waiting).
        On the event loop only if the database's write lock is free: else they wait
        for the next transaction (they only save reads)."""
        gen = self.generations
        with gen.lock:
            if not self._marks:
                return
            db = gen.current()
            if db is None or db.readonly:
                self._marks.clear()
                return
            mine = _commit.on_loop() and not db.reserved
            if mine and not db.reserve_nowait():
                return
            try:
                with db.write():
                    self._apply_marks(db)
                if mine:
                    db.release(commit=True)
            except sqlite3.Error as exc:  # they only save reads: never worth failing for
                log.debug("filelayer: watermarks not stored (%s)", exc)
                self._marks.clear()

    def _apply_marks(self, db: _Db) -> None:
        if self._marks:
            name = db.path.name
            db.rows.apply_marks([(t, old, new) for t, old, new, g in self._marks if g == name])
            self._marks.clear()

    def reserved(self) -> _Reserved:
        """Hold the current database's write lock for a block, taken now without
        waiting (:class:`~filelayer._io.locks.LockBusy` if another thread or process
        holds it, before the block ran): for a write on the event loop, which then runs
        again in a worker thread. The block's index changes are made in that
        transaction; it is committed at the end (rolled back if the block raised before
        making any). Nothing when a transaction is open already (an outer block's)."""
        return _Reserved(self.generations)

    def upkeep_due(self) -> bool:
        """Whether a commit on the event loop left the trigram index's upkeep for
        :meth:`upkeep` (no lock taken: a look at a flag)."""
        db = self.generations.opened()
        return db is not None and db.upkeep_due

    def upkeep(self) -> None:
        """Apply the queue of texts to the trigram index, if it was left for this."""
        gen = self.generations
        with gen.lock:
            db = gen.current()
            if db is not None and not db.readonly and db.upkeep_due:
                db.upkeep()

    def sync(self) -> None:
        """fsync the current database and its write-ahead log: the index is derived and
        its commits are not fsynced one by one; a writer that ends its session makes
        them durable once (see :mod:`filelayer.store.heal`)."""
        with self.generations.lock:
            db = self.generations.current()
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

    # -- a new generation ----------------------------------------------------------

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
        directory = self.generations.directory
        directory.mkdir(parents=True, exist_ok=True)
        name = f"threads-{secrets.token_hex(8)}.sqlite"
        tmp = temp_path(directory / name)
        count = 0
        try:
            db = _Db.create(tmp, fts=fts5_available())
            try:
                for summary in summaries:
                    db.rows.put(summary, None if marks is None else marks.get(summary.id))
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
            self.generations.switch(tmp, name, replace=replace)
        except BaseException as exc:
            for suffix in SIDE_FILES:
                with contextlib.suppress(OSError):
                    os.unlink(f"{tmp}{suffix}")
            if isinstance(exc, sqlite3.Error):
                raise StorageWriteError(tmp, OSError(0, str(exc))) from exc
            raise
        return count


class _Reserved:
    """The block of :meth:`IndexWriter.reserved` (a class: it runs for every write on
    the event loop, where a generator's overhead counts)."""

    __slots__ = ("db", "gen")

    def __init__(self, gen: Generations) -> None:
        self.gen = gen
        self.db: _Db | None = None

    def __enter__(self) -> None:
        gen = self.gen
        if not gen.lock.acquire(blocking=False):
            raise _locks.LockBusy(gen.directory)
        try:
            db = gen.opened()
            if db is None or db.pid != os.getpid():
                db = gen.current()
            if db is None or db.readonly or db.conn.in_transaction:
                return
            if not db.reserve_nowait():
                raise _locks.LockBusy(db.path)
            self.db = db
        except BaseException:
            gen.lock.release()
            raise

    def __exit__(self, kind: object, value: object, tb: object) -> None:
        db, self.db = self.db, None
        try:
            if db is not None:
                try:
                    db.release(commit=kind is None)
                except sqlite3.Error as exc:  # the commit of the block's index changes
                    self.gen.write_failed(db, exc)
        finally:
            self.gen.lock.release()
