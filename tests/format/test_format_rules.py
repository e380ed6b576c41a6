"""Rules of docs/format.md that its first outside reader had to guess, pinned down.

Each test states one answer of the format document (issue #15) on the fold itself, so
that the conformance corpus (tests/conformance/) and this file agree on every rule.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from filelayer import ArchiveStore
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


def test_an_empty_time_never_overwrites_a_stored_one() -> None:
    state = journal.fold(
        [
            _step("a", createdAt="2026-01-01T00:00:01Z", start="2026-01-01T00:00:01Z"),
            _step("a", createdAt="", start="", end=""),
        ]
    )
    assert state.steps["a"]["createdAt"] == "2026-01-01T00:00:01Z"
    assert state.steps["a"]["start"] == "2026-01-01T00:00:01Z"
    assert state.steps["a"]["end"] == ""  # nothing stored before: "" is stored as sent


def test_the_sidebar_orders_threads_by_instants_whatever_the_digits(tmp_path: Path) -> None:
    store = ArchiveStore(tmp_path / "chats")
    for tid, t in [("whole", "2030-01-01T00:00:01Z"), ("half", "2030-01-01T00:00:01.5Z")]:
        store.update_thread(tid, name=tid)
        store.write_step(
            {
                "id": f"{tid}-m",
                "threadId": tid,
                "type": "user_message",
                "output": "hi",
                "createdAt": t,
            }
        )
    listed, _ = store.list_threads(user_id=None)
    assert [t["id"] for t in listed] == ["half", "whole"]
    # activity is given in one form: UTC, six fractional digits
    assert [t["createdAt"] for t in listed] == [
        "2030-01-01T00:00:01.500000Z",
        "2030-01-01T00:00:01.000000Z",
    ]
    store.reindex()  # a rebuilt index gives the same
    assert store.list_threads(user_id=None)[0] == listed
    store.close()


def test_a_manifest_made_again_takes_the_earliest_instant(tmp_path: Path) -> None:
    from filelayer.cli import main

    root = tmp_path / "chats"
    store = ArchiveStore(root)
    for sid, t in [("late", "2026-01-01T00:00:01.5Z"), ("early", "2026-01-01T00:00:01Z")]:
        store.write_step(
            {"id": sid, "threadId": "t", "type": "user_message", "output": sid, "createdAt": t}
        )
    store.close()
    (root / "threads" / "t" / "thread.json").unlink()
    assert main(["--root", str(root), "verify", "--repair"]) in (0, 1)
    store = ArchiveStore(root, create=False)
    thread = store.get_thread("t")
    assert thread is not None and thread["createdAt"] == "2026-01-01T00:00:01Z"
    store.close()


def test_a_line_nested_past_any_parser_is_damaged_in_both_modes() -> None:
    """The standard library's parser raised RecursionError through the fold (the pure
    mode crashed get_thread); orjson calls such a line invalid. Both: a damaged line."""
    from filelayer.format import codec

    deep = b'{"op":"step","step":{"id":"deep","output":' + b"[" * 100_000 + b"]" * 100_000
    data = deep + b"}}\n"
    read = journal.parse(data + b'{"op":"step","step":{"id":"ok"}}\n')
    assert read.bad_lines == [1]
    assert [r["step"]["id"] for r in read.records] == ["ok"]
    with pytest.raises(ValueError):
        codec._loads(data)  # the reading both the pure mode and the big-number path use


def test_a_null_in_the_first_line_of_a_step_is_no_value_either() -> None:
    """Writers never write null; a hand-written first line with one reads like a line
    without the field (the default), as a null in any later line does."""
    state = journal.fold(
        [{"op": "step", "step": {"id": "a", "output": None, "name": None, "type": "tool"}}]
    )
    assert state.steps["a"] == {"id": "a", "type": "tool"}


def test_an_erasure_compares_its_time_as_an_instant(tmp_path: Path) -> None:
    """A record created in the same second as the erasure, before it, is what was
    erased, whatever the number of fractional digits of either time."""
    from filelayer.format import codec
    from filelayer.maintenance.retention import is_erased

    store = ArchiveStore(tmp_path / "chats")
    with open(store.layout.deleted_file, "ab") as f:
        f.write(
            codec.encode_line(
                {
                    "deletedAt": "2026-01-01T00:00:01.5Z",
                    "erasedUser": "u1",
                    "identifierSha256": "0" * 64,
                }
            )
        )
    assert is_erased(store, "u1", None, "2026-01-01T00:00:01Z")
    assert not is_erased(store, "u1", None, "2026-01-01T00:00:02Z")
    store.close()


@pytest.mark.parametrize("number", [b"1e400", b"-1e400", b"1.5e999"])
def test_a_number_too_large_for_a_float_is_damage_in_both_modes(number: bytes) -> None:
    """orjson refuses ``1e400``; the standard library read it as infinity, so the two
    modes read such a line differently (and infinity cannot be written back as JSON).
    Both refuse it, with or without a long run of digits beside it (which sends a line
    to the standard library in the fast mode)."""
    from filelayer.format import codec

    for data in (b'{"x":' + number + b"}", b'{"n":1234567890123456789,"x":' + number + b"}"):
        with pytest.raises(ValueError):
            codec.decode(data)
        with pytest.raises(ValueError):
            codec._loads(data)


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth - 1):
        value = {"k": value}
    return {"k": value} if depth else value


def test_nesting_deeper_than_every_reader_reads_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    """What a write accepts, every reader reads back: orjson stops at 1,024 levels, the
    standard library's reader where the stack runs out, which depends on how deep the
    read happens; the writer used to stop only where its own stack ran out, which an
    app may push past both by raising the interpreter's limit. So a write refuses
    nesting past ``MAX_DEPTH`` (512) before anything reaches the disk: the line or
    manifest it would have made could never be read again (and a manifest that cannot
    be read names no author)."""
    from filelayer.format.codec import MAX_DEPTH

    store = ArchiveStore(tmp_path)
    store.update_thread("t", name="kept", metadata={"ok": _nested(MAX_DEPTH - 8)})
    store.write_step({"id": "s", "threadId": "t", "metadata": _nested(MAX_DEPTH - 8)})

    def files() -> list[tuple[Path, bytes]]:  # the derived index and locks aside
        return sorted(
            (p, p.read_bytes())
            for p in tmp_path.rglob("*")
            if p.is_file() and not {"index", "locks"} & set(p.relative_to(tmp_path).parts)
        )

    before = files()
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(5000)  # an app may: the writer must not follow it
    try:
        for depth in (MAX_DEPTH + 1, 1100):
            with pytest.raises(ValueError, match="nested deeper"):
                store.update_thread("t", metadata={"deep": _nested(depth)})
            with pytest.raises(ValueError, match="nested deeper"):
                store.write_step({"id": "s2", "threadId": "t", "metadata": _nested(depth)})
    finally:
        sys.setrecursionlimit(limit)
    assert files() == before
    thread = store.get_thread("t")
    assert thread is not None and thread["name"] == "kept"
    assert [s["id"] for s in thread["steps"]] == ["s"]
    store.close()


def test_deep_data_an_older_release_stored_stays_readable_and_compactable(
    tmp_path: Path,
) -> None:
    """The limit is on new data only: a step nested 600 levels deep that an older
    release wrote is read, ordered again (a merge without the driver put its lines out
    of stamp order, and ordering encodes every record) and compacted, never refused."""
    from filelayer.format import codec

    store = ArchiveStore(tmp_path)
    store.write_step({"id": "s1", "threadId": "t", "type": "run", "output": "hi"})
    store.write_step({"id": "s2", "threadId": "t", "type": "run", "output": "v2"})
    store.close()
    journal_path = tmp_path / "threads" / "t" / "steps.jsonl"
    lines = journal_path.read_bytes().splitlines(keepends=True)
    deep = journal.parse(lines[-1]).records[0]
    deep["step"] = {**deep["step"], "metadata": _nested(600)}
    lines[-1] = codec.encode_line(deep)  # as the older release wrote it
    journal_path.write_bytes(lines[-1] + b"".join(lines[:-1]))  # out of stamp order
    store = ArchiveStore(tmp_path)
    try:
        thread = store.get_thread("t")
        assert thread is not None and [s["id"] for s in thread["steps"]] == ["s1", "s2"]
        store.compact_journal("t")
        again = ArchiveStore(tmp_path).get_thread("t")
        assert again is not None and again["steps"] == thread["steps"]
    finally:
        store.close()


def _deep_json(depth: int) -> bytes:
    """An object nested ``depth`` levels deep, as bytes (made without any encoder)."""
    return b'{"k":' * (depth - 1) + b'{"k":"leaf"}' + b"}" * (depth - 1)


def _at_depth(frames: int, fn: Any) -> Any:
    """``fn()`` called ``frames`` calls deeper in the stack (as in a deep app)."""
    return fn() if frames <= 0 else _at_depth(frames - 1, fn)


@pytest.mark.parametrize("frames", [0, 400])
def test_nesting_up_to_1024_levels_is_read_alike_in_both_modes_from_any_stack(
    tmp_path: Path, frames: int
) -> None:
    """Both modes take a line nested up to 1,024 levels (orjson's own limit) and take
    a deeper one as damaged, wherever in the stack the read happens. The standard
    library's reader gave up where the stack ran out (about 975 levels at the top,
    fewer in a deep call) and its writer could not write such a record again: the two
    modes read different conversations (and deleted different threads), and the fast
    mode's get_thread and compact crashed on a line it had read."""
    from filelayer.format import codec

    store = ArchiveStore(tmp_path)
    store.write_step({"id": "s1", "threadId": "t", "type": "run", "output": "hi"})
    store.write_step({"id": "s2", "threadId": "t", "type": "run", "output": "v2"})
    store.close()
    journal_path = tmp_path / "threads" / "t" / "steps.jsonl"
    lines = journal_path.read_bytes().splitlines(keepends=True)
    assert b'"output":"v2"' in lines[-1]
    deep = lines[-1].replace(
        b'"output":"v2"', b'"metadata":' + _deep_json(1000) + b',"output":"v2"'
    )
    deeper = (
        lines[-1]
        .replace(b'"id":"s2"', b'"id":"s3"')
        .replace(b'"output":"v2"', b'"metadata":' + _deep_json(1030) + b',"output":"v3"')
    )
    # Out of stamp order, as a merge without the driver leaves lines: ordering them
    # encodes every record again.
    journal_path.write_bytes(deeper + deep + b"".join(lines[:-1]))
    store = ArchiveStore(tmp_path)
    try:
        thread = _at_depth(frames, lambda: store.get_thread("t"))
        assert thread is not None and [s["id"] for s in thread["steps"]] == ["s1", "s2"]
        assert journal.parse(journal_path.read_bytes()).bad_lines == [1]
        _at_depth(frames, lambda: store.compact_journal("t"))
        again = ArchiveStore(tmp_path).get_thread("t")
        assert again is not None  # compared as bytes: == on 1,000 levels runs out of stack
        assert codec.encode_line(again["steps"]) == codec.encode_line(thread["steps"])
    finally:
        store.close()


