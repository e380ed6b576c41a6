"""Write the conformance corpus: small archives, each with its expected reading.

    python tests/conformance/make_corpus.py            # (re)write every generated case
    python tests/conformance/make_corpus.py --release  # add this version's release archive

Each case is ``tests/conformance/<case>/archive/`` (an archive) and
``tests/conformance/<case>/expected/`` (what ``read_archive.py`` reads from it: one JSON
file per thread and ``archive.json``). Most of an archive is written through the layer
itself (``ArchiveStore``), with a fixed clock and fixed user ids so that the same code
writes the same bytes; what the layer never writes (torn and damaged lines, lines in an
order only a crash or another writer makes, hand edits) is appended by hand, as bytes.
The expected readings were checked by hand against docs/format.md; after a change of the
rules (the ordering rule of the teams work, for one), regenerate, and review the diff of
``expected/`` line by line before committing it.

Release archives (``release-<version>/``) are different: written once, by that release,
and never regenerated; every later version must read them the same.
"""

from __future__ import annotations

import argparse
import itertools
import secrets
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import read_archive  # noqa: E402

from filelayer import ArchiveStore, _time  # noqa: E402
from filelayer.format import codec as _codec  # noqa: E402

CASES: dict[str, Callable[[Path], None]] = {}


def case(fn: Callable[[Path], None]) -> Callable[[Path], None]:
    CASES[fn.__name__.replace("_", "-")] = fn
    return fn


def at(minute: int, second: float = 0) -> str:
    return f"2026-05-01T10:{minute:02d}:{second:09.6f}Z"


@contextmanager
def fixed_clock() -> Iterator[None]:
    """Every time the layer stamps (manifests, users, tombstones), every user id and
    every random file name it draws comes from a counter, so a regenerated case has the
    same bytes."""
    ticks = itertools.count(1)
    ids = itertools.count(1)
    patched: list[tuple[Any, str, Any]] = []

    def now() -> str:
        return f"2026-04-30T00:00:{next(ticks):02d}.000000Z"

    def uuid4() -> uuid.UUID:
        return uuid.UUID(int=next(ids))

    for name, module in list(sys.modules.items()):
        if name.startswith("filelayer") and hasattr(module, "now_iso"):
            patched.append((module, "now_iso", module.now_iso))
            module.now_iso = now

    def token_hex(nbytes: int | None = None) -> str:
        return f"{next(ids):0{2 * (nbytes or 32)}x}"

    patched.append((uuid, "uuid4", uuid.uuid4))
    uuid.uuid4 = uuid4  # type: ignore[assignment]
    patched.append((secrets, "token_hex", secrets.token_hex))  # the index file's name
    secrets.token_hex = token_hex
    try:
        yield
    finally:
        for module, attr, value in patched:
            setattr(module, attr, value)
        # A module first imported inside the block (``from .._time import now_iso``)
        # took the fixed clock: it would keep it for the rest of the process, and a
        # later test stamp its times from a dead counter.
        from filelayer import _time

        for name, module in list(sys.modules.items()):
            if name.startswith("filelayer") and getattr(module, "now_iso", None) is now:
                module.now_iso = _time.now_iso


