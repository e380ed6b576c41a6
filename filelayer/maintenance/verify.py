"""Checking an archive against docs/format.md, and repairing what can be repaired.

A repair never discards data: damaged journal lines and torn tails are moved to a
``steps.jsonl.damaged`` file beside the journal before the journal is rewritten (those
of ``deleted.jsonl`` to ``deleted.jsonl.damaged``, likewise, and a manifest that does not
decode to ``thread.json.damaged`` before a new one is made), and only files the format
calls temporary or derived are removed or rebuilt.

A file that an element of the journal names is never removed nor moved, whatever its
name: an upload named ``draft.tmp`` is stored as ``<element id>.tmp``, and is the user's.
Temporary files are told apart by their reserved names (see ``filelayer.layout``), not by
a suffix. An element file that no live element names (a crash between writing it and
journaling it, or between journaling a removal and unlinking it) is moved to
``unreferenced/``, never deleted. The one deletion of data is that of a thread the user
deleted (its id is in ``deleted.jsonl``) whose directory a crash left behind: the repair
finishes the deletion, as the user asked.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import fs as _fs
from .._io import locks as _locks
from .._time import now_iso, time_key
from ..errors import CorruptFileError
from ..format import codec as _codec
from ..format import journal, manifest, users
from ..format.ids import is_valid_id
from ..format.layout import ELEMENTS_DIR, SESSIONS_DIR, VIEWS_DIR, is_layer_leftover
from ..format.manifest import MANIFEST_NAME
from ..store.archive import ArchiveStore
from ..store.snapshots import ThreadSnapshots
from .announce import maintaining
from .retention import IDENTIFIER_HASH_KEY, is_erased

DAMAGED_SUFFIX = ".damaged"
UNREFERENCED_DIR = "unreferenced"
"""Where ``verify --repair`` moves element files that no element refers to."""


@dataclass
class Problem:
    path: str
    what: str
    repaired: bool = False

    def __str__(self) -> str:
        mark = "repaired" if self.repaired else "problem"
        return f"{mark}: {self.path}: {self.what}"


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    threads: int = 0

    @property
    def unrepaired(self) -> list[Problem]:
        return [p for p in self.problems if not p.repaired]


def verify(
    store: ArchiveStore,
    *,
    repair: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Check every thread, user and leftover file; with ``repair``, fix what is safe.

    A repair announces itself as maintenance (:mod:`.announce`) while it runs: it may
    rewrite many files, and a serving process then keeps its writes off its event loop."""
    if not repair:
        return _verify(store, repair=False, progress=progress)
    with maintaining(store.layout):
        return _verify(store, repair=True, progress=progress)


