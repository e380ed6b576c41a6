"""A step whose type changes (an app sets ``step.type`` and calls ``update()``): the index
keeps a message's text only while the step is a message, as a rebuild from the journals
would, whether this store or another one on the same root wrote the earlier version."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from filelayer import ArchiveStore
from filelayer.index.thread_index import ThreadIndex
from filelayer.maintenance.verify import verify
from filelayer.store.folds import FoldedJournals
from tests.support.processes import subprocess_env


def at(second: int) -> str:
    return f"2099-03-01T10:00:{second:02d}.000000Z"  # after the threads were made


@pytest.fixture(params=["one store", "two stores"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ArchiveStore, ...]]:
    """The store that writes the first version of a step, and the one that changes it
    (the same one, or another on the same root, as another process would be)."""
    root = tmp_path / "chats"
    first = ArchiveStore(root)
    second = first if request.param == "one store" else ArchiveStore(root)
    yield first, second
    for store in {id(first): first, id(second): second}.values():
        store.close()


def two_threads(store: ArchiveStore) -> str:
    """A user with thread ``t1`` (a question at second 0) and ``t2`` (a message at
    second 30): the user's id."""
    user = store.upsert_user("alice@example.com")["id"]
    for tid, second, text in [("t1", 0, "the opening question"), ("t2", 30, "another chat")]:
        store.write_step(
            {
                "id": f"{tid}-u",
                "threadId": tid,
                "type": "user_message",
                "output": text,
                "createdAt": at(second),
            }
        )
        store.update_thread(tid, name=f"chat {tid}", user_id=user)
    return str(user)


def listing(store: ArchiveStore, user: str, search: str | None = None) -> list[str]:
    threads, _ = store.list_threads(user_id=user, first=100, search=search)
    return [t["id"] for t in threads]


def what_the_sidebar_shows(store: ArchiveStore, user: str, terms: list[str]) -> dict[str, Any]:
    return {
        "order": listing(store, user),
        **{term: listing(store, user, term) for term in terms},
        "created": {t["id"]: t["createdAt"] for t in store.list_threads(user_id=user)[0]},
    }


def assert_index_as_rebuilt(store: ArchiveStore, user: str, terms: list[str]) -> dict[str, Any]:
    """The index holds what a rebuild from the thread directories gives: ``verify``
    finds no drift, and the sidebar answers the same after a ``reindex``."""
    fresh = ArchiveStore(store.root)
    try:
        assert verify(fresh).problems == []
        shown = what_the_sidebar_shows(fresh, user, terms)
        fresh.reindex()
        assert what_the_sidebar_shows(fresh, user, terms) == shown
    finally:
        fresh.close()
    return shown


def test_a_message_made_a_tool_step_leaves_search_and_activity(
    stores: tuple[ArchiveStore, ArchiveStore],
) -> None:
    first, second = stores
    user = two_threads(first)
    answer = {"id": "s1", "threadId": "t1", "output": "a secret phrase", "createdAt": at(50)}
    first.write_step({**answer, "type": "assistant_message"})
    assert listing(first, user, "secret") == ["t1"]
    assert listing(first, user) == ["t1", "t2"]  # its message is the newest activity

    second.write_step({**answer, "type": "tool"})

    assert listing(second, user, "secret") == []
    assert listing(second, user) == ["t2", "t1"]  # t1's last message is its question again
    shown = assert_index_as_rebuilt(second, user, ["secret", "opening"])
    assert shown["secret"] == [] and shown["opening"] == ["t1"]


def test_a_tool_step_made_a_message_is_found_by_the_text_it_had(
    stores: tuple[ArchiveStore, ArchiveStore],
) -> None:
    first, second = stores
    user = two_threads(first)
    first.write_step(
        {
            "id": "s1",
            "threadId": "t1",
            "type": "tool",
            "output": "the hidden answer",
            "createdAt": at(50),
        }
    )
    assert listing(first, user, "hidden") == []
    assert listing(first, user) == ["t2", "t1"]

    # The update names the new type only: text and time are the stored ones.
    second.write_step({"id": "s1", "threadId": "t1", "type": "assistant_message"})

    assert listing(second, user, "hidden") == ["t1"]
    assert listing(second, user) == ["t1", "t2"]
    shown = assert_index_as_rebuilt(second, user, ["hidden", "answer"])
    assert shown["hidden"] == ["t1"]


