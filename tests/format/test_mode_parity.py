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

FAST = all(importlib.util.find_spec(name) is not None for name in ("orjson", "aiofiles", "filelock"))

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
