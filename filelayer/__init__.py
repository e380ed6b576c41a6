"""filelayer: a Chainlit data layer that keeps every conversation as plain files.

    import chainlit as cl
    from filelayer import FileDataLayer

    @cl.data_layer
    def data_layer():
        return FileDataLayer("./chats")

The storage core (:class:`ArchiveStore`) and the command line need only the standard
library; ``FileDataLayer`` is imported lazily because it needs Chainlit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._backend import MODE
from .errors import (
    ArchiveError,
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
from .format.layout import FORMAT_VERSION
from .store.archive import ArchiveStore

if TYPE_CHECKING:
    from .chainlit.datalayer import FileDataLayer

__version__ = "0.1.0"

__all__ = [
    "FORMAT_VERSION",
    "MODE",
    "ArchiveError",
    "ArchiveLockTimeout",
    "ArchiveStore",
    "CorruptFileError",
    "FileDataLayer",
    "FileLayerError",
    "FormatVersionError",
    "InvalidFieldError",
    "InvalidIdError",
    "InvalidValueError",
    "NotAuthorError",
    "StorageWriteError",
    "UnknownStepError",
    "UnknownUserError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name == "FileDataLayer":
        from .chainlit.datalayer import FileDataLayer

        return FileDataLayer
    raise AttributeError(f"module 'filelayer' has no attribute {name!r}")
