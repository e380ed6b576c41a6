"""The thread index at scale: a 20,000-thread index answers exactly what a brute-force
reading of its records says (with and without the trigram index), pages stay exact while
threads are written, a write is all or nothing, and one user's texts are found only in
that user's searches. Behaviour only: speed is the benchmark's business."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import filelayer.index.db
import filelayer.index.pages
from filelayer import ArchiveStore
from filelayer.index.records import delete_record, feedback_record, text_record, thread_record
from filelayer.index.thread_index import POINTER_FILE, ThreadIndex, decode_cursor
from tests.support.processes import subprocess_env


def at(n: int) -> str:
    """Distinct Chainlit-shaped times, in order of ``n``."""
    day, rest = divmod(n, 86400)
    hms = f"{rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}"
    return f"2025-{1 + day // 28:02d}-{1 + day % 28:02d}T{hms}.{n % 1000000:06d}Z"


def uuid_of(rng: random.Random) -> str:
    import uuid

    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


WORDS = ["bread", "python", "garden", "café", "Straße", "rust", "tax", "lisbon", "guitar"]


class Model:
    """The index's meaning, computed the slow way from the records (docs/format.md)."""

    def __init__(self) -> None:
        self.threads: dict[str, dict[str, Any]] = {}

    def apply(self, r: dict[str, Any]) -> None:
        tid = r["id"]
        if r["k"] == "d":
            self.threads.pop(tid, None)
            return
        t = self.threads.setdefault(
            tid,
            {"user": None, "name": None, "created": "", "updated": "", "texts": {}, "fb": {}},
        )
        if r["k"] == "t":
            t.update(user=r["user"], name=r["name"])
            t["created"] = r["created"] or t["created"]
            t["updated"] = r["updated"] or t["updated"]
        elif r["k"] == "x":
            if r["x"] is None:
                t["texts"].pop(r["s"], None)
            else:  # kept in the form search compares: case-folded
                t["texts"][r["s"]] = (r["at"], r["x"].casefold())
        elif r["k"] == "f":
            for other in self.threads.values():
                other["fb"].pop(r["f"], None)
            if r["v"] is not None:
                t["fb"][r["f"]] = r["v"]

    def activity(self, tid: str) -> str:
        """The later of the creation and the last message: a rename is no activity."""
        t = self.threads[tid]
        last = max((a for a, _ in t["texts"].values()), default="")
        return max(t["created"], last)

    def page_ids(
        self, user: str | None, *, search: str | None = None, feedback: int | None = None
    ) -> list[str]:
        ids = sorted(
            (tid for tid, t in self.threads.items() if user is None or t["user"] == user),
            key=lambda tid: (self.activity(tid), tid),
            reverse=True,
        )
        if feedback is not None:
            ids = [tid for tid in ids if feedback in self.threads[tid]["fb"].values()]
        if search:
            needle = search.casefold()
            ids = [
                tid
                for tid in ids
                if needle in (self.threads[tid]["name"] or "").casefold()
                or any(needle in x.casefold() for _, x in self.threads[tid]["texts"].values())
            ]
        return ids


