"""Folding what a write tells the index into the tables of :mod:`~filelayer.index.schema`.

Three classes, each the only writer of its tables, all on one connection and inside the
transaction the caller holds (:meth:`filelayer.index.db._Db.write`, or the single one of
a build): :class:`UserNumbers` (``users``), :class:`SearchTexts` (``docs`` and the trigram
index's queue ``fts_todo``) and :class:`Rows` (``threads``, ``feedback``, ``favorites``,
``marks``, ``meta``, through the other two for texts and owners)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

from ..format import codec as _codec
from .records import searchable
from .schema import ABSENT, USER_BITS, legacy_mark
from .summary import ThreadSummary


def is_text(value: str) -> bool:
    """Whether ``value`` can be UTF-8, SQLite's text: not if it holds an unpaired
    surrogate, which a caller can send (a cursor comes from the client) but no stored
    id holds (refused on write). Such a value names nothing."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _tags_text(tags: object) -> str | None:
    if not isinstance(tags, list):
        return None
    return _codec.encode_line(tags).decode("utf-8").rstrip("\n")


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


class UserNumbers:
    """The ``users`` table as this connection knows it: a user id's number (what the
    other tables store) and back, cached. A number made in a transaction that rolled
    back is not in the table: the cache is forgotten then (:meth:`forget`)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.numbers: dict[str, int] = {}
        self.ids: dict[int, str | None] = {0: None}

    def number(self, user: str | None, *, create: bool) -> int | None:
        """The number of ``user`` (0: no user); ``None`` if it has none and ``create``
        is false (a reader asking about a user the index never saw)."""
        if user is None:
            return 0
        u = self.numbers.get(user)
        if u is None:
            if not create and not is_text(user):
                return None  # asked by a caller: no user id stored holds such text
            row = self.conn.execute("SELECT u FROM users WHERE id = ?", (user,)).fetchone()
            if row is not None:
                u = int(row[0])
            elif not create:
                return None
            else:
                cur = self.conn.execute("INSERT INTO users (id) VALUES (?)", (user,))
                u = int(cur.lastrowid or 0)
            self.numbers[user] = u
            self.ids[u] = user
        return u

    def user_of(self, u: int) -> str | None:
        if u in self.ids:
            return self.ids[u]
        row = self.conn.execute("SELECT id FROM users WHERE u = ?", (u,)).fetchone()
        user = None if row is None else str(row[0])
        self.ids[u] = user
        if user is not None:
            self.numbers[user] = u
        return user

    def forget(self) -> None:
        self.numbers.clear()
        self.ids = {0: None}


class SearchTexts:
    """The searchable texts of the threads (``docs``): a row per message and one for
    the name, with row ids in their owner's range (``u << USER_BITS``), and the queue of
    rows whose entry in the trigram index is out of date (``fts_todo``).

    While a new database is built (``building``) texts are numbered in order with
    nothing to look up, and nothing is queued: the trigram index is made at the end."""

    def __init__(self, conn: sqlite3.Connection, *, fts: bool, building: bool) -> None:
        self.conn = conn
        self.fts = fts
        self.next_doc: dict[int, int] | None = {} if building else None
        self.queued = 0  # texts queued for the trigram index since the last look

    def _new_doc_id(self, u: int) -> int:
        """While building: the texts are numbered in order, nothing to look up."""
        assert self.next_doc is not None
        r = self.next_doc.get(u, u << USER_BITS) + 1
        self.next_doc[u] = r
        return r

    def _queue(self, r: int, old: str | None) -> None:
        """Note that row r's entry in the trigram index is out of date. ``old`` is what
        the entry holds, unless the row was queued already (then it still holds what
        the queue says)."""
        if self.fts and self.next_doc is None:
            self.conn.execute("INSERT OR IGNORE INTO fts_todo (r, old) VALUES (?, ?)", (r, old))
            self.queued += 1

    def add(self, n: int, u: int, step: str | None, at: str, doc: str) -> None:
        if self.next_doc is not None:
            r = self._new_doc_id(u)
            self.conn.execute(
                "INSERT INTO docs (r, n, step, at, doc) VALUES (?, ?, ?, ?, ?)",
                (r, n, step, at, doc),
            )
            return
        # The next number of the owner's range, found in the same statement.
        low = u << USER_BITS
        cur = self.conn.execute(
            "INSERT INTO docs (r, n, step, at, doc) VALUES (coalesce((SELECT r FROM docs "
            "WHERE r BETWEEN ? AND ? ORDER BY r DESC LIMIT 1), ?) + 1, ?, ?, ?, ?)",
            (low, low + (1 << USER_BITS) - 1, low, n, step, at, doc),
        )
        r = int(cur.lastrowid or 0)
        if r >= low + (1 << USER_BITS):  # pragma: no cover - four billion texts
            raise OverflowError("too many texts for one user in the index")
        if doc:
            self._queue(r, None)

    def drop(self, r: int, doc: str) -> None:
        self.conn.execute("DELETE FROM docs WHERE r = ?", (r,))
        self._queue(r, doc or None)

    def set(self, r: int, at: str, old: str, new: str) -> None:
        self.conn.execute("UPDATE docs SET at = ?, doc = ? WHERE r = ?", (at, new, r))
        if old != new:
            self._queue(r, old or None)

    def set_name(self, n: int, u: int, name: str | None) -> None:
        """Make thread ``n``'s name text say ``name`` (``None``: no name text)."""
        row = self.conn.execute(
            "SELECT r, doc FROM docs WHERE n = ? AND step IS NULL", (n,)
        ).fetchone()
        if name is None:
            if row is not None:
                self.drop(int(row[0]), str(row[1]))
        elif row is None:
            self.add(n, u, None, "", searchable(name))
        else:
            self.set(int(row[0]), "", str(row[1]), searchable(name))

    def move(self, n: int, u: int) -> None:
        """Give a thread's texts row ids in its new owner's range."""
        rows = self.conn.execute(
            "SELECT r, step, at, doc FROM docs WHERE n = ? ORDER BY r", (n,)
        ).fetchall()
        for r, _, _, doc in rows:
            self.drop(int(r), str(doc))
        for _, step, at, doc in rows:
            self.add(n, u, step, str(at), str(doc))

    def drop_thread(self, n: int) -> None:
        for r, doc in self.conn.execute("SELECT r, doc FROM docs WHERE n = ?", (n,)).fetchall():
            self.drop(int(r), str(doc))

    def last_message_at(self, n: int) -> str:
        """The time of thread ``n``'s last message, from its texts (``""``: none)."""
        row = self.conn.execute(
            "SELECT max(at) FROM docs WHERE n = ? AND step IS NOT NULL", (n,)
        ).fetchone()
        return str(row[0]) if row is not None and row[0] is not None else ""


