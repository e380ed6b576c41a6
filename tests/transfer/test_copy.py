"""``filelayer copy``: an archive to a real PostgreSQL and back, read through Chainlit's
own ``ChainlitDataLayer``, re-runs, dry runs, filters and interrupted copies.

One throwaway server serves the module; every test gets its own database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chainlit")
pytest.importorskip("asyncpg")

import asyncpg
from chainlit.data.chainlit_data_layer import ChainlitDataLayer
from chainlit.element import File, Image, Text
from chainlit.types import Feedback, Pagination, ThreadFilter
from chainlit.user import User

from benchmarks.pgserver import apply_schema
from filelayer import ArchiveStore, _time
from filelayer.transfer import command, model, pgwrite
from filelayer.transfer import storage as element_storage
from filelayer.transfer.copier import copy_archive
from filelayer.transfer.model import KINDS, Summary
from tests.support.processes import subprocess_env

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cf00000301010018dd8db40000000049454e44ae426082"
)
REMOTE = b"remote,csv\n1,2\n"


def t(second: int, micro: int = 123456) -> str:
    """A time with microseconds, which PostgreSQL's TIMESTAMP(3) cannot hold."""
    return f"2026-03-01T10:{second // 60:02d}:{second % 60:02d}.{micro:06d}Z"


# -- fixtures -------------------------------------------------------------------------


class Blobs:
    """A storage client like Chainlit's (same four methods), keeping objects in memory
    and serving them over loopback HTTP, as a bucket serves presigned URLs."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.objects: dict[str, bytes] = {"remote/report.csv": REMOTE}

    async def upload_file(
        self,
        object_key: str,
        data: bytes | str,
        mime: str = "application/octet-stream",
        overwrite: bool = True,
        content_disposition: str | None = None,
    ) -> dict[str, Any]:
        self.objects[object_key] = data if isinstance(data, bytes) else data.encode()
        return {"object_key": object_key, "url": self.base + object_key}

    async def delete_file(self, object_key: str) -> bool:
        return self.objects.pop(object_key, None) is not None

    async def get_read_url(self, object_key: str) -> str:
        return self.base + object_key

    async def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def http() -> Iterator[Blobs]:
    blobs = Blobs("")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = blobs.objects.get(self.path.lstrip("/"))
            self.send_response(200 if data is not None else 404)
            self.end_headers()
            if data is not None:
                self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    blobs.base = f"http://127.0.0.1:{httpd.server_address[1]}/"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield blobs
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def storage(http: Blobs, monkeypatch: pytest.MonkeyPatch) -> Blobs:
    """The copy's storage client is the in-memory one (as if Chainlit's variables set one)."""
    monkeypatch.setattr(element_storage, "storage_client_from_env", lambda: http)
    return http


@pytest.fixture
def public_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loopback server stands in for a public one: an element's own URL is fetched
    (with ``fetch_urls``) from there, where loopback addresses are otherwise refused."""
    monkeypatch.setattr(model, "refused_address", lambda address: None)


@pytest.fixture
async def chainlit_layer(db: str, storage: Blobs) -> AsyncIterator[ChainlitDataLayer]:
    dl = ChainlitDataLayer(database_url=db, storage_client=storage)
    yield dl
    await dl.cleanup()


# -- the archive under test --------------------------------------------------------------


