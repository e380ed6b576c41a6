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
  without waiting);
- the call would not fsync: a manifest replaced by ``update_thread`` once a version of
  it is on the disk must be fsynced before its rename, in the ``flush`` mode too; the
  call stops before changing anything (:class:`~filelayer._io.commit.DiskWait`) and
  runs again in the worker thread.

Writes that wait for the disk (every write in the ``fsync`` mode; users and thread
deletions, which are made durable in both modes) never run on the loop: an ``fsync``
takes milliseconds, tens of them on a busy disk.

Writes to the index database still run on the loop in the ``flush`` mode: its
transactions wait (in SQLite) for another process's, and now and then bring its search
index up to date. Handing every such write to a thread was measured: it halved the
write rate here (a thread hop costs more than the write), so it is left to the index to
keep its transactions short.

Except while another process maintains the archive. A ``filelayer reindex`` or
``compact`` (any job of :mod:`filelayer.maintenance`) writes hundreds of megabytes, and
while the disk catches up the kernel makes every writer of the file system wait now and
then, inside an ordinary ``write`` (a journal's append, the index's ``COMMIT``), for tens
of milliseconds: measured at 20,000 threads, the loop stalled 35-60 ms in the ``flush``
mode and 5 ms in the ``fsync`` mode, whose writes run in the worker lane. Such a job
announces itself (:mod:`filelayer.maintenance.announce`: ``locks/maintenance.lock`` held
shared); the offload looks at the announcement at most every :attr:`Offload.probe_every`
seconds (a monotonic clock read per call, and one non-blocking ``flock`` per interval),
and while it is made, every write goes to the worker lane as in the ``fsync`` mode, and
every read to a worker thread. When the job ends, writes come back to the loop once the
lane has run the ones queued in it (a write on the loop never overtakes a queued one,
below).

Writes that could not run on the loop go to one worker thread, in the order they were
made, and the writes made while it has work queue behind them: two writes never land in
another order than the one the app made them in. The writes that worker runs back to
back form one group commit (:mod:`filelayer._io.commit`): their fsyncs are made together
once the queue is empty (in a committer thread, while the lane runs the next writes), and
only then are they acknowledged. Reads that could not run on the loop go to the loop's
default executor. A scan of every journal (a step or an element named without its
thread) always runs in a worker thread, and holds the store only to read the order of
the threads from the index.

The journal compactions a write makes due (see ``auto_compact`` in
:class:`~filelayer.store.ArchiveStore`) run in a maintenance thread of their own, after
the write returned; they hold the thread's lock only to swap the new file in. So do the
view files of the long threads the app wrote, once a thread has had no write for
:data:`VIEW_IDLE` seconds (see :mod:`filelayer.store.snapshots`): another worker that
serves the thread next (the user resumes it there) then decodes one document instead
of folding the whole journal, as after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from .._io import commit as _commit
from .._io import locks as _locks
from ..errors import ArchiveLockTimeout, StorageWriteError

if TYPE_CHECKING:
    from ..store.archive import ArchiveStore

log = logging.getLogger("filelayer")

_T = TypeVar("_T")

_ATTEMPTS = 20
"""How often a worker runs a call again after waiting for the lock that stopped it,
before it waits inside the call (another process keeps taking the locks in turn)."""


_clock = time.monotonic
"""The clock of the looks (a name of this module, so that a test can stub it without
stopping the event loop's own clock)."""

PROBE_EVERY = 0.1
"""Seconds between two looks at the maintenance announcement, at most: a job is noticed
within that of the next call, and a look (2.5 µs measured here; 8 µs while the file
does not exist yet) is paid once per interval, not per call."""


VIEW_IDLE = 1.0
"""Seconds without a write after which a long thread's view is written (a chat's next
turn is usually further away; a view written sooner would be stale at once)."""


_GROUP_MAX = 256
"""Writes run before their group is committed, at most (a steady stream of writes
must not hold back the first one's acknowledgement for long)."""


def _each_its_own(error: BaseException) -> BaseException:
    """A failed group's error for one of its callers: an instance of its own, since
    each caller's traceback is written into the exception it raises."""
    if isinstance(error, StorageWriteError):
        return StorageWriteError(error.path, error.cause)
    return error


_PIPELINE = 2
"""Groups handed to the committer and not yet durable, at most: the lane runs the next
group's writes while one is committed, and waits beyond that (its queue then grows,
and so does the next group)."""


