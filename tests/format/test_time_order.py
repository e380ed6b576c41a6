"""The order of instants (docs/format.md): the form Chainlit writes takes a shortcut in
``time_key``; it must give what the general rule gives for the same instant."""

from __future__ import annotations

import pytest

from filelayer._time import earliest, latest, time_key

CHAINLIT_FORM = [
    "2026-11-25T04:29:55.691608Z",
    "2026-11-25T04:29:55.000000Z",
    "0001-01-01T00:00:00.000001Z",
    "9999-12-31T23:59:59.999999Z",
]


@pytest.mark.parametrize("value", CHAINLIT_FORM)
def test_the_common_form_keys_as_the_general_rule_does(value: str) -> None:
    general = value[:-1] + "+00:00"  # the same instant, through the offset branch
    assert time_key(value) == time_key(general)
    assert time_key(value) == time_key(value[:-1])  # no offset: UTC


def test_forms_near_the_common_one_are_not_taken_for_it() -> None:
    assert time_key("2026-11-25T04:29:55.69160xZ") == "2026-11-25T04:29:55.69160xZ"
    assert time_key("2026-11-25 04:29:55.691608Z") == "2026-11-25T04:29:55.691608000"
    assert earliest("2026-11-25T04:29:55Z", "2026-11-25T04:29:55.500000Z").endswith("55Z")
    assert latest("2026-11-25T04:29:55Z", "2026-11-25T04:29:55.500000Z").endswith(".500000Z")


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59.5-01:00"])
def test_an_instant_outside_the_years_one_to_9999_is_its_own_key(value: str) -> None:
    """In UTC it would fall before year 1 or after 9999, which the key cannot spell: like
    any other string that names no instant, it is its own key (never an error, which
    would stop a write, a read or a merge)."""
    assert time_key(value) == value
    other = "2026-01-01T00:00:00Z"
    assert earliest(value, other) == earliest(other, value)
    assert latest(value, other) == latest(other, value)
