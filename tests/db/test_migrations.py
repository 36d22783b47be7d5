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
