"""One ordering rule: merging two clones' concurrent histories commutes.

Two copies of an archive (two clones) are written independently through the public
store, then their files are merged the way git's merge driver merges them, once in each
direction. Both merges must read the same and, after ``filelayer compact``, be the same
bytes; and a union of the lines in any order (a merge made without the driver) must
fold to what the driver's merge reads.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from filelayer import ArchiveStore
from filelayer.cli import main
from filelayer.format import journal
from filelayer.git.merge import merge_documents, merge_file, merge_lines

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.support.reliability import hypothesis_settings  # noqa: E402

THREAD = "shared"
STEPS = ["s1", "s2", "s3"]
DERIVED = ("index", "locks")


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] not in DERIVED
    }


def merge_trees(base: Path, ours: Path, theirs: Path, out: Path) -> None:
    """What git does with the archive's .gitattributes and filelayer's driver, file by
    file: taken as is where only one side changed it, merged by the driver where both
    did, removed where one side removed it and the other left it alone."""
    o, a, b = _files(base), _files(ours), _files(theirs)
    for rel in sorted(set(a) | set(b)):
        ov, av, bv = o.get(rel), a.get(rel), b.get(rel)
        if av == bv:
            result = av
        elif av == ov:
            result = bv
        elif bv == ov:
            result = av
        elif av is None or bv is None:
            result = av if av is not None else bv
        else:
            result = merge_file(rel, ov or b"", av, bv)
        if result is not None:
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(result)


def base_archive(root: Path) -> None:
    store = ArchiveStore(root)
    store.upsert_user("alice@example.com")
    store.update_thread(THREAD, name="first name", metadata={"k": 0})
    for n, sid in enumerate(STEPS):
        store.write_step(
            {
                "id": sid,
                "threadId": THREAD,
                "type": "user_message" if n % 2 == 0 else "assistant_message",
                "output": f"base {sid}",
                "createdAt": f"2026-01-01T00:00:0{n}.000000Z",
            }
        )
    store.close()


op = st.one_of(
    st.tuples(st.just("edit"), st.sampled_from(STEPS), st.text("abc", max_size=3)),
    st.tuples(
        st.just("feedback"),
        st.sampled_from(STEPS),
        st.integers(0, 1),
        st.sampled_from(["f1", "f2", "f3"]),
    ),
    st.tuples(st.just("unfeedback"), st.sampled_from(["f1", "f2", "f3"])),
    st.tuples(st.just("rename"), st.text("xyz", min_size=1, max_size=3)),
    st.tuples(st.just("tags"), st.lists(st.sampled_from(["a", "b", "c"]), max_size=2)),
    st.tuples(st.just("meta"), st.sampled_from(["k", "m"]), st.integers(0, 3)),
    st.tuples(st.just("delete"), st.sampled_from(STEPS)),
    st.tuples(st.just("new"), st.sampled_from(["n1", "n2"]), st.text("pq", max_size=2)),
    st.tuples(st.just("element"), st.sampled_from(["e1", "e2"]), st.sampled_from(STEPS)),
    st.tuples(st.just("unelement"), st.sampled_from(["e1", "e2"])),
)


def apply(root: Path, ops: list[tuple[Any, ...]]) -> None:
    store = ArchiveStore(root)
    for o in ops:
        kind = o[0]
        if kind == "edit":
            store.write_step({"id": o[1], "threadId": THREAD, "output": o[2]})
        elif kind == "new":
            store.write_step(
                {
                    "id": o[1],
                    "threadId": THREAD,
                    "type": "assistant_message",
                    "output": o[2],
                    "createdAt": "2026-01-01T00:00:05.000000Z",
                }
            )
        elif kind == "feedback":
            if o[1] in store.read_state(THREAD).steps:
                store.upsert_feedback(for_id=o[1], value=o[2], feedback_id=o[3], thread_id=THREAD)
        elif kind == "unfeedback":
            store.delete_feedback(o[1])
        elif kind == "rename":
            store.update_thread(THREAD, name=o[1])
        elif kind == "tags":
            store.update_thread(THREAD, tags=o[1])
        elif kind == "meta":
            store.update_thread(THREAD, metadata={o[1]: o[2]})
        elif kind == "delete":
            store.delete_step(o[1], THREAD)
        elif kind == "element":
            store.put_element(
                THREAD,
                {
                    "id": o[1],
                    "type": "file",
                    "name": f"{o[1]}.txt",
                    "forId": o[2],
                    "mime": "text/plain",
                },
                f"bytes of {o[1]}".encode(),
            )
        elif kind == "unelement":
            store.delete_element(o[1], THREAD)
    store.close()


def reading(root: Path) -> Any:
    store = ArchiveStore(root)
    thread = store.get_thread(THREAD)
    store.close()
    return thread


@hypothesis_settings(25, 400)
@given(ours=st.lists(op, max_size=6), theirs=st.lists(op, max_size=6))
def test_merges_commute(
    tmp_path_factory: pytest.TempPathFactory, ours: list[Any], theirs: list[Any]
) -> None:
    tmp = tmp_path_factory.mktemp("merge")
    base, a, b = tmp / "base", tmp / "a", tmp / "b"
    base_archive(base)
    shutil.copytree(base, a)
    shutil.copytree(base, b)
    apply(a, ours)
    apply(b, theirs)
    ab, ba = tmp / "ab", tmp / "ba"
    merge_trees(base, a, b, ab)
    merge_trees(base, b, a, ba)
    assert _files(ab) == _files(ba)  # the driver's merge is symmetric
    assert reading(ab) == reading(ba)
    for root in (ab, ba):
        assert main(["--root", str(root), "compact"]) == 0
    assert _files(ab) == _files(ba)

    # Without the driver (a union in any order), the fold still reads the same.
    merged = ab / "threads" / THREAD / "steps.jsonl"
    lines = merged.read_bytes().splitlines(keepends=True)
    rng = random.Random(len(lines))
    for _ in range(3):
        rng.shuffle(lines)
        shuffled = journal.fold(journal.parse(b"".join(lines)).records)
        expected = journal.fold(journal.parse(merged.read_bytes()).records)
        assert shuffled.steps == expected.steps
        assert shuffled.feedback_by_step() == expected.feedback_by_step()
        assert shuffled.live_elements() == expected.live_elements()


def test_a_union_out_of_order_is_read_in_stamp_order(tmp_path: Path) -> None:
    """A merge made without filelayer's driver can leave lines out of stamp order: the
    store's reader folds them in stamp order, also when it had read the journal before."""
    store = ArchiveStore(tmp_path / "chats")
    store.write_step({"id": "s", "threadId": "t", "type": "run", "output": "old"})
    store.write_step({"id": "s", "threadId": "t", "output": "new"})
    assert store.get_thread("t")["steps"][0]["output"] == "new"  # type: ignore[index]
    path = store.layout.journal("t")
    first, _ = path.read_bytes().splitlines(keepends=True)
    # Another clone's line, stamped like the first one (before "new"), lands last.
    late = first.replace(b'"old"', b'"late"').replace(b'"type":"run",', b"")
    with path.open("ab") as f:
        f.write(late)
    assert store.get_thread("t")["steps"][0]["output"] == "new"  # type: ignore[index]
    assert ArchiveStore(tmp_path / "chats").get_thread("t")["steps"][0]["output"] == "new"  # type: ignore[index]


