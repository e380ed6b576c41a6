"""``filelayer copy`` given hostile or odd rows and files: what a row names is read only
where it may be, one bad item never stops the rest, and every thing left out is listed.

SQLite needs no server; the PostgreSQL cases share one throwaway server on loopback.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from benchmarks.pgserver import PostgresServer
from filelayer import ArchiveStore
from filelayer.transfer import copier, model
from filelayer.transfer.copier import copy_archive
from filelayer.transfer.sqlaschema import STATEMENTS

SECRET = b"served only on loopback\n"


async def pg_ids(url: str, table: str) -> list[str]:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        return sorted(str(r[0]) for r in await conn.fetch(f'SELECT id FROM "{table}"'))
    finally:
        await conn.close()


def skipped(summary: Any) -> dict[tuple[str, str], str]:
    return {(s.kind, s.id): s.reason for s in summary.skipped if s.problem}


@pytest.fixture
def loopback() -> Iterator[dict[str, Any]]:
    """An HTTP server on 127.0.0.1 that counts the requests it gets."""
    seen = {"hits": 0, "base": ""}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen["hits"] += 1
            self.send_response(200)
            self.end_headers()
            self.wfile.write(SECRET)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    seen["base"] = f"http://127.0.0.1:{httpd.server_address[1]}/"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield seen
    httpd.shutdown()
    httpd.server_close()


def sqlite_with_elements(path: Path, elements: dict[str, tuple[str, str | None]]) -> str:
    """An SQLite database of the SQLAlchemy layer's schema holding one thread of alice's
    with one step and ``elements`` (id: (column, value)): its URL for the copy."""
    conn = sqlite3.connect(path)
    for statement in STATEMENTS:
        conn.execute(statement)
    conn.execute("INSERT INTO users VALUES ('u1', 'alice', '{}', '2026-01-01T00:00:00Z')")
    conn.execute(
        'INSERT INTO threads (id, "createdAt", name, "userId", "userIdentifier", metadata) '
        "VALUES ('t1', '2026-01-01T00:00:00Z', 'x', 'u1', 'alice', '{}')"
    )
    conn.execute(
        'INSERT INTO steps (id, name, type, "threadId", streaming, metadata, output, '
        "\"createdAt\") VALUES ('s1', 'a', 'user_message', 't1', 0, '{}', 'hi', "
        "'2026-01-01T00:00:01Z')"
    )
    for eid, (column, value) in elements.items():
        conn.execute(
            f'INSERT INTO elements (id, "threadId", type, name, "{column}", "forId") '
            "VALUES (?, 't1', 'file', ?, ?, 's1')",
            (eid, eid, value),
        )
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


def element_files(archive: Path) -> dict[str, bytes | None]:
    store = ArchiveStore(archive, create=False)
    thread = store.get_thread("t1")
    assert thread is not None
    out = {}
    for el in thread["elements"]:
        found = store.element_file("t1", el["id"])
        out[el["id"]] = found[1].read_bytes() if found else None
    store.close()
    return out


# -- a row names a file or a URL ------------------------------------------------------------


async def test_a_row_reads_only_files_inside_the_files_directory(tmp_path: Path) -> None:
    """A row is data: it may name any file. Only files inside the directory the operator
    names (``--files-dir``) are read, regular, through no link, not hidden; none at all
    without one (the database's own directory is an app's: its ``.env``, the database)."""
    app = tmp_path / "app"
    (app / "files" / ".git").mkdir(parents=True)
    (app / "files" / "ok.txt").write_bytes(b"mine")
    (app / "files" / ".env").write_bytes(b"SECRET=1")
    (app / "files" / ".git" / "config").write_bytes(b"[core]")
    (app / ".env").write_bytes(b"CHAINLIT_AUTH_SECRET=x")
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not the app's")
    os.symlink(outside, app / "files" / "link.txt")
    os.symlink(tmp_path, app / "files" / "up")
    url = sqlite_with_elements(
        app / "app.db",
        {
            "passwd": ("url", "file:///etc/passwd"),
            "hostname": ("objectKey", "../../../../../../etc/hostname"),
            "home": ("url", "~/.bashrc"),
            "environ": ("url", "/proc/self/environ"),
            "dotdot": ("url", "../../outside.txt"),
            "link": ("url", "link.txt"),
            "linkdir": ("url", "up/outside.txt"),
            "absolute-outside": ("url", str(outside)),
            "env": ("url", "../.env"),
            "hidden": ("url", ".env"),
            "git": ("objectKey", ".git/config"),
            "db": ("url", "../app.db"),
            "ok": ("url", "ok.txt"),
            "ok-absolute": ("objectKey", str(app / "files" / "ok.txt")),
        },
    )
    nothing = await copy_archive(url, str(tmp_path / "no-files-dir"))
    assert set(element_files(tmp_path / "no-files-dir").values()) == {None}
    assert len(nothing.behind) == 14, nothing.render()
    with pytest.raises(copier.CopyUsageError, match="holds the database"):
        await copy_archive(url, str(tmp_path / "wide"), files_dir=str(app))
    archive = tmp_path / "chats"
    summary = await copy_archive(url, str(archive), files_dir=str(app / "files"))
    files = element_files(archive)
    assert files.pop("ok") == b"mine" and files.pop("ok-absolute") == b"mine"
    assert files == dict.fromkeys(files, None), files  # nothing else was read
    assert len(files) == 12
    assert summary.problems and len(summary.behind) == 12, summary.render()
    store = ArchiveStore(archive, create=False)
    thread = store.get_thread("t1")
    assert thread is not None
    kept = {e["id"]: e.get("url") or e.get("objectKey") for e in thread["elements"]}
    assert kept["passwd"] == "file:///etc/passwd"  # kept as it was: nothing is lost


def test_only_global_addresses_may_be_fetched() -> None:
    for address in (
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.1",
        "172.16.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:127.0.0.1",
        "224.0.0.1",
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    ):
        assert model.refused_address(address) is not None, address
    assert model.refused_address("8.8.8.8") is None
    assert model.refused_address("2001:4860:4860::8888") is None


async def test_urls_are_fetched_only_when_asked_and_never_inside(
    tmp_path: Path, loopback: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    base = loopback["base"]
    port = base.rsplit(":", 1)[1]
    elements = {
        "metadata": ("url", "http://169.254.169.254/latest/meta-data/"),
        "loopback": ("url", base + "admin"),
        "localhost": ("url", f"http://localhost:{port}/admin"),
    }
    url = sqlite_with_elements(tmp_path / "app.db", elements)

    # By default no URL is fetched: the elements keep them, and are listed.
    summary = await copy_archive(url, str(tmp_path / "a"))
    assert loopback["hits"] == 0
    assert element_files(tmp_path / "a") == dict.fromkeys(elements, None)
    assert len(summary.behind) == 3, summary.render()
    assert "--fetch-urls" in summary.render()

    # Asked to, still not from a private, loopback or link-local address.
    summary = await copy_archive(url, str(tmp_path / "b"), fetch_urls=True)
    assert loopback["hits"] == 0
    assert element_files(tmp_path / "b") == dict.fromkeys(elements, None)
    assert len(summary.behind) == 3, summary.render()
    assert await model.fetch_url(base + "x") is None
    assert loopback["hits"] == 0

    # A public address (the loopback server stands in for one) is fetched, up to the cap.
    monkeypatch.setattr(model, "refused_address", lambda address: None)
    summary = await copy_archive(url, str(tmp_path / "c"), fetch_urls=True)
    files = element_files(tmp_path / "c")
    assert files["loopback"] == SECRET and files["localhost"] == SECRET
    monkeypatch.setattr(model, "MAX_FETCH_BYTES", len(SECRET) - 1)
    assert await model.fetch_url(base + "x") is None


# -- one bad item --------------------------------------------------------------------------


async def test_a_user_the_database_refuses_is_listed_and_the_rest_copied(
    tmp_path: Path, db: str
) -> None:
    root = tmp_path / "chats"
    store = ArchiveStore(root, create=True)
    ok = store.upsert_user("ok@example.com")
    bad = store.upsert_user("mallory\u0000@example.com")  # PostgreSQL text holds no NUL
    for tid, author in (("t-ok", ok), ("t-bad", bad)):
        store.update_thread(tid, name="n", user_id=author["id"])
        store.write_step(
            {"id": tid + "-s", "threadId": tid, "type": "user_message", "output": "hi"}
        )
    store.close()
    summary = await copy_archive(str(root), db, create_schema=True)
    problems = skipped(summary)
    assert set(problems) == {("users", bad["id"]), ("threads", "t-bad")}, summary.render()
    assert "run the copy again" not in problems[("users", bad["id"])]
    assert await pg_ids(db, "User") == [ok["id"]]
    assert await pg_ids(db, "Thread") == ["t-ok"]  # never copied without its author


async def test_a_user_id_the_schema_refuses_is_listed_and_the_rest_copied(
    tmp_path: Path, server: PostgresServer
) -> None:
    good, t_good, t_bad = (str(uuid.uuid4()) for _ in range(3))
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    for statement in STATEMENTS:
        conn.execute(statement)
    conn.execute("INSERT INTO users VALUES ('u1', 'alice', '{}', '2026-01-01T00:00:00Z')")
    conn.execute("INSERT INTO users VALUES (?, 'bob', '{}', '2026-01-01T00:00:00Z')", (good,))
    for tid, uid in ((t_bad, "u1"), (t_good, good)):
        conn.execute(
            'INSERT INTO threads (id, "createdAt", name, "userId", metadata) '
            "VALUES (?, '2026-01-01T00:00:00Z', 'x', ?, '{}')",
            (tid, uid),
        )
    conn.commit()
    conn.close()
    name = "h" + uuid.uuid4().hex[:12]
    import asyncpg

    admin = await asyncpg.connect(server.url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dest = server.url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + "/"
    dest += name
    summary = await copy_archive(f"sqlite:///{path}", dest, create_schema=True)
    assert set(skipped(summary)) == {("users", "u1"), ("threads", t_bad)}, summary.render()
    assert await pg_ids(dest, "users") == [good]
    assert await pg_ids(dest, "threads") == [t_good]


# -- links in an archive ---------------------------------------------------------------------


def one_thread_archive(root: Path, name: str) -> None:
    store = ArchiveStore(root, create=True)
    user = store.upsert_user("alice")
    store.update_thread("t1", name=name, user_id=user["id"])
    store.write_step({"id": "s1", "threadId": "t1", "type": "user_message", "output": "hi"})
    store.close()


async def test_a_linked_thread_directory_is_never_written_nor_read_through(
    tmp_path: Path,
) -> None:
    source, dest = tmp_path / "source", tmp_path / "dest"
    one_thread_archive(source, "secret stuff")
    ArchiveStore(dest, create=True).close()
    outside = tmp_path / "outside"
    outside.mkdir()
    (dest / "threads" / "t1").symlink_to(outside, target_is_directory=True)
    summary = await copy_archive(str(source), str(dest))
    assert list(outside.iterdir()) == []  # nothing written outside the root
    reason = skipped(summary)[("threads", "t1")]
    assert "link" in reason and "run the copy again" not in reason, summary.render()

    # Nor read: linked to another archive's newer thread, it is not taken for the
    # destination's own (which would leave the copy "changed in the destination").
    elsewhere = tmp_path / "elsewhere"
    one_thread_archive(elsewhere, "not this archive's")
    before = {p: p.read_bytes() for p in elsewhere.rglob("*") if p.is_file()}
    (dest / "threads" / "t1").unlink()
    (dest / "threads" / "t1").symlink_to(elsewhere / "threads" / "t1")
    summary = await copy_archive(str(source), str(dest))
    assert "link" in skipped(summary).get(("threads", "t1"), ""), summary.render()
    assert {p: p.read_bytes() for p in elsewhere.rglob("*") if p.is_file()} == before


async def test_a_damaged_journal_line_of_the_source_is_listed(tmp_path: Path) -> None:
    source = tmp_path / "source"
    store = ArchiveStore(source, create=True)
    store.update_thread("t1", name="n")
    for n in range(3):
        store.write_step({"id": f"s{n}", "threadId": "t1", "type": "run", "output": f"o{n}"})
    store.close()
    journal = source / "threads" / "t1" / "steps.jsonl"
    lines = journal.read_bytes().split(b"\n")
    lines[1] = lines[1][:20] + b"\xff\xfe garbage"
    journal.write_bytes(b"\n".join(lines))
    summary = await copy_archive(str(source), str(tmp_path / "dest"))
    assert summary.problems, summary.render()
    assert any("line 2" in reason for reason in skipped(summary).values()), summary.render()


async def test_an_id_the_archive_refuses_is_listed_and_the_rest_of_the_thread_copied(
    tmp_path: Path, db: str
) -> None:
    import asyncpg

    from benchmarks.pgserver import apply_schema

    await apply_schema(db)
    conn = await asyncpg.connect(db)
    try:
        await conn.execute(
            """INSERT INTO "User" (id, identifier, metadata) VALUES ('u2', 'bob', '{}')"""
        )
        await conn.execute(
            """INSERT INTO "Thread" (id, name, metadata, "userId")
               VALUES ('ok-thread', 'x', '{}', 'u2')"""
        )
        await conn.execute(
            """INSERT INTO "Step" (id, "threadId", metadata, type, "startTime", "endTime",
                                   output)
               VALUES ('../../pwn_step', 'ok-thread', '{}', 'user_message', now(), now(), 'e'),
                      ('good', 'ok-thread', '{}', 'user_message', now(), now(), 'fine')"""
        )
        await conn.execute(
            """INSERT INTO "Element" (id, "threadId", "stepId", metadata, name)
               VALUES ('../../pwn_el', 'ok-thread', 'good', '{"type": "file"}', 'a'),
                      ('e-ok', 'ok-thread', 'good', '{"type": "file"}', 'b')"""
        )
        await conn.execute(
            """INSERT INTO "Feedback" (id, "stepId", name, value)
               VALUES ('../../fb', 'good', 'user_feedback', 1)"""
        )
    finally:
        await conn.close()
    back = tmp_path / "back"
    for _ in range(2):  # the same on every run: never "run the copy again"
        summary = await copy_archive(db, str(back))
        assert set(skipped(summary)) == {
            ("steps", "../../pwn_step"),
            ("elements", "../../pwn_el"),
            ("feedback", "../../fb"),
        }, summary.render()
        thread = ArchiveStore(back, create=False).get_thread("ok-thread")
        assert thread is not None
        assert [s["id"] for s in thread["steps"]] == ["good"]
        assert [e["id"] for e in thread["elements"]] == ["e-ok"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back"]


# -- values a column cannot hold -------------------------------------------------------------


def odd_values_archive(root: Path) -> dict[str, Any]:
    store = ArchiveStore(root, create=True)
    user = store.upsert_user("alice")
    store.update_thread("t1", name="n", user_id=user["id"])
    odd = {
        "id": "s-odd",
        "threadId": "t1",
        "type": "assistant_message",
        "name": "na\u0000me",
        "output": "a\u0000b",
        "metadata": {"k": "a\u0000b", "x\u0000": 1},
        "generation": {"messages": [{"role": "user", "content": "hi\u0000"}]},
        "indent": 2**70,
        "createdAt": "2026-03-01T10:00:00.123456Z",
    }
    store.write_step(odd)
    store.upsert_feedback(for_id="s-odd", value=1, comment="great\u0000", thread_id="t1")
    store.update_thread("t-nul", name="a\u0000b", metadata={"x\u0000": 1}, user_id=user["id"])
    store.write_step({"id": "s-nul", "threadId": "t-nul", "type": "run", "output": "x"})
    store.put_element(
        "t1",
        {"id": "e-page", "type": "pdf", "name": "p.pdf", "forId": "s-odd", "page": 2**40},
        b"%PDF",
    )
    store.close()
    return odd


async def test_values_a_column_cannot_hold_are_stashed_and_come_back(
    tmp_path: Path, db: str
) -> None:
    source = tmp_path / "source"
    odd = odd_values_archive(source)
    for dest in (db, f"sqlite:///{tmp_path / 'app.db'}"):
        summary = await copy_archive(str(source), dest, create_schema=True)
        assert not skipped(summary), summary.render()
        again = await copy_archive(str(source), dest)
        assert not again.counts["steps"]["copied"] and not again.counts["steps"]["updated"]
        back = tmp_path / f"back{len(dest)}"
        summary = await copy_archive(dest, str(back))
        assert not skipped(summary), summary.render()
        store = ArchiveStore(back, create=False)
        thread = store.get_thread("t1")
        assert thread is not None
        step = next(s for s in thread["steps"] if s["id"] == "s-odd")
        for key in ("name", "output", "metadata", "generation", "indent"):
            assert step.get(key) == odd[key], (dest, key, step.get(key))
        assert [e.get("page") for e in thread["elements"]] == [2**40]
        store.close()


def test_only_a_failure_that_may_pass_says_to_run_the_copy_again() -> None:
    class Refused(Exception):
        sqlstate = "22021"  # character not in repertoire: the same on every run

    class Deadlock(Exception):
        sqlstate = "40P01"

    for exc in (ConnectionResetError("lost"), TimeoutError("slow"), Deadlock("deadlock")):
        assert "run the copy again" in copier.failure(exc), exc
    for exc in (Refused("NUL"), ValueError("not a UUID"), OverflowError("int too big")):
        assert "run the copy again" not in copier.failure(exc), exc
        assert "will not change" in copier.failure(exc)


async def test_a_thread_whose_author_is_no_user_of_the_source_is_never_copied_authorless(
    tmp_path: Path,
) -> None:
    """A thread whose author the source does not hold (the marker ``verify --repair``
    writes for a lost author, or a user file gone) was copied without an author: in an
    archive that makes it anyone's to write. It is listed and left out instead."""
    source, dest = tmp_path / "source", tmp_path / "dest"
    store = ArchiveStore(source, create=True)
    alice = store.upsert_user("alice")
    for tid in ("t-marker", "t-ghost", "t-alice"):
        store.update_thread(tid, name=tid, user_id=alice["id"])
        store.write_step({"id": f"{tid}-s", "threadId": tid, "type": "run", "output": "hi"})
    store.close()
    for tid, author in (("t-marker", "(unknown author)"), ("t-ghost", "ghost-id")):
        path = source / "threads" / tid / "thread.json"
        path.write_text(path.read_text("utf-8").replace(alice["id"], author), "utf-8")
    summary = await copy_archive(str(source), str(dest))
    problems = skipped(summary)
    assert {("threads", "t-marker"), ("threads", "t-ghost")} <= set(problems), summary.render()
    copied = ArchiveStore(dest)
    try:
        assert copied.get_thread("t-marker") is None and copied.get_thread("t-ghost") is None
        thread = copied.get_thread("t-alice")
        assert thread is not None and thread["userIdentifier"] == "alice"
    finally:
        copied.close()


