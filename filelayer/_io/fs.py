"""Crash-safe file primitives: atomic replacement, guarded appends, and durability.

Whole files are replaced by writing a temporary sibling, flushing it and renaming it
over the target, so a reader (or a crash) sees the old file or the new one, never a
mix. Appends go to the end of a journal in a single ``write`` call; if the previous
writer died mid-line, the torn fragment is first closed with a newline so that the new
record starts on a line of its own and the reader can skip the fragment.

What survives a power cut follows the rules POSIX file systems (ext4, XFS, APFS) give: a
file's bytes are on the disk once the file was fsynced, and a name created, renamed or
removed in a directory once that directory was fsynced. :class:`Changes` collects what
one call did and makes it durable as the call's mode says.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Protocol

from ..errors import NotRegularFileError, StorageWriteError
from .durable import fsync_fd as fsync_fd  # explicit: called (and patched) as fs.fsync_fd
from .flusher import FLUSHER

log = logging.getLogger("filelayer")


class SyncGroup(Protocol):
    """What a durable write hands to a group commit (:class:`filelayer._io.commit.SyncGroup`
    is the one implementation; this module names only what it uses, so that it does not
    import the module built on it)."""

    def keep(self, opened: AppendFile) -> bool: ...

    def keep_fd(self, fd: int, path: Path) -> bool: ...

    def entries(self, dirs: list[Path]) -> None: ...

    def then(self, callbacks: list[Callable[[], None]]) -> None: ...

    def replace_later(
        self, fd: int, tmp: Path, path: Path, release: Callable[[], None], about: str
    ) -> None: ...


RESERVED_PREFIX = ".filelayer-"
"""Every transient file or directory the layer makes is named ``.filelayer-…``.

No other name in an archive can start with it: ids (thread directories, element files)
start with a letter or a digit, and so do user files. ``verify --repair`` removes what is
left of them after a crash, and ``.gitignore`` keeps them out of git.
"""
TEMP_SUFFIX = ".tmp"
"""Temporary names also end with ``.tmp``, so that a person (or an older filelayer)
sees what they are. The suffix alone means nothing: an upload named ``draft.tmp`` is
stored as ``<element id>.tmp``."""


def fsync_dir(path: Path) -> None:
    """Make the names created, renamed or removed in ``path`` durable (POSIX; Windows
    cannot open a directory to flush it, and NTFS journals its names itself)."""
    if os.name != "posix":  # pragma: no cover - Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        fsync_fd(fd)
    finally:
        os.close(fd)


def sync_now(path: Path) -> None:
    """Put the file ``path`` and its name in its directory on the disk now, whatever the
    mode: for a file that a later write will point to in place of something already on
    the disk (a re-sent element, see ``ArchiveStore.record_element``). The flush mode
    orders nothing, so that later write could otherwise reach the disk first."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            fsync_fd(fd)
        finally:
            os.close(fd)
        fsync_dir(path.parent)
    except OSError as exc:
        raise StorageWriteError(path, exc) from exc


