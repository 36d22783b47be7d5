"""Alembic environment: async engine, URL handed in by app.db.migrate (never read from a file)."""

from __future__ import annotations

import asyncio
import re

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.models import Base

config = context.config
target_metadata = Base.metadata

# Partitions of a partitioned table (job_events_y2026m12, job_events_default) are made by the
# migrations and the workers' housekeeping, not described by a model: not compared.
_PARTITION = re.compile(r"^(?P<parent>\w+)_(y\d{4}m\d{2}|default)$")


def _include_name(name: str | None, type_: str, parent_names: object) -> bool:
    if type_ == "table" and name:
        match = _PARTITION.match(name)
        parent = target_metadata.tables.get(match["parent"]) if match else None
        if parent is not None and parent.dialect_options["postgresql"].get("partition_by"):
            return False
    return True


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: run migrations through `foley migrate`")
    return str(url)


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        include_name=_include_name,
    )
    with context.begin_transaction():
        # Two processes migrating at once (api and worker starting together) take turns.
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(72190001)")
        context.run_migrations()


async def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        await connection.run_sync(_run_sync)
        return
    engine = create_async_engine(_url())
    async with engine.connect() as conn:
        await conn.run_sync(_run_sync)
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
