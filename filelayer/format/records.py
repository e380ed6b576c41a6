"""The journal's record vocabulary: the operations a line can hold, and how each is built.

Every write to a thread's conversation is one record: a step created or updated, a step
deleted, feedback given or withdrawn, an element stored or removed (docs/format.md). The
writers build records here; :mod:`.journal` parses them back and :mod:`.fold` folds them
into a conversation, so both read one definition of what a well-formed record is.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidFieldError, InvalidValueError

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


_TEXT, _OBJECT, _FLAG, _TEXTS, _FLAG_OR_TEXT, _WHOLE = range(6)
STEP_FIELD_TYPES: dict[str, int] = {
    "name": _TEXT,
    "type": _TEXT,
    "parentId": _TEXT,
    "input": _TEXT,
    "output": _TEXT,
    "createdAt": _TEXT,
    "start": _TEXT,
    "end": _TEXT,
    "language": _TEXT,
    "command": _TEXT,
    "icon": _TEXT,
    "metadata": _OBJECT,
    "generation": _OBJECT,
    "modes": _OBJECT,
    "feedback": _OBJECT,
    "tags": _TEXTS,
    "isError": _FLAG,
    "streaming": _FLAG,
    "waitForAnswer": _FLAG,
    "defaultOpen": _FLAG,
    "autoCollapse": _FLAG,
    "showInput": _FLAG_OR_TEXT,
}
"""The type of each field of Chainlit's ``StepDict`` (as its ``Step.to_dict()`` and
``Message.to_dict()`` make them) other than the ids, which are checked as ids; ``None``
is no value for every one (docs/format.md, "Field types"). Fields not named here are
newer Chainlit's, or an app's: kept whatever their type."""

ELEMENT_FIELD_TYPES: dict[str, int] = {
    "type": _TEXT,
    "name": _TEXT,
    "display": _TEXT,
    "size": _TEXT,
    "language": _TEXT,
    "mime": _TEXT,
    "url": _TEXT,
    "chainlitKey": _TEXT,
    "objectKey": _TEXT,
    "forId": _TEXT,
    "page": _WHOLE,
    "props": _OBJECT,
    "playerConfig": _OBJECT,
    "autoPlay": _FLAG,
}
"""The type of each field of Chainlit's ``ElementDict`` (as its ``Element.to_dict()``
makes them) other than the id, which is checked as an id; ``None`` is no value for every
one (docs/format.md, "Field types"). The element's name and mime type pick its file's
extension and the element route's headers, and every reader shows them as text: a
number there failed the write half-way, a dict reached the UI. ``file``, ``bytes`` and
``sha256`` are the layer's own, set by the writer."""

_EXPECTED = {
    _TEXT: "a string",
    _OBJECT: "an object (dict)",
    _FLAG: "true or false",
    _TEXTS: "a list of strings",
    _FLAG_OR_TEXT: "true, false or a string",
    _WHOLE: "a whole number",
}


def _fits(kind: int, value: Any) -> bool:
    if kind == _TEXT:
        return isinstance(value, str)
    if kind == _OBJECT:
        return isinstance(value, dict)
    if kind == _FLAG:
        return value is True or value is False
    if kind == _TEXTS:
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    if kind == _WHOLE:
        return isinstance(value, int) and not isinstance(value, bool)
    return value is True or value is False or isinstance(value, str)


def check_step_fields(
    step: dict[str, Any], step_id: str, stored: dict[str, Any] | None = None
) -> None:
    """:class:`InvalidFieldError` if a field of ``step``, new data a caller sends,
    has a type no reader of a step expects (:data:`STEP_FIELD_TYPES`). Checked where a
    step enters, never on what is already stored (a read, a compaction, a merge): what
    an earlier release stored stays readable and writable. ``stored``: the step as
    stored, whose values a caller may send back as they are (Chainlit un-favourites a
    step with the dict it was given)."""
    for field, value in step.items():
        kind = STEP_FIELD_TYPES.get(field)
        if kind is None or value is None or _fits(kind, value):
            continue
        if stored is not None and field in stored and stored[field] == value:
            continue
        got = type(value).__name__
        if kind == _TEXTS and isinstance(value, list):
            got = "a list holding " + next(
                type(item).__name__ for item in value if not isinstance(item, str)
            )
        raise InvalidFieldError("step", step_id, field, _EXPECTED[kind], got)


def check_object(kind: str, value: Any) -> dict[str, Any]:
    """``value`` if it is a dict, else :class:`InvalidValueError`: a step or an element
    a caller sends is an object (Chainlit's ``StepDict``, ``ElementDict``), whose fields
    are read before anything is written."""
    if not isinstance(value, dict):
        raise InvalidValueError(
            kind, f"a {kind} must be an object (dict), not {type(value).__name__}"
        )
    return value


def check_element_fields(element: dict[str, Any], element_id: str) -> None:
    """:class:`InvalidFieldError` if a field of ``element``, new data a caller sends,
    has a type no reader of an element expects (:data:`ELEMENT_FIELD_TYPES`). Checked,
    like a step's fields, where an element enters and before anything is written (its
    file's name is made from its name and mime type), never on what is stored."""
    for field, kind in ELEMENT_FIELD_TYPES.items():
        value = element.get(field)
        if value is not None and not _fits(kind, value):
            got = type(value).__name__
            raise InvalidFieldError("element", element_id, field, _EXPECTED[kind], got)


def text_or_none(value: Any) -> str | None:
    """``value`` if it is a string, else ``None``: what a reader takes of a field that
    names something (a step's type, an element's step) in a line that may hold any
    JSON value there (another program's, an earlier release's). A list or an object
    is no name, and looked up in a set of names it raised "unhashable type"."""
    return value if isinstance(value, str) else None


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
