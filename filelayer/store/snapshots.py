"""Thread views kept on disk, so that the first read of a long thread in a new process
(an app restarted, another worker) decodes one document instead of reading and folding
its whole journal.

A view is a thread's steps and elements as its journal folds to them, in the shape
``get_thread`` serves, written to ``index/views/<thread id>.json``: derived, like the
rest of ``index/``, and ignored by git. Its first line names the journal it was made
from: device, inode, size, modification and change times, and the journal's last
bytes. A view is used only while the journal is still exactly that file; a line
appended since, a compaction, a repair or a ``git checkout`` makes it stale, and the
journal is folded as before (and a new view written). The change time cannot be set by
any program, so even a file rewritten in place with its old size and modification time
does not match.

Views are written without an fsync (a power cut may leave one empty or torn: it then
does not decode or does not match, and is ignored), from two places: a read that had
to fold a long journal from its beginning, and a store that closes, for the long
threads it wrote (an app's shutdown: its next start serves them from their views).
Threads shorter than :data:`VIEW_MIN_BYTES` get none: folding them costs less than a
fraction of a millisecond. A view goes with its thread (``delete_thread``, retention,
erasure) and with its journal's compaction (it may still hold deleted steps).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

from .._io import fs as _fs
from ..format import codec as _codec
from ..format.journal import no_collection
from ..format.layout import Layout

VIEW_MIN_BYTES = 32 * 1024
"""Journals shorter than this get no view: their first read is already fast."""

VIEW_FORMAT = 1
"""The version of the view file; a view of another version is not read."""

_TAIL = 64
"""Bytes of the journal's end a view keeps, to recognise the file it was made from."""

Key = tuple[int, int, int, int, int]
"""A journal file's identity and state: device, inode, size, mtime_ns, ctime_ns."""


def key_of(st: os.stat_result) -> Key:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def journal_key(layout: Layout, thread_id: str) -> Key | None:
    """The key of the thread's journal as it is now; ``None`` if there is none."""
    try:
        return key_of(os.stat(layout.journal(thread_id)))
    except OSError:
        return None


@dataclass(frozen=True)
class ViewBytes:
    """A view file's body, to decode again."""

    body: bytes
    plain: bool
    """It holds no run of 19 digits (see :func:`filelayer.format.codec.decode_plain`)."""

    def decode(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """New copies of the steps and elements."""
        decode = _codec.decode_plain if self.plain else _codec.decode
        with no_collection(len(self.body)):
            body = decode(self.body)
        return body["steps"], body["elements"]


@dataclass
class View:
    """A thread's view as read from its file: the steps and elements (the caller owns
    these objects) and the bytes they were decoded from."""

    key: Key
    steps: list[dict[str, Any]]
    elements: list[dict[str, Any]]
    source: ViewBytes


class ThreadSnapshots:
    """Reads, writes and removes the views of one archive (see the module's docstring)."""

    __slots__ = ("layout",)

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def load(self, thread_id: str) -> View | None:
        """The thread's view, if its file matches the journal as it is now."""
        try:
            fd = os.open(self.layout.journal(thread_id), os.O_RDONLY)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if st.st_size < VIEW_MIN_BYTES:
                return None
            data = _fs.read_bytes(self.layout.thread_view(thread_id))
            if not data:
                return None
            end = data.find(b"\n")
            key = key_of(st)
            try:
                head = _codec.decode(data[:end])
                if not (
                    type(head) is dict
                    and head.get("format") == VIEW_FORMAT
                    and head.get("thread") == thread_id
                    and head.get("journal") == list(key)
                ):
                    return None
                tail = _fs.pread_all(fd, _TAIL, st.st_size - _TAIL)
                if head.get("tail") != tail.hex():
                    return None
                body_bytes = data[end + 1 :]
                plain = head.get("plain") is True
                decode = _codec.decode_plain if plain else _codec.decode
                with no_collection(len(body_bytes)):
                    body = decode(body_bytes)
            except _codec.DecodeError:
                return None
        except OSError:
            return None
        finally:
            os.close(fd)
        if type(body) is not dict:
            return None
        steps: Any = body.get("steps")
        elements: Any = body.get("elements")
        if not (_dicts(steps) and _dicts(elements)):
            return None
        return View(key, steps, elements, ViewBytes(body_bytes, plain))

    def matches(self, thread_id: str, key: Key) -> bool:
        """Whether the thread's view file names the journal ``key`` (its first line
        only: for a writer deciding whether to write it again)."""
        try:
            with open(self.layout.thread_view(thread_id), "rb") as f:
                line = f.readline(4096)
            head = _codec.decode(line)
        except (OSError, *_codec.DecodeError):
            return False
        return (
            type(head) is dict
            and head.get("format") == VIEW_FORMAT
            and head.get("thread") == thread_id
            and head.get("journal") == list(key)
        )

    def save(
        self,
        thread_id: str,
        key: Key,
        tail: bytes,
        steps: list[dict[str, Any]],
        elements: list[dict[str, Any]],
    ) -> None:
        """Keep the view of the journal ``key`` names, ending with ``tail`` (its last
        bytes, at least :data:`_TAIL` of them). Best effort: a view is derived, so a
        full disk or a read-only archive only costs the next first read its fold."""
        if key[2] < VIEW_MIN_BYTES or len(tail) < _TAIL:
            return
        try:
            body = _codec.encode_line({"steps": steps, "elements": elements})
        except (TypeError, ValueError):
            return
        head = {
            "format": VIEW_FORMAT,
            "thread": thread_id,
            "journal": list(key),
            "tail": tail[-_TAIL:].hex(),
            "plain": not _codec.holds_digit_run(body),  # read without looking again
        }
        data = _codec.encode_line(head) + body
        path = self.layout.thread_view(thread_id)
        try:
            path.parent.mkdir(exist_ok=True)
            fd, tmp = _fs.write_temp(path, data)
        except OSError:
            return
        try:
            os.close(fd)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def remove(self, thread_id: str) -> None:
        """Remove the thread's view (the thread is deleted, or its journal compacted)."""
        with contextlib.suppress(OSError):
            os.unlink(self.layout.thread_view(thread_id))


def _dicts(value: Any) -> bool:
    return type(value) is list and all(type(item) is dict for item in value)