def append_raw(path: Path, data: bytes) -> None:
    """Bytes appended as they are: what only a crash or another program leaves."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        f.write(data)


def line(record: dict[str, Any]) -> bytes:
    return _codec.encode_line(record)


def journal_of(root: Path, thread_id: str) -> Path:
    return root / "threads" / thread_id / "steps.jsonl"


def msg(thread: str, sid: str, kind: str, text: str, t: str, **extra: Any) -> dict[str, Any]:
    return {"id": sid, "threadId": thread, "type": kind, "output": text, "createdAt": t, **extra}


# -- the cases ---------------------------------------------------------------------------


@case
def users_and_threads(root: Path) -> None:
    """Several users, renames, tags, metadata, a run with a tool step, feedback, a
    favorite, stored, URL-only and re-sent elements."""
    store = ArchiveStore(root)
    alice = store.upsert_user("alice@example.com", {"provider": "credentials"})
    zoe = store.upsert_user("Zoë Ünïcode", {"provider": "oauth"}, display_name="Zoë")
    store.upsert_user("alice@example.com", {"provider": "oauth"})  # metadata replaced
    store.upsert_user("x" * 60 + "@long.example.com", None)  # slug clipped at 40
    store.update_thread("t-alice", name="First name", user_id=alice["id"], tags=["a"])
    store.write_step(msg("t-alice", "u1", "user_message", "Hello", at(0)))
    store.write_step(
        {
            "id": "r1",
            "threadId": "t-alice",
            "type": "run",
            "name": "on_message",
            "createdAt": at(1),
            "start": at(1),
        }
    )
    store.write_step(
        {
            "id": "tool1",
            "threadId": "t-alice",
            "parentId": "r1",
            "type": "tool",
            "name": "search",
            "input": '{"q": "x"}',
            "output": "3 hits",
            "showInput": "json",
            "createdAt": at(1, 0.5),
            "start": at(1, 0.5),
            "end": at(1, 2),
            "isError": False,
        }
    )
    store.write_step(msg("t-alice", "a1", "assistant_message", "", at(2), parentId="r1"))
    store.write_step({"id": "a1", "threadId": "t-alice", "output": "Hi **there**", "end": at(3)})
    store.upsert_feedback(for_id="a1", value=1, comment="good", feedback_id="fb1")
    store.write_step({"id": "u1", "threadId": "t-alice", "metadata": {"favorite": True}})
    store.put_element(
        "t-alice",
        {
            "id": "e-img",
            "type": "image",
            "name": "chart.png",
            "mime": "image/png",
            "display": "inline",
            "forId": "a1",
        },
        b"\x89PNG\r\n\x1a\n not really a chart",
    )
    store.put_element(
        "t-alice",
        {
            "id": "e-url",
            "type": "file",
            "name": "paper.pdf",
            "display": "side",
            "url": "https://example.com/paper.pdf",
            "forId": "u1",
        },
        None,
    )
    store.put_element(
        "t-alice",
        {
            "id": "e-img",
            "type": "image",
            "name": "chart-v2.png",
            "mime": "image/png",
            "display": "side",
            "forId": "a1",
        },
        b"\x89PNG\r\n\x1a\n chart, second version",
    )
    store.update_thread("t-alice", name="Renamed", metadata={"chat_profile": "default"})
    store.update_thread("t-alice", metadata={"chat_profile": None, "k": 1}, tags=["a", "b"])
    store.update_thread("t-zoe", name="Grüße", user_id=zoe["id"])
    store.write_step(msg("t-zoe", "zu1", "user_message", "Grüß dich ✓", at(5)))
    store.write_step(msg("t-zoe", "za1", "assistant_message", "Hallo!", at(6), name="Bot"))
    store.update_thread("t-nobody", name="No login")  # a thread without an author
    store.write_step(msg("t-nobody", "n1", "user_message", "anonymous", at(7)))
    store.close()


@case
def journal_operations(root: Path) -> None:
    """Every journal operation through the layer, then lines only a race or another
    writer leaves: feedback before its step, late writes for deleted ids."""
    store = ArchiveStore(root)
    t = "t-ops"
    store.update_thread(t, name="Operations")
    for n, (sid, kind) in enumerate(
        [
            ("s1", "user_message"),
            ("s2", "assistant_message"),
            ("s3", "user_message"),
            ("s4", "assistant_message"),
            ("s5", "user_message"),
        ]
    ):
        store.write_step(msg(t, sid, kind, f"text {sid}", at(n)))
    store.write_step(msg(t, "s2c", "tool", "child of s2", at(1, 30), parentId="s2"))
    store.upsert_feedback(for_id="s2", value=1, comment="kept", feedback_id="fb-keep")
    store.upsert_feedback(for_id="s4", value=0, comment="goes with s4", feedback_id="fb-s4")
    store.put_element(t, {"id": "el-s4", "type": "file", "name": "s4.txt", "forId": "s4"}, b"4")
    store.put_element(t, {"id": "el-1", "type": "file", "name": "one.txt", "forId": "s1"}, b"1")
    store.put_element(t, {"id": "el-2", "type": "file", "name": "two.txt", "forId": "s3"}, b"2")
    store.put_element(t, {"id": "el-0", "type": "file", "name": "zero.txt", "forId": "s1"}, b"0")
    store.delete_element("el-2", t)
    store.delete_step("s4", t)  # its feedback and element go with it
    store.delete_step("s2", t)  # its child s2c stays, without its parent
    # feedback withdrawn, then its id given again; another id replacing a step's feedback
    store.upsert_feedback(for_id="s1", value=1, comment="first", feedback_id="fb-re")
    store.delete_feedback("fb-re")
    store.upsert_feedback(for_id="s3", value=0, comment="again", feedback_id="fb-re")
    store.upsert_feedback(for_id="s5", value=1, feedback_id="fb-a")
    store.upsert_feedback(for_id="s5", value=0, comment="changed my mind", feedback_id="fb-b")
    # a feedback id that moves to another step
    store.upsert_feedback(for_id="s1", value=1, comment="moves", feedback_id="fb-move")
    store.upsert_feedback(for_id="s2c", value=0, comment="moved", feedback_id="fb-move")
    store.close()
    append_raw(
        journal_of(root, t),
        line({"op": "feedback", "feedback": {"id": "fb-early", "forId": "s6", "value": 1}})
        + line({"op": "step", "step": msg(t, "s6", "assistant_message", "late step", at(9))})
        + line({"op": "step", "step": {"id": "s4", "output": "late write to s4"}})
        + line({"op": "feedback", "feedback": {"id": "fb-dead", "forId": "s4", "value": 1}})
        + line(
            {
                "op": "element",
                "element": {"id": "el-late", "forId": "s4", "type": "file", "name": "late.txt"},
            }
        )
        + line(
            {
                "op": "element",
                "element": {"id": "el-late", "forId": "s1", "type": "file", "name": "late.txt"},
            }
        )
        + line(
            {
                "op": "element",
                "element": {"id": "el-2", "forId": "s1", "type": "file", "name": "back?.txt"},
            }
        )
        + line({"op": "element", "element": {"id": "el-1", "name": "one, renamed.txt"}}),
    )


@case
def merge_out_of_order(root: Path) -> None:
    """Writes of one step landing in any order: the merge rules, line by line."""
    store = ArchiveStore(root)
    t = "t-merge"
    store.update_thread(t, name="Merge")
    store.close()
    lines = [
        # The final text lands before the creation with its empty output (Chainlit #2789).
        {"op": "step", "step": {"id": "m1", "threadId": t, "output": "final", "end": at(1, 5)}},
        {
            "op": "step",
            "step": {
                "id": "m1",
                "threadId": t,
                "type": "assistant_message",
                "output": "",
                "createdAt": at(1),
                "start": at(1),
                "end": at(1, 1),
                "metadata": {},
                "input": "",
            },
        },
        # metadata is replaced whole; [], false and 0 overwrite; tags replaced
        {
            "op": "step",
            "step": {
                "id": "m2",
                "threadId": t,
                "type": "tool",
                "name": "calc",
                "createdAt": at(2),
                "metadata": {"a": 1, "b": 2},
                "tags": ["x"],
                "isError": True,
                "input": "1+1",
            },
        },
        {
            "op": "step",
            "step": {"id": "m2", "metadata": {"b": 3}, "tags": [], "isError": False, "output": 0},
        },
        {"op": "step", "step": {"id": "m2", "metadata": {}, "input": "", "name": ""}},
        # createdAt keeps the earliest instant, whatever its number of fractional digits
        {
            "op": "step",
            "step": {
                "id": "m3",
                "threadId": t,
                "type": "user_message",
                "output": "times",
                "createdAt": "2026-05-01T10:03:00.5Z",
            },
        },
        {
            "op": "step",
            "step": {
                "id": "m3",
                "createdAt": "2026-05-01T10:03:00Z",
                "end": "2026-05-01T10:03:01.250Z",
            },
        },
        {
            "op": "step",
            "step": {
                "id": "m3",
                "createdAt": "2026-05-01T10:03:00.100000Z",
                "end": "2026-05-01T10:03:01.2Z",
            },
        },
        # older writers kept feedback and streaming in a step body: ignored
        {
            "op": "step",
            "step": {
                "id": "m4",
                "threadId": t,
                "type": "assistant_message",
                "output": "old writer",
                "createdAt": at(4),
                "streaming": True,
                "feedback": {"id": "x", "forId": "m4", "value": 1},
            },
        },
        # a null in a first line is no value: the step reads with the defaults
        {
            "op": "step",
            "step": {
                "id": "m5",
                "threadId": t,
                "type": "tool",
                "createdAt": at(5),
                "output": None,
                "input": None,
                "isError": None,
            },
        },
        # a null in a line never overwrites
        {"op": "step", "step": {"id": "m4", "output": None, "name": None}},
        # an element re-sent: its fields merged key by key, a null is no value
        {
            "op": "element",
            "element": {
                "id": "el-m",
                "forId": "m1",
                "type": "file",
                "name": "a.txt",
                "display": "inline",
                "size": "small",
            },
        },
        {"op": "element", "element": {"id": "el-m", "name": "b.txt", "size": None}},
    ]
    append_raw(journal_of(root, t), b"".join(line(r) for r in lines))


@case
def order(root: Path) -> None:
    """Conversation order: children before parents, steps without times, ties, missing
    parents, cycles."""
    store = ArchiveStore(root)
    t = "t-order"
    store.update_thread(t, name="Order")
    store.close()
    s = lambda sid, **f: {"op": "step", "step": {"id": sid, "threadId": t, **f}}  # noqa: E731
    lines = [
        s("notime-first", type="system_message", output="no time, first line"),
        s("c1", type="tool", parentId="p1", createdAt=at(10)),  # child earlier than parent
        s("gc1", type="tool", parentId="c1", createdAt=at(9)),  # grandchild earliest
        s("p1", type="run", createdAt=at(11)),
        s("c2", type="tool", parentId="p1", createdAt=at(10, 30)),
        s("late-child", type="tool", parentId="p1", createdAt=at(12)),
        s("b", type="user_message", output="tie, written first", createdAt=at(20)),
        s("a", type="user_message", output="tie, written second", createdAt=at(20)),
        s("notime", type="assistant_message", output="no time: after the latest before it"),
        s("start-only", type="tool", start=at(19)),
        s("orphan", type="tool", parentId="never-written", createdAt=at(5)),
        s("self", type="tool", parentId="self", createdAt=at(6)),
        s("cyc-a", type="tool", parentId="cyc-b", createdAt=at(30)),
        s("cyc-b", type="tool", parentId="cyc-a", createdAt=at(31)),
        s("cyc-child", type="tool", parentId="cyc-b", createdAt=at(29)),
        s("gets-time", type="tool"),
        s("gets-time", createdAt=at(1)),  # a later write gives it a time: it moves there
        s("bad-parent", type="tool", parentId=["p1"], createdAt=at(2)),
        s(
            "frac", type="tool", createdAt="2026-05-01T10:20:00Z"
        ),  # the same instant as the ties: after them
    ]
    append_raw(journal_of(root, t), b"".join(line(r) for r in lines))
    # The sidebar orders threads by the instant of their last message, not its digits.
    for tid, when in [
        ("t-whole-second", "2026-05-01T11:00:01Z"),
        ("t-half-second", "2026-05-01T11:00:01.5Z"),
    ]:
        store = ArchiveStore(root)
        store.update_thread(tid, name=tid)
        store.write_step(msg(tid, f"{tid}-m", "user_message", when, when))
        store.close()


@case
def deleted_threads(root: Path) -> None:
    """Deleted threads: through the layer, with a write after the deletion, a directory
    a power cut left behind, and torn and damaged tombstones."""
    store = ArchiveStore(root)
    alice = store.upsert_user("alice@example.com", {})
    for tid in ["t-kept", "t-gone", "t-left-behind", "t-torn-tombstone"]:
        store.update_thread(tid, name=tid, user_id=alice["id"])
        store.write_step(msg(tid, f"{tid}-u", "user_message", f"in {tid}", at(1)))
    store.delete_thread("t-gone")
    store.update_thread("t-gone", name="back?")  # ignored: deleted ids stay deleted
    store.write_step(msg("t-gone", "late", "user_message", "late", at(2)))
    store.delete_thread("t-never-existed")
    store.close()
    deleted = root / "deleted.jsonl"
    # A power cut after the tombstone, before the directory was removed.
    append_raw(deleted, line({"deletedAt": at(50), "id": "t-left-behind"}))
    append_raw(deleted, b"not json at all\n" + b'{"id": 17}\n' + b"[]\n" + b"\n")
    # A torn last tombstone: the line has no newline, so it is not there yet.
    append_raw(deleted, line({"deletedAt": at(51), "id": "t-torn-tombstone"}).rstrip(b"\n"))


@case
def erased_user(root: Path) -> None:
    """A user erased with ``filelayer erase-user``: their threads deleted, their record
    gone, a user tombstone in deleted.jsonl that thread readers skip."""
    from filelayer.maintenance.retention import erase_user

    store = ArchiveStore(root)
    dana = store.upsert_user("dana@example.com", {})
    eve = store.upsert_user("eve@example.com", {})
    for tid, user in [("t-dana-1", dana), ("t-dana-2", dana), ("t-eve", eve)]:
        store.update_thread(tid, name=tid, user_id=user["id"])
        store.write_step(msg(tid, f"{tid}-u", "user_message", f"in {tid}", at(1)))
    erase_user(store, "dana@example.com")
    store.close()


@case
def compaction(root: Path) -> None:
    """A compacted journal with lines appended after the compaction."""
    store = ArchiveStore(root, auto_compact=False)
    t = "t-compact"
    store.update_thread(t, name="Compaction")
    for n in range(4):
        store.write_step(msg(t, f"cq{n}", "user_message", f"question {n}", at(n * 2)))
        store.write_step(msg(t, f"cr{n}", "assistant_message", "", at(n * 2 + 1)))
        for k in range(3):
            store.write_step({"id": f"cr{n}", "threadId": t, "output": f"answer {n}" + "." * k})
    store.upsert_feedback(for_id="cr0", value=1, feedback_id="fbc0")
    store.upsert_feedback(for_id="cr1", value=0, feedback_id="fbc1")
    store.put_element(t, {"id": "el-q1", "type": "file", "name": "q1.txt", "forId": "cq1"}, b"cq1")
    store.put_element(t, {"id": "el-r1", "type": "file", "name": "r1.txt", "forId": "cr1"}, b"cr1")
    store.put_element(t, {"id": "el-x", "type": "file", "name": "x.txt", "forId": "cq0"}, b"x")
    store.delete_element("el-x", t)
    store.delete_step("cr1", t)
    store.compact_journal(t)
    # after the compaction: new lines, and late writes the tombstones still stop
    store.write_step(msg(t, "cq9", "user_message", "after compaction", at(30)))
    store.write_step({"id": "cr2", "threadId": t, "output": "answer 2, edited"})
    store.upsert_feedback(for_id="cq9", value=1, feedback_id="fbc9")
    store.close()
    append_raw(
        journal_of(root, t),
        line({"op": "step", "step": {"id": "cr1", "output": "cr1 is deleted"}})
        + line({"op": "element", "element": {"id": "el-x", "forId": "cq0", "name": "x again"}}),
    )


@case
def damaged_lines(root: Path) -> None:
    """Torn and damaged lines in every JSON Lines file and damaged documents."""
    store = ArchiveStore(root)
    store.upsert_user("bob@example.com", {"k": "v"})
    store.upsert_user("carol@example.com", {})
    for tid in ["t-torn", "t-damaged", "t-closed", "t-closed-valid"]:
        store.update_thread(tid, name=tid)
        store.write_step(msg(tid, f"{tid}-1", "user_message", f"first of {tid}", at(1)))
    store.close()

    def good(tid: str, n: int) -> bytes:
        return line(
            {"op": "step", "step": msg(tid, f"{tid}-{n}", "assistant_message", f"{n}", at(n))}
        )

    # t-torn: a crash cut the last line: not read (yet)
    append_raw(journal_of(root, "t-torn"), good("t-torn", 2) + good("t-torn", 3)[:25])
    # t-damaged: every kind of damaged line, each skipped, the rest kept
    append_raw(
        journal_of(root, "t-damaged"),
        b"{not json\n"
        + b"[1, 2]\n"
        + b"\n"
        + b'{"op":"rename","id":"x"}\n'
        + b'{"op":"step","step":{"output":"no id"}}\n'
        + b'{"op":"step","step":"not an object"}\n'
        + b'{"op":"step.delete","id":5}\n'
        + b'{"op":"step","step":{"id":"bad-utf8","output":"\xff\xfe"}}\n'
        + b'{"op":"step","step":{"id":"nan","output":NaN}}\n'  # not JSON
        + b'{"op":"step","step":{"id":"infinity","output":-Infinity}}\n'
        + b'{"op":"step","step":{"id":"lone-surrogate","output":"\\ud800"}}\n'
        + b'{"op":"step","step":{"createdAt":"2026-05-01T10:04:00Z","id":"pair",'
        + b'"output":"\\ud83d\\ude00","type":"assistant_message"}}\n'  # an emoji: fine
        + b'{"op":"step","step":{"createdAt":"2026-05-01T10:05:00Z","id":"big","n":'
        + b'123456789012345678901234567890,"type":"tool"}}\n'  # read exactly
        + good("t-damaged", 2)
        + b'{"feedback":{"forId":["t-damaged-1"],"id":"fb-x","value":1},"op":"feedback"}\n'
        + good("t-damaged", 3),
    )
    # t-closed: a torn fragment, then the next writer's newline: a damaged line of its own
    append_raw(journal_of(root, "t-closed"), good("t-closed", 2)[:30] + b"\n" + good("t-closed", 3))
    # t-closed-valid: a complete line torn of its newline alone, then closed by the next
    # writer: a valid line again, read like any other
    append_raw(
        journal_of(root, "t-closed-valid"),
        good("t-closed-valid", 2).rstrip(b"\n") + b"\n" + good("t-closed-valid", 3),
    )
    # users: a damaged file, an empty one, and one whose name is not its identifier's
    (root / "users" / "broken-0000000000000000.json").write_bytes(b'{"id": "u-broken", "ident')
    (root / "users" / "empty-0000000000000000.json").write_bytes(b"")
    (root / "users" / "moved-0000000000000000.json").write_bytes(
        _codec.encode_document(
            {
                "createdAt": at(0),
                "displayName": None,
                "id": "u-moved",
                "identifier": "moved@example.com",
                "metadata": {},
            }
        )
    )


@case
def manifests(root: Path) -> None:
    """Threads whose thread.json is missing, empty, damaged, or names another id."""
    store = ArchiveStore(root)
    bob = store.upsert_user("bob@example.com", {})
    for tid in [
        "t-missing",
        "t-empty",
        "t-damaged",
        "t-other-id",
        "t-no-journal",
        "t-unknown-user",
    ]:
        store.update_thread(tid, name=tid, user_id=bob["id"])
        if tid != "t-no-journal":
            store.write_step(msg(tid, f"{tid}-1", "user_message", f"in {tid}", at(1)))
    # A user id no user file holds (update_thread refuses one; a copy or a merge can
    # bring one in), given the way a copy writes a manifest.
    unknown = store.read_manifest("t-unknown-user")
    assert unknown is not None
    store.put_manifest(
        {**unknown, "userId": "no-such-user", "userIdentifier": None, "updatedAt": _time.now_iso()}
    )
    store.close()
    (root / "threads" / "t-missing" / "thread.json").unlink()
    (root / "threads" / "t-empty" / "thread.json").write_bytes(b"")
    (root / "threads" / "t-damaged" / "thread.json").write_bytes(b'{"id": "t-damaged", "na')
    manifest = root / "threads" / "t-other-id" / "thread.json"
    manifest.write_bytes(
        manifest.read_bytes().replace(b'"id": "t-other-id"', b'"id": "somewhere-else"')
    )
    # (An empty thread directory reads as no thread too, but git keeps no empty
    # directory: a corpus case cannot hold one. tests/reliability/test_reliability_crash.py has it.)


@case
def index_drift(root: Path) -> None:
    """An index that no longer matches the thread directories, changed behind the
    layer's back: the directories are what counts."""
    store = ArchiveStore(root)
    carol = store.upsert_user("carol@example.com", {})
    for n, tid in enumerate(["t-renamed", "t-removed", "t-steady"]):
        store.update_thread(tid, name=f"{tid} (old name)", user_id=carol["id"])
        store.write_step(msg(tid, f"{tid}-1", "user_message", f"in {tid}", at(n)))
    store.close()
    manifest = root / "threads" / "t-renamed" / "thread.json"
    manifest.write_bytes(manifest.read_bytes().replace(b" (old name)", b" (new name)"))
    append_raw(
        journal_of(root, "t-steady"),
        line({"op": "step", "step": msg("t-steady", "later", "user_message", "later", at(40))}),
    )
    shutil.rmtree(root / "threads" / "t-removed")
    added = root / "threads" / "t-added"
    added.mkdir()
    (added / "thread.json").write_bytes(
        _codec.encode_document(
            {
                "createdAt": at(20),
                "id": "t-added",
                "metadata": {},
                "name": "added by hand",
                "tags": None,
                "updatedAt": at(20),
                "userId": carol["id"],
                "userIdentifier": "carol@example.com",
            }
        )
    )
    append_raw(
        added / "steps.jsonl",
        line({"op": "step", "step": msg("t-added", "h1", "user_message", "hand-written", at(21))}),
    )


