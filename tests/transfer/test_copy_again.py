"""``filelayer copy`` run again after either side changed: what the source changed is
carried, what the destination changed is kept, decided by content where times cannot
tell, on SQLite (the lightest database: every table here is Chainlit's or the copy's)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from filelayer import ArchiveStore
from filelayer.maintenance.retention import erase_user
from filelayer.transfer.archive import ArchiveEndpoint
from filelayer.transfer.copier import copy_archive


def t(second: int) -> str:
    return f"2026-03-01T10:00:{second:02d}.000Z"


class Blobs:
    """A storage client like Chainlit's, keeping objects in memory."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    async def upload_file(
        self, object_key: str, data: Any, mime: str = "", overwrite: bool = True, **kw: Any
    ) -> dict[str, Any]:
        self.objects[object_key] = data if isinstance(data, bytes) else data.encode()
        return {"object_key": object_key, "url": "http://127.0.0.1:9/" + object_key}

    async def delete_file(self, object_key: str) -> bool:
        return self.objects.pop(object_key, None) is not None

    async def get_read_url(self, object_key: str) -> str:
        return "http://127.0.0.1:9/" + object_key

    async def close(self) -> None:
        pass


class Files(Blobs):
    """A storage client over a directory, whose read URLs are ``file://`` URLs."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    async def upload_file(
        self, object_key: str, data: Any, mime: str = "", overwrite: bool = True, **kw: Any
    ) -> dict[str, Any]:
        path = self.root / object_key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        return await super().upload_file(object_key, data, mime, overwrite, **kw)

    async def get_read_url(self, object_key: str) -> str:
        return (self.root / object_key).as_uri()


def archive(root: Path) -> ArchiveStore:
    """An archive with one thread, one step and a file on it."""
    s = ArchiveStore(root, create=True)
    u = s.upsert_user("bob")
    s.update_thread("t1", name="n", user_id=u["id"])
    s.write_step(
        {
            "id": "s1",
            "threadId": "t1",
            "type": "tool",
            "name": "x",
            "createdAt": t(1),
            "output": "a",
        }
    )
    s.put_element("t1", {"id": "e1", "type": "file", "name": "f.txt", "forId": "s1"}, b"one")
    return s


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def test_new_bytes_of_an_element_reach_the_sqlalchemy_schema(tmp_path: Path) -> None:
    """The layer's elements table has no room for the bytes' digest: the copy keeps what
    it uploaded in its own table, so new bytes of the same element are uploaded again,
    and the same bytes are not."""
    s = archive(tmp_path / "a")
    blobs, db = Blobs(), tmp_path / "o.db"
    url = f"sqlite:///{db}"
    first = await copy_archive(str(tmp_path / "a"), url, create_schema=True, storage=blobs)
    assert not first.problems, first.render()
    assert list(blobs.objects.values()) == [b"one"]
    s.put_element("t1", {"id": "e1", "type": "file", "name": "f.txt", "forId": "s1"}, b"two")
    again = await copy_archive(str(tmp_path / "a"), url, storage=blobs)
    assert not again.problems, again.render()
    assert again.counts["elements"]["updated"] == 1, again.render()
    assert list(blobs.objects.values()) == [b"two"]
    third = await copy_archive(str(tmp_path / "a"), url, storage=blobs)
    assert third.counts["elements"]["unchanged"] == 1 and third.bytes_copied == 0, third.render()


def later(second: int) -> str:
    """A time after the archive's own (its manifest is stamped with the clock's)."""
    return f"2099-03-01T10:00:{second:02d}.000Z"


def two_steps(root: Path) -> ArchiveStore:
    s = ArchiveStore(root, create=True)
    u = s.upsert_user("bob")
    s.update_thread("t1", name="n", user_id=u["id"])
    for sid, second in (("s1", 1), ("s2", 9)):
        s.write_step(
            {
                "id": sid,
                "threadId": "t1",
                "type": "assistant_message",
                "name": "a",
                "createdAt": later(second),
                "output": sid,
            }
        )
    return s


async def test_an_edit_in_the_destination_without_a_newer_time_is_kept(tmp_path: Path) -> None:
    """The app of the destination edits a message in place (the SQLAlchemy layer keeps no
    time of an update): the destination no longer holds what the last copy wrote, so the
    next copy keeps it instead of writing the source's text over it."""
    two_steps(tmp_path / "a")
    db = tmp_path / "o.db"
    url = f"sqlite:///{db}"
    first = await copy_archive(str(tmp_path / "a"), url, create_schema=True)
    assert not first.problems, first.render()
    conn = sqlite3.connect(db)
    conn.execute("UPDATE steps SET output = 'edited by the app' WHERE id = 's1'")
    conn.commit()
    conn.close()
    again = await copy_archive(str(tmp_path / "a"), url)
    assert rows(db, "SELECT output FROM steps WHERE id = 's1'") == [("edited by the app",)]
    assert again.counts["threads"]["skipped"] == 1, again.render()
    assert "changed in the destination" in again.render(), again.render()
    assert not again.problems, again.render()