def test_merge_lines_drops_what_one_side_compacted_away() -> None:
    base = b'{"at":"2026-01-01T00:00:00.000001Z","op":"step","step":{"id":"s","output":"a"}}\n'
    compacted = b'{"op":"step","step":{"id":"s","output":"a"}}\n'
    added = b'{"at":"2026-01-01T00:00:00.000002Z","op":"step","step":{"id":"s","output":"b"}}\n'
    ab = merge_lines(base, compacted, base + added)
    assert ab == merge_lines(base, base + added, compacted) == compacted + added


def test_documents_newest_wins_per_field() -> None:
    base = b'{"createdAt":"1","name":"n","updatedAt":"1","metadata":{"x":1}}'
    ours = b'{"createdAt":"1","name":"ours","updatedAt":"3","metadata":{"x":1,"a":1}}'
    theirs = b'{"createdAt":"1","name":"theirs","updatedAt":"2","metadata":{"x":2}}'
    merged = merge_documents(base, ours, theirs)
    assert merged == merge_documents(base, theirs, ours)
    assert b'"name": "ours"' in merged and b'"x": 2' in merged and b'"a": 1' in merged


def _doc(**fields: Any) -> bytes:
    return json.dumps(fields, indent=2).encode()


def _merged(base: bytes, ours: bytes, theirs: bytes) -> dict[str, Any]:
    """The merge, after checking that it gives the same bytes in both directions."""
    one, other = merge_documents(base, ours, theirs), merge_documents(base, theirs, ours)
    assert one == other
    merged: dict[str, Any] = json.loads(one)
    return merged