async def test_a_role_with_rights_to_the_tables_only_still_copies(db: str, tmp_path: Path) -> None:
    """The copy's record of the threads it wrote (``filelayer_copied``) is created when
    missing and only then: a role that may read and write Chainlit's tables but not
    create any (every role but the owner, in ``public`` since PostgreSQL 15) could no
    longer copy at all. Without the right to create it, the copy goes on without it."""
    import asyncpg

    root = tmp_path / "chats"
    store = ArchiveStore(root)
    alice = store.upsert_user("alice")
    store.update_thread("11111111-1111-4111-8111-111111111111", user_id=alice["id"], name="x")
    store.close()
    assert not (await copy_archive(str(root), db, create_schema=True)).problems  # the owner
    role = f"app_{uuid.uuid4().hex[:8]}"
    plain = db.replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(plain)
    try:
        await conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'app'")
        await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        await conn.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        await conn.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"
        )
    finally:
        await conn.close()
    head, tail = db.split("://", 1)
    as_app = f"{head}://{role}:app@{tail.split('@', 1)[1]}"
    store = ArchiveStore(root)
    store.update_thread("11111111-1111-4111-8111-111111111111", name="renamed")
    store.close()
    summary = await copy_archive(str(root), as_app)
    assert not summary.problems and summary.counts["threads"]["updated"] == 1, summary.render()

    conn = await asyncpg.connect(plain)  # the record gone: the role cannot make it again
    try:
        await conn.execute("DROP TABLE filelayer_copied")
    finally:
        await conn.close()
    store = ArchiveStore(root)
    store.update_thread("11111111-1111-4111-8111-111111111111", name="again")
    store.close()
    summary = await copy_archive(str(root), as_app)
    assert not summary.problems and summary.counts["threads"]["updated"] == 1, summary.render()


