"""A tiny per-process cache with a time to live, for values that may be a few seconds stale
(prices, learned ratios) and are read on every request."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class TTLCache(Generic[V]):
    def __init__(self, ttl_s: float, *, max_entries: int = 1024) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._data: dict[Hashable, tuple[float, V]] = {}

    async def get_or_load(self, key: Hashable, load: Callable[[], Awaitable[V]]) -> V:
        now = time.monotonic()
        hit = self._data.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = await load()
        if len(self._data) >= self.max_entries:
            self._data.clear()
        self._data[key] = (now + self.ttl_s, value)
        return value

    def peek(self, key: Hashable) -> tuple[bool, V | None]:
        """(True, value) while the key is fresh; (False, None) otherwise. Loads nothing."""
        hit = self._data.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return True, hit[1]
        return False, None

    def clear(self) -> None:
        self._data.clear()
