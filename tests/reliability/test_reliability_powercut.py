"""Power cuts: every call acknowledged in the ``fsync`` mode survives every state a power
cut may leave, and the ``flush`` mode loses at most its last second.

The crash suite kills processes, which the page cache survives. Here the workloads'
real system calls are recorded with strace and replayed on a model of what a file
system keeps after a power cut (``powercut.py`` explains the model); each crash state
is materialised, opened with the store, repaired with ``verify --repair`` and compared
with the contract after the acknowledged calls. The workloads make every kind of write
(users, threads created and renamed, steps, feedback, elements, deletions) while
compactions and reindexes run meanwhile (in another thread, or as ``filelayer compact``
and ``filelayer reindex`` processes), through ``ArchiveStore`` and through
``FileDataLayer`` (element bytes written from threads in the fast mode).

``.ci/run`` runs a reduced set with the fixed seed (the same workloads, and the same
draws choosing the states); ``FILELAYER_STRESS=1`` the full one with a new seed, which
a failure prints (``FILELAYER_SEED`` replays it). A missing or forbidden tracer is a
failure with its reason, never a skip, on Linux.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.powercut import (
    Report,
    Spec,
    TraceError,
    explore,
    read_trace,
    replay_trace,
    strace_command,
    trace_scripts,
    tracer_problem,
)
from tests.support.reliability import have_chainlit, scaled, seed

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the explorer records with strace (Linux)"
)


def require_tracer() -> None:
    problem = tracer_problem()
    if problem:
        pytest.fail(problem, pytrace=False)


def spec_for(tmp_path: Path, durability: str, backend: str, **extra: object) -> Spec:
    base = tmp_path / "base"
    base.mkdir()
    values: dict[str, object] = {
        "base": os.path.realpath(base),
        "ack_path": os.path.realpath(tmp_path) + "/acks.log",
        "durability": durability,
        "backend": backend,
        "seed": seed(),
        "extra": scaled(12, 150),
    }
    values.update(extra)
    return Spec(**values)  # type: ignore[arg-type]


def assert_nothing_lost(report: Report) -> None:
    print(report.summary())
    assert not report.violations, f"{report.summary()} (seed {report.spec.seed})\n" + "\n".join(
        report.violations[:25]
    )
    assert report.acknowledged == report.calls + 1
    assert report.states >= report.cuts  # every cut was checked, at least in one state


BACKENDS = [
    "store",
    pytest.param(
        "layer",
        marks=pytest.mark.skipif(not have_chainlit(), reason="FileDataLayer needs Chainlit"),
    ),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_fsync_mode_keeps_every_acknowledged_call(tmp_path: Path, backend: str) -> None:
    """Cuts at every acknowledgement (checked exactly) and inside every call (the call
    in flight may or may not have landed); per cut the strictest state, the volatile
    one, and states with the non-durable changes persisted in order or in any subset."""
    require_tracer()
    spec = spec_for(tmp_path, "fsync", backend, pace=0.005)
    rng = random.Random(seed())
    report = explore(
        spec,
        tmp_path,
        rng,
        subsets=scaled(3, 8),
        prefixes=scaled(2, 4),
        inside=scaled(1, 3),
        cut_every=1,
    )
    assert_nothing_lost(report)
    assert report.maintenance_rounds >= 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_flush_mode_loses_at_most_its_last_second(tmp_path: Path, backend: str) -> None:
    """The flush mode's calls are paced over several seconds. Each background flush
    seen in the trace must begin within the flusher's second (plus ``powercut.LATE`` for
    a loaded, traced machine) of the calls it covers, and at any moment of the run a
    power cut must keep every call whose flush had ended: the first flush to take its
    paths after the call was acknowledged, as the flusher marks it (not its first system
    call, which may come after a later call wrote)."""
    require_tracer()
    # The compactions and reindexes run as `filelayer compact` and `filelayer reindex`
    # processes here (their system calls are traced too).
    spec = spec_for(
        tmp_path, "flush", backend, pace=0.1, extra=scaled(12, 60), maintenance="process"
    )
    report = explore(
        spec,
        tmp_path,
        random.Random(seed()),
        subsets=scaled(3, 8),
        prefixes=scaled(2, 4),
        cut_every=1,
    )
    assert_nothing_lost(report)
    assert report.flushes >= 3 and report.checked_calls > 0


def test_the_explorer_catches_a_missing_directory_fsync(tmp_path: Path) -> None:
    """The same workload with threads/ never fsynced: a new thread's name may not be on
    the disk when the call returns, and the explorer must say so."""
    require_tracer()
    spec = spec_for(tmp_path, "fsync", "store", extra=0, plant="threads-dir-fsync")
    report = explore(spec, tmp_path, random.Random(seed()), subsets=1, prefixes=0, inside=0)
    print(report.summary())
    assert report.violations, "a missing fsync of threads/ went unnoticed"
    assert any("thread t1: lost" in v for v in report.violations), report.violations[:10]


def test_the_explorer_catches_a_flush_mode_without_its_flusher(tmp_path: Path) -> None:
    require_tracer()
    spec = spec_for(
        tmp_path, "flush", "store", pace=0.1, extra=8, maintenance="", plant="no-flusher"
    )
    report = explore(spec, tmp_path, random.Random(seed()), subsets=0, prefixes=0)
    print(report.summary())
    assert report.violations, "a flush mode that never flushes went unnoticed"


SCRIPT = r"""
import os, sys
base = sys.argv[1]
os.mkdir(base + "/d")
fd = os.open(base + "/d/synced", os.O_WRONLY | os.O_CREAT, 0o644)
os.write(fd, b"one")
os.fsync(fd)
os.write(fd, b"two")
os.close(fd)
dfd = os.open(base, os.O_RDONLY)
os.fsync(dfd)
fd = os.open(base + "/d/.tmp", os.O_WRONLY | os.O_CREAT, 0o644)
os.write(fd, b"new")
os.fsync(fd)
os.close(fd)
os.rename(base + "/d/.tmp", base + "/d/renamed")
ddfd = os.open(base + "/d", os.O_RDONLY)
os.fsync(ddfd)
os.unlink(base + "/d/renamed")
"""


def test_the_model_follows_the_persistence_rules(tmp_path: Path) -> None:
    """A file's bytes are durable once the file was fsynced, a name once its directory
    was; an fsync covers what was done before it."""
    require_tracer()
    base = Path(os.path.realpath(tmp_path)) / "base"
    base.mkdir()
    trace = tmp_path / "trace"
    seccomp = "--seccomp-bpf" in " ".join(strace_command(trace))
    subprocess.run(
        [*strace_command(trace, seccomp), "--", sys.executable, "-c", SCRIPT, str(base)],
        check=True,
    )
    model = replay_trace(str(base), read_trace(trace))
    # d/ is durable in base; its entries were fsynced after the rename, not after the
    # unlink; "synced" holds what its fsync covered.
    assert model.strict() == {"d": None, "d/synced": b"one", "d/renamed": b"new"}
    assert model.volatile() == {"d": None, "d/synced": b"onetwo"}
    # sync() makes everything durable: a call strace pads to its column of results.
    model = trace_scripts(tmp_path / "again", [SCRIPT + "\nos.sync()\nos._exit(0)\n"])
    assert model.strict() == model.volatile() == {"d": None, "d/synced": b"onetwo"}


def test_the_trace_reader_takes_every_call_that_returned(tmp_path: Path) -> None:
    """strace pads a short call up to its column of results (``sync()   = 0``): read,
    not dropped, as are calls whose halves other threads' lines came between; a call
    that never returned is left out."""
    trace = tmp_path / "trace"
    trace.write_text(
        "101 1700000000.000001 sync()                                  = 0\n"
        "101 1700000000.000002 fsync(3<\\x2f\\x74>) = 0\n"
        "102 1700000000.000003 syncfs(4<\\x2f> <unfinished ...>\n"
        "101 1700000000.000004 fdatasync(5)                  = -1 EIO (Input/output error)\n"
        "102 1700000000.000005 <... syncfs resumed>)                   = 0\n"
        "103 1700000000.000006 sync( <unfinished ...>\n"
        "103 1700000000.000007 +++ killed by SIGKILL +++\n"
    )
    events = read_trace(trace)
    assert [(e.name, e.args, e.ret) for e in events] == [
        ("sync", [], 0),
        ("fsync", ["3<\\x2f\\x74>"], 0),
        ("fdatasync", ["5"], -1),
        ("syncfs", ["4<\\x2f>"], 0),
    ]
    assert events[-1].begin == 2 and events[-1].end == 4


# -- calls whose lines strace wrote after another thread had seen their effect ---------------
#
# strace writes a call's result when it handles the call's stop: another thread may
# already have seen what the call did (a reindex lists threads/ while a writer creates
# a thread; a group commit fsyncs a journal whose thread a deletion renames away). A
# loaded CI run once stopped inside the replay of the fsync-mode trace; the replay was
# taught these orders, each replayed here from a hand-written trace.


def _hex(text: str) -> str:
    return "".join(f"\\x{b:02x}" for b in text.encode())


def _trace(tmp_path: Path, lines: list[str]) -> tuple[str, Path]:
    """A trace as ``strace -f -ttt -y -xx`` writes it: ``@`` stands for the archive's
    base; strings and file descriptors' paths are written in hex."""
    tmp_path.mkdir(exist_ok=True)
    base = os.path.realpath(tmp_path) + "/base"
    trace = tmp_path / "trace"
    text = []
    for n, line in enumerate(lines):
        pid, call = line.replace("@", base).split(" ", 1)
        call = re.sub(r'"([^"]*)"', lambda m: f'"{_hex(m.group(1))}"', call)
        call = re.sub(r"<(/[^<>]*)>", lambda m: f"<{_hex(m.group(1))}>", call)
        text.append(f"{pid} 1700000000.{n:06d} {call}")
    trace.write_text("\n".join(text) + "\n")
    return base, trace


