"""The storage core: :class:`ArchiveStore` and the reconciler.

``filelayer.store`` keeps the names it had as a module: :class:`ArchiveStore`
and ``now_iso``."""

from .._time import now_iso
from .archive import ArchiveStore

__all__ = ["ArchiveStore", "now_iso"]
