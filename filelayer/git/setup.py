"""Sharing an archive through git: the merge driver's registration, the hooks, resolving
what no driver is handed, and committing a consistent snapshot while the app writes.

``filelayer git-setup`` registers the merge driver the archive's ``.gitattributes``
names (``merge=filelayer``, see :mod:`filelayer.gitattributes`) in the repository's own
configuration, and installs hooks:

- ``post-checkout``, ``post-merge``, ``post-rewrite``: the files under the archive
  changed behind the index's back; :func:`catch_up_index` brings it in line. After a
  merge or a rebase, the files of elements the merged journals delete go first
  (:func:`remove_deleted_element_files`).
- ``pre-commit``: stages the archive again under every lock of the archive, so that a
  commit never holds a torn journal line or a thread without its manifest
  (:func:`stage_archive`).

Git configuration and hooks are not cloned: every clone runs ``git-setup`` once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import fs as _fs
from .._io import locks as _locks
from .._time import instant_key, time_key
from ..errors import GitError, MergeError
from ..format import codec as _codec
from ..format import journal
from ..format.gitattributes import DRIVER
from ..format.ids import is_valid_id
from ..format.journal import JOURNAL_NAME
from ..format.layout import DELETED_FILE, ELEMENTS_DIR, THREADS_DIR, USERS_DIR, Layout
from ..format.manifest import MANIFEST_NAME
from .merge import merge_file

HOOKS = ("post-checkout", "post-merge", "post-rewrite", "pre-commit")
_BEGIN = "# >>> filelayer"
_END = "# <<< filelayer"


def git(cwd: Path, *args: str, check: bool = True) -> str:
    """Run git in ``cwd``; its standard output. A failure: :class:`GitError`."""
    command = "git " + " ".join(args)
    if shutil.which("git") is None:
        raise GitError(command, "git is not installed")
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    if check and done.returncode != 0:
        raise GitError(command, done.stderr.strip() or f"exit status {done.returncode}")
    return done.stdout


def repository_of(root: Path) -> Path:
    """The top of the git work tree the archive is in; none: :class:`GitError`, in one
    line (git's own message, never its usage text)."""
    try:
        return Path(git(root, "rev-parse", "--show-toplevel").strip())
    except GitError as exc:
        first = exc.detail.splitlines()[0] if exc.detail else ""
        raise GitError(exc.command, f"{root} is not in a git work tree ({first})") from exc


def _filelayer_command() -> str:
    # This interpreter, which has filelayer: git runs drivers and hooks with whatever
    # PATH it has, where a `filelayer` script may be missing or another version.
    return f"{shlex.quote(sys.executable)} -m filelayer"


def catch_up_index(root: Path) -> int:
    """Bring the archive's index in line with its files after git changed them (a
    checkout, a merge, a rebase). The one place the hooks call: the reconciler every
    change detector uses (:func:`filelayer.store.heal.reconcile_changed`), which reads
    again only the threads whose files, or whose author's user file, git changed.
    Returns the number of threads read again."""
    from ..store import ArchiveStore

    store = ArchiveStore(root, create=False)
    try:
        return store.reconcile().read
    finally:
        store.close()


@dataclass
class SetupReport:
    repository: Path
    hooks: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def setup(root: Path) -> SetupReport:
    """Register the merge driver and install the hooks for the archive at ``root``.
    Running it again changes nothing; hooks of the user's own are kept (filelayer's
    lines are added in a marked block, replaced on the next run)."""
    root = root.resolve()
    repo = repository_of(root)
    rel = root.relative_to(repo.resolve()).as_posix() or "."
    command = _filelayer_command()
    git(repo, "config", "merge.filelayer.name", "filelayer archive merge (journals and JSON)")
    git(repo, "config", f"merge.{DRIVER}.driver", f"{command} merge-driver %O %A %B %P")
    hooks_dir = Path(git(repo, "rev-parse", "--git-path", "hooks").strip())
    if not hooks_dir.is_absolute():
        hooks_dir = repo / hooks_dir
    hooks_dir.mkdir(parents=True, exist_ok=True)
    report = SetupReport(repo)
    for hook in HOOKS:
        line = f"{command} --root {shlex.quote(rel)} git-hook {hook} || exit $?"
        if hook != "pre-commit":  # a stale index is rebuilt later; never fail git
            line = f"{command} --root {shlex.quote(rel)} git-hook {hook} || true"
        path = hooks_dir / hook
        text = path.read_text("utf-8") if path.exists() else None
        if text is not None and not text.startswith("#!") and _BEGIN not in text:
            report.skipped.append(hook)
            continue
        path.write_text(_with_block(text, rel, line), "utf-8")
        path.chmod(0o755)
        report.hooks.append(hook)
    return report


# Control characters, line and paragraph separators: every character that
# str.splitlines breaks at is one of them.
_BREAKING = frozenset({"Cc", "Zl", "Zp"})


def _label(rel: str) -> str:
    """How the markers of a hook's block name the archive ``rel``: as it is, unless it
    holds a character that ends a line (for the shell, ``\\n``: the rest of the comment
    would run as a command and fail every commit; for :meth:`str.splitlines`, which
    finds the block again, also ``\\r``, ``\\u2028``…) or another control character;
    then with those characters and backslashes escaped, so that it is one line."""
    if all(unicodedata.category(c) not in _BREAKING for c in rel):
        return rel  # the name earlier versions wrote, so that their block is found again
    return "".join(
        f"\\u{ord(c):04x}" if unicodedata.category(c) in _BREAKING or c == "\\" else c for c in rel
    )


def _with_block(text: str | None, rel: str, line: str) -> str:
    """The hook script with filelayer's line for the archive ``rel`` in its block."""
    label = _label(rel)
    marker = f"{_BEGIN} {label}"
    block = f"{marker} (written by `filelayer git-setup`)\n{line}\n{_END} {label}\n"
    if text is None:
        return "#!/bin/sh\n" + block
    lines = text.splitlines(keepends=True)
    kept: list[str] = []
    inside = False
    for current in lines:
        if current.startswith(marker):
            inside = True
        elif inside and current.startswith(f"{_END} {label}"):
            inside = False
        elif not inside:
            kept.append(current)
    body = "".join(kept)
    if body and not body.endswith("\n"):
        body += "\n"
    return body + block


def stage_archive(root: Path, *, timeout: float = 60.0) -> None:
    """``git add`` the whole archive while holding every one of its locks: no write is
    half done while git reads the files, so what is staged is a state the archive was
    in (whole journal lines, no thread without its manifest). Writers wait for the
    time of the ``git add`` (what they wrote meanwhile goes into the next commit)."""
    layout = Layout(root)
    layout.refuse_links()  # the locks are files written in locks/
    layout.locks.mkdir(exist_ok=True)
    # In the writes' order, not by name: a deletion holds its thread's lock while it
    # takes the tombstones', which sorts first.
    with _locks.locked_all(layout.lock_files, timeout):
        git(root, "add", "--all", "--", ".")


def snapshot(root: Path, message: str | None) -> str | None:
    """Stage the archive consistently (:func:`stage_archive`) and commit it, with the
    repository's other staged changes. The new commit's id; ``None`` if nothing
    changed."""
    stage_archive(root)
    if not git(root, "diff", "--cached", "--name-only").strip():
        return None
    git(root, "commit", "--quiet", "-m", message or "Archive snapshot")
    return git(root, "rev-parse", "--short", "HEAD").strip()


def run_hook(root: Path, hook: str) -> int:
    """What the hooks call (``filelayer git-hook NAME``)."""
    if hook == "pre-commit":
        repository_of(root)  # outside a repository: say so, in one line
        staged = git(root, "diff", "--cached", "--name-only", "--", ".").strip()
        if staged:  # the archive takes part in this commit: stage it whole, under its locks
            stage_archive(root)
        return 0
    if (root / "filelayer.json").exists():
        if hook in ("post-merge", "post-rewrite"):
            # A merge (or a rebase: ORIG_HEAD is where it started) that brought a
            # deletion together with the other side's element for what it deleted.
            repo = repository_of(root)
            prefix = _prefix_of(root, repo)
            changed = _changed_threads(repo, prefix, "ORIG_HEAD", "HEAD")
            suspects = _erasure_suspects(root, repo, prefix, changed, "ORIG_HEAD", "HEAD")
            remove_erased_threads(root, repo, prefix, suspects)
            remove_deleted_element_files(root, repo, prefix, changed)
        catch_up_index(root)
    return 0


def _prefix_of(root: Path, repo: Path) -> str:
    """The archive's path inside the work tree, as git names paths: ``""`` at the top,
    else ending with ``/``."""
    prefix = root.resolve().relative_to(repo.resolve()).as_posix()
    return "" if prefix == "." else prefix + "/"


def _changed_threads(repo: Path, prefix: str, *revisions: str) -> set[str]:
    """The ids of the threads with a file that differs between ``revisions`` (as
    ``git diff`` compares them); none when git cannot compare them (no ``ORIG_HEAD``)."""
    listed = git(
        repo,
        "diff",
        "--name-only",
        "--no-renames",
        "-z",
        *revisions,
        "--",
        f"{prefix}{THREADS_DIR}/",
        check=False,
    )
    found = set()
    for path in listed.split("\0"):
        parts = path[len(prefix) :].split("/") if path.startswith(prefix) else []
        if len(parts) >= 3 and parts[0] == THREADS_DIR:
            found.add(parts[1])
    return found


def remove_deleted_element_files(
    root: Path, repo: Path, prefix: str, threads: set[str]
) -> list[str]:
    """Remove, from the work tree and git's index, the files of elements the merged
    journal of each of ``threads`` deletes (``element.delete``, or with their step).

    A single clone never keeps one (an element sent for a deleted step is journaled
    as deleted, with no file), but a clean merge of a step's deletion with the other
    side's element for that step unites the journals and keeps the element's file.
    A file no journal line refers to is not touched (``verify --repair`` sets it
    aside). Returns the paths removed, as git names them."""
    dead = _tombstoned(root)
    removed: list[str] = []
    for thread_id in sorted(threads):
        thread_dir = root / THREADS_DIR / thread_id
        directory = thread_dir / ELEMENTS_DIR
        if (
            thread_id in dead
            or not is_valid_id(thread_id)
            or thread_dir.is_symlink()
            or directory.is_symlink()
            or not directory.is_dir()
        ):
            continue
        state = _folded(root, thread_id)
        if state is None or not state.deleted_elements:
            continue
        named = {e.get("file") for e in state.live_elements()}
        live = {e["id"] for e in state.live_elements()}
        for name in sorted(os.listdir(directory)):
            element_id = _element_of(name)
            if (
                element_id not in state.deleted_elements
                or element_id in live
                or f"{ELEMENTS_DIR}/{name}" in named
                or (directory / name).is_dir()
            ):
                continue
            path = f"{prefix}{THREADS_DIR}/{thread_id}/{ELEMENTS_DIR}/{name}"
            _remove_path(repo, path)
            removed.append(path)
        # When it is empty, as a single clone leaves none; under the thread's lock, so
        # that an app writing the thread's first element meanwhile keeps its directory.
        with _locks.locked(Layout(root).thread_lock(thread_id)), contextlib.suppress(OSError):
            directory.rmdir()
    return removed


@dataclass
class Resolution:
    removed: list[str] = field(default_factory=list)
    """Thread directories removed because the other side deleted the thread."""
    decided: list[tuple[str, str]] = field(default_factory=list)
    """Other conflicted paths a rule decided, and what was done (``"removed"``: the
    merged archive no longer has what the file held; ``"kept"``: the version it names;
    ``"erased"``: a user file its user's erasure removed; ``"merged"``: a file git
    merged as text, merged by the driver's rule)."""
    unresolved: list[str] = field(default_factory=list)
    """Conflicted paths no filelayer rule decides."""
    finish: tuple[str, str] = ("git commit", "merge")
    """The git command that finishes what git stopped, and what that is: a rebase or a
    cherry-pick is continued, not committed."""


def _tombstoned(root: Path) -> set[str]:
    data = _fs.read_bytes(root / DELETED_FILE) or b""
    found = set()
    for line in _fs.split_lines(data)[0]:
        try:
            record = _codec.decode(line)
        except _codec.DecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            found.add(record["id"])
    return found


def _element_of(name: str) -> str:
    """The element id a file of ``elements/`` is named by: what comes before its last
    dot, or the whole name without one (an id with a dot always takes an extension:
    see ``element_relative_path``)."""
    return name.rsplit(".", 1)[0] if "." in name else name


def _blob(repo: Path, sha: str) -> bytes:
    """The bytes of one object git stores."""
    done = subprocess.run(
        ["git", "cat-file", "blob", sha], cwd=repo, capture_output=True, stdin=subprocess.DEVNULL
    )
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip()
        raise GitError(f"git cat-file blob {sha}", detail or f"exit status {done.returncode}")
    return done.stdout


def _unmerged(repo: Path) -> dict[str, dict[int, str]]:
    """Every conflicted path of the repository: its versions (stage 1 the common
    ancestor, 2 ours, 3 theirs) by the object id of their bytes."""
    found: dict[str, dict[int, str]] = {}
    for entry in git(repo, "ls-files", "-u", "-z").split("\0"):
        if "\t" not in entry:
            continue
        meta, path = entry.split("\t", 1)
        _mode, sha, stage = meta.split()
        found.setdefault(path, {})[int(stage)] = sha
    return found


def _folded(root: Path, thread_id: str) -> journal.ThreadState | None:
    """What the merged journal of a thread says (``None``: it has none to read)."""
    if not is_valid_id(thread_id):
        return None
    try:
        data = _fs.read_bytes(root / THREADS_DIR / thread_id / "steps.jsonl")
    except OSError:
        return None
    if data is None:
        return None
    return journal.fold(journal.sorted_records(journal.parse(data).records))


def _remove_path(repo: Path, path: str) -> None:
    """A conflicted file leaves the index and the work tree (a link itself, never
    what it points to)."""
    git(repo, "rm", "-q", "--cached", "--ignore-unmatch", "--", path)
    target = repo / path
    if target.is_symlink() or target.is_file():
        target.unlink()


def _resolve_element(
    repo: Path, path: str, name: str, state: journal.ThreadState, stages: dict[int, str]
) -> str | None:
    """Decide a conflicted element file by the merged journal: its element deleted (by
    ``element.delete`` or with its step), the file goes; live, the version the newest
    record of the element names (by ``bytes`` and ``sha256``) is kept; when no version
    matches the record, or it names neither, the version with the greater SHA-256 of
    its bytes, so that both directions of the merge keep the same bytes. ``None``: no
    rule decides it (an element that names another file)."""
    element_id = _element_of(name)
    if not is_valid_id(element_id):
        return None
    live = {e["id"]: e for e in state.live_elements()}
    if element_id not in live:
        if element_id not in state.deleted_elements and element_id not in state.elements:
            return None  # an element the journal never heard of: not for a rule to drop
        _remove_path(repo, path)
        return "removed"
    record = live[element_id]
    if record.get("file") != f"elements/{name}":
        return None
    versions = [_blob(repo, stages[stage]) for stage in (2, 3) if stage in stages]
    if not versions:
        return None

    def matches(data: bytes) -> bool:
        size, digest = record.get("bytes"), record.get("sha256")
        if isinstance(size, int) and not isinstance(size, bool) and size != len(data):
            return False
        return not isinstance(digest, str) or digest == hashlib.sha256(data).hexdigest()

    chosen = [data for data in versions if matches(data)] or versions
    data = max(chosen, key=lambda d: hashlib.sha256(d).hexdigest())
    target = repo / path
    if target.is_symlink() or target.is_dir():
        return None  # not a file git left: no rule writes through or over it
    target.parent.mkdir(parents=True, exist_ok=True)
    _fs.atomic_write(target, data)
    git(repo, "add", "--", path)
    return "kept"


@dataclass(frozen=True)
class _ErasedUser:
    id: str | None
    identifier_sha256: str
    at: str


def _user_tombstones(root: Path) -> list[_ErasedUser]:
    """The user tombstones ``erase-user`` wrote in the merged ``deleted.jsonl``:
    ``{"deletedAt", "erasedUser", "identifierSha256"}`` (docs/format.md)."""
    data = _fs.read_bytes(root / DELETED_FILE) or b""
    found = []
    for line in _fs.split_lines(data)[0]:
        try:
            record = _codec.decode(line)
        except _codec.DecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("identifierSha256"), str):
            user_id = record.get("erasedUser")
            found.append(
                _ErasedUser(
                    user_id if isinstance(user_id, str) else None,
                    record["identifierSha256"],
                    str(record.get("deletedAt") or ""),
                )
            )
    return found


