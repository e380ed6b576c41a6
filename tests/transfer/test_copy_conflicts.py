"""``filelayer copy`` given items the destination holds under the same id elsewhere, or
values it cannot hold as they are: each is refused and listed before anything of its
thread is written, and nothing the destination holds is moved, renamed or rewritten.

SQLite needs no server; the PostgreSQL cases share one throwaway server on loopback.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

from filelayer import ArchiveStore
from filelayer.transfer.copier import copy_archive
from filelayer.transfer.sqlaschema import STATEMENTS


def problems(summary: Any) -> dict[tuple[str, str], str]:
    return {(s.kind, s.id): s.reason for s in summary.skipped if s.problem}


def rated_archive(root: Path, thread_id: str, step_id: str, feedback_id: str) -> None:
    """An archive with one thread of alice's whose one step is rated ``feedback_id``."""
    store = ArchiveStore(root, create=True)
    try:
        user = store.upsert_user("alice")
        store.update_thread(thread_id, name=thread_id, user_id=user["id"])
        store.write_step(
            {
                "id": step_id,
                "threadId": thread_id,
                "type": "assistant_message",
                "output": "x",
                "createdAt": "2026-03-01T10:00:00Z",
            }
        )
        store.upsert_feedback(
            for_id=step_id,
            value=1,
            comment=f"rating of {thread_id}",
            feedback_id=feedback_id,
            thread_id=thread_id,
        )
    finally:
        store.close()


# -- a feedback id another thread of the destination holds ----------------------------


async def _feedback_of_other_thread(tmp_path: Path, dest: str) -> list[tuple[str, str]]:
    """Copy two archives whose threads rate their steps with the same feedback id into
    ``dest``; the second copy's summary must refuse it. Returns what the first copy's
    thread still holds after both copies and a re-run of the second."""
    rated_archive(tmp_path / "a", "thread-a", "step-a", "fb-same")
    rated_archive(tmp_path / "b", "thread-b", "step-b", "fb-same")
    first = await copy_archive(str(tmp_path / "a"), dest, create_schema=True)
    assert not first.problems
    for _ in range(2):  # a re-run refuses it again, and changes nothing
        second = await copy_archive(str(tmp_path / "b"), dest)
        reason = problems(second)[("feedback", "fb-same")]
        assert "another thread" in reason
        assert "problem: feedback fb-same: " in second.render()
        assert second.counts["threads"]["copied"] + second.counts["threads"]["unchanged"] == 1
        assert second.counts["steps"]["copied"] + second.counts["steps"]["unchanged"] == 1
    back = tmp_path / "back"
    await copy_archive(dest, str(back))
    store = ArchiveStore(back, create=False)
    try:
        kept = []
        for tid in ("thread-a", "thread-b"):
            thread = store.get_thread(tid)
            assert thread is not None
            for step in thread["steps"]:
                if step.get("feedback"):
                    kept.append((tid, step["feedback"]["comment"]))
        return kept
    finally:
        store.close()


async def test_feedback_id_of_another_thread_is_refused_in_sqlite(tmp_path: Path) -> None:
    dest = f"sqlite:///{tmp_path / 'app.db'}"
    kept = await _feedback_of_other_thread(tmp_path, dest)
    assert kept == [("thread-a", "rating of thread-a")]


async def test_feedback_id_of_another_thread_is_refused_in_postgres(
    tmp_path: Path, db: str
) -> None:
    kept = await _feedback_of_other_thread(tmp_path, db)
    assert kept == [("thread-a", "rating of thread-a")]


