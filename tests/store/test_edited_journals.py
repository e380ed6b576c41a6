"""A journal edited in place behind a process that keeps its fold (an editor that
writes in place, ``truncate`` and a rewrite, a checkout that keeps the file): a
deletion made afterwards by that process acts on what the journal holds now, not on
what it held when the process last read it.

The contract of ``tests/support/drivers.py``: each test runs on ``ArchiveStore`` and
through ``FileDataLayer``."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.drivers import Driver

PAD = "x" * 300
"""A step long enough that the edited line is well before the end of what was read."""


def element_files(root: Path, thread: str = "t1") -> list[str]:
    directory = root / "threads" / thread / "elements"
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def edit_in_place(journal: Path, old: bytes, new: bytes, appended: bytes) -> None:
    """Replace ``old`` by ``new`` (as long) in the journal, the same file, and make it
    longer by ``appended``, as an editor writing in place does."""
    data = journal.read_bytes()
    assert len(old) == len(new) and data.count(old) == 1
    inode = os.stat(journal).st_ino
    with open(journal, "r+b") as f:
        f.write(data.replace(old, new) + appended)
    assert os.stat(journal).st_ino == inode


async def _thread(driver: Driver, for_id: str) -> Path:
    """A thread with steps m0 and m1, an element ``e-a`` for ``for_id``, a long step
    after it; read, so that the process keeps its fold. Returns its journal."""
    for step_id in ("m0", "m1"):
        await driver.create_step(
            {"id": step_id, "threadId": "t1", "type": "user_message", "output": step_id}
        )
    await driver.create_element("e-a", "t1", for_id, "a.txt", type="text", content="secret")
    await driver.create_step({"id": "pad", "threadId": "t1", "type": "run", "output": PAD})
    thread = await driver.get_thread("t1")
    assert [e["id"] for e in thread["elements"]] == ["e-a"]
    return driver.root / "threads" / "t1" / "steps.jsonl"


async def test_a_step_deletion_after_an_edit_in_place_removes_the_elements_it_now_has(
    driver: Driver, root: Path
) -> None:
    journal = await _thread(driver, "m0")
    # The element now belongs to m1 (as long a line), and the journal grew.
    line = b'{"op":"step","step":{"id":"late","threadId":"t1","type":"run"}}\n'
    edit_in_place(journal, b'"forId":"m0"', b'"forId":"m1"', line)
    assert element_files(root) == ["e-a.txt"]
    await driver.delete_step("m1")
    thread = await driver.get_thread("t1")
    assert [s["id"] for s in thread["steps"]] == ["m0", "pad", "late"]
    assert thread["elements"] == []
    assert element_files(root) == []  # no copy of a deleted element's bytes is left


async def test_an_element_deletion_after_an_edit_in_place_finds_the_element(
    driver: Driver, root: Path
) -> None:
    journal = await _thread(driver, "m0")
    # The element is now e-b (as long a line), and the journal grew.
    line = b'{"op":"step","step":{"id":"late","threadId":"t1","type":"run"}}\n'
    edit_in_place(journal, b'"id":"e-a"', b'"id":"e-b"', line)
    await driver.delete_element("e-b", "t1")
    thread = await driver.get_thread("t1")
    assert thread["elements"] == []
    assert element_files(root) == []


def test_a_step_looked_up_in_a_thread_edited_in_place_is_found_there(tmp_path: Path) -> None:
    """Chainlit's ``delete_step`` gives no thread: the caller's session thread is looked
    in first (step ids are the client's: another thread may hold the same one). That
    thread, edited in place to hold the step, must be found to, by its fold checked
    again: not the other thread."""
    from filelayer import ArchiveStore

    store = ArchiveStore(tmp_path / "chats")
    store.write_step({"id": "dup", "threadId": "t2", "type": "run", "output": "theirs"})
    for step_id, output in (("m0", "m0"), ("xyz", "mine"), ("pad", PAD)):
        store.write_step({"id": step_id, "threadId": "t1", "type": "run", "output": output})
    assert store.get_thread("t1") is not None  # its fold kept
    journal = store.layout.journal("t1")
    line = b'{"op":"step","step":{"id":"late","threadId":"t1","type":"run"}}\n'
    edit_in_place(journal, b'"id":"xyz"', b'"id":"dup"', line)
    assert store.delete_step("dup", prefer="t1")
    t1, t2 = store.get_thread("t1"), store.get_thread("t2")
    assert t1 is not None and t2 is not None
    assert [s["id"] for s in t1["steps"]] == ["m0", "pad", "late"]
    assert [s["id"] for s in t2["steps"]] == ["dup"]
    store.close()


def test_a_write_after_an_edit_in_place_of_the_same_size_sees_the_deletion_it_brought(
    tmp_path: Path,
) -> None:
    """A journal this process just appended to, then rewritten in place with its size
    kept (a backup copied over it with ``cp``): a deletion it now holds is seen by the
    next write, which then leaves nothing in the index (the change time tells)."""
    from filelayer import ArchiveStore

    store = ArchiveStore(tmp_path / "chats")
    store.write_step({"id": "a", "threadId": "t1", "type": "user_message", "output": "alpha"})
    journal = store.layout.journal("t1")
    data = journal.read_bytes()
    line = data.splitlines(keepends=True)[-1]
    deletion = b'{"id":"b","op":"step.delete"}'
    edited = deletion + b" " * (len(line) - len(deletion) - 1) + b"\n"
    with open(journal, "r+b") as f:  # in place, as long as before
        f.write(data[: -len(line)] + edited)
    assert len(journal.read_bytes()) == len(data)
    store.write_step({"id": "b", "threadId": "t1", "type": "user_message", "output": "bravo"})
    threads, _ = store.list_threads(user_id=None, search="bravo")
    assert threads == []
    thread = store.get_thread("t1")
    assert thread is not None and thread["steps"] == []
    store.close()


async def test_an_element_resent_after_an_edit_in_place_replaces_the_file_it_now_names(
    driver: Driver, root: Path
) -> None:
    """The journal, rewritten in place (a restore), names another file of the element:
    that one is what a re-send under another name replaces."""
    await _thread(driver, "m0")
    journal = root / "threads" / "t1" / "steps.jsonl"
    restored = root / "threads" / "t1" / "elements" / "e-a.csv"
    restored.write_text("restored")
    line = b'{"op":"step","step":{"id":"late","threadId":"t1","type":"run"}}\n'
    edit_in_place(journal, b'"elements/e-a.txt"', b'"elements/e-a.csv"', line)
    await driver.create_element("e-a", "t1", "m0", "a.pdf", type="pdf", content=b"%PDF")
    assert "e-a.csv" not in element_files(root)  # no copy of the old bytes is left
    assert "e-a.pdf" in element_files(root)


async def test_a_read_between_the_edit_and_the_deletion_does_not_hide_the_edit(
    driver: Driver, root: Path
) -> None:
    """A read after the edit reads on from where it was left (it does not check what it
    read before); the deletion that follows still does."""
    journal = await _thread(driver, "m0")
    line = b'{"op":"step","step":{"id":"late","threadId":"t1","type":"run"}}\n'
    edit_in_place(journal, b'"id":"e-a"', b'"id":"e-b"', line)
    await driver.get_thread("t1")
    await driver.delete_element("e-b", "t1")
    assert (await driver.get_thread("t1"))["elements"] == []
    assert element_files(root) == []


async def test_a_read_after_an_edit_in_place_serves_what_the_journal_holds_now(
    driver: Driver, root: Path
) -> None:
    """The process that read the thread before the edit serves what a new process
    does (a backup copied over the journal, longer than what was read)."""
    journal = await _thread(driver, "m0")
    line = b'{"op":"step","step":{"id":"late","threadId":"t1","type":"run"}}\n'
    edit_in_place(journal, b'"output":"m1"', b'"output":"M1"', line)
    thread = await driver.get_thread("t1")
    assert [s["output"] for s in thread["steps"]][:2] == ["m0", "M1"]
    fresh = await driver.another_worker().get_thread("t1")
    assert thread["steps"] == fresh["steps"]
