"""Values in the rows of Chainlit's two SQL schemas, and the stash that makes a copy lossless.

Both schemas have fewer columns than Chainlit's step and element dicts, so that a copy to
a database and back loses nothing, whatever a row's columns cannot say is kept in its
JSON ``metadata`` under one key, :data:`STASH`. Reading applies a stashed value only
while it still agrees with the columns (encoding it again gives the same row): a row
edited later by Chainlit, the app or by hand reads as its columns say. The two SQL
endpoints (:mod:`~filelayer.transfer.postgres`, :mod:`~filelayer.transfer.sqla`) encode
their own columns and share this: one stash format, one rule for applying it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection
from decimal import Decimal
from typing import Any

STASH = "_filelayer"
"""The metadata key holding what a row's columns cannot say."""


def column_safe(value: Any) -> Any:
    """``value`` as a text or JSON column can hold it: without NUL characters, which
    PostgreSQL's ``TEXT`` and ``JSONB`` refuse (in a string or a key, at any depth). The
    exact value goes to the stash (:func:`make_stash`), so nothing is lost.

    A walk with a stack of its own, not a recursion: data as deeply nested as the archive
    takes (:data:`~filelayer.format.codec.MAX_DEPTH`) must not exhaust the interpreter's."""
    root: list[Any] = [value]
    todo: list[tuple[Any, Any, Any]] = [(root, 0, value)]
    while todo:
        parent, slot, item = todo.pop()
        if isinstance(item, str):
            parent[slot] = item.replace("\0", "")
        elif isinstance(item, dict):
            copy: dict[Any, Any] = {}
            for key, child in item.items():
                copy[key.replace("\0", "") if isinstance(key, str) else key] = child
            todo.extend((copy, key, child) for key, child in copy.items())
            parent[slot] = copy
        elif isinstance(item, list):
            items = list(item)
            parent[slot] = items
            todo.extend((items, n, child) for n, child in enumerate(items))
    return root[0]


def int_column(value: Any, *, bits: int = 32) -> int | None:
    """An integer for an ``INT`` column (32 bits on PostgreSQL, 64 on SQLite), ``None``
    when it is not one or is too large for it (the exact value is then stashed, where the
    row has a stash)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if -(2 ** (bits - 1)) <= value < 2 ** (bits - 1) else None
    return None


def text(value: Any) -> str | None:
    """A value for a ``TEXT`` column: a string as it is, anything else as JSON; without
    NUL characters either way (see :func:`column_safe`)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.replace("\0", "")
    return json.dumps(column_safe(value), sort_keys=True, ensure_ascii=False)


