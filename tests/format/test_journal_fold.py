"""The journal's fold: merge rules, conversation order, tombstones, torn lines.

These are the rules docs/format.md promises to any reader of an archive; they need
neither Chainlit nor the optional packages.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from filelayer.format import codec as _codec
from filelayer.format import journal


def _step(sid: str, **fields: object) -> dict[str, object]:
    return journal.step_record({"id": sid, **fields})


def _fold(*records: dict[str, object]) -> journal.ThreadState:
    return journal.fold(list(records))


def test_final_output_survives_an_empty_write_landing_after_it() -> None:
    state = _fold(
        _step("a", type="assistant_message", output="final answer", end="T2"),
        _step("a", type="assistant_message", output="", end=None, start="T1"),
    )
    assert state.steps["a"]["output"] == "final answer"
    assert state.steps["a"]["start"] == "T1"
    assert state.steps["a"]["end"] == "T2"


def test_every_arrival_order_of_create_and_update_gives_the_same_step() -> None:
    create = _step("a", type="assistant_message", output="", createdAt="T1", start="T1")
    stream = _step("a", output="partial", createdAt="T1")
    final = _step("a", output="complete text", end="T3", metadata={"k": 1})
    results = []
    for order in itertools.permutations([create, stream, final]):
        state = _fold(*order)
        results.append(state.steps["a"])
    for got in results:
        assert got["createdAt"] == "T1"
        assert got["end"] == "T3"
        assert got["metadata"] == {"k": 1}
        assert got["type"] == "assistant_message"
    # The text is the last non-empty write that landed: "complete text" wins whenever it
    # landed after the partial one.
    assert results[0]["output"] == "complete text"


def test_times_keep_the_earliest_start_and_the_latest_end() -> None:
    state = _fold(
        _step("a", createdAt="2026-01-01T00:00:05.000000Z", end="2026-01-01T00:00:06.000000Z"),
        _step("a", createdAt="2026-01-01T00:00:01.000000Z", end="2026-01-01T00:00:02.000000Z"),
    )
    assert state.steps["a"]["createdAt"] == "2026-01-01T00:00:01.000000Z"
    assert state.steps["a"]["end"] == "2026-01-01T00:00:06.000000Z"


def test_children_follow_their_parent_even_when_written_and_timed_first() -> None:
    state = _fold(
        _step("child", parentId="run", createdAt="T1"),
        _step("grandchild", parentId="child", createdAt="T0"),
        _step("user", createdAt="T2"),
        _step("run", createdAt="T3"),
    )
    order = [s["id"] for s in state.ordered_steps()]
    assert order.index("run") < order.index("child") < order.index("grandchild")
    assert sorted(order) == ["child", "grandchild", "run", "user"]


def test_steps_without_time_keep_their_place_in_the_journal() -> None:
    state = _fold(
        _step("a", createdAt="T1"),
        _step("b"),
        _step("c", createdAt="T2"),
    )
    assert [s["id"] for s in state.ordered_steps()] == ["a", "b", "c"]


def test_equal_times_keep_arrival_order() -> None:
    state = _fold(*(_step(name, createdAt="T") for name in "zyxw"))
    assert [s["id"] for s in state.ordered_steps()] == list("zyxw")


def test_a_parent_cycle_does_not_lose_steps() -> None:
    state = _fold(
        _step("a", parentId="b", createdAt="T1"), _step("b", parentId="a", createdAt="T2")
    )
    assert sorted(s["id"] for s in state.ordered_steps()) == ["a", "b"]


def test_a_deleted_step_stays_deleted_with_its_feedback_and_elements() -> None:
    state = _fold(
        _step("a", output="x"),
        journal.feedback_record({"id": "f", "forId": "a", "value": 1}),
        journal.element_record({"id": "e", "forId": "a", "type": "image"}),
        journal.step_delete_record("a"),
        _step("a", output="late update"),
    )
    assert state.steps == {}
    assert state.feedback == {}
    assert state.live_elements() == []


def test_an_element_for_a_deleted_step_is_deleted_whichever_lands_first(
    tmp_path: Path,
) -> None:
    """An element line for a deleted step deletes the element, as the step's deletion
    would have had it come first; no later line for that id, with or without a step,
    brings it back. Writers' tombstones read the journal the same way."""
    element = journal.element_record({"id": "e", "forId": "a", "type": "image"})
    resent = [
        journal.element_record({"id": "e", "type": "image", "url": "https://x/e"}),
        journal.element_record({"id": "e", "forId": "b", "type": "image"}),
    ]
    # An element of step a that was re-sent for step b before a's deletion lives on.
    moved = [
        journal.element_record({"id": "m", "forId": "a"}),
        journal.element_record({"id": "m", "forId": "b"}),
    ]
    before = [*moved, _step("a"), _step("b"), element, journal.step_delete_record("a")]
    after = [*moved, _step("a"), _step("b"), journal.step_delete_record("a"), element]
    for records in (before + resent, after + resent):
        state = _fold(*records)
        assert state.elements.keys() == {"m"}
        assert state.deleted_elements == {"e"}
        assert [e["id"] for e in state.live_elements()] == ["m"]
        lines = [_codec.encode_line(r) for r in records]
        for split in range(len(lines) + 1):  # read at once, or caught up on later
            path = tmp_path / f"steps-{split}.jsonl"
            path.write_bytes(b"".join(lines[:split]))
            tombstones = journal.Tombstones()
            tombstones.catch_up(path)
            with open(path, "ab") as f:
                f.write(b"".join(lines[split:]))
            tombstones.catch_up(path)
            assert (tombstones.steps, tombstones.elements) == ({"a"}, {"e"})


