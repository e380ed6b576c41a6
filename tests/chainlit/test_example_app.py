"""The example app, run for real: `chainlit run examples/app.py` on a temporary root.

A user logs in over HTTP, chats over Chainlit's own socket.io protocol, and the thread is
then read back through Chainlit's REST routes (the sidebar's list, the resume call) and the
element files through filelayer's route, as the browser does.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

import pytest

pytest.importorskip("chainlit")
pytest.importorskip("socketio")
httpx = pytest.importorskip("httpx")

from tests.support.apps import App  # noqa: E402


def login(app: App, username: str) -> str:
    response = httpx.post(
        app.url + "/login", data={"username": username, "password": username}, timeout=60
    )
    assert response.status_code == 200, response.text
    token = response.cookies.get("access_token")
    assert token, response.headers
    return token


async def chat(app: App, token: str, text: str) -> str:
    """Send one message in a new session; return the thread id once the answer is done."""
    import socketio

    client = socketio.AsyncClient(reconnection=False)
    done = asyncio.Event()
    thread: dict[str, str] = {}

    @client.on("first_interaction")
    async def first_interaction(data: dict[str, Any]) -> None:
        thread["id"] = data["thread_id"]

    @client.on("task_end")
    async def task_end(*_: Any) -> None:
        if thread:
            done.set()

    await client.connect(
        app.url,
        socketio_path="/ws/socket.io",
        headers={"Cookie": f"access_token={token}"},
        auth={"sessionId": str(uuid.uuid4()), "clientType": "webapp"},
        transports=["websocket"],
        # The client waits 1 s for Chainlit's connect handler by default: on a loaded
        # machine the handler can take longer, and the connection fails.
        wait_timeout=60,
    )
    try:
        await client.emit("connection_successful")
        await client.emit(
            "client_message",
            {
                "message": {
                    "id": str(uuid.uuid4()),
                    "threadId": "",
                    "name": "user",
                    "type": "user_message",
                    "output": text,
                    "createdAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                },
                "fileReferences": [],
            },
        )
        await asyncio.wait_for(done.wait(), timeout=60)
    finally:
        await client.disconnect()
    return thread["id"]


def get_thread(app: App, token: str, thread_id: str) -> httpx.Response:
    return httpx.get(
        f"{app.url}/project/thread/{thread_id}", cookies={"access_token": token}, timeout=60
    )


def wait_for(predicate: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


async def test_a_chat_is_persisted_listed_resumed_and_its_elements_served(
    example_app: App,
) -> None:
    app = example_app
    token = login(app, "admin")
    thread_id = await chat(app, token, "Show me EVERYTHING please")

    def listed() -> list[dict[str, Any]]:
        response = httpx.post(
            app.url + "/project/threads",
            json={"pagination": {"first": 20}, "filter": {}},
            cookies={"access_token": token},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        return [t for t in response.json()["data"] if t["id"] == thread_id]

    [summary] = wait_for(listed)
    assert summary["name"] == "Show me EVERYTHING please"

    def complete() -> dict[str, Any] | None:
        thread = get_thread(app, token, thread_id).json()
        return thread if len(thread["elements"]) >= 7 else None

    thread = wait_for(complete)
    assert thread, get_thread(app, token, thread_id).text
    assert thread["userIdentifier"] == "admin"
    by_type = {s["type"]: s for s in thread["steps"]}
    assert by_type["user_message"]["output"] == "Show me EVERYTHING please"
    assert by_type["tool"]["name"] == "search_notes"
    assert by_type["tool"]["output"].startswith("Found 4 keyword(s)")
    assert "Turn 1" in by_type["assistant_message"]["output"]
    ids = [s["id"] for s in thread["steps"]]
    for step in thread["steps"]:
        if step["parentId"] in ids:
            assert ids.index(step["parentId"]) < ids.index(step["id"])

    kinds = sorted(e["type"] for e in thread["elements"])
    assert kinds == sorted(["image", "pdf", "file", "text", "custom", "plotly", "dataframe"])
    cookies = {"access_token": token}
    for element in thread["elements"]:
        assert element["url"], element
        response = httpx.get(app.url + element["url"], cookies=cookies, timeout=60)
        assert response.status_code == 200, (element, response.status_code)
        if element["type"] == "image":
            assert response.content.startswith(b"\x89PNG")
            assert response.headers["content-type"] == "image/png"
        if element["type"] == "pdf":
            assert response.content.startswith(b"%PDF")
        if element["type"] == "custom":
            assert b'"count"' in response.content

    directory = app.root / "threads" / thread_id
    assert (directory / "thread.json").exists()
    assert len(list((directory / "elements").iterdir())) == 7

    # Another user can neither resume the thread nor fetch its files.
    guest = login(app, "guest")
    assert get_thread(app, guest, thread_id).status_code in (401, 403, 404)
    image = next(e for e in thread["elements"] if e["type"] == "image")
    assert (
        httpx.get(app.url + image["url"], cookies={"access_token": guest}, timeout=60).status_code
        == 404
    )
    assert httpx.get(app.url + image["url"], timeout=60).status_code == 401


async def test_deleting_from_the_ui_removes_the_directory(example_app: App) -> None:
    app = example_app
    token = login(app, "admin")
    thread_id = await chat(app, token, "hello")
    directory = app.root / "threads" / thread_id
    assert wait_for(lambda: (directory / "thread.json").exists())
    response = httpx.request(
        "DELETE",
        app.url + "/project/thread",
        json={"threadId": thread_id},
        cookies={"access_token": token},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert not directory.exists()
    assert get_thread(app, token, thread_id).status_code in (401, 404)
    assert os.path.exists(app.root / "deleted.jsonl")


async def test_the_element_route_speaks_http_properly(example_app: App) -> None:
    app = example_app
    token = login(app, "admin")
    thread_id = await chat(app, token, "everything, please")
    thread = wait_for(
        lambda: (lambda t: t if len(t["elements"]) >= 7 else None)(
            get_thread(app, token, thread_id).json()
        )
    )
    image = next(e for e in thread["elements"] if e["type"] == "image")
    notes = next(e for e in thread["elements"] if e["name"] == "notes.txt")
    cookies = {"access_token": token}
    url = app.url + image["url"]

    full = httpx.get(url, cookies=cookies, timeout=60)
    assert full.headers["content-type"] == "image/png"
    assert full.headers["x-content-type-options"] == "nosniff"
    assert full.headers["content-disposition"].startswith("inline")
    assert image["name"] in full.headers["content-disposition"]
    assert full.headers["accept-ranges"] == "bytes"
    etag, modified = full.headers["etag"], full.headers["last-modified"]

    part = httpx.get(url, cookies=cookies, headers={"Range": "bytes=0-3"}, timeout=60)
    assert part.status_code == 206
    assert part.content == full.content[:4]
    assert part.headers["content-range"] == f"bytes 0-3/{len(full.content)}"

    assert httpx.get(url, cookies=cookies, headers={"If-None-Match": etag}).status_code == 304
    assert (
        httpx.get(url, cookies=cookies, headers={"If-Modified-Since": modified}).status_code == 304
    )
    changed = httpx.get(url, cookies=cookies, headers={"If-None-Match": '"other"'})
    assert changed.status_code == 200

    download = httpx.get(app.url + notes["url"], cookies=cookies, timeout=60)
    assert download.status_code == 200 and download.content.startswith(b"Notes of turn")
    assert "notes.txt" in download.headers["content-disposition"]

    # Crafted paths and ids never reach a file, for the author either.
    base = f"{app.url}/filelayer/elements"
    for crafted in [
        f"{base}/{thread_id}/..%2F..%2Fusers",
        f"{base}/{thread_id}/%2e%2e",
        f"{base}/..%2F{thread_id}/{image['id']}",
        f"{base}/{thread_id}/{image['id']}%00",
        f"{base}/%2Fetc%2Fpasswd/x",
        f"{base}/{thread_id}/..\\..\\thread.json",
        f"{base}/{thread_id}/missing-element",
    ]:
        response = httpx.get(crafted, cookies=cookies, timeout=60)
        # A decoded slash no longer matches the route, and Chainlit's catch-all answers
        # with its HTML page; either way, never a file from the archive.
        served_page = response.status_code == 200 and response.headers["content-type"].startswith(
            "text/html"
        )
        assert served_page or response.status_code in (401, 404, 422), crafted
        assert "etag" not in response.headers, crafted
        assert b'"identifier"' not in response.content and b'"op":' not in response.content

    # Shared the way Chainlit shares threads: another user and a visitor may fetch it.
    guest = login(app, "guest")
    assert httpx.get(url, cookies={"access_token": guest}).status_code == 404
    shared = httpx.put(
        app.url + "/project/thread/share",
        json={"threadId": thread_id, "isShared": True},
        cookies=cookies,
        timeout=60,
    )
    assert shared.status_code == 200, shared.text
    assert httpx.get(url, cookies={"access_token": guest}).content == full.content
    assert httpx.get(url).status_code == 401  # shared means: with every logged-in user
