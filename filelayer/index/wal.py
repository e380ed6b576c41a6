"""Folding the index's write-ahead log back into the database, in a thread of its own,
so that no commit waits for a checkpoint."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from urllib.parse import quote


class _Checkpointer:
    """Folds the write-ahead log back into the database from a thread of its own.

    SQLite would do it inside whichever commit makes the log reach 1,000 pages: copying
    megabytes and two ``fsync`` calls, milliseconds that one write (on the event loop)
    would wait for. A passive checkpoint waits for nobody and nobody waits for it.
    """

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self.wanted = threading.Event()
        self.stopped = False
        self.thread = threading.Thread(
            target=self._run, name="filelayer-index-checkpoint", daemon=True
        )
        self.thread.start()

    def alive(self) -> bool:
        return self.thread.is_alive() and not self.stopped

    def stop(self) -> None:
        self.stopped = True
        self.wanted.set()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(
                f"file:{quote(str(self.path))}?mode=rw",
                uri=True,
                timeout=self.timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error:
            return
        try:
            while True:
                self.wanted.wait()
                self.wanted.clear()
                if self.stopped:
                    return
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            conn.close()
