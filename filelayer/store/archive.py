"""The storage core: one archive root, read and written through plain methods.

``ArchiveStore`` is what both the Chainlit adapter and the command line use; it does
not import Chainlit. It is a facade: each job is a collaborator of its own (see
docs/architecture.md, "The store"), and its methods hand each call to the one that does
it. Its methods are synchronous and hold a lock only for the few microseconds of an
append or a rename. The adapter runs them on the event loop when the locks they need are
free, and in a worker thread otherwise (see :mod:`filelayer.chainlit.offload`): so every
write method takes all the locks it needs when it begins, before it changes anything,
and a lock held elsewhere can stop it only there. Two processes are kept apart by the
lock files; two threads of one process must not call one store at once (the adapter
serialises its calls with :attr:`ArchiveStore.mutex`).

Lock order, always: a thread's stripe lock, then ``users.lock`` / ``deleted.lock`` /
the index database's own write lock (:mod:`filelayer.store.locking`). Source of truth is
written first (journal, manifest, tombstone), the derived index after, so a crash in
between leaves drift that the reconciler repairs (see :mod:`filelayer.store.heal`), never
loss.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from .._io import fs as _fs
from .._io import locks as _locks
from .._io import mounts as _mounts
from ..errors import InvalidValueError
from ..format import journal
from ..format.layout import Layout
from ..index.records import DEFAULT_SEARCH_CHARS
from ..index.summary import ThreadSummary
from ..index.thread_index import Page, ThreadIndex
from . import heal as _heal
from .accounts import Accounts
from .appender import JournalAppender
from .authors import Authors
from .compaction import Compaction, Compactor, then_compact
from .deleted import DeletedThreads
from .elements import Elements, element_relative_path
from .folds import FoldedJournals, TombstoneCache, read_state
from .indexing import IndexBook
from .lifecycle import IndexLifecycle
from .locate import Locator, thread_ids
from .locking import WriteLocks
from .steps import Steps
from .threads import Threads
from .views import ElementUrl, ThreadViews

__all__ = ["ArchiveStore", "Durability", "ElementUrl", "HealMode"]

Durability = Literal["flush", "fsync"]
HealMode = _heal.HealMode


class ArchiveStore:
    """An archive of conversations under ``root``.

    ``durability="flush"`` (the default) hands every write to the operating system
    before the call returns: it survives the app being killed, and a background flush
    puts it on the disk about a second later, so a power cut loses at most the last
    second. ``"fsync"`` waits for the disk before every call returns, the files it
    wrote and the directories whose names it changed: it survives a power cut, at the
    cost of one ``fsync`` per write (more when a call makes names). Whole files are
    always replaced atomically (write a temporary file, fsync it if it replaces one,
    rename it); users, tombstones and deletions, which are rare, are fsynced in both
    modes.

    Opening an archive brings the files the layer owns up to date (its ``.gitignore``
    rules, see docs/format.md) and says so in the log; ``upgrade=False`` leaves them.

    ``auto_compact``: a journal whose dead bytes (earlier versions of updated steps,
    deleted records) outweigh its live ones, once past 64 KiB, is rewritten in its
    compacted form after the write that made it so (see :meth:`compact_journal`), so
    that a step updated again and again (progress shown with ``step.update()``, a
    LangChain step carrying its whole prompt) does not grow its journal quadratically.

    A store serves one thread at a time: its caches are not shared safely. Callers that
    use threads (the Chainlit adapter does) hold :attr:`mutex` around each call.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        durability: Durability = "flush",
        lock_timeout: float = _locks.DEFAULT_TIMEOUT,
        search_chars: int = DEFAULT_SEARCH_CHARS,
        create: bool = True,
        upgrade: bool = True,
        auto_compact: bool = True,
        heal: HealMode = "wait",
    ) -> None:
        if durability not in ("flush", "fsync"):
            raise InvalidValueError("durability", "durability must be 'flush' or 'fsync'")
        if heal not in ("wait", "background"):
            raise InvalidValueError("heal", "heal must be 'wait' or 'background'")
        self.heal_mode: HealMode = heal
        self.root = Path(root).expanduser().absolute()
        self.layout = layout = Layout(self.root)
        self.created = layout.initialise(create=create, upgrade=upgrade)
        """Whether this store made a new, empty archive at ``root`` when it opened."""
        _mounts.check_root(self.root)
        self.durable = durable = durability == "fsync"
        self.durability: Durability = durability
        self.lock_timeout = lock_timeout
        self.search_chars = search_chars
        self.auto_compact = auto_compact
        self.defer_compaction = False
        """Set by a caller that runs the due compactions itself (:meth:`take_due`):
        the adapter runs them in a worker thread, never on the event loop."""
        self.mutex = threading.RLock()
        """Held around each call by callers that use the store from several threads."""
        self.index = index = ThreadIndex(
            layout.index_dir, layout.index_lock, lock_timeout=lock_timeout
        )
        self.deleted = deleted = DeletedThreads(layout.deleted_file)
        self.accounts = accounts = Accounts(layout, lock_timeout)
        self.healer = _heal.Healer(self)
        # The collaborators, each with one job (docs/architecture.md, "The store").
        self.lifecycle = IndexLifecycle(self.root, layout, index, self.healer, durable=durable)
        self.folds = folds = FoldedJournals(layout)
        self.locks = WriteLocks(layout, index, self.lifecycle, lock_timeout, deleted, folds)
        self.compactor = Compactor(layout, self.locks, enabled=auto_compact)
        self.tombstones = tombstones = TombstoneCache(layout)
        self.authors = authors = Authors(layout, accounts)
        self.book = book = IndexBook(layout, index, authors, tombstones, folds, search_chars)
        self.appender = appender = JournalAppender(
            layout, index, book, deleted, tombstones, self.compactor, durable=durable
        )
        self.locator = locator = Locator(layout, index, folds, durable=durable)
        self.views = ThreadViews(
            self.root, layout, index, deleted, folds, locator, self.lifecycle, self.healer
        )
        self.threads = Threads(
            self.root, layout, index, accounts, authors, deleted, book, self.locks, appender
        )
        self.steps = Steps(
            layout, index, deleted, folds, authors, book, locator, self.locks, appender
        )
        self.elements = Elements(layout, folds, tombstones, authors, locator, self.locks, appender)
        if create or upgrade:  # the index is the layer's own, like the .gitignore
            self.lifecycle.ensure_index()
        self.lifecycle.on_exit(self._save_written_views)

    # -- index lifecycle and the reconciler -----------------------------------------

    def thread_lock(self, thread_id: str) -> contextlib.AbstractContextManager[None]:
        """The lock that serialises every write to one thread (across processes). Whoever
        takes it may write: this store's writer session begins first (see
        :mod:`filelayer.store.heal`)."""
        return self.locks.thread_lock(thread_id)

    def reconcile(self, progress: Any = None) -> _heal.Reconciled:
        """Bring the index in line with the thread directories now, reading again only
        the threads whose files changed since their rows were written (see
        :mod:`filelayer.store.heal`); what ``filelayer reconcile`` and git hooks run.
        Announced as maintenance while it runs (:meth:`announcing`)."""
        self.healer.wait()
        with self.announcing():
            self.lifecycle.begin_session()  # a reconcile cut short is found and done again
            stamp = _heal.git_stamp(self.healer.git)
            done = _heal.reconcile_changed(self, progress=progress)
            if self.healer.git is not None:
                self.index.set_meta(_heal.GIT_META, stamp)
                self.healer.git_seen = stamp
        return done

    def announcing(self) -> _locks.Announcement:
        """Announce maintenance of this archive for a ``with`` block: the serving
        processes (this one included) keep their writes and reads off their event loop
        meanwhile (see :mod:`filelayer.maintenance.announce`). The store's own rebuilds
        announce themselves, so that a script calling them is covered as the
        ``filelayer`` command is."""
        return _locks.announce(self.layout.maintenance_lock)

    def open_reconciling_twin(self) -> ArchiveStore:
        """Another store on the same root and settings, for the background reconcile:
        its own index connection and caches, so that it never holds this store's locks
        while the application's requests wait for them."""
        return ArchiveStore(
            self.root,
            durability=self.durability,
            lock_timeout=self.lock_timeout,
            search_chars=self.search_chars,
            create=False,
            upgrade=False,
        )

    def forget_cached(self) -> None:
        """Drop what this store remembers of thread files, after they changed behind the
        layer's back (``git checkout``): the next reads look at the files again."""
        self.deleted.forget()
        for part in (
            self.locator,
            self.tombstones,
            self.folds,
            self.views,
            self.authors,
            self.appender,
            self.compactor,
            self.book,
        ):
            part.forget()

    def wait_healed(self, timeout: float | None = None) -> bool:
        """Wait until the reconciles started in the background are done (``False`` on
        timeout): the index then says what the thread directories said when they began."""
        return self.healer.wait(timeout)

    def summarise(self, thread_id: str) -> ThreadSummary | None:
        """What the index should hold for a thread, computed from its files."""
        return self.book.summarise(thread_id, self.read_manifest(thread_id))

    def reindex(self, progress: Any = None) -> int:
        """Rebuild the index from the thread directories. Returns the thread count.

        Writers go on meanwhile: the new index is built aside and switched in under the
        index lock for milliseconds, then what they wrote meanwhile is caught up (see
        :mod:`filelayer.store.reindex`). Announced as maintenance while it runs. The
        view files of threads that are gone are removed too."""
        from .reindex import rebuild

        with self.announcing():
            self.lifecycle.begin_session()  # a catch-up cut short is found and done again
            count = rebuild(self, progress)
        self.views.snapshots.prune()  # the views of threads that are gone, too
        return count

    def reindex_thread(self, thread_id: str) -> None:
        """Make the index hold what one thread's files say (after a repair)."""
        _heal.reconcile_thread(self, thread_id)

    def close(self) -> None:
        """Release the index's file descriptor and the memory of the caches. Only the
        index holds anything open between calls; the store stays usable (the next call
        reads the index again). In the flush mode, what the background flusher has not
        written yet is flushed now. The long threads it wrote get their view files (see
        :mod:`filelayer.store.snapshots`): the next process reads them fast."""
        written = self._take_written()
        self.lifecycle.close()  # first: nothing the views do may keep it from its end
        self.views.save_views(written)
        self.folds.forget()
        self.tombstones.forget()
        self.book.forget()

    def _take_written(self) -> list[str]:
        """The long threads this store wrote since it last said so, the last first."""
        appender = self.appender
        written = appender.written.keys()[::-1] + appender.at_close.keys()[::-1]
        appender.written.clear()
        appender.at_close.clear()
        return list(dict.fromkeys(written))

    @property
    def views_pending(self) -> bool:
        """Whether threads this store wrote wait for their views (see
        :meth:`save_quiet_views`)."""
        return bool(self.appender.written.keys())

    @property
    def index_upkeep_due(self) -> bool:
        """Whether a write on the event loop left the trigram index's upkeep for
        :meth:`index_upkeep`."""
        return self.index.upkeep_due

    def index_upkeep(self) -> None:
        """Apply the texts queued for the trigram index, which a write on the event
        loop leaves (a merge of the index's segments took 141 ms at 100,000 threads).
        Called from a thread of its own while the store serves calls; it holds
        :attr:`mutex` meanwhile, so that the adapter's calls run in worker threads and
        the loop never waits for it."""
        with self.mutex:
            self.index.upkeep()

    def save_quiet_views(self, idle: float) -> bool:
        """Write the views of the long threads this store wrote that have had no write
        for ``idle`` seconds (see :mod:`filelayer.store.snapshots`): in a running app,
        so that another worker's first read of such a thread (the user resumes it
        there) decodes one document instead of folding the journal. Called from a
        thread of its own while the store serves calls: it holds :attr:`mutex` only to
        pick the threads. Returns whether threads written more recently are left.

        The threads whose views are too long to be made now are kept for :meth:`close`:
        taken from the threads written, they would get none at all."""
        with self.mutex:
            quiet, left = self.appender.take_quiet(time.monotonic() - idle)
            quiet = [thread_id for thread_id in quiet if not self.deleted.has(thread_id)]
        later = self.views.save_views(quiet, live=True)
        with self.mutex:
            for thread_id in reversed(later):  # the last written ends most recent
                self.appender.at_close.put(thread_id, None)
        return left

    def _save_written_views(self) -> None:
        """The views ``close()`` writes, for a process that exits without closing the
        store (a script, a test harness): the next process reads those threads fast."""
        self.views.save_views(self._take_written())

    # -- authors and users ----------------------------------------------------------

    def deleted_threads(self) -> dict[str, str]:
        """Every deleted thread id with the time it was deleted."""
        return self.deleted.all()

    def is_deleted(self, thread_id: str) -> bool:
        """Whether ``thread_id`` was deleted (deleted ids stay deleted)."""
        return self.deleted.has(thread_id)

    def author_of(self, thread_id: str) -> str | None:
        """The identifier of the thread's author (see :meth:`Authors.author_of`)."""
        return self.authors.author_of(thread_id)

    def authorize(self, thread_id: str, actor: str | None) -> None:
        """Refuse a write by ``actor`` to a thread another user wrote (see
        :meth:`Authors.authorize`)."""
        self.authors.authorize(thread_id, actor)

    def owner_id(self, doc: dict[str, Any]) -> str | None:
        """The user id the index files a thread under (see :meth:`Authors.owner_id`)."""
        return self.authors.owner_id(doc)

    def thread_index_record(self, doc: dict[str, Any]) -> dict[str, Any]:
        return self.book.thread_record(doc)

    def get_user(self, identifier: str) -> dict[str, Any] | None:
        return self.accounts.get(identifier)

    def upsert_user(
        self,
        identifier: str,
        metadata: dict[str, Any] | None = None,
        display_name: str | None = None,
    ) -> dict[str, Any]:
        """Create the user, or update its metadata; the id never changes."""
        return self.accounts.upsert(identifier, metadata, display_name)

    def user_by_id(self, user_id: str) -> dict[str, Any] | None:
        return self.accounts.by_id(user_id)

    def iter_users(self) -> Iterator[dict[str, Any]]:
        return self.accounts.all()

    # -- threads --------------------------------------------------------------------

    def update_thread(
        self,
        thread_id: str,
        *,
        name: str | None = None,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        tags: list[str] | None = None,
        actor: str | None = None,
    ) -> bool:
        """Create or change a thread. ``False`` (and nothing written) if it was deleted.

        ``actor``: the logged-in user the call is made for (see :meth:`authorize`).
        """
        return self.threads.update_thread(
            thread_id, name=name, user_id=user_id, metadata=metadata, tags=tags, actor=actor
        )

    def put_manifest(self, doc: dict[str, Any]) -> None:
        """Write a thread's manifest as given, its times included (``filelayer copy``
        carries threads with their own times; ``update_thread`` stamps the present).
        Refused for a deleted thread."""
        self.threads.put_manifest(doc)

    def delete_thread(
        self,
        thread_id: str,
        *,
        actor: str | None = None,
        only_if: Callable[[], bool] | None = None,
        at: str | None = None,
    ) -> bool:
        """Delete a thread and everything in it. ``False`` if there was nothing (an id
        that is not a valid id names nothing: ``False``, nothing written).

        ``only_if``, when given, is called under the thread's write locks, after every
        write that was acknowledged before them and before any other can begin: the
        thread is deleted only if it returns true (otherwise ``False``, nothing
        written). A deletion decided on what the thread held earlier (``prune``'s age)
        checks it again there, so that no write slips in between check and delete.

        ``at``, when given, is the deletion's time in its tombstone instead of now: a
        thread deleted for an erasure made on another clone bears the erasure's time,
        so that every clone that merges it writes the same bytes."""
        return self.threads.delete_thread(thread_id, actor=actor, only_if=only_if, at=at)

    def read_manifest(self, thread_id: str) -> dict[str, Any] | None:
        """The thread's manifest; ``None`` for no thread, or a deleted one (whatever a
        power cut left of its directory: the tombstone is what counts)."""
        return self.views.read_manifest(thread_id)

    def thread_author(self, thread_id: str) -> str:
        """The author's identifier, ``""`` for an unknown thread (Chainlit: 404)."""
        return self.views.thread_author(thread_id)

    def read_state(self, thread_id: str) -> journal.ThreadState:
        return read_state(self.layout, thread_id)

    def get_thread(
        self,
        thread_id: str,
        element_url: ElementUrl | None = None,
        *,
        viewer: str | None = None,
    ) -> dict[str, Any] | None:
        """The whole thread in Chainlit's ``ThreadDict`` shape, or ``None`` (see
        :meth:`ThreadViews.get_thread`: ``viewer``, who it is read for)."""
        return self.views.get_thread(thread_id, element_url, viewer=viewer)

    def list_threads(
        self,
        *,
        user_id: str | None,
        first: int = 20,
        cursor: str | None = None,
        search: str | None = None,
        feedback: int | None = None,
    ) -> tuple[list[dict[str, Any]], Page]:
        """A page of threads (without steps), newest activity first, from the index
        (see :meth:`ThreadViews.list_threads`: why ``createdAt`` is the activity)."""
        return self.views.list_threads(
            user_id=user_id, first=first, cursor=cursor, search=search, feedback=feedback
        )

    def thread_ids(self) -> list[str]:
        """Every thread directory's id (from the file system, not the index)."""
        return thread_ids(self.layout)

    # -- steps and feedback ---------------------------------------------------------

    @then_compact
    def write_step(self, step: dict[str, Any], *, actor: str | None = None) -> bool:
        """Create or update (merge) a step. ``False`` if its thread was deleted."""
        return self.steps.write_step(step, actor=actor)

    def locate_step(
        self, step_id: str, prefer: str | None = None, *, scan: bool = True
    ) -> str | None:
        """The thread holding ``step_id``, for calls that give none (see
        :meth:`Locator.locate_step`)."""
        return self.locator.locate_step(step_id, prefer, scan=scan)

    def locate_element(self, element_id: str, *, scan: bool = True) -> str | None:
        return self.locator.locate_element(element_id, scan=scan)

    def scan_order(self) -> list[str]:
        """The indexed threads, most recently active first: where a scan for an id
        looks (see :meth:`scan_journals`)."""
        return self.locator.scan_order()

    def scan_journals(
        self, kind: Literal["step", "element", "feedback"], key: str, order: list[str]
    ) -> str | None:
        """The first thread of ``order``, then of the thread directories, whose journal
        holds the live step (or element) ``key``; ``None`` if none does.

        Reads files only, never the store's caches: the adapter runs it in a worker
        thread, without holding :attr:`mutex`, while other calls go on."""
        return self.locator.scan_journals(kind, key, order)

    @then_compact
    def delete_step(
        self,
        step_id: str,
        thread_id: str | None = None,
        *,
        prefer: str | None = None,
        actor: str | None = None,
    ) -> bool:
        """Delete a step with its feedback and elements. ``False`` if not found (an
        invalid id included).

        Without ``thread_id`` the step is looked up (see :meth:`locate_step`)."""
        return self.steps.delete_step(step_id, thread_id, prefer=prefer, actor=actor)

    @then_compact
    def upsert_feedback(
        self,
        *,
        for_id: str,
        value: int,
        comment: str | None = None,
        feedback_id: str | None = None,
        thread_id: str | None = None,
        actor: str | None = None,
    ) -> str:
        """Rate a step (one feedback per step: a new one replaces the old; see
        :meth:`Steps.upsert_feedback`)."""
        return self.steps.upsert_feedback(
            for_id=for_id,
            value=value,
            comment=comment,
            feedback_id=feedback_id,
            thread_id=thread_id,
            actor=actor,
        )

    @then_compact
    def delete_feedback(
        self,
        feedback_id: str,
        *,
        actor: str | None = None,
        scan: bool = True,
        thread_id: str | None = None,
    ) -> bool | None:
        """Withdraw a feedback. ``True`` once it is gone (or was never given); ``False``
        for an id that is not a valid id, which names nothing. A feedback the index does
        not know (it lags behind a crash, or is being filled) is looked for in the
        journals; with ``scan=False`` the call answers ``None`` instead, and the caller
        looks (:meth:`scan_journals`, without holding :attr:`mutex`) and calls again
        with the ``thread_id`` it found."""
        return self.steps.delete_feedback(feedback_id, actor=actor, scan=scan, thread_id=thread_id)

    def favorite_steps(self, user_id: str) -> list[dict[str, Any]]:
        return self.views.favorite_steps(user_id)

    # -- elements -------------------------------------------------------------------

    def element_relative_path(self, element_id: str, name: str | None, mime: str | None) -> str:
        """Where an element's bytes live, relative to its thread directory (see
        :func:`filelayer.store.elements.element_relative_path`)."""
        return element_relative_path(element_id, name, mime)

    def prepare_element(
        self,
        thread_id: str,
        element: dict[str, Any] | None = None,
        *,
        actor: str | None = None,
    ) -> Path | None:
        """Make the thread's element directory; ``None`` if the thread was deleted, or
        ``element`` (when given) or its step was."""
        return self.elements.prepare_element(thread_id, element, actor=actor)

    @then_compact
    def record_element(
        self,
        thread_id: str,
        element: dict[str, Any],
        *,
        actor: str | None = None,
        written: _fs.FileKey | None = None,
    ) -> bool:
        """Journal an element whose bytes (if any) are already in place. ``False`` (and
        its file removed) if the thread, the element or its step was deleted.
        ``written``: the key of the file the caller wrote (:func:`filelayer._io.fs.file_key`);
        ``False``, the file left as it is, if another file replaced it since (another
        process sent the element again: its record describes the bytes there)."""
        return self.elements.record_element(thread_id, element, actor=actor, written=written)

    def put_element(
        self,
        thread_id: str,
        element: dict[str, Any],
        data: bytes | None,
        *,
        actor: str | None = None,
    ) -> bool:
        """Store an element and its bytes in one call (the synchronous path)."""
        return self.elements.put_element(thread_id, element, data, actor=actor)

    def get_element(
        self, thread_id: str, element_id: str, element_url: ElementUrl | None = None
    ) -> dict[str, Any] | None:
        return self.views.get_element(thread_id, element_id, element_url)

    def element_file(self, thread_id: str, element_id: str) -> tuple[dict[str, Any], Path] | None:
        """The element's stored record and the path of its bytes, if it has any."""
        return self.views.element_file(thread_id, element_id)

    @then_compact
    def delete_element(
        self, element_id: str, thread_id: str | None = None, *, actor: str | None = None
    ) -> bool:
        """Delete an element and its file. ``False`` if not found (an invalid id
        included)."""
        return self.elements.delete_element(element_id, thread_id, actor=actor)

    # -- journal compaction ---------------------------------------------------------

    def take_due(self) -> list[str]:
        """The threads whose journals the last writes made worth a look (see
        ``auto_compact``), forgotten here: the caller runs :meth:`compact_journal`."""
        return self.compactor.take_due()

    def compact_due(self) -> None:
        """Compact the journals the last writes made worth it; a failure is logged."""
        self.compactor.compact_due()

    def compact_journal(
        self,
        thread_id: str,
        *,
        only_if_worth_it: bool = False,
        edit: Callable[[journal.ThreadState], None] | None = None,
    ) -> Compaction:
        """Rewrite the thread's journal in its compacted form, safe while writers go on
        (see :meth:`Compactor.compact_journal`), ``edit`` changing its folded state
        first."""
        return self.compactor.compact_journal(
            thread_id, only_if_worth_it=only_if_worth_it, edit=edit
        )
