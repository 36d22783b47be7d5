"""One wake-up mechanism per API process for everything that waits on a job's news.

The event stream (``Accept: text/event-stream``) and held ``Prefer: wait`` requests subscribe
here by job id. The hub holds one LISTEN connection on the events channel (every committed job
event but a creation is announced there by a trigger, as ``<job_id>:<seq>:<type>``) and wakes
the subscribers of the job named. A notification is a signal, never the data: the subscriber
reads the job's new events (or the job) from the database by seq, so a notification lost, late
or doubled changes nothing but when it reads. Subscribe *before* reading what is there, so an
event committed between the read and the subscription still wakes it.

The LISTEN connection is held as the worker's is (app.db.listen): a lost one is noticed at once
and retried every half second. Every (re)connection wakes every subscriber, since NOTIFYs sent
while nobody listened were never heard: each reads again from where it was. Waiting costs no
query: 1,000 held requests on a quiet tick cost nothing, a notification a dictionary lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.listen import PING_S, RETRY_S, listen_forever
from app.jobs.store import EVENTS_CHANNEL
from app.models import TERMINAL_STATUSES

log = structlog.get_logger(__name__)


# The events that end a job, one per final status: nothing follows them (a terminal job absorbs
# every event).
TERMINAL_EVENTS = frozenset(f"job.{status.value}" for status in TERMINAL_STATUSES)


class Subscription:
    """A waiter on one job's news, until closed (a context manager, or ``close()`` by whoever
    took it over). ``terminal_only``: woken by the job's end (and by a LISTEN reconnection,
    after which it must look), not by each of its events."""

    __slots__ = ("_hub", "_woken", "job_id", "terminal_only")

    def __init__(self, hub: JobHub, job_id: uuid.UUID, *, terminal_only: bool) -> None:
        self._hub = hub
        self.job_id = job_id
        self.terminal_only = terminal_only
        self._woken = asyncio.Event()

    def close(self) -> None:
        self._hub._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def wake(self, kind: str | None) -> None:
        """``kind`` None: the hub reconnected, anything may have happened."""
        if kind is None or not self.terminal_only or kind in TERMINAL_EVENTS:
            self._woken.set()

    async def wait(self, within: float | None) -> bool:
        """Until woken (True; the wake-up is consumed) or ``within`` seconds (False)."""
        if not self._woken.is_set():
            try:
                async with asyncio.timeout(within):
                    await self._woken.wait()
            except TimeoutError:
                return False
        self._woken.clear()
        return True


class JobHub:
    """Subscriptions by job id, fed by this process's one LISTEN connection."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        ping_s: float = PING_S,
        retry_s: float = RETRY_S,
    ) -> None:
        self.engine = engine
        self.ping_s = ping_s
        self.retry_s = retry_s
        self._subscribers: dict[uuid.UUID, set[Subscription]] = {}
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()
        self.connections = 0  # how many times LISTEN was (re)established

    @property
    def waiting(self) -> int:
        """Subscriptions open now (a gauge for tests and benchmarks)."""
        return sum(len(s) for s in self._subscribers.values())

    def subscribe(self, job_id: uuid.UUID, *, terminal_only: bool = False) -> Subscription:
        sub = Subscription(self, job_id, terminal_only=terminal_only)
        self._subscribers.setdefault(job_id, set()).add(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._subscribers.get(sub.job_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscribers[sub.job_id]

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        job, _, rest = payload.partition(":")
        try:
            job_id = uuid.UUID(job)
        except ValueError:
            log.warning("unexpected job event notification", payload=payload)
            return
        subs = self._subscribers.get(job_id)
        if subs:
            kind = rest.partition(":")[2]
            for sub in subs:
                sub.wake(kind)

    def _wake_all(self) -> None:
        for subs in self._subscribers.values():
            for sub in subs:
                sub.wake(None)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen(self) -> None:
        def on_listening(_back: bool) -> None:
            self.connections += 1
            self.listening.set()
            # Whatever was announced before this LISTEN took effect was not heard.
            self._wake_all()

        await listen_forever(
            self.engine,
            {EVENTS_CHANNEL: self._on_notify},
            on_listening=on_listening,
            on_lost=self.listening.clear,
            ping_s=self.ping_s,
            retry_s=self.retry_s,
        )