async def test_feedback_id_of_another_thread_is_refused_in_an_archive(tmp_path: Path) -> None:
    """Into an archive, the refusal is found before the thread is written: the rest of
    the thread is copied (and counted), never left half written."""
    archive = tmp_path / "chats"
    rated_archive(archive, "tA", "s-a", "fb-shared")
    db = tmp_path / "app.db"
    empty = tmp_path / "empty"
    ArchiveStore(empty, create=True).close()
    await copy_archive(str(empty), f"sqlite:///{db}", create_schema=True)
    store = ArchiveStore(archive, create=False)
    alice = store.get_user("alice")
    store.close()
    assert alice is not None
    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO users VALUES (?, 'alice', '{}', ?)", (alice["id"], alice["createdAt"])
    )
    conn.execute(
        'INSERT INTO threads (id, "createdAt", name, "userId", "userIdentifier", metadata) '
        "VALUES ('tB', '2026-03-01T10:00:00.123Z', 'B', ?, 'alice', '{}')",
        (alice["id"],),
    )
    conn.execute(
        'INSERT INTO steps (id, name, type, "threadId", streaming, "createdAt", output) '
        "VALUES ('s-b', 'n', 'user_message', 'tB', 0, '2026-03-01T10:00:01Z', 'theirs')"
    )
    conn.execute(
        'INSERT INTO feedbacks (id, "forId", "threadId", value, comment) '
        "VALUES ('fb-shared', 's-b', 'tB', 0, 'theirs')"
    )
    conn.commit()
    conn.close()
    summary = await copy_archive(f"sqlite:///{db}", str(archive))
    assert "another thread" in problems(summary)[("feedback", "fb-shared")]
    assert summary.counts["threads"]["copied"] == 1
    assert summary.counts["steps"]["copied"] == 1
    store = ArchiveStore(archive, create=False)
    try:
        mine = store.get_thread("tA")
        theirs = store.get_thread("tB")
    finally:
        store.close()
    assert mine is not None and theirs is not None
    assert mine["steps"][0]["feedback"]["id"] == "fb-shared"
    assert [(s["id"], s.get("feedback")) for s in theirs["steps"]] == [("s-b", None)]


# -- a user row that reuses another user's id -----------------------------------------


def sqlite_schema(path: Path) -> str:
    """A new SQLite database with the SQLAlchemy layer's tables: its URL."""
    conn = sqlite3.connect(path)
    for statement in STATEMENTS:
        conn.execute(statement)
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


async def test_db_user_reusing_an_archive_user_id_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "chats"
    store = ArchiveStore(archive, create=True)
    alice = store.upsert_user("alice")
    store.update_thread("alice-secret", name="alice's", user_id=alice["id"])
    store.close()
    url = sqlite_schema(tmp_path / "app.db")
    conn = sqlite3.connect(tmp_path / "app.db")
    conn.execute(
        "INSERT INTO users VALUES (?, 'mallory', '{}', '2026-03-01T10:00:00.000Z')",
        (alice["id"],),
    )
    conn.execute("INSERT INTO users VALUES ('u-empty', '', '{}', '2026-03-01T10:00:00.000Z')")
    conn.execute(
        'INSERT INTO threads (id, "createdAt", name, "userId", "userIdentifier", metadata) '
        "VALUES ('t-mallory', '2026-03-01T10:00:00.123Z', 'm', ?, 'mallory', '{}')",
        (alice["id"],),
    )
    conn.commit()
    conn.close()
    summary = await copy_archive(url, str(archive))
    refused = problems(summary)
    assert "another user" in refused[("users", alice["id"])]
    assert "identifier" in refused[("users", "u-empty")]
    assert ("threads", "t-mallory") in refused
    store = ArchiveStore(archive, create=False)
    try:
        assert [(u["identifier"], u["id"]) for u in store.iter_users()] == [("alice", alice["id"])]
        assert store.get_thread("t-mallory") is None
    finally:
        store.close()


async def test_archive_user_reusing_a_db_user_id_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "chats"
    store = ArchiveStore(archive, create=True)
    alice = store.upsert_user("alice")
    store.update_thread("t-alice", name="alice's", user_id=alice["id"])
    store.close()
    url = sqlite_schema(tmp_path / "app.db")
    conn = sqlite3.connect(tmp_path / "app.db")
    conn.execute(
        "INSERT INTO users VALUES (?, 'bob', '{\"role\": \"admin\"}', '2026-03-01T10:00:00.000Z')",
        (alice["id"],),
    )
    conn.commit()
    for _ in range(2):  # refused again on a re-run, and nothing changed
        summary = await copy_archive(str(archive), url)
        refused = problems(summary)
        assert "another user" in refused[("users", alice["id"])]
        assert ("threads", "t-alice") in refused
        assert conn.execute("SELECT identifier, metadata FROM users").fetchall() == [
            ("bob", '{"role": "admin"}')
        ]
        assert conn.execute("SELECT id FROM threads").fetchall() == []
    conn.close()


