"""The index heals itself: one reconciler, and the detectors that call it.

The index is derived, written after the thread files it describes. A process killed or a
machine cut between the two, or thread directories changed by another program (``git
checkout``, ``git merge``, a restore), leaves it lagging: ``list_threads`` would omit a
thread, show an old name, or list a deleted one. Three pieces make it heal:

- **Watermarks** (table ``marks``, see ``filelayer.index.schema.MARKS_SCHEMA``): per thread,
  the inode, size, modification and change time of its journal and of its manifest that
  its index rows are known to agree with. Every thread write notes the watermark it found
  and the one it left, and the index moves the stored one by compare-and-set after the
  write's own rows; a rebuild and a reconcile store the watermark they read under.
- **Writer sessions** (:mod:`filelayer.store.writers`): a process that writes holds
  ``index/writer-<16 hex>.lock`` open and ``flock``-ed from before its first write until
  it closes the store or exits normally; the file's name is fsynced before that first
  write, so it outlives any write it covers. A session file nobody holds any more is a
  writer that died without closing: some of its writes may lack their index rows. A
  clean start (no dead session, no change seen in git) skips the check altogether.
- **One reconciler**, :func:`reconcile_changed`: it stats every thread directory (two
  ``stat`` calls a thread), reads again only the threads whose watermark differs from
  the stored one (and those deleted, or gone, that the index still holds), newest
  first, each under its own lock, and puts each into the index as a whole with the
  watermark it read under. A thread's author also depends on its user's file in
  ``users/`` (see ``ArchiveStore.owner_id``): a watermark of ``users/`` (key ``users``
  of ``meta``) makes it re-read the threads filed under the identifiers whose user file
  changed. Then it removes the dead sessions it was called for.

What calls it: opening an archive that has dead writer sessions, an index that is
missing, damaged or of another format (a new empty one is made at once and filled,
newest threads first), or a git repository whose ``HEAD`` or index file changed since
the last reconcile; a running store that sees the same git change in ``list_threads``;
``filelayer reconcile`` and the git hooks (``catch_up_index``); and ``filelayer reindex``, whose
catch-up after a rebuild is the same function given the rebuild's watermarks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from .._io import locks as _locks
from ..format import users
from ..format.ids import is_valid_id
from ..format.layout import Layout
from ..index.schema import ABSENT, legacy_mark
from ..index.summary import ThreadSummary
from ..index.thread_index import ThreadIndex
from .authors import manifest_lost
from .snapshots import ThreadSnapshots
from .writers import Session as Session  # callers also reach it as heal.Session
from .writers import dead_sessions as dead_sessions

HealMode = Literal["wait", "background"]
"""Whether opening a store waits for the reconcile it needs, or runs it in a thread."""


class ArchiveStore(Protocol):
    """What the reconciler needs of a store: its files, its index, its locks and how it
    summarises a thread. A protocol rather than the class, so that the store imports
    the reconciler and not the other way round."""

    root: Path
    layout: Layout
    index: ThreadIndex
    heal_mode: HealMode

    def thread_ids(self) -> list[str]: ...
    def is_deleted(self, thread_id: str) -> bool: ...
    def deleted_threads(self) -> dict[str, str]: ...
    def summarise(self, thread_id: str) -> ThreadSummary | None: ...
    def thread_lock(self, thread_id: str) -> AbstractContextManager[None]: ...
    def forget_cached(self) -> None: ...
    def close(self) -> None: ...
    def open_reconciling_twin(self) -> ArchiveStore:
        """Another store on the same root, for the background reconcile to work in."""
        ...


log = logging.getLogger("filelayer")

START_DELAY = 0.5
"""Seconds a background reconcile waits, after the store opened, for the first sidebar
page to be served before it starts (it starts at once when the page was served): its
``stat`` calls and reads would otherwise compete with that page for the interpreter."""

GIT_META = "git"
"""The key of ``meta`` that holds the git stamp seen by the last reconcile."""

USERS_META = "users"
"""The key of ``meta`` that holds the ``users/`` watermark the index agrees with."""


# -- watermarks --------------------------------------------------------------------------


def _mark(st: os.stat_result) -> str:
    """One file's part of a watermark: inode, size, modification and change time (ns).
    The change time is there because a program can set the modification time back
    (``touch -r``, ``cp -p``, a restore) after an edit of the same size, and no program
    can set the change time; a file that does not exist is ``0:0:0``."""
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def marks_agree(stored: str | None, now: str) -> bool:
    """Whether a stored watermark (or git stamp) says the files are as they are ``now``.
    A mark stored by a release before the change time was part of it (three fields
    per file) agrees with the same files: an upgrade does not make the next reconcile
    read every thread again (a minute at 100,000 threads). It is replaced at the
    thread's next write."""
    if stored == now:
        return True
    return stored is not None and stored == legacy_mark(now)


