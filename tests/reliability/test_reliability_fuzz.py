"""Fuzzing hostile input: Hypothesis-generated ids, names, user identifiers, metadata and
message text (any Unicode: astral and combining characters, control characters, NUL,
lone surrogates; huge strings; deeply nested metadata).

Each value either round-trips exactly through the public API, also after a restart,
or is refused with ``ValueError``, writing nothing. Whatever happens, nothing is ever
written outside the archive root: the directory around it is compared before and after.

The id oracle below is written from docs/format.md, independently of ``filelayer.ids``.
``FILELAYER_STRESS=1`` tries many more examples.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.reliability import (
    StoreAPI,
    cli,
    have_chainlit,
    hypothesis_settings,
    open_api,
    seeded,
    snapshot,
)

BACKENDS = [
    "store",
    pytest.param("layer", marks=pytest.mark.skipif(not have_chainlit(), reason="needs chainlit")),
]

# -- the id rule, from docs/format.md ---------------------------------------------------------

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"{p}{n}" for p in ("COM", "LPT") for n in range(10)}


def valid_id(value: str) -> bool:
    """1 to 128 characters from ``A–Z a–z 0–9 . _ -``, starting with a letter or digit,
    not ending with ``.``, not a reserved Windows device name."""
    return (
        _ID.fullmatch(value) is not None
        and not value.endswith(".")
        and value.split(".")[0].upper() not in _RESERVED
    )


HOSTILE_IDS = [
    "..",
    ".",
    "../x",
    "/etc/passwd",
    "a/b",
    "a\\b",
    "x\x00y",
    "",
    " ",
    "CON",
    "nul.txt",
    "com1",
    "LPT9.log",
    "end.",
    ".hidden",
    "-dash",
    "a" * 128,
    "a" * 129,
    "ünï",
    "a\nb",
    "%2e%2e",
    "C:x",
    "a b",
    "\u202e",
    "🙂",
    "a\u0301",
]
ids = st.one_of(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,130}", fullmatch=True),
    st.text(max_size=140),
    st.text(alphabet="./\\-_aZ09\x00 :", max_size=12),
    st.sampled_from(HOSTILE_IDS),
)

# Any code point, lone surrogates included (Hypothesis leaves them out by default).
any_char = st.characters(codec=None, categories=None)
texts = st.one_of(
    st.text(alphabet=any_char, max_size=80),
    st.text(max_size=80),
    st.sampled_from(
        [
            "",
            "\x00",
            "a\x00b",
            "\u0000\u001f\u007f\u0085\u2028\u2029",
            "e\u0301\u0301\u0301",
            "🙂👩‍👩‍👧‍👦𝕏𐍈",
            "\ud800",
            "a\udfffb",
            "\ufeffBOM",
            '"quoted" \\back\\slash',
            "x" * 200_000,
            "🙂" * 50_000,
        ]
    ),
)
keys = st.text(alphabet=any_char, max_size=12)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**200),
    st.floats(),
    texts,
)
metadata = st.dictionaries(
    keys,
    st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
        max_leaves=12,
    ),
    max_size=4,
)


def storable(value: Any) -> bool:
    """Whether JSON can hold ``value`` exactly as UTF-8 text (no NaN, no infinities, no
    lone surrogates)."""
    if isinstance(value, str):
        return not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(storable(v) for v in value)
    if isinstance(value, dict):
        return all(storable(k) and storable(v) for k, v in value.items())
    return True


def truth(root: Path) -> dict[str, Any]:
    """The archive's source-of-truth files (locks and the index are derived)."""
    return {p: i for p, i in snapshot(root).items() if p.split("/")[0] not in ("locks", "index")}


def outside(box: Path, root: Path) -> dict[str, Any]:
    """Everything in ``box`` that is not inside the archive root."""
    return {
        path: info for path, info in snapshot(box).items() if not (box / path).is_relative_to(root)
    }


