"""Budget periods: a calendar month (UTC) or a fixed duration counted from an anchor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

MONTH = "month"


def parse_period(value: str) -> str:
    """'month', or a duration: '30d', '7d', '24h', or seconds. Returns the canonical form."""
    if value == MONTH:
        return MONTH
    units = {"d": 86400, "h": 3600, "s": 1}
    text = value.strip().lower()
    try:
        if text[-1] in units:
            seconds = int(float(text[:-1]) * units[text[-1]])
        else:
            seconds = int(text)
    except (ValueError, IndexError) as exc:
        raise ValueError("budget_period is 'month' or a duration like '30d', '24h'") from exc
    if seconds < 3600:
        raise ValueError("a budget period is at least one hour")
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