def test_a_lone_surrogate_in_a_duplicate_key_is_damage_in_both_modes(tmp_path: Path) -> None:
    """orjson refuses a line whose discarded duplicate holds an unpaired surrogate; the
    standard library kept only the last value, so its check never saw it: the pure
    mode read a tombstone (and a step, a manifest) that the fast mode took as damaged,
    and ``verify --repair`` removed a conversation in one mode only."""
    from filelayer.format import codec

    for data in (b'{"x":"\\ud800","x":"ok"}', b'{"a":[{"x":"\\udc00","x":1}]}'):
        with pytest.raises(codec.DecodeError):
            codec.decode(data)
    step = b'{"op":"step","step":{"id":"s","output":"\\ud800","output":"ok"}}\n'
    assert journal.parse(step + b'{"op":"step","step":{"id":"ok"}}\n').bad_lines == [1]
    store = ArchiveStore(tmp_path)
    store.write_step({"id": "s1", "threadId": "t", "type": "run", "output": "hi"})
    store.close()
    (tmp_path / "deleted.jsonl").write_bytes(
        b'{"deletedAt":"2026-01-01T00:00:00.000000Z","id":"t","why":"\\ud800","why":"x"}\n'
    )
    store = ArchiveStore(tmp_path)
    try:
        assert store.get_thread("t") is not None
    finally:
        store.close()


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b'{"a":NaN}', "NaN is not JSON"),
        (b'{"a":}', "Expecting value"),
        (b'{"a":1,}', "Expecting property name"),
        (b"\xff", "can't decode byte 0xff"),
    ],
)
def test_damaged_json_is_described_in_the_same_words_in_both_modes(data: bytes, words: str) -> None:
    """What ``verify``, ``show`` and the logs say of a damaged file does not depend on
    the mode: the fast mode used orjson's wording, the pure mode the standard
    library's; both now give the standard library's."""
    from filelayer.format import codec

    with pytest.raises(codec.DecodeError, match=words):
        codec.decode(data)