def generate(n_threads: int, seed: int = 3) -> list[dict[str, Any]]:
    """Index records as a live server appends them: threads created, named, chatted in
    (texts interleaved across threads), renamed, rated, some messages and threads
    deleted; a few odd ids and times from other clients."""
    rng = random.Random(seed)
    users = [uuid_of(rng) for _ in range(7)]
    records: list[dict[str, Any]] = []
    clock = 0
    live: list[str] = []
    made: dict[str, tuple[str, str]] = {}  # thread id -> (user, created)
    for n in range(n_threads):
        tid = uuid_of(rng) if n % 50 else f"Thread-{n}"  # some non-UUID ids
        user = users[min(int(rng.expovariate(0.6)), len(users) - 1)]
        clock += rng.randint(1, 40)
        created = at(clock) if n % 97 else f"2025-01-01 {n}"  # an odd time now and then
        records.append(
            thread_record(
                tid, user_id=user, user_identifier=f"{user[:4]}@x", name=None,
                created_at=created, updated_at=created, tags=None,
            )
        )  # fmt: skip
        words = rng.sample(WORDS, 2)
        name = f"{words[0].title()} question {n}"
        records.append(
            thread_record(
                tid, user_id=user, user_identifier=f"{user[:4]}@x", name=name,
                created_at=created, updated_at=at(clock + 1), tags=["t"] if n % 5 == 0 else None,
            )
        )  # fmt: skip
        for turn in range(rng.randint(1, 4)):
            clock += rng.randint(1, 30)
            text = f"About {words[1]} and more, turn {turn}. " * rng.randint(1, 5)
            records.append(text_record(tid, f"{tid}-m{turn}", at(clock), text))
        if rng.random() < 0.2:
            records.append(feedback_record(tid, f"fb-{n}", f"{tid}-m0", rng.choice((0, 1))))
        live.append(tid)
        made[tid] = (user, created)
        # Older threads get activity again, are renamed, lose a message, are deleted.
        if n > 10 and rng.random() < 0.1:
            old = rng.choice(live)
            clock += 1
            records.append(text_record(old, f"{old}-late", at(clock), "a late reply about tax"))
        if n > 10 and rng.random() < 0.02:
            old = rng.choice(live)
            records.append(text_record(old, f"{old}-m0", "", None))
        if n > 10 and rng.random() < 0.02:
            old = live.pop(rng.randrange(len(live)))
            records.append(delete_record(old))
        if n > 10 and rng.random() < 0.02:
            records.append(feedback_record(rng.choice(live), f"fb-{n - 1}", None, None))
        if n > 10 and rng.random() < 0.05:
            # Renamed, shared, or its session saved on disconnect: a change stamped now
            # that is no activity (the thread keeps its place).
            old = rng.choice(live)
            owner, born = made[old]
            clock += 1
            records.append(
                thread_record(
                    old, user_id=owner, user_identifier=f"{owner[:4]}@x", name=f"Renamed {n}",
                    created_at=born, updated_at=at(clock), tags=None,
                )
            )  # fmt: skip
    return records


def new_index(directory: Path, records: list[dict[str, Any]] | None = None) -> ThreadIndex:
    """An empty index in ``directory``, then ``records`` applied (in batches, as writers
    write them)."""
    index = ThreadIndex(directory, directory / "index.lock", lock_timeout=10)
    index.rebuild([])
    records = records or []
    for start in range(0, len(records), 5000):
        index.append(records[start : start + 5000])
    return index


def copy_index(index: ThreadIndex, directory: Path) -> ThreadIndex:
    """A copy of ``index`` in ``directory``, made with SQLite's online backup."""
    directory.mkdir(parents=True)
    name = (index.directory / POINTER_FILE).read_text().strip()
    source, target = sqlite3.connect(index.directory / name), sqlite3.connect(directory / name)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    (directory / POINTER_FILE).write_text(name + "\n")
    return ThreadIndex(directory, directory / "index.lock", lock_timeout=10)


def ids_of(index: ThreadIndex, user: str | None, **filters: Any) -> list[str]:
    index.refresh()
    return [s.id for s in index.page(user_id=user, first=10**9, **filters).items]


def walk(index: ThreadIndex, user: str | None, first: int, **filters: Any) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        page = index.page(user_id=user, first=first, cursor=cursor, **filters)
        seen += [s.id for s in page.items]
        if not page.has_next:
            return seen
        cursor = page.end_cursor


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    return generate(20_000)


@pytest.fixture(scope="module", params=["trigram", "no-fts5"])
def big(
    request: Any, tmp_path_factory: pytest.TempPathFactory, records: list[dict[str, Any]]
) -> tuple[ThreadIndex, Model, list[str]]:
    """The index of 20,000 threads, with the trigram index and (a Python without
    FTS5) without it."""
    saved = filelayer.index.db._fts5
    if request.param == "no-fts5":
        filelayer.index.db._fts5 = False
    try:  # the database made without a trigram index stays without one
        index = new_index(tmp_path_factory.mktemp("big"), records)
    finally:
        filelayer.index.db._fts5 = saved
    model = Model()
    for r in records:
        model.apply(r)
    users = sorted({t["user"] for t in model.threads.values()})
    return index, model, users


