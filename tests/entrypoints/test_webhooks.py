"""`foley webhooks`: the operator sees and acts on any tenant's endpoints, as an operator runs
it (a process of its own against the database)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db.engine import create_sessionmaker, unit_of_work
from app.notifications import service
from app.notifications.schemas import EndpointCreate
from app.tenants import service as tenants
from tests.entrypoints.conftest import run_foley


async def test_an_operator_lists_and_disables_any_tenant_s_endpoint(
    engine: AsyncEngine, database_url: str, settings: Settings, tmp_path: Path
) -> None:
    async with unit_of_work(create_sessionmaker(engine)) as session:
        tenant = await tenants.create_tenant(session, "cli-hooks")
        body = EndpointCreate(url="http://127.0.0.1:9/hook", events=["job.failed"])
        endpoint = await service.create_endpoint(session, tenant.id, body, settings)
    env = {"FOLEY_DATABASE_URL": database_url}
    try:
        listed = run_foley("webhooks", "list", "--tenant", str(tenant.id), cwd=tmp_path, env=env)
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
        paused = run_foley(
            "webhooks", "enable", str(endpoint.id), "--disable", cwd=tmp_path, env=env
        )
        assert paused.stdout.strip() == f"{endpoint.id}\tdisabled", paused.stderr
        listed = run_foley("webhooks", "list", "--tenant", str(tenant.id), cwd=tmp_path, env=env)
        assert "\tdisabled (paused)\t" in listed.stdout
        shown = run_foley("webhooks", "deliveries", str(endpoint.id), cwd=tmp_path, env=env)
        assert shown.returncode == 0 and shown.stdout == "", shown.stderr
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM tenants WHERE id = :id"), {"id": tenant.id})