def test_the_room_made_for_a_deep_read_leaves_the_app_s_own_limit_alone() -> None:
    """A deep read raises the interpreter's recursion limit for its time only, and a
    limit the app set meanwhile (in another thread) stays as the app set it."""
    from filelayer.format import codec

    before = sys.getrecursionlimit()
    try:
        with codec._stack_room():
            assert sys.getrecursionlimit() > before
        assert sys.getrecursionlimit() == before
        with codec._stack_room():
            sys.setrecursionlimit(20_000)  # the app's, meanwhile
        assert sys.getrecursionlimit() == 20_000
    finally:
        sys.setrecursionlimit(before)


def test_data_that_is_not_json_is_refused_with_the_layer_s_error_and_changes_nothing(
    tmp_path: Path,
) -> None:
    """A ``datetime``, a set, bytes or any other object in a step's, a thread's or a
    user's data is refused with the layer's own error (a ``ValueError``, which the
    adapter logs), never a bare ``TypeError`` that Chainlit's fire-and-forget tasks
    swallow, and nothing reaches the disk."""
    import datetime
    import decimal

    from filelayer.errors import FileLayerError, InvalidValueError

    store = ArchiveStore(tmp_path)
    store.update_thread("t", name="kept")
    store.write_step({"id": "s", "threadId": "t", "output": "kept"})
    store.upsert_user("alice", metadata={"ok": 1})

    def files() -> list[tuple[Path, bytes]]:
        return sorted(
            (p, p.read_bytes())
            for p in tmp_path.rglob("*")
            if p.is_file() and not {"index", "locks"} & set(p.relative_to(tmp_path).parts)
        )

    before = files()
    for value in (
        datetime.datetime(2026, 1, 1),
        {1, 2},
        b"bytes",
        decimal.Decimal("1.5"),
        object(),
        {"k": [1, {"deep": datetime.date(2026, 1, 1)}]},
    ):
        data = {"v": value}
        calls: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = [
            (store.write_step, ({"id": "s2", "threadId": "t", "metadata": data},), {}),
            (store.write_step, ({"id": "s", "threadId": "t", "generation": data},), {}),
            (store.update_thread, ("t",), {"metadata": data}),
            (store.upsert_user, ("alice",), {"metadata": data}),
        ]
        for call, args, kwargs in calls:
            with pytest.raises(InvalidValueError) as caught:
                call(*args, **kwargs)
            assert isinstance(caught.value, FileLayerError)
            assert "not JSON" in str(caught.value)
    assert files() == before
    store.close()


