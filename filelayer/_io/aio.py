"""Copying element bytes without blocking the event loop.

Element files can be large (uploads, PDFs, audio), so they are read and written off the
event loop: read through ``aiofiles`` in the fast mode, through ``asyncio.to_thread`` in
the pure mode; written in a worker thread by :func:`filelayer._io.fs.atomic_write`, the one
atomic write every file of the archive goes through, so that element bytes follow the
same durability rules as the rest (see :class:`filelayer._io.fs.Changes`). Small journal
appends stay on the loop, where they cost microseconds.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from .._backend import PURE
from . import fs as _fs


def _write_file_sync(dest: Path, data: bytes, durable: bool) -> _fs.FileKey:
    with _fs.Changes(durable) as changes:
        _fs.atomic_write(dest, data, changes=changes)
    return _fs.file_key(os.stat(dest))


async def write_file(dest: Path, data: bytes, *, durable: bool) -> _fs.FileKey:
    """Replace ``dest`` with ``data`` atomically, durably now (``durable``: the file and
    its directory are fsynced before this returns) or within the flusher's interval.
    The key of the file written, to tell later whether it is still the one there."""
    return await asyncio.to_thread(_write_file_sync, dest, data, durable)


def _read_file_sync(src: Path) -> bytes:
    with open(src, "rb") as f:
        return f.read()


if not PURE:
    import aiofiles

    async def read_file(src: Path) -> bytes:
        async with aiofiles.open(src, "rb") as f:
            return await f.read()

else:

    async def read_file(src: Path) -> bytes:
        return await asyncio.to_thread(_read_file_sync, src)
