"""JSON encoding of everything filelayer writes.

Writing always goes through the standard library's encoder with fixed options, so that
the fast and the pure modes produce byte-identical files (orjson spells some floats
differently, e.g. ``1e16`` against ``1e+16``). Reading, which dominates the cost of
``get_thread`` and of rebuilding the index, uses orjson in the fast mode.
"""

from __future__ import annotations

import contextlib
import decimal
import json
import math
import secrets
import string
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from .._backend import PURE
from .._io import fs as _fs
from ..errors import CorruptFileError, InvalidValueError, NotRegularFileError

_line_encoder = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
)
_compact_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_doc_encoder = json.JSONEncoder(ensure_ascii=False, sort_keys=True, indent=2, allow_nan=False)


def _to_utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidValueError(
            "data",
            "text with an unpaired surrogate cannot be stored as UTF-8; pass valid Unicode text",
        ) from exc


MAX_DEPTH = 512
"""The deepest nesting of lists and objects a write accepts (docs/format.md). Every
reader must read back what was written: orjson stops at 1,024 levels, and the standard
library's reader where the interpreter's stack runs out, which depends on how deep in
the stack the read happens (about 950 levels at the default limit, fewer in a deep
call). A writer of its own would otherwise follow the interpreter's limit, which an app
may raise."""

_TOO_DEEP = f"data nested deeper than {MAX_DEPTH} levels cannot be stored; flatten it first"

READ_DEPTH = 1024
"""The deepest nesting a reader takes, in both modes (docs/format.md, "Which lines
count"): orjson's own limit, to which the standard library's reader is held, given the
stack it needs wherever the read happens (:func:`_stack_room`). Deeper is damage. Data
an older release stored up to that depth is read, ordered and written again alike."""

_T = TypeVar("_T")

_ROOM = threading.RLock()  # one lock for both limits: a block may need the two at once


@contextlib.contextmanager
def _stack_room() -> Iterator[None]:
    """The interpreter's recursion limit raised by :data:`READ_DEPTH` levels for a
    block: the standard library's reader and writer take a level of the stack per
    level of nesting, so the depth they reach would otherwise depend on how deep in
    the stack the call happens (a deep app, a worker thread) and differ from orjson's.

    Only a retry after a ``RecursionError`` takes it, so only data nested hundreds of
    levels deep (none that Chainlit writes). The limit is the process's: one block at a
    time, and a limit the app set meanwhile is left as the app set it."""
    with _ROOM:
        limit = sys.getrecursionlimit()
        raised = limit + READ_DEPTH + 64
        sys.setrecursionlimit(raised)
        try:
            yield
        finally:
            if sys.getrecursionlimit() == raised:
                sys.setrecursionlimit(limit)


def _too_many_digits(exc: ValueError) -> bool:
    """Whether ``exc`` is Python's refusal to convert an integer of more digits than
    ``sys.get_int_max_str_digits()`` to or from text."""
    return "integer string conversion" in str(exc)


@contextlib.contextmanager
def _digit_room() -> Iterator[None]:
    """The interpreter's limit on the digits of an integer converted to or from text
    lifted for a block: docs/format.md reads and writes integers of any size, and a
    limit an app set (or lifted, as the error advises) must not make a line one
    process wrote damaged for another. Only a retry of a writing after the limit
    refused a number takes it, as :func:`_stack_room` does, with the same lock (a
    reading never does: :func:`_int_any_size`), and so only for a number the app made."""
    with _ROOM:
        limit = sys.get_int_max_str_digits()
        sys.set_int_max_str_digits(0)
        try:
            yield
        finally:
            if sys.get_int_max_str_digits() == 0:
                sys.set_int_max_str_digits(limit)


def any_size(write: Callable[[], _T]) -> _T:
    """``write()``, again with the digit limit lifted (:func:`_digit_room`) if the
    limit refused an integer: for a writer of the data other than this module's (an
    export), since what the format stores, and this module reads, has any size."""
    try:
        return write()
    except ValueError as exc:
        if not _too_many_digits(exc):
            raise
    with _digit_room():
        return write()


def _encode(encoder: json.JSONEncoder, obj: Any) -> str:
    try:
        return _encode_limited(encoder, obj)
    except InvalidValueError as exc:
        if not _too_many_digits(exc):
            raise
    with _digit_room():
        return _encode_limited(encoder, obj)


