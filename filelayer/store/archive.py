"""The storage core: one archive root, read and written through plain methods.

``ArchiveStore`` is what both the Chainlit adapter and the command line use; it does
not import Chainlit. Its methods are synchronous and hold a lock only for the few
microseconds of an append or a rename. The adapter runs them on the event loop when the
locks they need are free, and in a worker thread otherwise (see :mod:`filelayer.chainlit.offload`):
so every write method takes all the locks it needs when it begins, before it changes
anything, and a lock held elsewhere can stop it only there. Two processes are kept apart
by the lock files; two threads of one process must not call one store at once (the
adapter serialises its calls with :attr:`ArchiveStore.mutex`).

Lock order, always: a thread's stripe lock, then ``users.lock`` / ``deleted.lock`` /
the index database's own write lock. Source of truth is written first (journal,
manifest, tombstone), the derived index after, so a crash in between leaves drift that
the reconciler repairs (see :mod:`filelayer.store.heal`), never loss.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import mimetypes
import os
import re
import shutil
import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

from .. import _time as _times
from .._io import commit as _commit
from .._io import fs as _fs
from .._io import locks as _locks
from .._io import mounts as _mounts
from .._io.flusher import FLUSHER
from .._time import now_iso
from ..errors import (
    ArchiveError,
    CorruptFileError,
    InvalidIdError,
    NotAuthorError,
    StorageWriteError,
    UnknownStepError,
)
from ..format import clock, journal, manifest, users
from ..format import codec as _codec
from ..format.ids import check_id, id_problem, is_valid_id
from ..format.layout import ELEMENTS_DIR, Layout, deleting_path
from ..index.records import DEFAULT_SEARCH_CHARS, searchable
from ..index.records import delete_record as index_delete_record
from ..index.records import favorite_record as index_favorite_record
from ..index.records import feedback_record as index_feedback_record
from ..index.records import text_record as index_text_record
from ..index.summary import ThreadSummary
from ..index.thread_index import Page, ThreadIndex
from . import heal as _heal
from . import session
from .accounts import Accounts
from .compaction import (
    _COMPACT_MIN_BYTES,
    _COMPACT_ROUNDS,
    _DAMAGED,
    _GROWTH_KEPT,
    Compaction,
    _Growth,
)
from .deleted import DeletedThreads
from .views import _STEP_DEFAULTS, _copy_json, element_file_fields

log = logging.getLogger("filelayer")

Durability = Literal["flush", "fsync"]
HealMode = _heal.HealMode
ElementUrl = Callable[[str, str], str]
_V = TypeVar("_V")

_OWNER_CACHE_SIZE = 50_000
"""Step, element and thread ids a process remembers (where they are, that they exist)."""
_TOMBSTONE_CACHE = 256
"""Threads whose deleted ids a process keeps in memory: those it is writing to."""
_FOLDED_CACHE = 32
"""Threads whose folded journal a process keeps: those being read (resumed, shown)."""

_EXT_RE = re.compile(r"\.[A-Za-z0-9]{1,10}$")
_Method = TypeVar("_Method", bound=Callable[..., Any])


def _then_compact(method: _Method) -> _Method:
    """Run the journal compactions the call made due, once it released its locks
    (unless the caller runs them itself, see :attr:`ArchiveStore.defer_compaction`)."""

    @functools.wraps(method)
    def wrapper(self: ArchiveStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        finally:
            if self._due and not self.defer_compaction:
                self.compact_due()

    return wrapper  # type: ignore[return-value]


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
            raise ValueError("durability must be 'flush' or 'fsync'")
        if heal not in ("wait", "background"):
            raise ValueError("heal must be 'wait' or 'background'")
        self.heal_mode: HealMode = heal
        self.root = Path(root).expanduser().absolute()
        self.layout = Layout(self.root)
        self.created = self.layout.initialise(create=create, upgrade=upgrade)
        """Whether this store made a new, empty archive at ``root`` when it opened."""
        _mounts.check_root(self.root)
        self.durable = durability == "fsync"
        self.durability: Durability = durability
        self.lock_timeout = lock_timeout
        self.search_chars = search_chars
        self.index = ThreadIndex(
            self.layout.index_dir, self.layout.index_lock, lock_timeout=lock_timeout
        )
        self.deleted = DeletedThreads(self.layout.deleted_file)
        self.accounts = Accounts(self.layout, lock_timeout)
        self._step_owner: OrderedDict[str, str] = OrderedDict()
        self._element_owner: OrderedDict[str, str] = OrderedDict()
        self._tombstone_cache: OrderedDict[str, journal.Tombstones] = OrderedDict()
        self._folded_cache: OrderedDict[str, journal.FoldedJournal] = OrderedDict()
        self._owner_ids: OrderedDict[str, str] = OrderedDict()  # identifier -> user id
        self._authors: OrderedDict[str, tuple[tuple[int, int, int], str | None]] = OrderedDict()
        self._existing: OrderedDict[str, None] = OrderedDict()  # threads seen to exist
        self.auto_compact = auto_compact
        self.defer_compaction = False
        """Set by a caller that runs the due compactions itself (:meth:`take_due`):
        the adapter runs them in a worker thread, never on the event loop."""
        self._growth: OrderedDict[str, _Growth] = OrderedDict()  # live bytes, as written
        self._due: dict[str, None] = {}  # journals to look at, in order
        self.mutex = threading.RLock()
        """Held around each call by callers that use the store from several threads."""
        self._session: _heal.Session | None = None  # this store's writer session
        self._session_end: Any = None
        self._marking = threading.local()  # the threads whose writes this OS thread marks
        self.healer = _heal.Healer(self)
        if create or upgrade:  # the index is the layer's own, like the .gitignore
            self._ensure_index()

    # -- plumbing -----------------------------------------------------------------

    def thread_lock(self, thread_id: str) -> contextlib.AbstractContextManager[None]:
        """The lock that serialises every write to one thread (across processes). Whoever
        takes it may write: this store's writer session begins first (see
        :mod:`filelayer.store.heal`)."""
        self._begin_session()
        return _locks.locked(self.layout.thread_lock(thread_id), self.lock_timeout)

    @contextlib.contextmanager
    def _write_locks(self, thread_id: str, *, deleted: bool = False) -> Iterator[None]:
        """Every lock a write to one thread takes, taken in order when it begins: the
        thread's, then (for a deletion) the tombstones'. The index database has its own
        write lock, held for the time of its transaction.

        Under them, the write is marked for the reconciler (:mod:`filelayer.store.heal`): this
        store's writer session exists before the first byte is written, and the thread's
        watermark before and after a write that ends without error is noted, so that the
        index's stored watermark follows the files once the write's rows are in."""
        paths = [self.layout.thread_lock(thread_id)]
        if deleted:
            paths.append(self.layout.deleted_lock)
        with _locks.locked_all(paths, self.lock_timeout):
            marking: set[str] | None = getattr(self._marking, "ids", None)
            if marking is None:
                marking = self._marking.ids = set()
            if thread_id in marking:  # an outer write of this thread marks it
                yield
                return
            self._begin_session()
            before = _heal.watermark(self, thread_id)
            marking.add(thread_id)
            try:
                yield
            finally:
                marking.discard(thread_id)
            after = _heal.watermark(self, thread_id)
            if after != before:
                self.index.note_mark(thread_id, before, after)

    def _begin_session(self) -> None:
        if self._session is not None:
            return
        try:
            session = _heal.Session(self.layout.index_dir)
        except OSError as exc:  # a read-only archive: the write fails on its own
            log.debug("filelayer: no writer session in %s (%s)", self.root, exc)
            return
        self._session = session
        _LIVE.add(self)
        # Collected without close(): the lock goes, the file stays (the next opening
        # reconciles). A finalizer may run inside any call, locks held: it takes none.
        self._session_end = weakref.finalize(self, session.close)
        self._session_end.atexit = False

    def _end_session(self) -> None:
        """This store's writes all have their index rows: a later opening need not
        check them (see :func:`_end_session`)."""
        session = self._session
        if session is None:
            return
        if self._session_end is not None:
            self._session_end.detach()
        self._session = self._session_end = None
        _LIVE.discard(self)
        _end_session(self.index, session, flush=not self.durable)

    def _ensure_index(self) -> None:
        """Make the index usable, and start the reconciler if it may lag (see
        :mod:`filelayer.store.heal`): when there is none usable (a new archive, a clone, an
        index of an older format, a damaged one), a new empty one is made at once and
        filled from the thread directories, newest first; when writers died without
        closing, or git changed the work tree since the last reconcile, the threads
        whose files changed are read again. A clean start costs a few ``stat`` calls."""
        try:
            if not self.index.exists():
                self._build_index()
            elif self.index.take_marks_added():
                self.healer.check_at_open(reason="watermarks added to the index")
            else:
                self.healer.check_at_open()
        except OSError as exc:  # a read-only archive: readable, without its index
            log.warning("filelayer: could not build the index of %s: %s", self.root, exc)

    def _build_index(self) -> None:
        has_threads = self.layout.threads.is_dir() and any(
            not p.name.startswith(".") for p in self.layout.threads.iterdir()
        )
        if not has_threads:
            self.index.rebuild([], replace=False)
            return
        log.info("filelayer: no usable index in %s, building it from the threads", self.root)
        # The fill is marked as a writer session before the empty index is switched
        # in: if it stops half-way, the next opening finds it dead and goes on.
        session = _heal.Session(self.layout.index_dir)
        try:
            # A damaged one is replaced; otherwise one another process made meanwhile
            # is kept (its maker fills it).
            self.index.rebuild([], replace=self.index.damaged)
        except BaseException:
            session.end()
            raise
        self.healer.check_at_open(session, "no usable index")

    def reconcile(self, progress: Any = None) -> _heal.Reconciled:
        """Bring the index in line with the thread directories now, reading again only
        the threads whose files changed since their rows were written (see
        :mod:`filelayer.store.heal`); what ``filelayer reconcile`` and git hooks run."""
        self.healer.wait()
        self._begin_session()  # a reconcile cut short is found and done again
        stamp = _heal.git_stamp(self.healer.git)
        done = _heal.reconcile_changed(self, progress=progress)
        if self.healer.git is not None:
            self.index.set_meta(_heal.GIT_META, stamp)
            self.healer.git_seen = stamp
        return done

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
        self.deleted = DeletedThreads(self.layout.deleted_file)
        for cache in (
            self._step_owner,
            self._element_owner,
            self._tombstone_cache,
            self._folded_cache,
            self._authors,
            self._existing,
            self._growth,
            self._owner_ids,
        ):
            cache.clear()

    def wait_healed(self, timeout: float | None = None) -> bool:
        """Wait until the reconciles started in the background are done (``False`` on
        timeout): the index then says what the thread directories said when they began."""
        return self.healer.wait(timeout)

    @staticmethod
    def _remember(cache: OrderedDict[str, _V], key: str, value: _V) -> None:
        cache[key] = value
        cache.move_to_end(key)
        if len(cache) > _OWNER_CACHE_SIZE:
            cache.popitem(last=False)

    def deleted_threads(self) -> dict[str, str]:
        """Every deleted thread id with the time it was deleted."""
        return self.deleted.all()

    def is_deleted(self, thread_id: str) -> bool:
        """Whether ``thread_id`` was deleted (deleted ids stay deleted)."""
        return self.deleted.has(thread_id)

    def _tombstones(
        self, thread_id: str, opened: _fs.AppendFile | None = None
    ) -> journal.Tombstones:
        """The thread's deleted step and element ids. Caller holds the thread's lock
        (and has its journal ``opened``, if it has it open)."""
        cached = self._tombstone_cache.pop(thread_id, None) or journal.Tombstones()
        self._tombstone_cache[thread_id] = cached
        while len(self._tombstone_cache) > _TOMBSTONE_CACHE:
            self._tombstone_cache.popitem(last=False)
        if opened is not None:
            cached.catch_up_open(opened)
        else:
            cached.catch_up(self.layout.journal(thread_id))
        return cached

    def _changes(self) -> _fs.Changes:
        """What one write call changes, made durable as the store's mode says when the
        call is done (see :class:`~filelayer._fs.Changes`)."""
        return _fs.Changes(self.durable, _commit.current())

    def _open_journal(self, thread_id: str, changes: _fs.Changes) -> _fs.AppendFile | None:
        """The thread's journal, open to append to, the thread created first if it is
        new; ``None`` if it was deleted. Caller holds the thread's lock.

        A thread this process saw exist is taken to exist while its journal does (the
        manifest is made before the first line): no look at its manifest."""
        path = self.layout.journal(thread_id)
        if thread_id in self._existing:
            try:
                return _fs.AppendFile(path, create=False)
            except FileNotFoundError:
                pass  # not written yet, or deleted since: look properly
        if not self._ensure_thread_locked(thread_id, changes):
            return None
        return _fs.AppendFile(path)

    def _append_journal(
        self,
        thread_id: str,
        records: list[dict[str, Any]],
        changes: _fs.Changes,
        *,
        sync: bool = False,
        deleted: str | None = None,
    ) -> None:
        data = b"".join(_codec.encode_line(r) for r in records)
        self._append_lines(thread_id, data, changes, sync=sync, deleted=deleted)

    def _append_lines(
        self,
        thread_id: str,
        data: bytes,
        changes: _fs.Changes,
        *,
        sync: bool = False,
        deleted: str | None = None,
    ) -> None:
        with _fs.AppendFile(self.layout.journal(thread_id)) as opened:
            self._append_to(thread_id, opened, data, changes, sync=sync, deleted=deleted)

    def _append_to(
        self,
        thread_id: str,
        opened: _fs.AppendFile,
        data: bytes,
        changes: _fs.Changes,
        *,
        sync: bool = False,
        step: str | None = None,
        deleted: str | None = None,
    ) -> None:
        """Append lines to the thread's open journal: a version of ``step``, or the
        deletion of step ``deleted``, or other lines. The tombstones of a thread being
        written were read up to its end: they tell that the file ends with a complete
        line, and take the new lines without reading them back."""
        dead = self._tombstone_cache.get(thread_id)
        whole = dead is not None and dead.ends_at(opened)
        # Every record gets the next stamp of the journal's clock (docs/format.md,
        # "Ordering records"): what a merge of two clones' lines is ordered by.
        last = dead.last_stamp if dead is not None and whole else _last_stamp(opened)
        data, _ = clock.stamp_lines(data, last)
        at = opened.write(data, changes=changes, sync=sync, whole=whole)
        if dead is not None:
            dead.appended(opened, at, data)
        if self.auto_compact:
            self._grew(thread_id, opened, at, len(data), step, deleted)

    def _grew(
        self,
        thread_id: str,
        opened: _fs.AppendFile,
        at: int,
        size: int,
        step: str | None,
        deleted: str | None,
    ) -> None:
        """Follow the journal's live bytes as lines are appended (see :class:`_Growth`),
        and make its compaction due once its dead bytes may outweigh them."""
        growth = self._growth.get(thread_id)
        if growth is None or growth.file != opened.id:
            # A journal this write started is known from its first byte; any other is
            # not known until a compaction (done or declined) has read it once.
            growth = _Growth(opened.id) if at == 0 else _Growth()
            self._growth[thread_id] = growth
            if len(self._growth) > _GROWTH_KEPT:
                self._growth.popitem(last=False)
        growth.written(at, size, step, deleted)
        end = opened.size
        if end >= _COMPACT_MIN_BYTES and (
            growth.file is None
            or end > 2 * (growth.live + growth.unknown)
            or growth.unknown > growth.live
        ):
            self._due[thread_id] = None

    def _make_dir(self, directory: Path, changes: _fs.Changes) -> None:
        try:
            _fs.make_dirs(directory, changes)
        except OSError as exc:
            raise StorageWriteError(directory, exc) from exc

    def _ensure_thread_locked(self, thread_id: str, changes: _fs.Changes) -> bool:
        """Create the thread if it is new; ``False`` if it was deleted. Caller locks."""
        path = self.layout.manifest(thread_id)
        if path.exists():
            self._remember(self._existing, thread_id, None)
            return True
        self._existing.pop(thread_id, None)
        if self.is_deleted(thread_id):
            log.debug("filelayer: ignoring a late write to deleted thread %s", thread_id)
            return False
        now = now_iso()
        self._make_dir(path.parent, changes)
        doc = manifest.new(thread_id, now)
        manifest.write(path, doc, changes=changes)
        self.index.append([self.thread_index_record(doc)])
        self._remember(self._existing, thread_id, None)
        return True

    def author_of(self, thread_id: str) -> str | None:
        """The identifier of the thread's author; ``None`` for a thread without one
        (an app without login, a Slack or Teams thread, a thread not created yet).

        A thread whose manifest names a user id that the archive does not know has an
        author nobody can prove to be: ``""``, which matches no caller.
        """
        path = self.layout.manifest(thread_id)
        try:
            st = os.stat(path)
        except OSError:
            return None
        signature = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._authors.get(thread_id)
        if cached is not None and cached[0] == signature:
            return cached[1]
        doc = self._read_manifest_lenient(thread_id) or {}
        author: str | None = doc.get("userIdentifier") or None
        if author is None and isinstance(doc.get("userId"), str) and doc["userId"]:
            user = self.user_by_id(doc["userId"])
            author = str(user["identifier"]) if user else ""
        self._remember(self._authors, thread_id, (signature, author))
        return author

    def authorize(self, thread_id: str, actor: str | None) -> None:
        """Refuse a write by ``actor`` to a thread another user wrote.

        ``actor`` is the identifier of the logged-in user on whose behalf the call is
        made, ``None`` for the app itself (its own code, a script, the command line),
        which may write anywhere. A thread without an author (no login, Slack and Teams
        threads) may be written by anyone, as before. Callers hold the thread's lock, so
        the author cannot change between this check and the write.
        """
        if actor is None:
            return
        author = self.author_of(thread_id)
        if author is not None and author != actor:
            log.warning(
                "filelayer: refused a write by %r to thread %s of another user", actor, thread_id
            )
            raise NotAuthorError(thread_id, actor)

    def owner_id(self, doc: dict[str, Any]) -> str | None:
        """The user id the index files a thread under: its manifest's ``userId``,
        unless the archive's user file for its ``userIdentifier`` holds another id.
        That happens when one person first logged in on two clones before user ids were
        derived from identifiers (:func:`users.user_id`) and a merge kept one of the two
        ids: the person's sidebar then holds the threads of both clones."""
        uid = doc.get("userId")
        ident = doc.get("userIdentifier")
        if not isinstance(uid, str) or not isinstance(ident, str) or not ident:
            return uid if isinstance(uid, str) else None
        if uid == users.user_id(ident):
            return uid  # a derived id is the same on every clone: no file to read
        known = self._owner_ids.get(ident)
        if known is None:
            user = self.get_user(ident)
            known = str(user["id"]) if user else uid
            self._remember(self._owner_ids, ident, known)
        return known

    def thread_index_record(self, doc: dict[str, Any]) -> dict[str, Any]:
        return ThreadSummary(
            id=doc["id"],
            user_id=self.owner_id(doc),
            user_identifier=doc.get("userIdentifier"),
            name=doc.get("name"),
            created_at=_index_time(doc.get("createdAt")),
            updated_at=doc.get("updatedAt") or "",
            tags=doc.get("tags"),
        ).record()

    def _read_manifest_lenient(self, thread_id: str) -> dict[str, Any] | None:
        """The manifest, or a stand-in built from the directory when it is damaged."""
        path = self.layout.manifest(thread_id)
        try:
            return manifest.read(path)
        except CorruptFileError as exc:
            log.warning("filelayer: %s", exc)
            return manifest.new(thread_id, "")

    # -- users ---------------------------------------------------------------------

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

    # -- threads -------------------------------------------------------------------

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
        check_id("thread", thread_id)
        if name is not None and not isinstance(name, str):
            raise ValueError("a thread name must be a string")
        if metadata is not None and not isinstance(metadata, dict):
            raise ValueError("thread metadata must be a dict")
        if tags is not None and (
            not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)
        ):
            raise ValueError("thread tags must be a list of strings")
        local: dict[str, Any] | None = None
        if metadata is not None and session.is_session(metadata):
            # Chainlit's persisted user session: its volatile part is kept out of the
            # committed manifest (see filelayer.session).
            metadata, local = session.split(metadata)
        identifier: str | None = None
        if user_id is not None:
            if not isinstance(user_id, str):
                raise ValueError("a user id must be a string")
            user = self.user_by_id(user_id)
            identifier = user["identifier"] if user else None
        path = self.layout.manifest(thread_id)
        with self._write_locks(thread_id), self._changes() as changes:
            self.authorize(thread_id, actor)
            doc = manifest.read(path)
            created = doc is None
            if doc is None:
                if self.is_deleted(thread_id):
                    log.debug("filelayer: not resurrecting deleted thread %s", thread_id)
                    return False
                doc = manifest.new(thread_id, now_iso())
            before = _copy_json(doc)
            if name is None and metadata and isinstance(metadata.get("name"), str):
                name = metadata["name"]
            if name is not None:
                doc["name"] = name
            if user_id is not None:
                doc["userId"] = user_id
                if identifier is not None or doc.get("userId") != before.get("userId"):
                    doc["userIdentifier"] = identifier
            if tags is not None:
                doc["tags"] = list(tags)
            if metadata is not None:
                doc["metadata"] = manifest.merge_metadata(doc.get("metadata") or {}, metadata)
            changed = created or doc != before
            if changed and not created:
                doc["updatedAt"] = max(now_iso(), before.get("updatedAt") or "")
            data = manifest.encode(doc)  # refuse what cannot be stored before making anything
            if changed:
                if created:
                    self._make_dir(path.parent, changes)
                elif _commit.on_loop() and _fs.holds_durable_content(path):
                    # Its replacement is fsynced before the rename: not on the loop.
                    raise _commit.DiskWait(path)
                group = changes.group
                if group is not None and not created:
                    # A group commit: the new manifest is fsynced with the group's other
                    # files and renamed before the call is acknowledged; the thread's
                    # lock is held until then.
                    held = _locks.hold(self.layout.thread_lock(thread_id), self.lock_timeout)
                    try:
                        fd, tmp = _fs.write_temp(path, data)
                    except BaseException:
                        held.release()
                        raise
                    group.replace_later(fd, tmp, path, held.release, thread_id)
                    changes.entry(path.parent)
                else:
                    manifest.write_encoded(path, data, changes=changes)
                self.index.append([self.thread_index_record(doc)])
            elif not self._index_agrees(doc):
                # A retry of a call whose manifest landed but whose index record was
                # lost (a crash between the two): put the record back.
                self.index.append([self.thread_index_record(doc)])
            if local is not None:
                session.write(session.path(self.root, thread_id), local)
        return True

    def put_manifest(self, doc: dict[str, Any]) -> None:
        """Write a thread's manifest as given, its times included (``filelayer copy``
        carries threads with their own times; ``update_thread`` stamps the present).
        Refused for a deleted thread."""
        thread_id = check_id("thread", doc.get("id"))
        doc = {**doc, "metadata": doc.get("metadata") or {}}
        user = self.user_by_id(doc["userId"]) if isinstance(doc.get("userId"), str) else None
        if user is not None:
            doc["userIdentifier"] = user["identifier"]
        manifest.encode(doc)
        path = self.layout.manifest(thread_id)
        with self._write_locks(thread_id), _fs.Changes(durable=True) as changes:
            if self.is_deleted(thread_id):
                raise ArchiveError(f"thread {thread_id} was deleted in {self.root}")
            self._make_dir(path.parent, changes)
            manifest.write(path, doc, changes=changes)
            self.index.append([self.thread_index_record(doc)])

    def _index_agrees(self, doc: dict[str, Any]) -> bool:
        summary = self._indexed(doc["id"])
        return summary is not None and (
            summary.name,
            summary.user_id,
            summary.user_identifier,
            summary.tags,
        ) == (doc.get("name"), self.owner_id(doc), doc.get("userIdentifier"), doc.get("tags"))

    def delete_thread(self, thread_id: str, *, actor: str | None = None) -> bool:
        """Delete a thread and everything in it. ``False`` if there was nothing (an id
        that is not a valid id names nothing: ``False``, nothing written)."""
        if not _deletable("thread", thread_id):
            return False
        directory = self.layout.thread_dir(thread_id)
        with self._write_locks(thread_id, deleted=True):
            self.authorize(thread_id, actor)
            existed = directory.exists()
            _fs.append(
                self.layout.deleted_file,
                _codec.encode_line({"deletedAt": now_iso(), "id": thread_id}),
                durable=True,
            )
            self.deleted.add(thread_id, now_iso())
            self._existing.pop(thread_id, None)
            if existed:
                # Rename first: readers see the whole thread or none of it.
                doomed = deleting_path(directory)
                try:
                    os.replace(directory, doomed)
                except OSError as exc:
                    raise StorageWriteError(directory, exc) from exc
                shutil.rmtree(doomed, ignore_errors=True)
                # The rename and the removal reach the disk before the call returns:
                # readers also consult the tombstone, but a thread must not come back.
                _fs.fsync_dirs([self.layout.threads])
            self.index.append([index_delete_record(thread_id)])
            session.remove(session.path(self.root, thread_id))
        return existed

    def read_manifest(self, thread_id: str) -> dict[str, Any] | None:
        """The thread's manifest; ``None`` for no thread, or a deleted one (whatever a
        power cut left of its directory: the tombstone is what counts)."""
        if not is_valid_id(thread_id) or self.is_deleted(thread_id):
            return None
        doc = self._read_manifest_lenient(thread_id)
        if doc is None and self.layout.journal(thread_id).exists():
            doc = manifest.new(thread_id, "")
        return doc

    def thread_author(self, thread_id: str) -> str:
        """The author's identifier, ``""`` for an unknown thread (Chainlit: 404)."""
        doc = self.read_manifest(thread_id)
        if doc is None:
            return ""
        return str(doc.get("userIdentifier") or "")

    @contextlib.contextmanager
    def _locked_state(self, thread_id: str) -> Iterator[journal.ThreadState | None]:
        """Hold the thread's locks and give its folded journal (``None``: no thread)."""
        with self._write_locks(thread_id):
            if not self.layout.manifest(thread_id).exists():
                yield None
            else:
                yield self.read_state(thread_id)

    def _folded(self, thread_id: str) -> journal.FoldedJournal:
        """The thread's folded journal, kept for the threads read most recently: a
        thread read again costs a ``stat`` plus the lines appended since."""
        folded = self._folded_cache.pop(thread_id, None) or journal.FoldedJournal()
        self._folded_cache[thread_id] = folded
        while len(self._folded_cache) > _FOLDED_CACHE:
            self._folded_cache.popitem(last=False)
        folded.catch_up(self.layout.journal(thread_id))
        return folded

    def read_state(self, thread_id: str) -> journal.ThreadState:
        return journal.fold(journal.read(self.layout.journal(thread_id)).records)

    def get_thread(
        self, thread_id: str, element_url: ElementUrl | None = None
    ) -> dict[str, Any] | None:
        """The whole thread in Chainlit's ``ThreadDict`` shape, or ``None``.

        ``element_url(thread_id, element_id)`` gives the URL of a stored element's bytes
        (the element route); elements that came with their own URL keep it.
        """
        doc = self.read_manifest(thread_id)
        if doc is None:
            return None
        folded = self._folded(thread_id)
        state = folded.state
        feedback = state.feedback_by_step()
        steps = []
        for stored in folded.ordered:
            # A copy: the folded state stays cached, and callers (the app's
            # on_chat_resume) may change what they are given.
            step = {**_STEP_DEFAULTS, "metadata": {}, **_copy_json(stored)}
            step["threadId"] = thread_id
            step["streaming"] = False  # nothing persisted is still streaming
            fb = feedback.get(stored["id"])
            step["feedback"] = (
                {
                    "id": fb["id"],
                    "forId": fb["forId"],
                    "value": fb.get("value"),
                    "comment": fb.get("comment"),
                }
                if fb
                else None
            )
            steps.append(step)
            self._remember(self._step_owner, stored["id"], thread_id)
        elements = []
        for el in state.live_elements():
            el = _copy_json(el)
            elements.append(self._element_view(thread_id, el, element_url))
            self._remember(self._element_owner, el["id"], thread_id)
        return {
            "id": thread_id,
            "createdAt": doc.get("createdAt") or "",
            "updatedAt": doc.get("updatedAt") or "",
            "name": doc.get("name"),
            "userId": doc.get("userId"),
            "userIdentifier": doc.get("userIdentifier"),
            "tags": doc.get("tags"),
            "metadata": {
                **(doc.get("metadata") or {}),
                **session.read(session.path(self.root, thread_id)),
            },
            "steps": steps,
            "elements": elements,
        }

    def list_threads(
        self,
        *,
        user_id: str | None,
        first: int = 20,
        cursor: str | None = None,
        search: str | None = None,
        feedback: int | None = None,
    ) -> tuple[list[dict[str, Any]], Page]:
        """A page of threads (without steps), newest activity first, from the index.

        Each thread's ``createdAt`` is its *activity* (the later of its creation and its
        last message), not its creation time: Chainlit's UI re-sorts the threads it
        receives by ``createdAt`` and groups them by that date ("Today", "Yesterday"…),
        so an old thread continued today must say today, and the order the UI makes
        must be the order of the pages (their cursors follow the same key), or threads
        of a later page would land above those already shown. Chainlit's PostgreSQL
        layer does the same. ``updatedAt`` is the last change of any kind (a rename
        too); ``get_thread`` and the manifest keep the true creation time.
        """
        self.healer.look()  # git moved the files under this process: reconcile
        page = self.index.page(
            user_id=user_id, first=first, cursor=cursor, search=search, feedback=feedback
        )
        if self.index.damaged:  # found so just now: it is derived, build it again
            self._ensure_index()
            page = self.index.page(
                user_id=user_id, first=first, cursor=cursor, search=search, feedback=feedback
            )
        threads = []
        for summary in page.items:
            doc = self._read_manifest_lenient(summary.id) or {}
            threads.append(
                {
                    "id": summary.id,
                    "createdAt": summary.activity,  # what the UI sorts and groups by
                    "updatedAt": summary.changed,
                    "name": summary.name,
                    "userId": summary.user_id,
                    "userIdentifier": summary.user_identifier,
                    "tags": summary.tags,
                    "metadata": doc.get("metadata") or {},
                    "steps": [],
                    "elements": [],
                }
            )
        self.healer.page_served.set()
        return threads, page

    def thread_ids(self) -> list[str]:
        """Every thread directory's id (from the file system, not the index)."""
        if not self.layout.threads.is_dir():
            return []
        return sorted(
            entry.name
            for entry in os.scandir(self.layout.threads)
            if entry.is_dir() and not entry.name.startswith(".") and is_valid_id(entry.name)
        )

    # -- steps ---------------------------------------------------------------------

    @_then_compact
    def write_step(self, step: dict[str, Any], *, actor: str | None = None) -> bool:
        """Create or update (merge) a step. ``False`` if its thread was deleted."""
        step_id = check_id("step", step.get("id"))
        thread_id = step.get("threadId") or self.locate_step(step_id)
        if not thread_id:
            raise ValueError(f"step {step_id!r} has no threadId and is not in the archive")
        check_id("thread", thread_id)
        record = journal.step_record(step)
        line = _codec.encode_line(record)  # refuse what cannot be stored before locking
        with self._write_locks(thread_id), self._changes() as changes:
            self.authorize(thread_id, actor)
            opened = self._open_journal(thread_id, changes)
            if opened is None:
                return False
            with opened:
                index_records = self._step_index_records(thread_id, step_id, record["step"], opened)
                if index_records is None:
                    log.debug("filelayer: ignoring a late write to deleted step %s", step_id)
                    return True
                self._append_to(thread_id, opened, line, changes, step=step_id)
            if index_records:
                self.index.append(index_records)
        self._remember(self._step_owner, step_id, thread_id)
        return True

    def _indexed(self, thread_id: str) -> ThreadSummary | None:
        """The index's current view of a thread, for a writer holding its lock (the
        database answers with what every process committed, this thread's last writer
        included)."""
        return self.index.threads.get(thread_id)

    def _step_index_records(
        self, thread_id: str, step_id: str, step: dict[str, Any], opened: _fs.AppendFile
    ) -> list[dict[str, Any]] | None:
        """The index records a step write needs; ``None`` if the step was deleted (the
        write would be ignored by every reader: it is not made at all).

        The journal's tombstones are consulted only when the index does not know the
        step yet, which is where a deleted step would otherwise come back."""
        metadata = step.get("metadata")
        if (
            "type" in step
            and step["type"] not in journal.MESSAGE_TYPES
            and not (isinstance(metadata, dict) and "favorite" in metadata)
        ):
            return []  # a run or tool step: nothing the index keeps (most writes)
        known = self.index.text(thread_id, step_id)
        records: list[dict[str, Any]] = []
        # A message is indexed from its first write, even while its text is still
        # empty: a later update may leave out the type, and must still be recognised.
        is_message = step.get("type") in journal.MESSAGE_TYPES or (
            "type" not in step and known is not None
        )
        if is_message:
            output = step.get("output")
            text = searchable(output[: self.search_chars]) if isinstance(output, str) else ""
            if known is not None and not text:
                text = known[1]  # as in the journal: an empty write keeps the text
            at = _index_time(step.get("createdAt") or step.get("start"))
            if known is not None and known[0]:
                at = min(at, known[0]) if at else known[0]
            if known != (at, text):
                records.append(index_text_record(thread_id, step_id, at, text))
        if isinstance(metadata, dict) and "favorite" in metadata:
            on = bool(metadata["favorite"])
            if on != self.index.is_favorite(thread_id, step_id):
                records.append(index_favorite_record(thread_id, step_id, on))
        if known is None and records and step_id in self._tombstones(thread_id, opened).steps:
            return None
        return records

    def locate_step(
        self, step_id: str, prefer: str | None = None, *, scan: bool = True
    ) -> str | None:
        """The thread holding ``step_id``: ``prefer`` if it holds it, then recent
        writes, then (unless ``scan`` is false) a scan of the journals, most recently
        active thread first (Chainlit's delete_step and some feedback paths give no
        thread id).

        Step ids are chosen by the client, so two threads can hold the same id:
        ``prefer`` (the caller's own session thread) keeps a delete in the thread it
        was meant for."""
        if (
            prefer
            and is_valid_id(prefer)
            and self.layout.journal(prefer).exists()
            and step_id in self._folded(prefer).state.steps
        ):
            return prefer
        owner = self._step_owner.get(step_id)
        if owner is not None or not scan:
            return owner
        return self.scan_journals("step", step_id, self.scan_order())

    def locate_element(self, element_id: str, *, scan: bool = True) -> str | None:
        owner = self._element_owner.get(element_id)
        if owner is not None or not scan:
            return owner
        return self.scan_journals("element", element_id, self.scan_order())

    def scan_order(self) -> list[str]:
        """The indexed threads, most recently active first: where a scan for an id
        looks (the threads the index does not know come after, see
        :meth:`scan_journals`)."""
        self.index.refresh()
        return list(self.index.newest_first())

    def scan_journals(
        self, kind: Literal["step", "element"], key: str, order: list[str]
    ) -> str | None:
        """The first thread of ``order``, then of the thread directories, whose journal
        holds the live step (or element) ``key``; ``None`` if none does.

        Reads files only, never the store's caches: the adapter runs it in a worker
        thread, without holding :attr:`mutex`, while other calls go on."""
        if not is_valid_id(key):
            return None
        needle = f'"{key}"'.encode()
        seen = set(order)
        for ids in (order, (t for t in self.thread_ids() if t not in seen)):
            for thread_id in ids:
                data = _fs.read_bytes(self.layout.journal(thread_id))
                if data and needle in data:
                    state = journal.fold(journal.parse(data).records)
                    if key in (state.steps if kind == "step" else state.elements):
                        return thread_id
        return None

    @_then_compact
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
        if not _deletable("step", step_id):
            return False
        thread_id = thread_id or self.locate_step(step_id, prefer)
        if not thread_id or not is_valid_id(thread_id):
            return False
        with self._locked_state(thread_id) as state, self._changes() as changes:
            if state is None:
                return False
            self.authorize(thread_id, actor)
            records = [journal.step_delete_record(step_id)]
            doomed_files = []
            for el in state.elements.values():
                if el.get("forId") == step_id:
                    records.append(journal.element_delete_record(el["id"]))
                    if isinstance(el.get("file"), str):
                        doomed_files.append(el["file"])
            # The records that hide the elements reach the disk before their files go
            # (in either mode): a power cut must not leave an element without its bytes.
            self._append_journal(
                thread_id, records, changes, sync=bool(doomed_files), deleted=step_id
            )
            for relative in doomed_files:
                self._remove_element_file(thread_id, relative, changes)
            summary = self._indexed(thread_id)
            index_records: list[dict[str, Any]] = []
            if summary is not None:
                if step_id in summary.texts:
                    index_records.append(index_text_record(thread_id, step_id, "", None))
                for fid, (sid, _) in summary.feedback.items():
                    if sid == step_id:
                        index_records.append(index_feedback_record(thread_id, fid, None, None))
                if step_id in summary.favorites:
                    index_records.append(index_favorite_record(thread_id, step_id, False))
            if index_records:
                self.index.append(index_records)
        self._step_owner.pop(step_id, None)
        return True

    # -- feedback ------------------------------------------------------------------

    @_then_compact
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
        """Rate a step (one feedback per step: a new one replaces the old).

        Refused with :class:`UnknownStepError` unless the step is live in an existing
        thread: feedback never creates a thread, nor rates what was deleted.
        """
        check_id("step", for_id)
        feedback_id = check_id("feedback", feedback_id or str(uuid.uuid4()))
        if value not in (0, 1):  # True and False are 1 and 0
            raise ValueError("feedback value must be 0 or 1")
        value = int(value)
        if comment is not None and not isinstance(comment, str):
            raise ValueError("a feedback comment must be a string")
        if thread_id is None:
            thread_id = self.locate_step(for_id)
            if thread_id is None:
                raise UnknownStepError(for_id, None)
        check_id("thread", thread_id)
        record = journal.feedback_record(
            {"id": feedback_id, "forId": for_id, "value": int(value), "comment": comment}
        )
        line = _codec.encode_line(record)  # refuse what cannot be stored before locking
        with self._write_locks(thread_id), self._changes() as changes:
            self.authorize(thread_id, actor)
            self.index.refresh()
            owner = self.index.feedback_owner(feedback_id)
            if owner is not None and owner != thread_id:
                raise InvalidIdError("feedback", feedback_id, "it rates a step of another thread")
            if (
                self.is_deleted(thread_id)
                or not self.layout.manifest(thread_id).exists()
                or for_id not in self._folded(thread_id).state.steps
            ):
                raise UnknownStepError(for_id, thread_id)
            self._append_lines(thread_id, line, changes)
            summary = self._indexed(thread_id)
            index_records = []
            if summary is not None:
                for fid, (sid, _) in summary.feedback.items():
                    if sid == for_id and fid != feedback_id:
                        index_records.append(index_feedback_record(thread_id, fid, None, None))
            index_records.append(index_feedback_record(thread_id, feedback_id, for_id, value))
            self.index.append(index_records)
        return feedback_id

    @_then_compact
    def delete_feedback(self, feedback_id: str, *, actor: str | None = None) -> bool:
        """Withdraw a feedback. ``True`` once it is gone (or was never given); ``False``
        for an id that is not a valid id, which names nothing."""
        if not _deletable("feedback", feedback_id):
            return False
        self.index.refresh()
        thread_id = self.index.feedback_owner(feedback_id)
        if thread_id is None:
            return True
        with self._write_locks(thread_id), self._changes() as changes:
            self.authorize(thread_id, actor)
            if self.layout.manifest(thread_id).exists():
                self._append_journal(
                    thread_id, [journal.feedback_delete_record(feedback_id)], changes
                )
            self.index.append([index_feedback_record(thread_id, feedback_id, None, None)])
        return True

    # -- elements ------------------------------------------------------------------

    def element_relative_path(self, element_id: str, name: str | None, mime: str | None) -> str:
        """Where an element's bytes live, relative to its thread directory.

        The file is named by the element id (re-sending an element overwrites its file)
        plus an extension from its name or mime type, so a person can open it: a dot
        and 1 to 10 ASCII letters or digits, lowercased. So the name starts with a letter
        or a digit, like the id, and never takes a name the layer reserves for its own
        files (see :data:`filelayer.layout.RESERVED_PREFIX`).
        """
        check_id("element", element_id)
        ext = ""
        match = _EXT_RE.search(name or "")
        if match:
            ext = match.group(0)
        elif mime:
            # The system's table may offer ".c++" or ".~" first: take a plain one.
            candidates = mimetypes.guess_all_extensions(mime.split(";")[0].strip())
            ext = next((e for e in candidates if _EXT_RE.fullmatch(e)), "")
        return f"{ELEMENTS_DIR}/{element_id}{ext.lower()}"

    def _element_refused(
        self, thread_id: str, element: dict[str, Any], changes: _fs.Changes
    ) -> bool:
        """Whether the element is deleted: its id was, or the step it is for (deleted
        ids stay deleted: a late ``send`` after ``remove`` stores nothing). An element
        sent for a deleted step is deleted with it, as the journal's readers fold it:
        its tombstone is journaled, so no later re-send without a step brings it back.
        Caller locks, and has made sure the thread exists."""
        dead = self._tombstones(thread_id)
        element_id = element.get("id")
        if element_id in dead.elements:
            return True
        if journal.for_deleted_step(element, dead.steps):
            log.debug("filelayer: element %s is for a deleted step: deleted", element_id)
            stored = self._folded(thread_id).state.elements.get(str(element_id))
            has_file = stored is not None and isinstance(stored.get("file"), str)
            record = journal.element_delete_record(str(element_id))
            # The record reaches the disk before the file goes (see delete_step).
            self._append_journal(thread_id, [record], changes, sync=has_file)
            if stored is not None and has_file:
                self._remove_element_file(thread_id, stored["file"], changes)  # an earlier copy's
            return True
        return False

    def prepare_element(
        self,
        thread_id: str,
        element: dict[str, Any] | None = None,
        *,
        actor: str | None = None,
    ) -> Path | None:
        """Make the thread's element directory; ``None`` if the thread was deleted, or
        ``element`` (when given) or its step was."""
        check_id("thread", thread_id)
        if element is not None:
            check_id("element", element.get("id"))
        with self._write_locks(thread_id), self._changes() as changes:
            self.authorize(thread_id, actor)
            if not self._ensure_thread_locked(thread_id, changes):
                return None
            if element is not None and self._element_refused(thread_id, element, changes):
                return None
            directory = self.layout.elements_dir(thread_id)
            self._make_dir(directory, changes)
            return directory

    @_then_compact
    def record_element(
        self, thread_id: str, element: dict[str, Any], *, actor: str | None = None
    ) -> bool:
        """Journal an element whose bytes (if any) are already in place. ``False`` (and
        its file removed) if the thread, the element or its step was deleted."""
        check_id("thread", thread_id)
        element_id = check_id("element", element.get("id"))
        record = journal.element_record(element)
        line = _codec.encode_line(record)  # refuse what cannot be stored before locking
        with self._write_locks(thread_id), self._changes() as changes:
            self.authorize(thread_id, actor)
            if not self._ensure_thread_locked(thread_id, changes) or self._element_refused(
                thread_id, element, changes
            ):
                if isinstance(element.get("file"), str):
                    self._remove_element_file(thread_id, element["file"], changes)
                return False
            self._append_lines(thread_id, line, changes)
        self._remember(self._element_owner, element_id, thread_id)
        return True

    def put_element(
        self,
        thread_id: str,
        element: dict[str, Any],
        data: bytes | None,
        *,
        actor: str | None = None,
    ) -> bool:
        """Store an element and its bytes in one call (the synchronous path)."""
        element = dict(element)
        check_id("thread", thread_id)
        check_id("element", element.get("id"))
        if data is not None:
            directory = self.prepare_element(thread_id, element, actor=actor)
            if directory is None:
                return False
            relative = self.element_relative_path(
                element["id"], element.get("name"), element.get("mime")
            )
            target = self.layout.element_file(thread_id, relative)
            assert target is not None
            with self._changes() as changes:
                _fs.atomic_write(target, data, changes=changes)
            element.update(element_file_fields(relative, data))
        return self.record_element(thread_id, element, actor=actor)

    def _remove_element_file(self, thread_id: str, relative: str, changes: _fs.Changes) -> None:
        path = self.layout.element_file(thread_id, relative)
        if path is not None:
            try:
                path.unlink()
            except FileNotFoundError:
                return
            changes.entry(path.parent)

    @staticmethod
    def _element_view(
        thread_id: str, el: dict[str, Any], element_url: ElementUrl | None
    ) -> dict[str, Any]:
        view = {k: v for k, v in el.items() if k not in ("file", "sha256", "bytes")}
        view["threadId"] = thread_id
        if not view.get("url"):
            has_file = isinstance(el.get("file"), str)
            view["url"] = element_url(thread_id, el["id"]) if has_file and element_url else None
        view.setdefault("props", {} if el.get("type") == "custom" else None)
        return view

    def get_element(
        self, thread_id: str, element_id: str, element_url: ElementUrl | None = None
    ) -> dict[str, Any] | None:
        if not (is_valid_id(thread_id) and is_valid_id(element_id)):
            return None
        if not self.layout.journal(thread_id).exists() or self.is_deleted(thread_id):
            return None
        state = self.read_state(thread_id)
        live = {e["id"]: e for e in state.live_elements()}
        el = live.get(element_id)
        return self._element_view(thread_id, el, element_url) if el else None

    def element_file(self, thread_id: str, element_id: str) -> tuple[dict[str, Any], Path] | None:
        """The element's stored record and the path of its bytes, if it has any."""
        if not (is_valid_id(thread_id) and is_valid_id(element_id)) or self.is_deleted(thread_id):
            return None
        state = self.read_state(thread_id)
        el = {e["id"]: e for e in state.live_elements()}.get(element_id)
        if el is None or not isinstance(el.get("file"), str):
            return None
        path = self.layout.element_file(thread_id, el["file"])
        if path is None or not path.is_file():
            return None
        return el, path

    @_then_compact
    def delete_element(
        self, element_id: str, thread_id: str | None = None, *, actor: str | None = None
    ) -> bool:
        """Delete an element and its file. ``False`` if not found (an invalid id
        included)."""
        if not _deletable("element", element_id):
            return False
        thread_id = thread_id or self.locate_element(element_id)
        if not thread_id or not is_valid_id(thread_id):
            return False
        with self._locked_state(thread_id) as state, self._changes() as changes:
            if state is None:
                return False
            self.authorize(thread_id, actor)
            el = state.elements.get(element_id)
            has_file = el is not None and isinstance(el.get("file"), str)
            # The record reaches the disk before the file goes (see delete_step).
            record = journal.element_delete_record(element_id)
            self._append_journal(thread_id, [record], changes, sync=has_file)
            if el is not None and has_file:
                self._remove_element_file(thread_id, el["file"], changes)
        self._element_owner.pop(element_id, None)
        return el is not None

    # -- favorites -----------------------------------------------------------------

    def favorite_steps(self, user_id: str) -> list[dict[str, Any]]:
        if not isinstance(user_id, str):
            return []
        self.index.refresh()
        result = []
        for thread_id, step_ids in self.index.favorites_of(user_id):
            thread = self.get_thread(thread_id)
            if thread is None:
                continue
            for step in thread["steps"]:
                if step["id"] in step_ids and (step.get("metadata") or {}).get("favorite"):
                    result.append(step)
        result.sort(key=lambda s: s.get("createdAt") or "", reverse=True)
        return result

    # -- maintenance ---------------------------------------------------------------

    def summarise(self, thread_id: str) -> ThreadSummary | None:
        """What the index should hold for a thread, computed from its files."""
        doc = self.read_manifest(thread_id)
        if doc is None:
            return None
        state = self.read_state(thread_id)
        texts: dict[str, tuple[str, str]] = {}
        favorites: set[str] = set()
        for step in state.steps.values():
            if step.get("type") in journal.MESSAGE_TYPES:
                output = step.get("output")
                text = output[: self.search_chars] if isinstance(output, str) else ""
                at = _index_time(step.get("createdAt") or step.get("start"))
                texts[step["id"]] = (at, searchable(text))
            if (step.get("metadata") or {}).get("favorite"):
                favorites.add(step["id"])
        feedback = {
            fb["id"]: (fb["forId"], int(fb.get("value") or 0))
            for fb in state.feedback_by_step().values()
        }
        return ThreadSummary(
            id=thread_id,
            user_id=self.owner_id(doc),
            user_identifier=doc.get("userIdentifier"),
            name=doc.get("name"),
            created_at=_index_time(doc.get("createdAt")),
            updated_at=doc.get("updatedAt") or "",
            tags=doc.get("tags"),
            texts=texts,
            feedback=feedback,
            favorites=favorites,
        )

    def reindex(self, progress: Any = None) -> int:
        """Rebuild the index from the thread directories. Returns the thread count.

        Writers go on meanwhile: the new index is built aside and switched in under the
        index lock for milliseconds, then what they wrote meanwhile is caught up (see
        :mod:`filelayer.reindex`)."""
        from .reindex import rebuild

        self._begin_session()  # a catch-up cut short is found and done again
        return rebuild(self, progress)

    def reindex_thread(self, thread_id: str) -> None:
        """Make the index hold what one thread's files say (after a repair)."""
        _heal.reconcile_thread(self, thread_id)

    # -- journal compaction --------------------------------------------------------

    def take_due(self) -> list[str]:
        """The threads whose journals the last writes made worth a look (see
        ``auto_compact``), forgotten here: the caller runs :meth:`compact_journal`."""
        due = list(self._due)
        self._due.clear()
        return due

    def compact_due(self) -> None:
        """Compact the journals the last writes made worth it; a failure is logged."""
        for thread_id in self.take_due():
            try:
                self.compact_journal(thread_id, only_if_worth_it=True)
            except (OSError, ValueError) as exc:
                log.warning("filelayer: could not compact the journal of %s: %s", thread_id, exc)

    def compact_journal(self, thread_id: str, *, only_if_worth_it: bool = False) -> Compaction:
        """Rewrite the thread's journal in its compacted form: one line per step in
        conversation order, then feedback, elements and the tombstones that keep
        deleted ids deleted (:func:`journal.compacted_records`). Every read gives what
        it gave before. ``only_if_worth_it``: only when the dead bytes outweigh the
        live ones.

        Safe while writers go on, in this process or others: the journal is read and
        folded aside, without any lock; then, under the thread's lock (for the time of
        writing the new file), the lines appended meanwhile are copied after the
        compacted ones, unchanged, and the new file replaces the old one at once. A
        journal replaced meanwhile (another compaction, a repair) is read again. A
        journal with damaged lines (or the torn end a killed writer left) is left
        alone: ``filelayer verify --repair`` first.

        Runs in any thread without :attr:`mutex` (the adapter runs it in a worker): it
        reads files only, and its notes in memory (when to look at the journal again,
        whether it is due again) are single dictionary entries.
        """
        path = self.layout.journal(thread_id)
        first: Compaction | None = None
        heavy = False
        for _ in range(_COMPACT_ROUNDS):
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            except FileNotFoundError:
                return Compaction(thread_id, 0, 0)
            try:
                outcome = self._compact_open(thread_id, path, fd, only_if_worth_it)
            finally:
                os.close(fd)
            heavy = False
            if outcome is None:
                continue  # replaced meanwhile: read it again
            done, copied = outcome
            if first is not None:
                done.before = first.before
            first = done
            # Lines appended during the compaction were copied as they came: when they
            # outweigh the compacted ones (a writer going fast), fold them in too (when
            # compacting by itself; on request, once is what was asked).
            if not done.changed or copied <= done.after - copied or not only_if_worth_it:
                return done
            heavy = True
        if heavy:
            # A writer still going faster than the compaction: due again, to be looked
            # at after the next write, or at once by a caller that runs the due ones.
            self._due[thread_id] = None
        if first is not None:
            return first
        return Compaction(thread_id, 0, 0, skipped="it kept being replaced while compacted")

    def _compact_open(
        self, thread_id: str, path: Path, fd: int, only_if_worth_it: bool
    ) -> tuple[Compaction, int] | None:
        """One compaction of the open journal: what it did and how many bytes were
        appended meanwhile and copied; ``None`` if the journal was replaced. What it
        learnt of the journal's live bytes is noted for the writers (:class:`_Growth`)."""
        st = os.fstat(fd)
        data = _fs.pread_all(fd, st.st_size, 0)
        end = data.rfind(b"\n") + 1  # a line being appended right now is left for later
        parsed = journal.parse(data[:end], path)
        if parsed.bad_lines:
            # Left alone: not looked at again before it doubled.
            self._know(thread_id, (st.st_dev, st.st_ino), len(data), len(data), {})
            return Compaction(thread_id, len(data), len(data), skipped=_DAMAGED), 0
        records = list(journal.compacted_records(journal.fold(parsed.records)))
        lines = [_codec.encode_line(r) for r in records]
        canonical = b"".join(lines)
        live = len(canonical)
        steps = {
            r[journal.OP_STEP]["id"]: len(line)
            for r, line in zip(records, lines, strict=True)
            if r["op"] == journal.OP_STEP
        }
        if only_if_worth_it and len(data) <= 2 * live:
            # Not yet. What was read is known; the lines appended since count as live.
            self._know(thread_id, (st.st_dev, st.st_ino), len(data), live + len(data) - end, steps)
            return Compaction(thread_id, len(data), len(data)), 0
        with self.thread_lock(thread_id):
            try:
                now = os.stat(path)
            except FileNotFoundError:
                return Compaction(thread_id, 0, 0), 0  # deleted meanwhile
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or now.st_size < end:
                return None  # replaced meanwhile: read it again
            tail = _fs.pread_all(fd, now.st_size - end, end)
            if tail:
                appended = journal.parse(tail, path)
                if appended.bad_lines or appended.torn_tail:
                    file = (now.st_dev, now.st_ino)
                    self._know(thread_id, file, now.st_size, now.st_size, {})
                    skipped = Compaction(thread_id, now.st_size, now.st_size, skipped=_DAMAGED)
                    return skipped, 0
            if canonical == data[:end]:
                file = (now.st_dev, now.st_ino)
                self._know(thread_id, file, now.st_size, live + len(tail), steps)
                return Compaction(thread_id, now.st_size, now.st_size), 0
            # Always made durable before it replaces the journal: a power cut must not
            # take acknowledged lines with the old file.
            _fs.atomic_write(path, canonical + tail, durable=True)
            new = os.stat(path)
        self._know(thread_id, (new.st_dev, new.st_ino), new.st_size, live + len(tail), steps)
        return Compaction(thread_id, now.st_size, live + len(tail)), len(tail)

    def _know(
        self, thread_id: str, file: tuple[int, int], size: int, live: int, steps: dict[str, int]
    ) -> None:
        """Note what a compaction learnt of a journal: from here on, the writers follow
        its live bytes without reading it. (A single assignment: a worker thread may do
        it while the event loop writes.)"""
        self._growth[thread_id] = _Growth(file, size, live, steps)

    def close(self) -> None:
        """Release the index's file descriptor and the memory of the caches. Only the
        index holds anything open between calls; the store stays usable (the next call
        reads the index again). In the flush mode, what the background flusher has not
        written yet is flushed now."""
        if not self.durable:
            FLUSHER.flush()
        self.index.flush_marks()
        self._end_session()
        self.index.close()
        self._folded_cache.clear()
        self._tombstone_cache.clear()


