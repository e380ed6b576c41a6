"""The commands that rewrite a whole archive run, as programs, at a lower CPU priority:
on a machine of few cores a rebuild otherwise takes the core a serving app's event loop
waits for. A caller of ``main`` keeps its own priority."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from filelayer.store.archive import ArchiveStore

pytestmark = pytest.mark.skipif(not hasattr(os, "nice"), reason="no os.nice here")

# Runs a command as `python -m filelayer` would, and prints the priority it ended at
# (the command's own process: the same one, so os.nice(0) tells it).
_PROGRAM = textwrap.dedent(
    """
    import os, sys
    from filelayer.cli import main
    sys.argv = ["filelayer", *sys.argv[1:]]
    code = main()
    policy = os.sched_getscheduler(0) if hasattr(os, "sched_getscheduler") else -1
    print("nice", os.nice(0), code, policy)
    """
)

_CALLER = textwrap.dedent(
    """
    import os, sys
    from filelayer.cli import main
    code = main(sys.argv[1:])
    policy = os.sched_getscheduler(0) if hasattr(os, "sched_getscheduler") else -1
    print("nice", os.nice(0), code, policy)
    """
)


def _archive(tmp_path: Path) -> Path:
    root = tmp_path / "chats"
    store = ArchiveStore(root)
    store.write_step({"id": "s1", "threadId": "t1", "type": "user_message", "output": "hi"})
    store.close()
    return root


def _run(code: str, *args: str) -> tuple[int, int, int]:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    line = [x for x in done.stdout.splitlines() if x.startswith("nice ")][-1]
    _, nice, exit_code, policy = line.split()
    return int(nice), int(exit_code), int(policy)


def _normal_policy() -> int:
    return os.sched_getscheduler(0) if hasattr(os, "sched_getscheduler") else -1


@pytest.mark.parametrize("command", ["reindex", "reconcile", "compact"])
def test_rewriting_commands_run_at_a_lower_priority(tmp_path: Path, command: str) -> None:
    root = _archive(tmp_path)
    before = os.nice(0)
    nice, code, _ = _run(_PROGRAM, "--root", str(root), command)
    assert code == 0
    assert nice > before


@pytest.mark.skipif(not hasattr(os, "sched_getscheduler"), reason="no scheduling classes")
@pytest.mark.parametrize("command", ["reindex", "compact"])
def test_rewriting_commands_stay_in_the_normal_scheduling_class(
    tmp_path: Path, command: str
) -> None:
    """Never the idle class: a job in it can be starved outright while every core is
    busy, and it holds a thread's lock while it rewrites that thread's journal; the
    app's writes, queued one after another while maintenance is announced, would all
    wait behind the one that waits for it."""
    root = _archive(tmp_path)
    _, code, policy = _run(_PROGRAM, "--root", str(root), command)
    assert code == 0
    assert policy == _normal_policy()


def test_reading_commands_keep_their_priority(tmp_path: Path) -> None:
    root = _archive(tmp_path)
    nice, code, policy = _run(_PROGRAM, "--root", str(root), "list")
    assert code == 0
    assert nice == os.nice(0)
    assert policy == _normal_policy()


def test_a_caller_of_main_keeps_its_priority(tmp_path: Path) -> None:
    root = _archive(tmp_path)
    nice, code, policy = _run(_CALLER, "--root", str(root), "reindex")
    assert code == 0
    assert nice == os.nice(0)
    assert policy == _normal_policy()
