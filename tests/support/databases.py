"""Databases for the copy's tests: a new, empty one on a test's PostgreSQL server."""

from __future__ import annotations

import uuid

from benchmarks.pgserver import PostgresServer


async def new_database(server: PostgresServer, prefix: str = "t") -> str:
    """A new, empty database (no schema) on ``server``: its URL."""
    import asyncpg

    name = prefix + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(server.url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return server.url.rsplit("/", 1)[0] + "/" + name