async def fill(layer: Any, remote_url: str) -> dict[str, Any]:
    """Users, threads with tags and metadata, nested steps with tool steps, feedback,
    elements with bytes, an unknown step type, a deleted step, a renamed thread and a
    deleted thread: everything a copy must carry (or must not bring back)."""
    alice = await layer.create_user(User(identifier="alice@example.com", metadata={"r": 1}))
    bob = await layer.create_user(User(identifier="bob@example.com"))
    await layer.update_thread(
        "t1", name="First", user_id=alice.id, tags=["a", "b"], metadata={"chat_profile": "x"}
    )
    steps = [
        {"id": "u1", "type": "user_message", "name": "alice", "output": "Hi", "createdAt": t(1)},
        {"id": "run1", "type": "run", "name": "on_message", "createdAt": t(2), "start": t(2)},
        {
            "id": "tool1",
            "type": "tool",
            "name": "search",
            "parentId": "run1",
            "input": '{"q": "bread"}',
            "output": "3 results",
            "createdAt": t(3, 100),
            "start": t(3, 100),
            "end": t(4, 999999),
            "showInput": "json",
            "language": "json",
            "tags": ["x"],
            "generation": {"model": "scripted"},
            "defaultOpen": True,
            "metadata": {"icon": "🔎"},
            "isError": False,
        },
        {
            "id": "odd1",
            "type": "my_custom_type",
            "name": "custom",
            "parentId": "run1",
            "output": "made up type",
            "createdAt": t(3, 400),  # same millisecond as tool1
            "showInput": False,
        },
        {
            "id": "a1",
            "type": "assistant_message",
            "name": "Assistant",
            "parentId": "run1",
            "output": "Hello ✓",
            "createdAt": t(5),
        },
        {"id": "gone", "type": "assistant_message", "output": "oops", "createdAt": t(6)},
    ]
    for s in steps:
        await layer.create_step({"threadId": "t1", **s})
    await layer.update_step({"id": "a1", "threadId": "t1", "output": "Hello ✓", "end": t(7)})
    await layer.upsert_feedback(Feedback(forId="a1", value=1, comment="thanks", threadId="t1"))
    image = Image(name="dot.png", content=PNG, display="inline", for_id="a1", thread_id="t1")
    image.mime = "image/png"
    await layer.create_element(image)
    note = Text(name="notes", content="ça va", for_id="u1", thread_id="t1")
    note.mime = "text/plain"
    await layer.create_element(note)
    remote = File(name="report.csv", url=remote_url, for_id="a1", thread_id="t1")
    await layer.create_element(remote)
    doomed = Image(name="gone.png", content=PNG, for_id="gone", thread_id="t1")
    await layer.create_element(doomed)
    await layer.delete_step("gone")
    await layer.update_thread("t1", name="Renamed")

    await layer.update_thread("t2", name="Bob's", user_id=bob.id)
    await layer.create_step(
        {"id": "b1", "threadId": "t2", "type": "user_message", "output": "yo", "createdAt": t(9)}
    )
    await layer.upsert_feedback(Feedback(forId="b1", value=0, comment=None, threadId="t2"))

    await layer.update_thread("t3", name="Deleted", user_id=alice.id)
    await layer.create_step(
        {"id": "c1", "threadId": "t3", "type": "user_message", "output": "x", "createdAt": t(9)}
    )
    await layer.delete_thread("t3")
    return {"alice": alice, "bob": bob, "image": image, "note": note, "remote": remote}


def counts(summary: Summary) -> dict[str, dict[str, int]]:
    return {kind: {k: v for k, v in summary.counts[kind].items() if v} for kind in KINDS}


def nothing_written(summary: Summary) -> bool:
    return all(not summary.counts[k][o] for k in KINDS for o in ("copied", "updated", "deleted"))


def canonical(thread: dict[str, Any]) -> dict[str, Any]:
    """A thread as get_thread gives it, thread times at milliseconds (the schema's)."""
    out = model.normalise_times(thread)
    out["elements"] = sorted(thread["elements"], key=lambda e: e["id"])
    return out


def assert_same_archives(a: Path, b: Path, carried: set[str]) -> None:
    sa, sb = ArchiveStore(a, create=False), ArchiveStore(b, create=False)
    users_a = {u["identifier"]: u for u in sa.iter_users()}
    users_b = {u["identifier"]: u for u in sb.iter_users()}
    assert users_a.keys() == users_b.keys()
    for ident, ua in users_a.items():
        ub = users_b[ident]
        assert (ua["id"], ua["metadata"]) == (ub["id"], ub["metadata"])
        assert _time.ms_key(ua["createdAt"]) == _time.ms_key(ub["createdAt"])
    live_a = [x for x in sa.thread_ids() if not sa.is_deleted(x)]
    assert live_a == [x for x in sb.thread_ids() if not sb.is_deleted(x)]
    for tid in live_a:
        ta, tb = sa.get_thread(tid), sb.get_thread(tid)
        assert ta is not None and tb is not None
        assert canonical(ta)["steps"] == canonical(tb)["steps"], tid
        assert canonical(ta) == canonical(tb), tid
        for el in ta["elements"]:
            fa, fb = sa.element_file(tid, el["id"]), sb.element_file(tid, el["id"])
            if fa is not None:
                assert el["id"] in carried
                assert fb is not None and fa[1].read_bytes() == fb[1].read_bytes()


# -- the round trip -------------------------------------------------------------------


