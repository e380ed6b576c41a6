"""The PostgreSQL server of a test module, and a new empty database per test on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from benchmarks.pgserver import PostgresServer, find_bindir
from tests.support.databases import new_database


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    """A real PostgreSQL on loopback, one per test module (skipped without one)."""
    if find_bindir() is None:
        pytest.skip("PostgreSQL server binaries not found (install Debian's `postgresql`)")
    pytest.importorskip("asyncpg")
    with PostgresServer() as pg:
        yield pg


@pytest.fixture
async def db(server: PostgresServer) -> str:
    """A new, empty database (no schema) on the module's server."""
    return await new_database(server)
