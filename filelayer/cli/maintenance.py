"""The maintenance commands: ``reindex``, ``reconcile``, ``verify`` and ``compact``.

Each runs one :mod:`filelayer.maintenance` or store operation over the archive, with
progress on the terminal and a one-line summary on standard error. Those that rewrite
much (``reindex``, ``reconcile``, ``compact``, ``verify --repair``) announce themselves
as maintenance while they run (:mod:`filelayer.maintenance.announce`), so that a serving
app keeps its writes off its event loop meanwhile.
"""

from __future__ import annotations

import argparse
import sys

from ..maintenance.announce import maintaining
from ..maintenance.compact import compact_thread
from ..maintenance.verify import verify
from ..progress import Progress
from ._common import given_ids, open_store, printable, require_thread, stdout


def cmd_reindex(args: argparse.Namespace) -> int:
    store = open_store(args)
    progress = Progress("indexing")
    try:
        count = store.reindex(progress=progress)  # announces itself
    finally:
        progress.close()
    print(f"indexed {count} thread(s)", file=sys.stderr)
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    store = open_store(args)
    progress = Progress("reconciling")
    try:
        done = store.reconcile(progress=progress)  # announces itself
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
        stdout().write(f"{printable(problem)}\n")
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
    named = given_ids(args.threads)
    for thread_id in named:
        require_thread(store, thread_id)  # refuses unknown ids with a clear message
    # Without names: every directory there now. One being created or deleted while this
    # runs has no journal to fold, which is not a problem.
    ids = named or store.thread_ids()
    changed = skipped = saved = 0
    progress = Progress("compacting")
    try:
        with maintaining(store.layout):
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