def test_keys_that_json_writes_as_strings_are_stored_as_it_writes_them(tmp_path: Path) -> None:
    """Python's ``json`` (what Chainlit's own layers store metadata with) writes int,
    float, bool and ``None`` keys as strings, also beside string keys: stored the same
    here, in both modes. Two keys that would become one are refused."""
    from filelayer.errors import InvalidValueError

    store = ArchiveStore(tmp_path)
    store.write_step(
        {"id": "s", "threadId": "t", "metadata": {1: "a", "b": 2, None: 3, False: {2.5: "x"}}}
    )
    thread = store.get_thread("t")
    assert thread is not None
    assert thread["steps"][0]["metadata"] == {"1": "a", "b": 2, "null": 3, "false": {"2.5": "x"}}
    with pytest.raises(InvalidValueError, match="twice"):
        store.write_step({"id": "s", "threadId": "t", "metadata": {1: "a", "1": "b"}})
    store.close()


def test_data_that_holds_itself_is_refused_at_once(tmp_path: Path) -> None:
    """A dict that holds itself beside a value that is not JSON (or a key JSON writes
    as a string) is refused with the layer's error; the walk that writes its keys as
    strings went round the circle until memory ran out."""
    import datetime

    from filelayer.errors import InvalidValueError

    store = ArchiveStore(tmp_path)
    looped: dict[Any, Any] = {"at": datetime.datetime(2026, 1, 1)}
    looped["self"] = looped
    keyed: dict[Any, Any] = {1: "x"}
    keyed["a"] = keyed
    for metadata in (looped, keyed):
        with pytest.raises(InvalidValueError):
            store.write_step({"id": "s", "threadId": "t", "metadata": metadata})
    assert not (tmp_path / "threads" / "t").exists()
    store.close()


