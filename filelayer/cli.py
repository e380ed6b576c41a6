"""The ``filelayer`` command: read, export and maintain an archive from the shell.

A thin layer over :class:`ArchiveStore` (the one reader of the format), using only the
standard library, so it works where Chainlit is not installed. Exit codes: 0 success,
1 problems found (``verify``) or nothing matched, 2 a usage or archive error.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from . import __version__
from ._time import when
from .errors import FileLayerError
from .export.bundle import build, content
from .export.markdown import file_stem, render_json
from .format.ids import is_valid_id
from .format.journal import MESSAGE_TYPES
from .format.layout import ROOT_ENV, default_root
from .git import merge as gitmerge
from .git import setup as gitsetup
from .index.summary import ThreadSummary
from .maintenance.compact import compact_thread
from .maintenance.retention import erase_user, git_prefix, history_command, prune
from .maintenance.verify import verify
from .progress import Progress
from .store.archive import ArchiveStore
from .transfer import command as copy_command

EXAMPLES = f"""\
The archive root is --root, else ${ROOT_ENV}, else ./chats.

examples:
  filelayer list --user alice@example.com --search invoice
  filelayer show 5f0c6c1e-2f5b-4a8e-9a63-0f6f1b2c3d4e
  filelayer export --all -o exported/
  filelayer export --user alice@example.com --since 2026-01-01 -o alice/
  filelayer export THREAD_ID --format json > thread.json
  filelayer verify --repair
  filelayer compact
  filelayer copy ./chats postgresql://user:pass@host/chainlit --create-schema
  filelayer prune --before 2025-01-01 --yes
  filelayer erase-user alice@example.com
