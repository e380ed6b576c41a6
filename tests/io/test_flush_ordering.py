"""The flush mode's ordering rules, checked deterministically (no tracer, no sleeps).

The power-cut explorer (``tests/reliability/test_reliability_powercut.py``) found, now and then on a
loaded machine, a crash state taken after the background flush of a ``create_element``
had ended in which the element was broken: a re-send of it a moment later had its
journal record on the disk, but neither the record's new file (a re-send may change the
file's name: ``e3.txt`` becomes ``e3.pdf``) nor the old bytes, which the record no longer
points to. In the flush mode nothing orders a journal append against the name of a file
written just before it, so a re-sent element must make its new file and its name durable
before its record is appended, as any file that replaces another is fsynced before it is
published. Here every ``fsync`` the writer makes is recorded (the real ``os.fsync``, with
what the journal held at that moment), and the order is checked after the re-send.

A fresh file (made by this process, not yet flushed, replaced without an fsync) is
known by its inode, not by comparing its modification time with the moment it was
marked: another process's file renamed there within the same tick of the clock is not
fresh. The explorer's own attribution of calls to background flushes is checked on a
hand-made trace: a flush that took its paths before a call wrote must not be taken for
the flush that covers that call, however late its first system call comes.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from filelayer import ArchiveStore
from filelayer._io import fs as _fs
from filelayer._io.flusher import FLUSHER, Flusher
from tests.support.powercut import Event, flushes_of
from tests.support.reliability import have_chainlit, open_api


@dataclass
class Synced:
    """One ``fsync`` made by the writer: which inode, and the journal at that moment."""

    ino: int
    is_dir: bool
    path_exists: bool
    journal: bytes


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[list[Synced], list[Path]]]:
    """Record the writer's fsyncs (not the background flusher's: its thread may wake
    whenever the machine lets it). ``watch[0]`` is the journal, ``watch[1]`` the file
    whose name must be on the disk."""
    seen: list[Synced] = []
    watch: list[Path] = []
    real = os.fsync

    def recording(fd: int) -> None:
        real(fd)
        if threading.current_thread().name == "filelayer-flusher" or len(watch) < 2:
            return
        st = os.fstat(fd)
        journal = watch[0].read_bytes() if watch[0].exists() else b""
        seen.append(Synced(st.st_ino, stat.S_ISDIR(st.st_mode), watch[1].exists(), journal))

    monkeypatch.setattr(os, "fsync", recording)
    yield seen, watch


BACKENDS = [
    "store",
    pytest.param(
        "layer",
        marks=pytest.mark.skipif(not have_chainlit(), reason="FileDataLayer needs Chainlit"),
    ),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_resent_element_is_on_the_disk_before_its_record(
    tmp_path: Path, backend: str, fsyncs: tuple[list[Synced], list[Path]]
) -> None:
    seen, watch = fsyncs
    root = tmp_path / "chats"
    api = open_api(root, backend, "flush")
    try:
        api.update_thread("t1", name="Chat")
        api.create_step({"id": "s1", "threadId": "t1", "type": "user_message", "output": "hello"})
        spec = {"id": "e3", "threadId": "t1", "forId": "s1", "type": "file"}
        api.create_element({**spec, "name": "notes.txt", "mime": "text/plain", "content": b"old"})
        FLUSHER.flush()  # the first version is on the disk, as the background flush does
        journal = root / "threads" / "t1" / "steps.jsonl"
        elements = root / "threads" / "t1" / "elements"
        new = elements / "e3.pdf"
        watch.extend([journal, new])
        api.create_element(
            {**spec, "name": "report.pdf", "mime": "application/pdf", "content": b"new bytes"}
        )
        assert b"elements/e3.pdf" in journal.read_bytes()
        before_record = [s for s in seen if b"elements/e3.pdf" not in s.journal]
        new_ino, dir_ino = new.stat().st_ino, elements.stat().st_ino
        assert any(s.ino == new_ino and not s.is_dir for s in before_record), (
            "the re-sent element's bytes were not fsynced before its record was appended"
        )
        assert any(s.ino == dir_ino and s.is_dir and s.path_exists for s in before_record), (
            "the re-sent element's name was not fsynced (elements/) before its record"
        )
        assert api.element_bytes("t1", "e3") == b"new bytes"
    finally:
        api.close()


def test_a_first_element_costs_the_call_no_fsync(
    tmp_path: Path, fsyncs: tuple[list[Synced], list[Path]]
) -> None:
    """The ordering is for re-sends only: a new element (nothing on the disk to lose)
    is left to the background flush, so the flush mode's ordinary calls still wait for
    no disk."""
    seen, watch = fsyncs
    root = tmp_path / "chats"
    store = ArchiveStore(root)
    try:
        store.update_thread("t1", name="Chat")
        store.write_step({"id": "s1", "threadId": "t1", "type": "user_message", "output": "hi"})
        watch.extend([root / "threads" / "t1" / "steps.jsonl", root / "nothing"])
        element = {"id": "e1", "type": "file", "name": "a.txt", "forId": "s1", "mime": "text/plain"}
        store.put_element("t1", element, b"bytes")
        assert seen == []
    finally:
        store.close()


def test_a_file_another_process_put_there_is_not_taken_for_a_fresh_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsyncs: tuple[list[Synced], list[Path]]
) -> None:
    """A file this process made in the flush mode and has not flushed yet is replaced
    without an fsync (nothing of it is on the disk). Once another process renamed its
    own, durable file there, that is no longer so, even if it did so within the same
    tick of the kernel's clock (its modification time then is no later than this
    process's mark): replacing it without an fsync could publish an empty file in its
    place after a power cut."""
    seen, watch = fsyncs
    flusher = Flusher(interval=3600.0)  # flushes only when told: nothing races the test
    monkeypatch.setattr(_fs, "FLUSHER", flusher)
    store = ArchiveStore(tmp_path / "chats")
    try:
        store.update_thread("t1", name="Chat")
        manifest = tmp_path / "chats" / "threads" / "t1" / "thread.json"
        assert not _fs.holds_durable_content(manifest)  # ours, fresh: no fsync needed
        ours = manifest.stat()
        # Another process (the fsync mode, or verify --repair) replaces it durably, in
        # the same tick: its file's modification time is ours.
        other = manifest.with_name("other.tmp")
        other.write_bytes(manifest.read_bytes().replace(b'"Chat"', b'"Theirs"'))
        fd = os.open(other, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        os.replace(other, manifest)
        os.utime(manifest, ns=(ours.st_atime_ns, ours.st_mtime_ns))
        assert _fs.holds_durable_content(manifest)
        watch.extend([manifest, manifest])
        store.update_thread("t1", name="Ours again")
        assert manifest.stat().st_ino in {s.ino for s in seen if not s.is_dir}, (
            "the replacement of a durable manifest was renamed without an fsync"
        )
        flusher.flush()
        assert _fs.holds_durable_content(manifest)  # flushed: on the disk now
    finally:
        store.close()


# -- the explorer's flush attribution ---------------------------------------------------------


def _event(name: str, args: list[str], at: int, when: float, pid: str, ret: int = 0) -> Event:
    return Event(name, args, ret, None, at, at, when, when, pid)


def test_the_explorer_does_not_credit_a_flush_that_took_its_paths_before_the_call() -> None:
    """The flusher takes the paths named so far under its lock, then (the interpreter
    lock permitting: on a loaded machine, milliseconds later) makes its first system
    call. A call that wrote between the two returns before that first call: its writes
    are not in that flush, so the explorer must not require them once it ended. The
    flusher's own marks in the acknowledgement file say which batch took what."""
    acks = "/acks.log"
    hexed = "".join(f"\\x{b:02x}" for b in acks.encode())

    def ack_write(line: str, at: int, when: float, pid: str) -> Event:
        data = "".join(f"\\x{b:02x}" for b in line.encode())
        return _event("write", [f"3<{hexed}>", f'"{data}"', str(len(line))], at, when, pid)

    main, flusher = "100", "101"
    events = [
        ack_write("ACK 0 null\n", 1, 0.0, main),
        ack_write("ACK 1 null\n", 2, 0.10, main),
        # the flusher takes the paths of calls 0 and 1 ...
        ack_write("FLUSH 1\n", 3, 1.00, flusher),
        # ... call 2 writes and returns before the flusher's first system call ...
        ack_write("ACK 2 null\n", 4, 1.01, main),
        # ... then the flush's fsyncs, and its end
        _event("fsync", ["5</archive/chats/threads/t1/steps.jsonl>"], 5, 1.02, flusher),
        ack_write("FLUSHED 1\n", 6, 1.03, flusher),
        ack_write("FLUSH 2\n", 7, 2.01, flusher),
        ack_write("FLUSHED 2\n", 8, 2.02, flusher),
    ]
    lines = [
        "ACK 0 null",
        "ACK 1 null",
        "FLUSH 1",
        "ACK 2 null",
        "FLUSHED 1",
        "FLUSH 2",
        "FLUSHED 2",
    ]
    found = flushes_of(events, lines, acks)
    # calls 0 and 1: covered by flush 1 (it ended at trace position 6); call 2 only by
    # flush 2 (position 8), although flush 1's first system call came after it returned
    assert found.covered == [6, 6, 8]
    assert found.batches == [(1.00, 1.03), (2.01, 2.02)]