async def test_an_edit_in_the_source_hidden_by_the_destinations_times_is_copied(
    tmp_path: Path,
) -> None:
    """The source's newest message is deleted and an older one edited: the source's last
    activity is now older than the destination's, which is only what the last copy
    wrote. Both changes are carried."""
    s = two_steps(tmp_path / "a")
    db = tmp_path / "o.db"
    url = f"sqlite:///{db}"
    first = await copy_archive(str(tmp_path / "a"), url, create_schema=True)
    assert not first.problems, first.render()
    s.delete_step("s2", "t1")
    s.write_step({"id": "s1", "threadId": "t1", "type": "assistant_message", "output": "s1 v2"})
    again = await copy_archive(str(tmp_path / "a"), url)
    assert not again.problems, again.render()
    assert rows(db, "SELECT id, output FROM steps") == [("s1", "s1 v2")], again.render()


async def test_an_edit_on_both_sides_is_a_conflict_left_as_the_destination_has_it(
    tmp_path: Path,
) -> None:
    """Both sides changed the thread since the last copy: neither overwrites the other
    (either way an edit would be lost); the destination's stays and the thread is listed
    as a problem, on every run until one side is set right."""
    s = two_steps(tmp_path / "a")
    db = tmp_path / "o.db"
    url = f"sqlite:///{db}"
    await copy_archive(str(tmp_path / "a"), url, create_schema=True)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE steps SET output = 'theirs' WHERE id = 's1'")
    conn.commit()
    conn.close()
    s.write_step({"id": "s1", "threadId": "t1", "type": "assistant_message", "output": "ours"})
    for _ in range(2):
        again = await copy_archive(str(tmp_path / "a"), url)
        assert again.problems and "changed in both" in again.render(), again.render()
        assert rows(db, "SELECT output FROM steps WHERE id = 's1'") == [("theirs",)]


async def test_a_field_cleared_in_the_source_is_cleared_in_an_archive(tmp_path: Path) -> None:
    """A step's or element's field set, then cleared in the database (``NULL``, empty
    text, empty metadata): the archive's journal never lets an empty write overwrite a
    stored value (Chainlit sends a step empty after its final text), so the copy
    rewrites the step's record there, and the archive reads as the database does, to
    the search index."""
    s = two_steps(tmp_path / "a")
    s.write_step(
        {
            "id": "s1",
            "threadId": "t1",
            "type": "assistant_message",
            "language": "python",
            "metadata": {"m": 1},
            "input": "in",
        }
    )
    s.put_element(
        "t1",
        {"id": "e1", "type": "file", "name": "f.txt", "forId": "s1", "display": "side"},
        b"bytes",
    )
    s.update_thread("t1", metadata={"k": 1})
    db, back = tmp_path / "o.db", tmp_path / "b"
    url = f"sqlite:///{db}"
    blobs = Files(tmp_path / "bucket")
    await copy_archive(str(tmp_path / "a"), url, create_schema=True, storage=blobs)
    first = await copy_archive(url, str(back), storage=blobs)
    assert not first.problems, first.render()
    conn = sqlite3.connect(db)
    conn.execute(
        "UPDATE steps SET language = NULL, output = '', input = NULL, metadata = '{}' "
        "WHERE id = 's1'"
    )
    conn.execute("UPDATE elements SET display = NULL")
    conn.execute("UPDATE threads SET name = NULL, metadata = '{}'")
    conn.commit()
    conn.close()
    again = await copy_archive(url, str(back), storage=blobs)
    assert not again.problems, again.render()
    assert again.counts["steps"]["updated"] == 1, again.render()
    b = ArchiveStore(back, create=False)
    th = b.get_thread("t1")
    assert th is not None
    (s1,) = [x for x in th["steps"] if x["id"] == "s1"]
    assert (s1["language"], s1["output"], s1["input"], s1["metadata"]) == (None, "", "", {})
    assert th["elements"][0].get("display") is None, th["elements"]
    assert (th["name"], th["metadata"]) == (None, {})
    third = await copy_archive(url, str(back), storage=blobs)
    assert third.counts["steps"]["unchanged"] == 2, third.render()
    assert third.counts["elements"]["unchanged"] == 1, third.render()


