"""What a worker process runs to tell tenants: the fan-out loop and the sender, as tasks of
their own beside the job steps (app.worker.runner starts them).

Both wake on ``NOTIFY foley_webhooks`` (heard on the worker's LISTEN connection): ``outbox``
when an event someone wants committed, ``delivery`` when the API made one (a ping, a
redelivery). The NOTIFY is a hint: both also look every ``FOLEY_WORKER_POLL_INTERVAL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db.driver import DriverPool
from app.files.outbound import outbound_policy
from app.notifications import fanout, service
from app.notifications.queue import WAKE_CHANNEL, WAKE_DELIVERIES
from app.notifications.sender import Sender
from app.notifications.transport import Transport

log = structlog.get_logger(__name__)


class Notifications:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        driver: DriverPool,
        settings: Settings,
        *,
        owner: str,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.transport = Transport(outbound_policy(settings), settings.tenant_webhook_timeout)
        self.sender = Sender(driver, settings, self.transport, owner=owner, disable=self._disable)
        self._outbox = asyncio.Event()
        self.fanned_out = 0  # outbox rows taken (for tests and the log at stop)

    def listeners(self) -> dict[str, Callable[[str], None]]:
        """Channel → what a NOTIFY on it (its payload) does."""

        def on_webhooks(payload: str) -> None:
            if payload == WAKE_DELIVERIES:
                self.sender.wake()
            else:
                self._outbox.set()

        return {WAKE_CHANNEL: on_webhooks}

    def wake(self) -> None:
        """Look now (e.g. after the LISTEN connection was lost: NOTIFYs were missed)."""
        self._outbox.set()
        self.sender.wake()

    async def run(self) -> None:
        """Until cancelled."""
        tasks = [
            asyncio.create_task(self._fan_out_loop(), name="webhook-fanout"),
            asyncio.create_task(self.sender.run(), name="webhook-sender"),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.transport.aclose()

    async def _fan_out_loop(self) -> None:
        poll = self.settings.worker_poll_interval.total_seconds()
        while True:
            self._outbox.clear()
            try:
                taken, made = await fanout.fan_out(self.sessionmaker, self.settings)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook fan-out failed; retrying")
                await asyncio.sleep(1.0)
                continue
            self.fanned_out += taken
            if made:
                self.sender.wake()
            if taken >= fanout.BATCH:
                continue  # a full batch: more may be waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox.wait(), poll)

    async def _disable(self, endpoint_id: uuid.UUID, reason: str) -> None:
        try:
            await service.disable_endpoint(self.sessionmaker, endpoint_id, reason)
        except Exception:
            log.exception("disabling a webhook endpoint failed", endpoint_id=str(endpoint_id))
