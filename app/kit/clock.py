"""Time in one place, so tests can move it (month rollovers, lease expiry, webhook windows)."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
