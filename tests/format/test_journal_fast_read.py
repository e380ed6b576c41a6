"""The fast paths of reading a journal give what the rules of docs/format.md give.

A thread's first read decodes its journal in one call, checks the stamps and the step
times in one pass, and lets the fold keep the decoded bodies; each shortcut has a case
where taking it would read something else than the rules say. These tests hold the
reader to the rules there: against a line-by-line decoding, against the merge rule
field by field, and, for random journals, against ``doc_reader.py``, the reader written
from the document alone (tests/conformance/).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from filelayer.format import codec as _codec
from filelayer.format import journal

CORPUS = Path(__file__).resolve().parent.parent / "conformance"


def _line(record: Any) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def _by_line(data: bytes) -> tuple[list[dict[str, Any]], list[int]]:
    """The rule for damaged lines, applied a line at a time (the reference)."""
    records: list[dict[str, Any]] = []
    bad: list[int] = []
    lines = data[: data.rfind(b"\n") + 1].split(b"\n")[:-1]
    for number, line in enumerate(lines, start=1):
        try:
            record = _codec.decode(line)
        except _codec.DecodeError:
            if not line.strip():
                continue
            record = None
        if type(record) is dict and journal.well_formed(record):
            records.append(record)
        else:
            bad.append(number)
    return records, bad


def _step(sid: str, **fields: Any) -> dict[str, Any]:
    return {"op": "step", "step": {"id": sid, **fields}}


GOOD = _line(_step("a", output="kept"))
TWO_ON_ONE_LINE = _line(_step("b", output="one"))[:-1] + b"," + _line(_step("c", output="two"))
SPLIT_IN_AN_ARRAY = [b'{"op":"step","step":{"id":"d","tags":["x"\n', b'"y"]}}\n']
SPLIT_IN_AN_OBJECT = [b'{"op":"step","step":{"id":"e","output":"z"\n', b'"type":"run"}}\n']


@pytest.mark.parametrize(
    "lines",
    [
        # Two lines holding two records each, and a record begun on one line and ended
        # on the next: decoded as one array, the count of values comes out right.
        [TWO_ON_ONE_LINE, TWO_ON_ONE_LINE, *SPLIT_IN_AN_ARRAY],
        [GOOD, TWO_ON_ONE_LINE, GOOD, TWO_ON_ONE_LINE, *SPLIT_IN_AN_OBJECT, GOOD],
        [GOOD, TWO_ON_ONE_LINE, *SPLIT_IN_AN_ARRAY, GOOD],
        [GOOD, *SPLIT_IN_AN_OBJECT, TWO_ON_ONE_LINE],
        [TWO_ON_ONE_LINE, TWO_ON_ONE_LINE, *SPLIT_IN_AN_ARRAY, *SPLIT_IN_AN_ARRAY],
        [b"1,2\n", b"[3\n", b"4]\n", GOOD],
        [GOOD, b"\n", b"   \n", GOOD, b"not json\n", GOOD, b'"a string"\n'],
        [GOOD, b'{"op":"step","step":{"id":"f","output":"\xff"}}\n', GOOD],  # not UTF-8
        [GOOD, b'{"op":"step","step":{"id":"g","output":"\\ud800"}}\n', GOOD],  # surrogate
        [GOOD, b'{"op":"step","step":{"id":"h","n":NaN}}\n', GOOD],
        [GOOD, b'{"op":"step","step":{"id":"i","n":123456789012345678901234567890}}\n'],
        [GOOD, b'{"op":"step","step":{"id":"j","output":"x",}}\n', GOOD],
        [GOOD, b'{"op":"step","step":{"id":"k"}}' + b" " * 3 + b"\r\n", GOOD],
        [GOOD, GOOD + b'{"op":"step","step":{"id":"torn"'],  # a torn last line
    ],
)
def test_a_line_that_is_not_one_record_is_damaged_whatever_its_neighbours(
    lines: list[bytes],
) -> None:
    data = b"".join(lines)
    read = journal.parse(data)
    assert (read.records, read.bad_lines) == _by_line(data)


def test_a_big_integer_is_read_exactly_among_lines_read_at_once() -> None:
    big = 123456789012345678901234567890
    data = GOOD + _line(_step("n", metadata={"n": big})) + GOOD
    records = journal.parse(data).records
    assert records[1]["step"]["metadata"]["n"] == big


def _fold_both_ways(*records: dict[str, Any]) -> list[journal.ThreadState]:
    """The fold of records given to it (copied) and of records it may keep (as a
    first read gives them), from the bytes of a journal."""
    data = b"".join(_line(r) for r in records)
    kept = journal.fold(journal.parse(data).records, owned=True)
    return [journal.fold(journal.parse(data).records), kept]


def test_a_newer_write_wins_even_when_it_equals_the_stored_value() -> None:
    """1 == True and {"k": 1} == {"k": True} in Python, yet they are different JSON:
    the newer write's value is the one read (a time that compares equal stays)."""
    for state in _fold_both_ways(
        _step("a", isError=0, metadata={"k": 1}, tags=[1], createdAt=1),
        _step("a", isError=False, metadata={"k": True}, tags=[True], createdAt=True),
    ):
        step = state.steps["a"]
        assert step["isError"] is False
        assert step["metadata"]["k"] is True
        assert step["tags"][0] is True
        assert step["createdAt"] == 1 and step["createdAt"] is not True