def _index_time(value: object) -> str:
    """A time as the index keeps it (see :func:`filelayer._time.canonical`): the
    index compares its times as strings, so they must all have one form."""
    return _times.canonical(value) if isinstance(value, str) else ""


_LIVE: weakref.WeakSet[ArchiveStore] = weakref.WeakSet()
"""The stores with a writer session: ended cleanly when the interpreter exits."""


@atexit.register
def _end_sessions_at_exit() -> None:
    for store in list(_LIVE):
        store._end_session()


def _end_session(index: ThreadIndex, session: _heal.Session, *, flush: bool) -> None:
    """End a writer session cleanly (at ``close``, or when the process exits): the files
    the session wrote and the index rows that describe them reach the disk before its
    file is removed, so that no power cut leaves the session gone and its rows lost."""
    try:
        if flush:
            FLUSHER.flush()
        index.flush_marks()
        index.sync()
    except Exception as exc:  # the session stays: the next opening reconciles
        log.warning("filelayer: the index could not be made durable (%s)", exc)
        return
    session.end()


def _deletable(kind: str, value: object) -> bool:
    """Whether a delete has anything to look for. An invalid id (empty, a path...) names
    nothing in the archive: the delete answers "nothing deleted", as a read of it answers
    "not found", instead of raising (Chainlit would answer the request with a 500)."""
    problem = id_problem(value)
    if problem is not None:
        log.debug("filelayer: nothing to delete for %s id %r: %s", kind, value, problem)
    return problem is None


_STAMP_TAIL = 64 * 1024


def _last_stamp(opened: _fs.AppendFile) -> str | None:
    """The newest stamp of a journal open to append to, read from its end (the file is
    in stamp order, so it is the last stamped line's): 4 KiB back, then more, up to
    64 KiB, which holds hundreds of lines; none found there means an unstamped journal
    (or one of giant lines: the clock alone then stamps, still after every line it
    wrote itself)."""
    size = opened.size
    chunk = 4096
    while size:
        start = max(0, size - chunk)
        data = _fs.pread_all(opened.fd, size - start, start)
        lines = data.split(b"\n")
        if start:
            lines = lines[1:]  # the first piece may be the middle of a line
        for line in reversed(lines):
            stamp = clock.stamp_of_line(line)
            if stamp is not None:
                return stamp
        if start == 0 or chunk >= _STAMP_TAIL:
            return None
        chunk *= 4
    return None
