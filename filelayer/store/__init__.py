"""The storage core: :class:`ArchiveStore` and the reconciler.

``filelayer.store`` keeps the names it had as a module: :class:`ArchiveStore`
and ``now_iso``."""

from .archive import ArchiveStore, now_iso

__all__ = ["ArchiveStore", "now_iso"]
