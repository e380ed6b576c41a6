"""Maintenance announces itself while it runs, and only then.

Every command that rewrites much of an archive holds ``locks/maintenance.lock`` shared
for its duration (see :mod:`filelayer.maintenance.announce`), which a serving process
notices with one non-blocking ``flock``: it then keeps its writes off its event loop.
These tests run the commands in this process and look, from inside the work they do,
with the same look a serving process makes (a ``flock`` on a descriptor of its own,
which a hold of this process excludes as another process's would).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from filelayer import ArchiveStore
from filelayer._io import locks as _locks
from filelayer.cli import main
from filelayer.format.layout import Layout
from filelayer.maintenance.announce import maintaining
from tests.support.cli import build_archive
from tests.support.processes import REPO, subprocess_env

pytestmark = pytest.mark.skipif(_locks.fcntl is None, reason="flock locks (POSIX)")


@pytest.fixture
def archive(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    build_archive(root).close()
    monkeypatch.setenv("FILELAYER_ROOT", str(root))
    return root


def announced(root: Path) -> bool:
    return _locks.announced(Layout(root).maintenance_lock)


def spy(
    monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, root: Path
) -> Callable[[], list[bool]]:
    """Wrap ``owner.name`` so that each call notes whether maintenance was announced
    while it ran."""
    seen: list[bool] = []
    original = getattr(owner, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        seen.append(announced(root))
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapped)
    return lambda: seen


def resolve(owner: str) -> Any:
    """A module, or a class of a module, by its dotted name."""
    import importlib

    module_name, _, last = owner.rpartition(".")
    if last[:1].isupper():
        return getattr(importlib.import_module(module_name), last)
    return importlib.import_module(owner)


_STORE = "filelayer.store.archive.ArchiveStore"


@pytest.mark.parametrize(
    ("argv", "method"),
    [
        (["reindex"], "filelayer.index.thread_index.ThreadIndex:rebuild"),
        (["reconcile"], "filelayer.store.heal:reconcile_changed"),
        (["compact"], "compact_journal"),
        (["verify", "--repair"], "read_manifest"),
        (["prune", "--before", "2099-01-01", "--yes"], "delete_thread"),
        (["erase-user", "alice@example.com"], "delete_thread"),
    ],
)
def test_commands_that_rewrite_much_announce_themselves(
    archive: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], method: str
) -> None:
    owner, _, name = method.rpartition(":")
    seen = spy(monkeypatch, resolve(owner or _STORE), name, archive)
    assert not announced(archive)
    main(argv)
    assert seen() and all(seen())
    assert not announced(archive)  # given back when the command ends


@pytest.mark.parametrize("argv", [["verify"], ["prune", "--before", "2099-01-01"], ["stats"]])
def test_commands_that_only_read_announce_nothing(
    archive: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    seen = spy(monkeypatch, ArchiveStore, "get_thread", archive)
    seen_index = spy(monkeypatch, ArchiveStore, "thread_ids", archive)
    main(argv)
    looks = seen() + seen_index()
    assert looks and not any(looks)


def test_the_git_hooks_announce_themselves(archive: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from filelayer.git import setup as gitsetup

    seen = spy(monkeypatch, gitsetup, "run_hook", archive)
    assert main(["git-hook", "post-checkout"]) == 0
    assert seen() == [True]
    assert not announced(archive)


def test_a_failed_command_gives_its_announcement_back(
    archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from filelayer.errors import StorageWriteError

    def fail(*args: Any, **kwargs: Any) -> int:
        raise StorageWriteError(archive / "index", OSError(28, "No space left on device"))

    monkeypatch.setattr(ArchiveStore, "reindex", fail)
    assert main(["reindex"]) == 2
    assert not announced(archive)


def test_maintainers_overlap_and_the_last_one_ends_it(archive: Path) -> None:
    """Any number of jobs announce at once (a shared hold); nested ones too."""
    layout = Layout(archive)
    with maintaining(layout):
        with maintaining(layout):
            assert announced(archive)
        assert announced(archive)
    assert not announced(archive)


def test_the_announcement_of_a_killed_process_ends_with_it(archive: Path) -> None:
    """The kernel drops a ``flock`` with its process: a maintainer killed in the
    middle of its job (no ``finally`` ran) leaves nothing announced, although the file
    stays."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from filelayer.format.layout import Layout;"
            " from filelayer.maintenance.announce import maintaining;"
            " maintaining(Layout(Path(sys.argv[1]))).__enter__(); print('held', flush=True);"
            " sys.stdin.read()",
            str(archive),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env(same_mode=True),
        cwd=REPO,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        assert announced(archive)
        holder.kill()
        holder.wait()
        assert Layout(archive).maintenance_lock.exists()
        assert not announced(archive)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_a_look_creates_nothing(tmp_path: Path) -> None:
    """A serving process looks without writing: no file, nothing announced."""
    layout = Layout(tmp_path / "nowhere")
    assert not _locks.announced(layout.maintenance_lock)
    assert not layout.locks.exists()


