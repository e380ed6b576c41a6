"""The filelayer example: a Chainlit app persisted as plain files, no API key needed.

Run it from the repository root with ``bash scripts/example.sh``, or by hand:

    pip install -e ".[all,examples]"
    export CHAINLIT_AUTH_SECRET=$(python -c 'import secrets; print(secrets.token_urlsafe(48))')
    cd examples && chainlit run app.py

Log in as ``admin`` / ``admin`` (or ``guest`` / ``guest``, a second user to try thread
sharing). Every conversation is kept under ``$FILELAYER_ROOT`` (default ``./chats``).
"""

from __future__ import annotations

import asyncio
import os
import struct
import zlib

import chainlit as cl
from chainlit.types import ThreadDict

from filelayer import FileDataLayer

USERS = {"admin": "admin", "guest": "guest"}


@cl.data_layer
def data_layer() -> FileDataLayer:
    return FileDataLayer(os.environ.get("FILELAYER_ROOT", "./chats"))


@cl.password_auth_callback
def password_auth(username: str, password: str) -> cl.User | None:
    if USERS.get(username) == password:
        return cl.User(identifier=username, metadata={"provider": "credentials"})
    return None


@cl.on_shared_thread_view
async def on_shared_thread_view(thread: ThreadDict, viewer: cl.User | None) -> bool:
    # Chainlit already serves threads whose metadata says is_shared; nothing more here.
    return bool((thread.get("metadata") or {}).get("is_shared"))


@cl.on_chat_start
async def start() -> None:
    cl.user_session.set("turns", 0)


@cl.on_chat_resume
async def resume(thread: ThreadDict) -> None:
    turns = sum(1 for s in thread["steps"] if s["type"] == "user_message")
    cl.user_session.set("turns", turns)


@cl.step(type="tool", name="search_notes")
async def search_notes(query: str) -> str:
    """A pretend tool, so that the conversation has a nested tool step to persist."""
    await asyncio.sleep(0.05)
    words = [w for w in query.lower().split() if w.isalpha()]
    return f"Found {len(words)} keyword(s): {', '.join(words) or 'none'}"


@cl.on_message
async def on_message(message: cl.Message) -> None:
    turns = (cl.user_session.get("turns") or 0) + 1
    cl.user_session.set("turns", turns)
    found = await search_notes(message.content)

    uploads = [e.name for e in message.elements or []]
    lines = [
        f"**Turn {turns}.** You said: _{message.content or '(nothing)'}_",
        "",
        f"- tool result: `{found}`",
    ]
    if uploads:
        lines.append(f"- you attached: {', '.join(uploads)}")
    answer = cl.Message(content="", elements=elements_for(message.content, turns))
    for word in "\n".join(lines).split(" "):
        await answer.stream_token(word + " ")
    await answer.send()


def elements_for(text: str, turn: int) -> list[cl.Element]:
    """An image on every answer; every kind of element when asked for everything."""
    elements: list[cl.Element] = [
        cl.Image(name=f"chart-{turn}.png", content=png(turn), display="inline", size="medium"),
    ]
    if "everything" not in text.lower():
        return elements
    elements += [
        cl.Pdf(name="summary.pdf", content=pdf(f"Turn {turn} summary"), display="inline"),
        cl.File(name="notes.txt", content=f"Notes of turn {turn}\n".encode(), display="inline"),
        cl.Text(name="details", content=f"Turn {turn}: details in **Markdown**.", display="inline"),
        cl.CustomElement(name="Counter", props={"count": turn}, display="inline"),
    ]
    try:
        import plotly.graph_objects as go

        figure = go.Figure(go.Bar(x=["a", "b", "c"], y=[turn, turn * 2, turn * 3]))
        elements.append(cl.Plotly(name="bars", figure=figure, display="inline"))
    except ImportError:  # pip install plotly
        pass
    try:
        import pandas as pd

        frame = pd.DataFrame({"turn": [turn], "words": [len(text.split())]})
        elements.append(cl.Dataframe(name="table", data=frame, display="inline"))
    except ImportError:  # pip install pandas
        pass
    return elements


def png(seed: int, size: int = 48) -> bytes:
    """A small gradient PNG, made without any imaging library."""
    rows = b"".join(
        b"\x00"
        + bytes(
            channel
            for x in range(size)
            for channel in ((x * 5 + seed * 40) % 256, (y * 5) % 256, 160)
        )
        for y in range(size)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def pdf(title: str) -> bytes:
    """A one-page PDF with a line of text, written by hand."""
    stream = f"BT /F1 18 Tf 40 100 Td ({title}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 400 200] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)
