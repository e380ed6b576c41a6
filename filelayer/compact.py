"""Folding a journal into its canonical form: one line per step, in conversation order.

Safe while the app is running: the rewrite happens under the thread's lock, which every
writer of that thread takes too, and replaces the file atomically. A journal with
damaged lines is left alone (compacting would drop them): ``verify --repair`` first.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import _codec, _fs, journal
from .store import ArchiveStore


@dataclass
class Compaction:
    thread_id: str
    before: int
    after: int
    skipped: str | None = None

    @property
    def changed(self) -> bool:
        return self.skipped is None and self.before != self.after


def compact_thread(store: ArchiveStore, thread_id: str) -> Compaction:
    path = store.layout.journal(thread_id)
    with store.thread_lock(thread_id):
        data = _fs.read_bytes(path)
        if data is None:  # nothing written yet, or deleted meanwhile: nothing to fold
            return Compaction(thread_id, 0, 0)
        parsed = journal.parse(data, path)
        if parsed.bad_lines or parsed.torn_tail:
            return Compaction(
                thread_id,
                len(data),
                len(data),
                skipped="damaged lines: run `filelayer verify --repair` first",
            )
        state = journal.fold(parsed.records)
        canonical = b"".join(_codec.encode_line(r) for r in journal.compacted_records(state))
        if canonical != data:
            # Always durable: the rewrite replaces acknowledged lines, which a power cut
            # must not take with it, in either mode.
            _fs.atomic_write(path, canonical, durable=True)
        return Compaction(thread_id, len(data), len(canonical))
