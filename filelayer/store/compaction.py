"""What a journal compaction needs to know and reports: the live bytes a process follows as
it writes a journal (:class:`_Growth`), when a journal is worth compacting, and the
outcome of one compaction (:class:`Compaction`)."""

from __future__ import annotations

from dataclasses import dataclass

_COMPACT_MIN_BYTES = 64 * 1024
"""A journal is compacted by itself only past this size: below, there is little to save."""
_GROWTH_KEPT = 4096
"""Journals whose live bytes a process follows as it writes them (the others are read
once when they pass the minimum size, to know them again)."""
_COMPACT_ROUNDS = 4
"""Compactions of one journal in a row, while writers append faster than it folds."""


_DAMAGED = "damaged lines: run `filelayer verify --repair` first"


class _Growth:
    """What a process knows of the live bytes of a journal it writes, to tell when its
    dead bytes may outweigh them without reading it.

    Learnt from a look at the whole journal (a compaction, done or declined), then
    followed as this process appends: a new version of a step counts as live only by
    what it outgrows the largest version written before (the earlier ones are dead but
    for the fields they alone hold), a step's deletion takes its bytes from the live
    ones, and any other line counts whole. The lines other processes appended in
    between are not read: they are *unknown*, and once they outweigh the live bytes
    the journal is looked at again. An estimate, used only to decide when to look: the
    compaction itself measures exactly."""

    __slots__ = ("file", "live", "size", "steps", "unknown")

    def __init__(
        self,
        file: tuple[int, int] | None = None,
        size: int = 0,
        live: int = 0,
        steps: dict[str, int] | None = None,
    ) -> None:
        self.file = file  # the file (device, inode) known; None: not looked at yet
        self.size = size  # where what is known ends
        self.live = live
        self.steps = steps if steps is not None else {}  # step id -> its largest line
        self.unknown = 0  # bytes other processes appended since the last look

    def written(self, at: int, size: int, step: str | None, deleted: str | None) -> None:
        """``size`` bytes appended at offset ``at``: a version of ``step``, the deletion
        of ``deleted``, or other lines."""
        if self.file is None:
            return
        if at != self.size:
            self.unknown += max(0, at - self.size)  # appended by others meanwhile
        if step is not None:
            before = self.steps.get(step, 0)
            if size > before:
                self.live += size - before
                self.steps[step] = size
        else:
            self.live += size
            if deleted is not None:
                self.live -= self.steps.pop(deleted, 0)
        self.size = at + size


@dataclass
class Compaction:
    """What :meth:`ArchiveStore.compact_journal` did to one journal (sizes in bytes)."""

    thread_id: str
    before: int
    after: int
    skipped: str | None = None

    @property
    def changed(self) -> bool:
        return self.skipped is None and self.before != self.after
