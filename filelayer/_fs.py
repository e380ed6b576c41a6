"""Crash-safe file primitives: atomic replacement and guarded appends.

Whole files are replaced by writing a temporary sibling, flushing it and renaming it
over the target, so a reader (or a crash) sees the old file or the new one, never a
mix. Appends go to the end of a journal in a single ``write`` call; if the previous
writer died mid-line, the torn fragment is first closed with a newline so that the new
record starts on a line of its own and the reader can skip the fragment.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from .errors import StorageWriteError


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (POSIX; a no-op elsewhere)."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path_for(path: Path) -> Path:
    """A fresh temporary sibling of ``path``: the name is the layout's (reserved, so
    never an element file's; ``verify --repair`` removes leftovers)."""
    from .layout import temp_path  # layout builds on this module: imported when used

    return temp_path(path)


def atomic_write(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file."""
    tmp = temp_path_for(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StorageWriteError(path, exc) from exc


def append(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Append ``data`` (whole lines) to ``path``, creating it if needed.

    The caller holds the lock that serialises writers of this file. On failure the file
    is truncated back to its previous length, so a full disk never leaves half a record.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StorageWriteError(path, exc) from exc
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        try:
            _write_all(fd, data)
            if durable:
                os.fsync(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise StorageWriteError(path, exc) from exc
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:  # pragma: no cover - os.write raises instead on real systems
            raise OSError(errno.EIO, "short write")
        view = view[written:]


def read_bytes(path: Path) -> bytes | None:
    """The file's bytes, or ``None`` if it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def split_lines(data: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines, and the torn tail (bytes after the last newline, maybe empty)."""
    end = data.rfind(b"\n")
    if end < 0:
        return [], data
    return data[:end].split(b"\n"), data[end + 1 :]