def _predates_erasure(
    doc: dict[str, Any], id_key: str, identifier_key: str, erased: list[_ErasedUser]
) -> _ErasedUser | None:
    """The user tombstone that erased a user record or a thread manifest, if one did:
    its user's id or identifier matches, and it was created no later than the erasure
    (a user who logged in again after it is a new user, and their new threads are
    new). Of several, the earliest, the same on every clone that holds them."""
    identifier = doc.get(identifier_key)
    digest = (
        hashlib.sha256(identifier.encode("utf-8", "surrogatepass")).hexdigest()
        if isinstance(identifier, str)
        else None
    )
    # A creation that names no instant is not after the erasure: what was erased.
    created = instant_key(str(doc.get("createdAt") or ""))
    matching = [
        e
        for e in erased
        if ((e.id is not None and e.id == doc.get(id_key)) or e.identifier_sha256 == digest)
        and (created is None or not e.at or created <= time_key(e.at))
    ]
    return (
        min(matching, key=lambda e: (e.at, e.identifier_sha256, e.id or "")) if matching else None
    )


def _erased_user(repo: Path, stages: dict[int, str], erased: list[_ErasedUser]) -> bool:
    """Whether every version of a conflicted user file the two sides hold is a record
    a user tombstone erased (:func:`_predates_erasure`)."""
    versions = [_blob(repo, stages[stage]) for stage in (2, 3) if stage in stages]
    if not versions or not erased:
        return False
    for data in versions:
        try:
            doc = _codec.decode(data)
        except _codec.DecodeError:
            return False
        if not isinstance(doc, dict) or _predates_erasure(doc, "id", "identifier", erased) is None:
            return False
    return True


