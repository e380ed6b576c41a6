"""What the ``filelayer`` commands share: opening the archive, finding threads, errors.

Every command opens the store through :func:`open_store` (closed again by
:func:`close_opened` when the command returns) and refuses wrong arguments with
:class:`UsageError`, which :func:`filelayer.cli.main` prints with the usage, exit code 2.
"""

from __future__ import annotations

import argparse
import codecs
import re
import sys
from collections.abc import Iterator
from datetime import date
from typing import Any, TextIO

from ..format.ids import is_valid_id
from ..format.layout import default_root
from ..index.summary import ThreadSummary
from ..store.archive import ArchiveStore


class UsageError(Exception):
    """Wrong arguments: printed with the command's usage, exit code 2."""


_OPENED: list[ArchiveStore] = []
"""The stores a command opened, closed when it returns (see :func:`close_opened`)."""


def open_store(args: argparse.Namespace) -> ArchiveStore:
    # create=False: a mistyped root is an error, not a new empty archive.
    store = ArchiveStore(args.root or default_root(), create=False)
    _OPENED.append(store)
    return store


def close_opened() -> None:
    """Close what the command opened, as soon as it is done rather than at exit: its
    writer session ends and SQLite folds its log back into the database, so that a
    command run in-process (a test, a script calling :func:`main`) leaves the archive's
    files as a separate ``filelayer`` process would."""
    while _OPENED:
        _OPENED.pop().close()


_UNPRINTABLE = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in (
        *range(0x20),  # C0: escape sequences (ESC), bells, carriage returns, new lines
        0x7F,
        *range(0x80, 0xA0),  # C1: CSI and the like, in one character
        *range(0x202A, 0x202F),  # bidirectional overrides: text that reads otherwise
        *range(0x2066, 0x206A),
    )
    if code != 0x09  # a tab is harmless
}


def printable(text: object) -> str:
    """``text`` as one line safe to print on a terminal: a name, a message line, a path
    is the data's, and a chat user wrote it. Control characters (an escape sequence
    clears the screen, sets the window's title, or forges a line of output) are shown
    as ``\\x1b``-style escapes instead of being sent to the terminal."""
    return str(text).translate(_UNPRINTABLE)


def stdout() -> TextIO:
    """Where a command writes its output (looked up per call, so a redirect applies)."""
    return sys.stdout


def holds_any_text(out: TextIO) -> bool:
    """Whether ``out``'s encoding holds every character (UTF-8 and its kin). Where it
    does not, what it cannot hold is printed escaped (:func:`filelayer.cli.main`), and
    JSON is written in ASCII (``\\u00e9``), so that it stays JSON."""
    try:
        return codecs.lookup(getattr(out, "encoding", None) or "ascii").name.startswith("utf")
    except LookupError:
        return False


def selected(store: ArchiveStore, args: argparse.Namespace) -> Iterator[ThreadSummary]:
    """Threads matching --user/--since/--until (and list's filters), newest first."""
    since, until = parse_date(args.since), parse_date(args.until)
    identifier = getattr(args, "user", None)
    if identifier == "":  # an unset shell variable: no filter would select everyone's
        raise UsageError("--user needs an identifier, not ''")
    store.index.refresh()
    user_id = None
    if identifier is not None:
        user = store.get_user(identifier)
        if user is None:
            return
        user_id = user["id"]
    page = store.index.page(
        user_id=user_id,
        first=len(store.index.threads) + 1,
        search=getattr(args, "search", None),
        feedback=getattr(args, "feedback", None),
    )
    for summary in page.items:
        day = summary.created_at[:10]
        if (since and day < since) or (until and day > until):
            continue
        yield summary


_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_date(value: str | None) -> str | None:
    """A ``YYYY-MM-DD`` option as given (compared as text with ISO times), or a
    :class:`UsageError`: only a day that exists, in ASCII digits (full-width digits or
    a letter O would sort after, or before, every real date and select everything)."""
    if value is None:
        return None
    if _DATE_RE.fullmatch(value) is None:
        raise UsageError(f"dates are written YYYY-MM-DD, not {value!r}")
    try:
        date(int(value[:4]), int(value[5:7]), int(value[8:]))
    except ValueError:
        raise UsageError(
            f"dates are written YYYY-MM-DD, and {value!r} is no day of the calendar"
        ) from None
    return value


def given_ids(ids: list[str]) -> list[str]:
    """Thread ids as given on the command line, each once, in the order first given:
    a repeated id is one thread (exported once, counted once)."""
    return list(dict.fromkeys(ids))


def require_thread(store: ArchiveStore, thread_id: str) -> dict[str, Any]:
    """The thread as ``get_thread`` gives it, or a :class:`UsageError` naming the id
    (which is validated before it comes near a path)."""
    thread = store.get_thread(thread_id) if is_valid_id(thread_id) else None
    if thread is None:
        raise UsageError(f"no thread {thread_id!r} in {store.root}")
    return thread