@pytest.mark.parametrize("paused_in", ["write_user", "apply"])
async def test_an_erasure_while_a_copy_writes_the_user_in_leaves_nothing_of_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, paused_in: str
) -> None:
    """``filelayer erase-user`` runs, whole, after the copy found the user not erased in
    the destination archive and before it writes the user and their thread: the copy
    looks again once it has written, and takes back what it wrote (the erasure, which
    looks again after its tombstone, covers a write that came before that)."""
    two_steps(tmp_path / "a")
    db, dest = tmp_path / "o.db", tmp_path / "dest"
    url = f"sqlite:///{db}"
    await copy_archive(str(tmp_path / "a"), url, create_schema=True)
    first = await copy_archive(url, str(dest))
    assert not first.problems, first.render()
    conn = sqlite3.connect(db)
    conn.execute("UPDATE users SET metadata = '{\"new\": 1}'")
    (user_id,) = conn.execute("SELECT id FROM users").fetchone()
    conn.execute(
        'INSERT INTO threads (id, "createdAt", name, "userId", "userIdentifier") '
        "VALUES ('t2', '2020-01-01T00:00:00.000Z', 'second', ?, 'bob')",
        (user_id,),
    )
    conn.execute(
        'INSERT INTO steps (id, name, type, "threadId", streaming, output, "createdAt") '
        "VALUES ('s3', 'a', 'user_message', 't2', 0, 'my secret', '2020-01-01T00:00:01.000Z')"
    )
    conn.commit()
    conn.close()
    erased: list[str] = []

    def erase_first(original: Any) -> Any:
        async def write(self: ArchiveEndpoint, *args: Any) -> Any:
            if not erased:
                erased.append("bob")
                erase_user(self._need(), "bob")
            return await original(self, *args)

        return write

    monkeypatch.setattr(
        ArchiveEndpoint, paused_in, erase_first(getattr(ArchiveEndpoint, paused_in))
    )
    await copy_archive(url, str(dest))
    assert erased
    s = ArchiveStore(dest, create=False)
    assert s.get_user("bob") is None
    assert s.get_thread("t1") is None and s.get_thread("t2") is None
    left = [p for p in (dest / "threads").rglob("*") if p.is_file()]
    assert not [p for p in left if b"my secret" in p.read_bytes()], left
    again = await copy_archive(url, str(dest))
    assert s.get_user("bob") is None and s.get_thread("t1") is None, again.render()


async def test_an_erasure_leaves_no_record_of_the_copy_in_the_database(tmp_path: Path) -> None:
    """The copy's own tables hold digests and storage keys of a thread, derived from the
    user's data: an erasure copied into the database takes them too."""
    s = archive(tmp_path / "a")
    blobs, db = Blobs(), tmp_path / "o.db"
    url = f"sqlite:///{db}"
    await copy_archive(str(tmp_path / "a"), url, create_schema=True, storage=blobs)
    assert rows(db, "SELECT id FROM filelayer_copy_state") == [("t1",)]
    assert rows(db, "SELECT id FROM filelayer_copied_bytes") == [("e1",)]
    erase_user(s, "bob")
    done = await copy_archive(str(tmp_path / "a"), url, storage=blobs)
    assert not done.problems, done.render()
    assert rows(db, "SELECT id FROM threads") == []
    assert rows(db, "SELECT id FROM filelayer_copy_state") == []
    assert rows(db, "SELECT id FROM filelayer_copied_bytes") == []


