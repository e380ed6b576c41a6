"""A Chainlit app's shutdown leaves the view files of the long threads it wrote (see
``filelayer.store.snapshots``): its next start reads them instead of folding journals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.thread_views import folded, view_path

TID = "t1"

pytest.importorskip("chainlit")


async def test_an_app_that_shuts_down_leaves_views_its_next_start_reads(tmp_path: Path) -> None:
    """Through the Chainlit adapter: Chainlit closes its data layer on shutdown."""
    from chainlit.context import init_http_context

    from filelayer import FileDataLayer

    init_http_context()
    root = tmp_path / "a"
    layer = FileDataLayer(root)
    user = await layer.create_user(_user("alice@example.com"))
    assert user is not None
    await layer.update_thread(TID, name="long", user_id=user.id)
    for n in range(40):
        await layer.create_step(
            {
                "id": f"s{n:03d}",
                "threadId": TID,
                "type": "assistant_message",
                "output": "y" * 1000,
                "createdAt": f"2026-12-01T00:00:{n:02d}.000000Z",
            }
        )
    await layer.close()
    assert view_path(root).exists()
    restarted = FileDataLayer(root)
    thread = await restarted.get_thread(TID)
    await restarted.close()
    assert thread is not None and len(thread["steps"]) == 40
    assert thread["steps"] == folded(root)["steps"]


def _user(identifier: str) -> Any:
    from chainlit.user import User

    return User(identifier=identifier)