def test_a_20k_thread_index_orders_every_users_threads_as_the_records_say(
    big: tuple[ThreadIndex, Model, list[str]],
) -> None:
    index, model, users = big
    assert len(index.threads) == len(model.threads) > 19_000
    for user in [None, *users]:
        assert ids_of(index, user) == model.page_ids(user)
    heavy = users[0]
    # Cursor pages in the sizes the sidebar and the search box use.
    assert walk(index, heavy, 35) == model.page_ids(heavy)
    assert walk(index, heavy, 20, search="tax") == model.page_ids(heavy, search="tax")


@pytest.mark.parametrize(
    "search",
    ["bread", "BREAD", "straße", "STRASSE", "café", "turn 3", "x", "ta", "renamed 1",
     "question 19999", "about tax and more, turn 0. about"],
)  # fmt: skip
def test_search_matches_names_and_texts_case_insensitively_like_the_model(
    big: tuple[ThreadIndex, Model, list[str]], search: str
) -> None:
    index, model, users = big
    for user in users[:3]:
        assert ids_of(index, user, search=search) == model.page_ids(user, search=search)


@pytest.mark.parametrize("threads_walked", [256, 512])
def test_search_walking_the_newest_threads_then_checking_the_rest_agrees_with_the_model(
    big: tuple[ThreadIndex, Model, list[str]], monkeypatch: pytest.MonkeyPatch, threads_walked: int
) -> None:
    """Every way a search can go (all candidates checked, the newest threads walked,
    the walk cut short and the older candidates checked) gives the model's answer."""
    index, model, users = big
    monkeypatch.setattr(filelayer.index.pages, "_CHECK_ALL", 4)
    monkeypatch.setattr(filelayer.index.pages, "_WALK", threads_walked)
    for search in ["renamed", "late reply", "question 1", "and more, turn 3", "zyzzyva"]:
        for user in users[:3]:
            assert ids_of(index, user, search=search) == model.page_ids(user, search=search)
            assert walk(index, user, 7, search=search) == model.page_ids(user, search=search)
            assert ids_of(index, user, search=search, feedback=1) == model.page_ids(
                user, search=search, feedback=1
            )


def test_search_for_absent_text_and_json_syntax_finds_nothing(
    big: tuple[ThreadIndex, Model, list[str]],
) -> None:
    index, model, users = big
    for needle in ["zyzzyva", '"k":"x"', '","x":"', "\\n", "created"]:
        assert ids_of(index, users[0], search=needle) == model.page_ids(users[0], search=needle)
        assert ids_of(index, users[0], search=needle) == []


@pytest.mark.parametrize("value", [0, 1])
def test_the_feedback_filter_follows_changed_and_withdrawn_feedback(
    big: tuple[ThreadIndex, Model, list[str]], value: int
) -> None:
    index, model, users = big
    for user in users[:3]:
        expected = model.page_ids(user, feedback=value)
        assert expected, "the generator gives every user some feedback"
        assert ids_of(index, user, feedback=value) == expected


def test_summaries_read_back_names_texts_and_feedback(
    big: tuple[ThreadIndex, Model, list[str]],
) -> None:
    index, model, _ = big
    for tid in random.Random(1).sample(sorted(model.threads), 200):
        summary = index.threads[tid]
        t = model.threads[tid]
        assert (summary.name, summary.user_id, summary.activity) == (
            t["name"],
            t["user"],
            model.activity(tid),
        )
        assert summary.texts == t["texts"]
        assert {f: v for f, (_, v) in summary.feedback.items()} == t["fb"]
        assert summary.created_at == t["created"]


