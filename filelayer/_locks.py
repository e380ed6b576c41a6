"""Inter-process locks on lock files.

The fast mode uses the ``filelock`` package (portable, well tested). The pure mode uses
``fcntl.flock`` directly on POSIX, and an exclusive-create lock file elsewhere. Both open
the lock file on every acquisition, so that two threads of one process exclude each
other as well as two processes do. Locks are never held across an ``await``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from ._backend import PURE
from .errors import ArchiveLockTimeout

DEFAULT_TIMEOUT = 30.0


if not PURE:
    import filelock

    @contextlib.contextmanager
    def locked(path: Path, timeout: float = DEFAULT_TIMEOUT) -> Iterator[None]:
        lock = filelock.FileLock(str(path), timeout=timeout, thread_local=False)
        try:
            lock.acquire()
        except filelock.Timeout as exc:
            raise ArchiveLockTimeout(path, timeout) from exc
        try:
            yield
        finally:
            lock.release()

else:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        fcntl = None  # type: ignore[assignment]

    @contextlib.contextmanager
    def locked(path: Path, timeout: float = DEFAULT_TIMEOUT) -> Iterator[None]:
        if fcntl is None:  # pragma: no cover - Windows
            with _exclusive_create_lock(path, timeout):
                yield
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + timeout
            delay = 0.0005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise ArchiveLockTimeout(path, timeout) from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.05)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _exclusive_create_lock(
        path: Path, timeout: float
    ) -> Iterator[None]:  # pragma: no cover - Windows
        marker = path.with_name(path.name + ".held")
        deadline = time.monotonic() + timeout
        while True:
            try:
                fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
                os.close(fd)
                break
            except FileExistsError:
                if time.monotonic() >= deadline:
                    raise ArchiveLockTimeout(path, timeout) from None
                time.sleep(0.005)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.unlink(marker)
