"""Elements: bytes copied at once into the thread directory, upserts, every field."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chainlit")

from chainlit.element import CustomElement, File, Image, Pdf, Text

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cf00000301010018dd8db40000000049454e44ae426082"
)


def element_files(root: Path, thread: str = "t1") -> list[Path]:
    directory = root / "threads" / thread / "elements"
    return sorted(directory.iterdir()) if directory.exists() else []


async def test_bytes_are_stored_and_served_with_their_fields(layer: Any, root: Path) -> None:
    image = Image(
        name="dot.png", content=PNG, display="inline", size="large", for_id="m1", thread_id="t1"
    )
    image.mime = "image/png"
    await layer.create_element(image)
    [path] = element_files(root)
    assert path.read_bytes() == PNG
    assert path.suffix == ".png"
    got = await layer.get_element("t1", image.id)
    assert got["id"] == image.id
    assert got["threadId"] == "t1"
    assert (got["type"], got["mime"], got["display"], got["size"]) == (
        "image",
        "image/png",
        "inline",
        "large",
    )
    assert (got["forId"], got["name"]) == ("m1", "dot.png")
    assert got["url"]  # served back from the thread directory
    assert "path" not in got and "content" not in got
    thread = await layer.get_thread("t1")
    assert [e["id"] for e in thread["elements"]] == [image.id]
    assert thread["elements"][0]["url"] == got["url"]


async def test_str_content_is_stored_as_utf8(layer: Any, root: Path) -> None:
    text = Text(name="notes", content="# Notes\nçà va ✓", for_id="m1", thread_id="t1")
    text.mime = "text/plain"
    await layer.create_element(text)
    [path] = element_files(root)
    assert path.read_text("utf-8") == "# Notes\nçà va ✓"


async def test_a_local_path_is_copied_at_once(layer: Any, root: Path, tmp_path: Path) -> None:
    source = tmp_path / "upload.pdf"
    payload = b"%PDF-1.4\n" + bytes(range(256)) * 40
    source.write_bytes(payload)
    pdf = Pdf(name="upload.pdf", path=str(source), page=2, for_id="m1", thread_id="t1")
    pdf.mime = "application/pdf"
    await layer.create_element(pdf)
    source.unlink()  # the session's files go away when it ends
    [path] = element_files(root)
    assert path.read_bytes() == payload
    got = await layer.get_element("t1", pdf.id)
    assert (got["type"], got["page"], got["mime"]) == ("pdf", 2, "application/pdf")
    record = (root / "threads" / "t1" / "steps.jsonl").read_text("utf-8")
    assert hashlib.sha256(payload).hexdigest() in record


async def test_an_url_only_element_keeps_its_url_and_has_no_file(layer: Any, root: Path) -> None:
    remote = File(name="report", url="https://example.com/report.csv", for_id="m1", thread_id="t1")
    await layer.create_element(remote)
    assert element_files(root) == []
    got = await layer.get_element("t1", remote.id)
    assert got["url"] == "https://example.com/report.csv"
    assert got["type"] == "file"


async def test_create_element_again_is_an_upsert(layer: Any, root: Path) -> None:
    custom = CustomElement(name="Counter", props={"count": 1}, for_id="m1", thread_id="t1")
    await layer.create_element(custom)
    custom.props = {"count": 2}
    await layer.create_element(custom)
    thread = await layer.get_thread("t1")
    assert [(e["id"], e["props"]) for e in thread["elements"]] == [(custom.id, {"count": 2})]
    assert thread["elements"][0]["type"] == "custom"
    assert len(element_files(root)) <= 1


async def test_delete_element_removes_record_and_file(layer: Any, root: Path) -> None:
    image = Image(name="x.png", content=PNG, for_id="m1", thread_id="t1")
    await layer.create_element(image)
    await layer.delete_element(image.id, "t1")
    assert await layer.get_element("t1", image.id) is None
    assert element_files(root) == []
    other = Image(name="y.png", content=PNG, for_id="m1", thread_id="t1")
    await layer.create_element(other)
    await layer.delete_element(other.id)  # without the thread id
    assert (await layer.get_thread("t1"))["elements"] == []


async def test_an_element_may_arrive_before_its_step_and_thread(layer: Any, user: Any) -> None:
    image = Image(name="early.png", content=PNG, for_id="later", thread_id="t9")
    await layer.create_element(image)
    await layer.create_step({"id": "later", "threadId": "t9", "type": "assistant_message"})
    await layer.update_thread("t9", user_id=user.id)
    thread = await layer.get_thread("t9")
    assert [e["forId"] for e in thread["elements"]] == ["later"]


async def test_get_element_of_the_wrong_thread_is_none(layer: Any) -> None:
    image = Image(name="x.png", content=PNG, for_id="m1", thread_id="t1")
    await layer.create_element(image)
    assert await layer.get_element("t2", image.id) is None
    assert await layer.get_element("t1", "missing") is None
