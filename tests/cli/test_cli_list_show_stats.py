"""`filelayer list`, `show` and `stats`: reading an archive from the shell."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from filelayer.cli import main
from tests.support.cli import build_archive


@pytest.fixture
def archive(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    build_archive(root)
    monkeypatch.setenv("FILELAYER_ROOT", str(root))
    return root


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_a_table_newest_first(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "UPDATED", "AUTHOR", "MSGS", "NAME"]
    assert [line.split()[0] for line in lines[1:]] == ["hello", "cake", "bread"]
    assert "Sourdough bread" in out


def test_list_filters_and_json(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list", "--user", "alice@example.com", "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in rows] == ["cake", "bread"]
    assert rows[1]["author"] == "alice@example.com" and rows[1]["messages"] == 4
    assert run(capsys, "list", "--search", "CELSIUS")[0] == 1  # nothing matched
    assert run(capsys, "list", "--search", "250 °c", "--json")[1].count("\n") == 1
    _, out, _ = run(capsys, "list", "--feedback", "0", "--json")
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["cake"]
    _, out, _ = run(capsys, "list", "--feedback", "1", "--json")
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["bread"]
    assert run(capsys, "list", "--user", "nobody")[0] == 1


def test_list_date_filters(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "list", "--since", "2999-01-01")[0] == 1
    assert run(capsys, "list", "--until", "2000-01-01")[0] == 1
    assert run(capsys, "list", "--since", "2000-01-01")[0] == 0
    code, _, err = run(capsys, "list", "--since", "yesterday")
    assert code == 2 and "YYYY-MM-DD" in err


def test_show_prints_the_conversation(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "show", "bread")
    assert code == 0
    assert out.index("How do I bake **sourdough**?") < out.index("search_notes (tool)")
    assert out.index("search_notes (tool)") < out.index("Feed the starter.")
    assert "👍 Very helpful" in out
    assert "📎 loaf.png (image)" in out
    code, _, err = run(capsys, "show", "no-such-thread")
    assert code == 2 and "no thread" in err


def test_stats(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "stats")
    assert code == 0
    fields = dict(line.split(None, 1) for line in out.splitlines())
    assert fields["threads"] == "3" and fields["users"] == "2" and fields["elements"] == "2"
    assert int(fields["steps"]) == 4 * 4
    assert int(fields["bytes"]) > 0


def test_stats_oldest_and_newest_are_instants(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The oldest and newest creation times are compared as instants: Chainlit drops a
    zero fraction, other writers use an offset, and a manifest may hold any value."""
    from filelayer import ArchiveStore

    store = ArchiveStore(root)
    created = {
        "a": "2026-03-01T10:00:00Z",  # after .5Z as text, before it as an instant
        "b": "2026-03-01T10:00:00.500000Z",
        "c": "2026-03-01T12:00:00+05:00",  # 07:00 UTC: the oldest
        "d": 12345,
    }
    for tid, at in created.items():
        store.put_manifest(
            {
                "id": tid,
                "name": tid,
                "userId": None,
                "userIdentifier": None,
                "tags": None,
                "metadata": {},
                "createdAt": at,
                "updatedAt": at,
            }
        )
    store.close()
    monkeypatch.setenv("FILELAYER_ROOT", str(root))
    code, out, _ = run(capsys, "stats")
    assert code == 0
    fields = dict(line.split(None, 1) for line in out.splitlines())
    assert fields["oldest"] == "2026-03-01T12:00:00+05:00"
    assert fields["newest"] == "2026-03-01T10:00:00.500000Z"


def test_a_missing_root_is_an_error_not_a_new_archive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "--root", str(tmp_path / "typo"), "list")
    assert code == 2 and "does not exist" in err
    assert not (tmp_path / "typo").exists()


def test_help_teaches_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "filelayer export --all -o exported/" in out


def test_what_users_wrote_cannot_drive_the_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A thread's name is its first message, as typed: escape sequences (clear the
    screen, set the window's title), a bell, a carriage return or a new line that forges
    a row of the table are shown as escapes, never sent to the terminal."""
    from filelayer import ArchiveStore

    store = ArchiveStore(tmp_path)
    store.upsert_user("eve\x1b[31m")
    nasty = "hi\x1b[2J\x1b]0;pwned\x07\rfake\nbread  2026-01-01  alice  9  forged\u202e"
    store.write_step(
        {"id": "s1", "threadId": "t1", "type": "user_message", "output": nasty, "name": nasty}
    )
    store.update_thread("t1", name=nasty, user_id=store.get_user("eve\x1b[31m")["id"])  # type: ignore[index]
    store.write_step({"id": "s2", "threadId": "t2", "type": "user_message", "output": "ok"})
    store.close()
    for command in (["list"], ["show", "t1"], ["stats"], ["verify"]):
        main(["--root", str(tmp_path), *command])
        out = capsys.readouterr().out
        assert not any(c in out for c in "\x1b\x07\r\u202e"), (command, out)
        if command == ["list"]:
            assert len(out.splitlines()) == 3  # the header and two threads
            assert "\\x1b[2J" in out


def test_an_empty_user_is_a_usage_error_not_every_user(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--user ''`` (an unset shell variable) names nobody: refused, as ``export`` does,
    rather than dropped, which listed every user's threads."""
    for argv in (
        ["list", "--user", ""],
        ["list", "--user", "", "--json"],
        ["export", "--user", "", "--since", "2000-01-01"],
        ["export", "--user", "", "--all"],
    ):
        code, out, err = run(capsys, *argv)
        assert code == 2 and out == "", argv
        assert err.splitlines()[-1] == "filelayer: --user needs an identifier, not ''", argv