def _erasure_suspects(
    root: Path, repo: Path, prefix: str, changed: set[str], *revisions: str
) -> set[str]:
    """The threads an erasure may have to delete after git moved: those it changed, and
    every thread when it added a user tombstone (an erasure came in: the threads this
    side began before it are threads the merge left as they were). Only then: reading
    every manifest at each merge that brings a thread's deletion would be slow."""
    diff = git(
        repo, "diff", "-U0", *revisions, "--", f"{prefix}{DELETED_FILE}", check=False
    ).splitlines()
    if not any(line.startswith("+") and '"identifierSha256"' in line for line in diff):
        return changed
    try:
        return changed | set(os.listdir(root / THREADS_DIR))
    except OSError:
        return changed


def remove_erased_threads(root: Path, repo: Path, prefix: str, threads: set[str]) -> list[str]:
    """Delete, in the work tree and git's index, each of ``threads`` that a user
    tombstone of the merged ``deleted.jsonl`` erased: one its user began on the other
    side before the erasure there (:func:`_predates_erasure` on its manifest).

    Git merges such a thread in without a conflict (the erasing side never had it), so
    no ``resolve`` runs, and the erased user's conversation would be back. It is
    deleted as any thread is, with its tombstone, so that a later merge of the other
    side's writes to it stops on it and ``resolve`` keeps it deleted; the next commit
    records it. Returns the ids of the threads deleted."""
    erased = _user_tombstones(root)
    if not erased:
        return []
    dead = _tombstoned(root)
    doomed: list[tuple[str, str | None]] = []
    for thread_id in sorted(threads - dead):
        manifest = root / THREADS_DIR / thread_id / MANIFEST_NAME
        if not is_valid_id(thread_id) or manifest.parent.is_symlink() or manifest.is_symlink():
            continue
        try:
            doc = _codec.decode(_fs.read_bytes(manifest) or b"")
        except (*_codec.DecodeError, OSError):
            continue  # no manifest to read an author from: not for this rule
        erasure = (
            _predates_erasure(doc, "userId", "userIdentifier", erased)
            if isinstance(doc, dict)
            else None
        )
        if erasure is not None:
            doomed.append((thread_id, erasure.at or None))
    if not doomed:
        return []
    from ..store import ArchiveStore

    store = ArchiveStore(root, create=False)
    try:
        for thread_id, at in doomed:
            store.delete_thread(thread_id, at=at)  # the erasure's time: the same bytes
    finally:
        store.close()
    for thread_id, _ in doomed:
        git(
            repo,
            "rm",
            "-r",
            "-q",
            "--cached",
            "--ignore-unmatch",
            "--",
            f"{prefix}{THREADS_DIR}/{thread_id}",
        )
    git(repo, "add", "--", f"{prefix}{DELETED_FILE}")
    return [thread_id for thread_id, _ in doomed]