@pytest.fixture
def box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory holding the archive root and a decoy sibling, the cwd of the test."""
    box = tmp_path / "box"
    (box / "decoy").mkdir(parents=True)
    (box / "decoy" / "passwd").write_text("root:x:0:0")
    monkeypatch.chdir(box)
    return box


@pytest.mark.parametrize("backend", BACKENDS)
def test_hostile_ids_round_trip_or_are_refused(backend: str, box: Path) -> None:
    root = box / "chats"
    api = open_api(root, backend)
    api.update_thread("home", name="home")
    before = outside(box, root)
    tried = {"accepted": 0, "refused": 0}

    @seeded
    @hypothesis_settings(60, 1500)
    @given(kind=st.sampled_from(["thread", "step", "element", "feedback"]), value=ids)
    def check(kind: str, value: str) -> None:
        ok = valid_id(value)
        if kind == "feedback" and value == "":
            ok = True  # no feedback id: the layer makes one (Chainlit sends None)
        try:
            if kind == "thread":
                api.update_thread(value, name="named")
            elif kind == "step":
                api.create_step({"id": value, "threadId": "home", "type": "run", "output": "x"})
            elif kind == "element":
                api.create_element(
                    {"id": value, "threadId": "home", "name": "a.txt", "content": b"bytes"}
                )
            else:
                api.create_step({"id": "rated", "threadId": "home", "type": "run"})
                given = api.upsert_feedback("rated", 1, None, value, "home")
                assert given == value or (value == "" and valid_id(given))
                value = given
        except ValueError:
            assert not ok, f"valid {kind} id {value!r} was refused"
            tried["refused"] += 1
            if kind == "thread":
                assert api.get_thread(value) is None
                assert api.get_thread_author(value) == ""
            return
        assert ok, f"invalid {kind} id {value!r} was accepted"
        tried["accepted"] += 1
        if kind == "thread":
            assert api.get_thread(value)["name"] == "named"
            assert (root / "threads" / value / "thread.json").is_file()
        elif kind == "step":
            assert value in {s["id"] for s in api.get_thread("home")["steps"]}
        elif kind == "element":
            assert api.element_bytes("home", value) == b"bytes"
            assert api.get_element("home", value)["id"] == value
        else:
            rated = {s["id"]: s for s in api.get_thread("home")["steps"]}["rated"]
            assert rated["feedback"]["id"] == value

    check()
    api.close()
    assert outside(box, root) == before, "something was written outside the archive root"
    assert tried["accepted"] and tried["refused"]
    done = cli(root, "verify", cwd=box)
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"\nids tried through {backend}: {tried}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_hostile_content_round_trips_or_is_refused(backend: str, box: Path) -> None:
    root = box / "chats"
    api = open_api(root, backend)
    before = outside(box, root)
    counter = {"n": 0, "accepted": 0, "refused": 0}

    @seeded
    @hypothesis_settings(40, 800)
    @given(
        identifier=texts,
        name=texts,
        output=texts,
        meta=metadata,
        comment=texts,
    )
    def check(identifier: str, name: str, output: str, meta: dict[str, Any], comment: str) -> None:
        counter["n"] += 1
        thread = f"t{counter['n']}"
        # The thread exists first, as when Chainlit renames it or stores its metadata.
        api.create_step({"id": f"{thread}-q", "threadId": thread, "type": "run"})
        files = truth(root)
        ok = all(storable(v) for v in (identifier, name, output, meta, comment)) and identifier
        try:
            user = api.create_user(identifier, metadata={"n": counter["n"]})
            api.update_thread(thread, name=name, user_id=user["id"], metadata=meta)
            api.create_step(
                {
                    "id": f"{thread}-m",
                    "threadId": thread,
                    "type": "assistant_message",
                    "output": output,
                    "name": name,
                    "input": comment,
                    "createdAt": "2026-05-01T00:00:00.000000Z",
                }
            )
            api.upsert_feedback(f"{thread}-m", 0, comment, f"{thread}-f", thread)
        except ValueError:
            assert not ok, "storable input was refused"
            counter["refused"] += 1
            # A refused call writes nothing (here: the first call is the one refused).
            if not identifier or not storable(identifier):
                assert truth(root) == files, "a refused create_user wrote something"
            return
        assert ok, f"unstorable input was accepted: {[identifier, name, output, meta, comment]!r}"
        counter["accepted"] += 1
        for reader in (api, open_api(root, "store")):  # also as a restarted process reads it
            assert reader.get_user(identifier)["id"] == user["id"]
            got = reader.get_thread(thread)
            assert got["name"] == name
            assert got["userIdentifier"] == identifier
            assert got["metadata"] == {k: v for k, v in meta.items() if v is not None}
            [message] = [s for s in got["steps"] if s["id"] == f"{thread}-m"]
            assert message["output"] == output
            assert message["name"] == name
            assert message["input"] == comment
            assert message["feedback"]["comment"] == comment

    check()
    api.close()
    assert outside(box, root) == before, "something was written outside the archive root"
    assert counter["accepted"] and counter["refused"]
    print(f"\ncontent tried through {backend}: {counter}")


def test_identifiers_that_look_alike_are_different_users(box: Path) -> None:
    api = StoreAPI(box / "chats")
    lookalikes = ["é", "e\u0301", "É", "e", "E", "Straße", "STRASSE", "ǅ", "Ǆ", "a\u200bb", "ab"]
    made = {identifier: api.create_user(identifier)["id"] for identifier in lookalikes}
    assert len(set(made.values())) == len(lookalikes)
    for identifier, user_id in made.items():
        assert api.get_user(identifier)["id"] == user_id


def nested(depth: int) -> dict[str, Any]:
    deep: dict[str, Any] = {}
    cursor = deep
    for _ in range(depth):
        cursor["k"] = {}
        cursor = cursor["k"]
    return deep


def store_nested(root: Path, deep: dict[str, Any]) -> None:
    """Store ``deep`` as thread and as step metadata: it must come back exactly, or be
    refused with ValueError without anything written."""
    api = StoreAPI(root)
    for kind in ("thread", "step"):
        files = truth(root)
        try:
            if kind == "thread":
                api.update_thread("t1", metadata={"deep": deep})
            else:
                api.create_step({"id": "s1", "threadId": "t2", "type": "run", "metadata": deep})
        except ValueError:
            assert truth(root) == files, "a refused call wrote something"
            continue
        got = StoreAPI(root).get_thread("t1" if kind == "thread" else "t2")
        assert got is not None
        stored = got["metadata"]["deep"] if kind == "thread" else got["steps"][0]["metadata"]
        assert stored == deep


@pytest.mark.parametrize("depth", [10, 500])
def test_nested_metadata_round_trips(box: Path, depth: int) -> None:
    store_nested(box / "chats", nested(depth))


@pytest.mark.parametrize("depth", [1000, 5000])
def test_very_deeply_nested_metadata_is_refused_with_value_error(box: Path, depth: int) -> None:
    store_nested(box / "chats", nested(depth))


def test_a_refused_update_thread_leaves_nothing_behind(box: Path) -> None:
    root = box / "chats"
    api = StoreAPI(root)
    files = truth(root)
    with pytest.raises(ValueError):
        api.update_thread("t1", name="lone \ud800 surrogate")
    assert truth(root) == files