def test_pages_stay_exact_while_new_threads_are_written(tmp_path: Path) -> None:
    """A new thread lands above the cursor: paging on shows every thread that existed
    when paging began exactly once, and none of the new ones."""
    writer, reader = ArchiveStore(tmp_path / "a"), ArchiveStore(tmp_path / "a")
    user = writer.upsert_user("alice@example.com")["id"]
    for n in range(60):
        writer.write_step(
            {"id": f"s{n}", "threadId": f"t{n}", "type": "user_message", "output": f"hi {n}",
             "createdAt": at(1000 + n)}
        )  # fmt: skip
        writer.update_thread(f"t{n}", name=f"chat {n}", user_id=user)
    before = {f"t{n}" for n in range(60)}
    seen: list[str] = []
    cursor = None
    extra = 0
    while True:
        threads, page = reader.list_threads(user_id=user, first=7, cursor=cursor)
        seen += [t["id"] for t in threads]
        # Another writer (a second store on the root: its own index) adds threads
        # between two pages, newer than everything, as a live chat does.
        for _ in range(3):
            writer.write_step(
                {"id": f"new{extra}", "threadId": f"new{extra}", "type": "user_message",
                 "output": "new", "createdAt": at(5000 + extra)}
            )  # fmt: skip
            writer.update_thread(f"new{extra}", name="new", user_id=user)
            extra += 1
        if not page.has_next:
            break
        cursor = page.end_cursor
    assert len(seen) == len(set(seen))
    assert set(seen) == before
    # And the first page now starts with the newest of them.
    threads, _ = reader.list_threads(user_id=user, first=1)
    assert threads[0]["id"] == f"new{extra - 1}"


def test_a_thread_that_gets_a_new_message_moves_up_and_is_not_shown_twice(
    tmp_path: Path,
) -> None:
    store = ArchiveStore(tmp_path / "a")
    user = store.upsert_user("bob@example.com")["id"]
    for n in range(20):
        store.write_step(
            {"id": f"s{n}", "threadId": f"t{n}", "type": "user_message", "output": "x",
             "createdAt": at(n)}
        )  # fmt: skip
        store.update_thread(f"t{n}", user_id=user)
    threads, page = store.list_threads(user_id=user, first=5)
    shown = [t["id"] for t in threads]
    assert shown == [f"t{n}" for n in range(19, 14, -1)]
    from filelayer._time import now_iso

    store.write_step(
        {"id": "late", "threadId": "t17", "type": "assistant_message", "output": "late",
         "createdAt": now_iso()}
    )  # fmt: skip
    rest: list[str] = []
    cursor = page.end_cursor
    while cursor:
        threads, page = store.list_threads(user_id=user, first=5, cursor=cursor)
        rest += [t["id"] for t in threads]
        cursor = page.end_cursor if page.has_next else None
    assert not set(rest) & set(shown)
    assert rest == [f"t{n}" for n in range(14, -1, -1)]
    top, _ = store.list_threads(user_id=user, first=1)
    assert top[0]["id"] == "t17"


