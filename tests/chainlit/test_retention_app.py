"""`filelayer erase-user` and `prune` against the example app while it runs and chats.

Its own `chainlit run examples/app.py` (users are erased here, so not the shared one):
two users chat over Chainlit's socket protocol, one of them is erased from the command
line while the other is in the middle of a conversation, and afterwards no file under
the root holds anything of the erased user, `verify` is clean, and the app goes on.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("chainlit")
pytest.importorskip("socketio")
httpx = pytest.importorskip("httpx")

from filelayer import ArchiveStore  # noqa: E402
from tests.chainlit.test_example_app import chat, login  # noqa: E402
from tests.support.apps import App, chainlit_running  # noqa: E402
from tests.support.processes import REPO, subprocess_env  # noqa: E402

GUEST_TEXT = "guest's private question about the Zanzibar-4417 account"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    work = tmp_path_factory.mktemp("erasure-app")
    shutil.copytree(REPO / "examples", work / "app", ignore=shutil.ignore_patterns("chats"))
    root = work / "chats"
    log = work / "chainlit.log"
    env = subprocess_env(FILELAYER_ROOT=str(root), CHAINLIT_AUTH_SECRET="erase-secret-" + "x" * 40)
    with chainlit_running(work / "app", env, log) as url:
        yield App(url=url, root=root, log=log)


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "filelayer", "--root", str(root), *args],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )


def holding(root: Path, needles: list[bytes]) -> list[str]:
    return [
        str(p.relative_to(root))
        for p in sorted(root.rglob("*"))
        if p.is_file() and any(n in p.read_bytes() for n in needles)
    ]


async def test_erase_a_user_while_another_chats(app: App) -> None:
    guest, admin = login(app, "guest"), login(app, "admin")
    guest_threads = [
        await chat(app, guest, GUEST_TEXT),
        await chat(app, guest, "show me everything, guest here"),
    ]
    admin_thread = await chat(app, admin, "admin's first question")
    needles = [GUEST_TEXT.encode(), b'"guest"', b"guest here"]
    assert holding(app.root, needles)

    # admin keeps chatting while the command runs
    chatting = asyncio.ensure_future(
        asyncio.gather(*(chat(app, admin, f"admin turn {n} meanwhile") for n in range(3)))
    )
    erased = await asyncio.to_thread(cli, app.root, "erase-user", "guest")
    assert erased.returncode == 0, erased.stderr
    assert "erased 2 thread(s)" in erased.stderr
    admin_threads = await chatting

    assert holding(app.root, needles) == []
    store = ArchiveStore(app.root)
    for thread_id in guest_threads:
        assert store.get_thread(thread_id) is None and store.is_deleted(thread_id)
    for thread_id in [admin_thread, *admin_threads]:
        assert store.get_thread(thread_id) is not None
    verified = cli(app.root, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # the app goes on, and pruning nothing old changes nothing
    later = await chat(app, admin, "after the erasure")
    assert ArchiveStore(app.root).get_thread(later) is not None
    pruned = cli(app.root, "prune", "--before", "2000-01-01", "--yes")
    assert pruned.returncode == 0 and "deleted 0 thread(s)" in pruned.stderr
    assert cli(app.root, "verify").returncode == 0
