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
meanwhile are caught up by the caller (see :mod:`filelayer.store.reindex`).

:class:`ThreadIndex` is the one object the store holds; the work is done by its parts,
one job each: :class:`~filelayer.index.generations.Generations` (which database is
current), :class:`~filelayer.index.writer.IndexWriter` (every change),
:class:`~filelayer.index.reader.IndexReader` (questions about one thread or user) and
:class:`~filelayer.index.pages.Pages` (the sidebar's pages and searches).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .generations import POINTER_FILE, Generations
from .pages import Page, Pages, decode_cursor, encode_cursor
from .reader import IndexReader, ThreadsView
from .summary import ThreadSummary
from .writer import IndexWriter

__all__ = ["POINTER_FILE", "Page", "ThreadIndex", "decode_cursor", "encode_cursor"]


class ThreadIndex:
    """The index of one archive, as this process sees it (see the module docstring).

    Thread-safe: calls from several threads of a process are serialised (by the one
    lock of :attr:`Generations.lock`).
    """

    def __init__(self, directory: Path, lock_path: Path, *, lock_timeout: float) -> None:
        self.directory = directory
        self.pointer = directory / POINTER_FILE
        self.lock_path = lock_path
        self.lock_timeout = lock_timeout
        self._generations = Generations(directory, lock_path, lock_timeout=lock_timeout)
        self._writer = IndexWriter(self._generations)
        self._reader = IndexReader(self._generations)
        self._pages = Pages(self._generations, self._reader)

    # -- the current database (Generations) ----------------------------------------

    @property
    def damaged(self) -> bool:
        """Whether the current database was found damaged (it needs a rebuild)."""
        return self._generations.damaged

    def exists(self) -> bool:
        """Whether there is a usable index (of this format) to open."""
        return self._generations.exists()

    def refresh(self) -> None:
        """Look at ``index/current`` again (one ``stat``): after a rebuild by another
        process, the next call reads the new database. Cheap; calls do it anyway."""
        self._generations.refresh()

    def close(self) -> None:
        """Close the database (the next call opens it again)."""
        self._generations.close()

    def take_marks_added(self) -> bool:
        """Whether the current database was opened without watermarks (made by a
        version before them): every thread needs reading once. Answered once."""
        return self._generations.take_marks_added()

    # -- writing (IndexWriter) -----------------------------------------------------

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Apply a write's index records (:mod:`~filelayer.index.records`) in one
        transaction (nothing when there is no index yet)."""
        self._writer.append(records)

    def put(self, thread_id: str, summary: ThreadSummary | None, mark: str | None = None) -> None:
        """Make the index hold exactly ``summary`` for ``thread_id`` (``None``: nothing),
        and ``mark`` as the watermark of the files it was read from."""
        self._writer.put(thread_id, summary, mark)

    def generation(self) -> str | None:
        """The database this process writes to now (see :meth:`note_mark`)."""
        return self._generations.seen()

    def note_mark(self, thread_id: str, old: str, new: str, generation: str | None) -> None:
        """A write begun on ``generation`` moved ``thread_id``'s files from watermark
        ``old`` to ``new``: the stored one follows with this process's next index
        transaction, in that database only."""
        self._writer.note_mark(thread_id, old, new, generation)

    def flush_marks(self) -> None:
        """Apply the noted watermark changes now."""
        self._writer.flush_marks()

    def reserved(self) -> contextlib.AbstractContextManager[None]:
        """The index's write lock for a block, taken without waiting (see
        :meth:`IndexWriter.reserved`): for a write on the event loop."""
        return self._writer.reserved()

    @property
    def upkeep_due(self) -> bool:
        """Whether a commit on the event loop left the trigram index's upkeep (a merge
        of its segments can take 100+ ms) for :meth:`upkeep`."""
        return self._writer.upkeep_due()

    def upkeep(self) -> None:
        """Apply the queue of texts to the trigram index, if it was left for this."""
        self._writer.upkeep()

    def sync(self) -> None:
        """fsync the current database and its write-ahead log."""
        self._writer.sync()

    def set_meta(self, key: str, value: str) -> None:
        self._writer.set_meta(key, value)

    def rebuild(
        self,
        summaries: Iterable[ThreadSummary],
        *,
        replace: bool = True,
        marks: Mapping[str, str] | None = None,
    ) -> int:
        """Write a whole new index from ``summaries`` and switch to it; the thread count."""
        return self._writer.rebuild(summaries, replace=replace, marks=marks)

    # -- reading (IndexReader, Pages) ----------------------------------------------

    @property
    def threads(self) -> Mapping[str, ThreadSummary]:
        """Every indexed thread by id (summaries are built on access)."""
        return ThreadsView(self._reader)

    def page(
        self,
        *,
        user_id: str | None,
        first: int,
        cursor: str | None = None,
        search: str | None = None,
        feedback: int | None = None,
    ) -> Page:
        """Threads newest activity first, after ``cursor``, filtered (see
        :meth:`Pages.page`)."""
        return self._pages.page(
            user_id=user_id, first=first, cursor=cursor, search=search, feedback=feedback
        )

    def ids_ignoring_case(self, thread_id: str) -> list[str]:
        """The thread ids held that equal ``thread_id`` but for letter case (itself
        included, if held): what a new thread's id is checked against."""
        return self._reader.ids_ignoring_case(thread_id)

    def text(self, thread_id: str, step_id: str) -> tuple[str, str] | None:
        """(time, searchable text) of one message, ``None`` if the index lacks it."""
        return self._reader.text(thread_id, step_id)

    def is_favorite(self, thread_id: str, step_id: str) -> bool:
        return self._reader.is_favorite(thread_id, step_id)

    def feedback_owner(self, feedback_id: str) -> str | None:
        """The thread holding feedback ``feedback_id``, if the index knows it."""
        return self._reader.feedback_owner(feedback_id)

    def favorites_of(self, user_id: str) -> list[tuple[str, set[str]]]:
        """(thread id, favorite step ids) of each of the user's threads that has some."""
        return self._reader.favorites_of(user_id)

    def marks(self) -> dict[str, str]:
        """Every stored watermark by thread id."""
        return self._reader.marks()

    def meta(self, key: str) -> str | None:
        """A value of the ``meta`` table (the reconciler keeps its own there)."""
        return self._reader.meta(key)

    def indexed_ids(self) -> set[str]:
        """Every thread id the index holds."""
        return self._reader.indexed_ids()

    def threads_by_identifier(self, wanted: Callable[[str], bool]) -> set[str]:
        """The ids of the threads whose indexed user identifier satisfies ``wanted``."""
        return self._reader.threads_by_identifier(wanted)

    def newest_first(self) -> Iterator[str]:
        """Every thread id, most recent activity first (for scans that stop early)."""
        return self._reader.newest_first()
