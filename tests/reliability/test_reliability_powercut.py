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
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.powercut import (
    Report,
    Spec,
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