def test_a_read_of_a_thread_a_writer_is_creating_is_replayed(tmp_path: Path) -> None:
    """The reindex opened threads/t2/thread.json before strace wrote the writer's
    mkdir of threads/t2: the mkdir, in flight, is applied first."""
    base, trace = _trace(
        tmp_path,
        [
            '101 mkdir("@/t2", 0777 <unfinished ...>',
            '102 openat(AT_FDCWD</>, "@/t2/thread.json", O_RDONLY|O_CLOEXEC) = 5<@/t2/thread.json>',
            "101 <... mkdir resumed>) = 0",
            '101 openat(AT_FDCWD</>, "@/t2/x", O_WRONLY|O_CREAT|O_EXCL, 0644) = 6<@/t2/x>',
            '101 write(6<@/t2/x>, "line", 4) = 4',
        ],
    )
    model = replay_trace(base, read_trace(trace))
    assert model.volatile() == {"t2": None, "t2/x": b"line"}


def test_an_fsync_of_a_file_whose_thread_is_being_renamed_counts(tmp_path: Path) -> None:
    """A group commit fsyncs a journal while a deletion renames its thread away: strace
    names the file by its new name before it wrote the rename's result. The fsync still
    makes the journal's line durable."""
    base, trace = _trace(
        tmp_path,
        [
            '101 mkdir("@/t3", 0777) = 0',
            '101 openat(AT_FDCWD</>, "@", O_RDONLY) = 3<@>',
            "101 fsync(3<@>) = 0",
            '101 openat(AT_FDCWD</>, "@/t3/steps", O_WRONLY|O_CREAT, 0644) = 4<@/t3/steps>',
            '101 openat(AT_FDCWD</>, "@/t3", O_RDONLY) = 5<@/t3>',
            "101 fsync(5<@/t3>) = 0",
            '101 write(4<@/t3/steps>, "line", 4) = 4',
            '102 rename("@/t3", "@/gone" <unfinished ...>',
            "103 fsync(4<@/gone/steps> <unfinished ...>",
            "102 <... rename resumed>) = 0",
            "103 <... fsync resumed>) = 0",
        ],
    )
    model = replay_trace(base, read_trace(trace))
    assert model.strict() == {"t3": None, "t3/steps": b"line"}
    assert model.volatile() == {"gone": None, "gone/steps": b"line"}


