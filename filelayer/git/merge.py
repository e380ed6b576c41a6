"""Merging two versions of an archive file, as git's merge driver for the archive.

Git calls ``filelayer merge-driver %O %A %B %P`` for every archive file both branches
changed (the archive's ``.gitattributes`` names the driver, ``filelayer git-setup``
registers it). The result depends only on the three versions, never on which side is
"ours": merging A into B and B into A give the same bytes.

- **JSON Lines** (``steps.jsonl``, ``deleted.jsonl``): a de-duplicated union of the
  lines, less the lines of the common ancestor that one side removed (a compaction on
  that side folded them into its own lines), in the journal's order
  (:func:`filelayer.journal.order_keys`): what the fold reads is then what it would have
  read had both sides' writes landed in one file. Where both sides compacted, a side's
  unstamped copy of a record it left unchanged gives way to the other side's change
  (:func:`_stale_copies`).
- **Whole documents** (``thread.json``, ``users/*.json``): merged key by key. A key
  only one side changed takes that side's value; a dict both changed (``metadata``) is
  merged the same way inside; a value both changed to different values is decided by
  the ordering rule of docs/format.md: ``createdAt`` keeps the earliest, ``updatedAt``
  the latest, any other the side changed last (the later ``updatedAt``), and if that
  ties, the greater encoded value. Times are compared as the instants they name
  (:func:`filelayer._time.time_key`), never as text: writers spell one instant
  ``…:00Z``, ``…:00.000Z`` or ``…+01:00``, and as text ``…:00Z`` sorts after
  ``…:00.5Z``.
"""

from __future__ import annotations

from typing import Any

from .._io import fs as _fs
from .._time import time_key
from ..errors import MergeError
from ..format import clock, journal
from ..format import codec as _codec


def _lines(data: bytes) -> list[bytes]:
    # A torn last line (a crash mid-append was committed) was never acknowledged to
    # anyone: it is left out rather than made a damaged line of the merge.
    lines, _ = _fs.split_lines(data)
    return [line for line in lines if line.strip()]


def _stamp(line: bytes) -> str | None:
    stamp = clock.stamp_of_line(line)
    if stamp is not None:
        return stamp
    try:  # another writer's line, keys in another order
        record = _codec.decode(line)
    except _codec.DecodeError:
        return None
    value = record.get(clock.STAMP_KEY) if isinstance(record, dict) else None
    return value if clock.is_stamp(value) else None


def _groups(lines: list[bytes]) -> tuple[set[bytes], dict[str, list[bytes]]]:
    """A file's stamped lines, and its unstamped lines grouped by the stamp before them
    (``""`` before any), each group in file order."""
    stamped: set[bytes] = set()
    groups: dict[str, list[bytes]] = {}
    last = ""
    for line in lines:
        stamp = _stamp(line)
        if stamp is not None:
            stamped.add(line)
            last = stamp
        else:
            groups.setdefault(last, []).append(line)
    return stamped, groups


_COPIED_OPS = ("step", "feedback", "element")
"""The records a compaction writes one copy of per live id."""


def _copy_key(line: bytes) -> tuple[str, str] | None:
    """Which record a compacted line is the copy of: (op, id)."""
    try:
        record = _codec.decode(line)
    except _codec.DecodeError:
        return None
    if not isinstance(record, dict):
        return None
    op = record.get("op")
    body = record.get(op) if op in _COPIED_OPS else None
    if isinstance(body, dict) and isinstance(body.get("id"), str):
        return str(op), body["id"]
    return None