def test_a_fetch_never_follows_a_redirect_out_of_http(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only http(s) is fetched, each hop checked: urllib's default opener follows a
    redirect to ``ftp://`` (or ``file:`` with its own handlers), whose connection no
    address check covers."""
    import asyncio
    import socket

    monkeypatch.setattr(model, "refused_address", lambda address: None)  # a public hop
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    target = f"ftp://127.0.0.1:{listener.getsockname()[1]}/secret"

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", target if self.path == "/ftp" else "file:///etc/passwd")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        assert asyncio.run(model.fetch_url(f"{base}/ftp")) is None
        assert asyncio.run(model.fetch_url(f"{base}/file")) is None
        with pytest.raises(socket.timeout):
            listener.accept()  # no connection was made to the FTP "server"
    finally:
        httpd.shutdown()
        httpd.server_close()
        listener.close()


def nested(levels: int) -> Any:
    """A value of ``levels`` dicts one inside the other."""
    value: Any = [1, 2.5, "x"]
    for _ in range(levels):
        value = {"a": value}
    return value


async def test_data_as_deep_as_the_archive_takes_is_copied_and_comes_back(
    tmp_path: Path, db: str
) -> None:
    """A step's metadata nested as deep as a write accepts: the copy writes it into both
    schemas (PostgreSQL's JSONB text is made by a walk of the value) and reads it back
    unchanged; before, the walk took two stack frames per level and the copy stopped
    with ``RecursionError``."""
    source = tmp_path / "source"
    store = ArchiveStore(source)
    user = store.upsert_user("alice")
    store.update_thread("t1", name="deep", user_id=user["id"], metadata={"m": nested(500)})
    deep = nested(508)
    store.write_step({"id": "s1", "threadId": "t1", "type": "run", "metadata": deep})
    store.close()
    for dest in (db, f"sqlite:///{tmp_path / 'app.db'}"):
        summary = await copy_archive(str(source), dest, create_schema=True)
        assert not skipped(summary), summary.render()
        back = tmp_path / f"back{len(dest)}"
        summary = await copy_archive(dest, str(back))
        assert not skipped(summary), summary.render()
        again = ArchiveStore(back, create=False)
        thread = again.get_thread("t1")
        assert thread is not None
        assert thread["metadata"] == {"m": nested(500)}
        assert thread["steps"][0]["metadata"] == deep
        again.close()


async def test_a_time_whose_offset_leaves_the_calendar_copies_there_and_back(
    tmp_path: Path,
) -> None:
    """A step time whose offset moves it before year 1 or past 9999 is no instant (the
    archive keeps it as its own key): the copy carries it as text, both ways, instead
    of refusing its thread."""
    source = tmp_path / "source"
    store = ArchiveStore(source, create=True)
    edges = {"t-early": "0001-01-01T00:00:00+14:00", "t-late": "9999-12-31T23:59:59-12:00"}
    for tid, at in edges.items():
        store.update_thread(tid, name=tid)
        store.write_step(
            {
                "id": f"s-{tid}",
                "threadId": tid,
                "type": "user_message",
                "output": "hi",
                "createdAt": at,
                "start": at,
                "end": at,
            }
        )
    store.close()
    dest = f"sqlite:///{tmp_path / 'app.db'}"
    for there, back in ((str(source), dest), (dest, str(tmp_path / "back"))):
        summary = await copy_archive(there, back, create_schema=there == str(source))
        assert not skipped(summary), summary.render()
    store = ArchiveStore(tmp_path / "back", create=False)
    for tid, at in edges.items():
        thread = store.get_thread(tid)
        assert thread is not None, tid
        assert [(s["createdAt"], s["start"], s["end"]) for s in thread["steps"]] == [(at,) * 3]
    store.close()


async def test_deep_data_copied_again_into_an_archive_that_holds_it_is_unchanged(
    tmp_path: Path,
) -> None:
    """Copying a database into an archive that already holds its threads compares each
    step with the one stored: a step's metadata nested as deep as a write accepts is
    found unchanged. The comparison copied the stored step with a walk two stack frames
    a level, and the thread was refused with ``RecursionError``."""
    source = tmp_path / "source"
    store = ArchiveStore(source)
    user = store.upsert_user("alice")
    store.update_thread("t1", name="deep", user_id=user["id"])
    deep = nested(508)
    store.write_step({"id": "s1", "threadId": "t1", "type": "run", "metadata": deep})
    store.close()
    dest = f"sqlite:///{tmp_path / 'app.db'}"
    summary = await copy_archive(str(source), dest, create_schema=True)
    assert not skipped(summary), summary.render()
    back = tmp_path / "back"
    for _ in range(2):
        summary = await copy_archive(dest, str(back))
        assert not skipped(summary) and not summary.problems, summary.render()
    assert summary.counts["steps"]["unchanged"] == 1, summary.render()
    again = ArchiveStore(back, create=False)
    thread = again.get_thread("t1")
    assert thread is not None and thread["steps"][0]["metadata"] == deep
    again.close()


def nul_archive(root: Path, tags: list[str]) -> str:
    """An archive whose user metadata, thread name and metadata and feedback comment hold
    NUL characters, which PostgreSQL's text and JSONB refuse, and whose thread has
    ``tags``: its thread id."""
    tid = "22222222-2222-4222-8222-222222222222"
    store = ArchiveStore(root, create=True)
    try:
        nul = store.upsert_user("nul", metadata={"k\0": "v\0"})
        store.update_thread(
            tid, name="na\0me", user_id=nul["id"], metadata={"m": "a\0b"}, tags=tags
        )
        step = "33333333-3333-4333-8333-333333333333"
        store.write_step(
            {"id": step, "threadId": tid, "type": "user_message", "output": "o", "tags": ["s\0"]}
        )
        store.upsert_feedback(for_id=step, value=0, comment="\0why", thread_id=tid)
    finally:
        store.close()
    return tid


async def test_a_nul_in_a_thread_tag_is_left_out_in_the_official_schema(
    tmp_path: Path, db: str
) -> None:
    """A NUL in a thread's tag is left out, as one in its name is: the thread was refused
    whole, on every run."""
    source = tmp_path / "source"
    tid = nul_archive(source, ["t\0", "u"])
    summary = await copy_archive(str(source), db, create_schema=True)
    assert not skipped(summary), summary.render()
    back = tmp_path / "back"
    summary = await copy_archive(db, str(back))
    assert not skipped(summary), summary.render()
    store = ArchiveStore(back, create=False)
    try:
        thread = store.get_thread(tid)
        assert thread is not None
        assert (thread["name"], thread["tags"], thread["metadata"]) == (
            "name",
            ["t", "u"],
            {"m": "ab"},
        )
        assert thread["steps"][0]["feedback"]["comment"] == "why"
    finally:
        store.close()


async def test_rows_held_without_their_nul_characters_are_not_rewritten_on_every_run(
    tmp_path: Path, db: str
) -> None:
    """A user's metadata, a thread's name, metadata and tags and a feedback comment are
    stored in the official schema without their NUL characters (they have no stash):
    the row so held is the source's value. A re-run rewrote each of them, every time."""
    source = tmp_path / "source"
    nul_archive(source, ["t\0", "u"])
    summary = await copy_archive(str(source), db, create_schema=True)
    assert not skipped(summary), summary.render()
    again = await copy_archive(str(source), db)
    written = {
        kind: dict(again.counts[kind])
        for kind in ("users", "threads", "steps", "feedback")
        if again.counts[kind]["copied"] or again.counts[kind]["updated"]
    }
    assert not written, again.render()


async def test_nul_characters_outside_steps_reach_the_sqlalchemy_schema_on_postgres_once(
    tmp_path: Path, db: str
) -> None:
    """On PostgreSQL the SQLAlchemy schema's text refuses NUL as the official schema's
    does: a thread's tags and a feedback comment are stored without them, as its name
    is, where a NUL there kept the whole thread out on every run; and a re-run finds
    them so held unchanged."""
    source = tmp_path / "source"
    tid = nul_archive(source, ["t\0", "u"])
    summary = await copy_archive(str(source), db, create_schema=True, schema="sqlalchemy")
    assert not skipped(summary), summary.render()
    again = await copy_archive(str(source), db, schema="sqlalchemy")
    written = {
        kind: dict(again.counts[kind])
        for kind in ("users", "threads", "steps", "feedback")
        if again.counts[kind]["copied"] or again.counts[kind]["updated"]
    }
    assert not written, again.render()
    back = tmp_path / "back"
    summary = await copy_archive(db, str(back), schema="sqlalchemy")
    assert not skipped(summary), summary.render()
    store = ArchiveStore(back, create=False)
    try:
        thread = store.get_thread(tid)
        assert thread is not None
        assert (thread["name"], thread["tags"]) == ("name", ["t", "u"])
        assert thread["steps"][0]["feedback"]["comment"] == "why"
        assert thread["steps"][0]["tags"] == ["s\0"]  # a step's are kept exactly
    finally:
        store.close()


async def test_metadata_that_is_no_json_object_is_listed_not_silently_emptied(
    tmp_path: Path,
) -> None:
    """The SQLAlchemy layer keeps metadata as JSON text, which anything writing the
    database may have left malformed (or not an object). The archive holds metadata as
    an object only, so such a user, thread or step is copied without it, and that is
    said (a problem, exit code 1): it came out as ``{}``, as if it had been empty."""
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    try:
        for statement in STATEMENTS:
            conn.execute(statement)
        conn.execute("INSERT INTO users VALUES ('u1', 'al', '{broken', '2026-01-01T00:00:00Z')")
        conn.execute(
            "INSERT INTO threads VALUES ('t1', '2026-01-01T00:00:00Z', 'n', 'u1', 'al', NULL, "
            "'[1, 2]')"
        )
        conn.execute(
            'INSERT INTO steps (id, name, type, "threadId", streaming, metadata, "createdAt", '
            "output) VALUES ('s1', 'n', 'user_message', 't1', 0, '{\"a\": ', "
            "'2026-01-01T00:00:01Z', 'hi')"
        )
        conn.execute(
            'INSERT INTO steps (id, name, type, "threadId", streaming, metadata, "createdAt", '
            "output) VALUES ('s2', 'n', 'user_message', 't1', 0, '{\"fine\": 1}', "
            "'2026-01-01T00:00:02Z', 'ok')"
        )
        conn.commit()
    finally:
        conn.close()
    summary = await copy_archive(f"sqlite:///{db}", str(tmp_path / "chats"))
    assert summary.problems, summary.render()
    said = summary.render()
    for what in ("user u1", "thread t1", "step s1"):
        assert f"{what}" in said and "not a JSON object" in said, said
    assert "step s2" not in said, said
    counts = {kind: summary.counts[kind]["copied"] for kind in ("users", "threads", "steps")}
    assert counts == {"users": 1, "threads": 1, "steps": 2}, said
    store = ArchiveStore(tmp_path / "chats", create=False)
    try:
        thread = store.get_thread("t1")
        assert thread is not None and thread["metadata"] == {}
        by_id = {s["id"]: s for s in thread["steps"]}
        assert by_id["s2"]["metadata"] == {"fine": 1}
    finally:
        store.close()


async def test_a_time_that_is_no_instant_is_written_once_into_the_official_schema(
    tmp_path: Path, db: str
) -> None:
    """A user's or thread's time that names no instant (RFC 3339 allows a lower-case
    ``t`` and ``z``, which the archive keeps as text) is written into the schema's
    ``TIMESTAMP`` columns as the copy's stand-in for no time: that row is the source's
    value, and a re-run found it changed and rewrote the user every time."""
    source = tmp_path / "source"
    store = ArchiveStore(source, create=True)
    user = store.upsert_user("al")
    tid = "44444444-4444-4444-8444-444444444444"
    store.update_thread(tid, name="n", user_id=user["id"])
    store.close()
    odd = "2026-01-01t00:00:00z"
    for path in [source / "threads" / tid / "thread.json", *(source / "users").glob("*.json")]:
        doc = json.loads(path.read_text("utf-8"))
        doc.update({k: odd for k in ("createdAt", "updatedAt") if k in doc})
        path.write_text(json.dumps(doc), "utf-8")
    summary = await copy_archive(str(source), db, create_schema=True)
    assert not skipped(summary), summary.render()
    again = await copy_archive(str(source), db)
    written = {
        kind: dict(again.counts[kind])
        for kind in ("users", "threads")
        if again.counts[kind]["copied"] or again.counts[kind]["updated"]
    }
    assert not written, again.render()


async def test_text_that_is_no_utf8_in_a_sqlite_source_is_listed_not_a_traceback(
    tmp_path: Path,
) -> None:
    """SQLite stores whatever bytes a writer put in a TEXT column. A user's identifier
    or a thread's name that is no UTF-8 stopped the whole copy with a traceback before
    anything was copied; such a user or thread is listed, and the others copied."""
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    try:
        for statement in STATEMENTS:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO users VALUES ('u-bad', CAST(x'ff41' AS TEXT), '{}', "
            "'2026-01-01T00:00:00Z')"
        )
        conn.execute("INSERT INTO users VALUES ('u-ok', 'ok', '{}', '2026-01-01T00:00:00Z')")
        for tid, name in (("t-bad", "CAST(x'c328' AS TEXT)"), ("t-ok", "'fine'")):
            conn.execute(
                f"INSERT INTO threads VALUES ('{tid}', '2026-01-01T00:00:00Z', {name}, 'u-ok', "
                "'ok', NULL, '{}')"
            )
        conn.commit()
    finally:
        conn.close()
    summary = await copy_archive(f"sqlite:///{db}", str(tmp_path / "chats"))
    problems = skipped(summary)
    assert {("users", "u-bad"), ("threads", "t-bad")} <= set(problems), summary.render()
    assert "UTF-8" in problems[("users", "u-bad")], problems
    store = ArchiveStore(tmp_path / "chats", create=False)
    try:
        assert store.get_user("ok") is not None
        thread = store.get_thread("t-ok")
        assert thread is not None and thread["name"] == "fine"
        assert store.get_thread("t-bad") is None
    finally:
        store.close()
