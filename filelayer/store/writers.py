"""Writer sessions: a process that writes holds ``index/writer-<16 hex>.lock`` open and
``flock``-ed from before its first write until it closes the store or exits normally. A
session file nobody holds any more is a writer that died without closing: some of its
writes may lack their index rows, and the reconciler (:mod:`filelayer.store.heal`) looks
at them again."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from pathlib import Path

from .._io import fs as _fs
from .._io.fs import temp_path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)

SESSION = re.compile(r"writer-[0-9a-f]{16}\.lock")
"""The name of a writer session file in ``index/``."""


class Session:
    """A writer's presence: ``index/writer-<16 hex>.lock``, locked while it lives.

    Made (and its name fsynced into ``index/``) before the first write it covers;
    :meth:`end` removes it. Left behind by a process that died, it is found unlocked
    by the next opening (:func:`dead_sessions`)."""

    def __init__(self, directory: Path) -> None:
        changes = _fs.Changes(durable=True)
        _fs.make_dirs(directory, changes)
        self.pid = os.getpid()
        self.ended = False
        self.path = directory / f"writer-{secrets.token_hex(8)}.lock"
        # Locked under a temporary name, then renamed: an opening never sees a living
        # writer's session unlocked (and takes it for a dead one).
        made = temp_path(self.path)
        self.fd = os.open(made, os.O_RDWR | os.O_CREAT | os.O_EXCL | _CLOEXEC, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.replace(made, self.path)
            changes.entry(directory)
            changes.done()
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(made)
            self.end()
            raise

    def end(self) -> None:
        """Remove the file (then let the lock go, so that nobody sees it unlocked)."""
        if self.pid == os.getpid() and not self.ended:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            self.ended = True
        self.close()

    def close(self) -> None:
        """Let the lock go and keep the file: the session reads as a dead writer's."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def dead_sessions(directory: Path) -> list[Path]:
    """The session files in ``directory`` that no living process holds. Without
    ``flock`` (Windows) liveness cannot be told: every session file counts as dead, which
    only costs a reconcile that finds nothing to do."""
    dead = []
    try:
        entries = [e for e in os.scandir(directory) if SESSION.fullmatch(e.name)]
    except OSError:
        return []
    for entry in entries:
        try:
            fd = os.open(entry.path, os.O_RDWR | _CLOEXEC)
        except OSError:
            continue  # removed meanwhile: its writer closed
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            dead.append(Path(entry.path))
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
        finally:
            os.close(fd)
    return dead
