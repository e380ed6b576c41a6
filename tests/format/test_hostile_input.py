"""Ids come from the network: none may read or write outside the root."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from filelayer import ArchiveStore, InvalidIdError
from filelayer.format.ids import is_valid_id

HOSTILE = [
    "..",
    ".",
    "../escape",
    "../../etc/passwd",
    "/etc/passwd",
    "/tmp/x",
    "a/b",
    "a\\b",
    "..\\..\\win",
    "x\x00y",
    "",
    " ",
    "CON",
    "nul.txt",
    "Com1",
    "lpt9.log",
    "trailing.",
    ".hidden",
    "-leading-dash",
    "a" * 129,
    "ünïcode",
    "line\nbreak",
    "%2e%2e",
    "C:evil",
]


def snapshot(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


@pytest.mark.parametrize("bad", HOSTILE)
def test_hostile_ids_are_not_valid(bad: str) -> None:
    assert not is_valid_id(bad)


@pytest.mark.parametrize("bad", [None, 42, b"bytes", ["list"]])
def test_non_strings_are_not_valid(bad: object) -> None:
    assert not is_valid_id(bad)


@pytest.mark.parametrize("bad", [None, 42, ["list"]])
def test_deletes_of_non_string_ids_delete_nothing(store: ArchiveStore, bad: Any) -> None:
    assert store.delete_thread(bad) is False
    assert store.delete_step(bad) is False
    assert store.delete_feedback(bad) is False
    assert store.delete_element(bad) is False


def test_uuid_like_ids_are_valid() -> None:
    assert is_valid_id("5f0c6c1e-2f5b-4a8e-9a63-0f6f1b2c3d4e")
    assert is_valid_id("run_1.step-2")


@pytest.mark.parametrize("bad", HOSTILE)
def test_store_reads_answer_not_found_deletes_nothing_deleted_writes_raise(
    tmp_path: Path, bad: str
) -> None:
    root = tmp_path / "archive" / "chats"
    store = ArchiveStore(root)
    store.write_step({"id": "ok", "threadId": "fine", "type": "run"})
    outside_before = snapshot(tmp_path)

    assert store.get_thread(bad) is None
    assert store.thread_author(bad) == ""
    assert store.get_element(bad, "ok") is None
    assert store.get_element("fine", bad) is None
    assert store.read_manifest(bad) is None
    # A delete of an id that names nothing deletes nothing, and writes nothing (not even
    # a tombstone), as a read of it finds nothing: no error for the app to turn into a 500.
    untouched = snapshot(tmp_path)
    assert store.delete_thread(bad) is False
    assert store.delete_step(bad) is False
    assert store.delete_step("missing", bad) is False
    assert store.delete_feedback(bad) is False
    assert store.delete_element(bad) is False
    assert store.delete_element("e", bad) is False
    assert snapshot(tmp_path) == untouched
    assert store.get_thread("fine") is not None
    writes: list[Any] = [
        lambda: store.update_thread(bad, name="x"),
        lambda: store.write_step({"id": bad, "threadId": "fine", "type": "run"}),
        lambda: store.write_step({"id": "s", "threadId": bad, "type": "run"}),
        lambda: store.upsert_feedback(for_id=bad, value=1, thread_id="fine"),
        lambda: store.upsert_feedback(for_id="ok", value=1, thread_id=bad),
        lambda: store.put_element(bad, {"id": "e", "type": "file"}, b"x"),
        lambda: store.put_element("fine", {"id": bad, "type": "file"}, b"x"),
    ]
    if bad:  # an empty feedback id means "none given": a new id is made
        writes.append(
            lambda: store.upsert_feedback(for_id="ok", value=1, thread_id="fine", feedback_id=bad)
        )
    for write in writes:
        with pytest.raises(ValueError):
            write()
    assert snapshot(tmp_path) == outside_before


def test_invalid_id_errors_say_what_is_allowed(store: ArchiveStore) -> None:
    with pytest.raises(InvalidIdError) as info:
        store.update_thread("../x")
    message = str(info.value)
    assert "thread" in message and "letters, digits" in message


def test_an_element_name_cannot_steer_the_file_name(store: ArchiveStore, root: Path) -> None:
    store.put_element(
        "t1", {"id": "e1", "type": "file", "name": "../../../../evil.sh", "mime": "text/x-sh"}, b"x"
    )
    files = [p for p in root.rglob("*") if p.is_file() and "elements" in p.parts]
    assert [p.relative_to(root) for p in files] == [Path("threads/t1/elements/e1.sh")]


def test_a_hand_edited_element_record_cannot_point_outside(
    store: ArchiveStore, root: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve")
    store.put_element("t1", {"id": "e1", "type": "file", "name": "a.txt"}, b"ok")
    journal = root / "threads" / "t1" / "steps.jsonl"
    for evil in [
        "../../../secret.txt",
        "elements/../../../../secret.txt",
        str(secret),
        "elements/..",
        "elements/.hidden",
    ]:
        journal.write_text(
            journal.read_text().replace('"file":"elements/e1.txt"', f'"file":"{evil}"')
        )
        assert store.element_file("t1", "e1") is None
        journal.write_text(
            journal.read_text().replace(f'"file":"{evil}"', '"file":"elements/e1.txt"')
        )
    assert store.element_file("t1", "e1") is not None


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_thread_ids_are_checked_even_when_a_directory_exists(
    store: ArchiveStore, root: Path
) -> None:
    # A directory with an invalid name (made by hand) is neither listed nor readable.
    (root / "threads" / "bad name").mkdir()
    assert "bad name" not in store.thread_ids()
    assert store.get_thread("bad name") is None


async def test_the_data_layer_refuses_hostile_writes_and_answers_reads(
    root: Path, in_tmp: Path, tmp_path: Path
) -> None:
    pytest.importorskip("chainlit")
    from chainlit.context import init_http_context
    from chainlit.types import Feedback

    from filelayer import FileDataLayer

    init_http_context()
    layer = FileDataLayer(root)
    before = snapshot(tmp_path)
    for bad in ["../x", "/etc", "a/b", "x\x00y", ""]:
        assert await layer.get_thread(bad) is None
        assert await layer.get_thread_author(bad) == ""
        assert await layer.get_element(bad, bad) is None
        with pytest.raises(ValueError):
            await layer.update_thread(bad, name="x")
        with pytest.raises(ValueError):
            await layer.create_step({"id": "s", "threadId": bad, "type": "run"})
        with pytest.raises(ValueError):
            await layer.upsert_feedback(Feedback(forId="s", value=1, threadId=bad))
        # Deletes answer "nothing deleted" (Chainlit turns an exception into a 500).
        assert await layer.delete_feedback(bad) is False
        assert await layer.delete_thread(bad) is None
        assert await layer.delete_step(bad) is None
        assert await layer.delete_element(bad) is None
        assert await layer.delete_element("e", bad) is None
    assert snapshot(tmp_path) - before <= {
        p for p in snapshot(tmp_path) if p.startswith(("chats", "cwd"))
    }


BAD_ELEMENT_FIELDS = [
    ("name", 5),
    ("name", {"a": 1}),
    ("mime", 3),
    ("mime", ["image/png"]),
    ("display", {"a": 1}),
    ("url", 7),
    ("objectKey", 1),
    ("chainlitKey", {"k": 1}),
    ("size", 5),
    ("size", True),
    ("type", 4),
    ("language", 3),
    ("forId", 1),
    ("page", "2"),
    ("page", True),
    ("props", "x"),
    ("playerConfig", [1]),
    ("autoPlay", "yes"),
]


@pytest.mark.parametrize(("field", "bad"), BAD_ELEMENT_FIELDS)
def test_an_element_field_of_a_wrong_type_is_refused_and_nothing_is_written(
    store: ArchiveStore, root: Path, field: str, bad: Any
) -> None:
    # A number as name or mime type failed half-way (a TypeError from the file name,
    # after the thread was made); any other stored as given reached every reader.
    from filelayer import InvalidFieldError

    store.write_step({"id": "s1", "threadId": "t1", "type": "run"})
    before = {p: p.read_bytes() for p in (root / "threads").rglob("*") if p.is_file()}
    record = {"id": "e1", "type": "file", "name": "noext", "forId": "s1", field: bad}
    for thread in ("t1", "t-new"):
        with pytest.raises(InvalidFieldError, match=field):
            store.put_element(thread, record, b"bytes")
        with pytest.raises(InvalidFieldError, match=field):
            store.put_element(thread, record, None)
        with pytest.raises(InvalidFieldError, match=field):
            store.prepare_element(thread, record)
        with pytest.raises(InvalidFieldError, match=field):
            store.record_element(thread, record)
    after = {p: p.read_bytes() for p in (root / "threads").rglob("*") if p.is_file()}
    assert after == before
    assert not (root / "threads" / "t-new").exists()


@pytest.mark.parametrize(("field", "bad"), BAD_ELEMENT_FIELDS)
async def test_the_data_layer_refuses_an_element_field_of_a_wrong_type(
    root: Path, in_tmp: Path, field: str, bad: Any
) -> None:
    pytest.importorskip("chainlit")
    from chainlit import element as elements
    from chainlit.context import init_http_context

    from filelayer import FileDataLayer, InvalidFieldError

    init_http_context()
    layer = FileDataLayer(root)
    attributes = {
        "objectKey": "object_key",
        "chainlitKey": "chainlit_key",
        "forId": "for_id",
        "playerConfig": "player_config",
        "autoPlay": "auto_play",
    }
    try:
        for thread in ("t1", "t-new"):
            element = elements.File(id="e1", name="noext", thread_id=thread, content=b"x")
            if field == "type":
                element = elements.CustomElement(id="e1", name="noext", thread_id=thread)
                element.type = bad  # type: ignore[misc]
            else:
                setattr(element, attributes.get(field, field), bad)
            with pytest.raises(InvalidFieldError, match=field):
                await layer.create_element(element)
        assert not (root / "threads" / "t-new").exists()
        assert not (root / "threads" / "t1").exists()
    finally:
        await layer.close()


def test_a_thread_id_differing_from_another_only_in_case_is_refused(
    store: ArchiveStore, root: Path
) -> None:
    # On a file system that ignores case (macOS's, Windows') ``T1`` is ``t1``'s
    # directory: its writes would land in that other conversation, and a git clone of
    # an archive holding both on such a system would hold one.
    store.write_step({"id": "s1", "threadId": "t1", "type": "run"})
    threads = root / "threads"
    before = {p: p.read_bytes() for p in threads.rglob("*") if p.is_file()}
    with pytest.raises(InvalidIdError, match="case"):
        store.write_step({"id": "s2", "threadId": "T1", "type": "run"})
    with pytest.raises(InvalidIdError, match="case"):
        store.update_thread("T1", name="other")
    with pytest.raises(InvalidIdError, match="case"):
        store.put_element("T1", {"id": "e1", "type": "file", "name": "a.txt"}, b"x")
    with pytest.raises(InvalidIdError, match="case"):
        store.put_manifest({"id": "T1", "createdAt": "2026-01-01T00:00:00Z", "metadata": {}})
    assert {p: p.read_bytes() for p in threads.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in threads.iterdir()) == ["t1"]
    store.write_step({"id": "s3", "threadId": "t1", "type": "run"})  # its own id still writes


def test_a_thread_id_a_case_blind_file_system_finds_as_another_is_refused(
    store: ArchiveStore, root: Path
) -> None:
    # What a file system that ignores case shows for ``T1`` once ``t1`` exists: a
    # directory holding ``t1``'s manifest. The write is refused, not appended to it.
    import shutil

    store.write_step({"id": "s1", "threadId": "t1", "type": "run"})
    threads = root / "threads"
    shutil.copytree(threads / "t1", threads / "T1")
    (root / "THREADS").mkdir()  # and ``THREADS`` is ``threads/``
    before = {p: p.read_bytes() for p in threads.rglob("*") if p.is_file()}
    fresh = ArchiveStore(root)
    try:
        with pytest.raises(InvalidIdError, match="case"):
            fresh.write_step({"id": "s2", "threadId": "T1", "type": "run"})
        with pytest.raises(InvalidIdError, match="case"):
            fresh.update_thread("T1", name="other")
    finally:
        fresh.close()
    assert {p: p.read_bytes() for p in threads.rglob("*") if p.is_file()} == before


def test_an_element_id_differing_from_another_only_in_case_is_refused(
    store: ArchiveStore, root: Path
) -> None:
    # ``E1.txt`` beside ``e1.txt`` is one file where case is ignored: the second send
    # would overwrite the first element's bytes.
    store.put_element("t1", {"id": "e1", "type": "file", "name": "a.txt"}, b"first")
    threads = root / "threads"
    before = {p: p.read_bytes() for p in threads.rglob("*") if p.is_file()}
    for data in (b"second", None):
        with pytest.raises(InvalidIdError, match="case"):
            store.put_element("t1", {"id": "E1", "type": "file", "name": "b.txt"}, data)
    with pytest.raises(InvalidIdError, match="case"):
        store.prepare_element("t1", {"id": "E1", "type": "file", "name": "b.txt"})
    assert {p: p.read_bytes() for p in threads.rglob("*") if p.is_file()} == before
    store.put_element("t1", {"id": "e1", "type": "file", "name": "a.txt"}, b"again")
    store.put_element("t2", {"id": "E1", "type": "file", "name": "b.txt"}, b"elsewhere")


@pytest.mark.parametrize("bad", [5, {"a": 1}, ["x"], True])
def test_a_display_name_that_is_no_string_is_refused(
    store: ArchiveStore, root: Path, bad: Any
) -> None:
    # Stored, it made every later get_user of that login fail in Chainlit's own
    # PersistedUser: the user could no longer log in.
    from filelayer import InvalidValueError

    store.upsert_user("bob@example.com", {"a": 1}, "Bob")
    users = root / "users"
    before = {p: p.read_bytes() for p in users.iterdir()}
    for identifier in ("bob@example.com", "new@example.com"):
        with pytest.raises(InvalidValueError, match="display name"):
            store.upsert_user(identifier, {}, bad)
    assert {p: p.read_bytes() for p in users.iterdir()} == before


async def test_a_stored_display_name_that_is_no_string_still_logs_in(
    root: Path, in_tmp: Path
) -> None:
    # What an earlier release (or a hand edit) stored: readers expect any JSON value.
    pytest.importorskip("chainlit")
    import json

    from chainlit.context import init_http_context

    from filelayer import FileDataLayer

    init_http_context()
    store = ArchiveStore(root)
    store.upsert_user("bob@example.com", {"a": 1}, "Bob")
    store.close()
    [path] = (root / "users").iterdir()
    doc = json.loads(path.read_text("utf-8"))
    path.write_text(json.dumps({**doc, "displayName": {"a": 1}, "metadata": [1]}), "utf-8")
    layer = FileDataLayer(root)
    try:
        user = await layer.get_user("bob@example.com")
        assert user is not None and user.identifier == "bob@example.com"
        assert (user.display_name, user.metadata) == (None, {})
    finally:
        await layer.close()


def test_a_thread_another_process_made_is_seen_by_the_case_check(
    store: ArchiveStore, root: Path
) -> None:
    # The listing of threads/ this store keeps is taken again once another process
    # changed the directory.
    store.write_step({"id": "s1", "threadId": "a1", "type": "run"})
    store.write_step({"id": "s1", "threadId": "a2", "type": "run"})
    other = ArchiveStore(root)
    try:
        other.write_step({"id": "s1", "threadId": "t1", "type": "run"})
    finally:
        other.close()
    with pytest.raises(InvalidIdError, match="case"):
        store.write_step({"id": "s2", "threadId": "T1", "type": "run"})
    assert sorted(p.name for p in (root / "threads").iterdir()) == ["a1", "a2", "t1"]


def test_no_write_reaches_a_thread_through_an_id_of_another_case(
    store: ArchiveStore, root: Path
) -> None:
    # What a file system that ignores case shows once ``t1`` exists: ``THREADS`` is
    # ``threads/`` and ``threads/T1`` is ``t1``'s directory. A deletion, feedback, a
    # step deleted through ``T1`` would change ``t1``'s files under another id.
    import shutil

    store.write_step({"id": "s1", "threadId": "t1", "type": "run"})
    store.put_element("t1", {"id": "e1", "type": "file", "name": "a.txt"}, b"x")
    store.close()
    (root / "THREADS").mkdir()
    shutil.copytree(root / "threads" / "t1", root / "threads" / "T1")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and "index" not in p.parts}
    fresh = ArchiveStore(root)
    try:
        with pytest.raises(InvalidIdError, match="case"):
            fresh.upsert_feedback(for_id="s1", value=1, thread_id="T1")
        with pytest.raises(InvalidIdError, match="case"):
            fresh.delete_step("s1", "T1")
        with pytest.raises(InvalidIdError, match="case"):
            fresh.delete_element("e1", "T1")
        with pytest.raises(InvalidIdError, match="case"):
            fresh.delete_thread("T1")
        fresh.upsert_feedback(for_id="s1", value=1, thread_id="t1")  # its own id writes
    finally:
        fresh.close()
    after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and "index" not in p.parts}
    assert {p for p in after if after[p] != before.get(p)} <= {
        root / "threads" / "t1" / "steps.jsonl"
    }


@pytest.mark.parametrize("bad", ["x", None, 2.5, [3]])
def test_a_page_size_that_is_no_whole_number_is_refused(store: ArchiveStore, bad: Any) -> None:
    # int() turned "x" into a bare ValueError and None into a TypeError.
    from filelayer import InvalidValueError

    store.write_step({"id": "s1", "threadId": "t1", "type": "run"})
    with pytest.raises(InvalidValueError, match="page size"):
        store.list_threads(user_id=None, first=bad)


@pytest.mark.parametrize("bad", ["text", 5, {"a": 1}, ["x"], True])
def test_element_bytes_that_are_not_bytes_are_refused_before_any_file(
    store: ArchiveStore, root: Path, bad: Any
) -> None:
    # A TypeError came from the write of the temporary file, which stayed behind.
    from filelayer import InvalidValueError

    store.write_step({"id": "s1", "threadId": "t1", "type": "run"})
    before = {str(p) for p in (root / "threads").rglob("*")}
    with pytest.raises(InvalidValueError, match="bytes"):
        store.put_element("t1", {"id": "e5", "type": "file", "name": "a.txt"}, bad)
    assert {str(p) for p in (root / "threads").rglob("*")} == before


@pytest.mark.parametrize("bad", [5, None, ["x"], "step", b"x"])
def test_a_step_or_element_that_is_no_object_is_refused(store: ArchiveStore, bad: Any) -> None:
    from filelayer import InvalidValueError

    with pytest.raises(InvalidValueError, match="object"):
        store.write_step(bad)
    with pytest.raises(InvalidValueError, match="object"):
        store.put_element("t1", bad, None)
    with pytest.raises(InvalidValueError, match="object"):
        store.record_element("t1", bad)
    if bad is not None:  # no element: the directory alone is prepared
        with pytest.raises(InvalidValueError, match="object"):
            store.prepare_element("t1", bad)
    assert store.thread_ids() == []


@pytest.mark.parametrize("bad", [{"a": 1}, ["x"], 5, None])
def test_lookups_of_an_id_that_is_no_string_find_nothing(store: ArchiveStore, bad: Any) -> None:
    # A dict or a list failed with "unhashable type" from the caches.
    store.write_step({"id": "s1", "threadId": "t1", "type": "run"})
    assert store.locate_step(bad) is None
    assert store.locate_element(bad) is None
    with pytest.raises(InvalidIdError):
        store.compact_journal(bad)
