"""The view files of long threads, for the tests that check them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from filelayer import ArchiveStore


def view_path(root: Path, thread_id: str = "t1") -> Path:
    return root / "index" / "views" / f"{thread_id}.json"


def read_thread(root: Path, thread_id: str = "t1") -> dict[str, Any]:
    """The thread as a new process reads it first (a store opened for it, then closed)."""
    store = ArchiveStore(root)
    try:
        thread = store.get_thread(thread_id)
    finally:
        store.close()
    assert thread is not None
    return thread


def folded(root: Path, thread_id: str = "t1") -> dict[str, Any]:
    """What the thread reads as without any view: folded from its journal."""
    aside = root.parent / "views-aside"
    views = root / "index" / "views"
    if views.exists():
        shutil.move(str(views), str(aside))
    try:
        store = ArchiveStore(root)
        thread = store.get_thread(thread_id)
        store.close()
    finally:
        if aside.exists():
            shutil.rmtree(views, ignore_errors=True)
            shutil.move(str(aside), str(views))
    assert thread is not None
    return thread