def _stale_copies(o: list[bytes], a: list[bytes], b: list[bytes], o_set: set[bytes]) -> set[bytes]:
    """The lines a compaction on one side wrote of records that side left as the
    common ancestor had them, where a compaction on the other side changed them (or,
    for a feedback, withdrew it: a compaction keeps no trace of withdrawn feedback).

    Both sides' compactions hold a copy of every record, neither stamped; without this
    the copy of one side would win over the other's change by the order of their bytes
    (an edit reverted, a withdrawn rating back). A side left a record as it was when
    its copy is the very line the ancestor compacts to (compaction is deterministic).
    Dropping that copy loses nothing: the other side's copy is the whole record too.
    Only when both sides compacted (each removed lines of the ancestor, and wrote
    unstamped ones): otherwise the stamped lines decide, and an unstamped line another
    program appended is no copy of anything."""
    a_set, b_set = set(a), set(b)
    if not (o_set - a_set) or not (o_set - b_set):
        return set()
    a_new = [line for line in a if line not in o_set and _stamp(line) is None]
    b_new = [line for line in b if line not in o_set and _stamp(line) is None]
    if not a_new or not b_new:
        return set()
    records = []
    for line in o:  # the ancestor's records; a damaged line is the fold's to skip, quietly
        try:
            value = _codec.decode(line)
        except _codec.DecodeError:
            continue
        if type(value) is dict and journal.well_formed(value):
            records.append(value)
    ancestor = {
        _codec.encode_line(r)[:-1] for r in journal.compacted_records(journal.fold(records))
    }

    def copies(lines: list[bytes]) -> dict[tuple[str, str], list[bytes]]:
        found: dict[tuple[str, str], list[bytes]] = {}
        for line in lines:
            key = _copy_key(line)
            if key is not None:
                found.setdefault(key, []).append(line)
        return found

    a_copies, b_copies = copies(a_new), copies(b_new)
    stale: set[bytes] = set()
    for mine, other in ((a_copies, b_copies), (b_copies, a_copies)):
        for key, lines in mine.items():
            if not all(line in ancestor for line in lines):
                continue  # this side changed it
            theirs = other.get(key)
            if theirs is None:
                if key[0] == "feedback":
                    stale.update(lines)  # withdrawn on the other side
            elif not all(line in ancestor for line in theirs):
                stale.update(lines)
    return stale


def merge_lines(base: bytes, ours: bytes, theirs: bytes) -> bytes:
    """The merge of two versions of a JSON Lines file of the archive (see the module)."""
    o, a, b = _lines(base), _lines(ours), _lines(theirs)
    o_set, a_set, b_set = set(o), set(a), set(b)
    removed = (o_set - a_set) | (o_set - b_set) | _stale_copies(o, a, b, o_set)
    keyed: dict[bytes, tuple[str, int, bytes, int]] = {}
    a_stamped, a_groups = _groups(a)
    b_stamped, b_groups = _groups(b)
    for line in a_stamped | b_stamped:
        if line not in removed:
            keyed[line] = (_stamp(line) or "", 0, line, 0)
    # Anchors in order: a line the two versions put after different stamped lines goes
    # after the earlier one, whatever the order a set iterates in (the hash seed) and
    # whichever side is "ours".
    for anchor in sorted(set(a_groups) | set(b_groups)):
        first, second = sorted([a_groups.get(anchor, []), b_groups.get(anchor, [])])
        merged = list(dict.fromkeys(first + second))
        for n, line in enumerate(merged):
            if line not in removed and line not in keyed:
                keyed[line] = (anchor, 1, b"", n)
    ordered = sorted(keyed, key=keyed.__getitem__)
    return b"".join(line + b"\n" for line in ordered)


