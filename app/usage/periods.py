"""Budget periods: a calendar month (UTC) or a fixed duration counted from an anchor."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

MONTH = "month"
MIN_PERIOD_S = 3600
# Ten years: a longer "period" is a budget that never resets; the bound keeps every period start
# and end inside what datetime and timestamptz hold.
MAX_PERIOD_S = 3650 * 86400
_DURATION = re.compile(r"([0-9]{1,10})(?:\.([0-9]{1,6}))?([dhs]?)")
_UNIT_S = {"d": 86400, "h": 3600, "s": 1, "": 1}


def parse_period(value: str) -> str:
    """'month', or a duration: '30d', '7d', '24h', '1.5d', or seconds. Returns the canonical
    form. Plain digits only: no exponent, no 'inf'."""
    if value == MONTH:
        return MONTH
    m = _DURATION.fullmatch(value)
    if m is None:
        raise ValueError("budget_period is 'month' or a duration like '30d', '24h'")
    whole, frac, unit = m.groups()
    seconds = int(
        int(whole) * _UNIT_S[unit] + int(frac or 0) * _UNIT_S[unit] / 10 ** len(frac or "")
    )
    if seconds < MIN_PERIOD_S:
        raise ValueError("a budget period is at least one hour")
    if seconds > MAX_PERIOD_S:
        raise ValueError("a budget period is at most 3650 days")
    return f"{seconds}s"


def period_bounds(period: str, at: datetime, anchor: datetime | None) -> tuple[datetime, datetime]:
    at = at.astimezone(UTC)
    if period == MONTH:
        start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (
            start.replace(year=start.year + 1, month=1)
            if start.month == 12
            else start.replace(month=start.month + 1)
        )
        return start, end
    length = timedelta(seconds=int(period.removesuffix("s")))
    origin = (anchor or datetime(2020, 1, 1, tzinfo=UTC)).astimezone(UTC)
    n = (at - origin) // length
    start = origin + n * length
    return start, start + length