"""


class UsageError(Exception):
    """Wrong arguments: printed with the command's usage, exit code 2."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.handler(args)
        return result
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"filelayer: {exc}", file=sys.stderr)
        return 2
    except FileLayerError as exc:
        print(f"filelayer: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `filelayer list | head`
        return 0
    finally:
        _close_opened()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="filelayer",
        description="Read, export and maintain a filelayer archive of Chainlit conversations.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"filelayer {__version__}")
    parser.add_argument("--root", help=f"archive root (default: ${ROOT_ENV} or ./chats)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, handler: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    def filters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--user", metavar="IDENTIFIER", help="only this user's threads")
        p.add_argument("--since", metavar="DATE", help="created on or after (YYYY-MM-DD)")
        p.add_argument("--until", metavar="DATE", help="created on or before (YYYY-MM-DD)")

    p = command("list", "list threads, most recent activity first", cmd_list)
    filters(p)
    p.add_argument("--search", help="case-insensitive text in the name or the messages")
    p.add_argument("--feedback", type=int, choices=[0, 1], help="with 👎 (0) or 👍 (1)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = command("show", "print a conversation in the terminal", cmd_show)
    p.add_argument("thread", help="thread id")

    command("stats", "count threads, steps, users and bytes", cmd_stats)

    p = command("export", "export threads to Markdown, HTML (or JSON)", cmd_export)
    p.add_argument("threads", nargs="*", metavar="THREAD", help="thread ids")
    p.add_argument("--all", action="store_true", help="every thread")
    filters(p)
    p.add_argument("-o", "--output", metavar="DIR", help="write one file per thread here")
    p.add_argument("--format", choices=["markdown", "html", "json"], default="markdown")

    command("reindex", "rebuild the thread index from the thread directories", cmd_reindex)
    command(
        "reconcile",
        "bring the index in line with the thread directories, reading only what changed",
        cmd_reconcile,
    )

    p = command("verify", "check the archive against the format", cmd_verify)
    p.add_argument("--repair", action="store_true", help="fix what can be fixed safely")

    p = command("compact", "fold journals into one line per step", cmd_compact)
    p.add_argument("threads", nargs="*", metavar="THREAD", help="thread ids (default: all)")

    p = command("prune", "delete threads whose last activity is before a date", cmd_prune)
    p.add_argument("--before", metavar="DATE", required=True, help="YYYY-MM-DD (UTC)")
    p.add_argument("--user", metavar="IDENTIFIER", help="only this user's threads")
    p.add_argument("--yes", action="store_true", help="delete (without it: a dry run)")

    p = command(
        "erase-user", "erase a user: their record and every thread they wrote", cmd_erase_user
    )
    p.add_argument("identifier", metavar="IDENTIFIER", help="the user's identifier")

    p = command(
        "git-setup",
        "register the archive's merge driver and hooks in the git repository it is in",
        cmd_git_setup,
    )

    p = command(
        "snapshot",
        "commit the archive as one consistent state while the app writes",
        cmd_snapshot,
    )
    p.add_argument("-m", "--message", help="the commit message")

    p = command(
        "resolve",
        "finish a stopped merge: threads deleted on one side stay deleted",
        cmd_resolve,
    )

    p = command("merge-driver", "git's merge driver for the archive's files", cmd_merge_driver)
    p.add_argument("base", help="the common ancestor's version (%%O)")
    p.add_argument("ours", help="our version, replaced by the merge (%%A)")
    p.add_argument("theirs", help="their version (%%B)")
    p.add_argument("path", nargs="?", default="", help="the file's path in the work tree (%%P)")

    p = command("git-hook", "what the hooks git-setup installs run", cmd_git_hook)
    p.add_argument("hook", choices=gitsetup.HOOKS)

    copy_command.add_parser(sub)
    return parser


_OPENED: list[ArchiveStore] = []
"""The stores a command opened, closed when it returns (see :func:`_close_opened`)."""


def open_store(args: argparse.Namespace) -> ArchiveStore:
    # create=False: a mistyped root is an error, not a new empty archive.
    store = ArchiveStore(args.root or default_root(), create=False)
    _OPENED.append(store)
    return store


def _close_opened() -> None:
    """Close what the command opened, as soon as it is done rather than at exit: its
    writer session ends and SQLite folds its log back into the database, so that a
    command run in-process (a test, a script calling :func:`main`) leaves the archive's
    files as a separate ``filelayer`` process would."""
    while _OPENED:
        _OPENED.pop().close()


def _out() -> TextIO:
    return sys.stdout


# -- selecting threads --------------------------------------------------------------


def _summaries(store: ArchiveStore, args: argparse.Namespace) -> Iterator[ThreadSummary]:
    """Threads matching --user/--since/--until (and list's filters), newest first."""
    store.index.refresh()
    user_id = None
    if getattr(args, "user", None):
        user = store.get_user(args.user)
        if user is None:
            return
        user_id = user["id"]
    page = store.index.page(
        user_id=user_id,
        first=len(store.index.threads) + 1,
        search=getattr(args, "search", None),
        feedback=getattr(args, "feedback", None),
    )
    since, until = _date(args.since), _date(args.until)
    for summary in page.items:
        day = summary.created_at[:10]
        if (since and day < since) or (until and day > until):
            continue
        yield summary


def _date(value: str | None) -> str | None:
    if value is None:
        return None
    if len(value) != 10 or value[4] != "-" or value[7] != "-":
        raise UsageError(f"dates are written YYYY-MM-DD, not {value!r}")
    return value


def _thread(store: ArchiveStore, thread_id: str) -> dict[str, Any]:
    thread = store.get_thread(thread_id) if is_valid_id(thread_id) else None
    if thread is None:
        raise UsageError(f"no thread {thread_id!r} in {store.root}")
    return thread


# -- commands -----------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    store = open_store(args)
    out = _out()
    rows = list(_summaries(store, args))
    if args.json:
        for s in rows:
            record = {
                "id": s.id,
                "name": s.name,
                "author": s.user_identifier,
                "createdAt": s.created_at,
                "updatedAt": s.changed,
                "tags": s.tags,
                "messages": len(s.texts),
            }
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        return 0 if rows else 1
    table = [("ID", "UPDATED", "AUTHOR", "MSGS", "NAME")]
    table += [
        (s.id, when(s.activity), s.user_identifier or "-", str(len(s.texts)), s.name or "")
        for s in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    limit = shutil.get_terminal_size((120, 20)).columns if out.isatty() else None
    for row in table:
        line = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4]
        out.write((line[:limit] if limit else line).rstrip() + "\n")
    return 0 if rows else 1


def cmd_show(args: argparse.Namespace) -> int:
    store = open_store(args)
    thread = _thread(store, args.thread)
    out = _out()
    out.write(f"{thread.get('name') or 'Untitled'}  ({thread['id']})\n")
    out.write(f"by {thread.get('userIdentifier') or '-'}, created {when(thread['createdAt'])}\n")
    present = {s["id"] for s in thread["steps"]}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for step in thread["steps"]:
        parent = step.get("parentId")
        children.setdefault(parent if parent in present else None, []).append(step)
    elements: dict[str | None, list[str]] = {}
    for element in thread["elements"]:
        owner = element.get("forId") if element.get("forId") in present else None
        elements.setdefault(owner, []).append(f"📎 {element.get('name')} ({element.get('type')})")

    def show(step: dict[str, Any], level: int) -> None:
        indent = "  " * level
        kind = step["type"]
        if kind != "run":  # runs are invisible wrappers, as in Chainlit's UI
            if kind == "user_message":
                who = str(thread.get("userIdentifier") or "user")
            elif kind in MESSAGE_TYPES:
                who = str(step.get("name") or "assistant")
            else:
                who = f"↳ {step.get('name') or kind} ({kind})"
            out.write(f"\n{indent}[{when(step.get('createdAt') or step.get('start'))}] {who}:\n")
            for line in str(step.get("output") or "").splitlines() or [""]:
                out.write(f"{indent}  {line}".rstrip() + "\n")
        inner = level + 1 if kind not in MESSAGE_TYPES and kind != "run" else level
        for child in children.get(step["id"], []):
            show(child, inner)
        for line in elements.get(step["id"], []):
            out.write(f"{indent}  {line}\n")
        fb = step.get("feedback")
        if fb:
            mark = "👍" if fb.get("value") == 1 else "👎"
            out.write(f"{indent}  {mark} {fb.get('comment') or ''}".rstrip() + "\n")

    for top in children.get(None, []):
        show(top, 0)
    for line in elements.get(None, []):
        out.write(f"\n{line}\n")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    store = open_store(args)
    threads = steps = elements = 0
    created = []
    for thread_id in store.thread_ids():
        state = store.read_state(thread_id)
        doc = store.read_manifest(thread_id) or {}
        threads += 1
        steps += len(state.steps)
        elements += len(state.live_elements())
        if doc.get("createdAt"):
            created.append(str(doc["createdAt"]))
    size = sum(p.stat().st_size for p in store.root.rglob("*") if p.is_file())
    user_count = sum(1 for _ in store.iter_users())
    out = _out()
    out.write(f"root      {store.root}\n")
    out.write(f"threads   {threads}\nsteps     {steps}\nelements  {elements}\n")
    out.write(f"users     {user_count}\nbytes     {size}\n")
    out.write(f"oldest    {min(created) if created else '-'}\n")
    out.write(f"newest    {max(created) if created else '-'}\n")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    store = open_store(args)
    if args.threads and (args.all or args.user):
        raise UsageError("give thread ids, or --all / --user, not both")
    if args.threads:
        ids = list(args.threads)
    elif args.all or args.user or args.since or args.until:
        ids = [s.id for s in _summaries(store, args)]
        if args.all and not (args.user or args.since or args.until):
            listed = set(ids)
            ids += [t for t in store.thread_ids() if t not in listed]  # even unindexed ones
    else:
        raise UsageError("say what to export: THREAD ids, --user IDENTIFIER or --all")
    if not args.output and len(ids) > 1 and args.format != "markdown":
        raise UsageError(f"several threads as {args.format.upper()} need -o DIR")
    progress = Progress("exporting")
    written = 0
    try:
        for n, thread_id in enumerate(ids, start=1):
            thread = _thread(store, thread_id)
            if args.output:
                _export_to(store, thread, Path(args.output), args.format)
            else:
                if args.format == "json":
                    text = render_json(thread)
                else:  # HTML: one page with its images inside (no directory for them)
                    html = args.format == "html"
                    text = build(store, thread, args.format, self_contained=html).text
                _out().write(text if n == 1 else "\n" + text)
            written += 1
            progress(n, len(ids))
    finally:
        progress.close()
    if args.output:
        print(f"exported {written} thread(s) to {args.output}", file=sys.stderr)
    return 0 if written else 1


def _export_to(store: ArchiveStore, thread: dict[str, Any], directory: Path, fmt: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        _write_if_changed(directory / f"{file_stem(thread)}.json", render_json(thread).encode())
        return
    for relative, data in build(store, thread, fmt).items():
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_if_changed(target, content(data))


def _write_if_changed(path: Path, data: bytes) -> None:
    """Leave identical files untouched, so re-exports do not churn a git checkout."""
    if path.exists() and path.read_bytes() == data:
        return
    path.write_bytes(data)


def cmd_reindex(args: argparse.Namespace) -> int:
    store = open_store(args)
    progress = Progress("indexing")
    try:
        count = store.reindex(progress=progress)
    finally:
        progress.close()
    print(f"indexed {count} thread(s)", file=sys.stderr)
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    store = open_store(args)
    progress = Progress("reconciling")
    try:
        done = store.reconcile(progress=progress)
    finally:
        progress.close()
    print(
        f"reconciled: {done.read} of {done.threads} thread(s) read again in {done.seconds:.2f} s",
        file=sys.stderr,
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    store = open_store(args)
    progress = Progress("verifying")
    try:
        report = verify(store, repair=args.repair, progress=progress)
    finally:
        progress.close()
    for problem in report.problems:
        _out().write(f"{problem}\n")
    remaining = len(report.unrepaired)
    repaired = len(report.problems) - remaining
    summary = f"checked {report.threads} thread(s): "
    if not report.problems:
        summary += "no problems"
    else:
        summary += f"{remaining} problem(s)" + (f", {repaired} repaired" if repaired else "")
        if remaining and not args.repair:
            summary += "; `filelayer verify --repair` fixes what can be fixed safely"
    print(summary, file=sys.stderr)
    return 1 if remaining else 0


def cmd_compact(args: argparse.Namespace) -> int:
    store = open_store(args)
    for thread_id in args.threads:
        _thread(store, thread_id)  # refuses unknown ids with a clear message
    # Without names: every directory there now. One being created or deleted while this
    # runs has no journal to fold, which is not a problem.
    ids = list(args.threads) or store.thread_ids()
    changed = skipped = saved = 0
    progress = Progress("compacting")
    try:
        for n, thread_id in enumerate(ids, start=1):
            result = compact_thread(store, thread_id)
            if result.skipped:
                skipped += 1
                print(f"skipped {thread_id}: {result.skipped}", file=sys.stderr)
            elif result.changed:
                changed += 1
                saved += result.before - result.after
            progress(n, len(ids))
    finally:
        progress.close()
    print(
        f"compacted {changed} of {len(ids)} thread(s), {saved} bytes saved"
        + (f", {skipped} skipped" if skipped else ""),
        file=sys.stderr,
    )
    return 1 if skipped else 0


def cmd_prune(args: argparse.Namespace) -> int:
    store = open_store(args)
    before = _date(args.before)
    assert before is not None
    progress = Progress("pruning")
    try:
        report = prune(store, before, args.user, act=args.yes, progress=progress)
    finally:
        progress.close()
    out = _out()
    rows = [(c.id, when(c.activity), c.author or "-", c.name) for c in report.threads]
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(3)]
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:3])]
        out.write("  ".join([*cells, row[3]]).rstrip() + "\n")
    verb = "deleted" if report.acted else "would delete"
    print(
        f"{verb} {len(report.threads)} thread(s) with activity before {before}"
        + (f" by {args.user}" if args.user else "")
        + f": {report.steps} step(s), {report.elements} element(s), {report.bytes} bytes"
        + ("" if report.acted or not report.threads else "; run again with --yes to delete"),
        file=sys.stderr,
    )
    return 0


