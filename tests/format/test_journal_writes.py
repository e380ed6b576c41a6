"""A writer appends to the journal it finds at the path, whatever replaced it since its
last write: a compaction, a repair, a ``git checkout`` by another process. What a writer
remembers of a journal between calls (its tombstones, where it ends) is checked against
the file each time, never trusted blindly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from filelayer import ArchiveStore
from filelayer.format import clock, journal


def step(step_id: str, output: str, kind: str = "assistant_message") -> dict[str, object]:
    return {
        "id": step_id,
        "threadId": "t1",
        "type": kind,
        "output": output,
        "createdAt": f"2026-01-01T00:00:{len(step_id):02d}.000000Z",
    }


def replace_file(path: Path, data: bytes) -> None:
    """What ``git checkout`` or a repair does, from another process: a new file renamed
    over the old one."""
    code = (
        "import os, sys\n"
        "path, data = sys.argv[1], bytes.fromhex(sys.argv[2])\n"
        "with open(path + '.new', 'wb') as f:\n"
        "    f.write(data)\n"
        "os.replace(path + '.new', path)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path), data.hex()], check=True)


def outputs(root: Path) -> dict[str, str]:
    thread = ArchiveStore(root).get_thread("t1")
    assert thread is not None
    return {s["id"]: s["output"] for s in thread["steps"]}


def test_a_write_after_the_journal_was_replaced_lands_in_the_new_file(tmp_path: Path) -> None:
    root = tmp_path / "chats"
    store = ArchiveStore(root)
    store.write_step(step("a", "first"))
    store.write_step(step("b", "second"))
    path = store.layout.journal("t1")
    old_inode = path.stat().st_ino
    # Another process rewrites the journal (an older version of it, say).
    replace_file(path, path.read_bytes().splitlines(keepends=True)[0])
    assert path.stat().st_ino != old_inode
    store.write_step(step("c", "third"))
    store.write_step(step("c", "third, updated", kind="run"))
    assert outputs(root) == {"a": "first", "c": "third, updated"}
    assert journal.read(path).bad_lines == []


def test_a_replaced_journal_with_a_torn_end_gets_its_fragment_closed(tmp_path: Path) -> None:
    """The writer knew its journal ended with a complete line; the file now at the path
    does not (same size, even): the new record still starts on a line of its own."""
    root = tmp_path / "chats"
    store = ArchiveStore(root)
    store.write_step(step("a", "first"))
    store.write_step(step("b", "second"))
    path = store.layout.journal("t1")
    data = path.read_bytes()
    torn = data[:-1] + b"x"  # the same length, no newline at the end
    replace_file(path, torn)
    store.write_step(step("c", "third"))
    read = journal.read(path)
    assert read.records[-1]["step"]["id"] == "c"
    assert read.bad_lines == [2]  # the torn fragment, skipped by readers
    assert outputs(root) == {"a": "first", "c": "third"}


def test_a_write_sees_what_another_process_appended_and_deleted(tmp_path: Path) -> None:
    root = tmp_path / "chats"
    mine = ArchiveStore(root)
    mine.write_step(step("a", "first"))
    mine.write_step(step("b", ""))
    other = ArchiveStore(root)
    other.delete_step("b", "t1")
    other.write_step(step("c", "from the other"))
    # A late write of the deleted step is dropped: the tombstone appended by the other
    # process is read, though this store took its own lines without reading them.
    mine.write_step(step("b", "late text"))
    mine.write_step(step("d", "mine again"))
    assert outputs(root) == {"a": "first", "c": "from the other", "d": "mine again"}
    assert "late text" not in mine.layout.journal("t1").read_text()


def test_a_thread_deleted_by_another_process_is_not_written_again(tmp_path: Path) -> None:
    root = tmp_path / "chats"
    mine = ArchiveStore(root)
    mine.write_step(step("a", "first"))
    ArchiveStore(root).delete_thread("t1")
    assert mine.write_step(step("b", "late")) is False
    assert not mine.layout.thread_dir("t1").exists()
    assert mine.get_thread("t1") is None


def test_a_journal_removed_by_hand_is_started_again(tmp_path: Path) -> None:
    root = tmp_path / "chats"
    store = ArchiveStore(root)
    store.write_step(step("a", "first"))
    os.unlink(store.layout.journal("t1"))
    store.write_step(step("b", "second"))
    assert outputs(root) == {"b": "second"}


def test_a_write_after_the_clock_stepped_back_follows_a_line_longer_than_the_tail_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stamp is one microsecond after the newest one in the journal when the clock is
    behind it (an NTP correction): also when the last line is a long answer, longer than
    the end of the file read first. Otherwise the newer write sorts first and loses."""
    root = tmp_path / "chats"
    store = ArchiveStore(root)
    store.write_step(step("s1", "A" * 300_000))
    store.close()
    monkeypatch.setattr(clock, "now_iso", lambda: "2020-01-01T00:00:00.000000Z")
    later = ArchiveStore(root)  # another process: it knows nothing of the journal yet
    later.write_step({"id": "s1", "threadId": "t1", "output": "final"})
    later.close()
    monkeypatch.undo()
    assert outputs(root) == {"s1": "final"}


def test_a_stamp_in_other_digits_than_ascii_ones_does_not_jump_the_queue(tmp_path: Path) -> None:
    """A line stamped with full-width digits (a hand edit, another program) has no
    valid stamp: it orders after the line before it, and a later write still wins."""
    root = tmp_path / "chats"
    store = ArchiveStore(root)
    store.write_step(step("s1", "first"))
    store.close()
    wide = "2026-01-01T00:00:00.000000Z".translate(
        str.maketrans("0123456789", "０１２３４５６７８９")
    )
    line = '{"at":"' + wide + '","op":"step","step":{"id":"s1","output":"edited"}}\n'
    with (root / "threads" / "t1" / "steps.jsonl").open("ab") as f:
        f.write(line.encode())
    assert outputs(root) == {"s1": "edited"}
    store = ArchiveStore(root)
    store.write_step({"id": "s1", "threadId": "t1", "output": "final"})
    store.close()
    assert outputs(root) == {"s1": "final"}
    assert not clock.is_stamp(wide)


@pytest.mark.parametrize(
    "stamp", ["2026-13-45T99:99:99.999999Z", "9999-12-31T23:59:59.999999Z"], ids=["no-date", "last"]
)
def test_a_write_follows_a_stamp_no_calendar_holds_a_microsecond_after(
    tmp_path: Path, stamp: str
) -> None:
    """A line another program stamped in the stamp's form with a date that does not exist,
    or with the last microsecond of year 9999, is the newest stamp: the next write is
    stamped after it (as text, as stamps compare) instead of failing, and wins."""
    root = tmp_path / "chats"
    store = ArchiveStore(root)
    store.write_step(step("s1", "first"))
    store.close()
    line = '{"at":"' + stamp + '","op":"step","step":{"id":"s1","output":"theirs"}}\n'
    with (root / "threads" / "t1" / "steps.jsonl").open("ab") as f:
        f.write(line.encode())
    store = ArchiveStore(root)
    store.write_step({"id": "s1", "threadId": "t1", "output": "final"})
    store.write_step({"id": "s1", "threadId": "t1", "output": "final again"})
    store.close()
    assert outputs(root) == {"s1": "final again"}
    stamps = [
        clock.stamp_of_line(line)
        for line in (root / "threads" / "t1" / "steps.jsonl").read_bytes().splitlines()
    ]
    assert stamps[-3:] == sorted(stamps[-3:]) and len(set(stamps[-3:])) == 3
