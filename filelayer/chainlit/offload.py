"""Running the store's calls from an event loop without ever blocking it.

A Chainlit app is one asyncio loop shared by every user: whatever blocks it freezes
every chat. The store is synchronous and most of its calls cost microseconds, less than
handing them to a thread would, so they run on the loop, but only when nothing can make
them wait:

- the locks a write needs are taken without waiting (the store takes them all when a
  call begins, see :mod:`filelayer._locks`); if another process or thread holds one,
  the call stops there, having changed nothing, and runs again in a worker thread,
  which may sleep on the lock;
- the store is not in use by a worker thread (:attr:`ArchiveStore.mutex`, taken
  without waiting).

Writes that wait for the disk (every write in the ``fsync`` mode; users and thread
deletions, which are made durable in both modes) never run on the loop: an ``fsync``
takes milliseconds, tens of them on a busy disk.

Writes to the index database still run on the loop in the ``flush`` mode: its
transactions wait (in SQLite) for another process's, and now and then bring its search
index up to date. Handing every such write to a thread was measured: it halved the
write rate here (a thread hop costs more than the write), so it is left to the index to
keep its transactions short.

Writes that could not run on the loop go to one worker thread, in the order they were
made, and the writes made while it has work queue behind them: two writes never land in
another order than the one the app made them in. Reads that could not run on the loop
go to the loop's default executor. A scan of every journal (a step or an element named
without its thread) always runs in a worker thread, and holds the store only to read
the order of the threads from the index.

The journal compactions a write makes due (see ``auto_compact`` in
:class:`~filelayer.store.ArchiveStore`) run in a maintenance thread of their own, after
the write returned; they hold the thread's lock only to swap the new file in.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from .._io import locks as _locks
from ..errors import ArchiveLockTimeout

if TYPE_CHECKING:
    from ..store.archive import ArchiveStore

log = logging.getLogger("filelayer")

_T = TypeVar("_T")

_ATTEMPTS = 20
"""How often a worker runs a call again after waiting for the lock that stopped it,
before it waits inside the call (another process keeps taking the locks in turn)."""


class _Busy:
    """The call could not run on the loop."""


_BUSY = _Busy()


class Offload:
    """Runs the calls of one store for an event loop (see the module's docstring)."""

    def __init__(self, store: ArchiveStore) -> None:
        self.store = store
        self._lane: ThreadPoolExecutor | None = None
        self._queued = 0  # writes given to the lane and not finished yet
        self._durable = store.durable
        self._maintenance: ThreadPoolExecutor | None = None
        self._compacting: asyncio.Future[None] | None = None
        store.defer_compaction = True
        self.offloaded = 0
        """How many calls ran in a worker thread (for tests and the benchmark)."""

    # -- the calls ---------------------------------------------------------------------

    async def write(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run a write (of ``fn``, a method of the store that may take locks)."""
        # It runs on the loop only if it would not overtake a queued write, and does not
        # wait for the disk.
        if self._queued or self._durable:
            result = await self._in_lane(fn, args, kwargs)
        else:
            result = self._inline(fn, args, kwargs)
            if result is _BUSY:
                result = await self._in_lane(fn, args, kwargs)
        if self.store._due and self._compacting is None:
            self._compact_soon()
        return result

    async def write_durable(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """A write made durable in every mode (a user, a thread's deletion): in the
        worker thread, in its turn."""
        result = await self._in_lane(fn, args, kwargs)
        if self.store._due and self._compacting is None:
            self._compact_soon()
        return result

    async def read(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run a read."""
        result = self._inline(fn, args, kwargs)
        if result is not _BUSY:
            return cast(_T, result)
        return await self.read_off_loop(fn, *args, **kwargs)

    async def read_off_loop(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run a read in a worker thread (one that may take long whatever happens)."""
        self.offloaded += 1
        return await asyncio.to_thread(self._read_blocking, fn, args, kwargs)

    async def scan(self, kind: Literal["step", "element"], key: str) -> str | None:
        """The thread holding step or element ``key``, by a scan of the journals."""
        self.offloaded += 1
        return await asyncio.to_thread(self._scan_blocking, kind, key)

    async def idle(self) -> None:
        """Wait until the queued writes and the compactions they made due are done."""
        while self._queued or self._compacting is not None:
            pending = self._compacting
            if pending is not None and not pending.done():
                await asyncio.wait([pending])
            else:  # writes queued, or a compaction whose callback has yet to run
                await asyncio.sleep(0.001)

    async def close(self) -> None:
        """Finish the queued writes and the compactions, then release the store's files."""
        await self.idle()
        for executor in (self._lane, self._maintenance):
            if executor is not None:
                await asyncio.to_thread(executor.shutdown, wait=True)
        self._lane = self._maintenance = None
        await asyncio.to_thread(self._read_blocking, self.store.close, (), {})

    # -- on the loop -------------------------------------------------------------------

    def _inline(self, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        mutex = self.store.mutex
        if not mutex.acquire(blocking=False):
            return _BUSY
        try:
            return _locks.call_no_wait(fn, args, kwargs)
        except _locks.LockBusy:
            return _BUSY
        finally:
            mutex.release()

    # -- in worker threads -------------------------------------------------------------

    async def _in_lane(self, fn: Callable[..., _T], args: Any, kwargs: Any) -> _T:
        if self._lane is None:
            self._lane = ThreadPoolExecutor(max_workers=1, thread_name_prefix="filelayer")
        self.offloaded += 1
        self._queued += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._lane, self._write_blocking, fn, args, kwargs)
        finally:
            self._queued -= 1

    def _compact_soon(self) -> None:
        """Run the due compactions in the maintenance thread."""
        if self._maintenance is None:
            self._maintenance = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="filelayer-compact"
            )
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._maintenance, self._compact_blocking)
        self._compacting = future

        def done(_: asyncio.Future[None]) -> None:
            self._compacting = None
            if self.store._due:  # made due while the last ones ran
                self._compact_soon()

        future.add_done_callback(done)

    def _compact_blocking(self) -> None:
        store = self.store
        while True:
            with store.mutex:
                due = store.take_due()
            if not due:
                return
            for thread_id in due:
                try:
                    store.compact_journal(thread_id, only_if_worth_it=True)
                except (OSError, ValueError) as exc:
                    log.warning(
                        "filelayer: could not compact the journal of %s: %s", thread_id, exc
                    )

    def _write_blocking(self, fn: Callable[..., _T], args: Any, kwargs: Any) -> _T:
        """Run a write, sleeping on the locks it waits for outside the mutex, so that
        other calls go on meanwhile."""
        store = self.store
        deadline = time.monotonic() + store.lock_timeout
        ahead: _locks.Held | None = None
        try:
            for _ in range(_ATTEMPTS):
                with store.mutex:
                    try:
                        with _locks.no_wait():
                            return fn(*args, **kwargs)
                    except _locks.LockBusy as busy:
                        path = busy.path
                # Never hold one lock while waiting for another: that is how two
                # processes taking them in another order would deadlock.
                if ahead is not None:
                    ahead.release()
                    ahead = None
                try:
                    ahead = _locks.hold(path, max(0.0, deadline - time.monotonic()))
                except ArchiveLockTimeout:
                    raise ArchiveLockTimeout(path, store.lock_timeout) from None
            with store.mutex:
                return fn(*args, **kwargs)
        finally:
            if ahead is not None:
                ahead.release()

    def _read_blocking(self, fn: Callable[..., _T], args: Any, kwargs: Any) -> _T:
        with self.store.mutex:
            return fn(*args, **kwargs)

    def _scan_blocking(self, kind: Literal["step", "element"], key: str) -> str | None:
        store = self.store
        with store.mutex:
            order = store.scan_order()
        return store.scan_journals(kind, key, order)