def test_one_feedback_per_step_the_latest_wins() -> None:
    state = _fold(
        _step("run"),
        journal.feedback_record({"id": "f1", "forId": "run", "value": 1, "comment": "good"}),
        journal.feedback_record({"id": "f2", "forId": "run", "value": 0}),
    )
    assert state.feedback_by_step() == {"run": {"id": "f2", "forId": "run", "value": 0}}
    state = _fold(
        _step("run"),
        journal.feedback_record({"id": "f1", "forId": "run", "value": 1}),
        journal.feedback_delete_record("f1"),
    )
    assert state.feedback_by_step() == {}


def test_element_writes_are_upserts() -> None:
    state = _fold(
        journal.element_record({"id": "e", "type": "custom", "props": {"n": 1}}),
        journal.element_record({"id": "e", "type": "custom", "props": {"n": 2}}),
    )
    assert [e["props"] for e in state.live_elements()] == [{"n": 2}]


def test_a_torn_last_line_is_ignored_and_a_damaged_middle_line_skipped() -> None:
    good = _codec.encode_line(_step("a", output="kept"))
    damaged = b'{"op":"step","step":{"id":\n'
    other = _codec.encode_line(_step("b", output="also kept"))
    torn = _codec.encode_line(_step("c", output="torn"))[:-9]
    read = journal.parse(good + damaged + other + torn)
    assert [r["step"]["id"] for r in read.records] == ["a", "b"]
    assert read.bad_lines == [2]
    assert read.torn_tail is True


def test_records_that_are_json_but_not_journal_records_are_skipped() -> None:
    lines = [b"[1, 2]", b'{"op": "unknown"}', b'{"op": "step", "step": {"no": "id"}}', b"42"]
    read = journal.parse(b"\n".join(lines) + b"\n")
    assert read.records == []
    assert read.bad_lines == [1, 2, 3, 4]