# -- writing -----------------------------------------------------------------------------


def _drop_derived(root: Path, keep_index: bool) -> None:
    """Derived files are not part of a case, except the stale index of index-drift."""
    shutil.rmtree(root / "locks", ignore_errors=True)
    (root / ".gitignore").unlink(missing_ok=True)  # it would hide files of the case
    if not keep_index:
        shutil.rmtree(root / "index", ignore_errors=True)


def make(name: str, into: Path = HERE) -> None:
    """Write case ``name`` (its archive and its expected reading) under ``into``."""
    directory = into / name
    root = directory / "archive"
    if directory.exists():
        shutil.rmtree(directory)
    with fixed_clock():
        CASES[name](root)
    _drop_derived(root, keep_index=name == "index-drift")
    read_archive.write(read_archive.reading(root), directory / "expected")


RELEASE_CASES = [
    "users-and-threads",
    "journal-operations",
    "merge-out-of-order",
    "order",
    "deleted-threads",
    "compaction",
]
"""What a release archive holds: the cases whose thread ids do not collide and that do
not vandalise the archive's documents (damaged-lines, manifests and index-drift do)."""


def make_release(directory: Path | None = None) -> int:
    """Write this version's release archive (with its own clock: it is a real archive
    of that release) and its reading into ``directory``."""
    import filelayer

    version = filelayer.__version__
    directory = directory or HERE / f"release-{version}"
    if directory.exists():
        print(f"{directory.name} exists: a release archive is never written again")
        return 1
    root = directory / "archive"
    for name in RELEASE_CASES:
        CASES[name](root)
    shutil.rmtree(root / "locks", ignore_errors=True)
    read_archive.write(read_archive.reading(root), directory / "expected")
    print(f"wrote {directory}: commit it whole (git add -f: its .gitignore hides files)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--release", action="store_true", help="write this version's archive")
    parser.add_argument("cases", nargs="*", help="only these cases")
    args = parser.parse_args()
    if args.release:
        return make_release()
    for name in args.cases or list(CASES):
        make(name)
        print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
