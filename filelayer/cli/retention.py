"""The retention commands: ``prune`` (threads older than a date) and ``erase-user``.

Both delete for good; ``prune`` is a dry run without ``--yes``, and ``erase-user``
says how to rewrite git history when the archive is in a repository.
"""

from __future__ import annotations

import argparse
import sys

from .._time import when
from ..maintenance.retention import erase_user, git_prefix, history_command, prune
from ..progress import Progress
from ._common import open_store, parse_date, printable, stdout


def cmd_prune(args: argparse.Namespace) -> int:
    store = open_store(args)
    before = parse_date(args.before)
    assert before is not None
    progress = Progress("pruning")
    try:
        report = prune(store, before, args.user, act=args.yes, progress=progress)
    finally:
        progress.close()
    out = stdout()
    # Names and authors are the chat users': escaped like `list` does (no control
    # character reaches the terminal, no line is forged).
    rows = [
        (c.id, printable(when(c.activity)), printable(c.author or "-"), printable(c.name))
        for c in report.threads
    ]
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(3)]
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:3])]
        out.write("  ".join([*cells, row[3]]).rstrip() + "\n")
    verb = "deleted" if report.acted else "would delete"
    print(
        f"{verb} {len(report.threads)} thread(s) with activity before {before}"
        + (f" by {printable(args.user)}" if args.user else "")
        + f": {report.steps} step(s), {report.elements} element(s), {report.bytes} bytes"
        + ("" if report.acted or not report.threads else "; run again with --yes to delete"),
        file=sys.stderr,
    )
    if report.kept:
        print(
            f"kept {len(report.kept)} thread(s) written to while pruning (no longer old): "
            + ", ".join(c.id for c in report.kept),
            file=sys.stderr,
        )
    return 0


def cmd_erase_user(args: argparse.Namespace) -> int:
    store = open_store(args)
    progress = Progress("erasing")
    try:
        report = erase_user(store, args.identifier, threads=args.thread, progress=progress)
    finally:
        progress.close()
    records = report.user_file is not None or bool(report.other_records)
    found = records or report.threads
    summary = (
        f"erased {len(report.threads)} thread(s)"
        f" ({sum(c.steps for c in report.threads)} step(s),"
        f" {sum(c.elements for c in report.threads)} element(s))"
        + (" and the user's record" if records else "; no user record was found")
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
    if report.unattributed:
        print(
            f"skipped {len(report.unattributed)} thread(s) whose author nothing names any"
            " more (a lost manifest, and an index that lost it too): they may be the"
            " user's; look at each with `filelayer show ID`, and erase again"
            " naming those that are theirs with --thread ID: " + ", ".join(report.unattributed),
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
        stdout().write(history_command(report, prefix) + "\n")
    # Threads of a lost author are named above, not failed on: the erasure of what is
    # known to be the user's worked, and a script stopping on 1 would take it for not.
    return 0 if found and not report.still_writing else 1
