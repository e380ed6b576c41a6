"""``filelayer copy`` run again after either side changed: what the source changed is
carried, what the destination changed is kept, decided by content where times cannot
tell, on SQLite (the lightest database: every table here is Chainlit's or the copy's)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from filelayer import ArchiveStore
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