# -- ids that PostgreSQL's uuid type would rewrite ------------------------------------


async def test_non_canonical_uuid_ids_are_refused_in_sqlalchemy_postgres(
    tmp_path: Path, db: str
) -> None:
    """The SQLAlchemy schema's id columns are of type uuid on PostgreSQL, which hands an
    upper-case or hyphen-less UUID back in another spelling: such a thread is listed, not
    copied under ids the archive does not know (nor then deleted in the archive)."""
    archive = tmp_path / "chats"
    store = ArchiveStore(archive, create=True)
    user = store.upsert_user("alice")
    upper = str(uuid.UUID(int=1)).upper().replace("0", "A")
    bare = uuid.UUID(int=2).hex
    plain = str(uuid.UUID(int=3))
    orphan_parent = str(uuid.UUID(int=4)).upper().replace("0", "B")
    steps = {
        upper: str(uuid.UUID(int=11)),
        str(uuid.UUID(int=5)): bare,
        plain: str(uuid.UUID(int=12)),
    }
    for tid, sid in steps.items():
        store.update_thread(tid, name=tid, user_id=user["id"])
        step = {
            "id": sid,
            "threadId": tid,
            "type": "user_message",
            "output": "hi",
            "createdAt": "2026-03-01T10:00:00Z",
        }
        if tid == plain:
            step["parentId"] = orphan_parent
        store.write_step(step)
    store.close()
    for _ in range(2):  # refused again on a re-run: never taken for deleted there
        summary = await copy_archive(str(archive), db, create_schema=True, schema="sqlalchemy")
        refused = problems(summary)
        for tid in steps:
            assert "UUID" in refused[("threads", tid)]
        assert summary.counts["threads"]["copied"] == 0
    assert await pg_rows(db, "threads") == []
    back = await copy_archive(db, str(archive), schema="sqlalchemy")
    assert back.counts["threads"]["deleted"] == 0
    store = ArchiveStore(archive, create=False)
    try:
        assert sorted(t for t in store.thread_ids() if not store.is_deleted(t)) == sorted(steps)
    finally:
        store.close()


async def pg_rows(url: str, table: str) -> list[str]:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        return sorted(str(r[0]) for r in await conn.fetch(f'SELECT id FROM "{table}"'))
    finally:
        await conn.close()


# -- values an archive cannot hold as they are ----------------------------------------


async def test_fractional_sqlite_feedback_is_listed_not_truncated(tmp_path: Path) -> None:
    """SQLite's INT column keeps 0.6 as a REAL: listed, never read as a thumbs down."""
    url = sqlite_schema(tmp_path / "app.db")
    conn = sqlite3.connect(tmp_path / "app.db")
    conn.execute("INSERT INTO users VALUES ('u1', 'alice', '{}', '2026-03-01T10:00:00.000Z')")
    conn.execute(
        'INSERT INTO threads (id, "createdAt", name, "userId", "userIdentifier", metadata) '
        "VALUES ('t1', '2026-03-01T10:00:00.000Z', 'n', 'u1', 'alice', '{}')"
    )
    for sid in ("s1", "s2", "s3"):
        conn.execute(
            'INSERT INTO steps (id, name, type, "threadId", streaming, "createdAt", output) '
            "VALUES (?, 'n', 'assistant_message', 't1', 0, '2026-03-01T10:00:01Z', 'x')",
            (sid,),
        )
    for fid, sid, value in (("f1", "s1", 0.6), ("f2", "s2", 1.9), ("f3", "s3", 1.0)):
        conn.execute(
            'INSERT INTO feedbacks (id, "forId", "threadId", value, comment) '
            "VALUES (?, ?, 't1', ?, 'c')",
            (fid, sid, value),
        )
    conn.commit()
    conn.close()
    out = tmp_path / "out"
    summary = await copy_archive(url, str(out))
    refused = problems(summary)
    assert "0.6" in refused[("feedback", "f1")]
    assert "1.9" in refused[("feedback", "f2")]
    assert ("feedback", "f3") not in refused
    store = ArchiveStore(out, create=False)
    try:
        thread = store.get_thread("t1")
    finally:
        store.close()
    assert thread is not None
    rated = {s["id"]: (s.get("feedback") or {}).get("value") for s in thread["steps"]}
    assert rated == {"s1": None, "s2": None, "s3": 1}


