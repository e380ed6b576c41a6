"""Comparing the times an archive holds as instants, not as strings.

Chainlit writes ISO 8601 UTC times with six fractional digits, except that its
``utc_now()`` drops the fraction when the microseconds are 0 (``…:55Z``), and other
writers (a browser, another data layer, a copy) use three digits or an offset. Compared
as strings, ``…:55Z`` sorts after ``…:55.5Z`` (``Z`` > ``.``): a step would move. So
times are compared through :func:`time_key`, which docs/format.md spells out for other
readers; the stored strings are never rewritten.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_ISO = re.compile(
    r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})?",
    re.ASCII,
)


def time_key(value: str) -> str:
    """A string that sorts as the instant ``value`` names.

    ``YYYY-MM-DDTHH:MM:SS`` with an optional fraction of 1 to 9 digits and an optional
    ``Z`` or ``±HH:MM`` offset (none means UTC) becomes the UTC time with exactly nine
    fractional digits: ``2026-01-01T00:00:01.000000000``. Anything else is its own key,
    so it still sorts somewhere, the same way in every reader.
    """
    match = _ISO.fullmatch(value)
    if match is None:
        return value
    day, clock, fraction, offset = match.groups()
    base = f"{day}T{clock}"
    if offset and offset not in ("Z", "+00:00", "-00:00"):
        try:
            moment = datetime.fromisoformat(base)
        except ValueError:
            return value
        sign = 1 if offset[0] == "+" else -1
        shift = timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
        moment = (moment - sign * shift).replace(tzinfo=timezone.utc)
        base = moment.strftime("%Y-%m-%dT%H:%M:%S")
        if moment.year < 1000:  # strftime does not pad years on every platform
            base = f"{moment.year:04d}{base[base.index('-') :]}"
    return f"{base}.{(fraction or '').ljust(9, '0')}"


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
