"""The ``filelayer`` command: read, export and maintain an archive from the shell.

A thin layer over :class:`ArchiveStore` (the one reader of the format), using only the
standard library, so it works where Chainlit is not installed. Exit codes: 0 success,
1 problems found (``verify``) or nothing matched, 2 a usage or archive error.

This module holds the entry point and the parser, so every command's options read in
one place; the commands live by group: :mod:`.reading` (list, show, stats),
:mod:`.export`, :mod:`.maintenance` (reindex, reconcile, verify, compact),
:mod:`.retention` (prune, erase-user) and :mod:`.git`; ``copy`` registers its own
parser (:mod:`filelayer.transfer.command`). :mod:`._common` holds what they share.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from .. import __version__
from ..errors import FileLayerError
from ..format.layout import ROOT_ENV
from ..git import setup as gitsetup
from ..transfer import command as copy_command
from ._common import UsageError, close_opened
from .export import cmd_export
from .git import (
    cmd_git_hook,
    cmd_git_setup,
    cmd_merge_driver,
    cmd_resolve,
    cmd_snapshot,
)
from .maintenance import cmd_compact, cmd_reconcile, cmd_reindex, cmd_verify
from .reading import cmd_list, cmd_show, cmd_stats
from .retention import cmd_erase_user, cmd_prune

EXAMPLES = f"""\
The archive root is --root, else ${ROOT_ENV}, else ./chats.

examples:
  filelayer list --user alice@example.com --search invoice
  filelayer show 5f0c6c1e-2f5b-4a8e-9a63-0f6f1b2c3d4e
  filelayer export --all -o exported/
  filelayer export --user alice@example.com --since 2026-01-01 -o alice/
  filelayer export THREAD_ID --format json > thread.json
  filelayer verify --repair
  filelayer compact
  filelayer copy ./chats postgresql://user:pass@host/chainlit --create-schema
  filelayer prune --before 2025-01-01 --yes
  filelayer erase-user alice@example.com