class _Job:
    """A write queued for the lane, and how its caller learns the outcome."""

    __slots__ = ("args", "fn", "future", "kwargs", "loop")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: Any,
        kwargs: Any,
        future: asyncio.Future[Any],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.future, self.loop = future, loop

    def settle(self, ok: bool, value: Any) -> None:
        """Hand the outcome to the caller's loop (from the lane)."""
        with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
            self.loop.call_soon_threadsafe(self._set, ok, value)

    def _set(self, ok: bool, value: Any) -> None:
        if self.future.done():  # the caller was cancelled
            return
        if ok:
            self.future.set_result(value)
        else:
            self.future.set_exception(value)


class _Busy:
    """The call could not run on the loop."""


_BUSY = _Busy()


class Offload:
    """Runs the calls of one store for an event loop (see the module's docstring)."""

    def __init__(self, store: ArchiveStore) -> None:
        self.store = store
        self._lane: ThreadPoolExecutor | None = None
        self._jobs: deque[_Job] = deque()  # writes waiting for the lane, in order
        self._jobs_lock = threading.Lock()
        self._draining = False  # the lane is running _drain (set under _jobs_lock)
        self._fsyncs: ThreadPoolExecutor | None = None
        self._commits: ThreadPoolExecutor | None = None  # one thread: groups in order
        self._committing = threading.BoundedSemaphore(_PIPELINE)
        self._queued = 0  # writes given to the lane and not finished yet
        self._durable = store.durable
        self._maintenance: ThreadPoolExecutor | None = None
        self._compacting: asyncio.Future[None] | None = None
        self._views_timer: asyncio.TimerHandle | None = None
        self._viewing: asyncio.Future[bool] | None = None
        self._upkeep: asyncio.Future[None] | None = None
        self._closed = False
        store.defer_compaction = True
        self.offloaded = 0
        """How many calls ran in a worker thread (for tests and the benchmark)."""
        self.probe_every = PROBE_EVERY
        """Seconds between looks at the maintenance announcement (0: every call)."""
        self._announcement = store.layout.maintenance_lock
        self._next_probe = 0.0  # monotonic time of the next look
        self._maintained = False  # what the last look saw

    @property
    def queued(self) -> int:
        """Writes handed to the worker lane and not finished yet."""
        return self._queued

    def maintained(self) -> bool:
        """Whether another process announces maintenance of the archive (as seen by
        the last look, which is at most :attr:`probe_every` old). On the loop: the look
        never waits (see :func:`filelayer._io.locks.announced`)."""
        now = _clock()
        if now >= self._next_probe:
            self._next_probe = now + self.probe_every
            self._maintained = _locks.announced(self._announcement)
        return self._maintained

    # -- the calls ---------------------------------------------------------------------

    async def write(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run a write (of ``fn``, a method of the store that may take locks)."""
        # It runs on the loop only if it would not overtake a queued write, does not
        # wait for the disk, and no maintenance makes the disk slow for every writer.
        if self._queued or self._durable or self.maintained():
            result = await self._in_lane(fn, args, kwargs)
        else:
            result = self._inline(fn, args, kwargs)
            if result is _BUSY:
                result = await self._in_lane(fn, args, kwargs)
        self._after_write()
        return result

    async def write_durable(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """A write made durable in every mode (a user, a thread's deletion): in the
        worker thread, in its turn."""
        result = await self._in_lane(fn, args, kwargs)
        self._after_write()
        return result

    def _after_write(self) -> None:
        """Start the maintenance a write may have made due: compactions, views, the
        trigram index's upkeep. None once :meth:`close` began: it shuts the maintenance
        thread down, and a write that lands meanwhile (one fired before the app stopped)
        must neither fail with the executor's error after it was made nor start a
        thread nobody stops; what it made due is left for later (the compactor's due
        list; the index's queue of texts, which searches read)."""
        if self._closed:
            return
        if self.store.compactor.has_due and self._compacting is None:
            self._compact_soon()
        if self._views_timer is None and self._viewing is None and self.store.views_pending:
            self._views_soon()
        if self._upkeep is None and self.store.index_upkeep_due:
            self._upkeep_soon()

    async def read(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run a read (in a worker thread while the archive is maintained: a read may
        wait for the disk then, as writes do)."""
        if self.maintained():
            return await self.read_off_loop(fn, *args, **kwargs)
        result = self._inline(fn, args, kwargs)
        if result is not _BUSY:
            return cast(_T, result)
        return await self.read_off_loop(fn, *args, **kwargs)

    async def read_off_loop(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run a read in a worker thread (one that may take long whatever happens)."""
        self.offloaded += 1
        return await asyncio.to_thread(self._read_blocking, fn, args, kwargs)

    async def scan(self, kind: Literal["step", "element", "feedback"], key: str) -> str | None:
        """The thread holding step, element or feedback ``key``, by a scan of the
        journals."""
        self.offloaded += 1
        return await asyncio.to_thread(self._scan_blocking, kind, key)

    async def idle(self) -> None:
        """Wait until the queued writes and the compactions and index upkeep they made
        due are done."""
        while self._queued or self._compacting is not None or self._upkeep is not None:
            pending = self._compacting or self._upkeep
            if pending is not None and not pending.done():
                await asyncio.wait([pending])
            else:  # writes queued, or maintenance whose callback has yet to run
                await asyncio.sleep(0.001)

    async def close(self) -> None:
        """Finish the queued writes and the compactions, then release the store's files
        (the store writes the views still due as it closes)."""
        self._closed = True
        if self._views_timer is not None:
            self._views_timer.cancel()
            self._views_timer = None
        await self.idle()
        viewing = self._viewing
        if viewing is not None and not viewing.done():
            await asyncio.wait([viewing])
        for executor in (self._lane, self._commits, self._maintenance, self._fsyncs):
            if executor is not None:
                await asyncio.to_thread(executor.shutdown, wait=True)
        self._lane = self._commits = self._maintenance = self._fsyncs = None
        await asyncio.to_thread(self._read_blocking, self.store.close, (), {})

    # -- on the loop -------------------------------------------------------------------

    def _inline(self, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        mutex = self.store.mutex
        if not mutex.acquire(blocking=False):
            return _BUSY
        before = _commit.set_on_loop(True)
        try:
            return _locks.call_no_wait(fn, args, kwargs)
        except (_locks.LockBusy, _commit.DiskWait):
            return _BUSY
        finally:
            _commit.set_on_loop(before)
            mutex.release()

    # -- in worker threads -------------------------------------------------------------

    async def _in_lane(self, fn: Callable[..., _T], args: Any, kwargs: Any) -> _T:
        if self._lane is None:
            self._lane = ThreadPoolExecutor(max_workers=1, thread_name_prefix="filelayer")
        self.offloaded += 1
        self._queued += 1
        try:
            loop = asyncio.get_running_loop()
            future: asyncio.Future[_T] = loop.create_future()
            with self._jobs_lock:
                self._jobs.append(_Job(fn, args, kwargs, future, loop))
                start = not self._draining
                self._draining = True
            if start:
                self._lane.submit(self._drain)
            return await future
        finally:
            self._queued -= 1

    def _compact_soon(self) -> None:
        """Run the due compactions in the maintenance thread."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._maintenance_thread(), self._compact_blocking)
        self._compacting = future

        def done(_: asyncio.Future[None]) -> None:
            self._compacting = None
            if self.store.compactor.has_due:  # made due while the last ones ran
                self._compact_soon()

        future.add_done_callback(done)

    def _upkeep_soon(self) -> None:
        """Apply the texts queued for the trigram index in the maintenance thread: a
        write on the loop left it (see :meth:`ArchiveStore.index_upkeep`)."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._maintenance_thread(), self.store.index_upkeep)
        self._upkeep = future

        def done(finished: asyncio.Future[None]) -> None:
            self._upkeep = None
            if not finished.cancelled() and finished.exception() is not None:
                log.debug("filelayer: trigram index upkeep failed: %s", finished.exception())

        future.add_done_callback(done)

    def _views_soon(self) -> None:
        """Look for quiet threads in :data:`VIEW_IDLE` seconds."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        self._views_timer = loop.call_later(VIEW_IDLE, self._views_due)

    def _views_due(self) -> None:
        """Write the views of the threads that went quiet, in the maintenance thread;
        look again later for those written since, those written while the views were
        made included (their writes saw a look under way and started none)."""
        self._views_timer = None
        if self._closed:
            return
        future = asyncio.get_running_loop().run_in_executor(
            self._maintenance_thread(), self.store.save_quiet_views, VIEW_IDLE
        )
        self._viewing = future

        def done(finished: asyncio.Future[bool]) -> None:
            self._viewing = None
            if finished.cancelled():
                return
            error = finished.exception()
            if error is not None:  # views are derived: a first read folds instead
                log.debug("filelayer: views not written: %s", error)
            elif finished.result() or self.store.views_pending:
                self._views_soon()

        future.add_done_callback(done)

    def _maintenance_thread(self) -> ThreadPoolExecutor:
        if self._maintenance is None:
            self._maintenance = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="filelayer-compact"
            )
        return self._maintenance

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

    def _drain(self) -> None:
        """The lane's work: run the queued writes in their order, as group commits
        (see :mod:`filelayer._io.commit`) for as long as writes keep arriving. A group
        is committed in the committer thread while the lane runs the next one; the
        groups are committed, and their calls acknowledged, in their order."""
        group = _commit.SyncGroup()
        done: list[tuple[_Job, bool, Any]] = []  # run, waiting for the group's fsyncs

        def settle() -> None:
            nonlocal group
            if not done:
                return
            batch = done.copy()
            done.clear()
            finished, group = group, _commit.SyncGroup()
            _commit.set_group(group)
            failed: BaseException | None = None
            if finished.renames:  # here: this thread holds their locks
                try:
                    finished.publish(self._fsync_pool)
                except BaseException as exc:
                    failed = exc
            self._committing.acquire()  # a bounded number of groups wait for the disk
            try:
                self._committer().submit(self._commit_group, finished, batch, failed)
            except BaseException:  # pragma: no cover - the executor was shut down
                self._committing.release()
                raise

        before = _commit.set_group(group)
        try:
            while True:
                with self._jobs_lock:
                    if not self._jobs and not done:
                        self._draining = False
                        return
                    job = self._jobs.popleft() if self._jobs else None
                if (
                    job is None
                    or len(done) >= _GROUP_MAX
                    or (group.renaming and self._may_touch(job, group.renaming))
                ):
                    settle()
                    if job is None:
                        continue
                try:
                    value = self._write_blocking(job.fn, job.args, job.kwargs, settle)
                except BaseException as exc:
                    done.append((job, False, exc))
                else:
                    done.append((job, True, value))
        except BaseException as exc:  # pragma: no cover - the writes catch their own
            group.abandon()
            for job, _, _ in done:
                job.settle(False, exc)
            with self._jobs_lock:
                self._draining = bool(self._jobs)
            if self._draining and self._lane is not None:
                self._lane.submit(self._drain)  # the writes queued meanwhile
            raise
        finally:
            _commit.set_group(before)

    def _may_touch(self, job: _Job, threads: set[str]) -> bool:
        """Whether ``job`` may read or write one of ``threads`` (a call whose thread
        is not known from its arguments may)."""
        store = self.store
        thread: object = None
        if job.fn == store.write_step and job.args and isinstance(job.args[0], dict):
            thread = job.args[0].get("threadId")
        elif job.fn == store.update_thread:
            thread = job.args[0] if job.args else job.kwargs.get("thread_id")
        return not isinstance(thread, str) or not thread or thread in threads

    def _commit_group(
        self,
        group: _commit.SyncGroup,
        batch: list[tuple[_Job, bool, Any]],
        failed: BaseException | None = None,
    ) -> None:
        """Make a group's writes durable, then acknowledge its calls (in the committer
        thread). If the fsyncs fail (or ``failed``, the publication of its replaced
        files), every call of the group fails with them."""
        try:
            error: BaseException | None = failed
            try:
                group.commit(self._fsync_pool)
            except BaseException as exc:
                error = error or exc
            for job, ok, value in batch:
                if error is not None and ok:
                    ok, value = False, _each_its_own(error)
                job.settle(ok, value)
        finally:
            self._committing.release()

    def _committer(self) -> ThreadPoolExecutor:
        if self._commits is None:
            self._commits = ThreadPoolExecutor(max_workers=1, thread_name_prefix="filelayer-commit")
        return self._commits

    def _fsync_pool(self) -> ThreadPoolExecutor:
        if self._fsyncs is None:
            self._fsyncs = _commit.new_pool()
        return self._fsyncs

    def _write_blocking(
        self,
        fn: Callable[..., _T],
        args: Any,
        kwargs: Any,
        before_wait: Callable[[], None] | None = None,
    ) -> _T:
        """Run a write, sleeping on the locks it waits for outside the mutex, so that
        other calls go on meanwhile (``before_wait`` is called before it sleeps: the
        writes before it are acknowledged first)."""
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
                if before_wait is not None:
                    before_wait()
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

    def _scan_blocking(self, kind: Literal["step", "element", "feedback"], key: str) -> str | None:
        store = self.store
        with store.mutex:
            order = store.scan_order()
        return store.scan_journals(kind, key, order)
