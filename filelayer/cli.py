"""The ``filelayer`` command line (a thin layer over :class:`ArchiveStore`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .errors import FileLayerError
from .layout import default_root
from .store import ArchiveStore


def _root(args: argparse.Namespace) -> str:
    return str(args.root or default_root())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="filelayer", description=__doc__)
    parser.add_argument("--root", help="archive root (default: $FILELAYER_ROOT or ./chats)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("reindex", help="rebuild the thread index from the thread directories")
    args = parser.parse_args(argv)
    try:
        store = ArchiveStore(_root(args), create=False)
        if args.command == "reindex":
            count = store.reindex()
            print(f"indexed {count} threads")
    except FileLayerError as exc:
        print(f"filelayer: {exc}", file=sys.stderr)
        return 2
    return 0
