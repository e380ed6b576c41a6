"""The schema of Chainlit's ``SQLAlchemyDataLayer``: five tables ``users``, ``threads``,
``steps``, ``elements`` and ``feedbacks``.

Written from the SQL Chainlit documents for that layer and from the columns the layer's
own queries write: besides the documented columns, ``steps`` gets ``autoCollapse``
(Chainlit 2.10 writes it) and ``elements`` gets ``autoPlay`` and ``playerConfig`` (the
layer writes them for audio and video elements). Unlike Chainlit's official schema, times
are text (kept exactly as written), ids are ``UUID`` and JSON columns are ``JSONB`` on
PostgreSQL. SQLite accepts the same statements: its columns take any value, which is why
the layer stores JSON there as text and cannot store tags (an array) at all.

Every statement is idempotent. ``filelayer copy --create-schema`` applies them to a
destination that lacks the tables; a database made earlier keeps its own columns (the
copy writes the columns it finds).
"""

from __future__ import annotations

TABLES = ("users", "threads", "steps", "elements", "feedbacks")

STATEMENTS: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS users (
        "id"         UUID PRIMARY KEY,
        "identifier" TEXT NOT NULL UNIQUE,
        "metadata"   JSONB NOT NULL,
        "createdAt"  TEXT
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS threads (
        "id"             UUID PRIMARY KEY,
        "createdAt"      TEXT,
        "name"           TEXT,
        "userId"         UUID,
        "userIdentifier" TEXT,
        "tags"           TEXT[],
        "metadata"       JSONB,
        FOREIGN KEY ("userId") REFERENCES users ("id") ON DELETE CASCADE
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS steps (
        "id"            UUID PRIMARY KEY,
        "name"          TEXT NOT NULL,
        "type"          TEXT NOT NULL,
        "threadId"      UUID NOT NULL,
        "parentId"      UUID,
        "streaming"     BOOLEAN NOT NULL,
        "waitForAnswer" BOOLEAN,
        "isError"       BOOLEAN,
        "metadata"      JSONB,
        "tags"          TEXT[],
        "input"         TEXT,
        "output"        TEXT,
        "createdAt"     TEXT,
        "command"       TEXT,
        "start"         TEXT,
        "end"           TEXT,
        "generation"    JSONB,
        "showInput"     TEXT,
        "language"      TEXT,
        "indent"        INT,
        "defaultOpen"   BOOLEAN,
        "autoCollapse"  BOOLEAN,
        "modes"         JSONB,
        FOREIGN KEY ("threadId") REFERENCES threads ("id") ON DELETE CASCADE
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS elements (
        "id"           UUID PRIMARY KEY,
        "threadId"     UUID,
        "type"         TEXT,
        "url"          TEXT,
        "chainlitKey"  TEXT,
        "name"         TEXT NOT NULL,
        "display"      TEXT,
        "objectKey"    TEXT,
        "size"         TEXT,
        "page"         INT,
        "language"     TEXT,
        "forId"        UUID,
        "mime"         TEXT,
        "props"        JSONB,
        "autoPlay"     BOOLEAN,
        "playerConfig" JSONB,
        FOREIGN KEY ("threadId") REFERENCES threads ("id") ON DELETE CASCADE
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS feedbacks (
        "id"       UUID PRIMARY KEY,
        "forId"    UUID NOT NULL,
        "threadId" UUID NOT NULL,
        "value"    INT NOT NULL,
        "comment"  TEXT,
        FOREIGN KEY ("threadId") REFERENCES threads ("id") ON DELETE CASCADE
    )
    """,
)
