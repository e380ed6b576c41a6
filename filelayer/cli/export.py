"""``filelayer export``: threads to Markdown, HTML or JSON files, or to the terminal.

The rendering is :mod:`filelayer.export`'s; this module chooses the threads and writes
the files, leaving identical ones untouched.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..export.bundle import build, content
from ..export.markdown import file_stem, render_json
from ..progress import Progress
from ..store.archive import ArchiveStore
from ._common import UsageError, open_store, require_thread, selected, stdout


def cmd_export(args: argparse.Namespace) -> int:
    store = open_store(args)
    if args.threads and (args.all or args.user):
        raise UsageError("give thread ids, or --all / --user, not both")
    if args.threads:
        ids = list(args.threads)
    elif args.all or args.user or args.since or args.until:
        ids = [s.id for s in selected(store, args)]
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
            if args.threads:
                thread = require_thread(store, thread_id)
            else:  # listed a moment ago: deleted since, or a tombstone beside its files
                found = store.get_thread(thread_id)
                if found is None:
                    continue
                thread = found
            if args.output:
                _export_to(store, thread, Path(args.output), args.format)
            else:
                if args.format == "json":
                    text = render_json(thread)
                else:  # HTML: one page with its images inside (no directory for them)
                    html = args.format == "html"
                    text = build(store, thread, args.format, self_contained=html).text
                stdout().write(text if not written else "\n" + text)
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
