"""The housekeeping makes the months of job_events partitions ahead, one worker at a time."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, async_sessionmaker

from app.config import Settings
from app.jobs import store
from app.jobs.store.upkeep import EVENT_PARTITIONS_AHEAD
from app.kit.clock import utcnow
from app.storage import storage_from_settings
from app.worker.housekeeping import housekeep
from tests.conftest import TenantCreds

KLING = {"model": "kling-video-to-audio", "input": {"video_url": "https://x.example/a.mp4"}}


def _name(year: int, month: int) -> str:
    return f"job_events_y{year:04d}m{month:02d}"


async def _partitions(connection: AsyncConnection) -> set[str]:
    rows = await connection.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'job_events'::regclass"
        )
    )
    return {r[0] for r in rows}


async def test_the_months_ahead_are_made_once_across_a_year_end(
    sessionmaker: async_sessionmaker, connection: AsyncConnection
) -> None:
    async with sessionmaker() as session, session.begin():
        made = await store.add_event_partitions(session, datetime(2031, 11, 20, tzinfo=UTC))
    assert made == [_name(2031, 11), _name(2031, 12), _name(2032, 1)]
    assert set(made) <= await _partitions(connection)
    async with sessionmaker() as session, session.begin():
        assert await store.add_event_partitions(session, datetime(2031, 12, 31, tzinfo=UTC)) == [
            _name(2032, 2)
        ]
    bounds = await connection.scalar(
        text("SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = :n"),
        {"n": _name(2031, 12)},
    )
    assert bounds == ("FOR VALUES FROM ('2031-12-01 00:00:00+00') TO ('2032-01-01 00:00:00+00')")


async def test_a_jobs_events_live_in_the_partition_of_its_creation_month(
    api: httpx.AsyncClient, tenant: TenantCreds, connection: AsyncConnection
) -> None:
    r = await api.post("/v1/jobs", json=KLING, headers=tenant.headers)
    assert r.status_code == 202, r.text
    now = utcnow()
    rows = await connection.execute(
        text(
            "SELECT e.tableoid::regclass::text, e.job_created_at = j.created_at FROM job_events e "
            "JOIN jobs j ON j.id = e.job_id WHERE e.job_id = :id"
        ),
        {"id": r.json()["id"]},
    )
    assert [tuple(row) for row in rows] == [(_name(now.year, now.month), True)]


async def test_another_worker_making_them_is_left_to_it(
    sessionmaker: async_sessionmaker, engine
) -> None:  # type: ignore[no-untyped-def]
    # A second worker's round while the first holds the partitions' lock: it skips.
    async with engine.connect() as other:
        await other.execute(text("SELECT pg_advisory_lock(72190003)"))
        try:
            async with sessionmaker() as session, session.begin():
                assert (
                    await store.add_event_partitions(session, datetime(2033, 1, 1, tzinfo=UTC))
                    == []
                )
        finally:
            await other.execute(text("SELECT pg_advisory_unlock(72190003)"))


async def test_housekeeping_makes_a_missing_month_ahead(
    sessionmaker: async_sessionmaker, connection: AsyncConnection, settings: Settings
) -> None:
    now = utcnow()
    y, m = divmod(now.month - 1 + EVENT_PARTITIONS_AHEAD, 12)
    last = _name(now.year + y, m + 1)
    await connection.execute(text(f'DROP TABLE IF EXISTS "{last}"'))
    assert last not in await _partitions(connection)
    done = await housekeep(sessionmaker, settings, storage_from_settings(settings))
    assert done["event_partitions_made"] == 1
    assert last in await _partitions(connection)
    again = await housekeep(sessionmaker, settings, storage_from_settings(settings))
    assert again["event_partitions_made"] == 0