def test_a_write_is_all_or_nothing_even_when_its_process_is_killed(tmp_path: Path) -> None:
    """A writer killed in the middle of a batch leaves the index as it was before the
    batch (SQLite rolls the transaction back), and the index goes on working."""
    index = new_index(tmp_path, [
        thread_record("a", user_id="u", user_identifier=None, name="A", created_at=at(1),
                      updated_at=at(1), tags=None),
        text_record("a", "s1", at(2), "first words"),
    ])  # fmt: skip
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from filelayer.index.records import text_record, thread_record
        from filelayer.index.rows import Rows
        from filelayer.index.thread_index import ThreadIndex
        real = Rows.apply
        def apply(self, record):
            real(self, record)
            if record.get("id") == "c":
                os.kill(os.getpid(), signal.SIGKILL)
        Rows.apply = apply
        index = ThreadIndex(Path({str(tmp_path)!r}), Path({str(tmp_path / "index.lock")!r}),
                            lock_timeout=10)
        index.append([
            text_record("a", "s2", "2025-09-01T00:00:00.000000Z", "second words"),
            thread_record("b", user_id="u", user_identifier=None, name="B",
                          created_at="2025-09-01T00:00:00.000000Z",
                          updated_at="2025-09-01T00:00:00.000000Z", tags=None),
            thread_record("c", user_id="u", user_identifier=None, name="C",
                          created_at="2025-09-01T00:00:00.000000Z",
                          updated_at="2025-09-01T00:00:00.000000Z", tags=None),
        ])
        """
    )
    done = subprocess.run([sys.executable, "-c", script], env=subprocess_env(), timeout=120)
    assert done.returncode == -signal.SIGKILL
    assert ids_of(index, "u") == ["a"]
    assert ids_of(index, "u", search="words") == ["a"]
    assert ids_of(index, "u", search="second") == []
    assert dict(index.threads["a"].texts) == {"s1": (at(2), "first words")}
    index.append([text_record("a", "s2", at(3), "Second words")])
    assert ids_of(index, "u", search="SECOND") == ["a"]


def test_a_thread_given_to_another_user_is_searched_as_theirs(tmp_path: Path) -> None:
    """One user's texts sit in a range of the trigram index of their own: a thread
    handed to another user moves with its texts."""
    index = new_index(tmp_path)
    records: list[dict[str, Any]] = []
    for n in range(300):
        tid, user = f"t{n}", "u" if n % 2 else "v"
        records.append(thread_record(tid, user_id=user, user_identifier=None,
                                     name=f"chat {n}", created_at=at(n), updated_at=at(n),
                                     tags=None))  # fmt: skip
        records.append(text_record(tid, f"m{n}", at(n), f"common words, number {n:03d}"))
    records.append(text_record("t7", "rare", at(400), "a zyzzyva appears"))
    index.append(records)
    assert ids_of(index, "u", search="zyzzyva") == ["t7"]
    assert ids_of(index, "v", search="zyzzyva") == []
    index.append([thread_record("t7", user_id="v", user_identifier=None, name="given away",
                                created_at=at(7), updated_at=at(500), tags=None)])  # fmt: skip
    assert ids_of(index, "u", search="zyzzyva") == []
    assert ids_of(index, "v", search="zyzzyva") == ["t7"]
    assert ids_of(index, "v", search="GIVEN AWAY") == ["t7"]
    assert ids_of(index, "v", search="number 007") == ["t7"]
    assert ids_of(index, "u", search="number 0") == [f"t{n}" for n in range(99, 0, -2) if n != 7]
    newest = ["t7"] + [f"t{n}" for n in range(9, -1, -1) if n != 7]  # t7 has the last word
    assert ids_of(index, None, search="number 00") == newest


def test_texts_wait_in_a_queue_for_the_trigram_index_and_are_searched_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes queue their texts for the trigram index, which takes them in batches; a
    Python whose SQLite lacks FTS5 only queues (and searches by reading the texts).
    Whatever is queued, every search gives the same answer."""
    index = new_index(tmp_path, [
        thread_record("a", user_id="u", user_identifier=None, name="Alpha", created_at=at(1),
                      updated_at=at(1), tags=None),
        text_record("a", "s1", at(2), "about bread"),
    ])  # fmt: skip
    assert ids_of(index, "u", search="bread") == ["a"]
    monkeypatch.setattr(filelayer.index.db, "_fts5", False)
    other = ThreadIndex(tmp_path, tmp_path / "index.lock", lock_timeout=10)
    for n in range(100):  # more than a batch: this process cannot apply them
        other.append([text_record("a", "s1", at(2), f"about rust {n}")])
    other.append([
        thread_record("b", user_id="u", user_identifier=None, name="Beta", created_at=at(3),
                      updated_at=at(3), tags=None),
        text_record("b", "s2", at(4), "more bread"),
    ])  # fmt: skip
    monkeypatch.setattr(filelayer.index.db, "_fts5", True)
    queued = sqlite3.connect(next(tmp_path.glob("threads-*.sqlite")))
    assert queued.execute("SELECT count(*) FROM fts_todo").fetchone()[0] == 4
    assert ids_of(index, "u", search="bread") == ["b"]
    assert ids_of(index, "u", search="rust 99") == ["a"]
    for n in range(70):  # this process queues a batch, and applies the whole queue
        index.append([text_record("c", f"s{n}", at(5 + n), f"and rust {n}")])
    assert queued.execute("SELECT count(*) FROM fts_todo").fetchone()[0] < 10
    for reader in (index, other):
        assert ids_of(reader, "u", search="bread") == ["b"]
        assert ids_of(reader, "u", search="rust 99") == ["a"]
        assert ids_of(reader, "u", search="about") == ["a"]
        assert ids_of(reader, None, search="rust 9") == ["c", "a"]
    queued.close()


