"""The one reader of "what was appended since last time".

The archive's logs only grow (a thread's journal, the deleted-threads log) until they are
replaced whole (compaction, repair). Whatever is kept about one of them (its folded
state, its tombstones, the deleted thread ids) is a :class:`Tail`: it reads only the
complete lines appended since its last look, and starts again from the beginning when
the file was replaced, shrank or changed in place."""

from __future__ import annotations

import errno
import os
import stat
import zlib
from pathlib import Path

from . import fs as _fs

_RECOGNISE = 64
"""Bytes compared to make sure a journal read on from where it was left is the same file."""

_VERIFY_CHUNK = 1024 * 1024
"""Bytes read at a time when the bytes already taken are checked again (:meth:`Tail.verify`)."""

Seen = tuple[int, int, int, int, int]
"""A file as a look found it: device, inode, size, modification and change times."""


def seen_of(st: os.stat_result) -> Seen:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class Tail:
    """Something kept about a journal and brought up to date by reading only the
    complete lines appended since the last look. A file that was replaced (compaction,
    repair), shrank, or changed in place without growing is read again from the start.

    A writer that holds the journal's lock tells it about its own appends
    (:meth:`appended`), which it then takes without reading them back."""

    __slots__ = ("crc", "last", "offset", "read_whole", "seen", "stamp")

    def __init__(self) -> None:
        # Which file was read: (device, inode), and its change time when known (not the
        # modification time: a program can put that back after an edit in place, as
        # `cp -p` and `touch -r` do; the change time moves with every write).
        self.stamp: tuple[tuple[int, int], int | None] | None = None
        self.offset = 0
        self.last = b""  # the bytes just before ``offset``, to recognise the file
        self.read_whole: os.stat_result | None = None
        """The ``stat`` taken before the file was read whole, from its beginning to its
        end, in one look; ``None`` once anything else was taken (a view file's key, see
        :mod:`filelayer.store.snapshots`)."""
        self.crc = 0
        """The CRC-32 of the bytes taken, ``[0, offset)``: what :meth:`verify` checks."""
        self.seen: Seen | None = None
        """The file as it was when the bytes taken were last known to be its first bytes
        (read from its beginning, or checked by :meth:`verify`), and have been since; no
        check is needed while it is still so. ``None``: not known (the file changed
        since, and a look read on from ``offset`` without checking them)."""

    def _reset(self) -> None:
        self.stamp = None
        self.offset = 0
        self.last = b""
        self.read_whole = None
        self.crc = 0
        self.seen = None

    def _check(self, file_id: tuple[int, int], size: int, ctime: int | None) -> None:
        stamp = self.stamp
        if (
            stamp is None
            or stamp[0] != file_id
            or size < self.offset
            or (size == self.offset and None not in (ctime, stamp[1]) and stamp[1] != ctime)
        ):
            self._reset()

    def unread(self, path: Path) -> int:
        """The bytes of ``path`` a :meth:`catch_up` would read now, without reading any:
        those appended since the last look, or the whole file if it was replaced (a
        compaction, a repair), shrank or changed in place. For a caller that must not
        read much where it runs (the event loop)."""
        try:
            st = os.lstat(path)
        except OSError:
            return 0
        if not stat.S_ISREG(st.st_mode):
            return 0
        stamp = self.stamp
        if (
            stamp is None
            or stamp[0] != (st.st_dev, st.st_ino)
            or st.st_size < self.offset
            or (st.st_size == self.offset and stamp[1] not in (None, st.st_ctime_ns))
        ):
            return st.st_size
        return st.st_size - self.offset

    def unverified(self, path: Path) -> int:
        """The bytes a :meth:`verify` would read now to check those already taken: none
        while the file is as the last look found it."""
        try:
            st = os.lstat(path)
        except OSError:
            return 0
        return 0 if self.seen is not None and seen_of(st) == self.seen else self.offset

    def verify(self, path: Path) -> None:
        """Start again from the beginning if the bytes already taken are not the file's
        first bytes any more. Appends leave them as they were, but an edit in place (an
        editor that writes in place, ``truncate`` and a rewrite, a checkout that keeps the
        file) can change them and leave the file as long or longer, with the same last
        bytes before ``offset``: which :meth:`catch_up` alone, that compares only those,
        would take for an append. Nothing in the file's ``stat`` tells an append from such
        an edit, so once the file changed since the last look (another process appended,
        or this one: the writers do not tell every reader), its first ``offset`` bytes are
        read again and their CRC-32 compared: some milliseconds for megabytes, where
        folding them again costs a hundred times that. Called before :meth:`catch_up` by
        whoever acts on what is kept or serves it (the kept folds of the journals)."""
        if not self.offset:
            return
        try:
            st = os.lstat(path)
        except OSError:
            self._reset()
            return
        if self.seen is not None and seen_of(st) == self.seen:
            return
        if (
            self.stamp is None
            or not stat.S_ISREG(st.st_mode)
            or self.stamp[0] != (st.st_dev, st.st_ino)
            or st.st_size < self.offset
        ):
            self._reset()
            return
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0) | _fs.NOFOLLOW)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ELOOP):
                raise
            self._reset()
            return
        crc = 0
        try:
            at = 0
            while at < self.offset:
                chunk = _fs.pread_all(fd, min(_VERIFY_CHUNK, self.offset - at), at)
                if not chunk:
                    break
                crc = zlib.crc32(chunk, crc)
                at += len(chunk)
        finally:
            os.close(fd)
        if at != self.offset or crc != self.crc:
            self._reset()
        else:
            self.seen = seen_of(st)  # checked: the catch_up that follows may trust it

    def catch_up(self, path: Path) -> None:
        """Read what was appended to ``path`` since the last look. Something else than a
        file in its place (a symbolic link, a FIFO, a directory) reads as no file: its
        bytes are not the archive's (``filelayer verify`` names it)."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            self._reset()
            return
        if not stat.S_ISREG(st.st_mode):
            self._reset()
            return
        file_id = (st.st_dev, st.st_ino)
        self._check(file_id, st.st_size, st.st_ctime_ns)
        whole = self.offset == 0
        # What was taken is still known to be the file's beginning only if it is read
        # from there, or the file is as it was when it last was known to be.
        trusted = whole or self.seen == seen_of(st)
        if st.st_size > self.offset:
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0) | _fs.NOFOLLOW)
            except OSError as exc:  # gone, or a link put in its place since the lstat
                if exc.errno not in (errno.ENOENT, errno.ELOOP):
                    raise
                self._reset()
                return
            try:
                self._read_to(fd, st.st_size, path)
            finally:
                os.close(fd)
        self.stamp = (file_id, st.st_ctime_ns)
        # As found before the read: whatever changed the file while it was read changed
        # its times too, and the next verify reads it again.
        self.seen = seen_of(st) if trusted and self.offset == st.st_size else None
        # Known only for a read of the whole file, from before that read: whatever
        # changed the file in place while it was read changed this time too.
        self.read_whole = st if whole and self.offset == st.st_size else None

    def catch_up_open(self, file: _fs.AppendFile) -> None:
        """Catch up through a journal the caller has open to append to, under its lock.
        Its change time, known from its opening, tells an edit in place that kept the
        size (a backup copied over it) after this process's own appends too."""
        self._check(file.id, file.size, file.ctime)
        if file.size > self.offset:
            self._read_to(file.fd, file.size, file.path)
        self.stamp = (file.id, file.ctime)
        self.read_whole = None
        self.seen = None

    def ends_at(self, file: _fs.AppendFile) -> bool:
        """Whether everything up to the end of ``file`` was read: it ends with a
        complete line."""
        return self.stamp is not None and self.stamp[0] == file.id and self.offset == file.size

    def appended(self, file: _fs.AppendFile, at: int, lines: bytes) -> None:
        """The caller appended ``lines`` (complete lines) at offset ``at`` of ``file``:
        take them, if everything before them was read."""
        if self.stamp is not None and self.stamp[0] == file.id and self.offset == at:
            self._take(lines, file.path)
            self.crc = zlib.crc32(lines, self.crc)
            self.offset += len(lines)
            self.last = (self.last + lines)[-_RECOGNISE:]
            self.stamp = (file.id, file.ctime)  # as the write left it
            self.read_whole = None
            self.seen = None

    def _read_to(self, fd: int, size: int, path: Path) -> None:
        start = self.offset - len(self.last)
        data = _fs.pread_all(fd, size - start, start)
        # A file replaced twice can come back with the same inode number: the bytes
        # before ``offset`` must still be the ones read last time.
        if data[: len(self.last)] == self.last:
            data = data[len(self.last) :]
        else:
            self._reset()
            data = _fs.pread_all(fd, size, 0)
        complete = data.rfind(b"\n") + 1
        if complete:
            self._take(data[:complete], path)
            self.crc = zlib.crc32(memoryview(data)[:complete], self.crc)
            self.offset += complete
            self.last = data[max(0, complete - _RECOGNISE) : complete]

    def _take(self, lines: bytes, path: Path) -> None:
        raise NotImplementedError
