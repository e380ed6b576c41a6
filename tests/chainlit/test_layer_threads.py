"""Threads, as Chainlit's own code uses them: its resume restores a session from
``get_thread``, its ACL answers from ``get_thread_author``. What the thread calls do is
the contract in ``tests/store/test_contract_threads.py`` (run through this layer too)."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("chainlit")

from tests.support.layer import end_session


async def test_chainlits_resume_restores_profile_settings_and_author(
    registered: Any, user: Any
) -> None:
    from chainlit.session import WebsocketSession
    from chainlit.socket import resume_thread
    from chainlit.user_session import user_sessions

    metadata = {"chat_profile": "expert", "chat_settings": {"temperature": 0.2}, "env": {}}
    await registered.update_thread("t-resume", name="old chat", user_id=user.id, metadata=metadata)

    async def emit_call(*args: Any) -> None:
        return None

    session = WebsocketSession(
        id="resume-session",
        socket_id="resume-socket",
        emit=lambda *args: None,
        emit_call=emit_call,
        user_env={},
        client_type="webapp",
        thread_id="t-resume",
        user=user,
    )
    try:
        thread = await resume_thread(session)
        assert thread is not None and thread["id"] == "t-resume"
        assert session.chat_profile == "expert"
        assert session.chat_settings == {"temperature": 0.2}
        assert user_sessions[session.id]["chat_profile"] == "expert"
    finally:
        user_sessions.pop(session.id, None)
        await end_session(session)


async def test_chainlits_acl_gives_404_for_unknown_401_for_others_and_passes_the_author(
    registered: Any, user: Any
) -> None:
    from chainlit.data.acl import is_thread_author
    from fastapi import HTTPException

    await registered.update_thread("mine", user_id=user.id)
    assert await is_thread_author("alice@example.com", "mine") is True
    with pytest.raises(HTTPException) as unknown:
        await is_thread_author("alice@example.com", "unknown-thread")
    assert unknown.value.status_code == 404
    with pytest.raises(HTTPException) as invalid:
        await is_thread_author("alice@example.com", "../../etc/passwd")
    assert invalid.value.status_code == 404
    with pytest.raises(HTTPException) as other:
        await is_thread_author("mallory", "mine")
    assert other.value.status_code == 401


DELETE_THREAD = """
import sys
from filelayer import ArchiveStore
store = ArchiveStore(sys.argv[1])
assert store.delete_thread(sys.argv[2])
store.close()
"""


async def test_an_element_whose_thread_another_process_deletes_as_its_bytes_go_is_dropped(
    layer: Any, root: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user deletes the thread (in another worker) while an element's bytes are
    being written, between the two locked steps of the send: the send is a late write
    to a deleted thread, ignored like any other, not a failed write."""
    import subprocess
    import sys

    from chainlit.element import Text

    from filelayer._io import aio
    from tests.support.processes import subprocess_env

    await layer.create_step({"id": "s1", "threadId": "t1", "type": "run", "output": "hi"})
    real = aio.write_file

    async def deleted_first(dest: Any, data: bytes, *, durable: bool) -> None:
        subprocess.run(
            [sys.executable, "-c", DELETE_THREAD, str(root), "t1"],
            env=subprocess_env(),
            check=True,
        )
        await real(dest, data, durable=durable)

    monkeypatch.setattr(aio, "write_file", deleted_first)
    await layer.create_element(Text(name="t", content="x", for_id="s1", thread_id="t1"))
    assert await layer.get_thread("t1") is None
    assert not (root / "threads" / "t1").exists()


MERGE_HOOK = """
import sys
from pathlib import Path
from filelayer.git.setup import remove_deleted_element_files
root = Path(sys.argv[1])
# What the post-merge hook does for a thread the merge changed: its elements/ holds no
# file any more, so it goes (as a single clone leaves none).
remove_deleted_element_files(root, root, "", {sys.argv[2]})
assert not (root / "threads" / sys.argv[2] / "elements").exists()
"""


async def test_an_element_sent_while_a_merge_hook_removes_the_empty_elements_directory(
    layer: Any, root: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The git hook of another process removes a thread's empty ``elements/`` (under
    the thread's lock) while the app writes an element's bytes there (between the two
    locked steps of the send): the send makes the directory again and is stored."""
    import subprocess
    import sys

    from chainlit.element import Text

    from filelayer._io import aio
    from tests.support.processes import subprocess_env

    await layer.create_step({"id": "s1", "threadId": "t1", "type": "run", "output": "hi"})
    await layer.create_element(Text(id="e0", name="old", content="x", for_id="s1", thread_id="t1"))
    await layer.delete_element("e0", "t1")
    real = aio.write_file
    hooks: list[int] = []

    async def hook_first(dest: Any, data: bytes, *, durable: bool) -> None:
        if not hooks:
            hooks.append(1)
            subprocess.run(
                [sys.executable, "-c", MERGE_HOOK, str(root), "t1"],
                env=subprocess_env(),
                check=True,
            )
        await real(dest, data, durable=durable)

    monkeypatch.setattr(aio, "write_file", hook_first)
    await layer.create_element(Text(id="e1", name="new", content="y", for_id="s1", thread_id="t1"))
    thread = await layer.get_thread("t1")
    assert thread is not None
    assert [e["id"] for e in thread["elements"]] == ["e1"]
    assert hooks == [1]


OTHER_SEND = """
import sys
from filelayer import ArchiveStore
store = ArchiveStore(sys.argv[1])
element = {"id": "e1", "type": "text", "name": "n", "forId": "s1", "mime": "text/plain"}
assert store.put_element("t1", element, b"sent again by another worker")
store.close()
"""


async def test_an_element_sent_by_two_workers_at_once_keeps_a_record_of_its_bytes(
    layer: Any, root: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker sends the same element whole while this one's bytes are written
    and not yet recorded: the element's record describes the file that stays, so
    ``verify`` finds nothing to report."""
    import subprocess
    import sys

    from chainlit.element import Text

    from filelayer._io import aio
    from filelayer.cli import main
    from tests.support.processes import subprocess_env

    await layer.create_step({"id": "s1", "threadId": "t1", "type": "run", "output": "hi"})
    real = aio.write_file

    async def then_the_other(dest: Any, data: bytes, *, durable: bool) -> Any:
        written = await real(dest, data, durable=durable)
        subprocess.run(
            [sys.executable, "-c", OTHER_SEND, str(root)], env=subprocess_env(), check=True
        )
        return written

    monkeypatch.setattr(aio, "write_file", then_the_other)
    text = Text(id="e1", name="n", content="first", for_id="s1", thread_id="t1", mime="text/plain")
    await layer.create_element(text)
    assert main(["--root", str(root), "verify"]) == 0
    found = layer.store.element_file("t1", "e1")
    assert found is not None
    record, path = found
    assert path.read_bytes() == b"sent again by another worker"
    assert record["bytes"] == len(b"sent again by another worker")
