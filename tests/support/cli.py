"""A small archive with every feature the CLI shows, built through the storage core."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from filelayer import ArchiveStore


def build_archive(root: Path) -> ArchiveStore:
    store = ArchiveStore(root)
    alice = store.upsert_user("alice@example.com")
    bob = store.upsert_user("bob")

    def turn(thread: str, n: int, question: str, answer: str, feedback: Any = None) -> None:
        def at(minute: int) -> str:
            return f"2026-03-{n:02d}T10:{minute:02d}:00.000000Z"

        store.write_step(
            {
                "id": f"{thread}-u{n}",
                "threadId": thread,
                "type": "user_message",
                "name": "user",
                "output": question,
                "createdAt": at(0),
            }
        )
        store.write_step(
            {
                "id": f"{thread}-r{n}",
                "threadId": thread,
                "type": "run",
                "name": "on_message",
                "createdAt": at(1),
            }
        )
        store.write_step(
            {
                "id": f"{thread}-t{n}",
                "threadId": thread,
                "parentId": f"{thread}-r{n}",
                "type": "tool",
                "name": "search_notes",
                "input": '{"q": 1}',
                "output": "Found 2 notes",
                "showInput": "json",
                "createdAt": at(2),
            }
        )
        store.write_step(
            {
                "id": f"{thread}-a{n}",
                "threadId": thread,
                "parentId": f"{thread}-r{n}",
                "type": "assistant_message",
                "name": "Assistant",
                "output": "",
                "createdAt": at(3),
            }
        )
        store.write_step({"id": f"{thread}-a{n}", "threadId": thread, "output": answer})
        if feedback is not None:
            store.upsert_feedback(
                for_id=f"{thread}-r{n}",
                value=feedback[0],
                comment=feedback[1],
                thread_id=thread,
                feedback_id=f"fb-{thread}-{n}",
            )

    turn(
        "bread",
        1,
        "How do I bake **sourdough**?",
        "Feed the starter.\n\n- flour\n- water",
        (1, "Very helpful"),
    )
    turn("bread", 2, "Oven temperature?", "About **250 °C**.")
    store.put_element(
        "bread",
        {
            "id": "img1",
            "type": "image",
            "name": "loaf.png",
            "mime": "image/png",
            "forId": "bread-a1",
        },
        b"\x89PNG fake",
    )
    store.put_element(
        "bread",
        {
            "id": "doc1",
            "type": "pdf",
            "name": "recipe.pdf",
            "mime": "application/pdf",
            "forId": "bread-a2",
        },
        b"%PDF fake",
    )
    store.update_thread("bread", name="Sourdough bread", user_id=alice["id"], tags=["baking"])
    turn("cake", 3, "Chocolate cake?", "Melt the chocolate.", (0, "Too short"))
    store.update_thread("cake", name="Chocolate cake", user_id=alice["id"])
    turn("hello", 4, "Hi", "Hello Bob")
    store.update_thread("hello", name="Hi", user_id=bob["id"])
    return store