def _stat(path: str) -> str:
    try:
        return _mark(os.stat(path))
    except OSError:
        return "0:0:0"


def watermark(store: ArchiveStore, thread_id: str) -> str:
    """What changes whenever the thread's files change (see :func:`thread_watermark`)."""
    return thread_watermark(store.layout, thread_id)


def thread_watermark(layout: Layout, thread_id: str) -> str:
    """What changes whenever the thread's files change: (inode, size, mtime, ctime in ns)
    of its journal, then of its manifest (:func:`_mark`), ``0:0:0`` for a file that does
    not exist. Every write
    changes one of them (a journal only grows, or is replaced by compaction; a manifest is
    always replaced), and so does ``git checkout`` (it writes files anew)."""
    threads = str(layout.threads)
    return (
        _stat(f"{threads}/{thread_id}/steps.jsonl")
        + "/"
        + _stat(f"{threads}/{thread_id}/thread.json")
    )


def users_watermark(users_dir: Path) -> dict[str, str]:
    """(inode, size, mtime, ctime in ns) of every user file by name: what changes when a merge,
    a checkout or another process changes ``users/``. A thread's indexed author depends
    on the user file of its identifier (see ``ArchiveStore.owner_id``), not only on the
    thread's own files, so the thread watermarks alone would miss such a change."""
    marks = {}
    try:
        entries = list(os.scandir(users_dir))
    except OSError:
        return {}
    for entry in entries:
        if entry.name.startswith(".") or not entry.name.endswith(".json"):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        marks[entry.name] = _mark(st)
    return marks


def _stored_users(index: ThreadIndex) -> dict[str, str] | None:
    text = index.meta(USERS_META)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    return {str(k): str(v) for k, v in value.items()}


def _owners_changed(
    store: ArchiveStore, now: Mapping[str, str], before: Mapping[str, str] | None
) -> set[str]:
    """The threads the index holds whose author may have changed with ``users/``: those
    whose user identifier's file was added, changed or removed since ``before`` (every
    user file counts as changed when nothing was stored). A query on the index, not a
    read of any thread."""
    before = before or {}
    changed = {
        n for n in now.keys() | before.keys() if not marks_agree(before.get(n), now.get(n, ""))
    }
    if not changed:
        return set()
    store.forget_cached()  # the store remembers each identifier's user id
    return store.index.threads_by_identifier(lambda ident: users.file_name(ident) in changed)


def journal_mtime(mark: str) -> int:
    """When the journal of a thread with watermark ``mark`` was last written."""
    return int(mark.split("/", 1)[0].split(":")[2])


# -- git ---------------------------------------------------------------------------------


def git_dir(root: Path) -> Path | None:
    """The git directory of the work tree holding ``root``, if any (``.git`` may be a
    file naming it, in a linked work tree or a submodule)."""
    for folder in (root, *root.parents):
        dot = folder / ".git"
        if dot.is_dir():
            return dot
        if dot.is_file():
            with contextlib.suppress(OSError, UnicodeDecodeError):
                text = dot.read_text("utf-8").strip()
                if text.startswith("gitdir:"):
                    return (folder / text[len("gitdir:") :].strip()).resolve()
            return None
    return None


def git_stamp(directory: Path | None) -> str:
    """What a checkout, a merge, a reset or a commit changes: the stat of git's
    ``HEAD`` and of its index file (two ``stat`` calls). Empty outside git."""
    if directory is None:
        return ""
    return _stat(str(directory / "HEAD")) + "/" + _stat(str(directory / "index"))


# -- the reconciler ----------------------------------------------------------------------


@dataclass
class Reconciled:
    """What one reconcile did."""

    threads: int = 0
    """Thread directories looked at."""
    read: int = 0
    """Threads read again and put into the index (or taken out of it)."""
    seconds: float = 0.0
    reasons: list[str] = field(default_factory=list)