def test_odd_times_and_ids_from_other_clients_order_as_strings(tmp_path: Path) -> None:
    path = tmp_path / "index"
    times = ["2025-01-01T00:00:00Z", "2025-01-01T00:00:00.500000Z", "1999-12-31", "",
             "2025-01-01T00:00:01.000000Z", "zzz", "2025-01-01T00:00:00.000000+00:00"]  # fmt: skip
    ids = ["A-upper", "0c1f7a0e-8a4b-4b1e-9d2a-0a1b2c3d4e5f",
           "0C1F7A0E-8A4B-4B1E-9D2A-0A1B2C3D4E5F", "x.y_z-1", "ééé", "t",
           "00000000-0000-4000-8000-000000000000"]  # fmt: skip
    records = [
        thread_record(tid, user_id="u", user_identifier=None, name=tid, created_at=t,
                      updated_at=t, tags=None)
        for tid, t in zip(ids, times, strict=True)
    ]  # fmt: skip
    index = new_index(path, records)
    expected = [tid for t, tid in sorted(zip(times, ids, strict=True), reverse=True)]
    assert ids_of(index, "u") == expected
    assert walk(index, "u", 2) == expected
    for tid, t in zip(ids, times, strict=True):
        assert index.threads[tid].created_at == t
        assert index.threads[tid].activity == t
    cursor = index.page(user_id="u", first=3).end_cursor
    assert cursor is not None and decode_cursor(cursor) == (
        times[ids.index(expected[2])],
        expected[2],
    )


def test_a_deleted_id_can_come_back_and_feedback_follows_its_thread(tmp_path: Path) -> None:
    path = tmp_path / "index"
    rec = [
        thread_record("a", user_id="u", user_identifier=None, name="A", created_at=at(1),
                      updated_at=at(1), tags=None),
        thread_record("b", user_id="u", user_identifier=None, name="B", created_at=at(2),
                      updated_at=at(2), tags=None),
        feedback_record("a", "f1", "s1", 0),
        delete_record("a"),
        thread_record("c", user_id="v", user_identifier=None, name="C", created_at=at(3),
                      updated_at=at(3), tags=None),
        thread_record("a", user_id="v", user_identifier=None, name="A again", created_at=at(4),
                      updated_at=at(4), tags=None),
        feedback_record("b", "f1", "s2", 1),
    ]  # fmt: skip
    index = new_index(path, rec)
    assert ids_of(index, "u") == ["b"]
    assert ids_of(index, "v") == ["a", "c"]
    assert index.threads["a"].name == "A again"
    assert index.threads["a"].feedback == {}
    assert index.feedback_owner("f1") == "b"
    assert ids_of(index, "u", feedback=1) == ["b"]
    assert ids_of(index, "u", feedback=0) == []


def test_the_benchmark_archive_builder_writes_what_the_store_would_index(
    tmp_path: Path,
) -> None:
    """The benchmark builds its big archives without the API; ``reindex`` from the thread
    directories must find exactly what the builder put in the index log."""
    from benchmarks.archives import ArchiveSpec, build_file_archive

    root = tmp_path / "bench"
    build_file_archive(root, ArchiveSpec(60, seed=5))
    built_index = (root / "index" / "current").read_text()
    store = ArchiveStore(root)
    assert (root / "index" / "current").read_text() == built_index  # opened as built
    store.index.refresh()
    users = {s.user_id for s in store.index.threads.values()}

    def snapshot(s: ArchiveStore) -> dict[str, Any]:
        s.index.refresh()
        return {
            tid: (v.name, v.user_id, v.user_identifier, v.activity, v.texts, v.feedback)
            for tid, v in s.index.threads.items()
        }

    def pages(s: ArchiveStore) -> list[list[str]]:
        return [[t["id"] for t in s.list_threads(user_id=u, first=100)[0]] for u in sorted(users)]

    built, built_pages = snapshot(store), pages(store)
    assert len(built) == 60 and len(users) == 5
    rebuilt = ArchiveStore(root)
    rebuilt.reindex()
    assert snapshot(rebuilt) == built
    assert pages(rebuilt) == built_pages