def _verify(
    store: ArchiveStore,
    *,
    repair: bool,
    progress: Callable[[int, int], None] | None,
) -> Report:
    report = Report()
    root = store.root
    # The directories whose names a repair removed, fsynced once each at the end: the
    # repairs are on the disk when verify returns (a removed record of an erased user
    # must not come back with a power cut).
    changed: list[Path] = []

    def add(path: Path, what: str, repaired: bool = False) -> None:
        report.problems.append(Problem(str(path.relative_to(root)), what, repaired))

    for leftover in sorted(_temporary_files(store)):
        if _referenced(store, leftover):  # cannot be (no element file is named so): guard
            add(leftover, "named like a temporary file, but an element refers to it; kept")
            continue
        if repair:
            if leftover.is_dir() and not leftover.is_symlink():  # a link: itself only
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
            changed.append(leftover.parent)
        add(leftover, "leftover temporary file from an interrupted write", repair)

    _check_tombstones(store, repair, add)

    # A git checkout of an archive without threads has no threads/ (git keeps no empty
    # directory): nothing to check there.
    threads = store.layout.threads
    if os.path.lexists(threads) and not threads.is_dir():
        add(threads, "not a directory: no thread can be read; move it away by hand")
    entries = sorted(os.scandir(threads), key=lambda e: e.name) if threads.is_dir() else []
    names = [e.name for e in entries if not e.name.startswith(".")]
    for n, name in enumerate(names, start=1):
        directory = store.layout.threads / name
        if directory.is_symlink():
            # Never followed: a link (which git keeps, and a merge can bring) would
            # have every reader and writer of the archive work outside it.
            if repair:
                directory.unlink()
                changed.append(directory.parent)
            add(directory, "a symbolic link, not a thread directory: never followed", repair)
        elif not directory.is_dir():
            add(directory, "not a thread directory (a file in threads/): left as it is")
        elif not is_valid_id(name):
            add(directory, "not a thread directory (its name is not a valid id)")
        else:
            report.threads += 1
            links = _links_inside(directory)
            for link in links:
                if repair:
                    link.unlink()
                    changed.append(link.parent)
                add(link, "a symbolic link in a thread directory: never followed", repair)
            try:
                if repair or not links:  # the rest is checked once the links are gone
                    _check_thread(store, name, repair, add)
            except OSError as exc:  # a directory or a FIFO in place of a file...
                add(directory, f"could not be read: {exc}")
        if progress is not None:
            progress(n, len(names))

    for path in sorted(store.layout.users.glob("*.json")):
        if path.is_symlink():  # a merge can bring one: never read through
            if repair:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # the link itself, never its target
                changed.append(path.parent)
            add(path, "a symbolic link, not a user record: never followed", repair)
            continue
        try:
            doc = users.read(path)
        except CorruptFileError as exc:
            add(path, exc.detail)
            continue
        if doc is not None and path.name != users.file_name(doc["identifier"]):
            add(path, "file name does not match the identifier inside")
        elif doc is not None and erased_record(store, doc):
            if repair:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                changed.append(path.parent)
            add(
                path,
                "the user was erased (filelayer erase-user) but this record of theirs is "
                "back (a merge or a copy from before the erasure); repair removes it",
                repair,
            )

    _check_copies(store, repair, add, changed)

    drift = _index_drift(store)
    if drift:
        if repair:
            store.reindex()
        for what in drift:
            add(store.layout.index_file, what, repair)
    # A directory removed since (a deleted thread's, its deletion finished) is not there
    # to fsync: its removal was made durable with its parent.
    _fs.fsync_dirs(d for d in changed if d.is_dir())
    return report


def _check_copies(
    store: ArchiveStore, repair: bool, add: Callable[..., None], changed: list[Path]
) -> None:
    """The views (``index/views/``) and session files (``sessions/``) of threads that
    were deleted (a tombstone) or are gone (no directory): copies of a conversation that
    a deletion or an erasure removes, back after a power cut, or left by a thread
    removed by git or by hand. Nothing reads them any more, and they must not outlive
    their thread: ``--repair`` removes them, under the thread's lock (a thread made
    meanwhile keeps its own); the directories it changes go to ``changed``."""
    for directory in (ThreadSnapshots(store.layout).directory, store.root / SESSIONS_DIR):
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            continue
        what = "view" if directory.name == VIEWS_DIR else "session file"
        for entry in entries:
            thread_id = entry.name.removesuffix(".json")
            if thread_id == entry.name or not is_valid_id(thread_id):
                continue  # not a thread's (a leftover of the layer's is reported above)
            if not _without_thread(store, thread_id):
                continue
            removed = False
            if repair:
                with store.thread_lock(thread_id):
                    if _without_thread(store, thread_id):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)
                        removed = True
                        changed.append(directory)
            add(
                Path(entry.path),
                f"the {what} of a thread that is no more (deleted, or its directory "
                "gone): a copy of its conversation with no thread; repair removes it",
                removed,
            )


def _without_thread(store: ArchiveStore, thread_id: str) -> bool:
    """Whether the thread was deleted or has no directory (a link is none)."""
    directory = store.layout.thread_dir(thread_id)
    return store.is_deleted(thread_id) or directory.is_symlink() or not directory.is_dir()


