"""Copying element bytes without blocking the event loop.

Element files can be large (uploads, PDFs, audio), so they are read and written off the
event loop: through ``aiofiles`` in the fast mode, through ``asyncio.to_thread`` in the
pure mode. Small journal appends stay on the loop, where they cost microseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from .._backend import PURE
from ..errors import StorageWriteError
from .durable import fsync_fd
from .flusher import FLUSHER
from .fs import fsync_dir, temp_path


def _write_file_sync(dest: Path, data: bytes, durable: bool) -> None:
    tmp = temp_path(dest)
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            if durable or os.path.lexists(dest):  # never replaced without an fsync
                fsync_fd(f.fileno())
        os.replace(tmp, dest)
        _settle(dest, durable)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StorageWriteError(dest, exc) from exc


def _settle(dest: Path, durable: bool) -> None:
    """The new name on the disk now (durable), or within the flusher's second. (As in
    ``_fs.atomic_write``, a file replacing another was fsynced before the rename: here
    always, so the file is never marked fresh.)"""
    FLUSHER.mark(dest, fresh=False)
    if durable:
        fsync_dir(dest.parent)
    else:
        FLUSHER.add([dest], [dest.parent])


def _read_file_sync(src: Path) -> bytes:
    with open(src, "rb") as f:
        return f.read()


if not PURE:
    import aiofiles
    import aiofiles.os

    async def read_file(src: Path) -> bytes:
        async with aiofiles.open(src, "rb") as f:
            return await f.read()

    async def write_file(dest: Path, data: bytes, *, durable: bool) -> None:
        tmp = temp_path(dest)
        try:
            async with aiofiles.open(tmp, "xb") as f:
                await f.write(data)
                await f.flush()
                if durable or os.path.lexists(dest):  # never replaced without an fsync
                    await asyncio.to_thread(fsync_fd, f.fileno())
            await aiofiles.os.replace(tmp, dest)
            if durable:
                FLUSHER.mark(dest, fresh=False)
                await asyncio.to_thread(fsync_dir, dest.parent)
            else:
                _settle(dest, durable)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StorageWriteError(dest, exc) from exc

else:

    async def read_file(src: Path) -> bytes:
        return await asyncio.to_thread(_read_file_sync, src)

    async def write_file(dest: Path, data: bytes, *, durable: bool) -> None:
        await asyncio.to_thread(_write_file_sync, dest, data, durable)
