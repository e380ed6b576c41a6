"""Helpers shared by the data-layer tests: Chainlit-shaped steps and times, a directory's
files, and the skips for features a supported Chainlit release lacks.
Nothing here imports Chainlit at module level (the storage-core tests import it too, in
environments without Chainlit)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest


def chainlit_version() -> str:
    from importlib.metadata import version

    return version("chainlit")


def needs_base_method(name: str) -> pytest.MarkDecorator:
    """Skip a test of ``name`` on a Chainlit release whose ``BaseDataLayer`` lacks it
    (favorites came after 2.0): the supported range includes releases without it."""
    from chainlit.data.base import BaseDataLayer

    return pytest.mark.skipif(
        not hasattr(BaseDataLayer, name),
        reason=f"Chainlit {chainlit_version()}'s BaseDataLayer has no {name}",
    )


def needs_thread_sharing() -> pytest.MarkDecorator:
    """Skip where Chainlit has no thread sharing yet (``on_shared_thread_view`` and the
    ``/project/thread/share`` route came after 2.0)."""
    from chainlit.config import CodeSettings

    # A pydantic model in recent releases, a (pydantic) dataclass in older ones.
    fields = set(getattr(CodeSettings, "model_fields", None) or ()) | set(
        getattr(CodeSettings, "__dataclass_fields__", None) or ()
    )
    has = "on_shared_thread_view" in fields
    return pytest.mark.skipif(
        not has, reason=f"Chainlit {chainlit_version()} has no thread sharing"
    )


async def end_session(session: Any) -> None:
    """``session.delete()``: a coroutine in recent Chainlit, a plain call in 2.0."""
    result = session.delete()
    if inspect.isawaitable(result):
        await result


def at(second: int, day: int = 1) -> str:
    """A fixed time in Chainlit's format; larger ``second`` is later."""
    return (
        f"2026-03-{day:02d}T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}.000000Z"
    )


def step(sid: str, thread: str = "t1", **fields: Any) -> dict[str, Any]:
    """A StepDict as Chainlit sends it (only the fields given, plus id and thread)."""
    return {"id": sid, "threadId": thread, **fields}


def tree(directory: Path) -> dict[str, bytes | None]:
    """Every path under ``directory`` with its bytes (``None`` for a directory)."""
    result: dict[str, bytes | None] = {}
    if not directory.exists():
        return result
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        result[rel] = None if path.is_dir() else path.read_bytes()
    return result


def options_of(cls: Any, **options: Any) -> dict[str, Any]:
    """The ``options`` that ``cls.__init__`` accepts in the installed Chainlit: a test that
    sets every option of a Step or a Message runs on releases that lack some (``icon``,
    ``command`` and ``modes`` came after 2.0)."""
    accepted = inspect.signature(cls.__init__).parameters
    return {name: value for name, value in options.items() if name in accepted}
