"""Failed admin authentication is slowed, per source, in memory.

Each failure from a source doubles the delay before its 401 (0.1 s, 0.2 s … up to 5 s), and a
source's failures are answered one at a time, so guessing from one address runs at most one
attempt per delay however many connections it opens. A success or 15 quiet minutes forget the
source. Bounded: at most 10,000 sources are remembered (the oldest are dropped first), and a
correct token is never delayed, so an attacker sharing the operator's address (a proxy) slows
only wrong guesses.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

BASE_DELAY_S = 0.1
MAX_DELAY_S = 5.0
FORGET_AFTER_S = 900.0
MAX_SOURCES = 10_000


@dataclass
class _Source:
    failures: int = 0
    last: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class FailedAuthThrottle:
    def __init__(
        self,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        max_sources: int = MAX_SOURCES,
    ) -> None:
        self._sleep = sleep
        self._max_sources = max_sources
        self._clock = clock
        self._sources: OrderedDict[str, _Source] = OrderedDict()

    def delay_for(self, failures: int) -> float:
        return min(MAX_DELAY_S, BASE_DELAY_S * 2 ** (failures - 1))

    async def failed(self, source: str) -> tuple[float, int]:
        """Wait out this failure's delay; returns it and the source's failures so far."""
        now = self._clock()
        entry = self._sources.get(source)
        if entry is None or now - entry.last > FORGET_AFTER_S:
            entry = _Source()
            self._sources[source] = entry
            while len(self._sources) > self._max_sources:
                self._sources.popitem(last=False)
        self._sources.move_to_end(source)
        async with entry.lock:
            entry.failures += 1
            entry.last = self._clock()
            failures = entry.failures
            delay = self.delay_for(failures)
            await self._sleep(delay)
        return delay, failures

    def succeeded(self, source: str) -> None:
        if self._sources:
            self._sources.pop(source, None)

    def failures(self, source: str) -> int:
        entry = self._sources.get(source)
        return entry.failures if entry else 0
