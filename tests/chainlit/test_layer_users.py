"""Users: created once, found by identifier, any identifier works."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chainlit")

from chainlit.user import PersistedUser, User

from filelayer import FileDataLayer


async def test_create_user_twice_keeps_the_id_and_updates_metadata(layer: Any) -> None:
    first = await layer.create_user(User(identifier="bob", metadata={"role": "user"}))
    second = await layer.create_user(User(identifier="bob", metadata={"role": "admin"}))
    assert isinstance(first, PersistedUser)
    assert first.id == second.id
    assert first.createdAt == second.createdAt
    got = await layer.get_user("bob")
    assert got.id == first.id
    assert got.metadata == {"role": "admin"}


async def test_unknown_user_is_none(layer: Any) -> None:
    assert await layer.get_user("nobody") is None
    assert await layer.get_user("") is None


@pytest.mark.parametrize(
    "identifier",
    [
        "alice@example.com",
        "Zoë Ægir 山田太郎 🚀",
        "x" * 5000,
        "../../etc/passwd",
        "a/b\\c",
        "nul\x00inside",
        "CON",
        ".hidden",
        " spaces ",
    ],
)
async def test_any_identifier_round_trips(layer: Any, root: Path, identifier: str) -> None:
    created = await layer.create_user(User(identifier=identifier, metadata={"k": identifier}))
    assert created.identifier == identifier
    got = await layer.get_user(identifier)
    assert got is not None
    assert (got.id, got.identifier, got.metadata) == (created.id, identifier, {"k": identifier})
    files = list((root / "users").iterdir())
    assert all(f.parent == root / "users" for f in files)


async def test_users_survive_reopening(layer: Any, root: Path) -> None:
    created = await layer.create_user(User(identifier="carol"))
    again = FileDataLayer(root)
    got = await again.get_user("carol")
    assert got is not None and got.id == created.id


async def test_similar_identifiers_are_distinct_users(layer: Any) -> None:
    a = await layer.create_user(User(identifier="Bob"))
    b = await layer.create_user(User(identifier="bob"))
    c = await layer.create_user(User(identifier="bob "))
    assert len({a.id, b.id, c.id}) == 3