async def test_an_element_with_its_own_url_and_bytes_keeps_both_through_sqlite(
    tmp_path: Path,
) -> None:
    """An archive element with a URL of its own and its bytes (as a copy with
    ``--fetch-urls`` leaves it): the row keeps the URL, which the app serves, and the
    bytes go to the storage under the row's key, so that both come back, and a copy run
    again uploads nothing."""
    s = ArchiveStore(tmp_path / "a", create=True)
    u = s.upsert_user("bob")
    s.update_thread("t1", name="n", user_id=u["id"])
    s.write_step({"id": "s1", "threadId": "t1", "type": "tool", "createdAt": t(1)})
    own = "https://example.com/b.png"
    fields = {"id": "e1", "type": "image", "name": "b.png", "forId": "s1", "url": own}
    s.put_element("t1", fields, b"fetched")
    files, db, back = Files(tmp_path / "bucket"), tmp_path / "o.db", tmp_path / "b"
    url = f"sqlite:///{db}"
    there = await copy_archive(str(tmp_path / "a"), url, create_schema=True, storage=files)
    assert not there.problems, there.render()
    assert rows(db, "SELECT url FROM elements") == [(own,)]
    home = await copy_archive(url, str(back), storage=files)
    assert not home.problems, home.render()
    b = ArchiveStore(back, create=False)
    found = b.element_file("t1", "e1")
    assert found is not None and found[1].read_bytes() == b"fetched"
    th = b.get_thread("t1")
    assert th is not None and th["elements"][0]["url"] == own
    again = await copy_archive(str(tmp_path / "a"), url, storage=files)
    assert again.bytes_copied == 0 and again.counts["elements"]["unchanged"] == 1, again.render()


async def test_an_edit_in_place_in_chainlits_official_schema_is_kept(
    tmp_path: Path, db: str
) -> None:
    """The same rule in Chainlit's official PostgreSQL schema, whose step rows keep no
    time of an edit either: the app's edit stays, and a source edit after one the
    database only received is carried."""
    asyncpg = pytest.importorskip("asyncpg")
    s = two_steps(tmp_path / "a")
    first = await copy_archive(str(tmp_path / "a"), db, create_schema=True)
    assert not first.problems, first.render()
    s.delete_step("s2", "t1")
    s.write_step({"id": "s1", "threadId": "t1", "type": "assistant_message", "output": "v2"})
    carried = await copy_archive(str(tmp_path / "a"), db)
    assert not carried.problems, carried.render()
    conn = await asyncpg.connect(db)
    try:
        assert await conn.fetch('SELECT id, output FROM "Step"') == [("s1", "v2")]
        await conn.execute("""UPDATE "Step" SET output = 'by the app' WHERE id = 's1'""")
    finally:
        await conn.close()
    kept = await copy_archive(str(tmp_path / "a"), db)
    assert "changed in the destination" in kept.render() and not kept.problems, kept.render()
    conn = await asyncpg.connect(db)
    try:
        assert await conn.fetch('SELECT output FROM "Step"') == [("by the app",)]
    finally:
        await conn.close()


async def test_an_archive_element_comes_back_from_sqlite_as_it_was(tmp_path: Path) -> None:
    """The storage key the copy chose for an element that had none (the layer's
    ``<user id>/<element id>/<name>``) is the copy's, not the element's: the archive it
    comes back to, which keeps the bytes itself, does not gain it."""
    s = archive(tmp_path / "a")
    files, db, back = Files(tmp_path / "bucket"), tmp_path / "o.db", tmp_path / "b"
    url = f"sqlite:///{db}"
    await copy_archive(str(tmp_path / "a"), url, create_schema=True, storage=files)
    home = await copy_archive(url, str(back), storage=files)
    assert not home.problems, home.render()
    ta, tb = s.get_thread("t1"), ArchiveStore(back, create=False).get_thread("t1")
    assert ta is not None and tb is not None
    assert ta["elements"] == tb["elements"]
    again = await copy_archive(str(tmp_path / "a"), url, storage=files)
    assert again.counts["elements"]["unchanged"] == 1, again.render()
    back_again = await copy_archive(url, str(back), storage=files)
    assert back_again.counts["elements"]["unchanged"] == 1, back_again.render()
