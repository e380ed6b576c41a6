"""The deleted-threads log (``deleted.jsonl``): which thread ids were deleted, and when.

Deleted ids stay deleted: a late write for a deleted thread (Chainlit fires writes as
independent tasks) must not bring it back. The log only grows, so it is read with the
one tail reader, from where the last look stopped.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from .._io.tail import Tail
from ..format import codec as _codec


class DeletedThreads(Tail):
    """Thread id -> ``deletedAt``, brought up to date from the log when asked."""

    __slots__ = ("_ids", "path")

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._ids: dict[str, str] = {}

    def _reset(self) -> None:
        super()._reset()
        self._ids = {}

    def _take(self, lines: bytes, path: Path) -> None:
        for line in lines.split(b"\n"):
            if not line:
                continue
            with contextlib.suppress(*_codec.DecodeError):
                record = _codec.decode(line)
                if isinstance(record, dict) and isinstance(record.get("id"), str):
                    self._ids[record["id"]] = str(record.get("deletedAt") or "")

    def forget(self) -> None:
        """Forget what was read: the log is read again from its start at the next look
        (it changed behind the layer's back, ``git checkout``)."""
        self._reset()

    def add(self, thread_id: str, at: str) -> None:
        """This process just appended the deletion of ``thread_id`` to the log."""
        self._ids[thread_id] = at

    def has(self, thread_id: str) -> bool:
        if thread_id in self._ids:
            return True
        self.catch_up(self.path)
        return thread_id in self._ids

    def all(self) -> dict[str, str]:
        self.catch_up(self.path)
        return dict(self._ids)
