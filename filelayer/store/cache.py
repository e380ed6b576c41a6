"""The one size-limited cache of the store: what a process remembers of thread files
(where an id lives, a thread's folded journal, its tombstones, its author...), the most
recently used entries kept, the oldest forgotten past a size."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

_K = TypeVar("_K")
_V = TypeVar("_V")


class Lru(Generic[_K, _V]):
    """A map of at most ``size`` entries, least recently stored first out.

    Only :meth:`put` and :meth:`take` make an entry recent; :meth:`get` does not (a
    lookup on the write path should cost a dictionary lookup). ``cache[key] = value``
    is a single assignment, neither reordering nor evicting: safe from a worker thread
    while another thread uses the cache (see :meth:`Compactor.compact_journal
    <filelayer.store.compaction.Compactor.compact_journal>`)."""

    __slots__ = ("_data", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[_K, _V] = OrderedDict()

    def get(self, key: _K) -> _V | None:
        return self._data.get(key)

    def put(self, key: _K, value: _V) -> None:
        """Store ``value`` as the most recent entry, forgetting the oldest past the size."""
        data = self._data
        data[key] = value
        data.move_to_end(key)
        if len(data) > self.size:
            data.popitem(last=False)

    def put_all(self, keys: Iterable[_K], value: _V) -> None:
        """Store ``value`` under each of ``keys`` at once (a thread's step ids, read
        together). Keys new to the cache become the most recent; keys already in it
        keep their place (not made recent): one C call for the lot."""
        data = self._data
        data.update(zip(keys, itertools.repeat(value)))
        while len(data) > self.size:
            data.popitem(last=False)

    def take(self, key: _K, make: Callable[[], _V]) -> _V:
        """The entry of ``key`` (made by ``make`` if there is none), now the most recent."""
        data = self._data
        value = data.pop(key, None)
        if value is None:
            value = make()
        data[key] = value
        while len(data) > self.size:
            data.popitem(last=False)
        return value

    def pop(self, key: _K) -> _V | None:
        return self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def keys(self) -> list[_K]:
        """The keys, most recent last."""
        return list(self._data)

    def items(self) -> list[tuple[_K, _V]]:
        """The entries, most recent last."""
        return list(self._data.items())

    def __setitem__(self, key: _K, value: _V) -> None:
        self._data[key] = value

    def __contains__(self, key: object) -> bool:
        return key in self._data
