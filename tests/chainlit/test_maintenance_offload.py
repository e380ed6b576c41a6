"""While another process maintains the archive, no write runs on the event loop (issue
#11, item 1, in the ``flush`` mode).

A maintenance command (``reindex``, ``compact``, ``verify --repair``...) writes a lot:
the kernel then makes every writer of the file system wait now and then, the serving
process too, for tens of milliseconds inside an ordinary ``write``. So maintenance
announces itself (a shared ``flock`` on ``locks/maintenance.lock``), and while it is
announced the adapter runs the ``flush`` mode's writes in its worker lane, as it runs the
``fsync`` mode's, and its reads in a worker thread.

Each test has another process (a real one) hold the announcement, and tells where the
store's calls ran by the thread that ran them: never by timing. The adapter looks at the
announcement at most every ``probe_every`` seconds; the tests set it to 0 (every call
looks) so that what they check does not depend on the clock.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chainlit")

from filelayer._io import locks as _locks
from filelayer.format.layout import Layout
from tests.support.processes import REPO, subprocess_env

pytestmark = pytest.mark.skipif(_locks.fcntl is None, reason="flock locks (POSIX)")

MODES = ["fast", "pure"]

HOLDER = """
import sys
from pathlib import Path
from filelayer._backend import PURE
from filelayer.format.layout import Layout
from filelayer.maintenance.announce import maintaining

announcement = maintaining(Layout(Path(sys.argv[1])))
announcement.__enter__()
print("held pure" if PURE else "held fast", flush=True)
for line in sys.stdin:
    if line.strip() == "release":
        announcement.__exit__(None, None, None)
        print("released", flush=True)
"""


class Maintainer:
    """Another process that announces maintenance of ``root`` until told to stop (or
    killed), in the fast or the zero-dependency mode."""

    def __init__(self, root: Path, mode: str) -> None:
        env = subprocess_env(**({"FILELAYER_PURE": "1"} if mode == "pure" else {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == f"held {mode}"

    def release(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("release\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "released"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def maintainers(root: Path) -> Iterator[Callable[[str], Maintainer]]:
    started: list[Maintainer] = []

    def start(mode: str = "fast") -> Maintainer:
        m = Maintainer(root, mode)
        started.append(m)
        return m

    yield start
    for m in started:
        m.close()


class Where:
    """Which thread ran each call of a store method (the method wrapped in place)."""

    def __init__(self, store: Any, name: str) -> None:
        self.ran: list[tuple[str, int]] = []
        original = getattr(store, name)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.ran.append((self.key(args, kwargs), threading.get_ident()))
            return original(*args, **kwargs)

        setattr(store, name, wrapped)

    @staticmethod
    def key(args: Any, kwargs: Any) -> str:
        first = args[0] if args else next(iter(kwargs.values()), "")
        return str(first.get("id")) if isinstance(first, dict) else str(first)

    def threads(self) -> list[int]:
        return [ident for _, ident in self.ran]


@pytest.fixture
async def layer(root: Path, in_tmp: Path) -> AsyncIterator[Any]:
    """A flush-mode layer that looks at the announcement on every call."""
    from chainlit.context import init_http_context

    from filelayer import FileDataLayer

    init_http_context()
    layer = FileDataLayer(root, durability="flush")
    layer.calls.probe_every = 0.0
    await layer.update_thread("t1", name="first")
    await layer.create_step(message("q1", "hi"))
    yield layer
    await layer.close()


def message(step_id: str, output: str, thread_id: str = "t1") -> dict[str, Any]:
    return {
        "id": step_id,
        "threadId": thread_id,
        "type": "assistant_message",
        "output": output,
        "createdAt": "2026-01-01T00:00:00.000000Z",
    }


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (no time limit of its own: the
    test's 60 s waits bound it)."""
    while not condition():
        await asyncio.sleep(0.001)


async def outputs(layer: Any, thread_id: str = "t1") -> list[str]:
    thread = await layer.get_thread(thread_id)
    assert thread is not None
    return [s["id"] for s in thread["steps"]]


