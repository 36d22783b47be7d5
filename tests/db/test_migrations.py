"""The migrations build the schema the models describe, and unwind to nothing."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from app.db import migrate
from tests.conftest import RUN_ID
from tests.support.database import asyncpg_dsn, create_database, drop_database


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(**asyncpg_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "UNION SELECT typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE n.nspname = 'public' AND t.typtype = 'e'"
        )
    finally:
        await conn.close()
    return {r[0] for r in rows}


async def test_upgrade_check_downgrade(pg_server: str) -> None:
    url = await create_database(pg_server, f"foley_migrations_{RUN_ID}", migrate=False)
    migrate.upgrade(url)
    assert {"jobs", "tenants", "api_keys", "files", "job_status"} <= await _tables(url)
    migrate.check(url)  # raises if the models and the migrated schema differ
    migrate.downgrade(url, "base")
    assert await _tables(url) == {"alembic_version"}
    migrate.upgrade(url)  # and it goes up again from base


async def test_the_audit_log_refuses_truncate_until_downgraded(pg_server: str) -> None:
    url = await create_database(pg_server, f"foley_migrations_audit_{RUN_ID}")
    conn = await asyncpg.connect(**asyncpg_dsn(url))
    try:
        await conn.execute(
            "INSERT INTO audit_events (id, actor, action, target_type, target_id) "
            "VALUES (gen_random_uuid(), 'cli:test', 'tenant.create', 'tenant', 'x')"
        )
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("TRUNCATE audit_events")
        assert await conn.fetchval("SELECT count(*) FROM audit_events") == 1
        migrate.downgrade(url, "0005")
        await conn.execute("TRUNCATE audit_events")  # before 0006 the log could be emptied
        migrate.upgrade(url)
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("TRUNCATE audit_events")
    finally:
        await conn.close()
        await drop_database(pg_server, str(make_url(url).database))


def test_head_is_a_single_revision() -> None:
    assert migrate.head_revision()
    assert make_url("postgresql+asyncpg://x/y").drivername == "postgresql+asyncpg"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@h:5432/d", "postgresql+asyncpg://u:p@h:5432/d"),
        ("postgresql://u@h/d", "postgresql+asyncpg://u@h/d"),
        ("postgresql+asyncpg://u@h/d", "postgresql+asyncpg://u@h/d"),
    ],
)
def test_database_urls_are_normalized_to_asyncpg(given: str, expected: str) -> None:
    from app.db.engine import normalize_database_url

    assert normalize_database_url(given) == expected


def test_non_postgres_urls_are_refused() -> None:
    from app.db.engine import normalize_database_url

    with pytest.raises(ValueError, match="Postgres only"):
        normalize_database_url("sqlite:///x.db")


async def test_job_events_keep_their_rows_ids_and_triggers_through_0011(pg_server: str) -> None:
    # Partitioning job_events copies the rows (ids kept) before the NOTIFY and outbox triggers
    # are in place: nothing is announced or delivered twice; downgrading copies them back.
    url = await create_database(pg_server, f"foley_migrations_events_{RUN_ID}", migrate=False)
    migrate.upgrade(url, "0010")
    conn = await asyncpg.connect(**asyncpg_dsn(url))
    try:
        tenant = await conn.fetchval(
            "INSERT INTO tenants (id, name) VALUES (gen_random_uuid(), 't') RETURNING id"
        )
        job = await conn.fetchval(
            "INSERT INTO jobs (id, tenant_id, model, endpoint, status, input, upstream_payload, "
            "metadata, submit_state, submit_attempts, upstream_completed, poll_count, "
            "webhook_url, created_at) VALUES (gen_random_uuid(), $1, 'm', 'e', 'succeeded', "
            "'{}', '{}', '{}', 'submitted', 1, true, 0, 'https://hooks.example/job', "
            "'2026-10-15 12:00+00') RETURNING id",
            tenant,
        )
        events = [(1, "job.created"), (2, "job.started"), (3, "job.succeeded")]
        for seq, kind in events:
            await conn.execute(
                "INSERT INTO job_events (job_id, tenant_id, seq, type, data) "
                "VALUES ($1, $2, $3, $4, '{}')",
                job,
                tenant,
                seq,
                kind,
            )
        before = await conn.fetch("SELECT id, seq, type FROM job_events ORDER BY id")
        outbox = await conn.fetchval("SELECT count(*) FROM notification_outbox")
        assert outbox == 2  # the trigger fired for the deliverable ones, once

        migrate.upgrade(url)
        after = await conn.fetch(
            "SELECT id, seq, type, tableoid::regclass::text AS part, job_created_at "
            "FROM job_events ORDER BY id"
        )
        assert [(r["id"], r["seq"], r["type"]) for r in after] == [tuple(r) for r in before]
        assert {r["part"] for r in after} == {"job_events_y2026m10"}  # the job's month
        assert {r["job_created_at"].isoformat() for r in after} == {"2026-10-15T12:00:00+00:00"}
        assert await conn.fetchval("SELECT count(*) FROM notification_outbox") == outbox
        # The identity goes on after the copied ids; the triggers fire on new events.
        new_id = await conn.fetchval(
            "INSERT INTO job_events (job_id, tenant_id, seq, type, data, job_created_at) "
            "VALUES ($1, $2, 4, 'job.logs', '{}', '2026-10-15 12:00+00') RETURNING id",
            job,
            tenant,
        )
        assert new_id > before[-1]["id"]
        assert await conn.fetchval("SELECT count(*) FROM notification_outbox") == outbox + 1
        # (job_id, seq) stays unique: a job has one creation time, so one partition
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "INSERT INTO job_events (job_id, tenant_id, seq, type, data, job_created_at) "
                "VALUES ($1, $2, 4, 'job.logs', '{}', '2026-10-15 12:00+00')",
                job,
                tenant,
            )

        migrate.downgrade(url, "0010")
        back = await conn.fetch("SELECT id, seq, type FROM job_events ORDER BY id")
        assert [tuple(r) for r in back] == [*[tuple(r) for r in before], (new_id, 4, "job.logs")]
        assert await conn.fetchval("SELECT count(*) FROM notification_outbox") == outbox + 1
        newer = await conn.fetchval(
            "INSERT INTO job_events (job_id, tenant_id, seq, type, data) "
            "VALUES ($1, $2, 5, 'job.logs', '{}') RETURNING id",
            job,
            tenant,
        )
        assert newer > new_id
        assert await conn.fetchval("SELECT count(*) FROM notification_outbox") == outbox + 2
    finally:
        await conn.close()
        await drop_database(pg_server, str(make_url(url).database))
