"""Read an archive the way the conformance corpus records it: ``python read_archive.py
ARCHIVE OUT`` writes into the directory ``OUT`` (see docs/format.md, "Conformance
corpus"):

- ``threads/<thread id>.json``: each thread that reads as a thread, exactly as
  ``filelayer export <thread id> --format json`` prints it;
- ``archive.json``: what the archive says besides its threads.

It uses filelayer's public API only, so it runs in either mode (``FILELAYER_PURE=1`` or
not). It reads a copy: opening an archive brings its own files (``.gitignore``, the
derived index) up to date. Another implementation writes the same two things from the
same archive, and compares.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from filelayer import ArchiveStore
from filelayer.export.markdown import render_json
from filelayer.format import journal


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def reading(archive: Path) -> dict[str, str]:
    """The corpus files for ``archive`` (relative path -> text), read from a copy."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "archive"
        shutil.copytree(archive, root, symlinks=True)
        return _read(root)


def _read(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    store = ArchiveStore(root, create=False)
    try:
        store.reindex()  # the index is derived: the answer is the one it gives rebuilt
        found, not_found = [], []
        element_files: dict[str, Any] = {}
        damaged: dict[str, list[int]] = {}
        for thread_id in store.thread_ids():
            thread = store.get_thread(thread_id)
            if thread is None:
                not_found.append(thread_id)
                continue
            found.append(thread_id)
            out[f"threads/{thread_id}.json"] = render_json(thread)
            bad = journal.read(root / "threads" / thread_id / journal.JOURNAL_NAME).bad_lines
            if bad:
                damaged[thread_id] = bad
            for element in thread["elements"]:
                located = store.element_file(thread_id, element["id"])
                if located is not None:
                    record, path = located
                    element_files[f"{thread_id}/{element['id']}"] = {
                        "file": record["file"],
                        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                    }
        users = {u["identifier"]: u for u in store.iter_users()}
        readable = {i: store.get_user(i) for i in users}
        listed, _ = store.list_threads(user_id=None, first=1000)
        out["archive.json"] = _json(
            {
                "threads": found,
                "notFound": not_found,
                "deleted": sorted(store.deleted_threads()),
                "damagedLines": damaged,
                "elementFiles": element_files,
                "users": {i: u for i, u in readable.items() if u is not None},
                "list": [{"id": t["id"], "activity": t["createdAt"]} for t in listed],
            }
        )
    finally:
        store.close()
    return out


def write(files: dict[str, str], out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    for relative, text in sorted(files.items()):
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8", newline="\n")


def read_tree(directory: Path) -> dict[str, str]:
    return {
        p.relative_to(directory).as_posix(): p.read_text("utf-8")
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    write(reading(Path(argv[0])), Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