def _encode_limited(encoder: json.JSONEncoder, obj: Any) -> str:
    try:
        try:
            return _encode_deep(encoder, obj)
        except TypeError:
            # Keys JSON writes as strings (an int beside a string key cannot be sorted
            # with it): stored as Python's json writes them, which is what Chainlit's
            # own layers store. Anything else that is not JSON data is refused.
            pass
        return _encode_deep(encoder, _string_keys(obj))
    except InvalidValueError:
        raise
    except TypeError as exc:  # a datetime, a set, bytes...: not JSON data
        raise InvalidValueError("data", f"not JSON data: {exc}") from None
    except ValueError as exc:  # NaN or an infinity (JSON has neither)
        raise InvalidValueError("data", str(exc)) from None


def any_depth(write: Callable[[], _T]) -> _T:
    """``write()``, again with room on the stack (:func:`_stack_room`) if it ran out:
    stored data nested up to :data:`READ_DEPTH` levels is written again wherever, by
    this module's writer and by any other writer of the data (an export, a copy)."""
    try:
        return write()
    except RecursionError:
        pass
    with _stack_room():
        return write()


def _encode_deep(encoder: json.JSONEncoder, obj: Any) -> str:
    try:
        return any_depth(lambda: encoder.encode(obj))
    except RecursionError:
        raise InvalidValueError("data", _TOO_DEEP) from None


