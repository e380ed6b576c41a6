"""``filelayer copy SOURCE DEST``: the command-line face of the copy."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from typing import Any, TextIO

from ..errors import FileLayerError
from ..progress import Progress
from .copier import copy_archive
from .endpoints import SCHEMAS
from .model import CopyUsageError, Summary

# -- command line --------------------------------------------------------------------

DESCRIPTION = "copy conversations between an archive and Chainlit's SQL databases"

EPILOG = """\
SOURCE and DEST are each an archive directory or a database URL:
  postgresql://...           Chainlit's official schema (ChainlitDataLayer), or the
                             SQLAlchemy layer's if the database has its tables
  postgresql+asyncpg://...   the schema of Chainlit's SQLAlchemyDataLayer
  sqlite:///chainlit.db      the same on SQLite (also sqlite+aiosqlite:///...)

examples:
  filelayer copy ./chats postgresql://user:pass@localhost/chainlit --dry-run
  filelayer copy ./chats postgresql://user:pass@localhost/chainlit --create-schema
  filelayer copy postgresql://user:pass@localhost/chainlit ./chats-backup
  filelayer copy ./chats postgresql://… --user alice@example.com --since 2026-01-01
  filelayer copy sqlite:///chainlit.db ./chats
  filelayer copy ./chats sqlite:///chainlit.db --create-schema

Re-running a copy writes only what is missing or changed. Element bytes go to (and come
from) the storage client that Chainlit's own environment variables configure, or the one
--storage-client names.
exit codes: 0 done, 1 something was left out (listed), 2 usage or connection error
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``copy`` on the ``filelayer`` command's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "copy",
        help=DESCRIPTION,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", metavar="SOURCE", help="archive directory or database URL")
    p.add_argument("dest", metavar="DEST", help="archive directory or database URL")
    p.add_argument("--dry-run", action="store_true", help="show what would be copied")
    p.add_argument("--user", metavar="IDENTIFIER", help="only this user and their threads")
    p.add_argument(
        "--since", metavar="DATE", help="only threads created or updated on or after DATE"
    )
    p.add_argument(
        "--create-schema",
        action="store_true",
        help="create Chainlit's tables in the destination database first (idempotent)",
    )
    p.add_argument(
        "--fetch-urls",
        action="store_true",
        help="download element bytes from the http(s) URLs of the source's rows (public "
        "addresses only); without it such elements keep their URL and are listed",
    )
    p.add_argument("--no-fetch", action="store_true", help="the default; kept for scripts")
    p.add_argument(
        "--files-dir",
        metavar="DIR",
        help="the directory whose files a SQLite source's rows may name as element bytes "
        "(a file:// URL or a path); without it no local file is read",
    )
    p.add_argument(
        "--schema",
        choices=SCHEMAS,
        help="which Chainlit schema a postgresql:// URL holds (default: found from its "
        "tables; official for an empty database)",
    )
    p.add_argument(
        "--storage-client",
        metavar="MODULE:NAME",
        help="your app's storage client for element files (a BaseStorageClient, or a "
        "function returning one), instead of Chainlit's storage environment variables",
    )
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """The ``copy`` command: 0 done, 1 something left out, 2 usage/connection error."""
    out = out or sys.stdout
    try:
        summary = asyncio.run(_run(args))
    except CopyUsageError as exc:
        print(f"filelayer copy: {exc}", file=sys.stderr)
        return 2
    except FileLayerError as exc:
        print(f"filelayer copy: {exc}", file=sys.stderr)
        return 2
    out.write(summary.render())
    return 1 if summary.problems else 0


async def _run(args: argparse.Namespace) -> Summary:
    return await copy_archive(
        args.source,
        args.dest,
        dry_run=bool(args.dry_run),
        user=args.user,
        since=args.since,
        create_schema=bool(args.create_schema),
        fetch_urls=bool(getattr(args, "fetch_urls", False))
        and not getattr(args, "no_fetch", False),
        files_dir=getattr(args, "files_dir", None),
        schema=getattr(args, "schema", None),
        storage=storage_from_spec(spec)
        if (spec := getattr(args, "storage_client", None))
        else None,
        progress=Progress("copying"),
    )


def storage_from_spec(spec: str) -> Any:
    """``--storage-client MODULE:NAME``: the app's storage client (a Chainlit
    ``BaseStorageClient``), or a function of no arguments that returns one."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise CopyUsageError(
            f"--storage-client takes MODULE:NAME (as in myapp.storage:client), not {spec!r}"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # the app's own modules, as `chainlit run` sees them
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise CopyUsageError(f"--storage-client {spec}: cannot load it ({exc})") from exc
    if callable(obj) and not hasattr(obj, "upload_file"):
        obj = obj()
    if not all(hasattr(obj, m) for m in ("upload_file", "get_read_url")):
        raise CopyUsageError(
            f"--storage-client {spec} is not a storage client (it needs upload_file and "
            "get_read_url, as Chainlit's BaseStorageClient has)"
        )
    return obj
