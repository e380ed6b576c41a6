"""Which endpoint a location names, and opening it.

The database endpoints are imported only when a URL names them (asyncpg and Chainlit
only when one is opened), so the command line works without their optional packages."""

from __future__ import annotations

import urllib.parse
from typing import Any

from .archive import ArchiveEndpoint
from .model import CopyUsageError, Endpoint
from .sqlbase import redact
from .sqldb import detect_postgres_schema, is_sqlalchemy_postgres_url, is_sqlite_url

SCHEMAS = ("official", "sqlalchemy")


def endpoint_kind(location: str, schema: str | None = None) -> str:
    """What a SOURCE or DEST names: ``archive``, ``official`` (Chainlit's PostgreSQL
    schema), ``sqlalchemy`` (the SQLAlchemy data layer's schema, on SQLite or PostgreSQL)
    or ``postgresql`` (a plain PostgreSQL URL whose schema is found from its tables)."""
    if not location.strip():
        raise CopyUsageError(
            "SOURCE and DEST may not be empty (an unset variable?): give an archive "
            "directory or a database URL"
        )
    if is_sqlite_url(location):
        if schema == "official":
            raise CopyUsageError("Chainlit's official schema is PostgreSQL only, not SQLite")
        return "sqlalchemy"
    if is_sqlalchemy_postgres_url(location):
        _check_postgres_url(location)
        return schema or "sqlalchemy"
    if location.lower().startswith(("postgresql://", "postgres://")):
        _check_postgres_url(location)
        return schema or "postgresql"
    if "://" in location:
        raise CopyUsageError(
            f"{location.split('://')[0]}:// is not supported: give an archive directory, "
            "a postgresql:// URL or a sqlite:/// URL"
        )
    return "archive"


def _check_postgres_url(location: str) -> None:
    """A PostgreSQL URL whose host and port can be read (a port that is no number, or
    out of range, is a usage error before connecting, not a crash while connecting)."""
    try:
        parts = urllib.parse.urlsplit(location)
        hosts = parts.netloc.rpartition("@")[2]
        if "," not in hosts:  # several hosts are asyncpg's to read
            _ = parts.port
    except ValueError as exc:
        raise CopyUsageError(
            f"{redact(location)} is not a valid PostgreSQL URL ({exc}): give "
            "postgresql://user:password@host:port/database"
        ) from exc


async def open_endpoint(
    location: str,
    *,
    fetch_urls: bool,
    files_dir: str | None = None,
    schema: str | None = None,
    storage: Any = None,
) -> Endpoint:
    """The endpoint for ``location``; a plain PostgreSQL URL is looked at to see which of
    Chainlit's two schemas its database has (a database with neither gets the official
    one, unless ``schema`` says otherwise)."""
    kind = endpoint_kind(location, schema)
    endpoint: Endpoint
    if kind == "postgresql":
        kind = await detect_postgres_schema(location)
    if kind == "official":
        from .postgres import PostgresEndpoint

        endpoint = PostgresEndpoint(location, fetch_urls=fetch_urls)
    elif kind == "sqlalchemy":
        from .sqla import SQLAlchemySchemaEndpoint

        endpoint = SQLAlchemySchemaEndpoint(location, fetch_urls=fetch_urls, files_dir=files_dir)
    else:
        endpoint = ArchiveEndpoint(location, fetch_urls=fetch_urls)
    endpoint.storage_override = storage
    return endpoint
