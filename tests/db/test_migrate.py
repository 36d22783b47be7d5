"""The migration status /readyz reports, read from the database."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import create_engine
from app.db.migrate import current_revision, head_revision
from tests.conftest import RUN_ID
from tests.support.database import create_database, drop_database


async def test_a_migrated_database_is_at_head(engine: AsyncEngine) -> None:
    assert await current_revision(engine) == head_revision()


async def test_a_database_never_migrated_is_at_no_revision(pg_server: str) -> None:
    name = f"foley_unmigrated_{RUN_ID}"
    engine = create_engine(await create_database(pg_server, name, migrate=False), pool_size=1)
    try:
        assert await current_revision(engine) is None
    finally:
        await engine.dispose()
        await drop_database(pg_server, name)
