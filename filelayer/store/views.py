"""Chainlit-shaped views of what the store holds: the defaults a step dict gets, the
element fields an element file implies, and copies that callers may change freely."""

from __future__ import annotations

import hashlib
from typing import Any

_STEP_DEFAULTS: dict[str, Any] = {
    "name": "",
    "type": "undefined",
    "threadId": None,
    "parentId": None,
    "input": "",
    "output": "",
    "metadata": {},
    "tags": None,
    "createdAt": None,
    "start": None,
    "end": None,
    "isError": False,
    "showInput": None,
    "language": None,
    "generation": None,
    "waitForAnswer": None,
    "defaultOpen": None,
    "autoCollapse": None,
}


def _copy_json(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists, scalars), several times cheaper than
    ``copy.deepcopy``, and without recursion: stored metadata may nest deeply."""
    kind = type(value)
    if kind is not dict and kind is not list:
        return value
    top: Any = {} if kind is dict else []
    stack: list[tuple[Any, Any]] = [(value, top)]
    while stack:
        source, target = stack.pop()
        items = source.items() if type(source) is dict else enumerate(source)
        is_list = type(target) is list
        for key, item in items:
            kind = type(item)
            if kind is dict or kind is list:
                child: Any = {} if kind is dict else []
                stack.append((item, child))
                item = child
            if is_list:
                target.append(item)
            else:
                target[key] = item
    return top


def element_file_fields(relative: str, data: bytes) -> dict[str, Any]:
    return {"file": relative, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
