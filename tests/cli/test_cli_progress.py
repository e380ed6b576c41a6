"""Progress shows on a terminal and stays out of pipes."""

from __future__ import annotations

import io
import os
import pty
import select

from filelayer.progress import Progress


def test_progress_draws_on_a_terminal() -> None:
    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as terminal:
            progress = Progress("indexing", stream=terminal)
            for n in range(1, 4):
                progress(n, 3)
            progress.close()
        shown = ""
        while select.select([master], [], [], 1.0)[0]:  # read until the terminal is quiet
            shown += os.read(master, 4096).decode()
            if shown.endswith("\x1b[K"):
                break
    finally:
        os.close(master)
        os.close(slave)
    assert "indexing: 3/3" in shown
    assert shown.endswith("\r\x1b[K")


def test_progress_is_silent_when_piped() -> None:
    pipe = io.StringIO()
    progress = Progress("indexing", stream=pipe)
    for n in range(1, 100):
        progress(n, 99)
    progress.close()
    assert pipe.getvalue() == ""