# -- times at the end of the calendar --------------------------------------------------

LAST = "9999-12-31T23:59:59.9999Z"
"""A time the archive and SQLite's text columns take, which rounds past year 9999."""


async def test_a_time_near_year_9999_is_copied_and_re_runs(tmp_path: Path) -> None:
    source = tmp_path / "src"
    store = ArchiveStore(source, create=True)
    user = store.upsert_user("alice")
    store.update_thread("t1", name="n", user_id=user["id"])
    for sid, created in (("s1", "2026-03-01T10:00:00Z"), ("s2", LAST)):
        step = {"id": sid, "threadId": "t1", "type": "user_message", "output": sid}
        store.write_step({**step, "createdAt": created})
    store.close()
    url = f"sqlite:///{tmp_path / 'app.db'}"
    first = await copy_archive(str(source), url, create_schema=True)
    again = await copy_archive(str(source), url)
    back = await copy_archive(url, str(tmp_path / "back"))
    for summary in (first, again, back):
        assert not summary.problems, summary.render()
    assert again.counts["steps"]["unchanged"] == 2
    store = ArchiveStore(tmp_path / "back", create=False)
    try:
        thread = store.get_thread("t1")
    finally:
        store.close()
    assert thread is not None
    assert [s["createdAt"] for s in thread["steps"]][-1].startswith("9999-12-31T23:59:59.9999")


async def test_since_with_a_row_near_year_9999_copies_the_others(tmp_path: Path) -> None:
    url = sqlite_schema(tmp_path / "app.db")
    conn = sqlite3.connect(tmp_path / "app.db")
    conn.execute("INSERT INTO users VALUES ('u1', 'alice', '{}', '2026-03-01T10:00:00.000Z')")
    for tid, created in (("t-odd", LAST), ("t-fine", "2026-03-01T10:00:00.000Z")):
        conn.execute(
            'INSERT INTO threads (id, "createdAt", name, "userId", "userIdentifier", '
            "metadata) VALUES (?, ?, 'n', 'u1', 'alice', '{}')",
            (tid, created),
        )
    conn.commit()
    conn.close()
    summary = await copy_archive(url, str(tmp_path / "out"), since="2026-01-01")
    assert summary.counts["threads"]["copied"] == 2, summary.render()


async def test_an_infinite_postgres_time_does_not_stop_the_copy(tmp_path: Path, db: str) -> None:
    import asyncpg

    source = tmp_path / "src"
    store = ArchiveStore(source, create=True)
    user = store.upsert_user("alice")
    for tid in ("t-odd", "t-fine"):
        store.update_thread(tid, name=tid, user_id=user["id"])
        store.write_step(
            {"id": f"s-{tid}", "threadId": tid, "type": "user_message", "output": "hi"}
        )
    store.close()
    await copy_archive(str(source), db, create_schema=True)
    conn = await asyncpg.connect(db)
    try:
        await conn.execute("""UPDATE "Thread" SET "updatedAt" = 'infinity' WHERE id = 't-odd'""")
    finally:
        await conn.close()
    out = tmp_path / "out"
    for _ in range(2):
        summary = await copy_archive(db, str(out))
        assert "t-fine" not in {s.id for s in summary.skipped}, summary.render()
    store = ArchiveStore(out, create=False)
    try:
        assert store.get_thread("t-fine") is not None
    finally:
        store.close()


# -- a storage client that fails -------------------------------------------------------


