"""The fast and the zero-dependency modes write byte-identical archives."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import subprocess_env

FAST_PACKAGES = ("orjson", "aiofiles", "filelock")
"""What the README promises: with these installed, they are used."""


def fast_packages_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in FAST_PACKAGES)


SCENARIO = r"""
import sys
from filelayer import ArchiveStore, MODE
root = sys.argv[1]
store = ArchiveStore(root)
store.write_step({"id": "u1", "threadId": "t1", "type": "user_message",
                  "output": "Grüße, 世界! Tab\tand \u0001 control, emoji 🎉",
                  "createdAt": "2026-01-01T00:00:01.000000Z",
                  "metadata": {"floats": [0.1, 1e16, 1.5e-07, -0.0, 123456789.125],
                               "big": 2**70, "nested": {"z": [None, True, False]}}})
store.write_step({"id": "a1", "threadId": "t1", "type": "assistant_message", "output": "",
                  "parentId": "r1", "createdAt": "2026-01-01T00:00:02.000000Z"})
store.write_step({"id": "a1", "threadId": "t1", "output": "**Markdown** answer\n- one\n- two"})
store.upsert_feedback(for_id="a1", value=0, comment="«non»", thread_id="t1", feedback_id="f1")
store.put_element("t1", {"id": "e1", "type": "image", "name": "x.png", "mime": "image/png"},
                  bytes(range(256)))
store.delete_step("gone-never-existed", "t1")
print(MODE)
"""


def run_scenario(root: Path, pure: bool) -> str:
    env = subprocess_env(**({"FILELAYER_PURE": "1"} if pure else {}))
    out = subprocess.run(
        [sys.executable, "-c", SCENARIO, str(root)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=root.parent,
    )
    return out.stdout.strip()


def digest_tree(root: Path) -> dict[str, str]:
    """Every source-of-truth file's hash, with the clock-dependent fields blanked."""
    result = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or rel.startswith(("index/", "locks/")):
            continue
        data = path.read_bytes()
        if path.name == "thread.json":
            doc = json.loads(data)
            doc["createdAt"] = doc["updatedAt"] = "<clock>"
            data = json.dumps(doc).encode()
        elif path.name.endswith(".jsonl"):  # each record's stamp: when it was written
            data = re.sub(rb'"at":"[^"]*",', b"", data)
        result[rel] = hashlib.sha256(data).hexdigest()
    return result


def child_mode(env: dict[str, str], cwd: Path) -> str:
    code = "from filelayer import MODE; print(MODE)"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=cwd
    )
    return done.stdout.strip()


def test_the_fast_mode_is_used_whenever_its_packages_are_installed(tmp_path: Path) -> None:
    """Without FILELAYER_PURE the fast packages are used if they are all importable, so
    the comparison below really compares two modes where they are installed."""
    import filelayer

    expected = "fast" if fast_packages_installed() else "pure"
    unset = subprocess_env()
    assert "FILELAYER_PURE" not in unset
    assert child_mode(unset, tmp_path) == expected
    for off in ("", "0"):
        assert child_mode(subprocess_env(FILELAYER_PURE=off), tmp_path) == expected
    assert child_mode(subprocess_env(FILELAYER_PURE="1"), tmp_path) == "pure"
    requested, mode = os.environ.get("FILELAYER_PURE"), filelayer.MODE  # this process
    if requested is None:
        assert mode == expected
    elif requested == "1":
        assert mode == "pure"


def test_both_modes_write_the_same_bytes(tmp_path: Path) -> None:
    if not fast_packages_installed():
        pytest.skip(f"{', '.join(FAST_PACKAGES)} not all installed: there is no fast mode")
    fast_root, pure_root = tmp_path / "fast", tmp_path / "pure"
    fast_mode = run_scenario(fast_root, pure=False)
    pure_mode = run_scenario(pure_root, pure=True)
    assert (fast_mode, pure_mode) == ("fast", "pure")  # two modes, not one twice
    assert digest_tree(fast_root) == digest_tree(pure_root)
    journal = (fast_root / "threads" / "t1" / "steps.jsonl").read_text("utf-8")
    assert "Grüße, 世界!" in journal and "\\u0001" in journal


def test_each_mode_reads_what_the_other_wrote(tmp_path: Path) -> None:
    if not fast_packages_installed():
        pytest.skip(f"{', '.join(FAST_PACKAGES)} not all installed: there is no fast mode")
    root = tmp_path / "chats"
    assert run_scenario(root, pure=False) == "fast"
    read = (
        "import sys, json; from filelayer import ArchiveStore; "
        "t = ArchiveStore(sys.argv[1]).get_thread('t1'); "
        "print(json.dumps([t['steps'], t['elements']], sort_keys=True))"
    )
    outputs = [
        subprocess.run(
            [sys.executable, "-c", read, str(root)],
            capture_output=True,
            text=True,
            check=True,
            env=subprocess_env(**({"FILELAYER_PURE": "1"} if pure else {})),
            cwd=tmp_path,
        ).stdout
        for pure in (False, True)
    ]
    assert outputs[0] == outputs[1]
    steps = json.loads(outputs[0])[0]
    assert steps[0]["metadata"]["big"] == 2**70