def test_a_copy_into_an_archive_announces_itself_there(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``filelayer copy`` writes every thread of its source into the destination: the
    apps serving the destination keep off their loop meanwhile. The source is only
    read: nothing is announced there."""
    from filelayer.transfer.archive import ArchiveEndpoint

    dest = tmp_path / "copy"
    seen: list[tuple[bool, bool]] = []
    original = ArchiveEndpoint.apply

    async def wrapped(self: ArchiveEndpoint, *args: Any, **kwargs: Any) -> Any:
        seen.append((announced(dest), announced(archive)))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(ArchiveEndpoint, "apply", wrapped)
    assert main(["copy", str(archive), str(dest)]) == 0
    assert seen and all(into and not source for into, source in seen)
    assert not announced(dest)


def test_a_dry_run_copy_announces_nothing(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dry run writes nothing: the destination's apps are left alone."""
    from filelayer.transfer.archive import ArchiveEndpoint

    dest = tmp_path / "copy"
    build_archive(dest).close()
    seen: list[bool] = []
    original = ArchiveEndpoint.close

    async def closing(self: ArchiveEndpoint) -> None:
        seen.append(announced(dest))
        await original(self)

    monkeypatch.setattr(ArchiveEndpoint, "close", closing)
    assert main(["copy", "--dry-run", str(archive), str(dest)]) in (0, 1)
    assert seen and not any(seen)
    assert not announced(dest)


def test_a_serving_process_announces_its_own_background_reconcile(archive: Path) -> None:
    """The reconcile a serving store starts by itself (after a crash, a ``git
    checkout``) reads every changed thread and rewrites their index rows, in a thread
    of the app's own process: its loop keeps off the disk meanwhile, as for another
    process's reconcile. Its own look sees its own hold (a ``flock`` excludes another
    descriptor of the same process)."""
    import threading

    from filelayer.store import heal

    seen: list[bool] = []
    release = threading.Event()
    original = heal.reconcile_changed

    def slow(store: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(announced(archive))
        release.wait(10)
        return original(store, *args, **kwargs)

    store = ArchiveStore(archive, heal="background")
    try:
        store.healer.page_served.set()  # no first sidebar page to wait for
        heal_module = pytest.MonkeyPatch()
        heal_module.setattr(heal, "reconcile_changed", slow)
        try:
            store.healer.start([], None, "a test asked")
            for _ in range(1000):
                if seen:
                    break
                threading.Event().wait(0.01)
            assert seen == [True]
            assert announced(archive)
            release.set()
            assert store.healer.wait(30)
        finally:
            release.set()
            heal_module.undo()
        assert not announced(archive)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("method", "owner", "inner"),
    [
        ("reindex", "filelayer.index.thread_index.ThreadIndex", "rebuild"),
        ("reconcile", "filelayer.store.heal", "reconcile_changed"),
    ],
)
def test_the_store_announces_its_own_rebuilds(
    archive: Path, monkeypatch: pytest.MonkeyPatch, method: str, owner: str, inner: str
) -> None:
    """A script (or a test harness) that rebuilds through the Python API rather than
    the ``filelayer`` command announces as the command does: the announcement is made
    where the work is, not by whoever asks for it."""
    seen = spy(monkeypatch, resolve(owner), inner, archive)
    store = ArchiveStore(archive)
    try:
        getattr(store, method)()
    finally:
        store.close()
    assert seen() and all(seen())
    assert not announced(archive)


def test_compacting_a_thread_through_the_api_announces(
    archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A script that compacts every thread itself, one ``compact_thread`` at a time,
    is announced for nearly all of its run (a look between two threads may miss it)."""
    from filelayer.maintenance.compact import compact_thread

    seen = spy(monkeypatch, ArchiveStore, "compact_journal", archive)
    store = ArchiveStore(archive)
    try:
        for thread_id in store.thread_ids():
            compact_thread(store, thread_id)
    finally:
        store.close()
    assert seen() and all(seen())
    assert not announced(archive)


def test_the_reconcile_a_store_runs_as_it_opens_is_announced(
    archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that died leaves its session file unlocked; the next store to open
    reconciles there and then (``heal="wait"``, the default): that is the long part of
    ``filelayer reconcile`` after a crash, and it is announced as the rest is."""
    seen = spy(monkeypatch, resolve("filelayer.store.heal"), "reconcile_changed", archive)
    index_dir = Layout(archive).index_dir
    (index_dir / "writer-0123456789abcdef.lock").write_bytes(b"")  # nobody holds it
    store = ArchiveStore(archive)
    store.close()
    assert seen() and all(seen())
    assert not announced(archive)


def test_a_forked_child_does_not_keep_the_announcement(archive: Path) -> None:
    """A ``flock`` belongs to the open file, which a forked child shares: closing the
    parent's descriptor alone would leave the archive announced for as long as the
    child lives (a worker pool forked while the background reconcile ran: every
    serving process would keep off its loop for good)."""
    import os

    if not hasattr(os, "fork"):
        pytest.skip("no fork here")
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    with maintaining(Layout(archive)):
        pid = os.fork()
        if pid == 0:  # the child: wait to be told, then leave at once
            try:
                os.write(ready_w, b"x")
                os.read(go_r, 1)
            finally:
                os._exit(0)
        os.read(ready_r, 1)
    try:
        assert not announced(archive)
    finally:
        os.write(go_w, b"x")
        os.waitpid(pid, 0)
        for fd in (ready_r, ready_w, go_r, go_w):
            os.close(fd)


def test_maintenance_goes_on_when_it_cannot_announce(
    archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The announcement is advisory: a lock file that cannot be opened (no descriptor
    left, a read-only ``locks/``) leaves the job unannounced, never undone."""
    from filelayer.errors import StorageWriteError

    original = _locks._open_lock_file

    def refuse(path: Path) -> int:
        if path == Layout(archive).maintenance_lock:
            raise StorageWriteError(path, OSError(24, "Too many open files"))
        return original(path)

    monkeypatch.setattr(_locks, "_open_lock_file", refuse)
    store = ArchiveStore(archive)
    try:
        assert store.reindex() > 0
        store.reconcile()
    finally:
        store.close()
