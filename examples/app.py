"""The filelayer example: a Chainlit app persisted as plain files, no API key needed.

Run it from the repository root:

    pip install -e ".[all,examples]"    # examples = plotly and pandas, for the chart and table
    chainlit run examples/app.py        # then open http://localhost:8000

(or ``bash scripts/example.sh``, which also keeps a login secret for you). Log in as
``admin`` / ``admin``; ``guest`` / ``guest`` is a second user, to try thread sharing.
Every conversation is kept under ``$FILELAYER_ROOT`` (default ``./chats``, relative to
the directory you start from).

The assistant is scripted: each message gets a tool step, a streamed Markdown answer and
an image. Ask for "everything" to get every kind of element (image, PDF, file, text,
Plotly chart, dataframe and a custom element); attach files from the composer. Every
answer has an "Export this conversation" button: it answers with links to filelayer's
export route (the Markdown export as a zip, or a web page). Chainlit
signs logins with ``CHAINLIT_AUTH_SECRET``: set it (``chainlit create-secret``) to keep
users logged in across restarts; without it this demo makes a random one per run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import struct
import sys
import zlib
from pathlib import Path

import chainlit as cl
from chainlit.types import ThreadDict

from filelayer import FileDataLayer
from filelayer.chainlit.export_route import export_url

HERE = Path(__file__).resolve().parent
# The demo's users (user name: password). Do not copy this into a real app.
USERS = {"admin": "admin", "guest": "guest"}

log = logging.getLogger("filelayer.example")


def _same_settings_from_any_directory() -> None:
    """Behave the same whether started from ``examples/`` or from elsewhere.

    Chainlit reads ``.chainlit/config.toml``, ``chainlit.md`` and ``public/`` from the
    directory it is started in. Started from another directory (``chainlit run
    examples/app.py`` at the repository root), this applies the example's own
    ``.chainlit/config.toml`` features (thread sharing, uploads), its welcome page and
    its custom element directory, so that nothing depends on the current directory.
    """
    from chainlit.config import FeaturesSettings, config

    if Path(config.root).resolve() == HERE:
        return
    try:
        import tomllib as toml  # Python 3.11+
    except ImportError:  # Python 3.10: Chainlit itself depends on tomli
        import tomli as toml
    with open(HERE / ".chainlit" / "config.toml", "rb") as f:
        settings = toml.load(f)
    config.features = FeaturesSettings(**settings.get("features", {}))
    config.ui.name = settings.get("UI", {}).get("name", config.ui.name)
    config.root = str(HERE)  # chainlit.md
    server = sys.modules.get("chainlit.server")
    if server is not None and hasattr(server, "public_dir"):
        server.public_dir = str(HERE / "public")  # public/elements/Counter.jsx


_same_settings_from_any_directory()

if not os.environ.get("CHAINLIT_AUTH_SECRET"):
    os.environ["CHAINLIT_AUTH_SECRET"] = secrets.token_urlsafe(48)
    log.warning(
        "CHAINLIT_AUTH_SECRET is not set: using a random one, so logins end when the app "
        "stops. Run `chainlit create-secret` and export it to keep them."
    )


@cl.data_layer
def data_layer() -> FileDataLayer:
    return FileDataLayer(os.environ.get("FILELAYER_ROOT", "./chats"))


@cl.password_auth_callback
async def password_auth(username: str, password: str) -> cl.User | None:
    expected = USERS.get(username)
    if expected is not None and secrets.compare_digest(expected.encode(), password.encode()):
        return cl.User(identifier=username, metadata={"provider": "credentials"})
    return None


@cl.on_shared_thread_view
async def on_shared_thread_view(thread: ThreadDict, viewer: cl.User | None) -> bool:
    """Chainlit offers "Share" only when the app has this hook. Threads the author
    shared (``metadata.is_shared``) are readable by anyone logged in; nothing more."""
    return bool((thread.get("metadata") or {}).get("is_shared"))


@cl.on_chat_start
async def start() -> None:
    cl.user_session.set("turns", 0)


@cl.on_chat_resume
async def resume(thread: ThreadDict) -> None:
    """A resumed thread goes on counting its turns where it stopped."""
    turns = sum(1 for s in thread["steps"] if s["type"] == "user_message")
    cl.user_session.set("turns", turns)


@cl.step(type="tool", name="search_notes")
async def search_notes(query: str) -> str:
    """A pretend tool, so that the conversation has a nested tool step to persist."""
    await asyncio.sleep(0.05)
    words = [w.strip("?!.,;:") for w in query.lower().split()]
    words = [w for w in words if w.isalpha()]
    return f"Found {len(words)} keyword(s): {', '.join(words) or 'none'}"


@cl.on_message
async def on_message(message: cl.Message) -> None:
    turns = (cl.user_session.get("turns") or 0) + 1
    cl.user_session.set("turns", turns)
    found = await search_notes(message.content)

    lines = [
        f"**Turn {turns}.** You said: _{message.content or '(nothing)'}_",
        "",
        f"- tool result: `{found}`",
    ]
    for upload in message.elements or []:
        lines.append(f"- you attached: **{upload.name}** ({_size(upload)})")
    if "everything" not in message.content.lower():
        lines += ["", 'Ask for "everything" to see every kind of element.']
    answer = cl.Message(
        content="", elements=elements_for(message.content, turns), actions=[export_action()]
    )
    for word in "\n".join(lines).split(" "):
        await answer.stream_token(word + " ")
    await answer.send()


def export_action() -> cl.Action:
    """The "export this conversation" button under each answer."""
    return cl.Action(
        name="export_thread",
        payload={},
        label="Export this conversation",
        tooltip="Download the conversation as Markdown (zip) or as a web page",
        icon="download",
    )


@cl.action_callback("export_thread")
async def export_thread(action: cl.Action) -> None:
    """Answer with the two links of filelayer's export route (the same rules as the
    thread itself: its author, or anyone logged in when it is shared)."""
    thread_id = cl.context.session.thread_id
    await cl.Message(
        content=(
            "Export of this conversation: "
            f"[Markdown with its files (zip)]({export_url(thread_id, 'markdown')}) · "
            f"[web page]({export_url(thread_id, 'html')})"
        ),
        author="filelayer",
    ).send()


def _size(element: cl.Element) -> str:
    path = getattr(element, "path", None)
    try:
        return f"{os.path.getsize(path)} bytes" if path else "no file"
    except OSError:
        return "unreadable"


def elements_for(text: str, turn: int) -> list[cl.Element]:
    """An image on every answer; every kind of element when asked for everything."""
    elements: list[cl.Element] = [
        cl.Image(name=f"gradient-{turn}.png", content=png(turn), display="inline", size="large"),
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

        colours = ["crimson", "seagreen", "royalblue"]
        figure = go.Figure(go.Bar(x=colours, y=[turn, turn * 2, turn * 3], marker_color=colours))
        figure.update_layout(title=f"Turn {turn}", height=320)
        elements.append(cl.Plotly(name="bars", figure=figure, display="inline"))
    except ImportError:  # pip install plotly (the "examples" extra)
        pass
    try:
        import pandas as pd

        words = text.split()[:5] or ["(empty)"]
        frame = pd.DataFrame({"word": words, "length": [len(w) for w in words]})
        elements.append(cl.Dataframe(name="words", data=frame, display="inline"))
    except ImportError:  # pip install pandas (the "examples" extra)
        pass
    return elements


def png(seed: int, width: int = 240, height: int = 120) -> bytes:
    """A colour gradient as a PNG, made with zlib alone (no imaging library)."""
    rows = b"".join(
        b"\x00"
        + bytes(
            channel
            for x in range(width)
            for channel in (x * 255 // width, y * 255 // height, (seed * 70 + 90) % 256)
        )
        for y in range(height)
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


def pdf(title: str) -> bytes:
    """A one-page PDF with a line of text, written by hand (with a correct xref table)."""
    safe = title.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    stream = f"BT /F1 18 Tf 40 100 Td ({safe}) Tj ET".encode("latin-1", "replace")
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