def _decode_document(data: bytes, what: str) -> dict[str, Any] | None:
    if not data.strip():
        return None
    try:
        doc = _codec.decode(data)
    except _codec.DecodeError as exc:
        raise MergeError(what, f"not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise MergeError(what, "not a JSON object")
    return doc


def _instant(value: str) -> tuple[str, str]:
    """What orders two times in a merge: the instant (:func:`time_key`; a value that
    is no time is its own key), then the text, so that two spellings of one instant
    (``…:00Z``, ``…:00.000Z``) still give one answer whichever side is "ours"."""
    return time_key(value), value


def _same(one: Any, other: Any, missing: object) -> bool:
    """Whether two values are one JSON value: compared as their encodings, because
    Python holds ``1``, ``1.0`` and ``true`` (or ``0`` and ``-0.0``) equal, and a merge
    that took them for one would keep whichever side is "ours"."""
    if one is missing or other is missing:
        return one is other
    return _codec.encode_line(one) == _codec.encode_line(other)


_DOWN = object()
"""What :func:`_merge_values` answers for two dicts both sides changed: merged key by key."""


def _merge_values(key: str, base: Any, ours: Any, theirs: Any, later: int, missing: object) -> Any:
    if _same(ours, theirs, missing):
        return ours
    if _same(ours, base, missing):
        return theirs
    if _same(theirs, base, missing):
        return ours
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return _DOWN
    if missing in (ours, theirs):  # removed on one side, changed on the other
        return theirs if ours is missing else ours
    if key == "createdAt" and isinstance(ours, str) and isinstance(theirs, str):
        return min(ours, theirs, key=_instant)
    if key == "updatedAt" and isinstance(ours, str) and isinstance(theirs, str):
        return max(ours, theirs, key=_instant)
    if later:
        return ours if later > 0 else theirs
    return max(ours, theirs, key=_codec.encode_line)


def _merge_dicts(
    base: dict[str, Any], ours: dict[str, Any], theirs: dict[str, Any], later: int
) -> dict[str, Any]:
    """Three versions of a dict merged key by key, going down into the dicts both sides
    changed. With a stack of its own, not a recursion: documents as deeply nested as
    the archive takes must not exhaust the interpreter's."""
    missing = object()
    merged: dict[str, Any] = {}
    todo = [(merged, base, ours, theirs)]
    while todo:
        result, o, a, b = todo.pop()
        for key in sorted(set(o) | set(a) | set(b)):
            old, mine, other = o.get(key, missing), a.get(key, missing), b.get(key, missing)
            value = _merge_values(key, old, mine, other, later, missing)
            if value is _DOWN:
                value = {}
                todo.append((value, old if isinstance(old, dict) else {}, mine, other))
            if value is not missing:
                result[key] = value
    return merged


def merge_documents(base: bytes, ours: bytes, theirs: bytes, what: str = "document") -> bytes:
    """The merge of two versions of a whole JSON document of the archive (see the
    module). A side that deleted the file while the other changed it: the changed
    version (a deleted thread is deleted by its tombstone, not by its manifest)."""
    o = _decode_document(base, what) or {}
    a = _decode_document(ours, what)
    b = _decode_document(theirs, what)
    if a is None or b is None:
        kept = a if a is not None else b
        return _codec.encode_document(kept) if kept is not None else b""
    # Which side changed last: by instant; one instant spelled two ways is a tie,
    # decided value by value (the greater encoded value), the same in both directions.
    a_time = time_key(str(a.get("updatedAt") or ""))
    b_time = time_key(str(b.get("updatedAt") or ""))
    later = (a_time > b_time) - (a_time < b_time)
    return _codec.encode_document(_merge_dicts(o, a, b, later))


# Keys only a record of a JSON Lines file of the archive has: every journal record
# has ``op``, every tombstone ``deletedAt``.
_RECORD_KEYS = frozenset({"op", "deletedAt"})


def _shape(data: bytes, what: str) -> str | None:
    """What one version is, by its bytes: ``"document"`` (one JSON object, indented over
    several lines, or on one line without the newline every JSON Lines record ends
    with), ``"lines"`` (several lines, at least one a JSON object), ``"record"`` (one
    line that is a JSON Lines record), ``"line"`` (one other JSON object and its
    newline: a document or a record, no telling), ``None`` (empty); neither JSON
    Lines nor a document: :class:`MergeError`."""
    if not data.strip():
        return None
    try:
        doc = _codec.decode(data)
    except _codec.DecodeError:
        doc = None
    else:
        if not isinstance(doc, dict):
            raise MergeError(what, "not a JSON object")
        if b"\n" in data.strip() or not data.endswith(b"\n"):
            return "document"
        return "record" if _RECORD_KEYS & set(doc) else "line"
    for line in _lines(data):
        try:
            if isinstance(_codec.decode(line), dict):
                return "lines"
        except _codec.DecodeError:
            continue
    raise MergeError(what, "neither a JSON document nor JSON Lines")


def _kind(what: str, *versions: bytes) -> str:
    """Whether versions git names by temporary files only are a whole document or JSON
    Lines. A compact document on one line with a newline is also a JSON Lines file of
    one line: merged as lines, two versions of it would become two objects in one
    file, and merged as a document, two journal records would become one. So versions
    that disagree, or that are all such lines and not all records, are left
    conflicted (:class:`MergeError`) rather than merged the wrong way."""
    shapes = {_shape(data, what) for data in versions} - {None}
    if "document" in shapes and shapes & {"lines", "record"}:
        raise MergeError(what, "a whole document in one version, JSON Lines in another")
    if "document" in shapes:
        return "document"
    if "line" not in shapes:
        return "lines"  # records only, or all empty
    raise MergeError(what, "a JSON object on one line: a document or a record, no telling")


def merge_file(path: str, base: bytes, ours: bytes, theirs: bytes) -> bytes:
    """Merge by the kind of archive file ``path`` (git's ``%P``) names; without a path
    that names one (a driver registered as ``merge-driver %O %A %B``: git's temporary
    file names), by what the versions hold (:func:`_kind`)."""
    if path.endswith(".jsonl"):
        return merge_lines(base, ours, theirs)
    if path.endswith(".json"):
        return merge_documents(base, ours, theirs, path)
    what = path or "document"
    if _kind(what, base, ours, theirs) == "document":
        return merge_documents(base, ours, theirs, what)
    return merge_lines(base, ours, theirs)