def reconcile_changed(
    store: ArchiveStore,
    marks: Mapping[str, str] | None = None,
    *,
    users_marks: Mapping[str, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Reconciled:
    """Bring ``store``'s index in line with the thread directories, reading again only
    what changed: the threads whose watermark is not the one in ``marks`` (the stored
    ones when ``None``), the deleted ones it still holds, the ones it holds that are
    gone, and those whose author's user file changed since ``users_marks`` (the stored
    ``users/`` watermark when ``None``). Newest first (by journal time), so the sidebar's
    first page heals first. Safe while writers go on, in this process or others: each
    thread is read and put under its own lock, and a write after that moves its
    watermark again."""
    started = time.monotonic()
    index = store.index
    index.refresh()
    stored = index.marks() if marks is None else dict(marks)
    # Noted before any thread is read: a user file changed during the reconcile differs
    # from it next time, and the threads it owns are read again then.
    users_now = users_watermark(store.layout.users)
    users_stored = _stored_users(index)
    users_before = users_stored if users_marks is None else users_marks
    owners = _owners_changed(store, users_now, users_before)
    indexed = index.indexed_ids()
    deleted = store.deleted_threads()
    todo: list[tuple[int, str]] = []
    present = set()
    for thread_id, mark in _watermarks(store.layout.threads):
        if thread_id in deleted:
            if thread_id in indexed or thread_id in stored:
                todo.append((0, thread_id))
        elif (not marks_agree(stored.get(thread_id), mark) or thread_id in owners) and is_valid_id(
            thread_id
        ):
            todo.append((journal_mtime(mark), thread_id))
        present.add(thread_id)
    for thread_id in (indexed | set(stored)) - present:
        todo.append((0, thread_id))
    todo.sort(reverse=True)
    for n, (_, thread_id) in enumerate(todo, start=1):
        reconcile_thread(store, thread_id)
        if progress is not None:
            progress(n, len(todo))
    index.flush_marks()
    if users_now != users_stored:
        index.set_meta(USERS_META, json.dumps(users_now, sort_keys=True, separators=(",", ":")))
    return Reconciled(threads=len(present), read=len(todo), seconds=time.monotonic() - started)


def _watermarks(threads: Path) -> Iterator[tuple[str, str]]:
    """(name, watermark) of every directory in ``threads/`` (the stat pass). A name is
    one path component (``scandir`` gives nothing else), so the paths stay inside; it is
    checked as an id before its thread is read. Relative to an open ``threads/`` where
    the platform allows: the kernel does not walk the whole path 200,000 times."""
    try:
        entries = [
            e.name
            for e in os.scandir(threads)
            if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
        ]
    except (FileNotFoundError, NotADirectoryError):  # none, or a file in its place
        return
    if os.stat not in os.supports_dir_fd:  # pragma: no cover - Windows
        for name in entries:
            yield (
                name,
                _stat(f"{threads}/{name}/steps.jsonl")
                + "/"
                + _stat(f"{threads}/{name}/thread.json"),
            )
        return
    fd = os.open(threads, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        for name in entries:
            yield (
                name,
                _stat_at(fd, f"{name}/steps.jsonl") + "/" + _stat_at(fd, f"{name}/thread.json"),
            )
    finally:
        os.close(fd)


def _stat_at(fd: int, path: str) -> str:
    try:
        return _mark(os.stat(path, dir_fd=fd))
    except OSError:
        return "0:0:0"


def reconcile_thread(store: ArchiveStore, thread_id: str) -> None:
    """Make the index hold what one thread's files say (nothing if it is gone or
    deleted), with the watermark of the files it read, under the thread's lock."""
    if not is_valid_id(thread_id):  # a row no thread directory can have: no path
        store.index.put(thread_id, None)
        return
    with store.thread_lock(thread_id):
        mark = watermark(store, thread_id)
        if store.is_deleted(thread_id) or mark == ABSENT:
            store.index.put(thread_id, None)
            # Its view, if any, goes too: a thread removed by git, or by hand, must not
            # live on in a derived copy.
            ThreadSnapshots(store.layout).remove(thread_id)
        else:
            store.index.put(thread_id, summary_keeping_known(store, thread_id), mark)


def summary_keeping_known(store: ArchiveStore, thread_id: str) -> ThreadSummary | None:
    """What the index should hold for a thread (:meth:`ArchiveStore.summarise`), except
    that a thread whose manifest cannot be read keeps the name, author and tags the
    index held: the thread stays in its author's sidebar, and ``filelayer verify
    --repair`` writes them into its new manifest (without them, the thread would have
    no author, and every user could write it). The reconcile and the rebuild both read
    a thread through it, so neither drops them; the rebuild reads them from the index
    it replaces."""
    summary = store.summarise(thread_id)
    if (
        summary is not None
        and summary.user_id is None
        and not summary.updated_at  # the stand-in's: a manifest read whole has a time
        and manifest_lost(store.layout, thread_id)  # read once more, only then
    ):
        known = store.index.threads.get(thread_id)
        if known is not None:
            summary.name, summary.user_id = known.name, known.user_id
            summary.user_identifier, summary.tags = known.user_identifier, known.tags
    return summary


# -- running it --------------------------------------------------------------------------


class Healer:
    """Runs the reconciler for one store: now, or in a thread of its own.

    The background run reads through a store of its own (its caches are not shared with
    the caller's), so the caller's calls go on meanwhile; they read the index as it is,
    which heals thread by thread, newest first."""

    def __init__(self, store: ArchiveStore) -> None:
        self.store = store
        self.git = git_dir(store.root)
        self.git_seen = git_stamp(self.git)
        self.last: Reconciled | None = None
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._worker: threading.Thread | None = None
        self._queued: list[tuple[list[Path], Session | None, str]] = []
        self.page_served = threading.Event()
        """Set by the store once it served a sidebar page (see :data:`START_DELAY`)."""

    # -- detectors -------------------------------------------------------------------

    def check_at_open(self, session: Session | None = None, reason: str = "") -> bool:
        """Whether opening calls for a reconcile (dead writers, or git moved since the
        last one); starts it if so. ``session``/``reason``: the index was just made
        empty (``session`` marks the fill as in progress until it is done)."""
        dead = dead_sessions(self.store.layout.index_dir)
        reasons = [reason] if reason else []
        if dead:
            reasons.append(f"{len(dead)} writer(s) ended without closing")
        if self.git is not None and not marks_agree(self.store.index.meta(GIT_META), self.git_seen):
            reasons.append("the git work tree changed")
        if not reasons:
            return False
        self.start(dead, session, "; ".join(reasons))
        return True

    def look(self) -> bool:
        """Cheap (two ``stat`` calls): did git move the work tree under this running
        process? Starts a reconcile if so."""
        if self.git is None:
            return False
        stamp = git_stamp(self.git)
        if stamp == self.git_seen:
            return False
        self.git_seen = stamp
        self.store.forget_cached()
        self.start([], None, "the git work tree changed")
        return True

    # -- running -----------------------------------------------------------------------

    def start(self, dead: list[Path], session: Session | None, reason: str) -> None:
        """Reconcile now (a waiting store) or in the background thread."""
        if self.store.heal_mode == "wait":
            self._run_once(dead, session, reason, self.store)
            return
        with self._lock:
            self._queued.append((dead, session, reason))
            self._idle.clear()
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._work, name="filelayer-reconcile", daemon=True
                )
                self._worker.start()

    def _work(self) -> None:
        self.page_served.wait(START_DELAY)
        own = self.store
        reader: ArchiveStore | None = None
        try:
            reader = own.open_reconciling_twin()
            while True:
                with self._lock:
                    if not self._queued:
                        self._worker = None
                        break
                    jobs, self._queued = self._queued, []
                dead = [p for job in jobs for p in job[0]]
                sessions = [job[1] for job in jobs if job[1] is not None]
                reason = "; ".join(job[2] for job in jobs)
                try:
                    self._run_once(dead, None, reason, reader)
                except Exception:  # logged; the sessions stay: the next opening retries
                    continue
                for session in sessions:
                    session.end()
        except Exception:
            log.exception("filelayer: the background reconcile of %s stopped", own.root)
            with self._lock:
                self._worker = None
                self._queued.clear()
        finally:
            if reader is not None:
                reader.close()  # its own session ends before anyone is told it is done
            with self._lock:
                if self._worker is None:
                    self._idle.set()

    def _run_once(
        self, dead: list[Path], session: Session | None, reason: str, store: ArchiveStore
    ) -> None:
        own = session or _maybe_session(store.layout.index_dir)
        if dead:
            # A writer that died without closing may have died before the background
            # flush of its last calls (the flush mode), which then never comes: what it
            # wrote is put on the disk now, or a power cut could take those calls long
            # after they were acknowledged.
            _sync_all()
        # Announced as maintenance, at an opening as in the background: it reads every
        # changed thread and rewrites their index rows, and the serving processes (this
        # one too, whose look sees its own hold) keep their loops off the disk meanwhile.
        try:
            with _locks.announce(store.layout.maintenance_lock):
                stamp = git_stamp(self.git)
                done = reconcile_changed(store)
            done.reasons.append(reason)
            if self.git is not None:
                store.index.set_meta(GIT_META, stamp)
            for path in dead:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            self.last = done
            log.info(
                "filelayer: index of %s reconciled (%s): %d thread(s) read again of %d, in %.2f s",
                store.root,
                reason,
                done.read,
                done.threads,
                done.seconds,
            )
        except Exception:
            log.exception("filelayer: the reconcile of %s's index failed", store.root)
            if own is not None:
                own = None  # left behind: the next opening reconciles again
            raise
        finally:
            if own is not None:
                own.end()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the reconciles started so far; ``False`` on timeout."""
        return self._idle.wait(timeout)


def _sync_all() -> None:
    """Put every file system's pending writes on the disk (``sync``; nothing to do where
    there is no such call)."""
    sync = getattr(os, "sync", None)
    if sync is not None:
        sync()


def _maybe_session(directory: Path) -> Session | None:
    """A session for the reconcile itself: if it stops half-way (the process dies),
    the next opening finds it dead and reconciles again."""
    try:
        return Session(directory)
    except OSError as exc:
        log.debug("filelayer: no writer session in %s (%s)", directory, exc)
        return None