def test_nulls_and_empty_values_never_overwrite_and_the_first_line_drops_its_nulls() -> None:
    for state in _fold_both_ways(
        _step("a", output="text", metadata={"k": 1}, end=None, start="2026-01-01T00:00:02Z"),
        _step("a", output="", metadata={}, language=None, start="2026-01-01T00:00:01.5Z"),
        _step("b", output=None, input="in"),
    ):
        assert state.steps["a"] == {
            "id": "a",
            "output": "text",
            "metadata": {"k": 1},
            "start": "2026-01-01T00:00:01.5Z",
        }
        assert state.steps["b"] == {"id": "b", "input": "in"}


def test_a_step_kept_by_the_fold_is_not_the_record_of_another_fold() -> None:
    """The fold keeps the bodies only of records nobody else holds: given records
    (compaction, verify, a test), it copies them before merging into them."""
    first, second = _step("a", output="one"), _step("a", output="two")
    state = journal.fold([first, second])
    assert first["step"]["output"] == "one" and state.steps["a"]["output"] == "two"


def test_the_order_is_the_same_with_times_of_any_form() -> None:
    """Times all in Chainlit's form sort as they are; any other form among them makes
    every time go through its key, and the order is the one the keys give."""
    chainlit = ["2026-01-01T00:00:03.000000Z", "2026-01-01T00:00:01.000000Z"]
    other = ["2026-01-01T00:00:03Z", "2026-01-01T01:00:01+01:00"]
    for times in (chainlit, other, [chainlit[0], other[1]]):
        state = journal.fold(
            [_step("late", createdAt=times[0]), _step("early", createdAt=times[1])]
        )
        assert [s["id"] for s in state.ordered_steps()] == ["early", "late"]


def test_a_step_listed_twice_is_ordered_once() -> None:
    """The copy endpoints order rows read from a database, where an id may repeat."""
    one = {"id": "a", "createdAt": "2026-01-01T00:00:01.000000Z"}
    two = {"id": "b", "createdAt": "2026-01-01T00:00:02.000000Z", "parentId": "a"}
    assert journal.order_steps([one, two, one], {"a": 0, "b": 1}) == [one, two]


# -- random journals against the reader written from the document ---------------------

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

IDS = ["a", "b", "c"]
TIMES = [
    "2026-01-01T00:00:01.000000Z",
    "2026-01-01T00:00:02.500000Z",
    "2026-01-01T00:00:02Z",
    "2026-01-01T01:00:01.5+01:00",
    "",
    "not a time",
]
VALUES = st.sampled_from(["", "text", "other", 0, 1, True, False, 1.0, None, {}, {"k": 1}])
STEP_FIELDS = st.fixed_dictionaries(
    {"id": st.sampled_from(IDS)},
    optional={
        "output": VALUES,
        "input": VALUES,
        "type": st.sampled_from(["run", "tool", "assistant_message"]),
        "createdAt": st.sampled_from([*TIMES, None, 1]),
        "start": st.sampled_from(TIMES),
        "end": st.sampled_from(TIMES),
        "parentId": st.sampled_from([*IDS, 5, None]),
        "metadata": st.sampled_from([{}, {"k": 1}, {"k": True}, {"k": [1]}, "x"]),
        "isError": st.sampled_from([False, 0, True]),
        "tags": st.sampled_from([[], ["x"], [1]]),
        "streaming": st.booleans(),
    },
)
RECORDS = st.one_of(
    STEP_FIELDS.map(lambda step: {"op": "step", "step": step}),
    st.sampled_from(IDS).map(lambda sid: {"op": "step.delete", "id": sid}),
    st.fixed_dictionaries(
        {
            "id": st.sampled_from(["f1", "f2"]),
            "forId": st.sampled_from([*IDS, 7]),
            "value": st.sampled_from([0, 1]),
        }
    ).map(lambda fb: {"op": "feedback", "feedback": fb}),
    st.sampled_from(["f1", "f2"]).map(lambda fid: {"op": "feedback.delete", "id": fid}),
)
DAMAGED = st.sampled_from([b"", b"  ", b"nope", b"[1", b"2]", b'{"op":"step"}', b"1,2"])


@st.composite
def journals(draw: Any) -> bytes:
    """Lines of records, stamped in order (some with the same stamp), or not at all, or
    with a malformed stamp, among damaged ones, some written with spaces (by another
    program). Never out of order: doc_reader.py applies records in the file's order
    (the order of stamps is pinned by tests/git/)."""
    lines = []
    stamp = 0
    for _ in range(draw(st.integers(1, 12))):
        if draw(st.integers(0, 9)) == 0:
            lines.append(draw(DAMAGED) + b"\n")
            continue
        record = dict(draw(RECORDS))
        how = draw(st.sampled_from(["next", "next", "same", "none", "malformed"]))
        stamp += how == "next"
        if how in ("next", "same"):
            record["at"] = f"2026-02-01T00:00:{stamp:02d}.000000Z"
        elif how == "malformed":
            record["at"] = "2026-02-01T00:00:01Z"
        spaced = draw(st.booleans())
        separators = (", ", ": ") if spaced else (",", ":")
        lines.append(json.dumps(record, sort_keys=True, separators=separators).encode() + b"\n")
    return b"".join(lines)


@hypothesis.settings(max_examples=60)
@hypothesis.given(data=journals())
def test_random_journals_read_as_the_document_says(tmp_path_factory: Any, data: bytes) -> None:
    sys.path.insert(0, str(CORPUS))
    try:
        import doc_reader
        import read_archive
    finally:
        sys.path.remove(str(CORPUS))
    from filelayer import ArchiveStore

    root = tmp_path_factory.mktemp("archive")
    store = ArchiveStore(root)
    store.update_thread("t1", name="random")
    store.close()
    (root / "threads" / "t1" / "steps.jsonl").write_bytes(data)
    assert read_archive.reading(root) == doc_reader.read(root)