def test_a_message_given_another_message_type_and_text_is_found_by_the_new_text(
    stores: tuple[ArchiveStore, ArchiveStore],
) -> None:
    first, second = stores
    user = two_threads(first)
    step = {"id": "s1", "threadId": "t1", "createdAt": at(50)}
    first.write_step({**step, "type": "user_message", "output": "first words"})

    second.write_step({**step, "type": "assistant_message", "output": "second words"})

    assert listing(second, user, "first words") == []
    assert listing(second, user, "second words") == ["t1"]
    assert_index_as_rebuilt(second, user, ["first words", "second words"])


def test_a_step_changing_type_back_and_forth_between_two_stores(
    stores: tuple[ArchiveStore, ArchiveStore],
) -> None:
    first, second = stores
    user = two_threads(first)
    step = {"id": "s1", "threadId": "t1", "output": "the changing step", "createdAt": at(50)}
    expected = {"tool": [], "run": [], "assistant_message": ["t1"], "system_message": ["t1"]}
    kinds = ["tool", "assistant_message", "run", "system_message", "tool"]
    for writer, kind in zip([first, second, first, second, first], kinds, strict=True):
        writer.write_step({**step, "type": kind})
        for store in (first, second):
            assert listing(store, user, "changing") == expected[kind], kind
        assert_index_as_rebuilt(first, user, ["changing"])


def test_an_update_with_an_empty_type_keeps_the_message_and_its_new_text(
    stores: tuple[ArchiveStore, ArchiveStore],
) -> None:
    first, second = stores
    user = two_threads(first)
    step = {"id": "s1", "threadId": "t1", "createdAt": at(50)}
    first.write_step({**step, "type": "assistant_message", "output": "draft"})

    second.write_step({**step, "type": "", "output": "the final text"})  # keeps the type

    assert listing(second, user, "final text") == ["t1"]
    assert listing(second, user, "draft") == []
    assert_index_as_rebuilt(second, user, ["final text", "draft"])


def test_a_tool_step_written_again_and_again_stays_out_of_the_index(
    stores: tuple[ArchiveStore, ArchiveStore],
) -> None:
    first, second = stores
    user = two_threads(first)
    for n, writer in enumerate([first, second, first, first, second, second]):
        writer.write_step(
            {
                "id": "s1",
                "threadId": "t1",
                "type": "tool",
                "output": f"tool output {n}",
                "createdAt": at(50),
            }
        )
    assert listing(second, user, "tool output") == []
    assert listing(second, user) == ["t2", "t1"]
    assert_index_as_rebuilt(second, user, ["tool output"])


def test_a_message_made_a_tool_step_after_its_journal_was_compacted(tmp_path: Path) -> None:
    store = ArchiveStore(tmp_path / "chats")
    user = two_threads(store)
    answer = {"id": "s1", "threadId": "t1", "output": "a secret phrase", "createdAt": at(50)}
    store.write_step({**answer, "type": "assistant_message"})
    store.write_step({**answer, "output": "a secret phrase, corrected"})
    assert store.compact_journal("t1").changed  # a new journal file

    store.write_step({**answer, "type": "run"})

    assert listing(store, user, "secret") == []
    assert_index_as_rebuilt(store, user, ["secret"])


