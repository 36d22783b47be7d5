"""The operator's commands: `foley tenants`, `foley keys`, `foley prices`, `foley usage`. Each
runs one unit of work against the database and prints what it did."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Annotated

import httpx
import typer

from app.entrypoints.errors import CliError
from app.entrypoints.settings import existing_database_url, load_settings
from app.entrypoints.up import recorded_emulator

tenants_cli = typer.Typer(
    no_args_is_help=True, help="Tenants: create, list, budgets, limits, suspension."
)
keys_cli = typer.Typer(no_args_is_help=True, help="Create, rotate and revoke tenants' API keys.")
prices_cli = typer.Typer(no_args_is_help=True, help="Model prices (data, with effective dates).")
usage_cli = typer.Typer(no_args_is_help=True, help="Usage: reconcile the ledger with fal.")


def _with_session(fn):  # type: ignore[no-untyped-def]
    async def runner(*args):  # type: ignore[no-untyped-def]
        from app.db.engine import create_engine, create_sessionmaker, unit_of_work

        settings = load_settings()
        url = await asyncio.to_thread(existing_database_url, settings)
        engine = create_engine(url, pool_size=1)
        try:
            async with unit_of_work(create_sessionmaker(engine)) as session:
                return await fn(session, *args)
        finally:
            await engine.dispose()

    return runner


def _cli_actor() -> str:
    import getpass

    return f"cli:{getpass.getuser()}"


# --- tenants ---------------------------------------------------------------------------------


@tenants_cli.command("create")
def tenants_create(name: str) -> None:
    """Create a tenant; prints its id."""
    from app.tenants import service

    async def go(session):  # type: ignore[no-untyped-def]
        return await service.create_tenant(session, name, actor=_cli_actor())

    tenant = asyncio.run(_with_session(go)())
    typer.echo(f"{tenant.id}\t{tenant.name}")


@tenants_cli.command("list")
def tenants_list() -> None:
    """List tenants: id, name, created."""
    from app.tenants import service

    async def go(session):  # type: ignore[no-untyped-def]
        return await service.list_tenants(session)

    for t in asyncio.run(_with_session(go)()):
        typer.echo(f"{t.id}\t{t.name}\t{t.created_at:%Y-%m-%d %H:%M}")


def _update_tenant(tenant_id: uuid.UUID, **fields: object) -> None:
    from app.tenants import service
    from app.tenants.schemas import TenantOut, TenantUpdate

    patch = TenantUpdate(**fields)

    async def go(session):  # type: ignore[no-untyped-def]
        return await service.update_tenant(session, tenant_id, patch, actor=_cli_actor())

    tenant = asyncio.run(_with_session(go)())
    typer.echo(TenantOut.of(tenant).model_dump_json(indent=2))


@tenants_cli.command("budget")
def tenants_budget(
    tenant_id: uuid.UUID,
    usd: Annotated[str | None, typer.Option(help='Budget in USD, e.g. "25.00".')] = None,
    period: Annotated[str | None, typer.Option(help="'month' or a duration ('30d').")] = None,
    thresholds: Annotated[str | None, typer.Option(help="Percentages, e.g. 50,80,100.")] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Remove the budget.")] = False,
) -> None:
    """Set, change or remove a tenant's budget."""
    fields: dict[str, object] = {}
    if remove:
        fields["budget_usd"] = None
    elif usd is not None:
        fields["budget_usd"] = usd
    if period is not None:
        fields["budget_period"] = period
    if thresholds is not None:
        fields["budget_thresholds"] = [int(x) for x in thresholds.split(",") if x.strip()]
    _update_tenant(tenant_id, **fields)


@tenants_cli.command("limits")
def tenants_limits(
    tenant_id: uuid.UUID,
    rate_per_minute: Annotated[int | None, typer.Option(help="Job creations per minute.")] = None,
    max_in_flight: Annotated[int | None, typer.Option(help="Requests at fal at once.")] = None,
    weight: Annotated[float | None, typer.Option(help="Share of the fal account.")] = None,
) -> None:
    """Set a tenant's rate limit, in-flight cap and fair-share weight."""
    fields: dict[str, object] = {}
    if rate_per_minute is not None:
        fields["rate_limit_per_minute"] = rate_per_minute
    if max_in_flight is not None:
        fields["max_in_flight"] = max_in_flight
    if weight is not None:
        fields["weight"] = weight
    _update_tenant(tenant_id, **fields)


