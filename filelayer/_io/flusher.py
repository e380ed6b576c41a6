"""The flush mode's background flush: what a call wrote reaches the disk about a second
after the call returned, without the call waiting for it.

A write in the flush mode hands its bytes to the operating system and returns; the
kernel writes them back when it chooses (on ext4 with delayed allocation that can be
30 seconds later), so a power cut could lose far more than the last moment. Here every
write also names the files it wrote and the directories whose entries it changed, and
one daemon thread per process fsyncs them at most ``INTERVAL`` seconds after the first
of them was named: files first, then directories, deepest first. It is the
``appendfsync everysec`` of Redis and the ``synchronous_commit = off`` of PostgreSQL: a
power cut loses at most the writes of the last second or so (``INTERVAL`` plus the time
one flush takes), and the calls themselves never wait for the disk.

Naming a path costs a lock and a dict insert; the fsyncs run in the thread, where the
interpreter lock is released, off the event loop. ``flush()`` does the same at once
(``ArchiveStore.close`` and interpreter exit call it).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .durable import fsync_fd

log = logging.getLogger("filelayer")

INTERVAL = 1.0
"""Seconds between a write and the background fsync that makes it durable."""


def _fsync_path(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # removed or renamed since: its directory's fsync records that
    try:
        fsync_fd(fd)
    except OSError as exc:
        log.warning("filelayer: background flush of %s failed: %s", path, exc)
    finally:
        os.close(fd)


class Flusher:
    """The paths written since the last flush, and the thread that flushes them."""

    def __init__(
        self, interval: float = INTERVAL, fsync: Callable[[Path], None] | None = None
    ) -> None:
        self.interval = interval
        self._fsync = fsync if fsync is not None else _fsync_path
        """How one path is made durable; a test passes its own to watch this flusher
        alone (patching the module would also catch other flushers' threads)."""
        self.flushes = 0
        self.observer: Callable[[str, int], None] | None = None
        """Told ``("took", n)`` when flush ``n`` takes the paths named so far, under the
        lock :meth:`add` takes (every path named before it is in flush ``n``, every one
        named after it is not), and ``("flushed", n)`` once they are all fsynced. The
        flusher's first system call may come long after it took its paths (the thread
        needs the interpreter lock back), so only this says which calls a flush covers:
        the power-cut explorer writes both where its trace orders them against the
        calls' acknowledgements."""
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self.swap_guard = threading.Lock()
        """Held from deciding that a file is fresh to renaming a new one over it: the
        flusher takes the paths named so far only outside it, so the file cannot
        become durable in between (see ``_fs.atomic_write``)."""
        self._files: dict[Path, None] = {}
        self._dirs: dict[Path, None] = {}
        self._fresh: dict[Path, tuple[int, int, int]] = {}  # see mark
        self._since = 0.0
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, files: Sequence[Path], dirs: Sequence[Path]) -> None:
        """Have ``files`` and ``dirs`` fsynced within ``interval`` seconds."""
        if not dirs:
            # Most writes append to a journal already waiting for the next flush: that
            # flush takes the batch after this write, so it covers it. (A swap between
            # the look and the return leaves the new, empty batch: then the lock.)
            pending = self._files
            if all(path in pending for path in files):
                return
        with self._lock:
            for path in files:
                self._files[path] = None
            for path in dirs:
                self._dirs[path] = None
            if not self._wake.is_set():
                self._since = time.monotonic()
                self._wake.set()
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="filelayer-flusher", daemon=True
                    )
                    self._thread.start()

    def mark(self, path: Path, fresh: bool) -> None:
        """Record that the file just renamed to ``path`` has no version on the disk
        (``fresh``: it was made where there was none, or over such a file, without an
        fsync), or that it may have one. A flush forgets every mark.

        A fresh file is known by what it is now (device, inode, change time), not by
        when it was marked: a file another process renamed over it is another inode,
        however close in time (a modification time has the granularity of the kernel's
        tick, and this process's clock is not the file system's)."""
        identity = None
        if fresh:
            try:
                st = os.stat(path)
                identity = (st.st_dev, st.st_ino, st.st_ctime_ns)
            except OSError:
                pass  # gone already: nothing is fresh there
        with self._lock:
            if identity is not None:
                self._fresh[path] = identity
            else:
                self._fresh.pop(path, None)

    def fresh_file(self, path: Path) -> tuple[int, int, int] | None:
        """The identity (device, inode, change time) of the file marked fresh at
        ``path`` since the last flush began, or ``None``."""
        return self._fresh.get(path)

    @property
    def pending(self) -> int:
        """How many paths wait for the next flush."""
        return len(self._files) + len(self._dirs)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            delay = self._since + self.interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.flush()

    def flush(self) -> None:
        """Fsync everything named so far, now (and wait for a flush under way)."""
        with self._flushing:
            with self.swap_guard, self._lock:
                files, dirs = self._files, self._dirs
                self._files, self._dirs, self._fresh = {}, {}, {}
                self._wake.clear()
                observer = self.observer if files or dirs else None
                if observer is not None:
                    observer("took", self.flushes + 1)
            if not files and not dirs:
                return
            for path in files:
                self._fsync(path)
            for path in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
                self._fsync(path)
            self.flushes += 1
            if observer is not None:
                observer("flushed", self.flushes)

    def _after_fork(self) -> None:
        # The parent flushes what it wrote; a forked child starts with nothing named
        # and no thread (threads do not survive fork).
        self._init_state()


FLUSHER = Flusher()
"""The process's one flusher, shared by every store in the flush mode."""

atexit.register(FLUSHER.flush)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=FLUSHER._after_fork)
