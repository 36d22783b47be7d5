"""The worker's periodic chores: expired idempotency keys and rate windows, usage that waited
for a price, ledger rows, webhook deliveries and files past retention, beats of workers long
gone, and the months of ``job_events`` partitions made ahead. Safe to run on every worker at
once: each piece is idempotent, takes its rows with SKIP LOCKED, or is taken by one worker."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db.engine import unit_of_work
from app.files import retention
from app.jobs import store
from app.kit.clock import utcnow
from app.kit.idempotency import prune_expired
from app.notifications import repository as webhooks
from app.storage import Storage
from app.usage import ledger, limits

log = structlog.get_logger(__name__)

# A worker silent this long is gone (a clean stop removes its own beat at once); its leases were
# taken over long ago.
GONE_WORKERS = timedelta(days=1)


async def housekeep(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, storage: Storage
) -> dict[str, int]:
    """One round; what it did, by chore."""
    partitions = await _add_event_partitions(sessionmaker)
    async with unit_of_work(sessionmaker) as session:
        done = {
            "idempotency_keys": await prune_expired(session),
            "rate_windows": await limits.prune(session),
            "settled_unpriced": await store.settle_blocked(
                session, bill_422=settings.bill_upstream_422
            )
            + await ledger.settle_unpriced_orphans(session, bill_422=settings.bill_upstream_422),
            "ledger_rows_pruned": await ledger.prune(session, settings.usage_retention),
            "webhook_deliveries_pruned": await webhooks.prune(
                session, settings.tenant_webhook_retention
            ),
            "worker_beats_pruned": await store.prune_beats(session, GONE_WORKERS),
            "files_removed": 0,
            "event_partitions_made": partitions,
        }
        if settings.retention_days is not None:
            done["files_removed"] = await retention.remove_expired(
                session, storage, settings.retention_days
            )
    if any(n for key, n in done.items() if key != "rate_windows"):
        log.info("housekeeping", **done)
    return done


async def _add_event_partitions(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """In a transaction of its own: failing to take the table's lock in time (or a DEFAULT
    partition already holding rows of a month to make) must not undo the other chores."""
    try:
        async with unit_of_work(sessionmaker) as session:
            made = await store.add_event_partitions(session, utcnow())
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("could not make the job_events partitions ahead; retried next round")
        return 0
    if made:
        log.info("job_events partitions made", partitions=made)
    return len(made)


async def run_housekeeping(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, storage: Storage
) -> None:
    """Every ``housekeeping_interval``, until cancelled."""
    while True:
        try:
            await housekeep(sessionmaker, settings, storage)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("housekeeping failed")
        await asyncio.sleep(settings.housekeeping_interval.total_seconds())