@tenants_cli.command("suspend")
def tenants_suspend(
    tenant_id: uuid.UUID,
    resume: Annotated[bool, typer.Option("--resume", help="Lift the suspension.")] = False,
) -> None:
    """Refuse the tenant's new jobs (running ones finish), or --resume."""
    _update_tenant(tenant_id, suspended=not resume)


# --- keys ------------------------------------------------------------------------------------


@keys_cli.command("rotate")
def keys_rotate(
    tenant_id: uuid.UUID,
    key_id: uuid.UUID,
    grace: Annotated[int, typer.Option(help="Seconds the old key keeps working.")] = 3600,
) -> None:
    """Issue a new key; the old one expires after the grace period."""
    from datetime import timedelta

    from app.tenants import service

    async def go(session):  # type: ignore[no-untyped-def]
        return await service.rotate_api_key(
            session, tenant_id, key_id, grace=timedelta(seconds=grace), actor=_cli_actor()
        )

    old, new, secret = asyncio.run(_with_session(go)())
    typer.echo(f"old key {old.id} expires at {old.expires_at}\nnew key id {new.id}\n{secret}")


@keys_cli.command("create")
def keys_create(
    tenant_id: uuid.UUID,
    name: Annotated[str | None, typer.Option(help="A label.")] = None,
    read_only: Annotated[bool, typer.Option("--read-only", help="GET only.")] = False,
) -> None:
    """Create an API key for a tenant; prints the secret (shown this once)."""
    from app.tenants import service

    async def go(session):  # type: ignore[no-untyped-def]
        return await service.create_api_key(
            session, tenant_id, name, read_only=read_only, actor=_cli_actor()
        )

    key, secret = asyncio.run(_with_session(go)())
    typer.echo(f"key id {key.id}\n{secret}")


@keys_cli.command("revoke")
def keys_revoke(tenant_id: uuid.UUID, key_id: uuid.UUID) -> None:
    """Revoke an API key at once."""
    from app.tenants import service

    async def go(session):  # type: ignore[no-untyped-def]
        return await service.revoke_api_key(session, tenant_id, key_id, actor=_cli_actor())

    key = asyncio.run(_with_session(go)())
    typer.echo(f"revoked {key.id} at {key.revoked_at}")


# --- prices ----------------------------------------------------------------------------------


@prices_cli.command("list")
def prices_list(model: Annotated[str | None, typer.Option()] = None) -> None:
    """Every price row: model, unit, USD per unit, effective from."""
    from app.kit.money import micros_to_usd
    from app.usage import prices

    async def go(session):  # type: ignore[no-untyped-def]
        return await prices.list_prices(session, model)

    for p in asyncio.run(_with_session(go)()):
        typer.echo(
            f"{p.model}\t{p.unit}\t{micros_to_usd(p.unit_price_micros)}\t"
            f"{p.effective_from.isoformat()}"
        )


@prices_cli.command("set")
def prices_set(
    model: str,
    unit: Annotated[
        str,
        typer.Option(help="video | compute_second | output_second | sample | hit (cache_hit)"),
    ],
    usd: Annotated[str, typer.Option(help='Price per unit in USD, e.g. "0.035".')],
    effective_from: Annotated[str | None, typer.Option(help="ISO 8601; default now.")] = None,
) -> None:
    """Add a price from a date on (prices are never edited in place)."""
    from datetime import datetime

    from app.kit.money import usd_to_micros
    from app.usage import prices

    when = datetime.fromisoformat(effective_from) if effective_from else None

    async def go(session):  # type: ignore[no-untyped-def]
        return await prices.add_price(
            session,
            model=model,
            unit=unit,
            unit_price_micros=usd_to_micros(usd),
            effective_from=when,
            actor=_cli_actor(),
        )

    p = asyncio.run(_with_session(go)())
    typer.echo(f"price {p.id}: {model} {usd} USD/{unit} from {p.effective_from.isoformat()}")