async def test_round_trip_through_postgres(
    layer: Any,
    root: Path,
    tmp_path: Path,
    db: str,
    storage: Blobs,
    chainlit_layer: ChainlitDataLayer,
    public_loopback: None,
) -> None:
    made = await fill(layer, storage.base + "remote/report.csv")
    before = (root / "threads").stat().st_mtime_ns, sorted(root.rglob("*"))

    summary = await copy_archive(str(root), db, create_schema=True)
    assert not summary.problems, summary.render()
    c = counts(summary)
    assert c["users"] == {"copied": 2}
    assert c["threads"] == {"copied": 2}  # t3 was deleted: never copied
    assert c["steps"] == {"copied": 6}
    assert c["feedback"] == {"copied": 2}
    assert c["elements"] == {"copied": 3}
    assert summary.bytes_copied == len(PNG) + len("ça va".encode())
    assert any("my_custom_type" in n for n in summary.notes)
    assert sorted(root.rglob("*"))[: len(before[1])] == before[1]  # the source is read only

    # Chainlit's own layer reads what the copy wrote.
    alice, bob = made["alice"], made["bob"]
    assert (await chainlit_layer.get_user("alice@example.com")).id == alice.id
    thread = await chainlit_layer.get_thread("t1")
    assert thread is not None
    assert thread["name"] == "Renamed"
    assert thread["userId"] == alice.id and thread["userIdentifier"] == "alice@example.com"
    assert thread["metadata"] == {"chat_profile": "x"}
    by_id = {s["id"]: s for s in thread["steps"]}
    assert set(by_id) == {"u1", "run1", "tool1", "odd1", "a1"}
    assert by_id["a1"]["output"] == "Hello ✓" and by_id["a1"]["parentId"] == "run1"
    assert by_id["a1"]["feedback"]["value"] == 1
    assert by_id["a1"]["feedback"]["comment"] == "thanks"
    assert by_id["tool1"]["type"] == "tool" and by_id["tool1"]["input"] == '{"q": "bread"}'
    assert by_id["odd1"]["type"] == "undefined"  # not in the StepType enum
    assert not by_id["odd1"]["showInput"]  # hidden input stays hidden in the UI
    assert by_id["u1"]["createdAt"].startswith("2026-03-01T10:00:01.123")
    order = [s["id"] for s in thread["steps"]]
    assert order.index("run1") < order.index("tool1") < order.index("a1")
    elements = {e["id"]: e for e in thread["elements"]}
    assert set(elements) == {made["image"].id, made["note"].id, made["remote"].id}
    image = elements[made["image"].id]
    assert (image["type"], image["name"], image["mime"], image["forId"]) == (
        "image",
        "dot.png",
        "image/png",
        "a1",
    )
    assert storage.objects[image["objectKey"]] == PNG
    assert image["url"] == storage.base + image["objectKey"]  # from the storage client
    assert elements[made["remote"].id]["url"] == storage.base + "remote/report.csv"
    page = await chainlit_layer.list_threads(Pagination(first=10), ThreadFilter(userId=alice.id))
    assert [x["id"] for x in page.data] == ["t1"]
    page = await chainlit_layer.list_threads(Pagination(first=10), ThreadFilter(userId=bob.id))
    assert [x["id"] for x in page.data] == ["t2"]
    assert await chainlit_layer.get_thread_author("t1") == "alice@example.com"
    assert await chainlit_layer.get_thread_author("t2") == "bob@example.com"
    assert await chainlit_layer.get_thread("t3") is None

    # Back into a new archive: the same conversations, field by field.
    back = tmp_path / "back"
    summary = await copy_archive(db, str(back), fetch_urls=True)
    assert not summary.problems, summary.render()
    assert counts(summary)["steps"] == {"copied": 6}
    carried = {made["image"].id, made["note"].id, made["remote"].id}
    assert_same_archives(root, back, carried)
    sb = ArchiveStore(back, create=False)
    found = sb.element_file("t1", made["remote"].id)
    assert found is not None and found[1].read_bytes() == REMOTE  # fetched from its URL

    # Re-runs, in both directions: nothing left to do.
    for source, dest in ((str(root), db), (db, str(back)), (str(back), db)):
        again = await copy_archive(source, dest)
        assert nothing_written(again), (source, dest, again.render())
        assert not again.problems, again.render()
        assert counts(again)["steps"] == {"unchanged": 6}, again.render()