class FailingReads:
    """A storage client that takes uploads and fails to give any read URL (a bucket that
    went away between the two copies)."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    async def upload_file(
        self, object_key: str, data: bytes | str, mime: str = "", overwrite: bool = True, **_: Any
    ) -> dict[str, Any]:
        self.objects[object_key] = data if isinstance(data, bytes) else data.encode()
        return {"object_key": object_key, "url": f"https://bucket.invalid/{object_key}"}

    async def delete_file(self, object_key: str) -> bool:
        return self.objects.pop(object_key, None) is not None

    async def get_read_url(self, object_key: str) -> str:
        raise ConnectionResetError("the bucket went away")

    async def close(self) -> None:
        pass


async def test_a_failing_storage_keeps_the_element_as_a_reference(tmp_path: Path, db: str) -> None:
    """From PostgreSQL into an archive, an element whose bytes the storage fails to give
    is kept with its key and listed; the rest of the thread is copied, and said so."""
    source = tmp_path / "src"
    store = ArchiveStore(source, create=True)
    user = store.upsert_user("alice")
    store.update_thread("t1", name="n", user_id=user["id"])
    store.write_step(
        {
            "id": "s1",
            "threadId": "t1",
            "type": "user_message",
            "output": "hi",
            "createdAt": "2026-03-01T10:00:00Z",
        }
    )
    store.upsert_feedback(for_id="s1", value=1, feedback_id="f1", thread_id="t1")
    store.put_element("t1", {"id": "e1", "type": "file", "name": "a.txt", "forId": "s1"}, b"A")
    store.close()
    storage = FailingReads()
    first = await copy_archive(str(source), db, create_schema=True, storage=storage)
    assert not first.problems, first.render()
    out = tmp_path / "out"
    summary = await copy_archive(db, str(out), storage=storage)
    assert summary.counts["threads"]["copied"] == 1, summary.render()
    assert summary.counts["elements"]["copied"] == 1
    assert any("e1" in what for what in summary.behind), summary.render()
    store = ArchiveStore(out, create=False)
    try:
        thread = store.get_thread("t1")
    finally:
        store.close()
    assert thread is not None
    assert [e["id"] for e in thread["elements"]] == ["e1"]
    assert thread["steps"][0]["feedback"]["id"] == "f1"


async def test_floats_keep_their_type_in_the_sqlalchemy_schema_on_postgres(
    tmp_path: Path, db: str
) -> None:
    """JSONB keeps numbers as decimals and writes them back positionally: a float such
    as 1e16 came back an int, 1e300 another value, and every re-run said "updated". The
    JSON columns of the SQLAlchemy schema on PostgreSQL are written as the official
    schema's are, floats spelled so that they come back floats."""
    floats = {"e16": 1e16, "e300": 1e300, "small": 1e-7, "int": 10**16}
    archive = tmp_path / "chats"
    store = ArchiveStore(archive, create=True)
    user = store.upsert_user("alice", metadata=dict(floats))
    tid, sid = str(uuid.uuid4()), str(uuid.uuid4())
    store.update_thread(tid, name="n", user_id=user["id"], metadata=dict(floats))
    store.write_step(
        {
            "id": sid,
            "threadId": tid,
            "type": "assistant_message",
            "output": "hi",
            "createdAt": "2026-03-01T10:00:00Z",
            "metadata": dict(floats),
            "generation": {"temperature": 1e300},
        }
    )
    store.close()
    await copy_archive(str(archive), db, create_schema=True, schema="sqlalchemy")
    again = await copy_archive(str(archive), db, schema="sqlalchemy")
    for kind in ("users", "threads", "steps"):
        assert again.counts[kind]["updated"] == 0, kind
    back = tmp_path / "back"
    await copy_archive(db, str(back), schema="sqlalchemy")
    store = ArchiveStore(back, create=False)
    try:
        thread = store.get_thread(tid)
        assert thread is not None
        step = thread["steps"][0]
        user_back = store.get_user("alice")
        assert user_back is not None
        for got in (user_back["metadata"], thread["metadata"], step["metadata"]):
            assert {k: (type(v), v) for k, v in got.items()} == {
                k: (type(v), v) for k, v in floats.items()
            }
        assert step["generation"] == {"temperature": 1e300}
        assert type(step["generation"]["temperature"]) is float
    finally:
        store.close()


