"""The index's life in one store: made usable when the store opens (built, or healed by
the reconciler), the writer session that marks this process's writes as not yet
checked, and the clean end that lets the next opening skip the check."""

from __future__ import annotations

import atexit
import logging
import os
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._io.flusher import FLUSHER
from ..format.layout import Layout
from ..index.thread_index import ThreadIndex
from . import heal as _heal
from .writers import Session

log = logging.getLogger("filelayer")


class IndexLifecycle:
    """Opening and closing the index of one store, and its writer session (see
    :mod:`filelayer.store.heal`)."""

    def __init__(
        self,
        root: Path,
        layout: Layout,
        index: ThreadIndex,
        healer: _heal.Healer,
        *,
        durable: bool,
    ) -> None:
        self.root = root
        self.layout = layout
        self.index = index
        self.healer = healer
        self.durable = durable
        self._session: Session | None = None  # this store's writer session
        self._unsettled = False  # a write failed after changing files (see unsettled)
        self._session_end: Any = None
        self._at_exit: weakref.WeakMethod[Callable[[], None]] | None = None

    def on_exit(self, callback: Callable[[], None]) -> None:
        """Have ``callback`` (a bound method of the store: held weakly) called when the
        interpreter exits with this store's writer session still open, after the
        session ended: what ``close()`` would have done after it (the store's views)."""
        self._at_exit = weakref.WeakMethod(callback)

    def exiting(self) -> None:
        """The interpreter exits without ``close()``: end the writer session, then
        call what :meth:`on_exit` named (best effort: the exit goes on)."""
        self.end_session()
        callback = self._at_exit() if self._at_exit is not None else None
        if callback is None:
            return
        try:
            callback()
        except Exception as exc:
            log.debug("filelayer: nothing more done at exit in %s (%s)", self.root, exc)

    def begin_session(self) -> None:
        """Mark this store as a writer (once per process): done before its first write."""
        inherited = self._session
        if inherited is not None:
            if inherited.pid == os.getpid():
                return
            # A forked child holds its parent's session (the same file and flock, which
            # the parent ends cleanly): its own writes need one of their own, or a child
            # killed mid-write would leave rows missing that nothing reconciles.
            if self._session_end is not None:
                self._session_end.detach()
            inherited.close()  # the child's copy of the descriptor: the parent's lock stays
            self._session = self._session_end = None
        try:
            session = Session(self.layout.index_dir)
        except OSError as exc:  # a read-only archive: the write fails on its own
            log.debug("filelayer: no writer session in %s (%s)", self.root, exc)
            return
        self._session = session
        _LIVE.add(self)
        # Collected without close(): the lock goes, the file stays (the next opening
        # reconciles). A finalizer may run inside any call, locks held: it takes none.
        self._session_end = weakref.finalize(self, session.close)
        self._session_end.atexit = False

    def own_session(self) -> Path | None:
        """The file of this process's writer session, if it began one (never a dead
        writer's, even where liveness cannot be told)."""
        session = self._session
        if session is None or session.pid != os.getpid():
            return None
        return session.path

    def unsettled(self) -> None:
        """A write failed after it changed a thread's files (its index transaction
        failed, say): its rows may be missing. The session then ends as a dead writer's
        would (its file stays), so that the next opening reads the thread again."""
        self._unsettled = True

    def end_session(self) -> None:
        """This store's writes all have their index rows: a later opening need not
        check them (see :func:`end_session`), unless a write failed half-way
        (:meth:`unsettled`)."""
        session = self._session
        if session is None:
            return
        if self._session_end is not None:
            self._session_end.detach()
        self._session = self._session_end = None
        _LIVE.discard(self)
        keep, self._unsettled = self._unsettled, False
        end_session(self.index, session, flush=not self.durable, keep=keep)

    def ensure_index(self) -> None:
        """Make the index usable, and start the reconciler if it may lag (see
        :mod:`filelayer.store.heal`): when there is none usable (a new archive, a clone, an
        index of an older format, a damaged one), a new empty one is made at once and
        filled from the thread directories, newest first; when writers died without
        closing, or git changed the work tree since the last reconcile, the threads
        whose files changed are read again. A clean start costs a few ``stat`` calls."""
        try:
            if not self.index.exists():
                self.build_index()
            elif self.index.take_marks_added():
                self.healer.check_at_open(reason="watermarks added to the index")
            else:
                self.healer.check_at_open()
        except OSError as exc:  # a read-only archive: readable, without its index
            log.warning("filelayer: could not build the index of %s: %s", self.root, exc)

    def build_index(self) -> None:
        has_threads = self.layout.threads.is_dir() and any(
            not p.name.startswith(".") for p in self.layout.threads.iterdir()
        )
        if not has_threads:
            self.index.rebuild([], replace=False)
            return
        log.info("filelayer: no usable index in %s, building it from the threads", self.root)
        # The fill is marked as a writer session before the empty index is switched
        # in: if it stops half-way, the next opening finds it dead and goes on.
        session = Session(self.layout.index_dir)
        try:
            # A damaged one is replaced; otherwise one another process made meanwhile
            # is kept (its maker fills it).
            self.index.rebuild([], replace=self.index.damaged)
        except BaseException:
            session.end()
            raise
        self.healer.check_at_open(session, "no usable index")

    def close(self) -> None:
        """Flush what the flush mode has not written yet, end the writer session, and
        release the index's file descriptor."""
        if not self.durable:
            FLUSHER.flush()
        self.index.flush_marks()
        self.end_session()
        self.index.close()


_LIVE: weakref.WeakSet[IndexLifecycle] = weakref.WeakSet()
"""The stores with a writer session: ended cleanly when the interpreter exits (then
their views are written, as ``close()`` does)."""


@atexit.register
def _end_sessions_at_exit() -> None:
    for lifecycle in list(_LIVE):
        lifecycle.exiting()


def end_session(index: ThreadIndex, session: Session, *, flush: bool, keep: bool = False) -> None:
    """End a writer session cleanly (at ``close``, or when the process exits): the files
    the session wrote and the index rows that describe them reach the disk before its
    file is removed, so that no power cut leaves the session gone and its rows lost.
    ``keep``: a write of the session failed half-way; its file stays, unlocked, and the
    next opening reconciles as after a crash."""
    try:
        if flush:
            FLUSHER.flush()
        index.flush_marks()
        index.sync()
    except Exception as exc:  # the session stays: the next opening reconciles
        log.warning("filelayer: the index could not be made durable (%s)", exc)
        return
    if keep:
        log.warning(
            "filelayer: a write failed after changing thread files: the next opening "
            "reconciles the index"
        )
        session.close()
        return
    session.end()
