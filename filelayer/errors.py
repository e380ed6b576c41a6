"""The exceptions filelayer raises.

Each one subclasses the built-in exception a caller already catches, carries the
context it is about, and says in its message what to do next.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ArchiveError",
    "ArchiveLockTimeout",
    "CorruptFileError",
    "FileLayerError",
    "FormatVersionError",
    "InvalidIdError",
    "StorageWriteError",
]


class FileLayerError(Exception):
    """Base class of every error that filelayer raises on purpose."""


class InvalidIdError(FileLayerError, ValueError):
    """An id or name that cannot be used as (part of) a path inside the archive.

    Ids arrive from the network, so a bad one is refused before any path is built.
    """

    def __init__(self, kind: str, value: object, reason: str) -> None:
        self.kind = kind
        self.value = value
        self.reason = reason
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(
            f"invalid {kind} id {shown}: {reason}. Ids may use letters, digits, '.', '_' "
            "and '-' (at most 128 characters, starting with a letter or digit)."
        )


class ArchiveError(FileLayerError, OSError):
    """The archive root cannot be used (missing, not a directory, wrong format...)."""


class FormatVersionError(ArchiveError):
    """The archive was written by a newer, incompatible version of filelayer."""

    def __init__(self, root: Path, found: object, supported: int) -> None:
        self.root = root
        self.found = found
        super().__init__(
            f"archive {root} has format version {found!r}; this filelayer reads version "
            f"{supported}. Upgrade chainlit-filelayer to open it."
        )


class CorruptFileError(FileLayerError, ValueError):
    """A source-of-truth file that cannot be parsed."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(
            f"{path} is damaged ({detail}). Run `filelayer verify --repair` to fix what can "
            "be fixed without losing data; it reports what it cannot fix."
        )


class StorageWriteError(FileLayerError, OSError):
    """A write failed (disk full, read-only root, permission denied...).

    Nothing already stored was changed: the failed write was rolled back or never became
    visible.
    """

    def __init__(self, path: Path, cause: OSError) -> None:
        self.path = path
        self.cause = cause
        super().__init__(
            cause.errno,
            f"could not write {path}: {cause.strerror or cause}. Nothing stored before was "
            "changed; free disk space or fix the permissions of the archive root and retry.",
        )


class ArchiveLockTimeout(FileLayerError, TimeoutError):
    """Another process held an archive lock for longer than the configured timeout."""

    def __init__(self, lock_file: Path, timeout: float) -> None:
        self.lock_file = lock_file
        self.timeout = timeout
        super().__init__(
            f"could not lock {lock_file} within {timeout:g}s: another process holds it. "
            "If no filelayer process is running, the lock is stale only if the file system "
            "does not release locks of dead processes (a network mount); delete the file."
        )