def test_documents_compare_times_as_instants_not_as_text() -> None:
    """Chainlit drops the fraction when it is 0 (``…:00Z``), other writers use an offset
    or three digits: as text, ``…10:30:00+01:00`` (09:30 UTC) sorts after ``…10:00:00Z``
    and ``…:00.5Z`` before ``…:00Z``. The merge orders the instants."""
    base = _doc(createdAt="2024-01-01T09:00:00Z", name="n", updatedAt="2024-01-01T09:00:00Z")
    # ours changed last (10:00 UTC), theirs at 09:30 UTC written with an offset.
    ours = _doc(createdAt="2024-01-01T08:00:00Z", name="ours", updatedAt="2024-01-01T10:00:00Z")
    theirs = _doc(
        createdAt="2024-01-01T08:00:00.5Z",
        name="theirs",
        updatedAt="2024-01-01T10:30:00+01:00",
    )
    merged = _merged(base, ours, theirs)
    assert merged["name"] == "ours"  # the side changed last wins
    assert merged["updatedAt"] == "2024-01-01T10:00:00Z"  # the latest instant
    assert merged["createdAt"] == "2024-01-01T08:00:00Z"  # the earliest instant


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("2024-01-01T10:00:00Z", "2024-01-01T11:00:00+01:00"),  # one instant, two spellings
        ("2024-01-01T10:00:00Z", "2024-01-01T10:00:00.000Z"),
        ("2024-01-01T10:00:00.000000Z", "2024-01-01T10:00:00Z"),
        ("not a time", "2024-01-01T10:00:00Z"),  # unparseable: still one answer
        ("yesterday", "tomorrow"),
        ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"),  # outside years 1-9999
        ("2024-01-01T10:00:00Z", ""),
    ],
)
def test_equal_or_unparseable_times_merge_the_same_both_ways(one: str, other: str) -> None:
    base = _doc(createdAt="2023-01-01T00:00:00Z", name="n", updatedAt="2023-01-01T00:00:00Z")
    ours = _doc(createdAt=one, name="ours", updatedAt=one)
    theirs = _doc(createdAt=other, name="theirs", updatedAt=other)
    merged = _merged(base, ours, theirs)
    assert {merged["createdAt"], merged["updatedAt"]} <= {one, other}


