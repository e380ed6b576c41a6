"""Where everything lives under the archive root (see docs/format.md).

Every path built from an id goes through :meth:`Layout.thread_dir` and friends, which
validate the id first: the root directory is a boundary that no id can cross.

The names of the layer's own transient files are defined here too, once: a temporary
file of an atomic write, a thread directory being deleted. They start with
:data:`RESERVED_PREFIX`, which no name taken from data can: ids, user files and element
files (``<element id><extension>``) begin with a letter or a digit. Lock files are kept
apart by their directory instead, ``locks/``, where nothing else is ever written.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import secrets
import zlib
from collections.abc import Callable
from pathlib import Path

from .._io import fs as _fs
from .._io.fs import RESERVED_PREFIX, TEMP_SUFFIX
from ..errors import ArchiveError, DamagedMarkerError, FormatVersionError, StorageWriteError
from . import codec as _codec
from . import gitattributes, users
from .ids import check_id
from .journal import JOURNAL_NAME
from .manifest import MANIFEST_NAME

FORMAT_VERSION = 1
FORMAT_FILE = "filelayer.json"
GITIGNORE_FILE = ".gitignore"
THREADS_DIR = "threads"
USERS_DIR = "users"
ELEMENTS_DIR = "elements"
INDEX_DIR = "index"
LOCKS_DIR = "locks"
DELETED_FILE = "deleted.jsonl"
SESSIONS_DIR = "sessions"
"""Live session state per thread, kept out of git (see filelayer.session)."""
INDEX_FILE = "current"
"""Names the index database in ``index/`` (see filelayer.index)."""
VIEWS_DIR = "views"
"""The view files of long threads, in ``index/`` (see filelayer.store.snapshots)."""
LOCK_STRIPES = 64

DEFAULT_ROOT = "./chats"
ROOT_ENV = "FILELAYER_ROOT"


def default_root() -> str:
    """``$FILELAYER_ROOT`` if set, else ``./chats``: the data layer and the CLI agree."""
    return os.environ.get(ROOT_ENV) or DEFAULT_ROOT


log = logging.getLogger("filelayer")

DELETING_SUFFIX = ".deleting" + TEMP_SUFFIX

_LEGACY_TEMP_RE = re.compile(r"\..+\.[0-9a-f]{8}(?:\.deleting)?\.tmp")
"""filelayer 0.1.0's names: ``.<target>.<8 hex>.tmp`` for a temporary file and
``.<thread id>.<8 hex>.deleting.tmp`` for a thread directory being deleted. They begin
with a dot, which no id nor element file can, so they are still recognised (and removed
by ``verify --repair``) in archives that version wrote."""


def deleting_path(directory: Path) -> Path:
    """Where a thread directory is renamed before it is removed, so that readers see
    the whole thread or none of it."""
    return directory.with_name(
        f"{RESERVED_PREFIX}{directory.name}.{secrets.token_hex(4)}{DELETING_SUFFIX}"
    )


def is_layer_leftover(name: str) -> bool:
    """Whether ``name`` is one of the layer's transient files or directories (this
    version's or 0.1.0's): never an element file, a thread or a user."""
    return name.startswith(RESERVED_PREFIX) or _LEGACY_TEMP_RE.fullmatch(name) is not None


GITIGNORE_BEGIN = "# >>> filelayer"
GITIGNORE_END = "# <<< filelayer"
GITIGNORE_BLOCK = f"""\
{GITIGNORE_BEGIN}: rewritten when the archive is opened; add your own rules above it.
# It ignores only filelayer's own files: the derived index, lock files, the live
# sessions Chainlit saves at each disconnect (local state, see docs/format.md), and
# temporary files ("{RESERVED_PREFIX}*", and ".*{TEMP_SUFFIX}" left by filelayer 0.1.0). Element
# files are named <element id><extension>, never start with "." and are never ignored,
# whatever other rules say: this block stays last, so its rules win.
/{INDEX_DIR}/
/{LOCKS_DIR}/
/{SESSIONS_DIR}/
!/{THREADS_DIR}/*/{ELEMENTS_DIR}/*
{RESERVED_PREFIX}*
.*{TEMP_SUFFIX}
{GITIGNORE_END}
"""
"""The block of ``.gitignore`` that filelayer owns (see :func:`upgrade_gitignore`)."""

GITIGNORE_0_1_0 = """\
# Written by filelayer. Derived files: `filelayer reindex` rebuilds them.
/index/
/locks/
*.tmp
*.lock
"""
"""The whole ``.gitignore`` filelayer 0.1.0 wrote: its ``*.tmp`` and ``*.lock`` also
hid element files (an upload named ``Cargo.lock``) from git."""


def upgrade_gitignore(text: str | None) -> str:
    """The ``.gitignore`` an archive should have, given the one it has (``None``: none).

    Filelayer owns one block, between ``# >>> filelayer`` and ``# <<< filelayer``, and
    keeps it at the end of the file, where its rules come last and win (in particular,
    element files are re-included even if a rule above ignores ``*.lock``). Every other
    line is the user's and is kept, in order. The lines filelayer 0.1.0 wrote (the whole
    file, or the same five lines inside a file someone added to) are replaced by the
    block; any file without a block gets one appended.
    """
    if text is None:
        return GITIGNORE_BLOCK
    lines = text.replace("\r\n", "\n").split("\n")
    old = GITIGNORE_0_1_0.rstrip("\n").split("\n")
    if [line.rstrip() for line in lines if line.strip()] == old:
        return GITIGNORE_BLOCK
    kept: list[str] = []
    for line in lines:
        kept.append(line)
        if line.rstrip() == GITIGNORE_END:  # drop the block, back to its last opening
            begins = [i for i, k in enumerate(kept) if k.startswith(GITIGNORE_BEGIN)]
            if begins:
                start = begins[-1]
                if start and not kept[start - 1].strip():
                    start -= 1  # the blank line that set the block apart
                del kept[start:]
    for i in range(len(kept) - len(old) + 1):
        if [k.rstrip() for k in kept[i : i + len(old)]] == old:
            del kept[i : i + len(old)]
            break
    user = "\n".join(kept).rstrip("\n")
    return f"{user}\n\n{GITIGNORE_BLOCK}" if user else GITIGNORE_BLOCK


_PATH_CACHE = 4096


class Layout:
    """Paths inside one archive root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.threads = root / THREADS_DIR
        self.users = root / USERS_DIR
        self.index_dir = root / INDEX_DIR
        self.locks = root / LOCKS_DIR
        self.format_file = root / FORMAT_FILE
        self.deleted_file = root / DELETED_FILE
        self.index_file = self.index_dir / INDEX_FILE
        self.index_lock = self.locks / "index.lock"
        self.users_lock = self.locks / "users.lock"
        self.deleted_lock = self.locks / "deleted.lock"
        # Held shared by maintenance while it runs (not a lock of any file: an announcement).
        self.maintenance_lock = self.locks / "maintenance.lock"
        self._stripe_locks = [self.locks / f"thread-{n:02d}.lock" for n in range(LOCK_STRIPES)]
        # Every write builds these paths two or three times; pathlib's joins cost more
        # than the write's own system calls, so they are kept for recent threads.
        self._cached_paths = functools.lru_cache(maxsize=_PATH_CACHE)(self._make_paths)
        self._case_blind: bool | None = None

    def case_blind(self) -> bool:
        """Whether the file system of ``threads/`` ignores letter case (macOS's and
        Windows' by default): there ``threads/T1`` is ``threads/t1``, so a write naming
        one thread may reach the files of another (docs/format.md, "Ids"). Asked once
        ``threads/`` exists: whether ``THREADS`` names it too."""
        known = self._case_blind
        if known is None:
            if not os.path.isdir(self.threads):
                return False
            known = self._case_blind = os.path.isdir(self.root / THREADS_DIR.upper())
        return known

    def _paths(self, thread_id: str) -> tuple[Path, Path, Path]:
        if type(thread_id) is not str:  # a dict or a list is no key of the cache
            check_id("thread", thread_id)
        return self._cached_paths(thread_id)

    def _make_paths(self, thread_id: str) -> tuple[Path, Path, Path]:
        directory = self.threads / check_id("thread", thread_id)
        return directory, directory / MANIFEST_NAME, directory / JOURNAL_NAME

    def thread_dir(self, thread_id: str) -> Path:
        return self._paths(thread_id)[0]

    def manifest(self, thread_id: str) -> Path:
        return self._paths(thread_id)[1]

    def journal(self, thread_id: str) -> Path:
        return self._paths(thread_id)[2]

    def thread_view(self, thread_id: str) -> Path:
        """The thread's view kept for fast first reads (derived, see
        :mod:`filelayer.store.snapshots`)."""
        return self.index_dir / VIEWS_DIR / f"{check_id('thread', thread_id)}.json"

    def elements_dir(self, thread_id: str) -> Path:
        return self.thread_dir(thread_id) / ELEMENTS_DIR

    def element_file(self, thread_id: str, relative: str) -> Path | None:
        """The element file a journal record names, or ``None`` if the name would
        leave the thread's element directory (a hand-edited or hostile record)."""
        base = self.elements_dir(thread_id)
        parts = relative.split("/")
        if len(parts) != 2 or parts[0] != ELEMENTS_DIR or parts[1] in ("", ".", ".."):
            return None
        if "\\" in parts[1] or "\x00" in parts[1] or parts[1].startswith("."):
            return None
        return base / parts[1]

    def user_file(self, identifier: str) -> Path:
        return self.users / users.file_name(identifier)

    def thread_lock(self, thread_id: str) -> Path:
        # Striped: a bounded number of lock files, none inside a directory that
        # delete_thread removes while another process may be waiting on it.
        return self._stripe_locks[zlib.crc32(thread_id.encode("utf-8")) % LOCK_STRIPES]

    @property
    def gitignore(self) -> Path:
        return self.root / GITIGNORE_FILE

    def initialise(self, *, create: bool, upgrade: bool = True) -> bool:
        """Check the format marker; with ``create``, make a new archive if needed; with
        ``upgrade``, bring the layer's own files of an existing one up to date.
        ``True`` if a new archive was made (the root had none).

        A new archive is durable in every mode before this returns: its directories,
        its marker, and its root's own name in its parent (and every directory made
        on the way there)."""
        changes = _fs.Changes(durable=True)
        above = _fs.Changes(durable=True)  # the root's name, and directories made above it
        if not self.root.exists():
            if not create:
                raise ArchiveError(
                    f"no archive at {self.root}: the directory does not exist. "
                    "Pass the root your app uses (--root or FILELAYER_ROOT)."
                )
            try:
                _fs.make_dirs(self.root, above)
            except OSError as exc:
                raise ArchiveError(f"cannot create the archive root {self.root}: {exc}") from exc
        elif not self.root.is_dir():
            raise ArchiveError(f"{self.root} is not a directory; pick another archive root.")
        self.refuse_links()
        marker = _fs.read_bytes(self.format_file)
        if marker is None:
            if not create and not self._unfinished_creation():
                raise ArchiveError(
                    f"{self.root} is not a filelayer archive (no {FORMAT_FILE}). "
                    "Check the path, or let the data layer create a new archive there."
                )
            if create:
                self._create(changes)
                # The root may be new too (made here, or by the user just before).
                above.entry(self.root.parent)
                _sync_outside(above)
            return create
        try:
            doc = _codec.decode(marker)
        except _codec.DecodeError as exc:
            raise DamagedMarkerError(
                self.format_file, f"not valid JSON: {exc}", FORMAT_VERSION
            ) from exc
        found = self._marked_version(doc)
        if found != FORMAT_VERSION:
            raise FormatVersionError(self.root, found, FORMAT_VERSION)
        if create:
            try:
                for d in (self.threads, self.users, self.index_dir, self.locks):
                    _fs.make_dirs(d, changes)
                changes.done()
            except OSError as exc:
                raise ArchiveError(f"cannot open the archive in {self.root}: {exc}") from exc
        if upgrade:
            self.upgrade()
        return False

    def _marked_version(self, doc: object) -> int:
        """The format version the marker names, or :class:`DamagedMarkerError` when it
        names none: a version is a whole number from 1, and not a bool (``True == 1``),
        a float or a string; a marker that is no object is damaged, not newer."""

        def damaged(detail: str) -> DamagedMarkerError:
            return DamagedMarkerError(self.format_file, detail, FORMAT_VERSION)

        if not isinstance(doc, dict):
            raise damaged("not a JSON object")
        if "format" not in doc:
            raise damaged("no format version")
        found = doc["format"]
        if isinstance(found, bool) or not isinstance(found, int) or found < 1:
            raise damaged(f"format {json.dumps(found)[:40]} is no version")
        return found

    def refuse_links(self) -> None:
        """:class:`ArchiveError` if a directory the layer writes in, or ``deleted.jsonl``,
        is a symbolic link. The root is a boundary: through such a link every write
        would land outside it (``threads/`` may come from a branch, git keeps links;
        ``index/``, ``locks/`` and ``sessions/`` are kept out of git, so a hand placed
        it). Refused before anything is written, rather than removed: the link may be
        someone's setup, and what it points to is not the layer's."""
        derived = {self.index_dir: "derived files", self.locks: "lock files"}
        derived[self.root / SESSIONS_DIR] = "local session state"
        for path in (*derived, self.threads, self.users, self.deleted_file):
            if not path.is_symlink():
                continue
            if path in derived:
                todo = (
                    f"it holds only {derived[path]}, which the layer makes again: remove "
                    "the link and open the archive again"
                )
            else:
                todo = (
                    "remove the link and move what it points to in its place, if it is "
                    "this archive's"
                )
            raise ArchiveError(
                f"{path} is a symbolic link; filelayer follows no link out of the archive "
                f"root: {todo}."
            )

    def upgrade(self) -> list[str]:
        """Bring the files the layer owns in an existing archive up to date: the
        ``.gitignore`` block (see :func:`upgrade_gitignore`), which earlier versions
        wrote only when they created the archive, and the ``.gitattributes`` block (see
        :mod:`filelayer.gitattributes`), which they did not write. Returns the names
        rewritten, and says so in the log. A failure (a read-only archive) is logged,
        never raised: the archive is as readable as before."""
        done = []
        for name, rule in (
            (GITIGNORE_FILE, upgrade_gitignore),
            (gitattributes.GITATTRIBUTES_FILE, gitattributes.upgrade),
        ):
            if self._upgrade_file(self.root / name, rule):
                done.append(name)
        return done

    def _upgrade_file(self, path: Path, rule: Callable[[str | None], str]) -> bool:
        try:
            raw = _fs.read_bytes(path)
            text = None if raw is None else raw.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("filelayer: cannot read %s (%s); it was left as it is", path, exc)
            return False
        wanted = rule(text)
        if text is not None and wanted == text.replace("\r\n", "\n"):
            return False
        try:
            _fs.atomic_write(path, wanted.encode("utf-8"))
        except StorageWriteError as exc:
            log.warning(
                "filelayer: %s is out of date but could not be rewritten: %s", path, exc.cause
            )
            return False
        what = "written (it was missing)" if text is None else "updated to the current rules"
        log.info("filelayer: %s %s; see docs/format.md", path, what)
        return True

    def _unfinished_creation(self) -> bool:
        """Whether the root, which has no format marker, holds nothing but what
        :meth:`_create` makes before the marker: a creation cut short by a crash (or an
        empty directory). Such a root reads as an empty archive; the next writer finishes
        it. Anything else in it means the path is not an archive."""
        skeleton = {self.threads, self.users, self.index_dir, self.locks}
        for entry in self.root.iterdir():
            if entry.name in (GITIGNORE_FILE, gitattributes.GITATTRIBUTES_FILE) or (
                is_layer_leftover(entry.name)
            ):
                continue
            if entry not in skeleton or not entry.is_dir():
                return False
            if entry in (self.locks, self.index_dir):
                continue  # lock files and the derived index: no data of their own
            if any(entry.iterdir()):
                return False
        return True

    @property
    def thread_locks(self) -> list[Path]:
        """Every thread's lock file (the stripes), in the order to take them all: held
        at once, they wait for every write to a thread under way."""
        return list(self._stripe_locks)

    @property
    def lock_files(self) -> list[Path]:
        """Every lock file the layer uses, in the order its writes take them (the
        threads' stripes, then the ones taken under a thread's: the users', the
        tombstones', the index's switch), so that taking them all in this order waits
        for a write under way instead of holding what it waits for."""
        return [*self._stripe_locks, self.users_lock, self.deleted_lock, self.index_lock]

    def _create(self, changes: _fs.Changes) -> None:
        try:
            for d in (self.threads, self.users, self.index_dir, self.locks):
                _fs.make_dirs(d, changes)
            # Every lock file now, under the one fsync of locks/ the new archive needs:
            # a lock file made later has its name fsynced on its own (see _locks).
            for path in self.lock_files:
                os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o644))
            changes.entry(self.locks)
            attributes = self.root / gitattributes.GITATTRIBUTES_FILE
            if not self.gitignore.exists() and not attributes.exists():
                _fs.atomic_write(self.gitignore, GITIGNORE_BLOCK.encode("utf-8"), changes=changes)
                _fs.atomic_write(attributes, gitattributes.BLOCK.encode("utf-8"), changes=changes)
            else:  # the directory held git files of its own: add the layer's blocks
                self.upgrade()
            if not self.format_file.exists():
                _fs.atomic_write(
                    self.format_file,
                    _codec.encode_document({"format": FORMAT_VERSION, "generator": "filelayer"}),
                    changes=changes,
                )
            changes.done()
        except OSError as exc:
            raise ArchiveError(f"cannot create an archive in {self.root}: {exc}") from exc


def _sync_outside(changes: _fs.Changes) -> None:
    """fsync the directories above the root as far as we may: a parent we cannot open
    (no read permission) cannot be flushed by us."""
    for directory in sorted(changes.dirs, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            _fs.fsync_dir(directory)
