"""fal's platform API (``https://api.fal.ai/v1``, an admin-scope key): what fal knows of the
requests it received, whatever became of their submit answers.

The gateway asks it one question on its own behalf: did fal receive a submit whose answer was
lost? ``requests_by_endpoint`` lists the requests of a model in a time window with their inputs
(``expand=payloads``); ``tagged_billing_events`` finds billed requests by the tags the gateway
sent with them (``X-Fal-Tags``), where fal reports tags for the account. Answers are parsed into
plain values here; the worker decides what they mean (app.jobs.steps.dispatch).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from app.upstream.errors import TransientUpstreamError, UpstreamError

PAGE = 100
MAX_PAGES = 20  # 2,000 requests of one model around one submit: more is not an answer


@dataclass(frozen=True)
class PlatformRequest:
    request_id: str
    endpoint_id: str
    sent_at: datetime | None
    ended_at: datetime | None
    status_code: int | None
    json_input: Any


class PlatformClient:
    def __init__(self, http: httpx.AsyncClient, platform_url: str, key: str) -> None:
        self._http = http
        self._base = platform_url.rstrip("/")
        self._key = key

    def __repr__(self) -> str:  # never show the key
        return f"PlatformClient({self._base!r})"

    async def requests_by_endpoint(
        self, endpoint_id: str, *, start: datetime, end: datetime
    ) -> list[PlatformRequest]:
        """Every request fal received for ``endpoint_id`` sent in [start, end], with its input.
        Raises ``UpstreamError`` when fal cannot say (unreachable, refused, too many)."""
        items: list[PlatformRequest] = []
        params: dict[str, Any] = {
            "endpoint_id": endpoint_id,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "expand": "payloads",
            "limit": PAGE,
        }
        for _ in range(MAX_PAGES):
            body = await self._get("/models/requests/by-endpoint", params)
            items.extend(_request(item) for item in body.get("items") or [])
            cursor = body.get("next_cursor")
            if not body.get("has_more") or not cursor:
                return items
            params = {**params, "cursor": cursor}
        raise UpstreamError(
            f"more than {PAGE * MAX_PAGES} requests of {endpoint_id} in the window",
            operation="requests_by_endpoint",
        )

    async def tagged_billing_events(self, tag: tuple[str, str]) -> list[dict[str, Any]]:
        """Billed requests carrying ``tag`` (empty where fal does not report tags)."""
        params = {"source": "tagged-billed", "tag": f"{tag[0]}={tag[1]}", "limit": PAGE}
        body = await self._get("/models/billing-events", params)
        return list(body.get("billing_events") or [])

    async def _get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._http.get(
                f"{self._base}{path}",
                params=params,
                headers={"Authorization": f"Key {self._key}"},
            )
        except httpx.HTTPError as exc:
            raise TransientUpstreamError(
                f"fal's platform API: {exc}", operation=path.rsplit("/", 1)[-1]
            ) from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientUpstreamError(
                f"fal's platform API answered {response.status_code}",
                operation=path.rsplit("/", 1)[-1],
                status_code=response.status_code,
            )
        if not response.is_success:
            raise UpstreamError(
                f"fal's platform API answered {response.status_code}: {response.text[:200]}",
                operation=path.rsplit("/", 1)[-1],
                status_code=response.status_code,
            )
        body = response.json()
        if not isinstance(body, dict):
            raise UpstreamError("fal's platform API answered no object", operation=path)
        return body


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _request(item: dict[str, Any]) -> PlatformRequest:
    return PlatformRequest(
        request_id=str(item.get("request_id")),
        endpoint_id=str(item.get("endpoint_id")),
        sent_at=_instant(item.get("sent_at")),
        ended_at=_instant(item.get("ended_at")),
        status_code=item.get("status_code"),
        json_input=item.get("json_input"),
    )