def test_a_later_change_wins_whatever_the_precision_of_its_time() -> None:
    """As text, ``…:00Z`` sorts after ``…:00.25Z`` (``Z`` > ``.``) and ``…:00.5Z``
    after ``…:00.500001Z`` (``Z`` > ``0``): the later instant wins all the same."""
    base = _doc(name="n", updatedAt="2024-01-01T09:00:00.000Z")
    whole = _doc(name="whole second", updatedAt="2024-01-01T10:00:00Z")
    quarter = _doc(name="quarter past", updatedAt="2024-01-01T10:00:00.25Z")
    assert _merged(base, whole, quarter)["name"] == "quarter past"
    half = _doc(name="half", updatedAt="2024-01-01T10:00:00.5Z")
    just_after = _doc(name="just after", updatedAt="2024-01-01T10:00:00.500001Z")
    merged = _merged(base, half, just_after)
    assert merged["name"] == "just after"
    assert merged["updatedAt"] == "2024-01-01T10:00:00.500001Z"


def test_stamps_grow_past_a_clone_whose_clock_runs_ahead(tmp_path: Path) -> None:
    """The hybrid clock: after a merge brought in a line stamped in the future, new lines
    (of this process or another) are stamped after it, so they still win."""
    from filelayer.format import clock

    root = tmp_path / "chats"
    store = ArchiveStore(root)
    store.write_step({"id": "s", "threadId": "t", "type": "run", "output": "mine"})
    path = store.layout.journal("t")
    ahead = (
        b'{"at":"2099-01-01T00:00:00.000000Z","op":"step","step":{"id":"s","output":"theirs"}}\n'
    )
    with path.open("ab") as f:
        f.write(ahead)
    store.write_step({"id": "s", "threadId": "t", "output": "mine again"})
    ArchiveStore(root).upsert_feedback(for_id="s", value=1, thread_id="t", feedback_id="f")
    stamps = [clock.stamp_of_line(line) for line in path.read_bytes().splitlines()]
    assert stamps[1:] == [
        "2099-01-01T00:00:00.000000Z",
        "2099-01-01T00:00:00.000001Z",
        "2099-01-01T00:00:00.000002Z",
    ]
    assert stamps[0] is not None and stamps[0] < stamps[1]
    got = ArchiveStore(root).get_thread("t")
    assert got is not None and got["steps"][0]["output"] == "mine again"


def test_stamps_grow_past_a_clone_whose_line_a_union_merge_put_before_others(
    tmp_path: Path,
) -> None:
    """A merge without the driver (git's ``union``) may leave a line stamped far ahead
    before a line stamped earlier: the next write, by a process that never read the
    journal, is stamped after the newest stamp, not after the last line's."""
    from filelayer.format import clock

    root = tmp_path / "chats"
    store = ArchiveStore(root)
    store.write_step({"id": "s", "threadId": "t", "type": "run", "output": "mine"})
    store.close()
    path = root / "threads" / "t" / "steps.jsonl"
    with path.open("ab") as f:
        f.write(
            b'{"at":"2099-01-01T00:00:00.000000Z","op":"step","step":{"id":"s","output":"b"}}\n'
        )
        f.write(
            b'{"at":"2026-01-01T00:00:00.000000Z","op":"step","step":{"id":"s","output":"a"}}\n'
        )
    store = ArchiveStore(root)
    store.write_step({"id": "s", "threadId": "t", "output": "newest"})
    store.close()
    assert clock.stamp_of_line(path.read_bytes().splitlines()[-1]) == "2099-01-01T00:00:00.000001Z"
    got = ArchiveStore(root).get_thread("t")
    assert got is not None and got["steps"][0]["output"] == "newest"


def test_the_driver_without_a_path_tells_documents_from_journals() -> None:
    """Registered as ``merge-driver %O %A %B`` (no ``%P``), the driver sees only git's
    temporary file names: it merges by what the versions hold."""
    base = b'{\n  "name": "n",\n  "updatedAt": "1"\n}\n'
    ours = b'{\n  "name": "ours",\n  "updatedAt": "2"\n}\n'
    theirs = b'{\n  "name": "n",\n  "tags": ["x"],\n  "updatedAt": "1"\n}\n'
    assert merge_file(".merge_file_a", base, ours, theirs) == merge_documents(base, ours, theirs)
    one = b'{"at":"2026-01-01T00:00:00.000001Z","id":"a","op":"step.delete"}\n'
    two = b'{"at":"2026-01-01T00:00:00.000002Z","id":"b","op":"step.delete"}\n'
    assert merge_file(".merge_file_b", b"", one, two) == one + two
    assert merge_file(".merge_file_c", b"", one, one + two) == one + two