async def test_cli_exit_codes_dry_run_and_bytes_left_behind(
    layer: Any, root: Path, tmp_path: Path, db: str, http: Blobs
) -> None:
    """Without a storage client the rows go and the summary lists the files that did not
    (exit 1); a dry run writes nothing, not even the schema; usage errors exit 2."""
    await fill(layer, http.base + "remote/report.csv")
    parser = argparse.ArgumentParser(prog="filelayer")
    command.add_parser(parser.add_subparsers())

    def cli(*argv: str) -> tuple[int, str]:
        """Exit code, and what was printed (summary and errors)."""
        args = parser.parse_args(["copy", *argv])
        out = io.StringIO()
        with contextlib.redirect_stderr(out):
            code = args.handler(args, out)
        return code, out.getvalue()

    code, text = await asyncio.to_thread(cli, str(root), db, "--create-schema", "--dry-run")
    assert code == 1 and "dry run" in text and "2 would be copied" in text
    assert "would stay behind" in text  # without storage: said before anything is written
    conn = await asyncpg.connect(db)
    try:
        assert await conn.fetchval("SELECT to_regclass('\"Thread\"')") is None
        code, text = await asyncio.to_thread(cli, str(root), db)
        assert code == 2 and "--create-schema" in text

        code, text = await asyncio.to_thread(cli, str(root), db, "--create-schema")
        assert code == 1, text
        assert "threads/t1/elements/" in text and "no storage client" in text
        assert await conn.fetchval('SELECT count(*) FROM "Element"') == 3
        assert await conn.fetchval('SELECT count(*) FROM "Element" WHERE "objectKey" IS NULL') == 3

        # A change in the source, then a dry run: shown, not written.
        await layer.create_step(
            {
                "id": "new",
                "threadId": "t2",
                "type": "user_message",
                "output": "later",
                "createdAt": t(30),
            }
        )
        summary = await copy_archive(str(root), db, dry_run=True)
        assert counts(summary)["steps"] == {"copied": 1, "unchanged": 6}
        assert await conn.fetchval('SELECT count(*) FROM "Step" WHERE id = $1', "new") == 0
        summary = await copy_archive(str(root), db)
        assert counts(summary)["steps"] == {"copied": 1, "unchanged": 6}
        assert await conn.fetchval('SELECT count(*) FROM "Step" WHERE id = $1', "new") == 1
    finally:
        await conn.close()

    fresh = tmp_path / "not-yet"
    summary = await copy_archive(db, str(fresh), dry_run=True)
    assert counts(summary)["threads"] == {"copied": 2} and not fresh.exists()

    for argv, needle in (
        ((str(root), db, "--since", "yesterday"), "--since"),
        ((str(root), "postgresql://u@127.0.0.1:1/none"), "cannot connect"),
        ((str(tmp_path / "missing"), db), "no archive"),
        ((str(root), "mysql://x/y"), "not supported"),
    ):
        code, text = await asyncio.to_thread(cli, *argv)
        assert code == 2, argv
        assert needle in text, text


