"""A thread with every kind of element, stored the way Chainlit's elements store them."""

from __future__ import annotations

import io
import json
import struct
import wave
import zlib
from pathlib import Path

from filelayer import ArchiveStore

THREAD = "every-element"
ROWS = 30
CODE = 'def rise(hours: int) -> str:\n    return "|" * hours  # ``` inside\n'


def png(width: int = 60, height: int = 30) -> bytes:
    rows = b"".join(
        b"\x00" + bytes(c for x in range(width) for c in (x * 4, y * 8, 160)) for y in range(height)
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


def wav(seconds: float = 0.25, rate: int = 8000) -> bytes:
    """A short sine tone as a WAV file, made with the standard library."""
    import math

    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        samples = (
            int(8000 * math.sin(2 * math.pi * 440 * n / rate)) for n in range(int(seconds * rate))
        )
        w.writeframes(b"".join(struct.pack("<h", v) for v in samples))
    return out.getvalue()


def frame_json() -> bytes:
    """pandas' ``to_json(orient="split")``, what ``cl.Dataframe`` stores."""
    data = [[n, f"loaf {n}", n * 1.5, "a|b" if n == 2 else "ok"] for n in range(ROWS)]
    doc = {"columns": ["n", "name", "weight", "note"], "index": list(range(ROWS)), "data": data}
    return json.dumps(doc).encode()


def figure_json() -> bytes:
    """A Plotly figure's JSON, what ``cl.Plotly`` stores."""
    figure = {
        "data": [{"type": "bar", "x": ["crimson", "seagreen"], "y": [3, 5], "name": "loaves"}],
        "layout": {"title": {"text": "Loaves per day"}, "height": 320},
    }
    return json.dumps(figure).encode()


def every_element_archive(root: Path) -> ArchiveStore:
    store = ArchiveStore(root)
    alice = store.upsert_user("alice@example.com")
    tid = THREAD

    def step(sid: str, kind: str, output: str, minute: int, **more: object) -> None:
        store.write_step(
            {
                "id": sid,
                "threadId": tid,
                "type": kind,
                "output": output,
                "createdAt": f"2026-03-01T10:{minute:02d}:00.000000Z",
                **more,
            }
        )

    step(
        "u1",
        "user_message",
        "Show me **everything** <script>alert(1)</script>",
        0,
        name="alice@example.com",
    )
    step("r1", "run", "", 1, name="on_message")
    step("t1", "tool", "Found 2 notes", 2, name="search_notes", parentId="r1", input='{"q": 1}')
    step(
        "a1",
        "assistant_message",
        "Here it is:\n\n- a list item\n- `inline code`\n\n```python\nprint('hi')\n```",
        3,
        name="Assistant",
        parentId="r1",
    )
    elements = [
        ({"id": "img", "type": "image", "name": "loaf.png", "mime": "image/png"}, png()),
        (
            {"id": "doc", "type": "pdf", "name": "recipe.pdf", "mime": "application/pdf"},
            b"%PDF-1.4 fake",
        ),
        (
            {"id": "notes", "type": "text", "name": "details", "mime": "text/plain"},
            b"Details in **Markdown**: knead for *ten* minutes.",
        ),
        (
            {
                "id": "code",
                "type": "text",
                "name": "rise.py",
                "mime": "text/plain",
                "language": "python",
            },
            CODE.encode(),
        ),
        (
            {"id": "table", "type": "dataframe", "name": "loaves", "mime": "application/json"},
            frame_json(),
        ),
        (
            {"id": "chart", "type": "plotly", "name": "bars", "mime": "application/json"},
            figure_json(),
        ),
        ({"id": "tone", "type": "audio", "name": "tone.wav", "mime": "audio/wav"}, wav()),
        (
            {
                "id": "counter",
                "type": "custom",
                "name": "Counter",
                "mime": "application/json",
                "props": {"count": 1},
            },
            b'{"count": 1}',
        ),
    ]
    for record, data in elements:
        store.put_element(tid, {**record, "forId": "a1", "display": "inline"}, data)
    store.upsert_feedback(for_id="r1", value=1, comment="Clear", thread_id=tid, feedback_id="f1")
    store.update_thread(tid, name="Every element", user_id=alice["id"])
    doc = store.read_manifest(tid)
    assert doc is not None
    store.put_manifest({**doc, "createdAt": "2026-03-01T09:59:00.000000Z"})
    return store
