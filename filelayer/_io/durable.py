"""The one call that puts bytes on the disk, below the flusher and the atomic write
(both use it; it uses nothing of the package)."""

from __future__ import annotations

import os
import sys

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_FULLFSYNC: int | None = (
    getattr(fcntl, "F_FULLFSYNC", None) if sys.platform == "darwin" and fcntl else None
)


def fsync_fd(fd: int) -> None:
    """Put a file's (or a directory's) data on the disk.

    On macOS ``fsync`` only hands the data to the drive, whose cache a power cut
    loses; ``F_FULLFSYNC`` has the drive write it through (where a file system refuses
    it, plain ``fsync`` is the best there is).
    """
    if _FULLFSYNC is not None:  # pragma: no cover - macOS
        try:
            fcntl.fcntl(fd, _FULLFSYNC)
            return
        except OSError:
            pass
    os.fsync(fd)