async def test_nul_characters_survive_sqlite(tmp_path: Path) -> None:
    """SQLite stores a NUL character (PostgreSQL's text does not, and its copy stashes
    the exact value): a thread's name and a thread's or user's metadata keep theirs
    through a copy to SQLite and back; they were stripped, with nothing said."""
    archive = tmp_path / "chats"
    store = ArchiveStore(archive, create=True)
    user = store.upsert_user("alice", metadata={"k": "a\0b", "k\0": 1})
    store.update_thread("t1", name="na\0me", user_id=user["id"], metadata={"x": "a\0b"})
    store.write_step(
        {
            "id": "s1",
            "threadId": "t1",
            "type": "user_message",
            "output": "h\0i",
            "createdAt": "2026-03-01T10:00:00Z",
        }
    )
    store.close()
    dest = f"sqlite:///{tmp_path / 'app.db'}"
    await copy_archive(str(archive), dest, create_schema=True)
    again = await copy_archive(str(archive), dest)
    assert again.counts["threads"]["unchanged"] == 1 and again.counts["users"]["updated"] == 0
    back = tmp_path / "back"
    await copy_archive(dest, str(back))
    store = ArchiveStore(back, create=False)
    try:
        thread = store.get_thread("t1")
        user_back = store.get_user("alice")
        assert thread is not None and user_back is not None
        assert thread["name"] == "na\0me"
        assert thread["metadata"]["x"] == "a\0b"
        assert user_back["metadata"] == {"k": "a\0b", "k\0": 1}
        assert thread["steps"][0]["output"] == "h\0i"
    finally:
        store.close()


DELETE_IN_DEST = """
import sys
from filelayer import ArchiveStore
store = ArchiveStore(sys.argv[1])
assert store.delete_thread(sys.argv[2])
store.close()
"""


