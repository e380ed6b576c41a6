"""Child processes of the tests: where the repository is, and the environment a child
Python needs to import this checkout (``filelayer``, ``tests.support``, ``benchmarks``)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent


def subprocess_env(*, same_mode: bool = False, **extra: str) -> dict[str, str]:
    """The environment of a child Python: this repository first on its path.

    The child runs in the fast mode unless ``FILELAYER_PURE`` is passed in ``extra``;
    ``same_mode=True`` keeps this process's mode instead (the reliability suites, whose
    children must run in the mode the stage runs: ``FILELAYER_PURE=1`` in the pure one).
    """
    env = dict(os.environ)
    if not same_mode:
        env.pop("FILELAYER_PURE", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH", "")] if p)
    env.update(extra)
    return env