def erased_record(store: ArchiveStore, doc: dict[str, Any]) -> bool:
    """A user record that predates its user's erasure: it came back, it must go."""
    return is_erased(store, doc.get("id"), doc.get("identifier"), doc.get("createdAt"))


def _temporary_files(store: ArchiveStore) -> list[Path]:
    """What interrupted writes and deletions left: files and directories named by
    :func:`filelayer.layout.is_layer_leftover`, in the root (not below: ``locks/`` and
    whatever else a person keeps there, ``.git/`` say, are not the layer's to clean),
    ``users/``, ``index/``, ``index/views/``, ``sessions/`` and the thread directories."""
    found: list[Path] = []
    layout = store.layout
    views, sessions = layout.index_dir / VIEWS_DIR, layout.root / SESSIONS_DIR
    for top in (layout.root, layout.users, layout.index_dir, views, sessions):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            found.extend(Path(e.path) for e in os.scandir(top) if is_layer_leftover(e.name))
    if not layout.threads.is_dir():
        return found
    for directory, dirnames, filenames in os.walk(layout.threads):
        here = Path(directory)
        found.extend(here / d for d in dirnames if is_layer_leftover(d))
        dirnames[:] = [d for d in dirnames if not is_layer_leftover(d)]
        found.extend(here / f for f in filenames if is_layer_leftover(f))
    return found


def _referenced(store: ArchiveStore, path: Path) -> bool:
    """Whether a live element of its thread's journal names ``path`` (even with a name
    the layer would refuse to serve, as a hand-edited journal might)."""
    try:
        relative = path.relative_to(store.layout.threads).parts
    except ValueError:
        return False
    if len(relative) != 3 or relative[1] != ELEMENTS_DIR or not is_valid_id(relative[0]):
        return False
    named = f"{ELEMENTS_DIR}/{relative[2]}"
    return any(
        element.get("file") == named for element in store.read_state(relative[0]).live_elements()
    )


def _layer_made(name: str) -> bool:
    """Whether an entry of a thread directory is one the layer makes (a file set aside
    by a repair, ``elements/``, a temporary file): a directory holding only those was a
    thread, whatever a crash left of it."""
    return name.startswith((".", MANIFEST_NAME, journal.JOURNAL_NAME)) or name in (
        ELEMENTS_DIR,
        UNREFERENCED_DIR,
    )