"""


BACKGROUND_COMMANDS = frozenset({"reindex", "reconcile", "compact"})
"""The commands that rewrite a whole archive, run as a program at a lower CPU priority."""


def lower_priority(increment: int = 10) -> None:
    """Run this process at a lower CPU priority (``nice``): a rebuild or a compaction of
    a whole archive is a batch job, and on a machine of few cores it otherwise takes
    the core a serving app's event loop waits for (measured at 100,000 threads on two
    cores: the app's loop waited up to 38 ms for a core while another process ran
    ``reindex``, none of it time the app itself spent).

    ``nice`` and not Linux's idle scheduling class, which measured no better on a quiet
    machine (7-12 ms against 9-27 ms, within the noise) and can starve the job outright
    while every core is busy: the job holds a thread's lock while it rewrites and
    fsyncs that thread's journal, and with maintenance announced the app's writes run
    one after another, so one write waiting for a starved job would hold up every chat.
    A niced job keeps a share of a busy core (a tenth at ``nice`` 10).

    Only when the command is its process's program (``filelayer ...``, ``python -m
    filelayer ...``): ``main`` called with arguments from a script or a test leaves its
    caller's priority alone. Where the priority cannot be changed, the command runs as
    it is."""
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: no os.nice
        os.nice(increment)


def main(argv: Sequence[str] | None = None) -> int:
    with escaping_stdout():
        return _run(argv)


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if argv is None and args.command in BACKGROUND_COMMANDS:
        lower_priority()  # the process is the command's own: not a caller's
    try:
        result: int = args.handler(args)
        return result
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"filelayer: {exc}", file=sys.stderr)
        return 2
    except FileLayerError as exc:
        print(f"filelayer: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `filelayer list | head`
        return 0
    finally:
        close_opened()


@contextlib.contextmanager
def escaping_stdout() -> Iterator[None]:
    """While the command runs, what stdout's encoding cannot hold (a name with a snowman
    on an ASCII or Latin-1 stdout, a C locale) is written as a ``\\u2603``-style escape,
    as Python's stderr does, rather than ending the command with a traceback. The
    stream's own error handling is given back afterwards: a script calling :func:`main`
    keeps its stdout as it was."""
    out = sys.stdout
    if not isinstance(out, io.TextIOWrapper) or out.errors == "backslashreplace":
        yield
        return
    errors = out.errors
    out.reconfigure(errors="backslashreplace")
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):  # a closed pipe, a closed stream
            out.reconfigure(errors=errors)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="filelayer",
        description="Read, export and maintain a filelayer archive of Chainlit conversations.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"filelayer {__version__}")
    parser.add_argument("--root", help=f"archive root (default: ${ROOT_ENV} or ./chats)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, handler: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    def filters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--user", metavar="IDENTIFIER", help="only this user's threads")
        p.add_argument("--since", metavar="DATE", help="created on or after (YYYY-MM-DD)")
        p.add_argument("--until", metavar="DATE", help="created on or before (YYYY-MM-DD)")

    p = command("list", "list threads, most recent activity first", cmd_list)
    filters(p)
    p.add_argument("--search", help="case-insensitive text in the name or the messages")
    p.add_argument("--feedback", type=int, choices=[0, 1], help="with 👎 (0) or 👍 (1)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = command("show", "print a conversation in the terminal", cmd_show)
    p.add_argument("thread", help="thread id")

    command("stats", "count threads, steps, users and bytes", cmd_stats)

    p = command("export", "export threads to Markdown, HTML (or JSON)", cmd_export)
    p.add_argument("threads", nargs="*", metavar="THREAD", help="thread ids")
    p.add_argument("--all", action="store_true", help="every thread")
    filters(p)
    p.add_argument("-o", "--output", metavar="DIR", help="write one file per thread here")
    p.add_argument("--format", choices=["markdown", "html", "json"], default="markdown")

    command("reindex", "rebuild the thread index from the thread directories", cmd_reindex)
    command(
        "reconcile",
        "bring the index in line with the thread directories, reading only what changed",
        cmd_reconcile,
    )

    p = command("verify", "check the archive against the format", cmd_verify)
    p.add_argument("--repair", action="store_true", help="fix what can be fixed safely")

    p = command("compact", "fold journals into one line per step", cmd_compact)
    p.add_argument("threads", nargs="*", metavar="THREAD", help="thread ids (default: all)")

    p = command("prune", "delete threads whose last activity is before a date", cmd_prune)
    p.add_argument("--before", metavar="DATE", required=True, help="YYYY-MM-DD (UTC)")
    p.add_argument("--user", metavar="IDENTIFIER", help="only this user's threads")
    p.add_argument("--yes", action="store_true", help="delete (without it: a dry run)")

    p = command(
        "erase-user", "erase a user: their record and every thread they wrote", cmd_erase_user
    )
    p.add_argument("identifier", metavar="IDENTIFIER", help="the user's identifier")
    p.add_argument(
        "--thread",
        action="append",
        default=[],
        metavar="ID",
        help="also erase this thread as theirs (one whose author the archive lost); repeatable",
    )

    p = command(
        "git-setup",
        "register the archive's merge driver and hooks in the git repository it is in",
        cmd_git_setup,
    )

    p = command(
        "snapshot",
        "commit the archive as one consistent state while the app writes",
        cmd_snapshot,
    )
    p.add_argument("-m", "--message", help="the commit message")

    p = command(
        "resolve",
        "finish a stopped merge: threads deleted on one side stay deleted",
        cmd_resolve,
    )

    p = command("merge-driver", "git's merge driver for the archive's files", cmd_merge_driver)
    p.add_argument("base", help="the common ancestor's version (%%O)")
    p.add_argument("ours", help="our version, replaced by the merge (%%A)")
    p.add_argument("theirs", help="their version (%%B)")
    p.add_argument("path", nargs="?", default="", help="the file's path in the work tree (%%P)")

    p = command("git-hook", "what the hooks git-setup installs run", cmd_git_hook)
    p.add_argument("hook", choices=gitsetup.HOOKS)

    copy_command.add_parser(sub)
    return parser
