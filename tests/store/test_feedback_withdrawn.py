"""A rating withdrawn, replaced or gone with its step: on the disk before the index
forgets it (the ``fsync`` mode, even in a group commit), so that a later withdrawal of
the same id, which finds nothing in the index, is answered without reading journals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from filelayer import ArchiveStore
from filelayer._io import commit, fs
from filelayer.maintenance.verify import verify

MODES = ["fsync", "flush"]


def _step(sid: str, text: str) -> dict[str, Any]:
    return {
        "id": sid,
        "threadId": "t1",
        "type": "user_message",
        "output": text,
        "createdAt": "2026-01-01T00:00:00.000000Z",
    }


def _rated(root: Path, durability: str) -> ArchiveStore:
    store = ArchiveStore(root, durability=durability)
    store.write_step(_step("s1", "one"))
    store.write_step(_step("s2", "two"))
    store.upsert_feedback(for_id="s1", value=1, feedback_id="f1", thread_id="t1")
    store.upsert_feedback(for_id="s2", value=0, feedback_id="f2", thread_id="t1")
    return store


def _no_scan(store: ArchiveStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def scan(*args: Any, **kwargs: Any) -> str | None:
        raise AssertionError("the journals were read for an id the index answers")

    monkeypatch.setattr(type(store.locator), "scan_journals", scan)


def _fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    made: list[int] = []
    real = fs.fsync_fd

    def counting(fd: int) -> None:
        made.append(fd)
        real(fd)

    monkeypatch.setattr(fs, "fsync_fd", counting)
    return made


def _answers(store: ArchiveStore) -> tuple[Any, ...]:
    thread = store.get_thread("t1")
    assert thread is not None
    rated = {s["id"]: s.get("feedback") for s in thread["steps"]}
    listed = [
        [t["id"] for t in store.list_threads(user_id=None, feedback=value)[0]] for value in (0, 1)
    ]
    return rated, listed


@pytest.mark.parametrize("durability", MODES)
def test_an_id_never_given_is_answered_without_a_scan_nor_an_fsync(
    root: Path, durability: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _rated(root, durability)
    _no_scan(store, monkeypatch)
    made = _fsyncs(monkeypatch)
    assert store.delete_feedback("never-given") is True
    assert store.delete_feedback("never-given", scan=False) is True
    assert made == []


@pytest.mark.parametrize("durability", MODES)
def test_a_withdrawal_in_a_group_reaches_the_disk_before_the_index_forgets_it(
    root: Path, durability: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the fsync mode the withdrawal's line is fsynced where it is written, not left
    to the group; the flush mode leaves it to the flusher, as any write. A write of a
    step in the same group is left to the group, as before."""
    other = _rated(root, durability)
    store = ArchiveStore(root, durability=durability)
    store.write_step(_step("s3", "three"))  # the names this store writes behind: durable
    made = _fsyncs(monkeypatch)
    group = commit.SyncGroup()
    with commit.deferring(group):
        store.write_step(_step("s3", "three, edited"))
        assert made == []
        store.delete_feedback("f1")
        assert len(made) == (1 if durability == "fsync" else 0)
    _no_scan(other, monkeypatch)
    assert other.delete_feedback("f1") is True  # the index forgot it: no scan
    assert len(made) == (1 if durability == "fsync" else 0)
    group.commit()


@pytest.mark.parametrize("durability", MODES)
def test_a_replacement_or_a_step_deletion_in_a_group_reaches_the_disk_first(
    root: Path, durability: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _rated(root, durability)
    store = ArchiveStore(root, durability=durability)
    store.write_step(_step("s3", "three"))
    made = _fsyncs(monkeypatch)
    group = commit.SyncGroup()
    with commit.deferring(group):
        store.upsert_feedback(for_id="s3", value=1, feedback_id="f3", thread_id="t1")
        assert made == []  # a first rating of its step replaces nothing
        store.upsert_feedback(for_id="s1", value=0, feedback_id="f4", thread_id="t1")
        assert len(made) == (1 if durability == "fsync" else 0)  # f1 replaced
        store.delete_step("s2", "t1")  # f2 goes with it
        assert len(made) == (2 if durability == "fsync" else 0)
    group.commit()
    assert store.delete_feedback("f1") is True
    assert store.delete_feedback("f2") is True


@pytest.mark.parametrize("durability", MODES)
def test_after_withdrawals_verify_finds_no_drift_and_reindex_gives_the_same_answers(
    root: Path, durability: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _rated(root, durability)
    other = ArchiveStore(root, durability=durability)
    group = commit.SyncGroup()
    with commit.deferring(group):
        other.delete_feedback("f1")
    assert store.delete_feedback("f1") is True
    group.commit()
    assert store.delete_feedback("never-given") is True
    before = _answers(store)
    assert before == ({"s1": None, "s2": before[0]["s2"]}, [["t1"], []])
    assert not verify(store).problems
    store.reindex()
    assert _answers(store) == before
    assert not verify(store).problems
    _no_scan(store, monkeypatch)
    assert store.delete_feedback("f1") is True
    assert store.delete_feedback("never-given") is True
