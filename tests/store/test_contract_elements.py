"""Elements: bytes copied at once into the thread directory, upserts, every field.

The contract of ``tests/support/drivers.py``: each test runs on ``ArchiveStore`` and
through ``FileDataLayer`` (which makes the element from Chainlit's ``Image``, ``File``,
``Text``, ``Pdf`` or ``CustomElement``)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from tests.support.drivers import Driver
from tests.support.layer import tree

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cf00000301010018dd8db40000000049454e44ae426082"
)


def element_files(root: Path, thread: str = "t1") -> list[Path]:
    directory = root / "threads" / thread / "elements"
    return sorted(directory.iterdir()) if directory.exists() else []


async def test_bytes_are_stored_and_served_with_their_fields(driver: Driver, root: Path) -> None:
    await driver.create_element(
        "e-dot",
        "t1",
        "m1",
        "dot.png",
        type="image",
        content=PNG,
        mime="image/png",
        display="inline",
        size="large",
    )
    [path] = element_files(root)
    assert path.read_bytes() == PNG
    assert path.suffix == ".png"
    got = await driver.get_element("t1", "e-dot")
    assert got["id"] == "e-dot"
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
    thread = await driver.get_thread("t1")
    assert [e["id"] for e in thread["elements"]] == ["e-dot"]
    assert thread["elements"][0]["url"] == got["url"]


async def test_str_content_is_stored_as_utf8(driver: Driver, root: Path) -> None:
    await driver.create_element(
        "e-notes", "t1", "m1", "notes", type="text", content="# Notes\nçà va ✓", mime="text/plain"
    )
    [path] = element_files(root)
    assert path.read_text("utf-8") == "# Notes\nçà va ✓"


async def test_a_local_path_is_copied_at_once(driver: Driver, root: Path, tmp_path: Path) -> None:
    source = tmp_path / "upload.pdf"
    payload = b"%PDF-1.4\n" + bytes(range(256)) * 40
    source.write_bytes(payload)
    await driver.create_element(
        "e-pdf", "t1", "m1", "upload.pdf", type="pdf", path=source, mime="application/pdf", page=2
    )
    source.unlink()  # the session's files go away when it ends
    [path] = element_files(root)
    assert path.read_bytes() == payload
    got = await driver.get_element("t1", "e-pdf")
    assert (got["type"], got["page"], got["mime"]) == ("pdf", 2, "application/pdf")
    record = (root / "threads" / "t1" / "steps.jsonl").read_text("utf-8")
    assert hashlib.sha256(payload).hexdigest() in record


async def test_an_url_only_element_keeps_its_url_and_has_no_file(
    driver: Driver, root: Path
) -> None:
    await driver.create_element(
        "e-remote", "t1", "m1", "report", type="file", url="https://example.com/report.csv"
    )
    assert element_files(root) == []
    got = await driver.get_element("t1", "e-remote")
    assert got["url"] == "https://example.com/report.csv"
    assert got["type"] == "file"


async def test_create_element_again_is_an_upsert(driver: Driver, root: Path) -> None:
    await driver.create_element("e-c", "t1", "m1", "Counter", type="custom", props={"count": 1})
    await driver.create_element("e-c", "t1", "m1", "Counter", type="custom", props={"count": 2})
    thread = await driver.get_thread("t1")
    assert [(e["id"], e["props"]) for e in thread["elements"]] == [("e-c", {"count": 2})]
    assert thread["elements"][0]["type"] == "custom"
    assert len(element_files(root)) <= 1


async def test_delete_element_removes_record_and_file(driver: Driver, root: Path) -> None:
    await driver.create_element("e-x", "t1", "m1", "x.png", type="image", content=PNG)
    await driver.delete_element("e-x", "t1")
    assert await driver.get_element("t1", "e-x") is None
    assert element_files(root) == []
    await driver.create_element("e-y", "t1", "m1", "y.png", type="image", content=PNG)
    await driver.delete_element("e-y")  # without the thread id
    assert (await driver.get_thread("t1"))["elements"] == []


async def test_an_element_may_arrive_before_its_step_and_thread(
    driver: Driver, alice: dict[str, str]
) -> None:
    await driver.create_element("e-early", "t9", "later", "early.png", type="image", content=PNG)
    await driver.create_step({"id": "later", "threadId": "t9", "type": "assistant_message"})
    await driver.update_thread("t9", user_id=alice["id"])
    thread = await driver.get_thread("t9")
    assert [e["forId"] for e in thread["elements"]] == ["later"]


async def test_get_element_of_the_wrong_thread_is_none(driver: Driver) -> None:
    await driver.create_element("e-x", "t1", "m1", "x.png", type="image", content=PNG)
    assert await driver.get_element("t2", "e-x") is None
    assert await driver.get_element("t1", "missing") is None


async def test_an_element_resent_under_another_extension_leaves_no_old_file(
    driver: Driver, root: Path
) -> None:
    """``e1.txt`` re-sent as ``e1.pdf``: the old bytes go once the new record is in (a
    deleted element's bytes must not stay behind, where git would keep them)."""
    await driver.create_element("e1", "t1", "m1", "report.txt", content=b"SECRET v1")
    await driver.create_element("e1", "t1", "m1", "report.pdf", content=b"%PDF v2")
    assert [p.name for p in element_files(root)] == ["e1.pdf"]
    got = await driver.get_element("t1", "e1")
    assert got["name"] == "report.pdf"
    await driver.delete_element("e1", "t1")
    assert element_files(root) == []


async def test_concurrent_resends_of_an_element_end_with_the_last_one(
    driver: Driver, root: Path
) -> None:
    """Chainlit sends a task list or a custom element again at each change, each send
    a task of its own: the sends of one element land in the order they were made, and
    the record always describes the bytes on the disk."""
    for round_ in range(40):
        element_id = f"tasks{round_}"
        sends = [
            asyncio.ensure_future(
                driver.create_element(
                    element_id,
                    "t1",
                    "m1",
                    "tasks",
                    type="text",
                    content=f"status {n} " + "x" * ((3 - n) * 3000),
                    mime="text/plain",
                )
            )
            for n in range(4)
        ]
        await asyncio.gather(*sends)
        [path] = [p for p in element_files(root) if p.name.startswith(element_id + ".")]
        data = path.read_bytes()
        assert data.startswith(b"status 3 ")
        record, _ = driver.store.element_file("t1", element_id)
        assert record is not None
        assert record["sha256"] == hashlib.sha256(data).hexdigest()
        assert record["bytes"] == len(data)


async def test_an_element_that_cannot_be_stored_changes_nothing(driver: Driver, root: Path) -> None:
    """A custom element's props holding NaN (a client may send them): refused before
    its bytes, its thread or its directory are made."""
    before = tree(root)
    for thread in ("t-new", "t1"):
        try:
            await driver.create_element(
                "e-nan", thread, "m1", "Counter", type="custom", props={"count": float("nan")}
            )
        except ValueError:
            pass
        else:
            raise AssertionError("a NaN in an element was stored")
    assert {k: v for k, v in tree(root).items() if k.startswith("threads")} == {
        k: v for k, v in before.items() if k.startswith("threads")
    }
