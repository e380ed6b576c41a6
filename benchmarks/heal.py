"""The index heals itself: what it costs at opening, and how long until it is whole.

``python -m benchmarks.heal --threads 10000`` builds an archive of that many threads (the
benchmark's own conversations, :mod:`benchmarks.archives`), then measures, each in a
fresh process with the archive's files dropped from the page cache first (and again warm):

- ``clean``: a clean start. Open + the heaviest user's first sidebar page, the
  cold-start target (no reconcile runs);
- ``crash``: a writer died (its session file left behind) after writing ``--changed``
  threads whose index rows were lost. Open + first page (the app's store reconciles in
  the background), then the time until the reconcile is done, which is the bound the
  format doc states, and how many threads it read;
- ``missing``: no index at all (``--missing``, slow at 100k): open + first page on the
  new empty index, then the time until it is filled.

Figures are printed as one JSON object per scenario. Nothing is kept: the archive lives
in a temporary directory (``--keep DIR`` builds it there once and reuses it).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .archives import ArchiveSpec, build_file_archive
from .measure import evict

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
from filelayer import ArchiveStore
t0 = time.perf_counter()
store = ArchiveStore(sys.argv[1], heal="background")
threads, _ = store.list_threads(user_id=sys.argv[2], first=35)
t1 = time.perf_counter()
store.wait_healed()
t2 = time.perf_counter()
last = store.healer.last
print(json.dumps({
    "open_first_page_ms": round((t1 - t0) * 1000, 1),
    "page_items": len(threads),
    "healed_after_s": round(t2 - t0, 2),
    "reconcile_s": None if last is None else round(last.seconds, 2),
    "threads_read": None if last is None else last.read,
    "threads": None if last is None else last.threads,
}))
store.close()
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def build(root: Path, spec: ArchiveSpec) -> None:
    """The archive as a live server leaves it: thread files, the index, and the
    watermark of every thread (the builder writes the index records itself, as the
    store does, but not the watermarks its writes would have moved)."""
    from filelayer import ArchiveStore
    from filelayer.store.heal import watermark

    build_file_archive(root, spec)
    store = ArchiveStore(root)
    marks = [(t, watermark(store, t)) for t in store.thread_ids()]
    name = (root / "index" / "current").read_text().strip()
    store.close()
    with sqlite3.connect(root / "index" / name) as db:
        db.executemany("INSERT OR REPLACE INTO marks (id, mark) VALUES (?, ?)", marks)


def crash(root: Path, changed: int) -> None:
    """A writer that died: its session file is left, and ``changed`` threads got a
    message whose index rows never landed."""
    (root / "index" / f"writer-{secrets.token_hex(8)}.lock").touch()
    threads = sorted(p for p in (root / "threads").iterdir() if p.is_dir())
    step = len(threads) // changed
    at = "2030-01-01T00:00:00.000000Z"
    for n, path in enumerate(threads[::step][:changed]):
        line = {
            "step": {
                "id": f"late-{n}",
                "threadId": path.name,
                "type": "user_message",
                "output": "a message the index never heard of",
                "createdAt": at,
            }
        }
        with open(path / "steps.jsonl", "a") as f:
            f.write(json.dumps(line, separators=(",", ":")) + "\n")


def run(root: Path, user_id: str, cold: bool) -> dict[str, Any]:
    if cold:
        evict("file", str(root))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), user_id],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    result["cache"] = "cold" if cold else "warm"
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=10_000)
    parser.add_argument("--changed", type=int, default=20)
    parser.add_argument("--missing", action="store_true", help="also: no index at all")
    parser.add_argument("--keep", metavar="DIR", help="build the archive here once, reuse it")
    args = parser.parse_args(argv)
    spec = ArchiveSpec(args.threads)
    user_id = spec.user_id(spec.identifiers[0])
    tmp = None
    if args.keep:
        root = Path(args.keep)
    else:
        tmp = tempfile.mkdtemp(prefix="filelayer-heal-")
        root = Path(tmp) / "chats"
    try:
        if not (root / "index" / "current").exists():
            log(f"building {args.threads} threads in {root}")
            build(root, spec)
        log("clean start")
        for cold in (True, False):
            print(json.dumps({"scenario": "clean", **run(root, user_id, cold)}), flush=True)
        log(f"a dead writer, {args.changed} threads behind")
        for cold in (True, False):
            crash(root, args.changed)
            print(json.dumps({"scenario": "crash", **run(root, user_id, cold)}), flush=True)
        if args.missing:
            log("no index")
            shutil.rmtree(root / "index")
            print(json.dumps({"scenario": "missing", **run(root, user_id, True)}), flush=True)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
