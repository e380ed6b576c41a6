"""`filelayer verify`, `verify --repair`, `compact` and `reindex`."""

from __future__ import annotations

import gc
import shutil
import threading
from pathlib import Path

import pytest

from filelayer import ArchiveStore
from filelayer.cli import main
from tests.support.cli import build_archive


@pytest.fixture
def archive(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    build_archive(root)
    monkeypatch.setenv("FILELAYER_ROOT", str(root))
    return root


def journal(root: Path, thread: str = "bread") -> Path:
    return root / "threads" / thread / "steps.jsonl"


def test_a_clean_archive_verifies(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify"]) == 0
    assert "checked 3 thread(s): no problems" in capsys.readouterr().err


def test_torn_and_damaged_lines_are_found_then_set_aside(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = ArchiveStore(archive).get_thread("bread")
    data = journal(archive).read_bytes().split(b"\n")
    data.insert(2, b"{garbage")
    journal(archive).write_bytes(b"\n".join(data) + b'{"op":"step","step":{"id":"x"')
    assert main(["verify"]) == 1
    out = capsys.readouterr().out
    assert "1 damaged line(s)" in out and "torn last line" in out
    assert main(["verify", "--repair"]) == 0
    assert "repaired: threads/bread/steps.jsonl" in capsys.readouterr().out
    damaged = (archive / "threads" / "bread" / "steps.jsonl.damaged").read_bytes()
    assert b"{garbage" in damaged and b'"id":"x"' in damaged
    assert ArchiveStore(archive).get_thread("bread") == before
    assert main(["verify"]) == 0


def test_leftover_temporary_files_are_removed(archive: Path) -> None:
    leftover = archive / "threads" / "bread" / ".thread.json.abcd1234.tmp"
    leftover.write_text("half")
    doomed = archive / "threads" / ".cake.deadbeef.deleting.tmp"
    doomed.mkdir()
    (doomed / "steps.jsonl").write_text("")
    assert main(["verify"]) == 1
    assert main(["verify", "--repair"]) == 0
    assert not leftover.exists() and not doomed.exists()


def test_index_drift_is_found_and_rebuilt(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # What a crash between two writes leaves. The opening of the archive heals it when it
    # sees the writer gone (docs/format.md, "How the index heals itself"); otherwise
    # `verify` finds it and `--repair` rebuilds. Either way the thread is listed again.
    # (Which of the two happens depends on when the writer's session looks dead; the
    # detection itself is tested on a store that does not heal, in test_conformance.)
    writer = ArchiveStore(archive)
    writer.index.put("cake", None)
    found = main(["verify"])
    out = capsys.readouterr().out
    assert found in (0, 1)
    assert (found == 1) == ("thread cake is missing from the index" in out)
    assert main(["verify", "--repair"]) == 0
    assert main(["verify"]) == 0
    capsys.readouterr()
    assert main(["list", "--json"]) == 0
    assert '"id": "cake"' in capsys.readouterr().out
    writer.close()


def test_missing_or_changed_element_files_are_reported(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (archive / "threads" / "bread" / "elements" / "img1.png").write_bytes(b"other bytes")
    (archive / "threads" / "bread" / "elements" / "doc1.pdf").unlink()
    (archive / "threads" / "bread" / "elements" / "stray.bin").write_bytes(b"?")
    assert main(["verify", "--repair"]) == 1  # nothing safe to do about these
    out = capsys.readouterr().out
    assert "img1's file differs" in out and "doc1's file is missing" in out
    assert "no element refers to this file" in out


def test_a_deleted_thread_left_on_disk_is_finished(archive: Path) -> None:
    with open(archive / "deleted.jsonl", "a") as f:
        f.write('{"deletedAt":"2026-01-01T00:00:00.000000Z","id":"hello"}\n')
    assert main(["verify"]) == 1
    assert main(["verify", "--repair"]) == 0
    assert not (archive / "threads" / "hello").exists()


def test_damaged_tombstones_are_found_then_set_aside_and_nothing_deleted_comes_back(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """deleted.jsonl's damaged lines and torn last line are reported as a journal's are,
    and ``--repair`` moves them to ``deleted.jsonl.damaged``: every tombstone (of a
    thread, of an erased user) stays, in its order, and no deleted thread comes back."""
    assert main(["erase-user", "bob"]) == 0  # thread "hello", and bob's user tombstone
    store = ArchiveStore(archive)
    assert store.delete_thread("cake")
    bread = store.get_thread("bread")
    store.close()
    tombstones = archive / "deleted.jsonl"
    kept = tombstones.read_bytes()
    first = kept.count(b"\n") + 1  # the number of the first line added below
    gone = b'{"deletedAt":"2026-01-01T00:00:00.000000Z","id":"gone"}\n'
    torn = b'{"deletedAt":"2026-01-02T00:00:00.000000Z","id":"bread"}'
    tombstones.write_bytes(kept + b"{garbage\n" + gone + b'[]\n\n{"id": 17}\n' + torn)
    capsys.readouterr()

    assert main(["verify"]) == 1
    out = capsys.readouterr().out
    bad = [first, first + 2, first + 4]
    assert f"problem: deleted.jsonl: 3 damaged line(s): {bad}, a torn last line" in out
    assert main(["verify", "--repair"]) == 0
    out = capsys.readouterr().out
    assert "repaired: deleted.jsonl: 3 damaged line(s)" in out
    assert "set aside in deleted.jsonl.damaged" in out
    assert tombstones.read_bytes() == kept + gone
    aside = (archive / "deleted.jsonl.damaged").read_bytes()
    assert aside == b'{garbage\n[]\n{"id": 17}\n' + torn + b"\n"
    store = ArchiveStore(archive)
    try:
        for thread_id in ("hello", "cake", "gone"):
            assert store.is_deleted(thread_id) and store.get_thread(thread_id) is None
        assert store.get_thread("bread") == bread  # its torn tombstone was never there
        assert [t["id"] for t in store.list_threads(user_id=None)[0]] == ["bread"]
    finally:
        store.close()
    assert main(["verify"]) == 0


def test_compact_is_canonical_stable_and_keeps_every_read(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ArchiveStore(archive)
    store.delete_step("bread-t2")
    before = {t: store.get_thread(t) for t in store.thread_ids()}
    assert main(["compact"]) == 0
    assert "compacted 3 of 3 thread(s)" in capsys.readouterr().err
    once = journal(archive).read_bytes()
    assert main(["compact", "bread"]) == 0
    assert journal(archive).read_bytes() == once
    lines = once.splitlines()
    step_lines = [line for line in lines if line.startswith(b'{"op":"step","step"')]
    assert len(step_lines) == len(before["bread"]["steps"])  # one line per step
    fresh = ArchiveStore(archive)
    assert {t: fresh.get_thread(t) for t in fresh.thread_ids()} == before
    assert main(["verify"]) == 0


def test_compact_leaves_damaged_journals_alone(archive: Path) -> None:
    with open(journal(archive), "ab") as f:
        f.write(b"{torn")
    data = journal(archive).read_bytes()
    assert main(["compact", "bread"]) == 1
    assert journal(archive).read_bytes() == data


def test_compact_while_the_app_writes_loses_nothing(archive: Path) -> None:
    writer = ArchiveStore(archive)
    stop = threading.Event()
    written: list[str] = []

    def write() -> None:
        n = 0
        while not stop.is_set() or n < 50:
            sid = f"live-{n}"
            writer.write_step(
                {
                    "id": sid,
                    "threadId": "bread",
                    "type": "user_message",
                    "output": f"live {n}",
                    "createdAt": "2026-03-09T00:00:00Z",
                }
            )
            written.append(sid)
            n += 1

    thread = threading.Thread(target=write)
    thread.start()
    for _ in range(20):
        assert main(["compact", "bread"]) == 0
    stop.set()
    thread.join()
    steps = {s["id"]: s["output"] for s in ArchiveStore(archive).get_thread("bread")["steps"]}
    assert all(steps[sid] == f"live {sid.split('-')[1]}" for sid in written)


def test_reindex_rebuilds_a_deleted_index(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.rmtree(archive / "index")
    assert main(["reindex"]) == 0
    assert "indexed 3 thread(s)" in capsys.readouterr().err
    assert main(["list", "--feedback", "0", "--json"]) == 0
    assert '"id": "cake"' in capsys.readouterr().out


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("createdAt", "2020-01-01T00:00:00.000000Z", "created"),
        ("userIdentifier", "x", "identifier"),
    ],
)
def test_verify_reports_a_manifest_edit_the_index_has_not_seen(
    archive: Path, capsys: pytest.CaptureFixture[str], key: str, value: str, field: str
) -> None:
    """A hand edit of a thread's creation time (its place in the sidebar) or of its
    author's identifier (what the sidebar shows) is drift like a renamed thread: verify
    said "no problems" while the sidebar showed the old value."""
    import json

    path = archive / "threads" / "bread" / "thread.json"
    doc = json.loads(path.read_text("utf-8"))
    doc[key] = value
    # The fixture's store is left open; collected, its writer session looks dead and the
    # next opening reconciles, reading the edit: collected now, and healed by this store.
    gc.collect()
    store = ArchiveStore(archive)
    store.close()
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", "utf-8")
    assert main(["verify"]) == 1
    assert f"thread bread: index differs in {field}" in capsys.readouterr().out
    assert main(["verify", "--repair"]) == 0
    assert main(["verify"]) == 0


def test_repair_never_makes_a_thread_of_a_directory_that_holds_none(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A directory in ``threads/`` with neither ``thread.json`` nor ``steps.jsonl`` is no
    thread (docs/format.md): verify names it, and repair leaves it as it is; it gave it a
    manifest, so someone's notes became a thread in the sidebar."""
    junk = archive / "threads" / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("my notes\n")
    assert main(["verify"]) == 1
    assert "junk: neither thread.json nor steps.jsonl" in capsys.readouterr().out
    assert main(["verify", "--repair"]) == 1  # nothing it may do about it
    assert not (junk / "thread.json").exists()
    assert (junk / "notes.txt").read_text() == "my notes\n"
    capsys.readouterr()
    assert main(["list", "--json"]) == 0
    assert '"id": "junk"' not in capsys.readouterr().out
