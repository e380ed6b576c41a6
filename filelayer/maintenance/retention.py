"""Retention and erasure: removing old threads, and everything a user left.

:func:`prune` deletes the threads whose last activity is older than a date, the way the
app deletes one (a tombstone in ``deleted.jsonl``, the directory removed), so a write
that arrives late for one of them is ignored rather than bringing it back.

:func:`erase_user` is the right to erasure. It deletes every thread the user authored,
then the user's record, and leaves a *user tombstone* in ``deleted.jsonl``::

    {"deletedAt": "…", "erasedUser": "<user id>", "identifierSha256": "<64 hex>"}

The tombstone holds no identifier: only the user's id (derived from the identifier, or
random for a user made before ids were derived) and a SHA-256 of the identifier, which
is what lets ``filelayer copy`` refuse to bring the user's record back from a database
copied before the erasure (its rows carry the same identifier) and lets
``verify`` recognise a user file that a merge from an older clone brought back. (Anyone
who guesses the identifier can confirm from the hash that it was erased; nobody can read
it from the archive.) The thread tombstones are the ordinary ones, so the index, ``copy``
and a union merge of ``deleted.jsonl`` all keep those threads deleted.

Erasure is judged by what remains under the root, so the derived index is rebuilt at
once (:meth:`ArchiveStore.reindex`): a new SQLite database is built aside from the
thread directories and switched in, and the old database with its WAL and FTS pages is
removed, rather than waiting for SQLite to reuse free pages that still hold the texts.

Both work while the app runs: every deletion takes the thread's locks like the app's
own ``delete_thread``, and the rebuild is the live one of ``filelayer reindex``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import fs as _fs
from .._io import locks as _locks
from .._time import instant_key, latest, now_iso, time_key
from ..errors import InvalidValueError, NotRegularFileError
from ..format import codec as _codec
from ..format import users
from ..format.ids import check_id
from ..format.layout import DELETING_SUFFIX, THREADS_DIR, USERS_DIR, is_layer_leftover
from ..format.manifest import MANIFEST_NAME, UNKNOWN_AUTHOR
from ..store.archive import ArchiveStore
from ..store.authors import manifest_lost
from .announce import maintaining

ERASED_USER_KEY = "erasedUser"
IDENTIFIER_HASH_KEY = "identifierSha256"
_PASSES = 5
"""How many times erasure looks again for threads of the user (a live app may create
one while the first pass runs); a user who goes on chatting meanwhile is reported."""


def identifier_hash(identifier: str) -> str:
    """The SHA-256 of a user identifier, as the user tombstone keeps it."""
    return hashlib.sha256(identifier.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Candidate:
    """A thread a retention command selected, with what deleting it removes."""

    id: str
    name: str
    author: str
    activity: str
    steps: int
    elements: int
    bytes: int


@dataclass
class PruneReport:
    """What :func:`prune` selected, and whether it deleted it."""

    before: str
    user: str | None
    acted: bool
    threads: list[Candidate] = field(default_factory=list)
    """What was deleted (with ``acted``), or would be."""
    kept: list[Candidate] = field(default_factory=list)
    """Selected, but written to before its turn came (a message arrived meanwhile):
    no longer old, so not deleted."""

    @property
    def steps(self) -> int:
        return sum(c.steps for c in self.threads)

    @property
    def elements(self) -> int:
        return sum(c.elements for c in self.threads)

    @property
    def bytes(self) -> int:
        return sum(c.bytes for c in self.threads)


@dataclass
class ErasureReport:
    """What :func:`erase_user` removed, and the paths git history still holds."""

    identifier: str
    user_id: str | None
    threads: list[Candidate] = field(default_factory=list)
    user_file: str | None = None
    other_records: list[str] = field(default_factory=list)
    """Other files of ``users/`` that held the user's record (renamed by a hand or a
    merge, or a temporary file a crashed write left), removed too."""
    still_writing: list[str] = field(default_factory=list)
    """Threads of the user found again after the last pass (a user still chatting)."""
    unattributed: list[str] = field(default_factory=list)
    """Threads whose author nothing names: the manifest was lost (or ``verify --repair``
    gave it the unknown author) and the index does not remember the author either.
    They may be the user's: an erasure that found any is not known to be complete, and
    a person has to look at them (``filelayer show``) and delete what is the user's."""
    earlier: list[str] = field(default_factory=list)
    """Paths of the user's, relative to the root, that only git history holds: threads
    deleted before the erasure (by the user, ``prune``, an earlier erasure), and user
    records (see :func:`in_history`)."""

    def history_paths(self) -> list[str]:
        """Every path, relative to the root, that git history may still hold: the
        threads first, then the user records."""
        paths = {f"{THREADS_DIR}/{c.id}/" for c in self.threads} | set(self.earlier)
        paths.update(self.other_records)
        if self.user_file:
            paths.add(self.user_file)
        threads = sorted(p for p in paths if p.startswith(f"{THREADS_DIR}/"))
        return threads + sorted(paths.difference(threads))