def _check_thread(
    store: ArchiveStore, thread_id: str, repair: bool, add: Callable[..., None]
) -> None:
    directory = store.layout.thread_dir(thread_id)
    manifest_path = directory / MANIFEST_NAME
    if (
        not os.path.lexists(manifest_path)
        and not os.path.lexists(directory / journal.JOURNAL_NAME)
        and not all(_layer_made(name) for name in os.listdir(directory))
    ):
        # Not a thread (docs/format.md): never given a manifest, never removed.
        add(directory, "neither thread.json nor steps.jsonl: not a thread, left as it is")
        return
    damage: str | None = None
    try:
        doc = _codec.read_document(manifest_path, ("id",))
    except CorruptFileError as exc:
        # Empty or torn (a power cut in the flush mode keeps a prefix of a new manifest
        # renamed into place unsynced), or damaged otherwise: repaired alike.
        doc, damage = None, exc.detail
    if damage is not None or (doc is None and not manifest_path.exists()):
        found = "missing" if damage is None else damage
        outcome, aside = _repair_missing_manifest(store, thread_id) if repair else (None, None)
        if aside is not None:
            found += f"; set aside in {aside}"
        if outcome == "removed":
            add(
                directory,
                "an empty thread directory left by an interrupted write; removed",
                True,
            )
            return
        if outcome == "made":
            add(
                manifest_path,
                f"{found}; made a new one: the conversation is kept, but its name and author "
                "are unknown (the index did not hold them either), so it is nobody's to "
                "write but the app's until the app gives it to its author "
                "(update_thread with the author's user id)",
                True,
            )
        elif outcome == "recovered":
            add(
                manifest_path,
                f"{found}; made a new one with the name and author the index held",
                True,
            )
        elif outcome is None:
            add(
                manifest_path,
                f"{found}: the conversation is still readable, but the thread has no name "
                "nor author and is nobody's to write; `verify --repair` makes a new "
                "manifest with those the index holds",
            )
    elif doc is not None and doc["id"] != thread_id:
        add(manifest_path, f"holds id {doc['id']!r}, not the directory's {thread_id!r}")
    if store.is_deleted(thread_id):
        if repair:
            store.delete_thread(thread_id)
        add(directory, "the thread was deleted but its directory remains", repair)
        return

    journal_path = directory / journal.JOURNAL_NAME
    data = _fs.read_bytes(journal_path) or b""
    parsed = journal.parse(data, journal_path)
    if parsed.bad_lines or parsed.torn_tail:
        what = []
        if parsed.bad_lines:
            what.append(f"{len(parsed.bad_lines)} damaged line(s): {parsed.bad_lines[:5]}")
        if parsed.torn_tail:
            what.append("a torn last line (a write interrupted by a crash)")
        fixed = repair and _repair_journal(store, thread_id)
        suffix = f"; set aside in {journal.JOURNAL_NAME}{DAMAGED_SUFFIX}" if fixed else ""
        add(journal_path, ", ".join(what) + suffix, fixed)

    state = journal.fold(parsed.records)
    referenced = set()
    for element in state.live_elements():
        relative = element.get("file")
        if not isinstance(relative, str):
            continue
        path = store.layout.element_file(thread_id, relative)
        if path is None:
            add(journal_path, f"element {element['id']} names a file outside its directory")
            continue
        referenced.add(path.name)
        if not path.is_file():
            add(path, f"element {element['id']}'s file is missing")
            continue
        size, digest = element.get("bytes"), element.get("sha256")
        content = path.read_bytes()
        if (isinstance(size, int) and size != len(content)) or (
            isinstance(digest, str) and digest != hashlib.sha256(content).hexdigest()
        ):
            add(path, f"element {element['id']}'s file differs from what was stored")
    elements_dir = directory / ELEMENTS_DIR
    if elements_dir.is_dir():
        for path in sorted(elements_dir.iterdir()):
            if path.name in referenced or is_layer_leftover(path.name):
                continue  # a leftover of the layer's own is reported above
            if repair and _set_aside(store, thread_id, path):
                add(path, f"no element refers to this file; moved to {UNREFERENCED_DIR}/", True)
            else:
                add(path, "no element refers to this file (`verify --repair` sets it aside)")


def _check_tombstones(store: ArchiveStore, repair: bool, add: Callable[..., None]) -> None:
    """``deleted.jsonl``'s damaged lines and torn last line, reported and repaired as a
    journal's are. Readers skip them, so they delete nothing: a tombstone that counts
    is never among them, and setting them aside brings no thread back."""
    path = store.layout.deleted_file
    try:
        data = _fs.read_bytes(path) or b""
    except OSError as exc:  # a directory or a FIFO in its place
        add(path, f"could not be read: {exc}")
        return
    lines, tail = _fs.split_lines(data)
    bad = [n for n, line in enumerate(lines, start=1) if line.strip() and not _is_tombstone(line)]
    if not bad and not tail:
        return
    what = []
    if bad:
        what.append(f"{len(bad)} damaged line(s): {bad[:5]}")
    if tail:
        what.append("a torn last line (a write interrupted by a crash)")
    fixed = repair and _repair_tombstones(store)
    suffix = f"; set aside in {path.name}{DAMAGED_SUFFIX}" if fixed else ""
    add(path, ", ".join(what) + suffix, fixed)


def _is_tombstone(line: bytes) -> bool:
    """Whether a line of ``deleted.jsonl`` counts (docs/format.md): a JSON object with a
    string ``id`` (a thread's tombstone, as every reader takes it) or with a string
    ``identifierSha256`` (an erased user's). Any other line is damaged."""
    try:
        record = _codec.decode(line)
    except _codec.DecodeError:
        return False
    return isinstance(record, dict) and (
        isinstance(record.get("id"), str) or isinstance(record.get(IDENTIFIER_HASH_KEY), str)
    )


