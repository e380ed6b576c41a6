"""Rules of docs/format.md that its first outside reader had to guess, pinned down.

Each test states one answer of the format document (issue #15) on the fold itself, so
that the conformance corpus (tests/conformance/) and this file agree on every rule.
"""

from __future__ import annotations

from typing import Any

from filelayer.format import journal


def _step(sid: str, **fields: Any) -> dict[str, Any]:
    return journal.step_record({"id": sid, **fields})


def _order(*records: dict[str, Any]) -> list[str]:
    return [s["id"] for s in journal.fold(list(records)).ordered_steps()]


# -- times compare as instants, whatever their number of fractional digits -------------


def test_a_time_without_fraction_sorts_before_the_rest_of_its_second() -> None:
    # Chainlit's utc_now() drops the fraction when the microseconds are 0.
    assert _order(
        _step("late", createdAt="2026-01-01T00:00:01.500000Z"),
        _step("early", createdAt="2026-01-01T00:00:01Z"),
    ) == ["early", "late"]


def test_times_of_three_and_six_digits_compare_as_instants() -> None:
    assert _order(
        _step("b", createdAt="2026-01-01T00:00:01.2Z"),
        _step("a", createdAt="2026-01-01T00:00:01.123456Z"),
        _step("c", createdAt="2026-01-01T00:00:01.500Z"),
    ) == ["a", "b", "c"]


def test_merge_keeps_the_earliest_start_and_latest_end_as_instants() -> None:
    state = journal.fold(
        [
            _step("a", createdAt="2026-01-01T00:00:01.100000Z", end="2026-01-01T00:00:02Z"),
            _step("a", createdAt="2026-01-01T00:00:01Z", end="2026-01-01T00:00:01.900000Z"),
        ]
    )
    assert state.steps["a"]["createdAt"] == "2026-01-01T00:00:01Z"
    assert state.steps["a"]["end"] == "2026-01-01T00:00:02Z"


def test_an_offset_other_than_utc_is_compared_in_utc() -> None:
    assert _order(
        _step("utc", createdAt="2026-01-01T01:30:00Z"),
        _step("paris", createdAt="2026-01-01T02:00:00+01:00"),  # 01:00 UTC
    ) == ["paris", "utc"]


# -- fields of the wrong type in a well-formed line never stop a reader ------------------


def test_feedback_whose_for_id_is_not_a_string_belongs_to_no_step() -> None:
    state = journal.fold(
        [
            _step("a", createdAt="T1"),
            {"op": "feedback", "feedback": {"id": "f1", "forId": ["a"], "value": 1}},
            {"op": "feedback", "feedback": {"id": "f2", "forId": {"a": 1}, "value": 0}},
        ]
    )
    assert state.feedback_by_step() == {}
    assert [s["id"] for s in state.ordered_steps()] == ["a"]


def test_a_parent_id_that_is_not_a_string_means_no_parent() -> None:
    assert _order(
        _step("b", createdAt="T2", parentId={"x": 1}),
        _step("a", createdAt="T1", parentId=["b"]),
    ) == ["a", "b"]
