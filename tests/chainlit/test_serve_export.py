"""The export route, over HTTP, inside Chainlit's real FastAPI app: a zip of the
Markdown export or the HTML page, under the same rules as the element route."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chainlit")
pytest.importorskip("httpx")

from filelayer.chainlit.export_route import export_url, zip_bundle
from tests.chainlit.test_serve import PNG, Site, as_user
from tests.chainlit.test_serve import site as served_site  # noqa: F401 (a fixture, used below)
from tests.support.layer import needs_thread_sharing


@pytest.fixture
def site(request: pytest.FixtureRequest) -> Site:
    """The element route's test site: a FileDataLayer in Chainlit's real app."""
    found: Site = request.getfixturevalue("served_site")
    return found


def url(thread_id: str, fmt: str = "markdown") -> str:
    return f"/filelayer/export/{thread_id}?format={fmt}"


async def test_the_author_gets_the_markdown_and_its_files_as_one_zip(site: Site) -> None:
    response = await site.client.get(url(site.thread_id), headers=as_user("alice"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"].startswith('attachment; filename="')
    assert response.headers["cache-control"] == "private, no-store"
    members = zipfile.ZipFile(io.BytesIO(response.content))
    names = members.namelist()
    [page] = [n for n in names if n.endswith(".md")]
    stem = page[: -len(".md")]
    text = members.read(page).decode("utf-8")
    assert "here it is" in text and 'author: "alice"' in text
    assert f"![pic.png]({stem}.files/{site.image_id}.png)" in text
    assert members.read(f"{stem}.files/{site.image_id}.png") == PNG
    assert f"{stem}.files/{site.video_id}.mp4" in names
    # the same bytes every time: a re-download is the same file
    again = await site.client.get(url(site.thread_id), headers=as_user("alice"))
    assert again.content == response.content


async def test_the_html_page_holds_its_images_and_runs_nothing(site: Site) -> None:
    response = await site.client.get(url(site.thread_id, "html"), headers=as_user("alice"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "sandbox" in policy
    assert "script-src" not in policy
    page = response.text
    assert "here it is" in page and "<script" not in page
    assert "data:image/png;base64," in page
    assert f"/filelayer/elements/{site.thread_id}/{site.video_id}" in page


async def test_strangers_get_the_same_answers_as_for_a_missing_thread(site: Site) -> None:
    bob = as_user("bob")
    missing = str(uuid.uuid4())
    for fmt in ("markdown", "html", "nonsense"):
        theirs = await site.client.get(url(site.thread_id, fmt), headers=bob)
        none = await site.client.get(url(missing, fmt), headers=bob)
        assert theirs.status_code == none.status_code == 404
        assert theirs.content == none.content and b"here it is" not in theirs.content
        for headers in ({}, {"Authorization": "Bearer garbage"}):
            anonymous = await site.client.get(url(site.thread_id, fmt), headers=headers)
            assert anonymous.status_code == 401
    for crafted in ("..", "%2e%2e%2fusers", "a b", "x" * 200):
        response = await site.client.get(f"/filelayer/export/{crafted}", headers=bob)
        assert b"here it is" not in response.content, crafted
        assert response.headers.get("content-type") != "application/zip", crafted
    # the author asking for a format that does not exist learns only that
    bad = await site.client.get(url(site.thread_id, "pdf"), headers=as_user("alice"))
    assert bad.status_code == 400


@needs_thread_sharing()
async def test_a_shared_thread_is_exported_to_logged_in_users(site: Site) -> None:
    bob = as_user("bob")
    assert (await site.client.get(url(site.thread_id), headers=bob)).status_code == 404
    share = await site.client.put(
        "/project/thread/share",
        json={"threadId": site.thread_id, "isShared": True},
        headers=as_user("alice"),
    )
    assert share.status_code == 200, share.text
    assert (await site.client.get(url(site.thread_id), headers=bob)).status_code == 200
    assert (await site.client.get(url(site.thread_id))).status_code == 401


async def test_the_route_is_ahead_of_chainlit_catch_all(site: Site) -> None:
    names = [getattr(r, "name", None) for r in site.app.router.routes]
    assert names.count("filelayer_export") == 1
    assert export_url(site.thread_id, "html") == url(site.thread_id, "html")
    index = json.dumps(names)
    assert index  # the route answered above, so it is before the catch-all
    assert zip_bundle  # the helper the route uses is public for apps' own routes


@pytest.mark.parametrize("fmt", ["markdown", "html"])
async def test_a_thread_the_export_cannot_render_gets_a_clear_answer(site: Site, fmt: str) -> None:
    """A table element nested beyond any reader's depth (a damaged or hand-made file)
    made the route raise, which a server answers with a bare 500; it answers 422 with
    what to do, and the app goes on serving."""
    steps = (await site.layer.get_thread(site.thread_id))["steps"]
    site.layer.store.put_element(
        site.thread_id,
        {"id": "deep-table", "type": "dataframe", "name": "t", "forId": steps[0]["id"]},
        b"[" * 200_000,
    )
    site.layer.store.forget_cached()
    response = await site.client.get(url(site.thread_id, fmt), headers=as_user("alice"))
    assert response.status_code == 422, response.text
    assert "verify" in response.text


def test_the_export_route_comes_with_the_data_layer() -> None:
    """An app set up as the README says (it imports ``FileDataLayer`` and nothing else of
    filelayer) serves the export route the docs describe: it was registered only when
    the app imported ``filelayer.chainlit.export_route`` itself, and otherwise Chainlit's
    catch-all answered the export URL with the UI's page."""
    import subprocess
    import sys

    from tests.support.processes import subprocess_env

    script = (
        "from filelayer import FileDataLayer\n"
        "import filelayer.chainlit.datalayer\n"
        "from filelayer.chainlit import serve\n"
        "print(' '.join(r.name for r in serve._extra_routes))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=subprocess_env()
    )
    assert done.returncode == 0, done.stderr
    assert "filelayer_export" in done.stdout.split()