def _size(directory: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(directory):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _candidate(store: ArchiveStore, thread_id: str) -> Candidate | None:
    summary = store.summarise(thread_id)
    if summary is None:
        return None
    state = store.read_state(thread_id)
    return Candidate(
        id=thread_id,
        name=summary.name or "",
        author=summary.user_identifier or "",
        activity=summary.activity,
        steps=len(state.steps),
        elements=len(state.live_elements()),
        bytes=_size(store.layout.thread_dir(thread_id)),
    )


def _threads(store: ArchiveStore) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every live thread with its manifest, read from the directories (not the index,
    which may lag behind a crash or a checkout)."""
    for thread_id in store.thread_ids():
        doc = store.read_manifest(thread_id)
        if doc is not None:
            yield thread_id, doc


_DAY_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_MINUTE_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?:Z|[+-][0-9]{2}:[0-9]{2})?"
)


def _cutoff(before: str) -> str:
    """``before`` (a ``YYYY-MM-DD`` day, midnight UTC, or an ISO time) as a
    :func:`time_key`, or a ``ValueError``: compared as text, a string that is neither
    (full-width digits, a letter O, a 13th month) sorts after or before every real time
    and would select every thread, or none."""
    if _DAY_RE.fullmatch(before):
        before += "T00:00:00"
    elif _MINUTE_RE.fullmatch(before):  # an ISO time may leave out its seconds
        before = before[:16] + ":00" + before[16:]
    key = instant_key(before)
    if key is None:  # also a 13th month, a 30th of February
        raise InvalidValueError(
            "before", f"before must be a YYYY-MM-DD date or an ISO time, not {before!r}"
        )
    return key


def _before(activity: str, cutoff: str) -> bool:
    """Whether ``activity`` names an instant before ``cutoff`` (a key). A time in
    another form than an ISO time with seconds (a day alone, words: a hand edit,
    another program) names none: compared as text it could sort before a cutoff it is
    not before, and a deletion is not undone, so it never counts as old."""
    key = instant_key(activity)
    return key is not None and key < cutoff


def select_old(store: ArchiveStore, before: str, user: str | None = None) -> list[Candidate]:
    """Threads whose activity (the later of creation and the last message, the order of
    the sidebar) is before ``before`` (a ``YYYY-MM-DD`` date, meaning midnight UTC, or
    an ISO time; anything else is a ``ValueError``), optionally of one user
    (identifier). A thread continued yesterday is not old, whenever it began."""
    cutoff = _cutoff(before)
    selected = []
    for thread_id, doc in _threads(store):
        if user is not None and doc.get("userIdentifier") != user:
            continue
        found = _candidate(store, thread_id)
        if found is not None and _before(found.activity, cutoff):
            selected.append(found)
    selected.sort(key=lambda c: (c.activity, c.id))
    return selected


Progress = Callable[[int, int], None]


def prune(
    store: ArchiveStore,
    before: str,
    user: str | None = None,
    *,
    act: bool = False,
    progress: Progress | None = None,
) -> PruneReport:
    """Select the threads :func:`select_old` names and, with ``act``, delete them
    (announced as maintenance meanwhile: see :mod:`.announce`). Each one's activity is
    checked again under its write locks just before it is deleted: one that the app
    wrote to since the selection is kept (``kept``), not reported as deleted."""
    report = PruneReport(before=before, user=user, acted=act)
    selected = select_old(store, before, user)
    if not act:
        report.threads = selected
        return report
    cutoff = _cutoff(before)

    def still_old(thread_id: str) -> bool:
        # Under the thread's locks: what the app wrote since the selection counts.
        summary = store.summarise(thread_id)
        return summary is not None and _before(summary.activity, cutoff)

    with maintaining(store.layout):
        for n, candidate in enumerate(selected, start=1):
            if store.delete_thread(
                candidate.id, only_if=functools.partial(still_old, candidate.id)
            ):
                report.threads.append(candidate)
            elif store.read_manifest(candidate.id) is not None:
                report.kept.append(candidate)
            if progress is not None:
                progress(n, len(selected))
    return report


def _authored(store: ArchiveStore, identifier: str, user_id: str | None) -> list[str]:
    """The user's threads. Those whose manifest cannot be read (a power cut, damage) are
    the user's if the index still names them as the author: the index keeps the author
    of such a thread (see ``heal.summary_keeping_known``), and its conversation is
    theirs all the same."""

    def theirs(author_id: object, author: object) -> bool:
        return author == identifier or (user_id is not None and author_id == user_id)

    found = []
    for thread_id, doc in _threads(store):
        if theirs(doc.get("userId"), doc.get("userIdentifier")):
            found.append(thread_id)
        elif manifest_lost(store.layout, thread_id):
            known = store.index.threads.get(thread_id)
            if known is not None and theirs(known.user_id, known.user_identifier):
                found.append(thread_id)
    return found


def _unattributed(store: ArchiveStore) -> list[str]:
    """The live threads whose author neither the manifest nor the index names (see
    :attr:`ErasureReport.unattributed`)."""
    found = []
    for thread_id in store.thread_ids():
        if store.author_of(thread_id) != "" or store.is_deleted(thread_id):
            continue
        known = store.index.threads.get(thread_id)
        if known is None or not (
            known.user_identifier or known.user_id not in (None, "", UNKNOWN_AUTHOR)
        ):
            found.append(thread_id)
    return sorted(found)


def erase_user(
    store: ArchiveStore,
    identifier: str,
    *,
    threads: Sequence[str] = (),
    progress: Progress | None = None,
) -> ErasureReport:
    """Delete every thread ``identifier`` authored and the user's record, leave the
    tombstones, and rebuild the index so that no file under the root holds their data.

    A user without a record (threads copied in without one, or a second run after an
    interrupted erasure) is erased all the same: whatever is found is removed. An
    identifier with neither a record nor a thread changes nothing (no tombstone). The
    erasure announces itself as maintenance while it runs (see :mod:`.announce`).

    ``threads``: threads to erase as the user's besides those found, typically some of
    an earlier report's :attr:`~ErasureReport.unattributed` that a person recognised.
    Each must be a thread of the archive whose author is lost, the user, or nobody (an
    app without login): another user's is an :class:`~filelayer.errors.InvalidValueError`,
    raised before anything is erased, as is an id of no thread."""
    given = [check_id("thread", t) for t in threads]
    if given:
        user = store.get_user(identifier)
        mine = set(_authored(store, identifier, str(user["id"]) if user else None))
        allowed = mine | set(_unattributed(store))
    for thread_id in given:
        if store.read_manifest(thread_id) is None and not store.layout.journal(thread_id).exists():
            raise InvalidValueError("thread", f"--thread {thread_id}: no such thread")
        # A mistyped id must not erase another user's conversation: the thread is the
        # user's, or its author is lost (neither manifest nor index names one), or it
        # has none (an app without login).
        if thread_id not in allowed and store.author_of(thread_id) is not None:
            raise InvalidValueError(
                "thread",
                f"--thread {thread_id}: another user's thread (only the user's own, or one"
                " whose author is lost, is erased as theirs); nothing was erased",
            )
    with maintaining(store.layout):
        report = _erase_user(store, identifier, progress, given)
    report.earlier = in_history(store.root, identifier, report.user_id)
    return report


def _erase_user(
    store: ArchiveStore, identifier: str, progress: Progress | None, given: list[str]
) -> ErasureReport:
    user = store.get_user(identifier)
    user_id = str(user["id"]) if user is not None else None
    report = ErasureReport(identifier=identifier, user_id=user_id)
    seen: set[str] = set()
    for _ in range(_PASSES):
        authored = given + _authored(store, identifier, user_id)
        found = [t for t in dict.fromkeys(authored) if t not in seen]
        if not found:
            break
        for n, thread_id in enumerate(found, start=1):
            seen.add(thread_id)
            candidate = _candidate(store, thread_id)
            if store.delete_thread(thread_id) and candidate is not None:
                report.threads.append(candidate)
            if progress is not None:
                progress(n, len(found))
    else:
        report.still_writing = _authored(store, identifier, user_id)
    report.unattributed = _unattributed(store)
    path = store.layout.user_file(identifier)
    copies = _copies_of_record(store, identifier)
    if user is None and not seen and not report.still_writing and not path.exists() and not copies:
        # No record and no thread: nothing to erase, so nothing changes (a tombstone
        # would mark someone who never was here as erased). A re-run after an erasure
        # cut short before its rebuild still rebuilds the index.
        if any(e.identifier_sha256 == identifier_hash(identifier) for e in erased_users(store)):
            _finish_deletions(store)  # the user's threads a crash left, readers skip
            store.reindex()
        return report
    _finish_deletions(store)
    _write_user_tombstone(store, identifier, user)
    with _locks.locked(store.layout.users_lock, store.lock_timeout):
        if path.exists():
            report.user_file = f"{USERS_DIR}/{path.name}"
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            else:
                _fs.fsync_dir(path.parent)
        removed = []
        for copy in _copies_of_record(store, identifier):  # again, under the lock
            with contextlib.suppress(FileNotFoundError):
                os.unlink(copy)
                removed.append(f"{USERS_DIR}/{copy.name}")
        if removed:
            _fs.fsync_dir(store.layout.users)
            report.other_records = sorted(removed)
    # The app of another process may have given the user a thread since the last pass.
    # With the record gone no write names the user any more (a thread's author is looked
    # up under its lock), so once the writes holding a thread's lock now are done, a
    # last look finds every such thread.
    with _locks.locked_all(store.layout.thread_locks, store.lock_timeout):
        looked = now_iso()
    for thread_id in _authored(store, identifier, user_id):
        doc = store.read_manifest(thread_id) or {}
        created = doc.get("createdAt")
        if isinstance(created, str) and (instant_key(created) or "") > time_key(looked):
            continue  # made by the user logged in again since: a new user's (the docs)
        candidate = _candidate(store, thread_id)
        if store.delete_thread(thread_id) and candidate is not None:
            report.threads.append(candidate)
    # The threads of a user who kept chatting went with them (a new user's stay theirs).
    report.still_writing = [t for t in report.still_writing if not store.is_deleted(t)]
    report.threads.sort(key=lambda c: (c.activity, c.id))
    # Nothing of the user may stay in the index's free pages, WAL or FTS tables.
    store.reindex()
    return report


def _finish_deletions(store: ArchiveStore) -> None:
    """Finish the thread deletions a crash cut short (this erasure's own, killed and
    run again, among them): a directory whose thread has a tombstone, and one renamed
    aside to be removed. Readers skip both, so no pass finds them as the user's, yet
    each holds a whole conversation under the root."""
    threads = store.layout.threads
    try:
        entries = list(os.scandir(threads))
    except (FileNotFoundError, NotADirectoryError):
        return
    aside = [
        e.path
        for e in entries
        if is_layer_leftover(e.name)
        and e.name.endswith(DELETING_SUFFIX)
        and e.is_dir(follow_symlinks=False)
    ]
    for path in aside:
        shutil.rmtree(path, ignore_errors=True)
    if aside:
        _fs.fsync_dir(threads)
    for thread_id in store.thread_ids():
        if store.is_deleted(thread_id):
            store.delete_thread(thread_id)  # under its locks, as the app deletes one


def _copies_of_record(store: ArchiveStore, identifier: str) -> list[Path]:
    """The files of ``users/`` besides the user's own that hold the user's record: a
    ``.json`` whose identifier is this one (renamed by a hand or a merge; ``verify``
    only says its name does not match), or a temporary file of the layer (a write cut
    short) that holds the identifier, whole or torn. Never a link (what it points to
    is not the archive's), never another user's record."""
    own = store.layout.user_file(identifier).name
    # The identifier as a record spells it, quotes included (``"bob"`` is not in
    # ``"bobby"``), raw or escaped, for a file cut short before it decodes.
    spelled = {_codec.encode_line(identifier).strip(), json.dumps(identifier).encode()}
    found = []
    try:
        entries = list(os.scandir(store.layout.users))
    except OSError:
        return []
    for entry in entries:
        if entry.name == own or not entry.is_file(follow_symlinks=False):
            continue
        leftover = is_layer_leftover(entry.name)
        if not leftover and not entry.name.endswith(".json"):
            continue
        try:
            data = _fs.read_bytes(Path(entry.path)) or b""
        except OSError:
            continue
        try:
            doc = _codec.decode(data)
        except _codec.DecodeError:
            doc = None
        torn = doc is None and leftover
        mine = isinstance(doc, dict) and doc.get("identifier") == identifier
        if mine or (
            torn and any(b'"identifier":' + s in data.replace(b'": ', b'":') for s in spelled)
        ):
            found.append(Path(entry.path))
    return sorted(found)


def _write_user_tombstone(
    store: ArchiveStore, identifier: str, user: dict[str, Any] | None
) -> None:
    """The user tombstone, dated no earlier than the record it erases: a record made
    while the clock ran ahead would otherwise count as made after its erasure."""
    deleted_at = now_iso()
    created = user.get("createdAt") if user is not None else None
    if isinstance(created, str) and instant_key(created) is not None:
        deleted_at = latest(deleted_at, created)
    user_id = str(user["id"]) if user is not None else None
    record: dict[str, Any] = {
        "deletedAt": deleted_at,
        ERASED_USER_KEY: user_id,
        IDENTIFIER_HASH_KEY: identifier_hash(identifier),
    }
    with _locks.locked(store.layout.deleted_lock, store.lock_timeout):
        _fs.append(store.layout.deleted_file, _codec.encode_line(record), durable=True)


@dataclass(frozen=True)
class ErasedUser:
    """A user tombstone: the erased user's id, the hash of their identifier, and when."""

    id: str | None
    identifier_sha256: str
    at: str


_erased_cache: dict[str, tuple[tuple[int, int, int], list[ErasedUser]]] = {}


def erased_users(store: ArchiveStore) -> list[ErasedUser]:
    """Every user tombstone in ``deleted.jsonl`` (thread tombstones are the store's).

    Read again only when the file changed: ``copy`` and ``verify`` ask once per user
    and per thread, and the file holds a line per deleted thread."""
    path = store.layout.deleted_file
    try:
        st = path.stat()
    except FileNotFoundError:
        return []
    key = (st.st_ino, st.st_size, st.st_mtime_ns)
    cached = _erased_cache.get(str(path))
    if cached is not None and cached[0] == key:
        return cached[1]
    found = []
    try:  # a FIFO, a directory in its place: nothing read (verify reports it)
        data = _fs.read_bytes(path) or b""
    except (NotRegularFileError, OSError):
        data = b""
    lines, _ = _fs.split_lines(data)
    marker = IDENTIFIER_HASH_KEY.encode("ascii")
    for line in lines:
        if marker not in line:
            continue  # a thread tombstone: not decoded at all
        with contextlib.suppress(*_codec.DecodeError):
            record = _codec.decode(line)
            if isinstance(record, dict) and isinstance(record.get(IDENTIFIER_HASH_KEY), str):
                user_id = record.get(ERASED_USER_KEY)
                found.append(
                    ErasedUser(
                        id=user_id if isinstance(user_id, str) else None,
                        identifier_sha256=record[IDENTIFIER_HASH_KEY],
                        at=str(record.get("deletedAt") or ""),
                    )
                )
    _erased_cache[str(path)] = (key, found)
    return found


def is_erased(
    store: ArchiveStore, user_id: object, identifier: object, created: object = None
) -> bool:
    """Whether a user record, or a thread of that user (its ``createdAt`` in
    ``created``), predates an erasure of that user here: it is what was erased, coming
    back from a copy or a merge. A user who logs in again after the erasure is new, and
    so are the threads they begin: neither is refused."""
    erased = erased_users(store)
    if not erased:
        return False
    digest = identifier_hash(identifier) if isinstance(identifier, str) else None
    # A creation that names no instant is not after the erasure: what was erased.
    when = instant_key(str(created or ""))
    return any(
        (e.id is not None and e.id == user_id) or e.identifier_sha256 == digest
        for e in erased
        if when is None or not e.at or when <= time_key(e.at)  # instants
    )


def git_prefix(root: Path) -> str | None:
    """The root's path inside its git work tree (``""`` at the top), ``None`` when the
    root is not in a git repository or git is not installed."""
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--show-prefix"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None
    # Only the new line git ends its answer with: a directory's name may begin or end
    # with a space, and the command must name that directory.
    return done.stdout.removesuffix("\n") if done.returncode == 0 else None


def in_history(root: Path, identifier: str, user_id: str | None = None) -> list[str]:
    """The paths, relative to ``root``, of every thread and user record of
    ``identifier`` that the history of the git repository holding ``root`` holds, on
    any branch or tag: every version of every thread manifest and user file in it is
    read, so a thread deleted long before the erasure is found as well as a live one.
    Empty when ``root`` is in no repository (or git is not installed)."""
    prefix = git_prefix(root)
    if prefix is None:
        return []
    # Every version of every file, as the commits that made it (the root commits and
    # each side of a merge included) name it: NUL-separated, so that a path holding a
    # newline comes whole (``rev-list --objects`` cuts it at the newline).
    # The user's configuration must not change what is listed: paths relative to a
    # subdirectory, merges as combined diffs, signatures printed before a commit's
    # changes (a key an older git does not know is ignored; ``-m`` is its default).
    listed = _git(
        root,
        [
            *("-c", "diff.relative=false", "-c", "log.diffMerges=separate"),
            *("-c", "log.showSignature=false"),
            *("log", "--all", "--root", "-m", "--raw", "-z", "--no-abbrev", "--no-renames"),
            *("--no-ext-diff", "--no-textconv", "--format=", "--diff-filter=d"),
        ],
    )
    if listed is None:
        return []
    threads_at, users_at = f"{prefix}{THREADS_DIR}/", f"{prefix}{USERS_DIR}/"
    # blob -> {(kind, path relative to the root)}: one blob may be at several paths
    wanted: dict[str, set[tuple[str, str]]] = {}
    fields = listed.decode("utf-8", "surrogateescape").split("\0")
    at = 0
    while at < len(fields) - 1:
        # ":<old mode> <new mode> <old blob> <new blob> <status>", then its path (taken
        # as a pair: a path that looks like a header is still a path)
        parts = fields[at].strip().split(" ")
        if not parts[0].startswith(":") or len(parts) != 5:
            at += 1
            continue
        blob, path = parts[3], fields[at + 1]
        at += 2
        if blob.strip("0") == "":
            continue
        if path.startswith(threads_at):
            thread_id, _, name = path[len(threads_at) :].partition("/")
            if name == MANIFEST_NAME:
                wanted.setdefault(blob, set()).add(("thread", f"{THREADS_DIR}/{thread_id}/"))
        elif path.startswith(users_at) and path.endswith(".json"):
            name = path[len(users_at) :]
            if "/" not in name:
                wanted.setdefault(blob, set()).add(("user", f"{USERS_DIR}/{name}"))
    if not wanted:
        return []
    batch = _git(root, ["cat-file", "--batch"], "".join(f"{b}\n" for b in wanted).encode())
    if batch is None:
        return []
    ids = {users.user_id(identifier)} | ({user_id} if user_id else set())
    found: set[str] = set()
    at = 0
    while at < len(batch):
        end = batch.index(b"\n", at)
        header = batch[at:end].split()
        at = end + 1
        if len(header) != 3:  # "<blob> missing"
            continue
        size = int(header[2])
        data, at = batch[at : at + size], at + size + 1
        if header[1] != b"blob":
            continue
        try:
            doc = _codec.decode(data)
        except _codec.DecodeError:
            continue
        if not isinstance(doc, dict):
            continue
        for kind, path in wanted.get(header[0].decode("ascii"), ()):
            if kind == "thread":
                mine = doc.get("userIdentifier") == identifier or doc.get("userId") in ids
            else:
                mine = doc.get("identifier") == identifier
            if mine:
                found.add(path)
    return sorted(found)


def _git(root: Path, args: list[str], given: bytes | None = None) -> bytes | None:
    """What ``git -C root ARGS`` prints, ``None`` when it fails or git is missing."""
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], input=given, capture_output=True, check=False
        )
    except OSError:
        return None
    return done.stdout if done.returncode == 0 else None


