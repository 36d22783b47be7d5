"""Waiting for a condition with a deadline, never sleeping and then asserting.

    await eventually(lambda: not worker.running, timeout=30, what="the steps to end")
    row = await eventually(fetch_row, timeout=10, what="the job released")   # async checks too
    eventually_sync(lambda: emu.webhooks(rid), timeout=5, what="a delivery attempt")

``check`` is called until it returns something truthy, which is returned; past the deadline an
AssertionError says what was awaited and what the check last returned. A timeout here is a
deadline, not a measurement: it may be generous, a passing test never waits for it.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_INTERVAL_S = 0.05


class _Deadline:
    def __init__(self, timeout: float, what: str | None, check: Callable[..., Any]) -> None:
        self.at = time.monotonic() + timeout
        self.timeout = timeout
        self.what = what or getattr(check, "__name__", repr(check))

    def check(self, last: object) -> None:
        """Past the deadline: fail, saying what was awaited and what was seen last."""
        if time.monotonic() >= self.at:
            raise AssertionError(
                f"still waiting for {self.what} after {self.timeout} s (last seen: {last!r})"
            )


@overload
async def eventually(
    check: Callable[[], Awaitable[T]],
    *,
    timeout: float = ...,
    interval: float = ...,
    what: str | None = ...,
) -> T: ...


@overload
async def eventually(
    check: Callable[[], T],
    *,
    timeout: float = ...,
    interval: float = ...,
    what: str | None = ...,
) -> T: ...


async def eventually(
    check: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    interval: float = DEFAULT_INTERVAL_S,
    what: str | None = None,
) -> T:
    """Call ``check`` (awaiting what it returns when awaitable) until its result is truthy."""
    deadline = _Deadline(timeout, what, check)
    while not (value := await _result_of(check)):
        deadline.check(value)
        await asyncio.sleep(interval)
    return value


async def _result_of(check: Callable[[], T | Awaitable[T]]) -> T:
    result = check()
    return await result if inspect.isawaitable(result) else result


def eventually_sync(
    check: Callable[[], T],
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    interval: float = DEFAULT_INTERVAL_S,
    what: str | None = None,
) -> T:
    """``eventually`` for synchronous tests (blocks the thread between checks)."""
    deadline = _Deadline(timeout, what, check)
    while not (value := check()):
        deadline.check(value)
        time.sleep(interval)
    return value
