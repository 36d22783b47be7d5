"""Gauges of what the database knows, served with the API's ``GET /metrics``.

Jobs by status and model, the queue's depth and its oldest job's age, fal slots in use, workers
alive, tenants' webhook backlog, each tenant's spend this month and budget: read by a scrape,
at most once per ``FOLEY_METRICS_REFRESH_INTERVAL`` (scrapes in between, from any number of
Prometheus servers, are answered from the last reading), five statements on one connection,
each one cheap whatever the size of the history: live jobs only (the claims' partial index),
beats, pending deliveries (a partial index), budgeted tenants, this month's daily rollups.
Nothing is read while nobody scrapes.

The API serves them, not the workers: every API process reads the same numbers (take ``max``
across them), and a worker's own metrics stay about the worker. The per-tenant series
(``tenant_id`` label: an id, never renamed) number one per tenant with a budget or with spend
this month.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from app.catalog.registry import CATALOG
from app.db.driver import DriverPool
from app.jobs import store
from app.kit.clock import utcnow
from app.kit.money import MICROS_PER_USD, NANOS_PER_USD
from app.models import JobStatus
from app.notifications import queue as deliveries
from app.usage import budgets
from app.usage import service as usage

log = structlog.get_logger(__name__)

LIVE_STATUSES = tuple(s.value for s in JobStatus if not s.terminal)


@dataclass
class Reading:
    """What the database said at ``at``."""

    at: datetime
    live: list[store.LiveJobs] = field(default_factory=list)
    workers: int = 0
    backlog: int = 0
    backlog_oldest: datetime | None = None
    spend_nanos: dict[str, int] = field(default_factory=dict)
    budgets: list[budgets.CurrentBudget] = field(default_factory=list)


class DatabaseGauges(Collector):
    """A Prometheus collector over the last reading; ``refresh()`` reads again when the last
    reading is older than ``max_age`` (called by the metrics endpoint before it renders)."""

    def __init__(
        self,
        driver: DriverPool,
        *,
        max_age: timedelta,
        fal_slots: int,
        worker_stale_after: timedelta,
    ) -> None:
        self.driver = driver
        self.max_age_s = max_age.total_seconds()
        self.fal_slots = fal_slots
        self.worker_stale_after = worker_stale_after
        self.reading: Reading | None = None
        self._read_at = float("-inf")  # monotonic
        self._lock = asyncio.Lock()
        self.failures = 0

    async def refresh(self) -> None:
        if time.monotonic() - self._read_at < self.max_age_s:
            return
        async with self._lock:  # concurrent scrapes share one reading
            if time.monotonic() - self._read_at < self.max_age_s:
                return
            try:
                self.reading = await self._read()
            except Exception as exc:
                # The last reading is kept (its age is a gauge): a scrape never fails for this.
                self.failures += 1
                log.warning("metrics: reading the database failed", error=str(exc))
            self._read_at = time.monotonic()

    async def _read(self) -> Reading:
        async with self.driver.acquire() as conn:
            reading = Reading(at=utcnow())
            reading.live = await store.live_jobs(conn)
            reading.workers = await store.workers_alive(conn, self.worker_stale_after)
            reading.backlog, reading.backlog_oldest = await deliveries.backlog(conn)
            spend = await usage.spend_this_month(conn)
            reading.spend_nanos = {str(tenant): nanos for tenant, nanos in spend.items()}
            reading.budgets = await budgets.current_budgets(conn)
        return reading

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # no reading at registration: collect() says what there is

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        r = self.reading
        yield GaugeMetricFamily(
            "foley_fal_slots",
            "Requests the account may have at fal at once (FOLEY_FAL_CONCURRENCY).",
            value=self.fal_slots,
        )
        yield CounterMetricFamily(
            "foley_metrics_database_failures",
            "Readings of the database for these gauges that failed (the last good one is served).",
            value=self.failures,
        )
        if r is None:
            return
        now = utcnow()
        yield GaugeMetricFamily(
            "foley_metrics_database_age_seconds",
            "Age of the database reading these gauges show.",
            value=(now - r.at).total_seconds(),
        )
        jobs = GaugeMetricFamily(
            "foley_jobs",
            "Live jobs (queued, starting, processing) by model and status.",
            labels=["model", "status"],
        )
        counts = {(j.model, j.status): j.jobs for j in r.live}
        # Every model of the catalog in every live status: an emptied one shows 0, not a series
        # that vanished (and a model that left the catalog, while it still has live jobs).
        for model in sorted({spec.id for spec in CATALOG} | {j.model for j in r.live}):
            for status in LIVE_STATUSES:
                jobs.add_metric([model, status], counts.get((model, status), 0))
        yield jobs
        yield GaugeMetricFamily(
            "foley_queue_depth",
            "Jobs waiting in the gateway to be sent to fal (queued, never sent).",
            value=sum(j.waiting for j in r.live),
        )
        oldest = min((j.oldest_waiting for j in r.live if j.oldest_waiting), default=None)
        yield GaugeMetricFamily(
            "foley_queue_oldest_age_seconds",
            "How long the oldest job waiting to be sent has waited (0: none waits).",
            value=0.0 if oldest is None else max(0.0, (r.at - oldest).total_seconds()),
        )
        yield GaugeMetricFamily(
            "foley_fal_slots_in_use",
            "Requests at fal (or being sent) that hold a slot of the account's concurrency.",
            value=sum(j.at_fal for j in r.live),
        )
        yield GaugeMetricFamily(
            "foley_workers_alive",
            "Workers that beat within FOLEY_WORKER_STALE_AFTER.",
            value=r.workers,
        )
        yield GaugeMetricFamily(
            "foley_tenant_webhook_backlog",
            "Deliveries of webhooks to tenants waiting for an attempt.",
            value=r.backlog,
        )
        yield GaugeMetricFamily(
            "foley_tenant_webhook_backlog_oldest_age_seconds",
            "How far past its due time the oldest waiting delivery is (0: none is late).",
            value=0.0
            if r.backlog_oldest is None
            else max(0.0, (r.at - r.backlog_oldest).total_seconds()),
        )
        spend = GaugeMetricFamily(
            "foley_tenant_spend_usd",
            "A tenant's settled spend this calendar month (UTC), in USD.",
            labels=["tenant_id"],
        )
        for tenant, nanos in sorted(r.spend_nanos.items()):
            spend.add_metric([tenant], nanos / NANOS_PER_USD)
        yield spend
        budget = GaugeMetricFamily(
            "foley_tenant_budget_usd",
            "A tenant's budget for its period, in USD.",
            labels=["tenant_id"],
        )
        spent = GaugeMetricFamily(
            "foley_tenant_budget_spent_usd",
            "Spent in the tenant's current budget period, in USD.",
            labels=["tenant_id"],
        )
        reserved = GaugeMetricFamily(
            "foley_tenant_budget_reserved_usd",
            "Reserved by the tenant's unfinished jobs in its current budget period, in USD.",
            labels=["tenant_id"],
        )
        remaining = GaugeMetricFamily(
            "foley_tenant_budget_remaining_usd",
            "Left of the tenant's budget in its current period (budget - spent - reserved), USD.",
            labels=["tenant_id"],
        )
        for b in sorted(r.budgets, key=lambda b: str(b.tenant_id)):
            labels = [str(b.tenant_id)]
            budget.add_metric(labels, b.budget_micros / MICROS_PER_USD)
            spent.add_metric(labels, b.spent_micros / MICROS_PER_USD)
            reserved.add_metric(labels, b.reserved_micros / MICROS_PER_USD)
            remaining.add_metric(labels, b.remaining_micros / MICROS_PER_USD)
        yield from (budget, spent, reserved, remaining)