def _drive(tmp_path: Path, base: bytes, ours: bytes, theirs: bytes) -> tuple[int, bytes]:
    """``filelayer merge-driver %O %A %B`` (no path) on three versions: its exit code and
    what it left in OURS."""
    paths = []
    for name, data in (("o", base), ("a", ours), ("b", theirs)):
        path = tmp_path / name
        path.write_bytes(data)
        paths.append(str(path))
    code = main(["merge-driver", *paths])
    return code, (tmp_path / "a").read_bytes()


@pytest.mark.parametrize(
    ("base", "ours", "theirs"),
    [
        # one line, no newline: a document another program wrote compactly
        (
            b'{"id":"u","identifier":"alice","metadata":{}}',
            b'{"id":"u","identifier":"alice","metadata":{"x":1}}',
            b'{"id":"u","identifier":"alice","metadata":{"y":2}}',
        ),
        # indented on one side, compact on the other
        (b'{\n"id":"u"\n}', b'{"id":"u","x":1}', b'{\n"id":"u","y":2\n}'),
        (b'{\n"id":"u"\n}\n', b'{"id":"u","x":1}\n', b'{\n"id":"u","y":2\n}\n'),
    ],
)
def test_the_driver_without_a_path_never_merges_a_document_as_lines(
    tmp_path: Path, base: bytes, ours: bytes, theirs: bytes
) -> None:
    """A document on one line looks like a JSON Lines file of one line: the driver
    either merges it as the document it is or leaves it conflicted, never writes lines
    (or nothing) in its place with exit 0."""
    code, merged = _drive(tmp_path, base, ours, theirs)
    if code == 0:
        doc = json.loads(merged)
        assert isinstance(doc, dict) and doc["id"] == "u"
        assert sum(key in json.dumps(doc) for key in ('"x"', '"y"')) == 2
        assert (code, merged) == _drive(tmp_path, base, theirs, ours)
    else:
        assert code == 1 and merged == ours  # left conflicted, as git wrote it


def test_the_driver_without_a_path_leaves_what_it_cannot_tell_conflicted(
    tmp_path: Path,
) -> None:
    """A compact document with a newline on each side and a journal of one record per
    side are the same shape; a journal is told by its records' keys, anything else
    (or versions of both shapes) is left to a person."""
    one = b'{"at":"2026-01-01T00:00:00.000001Z","id":"a","op":"step.delete"}\n'
    two = b'{"at":"2026-01-01T00:00:00.000002Z","id":"b","op":"step.delete"}\n'
    assert _drive(tmp_path, b"", one, two) == (0, one + two)
    dead = b'{"deletedAt":"2026-01-01T00:00:00Z","id":"t1"}\n'
    other = b'{"deletedAt":"2026-01-01T00:00:01Z","id":"t2"}\n'
    assert _drive(tmp_path, b"", dead, other) == (0, dead + other)
    user = b'{"id":"u","identifier":"alice","metadata":{"x":1}}\n'
    changed = b'{"id":"u","identifier":"alice","metadata":{"y":2}}\n'
    assert _drive(tmp_path, b"", user, changed) == (1, user)
    document = b'{\n  "id": "u",\n  "name": "n"\n}\n'
    assert _drive(tmp_path, b"", document, one + two) == (1, document)
    broken = b'{\n  "id": "u",\n'
    assert _drive(tmp_path, b"", broken, b'{\n  "id": "v",\n') == (1, broken)