# --- usage -----------------------------------------------------------------------------------


@usage_cli.command("reconcile")
def usage_reconcile(
    start: Annotated[
        str | None,
        typer.Option("--from", help="ISO date or time (UTC); default: this month's first day."),
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="ISO date or time (UTC), exclusive; default: now.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    bill_orphans: Annotated[
        bool,
        typer.Option(
            "--bill-orphans",
            help="Put each request fal billed that the ledger lacks on the ledger of the tenant "
            "its tags name (with its job when that exists and has ended), at fal's cost, once.",
        ),
    ] = False,
) -> None:
    """Compare the ledger with fal's billing events; exit 1 when they differ."""
    import json as jsonlib

    report = asyncio.run(_reconcile(start, end, bill_orphans=bill_orphans))
    if as_json:
        typer.echo(jsonlib.dumps(report.to_dict(), indent=2))
    else:
        d = report.to_dict()
        typer.echo(
            f"{d['from']} → {d['to']}: ledger {d['ledger_requests']} requests "
            f"{d['ledger_total_usd']} USD; fal {d['fal_requests']} requests "
            f"{d['fal_total_usd']} USD"
        )
        for billed in report.billed:
            typer.echo(
                f"  {'billed_orphan':18} {billed.request_id}  {billed.endpoint}  "
                f"fal={billed.usd_exact} tenant={billed.tenant_id} job={billed.job_id or '-'}"
            )
        for diff in report.differences:
            typer.echo(
                f"  {diff.kind:18} {diff.request_id}  {diff.model or '-'}  "
                f"ledger={diff.ledger_usd or '-'} fal={diff.fal_usd or '-'}"
                + (f" tenant={diff.tenant_id}" if diff.tenant_id else "")
            )
        for total in report.totals:
            if not total.ok:
                t = total.to_dict()
                typer.echo(
                    f"  {'total_mismatch':18} tenant={t['tenant_id'] or '-'}  {t['endpoint']}  "
                    f"ledger={t['ledger_usd']} fal={t['fal_usd']}"
                )
        typer.echo("no differences" if report.ok else f"{len(report.differences)} differences")
    raise typer.Exit(0 if report.ok else 1)


async def _reconcile(  # type: ignore[no-untyped-def]
    start: str | None, end: str | None, *, bill_orphans: bool = False
):
    from datetime import UTC, datetime

    from app.db.engine import create_engine, create_sessionmaker
    from app.usage.reconcile import events_window, fetch_billing_events, reconcile

    def instant(s: str) -> datetime:
        try:
            value = datetime.fromisoformat(s)
        except ValueError as exc:
            raise CliError(f"not an ISO date or time: {s!r}") from exc
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    # The API's usage summary covers this month by default too.
    now = datetime.now(UTC)
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)

    settings = load_settings()
    platform_url, key = settings.fal_platform_url, settings.fal_admin_key or settings.fal_key
    if key is None:
        # No fal key: `foley up` ran its emulator in fal's place; its usage is the emulator's.
        recorded = recorded_emulator(Path(settings.data_dir))
        if recorded is None:
            raise CliError(
                "set FOLEY_FAL_ADMIN_KEY (or FAL_KEY) to read fal's usage; with the emulator, "
                f"run `foley up` first (it records the emulator in {settings.data_dir})"
            )
        platform_url, key = recorded
    lo = instant(start) if start else month
    hi = instant(end) if end else now
    async with httpx.AsyncClient(timeout=30) as http:
        events = await fetch_billing_events(
            http, platform_url, key.get_secret_value(), *events_window(lo, hi)
        )
    engine = create_engine(await asyncio.to_thread(existing_database_url, settings), pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            return await reconcile(session, events, lo, hi, bill_orphans=bill_orphans)
    finally:
        await engine.dispose()