@pytest.mark.parametrize("mode", MODES)
async def test_writes_leave_the_loop_while_another_process_maintains(
    layer: Any, maintainers: Callable[[str], Maintainer], mode: str
) -> None:
    loop_thread = threading.get_ident()
    where = Where(layer.store, "write_step")
    await layer.create_step(message("a1", "before"))
    maintainer = maintainers(mode)
    await layer.create_step(message("a2", "during"))
    await layer.update_step(message("a2", "during, updated"))
    maintainer.release()
    await layer.create_step(message("a3", "after"))
    ran = where.threads()
    assert ran[0] == loop_thread
    assert ran[1] != loop_thread and ran[2] != loop_thread
    assert ran[3] == loop_thread
    assert await outputs(layer) == ["q1", "a1", "a2", "a3"]


@pytest.mark.parametrize("mode", MODES)
async def test_a_killed_maintainer_does_not_keep_writes_off_the_loop(
    layer: Any, maintainers: Callable[[str], Maintainer], mode: str
) -> None:
    loop_thread = threading.get_ident()
    where = Where(layer.store, "write_step")
    maintainer = maintainers(mode)
    await layer.create_step(message("a1", "during"))
    maintainer.kill()  # no release: the kernel drops its lock with the process
    await layer.create_step(message("a2", "after"))
    assert where.threads()[0] != loop_thread
    assert where.threads()[1] == loop_thread
    assert await outputs(layer) == ["q1", "a1", "a2"]


async def test_several_maintainers_at_once(
    layer: Any, maintainers: Callable[[str], Maintainer]
) -> None:
    """Two maintenance commands run together; the writes come back to the loop only
    when the last of them ends."""
    loop_thread = threading.get_ident()
    where = Where(layer.store, "write_step")
    first, second = maintainers("fast"), maintainers("pure")
    await layer.create_step(message("a1", "both"))
    first.release()
    await layer.create_step(message("a2", "one left"))
    second.kill()
    await layer.create_step(message("a3", "none"))
    ran = where.threads()
    assert ran[0] != loop_thread and ran[1] != loop_thread
    assert ran[2] == loop_thread


async def test_reads_leave_the_loop_while_another_process_maintains(
    layer: Any, maintainers: Callable[[str], Maintainer]
) -> None:
    from chainlit.types import Pagination, ThreadFilter

    loop_thread = threading.get_ident()
    pages = Where(layer.store, "list_threads")
    threads = Where(layer.store, "get_thread")
    maintainer = maintainers("fast")
    page = await layer.list_threads(Pagination(first=5), ThreadFilter())
    assert [t["id"] for t in page.data] == ["t1"]
    assert await outputs(layer) == ["q1"]
    maintainer.release()
    await layer.list_threads(Pagination(first=5), ThreadFilter())
    assert await outputs(layer) == ["q1"]
    assert pages.threads()[0] != loop_thread and threads.threads()[0] != loop_thread
    assert pages.threads()[1] == loop_thread and threads.threads()[1] == loop_thread