def test_an_unstamped_line_placed_differently_merges_the_same_under_every_hash_seed() -> None:
    """A line without a stamp that one version has after one stamped line and the other
    after another: where it goes depends on the two versions only, not on the order in
    which this interpreter happens to iterate a set (``PYTHONHASHSEED``) nor on which
    side is "ours"."""
    import subprocess
    import sys

    s0 = b'{"at":"2026-01-01T00:00:00.000001Z","op":"step","step":{"id":"a","output":"0"}}\n'
    s1 = b'{"at":"2026-01-01T00:00:00.000002Z","op":"step","step":{"id":"b","output":"1"}}\n'
    x = b'{"op":"step","step":{"id":"c","output":"x"}}\n'
    ours, theirs = s0 + x + s1, s0 + s1 + x
    script = (
        "import sys; from filelayer.git.merge import merge_lines as m; "
        f"sys.stdout.buffer.write(m(b'', {ours!r}, {theirs!r}) + b'|' + "
        f"m(b'', {theirs!r}, {ours!r}))"
    )
    results = set()
    for seed in range(12):
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            cwd=Path(__file__).resolve().parents[2],
        )
        one, other = done.stdout.split(b"|")
        assert one == other
        results.add(one)
    assert len(results) == 1
    assert results == {s0 + x + s1}  # after the earlier of the two stamped lines


@pytest.mark.parametrize(
    ("base", "one", "other"),
    [
        (0, 1, 1.0),
        (0, True, 1),
        (1, 0, -0.0),
        (1, False, 0),
        (0, {"k": 1}, {"k": 1.0}),
        (0, [1], [True]),
        (1, 1.0, 1),  # one side rewrote the base's value as another type
    ],
)
def test_values_python_holds_equal_merge_the_same_both_ways(
    base: Any, one: Any, other: Any
) -> None:
    """``1``, ``1.0`` and ``true`` are equal in Python but three JSON values: a merge
    that took them for one kept whichever side was "ours"."""
    merged = _merged(
        _doc(id="t", metadata={"x": base}),
        _doc(id="t", metadata={"x": one}),
        _doc(id="t", metadata={"x": other}),
    )
    assert json.dumps(merged["metadata"]["x"]) in {json.dumps(one), json.dumps(other)}


def test_both_sides_compacted_keep_each_sides_change(tmp_path: Path) -> None:
    """Each clone changed a different record, then compacted (by hand, or the layer by
    itself past 64 KiB): both compactions hold a copy of every record. The copy a side
    left as the common ancestor had it gives way to the other side's change; a feedback
    one side withdrew (its compaction keeps no trace of it) is not brought back."""
    base, a, b = tmp_path / "base", tmp_path / "a", tmp_path / "b"
    store = ArchiveStore(base)
    store.update_thread(THREAD, name="n")
    for n in range(3):
        store.write_step(
            {
                "id": f"s{n}",
                "threadId": THREAD,
                "type": "user_message",
                "output": "base",
                "createdAt": f"2026-01-01T00:00:0{n}.000000Z",
            }
        )
    store.upsert_feedback(for_id="s1", value=1, feedback_id="fb1", thread_id=THREAD)
    store.close()
    shutil.copytree(base, a)
    shutil.copytree(base, b)
    store = ArchiveStore(a)
    store.write_step({"id": "s0", "threadId": THREAD, "output": "edited on a"})
    store.close()
    store = ArchiveStore(b)
    store.write_step({"id": "s2", "threadId": THREAD, "output": "edited on b"})
    store.delete_feedback("fb1")
    store.close()
    for root in (a, b):
        assert main(["--root", str(root), "compact"]) == 0
    ab, ba = tmp_path / "ab", tmp_path / "ba"
    merge_trees(base, a, b, ab)
    merge_trees(base, b, a, ba)
    assert _files(ab) == _files(ba)
    for root in (ab, ba):
        steps = {s["id"]: s for s in reading(root)["steps"]}
        assert {k: (s["output"], s.get("feedback")) for k, s in steps.items()} == {
            "s0": ("edited on a", None),
            "s1": ("base", None),
            "s2": ("edited on b", None),
        }


