"""Pages of the sidebar: a user's threads newest activity first, after a cursor,
filtered by feedback and by a search term.

A page is a range of the ordered index ``threads_order`` read backwards from the
cursor, so its cost does not depend on the number of threads. A search takes one of
three paths (docs/architecture.md, "Three ways to search"): a rare term's candidates
from the trigram index are all checked; a term with more candidates has the user's
newest threads walked and only their candidates checked; a common term, a short one or
a Python without FTS5 has the newest threads checked directly."""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .db import _Db, fts5_available
from .generations import Generations
from .reader import IndexReader
from .records import searchable
from .rows import is_text
from .schema import THREAD_COLUMNS, USER_BITS
from .summary import ThreadSummary

_FTS_CANDIDATES = 2000
"""A term whose trigrams are all in more of a user's texts than this is common: its
threads are checked newest first (the page fills after a few), instead of checking
every text the trigram index names."""

_TRIGRAMS_MAX = 24
"""At most this many of a term's trigrams are looked up (the rest only narrow down
what the exact check that follows decides anyway)."""

_TRIGRAM_POSITIONS = 4096
"""Places of a search term whose trigrams :func:`_fts_query` chooses from."""

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
    activity, sep, thread_id = raw.rpartition("\x1f")  # an activity may hold one, no id does
    return (activity, thread_id) if sep else None


MAX_PAGE = 1 << 62
"""The largest page asked of the index: the page size comes from the client, and one
beyond SQLite's integers (``LIMIT``) would fail the query; no archive holds as many
threads, so a larger page is this one, every thread."""


@dataclass
class Page:
    items: list[ThreadSummary]
    has_next: bool
    start_cursor: str | None
    end_cursor: str | None


class Pages:
    """Answers :meth:`page` from the current database of ``generations``; the
    summaries on a page are ``reader``'s (lazy: texts are read when asked for)."""

    def __init__(self, generations: Generations, reader: IndexReader) -> None:
        self.generations = generations
        self.reader = reader

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
        first = min(max(int(first), 0), MAX_PAGE)
        items: list[ThreadSummary] = []
        with self.generations.reading() as db:
            if db is not None:
                with db.read() as conn:
                    rows = _page_rows(db, conn, user_id, first + 1, cursor, search, feedback)
                items = [self.reader.summary(db, row) for row in rows]
        has_next = len(items) > first
        del items[first:]
        return Page(
            items=items,
            has_next=has_next,
            start_cursor=encode_cursor(items[0]) if items else None,
            end_cursor=encode_cursor(items[-1]) if items else None,
        )


def _page_rows(
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
        u = db.users.number(user_id, create=False)
        if u is None:
            return []
        where.append("u = ?")
        params.append(u)
    if cursor:
        key = decode_cursor(cursor)
        if key is None and is_text(cursor):  # else no thread id: from the top
            # Only a thread of the listed user's: the cursor comes from the client, and
            # another user's thread there would tell where it stands among the caller's
            # (when its author last wrote in it), and that it exists.
            mine = "" if u is None else " AND u = ?"
            row = conn.execute(
                f"SELECT activity, id FROM threads WHERE id = ?{mine}",
                (cursor,) if u is None else (cursor, u),
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
        sql = f"SELECT {THREAD_COLUMNS} FROM threads {_where(where)} {order} LIMIT ?"
        return conn.execute(sql, (*params, limit)).fetchall()
    needle = searchable(search)
    try:
        needle.encode("utf-8")
    except UnicodeEncodeError:
        return []  # an unpaired surrogate: no stored text holds one (refused on write)
    matches = "EXISTS (SELECT 1 FROM docs d WHERE d.n = t.n AND instr(d.doc, ?) > 0)"
    scan = f"SELECT {THREAD_COLUMNS} FROM threads t {_where([*where, matches])} {order} LIMIT ?"
    # A NUL cannot be written in a query of the trigram index: such a term is scanned.
    if db.fts and len(needle) >= 3 and "\x00" not in needle and fts5_available():
        # The rows of this user's texts holding every trigram of the term, and those
        # not in the trigram index yet: a few (a rare term, or none) are each checked
        # exactly, and their threads sorted.
        docs = "SELECT rowid FROM fts WHERE fts MATCH ?"
        queued = "SELECT r FROM fts_todo"
        doc_params: list[Any] = [_fts_query(needle)]
        if u is not None:
            low, high = u << USER_BITS, ((u + 1) << USER_BITS) - 1
            docs += " AND rowid BETWEEN ? AND ?"
            queued += f" WHERE r BETWEEN {low} AND {high}"
            doc_params += [low, high]
        found = conn.execute(f"{docs} LIMIT ?", (*doc_params, _FTS_CANDIDATES + 1))
        candidates = [r for (r,) in found]
        if len(candidates) <= _FTS_CANDIDATES:
            candidates += [r for (r,) in conn.execute(queued)]
            if u is None or len(candidates) <= _CHECK_ALL:
                return _matching(conn, candidates, needle, where, params, limit)
            return _walking(conn, set(candidates), needle, where, params, limit)
    # A common term (or a short one, or a Python without FTS5): the threads are
    # checked newest first, and a common term fills the page after a few of them.
    return conn.execute(scan, (*params, needle, limit)).fetchall()


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
        f"SELECT {THREAD_COLUMNS} FROM threads NOT INDEXED {_where([f'n IN ({marks})', *where])}"
    )
    for chunk in _chunks(sorted(threads)):
        rows += conn.execute(sql, (*chunk, *params)).fetchall()
    rows.sort(key=lambda row: (row[9], row[1]), reverse=True)  # activity, id
    return rows[:limit]


def _walking(
    conn: sqlite3.Connection,
    candidates: set[int],
    needle: str,
    where: list[str],
    params: list[Any],
    limit: int,
) -> list[tuple[Any, ...]]:
    """The same as :func:`_matching` for many candidates (a term found in many
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
            f"SELECT {THREAD_COLUMNS} FROM threads WHERE n IN ({marks})", chunk
        ).fetchall()
    rows.sort(key=lambda row: (row[9], row[1]), reverse=True)  # activity, id
    if len(rows) < limit and candidates and batch:
        rest = _matching(
            conn,
            list(candidates),
            needle,
            [*where, "(activity, id) < (?, ?)"],
            [*params, *key],
            limit - len(rows),
        )
        rows += rest
    return rows[:limit]


def _fts_query(needle: str) -> str:
    """The trigrams of ``needle``, all required: a superset of the rows holding it.

    Any of its trigrams make such a query, so a long term (it comes from the client, of
    any length) is read at :data:`_TRIGRAM_POSITIONS` evenly spaced places only: every
    trigram of a term of megabytes, gathered and sorted, held a worker and the
    interpreter for seconds and a quarter of a gigabyte."""
    count = len(needle) - 2
    spacing = max(1, count // _TRIGRAM_POSITIONS)
    grams = sorted({needle[i : i + 3] for i in range(0, count, spacing)})
    if len(grams) > _TRIGRAMS_MAX:
        step = len(grams) / _TRIGRAMS_MAX
        grams = [grams[int(i * step)] for i in range(_TRIGRAMS_MAX)]
    return " AND ".join('"' + g.replace('"', '""') + '"' for g in grams)


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
