"""The app that tests/chainlit/test_authorization.py attacks: two users, one archive.

Every answer carries an image and a file whose bytes the data layer stores, so that an
attack on another user's thread has files to overwrite or delete. Run by the suite with
``chainlit run`` on a temporary root (``FILELAYER_ROOT``) and a login secret.
"""

from __future__ import annotations

import os
import struct
import zlib

import chainlit as cl
from chainlit.types import Feedback, ThreadDict

from filelayer import FileDataLayer

USERS = {"alice": "alice", "mallory": "mallory"}
CALLBACK_WRITES = "the callback writes: "
"""A rating whose comment starts so makes ``on_feedback`` write in its session."""


def picture(seed: int) -> bytes:
    """A small valid PNG whose pixels depend on ``seed``."""
    width, height = 4, 3
    rows = b"".join(
        b"\x00" + bytes((x * 50 + seed) % 256 for x in range(width) for _ in range(3))
        for _ in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@cl.data_layer
def data_layer() -> FileDataLayer:
    return FileDataLayer(os.environ["FILELAYER_ROOT"])


@cl.password_auth_callback
async def password_auth(username: str, password: str) -> cl.User | None:
    if USERS.get(username) == password:
        return cl.User(identifier=username, metadata={"provider": "credentials"})
    return None


@cl.on_shared_thread_view
async def on_shared_thread_view(thread: ThreadDict, viewer: cl.User | None) -> bool:
    return bool((thread.get("metadata") or {}).get("is_shared"))


async def on_feedback(feedback: Feedback) -> None:
    """Thank for a rating with a message, when its comment asks: a write in the session
    Chainlit runs the callback in (the one the rating request names)."""
    comment = feedback.comment or ""
    if comment.startswith(CALLBACK_WRITES):
        await cl.Message(content=comment).send()


if hasattr(cl, "on_feedback"):  # not in every release the suite runs against
    cl.on_feedback(on_feedback)


@cl.on_chat_resume
async def on_chat_resume(thread: ThreadDict) -> None:
    cl.user_session.set("resumed", thread["id"])


@cl.on_message
async def on_message(message: cl.Message) -> None:
    text = message.content or ""
    elements: list[cl.Element] = [
        cl.Image(name="picture.png", content=picture(len(text)), display="inline"),
        cl.File(name="notes.txt", content=f"notes about {text}\n".encode(), display="inline"),
    ]
    await cl.Message(content=f"echo: {text}", elements=elements).send()