def exact_text(value: Any) -> str | None:
    """A value for a ``TEXT`` column that holds any character (SQLite's): a string as
    it is, anything else as JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def jsonb_text(value: Any) -> str | None:
    """A value for a ``JSONB`` column, as JSON text that reads back as it was. JSONB keeps
    numbers as decimals and writes them in positional notation: ``1e16`` comes back as
    ``10000000000000000``, an int (``1e300`` even as another value). A float is written in
    positional notation with a fraction, which JSONB keeps and which parses back to the
    same float. ``None`` stays SQL ``NULL``. Without NUL characters, which JSONB refuses
    (see :func:`~filelayer.transfer.stash.column_safe`)."""
    if value is None:
        return None
    return _jsonb(column_safe(value))


class _Text(str):
    """Text :func:`_jsonb` writes as it is (a bracket, a key, a comma), as against a
    string of the data, which it writes as JSON."""


def _jsonb(value: Any) -> str:
    """The JSONB text of ``value``, with a stack of its own (see :func:`column_safe`)."""
    out: list[str] = []
    todo: list[Any] = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, _Text):
            out.append(item)
        elif isinstance(item, float) and math.isfinite(item):
            text = repr(item)
            if "e" in text or "E" in text:
                text = format(Decimal(text), "f")
            out.append(text if "." in text else text + ".0")
        elif isinstance(item, dict):
            parts: list[Any] = [_Text("{")]
            for n, (key, child) in enumerate(sorted(item.items(), key=lambda kv: str(kv[0]))):
                key_text = json.dumps(str(key), ensure_ascii=False)
                parts += [_Text((", " if n else "") + key_text + ": "), child]
            todo.extend(reversed([*parts, _Text("}")]))
        elif isinstance(item, (list, tuple)):
            parts = [_Text("[")]
            for n, child in enumerate(item):
                parts += [_Text(", "), child] if n else [child]
            todo.extend(reversed([*parts, _Text("]")]))
        else:
            out.append(json.dumps(item, ensure_ascii=False))
    return "".join(out)


def json_value(raw: Any, *, layers: int) -> Any:
    """A JSON column as the value it holds. Drivers hand JSON back as text (asyncpg
    without a codec, SQLite always), and a writer may have stored JSON text in a JSON
    column, which then holds a JSON string: text is parsed up to ``layers`` times, until
    it is not text that parses (such text comes back as it is)."""
    for _ in range(layers):
        if not isinstance(raw, str):
            return raw
        try:
            raw = json.loads(raw)
        except ValueError:
            return raw
    return raw


def not_an_object(raw: Any, *, layers: int) -> str | None:
    """Why a metadata column's value cannot be read as metadata, which a reader then
    takes for ``{}`` (the archive and Chainlit hold metadata as an object only): JSON
    text that is malformed or no object, as anything writing the database may leave.
    ``None`` when it is an object, or nothing (``NULL``, empty text, JSON ``null``)."""
    if raw is None or raw == "":
        return None
    value = json_value(raw, layers=layers)
    if value is None or isinstance(value, dict):
        return None
    shown = raw if isinstance(raw, str) else json.dumps(raw, default=str)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"its metadata {shown!r} is not a JSON object; copied without it"


def make_stash(
    original: dict[str, Any],
    plain: dict[str, Any],
    *,
    ignored: Collection[str] = (),
    none_is_absent: bool = False,
) -> dict[str, Any]:
    """What must be kept beside the columns so that ``original`` reads back exactly,
    given ``plain``, what the columns alone say.

    ``ignored``: fields never stashed (the fields readers add, which are not part of a
    stored value). ``none_is_absent``: a field set to ``None`` counts as not set (a
    schema whose reader leaves ``NULL`` columns out)."""
    changed = {
        k: v
        for k, v in original.items()
        if k not in ignored
        and not (none_is_absent and v is None)
        and (k not in plain or plain[k] != v)
    }
    if none_is_absent:
        unset = sorted(k for k in plain if original.get(k) is None and k not in ignored)
    else:
        unset = sorted(k for k in plain if k not in original and k not in ignored)
    stash: dict[str, Any] = {}
    # A value the metadata column cannot hold itself (a NUL character) is kept as JSON
    # text, where a NUL is the six characters of its escape.
    exact = {k: json.dumps(v) for k, v in changed.items() if column_safe(v) != v}
    changed = {k: v for k, v in changed.items() if k not in exact}
    if changed:
        stash["set"] = changed
    if exact:
        stash["json"] = exact
    if unset:
        stash["unset"] = unset
    return stash


def apply_stash(
    plain: dict[str, Any],
    stash: dict[str, Any],
    consistent: Callable[[dict[str, Any]], bool],
) -> dict[str, Any]:
    """``plain`` with each stashed value that still agrees with the row's columns
    (``consistent``: encoding the candidate again gives the row as it is)."""
    result = dict(plain)
    changed = stash.get("set")
    exact = stash.get("json")
    if isinstance(exact, dict):
        decoded = {}
        for key, raw in exact.items():
            try:
                decoded[key] = json.loads(raw) if isinstance(raw, str) else None
            except ValueError:
                continue
        changed = {**(changed if isinstance(changed, dict) else {}), **decoded}
    if isinstance(changed, dict):
        for key in sorted(changed):
            candidate = {**result, key: changed[key]}
            if consistent(candidate):
                result = candidate
    unset = stash.get("unset")
    if isinstance(unset, list):
        for key in unset:
            if isinstance(key, str) and key in result:
                candidate = {k: v for k, v in result.items() if k != key}
                if consistent(candidate):
                    result = candidate
    return result


def one_per_step(feedback: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last feedback of each step (``forId``), in the order read: the archive and
    Chainlit's UI keep one a step, a database may hold several."""
    by_step: dict[str, dict[str, Any]] = {}
    for fb in feedback:
        by_step[fb["forId"]] = fb
    return list(by_step.values())
