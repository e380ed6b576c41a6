"""What the index database holds: its tables, its trigram search table, its format.

Every other module of the index reads or writes these tables; none of them creates one
(:meth:`filelayer.index.db._Db.create` runs these statements). docs/architecture.md
("How it is laid out, and why") says why each table and index is shaped as it is."""

from __future__ import annotations

INDEX_FORMAT = 2
"""The layout of the index database (1 was the JSON-lines log ``index/threads.jsonl``).
A database of another format is not opened: it is rebuilt from the thread directories."""

USER_BITS = 32
"""The row ids of a user's searchable texts are ``u << 32 | n``: one range per user."""

SCHEMA = (
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
    # A new thread's id is refused if another differs from it only in case (one
    # directory where case is ignored): found without reading every id.
    "CREATE INDEX threads_folded ON threads (lower(id))",
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

MARKS_SCHEMA = (
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

FTS_SCHEMA = (
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


def legacy_mark(mark: str) -> str:
    """``mark`` as a release before the change time was part of a watermark stored it
    (inode, size and mtime per file, without the ctime): such a stored mark still
    agrees with the same files (see :func:`filelayer.store.heal.marks_agree`)."""
    return "/".join(p.rsplit(":", 1)[0] if p.count(":") == 3 else p for p in mark.split("/"))


THREAD_COLUMNS = "n, id, u, ident, name, tags, created, updated, last, activity"
"""The columns a thread's summary is made of, in the order
:meth:`filelayer.index.reader.IndexReader.summary` unpacks them."""
