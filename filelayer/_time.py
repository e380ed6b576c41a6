"""Every parse, format and rounding of a time in one place.

The archive and Chainlit write ISO 8601 text in UTC with milliseconds; the SQL databases
hold ``TIMESTAMP(3)``. Comparing times written by different sides needs one parser that
accepts what real data contains and one rounding both sides agree on."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

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
        dt -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return dt


def format_time(dt: datetime) -> str:
    """Chainlit's own format, so that times written by either side compare as text."""
    return dt.strftime(ISO)


def round_ms(dt: datetime) -> datetime:
    """Round to the millisecond the way PostgreSQL stores ``TIMESTAMP(3)`` (half up)."""
    micro = dt.microsecond
    base = dt - timedelta(microseconds=micro % 1000)
    return base + timedelta(milliseconds=1) if micro % 1000 >= 500 else base


def time_key(value: object) -> str:
    """A time as comparable text at the precision both sides share (milliseconds)."""
    dt = parse_time(value)
    return format_time(round_ms(dt)) if dt else ""


def now_iso() -> str:
    """The current UTC time in Chainlit's own format (so times sort as strings)."""
    return datetime.now(timezone.utc).strftime(ISO)


def when(value: object) -> str:
    """``2026-11-25 04:29 UTC`` from Chainlit's ISO time (what a reader wants to see)."""
    text = str(value or "")
    return f"{text[:10]} {text[11:16]} UTC" if len(text) >= 16 else text
