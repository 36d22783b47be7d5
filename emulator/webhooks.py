"""Webhook delivery (fal -> the `fal_webhook` URL of a request), with fault injection.

Delivery follows fal's documentation: POST of the JSON body with the four `X-Fal-Webhook-*`
headers (Ed25519, see `signing.py`); any 2xx is success; other answers and connection errors are
retried after each delay of `webhook_retry_schedule`; a 3xx is a permanent failure (never
followed). Unlike fal, loopback and private targets are allowed: the emulator's whole purpose is
to call a gateway running on the same machine or network.

Every attempt is recorded and readable at `GET /_emulator/webhooks`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from emulator.config import Knobs
from emulator.faults import chance
from emulator.signing import WebhookSigner

log = logging.getLogger("emulator.webhooks")

PAYLOAD_ERROR = (
    "Response payload is not JSON serializable. Either return a JSON serializable object or "
    "use the queue endpoint to retrieve the response."
)


def webhook_body(
    request_id: str, status_code: int, result: bytes, *, payload_error: bool = False
) -> bytes:
    """The documented body: OK + payload, ERROR + error + payload, or payload null + error."""
    body: dict[str, Any] = {"request_id": request_id, "gateway_request_id": request_id}
    if payload_error:
        body.update(status="OK", payload=None, payload_error=PAYLOAD_ERROR)
    elif 200 <= status_code < 300:
        body.update(status="OK", payload=json.loads(result))
    else:
        try:
            payload = json.loads(result)
        except ValueError:
            payload = None
        body.update(status="ERROR", error=f"Invalid status code: {status_code}", payload=payload)
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass(eq=False)
class Delivery:
    delivery_id: int
    request_id: str
    url: str
    body: bytes
    delay_s: float = 0.0
    send_duplicate: bool = False  # deliver a copy after this one succeeds
    is_duplicate: bool = False  # this delivery is that copy
    bad_signature: bool = False
    reordered: bool = False
    first_attempt_done: asyncio.Event = field(default_factory=asyncio.Event)


class WebhookDispatcher:
    def __init__(
        self,
        signer: WebhookSigner,
        user_id: str,
        knobs: Callable[[], Knobs],
        max_attempts: int = 200_000,
    ) -> None:
        self._signer = signer
        self._user_id = user_id
        self._knobs = knobs
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: Delivery | None = None
        self._held_timer: asyncio.TimerHandle | None = None
        self._client: httpx.AsyncClient | None = None
        self.attempts: deque[dict[str, Any]] = deque(maxlen=max_attempts)

    async def start(self) -> None:
        self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._client is not None:
            await self._client.aclose()

    def clear(self) -> None:
        """Forget the attempts and abandon deliveries still pending (used by reset)."""
        for task in list(self._tasks):
            task.cancel()
        self._held = None
        if self._held_timer is not None:
            self._held_timer.cancel()
        self.attempts.clear()

    # --- scheduling ------------------------------------------------------------------------
    def enqueue(self, request_id: str, url: str, body: bytes, rng: random.Random) -> None:
        knobs = self._knobs()
        delivery = Delivery(next(self._ids), request_id, url, body)
        if chance(knobs.webhook_drop_rate, rng):
            self._record(delivery, 0, outcome="dropped")
            return
        delivery.bad_signature = chance(knobs.webhook_bad_signature_rate, rng)
        delivery.send_duplicate = chance(knobs.webhook_duplicate_rate, rng)
        delivery.delay_s = knobs.webhook_delay.sample(rng)
        reorder = chance(knobs.webhook_reorder_rate, rng)

        held = self._held
        if held is not None:
            # Release the held webhook only after this later one has been tried once.
            self._held = None
            if self._held_timer is not None:
                self._held_timer.cancel()
            self._spawn(self._deliver(delivery))
            self._spawn(self._deliver(held, after=delivery))
        elif reorder:
            delivery.reordered = True
            self._held = delivery
            self._held_timer = asyncio.get_running_loop().call_later(
                knobs.webhook_reorder_hold_s, self._release_held
            )
        else:
            self._spawn(self._deliver(delivery))

    def _release_held(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            self._spawn(self._deliver(held))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- delivery --------------------------------------------------------------------------
    async def _deliver(self, delivery: Delivery, after: Delivery | None = None) -> None:
        if after is not None:
            await after.first_attempt_done.wait()
        if delivery.delay_s > 0:
            await asyncio.sleep(delivery.delay_s)
        schedule = list(self._knobs().webhook_retry_schedule)
        attempt = 0
        try:
            while True:
                attempt += 1
                outcome = await self._attempt(delivery, attempt, retries_left=len(schedule))
                delivery.first_attempt_done.set()
                if outcome != "retrying":
                    break
                await asyncio.sleep(schedule.pop(0))
        finally:
            delivery.first_attempt_done.set()
        if outcome == "delivered" and delivery.send_duplicate:
            copy = Delivery(
                next(self._ids), delivery.request_id, delivery.url, delivery.body, is_duplicate=True
            )
            await asyncio.sleep(0.05)
            await self._deliver(copy)

    async def _attempt(self, delivery: Delivery, attempt: int, retries_left: int) -> str:
        assert self._client is not None
        timestamp = str(int(time.time()))
        signature = self._signer.signature(
            delivery.request_id, self._user_id, timestamp, delivery.body
        )
        if delivery.bad_signature:
            signature = signature[:-8] + ("0" * 8 if signature[-8:] != "0" * 8 else "1" * 8)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "fal-webhook (foley emulator)",
            "X-Fal-Webhook-Request-Id": delivery.request_id,
            "X-Fal-Webhook-User-Id": self._user_id,
            "X-Fal-Webhook-Timestamp": timestamp,
            "X-Fal-Webhook-Signature": signature,
        }
        started = time.monotonic()
        status_code: int | None = None
        error: str | None = None
        try:
            response = await self._client.post(
                delivery.url,
                content=delivery.body,
                headers=headers,
                timeout=self._knobs().webhook_timeout_s,
            )
            status_code = response.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        if status_code is not None and 200 <= status_code < 300:
            outcome = "delivered"
        elif status_code is not None and 300 <= status_code < 400:
            outcome = "permanent_failure"
        elif retries_left > 0:
            outcome = "retrying"
        else:
            outcome = "failed"
        self._record(
            delivery,
            attempt,
            outcome=outcome,
            status_code=status_code,
            error=error,
            elapsed_ms=round((time.monotonic() - started) * 1000, 1),
        )
        return outcome

    def _record(self, delivery: Delivery, attempt: int, **fields: Any) -> None:
        self.attempts.append(
            {
                "delivery_id": delivery.delivery_id,
                "request_id": delivery.request_id,
                "url": delivery.url,
                "attempt": attempt,
                "at": datetime.now(UTC).isoformat(),
                "duplicate": delivery.is_duplicate,
                "bad_signature": delivery.bad_signature,
                "reordered": delivery.reordered,
                "status_code": None,
                "error": None,
                **fields,
            }
        )
