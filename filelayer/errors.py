"""The exceptions filelayer raises.

Each one subclasses the built-in exception a caller already catches, carries the
context it is about, and says in its message what to do next. Each one with context of
its own rebuilds itself from that context when unpickled (``__reduce__``, as filelock's
``Timeout`` does), so an error raised in a worker process reaches its caller whole.
"""

from __future__ import annotations

import errno
from pathlib import Path

__all__ = [
    "ArchiveError",
    "ArchiveLockTimeout",
    "CopyRefusedError",
    "CorruptFileError",
    "ExportLinkError",
    "FileLayerError",
    "FormatVersionError",
    "GitError",
    "InvalidFieldError",
    "InvalidIdError",
    "InvalidValueError",
    "MergeError",
    "NotAuthorError",
    "NotRegularFileError",
    "StorageWriteError",
    "UnknownStepError",
    "UnknownUserError",
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

    def __reduce__(self) -> tuple[type[InvalidIdError], tuple[str, object, str]]:
        return type(self), (self.kind, self.value, self.reason)


class InvalidFieldError(FileLayerError, ValueError):
    """A field of a step a caller sent whose value is of a type that no reader of the
    step expects (an ``output`` that is a number, ``tags`` that are one string...).

    Stored as given, it would break every later reader (the UI, exports, search), and a
    journal line is never rewritten: so it is refused before anything is written.
    """

    def __init__(self, kind: str, item_id: str, field: str, expected: str, got: str) -> None:
        self.kind = kind
        self.item_id = item_id
        self.field = field
        self.expected = expected
        self.got = got
        super().__init__(
            f"{kind} {item_id!r}: {field!r} must be {expected} (or null), not {got}; "
            "nothing was written."
        )

    def __reduce__(self) -> tuple[type[InvalidFieldError], tuple[str, str, str, str, str]]:
        return type(self), (self.kind, self.item_id, self.field, self.expected, self.got)


class InvalidValueError(FileLayerError, ValueError):
    """A value a caller gave that cannot be stored or used as given: a feedback value
    that is not 0 or 1, a thread name that is not a string, NaN or an unpaired
    surrogate in data, nesting deeper than every reader reads, a date that is none.

    ``what`` names the argument or field; the message says what was expected. Refused
    before anything is written, like every other bad input."""

    def __init__(self, what: str, message: str) -> None:
        self.what = what
        self.message = message
        super().__init__(message)

    def __reduce__(self) -> tuple[type[InvalidValueError], tuple[str, str]]:
        return type(self), (self.what, self.message)


class ArchiveError(FileLayerError, OSError):
    """The archive root cannot be used (missing, not a directory, wrong format...)."""


class FormatVersionError(ArchiveError):
    """The archive was written by a newer, incompatible version of filelayer."""

    def __init__(self, root: Path, found: object, supported: int) -> None:
        self.root = root
        self.found = found
        self.supported = supported
        super().__init__(
            f"archive {root} has format version {found!r}; this filelayer reads version "
            f"{supported}. Upgrade chainlit-filelayer to open it."
        )

    def __reduce__(self) -> tuple[type[FormatVersionError], tuple[Path, object, int]]:
        return type(self), (self.root, self.found, self.supported)


class CorruptFileError(FileLayerError, ValueError):
    """A source-of-truth file that cannot be parsed."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(self._message())

    def _message(self) -> str:
        return (
            f"{self.path} is damaged ({self.detail}). Run `filelayer verify --repair` to fix "
            "what can be fixed without losing data; it reports what it cannot fix."
        )

    def __reduce__(self) -> tuple[type[CorruptFileError], tuple[object, ...]]:
        return type(self), (self.path, self.detail)


class DamagedMarkerError(CorruptFileError):
    """The archive's format marker (``filelayer.json``) cannot be read, or holds no
    version. Every command reads it first, ``verify --repair`` too, so the message says
    how to mend it by hand rather than naming a command that cannot run. Nothing mends it
    on its own: a damaged marker does not say which version wrote the archive, and an
    archive of a newer format marked as this one's would be written to as this one."""

    def __init__(self, path: Path, detail: str, supported: int) -> None:
        self.supported = supported
        super().__init__(path, detail)

    def _message(self) -> str:
        marker = f'{{"format": {self.supported}, "generator": "filelayer"}}'
        return (
            f"{self.path} is damaged ({self.detail}); it is the archive's format marker, "
            f"which every command reads first. If the archive is of format {self.supported}, "
            f"the one this filelayer reads, put {marker} in that file (or restore it from a "
            "backup or from git) and run `filelayer verify`; an archive of a newer format "
            "needs the filelayer that wrote it."
        )

    def __reduce__(self) -> tuple[type[DamagedMarkerError], tuple[Path, str, int]]:
        return type(self), (self.path, self.detail, self.supported)


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

    def __reduce__(self) -> tuple[type[StorageWriteError], tuple[Path, OSError]]:
        return type(self), (self.path, self.cause)


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

    def __reduce__(self) -> tuple[type[ArchiveLockTimeout], tuple[Path, float]]:
        return type(self), (self.lock_file, self.timeout)


class NotAuthorError(FileLayerError, PermissionError):
    """A logged-in user tried to change a thread that another user wrote.

    Chainlit checks authorship on some routes only (its element and feedback routes take
    the thread and step ids from the client), so the layer checks every write itself.
    Nothing was written.
    """

    def __init__(self, thread_id: str, actor: str) -> None:
        self.thread_id = thread_id
        self.actor = actor
        super().__init__(
            f"{actor!r} may not change thread {thread_id}: only its author can. A shared "
            "thread is read-only for everyone else; nothing was written."
        )

    def __reduce__(self) -> tuple[type[NotAuthorError], tuple[str, str]]:
        return type(self), (self.thread_id, self.actor)


class UnknownStepError(FileLayerError, ValueError):
    """Feedback for a step that is not (or no longer) in the thread it names.

    Feedback never creates a thread or rates a step that was deleted: a client that
    invents ids gets this error and nothing is written.
    """

    def __init__(self, step_id: str, thread_id: str | None) -> None:
        self.step_id = step_id
        self.thread_id = thread_id
        where = f"thread {thread_id}" if thread_id else "the archive"
        super().__init__(
            f"no step {step_id!r} in {where} (never written, or deleted): feedback refused, "
            "nothing was written."
        )

    def __reduce__(self) -> tuple[type[UnknownStepError], tuple[str, str | None]]:
        return type(self), (self.step_id, self.thread_id)


class UnknownUserError(FileLayerError, ValueError):
    """A thread given to a user id that no user of the archive has.

    The thread's author would be someone nobody can log in as: its real author would be
    locked out of it (their writes refused as another user's). Chainlit gives the id of
    the logged-in user, which ``create_user``/``get_user`` returned; nothing was written.
    """

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        shown = repr(user_id)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(
            f"no user has the id {shown}: a thread's author must be a user of the archive "
            "(create_user makes one); nothing was written."
        )

    def __reduce__(self) -> tuple[type[UnknownUserError], tuple[str]]:
        return type(self), (self.user_id,)


class MergeError(FileLayerError, ValueError):
    """A version of an archive file that git handed the merge driver cannot be merged
    (not JSON where a document was expected): git then leaves the file conflicted, as
    it would without the driver."""

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(f"cannot merge {what}: {reason}")

    def __reduce__(self) -> tuple[type[MergeError], tuple[str, str]]:
        return (MergeError, (self.what, self.reason))


class GitError(FileLayerError, RuntimeError):
    """A git command that filelayer ran for the archive failed (or git is missing)."""

    def __init__(self, command: str, detail: str) -> None:
        self.command = command
        self.detail = detail
        super().__init__(f"`{command}` failed: {detail}")

    def __reduce__(self) -> tuple[type[GitError], tuple[str, str]]:
        return (GitError, (self.command, self.detail))


class NotRegularFileError(FileLayerError, IsADirectoryError):
    """A directory, a FIFO or a device where the archive keeps a file: not read (a
    FIFO would block its reader forever). An ``IsADirectoryError``, as reading a
    directory raises."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(errno.EISDIR, "not a regular file", str(path))
        self.path = Path(path)

    def __reduce__(self) -> tuple[type[NotRegularFileError], tuple[str]]:
        return type(self), (str(self.path),)


class ExportLinkError(FileLayerError, OSError):
    """A symbolic link where an export writes a file or a directory: nothing is written
    through it (it points out of the export, perhaps into a home directory). An
    ``OSError`` with ``ELOOP``, as opening the link without following it fails."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(
            errno.ELOOP,
            "a symbolic link where the export writes: nothing is written through it; "
            "remove the link and export again",
            str(path),
        )
        self.path = Path(path)

    def __reduce__(self) -> tuple[type[ExportLinkError], tuple[str]]:
        return type(self), (str(self.path),)


class CopyRefusedError(FileLayerError, ValueError):
    """``filelayer copy`` leaves an item out, as the source holds it, on every run: the
    destination could take it only by changing what it holds of another (a user id that
    is already another user's). The message says why; the summary lists it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __reduce__(self) -> tuple[type[CopyRefusedError], tuple[str]]:
        return type(self), (self.reason,)