def _driver_merges(rel: str) -> bool:
    """Whether ``rel`` (a path in the archive) is a file the merge driver merges: the
    tombstones, a thread's journal or manifest, a user file."""
    parts = rel.split("/")
    if rel == DELETED_FILE:
        return True
    if len(parts) == 3 and parts[0] == THREADS_DIR:
        return is_valid_id(parts[1]) and parts[2] in (JOURNAL_NAME, MANIFEST_NAME)
    return len(parts) == 2 and parts[0] == USERS_DIR and parts[1].endswith(".json")


def _merge_as_driver(repo: Path, path: str, rel: str, stages: dict[int, str]) -> bool:
    """Merge a conflicted file git merged as text by the driver's rule, from the
    versions git keeps of it (the common ancestor's, or none when both sides added the
    file), and stage the result: what ``git merge`` would have made with the driver
    registered, since the driver's result depends only on the three versions. ``False``
    (nothing done) when one side deleted it (the other rules decide that) or a version
    cannot be merged."""
    if 2 not in stages or 3 not in stages:
        return False
    target = repo / path
    if target.is_symlink() or target.is_dir():
        return False
    base = _blob(repo, stages[1]) if 1 in stages else b""
    try:
        data = merge_file(rel, base, _blob(repo, stages[2]), _blob(repo, stages[3]))
    except MergeError:
        return False
    _fs.atomic_write(target, data)
    git(repo, "add", "--", path)
    return True


