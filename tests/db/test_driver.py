"""The accept path's asyncpg pool connects where the engine does, with the engine's options."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.db.driver import connect_kwargs, create_driver_pool


def test_connect_kwargs_follow_the_engine_url() -> None:
    engine = create_async_engine(
        "postgresql+asyncpg://u:p@db:5433/foley?ssl=require&prepared_statement_cache_size=0"
    )
    kwargs = connect_kwargs(engine)
    assert kwargs["host"] == "db" and kwargs["port"] == 5433
    assert kwargs["user"] == "u" and kwargs["password"] == "p"
    assert kwargs["database"] == "foley" and kwargs["ssl"] == "require"
    # the dialect's option, under asyncpg's own name
    assert kwargs["statement_cache_size"] == 0
    assert "prepared_statement_cache_size" not in kwargs
    assert kwargs["server_settings"] == {"application_name": "foley", "statement_timeout": "60s"}
    assert "command_timeout" not in kwargs  # enforced by the server instead


def test_connect_kwargs_of_a_unix_socket_url() -> None:
    engine = create_async_engine("postgresql+asyncpg://postgres:pw@/foley_x?host=/tmp/pg")
    assert connect_kwargs(engine)["host"] == "/tmp/pg"


async def test_the_pool_reaches_the_engines_database(engine: AsyncEngine) -> None:
    pool = await create_driver_pool(engine, max_size=1)  # one connection: the same one twice
    try:
        async with pool.acquire() as conn:
            name = await conn.fetchval("SELECT current_database()")
            app = await conn.fetchval("SELECT current_setting('application_name')")
            timeout = await conn.fetchval("SELECT current_setting('statement_timeout')")
            # a transaction left open is rolled back on release, even without the reset query
            await conn.execute("BEGIN")
            await conn.execute("SET LOCAL application_name = 'changed'")
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT current_setting('application_name')") == "foley"
    finally:
        await pool.close()
    assert name == engine.url.database
    assert app == "foley"
    assert timeout == "1min"