class Rows:
    """Folds index records (:mod:`~filelayer.index.records`), whole summaries and
    watermarks into the tables, inside the caller's transaction.

    Records state values, so folding one twice changes nothing. A thread's ``activity``
    (what orders the sidebar) and its feedback counts (what the feedback filter reads)
    are kept here, by every statement that moves them."""

    def __init__(self, conn: sqlite3.Connection, users: UserNumbers, texts: SearchTexts) -> None:
        self.conn = conn
        self.users = users
        self.texts = texts

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

    # -- records -------------------------------------------------------------------

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
        u = self.users.number(user, create=True)
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
                self.texts.add(int(cur.lastrowid or 0), u, None, "", searchable(name))
            return
        n, old_u, old_name, old_created, old_updated, last = row
        created = created or old_created
        conn.execute(
            "UPDATE threads SET u = ?, ident = ?, name = ?, tags = ?, created = ?, updated = ?,"
            " activity = ? WHERE n = ?",
            (u, ident, name, tags, created, updated or old_updated, max(created, last), n),
        )
        if u != old_u:
            self.texts.move(n, u)
        if name != old_name:
            self.texts.set_name(n, u, name)

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
        texts = self.texts
        if text is None:
            if row is not None:
                texts.drop(int(row[0]), str(row[2]))
                self.set_last(n, created, texts.last_message_at(n))
            return
        doc = searchable(text)
        if row is None:
            texts.add(n, u, sid, at, doc)
            if at > last:
                self.set_last(n, created, at)
            return
        r, old_at, old_doc = int(row[0]), str(row[1]), str(row[2])
        if (old_at, old_doc) == (at, doc):
            return
        texts.set(r, at, old_doc, doc)
        if at != old_at:
            self.set_last(n, created, at if at > last else texts.last_message_at(n))

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
        self.texts.drop_thread(n)
        conn.execute("DELETE FROM feedback WHERE n = ?", (n,))
        conn.execute("DELETE FROM favorites WHERE n = ?", (n,))
        conn.execute("DELETE FROM threads WHERE n = ?", (n,))

    # -- watermarks, whole threads, meta -------------------------------------------

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
                conn.execute(
                    "UPDATE marks SET mark = ? WHERE id = ? AND mark IN (?, ?)",
                    (new, tid, old, legacy_mark(old)),
                )

    def put(self, summary: ThreadSummary, mark: str | None = None) -> None:
        """Make the index hold exactly ``summary`` for its thread, and ``mark`` as the
        watermark of the files it was read from (none: unknown)."""
        self.delete_thread(summary.id)
        if mark is not None:
            self.conn.execute("INSERT INTO marks (id, mark) VALUES (?, ?)", (summary.id, mark))
        u = self.users.number(summary.user_id, create=True)
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
            self.texts.add(n, u, None, "", searchable(summary.name))
        for sid in sorted(texts):
            at, text = texts[sid]
            self.texts.add(n, u, sid, at, searchable(text))
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

    def put_absent(self, thread_id: str, mark: str | None) -> None:
        """Make the index hold nothing for ``thread_id``, and ``mark`` as the watermark
        of its files (files without a thread: no manifest)."""
        self.delete_thread(thread_id)
        if mark is not None:
            self.conn.execute("INSERT INTO marks (id, mark) VALUES (?, ?)", (thread_id, mark))

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
