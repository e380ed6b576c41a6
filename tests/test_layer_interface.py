"""FileDataLayer is a complete Chainlit data layer."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

pytest.importorskip("chainlit")

from chainlit.data.base import BaseDataLayer

from filelayer import FileDataLayer

CHAINLIT_METHODS = [
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


def test_it_is_a_base_data_layer_with_no_abstract_method_left(layer: Any) -> None:
    assert isinstance(layer, BaseDataLayer)
    assert not getattr(FileDataLayer, "__abstractmethods__", set())


@pytest.mark.parametrize("name", CHAINLIT_METHODS)
def test_every_method_is_a_coroutine_function(name: str) -> None:
    assert inspect.iscoroutinefunction(getattr(FileDataLayer, name))


@pytest.mark.parametrize(
    "name", ["create_step", "update_step", "delete_step", "create_element", "delete_element"]
)
def test_queued_methods_keep_their_name_for_chainlits_queue(name: str) -> None:
    # Chainlit's queue groups calls by method.__name__ and replays them by that key.
    assert getattr(FileDataLayer, name).__name__ == name


async def test_misc_methods(layer: Any) -> None:
    assert await layer.build_debug_url() == ""
    assert await layer.delete_user_session("any-session") is True
    await layer.close()
    await layer.close()  # closing twice is harmless