def _repair_tombstones(store: ArchiveStore) -> bool:
    """Move the damaged lines and the torn last line of ``deleted.jsonl`` aside and
    rewrite it with the tombstones, in order. Under its writers' lock: a deletion that
    lands meanwhile is in what is read here, never lost by the rewrite."""
    with _locks.locked(store.layout.deleted_lock, store.lock_timeout):
        _set_aside_damaged(store.layout.deleted_file, _is_tombstone)
    return True


def _set_aside_damaged(path: Path, counts: Callable[[bytes], bool]) -> None:
    """Move the lines of the JSON Lines file ``path`` that do not count (and its torn
    last line) to ``<name>.damaged``, durably, then rewrite it with the others in order.
    The caller holds the file's writers' lock."""
    lines, tail = _fs.split_lines(_fs.read_bytes(path) or b"")
    good: list[bytes] = []
    bad: list[bytes] = []
    for line in lines:
        if line.strip():
            (good if counts(line) else bad).append(line + b"\n")
    if tail:
        bad.append(tail + b"\n")
    if not bad:
        return
    _fs.append(path.with_name(path.name + DAMAGED_SUFFIX), b"".join(bad), durable=True)
    _fs.atomic_write(path, b"".join(good))


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def _links_inside(directory: Path) -> list[Path]:
    """The symbolic links among a thread's files and element files (not followed)."""
    found = [p for p in sorted(directory.iterdir()) if p.is_symlink()]
    elements = directory / ELEMENTS_DIR
    if elements.is_dir() and not elements.is_symlink():
        found += [p for p in sorted(elements.iterdir()) if p.is_symlink()]
    return found


_DAMAGED_MANIFEST = MANIFEST_NAME + DAMAGED_SUFFIX


def _repair_missing_manifest(store: ArchiveStore, thread_id: str) -> tuple[str | None, str | None]:
    """A thread directory without a manifest (a crash inside the write that creates a
    thread), with an empty one or one that does not decode (a power cut soon after it
    was written, in the flush mode, keeps nothing of it or a torn prefix). A damaged
    one is first set aside in ``thread.json.damaged`` (a repair never discards data);
    an empty one is removed. An empty directory is then removed; one holding a
    conversation gets a new manifest, with the name and author the index still held,
    or else the unknown author (:data:`manifest.UNKNOWN_AUTHOR`): an author lost is
    nobody's, never everyone's. Returns what was done (``None`` if the thread got a real
    manifest meanwhile) and the name the damaged manifest was set aside under."""
    directory = store.layout.thread_dir(thread_id)
    path = directory / MANIFEST_NAME
    with store.thread_lock(thread_id):
        if not directory.is_dir() or _readable(path):
            return None, None
        aside: Path | None = None
        if _is_empty(path):
            path.unlink()
            _fs.fsync_dir(directory)
        elif path.exists():
            aside = directory / _DAMAGED_MANIFEST
            n = 1
            while aside.exists():
                aside = directory / f"{_DAMAGED_MANIFEST}.{n}"
                n += 1
            os.replace(path, aside)
            _fs.fsync_dir(directory)
        removed = not any(directory.iterdir())
        if removed:
            with contextlib.suppress(OSError):
                directory.rmdir()
                _fs.fsync_dir(directory.parent)
        else:
            state = store.read_state(thread_id)
            times = [
                t
                for step in state.steps.values()
                for t in (step.get("createdAt"), step.get("start"))
                if isinstance(t, str) and t
            ]
            doc = manifest.new(thread_id, min(times, key=time_key) if times else now_iso())
            recovered = _from_index(store, thread_id, doc)
            if not recovered:
                doc["userId"] = manifest.UNKNOWN_AUTHOR
            manifest.write(path, doc, durable=True)
    # Either way the index follows at once (an empty manifest was indexed as a
    # thread without a name; a removed directory is no thread).
    store.reindex_thread(thread_id)
    named = None if aside is None else aside.name
    if removed:
        return "removed", named
    return ("recovered" if recovered else "made"), named