async def test_a_large_file_is_sent_without_the_server_holding_the_zip(
    site: Site, tmp_path: Path
) -> None:
    """The zip was built in memory, whole, for every request: a user who uploads a large
    file and asks for the export a few times at once made the server hold it once per
    request. It is built in a temporary file past a few megabytes and sent from there
    in pieces (the answer is read here by a bare ASGI call that keeps nothing of it in
    memory: only the server's own allocations count)."""
    import os
    import tracemalloc

    size = 24 << 20
    data = os.urandom(size)  # random: the zip is as large as the file
    steps = (await site.layer.get_thread(site.thread_id))["steps"]
    site.layer.store.put_element(
        site.thread_id,
        {"id": "big", "type": "file", "name": "big.bin", "forId": steps[0]["id"]},
        data,
    )
    received = tmp_path / "answer.zip"
    headers = [(b"host", b"testserver")]
    headers += [(k.lower().encode(), v.encode()) for k, v in as_user("alice").items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": f"/filelayer/export/{site.thread_id}",
        "raw_path": f"/filelayer/export/{site.thread_id}".encode(),
        "root_path": "",
        "query_string": b"format=markdown",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    start: dict[str, Any] = {}
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)  # the client stays until the answer is sent
        return {"type": "http.disconnect"}

    with received.open("wb") as sink:

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                sink.write(message.get("body", b""))

        del data
        tracemalloc.start()
        try:
            await site.app(scope, receive, send)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert start["status"] == 200
    answer_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    assert answer_headers["content-length"] == str(received.stat().st_size)
    with zipfile.ZipFile(received) as members:
        [name] = [n for n in members.namelist() if n.endswith("big.bin")]
        assert members.getinfo(name).file_size == size
        assert members.testzip() is None
    assert peak < size // 2, f"the server held {peak >> 20} MiB for a {size >> 20} MiB file"