async def test_without_asyncpg_the_message_says_what_to_install(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ArchiveStore(root)
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    args = argparse.Namespace(
        source=str(root),
        dest="postgresql://u@127.0.0.1/x",
        dry_run=False,
        user=None,
        since=None,
        create_schema=False,
        no_fetch=False,
    )
    assert await asyncio.to_thread(command.run, args, io.StringIO()) == 2
    assert "pip install 'chainlit-filelayer[sql]'" in capsys.readouterr().err


async def test_user_and_since_filters(
    layer: Any, root: Path, tmp_path: Path, db: str, storage: Blobs
) -> None:
    await fill(layer, storage.base + "remote/report.csv")
    summary = await copy_archive(str(root), db, create_schema=True, user="bob@example.com")
    assert counts(summary)["users"] == {"copied": 1}
    assert counts(summary)["threads"] == {"copied": 1}
    summary = await copy_archive(str(root), db, since="2999-01-01")
    assert counts(summary)["threads"] == {}  # users are copied whatever the date
    assert counts(summary)["users"] == {"copied": 1, "unchanged": 1}
    summary = await copy_archive(str(root), db, since="2000-01-01")
    assert counts(summary)["threads"] == {"copied": 1, "unchanged": 1}
    out = tmp_path / "alice-only"
    summary = await copy_archive(db, str(out), user="alice@example.com")
    assert counts(summary)["threads"] == {"copied": 1}
    assert ArchiveStore(out, create=False).thread_ids() == ["t1"]


async def test_deletions_are_carried_and_nothing_comes_back(
    layer: Any, root: Path, tmp_path: Path, db: str, storage: Blobs, public_loopback: None
) -> None:
    await fill(layer, storage.base + "remote/report.csv")
    assert not (await copy_archive(str(root), db, create_schema=True)).problems
    back = tmp_path / "back"
    assert not (await copy_archive(db, str(back), fetch_urls=True)).problems
    await layer.delete_step("tool1")
    await layer.delete_thread("t2")
    summary = await copy_archive(str(root), db)
    assert counts(summary)["steps"]["deleted"] == 1
    assert counts(summary)["threads"]["deleted"] == 1
    dl = ChainlitDataLayer(database_url=db, storage_client=storage)
    try:
        assert await dl.get_thread("t2") is None
        ids = [s["id"] for s in (await dl.get_thread("t1"))["steps"]]
        assert "tool1" not in ids and "a1" in ids
    finally:
        await dl.cleanup()
    # The thread deleted in PostgreSQL is deleted in the second archive, for good.
    summary = await copy_archive(db, str(back), fetch_urls=True)
    assert counts(summary)["threads"]["deleted"] == 1
    assert counts(summary)["steps"]["deleted"] == 1  # gone from the database: deleted
    sb = ArchiveStore(back, create=False)
    assert sb.is_deleted("t2") and sb.get_thread("t2") is None
    assert "tool1" not in [s["id"] for s in sb.get_thread("t1")["steps"]]
    # ...and copying the first archive's old state into it cannot bring it back.
    summary = await copy_archive(str(back), db)
    assert nothing_written(summary), summary.render()


async def test_an_interrupted_copy_completes_when_run_again(
    layer: Any,
    root: Path,
    tmp_path: Path,
    db: str,
    storage: Blobs,
    monkeypatch: pytest.MonkeyPatch,
    public_loopback: None,
) -> None:
    made = await fill(layer, storage.base + "remote/report.csv")
    real_write = pgwrite.PostgresWriter._write_element
    calls = {"n": 0}

    async def failing(self: Any, cols: dict[str, Any]) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionResetError("connection lost (injected)")
        await real_write(self, cols)

    monkeypatch.setattr(pgwrite.PostgresWriter, "_write_element", failing)
    summary = await copy_archive(str(root), db, create_schema=True)
    assert summary.problems and "injected" in summary.render()
    conn = await asyncpg.connect(db)
    try:  # the failed thread was rolled back as a whole; the other one is complete
        assert await conn.fetchval('SELECT count(*) FROM "Thread"') == 1
        assert await conn.fetchval('SELECT count(*) FROM "Step" WHERE "threadId" = $1', "t1") == 0
    finally:
        await conn.close()
    monkeypatch.setattr(pgwrite.PostgresWriter, "_write_element", real_write)
    summary = await copy_archive(str(root), db)
    assert not summary.problems, summary.render()
    assert counts(summary)["threads"] == {"copied": 1, "unchanged": 1}

    # Into an archive, which has no transactions: a thread left half written.
    back = tmp_path / "back"
    real_step = ArchiveStore.write_step
    steps = {"n": 0}

    def failing_step(self: ArchiveStore, step: dict[str, Any]) -> bool:
        steps["n"] += 1
        if steps["n"] == 3:
            raise OSError("disk full (injected)")
        return real_step(self, step)

    monkeypatch.setattr(ArchiveStore, "write_step", failing_step)
    summary = await copy_archive(db, str(back), fetch_urls=True)
    assert summary.problems
    partial = ArchiveStore(back, create=False).get_thread("t1")
    assert partial is not None and len(partial["steps"]) == 2
    monkeypatch.setattr(ArchiveStore, "write_step", real_step)
    summary = await copy_archive(db, str(back), fetch_urls=True)
    assert not summary.problems, summary.render()
    assert counts(summary)["steps"] == {"copied": 3, "unchanged": 3}
    carried = {made["image"].id, made["note"].id, made["remote"].id}
    assert_same_archives(root, back, carried)


async def test_schema_is_created_only_when_asked(db: str) -> None:
    await apply_schema(db)  # the same statements: applying them twice changes nothing
    conn = await asyncpg.connect(db)
    try:
        assert await conn.fetchval('SELECT count(*) FROM "Thread"') == 0
    finally:
        await conn.close()


async def test_archive_to_archive_needs_neither_chainlit_nor_asyncpg(
    layer: Any, root: Path, tmp_path: Path, http: Blobs
) -> None:
    made = await fill(layer, http.base + "remote/report.csv")
    other = tmp_path / "other"
    code = (
        "import sys\n"
        "for name in ('chainlit', 'asyncpg'):\n"
        "    sys.modules[name] = None\n"
        "import argparse\n"
        "from filelayer.transfer import command\n"
        "parser = argparse.ArgumentParser()\n"
        "command.add_parser(parser.add_subparsers())\n"
        f"args = parser.parse_args(['copy', {str(root)!r}, {str(other)!r}])\n"
        "sys.exit(args.handler(args))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 copied" in result.stdout
    assert_same_archives(root, other, {made["image"].id, made["note"].id})
    sa, so = ArchiveStore(root, create=False), ArchiveStore(other, create=False)
    for tid in ("t1", "t2"):  # archive to archive keeps even the microseconds
        assert sa.get_thread(tid) == so.get_thread(tid)
