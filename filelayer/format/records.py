"""The journal's record vocabulary: the operations a line can hold, and how each is built.

Every write to a thread's conversation is one record: a step created or updated, a step
deleted, feedback given or withdrawn, an element stored or removed (docs/format.md). The
writers build records here; :mod:`.journal` parses them back and :mod:`.fold` folds them
into a conversation, so both read one definition of what a well-formed record is.
"""

from __future__ import annotations

from typing import Any

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


def well_formed(record: dict[str, Any]) -> bool:
    """Whether ``record`` (a decoded line) is one of :data:`OPS` with the fields its
    readers rely on: a body with a string id, or a string id for a deletion."""
    op = record.get("op")
    if op in _BODY_OPS:
        body = record.get(op)
        return type(body) is dict and type(body.get("id")) is str
    return op in OPS and type(record.get("id")) is str


def for_deleted_step(element: dict[str, Any], deleted_steps: set[str]) -> bool:
    """Whether ``element`` was sent for a step in ``deleted_steps``: it is deleted with
    the step, whichever of the two lines came first."""
    for_id = element.get("forId")
    return isinstance(for_id, str) and for_id in deleted_steps