def test_one_side_compacted_and_another_program_s_line_on_the_other(tmp_path: Path) -> None:
    """Only one side compacted; the other holds an unstamped line another program
    appended (a partial update of a step). That line is no compaction's copy: the
    compacted side's copies stay, the step keeps its fields and the rating survives."""
    base, a, b = tmp_path / "base", tmp_path / "a", tmp_path / "b"
    store = ArchiveStore(base)
    store.write_step(
        {
            "id": "s0",
            "threadId": THREAD,
            "type": "user_message",
            "output": "base",
            "createdAt": "2026-01-01T00:00:00.000000Z",
        }
    )
    store.write_step({"id": "s1", "threadId": THREAD, "type": "run", "output": "x"})
    store.upsert_feedback(for_id="s1", value=1, feedback_id="fb1", thread_id=THREAD)
    store.close()
    shutil.copytree(base, a)
    shutil.copytree(base, b)
    assert main(["--root", str(a), "compact"]) == 0
    with open(b / "threads" / THREAD / "steps.jsonl", "ab") as f:
        f.write(b'{"op":"step","step":{"id":"s0","output":"edited by another program"}}\n')
    ab, ba = tmp_path / "ab", tmp_path / "ba"
    merge_trees(base, a, b, ab)
    merge_trees(base, b, a, ba)
    assert _files(ab) == _files(ba)
    steps = {s["id"]: s for s in reading(ab)["steps"]}
    assert steps["s0"]["type"] == "user_message"
    assert steps["s0"]["output"] == "edited by another program"
    assert steps["s1"]["feedback"]["id"] == "fb1"


def test_merging_tombstones_says_nothing_about_damaged_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``deleted.jsonl`` holds no journal records: its merge must not read it as one."""
    base = b'{"deletedAt":"2026-01-01T00:00:00.000000Z","id":"t0"}\n'
    a = base + b'{"deletedAt":"2026-01-02T00:00:00.000000Z","id":"t1"}\n'
    b = base + b'{"deletedAt":"2026-01-03T00:00:00.000000Z","id":"t2"}\n'
    with caplog.at_level("WARNING", logger="filelayer"):
        merged = merge_file("deleted.jsonl", base, a, b)
    assert merged == merge_file("deleted.jsonl", base, b, a)
    assert merged.count(b"\n") == 3
    assert not [r for r in caplog.records if "damaged" in r.getMessage()]


def _deep(levels: int, **leaf: Any) -> Any:
    """A dict ``levels`` levels deep whose innermost dict holds ``leaf``."""
    value: Any = {"n": 0, **leaf}
    for _ in range(levels):
        value = {"a": value}
    return value


def test_documents_as_deep_as_the_archive_takes_merge_key_by_key(tmp_path: Path) -> None:
    """A thread's metadata nested as deep as a write accepts, each side changing a key
    of its innermost dict: both changes are kept, the same in both directions. The merge
    went down two stack frames a level and stopped with ``RecursionError``, which left
    the manifest conflicted."""
    base, a, b = tmp_path / "base", tmp_path / "a", tmp_path / "b"
    store = ArchiveStore(base)
    store.update_thread(THREAD, name="n", metadata={"m": _deep(505)})
    store.close()
    shutil.copytree(base, a)
    shutil.copytree(base, b)
    for root, leaf in ((a, {"x": "a"}), (b, {"y": "b"})):
        store = ArchiveStore(root)
        store.update_thread(THREAD, metadata={"m": _deep(505, **leaf)})
        store.close()
    ab, ba = tmp_path / "ab", tmp_path / "ba"
    merge_trees(base, a, b, ab)
    merge_trees(base, b, a, ba)
    assert _files(ab) == _files(ba)
    assert reading(ab)["metadata"] == {"m": _deep(505, x="a", y="b")}
