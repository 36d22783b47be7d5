"""`foley webhooks`: the operator sees and acts on any tenant's endpoints, as an operator runs
it (a process of its own, against a database of this test's own: what it commits, the audit
log included, must not reach other tests)."""

from __future__ import annotations

from pathlib import Path

from app.config import Settings
from app.db.engine import create_engine, create_sessionmaker, unit_of_work
from app.notifications import service
from app.notifications.schemas import EndpointCreate
from app.tenants import service as tenants
from tests.conftest import RUN_ID
from tests.entrypoints.conftest import run_foley
from tests.support.database import create_database, drop_database


async def test_an_operator_lists_and_disables_any_tenant_s_endpoint(
    pg_server: str, settings: Settings, tmp_path: Path
) -> None:
    name = f"foley_cli_webhooks_{RUN_ID}"
    url = await create_database(pg_server, name)
    engine = create_engine(url, pool_size=1)
    try:
        async with unit_of_work(create_sessionmaker(engine)) as session:
            tenant = await tenants.create_tenant(session, "cli-hooks")
            body = EndpointCreate(url="http://127.0.0.1:9/hook", events=["job.failed"])
            endpoint = await service.create_endpoint(session, tenant.id, body, settings)
        await engine.dispose()
        env = {"FOLEY_DATABASE_URL": url}

        def foley(*args: str):  # type: ignore[no-untyped-def]
            return run_foley("webhooks", *args, cwd=tmp_path, env=env)

        listed = foley("list", "--tenant", str(tenant.id))
        assert listed.returncode == 0, listed.stderr
        (line,) = listed.stdout.splitlines()
        assert line.split("\t") == [
            str(endpoint.id),
            str(tenant.id),
            "enabled",
            "-",
            "http://127.0.0.1:9/hook",
            "job.failed",
        ]
        paused = foley("enable", str(endpoint.id), "--disable")
        assert paused.stdout.strip() == f"{endpoint.id}\tdisabled", paused.stderr
        assert "\tdisabled (paused)\t" in foley("list").stdout
        shown = foley("deliveries", str(endpoint.id))
        assert shown.returncode == 0 and shown.stdout == "", shown.stderr
    finally:
        await engine.dispose()
        await drop_database(pg_server, name)
