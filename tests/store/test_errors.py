"""Errors keep their type, their message and their context through ``pickle``: a call
run in a process pool (or a worker process) raises in its caller what it raised there."""

from __future__ import annotations

import errno
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from filelayer import (
    ArchiveLockTimeout,
    CorruptFileError,
    FileLayerError,
    FormatVersionError,
    InvalidFieldError,
    InvalidIdError,
    InvalidValueError,
    NotAuthorError,
    StorageWriteError,
    UnknownStepError,
    UnknownUserError,
)
from filelayer.errors import CopyRefusedError, DamagedMarkerError, ExportLinkError
from filelayer.transfer.model import CopyUsageError

ROOT = Path("/archive/root")

ERRORS = {
    "invalid id": (InvalidIdError("thread", "../etc", "contains '/'"), ValueError),
    "invalid field": (InvalidFieldError("step", "s1", "output", "a string", "int"), ValueError),
    "invalid value": (InvalidValueError("value", "feedback value must be 0 or 1"), ValueError),
    "format version": (FormatVersionError(ROOT, 7, 1), OSError),
    "corrupt file": (CorruptFileError(ROOT / "thread.json", "not JSON"), ValueError),
    "damaged marker": (DamagedMarkerError(ROOT / "filelayer.json", "not JSON", 1), ValueError),
    "write": (
        StorageWriteError(ROOT / "steps.jsonl", OSError(errno.ENOSPC, "No space left")),
        OSError,
    ),
    "lock timeout": (ArchiveLockTimeout(ROOT / "locks" / "t.lock", 2.5), TimeoutError),
    "not author": (NotAuthorError("t1", "mallory"), PermissionError),
    "unknown step": (UnknownStepError("s1", "t1"), ValueError),
    "unknown user": (UnknownUserError("no-such-user"), ValueError),
    "copy usage": (CopyUsageError("give a URL"), Exception),
    "export link": (ExportLinkError(ROOT / "out" / "t.md"), OSError),
    "copy refused": (CopyRefusedError("user id u1 is already bob's"), ValueError),
}


def context(error: BaseException) -> dict[str, object]:
    """What an error carries besides its message, compared by value."""
    return {k: repr(v) for k, v in vars(error).items() if not k.startswith("__")}


@pytest.mark.parametrize("name", list(ERRORS))
def test_an_error_survives_pickle_with_its_context(name: str) -> None:
    error, builtin = ERRORS[name]
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error)
    assert isinstance(again, FileLayerError) and isinstance(again, builtin)
    assert str(again) == str(error)
    assert context(again) == context(error)
    if isinstance(error, OSError):
        assert (again.errno, again.strerror) == (error.errno, error.strerror)


def _raise(name: str) -> None:
    raise ERRORS[name][0]


def test_an_error_raised_in_a_process_pool_arrives_whole() -> None:
    with ProcessPoolExecutor(max_workers=1) as pool:
        future = pool.submit(_raise, "write")
        with pytest.raises(StorageWriteError) as raised:
            future.result()
    assert raised.value.path == ROOT / "steps.jsonl"
    assert raised.value.cause.errno == errno.ENOSPC
    assert raised.value.errno == errno.ENOSPC
