"""Inter-process locks on lock files.

On POSIX both modes use ``fcntl.flock`` directly: measured here, an acquire/release
costs about 4.5 µs, against 70-90 µs through the ``filelock`` package, and every write
takes two or three locks. Where there is no ``fcntl`` (Windows), the fast mode uses
``filelock`` for its portable locking, and the pure mode an exclusive-create lock file.
Locks are never held across an ``await``.

Every acquisition opens the lock file anew, so two threads of one process exclude each
other as well as two processes do, and a lock file removed behind the layer's back (its
``locks/`` directory deleted) is made again, the one other processes lock too. (Keeping
the files open between calls was measured: with the check that a kept file is still the
one at its path, it cost more than opening it, 3.3 µs against 2.6 µs a lock here.)

Two additions serve the Chainlit adapter, whose calls run on an event loop that must
never sleep:

- A lock a thread already holds is taken again at no cost (re-entrant), so that a caller
  can take every lock a call needs first, and the call's own acquisitions then find them
  held.
- In :func:`no_wait` mode, a lock held elsewhere is not waited for: :class:`LockBusy` is
  raised instead, before anything was done under it, and the caller runs the call again
  where waiting is allowed. Only the acquisitions that open a call may raise it: once a
  ``with`` block of :func:`locked` has taken its locks, waiting is allowed again until
  the no-wait block ends, so a call never stops half-way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._backend import PURE
from ..errors import ArchiveLockTimeout, StorageWriteError
from . import fs as _fs

log = logging.getLogger("filelayer")

DEFAULT_TIMEOUT = 30.0

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class LockBusy(Exception):
    """A lock is held elsewhere and the caller asked not to wait (see :func:`no_wait`).
    Nothing was done under any lock of the call that raised it."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} is held by another process or thread")
        self.path = path


def _open_lock_file(path: Path) -> int:
    """Open (creating it) the lock file; a failure is a write failure the user can fix.

    A lock file made here has its name fsynced into ``locks/`` (once per file in the
    archive's life): a lock file is derived, but no call leaves a name behind that a
    power cut could take."""
    flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(path, flags)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StorageWriteError(path, exc) from exc
    try:
        changes = _fs.Changes(durable=True)
        _fs.make_dirs(path.parent, changes)  # the derived locks/ may have gone missing
        fd = os.open(path, flags | os.O_CREAT, 0o644)
        changes.entry(path.parent)
        try:
            changes.done()
        except OSError:
            os.close(fd)
            raise
        return fd
    except OSError as exc:
        raise StorageWriteError(path, exc) from exc


class _State(threading.local):
    def __init__(self) -> None:
        self.held: dict[str, int] = {}  # lock file -> how many times this thread took it
        # lock file -> what releases it, given back when the count drops to zero (by
        # whichever block gives it back last: a group commit keeps a lock past the call
        # that took it, see filelayer._io.commit)
        self.tokens: dict[str, Any] = {}
        self.no_wait = False


_state = _State()


def _forget_after_fork() -> None:
    """A forked child does not hold its parent's locks (nor could it release them)."""
    global _state
    _state = _State()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


# -- how each platform takes one lock -------------------------------------------------------


