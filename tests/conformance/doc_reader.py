"""A reader written from docs/format.md alone, as another implementation would be.

    python doc_reader.py ARCHIVE OUT

It imports nothing from filelayer (standard library only) and writes the corpus's shape
(``OUT/threads/<id>.json`` and ``OUT/archive.json``, see "Conformance corpus" in
docs/format.md). tests/format/test_conformance.py runs it over every case: where it and the
expected reading disagree, the document is not precise enough, or not true.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import unicodedata
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

OPS = {"step", "step.delete", "feedback", "feedback.delete", "element", "element.delete"}
MESSAGES = {"user_message", "assistant_message", "system_message"}
STEP_DEFAULTS: dict[str, Any] = {
    "name": "", "type": "undefined", "parentId": None, "input": "", "output": "",
    "metadata": {}, "tags": None, "createdAt": None, "start": None, "end": None,
    "isError": False, "showInput": None, "language": None, "generation": None,
    "waitForAnswer": None, "defaultOpen": None, "autoCollapse": None,
}  # fmt: skip
ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
DEVICES = {"CON", "PRN", "AUX", "NUL"} | {f"{p}{n}" for p in ("COM", "LPT") for n in range(1, 10)}
TIME = re.compile(r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})?")


def valid_id(s: str) -> bool:
    return bool(ID.fullmatch(s)) and not s.endswith(".") and s.split(".")[0].upper() not in DEVICES


def key(t: str) -> str:
    m = TIME.fullmatch(t)
    if not m:
        return t
    day, clock, frac, off = m.groups()
    base = f"{day}T{clock}"
    if off and off not in ("Z", "+00:00", "-00:00"):
        sign = 1 if off[0] == "+" else -1
        moment = datetime.fromisoformat(base) - sign * timedelta(
            hours=int(off[1:3]), minutes=int(off[4:6])
        )
        base = f"{moment.year:04d}-{moment.strftime('%m-%dT%H:%M:%S')}"
    return f"{base}.{(frac or '').ljust(9, '0')}"


def index_form(t: str) -> str:
    k = key(t)
    return k if k == t or len(k) != 29 else k[:26] + "Z"


def lines_of(data: bytes) -> list[bytes]:
    end = data.rfind(b"\n")
    return [] if end < 0 else data[:end].split(b"\n")


def no_constant(name: str) -> Any:
    raise ValueError(name)  # NaN and Infinity are not JSON


def decode(line: bytes) -> Any:
    try:
        value = json.loads(line.decode("utf-8"), parse_constant=no_constant)
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # no unpaired surrogate
        return value
    except ValueError:  # UnicodeDecodeError and UnicodeEncodeError included
        return None


def counts(r: Any) -> bool:
    if not isinstance(r, dict) or r.get("op") not in OPS:
        return False
    op = r["op"]
    if op in ("step", "feedback", "element"):
        return isinstance(r.get(op), dict) and isinstance(r[op].get("id"), str)
    return isinstance(r.get("id"), str)


def for_id(d: dict[str, Any]) -> str | None:
    v = d.get("forId")
    return v if isinstance(v, str) else None


def merge(stored: dict[str, Any], new: dict[str, Any]) -> None:
    for k, v in new.items():
        if v is None:
            continue
        old = stored.get(k)
        if k in ("createdAt", "start", "end") and isinstance(old, str) and isinstance(v, str) and v:
            if k == "end":
                stored[k] = v if key(v) > key(old) else old
            else:
                stored[k] = (v if key(v) < key(old) else old) if old else v
            continue
        if (v == "" or v == {}) and old not in ("", {}, [], 0, False, None):
            continue
        stored[k] = v


def fold(records: list[dict[str, Any]]) -> tuple[dict, dict, dict, list[str]]:
    steps: dict[str, dict[str, Any]] = {}
    first: list[str] = []  # step ids by first appearance
    dsteps: set[str] = set()
    feedback: dict[str, dict[str, Any]] = {}
    elements: dict[str, dict[str, Any]] = {}
    delems: set[str] = set()
    for r in records:
        op = r["op"]
        if op == "step":
            body = {k: v for k, v in r["step"].items() if k not in ("feedback", "streaming")}
            sid = body["id"]
            if sid in dsteps:
                continue
            if sid in steps:
                merge(steps[sid], body)
            else:
                steps[sid] = {k: v for k, v in body.items() if v is not None}
                first.append(sid)
        elif op == "step.delete":
            sid = r["id"]
            dsteps.add(sid)
            steps.pop(sid, None)
            feedback = {f: fb for f, fb in feedback.items() if for_id(fb) != sid}
            for eid in [e for e, el in elements.items() if for_id(el) == sid]:
                delems.add(eid)
                del elements[eid]
        elif op == "feedback":
            fb = r["feedback"]
            if for_id(fb) in dsteps:
                continue
            feedback = {f: o for f, o in feedback.items() if for_id(o) != for_id(fb)}
            feedback[fb["id"]] = dict(fb)
        elif op == "feedback.delete":
            feedback.pop(r["id"], None)
        elif op == "element":
            el = r["element"]
            if el["id"] in delems:
                continue
            if for_id(el) in dsteps:
                delems.add(el["id"])
                elements.pop(el["id"], None)
                continue
            elements.setdefault(el["id"], {}).update({k: v for k, v in el.items() if v is not None})
        elif op == "element.delete":
            delems.add(r["id"])
            elements.pop(r["id"], None)
    return steps, feedback, elements, first


def order(steps: dict[str, dict[str, Any]], first: list[str]) -> list[dict[str, Any]]:
    live = [s for s in first if s in steps]
    pos = {s: n for n, s in enumerate(first)}
    sort_time: dict[str, str] = {}
    greatest = ""
    for sid in live:
        st = steps[sid]
        own = next(
            (st[k] for k in ("createdAt", "start") if isinstance(st.get(k), str) and st[k]), None
        )
        sort_time[sid] = key(own) if own is not None else greatest
        greatest = max(greatest, sort_time[sid])
    ordered_ids = sorted(live, key=lambda s: (sort_time[s], pos[s]))
    placed: list[str] = []
    done: set[str] = set()
    waiting: dict[str, list[str]] = {}

    def place(sid: str) -> None:
        if sid in done:
            return
        placed.append(sid)
        done.add(sid)
        for child in waiting.pop(sid, []):
            place(child)

    for sid in ordered_ids:
        parent = steps[sid].get("parentId")
        if isinstance(parent, str) and parent in steps and parent != sid and parent not in done:
            waiting.setdefault(parent, []).append(sid)
        else:
            place(sid)
    for sid in ordered_ids:
        place(sid)
    return [steps[s] for s in placed]


def read_json(path: Path) -> Any:
    try:
        return decode(path.read_bytes()) if path.is_file() else None
    except OSError:
        return None


def user_file_name(identifier: str) -> str:
    text = unicodedata.normalize("NFKD", identifier).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].strip("-") or "user"
    return f"{slug}-{hashlib.sha256(identifier.encode('utf-8')).hexdigest()[:16]}.json"


def dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def read(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    deleted: set[str] = set()
    tomb = root / "deleted.jsonl"
    for line in lines_of(tomb.read_bytes() if tomb.is_file() else b""):
        r = decode(line)
        if isinstance(r, dict) and isinstance(r.get("id"), str):
            deleted.add(r["id"])
    found, not_found, damaged, files, listed = [], [], {}, {}, []
    tdir = root / "threads"
    names = sorted(p.name for p in tdir.iterdir() if p.is_dir()) if tdir.is_dir() else []
    for tid in names:
        if tid.startswith(".") or not valid_id(tid):
            continue
        d = tdir / tid
        has_m, has_j = (d / "thread.json").is_file(), (d / "steps.jsonl").is_file()
        if tid in deleted or not (has_m or has_j):
            not_found.append(tid)
            continue
        found.append(tid)
        m = read_json(d / "thread.json")
        if not (isinstance(m, dict) and isinstance(m.get("id"), str)):
            m = {"metadata": {}, "createdAt": "", "updatedAt": ""}
        records, bad = [], []
        raw = (d / "steps.jsonl").read_bytes() if has_j else b""
        for n, line in enumerate(lines_of(raw), start=1):
            if not line.strip():
                continue
            r = decode(line)
            (records.append(r) if counts(r) else bad.append(n))
        if bad:
            damaged[tid] = bad
        steps, feedback, elements, first = fold(records)
        by_step = {for_id(fb): fb for fb in feedback.values() if for_id(fb) in steps}
        step_views = []
        for st in order(steps, first):
            view = {**STEP_DEFAULTS, **json.loads(json.dumps(st))}
            view["threadId"], view["streaming"] = tid, False
            fb = by_step.get(st["id"])
            view["feedback"] = (
                {k: fb.get(k) for k in ("id", "forId", "value", "comment")} if fb else None
            )
            step_views.append(view)
        element_views = []
        for el in elements.values():
            view = {k: v for k, v in el.items() if k not in ("file", "bytes", "sha256")}
            view["threadId"] = tid
            if not view.get("url"):
                view["url"] = None
            view.setdefault("props", {} if el.get("type") == "custom" else None)
            element_views.append(view)
            f = el.get("file")
            name = f.split("/") if isinstance(f, str) else []
            if (
                len(name) == 2
                and name[0] == "elements"
                and name[1] not in ("", "..")
                and not name[1].startswith(".")
                and not ("\\" in name[1] or "\x00" in name[1])
                and (d / "elements" / name[1]).is_file()
            ):
                data = (d / "elements" / name[1]).read_bytes()
                files[f"{tid}/{el['id']}"] = {"file": f, "sha256": hashlib.sha256(data).hexdigest()}
        metadata = m.get("metadata")
        thread = {
            "id": tid,
            "createdAt": m.get("createdAt") or "",
            "updatedAt": m.get("updatedAt") or "",
            "name": m.get("name"),
            "userId": m.get("userId"),
            "userIdentifier": m.get("userIdentifier"),
            "tags": m.get("tags"),
            "metadata": metadata if isinstance(metadata, dict) else {},
            "steps": step_views,
            "elements": element_views,
        }
        out[f"threads/{tid}.json"] = dump(thread)
        times = [m.get("createdAt")] + [
            st.get("createdAt") or st.get("start")
            for st in steps.values()
            if st.get("type") in MESSAGES
        ]
        keys = [index_form(t) for t in times if isinstance(t, str) and t]
        listed.append({"id": tid, "activity": max(keys, key=key, default="")})
    listed.sort(key=lambda t: (t["activity"], t["id"]), reverse=True)
    users = {}
    udir = root / "users"
    for path in sorted(udir.glob("*.json")) if udir.is_dir() else []:
        doc = read_json(path)
        if not (isinstance(doc, dict) and isinstance(doc.get("id"), str)):
            continue
        ident = doc.get("identifier")
        if isinstance(ident, str) and path.name == user_file_name(ident):
            if not isinstance(doc.get("metadata"), dict):
                doc["metadata"] = {}
            users[ident] = doc
    out["archive.json"] = dump(
        {
            "threads": found,
            "notFound": not_found,
            "deleted": sorted(deleted),
            "damagedLines": damaged,
            "elementFiles": files,
            "users": users,
            "list": listed,
        }
    )
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[1])
    for relative, text in read(Path(argv[0])).items():
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        (out / relative).write_text(text, encoding="utf-8", newline="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
