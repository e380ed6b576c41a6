"""A power-cut explorer in the spirit of ALICE (Pillai et al., OSDI 2014): what a power
cut can leave of an archive, derived from the real system calls of a workload.

1. **Record.** A workload process makes data-layer calls (``ArchiveStore`` or
   ``FileDataLayer``) under ``strace -f``, while another thread compacts and reindexes
   meanwhile. After each call returns it writes an acknowledgement to a marker file,
   so the trace says which system calls happened before which acknowledgement.
2. **Model.** The calls are replayed on a model of the file system that keeps, per
   file, the bytes made durable by its last ``fsync`` and the writes since, and per
   directory, the names made durable by its last ``fsync`` and the changes since
   (created, renamed, removed). That is what POSIX and ext4-like file systems promise:
   a file's data is durable once the file was fsynced, a name once its directory was.
   An ``fsync`` covers what was done before it began.
3. **Crash states.** At a cut (an acknowledgement, or a moment inside a call, or any
   moment for the flush mode), a power cut may leave: only what is durable (the
   strictest state); everything (as a killed process would); the non-durable changes
   persisted in order up to some point; or any subset of them, each file keeping a
   prefix of its pending writes (the last one maybe torn). Each distinct state is
   materialised in a fresh directory.
4. **Check.** Each state is opened with the store, read back, repaired with
   ``verify --repair`` as the README prescribes, and compared with the data-layer
   contract (``tests.support.reliability.ContractModel``) after the acknowledged calls:
   exactly, at an acknowledgement in the fsync mode; allowing the one call in flight
   at a cut inside it; and, in the flush mode, requiring every call whose background
   flush had ended (the flusher marks when it took its paths and when it had fsynced
   them, in the acknowledgement file: see ``flushes_of``).

Run as a script, this module is the workload process (``powercut.py workload SPEC``).
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import logging
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.processes import subprocess_env
from tests.support.reliability import (
    ContractModel,
    StoreAPI,
    compare_projection,
    model_projection,
    open_api,
    thread_projection,
)

HERE = Path(__file__).resolve()

# -- the tracer ------------------------------------------------------------------------------

# Every system call that can change a file or a name, or make one durable. ``?`` marks
# the ones an architecture may not have (aarch64 has no open, rename, mkdir...).
TRACED = (
    "?open,openat,?creat,write,pwrite64,writev,pwritev,?pwritev2,fsync,fdatasync,sync,"
    "syncfs,sync_file_range,?rename,renameat,?renameat2,?unlink,unlinkat,?rmdir,?mkdir,"
    "mkdirat,truncate,ftruncate,fallocate,?link,linkat,?symlink,symlinkat,sendfile,"
    "copy_file_range"
)
BLOCK = 4096
"""The unit a disk writes whole: a torn write is torn at a multiple of it."""
STRING_LIMIT = 1 << 24
"""strace's ``-s``: no write of the workloads comes near it (a longer one would be
reported as cut, never silently modelled short)."""


def strace_command(trace: Path, seccomp: bool = True) -> list[str]:
    command = ["strace", "-f", "-qq", "-ttt", "-y", "-xx", f"-s{STRING_LIMIT}"]
    if seccomp:
        command.append("--seccomp-bpf")  # stops only at the traced calls: much faster
    return [*command, "-o", str(trace), "-e", f"trace={TRACED}"]


_tracer_checked: dict[str, Any] = {}


def tracer_problem() -> str | None:
    """Why the tracer cannot run here (``None``: it can), and whether it takes
    ``--seccomp-bpf``. Checked once per process."""
    if "problem" in _tracer_checked:
        return _tracer_checked["problem"]  # type: ignore[no-any-return]
    problem = None
    if shutil.which("strace") is None:
        problem = (
            "strace is not installed: the power-cut explorer records the workloads' "
            "system calls with it (Debian: apt-get install strace; scripts/test.sh "
            "installs it when it runs as root)"
        )
    else:
        with tempfile.TemporaryDirectory() as scratch:
            out = Path(scratch) / "probe"
            for seccomp in (True, False):
                done = subprocess.run(
                    [*strace_command(out, seccomp), "--", sys.executable, "-c", "pass"],
                    capture_output=True,
                    text=True,
                )
                if done.returncode == 0:
                    _tracer_checked["seccomp"] = seccomp
                    break
            else:
                problem = (
                    "strace cannot trace a process here (ptrace not permitted? in a "
                    "container, allow it with --cap-add SYS_PTRACE or a seccomp profile "
                    f"that permits ptrace): {done.stderr.strip()[-500:]}"
                )
    _tracer_checked["problem"] = problem
    return problem


# -- the workloads ---------------------------------------------------------------------------


@dataclass
class Call:
    """One data-layer call of a workload (an acknowledgement follows it)."""

    method: str
    args: dict[str, Any]

    def describe(self) -> str:
        brief = {k: v for k, v in self.args.items() if k not in ("content", "step")}
        if "step" in self.args:
            brief["step"] = self.args["step"]["id"]
        return f"{self.method} {json.dumps(brief, default=str)[:120]}"


USERS = ("alice@example.com", "bob@example.com")


def _ids(prefix: str) -> Iterator[str]:
    n = 0
    while True:
        n += 1
        yield f"{prefix}{n}"


def workload_calls(seed: int, extra: int) -> list[Call]:
    """The calls of a workload: a fixed script that makes every kind of write (users,
    thread creation by ``update_thread`` and by a first step, renames, metadata and
    tags, step creation and updates, feedback given, replaced and withdrawn, elements
    stored, re-sent and deleted, steps deleted with their elements, threads deleted and
    written to after their deletion), then ``extra`` seeded random calls of all kinds,
    each valid for the state the calls before it leave."""
    rng = random.Random(seed)
    model = ContractModel()
    calls: list[Call] = []
    step_ids, element_ids, feedback_ids = _ids("s"), _ids("e"), _ids("f")
    clock = [0]

    def at() -> str:
        clock[0] += 1
        s = clock[0]
        return f"2026-03-01T{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}.000000Z"

    def add(method: str, **args: Any) -> None:
        calls.append(Call(method, args))
        apply_to_model(model, Call(method, args), {u: f"id-{u}" for u in USERS})

    def message(tid: str, kind: str = "user_message", text: str | None = None) -> str:
        sid = next(step_ids)
        output = text if text is not None else f"{kind} {sid} about topic {rng.randrange(99)}"
        add(
            "create_step",
            step={
                "id": sid,
                "threadId": tid,
                "type": kind,
                "name": kind,
                "output": output,
                "createdAt": at(),
            },
        )
        return sid

    def element(tid: str, for_id: str, eid: str | None = None, size: int = 0) -> str:
        eid = eid or next(element_ids)
        name = rng.choice(["chart.png", "notes.txt", "report.pdf"])
        add(
            "create_element",
            spec={
                "id": eid,
                "threadId": tid,
                "forId": for_id,
                "name": name,
                "type": "image" if name.endswith(".png") else "file",
                "mime": {"png": "image/png", "txt": "text/plain", "pdf": "application/pdf"}[
                    name.rsplit(".", 1)[1]
                ],
                "content": rng.randbytes(size or rng.choice([1, 300, 5000])),
            },
        )
        return eid

    for identifier in USERS:
        add("create_user", identifier=identifier, metadata={"provider": "password"})
    # t1: created by update_thread, a full chat turn, feedback, elements, a rename.
    add("update_thread", thread_id="t1", name="First chat", user="alice@example.com")
    u1 = message("t1")
    run = next(step_ids)
    add(
        "create_step",
        step={
            "id": run,
            "threadId": "t1",
            "type": "run",
            "name": "on_message",
            "parentId": u1,
            "createdAt": at(),
        },
    )
    a1 = next(step_ids)
    add(
        "create_step",
        step={
            "id": a1,
            "threadId": "t1",
            "type": "assistant_message",
            "name": "Assistant",
            "parentId": run,
            "output": "",
            "createdAt": at(),
        },
    )
    add("update_step", step={"id": a1, "threadId": "t1", "output": "The full answer."})
    add("update_step", step={"id": run, "threadId": "t1", "end": at()})
    f1 = next(feedback_ids)
    add("upsert_feedback", for_id=a1, value=1, comment="thanks", feedback_id=f1, thread_id="t1")
    e1 = element("t1", a1)  # the thread's first element: elements/ is new
    element("t1", a1)
    add("update_thread", thread_id="t1", name="First chat, renamed", tags=["keep"])
    add("update_thread", thread_id="t1", metadata={"chat_profile": "research"})
    # t2: created by its first step; author set afterwards.
    u2 = message("t2")
    add("update_thread", thread_id="t2", name="Second chat", user="bob@example.com")
    a2 = message("t2", "assistant_message")
    f2 = next(feedback_ids)
    add("upsert_feedback", for_id=a2, value=0, comment=None, feedback_id=f2, thread_id="t2")
    f3 = next(feedback_ids)  # a new feedback for the same step replaces the old one
    add("upsert_feedback", for_id=a2, value=1, comment="better", feedback_id=f3, thread_id="t2")
    e2 = element("t2", a2)
    element("t2", a2, eid=e2, size=700)  # re-sent: its file is replaced
    add("delete_feedback", feedback_id=f3)
    add("delete_element", element_id=e1, thread_id="t1")
    element("t2", u2)
    add("delete_step", step_id=u2)  # with its element
    add("create_user", identifier=USERS[0], metadata={"provider": "password", "logins": 2})
    # t3: made, then deleted, then written to late (the write is refused).
    add("update_thread", thread_id="t3", name="Doomed", user="alice@example.com")
    s3 = message("t3")
    element("t3", s3)
    add("delete_thread", thread_id="t3")
    add(
        "create_step",
        step={
            "id": next(step_ids),
            "threadId": "t3",
            "type": "user_message",
            "output": "too late",
            "createdAt": at(),
        },
    )
    message("t1", "assistant_message", "After the deletions.")

    threads = ["t1", "t2"]
    for _ in range(extra):
        live = [t for t in threads if t in model.threads]
        roll = rng.random()
        tid = rng.choice(live) if live else "t1"
        thread = model.threads.get(tid)
        steps = list(thread.steps) if thread else []
        elements = list(thread.live_elements()) if thread else []
        feedbacks = list(thread.visible_feedback().values()) if thread else []
        if roll < 0.05 or not live:
            tid = f"t{len(threads) + 2}"
            threads.append(tid)
            add("update_thread", thread_id=tid, name=f"Chat {tid}", user=rng.choice(USERS))
        elif roll < 0.40 or not steps:
            message(tid, rng.choice(["user_message", "assistant_message", "tool"]))
        elif roll < 0.50:
            sid = rng.choice(steps)
            add(
                "update_step",
                step={"id": sid, "threadId": tid, "output": f"edited {rng.randrange(1000)}"},
            )
        elif roll < 0.58:
            add(
                "upsert_feedback",
                for_id=rng.choice(steps),
                value=rng.randrange(2),
                comment=rng.choice([None, "ok"]),
                feedback_id=next(feedback_ids),
                thread_id=tid,
            )
        elif roll < 0.62 and feedbacks:
            add("delete_feedback", feedback_id=rng.choice(feedbacks)["id"])
        elif roll < 0.72:
            element(tid, rng.choice(steps))
        elif roll < 0.76 and elements:
            add("delete_element", element_id=rng.choice(elements), thread_id=tid)
        elif roll < 0.80 and len(steps) > 2:
            add("delete_step", step_id=rng.choice(steps))
        elif roll < 0.90:
            add("update_thread", thread_id=tid, name=f"Renamed {rng.randrange(1000)}")
        elif roll < 0.95:
            add(
                "update_thread",
                thread_id=tid,
                metadata={f"k{rng.randrange(3)}": rng.randrange(9)},
                tags=rng.choice([None, ["a"], ["a", "b"]]),
            )
        elif len(live) > 1:
            add("delete_thread", thread_id=tid)
        else:
            message(tid)
    return calls


def apply_call(api: StoreAPI, call: Call, user_ids: dict[str, str]) -> Any:
    """Make ``call`` on ``api``; returns what the model needs to know (a user's id)."""
    a = call.args
    m = call.method
    if m == "create_user":
        return api.create_user(a["identifier"], metadata=a["metadata"])["id"]
    if m == "update_thread":
        kwargs = {k: a[k] for k in ("name", "metadata", "tags") if k in a}
        if "user" in a:
            kwargs["user_id"] = user_ids[a["user"]]
        api.update_thread(a["thread_id"], **kwargs)
    elif m in ("create_step", "update_step"):
        getattr(api, m)(a["step"])
    elif m == "delete_step":
        api.delete_step(a["step_id"])
    elif m == "upsert_feedback":
        api.upsert_feedback(a["for_id"], a["value"], a["comment"], a["feedback_id"], a["thread_id"])
    elif m == "delete_feedback":
        api.delete_feedback(a["feedback_id"])
    elif m == "create_element":
        api.create_element(a["spec"])
    elif m == "delete_element":
        api.delete_element(a["element_id"], a["thread_id"])
    elif m == "delete_thread":
        api.delete_thread(a["thread_id"])
    else:  # pragma: no cover
        raise AssertionError(m)
    return None


def apply_to_model(model: ContractModel, call: Call, user_ids: dict[str, str]) -> None:
    a = call.args
    m = call.method
    if m == "create_user":
        model.create_user(a["identifier"], user_ids[a["identifier"]], a["metadata"])
    elif m == "update_thread":
        kwargs = {k: a[k] for k in ("name", "metadata", "tags") if k in a}
        if "user" in a:
            kwargs["user_id"] = user_ids[a["user"]]
        model.update_thread(a["thread_id"], **kwargs)
    elif m in ("create_step", "update_step"):
        model.write_step(a["step"])
    elif m == "delete_step":
        model.delete_step(a["step_id"])
    elif m == "upsert_feedback":
        model.upsert_feedback(
            a["thread_id"], a["feedback_id"], a["for_id"], a["value"], a["comment"]
        )
    elif m == "delete_feedback":
        model.delete_feedback(a["feedback_id"])
    elif m == "create_element":
        model.create_element(a["spec"])
    elif m == "delete_element":
        model.delete_element(a["element_id"], a["thread_id"])
    elif m == "delete_thread":
        model.delete_thread(a["thread_id"])


# -- the workload process --------------------------------------------------------------------


@dataclass
class Spec:
    """What one traced run does; written as JSON for the workload process."""

    base: str  # the directory holding the archive root (durable before the run)
    ack_path: str  # outside ``base``
    durability: str
    backend: str  # "store" or "layer"
    seed: int
    extra: int  # random calls after the script
    pace: float = 0.0  # seconds between calls (the flush mode's runs last a few seconds)
    maintenance: str = "thread"  # compact and reindex meanwhile: "thread", "process", ""
    plant: str | None = None  # a bug planted on purpose (see ``plant_bug``)

    @property
    def root(self) -> str:
        return os.path.join(self.base, "chats")


def plant_bug(kind: str) -> None:
    """Break the layer on purpose, to show that the explorer notices."""
    from filelayer._io import fs as _fs

    if kind == "threads-dir-fsync":  # forget to fsync threads/ (a new thread's name)
        real = _fs.fsync_dir

        def fsync_dir(path: Path) -> None:
            if Path(path).name != "threads":
                real(path)

        _fs.fsync_dir = fsync_dir  # type: ignore[assignment]
    elif kind == "no-flusher":  # the flush mode without its background flush
        from filelayer._io import flusher as _flusher

        _flusher.FLUSHER.add = lambda files, dirs: None  # type: ignore[method-assign]
    else:  # pragma: no cover
        raise ValueError(kind)


def _maintain(
    root: str, how: str, stop: threading.Event, rounds: list[int], failures: list[str]
) -> None:
    """Compact every thread and rebuild the index, over and over: in this process (as
    ``filelayer compact`` and ``filelayer reindex`` do), or by running those commands."""
    from filelayer import ArchiveStore
    from filelayer.maintenance.compact import compact_thread

    store = ArchiveStore(root, create=False)
    while not stop.is_set():
        try:
            if how == "process":
                for command in ("compact", "reindex"):
                    subprocess.run(
                        [sys.executable, "-m", "filelayer", "--root", root, command],
                        check=True,
                        capture_output=True,
                        text=True,
                    )
            else:
                for thread_id in store.thread_ids():
                    compact_thread(store, thread_id)
                store.reindex()
        except (OSError, subprocess.CalledProcessError) as exc:
            failures.append(f"{exc!r} {getattr(exc, 'stderr', '')}")
            return
        rounds[0] += 1
        stop.wait(0.02)
    store.close()


class _FlushMarks:
    """The flusher's ``took`` and ``flushed`` moments, written to the acknowledgement
    file as ``FLUSH n`` and ``FLUSHED n``. The file's order is the order in which they
    and the acknowledgements happened: every call acknowledged before ``FLUSH n`` had
    named its paths before flush ``n`` took them."""

    def __init__(self, ack_fd: int) -> None:
        self.ack_fd = ack_fd
        self.seen = {"took": 0, "flushed": 0}
        self.changed = threading.Condition()

    def __call__(self, what: str, n: int) -> None:
        os.write(self.ack_fd, f"{'FLUSH' if what == 'took' else 'FLUSHED'} {n}\n".encode())
        with self.changed:
            self.seen[what] = n
            self.changed.notify_all()

    def wait_for_the_last(self) -> None:
        """Until the background flush has taken what the last calls named and ended
        (waited for, not slept for: on a loaded machine the flusher's thread may wake
        late, and a trace that ends first shows no flush after the last calls)."""
        from filelayer._io.flusher import FLUSHER

        with self.changed:
            taken = self.seen["took"]

            def done() -> bool:
                took, flushed = self.seen["took"], self.seen["flushed"]
                return (took > taken or not FLUSHER.pending) and flushed == took

            if not self.changed.wait_for(done, timeout=120):  # a stuck thread only
                raise SystemExit("the background flush never came")


def _observe_flushes(ack_fd: int) -> _FlushMarks:
    from filelayer._io.flusher import FLUSHER

    marks = _FlushMarks(ack_fd)
    FLUSHER.observer = marks
    return marks


def run_workload(spec: Spec) -> None:
    """The traced process: open the layer, make the calls, acknowledge each one."""
    if spec.plant:
        plant_bug(spec.plant)
    ack_fd = os.open(spec.ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def ack(seq: int, result: Any = None) -> None:
        os.write(ack_fd, f"ACK {seq} {json.dumps(result)}\n".encode())

    calls = workload_calls(spec.seed, spec.extra)
    flushes = _observe_flushes(ack_fd) if spec.durability == "flush" else None
    api = open_api(Path(spec.root), spec.backend, spec.durability)
    ack(0)  # the constructor: a new archive
    stop, rounds, failures = threading.Event(), [0], []
    worker = None
    if spec.maintenance:
        worker = threading.Thread(
            target=_maintain, args=(spec.root, spec.maintenance, stop, rounds, failures)
        )
        worker.start()
    user_ids: dict[str, str] = {}
    for seq, call in enumerate(calls, start=1):
        result = apply_call(api, call, user_ids)
        if call.method == "create_user":
            user_ids[call.args["identifier"]] = result
        ack(seq, result)
        if spec.pace:
            time.sleep(spec.pace)
    stop.set()
    if worker is not None:
        worker.join()
    if flushes is not None:
        flushes.wait_for_the_last()
    os.write(ack_fd, f"END {rounds[0]}\n".encode())
    api.close()
    if failures:
        raise SystemExit(f"the compaction and reindex meanwhile failed: {failures[0]}")


# -- reading the trace -----------------------------------------------------------------------

_LINE = re.compile(r"^(\d+)\s+(\d+\.\d+)\s(.*)$")
_HEX = r"((?:\\x[0-9a-f]{2})*)"
_FD = re.compile(r"^(-?\d+|AT_FDCWD)(?:<" + _HEX + r">(\(deleted\))?)?$")
_STR = re.compile(r'^"' + _HEX + r'"(\.\.\.)?$')
_RET = re.compile(r"^(-?\d+|\?)(?:<" + _HEX + r">)?(?: (E[A-Z0-9]+) .*)?$")
_RESULT = re.compile(r"^(.*)\) += (.*)$")
"""A call and its result: ``name(args) = result``. strace pads a short call with spaces
up to its column of results (``sync()          = 0``); the last ``) =`` is the one (the
arguments' strings are all hex with ``-xx``)."""


def _unhex(text: str) -> bytes:
    return bytes.fromhex(text.replace("\\x", ""))


def _split_args(text: str) -> list[str]:
    """Top-level arguments (strings are all hex with ``-xx``: no comma inside them)."""
    if "[" not in text and "{" not in text:
        return [a.strip() for a in text.split(", ")] if text else []
    out, depth, start = [], 0, 0
    for i, c in enumerate(text):
        if c in "[{(":
            depth += 1
        elif c in "]})":
            depth -= 1
        elif c == "," and depth == 0:
            out.append(text[start:i].strip())
            start = i + 1
    out.append(text[start:].strip())
    return out


class TraceError(Exception):
    """The trace holds something the model does not know how to replay."""


class MissingPath(TraceError):
    """A call named a path the model does not have at that point of the trace.

    strace writes a call's line when it handles the call's stop, not when the kernel
    ran it: another thread may already have seen the effect of a call whose line comes
    later (a reindex lists ``threads/`` and opens a thread a writer is creating; a
    group commit fsyncs a journal whose thread a deletion is renaming away). The
    replay then first applies the calls that were in flight in other threads
    (:class:`Replay`). ``harmless``: nothing is lost if the call is left out (a
    read-only open)."""

    def __init__(self, message: str, harmless: bool = False) -> None:
        super().__init__(message)
        self.harmless = harmless


@dataclass
class Event:
    """One system call: where it began and ended in the trace, and what it returned."""

    name: str
    args: list[str]
    ret: int | None
    ret_path: str | None
    begin: int  # position of its first line
    end: int  # position of the line with its result
    time: float  # when it began
    end_time: float  # when it returned
    pid: str  # the thread that made it


def read_trace(path: Path) -> list[Event]:
    """The trace's system calls, each joined from its ``unfinished`` and ``resumed``
    halves, in the order they ended."""
    events: list[Event] = []
    pending: dict[str, tuple[int, float, str]] = {}
    with open(path, encoding="ascii", errors="replace") as f:
        for n, line in enumerate(f):
            m = _LINE.match(line.rstrip("\n"))
            if m is None:
                continue
            pid, when, rest = m.group(1), float(m.group(2)), m.group(3)
            if rest.startswith(("---", "+++")):
                continue
            if rest.startswith("<... "):
                if pid not in pending:
                    continue
                begin, began, head = pending.pop(pid)
                rest = head + rest[rest.index(">") + 1 :]
            else:
                begin, began = n, when
            if rest.endswith(" <unfinished ...>"):
                pending[pid] = (begin, began, rest[: -len(" <unfinished ...>")])
                continue
            done = _RESULT.match(rest)
            if done is None:
                continue  # a call that never returned (the process exited)
            head, ret_text = done.group(1), done.group(2)
            name, _, arg_text = head.partition("(")
            r = _RET.match(ret_text.strip())
            ret: int | None = None
            ret_path = None
            if r is not None and r.group(1) != "?":
                ret = int(r.group(1))
                if r.group(2):
                    ret_path = _unhex(r.group(2)).decode("utf-8", "surrogateescape")
            events.append(
                Event(name, _split_args(arg_text), ret, ret_path, begin, n, began, when, pid)
            )
    events.sort(key=lambda e: e.end)
    return events


def _fd_path(arg: str) -> tuple[str | None, bool]:
    """The path ``-y`` printed for a file descriptor argument, and whether the file was
    deleted."""
    m = _FD.match(arg)
    if m is None or m.group(2) is None:
        return None, False
    return _unhex(m.group(2)).decode("utf-8", "surrogateescape"), bool(m.group(3))


def _string(arg: str) -> bytes:
    m = _STR.match(arg)
    if m is None:
        raise TraceError(f"not a string argument: {arg[:80]}")
    if m.group(2):
        raise TraceError("a string was cut by strace -s: raise STRING_LIMIT")
    return _unhex(m.group(1))


# -- the file-system model -------------------------------------------------------------------


@dataclass
class Node:
    """A file or a directory (an inode): durable state, and the changes since."""

    ident: int
    is_dir: bool
    # files: the durable bytes and the writes since, as (position, offset, bytes or a
    # truncation length)
    data: bytearray = field(default_factory=bytearray)
    durable_data: bytes = b""
    writes: list[tuple[int, int, bytes | int]] = field(default_factory=list)
    # directories: names -> node ids, durable and current, and the changes since
    entries: dict[str, int] = field(default_factory=dict)
    durable_entries: dict[str, int] = field(default_factory=dict)
    changes: list[tuple[int, list[tuple[str, int | None]]]] = field(default_factory=list)
    flushed: int = 0  # how many writes (or changes) ever made are durable
    path: str = ""  # where it was made, relative to the model's base

    @property
    def made(self) -> int:
        return self.flushed + len(self.changes if self.is_dir else self.writes)


def _apply_write(buf: bytearray, offset: int, chunk: bytes | int) -> None:
    if isinstance(chunk, int):
        del buf[chunk:]
        if len(buf) < chunk:
            buf.extend(b"\0" * (chunk - len(buf)))
        return
    if len(buf) < offset:
        buf.extend(b"\0" * (offset - len(buf)))
    buf[offset : offset + len(chunk)] = chunk


class FsModel:
    """The archive's file system as the trace changes it, below ``base``."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.nodes: dict[int, Node] = {}
        self.base_node = self._new(is_dir=True)
        self.offsets: dict[tuple[int, int], list[Any]] = {}  # (node, fd) -> [append, offset]
        self.fsyncs: dict[int, tuple[int, int]] = {}  # event begin -> (node, changes seen)
        self.touched = False

    def _new(self, is_dir: bool) -> Node:
        node = Node(len(self.nodes), is_dir)
        self.nodes[node.ident] = node
        return node

    # paths

    def _parts(self, path: str) -> list[str] | None:
        path = os.path.normpath(path)
        if path == self.base:
            return []
        if not path.startswith(self.base + "/"):
            return None
        return path[len(self.base) + 1 :].split("/")

    def lookup(self, path: str) -> Node | None:
        parts = self._parts(path)
        if parts is None:
            return None
        node = self.base_node
        for part in parts:
            child = node.entries.get(part) if node.is_dir else None
            if child is None:
                raise MissingPath(f"{path}: not in the model")
            node = self.nodes[child]
        return node

    def parent(self, path: str) -> tuple[Node, str] | None:
        parts = self._parts(path)
        if not parts:
            return None
        directory = self.lookup(os.path.join(self.base, *parts[:-1]))
        assert directory is not None
        return directory, parts[-1]

    # changes

    def _change(self, directory: Node, at: int, edits: list[tuple[str, int | None]]) -> None:
        for name, target in edits:
            if target is None:
                directory.entries.pop(name, None)
            else:
                directory.entries[name] = target
        directory.changes.append((at, edits))
        self.touched = True

    def _write(self, node: Node, at: int, offset: int, chunk: bytes | int) -> None:
        _apply_write(node.data, offset, chunk)
        node.writes.append((at, offset, chunk))
        self.touched = True

    def create(self, path: str, at: int, is_dir: bool) -> Node:
        found = self.parent(path)
        assert found is not None
        directory, name = found
        node = self._new(is_dir)
        node.path = os.path.relpath(os.path.normpath(path), self.base)
        self._change(directory, at, [(name, node.ident)])
        return node

    def fsync_begin(self, node: Node, key: int) -> None:
        """An fsync began: it will make durable what was done to ``node`` so far."""
        self.fsyncs[key] = (node.ident, node.made)

    def fsync_end(self, key: int) -> None:
        ident, made = self.fsyncs.pop(key)
        node = self.nodes[ident]
        seen = made - node.flushed  # another fsync may have ended meanwhile
        if seen <= 0:
            return
        node.flushed = made
        if node.is_dir:
            for _, edits in node.changes[:seen]:
                for name, target in edits:
                    if target is None:
                        node.durable_entries.pop(name, None)
                    else:
                        node.durable_entries[name] = target
            del node.changes[:seen]
        else:
            buf = bytearray(node.durable_data)
            for _, offset, chunk in node.writes[:seen]:
                _apply_write(buf, offset, chunk)
            node.durable_data = bytes(buf)
            del node.writes[:seen]

    def sync_all(self) -> None:
        for node in self.nodes.values():
            self.fsync_begin(node, -1)
            self.fsync_end(-1)

    # replaying one system call

    def _resolve(self, dir_arg: str | None, name_arg: str) -> str:
        name = _string(name_arg).decode("utf-8", "surrogateescape")
        if name.startswith("/"):
            return name
        base = _fd_path(dir_arg)[0] if dir_arg else None
        if base is None:
            raise TraceError(f"a relative path without a directory: {name}")
        return os.path.join(base, name)

    def replay(self, e: Event, at: int | None = None) -> None:
        """Apply one call that returned, its changes placed at ``at`` (its end unless
        the replay moved it earlier)."""
        if e.ret is None or e.ret < 0:
            return  # failed, or never returned: changed nothing
        name, a = e.name, e.args
        at = e.end if at is None else at
        if name in ("openat", "open", "creat"):
            if name == "openat":
                path, flags = self._resolve(a[0], a[1]), a[2]
            elif name == "open":
                path, flags = self._resolve(None, a[0]), a[1]
            else:
                path, flags = self._resolve(None, a[0]), "O_CREAT|O_WRONLY|O_TRUNC"
            parts = self._parts(path)
            if parts is None:
                return
            # Opened only to read: it changes nothing, whatever the model has there.
            changes = "O_CREAT" in flags or "O_TRUNC" in flags or "O_RDONLY" not in flags
            try:
                found = self.parent(path)
            except MissingPath as exc:
                raise MissingPath(str(exc), harmless=not changes) from None
            node = self.base_node if not parts else None
            if found is not None and found[1] in found[0].entries:
                node = self.nodes[found[0].entries[found[1]]]
            elif "O_CREAT" in flags:
                node = self.create(path, at, is_dir=False)
            if node is None:
                raise MissingPath(
                    f"opened {path}, which the model does not have", harmless=not changes
                )
            if "O_TRUNC" in flags and not node.is_dir and node.data:
                self._write(node, at, 0, 0)
            self.offsets[(node.ident, e.ret)] = ["O_APPEND" in flags, 0]
        elif name in ("write", "pwrite64", "writev"):
            path, deleted = _fd_path(a[0])
            if path is None or deleted or self._parts(path) is None:
                return
            found = self.parent(path)
            if found is not None and found[1] not in found[0].entries:
                # Unlinked by another thread while this write was in flight (strace named
                # the file when the call began; it is replayed where it ended): a write to
                # a removed file, of which nothing can persist. A writer appending to the
                # index database that a rebuild has just replaced does this. (Not a
                # call in flight: the writer's own open put the name in the model.)
                return
            node = self.lookup(path)
            assert node is not None
            if name == "writev":
                chunks = re.findall(r'iov_base="' + _HEX + r'"(\.\.\.)?', a[1])
                if any(cut for _, cut in chunks):
                    raise TraceError("a string was cut by strace -s")
                data = b"".join(_unhex(h) for h, _ in chunks)
            else:
                data = _string(a[1])
            data = data[: e.ret]
            fd = int(a[0].split("<", 1)[0])
            state = self.offsets.get((node.ident, fd))
            if name == "pwrite64":
                offset = int(a[3])
            elif state is None:
                raise TraceError(f"a write to {path} through a descriptor not seen opened")
            else:
                offset = len(node.data) if state[0] else state[1]
                state[1] = offset + len(data)
            self._write(node, at, offset, data)
        elif name in ("fsync", "fdatasync"):
            pass  # at its beginning and its end (see explore)
        elif name in ("sync", "syncfs"):
            self.sync_all()
        elif name in ("rename", "renameat", "renameat2"):
            if name == "rename":
                old, new = self._resolve(None, a[0]), self._resolve(None, a[1])
            else:
                old, new = self._resolve(a[0], a[1]), self._resolve(a[2], a[3])
            if self._parts(old) is None and self._parts(new) is None:
                return
            src, dst = self.parent(old), self.parent(new)
            if src is None or dst is None:
                raise TraceError(f"a rename across the archive's edge: {old} -> {new}")
            if src[1] not in src[0].entries:
                raise MissingPath(f"renamed {old}, which the model does not have")
            target = src[0].entries[src[1]]
            if src[0] is dst[0]:
                self._change(src[0], at, [(src[1], None), (dst[1], target)])
            else:
                self._change(src[0], at, [(src[1], None)])
                self._change(dst[0], at, [(dst[1], target)])
        elif name in ("unlink", "unlinkat", "rmdir"):
            path = self._resolve(a[0], a[1]) if name == "unlinkat" else self._resolve(None, a[0])
            found = self.parent(path) if self._parts(path) else None
            if found is not None:
                self._change(found[0], at, [(found[1], None)])
        elif name in ("mkdir", "mkdirat"):
            path = self._resolve(a[0], a[1]) if name == "mkdirat" else self._resolve(None, a[0])
            if self._parts(path):
                self.create(path, at, is_dir=True)
        elif name in ("ftruncate", "truncate"):
            path = _fd_path(a[0])[0] if name == "ftruncate" else self._resolve(None, a[0])
            if path is not None and self._parts(path) is not None:
                node = self.lookup(path)
                assert node is not None
                self._write(node, at, 0, int(a[1]))
        else:  # link, symlink, fallocate, sendfile, copy_file_range, sync_file_range
            text = " ".join(a)
            for arg in a:
                p = _fd_path(arg)[0]
                if p is not None and self._parts(p) is not None:
                    raise TraceError(f"{name} on {p}: not modelled")
            if self.base in text:
                raise TraceError(f"{name} in the archive: not modelled")

    # crash states

    def version(self, node: Node, keep: int, torn: float | None = None) -> bytes:
        """The file with its first ``keep`` pending writes, and the next one torn at a
        block boundary (the fraction ``torn`` of its blocks), if given: a disk writes
        whole blocks, so a write that fits in one lands whole or not at all."""
        buf = bytearray(node.durable_data)
        for _, offset, chunk in node.writes[:keep]:
            _apply_write(buf, offset, chunk)
        if torn is not None and keep < len(node.writes):
            _, offset, chunk = node.writes[keep]
            if isinstance(chunk, bytes):
                cuts = range((offset // BLOCK + 1) * BLOCK, offset + len(chunk), BLOCK)
                if cuts:
                    end = cuts[int(len(cuts) * torn)]
                    _apply_write(buf, offset, chunk[: end - offset])
        return bytes(buf)

    def state(
        self, choose_dir: Callable[[Node], dict[str, int]], choose_file: Callable[[Node], bytes]
    ) -> dict[str, bytes | None]:
        """A crash state: every reachable path (relative to ``base``) with its bytes,
        ``None`` for a directory."""
        out: dict[str, bytes | None] = {}
        stack: list[tuple[str, Node]] = [("", self.base_node)]
        while stack:
            prefix, directory = stack.pop()
            for name, ident in sorted(choose_dir(directory).items()):
                node = self.nodes[ident]
                rel = f"{prefix}{name}"
                if node.is_dir:
                    out[rel] = None
                    stack.append((rel + "/", node))
                else:
                    out[rel] = choose_file(node)
        return out

    def strict(self) -> dict[str, bytes | None]:
        return self.state(lambda d: d.durable_entries, lambda f: f.durable_data)

    def volatile(self) -> dict[str, bytes | None]:
        return self.state(lambda d: d.entries, lambda f: bytes(f.data))

    def prefix(self, upto: int) -> dict[str, bytes | None]:
        """The non-durable changes persisted in the order they were made, up to
        position ``upto`` of the trace."""

        def entries(d: Node) -> dict[str, int]:
            out = dict(d.durable_entries)
            for at, edits in d.changes:
                if at >= upto:
                    break
                for name, target in edits:
                    if target is None:
                        out.pop(name, None)
                    else:
                        out[name] = target
            return out

        def data(f: Node) -> bytes:
            return self.version(f, sum(1 for at, _, _ in f.writes if at < upto))

        return self.state(entries, data)

    def subset(self, rng: random.Random) -> dict[str, bytes | None]:
        """Any subset of the pending directory changes (each change whole: a rename
        within a directory is atomic), each file with a prefix of its pending writes,
        the next one maybe torn."""

        def entries(d: Node) -> dict[str, int]:
            out = dict(d.durable_entries)
            for _, edits in d.changes:
                if rng.random() < 0.5:
                    for name, target in edits:
                        if target is None:
                            out.pop(name, None)
                        else:
                            out[name] = target
            return out

        def data(f: Node) -> bytes:
            keep = rng.randrange(len(f.writes) + 1)
            return self.version(f, keep, rng.random() if rng.random() < 0.3 else None)

        return self.state(entries, data)

    def dirty_between(self, lo: int, hi: int, derived: tuple[str, ...]) -> bool:
        """Whether anything not yet durable was done between trace positions ``lo`` and
        ``hi`` to a file or directory outside the ``derived`` paths."""
        for node in self.nodes.values():
            if node.path.startswith(derived):
                continue
            if node.is_dir:
                done = [at for at, _ in node.changes]
            else:
                done = [at for at, _, _ in node.writes]
            if any(lo < at < hi for at in done):
                return True
        return False

    def pending_positions(self) -> list[int]:
        found = {at for n in self.nodes.values() for at, _ in n.changes}
        found |= {at for n in self.nodes.values() for at, _, _ in n.writes}
        return sorted(found)


def state_digest(state: dict[str, bytes | None]) -> str:
    h = hashlib.sha256()
    for rel in sorted(state):
        content = state[rel]
        h.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        h.update(b"D" if content is None else hashlib.sha256(content).digest())
    return h.hexdigest()


def materialise(state: dict[str, bytes | None], where: Path) -> None:
    where.mkdir(parents=True)
    for rel in sorted(state):
        content = state[rel]
        path = where / rel
        if content is None:
            path.mkdir()
        else:
            path.write_bytes(content)


_NAMING = ("mkdir", "mkdirat", "rename", "renameat", "renameat2", "unlink", "unlinkat", "rmdir")


class Replay:
    """Replays a trace's calls on a model in an order the kernel may have run them.

    ``actions`` are the trace's positions: each call is applied where its result line
    is (``1``), and each fsync also takes what it covers where its first line is
    (``0``). Lines come in the order strace handled the stops, which is the kernel's
    order within a thread and for anything one thread learnt from another; but a
    thread may see the effect of another thread's call before that call's line, by
    looking at the file system. When a call names a path the model does not have
    (:class:`MissingPath`), the calls of other threads that were still in flight there
    (begun before it, ended after it) and change names are applied first, where it
    is. A call whose absence loses nothing (a read-only open) is left out instead;
    any other call whose path is still missing is an error of the trace or the model.
    """

    def __init__(self, model: FsModel, events: list[Event], trace: Path | None = None) -> None:
        self.model = model
        self.events = events
        self.trace = trace
        self.applied = [False] * len(events)
        self.ends = [e.end for e in events]  # events are in the order they ended
        self.actions: list[tuple[int, int, int]] = sorted(
            [(e.end, 1, i) for i, e in enumerate(events)]
            + [(e.begin, 0, i) for i, e in enumerate(events) if e.name in ("fsync", "fdatasync")]
        )
        self.moved = 0  # calls applied before their line, for a report

    def apply(self, kind: int, i: int) -> None:
        """Apply action ``(kind, i)`` of :attr:`actions`."""
        if kind == 1 and self.applied[i]:
            return  # moved earlier, where another call needed it
        e = self.events[i]
        at = e.end if kind else e.begin
        try:
            try:
                self._apply(kind, e)
            except MissingPath as exc:
                if exc.harmless or not self._apply_in_flight(e, at):
                    raise
                self._apply(kind, e)
        except MissingPath as exc:
            if not exc.harmless:
                raise TraceError(f"line {at + 1} of {self.trace}: {exc}") from exc
        except TraceError as exc:
            raise TraceError(f"line {at + 1} of {self.trace}: {exc}") from exc
        if kind == 1:
            self.applied[i] = True

    def _apply(self, kind: int, e: Event) -> None:
        model = self.model
        if e.name in ("fsync", "fdatasync"):
            path, deleted = _fd_path(e.args[0])
            if path is None or deleted or model._parts(path) is None or e.ret != 0:
                return
            if kind == 0:
                node = model.lookup(path)
                assert node is not None
                model.fsync_begin(node, e.begin)
            elif e.begin in model.fsyncs:
                model.fsync_end(e.begin)
        elif kind == 1:
            model.replay(e)

    def _apply_in_flight(self, e: Event, at: int) -> bool:
        """Apply, at ``at``, the calls of other threads in flight there that change
        names; whether there were any."""
        moved = False
        first = bisect.bisect_right(self.ends, at)
        # At most one call per thread is in flight; a few thousand lines bound the wait.
        for j in range(first, min(first + 4096, len(self.events))):
            z = self.events[j]
            if self.applied[j] or z.pid == e.pid or z.begin >= at:
                continue
            creates = z.name in ("openat", "open") and "O_CREAT" in " ".join(z.args)
            if z.name not in _NAMING and not creates and z.name != "creat":
                continue
            self.model.replay(z, at)
            self.applied[j] = True
            self.moved += 1
            moved = True
        return moved


def replay_trace(base: str, events: list[Event]) -> FsModel:
    """The model after every system call of ``events`` (fsyncs covering what was done
    before they began), for a test that cuts the power once, at the end."""
    replay = Replay(FsModel(base), events)
    for _, kind, i in replay.actions:
        replay.apply(kind, i)
    return replay.model


def trace_scripts(work: Path, scripts: list[str]) -> FsModel:
    """Run ``scripts`` (Python sources, each its own process, one after another, each
    given the archive's root as its argument) under one trace, and return the model of
    what they did to the root: ``strict()`` is what a power cut right after the last
    one keeps."""
    problem = tracer_problem()
    if problem:
        raise RuntimeError(problem)
    base = Path(os.path.realpath(work)) / "base"
    base.mkdir(parents=True)
    files = []
    for n, script in enumerate(scripts):
        path = work / f"script{n}.py"
        path.write_text(script)
        files.append(path)
    trace = work / "trace.txt"
    # A script may end killed (the next one is the restart): only a traceback, or the
    # last script's status, fails.
    shell = "; ".join(shlex.join([sys.executable, str(path), str(base)]) for path in files)
    done = subprocess.run(
        [*strace_command(trace, _tracer_checked.get("seccomp", True)), "--", "sh", "-c", shell],
        cwd=work,
        env=subprocess_env(same_mode=True, PYTHONDONTWRITEBYTECODE="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0 or "Traceback" in done.stderr:
        raise RuntimeError(f"a script failed: {done.stderr[-3000:]}")
    return replay_trace(str(base), read_trace(trace))


# -- checking a crash state ------------------------------------------------------------------

REINDEX_BEFORE_LISTING = False
"""Whether the explorer rebuilds the index before comparing ``list_threads``, as
``filelayer reindex`` would. Off: a stale index heals itself when the store opens the
crash state (a writer session left behind says the writer died; see
``filelayer.store.heal``), so the sidebar is checked as the layer itself leaves it."""


@dataclass
class Expectation:
    """What a state must show: the contract after ``models[0]``'s calls (every one of
    them acknowledged), and, when ``exact`` is False, any later model in ``models``
    for a part that later calls (unacknowledged, or within the flush mode's second)
    may have changed."""

    models: list[ContractModel]
    user_ids: dict[str, str]
    exact: bool
    archive_acknowledged: bool


def _brief(projection: dict[str, Any] | None) -> dict[str, Any] | None:
    """A thread's projection with element bytes as their size and hash (short messages)."""
    if projection is None:
        return None
    elements = {}
    for eid, el in projection["elements"].items():
        data = el.get("bytes")
        if isinstance(data, bytes):
            el = {**el, "bytes": f"<{len(data)} bytes {hashlib.sha256(data).hexdigest()[:8]}>"}
        elements[eid] = el
    return {**projection, "elements": elements}


def _projection(api: StoreAPI, thread_id: str) -> dict[str, Any] | None:
    thread = api.get_thread(thread_id)
    return None if thread is None else _brief(thread_projection(thread, api.element_bytes))


def _component_problems(
    tid: str, actual: dict[str, Any] | None, expected: list[dict[str, Any] | None]
) -> list[str]:
    """What of ``expected[0]`` (acknowledged) is lost: each part of the thread must hold
    the value of some model in ``expected``."""
    first = expected[0]
    if first is None:
        return []
    if actual is None:
        if all(e is not None for e in expected):
            return [f"thread {tid}: lost"]
        return []
    problems = []
    for key in ("name", "userId", "userIdentifier", "tags", "metadata"):
        allowed = [e[key] for e in expected if e is not None]
        if actual[key] not in allowed:
            problems.append(f"thread {tid} {key}: got {actual[key]!r}, expected one of {allowed}")
    for part in ("steps", "elements"):
        for ident in first[part]:
            allowed = [e[part].get(ident) for e in expected if e is not None]
            got = actual[part].get(ident)
            if got is None and None in allowed:
                continue
            if got is None or not any(a is not None and _agrees(got, a, part) for a in allowed):
                unique = list({repr(a): a for a in allowed}.values())
                problems.append(
                    f"thread {tid} {part[:-1]} {ident}: got {got!r}, expected one of {unique}"
                )
    return problems


def _may_stay(what: str, expect: Expectation) -> bool:
    """Whether ``verify --repair`` may leave this problem: an element whose bytes a
    power cut took, but only one that calls not yet required (in flight, or within the
    flush mode's second) stored. Nothing can bring its bytes back; verify reports it."""
    m = re.match(r"element (\S+)'s file (is missing|differs)", what)
    if m is None or expect.exact:
        return False
    eid = m.group(1)

    def content(model: ContractModel) -> Any:
        for thread in model.threads.values():
            if eid in thread.live_elements():
                return thread.live_elements()[eid].get("content")
        return None

    required = content(expect.models[0])
    return required is None or any(content(m) != required for m in expect.models[1:])


def _agrees(got: dict[str, Any], want: dict[str, Any], part: str) -> bool:
    if part == "elements":
        return got == want
    return all(got.get(k) == v for k, v in want.items())


def check_state(root: Path, durability: str, expect: Expectation) -> tuple[list[str], Counter]:
    """Open a crash state with the layer, read it, repair it, read it again."""
    from filelayer import ArchiveStore
    from filelayer.maintenance.verify import verify

    notes: Counter = Counter()
    if not (root / "filelayer.json").is_file():
        if expect.archive_acknowledged:
            return ["the archive is gone (no filelayer.json)"], notes
        return [], notes
    try:
        api = StoreAPI(root, durability)
    except Exception as exc:  # any failure to open is the finding
        return [f"the archive does not open: {exc!r}"], notes
    problems: list[str] = []
    model = expect.models[0]
    ids = set()
    for m in expect.models:
        ids |= set(m.threads) | m.deleted
    ids |= set(api.store.thread_ids())

    def read_back(stage: str) -> None:
        for tid in sorted(ids):
            actual = _projection(api, tid)
            expected = [_brief(model_projection(m, tid)) for m in expect.models]
            if expect.exact:
                want = expected[0]
                if want is None and actual is not None:
                    problems.append(
                        f"{stage}: thread {tid} is there, but was never acknowledged or was deleted"
                    )
                elif want is not None and actual is None:
                    problems.append(f"{stage}: thread {tid}: lost")
                elif want is not None and actual is not None:
                    problems.extend(
                        f"{stage}: thread {tid}: {p}" for p in compare_projection(actual, want)
                    )
            else:
                problems.extend(f"{stage}: {p}" for p in _component_problems(tid, actual, expected))
        for identifier, doc in model.users.items():
            user = api.get_user(identifier)
            allowed = [
                m.users[identifier]["metadata"] for m in expect.models if identifier in m.users
            ]
            if user is None or user["id"] != doc["id"]:
                problems.append(f"{stage}: user {identifier} lost")
            elif user["metadata"] not in (allowed[:1] if expect.exact else allowed):
                problems.append(f"{stage}: user {identifier} metadata {user['metadata']}")

    read_back("before repair")
    report = verify(api.store, repair=True)
    for p in report.problems:
        notes[f"repaired: {re.sub(r'[0-9a-f]{8}', '*', p.what)[:60]}"] += 1
        index_file = api.store.layout.index_file.relative_to(api.store.root)
        if not REINDEX_BEFORE_LISTING and p.path == str(index_file):
            # The store opened the state: the index must have healed by then.
            problems.append(f"the index lagged after opening: {p.what}")
    for p in report.unrepaired:
        if not _may_stay(p.what, expect):
            problems.append(f"verify --repair left: {p}")
    api.store.close()
    api.store = ArchiveStore(root, durability=durability)  # type: ignore[arg-type]
    read_back("after repair")
    if REINDEX_BEFORE_LISTING:
        api.store.reindex()
    listed_all = {t["id"] for t in api.list_threads(None, first=1000)[0]}
    readable = {tid for tid in ids if api.get_thread(tid) is not None}
    if listed_all != readable:
        problems.append(
            f"list_threads shows {sorted(listed_all)}, get_thread finds {sorted(readable)}"
        )
    if expect.exact:
        for identifier, doc in model.users.items():
            uid = expect.user_ids.get(identifier, doc["id"])
            listed = {t["id"] for t in api.list_threads(uid, first=1000)[0]}
            if listed != model.list_ids(uid):
                problems.append(
                    f"list_threads({identifier}): {sorted(listed)}, expected "
                    f"{sorted(model.list_ids(uid))}"
                )
    api.store.close()
    return problems, notes


# -- the explorer ----------------------------------------------------------------------------


@dataclass
class Report:
    spec: Spec
    calls: int = 0
    acknowledged: int = 0
    cuts: int = 0
    states: int = 0
    checked_calls: int = 0  # acknowledged calls checked, summed over the states
    maintenance_rounds: int = 0
    flushes: int = 0  # background flushes seen (flush mode)
    max_lag: float = 0.0  # longest time from a call's acknowledgement to its flush's end
    violations: list[str] = field(default_factory=list)
    bad_states: int = 0  # crash states that lose or break an acknowledged call
    kinds: Counter = field(default_factory=Counter)  # what the violations were
    notes: Counter = field(default_factory=Counter)  # what verify --repair repaired
    moved: int = 0  # calls of one thread replayed before their line (see Replay)
    seconds: float = 0.0

    def summary(self) -> str:
        s = self.spec
        return (
            f"{s.backend}/{s.durability}{' plant=' + s.plant if s.plant else ''}: "
            f"{self.acknowledged} acknowledged calls, {self.cuts} cuts, {self.states} crash "
            f"states, {self.checked_calls} acknowledged calls checked, {self.bad_states} "
            f"states losing or breaking one ({len(self.violations)} violations), "
            f"{self.maintenance_rounds} compaction and reindex rounds meanwhile, "
            + (
                f"{self.flushes} background flushes, on disk at most {self.max_lag:.2f}s "
                "after the call, "
                if self.spec.durability == "flush"
                else ""
            )
            + f"{self.moved} calls replayed before their line, {self.seconds:.1f}s"
        )


def trace_workload(spec: Spec, work: Path) -> tuple[Path, list[tuple[int, Any]], int, list[str]]:
    """Run the workload under strace; the trace, the acknowledgements, the maintenance
    rounds and the acknowledgement file's lines (with the flusher's marks)."""
    problem = tracer_problem()
    if problem:
        raise RuntimeError(problem)
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(spec.__dict__))
    trace = work / "trace.txt"
    done = subprocess.run(
        [
            *strace_command(trace, _tracer_checked.get("seccomp", True)),
            "--",
            sys.executable,
            str(HERE),
            "workload",
            str(spec_path),
        ],
        cwd=work,
        env=subprocess_env(same_mode=True, PYTHONDONTWRITEBYTECODE="1"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the workload failed: {done.stderr[-3000:]}")
    acks = []
    rounds = 0
    lines = Path(spec.ack_path).read_text().splitlines()
    for line in lines:
        kind, _, rest = line.partition(" ")
        if kind == "ACK":
            seq, _, payload = rest.partition(" ")
            acks.append((int(seq), json.loads(payload)))
        elif kind == "END":
            rounds = int(rest)
    return trace, acks, rounds, lines


LATE = 1.0
"""How late a background flush may begin, beyond the flusher's interval, before the
explorer calls it late (a loaded machine delays a sleeping thread, strace more)."""


NEVER = 1 << 62
"""The trace position of a flush that never came."""


@dataclass
class Flushes:
    """The background flushes a flush-mode trace shows, and which call each covers."""

    batches: list[tuple[float, float]]  # (took its paths, ended) of each flush
    covered: list[int]  # per acknowledgement: where in the trace its flush ended (or NEVER)
    late: list[str]  # calls whose flush began more than ``INTERVAL + LATE`` after them
    max_lag: float  # the longest time from an acknowledgement to its flush's end
    ended: list[float] = field(default_factory=list)  # per acknowledgement, when


def flushes_of(events: list[Event], lines: list[str], ack_path: str) -> Flushes:
    """The flushes, from the marks the flusher wrote to the acknowledgement file when it
    took the paths named so far (``FLUSH n``, under the lock every call takes to name
    its paths) and when it had fsynced them (``FLUSHED n``). The flush that covers a call
    is the first one to take its paths after the call was acknowledged, in the file's
    order: the call named its paths before that (or an earlier flush took them).

    Not the flusher's own system calls: it takes its paths, then needs the interpreter
    lock back before its first one, and on a loaded machine a whole call may run in
    between. A flush whose first system call came after a call returned may have taken
    its paths before the call wrote; crediting it with the call demanded what it never
    promised."""
    took: dict[int, float] = {}
    ended: dict[int, tuple[int, float]] = {}
    for e in events:
        if e.name == "write" and _fd_path(e.args[0])[0] == ack_path:
            kind, _, n = _string(e.args[1]).decode().strip().partition(" ")
            if kind == "FLUSH":
                took[int(n)] = e.time
            elif kind == "FLUSHED":
                ended[int(n)] = (e.end, e.end_time)
    batches = [(took[n], ended[n][1]) for n in sorted(ended) if n in took]
    covered: list[int] = []
    ended_at: list[float] = []
    waiting = 0  # acknowledgements not yet covered by a flush that took its paths
    for line in lines:
        kind, _, rest = line.partition(" ")
        if kind == "ACK":
            covered.append(NEVER)
            ended_at.append(float("inf"))
            waiting += 1
        elif kind == "FLUSH" and waiting:
            n = int(rest)
            if n in ended:
                for k in range(len(covered) - waiting, len(covered)):
                    covered[k], ended_at[k] = ended[n]
            waiting = 0
    return Flushes(batches, covered, [], 0.0, ended_at)


def judge_flushes(flushes: Flushes, ack_times: list[float], dirty: list[bool]) -> None:
    """Which calls that left writes for the flusher (``dirty``) saw no flush begin
    from their start (the previous acknowledgement: a flush that began while a call ran
    may have taken its writes) to the flusher's interval (plus ``LATE``) after they
    returned; and the longest time from such a call to the end of its flush."""
    from filelayer._io.flusher import INTERVAL

    for k in range(1, len(ack_times)):
        if not dirty[k]:
            continue
        t = ack_times[k]
        began = next((b[0] for b in flushes.batches if b[0] >= ack_times[k - 1]), None)
        if began is None:
            flushes.late.append(f"call #{k}: no background flush after it")
        elif began - t > INTERVAL + LATE:
            flushes.late.append(f"call #{k}: its flush began {began - t:.2f}s after it")
        if flushes.ended[k] != float("inf"):
            flushes.max_lag = max(flushes.max_lag, flushes.ended[k] - t)


def explore(
    spec: Spec,
    work: Path,
    rng: random.Random,
    *,
    subsets: int = 3,
    prefixes: int = 2,
    inside: int = 1,
    cut_every: int = 1,
    stop_after: int | None = None,
) -> Report:
    """Trace ``spec``'s workload and check the crash states at its cuts.

    fsync mode: a cut at every ``cut_every``-th acknowledgement (checked exactly) and
    at ``inside`` moments inside each following call (the call in flight may or may
    not have landed). flush mode: cuts at moments spread over the run, each requiring
    the calls whose background flush had ended (a flush must begin within the
    flusher's interval of the calls it covers). Per cut: the strictest state, the
    volatile one, ``prefixes`` in-order states and ``subsets`` random subsets,
    deduplicated.
    """
    started = time.monotonic()
    report = Report(spec)
    calls = workload_calls(spec.seed, spec.extra)
    report.calls = len(calls)
    trace, acks, report.maintenance_rounds, lines = trace_workload(spec, work)
    report.acknowledged = len(acks)
    if [seq for seq, _ in acks] != list(range(len(calls) + 1)):
        raise RuntimeError(f"acknowledgements out of order: {[s for s, _ in acks][:20]}")
    user_ids: dict[str, str] = {}
    models = [ContractModel()]
    for seq, result in acks[1:]:
        call = calls[seq - 1]
        if call.method == "create_user":
            user_ids[call.args["identifier"]] = result
        m = models[-1].copy()
        apply_to_model(m, call, user_ids)
        models.append(m)
    events = read_trace(trace)
    ack_path = os.path.realpath(spec.ack_path)
    # Positions (line numbers) of each acknowledgement, and when they happened.
    ack_at: list[tuple[int, float]] = []
    for e in events:
        if (
            e.name == "write"
            and _fd_path(e.args[0])[0] == ack_path
            and _string(e.args[1]).startswith(b"ACK ")
        ):
            ack_at.append((e.end, e.time))
    if len(ack_at) != len(acks):
        raise RuntimeError(f"{len(ack_at)} acknowledgements in the trace, {len(acks)} written")

    # The cuts: (trace position, what must hold there).
    cuts: list[tuple[int, int, int, bool]] = []  # (position, acked, upto, exact)
    positions = sorted({e.end for e in events})
    flushes: Flushes | None = None
    derived: tuple[str, ...] = ()
    if spec.durability == "fsync":
        for k, (at, _) in enumerate(ack_at):
            if k % cut_every and k != len(ack_at) - 1:
                continue
            cuts.append((at + 1, k, k, True))
            if k + 1 < len(ack_at):
                between = [p for p in positions if at < p < ack_at[k + 1][0]]
                for p in rng.sample(between, min(inside, len(between))):
                    cuts.append((p, k, k + 1, False))
    else:
        # A call must survive a cut once the background flush that covers it has
        # ended; that flush must begin within the flusher's interval of the call.
        flushes = flushes_of(events, lines, ack_path)
        report.flushes = len(flushes.batches)
        # Which calls left writes for the flusher (the derived index aside).
        derived = tuple(os.path.join("chats", d) for d in ("index", "locks"))
        first, last = ack_at[0][0], ack_at[-1][0]
        span = [p for p in positions if first < p <= last]
        chosen = sorted(rng.sample(span, min(len(span), max(1, len(ack_at) // cut_every))))
        for p in chosen:
            acked = max(k for k, (at, _) in enumerate(ack_at) if at < p)
            # Everything the flush that ended before the cut took is on the disk.
            safe = max((k for k, c in enumerate(flushes.covered) if c < p), default=-1)
            safe = min(safe, acked)
            if safe >= 0:
                cuts.append((p, safe, min(acked + 1, len(models) - 1), False))
    cuts.sort()

    replay = Replay(FsModel(spec.base), events, trace)
    model = replay.model
    scratch = _scratch_dir(work)
    cut_index = 0
    dirty = [False] * len(ack_at)
    ack_index = 0
    seen: set[str] = set()
    quiet = logging.getLogger("filelayer")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    from filelayer._io import fs as _fs

    real_fsync = _fs.fsync_fd
    _fs.fsync_fd = lambda fd: None  # type: ignore[assignment]  # states are throwaway copies
    try:
        for at, kind, i in [*replay.actions, (1 << 62, 2, -1)]:
            while flushes is not None and ack_index < len(ack_at) and ack_at[ack_index][0] <= at:
                lo = ack_at[ack_index - 1][0] if ack_index else -1
                dirty[ack_index] = model.dirty_between(lo, ack_at[ack_index][0], derived)
                ack_index += 1
            while cut_index < len(cuts) and cuts[cut_index][0] <= at:
                _, acked, upto, exact = cuts[cut_index]
                cut_index += 1
                report.cuts += 1
                expect = Expectation(models[acked : upto + 1], user_ids, exact, acked >= 0)
                states = [model.strict(), model.volatile()]
                pending = model.pending_positions()
                for _ in range(prefixes):
                    if pending:
                        states.append(model.prefix(rng.choice(pending) + 1))
                for _ in range(subsets):
                    states.append(model.subset(rng))
                for state in states:
                    digest = state_digest(state)
                    key = f"{digest}:{acked}:{upto}:{exact}"
                    if key in seen:
                        continue
                    seen.add(key)
                    report.states += 1
                    report.checked_calls += acked
                    where = scratch / f"s{report.states}"
                    materialise(state, where)
                    try:
                        found, notes = check_state(where / "chats", spec.durability, expect)
                    finally:
                        shutil.rmtree(where, ignore_errors=True)
                    report.notes.update(notes)
                    what = calls[acked - 1].describe() if acked else "open"
                    report.bad_states += bool(found)
                    for problem in found:
                        report.kinds[_kind(problem)] += 1
                        report.violations.append(
                            f"cut after call #{acked} ({what})"
                            f"{'' if exact else f', up to #{upto}'}: {problem}"
                        )
                    if stop_after is not None and len(report.violations) >= stop_after:
                        return report
            if kind == 2:
                break
            replay.apply(kind, i)
        if flushes is not None:
            judge_flushes(flushes, [t for _, t in ack_at], dirty)
            report.max_lag = flushes.max_lag
            report.violations.extend(f"the flusher was late: {x}" for x in flushes.late)
    finally:
        report.moved = replay.moved
        _fs.fsync_fd = real_fsync  # type: ignore[assignment]
        quiet.setLevel(level)
        shutil.rmtree(scratch, ignore_errors=True)
        report.seconds = time.monotonic() - started
    return report


def _kind(problem: str) -> str:
    """A violation without its ids, to count them by kind."""
    problem = problem.split(": ", 1)[-1] if problem.startswith(("before", "after")) else problem
    return re.sub(r"\b([tsef]\d+|[0-9a-f-]{36})\b", "*", problem)[:70]


def _scratch_dir(work: Path) -> Path:
    """Where crash states are materialised: memory if possible (their fsyncs are free)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return Path(tempfile.mkdtemp(prefix="filelayer-powercut-", dir=shm))
    path = work / "states"
    path.mkdir()
    return path


def main(argv: list[str]) -> None:
    if argv[:1] == ["workload"]:
        run_workload(Spec(**json.loads(Path(argv[1]).read_text())))
    else:  # pragma: no cover
        raise SystemExit(f"usage: {sys.argv[0]} workload SPEC.json")


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main(sys.argv[1:])