def test_a_key_that_is_not_a_finite_number_is_refused_alone_or_not(tmp_path: Path) -> None:
    from filelayer.errors import InvalidValueError

    store = ArchiveStore(tmp_path)
    for metadata in ({float("inf"): 1}, {float("inf"): 1, "a": 2}, {float("nan"): 1, 2: 3}):
        with pytest.raises(InvalidValueError):
            store.write_step({"id": "s", "threadId": "t", "metadata": metadata})
    assert not (tmp_path / "threads" / "t").exists()
    store.close()


@pytest.mark.skipif(
    not hasattr(sys, "get_int_max_str_digits"), reason="no limit on integer conversions"
)
def test_integers_of_any_size_are_read_and_written_whatever_the_digit_limit(
    tmp_path: Path,
) -> None:
    """Integers of any size are read exactly (docs/format.md), in every process.
    Python converts an integer of more than ``sys.get_int_max_str_digits()`` digits
    (4,300 by default) neither to nor from text, and an app may lift that limit (the
    error says to): a step it wrote was then a damaged line for every other process,
    which ``verify --repair`` sets aside. What the line holds is read, compacted and
    written again exactly, and the interpreter's limit is left as it was."""
    limit = sys.get_int_max_str_digits()
    digits = "1" + "0" * 5000
    big = 10**5000
    store = ArchiveStore(tmp_path)
    store.write_step({"id": "s1", "threadId": "t", "type": "run", "output": "hi"})
    journal = tmp_path / "threads" / "t" / "steps.jsonl"
    with journal.open("ab") as f:  # as an app with the limit lifted writes it
        f.write(
            b'{"at":"2026-01-01T00:00:00.000000Z","op":"step","step":{"id":"s2",'
            b'"metadata":{"n":' + digits.encode() + b'},"threadId":"t","type":"run"}}\n'
        )
    store.write_step({"id": "s3", "threadId": "t", "metadata": {"m": -big}})
    store.close()

    store = ArchiveStore(tmp_path)
    thread = store.get_thread("t")
    assert thread is not None
    steps = {s["id"]: s for s in thread["steps"]}
    assert sorted(steps) == ["s1", "s2", "s3"]
    assert steps["s2"]["metadata"] == {"n": big}
    assert steps["s3"]["metadata"] == {"m": -big}
    store.compact_journal("t")
    store.close()
    assert digits.encode() in journal.read_bytes()
    store = ArchiveStore(tmp_path)
    thread = store.get_thread("t")
    assert thread is not None
    assert {s["id"]: s.get("metadata") for s in thread["steps"]}["s2"] == {"n": big}
    store.close()
    assert sys.get_int_max_str_digits() == limit


@pytest.mark.skipif(
    not hasattr(sys, "get_int_max_str_digits"), reason="no limit on integer conversions"
)
def test_reading_an_integer_of_any_size_leaves_the_other_threads_their_digit_limit() -> None:
    """The digit limit is the process's, and it is what keeps a request holding a
    number of a million digits from taking the CPU for minutes: a reading of a line
    that holds a long integer lifted it for every thread of the app while it read the
    line, where it need not lift it at all."""
    import threading

    from filelayer.format import codec

    limit = sys.get_int_max_str_digits()
    floats = ",".join(["1.5"] * 100_000)
    line = ('{"n":' + "7" * 5000 + ',"f":[' + floats + "]}").encode()
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(sys.get_int_max_str_digits())

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        value = codec.decode(line)
    finally:
        done.set()
        watcher.join()
        sys.setswitchinterval(interval)
    assert value["n"] == int("7" * 1000) * 10**4000 + int("7" * 4000)
    assert seen and 0 not in seen
    assert sys.get_int_max_str_digits() == limit
