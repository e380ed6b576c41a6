"""The step journal: one append-only JSON Lines file per thread, and how to read it.

Every write to a thread's conversation (a step created or updated, a step deleted,
feedback given or withdrawn, an element stored or removed) is one line appended to
``steps.jsonl``. Reading folds the lines in file order into the current state. Because
Chainlit fires step writes as independent tasks, the fold is written so that the order
in which two writes of one step land does not matter for the final text: see
:func:`merge_step`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import fs as _fs
from .._io.tail import Tail
from .._time import earliest, latest, time_key
from . import clock
from . import codec as _codec

log = logging.getLogger("filelayer")

JOURNAL_NAME = "steps.jsonl"

OP_STEP = "step"
OP_STEP_DELETE = "step.delete"
OP_FEEDBACK = "feedback"
OP_FEEDBACK_DELETE = "feedback.delete"
OP_ELEMENT = "element"
OP_ELEMENT_DELETE = "element.delete"
OPS = frozenset(
    [OP_STEP, OP_STEP_DELETE, OP_FEEDBACK, OP_FEEDBACK_DELETE, OP_ELEMENT, OP_ELEMENT_DELETE]
)

_BODY_OPS = frozenset([OP_STEP, OP_FEEDBACK, OP_ELEMENT])

MESSAGE_TYPES = frozenset(["user_message", "assistant_message", "system_message"])
"""Step types whose output is conversation text (searched, exported as messages)."""

_EARLIEST_FIELDS = ("createdAt", "start")
_LATEST_FIELDS = ("end",)
_TIME_FIELDS = frozenset(_EARLIEST_FIELDS + _LATEST_FIELDS)


READ_ONLY_STEP_FIELDS = frozenset(["feedback", "streaming"])
"""Fields of Chainlit's ``StepDict`` that are not part of a stored step: readers add
them (``feedback`` from the journal's feedback lines, ``streaming`` always false), and
Chainlit sends them back in the dicts it got from ``get_thread`` or
``get_favorite_steps`` (un-favouriting) and in every live ``Step.to_dict()``."""


def drop_none(d: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``d`` without its ``None`` values (most records have none: a plain
    copy, several times cheaper, serves them)."""
    if None not in d.values():
        return dict(d)
    return {k: v for k, v in d.items() if v is not None}


def step_body(step: dict[str, Any]) -> dict[str, Any]:
    """What is stored of a step: its fields without ``None`` values and without the
    read-only ones (:data:`READ_ONLY_STEP_FIELDS`)."""
    return {k: v for k, v in step.items() if v is not None and k not in READ_ONLY_STEP_FIELDS}


def step_record(step: dict[str, Any]) -> dict[str, Any]:
    return {"op": OP_STEP, "step": step_body(step)}


def step_delete_record(step_id: str) -> dict[str, Any]:
    return {"op": OP_STEP_DELETE, "id": step_id}


def feedback_record(feedback: dict[str, Any]) -> dict[str, Any]:
    return {"op": OP_FEEDBACK, "feedback": drop_none(feedback)}


def feedback_delete_record(feedback_id: str) -> dict[str, Any]:
    return {"op": OP_FEEDBACK_DELETE, "id": feedback_id}


def element_record(element: dict[str, Any]) -> dict[str, Any]:
    return {"op": OP_ELEMENT, "element": drop_none(element)}


def element_delete_record(element_id: str) -> dict[str, Any]:
    return {"op": OP_ELEMENT_DELETE, "id": element_id}


@dataclass
class JournalRead:
    """The records of a journal, and what was wrong with the lines that were skipped."""

    records: list[dict[str, Any]]
    bad_lines: list[int] = field(default_factory=list)
    torn_tail: bool = False


def parse(data: bytes, origin: Path | None = None) -> JournalRead:
    """Parse journal bytes. A torn last line (no newline: a crash mid-append) is left
    out silently; a damaged complete line is left out with a warning, so that one bad
    line never hides the rest of a conversation."""
    lines, tail = _fs.split_lines(data)
    result = JournalRead(records=[], torn_tail=bool(tail))
    decode = _codec.decoder_for(data)
    records = result.records
    for number, line in enumerate(lines, start=1):
        try:
            record = decode(line)
        except _codec.DecodeError:
            if not line.strip():
                continue
            record = None
        if not (type(record) is dict and _well_formed(record)):
            # A torn fragment that a later append closed with a newline lands here too.
            result.bad_lines.append(number)
            continue
        records.append(record)
    if result.bad_lines:
        log.warning(
            "%s: skipped %d damaged line(s) (line %s); run `filelayer verify` for details",
            origin or "journal",
            len(result.bad_lines),
            ", ".join(map(str, result.bad_lines[:5])),
        )
    return result


def _well_formed(record: dict[str, Any]) -> bool:
    op = record.get("op")
    if op in _BODY_OPS:
        body = record.get(op)
        return type(body) is dict and type(body.get("id")) is str
    return op in OPS and type(record.get("id")) is str


class Tombstones(Tail):
    """The ids a journal says were deleted, by the rules of :func:`fold`. Writers
    consult it under the thread's lock so that a late write for a deleted step or element
    (Chainlit fires them as independent tasks) leaves nothing behind: no index text, no
    feedback count, no element file. Only lines naming a deletion or an element are
    decoded."""

    __slots__ = ("_element_steps", "elements", "last_stamp", "steps")

    def __init__(self) -> None:
        super().__init__()
        self.steps: set[str] = set()
        self.elements: set[str] = set()
        self._element_steps: dict[str, str] = {}  # live element id -> the step it is for
        self.last_stamp: str | None = None  # the newest record stamp (see filelayer.clock)

    def _reset(self) -> None:
        super()._reset()
        self.steps = set()
        self.elements = set()
        self._element_steps = {}
        self.last_stamp = None

    def _take(self, lines: bytes, path: Path) -> None:
        for line in lines.split(b"\n"):
            stamp = clock.stamp_of_line(line)
            if stamp is not None and (self.last_stamp is None or stamp > self.last_stamp):
                self.last_stamp = stamp
            if b'.delete"' not in line and b'"element"' not in line:
                continue
            try:
                record = _codec.decode(line)
            except _codec.DecodeError:
                continue
            if type(record) is not dict or not _well_formed(record):
                continue
            op = record["op"]
            if op == OP_STEP_DELETE:
                sid = record["id"]
                self.steps.add(sid)
                for eid in [e for e, s in self._element_steps.items() if s == sid]:
                    self._delete_element(eid)
            elif op == OP_ELEMENT_DELETE:
                self._delete_element(record["id"])
            elif op == OP_ELEMENT:
                el = record[OP_ELEMENT]
                if el["id"] in self.elements:
                    continue
                if for_deleted_step(el, self.steps):
                    self._delete_element(el["id"])
                elif isinstance(el.get("forId"), str):
                    self._element_steps[el["id"]] = el["forId"]
                elif el.get("forId") is not None:  # not a step id: belongs to no step
                    self._element_steps.pop(el["id"], None)

    def _delete_element(self, element_id: str) -> None:
        self.elements.add(element_id)
        self._element_steps.pop(element_id, None)


class FoldedJournal(Tail):
    """A journal's folded state (what ``get_thread`` reads), with its steps in
    conversation order, sorted again only when lines were added."""

    __slots__ = ("_ordered", "state")

    def __init__(self) -> None:
        super().__init__()
        self.state = ThreadState()
        self._ordered: list[dict[str, Any]] | None = None

    def _reset(self) -> None:
        super()._reset()
        self.state = ThreadState()
        self._ordered = None

    def _take(self, lines: bytes, path: Path) -> None:
        fold(parse(lines, path).records, self.state)
        if self.state.disordered:
            # Lines out of stamp order (a merge made without filelayer's driver): fold
            # the whole journal again, in stamp order.
            end = self.offset + len(lines)
            data = (_fs.read_bytes(path) or b"")[:end]
            self.state = fold(parse(data, path).records)
        self._ordered = None

    @property
    def ordered(self) -> list[dict[str, Any]]:
        if self._ordered is None:
            self._ordered = self.state.ordered_steps()
        return self._ordered


def read(path: Path) -> JournalRead:
    data = _fs.read_bytes(path)
    return parse(data or b"", path)


def merge_step(stored: dict[str, Any], incoming: dict[str, Any]) -> None:
    """Merge a newer write of a step into what is stored, in place.

    The rule survives Chainlit landing ``send()`` (empty output) after ``update()``
    (final output), Chainlit issue #2789: a field present in the newer write wins,
    except that ``None``, an empty string or an empty dict never overwrites stored
    content; start times keep the earliest value and end times the latest, compared as
    instants (:func:`~filelayer._time.time_key`, since Chainlit drops the fraction
    of a whole second), so the order of arrival does not move a step in the conversation.
    """
    for key, value in incoming.items():
        if value is None:
            continue
        if key in _TIME_FIELDS:
            old = stored.get(key)
            if old == value:  # most updates repeat the times: nothing to compare
                continue
            if isinstance(old, str) and isinstance(value, str) and value:
                if key in _LATEST_FIELDS:
                    stored[key] = latest(old, value)
                else:
                    stored[key] = earliest(old, value) if old else value
                continue
            if (value == "" or value == {}) and old:
                continue
        elif (value == "" or value == {}) and stored.get(key):
            continue
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


def fold(records: Iterable[dict[str, Any]], state: ThreadState | None = None) -> ThreadState:
    """Apply ``records`` to ``state`` (a new one by default) in the journal's order (see
    :func:`order_keys`): folding a journal's lines in two batches gives what folding
    them at once gives. A new state takes the records sorted when they are not in
    order; a later batch with a record older than one already folded marks the state
    :attr:`~ThreadState.disordered`, for the caller to fold everything again."""
    state = state if state is not None else ThreadState()
    if not isinstance(records, list):
        records = list(records)
    if state.applied == 0 and not in_order(records):
        records = sorted_records(records)
    seq = len(state.step_seq)  # step_seq only grows: deleted steps keep their number
    for record in records:
        state.applied += 1
        stamp = record.get(clock.STAMP_KEY)
        if clock.is_stamp(stamp):
            if state.last_stamp is not None and stamp < state.last_stamp:
                state.disordered = True
            else:
                state.last_stamp = stamp
        op = record["op"]
        if op == OP_STEP:
            incoming = record[OP_STEP]
            sid = incoming["id"]
            if sid in state.deleted_steps:
                continue  # a late write must not bring a deleted step back
            if "streaming" in incoming or "feedback" in incoming:  # older writers kept them
                incoming = step_body(incoming)
            stored = state.steps.get(sid)
            if stored is None:
                # A null is no value, in the first line as in any later one.
                state.steps[sid] = drop_none(incoming)
                state.step_seq[sid] = seq
                seq += 1
            else:
                merge_step(stored, incoming)
        elif op == OP_STEP_DELETE:
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
                continue
            # One feedback per step: a new id for the same step replaces the old one.
            for fid in [f for f, old in state.feedback.items() if _for_id(old) == _for_id(fb)]:
                del state.feedback[fid]
            state.feedback[fb["id"]] = dict(fb)
        elif op == OP_FEEDBACK_DELETE:
            state.feedback.pop(record["id"], None)
        elif op == OP_ELEMENT:
            el = record[OP_ELEMENT]
            if el["id"] in state.deleted_elements:
                continue
            if for_deleted_step(el, state.deleted_steps):
                # Sent for a deleted step: deleted with it, as if it had come before the
                # step's deletion, so no later re-send (without a step) brings it back.
                state.deleted_elements.add(el["id"])
                state.elements.pop(el["id"], None)
                continue
            # A null is no value, as in a step: the stored field (if any) stays.
            stored = state.elements.get(el["id"])
            if stored is None:
                state.elements[el["id"]] = drop_none(el)
            else:
                stored.update(drop_none(el))
        elif op == OP_ELEMENT_DELETE:
            state.deleted_elements.add(record["id"])
            state.elements.pop(record["id"], None)
    return state


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


def for_deleted_step(element: dict[str, Any], deleted_steps: set[str]) -> bool:
    for_id = element.get("forId")
    return isinstance(for_id, str) and for_id in deleted_steps


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
    keyed: list[tuple[str, int, dict[str, Any]]] = []
    last_time = ""
    for step in by_arrival:
        t = _time_of(step) or last_time
        last_time = max(last_time, t)
        keyed.append((t, seq.get(step["id"], 0), step))
    keyed.sort(key=lambda k: (k[0], k[1]))
    present = {s["id"] for _, _, s in keyed}

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

    for _, _, step in keyed:
        parent = step.get("parentId")
        if not isinstance(parent, str):  # a damaged parentId names no parent
            parent = None
        if not parent or parent not in present or parent in emitted or parent == step["id"]:
            emit(step)
        else:
            waiting.setdefault(parent, []).append(step)
    # Whatever still waits belongs to a parent cycle (corrupt data): keep it, in time order.
    for _, _, step in keyed:
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
