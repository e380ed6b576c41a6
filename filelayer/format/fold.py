"""Folding a journal's records into a conversation, and the order records and steps take.

Reading a thread folds its journal's records (:mod:`.records`) in the journal's order
into a :class:`ThreadState`. Because Chainlit fires step writes as independent tasks,
the fold is written so that the order in which two writes of one step land does not
matter for the final text: see :func:`merge_step`. This is the hot read path: records
are applied in one loop, with no call per record beyond the merge of a step.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from .._time import earliest, keys_are_values, latest, time_key
from . import clock
from . import codec as _codec
from .records import (
    OP_ELEMENT,
    OP_ELEMENT_DELETE,
    OP_FEEDBACK,
    OP_FEEDBACK_DELETE,
    OP_STEP,
    OP_STEP_DELETE,
    drop_none,
    element_delete_record,
    element_record,
    feedback_record,
    for_deleted_step,
    step_body,
    step_delete_record,
    step_record,
)

_EARLIEST_FIELDS = ("createdAt", "start")
_LATEST_FIELDS = ("end",)
_TIME_FIELDS = frozenset(_EARLIEST_FIELDS + _LATEST_FIELDS)
_CREATED = operator.itemgetter("createdAt")


def merge_step(stored: dict[str, Any], incoming: dict[str, Any]) -> None:
    """Merge a newer write of a step into what is stored, in place.

    The rule survives Chainlit landing ``send()`` (empty output) after ``update()``
    (final output), Chainlit issue #2789: a field present in the newer write wins,
    except that ``None``, an empty string or an empty dict never overwrites stored
    content; start times keep the earliest value and end times the latest, compared as
    instants (:func:`~filelayer._time.time_key`, since Chainlit drops the fraction
    of a whole second), so the order of arrival does not move a step in the conversation.
    """
    get = stored.get
    for key, value in incoming.items():
        if type(value) is str:
            # Most fields of an update repeat the stored text: nothing to decide (for
            # strings only: 1 == True and {"a": 1} == {"a": True}, yet the newer wins).
            old = get(key)
            if old == value:
                continue
            if key in _TIME_FIELDS:
                if isinstance(old, str) and value:
                    if key in _LATEST_FIELDS:
                        stored[key] = latest(old, value)
                    else:
                        stored[key] = earliest(old, value) if old else value
                    continue
                if not value and old:
                    continue
            elif not value and old:
                continue
            stored[key] = value
        elif value is None:
            continue
        elif key in _TIME_FIELDS:
            old = get(key)
            if old == value:
                continue
            if isinstance(old, str) and isinstance(value, str) and value:
                if key in _LATEST_FIELDS:
                    stored[key] = latest(old, value)
                else:
                    stored[key] = earliest(old, value) if old else value
                continue
            if value == {} and old:
                continue
            stored[key] = value
        elif value == {} and get(key):
            continue
        else:
            stored[key] = value


@dataclass
class ThreadState:
    """A journal folded into the current state of one conversation."""

    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    step_seq: dict[str, int] = field(default_factory=dict)
    deleted_steps: set[str] = field(default_factory=set)
    feedback: dict[str, dict[str, Any]] = field(default_factory=dict)
    elements: dict[str, dict[str, Any]] = field(default_factory=dict)
    deleted_elements: set[str] = field(default_factory=set)
    applied: int = 0
    """How many records were folded in."""
    last_stamp: str | None = None
    """The newest stamp folded in (see :func:`order_keys`)."""
    disordered: bool = False
    """A record came after a newer one: this state is not the journal's meaning, which
    a fold of all its records at once (sorted first) gives."""

    def feedback_by_step(self) -> dict[str, dict[str, Any]]:
        """The current feedback of each step (the latest one given, if several ids)."""
        result: dict[str, dict[str, Any]] = {}
        for fb in self.feedback.values():
            for_id = fb.get("forId")
            if isinstance(for_id, str) and for_id in self.steps:
                result[for_id] = fb
        return result

    def live_elements(self) -> list[dict[str, Any]]:
        return [
            e
            for e in self.elements.values()
            if not (isinstance(e.get("forId"), str) and e["forId"] in self.deleted_steps)
        ]

    def ordered_steps(self) -> list[dict[str, Any]]:
        return order_steps(self.steps.values(), self.step_seq)


def fold(
    records: Iterable[dict[str, Any]],
    state: ThreadState | None = None,
    *,
    owned: bool = False,
) -> ThreadState:
    """Apply ``records`` to ``state`` (a new one by default) in the journal's order (see
    :func:`order_keys`): folding a journal's lines in two batches gives what folding
    them at once gives. A new state takes the records sorted when they are not in
    order; a later batch with a record older than one already folded marks the state
    :attr:`~ThreadState.disordered`, for the caller to fold everything again.

    ``owned``: the records were just decoded and nobody keeps them, so the state takes
    their step bodies as its own instead of copying them (a fold of a whole journal is
    most of the cost of a thread's first read).
    """
    state = state if state is not None else ThreadState()
    if not isinstance(records, list):
        records = list(records)
    if not records:
        return state
    stamps = [record.get(clock.STAMP_KEY) for record in records]
    if clock.all_stamps(stamps) and all(map(operator.le, stamps, islice(stamps, 1, None))):
        # Every record stamped, in order: what filelayer writes. The stamps say the
        # same as the record by record rule below, at the cost of two passes in C.
        last = state.last_stamp
        if last is not None and stamps[0] < last:
            state.disordered = True
        if last is None or stamps[-1] >= last:
            state.last_stamp = stamps[-1]
    else:
        if state.applied == 0 and not in_order(records):
            records = sorted_records(records)
        for record in records:
            stamp = record.get(clock.STAMP_KEY)
            if clock.is_stamp(stamp):
                if state.last_stamp is not None and stamp < state.last_stamp:
                    state.disordered = True
                else:
                    state.last_stamp = stamp
    state.applied += len(records)
    steps = state.steps
    step_seq = state.step_seq
    deleted_steps = state.deleted_steps
    seq = len(step_seq)  # step_seq only grows: deleted steps keep their number
    for record in records:
        op = record["op"]
        if op != OP_STEP:
            _apply(state, op, record, owned)
            continue
        incoming = record[OP_STEP]
        sid = incoming["id"]
        if sid in deleted_steps:
            continue  # a late write must not bring a deleted step back
        if "streaming" in incoming or "feedback" in incoming:  # older writers kept them
            incoming = step_body(incoming)
        stored = steps.get(sid)
        if stored is None:
            # A null is no value, in the first line as in any later one.
            if not owned or None in incoming.values():
                incoming = drop_none(incoming)
            steps[sid] = incoming
            step_seq[sid] = seq
            seq += 1
        else:
            merge_step(stored, incoming)
    return state


def _apply(state: ThreadState, op: str, record: dict[str, Any], owned: bool) -> None:
    """Apply a record that is not a step write (rarer: :func:`fold` keeps those inline)."""
    if op == OP_STEP_DELETE:
        sid = record["id"]
        state.deleted_steps.add(sid)
        state.steps.pop(sid, None)
        for fid in [f for f, fb in state.feedback.items() if fb.get("forId") == sid]:
            del state.feedback[fid]
        for eid in [e for e, el in state.elements.items() if el.get("forId") == sid]:
            state.deleted_elements.add(eid)
            del state.elements[eid]
    elif op == OP_FEEDBACK:
        fb = record[OP_FEEDBACK]
        if _for_id(fb) in state.deleted_steps:
            return
        # One feedback per step: a new id for the same step replaces the old one.
        for fid in [f for f, old in state.feedback.items() if _for_id(old) == _for_id(fb)]:
            del state.feedback[fid]
        state.feedback[fb["id"]] = fb if owned else dict(fb)
    elif op == OP_FEEDBACK_DELETE:
        state.feedback.pop(record["id"], None)
    elif op == OP_ELEMENT:
        el = record[OP_ELEMENT]
        if el["id"] in state.deleted_elements:
            return
        if for_deleted_step(el, state.deleted_steps):
            # Sent for a deleted step: deleted with it, as if it had come before the
            # step's deletion, so no later re-send (without a step) brings it back.
            state.deleted_elements.add(el["id"])
            state.elements.pop(el["id"], None)
            return
        # A null is no value, as in a step: the stored field (if any) stays.
        stored = state.elements.get(el["id"])
        if stored is None:
            state.elements[el["id"]] = drop_none(el)
        else:
            stored.update(drop_none(el))
    elif op == OP_ELEMENT_DELETE:
        state.deleted_elements.add(record["id"])
        state.elements.pop(record["id"], None)


def _for_id(record: dict[str, Any]) -> str | None:
    """The step a feedback or element is for; ``None`` when ``forId`` is not a string
    (a hand-written or damaged line): it belongs to no step."""
    for_id = record.get("forId")
    return for_id if isinstance(for_id, str) else None


def in_order(records: list[dict[str, Any]]) -> bool:
    """Whether ``records`` are already in the journal's order: their stamps never go
    back (every file filelayer writes is in order: its writers stamp in increasing
    order, its merge driver sorts)."""
    last = ""
    for record in records:
        stamp = record.get(clock.STAMP_KEY)
        if clock.is_stamp(stamp):
            if stamp < last:
                return False
            last = stamp
    return True


def order_keys(records: list[Any], lines: list[bytes]) -> list[tuple[str, int, bytes, int]]:
    """The sort key of each record (``lines``: their encoded bytes) in the journal's
    order (docs/format.md, "Ordering records"): by stamp; a record without one (written
    before stamps, by a compaction, or by another program) right after the record before
    it in its file, and first when nothing stamped comes before it; equal stamps (two
    clones in the same microsecond) by the record's bytes."""
    keys = []
    last = ""
    for n, (record, line) in enumerate(zip(records, lines, strict=True)):
        stamp = record.get(clock.STAMP_KEY) if isinstance(record, dict) else None
        if clock.is_stamp(stamp):
            last = stamp
            keys.append((stamp, 0, line, 0))
        else:
            keys.append((last, 1, b"", n))
    return keys


def sorted_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``records`` in the journal's order (:func:`order_keys`), so that any two files
    holding the same records fold the same."""
    lines = [
        _codec.encode_line(r) if clock.is_stamp(r.get(clock.STAMP_KEY)) else b"" for r in records
    ]
    keys = order_keys(records, lines)
    order = sorted(range(len(records)), key=keys.__getitem__)
    return [records[i] for i in order]


def _time_of(step: dict[str, Any]) -> str:
    for key in ("createdAt", "start"):
        value = step.get(key)
        if isinstance(value, str) and value:
            return time_key(value)
    return ""


def order_steps(steps: Iterable[dict[str, Any]], seq: dict[str, int]) -> list[dict[str, Any]]:
    """Steps in conversation order: by start time (stable on first arrival), every
    parent before its children, each id once.

    Chainlit's UI drops a step whose parent has not appeared earlier in the list, and a
    child can be written (and timestamped) before its parent, so children wait for their
    parent. A step without a time keeps the place of the step written before it.
    """
    by_arrival = sorted(steps, key=lambda s: seq.get(s["id"], 0))
    created = [step.get("createdAt") for step in by_arrival]
    if keys_are_values(created):
        # Every step has a creation time in Chainlit's own form (the usual thread):
        # those sort as their keys do, and a stable sort keeps arrival order on ties.
        keyed = sorted(by_arrival, key=_CREATED)
    else:
        times: list[tuple[str, int, dict[str, Any]]] = []
        last_time = ""
        for step in by_arrival:
            t = _time_of(step) or last_time
            last_time = max(last_time, t)
            times.append((t, seq.get(step["id"], 0), step))
        times.sort(key=lambda k: (k[0], k[1]))
        keyed = [step for _, _, step in times]
    present = {s["id"] for s in keyed}

    ordered: list[dict[str, Any]] = []
    emitted: set[str] = set()
    waiting: dict[str, list[dict[str, Any]]] = {}

    def emit(step: dict[str, Any]) -> None:
        stack = [step]
        while stack:
            current = stack.pop()
            if current["id"] in emitted:  # only possible inside a parent cycle
                continue
            ordered.append(current)
            emitted.add(current["id"])
            stack.extend(reversed(waiting.pop(current["id"], [])))

    for step in keyed:
        sid = step["id"]
        parent = step.get("parentId")
        if not isinstance(parent, str):  # a damaged parentId names no parent
            parent = None
        if not parent or parent not in present or parent in emitted or parent == sid:
            if sid in waiting or sid in emitted:
                emit(step)
            else:  # nothing waits for it (the usual case): placed, and that is all
                ordered.append(step)
                emitted.add(sid)
        else:
            waiting.setdefault(parent, []).append(step)
    # Whatever still waits belongs to a parent cycle (corrupt data): keep it, in time order.
    if len(ordered) < len(keyed):
        for step in keyed:
            if step["id"] not in emitted:
                emit(step)
    return ordered


def compacted_records(state: ThreadState) -> Iterator[dict[str, Any]]:
    """The canonical journal for ``state``: one line per step in conversation order,
    then feedback and elements in arrival order, then the tombstones that keep deleted
    ids deleted."""
    for step in state.ordered_steps():
        yield step_record(step)
    # Arrival order, not sorted: readers list feedback and elements in that order.
    for fb in state.feedback.values():
        yield feedback_record(fb)
    for el in state.elements.values():
        yield element_record(el)
    for sid in sorted(state.deleted_steps):
        yield step_delete_record(sid)
    for eid in sorted(state.deleted_elements):
        yield element_delete_record(eid)