def test_a_read_of_a_file_removed_meanwhile_is_left_out(tmp_path: Path) -> None:
    """A read-only open whose file another thread removed before strace wrote the
    open's result changes nothing; a write-only open of a file the trace never made is
    still an error of the trace."""
    base, trace = _trace(
        tmp_path,
        [
            '101 openat(AT_FDCWD</>, "@/f", O_WRONLY|O_CREAT, 0644) = 3<@/f>',
            '102 openat(AT_FDCWD</>, "@/f", O_RDONLY <unfinished ...>',
            '101 unlink("@/f") = 0',
            "102 <... openat resumed>) = 4<@/f>",
        ],
    )
    assert replay_trace(base, read_trace(trace)).volatile() == {}
    base, trace = _trace(
        tmp_path / "bad", ['101 openat(AT_FDCWD</>, "@/never", O_WRONLY) = 3<@/never>']
    )
    with pytest.raises(TraceError, match="never"):
        replay_trace(base, read_trace(trace))


def test_a_write_to_a_file_replaced_meanwhile_stays_with_the_old_file(tmp_path: Path) -> None:
    """A write through a descriptor whose file another thread unlinked (its line first)
    went to the old file: the new file being created under the name meanwhile (its
    call still in flight) must not receive it."""
    base, trace = _trace(
        tmp_path,
        [
            '101 openat(AT_FDCWD</>, "@/db", O_WRONLY|O_CREAT, 0644) = 3<@/db>',
            '101 write(3<@/db>, "old", 3 <unfinished ...>',
            '102 unlink("@/db") = 0',
            '102 openat(AT_FDCWD</>, "@/db", O_WRONLY|O_CREAT, 0644 <unfinished ...>',
            "101 <... write resumed>) = 3",
            "102 <... openat resumed>) = 4<@/db>",
        ],
    )
    assert replay_trace(base, read_trace(trace)).volatile() == {"db": b""}
