"""Users: created once, found by identifier; any identifier works and never becomes a
path."""

from __future__ import annotations

import asyncio
import json
import unicodedata
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chainlit")

from chainlit.user import PersistedUser, User

from filelayer import FileDataLayer
from tests.support.layer import tree

IDENTIFIERS = [
    "alice@example.com",
    "Zoë Ægir",
    "山田太郎",
    "مرحبا",
    "🚀 rocket 👩‍💻",
    "x" * 1000,
    "long-" + "ü" * 3000,
    "a/b",
    "../../etc/passwd",
    "/etc/passwd",
    "..",
    ".",
    "back\\slash",
    "nul\x00inside",
    "CON",
    "nul.txt",
    ".hidden",
    " spaces around ",
    "line\nbreak\ttab",
    "\u2028separator",
]


async def test_create_user_returns_a_persisted_user(layer: Any) -> None:
    created = await layer.create_user(
        User(identifier="bob", display_name="Bob B.", metadata={"provider": "credentials"})
    )
    assert isinstance(created, PersistedUser)
    assert created.identifier == "bob"
    assert isinstance(created.id, str) and created.id
    assert created.metadata == {"provider": "credentials"}
    assert created.display_name == "Bob B."
    assert isinstance(created.createdAt, str) and created.createdAt.endswith("Z")


async def test_create_user_on_an_existing_identifier_keeps_the_id_and_updates_metadata(
    layer: Any,
) -> None:
    first = await layer.create_user(User(identifier="bob", metadata={"role": "user"}))
    second = await layer.create_user(User(identifier="bob", metadata={"role": "admin"}))
    assert second.id == first.id
    assert second.createdAt == first.createdAt
    assert second.metadata == {"role": "admin"}
    got = await layer.get_user("bob")
    assert (got.id, got.metadata) == (first.id, {"role": "admin"})


async def test_the_user_id_survives_a_login_from_another_worker(layer: Any, root: Path) -> None:
    first = await layer.create_user(User(identifier="bob", metadata={"n": 1}))
    other = FileDataLayer(root)
    again = await other.create_user(User(identifier="bob", metadata={"n": 2}))
    assert again.id == first.id
    assert (await layer.get_user("bob")).metadata == {"n": 2}


async def test_get_user_of_an_unknown_identifier_is_none(layer: Any) -> None:
    assert await layer.get_user("nobody@example.com") is None
    assert await layer.get_user("") is None
    await layer.create_user(User(identifier="somebody"))
    assert await layer.get_user("Somebody") is None
    assert await layer.get_user("somebody ") is None


@pytest.mark.parametrize("identifier", IDENTIFIERS, ids=lambda s: repr(s[:24]))
async def test_any_identifier_works_and_round_trips(
    layer: Any, root: Path, tmp_path: Path, identifier: str
) -> None:
    outside = {k: v for k, v in tree(tmp_path).items() if not k.startswith(("chats", "cwd"))}
    created = await layer.create_user(User(identifier=identifier, metadata={"id": identifier}))
    assert created.identifier == identifier
    got = await layer.get_user(identifier)
    assert got is not None
    assert (got.id, got.identifier, got.metadata) == (created.id, identifier, {"id": identifier})
    # A fresh worker reads it from the file.
    fresh = await FileDataLayer(root).get_user(identifier)
    assert fresh is not None and (fresh.id, fresh.identifier) == (created.id, identifier)
    # One file, directly in users/, with a portable name; nothing anywhere else.
    [path] = (root / "users").iterdir()
    assert path.suffix == ".json"
    assert path.name.isascii() and len(path.name) < 100
    assert "/" not in path.name and "\\" not in path.name and "\x00" not in path.name
    assert json.loads(path.read_text("utf-8"))["identifier"] == identifier
    after = {k: v for k, v in tree(tmp_path).items() if not k.startswith(("chats", "cwd"))}
    assert after == outside


async def test_identifiers_that_look_alike_are_different_users(layer: Any) -> None:
    composed = unicodedata.normalize("NFC", "José")
    decomposed = unicodedata.normalize("NFD", "José")
    assert composed != decomposed
    names = ["Bob", "bob", "bob ", "b/ob", "b-ob", composed, decomposed]
    created = [await layer.create_user(User(identifier=n)) for n in names]
    assert len({u.id for u in created}) == len(names)
    for name, user in zip(names, created, strict=True):
        got = await layer.get_user(name)
        assert (got.id, got.identifier) == (user.id, name)


async def test_concurrent_first_logins_of_one_identifier_make_one_user(layer: Any) -> None:
    users = await asyncio.gather(
        *(layer.create_user(User(identifier="rush", metadata={"n": n})) for n in range(40))
    )
    assert len({u.id for u in users}) == 1
    assert (await layer.get_user("rush")).id == users[0].id


async def test_the_user_file_is_readable_json_with_the_identifier_as_written(
    layer: Any, root: Path
) -> None:
    await layer.create_user(User(identifier="Zoë@example.com", metadata={"b": 1, "a": 2}))
    [path] = (root / "users").iterdir()
    text = path.read_text("utf-8")
    assert "Zoë@example.com" in text
    assert text.endswith("}\n")
    doc = json.loads(text)
    assert list(doc) == sorted(doc)
    assert doc["metadata"] == {"a": 2, "b": 1}
