"""The read side of the index, one thread or one question at a time: a thread's
summary and what it lazily reads (texts, feedback, favorites), who owns a feedback,
a user's favorites, the stored watermarks and meta values, and the thread ids in
orders the store and the reconciler ask for. Pages of the sidebar are
:mod:`~filelayer.index.pages`.

Every read goes through :meth:`Generations.reading`: without a database, or with a
damaged one, it answers as an empty index would."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import (
    Callable,
    ItemsView,
    Iterator,
    KeysView,
    Mapping,
    ValuesView,
)
from typing import Any

from .._io import commit as _commit
from ..format import codec as _codec
from .db import _Db
from .generations import Generations
from .schema import THREAD_COLUMNS
from .summary import ThreadSummary

_LOOP_SCAN_THREADS = 2000
"""Threads whose ids a lookup on the event loop may scan (a database without the index
of ids folded to lowercase): about half a millisecond."""

_NEWEST_CHUNK = 2000
"""Thread ids read at a time by :meth:`IndexReader.newest_first`."""


class IndexReader:
    """Answers about the rows of the current database of ``generations``. It is the
    :class:`~filelayer.index.summary.SummaryLoader` of the summaries it hands out."""

    def __init__(self, generations: Generations) -> None:
        self.generations = generations

    # -- summaries -----------------------------------------------------------------

    def summary(self, db: _Db, row: tuple[Any, ...]) -> ThreadSummary:
        """The lazy summary of a ``threads`` row (its ``THREAD_COLUMNS``)."""
        _, tid, u, ident, name, tags, created, updated, last, activity = row
        decoded = None
        if tags is not None:
            with contextlib.suppress(*_codec.DecodeError):
                decoded = _codec.decode(tags)
        return ThreadSummary.lazy(
            tid,
            self,
            user_id=db.users.user_of(int(u)),
            user_identifier=ident,
            name=name,
            created_at=created,
            updated_at=updated,
            tags=decoded if isinstance(decoded, list) else None,
            activity=activity,
            last=last,
        )

    def thread(self, thread_id: str) -> ThreadSummary | None:
        with self.generations.reading() as db:
            if db is None:
                return None
            row = db.conn.execute(
                f"SELECT {THREAD_COLUMNS} FROM threads WHERE id = ?", (thread_id,)
            ).fetchone()
            return None if row is None else self.summary(db, row)
        return None

    def all_summaries(self) -> list[ThreadSummary]:
        """Every thread's summary, by id."""
        with self.generations.reading() as db:
            if db is None:
                return []
            rows = db.conn.execute(f"SELECT {THREAD_COLUMNS} FROM threads ORDER BY id").fetchall()
            return [self.summary(db, row) for row in rows]
        return []

    # -- what a lazy summary reads (SummaryLoader) ---------------------------------

    def text(self, thread_id: str, step_id: str) -> tuple[str, str] | None:
        """(time, searchable text) of one message of a thread, ``None`` if the index
        does not hold it (what a writer compares a new text with)."""
        with self.generations.reading() as db:
            if db is None:
                return None
            row = db.conn.execute(
                "SELECT d.at, d.doc FROM threads t JOIN docs d ON d.n = t.n "
                "WHERE t.id = ? AND d.step = ?",
                (thread_id, step_id),
            ).fetchone()
            return None if row is None else (str(row[0]), str(row[1]))
        return None

    def ids_ignoring_case(self, thread_id: str) -> list[str]:
        """The thread ids the index holds that equal ``thread_id`` but for ASCII letter
        case (itself included, if held). A database made before its index of the ids
        folded to lowercase is scanned (22 ms at 100,000 threads): on the event loop,
        only a small one (:class:`~filelayer._io.commit.DiskWait` else, before any
        change: the write runs again in a worker thread)."""
        with self.generations.reading() as db:
            if db is None:
                return []
            conn = db.conn
            if not db.folded_ids and _commit.on_loop():
                most = conn.execute("SELECT max(n) FROM threads").fetchone()[0]
                if (most or 0) > _LOOP_SCAN_THREADS:
                    raise _commit.DiskWait(db.path)
            rows = conn.execute(
                "SELECT id FROM threads WHERE lower(id) = ?", (thread_id.lower(),)
            ).fetchall()
            return [str(i) for (i,) in rows]
        return []

    def texts_of(self, thread_id: str) -> dict[str, tuple[str, str]]:
        with self.generations.reading() as db:
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
        with self.generations.reading() as db:
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
        with self.generations.reading() as db:
            if db is None:
                return set()
            rows = db.conn.execute(
                "SELECT f.step FROM threads t JOIN favorites f ON f.n = t.n WHERE t.id = ?",
                (thread_id,),
            ).fetchall()
            return {str(s) for (s,) in rows}
        return set()

    # -- point questions -----------------------------------------------------------

    def is_favorite(self, thread_id: str, step_id: str) -> bool:
        with self.generations.reading() as db:
            if db is None:
                return False
            row = db.conn.execute(
                "SELECT 1 FROM threads t JOIN favorites f ON f.n = t.n "
                "WHERE t.id = ? AND f.step = ?",
                (thread_id, step_id),
            ).fetchone()
            return row is not None
        return False

    def feedback_owner(self, feedback_id: str) -> str | None:
        if not isinstance(feedback_id, str):
            return None
        with self.generations.reading() as db:
            if db is None:
                return None
            row = db.conn.execute(
                "SELECT t.id FROM feedback f JOIN threads t ON t.n = f.n WHERE f.id = ?",
                (feedback_id,),
            ).fetchone()
            return None if row is None else str(row[0])
        return None

    def favorites_of(self, user_id: str) -> list[tuple[str, set[str]]]:
        with self.generations.reading() as db:
            if db is None:
                return []
            u = db.users.number(user_id, create=False)
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

    def marks(self) -> dict[str, str]:
        """Every stored watermark by thread id."""
        with self.generations.reading() as db:
            if db is None:
                return {}
            try:
                return dict(db.conn.execute("SELECT id, mark FROM marks"))
            except sqlite3.OperationalError:  # a read-only database from before marks
                return {}
        return {}

    def meta(self, key: str) -> str | None:
        """A value of the ``meta`` table (the reconciler keeps its own there)."""
        with self.generations.reading() as db:
            if db is None:
                return None
            row = db.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return None if row is None else str(row[0])
        return None

    # -- thread ids ----------------------------------------------------------------

    def indexed_ids(self) -> set[str]:
        """Every thread id the index holds."""
        with self.generations.reading() as db:
            if db is None:
                return set()
            return {r for (r,) in db.conn.execute("SELECT id FROM threads")}
        return set()

    def ids_in_order(self) -> list[str]:
        """Every thread id, sorted."""
        with self.generations.reading() as db:
            if db is None:
                return []
            return [str(t) for (t,) in db.conn.execute("SELECT id FROM threads ORDER BY id")]
        return []

    def count(self) -> int:
        with self.generations.reading() as db:
            if db is None:
                return 0
            return int(db.conn.execute("SELECT count(*) FROM threads").fetchone()[0])
        return 0

    def threads_by_identifier(self, wanted: Callable[[str], bool]) -> set[str]:
        """The ids of the threads whose indexed user identifier satisfies ``wanted``
        (the reconciler asks for those whose user file changed): one pass over the
        distinct identifiers, then the threads of the few that match."""
        with self.generations.reading() as db:
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

    def newest_first(self) -> Iterator[str]:
        """Every thread id, most recent activity first (for scans that stop early)."""
        key: tuple[str, str] | None = None
        while True:
            with self.generations.reading() as db:
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


class ThreadsView(Mapping[str, ThreadSummary]):
    """``index.threads``: a read-only mapping that builds summaries on access."""

    def __init__(self, reader: IndexReader) -> None:
        self._reader = reader

    def __getitem__(self, thread_id: str) -> ThreadSummary:
        found = self._reader.thread(thread_id) if isinstance(thread_id, str) else None
        if found is None:
            raise KeyError(thread_id)
        return found

    def __contains__(self, thread_id: object) -> bool:
        return isinstance(thread_id, str) and self._reader.thread(thread_id) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._reader.ids_in_order())

    def __len__(self) -> int:
        return self._reader.count()

    def keys(self) -> KeysView[str]:
        return KeysView(self)

    def values(self) -> ValuesView[ThreadSummary]:
        return _Values(self._reader.all_summaries())

    def items(self) -> ItemsView[str, ThreadSummary]:
        return _Items({s.id: s for s in self._reader.all_summaries()})


class _Values(ValuesView[ThreadSummary]):
    def __init__(self, summaries: list[ThreadSummary]) -> None:
        super().__init__({s.id: s for s in summaries})


class _Items(ItemsView[str, ThreadSummary]):
    pass