def history_command(report: ErasureReport, prefix: str) -> str:
    """The ``git filter-repo`` command that removes the erased paths from every commit
    (run from the top of the repository; the paths are relative to it)."""
    paths = report.history_paths()
    if not paths:
        return ""
    args = " \\\n    ".join(f"--path {_shell_quote(prefix + p)}" for p in paths)
    return f"git filter-repo --invert-paths \\\n    {args}"


def _shell_quote(text: str) -> str:
    """``text`` as one shell word. A name that git history holds may be anything a
    merge brought in: one with a control character is written in bash's ``$'…'``, each
    such character as the ``\\xNN`` escapes of its UTF-8 bytes, so that the command
    still names it exactly and no escape sequence reaches the terminal."""
    if text and all(ch.isalnum() or ch in "/._-" for ch in text):
        return text
    if text.isprintable():
        return "'" + text.replace("'", "'\"'\"'") + "'"
    escaped = (
        ch
        if ch.isprintable() and ch not in "\\'"
        else "".join(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogateescape"))
        for ch in text
    )
    return "$'" + "".join(escaped) + "'"


__all__ = [
    "Candidate",
    "ErasedUser",
    "ErasureReport",
    "PruneReport",
    "erase_user",
    "erased_users",
    "git_prefix",
    "history_command",
    "identifier_hash",
    "in_history",
    "is_erased",
    "prune",
    "select_old",
]