def _key_text(key: Any) -> str:
    """A dict key as Python's json writes it (``TypeError`` for one it refuses)."""
    if isinstance(key, str):
        return key
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    if isinstance(key, int):
        return int.__repr__(key)
    if isinstance(key, float):
        if not math.isfinite(key):  # as json refuses it with ``allow_nan=False``
            raise ValueError(f"the key {key!r} is not JSON")
        return float.__repr__(key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _string_keys(value: Any) -> Any:
    """``value`` with every dict key a string, as Python's json writes it; refused
    (:class:`InvalidValueError`) if two keys of one dict become the same string.
    Iterative: data nested up to the read limit must not exhaust the stack here; data
    nested deeper (or holding itself: a circular reference) is refused."""
    root: list[Any] = [value]
    stack: list[tuple[Any, Any, Any, int]] = [(root, 0, value, 0)]
    while stack:
        parent, slot, item, depth = stack.pop()
        if depth > READ_DEPTH and isinstance(item, (dict, list, tuple)):
            raise InvalidValueError("data", _TOO_DEEP + " (or it holds itself)")
        if isinstance(item, dict):
            copy: dict[str, Any] = {}
            for key, child in item.items():
                text = _key_text(key)
                if text in copy:
                    raise InvalidValueError("data", f"the key {text!r} is in one object twice")
                copy[text] = child
                stack.append((copy, text, child, depth + 1))
            parent[slot] = copy
        elif isinstance(item, (list, tuple)):
            items = list(item)
            parent[slot] = items
            stack.extend((items, n, child, depth + 1) for n, child in enumerate(items))
    return root[0]


def check_depth(value: Any, encoded: bytes | None = None) -> None:
    """``ValueError`` if ``value``, new data a caller gives, nests deeper than
    :data:`MAX_DEPTH`. Checked where data enters (a step, an element, a thread's or a
    user's metadata, a session), never when stored data is written again (a
    compaction, a merge): what an older release stored stays readable and writable.
    ``encoded``: its encoding, whose brackets are counted in C first (nesting needs one
    per level), so that the walk is rare."""
    if encoded is not None and encoded.count(b"{") + encoded.count(b"[") <= MAX_DEPTH:
        return
    if _depth(value) > MAX_DEPTH:
        raise InvalidValueError("data", _TOO_DEEP)


def _depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """The deepest nesting of dicts and lists in ``value`` (a scalar: 0), or a depth
    past ``limit`` as soon as one is found."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def encode_line(obj: Any) -> bytes:
    """One JSON Lines record: compact, sorted keys, UTF-8, ending in a newline.

    Raises ``ValueError`` for what JSON cannot hold (NaN, infinities, unpaired
    surrogates, nesting deep enough to exhaust the interpreter's stack) and
    ``TypeError`` for objects that are not JSON data.
    """
    return _to_utf8(_encode(_line_encoder, obj) + "\n")


def encode_new_line(obj: Any) -> bytes:
    """:func:`encode_line` of a record made from new data: also refused if it nests
    deeper than every reader reads back (see :func:`check_depth`)."""
    line = encode_line(obj)
    check_depth(obj, line)
    return line


def stored_form(obj: Any) -> Any:
    """``obj`` as every reader reads it back once written (``1`` -> ``"1"`` as a key,
    tuples as lists), a copy that shares nothing with ``obj``: what a writer merges and
    compares with what is stored. Refused as :func:`encode_line` refuses."""
    return decode(encode_line(obj))


def encode_document(obj: Any) -> bytes:
    """A whole JSON file: indented, sorted keys, UTF-8, trailing newline (diffs well)."""
    return _to_utf8(_encode(_doc_encoder, obj) + "\n")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    """A JSON number with a fraction or exponent, refused if it is too large for a
    float (``1e400``), as orjson refuses it: no infinity enters what is read."""
    value = float(text)
    if value in (_INF, -_INF):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


_INF = float("inf")


def _check_text(value: Any) -> None:
    """``ValueError`` if any string in ``value`` (keys included) holds an unpaired
    surrogate, which only a ``\\ud800``-style escape can bring in."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            item.encode("utf-8")  # UnicodeEncodeError (a ValueError) on a lone surrogate
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object read from text holding a surrogate escape: the values a duplicate key
    discards are checked too (orjson refuses an unpaired surrogate wherever it is; the
    check of the result alone would never see them)."""
    value = dict(pairs)
    if len(value) != len(pairs):
        _check_text([v for _, v in pairs])
    return value


_decoder = json.JSONDecoder(
    parse_constant=_refuse_constant, parse_float=_finite_float
)  # made once: json.loads with
# an argument would build a decoder per call, four times the cost of the reading itself
_surrogate_decoder = json.JSONDecoder(
    parse_constant=_refuse_constant, parse_float=_finite_float, object_pairs_hook=_pairs
)


def _int_any_size(text: str) -> int:
    """A JSON integer of any number of digits: through a decimal, which the
    interpreter's digit limit does not hold, so that the limit (the process's, which
    keeps every other thread's conversions of untrusted text short) is never lifted
    for a reading."""
    return int(decimal.Decimal(text))


def _any_size_decoder(decoder: json.JSONDecoder) -> json.JSONDecoder:
    return json.JSONDecoder(
        parse_constant=decoder.parse_constant,
        parse_float=decoder.parse_float,
        object_pairs_hook=decoder.object_pairs_hook,
        parse_int=_int_any_size,
    )


_any_size = {id(d): _any_size_decoder(d) for d in (_decoder, _surrogate_decoder)}


def _decode_any_size(decoder: json.JSONDecoder, text: str) -> Any:
    """``decoder.decode(text)``, integers of any size included (read again, only when
    the digit limit refused one, by a decoder that converts them itself)."""
    try:
        return decoder.decode(text)
    except ValueError as exc:
        if not _too_many_digits(exc):
            raise
    return _any_size[id(decoder)].decode(text)


def _loads(data: bytes | str) -> Any:
    """The standard library's reading, held to what orjson accepts, so that both modes
    read every damaged byte alike (docs/format.md, "Which lines count"): UTF-8 only
    (``json.loads`` of bytes would guess UTF-16 and let encoded surrogates through),
    no ``NaN`` or ``Infinity`` (not JSON), no unpaired surrogate escape (in a value a
    duplicate key discards too), and nesting up to :data:`READ_DEPTH` levels wherever
    the read happens, deeper being damage, not a crash."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    surrogates = "\\ud" in text or "\\uD" in text
    decoder = _surrogate_decoder if surrogates else _decoder
    roomy = sys.getrecursionlimit() > READ_DEPTH  # an app raised it: deeper may parse
    try:
        value = _decode_any_size(decoder, text)
    except RecursionError:
        try:
            with _stack_room():
                value = _decode_any_size(decoder, text)
        except RecursionError:  # orjson: "depth limit exceeded", a ValueError
            raise ValueError("nested too deeply to read") from None
        roomy = True
    if (
        roomy
        and text.count("{") + text.count("[") > READ_DEPTH
        and _depth(value, READ_DEPTH) > READ_DEPTH
    ):
        raise ValueError(f"nested deeper than {READ_DEPTH} levels")
    if surrogates:
        _check_text(value)
    return value


# orjson reads an integer beyond 64 bits as a float, silently. Such numbers have at
# least 19 digits in a row, so bytes holding such a run go to the standard library.
# Mapping every digit to "0" and everything else to " " finds a run in one C pass
# (a regular expression costs about eight times as much on journal lines).
_DIGIT_MAP = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_RUN = b"0" * 19


def _may_hold_big_int(raw: bytes) -> bool:
    return _LONG_RUN in raw.translate(_DIGIT_MAP)


def holds_digit_run(data: bytes) -> bool:
    """Whether ``data`` holds 19 digits in a row (it may hold an integer orjson would
    misread): what a writer notes so that its reader can use :func:`decode_plain`."""
    return _may_hold_big_int(data)


if PURE:

    def encode_derived(obj: Any) -> bytes:
        return _to_utf8(_encode(_compact_encoder, obj))

    def decode(data: bytes | str) -> Any:
        # Text through its UTF-8, as the fast mode reads it: a str holding an unpaired
        # surrogate (the character, not an escape) is damaged in both modes.
        return _loads(data.encode("utf-8") if isinstance(data, str) else data)

    def decode_plain(data: bytes | memoryview) -> Any:
        return _loads(bytes(data))

    def decoder_for(data: bytes) -> Callable[[bytes], Any]:
        return _loads

else:
    import orjson

    def encode_derived(obj: Any) -> bytes:
        """``obj`` as compact JSON in its own key order, for a derived file that is not
        kept in git (so not held to the byte-identical writing of the two modes): orjson
        where it can (ten times the standard library's speed), else the standard library
        (an integer beyond 64 bits)."""
        try:
            return orjson.dumps(obj)
        except TypeError:
            return _to_utf8(_encode(_compact_encoder, obj))

    def decode_plain(data: bytes | memoryview) -> Any:
        """:func:`decode` of bytes known to hold no run of 19 digits
        (:func:`holds_digit_run`): without looking for one again."""
        return orjson.loads(data)

    def decode(data: bytes | str) -> Any:
        raw = data.encode("utf-8") if isinstance(data, str) else data
        if _may_hold_big_int(raw):
            return _loads(raw)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            # Damaged: said in the standard library's words, as the pure mode says it
            # (what verify, show and the logs print does not depend on the mode).
            _loads(raw)
            raise

    def decoder_for(data: bytes) -> Callable[[bytes], Any]:
        """The decoder for the lines of ``data``: orjson when no line can hold a
        number orjson would misread (one check for the whole buffer)."""
        return decode if _may_hold_big_int(data) else orjson.loads


DecodeError = (ValueError, UnicodeDecodeError)
"""What :func:`decode` raises on damaged input (orjson's error is a ValueError too)."""

# _decode_joined puts this string between the lines. Drawn anew by each process and
# never written anywhere, so no line can hold it: see there.
_SEPARATOR = "".join(secrets.choice(string.ascii_lowercase) for _ in range(26))
_JOINER = b',"' + _SEPARATOR.encode("ascii") + b'",'


def decode_lines(lines: bytes) -> list[Any] | None:
    """The values of ``lines`` (complete lines, each ending with a newline); ``None``
    when a line is not one JSON value (the caller then decodes them one by one, to tell
    which).

    How, by measurement: orjson, a call per line (in C, ``map``): one call over the
    whole journal was as fast for lines of a few hundred bytes and half as fast for a
    journal of 16 KB prompts. The standard library: a call per line costs about as much
    as its decoding, so ASCII lines are decoded as one array (:func:`_decode_joined`),
    a third faster; not other lines, whose one string would be as wide as the widest
    character anywhere in them (twice the work for a journal with one emoji), nor lines
    with a surrogate escape, which the whole array would then be searched for.
    """
    if PURE and lines.isascii() and b"\\ud" not in lines and b"\\uD" not in lines:
        return _decode_joined(lines, lines.count(b"\n"))
    each = lines.split(b"\n")
    each.pop()  # what follows the last newline: nothing
    try:
        return list(map(decoder_for(lines), each))
    except DecodeError:
        return None


def _decode_joined(lines: bytes, count: int) -> list[Any] | None:
    """:func:`decode_lines` in one call: the lines become one array, ``[line1,"S",
    line2,"S",…]``. It can only decode to values alternating with the string ``S`` if
    each line is exactly one value: a line that is not (``1,2``, or a value begun on one
    line and ended on the next) would need ``S`` itself to end up in the array where a
    line's value belongs, and no line can write ``S``, drawn at random by this process.
    """
    if not count:
        return []
    joined = b"[" + lines[:-1].replace(b"\n", _JOINER) + b"]"
    try:
        values = _loads(joined)
    except DecodeError:
        return None
    if (
        type(values) is not list
        or len(values) != 2 * count - 1
        or values[1::2].count(_SEPARATOR) != count - 1
    ):
        return None
    return values[::2]


def read_document(path: Path, required: tuple[str, ...]) -> dict[str, Any] | None:
    """A whole JSON document whose ``required`` keys are strings; ``None`` if the file
    does not exist, :class:`CorruptFileError` if it cannot be what it should be."""
    try:
        data = _fs.read_bytes(path)
    except NotRegularFileError as exc:
        raise CorruptFileError(
            path, "not a regular file (a symbolic link, a directory, a FIFO...)"
        ) from exc
    if data is None:
        return None
    try:
        doc = decode(data)
    except DecodeError as exc:
        raise CorruptFileError(path, f"not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise CorruptFileError(path, "not a JSON object")
    missing = [key for key in required if not isinstance(doc.get(key), str)]
    if missing:
        raise CorruptFileError(path, f"no string {', '.join(map(repr, missing))}")
    if not isinstance(doc.get("metadata"), dict):
        doc["metadata"] = {}
    return doc
