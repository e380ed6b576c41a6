"""The PostgreSQL schema that Chainlit's official data layer (``ChainlitDataLayer``) uses.

Written from the schema Chainlit publishes for it (its ``chainlit-datalayer``
repository: five tables ``User``, ``Thread``, ``Step``, ``Element``, ``Feedback`` and a
``StepType`` enum). Every statement is idempotent, so applying it to a database that
already has the schema changes nothing. ``filelayer copy --create-schema`` and the
benchmark apply it; a production database normally has it from Chainlit's migrations.
"""

from __future__ import annotations

STEP_TYPES = (
    "assistant_message",
    "embedding",
    "llm",
    "retrieval",
    "rerank",
    "run",
    "system_message",
    "tool",
    "undefined",
    "user_message",
)

_ENUM_VALUES = ", ".join(f"'{t}'" for t in STEP_TYPES)

STATEMENTS: tuple[str, ...] = (
    'CREATE EXTENSION IF NOT EXISTS "pgcrypto"',
    f"""
    DO $$ BEGIN
        CREATE TYPE "StepType" AS ENUM ({_ENUM_VALUES});
    EXCEPTION WHEN duplicate_object THEN NULL;
    END $$
    """,
    """
    CREATE TABLE IF NOT EXISTS "User" (
        "id"         TEXT         NOT NULL DEFAULT gen_random_uuid(),
        "createdAt"  TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
        "updatedAt"  TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
        "metadata"   JSONB        NOT NULL,
        "identifier" TEXT         NOT NULL,
        PRIMARY KEY ("id")
    )
    """,
    'CREATE UNIQUE INDEX IF NOT EXISTS "User_identifier_key" ON "User" ("identifier")',
    """
    CREATE TABLE IF NOT EXISTS "Thread" (
        "id"        TEXT         NOT NULL DEFAULT gen_random_uuid(),
        "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
        "updatedAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
        "deletedAt" TIMESTAMP(3),
        "name"      TEXT,
        "metadata"  JSONB        NOT NULL,
        "tags"      TEXT[]       DEFAULT ARRAY[]::TEXT[],
        "userId"    TEXT         REFERENCES "User" ("id") ON DELETE SET NULL ON UPDATE CASCADE,
        PRIMARY KEY ("id")
    )
    """,
    'CREATE INDEX IF NOT EXISTS "Thread_createdAt_idx" ON "Thread" ("createdAt")',
    'CREATE INDEX IF NOT EXISTS "Thread_name_idx" ON "Thread" ("name")',
    """
    CREATE TABLE IF NOT EXISTS "Step" (
        "id"        TEXT         NOT NULL DEFAULT gen_random_uuid(),
        "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
        "updatedAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
        "parentId"  TEXT         REFERENCES "Step" ("id") ON DELETE CASCADE ON UPDATE CASCADE,
        "threadId"  TEXT         REFERENCES "Thread" ("id") ON DELETE CASCADE ON UPDATE CASCADE,
        "input"     TEXT,
        "metadata"  JSONB        NOT NULL,
        "name"      TEXT,
        "output"    TEXT,
        "type"      "StepType"   NOT NULL,
        "showInput" TEXT         DEFAULT 'json',
        "isError"   BOOLEAN      DEFAULT false,
        "startTime" TIMESTAMP(3) NOT NULL,
        "endTime"   TIMESTAMP(3) NOT NULL,
        PRIMARY KEY ("id")
    )
    """,
    'CREATE INDEX IF NOT EXISTS "Step_createdAt_idx" ON "Step" ("createdAt")',
    'CREATE INDEX IF NOT EXISTS "Step_endTime_idx" ON "Step" ("endTime")',
    'CREATE INDEX IF NOT EXISTS "Step_parentId_idx" ON "Step" ("parentId")',
    'CREATE INDEX IF NOT EXISTS "Step_startTime_idx" ON "Step" ("startTime")',
    'CREATE INDEX IF NOT EXISTS "Step_threadId_idx" ON "Step" ("threadId")',
    'CREATE INDEX IF NOT EXISTS "Step_type_idx" ON "Step" ("type")',
    'CREATE INDEX IF NOT EXISTS "Step_name_idx" ON "Step" ("name")',
    'CREATE INDEX IF NOT EXISTS "Step_threadId_startTime_endTime_idx"'
    ' ON "Step" ("threadId", "startTime", "endTime")',
    """
    CREATE TABLE IF NOT EXISTS "Element" (
        "id"          TEXT         NOT NULL DEFAULT gen_random_uuid(),
        "createdAt"   TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
        "updatedAt"   TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
        "threadId"    TEXT         REFERENCES "Thread" ("id") ON DELETE CASCADE ON UPDATE CASCADE,
        "stepId"      TEXT         NOT NULL
                                   REFERENCES "Step" ("id") ON DELETE CASCADE ON UPDATE CASCADE,
        "metadata"    JSONB        NOT NULL,
        "mime"        TEXT,
        "name"        TEXT         NOT NULL,
        "objectKey"   TEXT,
        "url"         TEXT,
        "chainlitKey" TEXT,
        "display"     TEXT,
        "size"        TEXT,
        "language"    TEXT,
        "page"        INTEGER,
        "props"       JSONB,
        PRIMARY KEY ("id")
    )
    """,
    'CREATE INDEX IF NOT EXISTS "Element_stepId_idx" ON "Element" ("stepId")',
    'CREATE INDEX IF NOT EXISTS "Element_threadId_idx" ON "Element" ("threadId")',
    """
    CREATE TABLE IF NOT EXISTS "Feedback" (
        "id"        TEXT             NOT NULL DEFAULT gen_random_uuid(),
        "createdAt" TIMESTAMP(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP,
        "updatedAt" TIMESTAMP(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP,
        "stepId"    TEXT             REFERENCES "Step" ("id") ON DELETE SET NULL ON UPDATE CASCADE,
        "name"      TEXT             NOT NULL,
        "value"     DOUBLE PRECISION NOT NULL,
        "comment"   TEXT,
        PRIMARY KEY ("id")
    )
    """,
    'CREATE INDEX IF NOT EXISTS "Feedback_createdAt_idx" ON "Feedback" ("createdAt")',
    'CREATE INDEX IF NOT EXISTS "Feedback_name_idx" ON "Feedback" ("name")',
    'CREATE INDEX IF NOT EXISTS "Feedback_stepId_idx" ON "Feedback" ("stepId")',
    'CREATE INDEX IF NOT EXISTS "Feedback_value_idx" ON "Feedback" ("value")',
    'CREATE INDEX IF NOT EXISTS "Feedback_name_value_idx" ON "Feedback" ("name", "value")',
)

TABLES = ("User", "Thread", "Step", "Element", "Feedback")
