"""FileDataLayer is a complete Chainlit data layer: every method of BaseDataLayer, with
Chainlit's signatures, found by Chainlit the way an app installs it."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chainlit")

from chainlit.data.base import BaseDataLayer
from chainlit.user import User

from filelayer import FileDataLayer
from tests.support.layer import step

ISSUE_METHODS = [
    "get_user",
    "create_user",
    "upsert_feedback",
    "delete_feedback",
    "create_element",
    "get_element",
    "delete_element",
    "create_step",
    "update_step",
    "delete_step",
    "get_thread_author",
    "delete_thread",
    "list_threads",
    "get_thread",
    "update_thread",
    "get_favorite_steps",
    "set_step_favorite",
    "build_debug_url",
    "close",
    "delete_user_session",
]

BASE_METHODS = sorted(
    name
    for name, member in inspect.getmembers(BaseDataLayer, inspect.isfunction)
    if not name.startswith("_")
)


def test_the_issue_lists_every_method_of_chainlits_base_data_layer() -> None:
    # If a Chainlit release adds a method, this test names it.
    assert set(BASE_METHODS) <= set(ISSUE_METHODS)


def test_file_data_layer_is_an_instantiable_base_data_layer(root: Path, in_tmp: Path) -> None:
    assert issubclass(FileDataLayer, BaseDataLayer)
    assert not FileDataLayer.__abstractmethods__
    assert isinstance(FileDataLayer(root), BaseDataLayer)


@pytest.mark.parametrize("name", ISSUE_METHODS)
def test_every_method_is_a_coroutine_function(name: str) -> None:
    if not hasattr(FileDataLayer, name) and not hasattr(BaseDataLayer, name):
        pytest.skip(f"this Chainlit's BaseDataLayer has no {name} (it came later)")
    assert inspect.iscoroutinefunction(getattr(FileDataLayer, name))


@pytest.mark.parametrize("name", BASE_METHODS)
def test_every_method_accepts_chainlits_arguments(name: str) -> None:
    # Chainlit calls some methods positionally and some by keyword
    # (update_thread(thread_id=..., name=...), delete_element(id, thread_id)).
    ours = inspect.signature(getattr(FileDataLayer, name)).parameters
    theirs = inspect.signature(getattr(BaseDataLayer, name)).parameters
    assert list(ours)[: len(theirs)] == list(theirs)
    for pname, param in theirs.items():
        if param.default is not inspect.Parameter.empty:
            assert ours[pname].default == param.default, pname
    extra = list(ours)[len(theirs) :]
    assert all(ours[p].default is not inspect.Parameter.empty for p in extra)


@pytest.mark.parametrize(
    "name", ["create_step", "update_step", "delete_step", "create_element", "delete_element"]
)
def test_queued_methods_keep_their_name_for_chainlits_queue(name: str) -> None:
    # Chainlit's queue groups calls by method.__name__ and replays them by that key.
    assert getattr(FileDataLayer, name).__name__ == name


async def test_build_debug_url_is_a_string(layer: Any) -> None:
    url = await layer.build_debug_url()
    assert isinstance(url, str)


async def test_delete_user_session_answers_true(layer: Any) -> None:
    assert await layer.delete_user_session("any-session-id") is True


async def test_close_twice_is_harmless_and_the_data_stays(layer: Any, root: Path) -> None:
    await layer.create_user(User(identifier="ann"))
    await layer.create_step(step("s1", type="user_message", output="kept"))
    await layer.close()
    await layer.close()
    again = FileDataLayer(root)
    assert (await again.get_user("ann")) is not None
    assert [s["output"] for s in (await again.get_thread("t1"))["steps"]] == ["kept"]
    await again.close()


async def test_chainlit_finds_the_layer_installed_with_the_decorator(registered: Any) -> None:
    from chainlit.data import get_data_layer

    assert get_data_layer() is registered
    assert isinstance(get_data_layer(), BaseDataLayer)


def test_the_default_root_is_chats_in_the_current_directory(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FILELAYER_ROOT", raising=False)
    dl = FileDataLayer()
    assert dl.root == in_tmp / "chats"
    assert (in_tmp / "chats" / "filelayer.json").is_file()
