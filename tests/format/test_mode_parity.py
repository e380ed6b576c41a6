"""The fast and the zero-dependency modes read and refuse alike: each case runs in a
child process of each mode (``FILELAYER_PURE=1`` and not), and the two answers must be
the same (README, "Fast and zero-dependency modes": both behave identically)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import subprocess_env

FAST = all(
    importlib.util.find_spec(name) is not None for name in ("orjson", "aiofiles", "filelock")
)

needs_fast = pytest.mark.skipif(not FAST, reason="orjson, aiofiles, filelock not all installed")


def in_both_modes(code: str, cwd: Path) -> dict[str, object]:
    """What ``code`` prints (one JSON value) in a child of each mode."""
    answers = {}
    for mode, extra in (("pure", {"FILELAYER_PURE": "1"}), ("fast", {})):
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=subprocess_env(**extra),
            capture_output=True,
            text=True,
            check=True,
            cwd=cwd,
        )
        answers[mode] = json.loads(done.stdout)
    return answers


DECODE = r"""
import json
from filelayer import MODE
from filelayer.format import codec
out = {"mode": MODE, "answers": []}
for text in %r:
    try:
        value = codec.decode(text)
    except codec.DecodeError as exc:
        out["answers"].append(["damaged", isinstance(exc, ValueError)])
    else:
        out["answers"].append(["read", ascii(value)])
print(json.dumps(out))
"""


@needs_fast
def test_text_with_an_unpaired_surrogate_is_damaged_in_both_modes(tmp_path: Path) -> None:
    """``codec.decode`` takes text as well as bytes. Text holding an unpaired surrogate
    (not an escape: the character itself) cannot be UTF-8, which every reader is held
    to; the fast mode refused it and the pure one read it."""
    texts = ['"\ud800"', '{"a":"x\udc80"}', '["ok", "\udfff"]', '"\u00e9"', '"\\ud83d\\ude00"']
    answers = in_both_modes(DECODE % (texts,), tmp_path)
    assert answers["pure"]["mode"] == "pure" and answers["fast"]["mode"] == "fast"
    assert answers["pure"]["answers"] == answers["fast"]["answers"]
    assert answers["pure"]["answers"][:3] == [["damaged", True]] * 3


DIES_HOLDING = r"""
import os, sys
from pathlib import Path
from filelayer._io import locks
path = Path(sys.argv[1])
assert locks._exclusive_try(str(path), path) is not None
os._exit(0)  # killed while it holds the lock: nothing of it runs any more
"""


@pytest.mark.xfail(
    strict=True,
    reason="not fixed: the pure mode's lock without flock (Windows) outlives a killed holder; "
    "msvcrt.locking, in the standard library, is released by the system as filelock's is",
)
def test_the_pure_modes_lock_without_flock_goes_with_a_holder_that_dies(tmp_path: Path) -> None:
    """docs/format.md, "Locks": locks are released by the operating system when a
    process dies. Where there is no ``flock`` (Windows) the fast mode locks through
    ``filelock``, which the system releases with its holder; the pure mode makes a
    ``<lock file>.held`` file, which nobody removes once its holder was killed, so every
    later write behind that lock (a 64th of the threads; every user, for users.lock)
    waits ``lock_timeout`` and fails, for good, in the pure mode alone. Run here, on any
    system, with the lock the pure mode takes where there is no ``flock``."""
    from filelayer._io import locks as _locks

    path = tmp_path / "locks" / "thread-07.lock"
    path.parent.mkdir()
    subprocess.run(
        [sys.executable, "-c", DIES_HOLDING, str(path)],
        env=subprocess_env(FILELAYER_PURE="1"),
        check=True,
        cwd=tmp_path,
    )
    token = _locks._exclusive_try(str(path), path)
    assert token is not None, "the lock of a process that died is still held"
    _locks._exclusive_release(token)
