"""``filelayer export``: threads to Markdown, HTML or JSON files, or to the terminal.

The rendering is :mod:`filelayer.export`'s; this module chooses the threads and writes
the files, leaving identical ones untouched.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import html
import itertools
import json
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .._io import fs as _fs
from ..errors import ExportLinkError, FileLayerError, StorageWriteError
from ..export.bundle import UNRENDERABLE, build, content, describe
from ..export.markdown import file_stem, render_json
from ..format.ids import MAX_ID_LENGTH
from ..format.layout import INDEX_DIR, LOCKS_DIR, SESSIONS_DIR, THREADS_DIR, USERS_DIR
from ..progress import Progress
from ..store.archive import ArchiveStore
from ._common import (
    UsageError,
    given_ids,
    holds_any_text,
    open_store,
    printable,
    require_thread,
    selected,
    stdout,
)


def cmd_export(args: argparse.Namespace) -> int:
    store = open_store(args)
    if args.threads and (args.all or args.user):
        raise UsageError("give thread ids, or --all / --user, not both")
    if args.threads:
        ids = given_ids(args.threads)
    elif args.all or args.user or args.since or args.until:
        ids = [s.id for s in selected(store, args)]
        if args.all and not (args.user or args.since or args.until):
            listed = set(ids)
            ids += [t for t in store.thread_ids() if t not in listed]  # even unindexed ones
    else:
        raise UsageError("say what to export: THREAD ids, --user IDENTIFIER or --all")
    if not args.output and len(ids) > 1 and args.format != "markdown":
        raise UsageError(f"several threads as {args.format.upper()} need -o DIR")
    if args.output and os.path.lexists(args.output) and not os.path.isdir(args.output):
        raise UsageError(f"-o {args.output}: not a directory")
    if args.output and _in_the_layers_own(Path(args.output), store):
        # Pages there would become a thread of their own, or copies of conversations
        # that an erasure does not look for.
        raise UsageError(
            f"-o {args.output}: the archive's root or one of its own directories; "
            "export somewhere else"
        )
    progress = Progress("exporting")
    written = 0
    failed = 0
    stems: dict[str, str] = {}  # file name stem, in lower case -> the thread under it
    there = _pages_there(Path(args.output), args.format) if args.output else {}
    try:
        for n, thread_id in enumerate(ids, start=1):
            if args.threads:
                thread = require_thread(store, thread_id)
            else:  # listed a moment ago: deleted since, or a tombstone beside its files
                found = store.get_thread(thread_id)
                if found is None:
                    continue
                thread = found
            try:
                if args.output:
                    stem = _free_stem(thread, stems, there, args.format)
                    _export_to(store, thread, Path(args.output), args.format, stem)
                else:
                    out = stdout()
                    if args.format == "html":
                        _print_page(store, thread, out, after=bool(written))
                    else:
                        if args.format == "json":
                            text = render_json(thread, ensure_ascii=not holds_any_text(out))
                        else:
                            text = build(store, thread, args.format).text
                        if _is_terminal(out):
                            text = _for_terminal(text, json_text=args.format == "json")
                        out.write(text if not written else "\n" + text)
            except UNRENDERABLE as exc:
                # Hand-edited or damaged values (a name that is a list, a table nested
                # beyond any reader's depth): this thread is named and skipped, the
                # others are still exported.
                failed += 1
                print(f"thread {thread_id}: not exported: {describe(exc)}", file=sys.stderr)
                continue
            written += 1
            progress(n, len(ids))
    finally:
        progress.close()
    if args.output:
        print(f"exported {written} thread(s) to {args.output}", file=sys.stderr)
    return 0 if written and not failed else 1


def _print_page(store: ArchiveStore, thread: dict[str, Any], out: Any, *, after: bool) -> None:
    """One HTML page with its images inside (no directory for them) on ``out``, written
    as it is made, never held whole (see :func:`filelayer.export.html.html_pieces`).
    Each piece is made fit for ``out`` on its own: both changes go a character at a
    time (a new line is kept whole by either)."""
    ascii_only = not holds_any_text(out)
    terminal = _is_terminal(out)
    if after:
        out.write("\n")
    pieces = build(store, thread, "html", self_contained=True, streamed=True).pieces
    for piece in pieces or ():
        if ascii_only:
            # ASCII with character references (&#9731;): the page says it is UTF-8,
            # which ASCII is, and a Latin-1 byte is not.
            piece = piece.encode("ascii", "xmlcharrefreplace").decode("ascii")
        out.write(_for_terminal(piece, json_text=False) if terminal else piece)


def _is_terminal(out: Any) -> bool:
    try:
        return bool(out.isatty())
    except (AttributeError, ValueError, OSError):  # no such method, a closed stream
        return False


_CONTROL = {
    code: f"\\u{code:04x}"
    for code in (
        *range(0x20),
        0x7F,
        *range(0x80, 0xA0),
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
    )
    if code not in (0x09, 0x0A)
}


def _for_terminal(text: str, *, json_text: bool) -> str:
    """An export printed on a terminal, its control characters (an escape sequence that
    clears the screen, sets the title or writes the clipboard, a C1 control, a
    bidirectional override: a chat user typed them) as escapes, as ``show`` prints
    them; new lines and tabs kept. JSON gets JSON's own escapes, so it stays JSON (it
    escapes C0 itself); a pipe or a file is never given this, but the export as it is."""
    if json_text:
        return text.translate(_CONTROL)
    return "\n".join(printable(line) for line in text.split("\n"))


_EXTENSIONS = {"markdown": ".md", "html": ".html", "json": ".json"}
_HEAD = 64 << 10
"""How much of a Markdown or HTML page is read to find whose it is (its id is in its
first lines: the front matter, the page's head)."""
_OWNER_RES = {
    "markdown": re.compile(r'\A---\nid: ("(?:[^"\\\n]|\\.)*")\n'),
    "html": re.compile(r'<meta name="filelayer-thread" content="([^"<>]*)">'),
}
_JSON_ID = b'\n  "id": '
"""The thread's own id in a JSON export (``indent=2``: the top level's keys, alone on
lines of two spaces' indent; a new line inside a string is written ``\\n``)."""


def _pages_there(directory: Path, fmt: str) -> dict[str, list[Path]]:
    """The pages of this format already in ``directory``, by their stem in lower case:
    a later export into it takes the same names again and never another thread's
    (names chosen from one run's threads only gave a thread exported alone the name
    that, ignoring case, another thread's page had: ``…-T`` beside ``…-t``, one file on
    macOS and Windows). Only listed here; a page is read only when a name to be taken
    is its (see :func:`_free_stem`)."""
    extension = _EXTENSIONS[fmt]
    try:
        names = [e.name for e in os.scandir(directory) if e.is_file(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return {}
    pages: dict[str, list[Path]] = {}
    for name in sorted(names):
        if name.lower().endswith(extension) and not name.startswith("."):
            pages.setdefault(name[: -len(extension)].lower(), []).append(directory / name)
    return pages


def _owner(path: Path, fmt: str) -> str | None:
    """The id of the thread ``path`` (an earlier export's page) was exported from, or
    ``None`` when it says none (not an export's page)."""
    try:
        with open(path, "rb") as page:
            if fmt == "json":
                return _json_owner(page)
            head = page.read(_HEAD).decode("utf-8", "replace")
    except OSError:
        return None
    found = _OWNER_RES[fmt].search(head)
    if found is None:
        return None
    if fmt == "html":
        return html.unescape(found.group(1))
    try:
        owner = json.loads(found.group(1).replace("\\u003c", "<"))
    except ValueError:
        return None
    return owner if isinstance(owner, str) else None


def _json_owner(page: Any) -> str | None:
    """The top-level ``id`` of a JSON export, read a block at a time (its steps and
    elements come before it, sorted by key)."""
    tail = b""
    while True:
        block = page.read(_HEAD)
        if not block:
            return None
        data = tail + block
        at = data.find(_JSON_ID)
        if at >= 0:
            line = data[at + len(_JSON_ID) :].split(b"\n", 1)
            if len(line) == 1 and len(line[0]) < 4 * MAX_ID_LENGTH:  # the line goes on
                line = (line[0] + page.read(8 * MAX_ID_LENGTH)).split(b"\n", 1)
            try:
                owner = json.loads(line[0].rstrip(b","))
            except ValueError:
                return None
            return owner if isinstance(owner, str) else None
        tail = data[-len(_JSON_ID) :]


def _free_stem(
    thread: dict[str, Any], stems: dict[str, str], there: dict[str, list[Path]], fmt: str
) -> str:
    """The name the thread's files start with in this export, noted in ``stems``: its
    own, or, when another thread of the export took that one, or another thread's page
    in the directory has it (``there``: see :func:`_pages_there`; a client chooses its
    ids: one may begin like another's, or be another's first 8 characters), its whole
    id, then a number after it. Names are compared ignoring case: ids keep theirs, and
    on a file system that ignores it (macOS, Windows) two names that differ only in
    case are one file."""
    thread_id = str(thread["id"])
    whole = file_stem(thread, whole_id=True)
    later = (f"{whole}-{n}" for n in itertools.count(2))
    for stem in itertools.chain((file_stem(thread), whole), later):
        key = stem.lower()
        if key not in stems:
            # Pages there whose names differ only in case (one file only where case
            # is ignored): the name is this thread's if one of them is its page.
            found = (_owner(page, fmt) for page in there.get(key, []))
            owners = {owner for owner in found if owner is not None}
            if owners and thread_id not in owners:
                stems[key] = min(owners)
        if stems.setdefault(key, thread_id) == thread_id:
            return stem
    raise AssertionError("unreachable: the names to try never end")


def _export_to(
    store: ArchiveStore, thread: dict[str, Any], directory: Path, fmt: str, stem: str
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        _write_if_changed(directory, f"{stem}.json", render_json(thread).encode())
        return
    bundle = build(store, thread, fmt, stem=stem, streamed=True)
    if bundle.pieces is not None:  # an HTML page, written as it is made
        pieces = (piece.encode("utf-8") for piece in bundle.pieces)
        _write_streamed_if_changed(directory, bundle.name, pieces)
        files = sorted(bundle.files.items())
    else:
        files = bundle.items()
    for relative, data in files:
        _write_if_changed(directory, relative, content(data))


def _write_if_changed(directory: Path, relative: str, data: bytes) -> None:
    """Write ``directory/relative``, leaving an identical file untouched, so re-exports
    do not churn a git checkout.

    Never through a symbolic link below ``directory`` (the directory itself is the
    caller's choice): an export kept in git can receive one from a merge, in place of a
    page or of a thread's ``.files`` directory, and the export would then overwrite
    whatever it points to. Such a link stops the export, which says where it is."""
    path = _target(directory, relative)
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | _fs.NOFOLLOW | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ExportLinkError(path) from exc
        raise
    else:
        try:
            same = _fs.pread_all(fd, len(data) + 1, 0) == data
        finally:
            os.close(fd)
        if same:
            return
    _fs.atomic_write(path, data, durable=False)  # replaces a link put there meanwhile


_BLOCK = 1 << 20
"""How much of a page :func:`_write_streamed_if_changed` compares at a time."""


def _write_streamed_if_changed(directory: Path, relative: str, pieces: Iterable[bytes]) -> None:
    """:func:`_write_if_changed` for a page that comes in pieces: they go one after
    another into a temporary file beside it, which then replaces the page unless the
    two are the same, compared a block at a time. Neither the page nor the file there
    is ever held whole: a page of a 20 MB output took five times its size on top of the
    thread (the page, its bytes, the file read back to compare)."""
    path = _target(directory, relative)
    tmp = _fs.temp_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
        try:
            for piece in pieces:
                view = memoryview(piece)
                while view:
                    view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        if _same_content(tmp, path):
            tmp.unlink()
            return
        if os.path.lexists(path):
            # What replaces a file is on the disk first: a power cut must not publish
            # the new name without its bytes and take the old page with it.
            _fs.sync_file(tmp)
        os.replace(tmp, path)  # replaces a link put there meanwhile, not its target
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, FileLayerError):
            raise StorageWriteError(path, exc) from exc
        raise


def _same_content(new: Path, old: Path) -> bool:
    """Whether the file ``old`` (never followed if it is a link) holds what ``new``
    does, read a block at a time."""
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | _fs.NOFOLLOW | getattr(os, "O_NONBLOCK", 0)
    try:
        theirs = os.open(old, flags)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ExportLinkError(old) from exc
        raise
    try:
        with open(new, "rb") as ours, open(theirs, "rb", closefd=False) as there:
            while True:
                block = ours.read(_BLOCK)
                if block != there.read(len(block) or 1):
                    return False
                if not block:
                    return True
    finally:
        os.close(theirs)


def _target(directory: Path, relative: str) -> Path:
    """``directory/relative``, its directories made, and no symbolic link on the way
    below ``directory`` (see :func:`_write_if_changed`)."""
    path = directory
    for part in Path(relative).parts:
        path = path / part
        if path.is_symlink():
            raise ExportLinkError(path)
        if path.name != Path(relative).name:
            with contextlib.suppress(FileExistsError):
                path.mkdir()
            if path.is_symlink():  # put there since the look above
                raise ExportLinkError(path)
    return path


def _in_the_layers_own(path: Path, store: ArchiveStore) -> bool:
    """Whether ``path`` is the archive's root, or in one of the directories the layer
    reads and writes there (``threads/``, ``users/``, ``sessions/``, ``index/``,
    ``locks/``), links and ``..`` resolved as far as the path exists."""
    target, root = path.resolve(), store.root.resolve()
    if target == root:
        return True
    if root not in target.parents:
        return False
    return target.relative_to(root).parts[0] in _LAYER_DIRS


_LAYER_DIRS = frozenset({THREADS_DIR, USERS_DIR, SESSIONS_DIR, INDEX_DIR, LOCKS_DIR})