async def test_writes_keep_their_order_across_the_end_of_maintenance(
    layer: Any, maintainers: Callable[[str], Maintainer]
) -> None:
    """Writes queued in the lane when maintenance ends are not overtaken: the writes
    made next queue behind them, and run on the loop again once the lane is empty."""
    loop_thread = threading.get_ident()
    store = layer.store
    gate, entered = threading.Event(), threading.Event()
    original = store.write_step
    ran: list[tuple[str, int]] = []

    def write_step(step: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if step["id"] == "a1" and not gate.is_set():
            assert threading.get_ident() != loop_thread, "a1 ran on the loop"
            entered.set()
            assert gate.wait(60)  # the lane is busy until the test lets it go
        ran.append((step["id"], threading.get_ident()))
        return original(step, *args, **kwargs)

    store.write_step = write_step
    maintainer = maintainers("fast")
    queued = [asyncio.ensure_future(layer.create_step(message(f"a{n}", "x"))) for n in (1, 2, 3)]
    assert await asyncio.to_thread(entered.wait, 60)  # a1 runs in the lane, and waits
    await until(lambda: layer.calls.queued == 3)
    maintainer.release()
    # Maintenance is over, but a1..a3 still wait in the lane: these must not pass them.
    later = [asyncio.ensure_future(layer.create_step(message(f"a{n}", "y"))) for n in (4, 5)]
    later.append(asyncio.ensure_future(layer.update_step(message("a1", "z"))))
    await until(lambda: layer.calls.queued == 6)
    assert not ran  # nothing ran: a1 holds the lane, the rest queue behind it
    gate.set()
    await asyncio.wait_for(asyncio.gather(*queued, *later), 60)
    assert [step for step, _ in ran] == ["a1", "a2", "a3", "a4", "a5", "a1"]
    assert all(ident != loop_thread for _, ident in ran)
    thread = await layer.get_thread("t1")
    assert thread is not None
    assert [(s["id"], s["output"]) for s in thread["steps"]] == [
        ("q1", "hi"),
        ("a1", "z"),
        ("a2", "x"),
        ("a3", "x"),
        ("a4", "y"),
        ("a5", "y"),
    ]
    # The lane is empty and nobody maintains: back on the loop.
    await layer.create_step(message("a6", "inline"))
    assert ran[-1] == ("a6", loop_thread)


async def test_the_announcement_is_looked_at_once_per_interval(
    layer: Any, maintainers: Callable[[str], Maintainer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write does not pay for a look at the lock file every time: at most once per
    ``probe_every`` (the clock is the adapter's monotonic one, stubbed here)."""
    from filelayer.chainlit import offload

    looks: list[Path] = []
    real = _locks.announced

    def announced(path: Path) -> bool:
        looks.append(path)
        return real(path)

    now = [time.monotonic() + 10.0]  # later than every look the fixture made
    monkeypatch.setattr(offload._locks, "announced", announced)
    monkeypatch.setattr(offload, "_clock", lambda: now[0])
    layer.calls.probe_every = 0.1
    for n in range(10):
        await layer.create_step(message(f"b{n}", "x"))
    assert len(looks) == 1
    assert looks[0] == layer.store.layout.maintenance_lock
    now[0] += 0.1
    await layer.create_step(message("b10", "x"))
    assert len(looks) == 2


CHILD = """
import asyncio, json, sys, threading
from pathlib import Path
from chainlit.context import init_http_context
from filelayer import FileDataLayer
from filelayer._backend import PURE

async def main() -> None:
    init_http_context()
    layer = FileDataLayer(Path(sys.argv[1]), durability="flush")
    layer.calls.probe_every = 0.0
    ran = []
    original = layer.store.write_step
    def write_step(step, *a, **k):
        ran.append(threading.get_ident() == loop)
        return original(step, *a, **k)
    layer.store.write_step = write_step
    loop = threading.get_ident()
    step = {"id": "c1", "threadId": "t9", "type": "run", "output": ""}
    await layer.create_step(step)
    print(json.dumps({"pure": PURE, "on_loop": ran}), flush=True)
    sys.stdin.readline()  # the test stops maintaining
    await layer.create_step({**step, "output": "done"})
    print(json.dumps({"pure": PURE, "on_loop": ran}), flush=True)
    await layer.close()

asyncio.run(main())
"""


@pytest.mark.parametrize("mode", MODES)
def test_a_serving_process_in_either_mode_behaves_the_same(
    root: Path, tmp_path: Path, maintainers: Callable[[str], Maintainer], mode: str
) -> None:
    """The serving side, in a process of the fast or the zero-dependency mode (whatever
    mode this test run is in), with the maintainer in the other one."""
    from filelayer import ArchiveStore

    ArchiveStore(root).close()
    maintainer = maintainers("pure" if mode == "fast" else "fast")
    env = subprocess_env(**({"FILELAYER_PURE": "1"} if mode == "pure" else {}))
    work = tmp_path / "child"
    work.mkdir()  # importing Chainlit writes into the current directory
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=work,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        during = json.loads(child.stdout.readline())
        maintainer.release()
        child.stdin.write("go\n")
        child.stdin.flush()
        after = json.loads(child.stdout.readline())
        assert child.wait(60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert during == {"pure": mode == "pure", "on_loop": [False]}
    assert after == {"pure": mode == "pure", "on_loop": [False, True]}


def test_the_announcement_is_a_derived_lock_file(root: Path) -> None:
    """It lives in ``locks/``, which git ignores, beside the other lock files."""
    from filelayer import ArchiveStore

    store = ArchiveStore(root)
    store.close()
    layout = Layout(root)
    assert layout.maintenance_lock.parent == layout.locks
    assert "/locks/" in (root / ".gitignore").read_text()
