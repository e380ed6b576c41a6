"""The lock files: re-entrant in a thread, exclusive between threads and processes, and a
``no_wait`` mode that reports a lock held elsewhere instead of sleeping on it."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from filelayer._io import locks as _locks
from filelayer.errors import ArchiveLockTimeout

pytestmark = pytest.mark.skipif(_locks.fcntl is None, reason="flock locks (POSIX)")

HOLDER = (
    "import fcntl, sys, time\n"
    "f = open(sys.argv[1], 'a')\n"
    "fcntl.flock(f, fcntl.LOCK_EX)\n"
    "print('held', flush=True)\n"
    "sys.stdin.readline()\n"
)


@pytest.fixture
def held_elsewhere(tmp_path: Path) -> Iterator[Path]:
    """A lock file that another process holds until the test ends."""
    path = tmp_path / "locks" / "a.lock"
    path.parent.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    try:
        yield path
    finally:
        holder.kill()
        holder.wait()


def test_a_thread_takes_a_lock_it_holds_again(tmp_path: Path) -> None:
    path = tmp_path / "a.lock"
    with _locks.locked(path, 0.2), _locks.locked(path, 0.2):
        pass
    with _locks.locked_all([path, tmp_path / "b.lock", path], 0.2):
        pass
    # Released for real: another thread takes it at once.
    done = []
    t = threading.Thread(target=lambda: done.append(_locks.locked(path, 0.2).__enter__()))
    t.start()
    t.join()
    assert done == [None]


def test_two_threads_exclude_each_other(tmp_path: Path) -> None:
    path = tmp_path / "a.lock"
    inside = threading.Event()
    leave = threading.Event()

    def hold() -> None:
        with _locks.locked(path, 5):
            inside.set()
            # Until the main thread is done with its checks: a few seconds could run out
            # first on a loaded machine, and the lock would be free when they run.
            leave.wait(120)  # a bound for a stuck test, not a timing claim

    t = threading.Thread(target=hold)
    t.start()
    assert inside.wait(120)
    with pytest.raises(_locks.LockBusy), _locks.no_wait(), _locks.locked(path, 5):
        pass
    with pytest.raises(ArchiveLockTimeout), _locks.locked(path, 0.05):
        pass
    leave.set()
    t.join()
    with _locks.no_wait(), _locks.locked(path, 5):
        pass


def test_no_wait_raises_before_anything_is_held(held_elsewhere: Path, tmp_path: Path) -> None:
    free = tmp_path / "free.lock"
    with (
        pytest.raises(_locks.LockBusy) as raised,
        _locks.no_wait(),
        _locks.locked_all([free, held_elsewhere], 5),
    ):
        pytest.fail("entered")
    assert raised.value.path == held_elsewhere
    # The free lock taken first was given back.
    assert _locks.is_free(free)
    assert not _locks.is_free(held_elsewhere)


def test_inside_a_call_a_further_lock_is_waited_for(held_elsewhere: Path, tmp_path: Path) -> None:
    """``no_wait`` covers the locks that open a call; once inside, the call waits (and
    here times out) rather than stopping half-way."""
    with (
        _locks.no_wait(),
        _locks.locked(tmp_path / "first.lock", 5),
        pytest.raises(ArchiveLockTimeout),
        _locks.locked(held_elsewhere, 0.05),
    ):
        pass


def test_hold_takes_a_lock_ahead_of_the_call(tmp_path: Path) -> None:
    path = tmp_path / "a.lock"
    ahead = _locks.hold(path, 1)
    with _locks.no_wait(), _locks.locked(path, 1):
        pass  # found held by this thread
    assert not _free_in_another_thread(path)
    ahead.release()
    assert _free_in_another_thread(path)


def _free_in_another_thread(path: Path) -> bool:
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(_locks.is_free(path)))
    t.start()
    t.join()
    return result[0]


def test_a_lock_file_removed_behind_our_back_is_made_again(tmp_path: Path) -> None:
    """When ``locks/`` is deleted, another process locks a new file at the same path,
    and so must we."""
    path = tmp_path / "locks" / "a.lock"
    with _locks.locked(path, 1):
        pass
    (tmp_path / "locks" / "a.lock").unlink()
    (tmp_path / "locks").rmdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import os, sys; os.makedirs(sys.argv[2], exist_ok=True)\n" + HOLDER,
         str(path), str(path.parent)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(_locks.LockBusy), _locks.no_wait(), _locks.locked(path, 1):
            pass
    finally:
        holder.kill()
        holder.wait()
    with _locks.locked(path, 1):
        pass


def _child_tries(path: str, queue: multiprocessing.Queue[str]) -> None:
    try:
        with _locks.no_wait(), _locks.locked(Path(path), 1):
            queue.put("took it")
    except _locks.LockBusy:
        queue.put("busy")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_does_not_share_its_parents_locks(tmp_path: Path) -> None:
    """A child forked while its parent holds a lock does not take it for its own."""
    path = tmp_path / "a.lock"
    ctx = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[str] = ctx.Queue()
    with _locks.locked(path, 1):
        child = ctx.Process(target=_child_tries, args=(str(path), queue))
        child.start()
        answer = queue.get(timeout=30)
        child.join(30)
    assert answer == "busy"