def sync_file(path: Path) -> None:
    """Put the file ``path``'s data on the disk now (nothing if it is gone): a file read
    and answered from, which a writer may not have fsynced yet."""
    try:
        fd = os.open(path, os.O_RDONLY | NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StorageWriteError(path, exc) from exc
    try:
        fsync_fd(fd)
    except OSError as exc:
        raise StorageWriteError(path, exc) from exc
    finally:
        os.close(fd)


def fsync_dirs(dirs: Iterable[Path]) -> None:
    """fsync each directory once, deepest first: a new directory's own entries are on
    the disk before its name in its parent is. A failure is a failed write."""
    unique = list(dict.fromkeys(dirs))
    if len(unique) > 1:
        unique.sort(key=lambda p: len(p.parts), reverse=True)
    for directory in unique:
        try:
            fsync_dir(directory)
        except OSError as exc:
            raise StorageWriteError(directory, exc) from exc


class Changes:
    """What one call changed on disk, made durable as the call's mode says.

    ``durable`` (the fsync mode, and the writes that are always durable): a file's data
    is fsynced where it is written, before a rename can publish it; the directories
    whose entries the call created, renamed or removed are collected here and fsynced
    once each when the call is done, so one fsync of ``threads/`` covers every name the
    call made there. Otherwise (the flush mode) the files written and the directories
    changed are handed to the background flusher, which fsyncs them within about a
    second. Used as a context manager, it commits when the block ends without error.

    ``group`` (durable only): the call runs in a group commit (see
    :mod:`filelayer._io.commit`): its journal appends and its directories are fsynced with
    the group's, before the call is acknowledged, instead of here.

    A call that fails after it made names still makes them durable (or hands them to
    the flusher) as it ends: a retry, or another writer, finds them there and cannot
    tell that they are not on the disk yet.
    """

    __slots__ = ("after", "dirs", "durable", "files", "group")

    def __init__(self, durable: bool, group: SyncGroup | None = None) -> None:
        self.durable = durable
        self.group = group if durable else None
        self.files: list[Path] = []
        self.dirs: list[Path] = []
        self.after: list[Callable[[], None]] | None = None

    def wrote(self, path: Path) -> None:
        """``path``'s data was written (already fsynced, if durable)."""
        if not self.durable:
            self.files.append(path)

    def entry(self, directory: Path) -> None:
        """A name in ``directory`` was created, renamed or removed."""
        if directory not in self.dirs:
            self.dirs.append(directory)

    def then(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the directories recorded so far are on the disk (after
        the group's commit, in a group), or handed to the flusher (the flush mode): a
        store notes there which names it need not make durable again. Not called if
        they could not be made durable."""
        if self.after is None:
            self.after = [callback]
        else:
            self.after.append(callback)

    def done(self) -> None:
        """Make the directories durable now (durable) or soon (the flusher)."""
        after, self.after = self.after, None
        if self.durable:
            if self.group is not None:
                self.group.entries(self.dirs)
                if after:
                    self.group.then(after)
                    after = None
            else:
                fsync_dirs(self.dirs)
        elif self.files or self.dirs:
            FLUSHER.add(self.files, self.dirs)
        self.files.clear()
        self.dirs.clear()
        if after:
            for callback in after:
                callback()

    def __enter__(self) -> Changes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.done()
        elif self.dirs or self.files:
            # The call failed, but what it made is there: its names are made durable
            # all the same (the call's own error is the one raised).
            try:
                self.done()
            except Exception as error:  # the call's own error is the one to raise
                log.warning("filelayer: could not make a failed call's names durable: %s", error)


def make_dirs(path: Path, changes: Changes) -> bool:
    """``mkdir -p path``, each new level's name recorded in ``changes``. True if
    ``path`` was made."""
    try:
        os.mkdir(path)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
        return False
    except FileNotFoundError:
        make_dirs(path.parent, changes)
        try:
            os.mkdir(path)
        except FileExistsError:
            if not os.path.isdir(path):
                raise
            return False
    changes.entry(path.parent)
    return True


def found(path: Path, changes: Changes) -> None:
    """``path`` already holds what the call would have written (a manifest renamed to
    the name it has): the call writes nothing, but acknowledges that file, which may not
    be on the disk yet (another worker's group commit made it and has not fsynced it, or
    the call that made it was killed before its fsyncs). So it is made durable as the
    call's mode says, as if the call had written it: its data, and its name."""
    if changes.durable:
        try:
            fd = os.open(path, os.O_RDONLY | NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageWriteError(path, exc) from exc
        kept = False
        try:
            if changes.group is not None:
                kept = changes.group.keep_fd(fd, path)
            else:
                fsync_fd(fd)
        except OSError as exc:
            raise StorageWriteError(path, exc) from exc
        finally:
            if not kept:
                os.close(fd)
    else:
        changes.files.append(path)
    changes.entry(path.parent)


def temp_path(path: Path) -> Path:
    """A fresh temporary sibling of ``path``, renamed over it once written."""
    return path.with_name(f"{RESERVED_PREFIX}{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def holds_durable_content(path: Path) -> bool:
    """Whether a file renamed over ``path`` must be fsynced first, so that a power cut
    cannot publish the new name without its bytes and take the old content with it.

    Yes if ``path`` exists, unless no version of it is on the disk: this process made
    it in the flush mode where there was none, its flusher has not flushed it yet, and
    it is still that file (the same inode, unchanged since: one another process put
    there is not, even within the same tick of the clock). Then there is nothing on the
    disk to lose, and the flush that was due for it takes the new file instead. A thread
    created, then named a moment later, is written once to the disk, not twice.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    return FLUSHER.fresh_file(path) != (st.st_dev, st.st_ino, st.st_ctime_ns)


def write_temp(
    path: Path, data: bytes, *, opened: Callable[[int], object] | None = None
) -> tuple[int, Path]:
    """A new temporary sibling of ``path`` holding ``data``, still open (not fsynced):
    its descriptor and its path, for a caller that fsyncs and renames it later (a group
    commit, see :meth:`filelayer._io.commit.SyncGroup.replace_later`). ``opened`` is
    given the descriptor once the file is made, before anything is written to it."""
    tmp = temp_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as exc:
        raise StorageWriteError(path, exc) from exc
    try:
        if opened is not None:
            opened(fd)
        _write_all(fd, data)
    except OSError as exc:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StorageWriteError(path, exc) from exc
    return fd, tmp


class AsideFile:
    """A new version of ``path`` written and fsynced beside it before the lock of its
    writers is taken, then finished under that lock and renamed over it (a journal's
    compaction): a writer waits for the rename, not for the whole file to be written.

    Named by :func:`temp_path`, as every temporary file is: what a crash leaves,
    ``verify --repair`` removes and git ignores. Its directory may be renamed aside and
    removed meanwhile (a deletion of its thread): the writes go on to the open file,
    which :meth:`replace` then finds gone."""

    __slots__ = ("fd", "path", "tmp")

    def __init__(self, path: Path, data: bytes) -> None:
        """Write ``data`` aside and fsync it. ``StorageWriteError`` if it cannot be (its
        directory gone among the causes), nothing left behind."""
        self.path = path
        self.fd, self.tmp = write_temp(path, data)
        try:
            fsync_fd(self.fd)
        except OSError as exc:
            self.discard()
            raise StorageWriteError(path, exc) from exc

    def replace(self, tail: bytes) -> bool:
        """Under the writers' lock: append ``tail`` (the lines they appended to ``path``
        since it was read), fsynced before the rename if there are any, rename the file
        over ``path`` and fsync the directory, all before the lock is released: a line a
        writer appends to the new file once it is released, and is told is durable,
        must not be lost with a rename that was not. ``False``, and ``path`` untouched,
        if the file written aside is gone (a repair removed it, or its directory went)."""
        fd, self.fd = self.fd, -1
        try:
            try:
                if tail:
                    _write_all(fd, tail)
                    fsync_fd(fd)
            finally:
                os.close(fd)
            os.replace(self.tmp, self.path)
        except FileNotFoundError:
            self.discard()
            return False
        except OSError as exc:
            self.discard()
            raise StorageWriteError(self.path, exc) from exc
        FLUSHER.mark(self.path, fresh=False)
        try:
            fsync_dir(self.path.parent)
        except OSError as exc:
            raise StorageWriteError(self.path.parent, exc) from exc
        return True

    def discard(self) -> None:
        """Remove the file written aside (it was not renamed)."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            self.tmp.unlink()


def remove_tree(path: Path, *, rounds: int = 3) -> None:
    """``rm -rf path``, errors ignored, again while it is still there (a few times at
    most): a file created in it while it was being removed (by a process whose path to
    it was resolved before it was renamed aside) makes the first removal of the
    directory itself fail."""
    for _ in range(rounds):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            return


FileKey = tuple[int, int, int, int, int]
"""A file's device, inode, size, modification and change times: another file renamed
over it (a send of the same element by another process, say) has another key."""


def file_key(st: os.stat_result) -> FileKey:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def atomic_write(
    path: Path, data: bytes, *, durable: bool = True, changes: Changes | None = None
) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file.

    ``durable``: the new file is on the disk when this returns (its directory
    included). With ``changes`` the call's mode decides, and the directory is left to
    ``changes`` (one fsync for all the call's names). Even when not durable, a file
    that replaces another is fsynced before the rename: otherwise a power cut could
    publish the new name before its bytes and lose the old content with it (see
    :func:`holds_durable_content` for the one exception).
    """
    group = None
    if changes is not None:
        durable = changes.durable
        group = changes.group
    tmp = temp_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        fresh = kept = False
        try:
            _write_all(fd, data)
            if group is not None and not os.path.lexists(path):
                # A new file, in a group commit: nothing on the disk to lose, so it is
                # published at once and fsynced with the group, before the call is
                # acknowledged (a power cut before that may leave it empty, as the
                # flush mode may: an unacknowledged call).
                os.replace(tmp, path)
                fresh = True
                kept = group.keep_fd(fd, path)
            elif not durable:
                # A file with no version on the disk is replaced without an fsync, at
                # once and marked so, before the flusher can take it (and make it
                # durable, which would call for an fsync first).
                with FLUSHER.swap_guard:
                    fresh = not holds_durable_content(path)
                    if fresh:
                        os.replace(tmp, path)
                        FLUSHER.mark(path, fresh=True)
            if not fresh:
                fsync_fd(fd)
        finally:
            if not kept:
                os.close(fd)
        if not fresh:
            os.replace(tmp, path)
            FLUSHER.mark(path, fresh=False)
        if changes is not None:
            changes.wrote(path)
            changes.entry(path.parent)
        elif durable:
            fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StorageWriteError(path, exc) from exc


def append(
    path: Path,
    data: bytes,
    *,
    durable: bool = False,
    changes: Changes | None = None,
    sync: bool = False,
) -> None:
    """Append ``data`` (whole lines) to ``path``, creating it if needed.

    The caller holds the lock that serialises writers of this file. On failure the file
    is truncated back to its previous length, so a full disk never leaves half a record.
    ``durable``: the data is on the disk when this returns, and so is the file's name
    if the file was new, or empty, or not yet appended to durably by this process (its
    name may not have reached the disk yet: the call that made it may have died before
    it fsynced its directory). With ``changes`` the call's mode decides, and the name of
    a new or empty file is left to ``changes`` (the caller knows which other names it
    must make durable: see ``JournalAppender``). ``sync``:
    the data is on the disk when this returns, whatever the mode (a record that must
    reach the disk before what the call does next).
    """
    with AppendFile(path) as opened:
        opened.write(data, durable=durable, changes=changes, sync=sync)


_NAMED: dict[tuple[int, int], None] = {}
"""The files (device, inode) whose names this process made durable by a durable append
without :class:`Changes` (``deleted.jsonl``, a ``.damaged`` file): the next ones need
no fsync of the directory. (Journals are the store's, see ``JournalAppender``.)"""
_NAMED_KEPT = 1024


class AppendFile:
    """A file opened to append whole lines, by a caller that holds its writers' lock:
    :func:`append` in steps. The caller learns what opening the file tells (that it
    exists, which file it is, how long it is) before it writes, and may say that the
    file ends with a complete line, which spares reading its last byte back.

    Opened per call and closed after it: a file kept open would go on receiving writes
    after a compaction, a repair or a ``git checkout`` replaced it.
    """

    __slots__ = ("ctime", "fd", "id", "kept", "path", "size")

    def __init__(self, path: Path, *, create: bool = True) -> None:
        """Open ``path``; without ``create``, ``FileNotFoundError`` if it is missing."""
        flags = os.O_RDWR | os.O_APPEND | getattr(os, "O_CLOEXEC", 0) | NOFOLLOW
        try:
            self.fd = os.open(path, flags | os.O_CREAT if create else flags, 0o644)
        except FileNotFoundError as exc:
            if not create:
                raise
            raise StorageWriteError(path, exc) from exc
        except OSError as exc:
            raise StorageWriteError(path, exc) from exc
        try:
            st = os.fstat(self.fd)
        except OSError as exc:  # pragma: no cover - fstat of an open file does not fail
            os.close(self.fd)
            raise StorageWriteError(path, exc) from exc
        self.path = path
        self.id = (st.st_dev, st.st_ino)
        self.size = st.st_size
        self.ctime: int | None = st.st_ctime_ns
        """The file's change time as this descriptor last found it: at its opening, then
        after each write through it (``None``: not known). What tells a reader that
        follows the file (:class:`~filelayer._io.tail.Tail`) an edit in place that kept
        its size from the file it read."""
        self.kept = False  # the descriptor was handed to a group commit, which closes it

    def write(
        self,
        data: bytes,
        *,
        durable: bool = False,
        changes: Changes | None = None,
        sync: bool = False,
        whole: bool = False,
    ) -> int:
        """Append ``data`` (whole lines) and return the offset where it starts; the
        durability as :func:`append` says.

        ``whole``: the caller knows the file ends with a complete line. Otherwise, if
        the last writer died mid-line, the torn fragment is first closed with a newline.
        On failure the file is truncated back to its previous length."""
        if changes is not None:
            durable = changes.durable
        fd, size, path = self.fd, self.size, self.path
        start = size
        if size and not whole and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
            start += 1
        group = changes.group if changes is not None else None
        try:
            _write_all(fd, data)
            self.ctime = None
            with contextlib.suppress(OSError):  # an fstat of an open file does not fail
                self.ctime = os.fstat(fd).st_ctime_ns  # before a group may close ``fd``
            if sync or (durable and group is None):
                fsync_fd(fd)
            elif group is not None:
                self.kept = group.keep(self)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise StorageWriteError(path, exc) from exc
        self.size = size + len(data)
        if changes is not None:
            changes.wrote(path)
            if not size:
                changes.entry(path.parent)
        elif durable and (not size or self.id not in _NAMED):
            # The file's name, too, the first time this process appends to it: another
            # call (a crashed process, a failed call) may have made it and never fsynced
            # its directory.
            try:
                fsync_dir(path.parent)
            except OSError as exc:
                raise StorageWriteError(path.parent, exc) from exc
            if len(_NAMED) >= _NAMED_KEPT:
                _NAMED.clear()
            _NAMED[self.id] = None
        return start

    def close(self) -> None:
        if not self.kept:
            os.close(self.fd)

    def __enter__(self) -> AppendFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pread_all(fd: int, size: int, offset: int) -> bytes:
    """``size`` bytes from ``offset`` (fewer at the end of the file)."""
    data = os.pread(fd, size, offset)
    if len(data) == size or not data:
        return data
    chunks = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, offset + got)
        if not more:
            break
        chunks.append(more)
        got += len(more)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:  # pragma: no cover - os.write raises instead on real systems
            raise OSError(errno.EIO, "short write")
        view = view[written:]


def read_bytes(path: Path) -> bytes | None:
    """The file's bytes, or ``None`` if it does not exist.

    With the system calls themselves: a buffered file object costs more than reading a
    manifest does, and every read of a thread reads a few small files."""
    flags = os.O_RDONLY | _BINARY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags | NOFOLLOW)  # not blocking: a FIFO must not hang a read
    except (FileNotFoundError, NotADirectoryError):  # a file where its directory goes:
        return None  # no such file either
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symbolic link: not the archive's file
            raise NotRegularFileError(path) from exc
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(path)
        size = st.st_size
        data = os.read(fd, size + 1 if size else _READ_CHUNK)  # +1: sees the end at once
        if len(data) == size or not data:
            return data
        # The file changed size since the fstat, or the read was short (a single read
        # stops at 2 GiB on Linux), or it is no regular file: read on to the end.
        chunks = [data]
        while True:
            more = os.read(fd, _READ_CHUNK)
            if not more:
                return b"".join(chunks)
            chunks.append(more)
    finally:
        os.close(fd)


_BINARY = getattr(os, "O_BINARY", 0)
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
"""Opens the file itself, never what a symbolic link in its place points to (``ELOOP``):
a branch can bring a link where a thread's journal or manifest belongs (git keeps
links), and the root is a boundary. Only the last part of a path: the root itself may
be a link (a person's choice), and the directories inside it are checked apart."""
_READ_CHUNK = 1 << 20


def split_lines(data: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines, and the torn tail (bytes after the last newline, maybe empty)."""
    end = data.rfind(b"\n")
    if end < 0:
        return [], data
    return data[:end].split(b"\n"), data[end + 1 :]
