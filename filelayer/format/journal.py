"""The step journal: one append-only JSON Lines file per thread, and how to read it.

Every write to a thread's conversation (a step created or updated, a step deleted,
feedback given or withdrawn, an element stored or removed) is one line appended to
``steps.jsonl``; :mod:`.records` says what each line holds. This module parses the
file (:func:`parse`, :func:`read`) and keeps what was read of it up to date as lines are
appended (:class:`Tombstones`, :class:`FoldedJournal`); :mod:`.fold` folds the records
into the current state. The names of both are importable from here too, as callers have
always imported them (``journal.fold``, ``journal.step_record``).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import fs as _fs
from .._io.tail import Tail
from ..errors import NotRegularFileError
from . import clock
from . import codec as _codec
from .fold import (
    ThreadState,
    compacted_records,
    fold,
    in_order,
    merge_step,
    order_keys,
    order_steps,
    sorted_records,
)
from .records import (
    MESSAGE_TYPES,
    OP_ELEMENT,
    OP_ELEMENT_DELETE,
    OP_FEEDBACK,
    OP_FEEDBACK_DELETE,
    OP_STEP,
    OP_STEP_DELETE,
    OPS,
    READ_ONLY_STEP_FIELDS,
    drop_none,
    element_delete_record,
    element_record,
    feedback_delete_record,
    feedback_record,
    for_deleted_step,
    step_body,
    step_delete_record,
    step_record,
    text_or_none,
    well_formed,
)

__all__ = [
    "JOURNAL_NAME",
    "MESSAGE_TYPES",
    "OPS",
    "OP_ELEMENT",
    "OP_ELEMENT_DELETE",
    "OP_FEEDBACK",
    "OP_FEEDBACK_DELETE",
    "OP_STEP",
    "OP_STEP_DELETE",
    "READ_ONLY_STEP_FIELDS",
    "FoldedJournal",
    "JournalRead",
    "ThreadState",
    "Tombstones",
    "compacted_records",
    "drop_none",
    "element_delete_record",
    "element_record",
    "feedback_delete_record",
    "feedback_record",
    "fold",
    "for_deleted_step",
    "in_order",
    "merge_step",
    "order_keys",
    "order_steps",
    "parse",
    "read",
    "sorted_records",
    "step_body",
    "step_delete_record",
    "step_record",
    "text_or_none",
    "well_formed",
]

log = logging.getLogger("filelayer")

JOURNAL_NAME = "steps.jsonl"


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
    end = data.rfind(b"\n") + 1
    result = JournalRead(records=[], torn_tail=end < len(data))
    values = _codec.decode_lines(data[:end] if end < len(data) else data)
    if values is not None:  # every line one JSON value: the usual journal
        records = [v for v in values if type(v) is dict and well_formed(v)]
        if len(records) == len(values):
            result.records = records
            return result
        # A torn fragment that a later append closed with a newline lands here too.
        result.bad_lines = [
            n for n, v in enumerate(values, start=1) if not (type(v) is dict and well_formed(v))
        ]
        result.records = records
    else:
        _parse_lines(data[:end].split(b"\n")[:-1], data, result)
    if result.bad_lines:
        log.warning(
            "%s: skipped %d damaged line(s) (line %s); run `filelayer verify` for details",
            origin or "journal",
            len(result.bad_lines),
            ", ".join(map(str, result.bad_lines[:5])),
        )
    return result


def _parse_lines(lines: list[bytes], data: bytes, result: JournalRead) -> None:
    """Decode ``lines`` one by one (some line is not one JSON value: which?)."""
    decode = _codec.decoder_for(data)
    records = result.records
    for number, line in enumerate(lines, start=1):
        try:
            record = decode(line)
        except _codec.DecodeError:
            if not line.strip():
                continue
            record = None
        if not (type(record) is dict and well_formed(record)):
            result.bad_lines.append(number)
            continue
        records.append(record)


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
            if type(record) is not dict or not well_formed(record):
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

    __slots__ = ("_ordered", "state", "version")

    def __init__(self) -> None:
        super().__init__()
        self.state = ThreadState()
        self._ordered: list[dict[str, Any]] | None = None
        self.version = 0
        """Changes whenever :attr:`state` does: what a reader derived from it stays
        good while the version is the same."""

    def _reset(self) -> None:
        super()._reset()
        self.state = ThreadState()
        self._ordered = None
        self.version += 1

    def _take(self, lines: bytes, path: Path) -> None:
        with no_collection(len(lines)):
            self._fold(lines, path)
        self._ordered = None
        self.version += 1

    def _fold(self, lines: bytes, path: Path) -> None:
        # The records are decoded for this fold alone: it keeps their bodies.
        fold(parse(lines, path).records, self.state, owned=True)
        if self.state.disordered:
            # Lines out of stamp order (a merge made without filelayer's driver): fold
            # the whole journal again, in stamp order.
            end = self.offset + len(lines)
            data = (_fs.read_bytes(path) or b"")[:end]
            self.state = fold(parse(data, path).records, owned=True)

    @property
    def ordered(self) -> list[dict[str, Any]]:
        if self._ordered is None:
            self._ordered = self.state.ordered_steps()
        return self._ordered


_MANY_OBJECTS = 64 * 1024
"""Bytes of journal lines past which decoding them makes enough objects for the
collector's passes to count (a few hundred objects per kilobyte)."""


@contextmanager
def no_collection(size: int) -> Iterator[None]:
    """The cyclic garbage collector held off while ``size`` bytes of lines are
    decoded and folded. Those make thousands of dicts, none of them in a cycle, and
    every 700 of them the collector runs over the young objects (the new dicts), every
    ten such runs over an older generation: a quarter of the cost of a thread's first
    read in a Chainlit process, measured, for nothing to collect. Once it is back on,
    one pass sees them all. An app that turned it off itself keeps it off."""
    if size < _MANY_OBJECTS or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def read(path: Path) -> JournalRead:
    """The journal at ``path``; none (no records) if there is none, or if something
    else than a file is in its place (a directory, a FIFO), which ``filelayer verify``
    reports: one such thread must not stop a command that reads every thread."""
    try:
        data = _fs.read_bytes(path)
    except NotRegularFileError:
        log.warning("filelayer: %s is not a regular file: read as empty", path)
        data = None
    return parse(data or b"", path)