def _in_progress(repo: Path) -> tuple[str, str]:
    """What git stopped in (:attr:`Resolution.finish`), by the state files it keeps."""
    for name, command, what in (
        ("rebase-merge", "git rebase --continue", "rebase"),
        ("rebase-apply", "git rebase --continue", "rebase"),
        ("CHERRY_PICK_HEAD", "git cherry-pick --continue", "cherry-pick"),
        ("REVERT_HEAD", "git revert --continue", "revert"),
    ):
        path = git(repo, "rev-parse", "--git-path", name, check=False).strip()
        if path and os.path.lexists(repo / path):
            return command, what
    return "git commit", "merge"


def resolve(root: Path) -> Resolution:
    """Finish a merge git stopped, by what the merged archive says:

    - a thread deleted on one side and written on the other (a modify/delete conflict,
      which git hands no driver) stays deleted, as its tombstone in ``deleted.jsonl``
      says. Every such thread directory is removed from the work tree and the index, as
      are any files left of a thread with a tombstone (a symbolic link in place of its
      directory is removed itself, never followed);
    - an element file (deleted on one side and re-sent on the other, or re-sent on both
      with different bytes, which git does not merge) follows the thread's merged
      journal: removed when the element is deleted (or its step is), else the version
      the element's newest record names (:func:`_resolve_element`);
    - a user file erased on one side (``erase-user``) and changed on the other (the user
      logged in) stays erased, as the user tombstone in ``deleted.jsonl`` says, when the
      record predates the erasure (:func:`_erased_user`): the file is removed."""
    root = root.resolve()
    # Before anything is read or removed: through a linked ``threads/`` a tombstone
    # would name a directory outside the archive, and a linked ``deleted.jsonl`` would
    # be tombstones from outside it.
    Layout(root).refuse_links()
    repo = repository_of(root)
    prefix = _prefix_of(root, repo)
    unmerged = _unmerged(repo)
    conflicted = sorted(
        set(git(repo, "diff", "--name-only", "--diff-filter=U", "-z").split("\0")) - {""}
    )
    result = Resolution(finish=_in_progress(repo))
    # First, since what follows reads them: the files the driver merges, which git
    # merged as text (the clone never ran `git-setup`, or the merge was another tool's).
    for path in list(conflicted):
        inside = path[len(prefix) :] if path.startswith(prefix) else ""
        if (
            path in unmerged
            and _driver_merges(inside)
            and _merge_as_driver(repo, path, inside, unmerged[path])
        ):
            conflicted.remove(path)
            result.decided.append((path, "merged"))
    dead = _tombstoned(root)
    erased = _user_tombstones(root)
    for path in conflicted:
        rel = path[len(prefix) :] if path.startswith(prefix) else None
        parts = rel.split("/") if rel is not None else []
        if len(parts) >= 2 and parts[0] == THREADS_DIR and parts[1] in dead:
            continue  # removed with its directory below
        done = None
        if len(parts) == 4 and parts[0] == THREADS_DIR and parts[2] == ELEMENTS_DIR:
            journal_path = f"{prefix}{THREADS_DIR}/{parts[1]}/steps.jsonl"
            state = None if journal_path in conflicted else _folded(root, parts[1])
            if state is not None and path in unmerged:
                done = _resolve_element(repo, path, parts[3], state, unmerged[path])
        elif (
            len(parts) == 2
            and parts[0] == USERS_DIR
            and path in unmerged
            and _erased_user(repo, unmerged[path], erased)
        ):
            _remove_path(repo, path)
            done = "erased"
        if done is None:
            result.unresolved.append(path)
        else:
            result.decided.append((path, done))
    threads = root / THREADS_DIR
    listed = git(repo, "ls-files", "-z", "--", f"{prefix}{THREADS_DIR}/").split("\0")
    tracked = {p[len(prefix) :].split("/")[1] for p in listed if p.count("/") > prefix.count("/")}
    for thread_id in sorted(dead):
        directory = threads / thread_id
        if not is_valid_id(thread_id) or (
            thread_id not in tracked and not os.path.lexists(directory)
        ):
            continue
        where = f"{prefix}{THREADS_DIR}/{thread_id}"
        git(repo, "rm", "-r", "-q", "--cached", "--ignore-unmatch", "--", where)
        if directory.is_symlink():
            # A link (git keeps them; a branch can bring one) is never followed, even
            # to remove: the link itself goes, as `verify --repair` removes it, and
            # whatever it points to, outside the thread, is not the archive's.
            directory.unlink()
        elif directory.exists():
            shutil.rmtree(directory)
        result.removed.append(thread_id)
    # No post-merge hook runs for a merge finished by `git commit`: what it would do
    # is done here (the threads the merge changed, against HEAD).
    changed = _changed_threads(repo, prefix, "--cached", "HEAD")
    suspects = _erasure_suspects(root, repo, prefix, changed, "--cached", "HEAD")
    for thread_id in remove_erased_threads(root, repo, prefix, suspects):
        result.removed.append(thread_id)
    for path in remove_deleted_element_files(root, repo, prefix, changed):
        result.decided.append((path, "removed"))
    catch_up_index(root)
    return result
