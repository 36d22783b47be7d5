"""`foley webhooks`: the operator's view of every tenant's webhook endpoints and deliveries (the
same service as `/v1/admin/webhook-endpoints`)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated

import typer

from app.entrypoints.admin import _with_session

webhooks_cli = typer.Typer(
    no_args_is_help=True,
    help="Tenants' webhook endpoints: list, deliveries, enable, redeliver.",
)


@webhooks_cli.command("list")
def webhooks_list(
    tenant: Annotated[uuid.UUID | None, typer.Option(help="Only this tenant's.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 100,
) -> None:
    """Endpoints, newest first: id, tenant, enabled, failing since, URL, events."""
    from app.notifications import service

    async def go(session):  # type: ignore[no-untyped-def]
        rows, _ = await service.list_endpoints(
            session, None, limit=limit, starting_after=None, of_tenant=tenant
        )
        return rows

    for e in asyncio.run(_with_session(go)()):
        state = "enabled" if e.enabled else f"disabled ({e.disabled_reason or 'paused'})"
        failing = e.failing_since.isoformat() if e.failing_since else "-"
        events = ",".join(e.events) if e.events else "*"
        typer.echo(f"{e.id}\t{e.tenant_id}\t{state}\t{failing}\t{e.url}\t{events}")


@webhooks_cli.command("deliveries")
def webhooks_deliveries(
    endpoint_id: uuid.UUID, limit: Annotated[int, typer.Option(min=1, max=100)] = 20
) -> None:
    """An endpoint's deliveries, newest first, each with its attempts."""
    from app.notifications import service

    async def go(session):  # type: ignore[no-untyped-def]
        rows, attempts, _ = await service.list_deliveries(
            session, None, endpoint_id, limit=limit, starting_after=None
        )
        return rows, attempts

    rows, attempts = asyncio.run(_with_session(go)())
    for d in rows:
        typer.echo(f"{d.id}\t{d.type}\t{d.status.value}\t{d.message_id}\t{d.created_at:%F %T}")
        for a in attempts[d.id]:
            code = a.status_code if a.status_code is not None else "-"
            typer.echo(f"  {a.attempted_at:%F %T}\t{code}\t{a.duration_ms} ms\t{a.error or ''}")


@webhooks_cli.command("enable")
def webhooks_enable(
    endpoint_id: uuid.UUID,
    disable: Annotated[bool, typer.Option("--disable", help="Pause it instead.")] = False,
) -> None:
    """Re-enable an endpoint (e.g. one the gateway disabled), or --disable it."""
    from app.config import get_settings
    from app.notifications import service
    from app.notifications.schemas import EndpointUpdate

    async def go(session):  # type: ignore[no-untyped-def]
        body = EndpointUpdate(enabled=not disable)
        return await service.update_endpoint(session, None, endpoint_id, body, get_settings())

    e = asyncio.run(_with_session(go)())
    typer.echo(f"{e.id}\t{'enabled' if e.enabled else 'disabled'}")


@webhooks_cli.command("redeliver")
def webhooks_redeliver(endpoint_id: uuid.UUID, delivery_id: uuid.UUID) -> None:
    """Send a delivery again now (same webhook-id and body); a worker sends it."""
    from app.config import get_settings
    from app.notifications import service

    async def go(session):  # type: ignore[no-untyped-def]
        return await service.redeliver(session, None, endpoint_id, delivery_id, get_settings())

    d, _ = asyncio.run(_with_session(go)())
    typer.echo(f"{d.id}\t{d.status.value}\tdue {d.next_attempt_at.isoformat()}")
