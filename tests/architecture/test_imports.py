"""The storage core and the CLI need only the standard library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.processes import subprocess_env

BLOCKED = ("chainlit", "orjson", "aiofiles", "filelock")

PRELUDE = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in BLOCKED)


def run_blocked(code: str, cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-c", PRELUDE + code],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_core_modules_import_without_chainlit_or_optional_packages(tmp_path: Path) -> None:
    out = run_blocked(
        "import filelayer, filelayer.store, filelayer.format.journal, "
        "filelayer.index.thread_index, filelayer.format.manifest, filelayer.format.layout, "
        "filelayer.format.users, filelayer.cli\n"
        "print(filelayer.MODE)\n",
        tmp_path,
    )
    assert out.strip() == "pure"


def test_a_round_trip_works_without_them(tmp_path: Path) -> None:
    out = run_blocked(
        "from filelayer import ArchiveStore\n"
        f"s = ArchiveStore({str(tmp_path / 'chats')!r})\n"
        "u = s.upsert_user('ann')\n"
        "s.write_step({'id': 'm', 'threadId': 't', 'type': 'user_message', 'output': 'hi'})\n"
        "s.update_thread('t', name='hi', user_id=u['id'])\n"
        "threads, page = s.list_threads(user_id=u['id'], search='HI')\n"
        "print([t['id'] for t in threads], s.get_thread('t')['steps'][0]['output'])\n",
        tmp_path,
    )
    assert out.strip() == "['t'] hi"


def test_the_data_layer_says_it_needs_chainlit(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PRELUDE + "from filelayer import FileDataLayer"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "chainlit" in result.stderr
