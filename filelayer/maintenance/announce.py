"""Maintenance announces itself to the processes serving the archive.

A job that rewrites much of an archive (a rebuild of the index, a compaction of every
journal, a repair, a retention sweep) fills the page cache with data to write back, and
while the disk catches up the kernel makes every writer of the file system wait in
ordinary ``write`` calls, now and then for tens of milliseconds: an app's event loop
writing a message at that moment stalls every chat. So such a job holds
``locks/maintenance.lock`` shared for its duration (any number of jobs at once; the
kernel drops a hold with its process, so a killed job announces nothing), and the
Chainlit adapter, which looks at it at most every 100 ms, runs its writes and reads in
worker threads meanwhile (see :mod:`filelayer.chainlit.offload`).

The lock file is derived, like every file of ``locks/`` (which ``.gitignore`` keeps out
of git), and holding it excludes nobody: it is an announcement, not a lock.
"""

from __future__ import annotations

from .._io import locks as _locks
from ..format.layout import Layout

__all__ = ["maintaining"]


def maintaining(layout: Layout) -> _locks.Announcement:
    """Announce maintenance of the archive at ``layout`` for a ``with`` block:
    ``with maintaining(store.layout): ...``. A ``locks/`` that is a symbolic link is
    refused first (:meth:`Layout.refuse_links`): the announcement is a file written
    there, and callers such as the git hooks announce before they open the archive."""
    layout.refuse_links()
    return _locks.announce(layout.maintenance_lock)
