"""Alembic driven from code: `foley migrate`, `foley up`, /readyz and the tests share this."""

from __future__ import annotations

import asyncio
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s")
    cfg.attributes["url"] = url
    return cfg


@cache
def head_revision() -> str:
    """The migrations' head; read once per process (the scripts do not change under it, and
    /readyz asks on every probe)."""
    head = ScriptDirectory.from_config(alembic_config("postgresql+asyncpg://")).get_current_head()
    assert head is not None
    return head


def _in_thread(fn, *args) -> None:  # type: ignore[no-untyped-def]
    # env.py calls asyncio.run(); from inside a running loop it must run on its own thread.
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        fn(*args)
        return
    import threading

    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn(*args)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if errors:
        raise errors[0]


def upgrade(url: str, revision: str = "head") -> None:
    _in_thread(command.upgrade, alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    _in_thread(command.downgrade, alembic_config(url), revision)


def check(url: str) -> None:
    """Raise if the models and the migrated schema differ (``alembic check``)."""
    _in_thread(command.check, alembic_config(url))


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, read from alembic's version table (None: never
    migrated). Not through alembic's MigrationContext: configuring one logs two INFO lines,
    and /readyz asks on every probe."""
    async with engine.connect() as conn:
        if await conn.scalar(text("SELECT to_regclass('alembic_version')")) is None:
            return None
        return await conn.scalar(text("SELECT version_num FROM alembic_version"))
