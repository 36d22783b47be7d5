"""Real Postgres for the tests: the embedded server (or FOLEY_TEST_DATABASE_URL's server), one
freshly created database per purpose, migrated to head."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from app.db.embedded import start_embedded_postgres
from app.db.engine import normalize_database_url
from app.db.migrate import upgrade


def server_url(tmp_root: Path) -> str:
    """A URL to the maintenance database of the test server."""
    external = os.environ.get("FOLEY_TEST_DATABASE_URL")
    if external:
        return normalize_database_url(external)
    return start_embedded_postgres(tmp_root, database="postgres")


def asyncpg_dsn(url: str) -> dict:
    u = make_url(url)
    return {
        "user": u.username,
        "password": u.password or None,
        "host": u.query.get("host") or u.host,
        "port": u.port,
        "database": u.database,
    }


async def create_database(server: str, name: str | None = None, *, migrate: bool = True) -> str:
    """Drop and create a database on the server; return its SQLAlchemy URL (migrated)."""
    name = name or f"foley_test_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(**asyncpg_dsn(server))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    if migrate:
        upgrade(url)
    return url


async def drop_database(server: str, name: str) -> None:
    conn = await asyncpg.connect(**asyncpg_dsn(server))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