def test_small_batches_written_to_a_20k_index_reorder_it_in_place(
    tmp_path: Path, big: tuple[ThreadIndex, Model, list[str]], records: list[dict[str, Any]]
) -> None:
    """What a live server does: a few records at a time (a message in an old thread, a
    new thread, a rename, a deletion, a text removed), each batch read by refresh."""
    index, model, users = big
    mine = copy_index(index, tmp_path / "copy")
    model = Model()
    for r in records:
        model.apply(r)
    rng = random.Random(9)
    threads = sorted(model.threads)
    clock = 10**7
    for batch in range(40):
        batch_records: list[dict[str, Any]] = []
        for _ in range(rng.randint(1, 4)):
            clock += 1
            tid = rng.choice(threads)
            choice = rng.random()
            if choice < 0.4:
                batch_records.append(text_record(tid, f"b{batch}", at(clock), f"batch {batch} tax"))
            elif choice < 0.6:
                new = f"new-{batch}-{clock}"
                threads.append(new)
                batch_records.append(
                    thread_record(new, user_id=rng.choice(users), user_identifier=None,
                                  name=f"new {batch}", created_at=at(clock),
                                  updated_at=at(clock), tags=None)
                )  # fmt: skip
            elif choice < 0.75:
                t = model.threads.get(tid)
                if t is not None:  # renamed, and given to another user
                    batch_records.append(
                        thread_record(tid, user_id=rng.choice(users), user_identifier=None,
                                      name="renamed", created_at=t["created"],
                                      updated_at=at(clock), tags=None)
                    )  # fmt: skip
            elif choice < 0.85:
                t = model.threads.get(tid)
                if t is not None and t["texts"]:
                    batch_records.append(text_record(tid, sorted(t["texts"])[-1], "", None))
            elif choice < 0.95:
                batch_records.append(feedback_record(tid, f"fb-b{batch}", "s", rng.choice((0, 1))))
            else:
                batch_records.append(delete_record(tid))
        for r in batch_records:
            model.apply(r)
        mine.append(batch_records)
        for user in users[:3]:
            assert ids_of(mine, user)[:50] == model.page_ids(user)[:50]
    for user in users:
        assert ids_of(mine, user) == model.page_ids(user)
        assert ids_of(mine, user, feedback=1) == model.page_ids(user, feedback=1)
    assert ids_of(mine, None) == model.page_ids(None)


def test_one_users_pages_and_searches_read_only_that_users_rows(tmp_path: Path) -> None:
    """Many users with as many threads each (issue #11, item 5): a user's sidebar walks
    that user's range of the ordered index, and a search checks only texts of that
    user, whether the trigram index answers it or the texts are read one by one."""
    users = [f"user-{k}" for k in range(40)]
    records: list[dict[str, Any]] = []
    for n in range(1200):
        user = users[n % len(users)]
        tid = f"{user}-t{n}"
        records.append(thread_record(tid, user_id=user, user_identifier=None,
                                     name=f"{user} chat {n}", created_at=at(n + 1),
                                     updated_at=at(n + 1), tags=None))  # fmt: skip
        common = "espresso crema " if n % 3 else ""
        records.append(text_record(tid, f"m{n}", at(n + 1), f"{user} says {common}hello"))
    index = new_index(tmp_path, records)
    # A few texts still queued for the trigram index.
    index.append([text_record("user-17-t17", "late", at(5000), "user-17 late words")])
    with index._generations.lock:
        db = index._generations.current()
    assert db is not None
    examined: list[str] = []

    def instr(text: str, needle: str) -> int:
        examined.append(text)
        return text.find(needle) + 1

    db.conn.create_function("instr", 2, instr)  # replaces SQLite's, for this connection
    me = "user-17"
    for search in ["zyzzyva", "espresso", "crema hello", "says", "he", "e", "user-3", "late"]:
        examined.clear()
        page = index.page(user_id=me, first=20, search=search)
        assert all(s.user_id == me for s in page.items)
        assert examined or search == "zyzzyva", search
        assert all(text.startswith(me + " ") for text in examined), search
    plan = " ".join(
        str(row[3])
        for row in db.conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM threads WHERE u = ? AND (activity, id) < (?, ?) "
            "ORDER BY activity DESC, id DESC LIMIT 36",
            (5, "z", "z"),
        )
    )
    assert "threads_order (u=? AND (activity,id)<(?,?))" in plan, plan
    assert "TEMP B-TREE" not in plan, plan