def _flock_try(key: str, path: Path) -> Any:
    """Take the lock if it is free; ``None`` if it is held elsewhere."""
    fd = _open_lock_file(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _flock_release(token: Any) -> None:
    try:
        fcntl.flock(token, fcntl.LOCK_UN)
    finally:
        os.close(token)


def _filelock_try(key: str, path: Path) -> Any:  # pragma: no cover - Windows
    import filelock

    lock = filelock.FileLock(str(path), timeout=0, thread_local=False)
    try:
        lock.acquire()
    except filelock.Timeout:
        return None
    return lock


def _filelock_release(token: Any) -> None:  # pragma: no cover - Windows
    token.release()


def _exclusive_try(key: str, path: Path) -> Any:  # pragma: no cover - Windows
    marker = path.with_name(path.name + ".held")
    try:
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return None
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return _exclusive_try(key, path)
    return marker


def _exclusive_release(token: Any) -> None:  # pragma: no cover - Windows
    with contextlib.suppress(OSError):
        os.unlink(token)


if fcntl is not None:
    _try, _release = _flock_try, _flock_release
elif not PURE:  # pragma: no cover - Windows
    _try, _release = _filelock_try, _filelock_release
else:  # pragma: no cover - Windows
    _try, _release = _exclusive_try, _exclusive_release


# -- taking locks ---------------------------------------------------------------------------


def _wait(key: str, path: Path, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        if time.monotonic() >= deadline:
            raise ArchiveLockTimeout(path, timeout)
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
        token = _try(key, path)
        if token is not None:
            return token


_Tokens = list[tuple[str, Any]]
"""What one ``with`` block took, in order: each lock file with what releases it
(``None`` where the thread held it already, only the count to give back)."""


def _acquire(paths: Sequence[Path], timeout: float) -> _Tokens:
    state = _state
    held = state.held
    taken: _Tokens = []
    try:
        for path in paths:
            key = str(path)
            if key in held:
                held[key] += 1
                taken.append((key, None))
                continue
            token = _try(key, path)
            if token is None:
                if state.no_wait:
                    raise LockBusy(path)
                token = _wait(key, path, timeout)
            held[key] = 1
            state.tokens[key] = token
            taken.append((key, token))
    except BaseException:
        _release_all(taken)
        raise
    return taken


def _release_all(taken: _Tokens) -> None:
    held, tokens = _state.held, _state.tokens
    error: BaseException | None = None
    for key, _ in reversed(taken):
        count = held[key] - 1
        if count:
            held[key] = count
            continue
        del held[key]
        token = tokens.pop(key, None)
        if token is not None:
            try:
                _release(token)
            except BaseException as exc:  # pragma: no cover - unlock does not fail
                error = exc
    if error is not None:  # pragma: no cover
        raise error


class _Locked:
    """The context manager of :func:`locked`: a class, because every write takes two or
    three locks and a generator-based context manager costs more than the lock itself."""

    __slots__ = ("paths", "taken", "timeout")

    def __init__(self, paths: Sequence[Path], timeout: float) -> None:
        self.paths = paths
        self.timeout = timeout

    def __enter__(self) -> None:
        self.taken = _acquire(self.paths, self.timeout)
        # The call has begun: from here on it waits for whatever else it takes, in this
        # block and after it, so that it never stops half-way.
        _state.no_wait = False

    def __exit__(self, *exc: object) -> None:
        _release_all(self.taken)


def locked(path: Path, timeout: float = DEFAULT_TIMEOUT) -> contextlib.AbstractContextManager[None]:
    """Hold the lock file ``path`` exclusively for the ``with`` block."""
    return _Locked((path,), timeout)


def locked_all(
    paths: Sequence[Path], timeout: float = DEFAULT_TIMEOUT
) -> contextlib.AbstractContextManager[None]:
    """Hold every lock file of ``paths``, taken in that order, for the ``with`` block."""
    return _Locked(paths, timeout)


class NoWait:
    """The context manager of :func:`no_wait` (a class: the adapter enters it on every
    call)."""

    __slots__ = ("before",)

    def __enter__(self) -> None:
        state = _state
        self.before = state.no_wait
        state.no_wait = True

    def __exit__(self, *exc: object) -> None:
        _state.no_wait = self.before


def call_no_wait(fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in no-wait mode (:func:`no_wait` for a whole call, as
    the adapter makes on every call: cheaper)."""
    state = _state
    before = state.no_wait
    state.no_wait = True
    try:
        return fn(*args, **kwargs)
    finally:
        state.no_wait = before


def no_wait() -> NoWait:
    """In this block, a lock held elsewhere raises :class:`LockBusy` instead of being
    waited for, until a ``with locked(...)`` block has taken its locks: the call has
    begun, and it waits for the locks it takes after that."""
    return NoWait()


def hold(path: Path, timeout: float) -> Held:
    """Wait (sleeping) until ``path`` is free and take it, for a caller that will run a
    call needing it next: the call finds it held. Release with :meth:`Held.release`."""
    return Held(_acquire((path,), timeout))


class Held:
    """Locks taken ahead of a call (see :func:`hold`)."""

    __slots__ = ("taken",)

    def __init__(self, taken: _Tokens) -> None:
        self.taken: _Tokens | None = taken

    def release(self) -> None:
        taken, self.taken = self.taken, None
        if taken is not None:
            _release_all(taken)


def is_free(path: Path) -> bool:
    """Whether nobody (no other process, no other thread) holds ``path`` right now."""
    key = str(path)
    if key in _state.held:
        return True
    token = _try(key, path)
    if token is None:
        return False
    _release(token)
    return True


# -- temporary files of the living ---------------------------------------------------------


def hold_file(fd: int) -> None:
    """Hold the file open as ``fd`` exclusively (``flock``, without waiting: the file is
    new) until ``fd`` is closed, here or by the kernel when the process dies: what
    :func:`remove_unheld` looks for. Best effort: where there is no ``flock``, the file
    is not held, and nothing removes it."""
    if fcntl is None:  # pragma: no cover - Windows
        return
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def remove_unheld(path: Path) -> bool:
    """Remove the file at ``path`` if no process holds it (:func:`hold_file`): the one
    that made it died, or let it go. Its lock is taken first and kept until the file is
    gone, so that a holder that is alive, however long it has been stopped, keeps its
    file. Whether it was removed; never where there is no ``flock`` (a holder cannot be
    told from nobody there)."""
    if fcntl is None:  # pragma: no cover - Windows
        return False
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | _fs.NOFOLLOW | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held, named = os.fstat(fd), os.lstat(path)
        if (held.st_dev, held.st_ino) != (named.st_dev, named.st_ino):
            return False  # another file under that name since it was opened
        os.unlink(path)
    except OSError:  # held (BlockingIOError), gone, or no flock on this file system
        return False
    finally:
        os.close(fd)
    return True


# -- announcing a long job ------------------------------------------------------------------
#
# Maintenance (a rebuild of the index, a compaction of every journal...) writes a lot,
# and while it does, the kernel makes every writer of the file system wait now and then,
# in an ordinary write, for tens of milliseconds. The serving processes therefore want
# to know that it runs, to keep their writes off the event loop meanwhile. A lock file
# held *shared* says so: any number of maintainers hold it at once, and the kernel drops
# a hold with its process, so a killed maintainer announces nothing (the file's mere
# existence says nothing). A serving process asks by trying to take it *exclusively*
# without waiting, and lets go at once.

_ANNOUNCE_PATIENCE = 1.0
"""Seconds a maintainer retries its shared hold while a serving process's look holds
the file exclusively (microseconds each), before it goes on unannounced."""


class Announcement:
    """A shared hold on a lock file, for the time of a ``with`` block (see
    :func:`announce`). Re-entrant per object: nesting maintenance helpers is harmless,
    and two objects on one file share it as two processes would."""

    __slots__ = ("_fd", "_path")

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether the announcement is made (``False`` where there is no ``flock``,
        or when it could not be made: see :func:`announce`)."""
        return self._fd is not None

    def __enter__(self) -> Announcement:
        if fcntl is None or self._fd is not None:  # pragma: no cover - Windows
            return self
        try:
            fd = _open_lock_file(self._path)
        except StorageWriteError as exc:  # advisory: the job goes on unannounced
            log.debug("filelayer: maintenance not announced (%s)", exc)
            return self
        deadline = time.monotonic() + _ANNOUNCE_PATIENCE
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except BlockingIOError:  # a serving process is looking, for microseconds
                if time.monotonic() >= deadline:  # pragma: no cover - a stopped process
                    os.close(fd)
                    return self
                time.sleep(0.001)
            except BaseException:  # pragma: no cover - flock on a file we opened
                os.close(fd)
                raise
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            # Unlocked before it is closed: a child forked meanwhile shares the open
            # file, and with it the hold, which closing this descriptor would not end.
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)


def announce(path: Path) -> Announcement:
    """Announce a long job by holding ``path`` shared for a ``with`` block.

    Never blocks for long: only a look by :func:`announced` (an exclusive hold of
    microseconds) can stand in its way, and after a second of such looks (a serving
    process stopped in the middle of one) the job goes on unannounced rather than
    waiting. Where there is no ``flock`` (Windows) nothing is announced."""
    return Announcement(path)


def announced(path: Path) -> bool:
    """Whether some process (or another descriptor of this one) announces a job on
    ``path`` right now: one non-blocking exclusive ``flock``, given back at once. The
    file is never created here (none: nothing announced), so the look writes nothing
    and waits for nothing; it costs an ``open``, a ``flock`` and a ``close``."""
    if fcntl is None:  # pragma: no cover - Windows
        return False
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # pragma: no cover - a file system without flock
        return False
    finally:
        os.close(fd)  # drops the exclusive hold, if it was taken
    return False
