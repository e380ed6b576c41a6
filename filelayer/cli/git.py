"""The git commands: ``git-setup``, ``snapshot``, ``resolve``, and what git itself runs
(``merge-driver``, ``git-hook``).

They wrap :mod:`filelayer.git`, for an archive kept in a git repository. ``snapshot``
and the hooks (which stage the archive, or bring the index in line after git rewrote the
work tree) announce themselves as maintenance while they run
(:mod:`filelayer.maintenance.announce`); the merge driver, run by git once per file,
rewrites one file and does not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import FileLayerError, MergeError, StorageWriteError
from ..format.layout import Layout, default_root
from ..git import merge as gitmerge
from ..git import setup as gitsetup
from ..maintenance.announce import maintaining
from ._common import open_store


def _root(args: argparse.Namespace) -> Path:
    root = Path(args.root or default_root())
    open_store(args).close()  # an archive, and its .gitattributes up to date
    return root


def cmd_git_setup(args: argparse.Namespace) -> int:
    report = gitsetup.setup(_root(args))
    print("registered filelayer's merge driver in the repository's git config", file=sys.stderr)
    if report.hooks:
        print(f"installed hooks: {', '.join(report.hooks)}", file=sys.stderr)
    for hook in report.skipped:
        print(
            f"left the {hook} hook alone (not a shell script); add to it: "
            f"filelayer --root <archive> git-hook {hook}",
            file=sys.stderr,
        )
    return 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    root = _root(args)
    with maintaining(Layout(root)):
        commit = gitsetup.snapshot(root, args.message)
    print(f"committed {commit}" if commit else "nothing to commit", file=sys.stderr)
    return 0


_DECIDED = {
    "removed": "no longer in the merged archive, removed",
    "kept": "kept the version the merged archive names",
    "erased": "the user was erased on one side, kept erased (the file removed)",
    "merged": "merged as filelayer's merge driver merges it (git merged it as text)",
}


def cmd_resolve(args: argparse.Namespace) -> int:
    root = Path(args.root or default_root())
    result = gitsetup.resolve(root)
    for thread_id in result.removed:
        print(f"thread {thread_id}: deleted on one side, kept deleted (its files removed)")
    for path, done in result.decided:
        print(f"{path}: {_DECIDED[done]}")
    for path in result.unresolved:
        print(f"{path}: still conflicted; filelayer has no rule for it", file=sys.stderr)
    if not result.removed and not result.decided and not result.unresolved:
        print("nothing to resolve", file=sys.stderr)
    if result.unresolved:
        return 1
    command, what = result.finish
    print(f"resolved: run `{command}` to finish the {what}", file=sys.stderr)
    return 0


def _version(path: str, what: str) -> bytes:
    """One of the versions git hands the driver; unreadable: :class:`MergeError` (exit
    2: git leaves the file conflicted, as for any failure of the driver)."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise MergeError(what, f"cannot read {path} ({exc.strerror or exc})") from exc


def cmd_merge_driver(args: argparse.Namespace) -> int:
    ours = Path(args.ours)
    what = args.path or args.ours
    base, mine, theirs = (_version(p, what) for p in (args.base, args.ours, args.theirs))
    try:
        merged = gitmerge.merge_file(what, base, mine, theirs)
    except FileLayerError as exc:
        print(f"filelayer: {exc}; left conflicted", file=sys.stderr)
        return 1
    try:
        ours.write_bytes(merged)
    except OSError as exc:
        raise StorageWriteError(ours, exc) from exc
    return 0


def cmd_git_hook(args: argparse.Namespace) -> int:
    root = Path(args.root or default_root())
    if not (root / "filelayer.json").exists():
        return 0  # checked out a commit without the archive
    with maintaining(Layout(root)):
        return gitsetup.run_hook(root, args.hook)
