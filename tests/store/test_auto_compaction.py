"""Journals that stay small (issue #11, item 4).

A step written again and again (progress shown with ``step.update()``, a LangChain step
carrying its whole prompt) appends its whole self each time. Once a journal's dead bytes
outweigh its live ones, past a minimum size, the store rewrites it compacted: these
tests check that the journal stays within twice its live bytes, that every write and
every tombstone survives, also when another process appends meanwhile, and that the
adapter does it off the event loop.
"""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from typing import Any

import pytest

from filelayer import ArchiveStore
from filelayer.format import codec as _codec
from filelayer.format import journal
from filelayer.store.compaction import _COMPACT_MIN_BYTES

PROMPT = "You are a helpful assistant. " * 500  # about 15 KB, in every write of a step


def progress(store: ArchiveStore, step_id: str, n: int, thread: str = "t1") -> dict[str, Any]:
    written = {
        "id": step_id,
        "threadId": thread,
        "type": "llm",
        "input": PROMPT,
        "output": f"{step_id}: {n}% done",
        "createdAt": f"2026-01-01T00:00:{len(step_id) % 60:02d}.000000Z",
    }
    store.write_step(written)
    return written


def live_bytes(path: Path) -> int:
    state = journal.fold(journal.read(path).records)
    return sum(len(_codec.encode_line(r)) for r in journal.compacted_records(state))


def test_a_step_updated_again_and_again_keeps_its_journal_small(tmp_path: Path) -> None:
    store = ArchiveStore(tmp_path / "chats")
    path = store.layout.journal("t1")
    biggest = 0.0
    for n in range(200):
        progress(store, f"s{n // 40}", n)
        size = path.stat().st_size
        if size > 2 * _COMPACT_MIN_BYTES:
            biggest = max(biggest, size / live_bytes(path))
    assert biggest <= 2.0 + 1e-9
    assert path.stat().st_size < 200 * len(PROMPT) / 10
    steps = {s["id"]: s for s in ArchiveStore(store.root).get_thread("t1")["steps"]}
    assert {k: v["output"] for k, v in steps.items()} == {
        f"s{k}": f"s{k}: {40 * k + 39}% done" for k in range(5)
    }
    assert all(s["input"] == PROMPT for s in steps.values())
    assert journal.read(path).bad_lines == []


def test_compaction_keeps_tombstones_feedback_and_elements(tmp_path: Path) -> None:
    store = ArchiveStore(tmp_path / "chats")
    store.write_step({"id": "q", "threadId": "t1", "type": "user_message", "output": "go"})
    store.upsert_feedback(for_id="q", value=1, thread_id="t1", feedback_id="fb")
    store.put_element("t1", {"id": "el", "forId": "q", "name": "a.txt", "type": "text"}, b"x")
    progress(store, "doomed", 0)
    store.delete_step("doomed", "t1")
    for n in range(60):
        progress(store, "busy", n)
    # Compacted several times by now; a late write of the deleted step stays out.
    assert store.layout.journal("t1").stat().st_size < 30 * len(PROMPT)
    progress(store, "doomed", 99)
    for n in range(60, 80):
        progress(store, "busy", n)
    thread = ArchiveStore(store.root).get_thread("t1")
    assert {s["id"] for s in thread["steps"]} == {"q", "busy"}
    assert thread["steps"][0]["feedback"]["id"] == "fb"
    assert [e["id"] for e in thread["elements"]] == ["el"]
    records = journal.read(store.layout.journal("t1")).records
    assert {"op": "step.delete", "id": "doomed"} in records


def test_a_damaged_journal_is_left_alone(tmp_path: Path) -> None:
    store = ArchiveStore(tmp_path / "chats")
    progress(store, "s", 0)
    path = store.layout.journal("t1")
    with open(path, "ab") as f:
        f.write(b"{not json\n")
    for n in range(1, 30):
        progress(store, "s", n)
    read = journal.read(path)
    assert read.bad_lines == [2]  # kept: verify --repair decides, not compaction
    assert len(read.records) == 30


def _other_writer(root: str, worker: int, rounds: int) -> None:
    store = ArchiveStore(root)
    for n in range(rounds):
        progress(store, f"w{worker}", n)
        store.write_step(
            {"id": f"w{worker}-line-{n}", "threadId": "t1", "type": "run", "output": str(n)}
        )


