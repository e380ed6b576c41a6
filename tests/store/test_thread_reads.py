"""What a process remembers of the threads it read never outlives the files.

``get_thread`` keeps each recently read thread's folded journal and its steps in
Chainlit's shape, and a read answers from them after a ``stat`` of the journal. These
are the ways the files can change under a process, each followed by a read that must
say what the files now say; and what a caller does to what it was given, which must
not reach the next caller.
"""

from __future__ import annotations

import copy
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from filelayer import ArchiveStore


def _outputs(store: ArchiveStore, thread_id: str) -> list[str]:
    thread = store.get_thread(thread_id)
    assert thread is not None
    return [step["output"] for step in thread["steps"]]


def _step(sid: str, output: str, thread_id: str = "t1", **fields: Any) -> dict[str, Any]:
    return {"id": sid, "threadId": thread_id, "type": "run", "output": output, **fields}


def test_a_write_by_another_process_is_read(tmp_path: Path) -> None:
    store = ArchiveStore(tmp_path)
    store.write_step(_step("s1", "one"))
    assert _outputs(store, "t1") == ["one"]
    script = (
        "import sys\n"
        "from filelayer import ArchiveStore\n"
        "store = ArchiveStore(sys.argv[1])\n"
        "store.write_step({'id': 's1', 'threadId': 't1', 'type': 'run', 'output': 'uno'})\n"
        "store.write_step({'id': 's2', 'threadId': 't1', 'type': 'run', 'output': 'two'})\n"
        "store.close()\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True)
    assert _outputs(store, "t1") == ["uno", "two"]
    store.close()


def test_a_journal_replaced_whole_is_read_again(tmp_path: Path) -> None:
    """Compaction, a repair or a ``git checkout`` replace the journal: by a file with
    the same steps, by an older version of it, by one of the very same size."""
    store = ArchiveStore(tmp_path)
    store.write_step(_step("s1", "one"))
    journal = store.layout.journal("t1")
    older = journal.read_bytes()
    store.write_step(_step("s1", "eins"))
    store.write_step(_step("s2", "two"))
    assert _outputs(store, "t1") == ["eins", "two"]

    other = ArchiveStore(tmp_path)
    other.compact_journal("t1")
    other.close()
    assert journal.read_bytes().count(b"\n") == 2  # one line per step now
    assert _outputs(store, "t1") == ["eins", "two"]

    def check_out(data: bytes) -> None:  # as git does: a new file renamed over the old
        staged = journal.with_name("staged")
        staged.write_bytes(data)
        os.replace(staged, journal)

    check_out(older)
    assert _outputs(store, "t1") == ["one"]
    same_size = older.replace(b'"one"', b'"uno"')
    assert len(same_size) == len(older)
    check_out(same_size)
    assert _outputs(store, "t1") == ["uno"]
    store.close()


def test_a_journal_edited_in_place_with_its_time_put_back_is_read_again(
    tmp_path: Path,
) -> None:
    """An edit that keeps the size and puts the modification time back (``cp -p``,
    ``touch -r``, a restore): the process that read the thread before must see it, as
    a new process does (the change time moved; no program can set it)."""
    store = ArchiveStore(tmp_path)
    store.write_step(_step("s1", "hello"))
    store.write_step(_step("s2", "world"))
    assert _outputs(store, "t1") == ["hello", "world"]
    journal = store.layout.journal("t1")
    before = os.stat(journal)
    data = journal.read_bytes()
    with open(journal, "r+b") as f:  # in place: same file, same size
        f.write(data.replace(b'"hello"', b'"HELLO"'))
    os.utime(journal, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(journal).st_size == before.st_size
    assert _outputs(store, "t1") == ["HELLO", "world"]
    store.close()


def test_a_thread_deleted_by_another_process_is_not_read_from_memory(tmp_path: Path) -> None:
    store = ArchiveStore(tmp_path)
    store.write_step(_step("s1", "one"))
    assert _outputs(store, "t1") == ["one"]
    other = ArchiveStore(tmp_path)
    assert other.delete_thread("t1")
    other.close()
    assert store.get_thread("t1") is None
    store.close()


def test_the_manifest_is_read_on_every_read(tmp_path: Path) -> None:
    """Who wrote the thread and its name come from ``thread.json`` each time: the
    author decides who may read it (Chainlit asks before ``get_thread``)."""
    store = ArchiveStore(tmp_path)
    store.upsert_user("alice@example.com")
    store.upsert_user("bob@example.com")
    store.update_thread("t1", name="first", user_id=store.get_user("alice@example.com")["id"])  # type: ignore[index]
    store.write_step(_step("s1", "one"))
    thread = store.get_thread("t1")
    assert thread is not None and thread["userIdentifier"] == "alice@example.com"
    other = ArchiveStore(tmp_path)
    other.update_thread("t1", name="renamed", user_id=other.get_user("bob@example.com")["id"])  # type: ignore[index]
    other.close()
    thread = store.get_thread("t1")
    assert thread is not None
    assert (thread["name"], thread["userIdentifier"]) == ("renamed", "bob@example.com")
    assert store.thread_author("t1") == "bob@example.com"
    store.close()


def test_what_a_caller_changes_is_not_what_the_next_caller_gets(tmp_path: Path) -> None:
    """The app's ``on_chat_resume`` may change the thread it is given, in place."""
    store = ArchiveStore(tmp_path)
    store.write_step(
        _step(
            "s1",
            "one",
            metadata={"nested": {"list": [1, {"deep": "x"}]}},
            tags=["a"],
            generation={"messages": [{"role": "user"}]},
        )
    )
    store.write_step(_step("s2", "two"))  # no metadata: the default {}
    store.upsert_feedback(for_id="s1", value=1, feedback_id="f1", thread_id="t1")
    first = store.get_thread("t1")
    assert first is not None
    kept = copy.deepcopy(first)
    for thread in (first, store.get_thread("t1")):  # the first read and a repeated one
        assert thread is not None and thread == kept
        one, two = thread["steps"]
        one["metadata"]["nested"]["list"][1]["deep"] = "changed"
        one["metadata"]["new"] = True
        one["tags"].append("b")
        one["generation"]["messages"].clear()
        one["feedback"]["value"] = 0
        one["output"] = "changed"
        two["metadata"]["favorite"] = True
        thread["steps"].append({"id": "injected"})
        thread["metadata"]["x"] = 1
    assert store.get_thread("t1") == kept
    store.close()


def test_threads_holding_the_same_step_ids_are_each_read_as_themselves(tmp_path: Path) -> None:
    """Step ids are chosen by the client: two threads can hold the same one."""
    store = ArchiveStore(tmp_path)
    store.write_step(_step("s", "in one", "t1"))
    store.write_step(_step("s", "in two", "t2"))
    for _ in range(2):
        for thread_id, output in (("t1", "in one"), ("t2", "in two")):
            thread = store.get_thread(thread_id)
            assert thread is not None
            assert [(s["threadId"], s["output"]) for s in thread["steps"]] == [(thread_id, output)]
    store.close()


def test_a_damaged_line_is_skipped_and_the_lines_after_it_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ArchiveStore(tmp_path)
    store.write_step(_step("s1", "one"))
    assert _outputs(store, "t1") == ["one"]
    with open(store.layout.journal("t1"), "ab") as journal:
        journal.write(b'{"op":"step","step":{"id":"broken"\n')
    store.write_step(_step("s2", "two"))
    with caplog.at_level(logging.WARNING, logger="filelayer"):
        assert _outputs(store, "t1") == ["one", "two"]  # read on from where it was
        assert _outputs(ArchiveStore(tmp_path), "t1") == ["one", "two"]  # read whole
    assert [r for r in caplog.records if "damaged line" in r.getMessage()]
    store.close()
