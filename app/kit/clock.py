"""Time in one place, so tests can move it (month rollovers, key expiry, grace periods).

Every module calls ``utcnow()``; a test replaces the source with ``frozen_at(...)`` /
``set_clock(...)``, which every caller sees (no import-time binding to patch around).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

_source: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731


def utcnow() -> datetime:
    return _source()


def set_clock(source: Callable[[], datetime]) -> Callable[[], datetime]:
    """Replace the clock; returns the previous source (tests restore it)."""
    global _source
    previous, _source = _source, source
    return previous


@contextmanager
def frozen_at(moment: datetime) -> Iterator[None]:
    previous = set_clock(lambda: moment)
    try:
        yield
    finally:
        set_clock(previous)