async def test_a_thread_the_app_deletes_while_it_is_copied_in_is_no_problem(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """The app serving the destination archive (another process) deletes a thread
    after the copy planned what to add to it and before it wrote it: the deletion wins,
    as over any late write, and the copy lists the thread as deleted in the
    destination, not as a failure."""
    import subprocess
    import sys

    from filelayer.transfer.archive import ArchiveEndpoint
    from tests.support.processes import subprocess_env

    source, dest = tmp_path / "source", tmp_path / "dest"
    rated_archive(source, "tA", "s-a", "fb-a")
    assert not (await copy_archive(str(source), str(dest))).problems
    store = ArchiveStore(source)
    store.write_step(
        {
            "id": "s-b",
            "threadId": "tA",
            "type": "user_message",
            "output": "more",
            "createdAt": "2026-03-01T10:00:05Z",
        }
    )
    store.upsert_feedback(for_id="s-b", value=0, feedback_id="fb-b", thread_id="tA")
    store.close()
    real = ArchiveEndpoint.apply

    async def deleted_first(self: Any, plan: Any, summary: Any) -> None:
        subprocess.run(
            [sys.executable, "-c", DELETE_IN_DEST, str(dest), plan.thread_id],
            env=subprocess_env(),
            check=True,
        )
        await real(self, plan, summary)

    monkeypatch.setattr(ArchiveEndpoint, "apply", deleted_first)
    summary = await copy_archive(str(source), str(dest))
    assert problems(summary) == {}
    assert [(s.kind, s.id) for s in summary.skipped] == [("threads", "tA")]
    after = ArchiveStore(dest)
    assert after.is_deleted("tA") and after.get_thread("tA") is None
    assert not (dest / "threads" / "tA").exists()


async def _step_and_element_ids_of_two_threads(tmp_path: Path, dest: str) -> None:
    """Two threads of an archive (which keeps steps and elements thread by thread) hold a
    step and an element under the same ids: a database holds each id once. The second
    thread's step and element are listed, and the rest of that thread copied, as a
    feedback id of another thread is; the whole thread was refused, on every run."""
    archive = tmp_path / "chats"
    store = ArchiveStore(archive, create=True)
    try:
        user = store.upsert_user("alice")
        for n, tid in enumerate(("tA", "tB")):
            store.update_thread(tid, name=tid, user_id=user["id"])
            for sid in ("s-shared", f"s-own-{tid}"):
                store.write_step(
                    {
                        "id": sid,
                        "threadId": tid,
                        "type": "assistant_message",
                        "output": f"{sid} of {tid}",
                        "createdAt": f"2026-03-01T10:00:0{n}Z",
                    }
                )
            store.put_element(
                tid,
                {"id": "e-shared", "type": "text", "name": "n", "forId": f"s-own-{tid}"},
                None,
            )
    finally:
        store.close()
    summary = await copy_archive(str(archive), dest, create_schema=True)
    assert set(problems(summary)) == {("steps", "s-shared"), ("elements", "e-shared")}, (
        summary.render()
    )
    assert summary.counts["threads"]["copied"] == 2, summary.render()
    back = tmp_path / "back"
    await copy_archive(dest, str(back))
    copied = ArchiveStore(back, create=False)
    try:
        for tid in ("tA", "tB"):
            thread = copied.get_thread(tid)
            assert thread is not None, tid
            outputs = {s["id"]: s["output"] for s in thread["steps"]}
            assert outputs[f"s-own-{tid}"] == f"s-own-{tid} of {tid}"
        thread_b = copied.get_thread("tB")
        assert thread_b is not None and "s-shared" not in {s["id"] for s in thread_b["steps"]}
    finally:
        copied.close()
    again = await copy_archive(str(archive), dest)
    assert set(problems(again)) == {("steps", "s-shared"), ("elements", "e-shared")}
    assert again.counts["threads"]["unchanged"] == 2, again.render()
    # Back into the archive they came from: what the database could not hold in tB is
    # not taken for deleted there.
    summary = await copy_archive(dest, str(archive))
    assert not summary.counts["steps"]["deleted"], summary.render()
    assert not summary.counts["elements"]["deleted"], summary.render()
    source = ArchiveStore(archive, create=False)
    try:
        thread_b = source.get_thread("tB")
        assert thread_b is not None and "s-shared" in {s["id"] for s in thread_b["steps"]}
        assert [e["id"] for e in thread_b["elements"]] == ["e-shared"]
    finally:
        source.close()


async def test_step_and_element_ids_of_another_thread_are_listed_in_sqlite(
    tmp_path: Path,
) -> None:
    await _step_and_element_ids_of_two_threads(tmp_path, f"sqlite:///{tmp_path / 'app.db'}")


async def test_step_and_element_ids_of_another_thread_are_listed_in_postgres(
    tmp_path: Path, db: str
) -> None:
    await _step_and_element_ids_of_two_threads(tmp_path, db)


async def test_a_thread_the_destination_holds_under_another_author_is_not_handed_over(
    tmp_path: Path,
) -> None:
    """Two archives hold a thread under the same id (made outside Chainlit, or by two
    apps), each by its own user. Copied over the other, the newer one took the thread
    for its author with the messages the destination held, and showed bob's messages to
    alice. A thread is never given to another author: it is listed and left as it is."""
    source, dest = tmp_path / "source", tmp_path / "dest"
    for root, who, second in ((dest, "bob", 1), (source, "alice", 2)):
        store = ArchiveStore(root, create=True)
        try:
            user = store.upsert_user(who)
            store.update_thread("t-same", name=f"{who}'s", user_id=user["id"])
            store.write_step(
                {
                    "id": f"s-{who}",
                    "threadId": "t-same",
                    "type": "user_message",
                    "output": f"{who}'s secret",
                    "createdAt": f"2026-03-01T10:00:0{second}Z",
                }
            )
        finally:
            store.close()
    summary = await copy_archive(str(source), str(dest))
    assert ("threads", "t-same") in problems(summary), summary.render()
    store = ArchiveStore(dest, create=False)
    try:
        thread = store.get_thread("t-same")
        assert thread is not None
        assert thread["userIdentifier"] == "bob"
        assert [s["id"] for s in thread["steps"]] == ["s-bob"]
    finally:
        store.close()


async def test_a_thread_without_author_does_not_take_the_destination_threads_author(
    tmp_path: Path,
) -> None:
    """A thread of the source without an author, copied over the destination's thread
    of that id by bob, left that thread without an author: bob lost it from his
    history. It is listed and left as it is, as a thread by another user is."""
    source, dest = tmp_path / "source", tmp_path / "dest"
    for root, who in ((dest, "bob"), (source, None)):
        store = ArchiveStore(root, create=True)
        try:
            user_id = store.upsert_user(who)["id"] if who else None
            store.update_thread("t-same", name="thread", user_id=user_id)
            store.write_step(
                {
                    "id": f"s-{who}",
                    "threadId": "t-same",
                    "type": "user_message",
                    "output": "hi",
                    "createdAt": "2026-03-01T10:00:01Z" if who else "2026-03-01T10:00:02Z",
                }
            )
        finally:
            store.close()
    summary = await copy_archive(str(source), str(dest))
    assert ("threads", "t-same") in problems(summary), summary.render()
    store = ArchiveStore(dest, create=False)
    try:
        thread = store.get_thread("t-same")
        assert thread is not None and thread["userIdentifier"] == "bob"
    finally:
        store.close()