def test_compaction_keeps_the_state_and_is_a_fixed_point() -> None:
    records = [
        _step("u", type="user_message", output="hi", createdAt="T1"),
        _step("a", type="assistant_message", parentId="r", output="", createdAt="T3"),
        _step("r", type="run", createdAt="T2"),
        _step("a", output="hello there", end="T4"),
        journal.feedback_record({"id": "f", "forId": "r", "value": 1}),
        journal.element_record(
            {"id": "e", "forId": "a", "type": "image", "file": "elements/e.png"}
        ),
        _step("gone", output="x"),
        journal.step_delete_record("gone"),
    ]
    state = journal.fold(records)
    once = list(journal.compacted_records(state))
    again = list(journal.compacted_records(journal.fold(once)))
    assert once == again
    refolded = journal.fold(once)
    assert refolded.steps == state.steps
    assert refolded.feedback == state.feedback
    assert refolded.elements == state.elements
    assert refolded.deleted_steps == {"gone"}
    assert [s["id"] for s in refolded.ordered_steps()] == ["u", "r", "a"]


def test_a_journal_changed_behind_the_reader_is_read_again(tmp_path: Path) -> None:
    """get_thread keeps the folded journal of recent threads and reads on from where it
    left off; a file rewritten under it (same inode, grown) must be folded afresh."""
    from filelayer import ArchiveStore

    store = ArchiveStore(tmp_path / "chats")
    store.write_step({"id": "s1", "threadId": "t1", "type": "user_message", "output": "one"})
    thread = store.get_thread("t1")
    assert thread is not None and [s["output"] for s in thread["steps"]] == ["one"]
    path = store.layout.journal("t1")
    changed = path.read_bytes().replace(b'"one"', b'"uno"')
    changed += b'{"op":"step","step":{"id":"s2","output":"two","threadId":"t1","type":"run"}}\n'
    with open(path, "r+b") as f:  # in place: same inode, longer than before
        f.write(changed)
    thread = store.get_thread("t1")
    assert thread is not None and [s["output"] for s in thread["steps"]] == ["uno", "two"]
    # And a plain append after that is read on, not missed.
    store.write_step({"id": "s3", "threadId": "t1", "type": "run", "output": "three"})
    thread = store.get_thread("t1")
    assert thread is not None and [s["output"] for s in thread["steps"]] == ["uno", "two", "three"]


def test_feedback_and_streaming_are_not_stored_with_a_step(tmp_path: Path) -> None:
    """Chainlit un-favourites a step by sending back the dict get_favorite_steps gave it,
    with the feedback and ``streaming`` that get_thread added: only the step is stored."""
    from filelayer import ArchiveStore

    store = ArchiveStore(tmp_path / "chats")
    store.write_step({"id": "a", "threadId": "t1", "type": "assistant_message", "output": "x"})
    store.upsert_feedback(for_id="a", value=1, thread_id="t1", feedback_id="f1")
    read = store.get_thread("t1")["steps"][0]
    assert read["feedback"]["id"] == "f1" and read["streaming"] is False
    store.write_step({**read, "metadata": {"favorite": False}, "streaming": True})
    store.delete_feedback("f1")
    journal_path = tmp_path / "chats" / "threads" / "t1" / "steps.jsonl"
    records = journal.read(journal_path).records
    bodies = [r["step"] for r in records if r["op"] == journal.OP_STEP]
    assert len(bodies) == 2
    assert not [b for b in bodies if "feedback" in b or "streaming" in b]
    [again] = store.get_thread("t1")["steps"]
    assert again["feedback"] is None and again["streaming"] is False
    assert again["metadata"] == {"favorite": False}

    # Lines written by earlier versions, with a stale copy: read and compacted without it.
    stale = {"id": "b", "feedback": {"id": "f1", "forId": "b", "value": 1}, "streaming": False}
    state = _fold(
        {"op": "step", "step": {"id": "b", "output": "y", "streaming": True}},
        {"op": "step", "step": stale},
    )
    assert state.steps == {"b": {"id": "b", "output": "y"}}
    assert all("feedback" not in s and "streaming" not in s for s in state.steps.values())
    compacted = [_codec.encode_line(r) for r in journal.compacted_records(state)]
    assert not [line for line in compacted if b"streaming" in line or b"feedback" in line]