def _readable(path: Path) -> bool:
    """Whether ``path`` is a manifest that reads."""
    try:
        return manifest.read(path) is not None
    except CorruptFileError:
        return False


def _from_index(store: ArchiveStore, thread_id: str, doc: dict[str, Any]) -> bool:
    """Put into a new manifest the name, author and tags the index still holds for
    the thread (derived from the manifest before it was lost, unless a reconcile read
    the thread since); whether it held them. Without an author, a thread is writable by
    every user: recovering it keeps the thread its author's."""
    store.index.refresh()
    summary = store.index.threads.get(thread_id)
    if summary is None or not (summary.user_id or summary.user_identifier or summary.name):
        return False
    doc.update(
        name=summary.name,
        userId=summary.user_id,
        userIdentifier=summary.user_identifier,
        tags=summary.tags,
    )
    return True


def _set_aside(store: ArchiveStore, thread_id: str, path: Path) -> bool:
    """Move an element file that no element refers to (a crash between writing the
    file and journaling it) out of ``elements/``, keeping its bytes."""
    with store.thread_lock(thread_id):
        live = {el.get("file") for el in store.read_state(thread_id).live_elements()}
        if f"{ELEMENTS_DIR}/{path.name}" in live or not path.is_file():
            return False  # journaled meanwhile
        aside = store.layout.thread_dir(thread_id) / UNREFERENCED_DIR
        made = _fs.Changes(durable=True)
        _fs.make_dirs(aside, made)
        made.done()  # its name in the thread's directory, before anything moves in
        target = aside / path.name
        n = 1
        while target.exists():
            target = aside / f"{n}-{path.name}"
            n += 1
        os.replace(path, target)
        # The name arrives on the disk before it leaves: a power cut between the two
        # fsyncs leaves the file in both directories, never in neither.
        _fs.fsync_dirs([aside])
        _fs.fsync_dirs([path.parent])
    return True


def _repair_journal(store: ArchiveStore, thread_id: str) -> bool:
    """Move damaged lines aside and rewrite the journal with the good ones, in order."""
    with store.thread_lock(thread_id):
        _set_aside_damaged(
            store.layout.journal(thread_id), lambda line: bool(journal.parse(line + b"\n").records)
        )
    return True


def _index_drift(store: ArchiveStore) -> list[str]:
    store.index.refresh()
    problems = []
    on_disk = {}
    for thread_id in store.thread_ids():
        if store.is_deleted(thread_id):
            continue
        summary = store.summarise(thread_id)
        if summary is not None:
            on_disk[thread_id] = summary
    indexed = dict(store.index.threads.items())
    if store.index.damaged:
        return ["the index database is damaged"]
    for thread_id in sorted(set(on_disk) - set(indexed)):
        problems.append(f"thread {thread_id} is missing from the index")
    for thread_id in sorted(set(indexed) - set(on_disk)):
        problems.append(f"thread {thread_id} is in the index but not on disk")
    for thread_id in sorted(set(on_disk) & set(indexed)):
        a, b = on_disk[thread_id], indexed[thread_id]
        fields = [
            name
            for name, x, y in [
                ("name", a.name, b.name),
                ("author", a.user_id, b.user_id),
                ("identifier", a.user_identifier, b.user_identifier),
                ("created", a.created_at, b.created_at),
                ("tags", a.tags, b.tags),
                ("messages", a.texts, b.texts),
                ("feedback", a.feedback, b.feedback),
                ("favorites", a.favorites, b.favorites),
            ]
            if x != y
        ]
        if fields:
            problems.append(f"thread {thread_id}: index differs in {', '.join(fields)}")
    if store.index.damaged:
        return ["the index database is damaged"]
    return problems
