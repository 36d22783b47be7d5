"""Billing truth: what fal would charge for each request, read through fal's platform API shape.

Rules (fal documents only the first two; the rest are the emulator's stated choices):
- Per-video models (Kling) bill one unit per successful request.
- Per-compute-second models (ThinkSound) bill `metrics.inference_time` seconds.
- Per-output-second models (MMAudio, Mirelo, Sonilo) bill the requested output duration of a
  success times its samples (fal's "per second of output and per sample"); Sonilo without a
  duration bills the length it scored (the rest of the video).
- A price fal does not publish (HunyuanVideo-Foley's) is billed all the same, and left out of
  the pricing API.
- 5xx answers (infrastructure failures, start timeouts) are never billed.
- A 422 from the runner (media checks, download errors) bills the compute seconds spent before
  it on compute-second models when the knob `bill_runner_422` is on (default); other units: 0.
- A request cancelled while queued is not billed; one cancelled while running bills its compute
  seconds so far on compute-second models and nothing on the others.
- A schema 422 at submit never creates a request, so nothing is recorded.
"""

from __future__ import annotations

import base64
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

Unit = Literal["video", "compute_seconds", "seconds", "samples"]
Timeframe = Literal["minute", "hour", "day", "week", "month"]
TIMEFRAMES: tuple[Timeframe, ...] = ("minute", "hour", "day", "week", "month")


@dataclass(frozen=True, slots=True)
class Price:
    unit_price: float
    unit: Unit
    currency: str = "USD"
    published: bool = True  # listed by the pricing API


@dataclass(slots=True)
class UsageRecord:
    request_id: str
    endpoint_id: str
    unit: Unit
    unit_quantity: float
    unit_price: float
    cost: float
    billed: bool
    reason: str
    status_code: int
    submitted_at: datetime
    timestamp: datetime  # completion time: when fal records the billing event
    # The request's tags when tag reporting was on as the event was recorded; None when it was off.
    tags: dict[str, str] | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["submitted_at"] = self.submitted_at.isoformat()
        data["timestamp"] = self.timestamp.isoformat()
        return data


class PlatformQueryError(ValueError):
    """A bad query parameter of the platform API (answered 400)."""


def parse_instant(value: str | None, default: datetime) -> datetime:
    if not value:
        return default
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise PlatformQueryError(f"invalid ISO8601 date: {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def split_ids(values: Iterable[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _truncate(moment: datetime, timeframe: Timeframe) -> datetime:
    if timeframe == "minute":
        return moment.replace(second=0, microsecond=0)
    if timeframe == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if timeframe == "day":
        return day
    if timeframe == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def _advance(moment: datetime, timeframe: Timeframe) -> datetime:
    if timeframe == "month":
        return (moment.replace(day=28) + timedelta(days=4)).replace(day=1)
    step = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}
    return moment + step.get(timeframe, timedelta(weeks=1))


def auto_timeframe(start: datetime, end: datetime) -> Timeframe:
    """fal's documented auto-detection: minute (<2h), hour (<2d), day (<64d), week (<183d)."""
    span = end - start
    if span < timedelta(hours=2):
        return "minute"
    if span < timedelta(days=2):
        return "hour"
    if span < timedelta(days=64):
        return "day"
    if span < timedelta(days=183):
        return "week"
    return "month"


def _encode_cursor(offset: int) -> str:
    return base64.b64encode(str(offset).encode()).decode()


def _decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        return max(0, int(base64.b64decode(cursor).decode()))
    except ValueError as exc:
        raise PlatformQueryError("invalid cursor") from exc


TAGGED_BILLED = "tagged-billed"


def _tag_filters(values: list[str]) -> list[tuple[str, str]]:
    filters = []
    for value in values:
        key, sep, wanted = value.partition("=")
        if not sep or not key:
            raise PlatformQueryError(f"a tag filter is key=value, got {value!r}")
        filters.append((key, wanted))
    return filters


