"""Every parse, format, rounding and ordering of a time, in one place.

The archive and Chainlit write ISO 8601 text in UTC (six fractional digits, except that
Chainlit's ``utc_now()`` drops the fraction when the microseconds are 0, ``…:55Z``);
other writers (a browser, another data layer, a copy) use three digits or an offset; the
SQL databases hold ``TIMESTAMP(3)``. Two orders follow from that, each one function:

* :func:`time_key`, the archive format's rule (docs/format.md spells it out for other
  readers): a string that sorts as the instant, at full precision. Compared as strings,
  ``…:55Z`` sorts after ``…:55.5Z`` (``Z`` > ``.``): a step would move. The stored
  strings are never rewritten.
* :func:`ms_key`, what both sides of a copy can agree on: the instant rounded to the
  millisecond the way PostgreSQL stores ``TIMESTAMP(3)``, from a parser that accepts
  what real data contains (dates alone, offsets without a colon).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

ISO = "%Y-%m-%dT%H:%M:%S.%fZ"
_TIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?$"
)


# -- times ---------------------------------------------------------------------------


def parse_time(value: object) -> datetime | None:
    """A naive UTC datetime from the ISO 8601 text Chainlit and the archive write.

    Written by hand because ``datetime.fromisoformat`` of Python 3.10 refuses ``Z`` and
    fractions of other than 3 or 6 digits, both of which appear in real data.
    """
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value
    if not isinstance(value, str):
        return None
    m = _TIME_RE.match(value.strip())
    if not m:
        return None
    year, month, day, hour, minute, second, fraction, zone = m.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        dt = datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0)
        )
    except ValueError:
        return None
    dt += timedelta(microseconds=micro)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        try:
            dt -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        except OverflowError:  # before year 1 or after 9999 in UTC: no time, as in time_key
            return None
    return dt


def format_time(dt: datetime) -> str:
    """Chainlit's own format, so that times written by either side compare as text."""
    return dt.strftime(ISO)


def round_ms(dt: datetime) -> datetime:
    """Round to the millisecond the way PostgreSQL stores ``TIMESTAMP(3)`` (half up); the
    last millisecond of year 9999 (PostgreSQL's ``infinity`` as read) stays in it, where
    rounding up would leave the calendar Python can hold."""
    micro = dt.microsecond
    base = dt - timedelta(microseconds=micro % 1000)
    if micro % 1000 < 500 or datetime.max - base < timedelta(milliseconds=1):
        return base
    return base + timedelta(milliseconds=1)


def ms_key(value: object) -> str:
    """A time as comparable text at the precision both sides of a copy share
    (milliseconds, rounded as ``TIMESTAMP(3)`` stores it); ``""`` for what is no time."""
    dt = parse_time(value)
    return format_time(round_ms(dt)) if dt else ""


def now_iso() -> str:
    """The current UTC time in Chainlit's own format (so times sort as strings)."""
    return datetime.now(timezone.utc).strftime(ISO)


def when(value: object) -> str:
    """``2026-11-25 04:29 UTC`` from Chainlit's ISO time (what a reader wants to see); a
    time with an offset at its instant in UTC (through its :func:`time_key`)."""
    text = str(value or "")
    if isinstance(value, str) and len(key := time_key(value)) == 29:
        text = key
    return f"{text[:10]} {text[11:16]} UTC" if len(text) >= 16 else text


# -- the archive format's order of instants -----------------------------------------


_INSTANT_RE = re.compile(
    r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})?",
    re.ASCII,
)
_CHAINLIT_FORM = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"
_CHAINLIT_RE = re.compile(_CHAINLIT_FORM, re.ASCII)
"""The form Chainlit and filelayer write (microseconds, ``Z``): its key is a slice."""
_DIGITS_TO_ZERO = str.maketrans("123456789", "000000000")
_CHAINLIT_SHAPE = "0000-00-00T00:00:00.000000Z\n"


def keys_are_values(values: list[Any]) -> bool:
    """Whether every one of ``values`` is a string in the form Chainlit writes
    (:data:`_CHAINLIT_RE`): such strings order as their keys (:func:`time_key`) do, so
    they can be sorted as they are. A few passes in C for the whole list, where a key
    costs a pattern match per value."""
    try:
        joined = "\n".join(values) + "\n"
    except TypeError:  # not all strings
        return False
    return joined.isascii() and joined.translate(_DIGITS_TO_ZERO) == _CHAINLIT_SHAPE * len(values)


def time_key(value: str) -> str:
    """A string that sorts as the instant ``value`` names.

    ``YYYY-MM-DDTHH:MM:SS`` with an optional fraction of 1 to 9 digits and an optional
    ``Z`` or ``±HH:MM`` offset (none means UTC) becomes the UTC time with exactly nine
    fractional digits: ``2026-01-01T00:00:01.000000000``. Anything else is its own key,
    so it still sorts somewhere, the same way in every reader, and never raises: that
    includes a date that does not exist and an offset that moves the instant before
    year 1 or past 9999, which the key cannot spell.
    """
    if len(value) == 27 and _CHAINLIT_RE.fullmatch(value) is not None:
        return f"{value[:26]}000"  # the common form, at a fraction of the cost
    match = _INSTANT_RE.fullmatch(value)
    if match is None:
        return value
    day, clock, fraction, offset = match.groups()
    base = f"{day}T{clock}"
    if offset and offset not in ("Z", "+00:00", "-00:00"):
        sign = 1 if offset[0] == "+" else -1
        shift = timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
        try:
            moment = (datetime.fromisoformat(base) - sign * shift).replace(tzinfo=timezone.utc)
        except (ValueError, OverflowError):  # no date, or before year 1 / after 9999 in UTC
            return value
        base = moment.strftime("%Y-%m-%dT%H:%M:%S")
        if moment.year < 1000:  # strftime does not pad years on every platform
            base = f"{moment.year:04d}{base[base.index('-') :]}"
    return f"{base}.{(fraction or '').ljust(9, '0')}"


_KEY_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{9}")


def instant_key(value: str) -> str | None:
    """The :func:`time_key` of ``value`` when it names an instant of the calendar;
    ``None`` for text that is its own key, a 13th month, a 30th of February."""
    key = time_key(value)
    if _KEY_RE.fullmatch(key) is None:
        return None
    try:
        datetime.fromisoformat(key[:19])
    except ValueError:
        return None
    return key


def earliest(a: str, b: str) -> str:
    """The earlier of two times; ``a`` when they name the same instant."""
    return b if time_key(b) < time_key(a) else a


def latest(a: str, b: str) -> str:
    """The later of two times; ``a`` when they name the same instant."""
    return b if time_key(b) > time_key(a) else a


def canonical(value: str) -> str:
    """``value`` in the one form the thread index keeps and ``list_threads`` gives:
    UTC, six fractional digits, ``Z`` (``2026-01-01T00:00:01.000000Z``), so that the
    index's own comparisons (SQL, cursors) order instants. A fraction finer than a
    microsecond is cut; what :func:`time_key` does not recognise is kept as it is."""
    key = time_key(value)
    if key is value or len(key) != 29:
        return value
    return f"{key[:26]}Z"
