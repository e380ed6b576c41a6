"""The store's one size-limited cache (``filelayer.store.cache.Lru``): what it keeps,
what it forgets first, and which operations make an entry recent."""

from __future__ import annotations

from filelayer.store.cache import Lru


def test_the_least_recently_stored_entry_goes_first() -> None:
    cache: Lru[str, int] = Lru(2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("a", 10)  # stored again: now the most recent
    cache.put("c", 3)
    assert "b" not in cache
    assert (cache.get("a"), cache.get("c")) == (10, 3)


def test_a_lookup_does_not_make_an_entry_recent() -> None:
    """``get`` is the write path's lookup: a dictionary lookup, nothing more."""
    cache: Lru[str, int] = Lru(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert "a" not in cache and "b" in cache


def test_take_makes_the_entry_once_and_keeps_it_recent() -> None:
    cache: Lru[str, list[int]] = Lru(2)
    made = cache.take("a", list)
    made.append(1)
    cache.put("b", [2])
    assert cache.take("a", list) is made  # the same object, now the most recent
    cache.put("c", [3])
    assert "b" not in cache and cache.get("a") == [1]


def test_an_assignment_neither_reorders_nor_evicts() -> None:
    """What a compaction in a worker thread does while the event loop writes."""
    cache: Lru[str, int] = Lru(2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache["a"] = 10
    cache["c"] = 3  # over the size until the next put
    assert ("a" in cache, "b" in cache, "c" in cache) == (True, True, True)
    cache.put("d", 4)
    assert "a" not in cache and cache.get("d") == 4


def test_pop_and_clear_forget() -> None:
    cache: Lru[str, int] = Lru(4)
    cache.put("a", 1)
    assert cache.pop("a") == 1 and cache.pop("a") is None
    cache.put("b", 2)
    cache.clear()
    assert "b" not in cache
