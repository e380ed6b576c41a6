"""Users: created once, found by identifier; any identifier works and never becomes a
path.

The contract of ``tests/support/drivers.py``: each test runs on ``ArchiveStore`` and
through ``FileDataLayer`` (whose ``create_user`` gives Chainlit's ``PersistedUser``: the
driver checks it)."""

from __future__ import annotations

import asyncio
import json
import unicodedata
from pathlib import Path

import pytest

from tests.support.drivers import Driver
from tests.support.layer import tree

IDENTIFIERS = [
    "alice@example.com",
    "Zoë Ægir",
    "山田太郎",
    "مرحبا",
    "🚀 rocket 👩‍💻",
    "Zoë Ægir 山田太郎 🚀",
    "x" * 1000,
    "x" * 5000,
    "long-" + "ü" * 3000,
    "a/b",
    "a/b\\c",
    "../../etc/passwd",
    "/etc/passwd",
    "..",
    ".",
    "back\\slash",
    "nul\x00inside",
    "CON",
    "nul.txt",
    ".hidden",
    " spaces ",
    " spaces around ",
    "line\nbreak\ttab",
    "\u2028separator",
]


async def test_create_user_returns_the_stored_user(driver: Driver) -> None:
    created = await driver.create_user(
        "bob", metadata={"provider": "credentials"}, display_name="Bob B."
    )
    assert created["identifier"] == "bob"
    assert isinstance(created["id"], str) and created["id"]
    assert created["metadata"] == {"provider": "credentials"}
    assert created["displayName"] == "Bob B."
    assert isinstance(created["createdAt"], str) and created["createdAt"].endswith("Z")


async def test_create_user_on_an_existing_identifier_keeps_the_id_and_updates_metadata(
    driver: Driver,
) -> None:
    first = await driver.create_user("bob", metadata={"role": "user"})
    second = await driver.create_user("bob", metadata={"role": "admin"})
    assert second["id"] == first["id"]
    assert second["createdAt"] == first["createdAt"]
    assert second["metadata"] == {"role": "admin"}
    got = await driver.get_user("bob")
    assert (got["id"], got["metadata"]) == (first["id"], {"role": "admin"})


async def test_the_user_id_survives_a_login_from_another_worker(driver: Driver) -> None:
    first = await driver.create_user("bob", metadata={"n": 1})
    other = driver.another_worker()
    assert (await other.get_user("bob"))["id"] == first["id"]  # read from the file
    again = await other.create_user("bob", metadata={"n": 2})
    assert again["id"] == first["id"]
    assert (await driver.get_user("bob"))["metadata"] == {"n": 2}


async def test_get_user_of_an_unknown_identifier_is_none(driver: Driver) -> None:
    assert await driver.get_user("nobody@example.com") is None
    assert await driver.get_user("") is None
    await driver.create_user("somebody")
    assert await driver.get_user("Somebody") is None
    assert await driver.get_user("somebody ") is None


@pytest.mark.parametrize("identifier", IDENTIFIERS, ids=lambda s: repr(s[:24]))
async def test_any_identifier_works_and_round_trips(
    driver: Driver, root: Path, tmp_path: Path, identifier: str
) -> None:
    outside = {k: v for k, v in tree(tmp_path).items() if not k.startswith(("chats", "cwd"))}
    created = await driver.create_user(identifier, metadata={"id": identifier})
    assert created["identifier"] == identifier
    got = await driver.get_user(identifier)
    assert got is not None
    assert (got["id"], got["identifier"], got["metadata"]) == (
        created["id"],
        identifier,
        {"id": identifier},
    )
    # A fresh worker reads it from the file.
    fresh = await driver.another_worker().get_user(identifier)
    assert fresh is not None and (fresh["id"], fresh["identifier"]) == (created["id"], identifier)
    # One file, directly in users/, with a portable name; nothing anywhere else.
    [path] = (root / "users").iterdir()
    assert path.suffix == ".json"
    assert path.name.isascii() and len(path.name) < 100
    assert "/" not in path.name and "\\" not in path.name and "\x00" not in path.name
    assert json.loads(path.read_text("utf-8"))["identifier"] == identifier
    after = {k: v for k, v in tree(tmp_path).items() if not k.startswith(("chats", "cwd"))}
    assert after == outside


async def test_identifiers_that_look_alike_are_different_users(driver: Driver) -> None:
    composed = unicodedata.normalize("NFC", "José")
    decomposed = unicodedata.normalize("NFD", "José")
    assert composed != decomposed
    names = ["Bob", "bob", "bob ", "b/ob", "b-ob", composed, decomposed]
    created = [await driver.create_user(n) for n in names]
    assert len({u["id"] for u in created}) == len(names)
    for name, user in zip(names, created, strict=True):
        got = await driver.get_user(name)
        assert (got["id"], got["identifier"]) == (user["id"], name)


async def test_concurrent_first_logins_of_one_identifier_make_one_user(driver: Driver) -> None:
    users = await asyncio.gather(
        *(driver.create_user("rush", metadata={"n": n}) for n in range(40))
    )
    assert len({u["id"] for u in users}) == 1
    assert (await driver.get_user("rush"))["id"] == users[0]["id"]


async def test_the_user_file_is_readable_json_with_the_identifier_as_written(
    driver: Driver, root: Path
) -> None:
    await driver.create_user("Zoë@example.com", metadata={"b": 1, "a": 2})
    [path] = (root / "users").iterdir()
    text = path.read_text("utf-8")
    assert "Zoë@example.com" in text
    assert text.endswith("}\n")
    doc = json.loads(text)
    assert list(doc) == sorted(doc)
    assert doc["metadata"] == {"a": 2, "b": 1}


def test_a_user_reads_as_stored_in_the_process_that_wrote_it(tmp_path: Path) -> None:
    """``user_by_id`` in the process that wrote the user gave back the caller's own
    metadata object: its number keys and tuples as given (every other reader, and
    ``get_user``, give ``"1"`` and lists), and what the caller changed in it afterwards,
    never written. It gives what is stored; and a login with the same metadata writes
    nothing again (compared as given, it differed from the stored file each time)."""
    from filelayer import ArchiveStore

    store = ArchiveStore(tmp_path / "chats")
    given = {1: (1, 2), "k": {"x": 1}}
    user = store.upsert_user("alice", given)
    given["k"]["x"] = "changed afterwards"
    stored = {"1": [1, 2], "k": {"x": 1}}
    assert (store.user_by_id(user["id"]) or {})["metadata"] == stored
    assert (store.get_user("alice") or {})["metadata"] == stored
    other = ArchiveStore(tmp_path / "chats")
    assert (other.user_by_id(user["id"]) or {})["metadata"] == stored
    other.close()
    path = next((tmp_path / "chats" / "users").glob("alice-*.json"))
    inode = path.stat().st_ino
    store.upsert_user("alice", {1: (1, 2), "k": {"x": 1}})
    assert path.stat().st_ino == inode  # the same login again: nothing rewritten
    with pytest.raises(ValueError, match="metadata"):
        store.upsert_user("alice", ["not", "a", "dict"])  # type: ignore[arg-type]
    store.close()