def test_writes_of_a_step_that_keeps_its_type_ask_the_index_nothing_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run or tool step written again and again costs no index query (most writes)."""
    store = ArchiveStore(tmp_path / "chats")
    user = two_threads(store)
    asked: list[str] = []
    real = ThreadIndex.text

    def text(index: ThreadIndex, thread_id: str, step_id: str) -> tuple[str, str] | None:
        asked.append(step_id)
        return real(index, thread_id, step_id)

    monkeypatch.setattr(ThreadIndex, "text", text)
    for n in range(5):
        store.write_step(
            {
                "id": "s1",
                "threadId": "t1",
                "type": "tool",
                "output": f"step {n}",
                "createdAt": at(9),
            }
        )
        store.write_step({"id": "s1", "threadId": "t1", "output": f"no type given {n}"})
    assert asked == []
    store.write_step({"id": "s1", "threadId": "t1", "type": "assistant_message"})
    assert asked == ["s1"]
    assert listing(store, user, "no type given 4") == ["t1"]
    assert_index_as_rebuilt(store, user, ["no type given"])


def test_a_message_another_process_wrote_made_a_tool_step_here(tmp_path: Path) -> None:
    store = ArchiveStore(tmp_path / "chats")
    user = two_threads(store)
    store.write_step({"id": "s0", "threadId": "t1", "type": "run", "createdAt": at(40)})
    answer = {"id": "s1", "threadId": "t1", "output": "a secret phrase", "createdAt": at(50)}
    script = (
        "import sys\nfrom filelayer import ArchiveStore\n"
        f"ArchiveStore(sys.argv[1]).write_step({ {**answer, 'type': 'assistant_message'}!r})\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(store.root)],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert listing(store, user, "secret") == ["t1"]

    store.write_step({**answer, "type": "tool"})  # this process last wrote the thread before

    assert listing(store, user, "secret") == []
    assert listing(store, user) == ["t2", "t1"]
    assert_index_as_rebuilt(store, user, ["secret"])


def test_a_journal_replaced_by_one_with_its_inode_number_is_learnt_again(tmp_path: Path) -> None:
    store = ArchiveStore(tmp_path / "chats")
    user = two_threads(store)
    answer = {"id": "s1", "threadId": "t1", "output": "a secret phrase", "createdAt": at(50)}
    store.write_step({**answer, "type": "assistant_message"})
    # Another process replaced the journal (the thread deleted and written again, a
    # checkout), s1 now a tool step, and the new file came back with the old one's inode
    # number: as a rewrite in place. It is longer, and whole lines follow the old end.
    path = store.layout.journal("t1")
    old = path.read_bytes()
    made_tool = b'"type":"tool"' + b" " * (len('"assistant_message"') - len('"tool"'))
    replaced = old.replace(b'"type":"assistant_message"', made_tool)
    assert len(replaced) == len(old)
    other = ArchiveStore(tmp_path / "copy")  # the line a later write appends
    other.write_step({"id": "s9", "threadId": "t1", "type": "run", "createdAt": at(55)})
    appended = other.layout.journal("t1").read_bytes()
    other.close()
    with open(path, "r+b") as f:  # same inode
        f.write(replaced + appended)
        f.truncate()
    other = ArchiveStore(store.root)  # the index as the other process left it
    other.reindex()
    other.close()

    store.write_step({**answer, "output": "some new words"})  # no type: s1 stays a tool step

    assert listing(store, user, "new words") == []
    assert_index_as_rebuilt(store, user, ["new words", "secret"])


def test_a_tool_step_written_to_a_long_thread_after_a_restart_reads_no_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a restart, the first run or tool step written to a long thread costs at most
    a question to the index, not a fold of the whole journal: in the ``flush`` mode the
    write runs on the event loop, where a fold of a thread of thousands of steps took
    tens of milliseconds. The type of a step asked of the index is still right: a message
    of the thread made a tool step here leaves the index."""
    first = ArchiveStore(tmp_path)
    user = first.upsert_user("alice")["id"]
    first.update_thread("t1", user_id=user)
    for n in range(50):
        kind = "user_message" if n % 2 else "run"
        first.write_step(
            {"id": f"s{n}", "threadId": "t1", "type": kind, "output": f"text{n:02d}end"}
        )
    first.close()
    store = ArchiveStore(tmp_path)
    folds: list[str] = []
    real = FoldedJournals.folded

    def folded(self: FoldedJournals, thread_id: str) -> Any:
        folds.append(thread_id)
        return real(self, thread_id)

    monkeypatch.setattr(FoldedJournals, "folded", folded)
    store.write_step({"id": "tool", "threadId": "t1", "type": "tool", "output": "out"})
    store.write_step({"id": "tool", "threadId": "t1", "type": "tool", "output": "more"})
    store.write_step({"id": "s0", "threadId": "t1", "type": "run", "output": "again"})
    store.write_step({"id": "s1", "threadId": "t1", "type": "tool"})
    assert folds == []
    assert listing(store, user, "text01end") == []  # s1 is no message any more
    assert listing(store, user, "text03end") == ["t1"]
    assert verify(store).problems == []
    store.close()
