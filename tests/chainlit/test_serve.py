"""The element route, over HTTP, inside Chainlit's real FastAPI app.

Every request goes through ``chainlit.server.app`` (Chainlit's middleware, its router
with the catch-all route, its authentication) to filelayer's route, with a
``FileDataLayer`` on a temporary root as Chainlit's data layer. The last test starts
``chainlit run --root-path`` for real.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest

pytest.importorskip("chainlit")
httpx = pytest.importorskip("httpx")

from tests.support.apps import chainlit_running  # noqa: E402
from tests.support.layer import needs_thread_sharing  # noqa: E402
from tests.support.processes import REPO, subprocess_env  # noqa: E402

SECRET = "serve-test-secret-" + "k" * 40
USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}
OUTSIDE = b"TOP SECRET: this file lies outside the archive root"


def png(width: int = 3, height: int = 2) -> bytes:
    """A valid RGB PNG, so that the bytes served are an image a browser would decode."""
    rows = b"".join(
        b"\x00" + b"".join(bytes([x * 60 % 256, y * 90 % 256, 200]) for x in range(width))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PNG = png()
VIDEO = bytes(range(256)) * 40  # 10,240 bytes: room for ranges


async def password_auth(username: str, password: str) -> Any:
    from chainlit.user import User

    if USERS.get(username) == password:
        return User(identifier=username, metadata={"provider": "credentials"})
    return None


@dataclass
class Site:
    client: Any  # httpx.AsyncClient on Chainlit's app
    app: Any
    layer: Any
    root: Path
    tmp: Path
    thread_id: str
    image_id: str
    video_id: str

    def url(self, element_id: str, thread_id: str | None = None) -> str:
        return f"/filelayer/elements/{thread_id or self.thread_id}/{element_id}"


def token(identifier: str) -> str:
    from chainlit.auth import create_jwt
    from chainlit.user import User

    return str(create_jwt(User(identifier=identifier, metadata={"provider": "credentials"})))


def as_user(identifier: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(identifier)}"}


async def new_thread(layer: Any, author: str, *, name: str = "a thread") -> str:
    from chainlit.user import User

    user = await layer.create_user(User(identifier=author))
    thread_id = str(uuid.uuid4())
    await layer.update_thread(thread_id, name=name, user_id=user.id)
    await layer.create_step(
        {
            "id": f"{thread_id}-m1",
            "threadId": thread_id,
            "type": "assistant_message",
            "name": "Assistant",
            "output": "here it is",
            "createdAt": "2026-11-25T10:00:00.000000Z",
        }
    )
    return thread_id


async def add_element(layer: Any, thread_id: str, kind: str, **fields: Any) -> str:
    import chainlit.element as elements

    cls = {"image": elements.Image, "file": elements.File, "pdf": elements.Pdf}[kind]
    mime = fields.pop("mime", None)
    element = cls(thread_id=thread_id, for_id=f"{thread_id}-m1", display="inline", **fields)
    if mime is not None:
        element.mime = mime
    await layer.create_element(element)
    return str(element.id)


@pytest.fixture
async def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Site]:
    import chainlit.data as chainlit_data
    import chainlit.server as server
    from chainlit.config import config
    from chainlit.context import init_http_context

    from filelayer import FileDataLayer

    monkeypatch.setenv("CHAINLIT_AUTH_SECRET", SECRET)
    monkeypatch.delenv("CHAINLIT_ROOT_PATH", raising=False)
    monkeypatch.delenv("CHAINLIT_PARENT_ROOT_PATH", raising=False)
    monkeypatch.setattr(config.code, "password_auth_callback", password_auth)
    monkeypatch.setattr(config.code, "on_shared_thread_view", None, raising=False)
    root = tmp_path / "chats"
    layer = FileDataLayer(root)
    # What Chainlit does with the app's @cl.data_layer, without the deprecation path.
    monkeypatch.setattr(chainlit_data, "_data_layer", layer)
    monkeypatch.setattr(chainlit_data, "_data_layer_initialized", True)
    init_http_context()

    thread_id = await new_thread(layer, "alice")
    image_id = await add_element(layer, thread_id, "image", name="pic.png", content=PNG)
    video_id = await add_element(
        layer, thread_id, "file", name="clip.mp4", content=VIDEO, mime="video/mp4"
    )
    (tmp_path / "secret.txt").write_bytes(OUTSIDE)

    transport = httpx.ASGITransport(app=server.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield Site(client, server.app, layer, root, tmp_path, thread_id, image_id, video_id)
    await layer.close()


async def raw_get(app: Any, raw_path: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    """Send one request straight to the ASGI app, with the path exactly as given:
    ``raw_path`` as it would cross the wire, ``path`` percent-decoded as a server
    (uvicorn) decodes it. HTTP clients normalise ``..`` away; attackers do not."""
    path = unquote(raw_path.decode("latin-1"))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": raw_path,
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        + [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    status = 0
    body = bytearray()
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    await app(scope, receive, send)
    return status, bytes(body)


# -- the author --------------------------------------------------------------------


async def test_the_author_gets_the_exact_bytes_with_the_right_headers(site: Site) -> None:
    thread = await site.layer.get_thread(site.thread_id)
    urls = {e["id"]: e["url"] for e in thread["elements"]}
    assert urls[site.image_id] == site.url(site.image_id)

    response = await site.client.get(urls[site.image_id], headers=as_user("alice"))
    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-length"] == str(len(PNG))
    assert response.headers["content-disposition"] == (
        "inline; filename=\"pic.png\"; filename*=UTF-8''pic.png"
    )
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["cache-control"].startswith("private")
    assert response.headers["etag"].startswith('"') and len(response.headers["etag"]) > 10
    stored = site.root / "threads" / site.thread_id / "elements" / f"{site.image_id}.png"
    assert response.headers["last-modified"] == formatdate(stored.stat().st_mtime, usegmt=True)

    head = await site.client.head(urls[site.image_id], headers=as_user("alice"))
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(PNG))
    assert head.headers["etag"] == response.headers["etag"]


async def test_chainlit_login_cookie_is_accepted(site: Site) -> None:
    login = await site.client.post("/login", data={"username": "alice", "password": USERS["alice"]})
    assert login.status_code == 200, login.text
    cookie = login.cookies.get("access_token")
    assert cookie
    site.client.cookies.clear()
    response = await site.client.get(
        site.url(site.image_id), headers={"Cookie": f"access_token={cookie}"}
    )
    assert response.status_code == 200
    assert response.content == PNG


async def test_chainlit_own_routes_hand_out_the_same_urls(site: Site) -> None:
    headers = as_user("alice")
    resumed = await site.client.get(f"/project/thread/{site.thread_id}", headers=headers)
    assert resumed.status_code == 200, resumed.text
    urls = {e["id"]: e["url"] for e in resumed.json()["elements"]}
    assert urls == {
        site.image_id: site.url(site.image_id),
        site.video_id: site.url(site.video_id),
    }
    element = await site.client.get(
        f"/project/thread/{site.thread_id}/element/{site.video_id}", headers=headers
    )
    assert element.status_code == 200, element.text
    assert element.json()["url"] == site.url(site.video_id)
    fetched = await site.client.get(element.json()["url"], headers=headers)
    assert fetched.content == VIDEO
    assert fetched.headers["content-type"] == "video/mp4"


async def test_an_element_with_only_an_external_url_keeps_it(site: Site) -> None:
    import chainlit.element as elements

    remote = elements.Image(
        name="remote.png", url="https://example.com/remote.png", thread_id=site.thread_id
    )
    await site.layer.create_element(remote)
    got = await site.layer.get_element(site.thread_id, remote.id)
    assert got["url"] == "https://example.com/remote.png"
    response = await site.client.get(site.url(remote.id), headers=as_user("alice"))
    assert response.status_code == 404


# -- everyone else ------------------------------------------------------------------


async def test_another_user_gets_404_exactly_as_for_a_missing_thread(site: Site) -> None:
    bob = as_user("bob")
    existing = await site.client.get(site.url(site.image_id), headers=bob)
    missing_thread = await site.client.get(
        site.url(site.image_id, thread_id=str(uuid.uuid4())), headers=bob
    )
    missing_element = await site.client.get(site.url(str(uuid.uuid4())), headers=bob)
    for response in (existing, missing_thread, missing_element):
        assert response.status_code == 404
        assert response.content == existing.content
        assert PNG not in response.content
    assert set(existing.headers) == set(missing_thread.headers)
    # The author may learn that an element is missing: still a plain 404.
    gone = await site.client.get(site.url(str(uuid.uuid4())), headers=as_user("alice"))
    assert gone.status_code == 404


async def test_without_a_valid_token_the_answer_is_401_whether_or_not_it_exists(
    site: Site,
) -> None:
    import jwt

    forged = jwt.encode({"identifier": "alice", "metadata": {}}, "not-the-secret" * 3)
    attempts = [
        {},
        {"Authorization": f"Bearer {forged}"},
        {"Authorization": "Bearer garbage"},
        {"Authorization": f"Basic {token('alice')}"},
        {"Cookie": "access_token=garbage"},
    ]
    answers = set()
    for headers in attempts:
        for url in (
            site.url(site.image_id),
            site.url(site.image_id, thread_id=str(uuid.uuid4())),
            site.url(str(uuid.uuid4())),
        ):
            response = await site.client.get(url, headers=headers)
            assert response.status_code == 401, (headers, url)
            assert response.headers["www-authenticate"] == "Bearer"
            answers.add(response.content)
    assert len(answers) == 1
    assert PNG not in answers.pop()


@needs_thread_sharing()
async def test_a_thread_shared_from_chainlit_is_readable_by_logged_in_users(site: Site) -> None:
    """Chainlit's share page answers 401 to anonymous visitors of an app with login;
    the element route follows the same rule."""
    url = site.url(site.image_id)
    assert (await site.client.get(url, headers=as_user("bob"))).status_code == 404
    assert (await site.client.get(url)).status_code == 401

    share = await site.client.put(
        "/project/thread/share",
        json={"threadId": site.thread_id, "isShared": True},
        headers=as_user("alice"),
    )
    assert share.status_code == 200, share.text
    manifest = json.loads((site.root / "threads" / site.thread_id / "thread.json").read_text())
    assert manifest["metadata"]["is_shared"] is True

    response = await site.client.get(url, headers=as_user("bob"))
    assert response.status_code == 200
    assert response.content == PNG
    for headers in ({}, {"Authorization": "Bearer garbage"}):
        assert (await site.client.get(url, headers=headers)).status_code == 401, headers

    unshare = await site.client.put(
        "/project/thread/share",
        json={"threadId": site.thread_id, "isShared": False},
        headers=as_user("alice"),
    )
    assert unshare.status_code == 200, unshare.text
    assert (await site.client.get(url, headers=as_user("bob"))).status_code == 404
    assert (await site.client.get(url)).status_code == 401
    assert (await site.client.get(url, headers=as_user("alice"))).status_code == 200


async def test_the_app_on_shared_thread_view_decides_too(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chainlit.config import config

    seen: list[tuple[str, str | None]] = []

    async def only_carol(thread: Any, viewer: Any) -> bool:
        seen.append((thread["id"], getattr(viewer, "identifier", None)))
        return getattr(viewer, "identifier", None) == "carol"

    monkeypatch.setattr(config.code, "on_shared_thread_view", only_carol)
    url = site.url(site.image_id)
    assert (await site.client.get(url, headers=as_user("carol"))).content == PNG
    assert (await site.client.get(url, headers=as_user("bob"))).status_code == 404
    assert (await site.client.get(url)).status_code == 401
    # Anonymous visitors are refused before the hook is asked.
    assert (site.thread_id, "carol") in seen and (site.thread_id, None) not in seen

    async def broken(thread: Any, viewer: Any) -> bool:
        raise RuntimeError("the app's hook failed")

    monkeypatch.setattr(config.code, "on_shared_thread_view", broken)
    assert (await site.client.get(url, headers=as_user("carol"))).status_code == 404
    assert (await site.client.get(url, headers=as_user("alice"))).status_code == 200


# -- caching and ranges -------------------------------------------------------------


async def test_conditional_requests_answer_304_only_to_readers(site: Site) -> None:
    url = site.url(site.image_id)
    alice = as_user("alice")
    first = await site.client.get(url, headers=alice)
    etag, modified = first.headers["etag"], first.headers["last-modified"]

    again = await site.client.get(url, headers={**alice, "If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    weak = await site.client.get(url, headers={**alice, "If-None-Match": f'"x", W/{etag}'})
    assert weak.status_code == 304
    other = await site.client.get(url, headers={**alice, "If-None-Match": '"something-else"'})
    assert other.status_code == 200 and other.content == PNG

    since = await site.client.get(url, headers={**alice, "If-Modified-Since": modified})
    assert since.status_code == 304
    older = formatdate(time.time() - 10 * 365 * 86400, usegmt=True)
    stale = await site.client.get(url, headers={**alice, "If-Modified-Since": older})
    assert stale.status_code == 200 and stale.content == PNG
    junk = await site.client.get(url, headers={**alice, "If-Modified-Since": "yesterday"})
    assert junk.status_code == 200
    for overflowing in (  # dates the parser cannot hold: ignored like any junk, not a 500
        "Mon, 01 Jan 2020 00:00:00 +99999999999999999999",
        "Mon, 01 Jan 99999999999 00:00:00 GMT",
    ):
        huge = await site.client.get(url, headers={**alice, "If-Modified-Since": overflowing})
        assert huge.status_code == 200 and huge.content == PNG
    # If-None-Match wins over If-Modified-Since (RFC 9110).
    both = await site.client.get(
        url, headers={**alice, "If-None-Match": '"other"', "If-Modified-Since": modified}
    )
    assert both.status_code == 200

    # A validator never bypasses the permission check.
    assert (
        await site.client.get(url, headers={**as_user("bob"), "If-None-Match": etag})
    ).status_code == 404
    assert (await site.client.get(url, headers={"If-None-Match": etag})).status_code == 401


async def test_a_replaced_file_gets_a_new_etag(site: Site) -> None:
    url = site.url(site.image_id)
    alice = as_user("alice")
    before = (await site.client.get(url, headers=alice)).headers["etag"]
    stored = site.root / "threads" / site.thread_id / "elements" / f"{site.image_id}.png"
    stored.write_bytes(png(4, 4))  # edited by hand, same record
    after = await site.client.get(url, headers={**alice, "If-None-Match": before})
    assert after.status_code == 200
    assert after.content == png(4, 4)
    assert after.headers["etag"] != before


async def test_range_requests_for_seeking(site: Site) -> None:
    url = site.url(site.video_id)
    alice = as_user("alice")
    size = len(VIDEO)

    middle = await site.client.get(url, headers={**alice, "Range": "bytes=100-199"})
    assert middle.status_code == 206
    assert middle.content == VIDEO[100:200]
    assert middle.headers["content-range"] == f"bytes 100-199/{size}"
    assert middle.headers["content-length"] == "100"
    assert middle.headers["content-type"] == "video/mp4"

    tail = await site.client.get(url, headers={**alice, "Range": "bytes=-16"})
    assert tail.status_code == 206 and tail.content == VIDEO[-16:]
    assert tail.headers["content-range"] == f"bytes {size - 16}-{size - 1}/{size}"

    rest = await site.client.get(url, headers={**alice, "Range": f"bytes={size - 10}-"})
    assert rest.status_code == 206 and rest.content == VIDEO[-10:]

    beyond = await site.client.get(url, headers={**alice, "Range": f"bytes={size}-"})
    assert beyond.status_code == 416
    # Starlette 0.x (which Chainlit 2.0 installs) leaves the unit out of a 416's range.
    import starlette

    unit = "" if starlette.__version__.startswith("0.") else "bytes "
    assert beyond.headers["content-range"] == f"{unit}*/{size}"

    etag = middle.headers["etag"]
    fresh = await site.client.get(url, headers={**alice, "Range": "bytes=0-9", "If-Range": etag})
    if unit:
        assert fresh.status_code == 206 and fresh.content == VIDEO[:10]
    else:  # Starlette 0.x matches If-Range against an ETag of its own: the whole file,
        # which HTTP allows (a client resuming simply downloads again).
        assert fresh.status_code == 200 and fresh.content == VIDEO
    changed = await site.client.get(
        url, headers={**alice, "Range": "bytes=0-9", "If-Range": '"an-old-version"'}
    )
    assert changed.status_code == 200 and changed.content == VIDEO

    assert (
        await site.client.get(url, headers={**as_user("bob"), "Range": "bytes=0-9"})
    ).status_code == 404
    assert (await site.client.get(url, headers={"Range": "bytes=0-9"})).status_code == 401


# -- what the headers say -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "mime", "content_type", "disposition"),
    [
        ("page.html", "text/html", "text/html; charset=utf-8", "attachment"),
        ("page.html", "TEXT/HTML; charset=utf-8", "text/html; charset=utf-8", "attachment"),
        ("logo.svg", "image/svg+xml", "image/svg+xml", "attachment"),
        ("tool.js", "application/javascript", "application/javascript", "attachment"),
        ("data.bin", "not a type\r\nX-Injected: yes", "application/octet-stream", "attachment"),
        ("notes.txt", None, "text/plain; charset=utf-8", "inline"),
        ("song.ogg", "audio/ogg", "audio/ogg", "inline"),
        ("doc.pdf", "application/pdf", "application/pdf", "inline"),
    ],
)
async def test_content_type_and_disposition(
    site: Site, name: str, mime: str | None, content_type: str, disposition: str
) -> None:
    element_id = await add_element(
        site.layer,
        site.thread_id,
        "file",
        name=name,
        content=b"<script>alert(1)</script>",
        mime=mime,
    )
    response = await site.client.get(site.url(element_id), headers=as_user("alice"))
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["content-disposition"].startswith(f"{disposition}; ")
    assert "x-injected" not in response.headers
    if content_type != "application/pdf":
        assert response.headers["content-security-policy"] == "sandbox"


@pytest.mark.parametrize(
    ("name", "plain", "encoded"),
    [
        ("résumé 2026.pdf", "r_sum_ 2026.pdf", "r%C3%A9sum%C3%A9%202026.pdf"),
        ('evil".pdf\r\nSet-Cookie: x=1', "evil.pdfSet-Cookie: x=1", None),
        ("../../etc/passwd", "etcpasswd", "etcpasswd"),
        ("..\\..\\boot.ini", "boot.ini", "boot.ini"),
        ("a;b=c.pdf", "ab=c.pdf", None),
        ("100%.pdf", "100_.pdf", "100%25.pdf"),
    ],
)
async def test_the_download_name_is_the_original_made_safe(
    site: Site, name: str, plain: str, encoded: str | None
) -> None:
    element_id = await add_element(
        site.layer,
        site.thread_id,
        "pdf",
        name=name,
        content=b"%PDF-1.4\n%%EOF\n",
        mime="application/pdf",
    )
    response = await site.client.get(site.url(element_id), headers=as_user("alice"))
    assert response.status_code == 200
    header = response.headers["content-disposition"]
    assert header.startswith(f"inline; filename=\"{plain}\"; filename*=UTF-8''")
    if encoded is not None:
        assert header.endswith(f"''{encoded}")
    assert "set-cookie" not in response.headers
    assert "\r" not in header and "\n" not in header


# -- hostile paths and records ------------------------------------------------------


def crafted_paths(site: Site) -> list[str]:
    t, e = site.thread_id, site.image_id
    secret = str(site.tmp / "secret.txt")
    return [
        f"/filelayer/elements/{t}/../../../secret.txt",
        f"/filelayer/elements/{t}/{e}/../../../../secret.txt",
        f"/filelayer/elements/{t}/%2e%2e%2f%2e%2e%2f%2e%2e%2fsecret.txt",
        f"/filelayer/elements/{t}/..%2F..%2F..%2Fsecret.txt",
        "/filelayer/elements/%2e%2e/%2e%2e",
        f"/filelayer/elements/..%2F..%2F..%2F/{e}",
        f"/filelayer/elements/{t}/{quote(secret, safe='')}",
        f"/filelayer/elements/{t}/{secret}",
        f"/filelayer/elements/{t}//etc/passwd",
        "/filelayer/elements//etc/passwd",
        f"/filelayer/elements/{t}/{e}%00.png",
        f"/filelayer/elements/{t}%00/{e}",
        f"/filelayer/elements/{t}/..%5C..%5C..%5Csecret.txt",
        f"/filelayer/elements/{t}/..\\..\\..\\secret.txt",
        f"/filelayer/elements/{t}/thread.json",
        f"/filelayer/elements/{t}/steps.jsonl",
        f"/filelayer/elements/{t}/{e}.png",
        f"/filelayer/elements/{t}/elements",
        f"/filelayer/elements/{t}/.",
        f"/filelayer/elements/./{e}",
        f"/filelayer/elements/{t}/{e}/extra",
        f"/filelayer/elements/{t}",
        "/filelayer/elements/",
        f"/filelayer/elements/{'a' * 300}/{e}",
    ]


async def test_crafted_paths_never_reach_a_file(site: Site) -> None:
    alice = {"Authorization": f"Bearer {token('alice')}"}
    for path in crafted_paths(site):
        raw = path.replace("\\", "%5C").encode()
        status, body = await raw_get(site.app, raw, alice)
        assert status in (401, 404), (path, status)
        assert OUTSIDE not in body and PNG not in body, path
        assert b"<html" not in body.lower(), f"{path}: Chainlit's page answered instead"
        # and as an HTTP client sends it (which normalises dot segments)
        response = await site.client.get(path, headers=alice)
        assert OUTSIDE not in response.content, path
        if response.url.path.startswith("/filelayer/elements/"):
            assert response.status_code in (401, 404), (path, response.status_code)


@pytest.mark.parametrize(
    "evil",
    [
        "../../../secret.txt",
        "elements/../../../../secret.txt",
        "SECRET",  # replaced by the absolute path of the secret
        "elements/..",
        "elements/.",
        "elements/",
        "elements\\..\\..\\..\\..\\secret.txt",
        "elements/sub/../../../../../secret.txt",
        "steps.jsonl",
        "thread.json",
    ],
)
async def test_a_hand_edited_record_cannot_point_outside(site: Site, evil: str) -> None:
    if evil == "SECRET":
        evil = str(site.tmp / "secret.txt")
    journal = site.root / "threads" / site.thread_id / "steps.jsonl"
    text = journal.read_text("utf-8")
    original = f'"file":"elements/{site.image_id}.png"'
    assert original in text
    journal.write_text(text.replace(original, f'"file":{json.dumps(evil)}'), "utf-8")
    response = await site.client.get(site.url(site.image_id), headers=as_user("alice"))
    assert response.status_code == 404
    assert OUTSIDE not in response.content and PNG not in response.content


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links here")
async def test_a_symbolic_link_in_the_archive_is_not_followed(site: Site) -> None:
    alice = as_user("alice")
    # An element file replaced by a link to a file outside the root.
    stored = site.root / "threads" / site.thread_id / "elements" / f"{site.image_id}.png"
    stored.unlink()
    stored.symlink_to(site.tmp / "secret.txt")
    response = await site.client.get(site.url(site.image_id), headers=alice)
    assert response.status_code == 404
    assert OUTSIDE not in response.content

    # A whole thread directory that is a link to a directory outside the root.
    other = await new_thread(site.layer, "alice")
    element_id = await add_element(site.layer, other, "file", name="x.txt", content=OUTSIDE)
    assert (await site.client.get(site.url(element_id, other), headers=alice)).status_code == 200
    outside_dir = site.tmp / "outside-thread"
    shutil.move(site.root / "threads" / other, outside_dir)
    (site.root / "threads" / other).symlink_to(outside_dir, target_is_directory=True)
    response = await site.client.get(site.url(element_id, other), headers=alice)
    assert response.status_code == 404
    assert OUTSIDE not in response.content


# -- where the route sits -----------------------------------------------------------


async def test_the_route_is_ahead_of_chainlit_catch_all(site: Site) -> None:
    routes = site.app.router.routes
    names = [getattr(r, "name", None) for r in routes]
    ours = names.index("filelayer_element")
    from filelayer.chainlit.serve import _has_catch_all

    first_catch_all = next(i for i, r in enumerate(routes) if _has_catch_all(r))
    assert ours < first_catch_all
    # Chainlit still answers its own pages...
    page = await site.client.get("/some/page")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    # ...and our prefix answers JSON, never the page.
    ours_response = await site.client.get("/filelayer/elements/x/y")
    assert ours_response.status_code == 401
    assert ours_response.headers["content-type"] == "application/json"
    assert ours_response.json() == {"detail": "Not authenticated"}


async def test_a_second_data_layer_does_not_add_the_route_twice(site: Site) -> None:
    from filelayer import FileDataLayer

    again = FileDataLayer(site.tmp / "other-root")
    names = [getattr(r, "name", None) for r in site.app.router.routes]
    assert names.count("filelayer_element") == 1
    await again.close()


async def test_mounted_under_a_path_the_urls_and_route_follow(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mount_chainlit(app, target, path="/chat")`` sets CHAINLIT_ROOT_PATH and mounts
    Chainlit's app under /chat: the URLs handed to the UI must carry the prefix."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    monkeypatch.setenv("CHAINLIT_ROOT_PATH", "/chat")
    thread = await site.layer.get_thread(site.thread_id)
    url = next(e["url"] for e in thread["elements"] if e["id"] == site.image_id)
    assert url == f"/chat/filelayer/elements/{site.thread_id}/{site.image_id}"

    parent = Starlette(routes=[Mount("/chat", app=site.app)])
    transport = httpx.ASGITransport(app=parent)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get(url, headers=as_user("alice"))
        assert response.status_code == 200
        assert response.content == PNG
        assert (await client.get(url)).status_code == 401
        unprefixed = await client.get(site.url(site.image_id), headers=as_user("alice"))
        assert unprefixed.status_code == 404


# -- chainlit run --root-path, for real ----------------------------------------------


@pytest.fixture
def running_app(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The example app under ``chainlit run --root-path /chat`` on a temporary root."""
    work = tmp_path / "app"
    shutil.copytree(
        REPO / "examples", work, ignore=shutil.ignore_patterns("chats", ".files", "exported")
    )
    root = tmp_path / "chats"
    env = subprocess_env(FILELAYER_ROOT=str(root), CHAINLIT_AUTH_SECRET=SECRET)
    env.pop("CHAINLIT_ROOT_PATH", None)
    log = tmp_path / "chainlit.log"
    with chainlit_running(
        work, env, log, "--root-path", "/chat", health_path="/chat/auth/config"
    ) as url:
        yield url, root