def cmd_erase_user(args: argparse.Namespace) -> int:
    store = open_store(args)
    progress = Progress("erasing")
    try:
        report = erase_user(store, args.identifier, progress=progress)
    finally:
        progress.close()
    found = report.user_file is not None or report.threads
    summary = (
        f"erased {len(report.threads)} thread(s)"
        f" ({sum(c.steps for c in report.threads)} step(s),"
        f" {sum(c.elements for c in report.threads)} element(s))"
        + (" and the user's record" if report.user_file else "; no user record was found")
        + "; the index was rebuilt"
    )
    print(
        summary if found else "no such user and no thread by them: nothing erased", file=sys.stderr
    )
    for thread_id in report.still_writing:
        print(
            f"still being written: {thread_id}; stop the user's session and run again",
            file=sys.stderr,
        )
    prefix = git_prefix(store.root)
    if prefix is not None and report.history_paths():
        print(
            "git history and every clone still hold the erased files; to rewrite this"
            " repository's history, commit the deletion, then run from its top"
            " directory (and force-push, and have every clone re-cloned):",
            file=sys.stderr,
        )
        _out().write(history_command(report, prefix) + "\n")
    return 0 if found and not report.still_writing else 1


# -- git --------------------------------------------------------------------------


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
    commit = gitsetup.snapshot(_root(args), args.message)
    print(f"committed {commit}" if commit else "nothing to commit", file=sys.stderr)
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    root = Path(args.root or default_root())
    result = gitsetup.resolve(root)
    for thread_id in result.removed:
        print(f"thread {thread_id}: deleted on one side, kept deleted (its files removed)")
    for path in result.unresolved:
        print(f"{path}: still conflicted; filelayer has no rule for it", file=sys.stderr)
    if not result.removed and not result.unresolved:
        print("nothing to resolve", file=sys.stderr)
    if result.unresolved:
        return 1
    print("resolved: run `git commit` to finish the merge", file=sys.stderr)
    return 0


def cmd_merge_driver(args: argparse.Namespace) -> int:
    ours = Path(args.ours)
    try:
        merged = gitmerge.merge_file(
            args.path or args.ours,
            Path(args.base).read_bytes(),
            ours.read_bytes(),
            Path(args.theirs).read_bytes(),
        )
    except FileLayerError as exc:
        print(f"filelayer: {exc}; left conflicted", file=sys.stderr)
        return 1
    ours.write_bytes(merged)
    return 0


def cmd_git_hook(args: argparse.Namespace) -> int:
    root = Path(args.root or default_root())
    if not (root / "filelayer.json").exists():
        return 0  # checked out a commit without the archive
    return gitsetup.run_hook(root, args.hook)
