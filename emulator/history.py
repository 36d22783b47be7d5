"""fal's request history, as `GET /v1/models/requests/by-endpoint` reads it.

Every request the queue accepted is recorded at submit — including one whose submit answer an
ambiguous-submit fault dropped: this list is how a gateway learns whether fal received it. An
entry outlives its result (results expire after `result_ttl_s`; the history keeps the request,
its input and its output as fal's request history does) and is forgotten only by the memory
bound `max_kept_results` (the oldest submits go first), like fal's retention.

Items are newest first by `sent_at` (when the submit was received); a cursor names the last item
of a page, so pages stay stable while new requests arrive.
"""

from __future__ import annotations

import base64
import itertools
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from emulator.billing import PlatformQueryError, parse_instant
from emulator.errors import loads_or_text

if TYPE_CHECKING:
    from emulator.queue import Job

DEFAULT_LIMIT, MAX_LIMIT = 50, 100
DEFAULT_WINDOW = timedelta(hours=24)
REQUEST_ID_WINDOW = timedelta(days=90)
EXPANSIONS = frozenset({"payloads"})


def _instant(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


def _cursor(raw: str | None) -> int | None:
    """The history number of the last item already seen (None: start from the newest)."""
    if not raw:
        return None
    try:
        return int(base64.urlsafe_b64decode(raw.encode()).decode())
    except ValueError as exc:
        raise PlatformQueryError("invalid cursor") from exc


class RequestHistory:
    def __init__(self, max_entries: int) -> None:
        self._entries: deque[tuple[int, Job]] = deque(maxlen=max_entries)
        self._numbers = itertools.count(1)

    def add(self, job: Job) -> None:
        self._entries.append((next(self._numbers), job))

    def clear(self) -> None:
        self._entries.clear()

    def by_endpoint(
        self,
        *,
        endpoint_id: str | None,
        request_id: str | None,
        start: str | None,
        end: str | None,
        limit: int,
        cursor: str | None,
        expand: list[str],
    ) -> dict[str, Any]:
        if not endpoint_id:
            raise PlatformQueryError("endpoint_id is required")
        unknown = set(expand) - EXPANSIONS
        if unknown:
            raise PlatformQueryError(f"expand accepts {sorted(EXPANSIONS)}, got {sorted(unknown)}")
        after = _cursor(cursor)
        end_at = parse_instant(end, datetime.now(UTC))
        window = REQUEST_ID_WINDOW if request_id else DEFAULT_WINDOW
        start_at = parse_instant(start, end_at - window)
        if start_at > end_at:
            raise PlatformQueryError("start must not be after end")
        low, high = start_at.timestamp(), end_at.timestamp()

        items: list[dict[str, Any]] = []
        last = None
        has_more = False
        for number, job in reversed(self._entries):
            if after is not None and number >= after:
                continue
            if job.endpoint_id != endpoint_id or not low <= job.submitted_at <= high:
                continue
            if request_id and job.request_id != request_id:
                continue
            if len(items) == limit:
                has_more = True
                break
            items.append(self._item(job, payloads="payloads" in expand))
            last = number
        next_cursor = None
        if has_more and last is not None:
            next_cursor = base64.urlsafe_b64encode(str(last).encode()).decode()
        return {"items": items, "next_cursor": next_cursor, "has_more": has_more}

    @staticmethod
    def _item(job: Job, *, payloads: bool) -> dict[str, Any]:
        outcome = job.outcome
        item: dict[str, Any] = {
            "request_id": job.request_id,
            "endpoint_id": job.endpoint_id,
            "started_at": _instant(job.started_at),
            "sent_at": _instant(job.submitted_at),
            "ended_at": _instant(job.completed_at),
            "status_code": outcome.status_code if outcome is not None else None,
            "duration": job.inference_time,
        }
        if payloads:
            # X-Fal-Store-IO: 0 asks fal not to keep payloads in its request history.
            stored = job.fal_headers.get("x-fal-store-io") != "0"
            output = loads_or_text(outcome.body) if stored and outcome is not None else None
            item["json_input"] = job.raw_input if stored else None
            item["json_output"] = output
        return item
