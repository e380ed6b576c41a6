"""The stamp that orders every journal record: a hybrid logical clock.

Two clones of an archive append to the same journal independently; a git merge then
unites their lines. For the result not to depend on which side merged which, the fold
cannot rely on where a line sits in the file, so every record a writer appends carries
a stamp (``"at"``) and records are applied in stamp order (docs/format.md, "Ordering
records"). A stamp is an ISO 8601 UTC time with microseconds, the same shape as
Chainlit's times, so stamps compare as strings. A writer takes the later of its clock
and one microsecond after the newest stamp already in the journal (it holds the
thread's lock and knows that stamp), so stamps only grow within a journal even when a
merge brought in lines from a clone whose clock runs ahead: the clock is "hybrid".
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any, TypeGuard

STAMP_KEY = "at"
"""The record field that holds the stamp. It sorts before every other top-level key of
a record (``element``, ``feedback``, ``id``, ``op``, ``step``), so an encoded line
starts with it: ``{"at":"2026-11-25T04:29:55.691608Z",…``."""

LINE_PREFIX = b'{"at":"'
STAMP_LEN = len("2026-11-25T04:29:55.691608Z")
_STAMP_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", re.ASCII)
_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_TICK = timedelta(microseconds=1)


def is_stamp(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a stamp this version writes (anything else orders as no
    stamp at all: a hand-edited line cannot jump the queue with a malformed one)."""
    return isinstance(value, str) and _STAMP_RE.fullmatch(value) is not None


_DIGITS_TO_ZERO = str.maketrans("123456789", "000000000")
_STAMP_SHAPE = "0000-00-00T00:00:00.000000Z\n"


def all_stamps(values: list[Any]) -> TypeGuard[list[str]]:
    """Whether every one of ``values`` is a stamp (:func:`is_stamp`), at the cost of a
    few passes in C over a whole journal's stamps, where a match per record costs
    more than the rest of reading it."""
    try:
        joined = "\n".join(values) + "\n"
    except TypeError:  # not all strings
        return False
    return joined.isascii() and joined.translate(_DIGITS_TO_ZERO) == _STAMP_SHAPE * len(values)


def now_iso() -> str:
    """The clock's time as a stamp (named like the store's clock, so that a test or a
    generator that fixes every clock of the layer fixes this one too)."""
    return datetime.now(timezone.utc).strftime(_FORMAT)


def after(last: str | None, clock: str | None = None) -> str:
    """The next stamp: the clock's time, or one microsecond after ``last`` when the
    clock is not ahead of it."""
    current = clock or now_iso()
    if last is None or not is_stamp(last) or current > last:
        return current
    try:
        following = datetime.strptime(last, _FORMAT).replace(tzinfo=timezone.utc) + _TICK
    except (ValueError, OverflowError):
        # Another program's stamp with a date that does not exist, or the last
        # microsecond of 9999: the next string of the stamp's form, as stamps compare.
        return _next_digits(last)
    return following.strftime(_FORMAT)


def _next_digits(stamp: str) -> str:
    """``stamp`` with its digits, read as one number, plus one (``stamp`` itself when
    they are all nines): the least string of the same form after it."""
    digits = "".join(c for c in stamp if c.isdigit())
    following = str(int(digits) + 1)
    if len(following) > len(digits):
        return stamp
    it = iter(following.zfill(len(digits)))
    return "".join(next(it) if c.isdigit() else c for c in stamp)


def stamp_of_line(line: bytes) -> str | None:
    """The stamp at the start of an encoded journal line, without decoding it."""
    if line.startswith(LINE_PREFIX):
        end = len(LINE_PREFIX) + STAMP_LEN
        if line[end : end + 1] == b'"':
            text = line[len(LINE_PREFIX) : end].decode("ascii", "replace")
            if is_stamp(text):
                return text
    return None


_LINE_STAMP_RE = re.compile(rb'\n\{"at":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z)"')


def newest_stamp(data: bytes) -> str | None:
    """The newest stamp of the lines of ``data`` that start after one of its newlines
    (what :func:`stamp_of_line` finds on each, in one pass over the bytes)."""
    found = _LINE_STAMP_RE.findall(data)
    return max(found).decode("ascii") if found else None


def stamp_lines(data: bytes, last: str | None) -> tuple[bytes, str | None]:
    """Stamp each complete encoded line of ``data`` (written by ``_codec.encode_line``,
    keys sorted, no stamp yet) with the next stamps after ``last``. Returns the stamped
    bytes and the last stamp given. Lines already stamped are kept as they are."""
    out: list[bytes] = []
    for line in data.split(b"\n")[:-1]:
        if line.startswith(LINE_PREFIX) or not line.startswith(b"{"):
            out.append(line)
            continue
        last = after(last)
        sep = b"," if line != b"{}" else b""
        out.append(LINE_PREFIX + last.encode("ascii") + b'"' + sep + line[1:])
    return b"".join(line + b"\n" for line in out), last