class Ledger:
    def __init__(self, prices: dict[str, Price], max_records: int = 1_000_000) -> None:
        self.prices = prices
        self.records: deque[UsageRecord] = deque(maxlen=max_records)

    def clear(self) -> None:
        self.records.clear()

    def add(self, record: UsageRecord) -> None:
        self.records.append(record)

    def for_request(self, request_id: str) -> UsageRecord | None:
        for record in reversed(self.records):
            if record.request_id == request_id:
                return record
        return None

    # --- platform API ----------------------------------------------------------------------
    def pricing(self, endpoint_ids: list[str]) -> dict[str, Any]:
        wanted = endpoint_ids or sorted(self.prices)
        prices = [
            {
                "endpoint_id": endpoint_id,
                "unit_price": self.prices[endpoint_id].unit_price,
                "unit": self.prices[endpoint_id].unit,
                "currency": self.prices[endpoint_id].currency,
            }
            for endpoint_id in wanted
            if endpoint_id in self.prices and self.prices[endpoint_id].published
        ]
        return {"prices": prices, "next_cursor": None, "has_more": False}

    def _select(
        self, endpoint_ids: list[str], start: datetime, end: datetime, request_ids: list[str]
    ) -> list[UsageRecord]:
        return [
            record
            for record in self.records
            if record.billed
            and start <= record.timestamp < end
            and (not endpoint_ids or record.endpoint_id in endpoint_ids)
            and (not request_ids or record.request_id in request_ids)
        ]

    def usage(
        self,
        *,
        endpoint_ids: list[str],
        start: str | None,
        end: str | None,
        timeframe: str | None,
        expand: list[str],
        bound_to_timeframe: bool = True,
    ) -> dict[str, Any]:
        now = datetime.now(UTC)
        start_at = parse_instant(start, now - timedelta(hours=24))
        end_at = parse_instant(end, now)
        if timeframe is not None and timeframe not in TIMEFRAMES:
            raise PlatformQueryError(f"timeframe must be one of {TIMEFRAMES}")
        frame: Timeframe = timeframe or auto_timeframe(start_at, end_at)  # type: ignore[assignment]
        if bound_to_timeframe:
            start_at = _truncate(start_at, frame)
            aligned_end = _truncate(end_at, frame)
            end_at = aligned_end if aligned_end == end_at else _advance(aligned_end, frame)
        expand = expand or ["time_series"]
        if not {"time_series", "summary"} & set(expand):
            raise PlatformQueryError("expand needs at least one of 'time_series' or 'summary'")
        records = self._select(endpoint_ids, start_at, end_at, [])
        answer: dict[str, Any] = {"next_cursor": None, "has_more": False}
        with_auth = "auth_method" in expand
        if "time_series" in expand:
            buckets: dict[datetime, list[UsageRecord]] = {}
            for record in records:
                buckets.setdefault(_truncate(record.timestamp, frame), []).append(record)
            answer["time_series"] = [
                {"bucket": bucket.isoformat(), "results": self._aggregate(items, with_auth)}
                for bucket, items in sorted(buckets.items())
            ]
        if "summary" in expand:
            answer["summary"] = self._aggregate(records, with_auth)
        return answer

    def _aggregate(self, records: list[UsageRecord], with_auth: bool) -> list[dict[str, Any]]:
        groups: dict[tuple[str, str, float], list[UsageRecord]] = {}
        for record in records:
            key = (record.endpoint_id, record.unit, record.unit_price)
            groups.setdefault(key, []).append(record)
        results = []
        for (endpoint_id, unit, unit_price), items in sorted(groups.items()):
            item: dict[str, Any] = {
                "endpoint_id": endpoint_id,
                "unit": unit,
                "quantity": round(sum(r.unit_quantity for r in items), 6),
                "unit_price": unit_price,
                "cost": round(sum(r.cost for r in items), 9),
                "currency": "USD",
            }
            if with_auth:
                item["auth_method"] = "Key"
            results.append(item)
        return results

    def billing_events(
        self,
        *,
        endpoint_ids: list[str],
        request_ids: list[str],
        start: str | None,
        end: str | None,
        limit: int,
        cursor: str | None,
        source: str | None = None,
        tags: list[str] | None = None,
        tag_reporting: bool = False,
    ) -> dict[str, Any]:
        """fal's billing events; `source=tagged-billed` keeps the tagged ones that carry every
        `tags` filter (`k=v`): nothing at all while the account's tag reporting is off."""
        if source not in (None, "billed", TAGGED_BILLED):
            raise PlatformQueryError(f"source must be 'billed' or {TAGGED_BILLED!r}")
        wanted = _tag_filters(tags or [])
        if wanted and source != TAGGED_BILLED:
            raise PlatformQueryError(f"tag filters need source={TAGGED_BILLED}")
        now = datetime.now(UTC)
        start_at = parse_instant(start, now - timedelta(hours=24))
        end_at = parse_instant(end, now + timedelta(seconds=1))
        records = self._select(endpoint_ids, start_at, end_at, request_ids)
        if source == TAGGED_BILLED:
            records = [
                record
                for record in records
                if tag_reporting
                and record.tags
                and all(record.tags.get(key) == value for key, value in wanted)
            ]
        records.sort(key=lambda record: record.timestamp, reverse=True)
        offset = _decode_cursor(cursor)
        page = records[offset : offset + limit]
        more = offset + limit < len(records)
        events = []
        for record in page:
            event: dict[str, Any] = {
                "request_id": record.request_id,
                "endpoint_id": record.endpoint_id,
                "timestamp": record.timestamp.isoformat().replace("+00:00", "Z"),
                "output_units": record.unit_quantity,
                "unit_price": record.unit_price,
                "percent_discount": None,
                "cost_estimate_nano_usd": round(record.cost * 1e9),
            }
            if tag_reporting:
                event["tags"] = dict(record.tags or {})
            events.append(event)
        return {
            "billing_events": events,
            "next_cursor": _encode_cursor(offset + limit) if more else None,
            "has_more": more,
        }