def test_processes_compacting_and_appending_at_once_lose_nothing(tmp_path: Path) -> None:
    """Three processes write one thread, each compacting it as it grows: every line
    any of them wrote is there at the end, and the journal stayed small."""
    root = tmp_path / "chats"
    ArchiveStore(root)
    rounds = 60
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_other_writer, args=(str(root), w, rounds)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    store = ArchiveStore(root)
    steps = {s["id"]: s["output"] for s in store.get_thread("t1")["steps"]}
    for w in range(3):
        assert steps[f"w{w}"] == f"w{w}: {rounds - 1}% done"
        for n in range(rounds):
            assert steps[f"w{w}-line-{n}"] == str(n)
    path = store.layout.journal("t1")
    assert path.stat().st_size <= 2 * live_bytes(path) + 3 * len(PROMPT) * 2
    assert journal.read(path).bad_lines == []


def test_compacting_while_another_thread_appends_loses_nothing(tmp_path: Path) -> None:
    """Compaction reads and folds without the lock: the lines appended meanwhile are
    copied after the compacted ones when it swaps the file in."""
    root = tmp_path / "chats"
    writer = ArchiveStore(root, auto_compact=False)
    compactor = ArchiveStore(root, auto_compact=False)
    for n in range(20):
        progress(writer, "big", n)
    stop = threading.Event()
    compacted = threading.Event()
    results = []

    def compact() -> None:
        while True:  # at least once, however late this thread gets to run
            results.append(compactor.compact_journal("t1"))
            compacted.set()
            if stop.is_set():
                return

    t = threading.Thread(target=compact)
    t.start()
    for n in range(300):
        if n == 150:
            # Lines before and after a compaction, whatever the scheduler does: on a
            # loaded machine the writes could all be done before the thread first ran.
            assert compacted.wait(120)  # a bound for a stuck thread, not a timing claim
        writer.write_step({"id": f"line-{n}", "threadId": "t1", "type": "run", "output": str(n)})
    stop.set()
    t.join()
    assert any(r.changed for r in results)
    steps = {s["id"]: s["output"] for s in ArchiveStore(root).get_thread("t1")["steps"]}
    assert all(steps[f"line-{n}"] == str(n) for n in range(300))
    assert steps["big"] == "big: 19% done"


async def test_the_adapter_compacts_off_the_event_loop(root: Path, in_tmp: Path) -> None:
    pytest.importorskip("chainlit")
    from chainlit.context import init_http_context

    from filelayer import FileDataLayer

    init_http_context()
    layer = FileDataLayer(root)
    store = layer.store
    where: list[str] = []
    compact = store.compact_journal

    def spy(thread_id: str, **kwargs: Any) -> Any:
        where.append(threading.current_thread().name)
        return compact(thread_id, **kwargs)

    store.compact_journal = spy  # type: ignore[method-assign]
    for n in range(100):
        await layer.update_step(
            {
                "id": "s",
                "threadId": "t1",
                "type": "llm",
                "input": PROMPT,
                "output": f"{n}%",
                "createdAt": "2026-01-01T00:00:00.000000Z",
            }
        )
    await layer.calls.idle()
    assert where and threading.main_thread().name not in where
    path = store.layout.journal("t1")
    # The rule: past 64 KiB, within twice its live bytes. Below the threshold a journal is
    # left as it is (here, a compaction that ends before the last few writes leaves up to
    # four 15 KB versions, as a loaded CI machine showed).
    size = path.stat().st_size
    assert size < _COMPACT_MIN_BYTES or size <= 2 * live_bytes(path)
    thread = await layer.get_thread("t1")
    assert thread["steps"][0]["output"] == "99%"
    await layer.close()


def test_a_journal_of_new_lines_is_not_read_again_and_again(tmp_path: Path) -> None:
    """The live bytes are followed as lines are written: a journal that only grows is
    never read to decide (when this process wrote it from its first byte), or read once
    (when it found it written already), however large it grows."""
    root = tmp_path / "chats"
    looks: list[str] = []

    def counting(store: ArchiveStore) -> ArchiveStore:
        look = store.compactor.compact_open

        def spy(thread_id: str, *args: Any) -> Any:
            looks.append(thread_id)
            return look(thread_id, *args)

        store.compactor.compact_open = spy  # type: ignore[method-assign]
        return store

    first = counting(ArchiveStore(root))
    for n in range(400):
        first.write_step({"id": f"s{n}", "threadId": "t1", "type": "run", "output": "x" * 600})
    assert first.layout.journal("t1").stat().st_size > 4 * _COMPACT_MIN_BYTES
    assert looks == []
    again = counting(ArchiveStore(root))  # a restarted process
    for n in range(400, 800):
        again.write_step({"id": f"s{n}", "threadId": "t1", "type": "run", "output": "x" * 600})
    assert looks == ["t1"]
    # Updates, though, are noticed without reading: dead bytes pile up, one compaction.
    for n in range(1600):
        again.write_step({"id": f"s{n % 800}", "threadId": "t1", "output": f"{n}" * 300})
    assert looks.count("t1") >= 2
    assert again.layout.journal("t1").stat().st_size <= 2 * live_bytes(again.layout.journal("t1"))