@needs_thread_sharing()  # the example app registers on_shared_thread_view
async def test_chainlit_run_with_a_root_path(
    running_app: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from chainlit.context import init_http_context

    from filelayer import FileDataLayer

    base, root = running_app
    monkeypatch.chdir(tmp_path)
    init_http_context()
    seeding = FileDataLayer(root, serve_elements=False)  # the running app's archive
    thread_id = await new_thread(seeding, "admin")
    image_id = await add_element(seeding, thread_id, "image", name="pic.png", content=PNG)
    await seeding.close()

    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        login = await client.post("/chat/login", data={"username": "admin", "password": "admin"})
        assert login.status_code == 200, login.text
        resumed = await client.get(f"/chat/project/thread/{thread_id}")
        assert resumed.status_code == 200, resumed.text
        [element] = resumed.json()["elements"]
        assert element["url"] == f"/chat/filelayer/elements/{thread_id}/{image_id}"
        response = await client.get(element["url"])
        assert response.status_code == 200
        assert response.content == PNG
        assert response.headers["content-type"] == "image/png"
        unprefixed = await client.get(f"/filelayer/elements/{thread_id}/{image_id}")
        assert PNG not in unprefixed.content
        client.cookies.clear()
        assert (await client.get(element["url"])).status_code == 401
