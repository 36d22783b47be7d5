"""Tenants and their API keys (the operator's side). Every mutation is audited."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit
from app.auth.dependencies import invalidate_principals
from app.auth.keys import display_prefix, generate_api_key, hash_api_key
from app.kit.clock import utcnow
from app.kit.money import micros_to_usd, usd_to_micros
from app.kit.problems import Conflict, NotFound
from app.models import ApiKey, Tenant
from app.models.tenant import DEFAULT_THRESHOLDS
from app.tenants import repository
from app.tenants.schemas import TenantUpdate


class TenantNotFound(NotFound):
    code = "tenant_not_found"


class ApiKeyNotFound(NotFound):
    code = "api_key_not_found"


class ApiKeyRevoked(Conflict):
    code = "api_key_revoked"


def tenant_snapshot(t: Tenant) -> dict[str, Any]:
    return {
        "name": t.name,
        "budget_usd": micros_to_usd(t.budget_micros),
        "budget_period": t.budget_period,
        "budget_thresholds": list(t.budget_thresholds or []),
        "rate_limit_per_minute": t.rate_limit_per_minute,
        "max_in_flight": t.max_in_flight,
        "weight": float(t.weight),
        "suspended_at": t.suspended_at.isoformat() if t.suspended_at else None,
        "cache_default": t.cache_default,
    }


def key_snapshot(k: ApiKey) -> dict[str, Any]:
    return {
        "prefix": k.prefix,
        "name": k.name,
        "read_only": k.read_only,
        "expires_at": k.expires_at.isoformat() if k.expires_at else None,
        "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
    }


async def create_tenant(session: AsyncSession, name: str, *, actor: str = "admin") -> Tenant:
    tenant = Tenant(
        id=uuid.uuid4(),
        name=name,
        budget_period="month",
        budget_thresholds=list(DEFAULT_THRESHOLDS),
        weight=1,
    )
    session.add(tenant)
    await session.flush()
    await session.refresh(tenant)
    await audit.record(
        session,
        actor=actor,
        action="tenant.create",
        target_type="tenant",
        target_id=tenant.id,
        before=None,
        after=tenant_snapshot(tenant),
    )
    return tenant


async def get_tenant(session: AsyncSession, tenant_id: uuid.UUID, *, lock: bool = False) -> Tenant:
    tenant = await repository.get_tenant(session, tenant_id, lock=lock)
    if tenant is None:
        raise TenantNotFound(f"No tenant {tenant_id}.", param="tenant_id")
    return tenant


async def list_tenants(session: AsyncSession) -> Sequence[Tenant]:
    return await repository.list_tenants(session)


async def update_tenant(
    session: AsyncSession, tenant_id: uuid.UUID, patch: TenantUpdate, *, actor: str = "admin"
) -> Tenant:
    tenant = await get_tenant(session, tenant_id, lock=True)
    before = tenant_snapshot(tenant)
    given = patch.model_fields_set
    if "name" in given and patch.name is not None:
        tenant.name = patch.name
    if "budget_usd" in given:
        tenant.budget_micros = None if patch.budget_usd is None else usd_to_micros(patch.budget_usd)
    if "budget_period" in given and patch.budget_period is not None:
        if patch.budget_period != tenant.budget_period:
            tenant.budget_period = patch.budget_period
            tenant.budget_anchor = utcnow()  # a duration period counts from when it was set
    if "budget_thresholds" in given and patch.budget_thresholds is not None:
        tenant.budget_thresholds = patch.budget_thresholds
    for field in ("rate_limit_per_minute", "max_in_flight"):
        if field in given:
            setattr(tenant, field, getattr(patch, field))
    if "weight" in given and patch.weight is not None:
        tenant.weight = patch.weight
    if "cache_default" in given and patch.cache_default is not None:
        tenant.cache_default = patch.cache_default
    if "suspended" in given and patch.suspended is not None:
        if patch.suspended and tenant.suspended_at is None:
            tenant.suspended_at = utcnow()
        elif not patch.suspended:
            tenant.suspended_at = None
    await session.flush()
    invalidate_principals()
    after = tenant_snapshot(tenant)
    if after != before:
        await audit.record(
            session,
            actor=actor,
            action="tenant.update",
            target_type="tenant",
            target_id=tenant.id,
            before=before,
            after=after,
        )
    return tenant


async def create_api_key(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    name: str | None = None,
    *,
    read_only: bool = False,
    expires_at: datetime | None = None,
    actor: str = "admin",
) -> tuple[ApiKey, str]:
    """Return the stored key and its secret; the secret is never retrievable again."""
    await get_tenant(session, tenant_id)
    secret = generate_api_key()
    key = ApiKey(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        name=name,
        prefix=display_prefix(secret),
        key_hash=hash_api_key(secret),
        read_only=read_only,
        expires_at=expires_at,
    )
    session.add(key)
    await session.flush()
    await session.refresh(key)
    await audit.record(
        session,
        actor=actor,
        action="api_key.create",
        target_type="api_key",
        target_id=key.id,
        before=None,
        after=key_snapshot(key),
    )
    return key, secret


async def list_api_keys(session: AsyncSession, tenant_id: uuid.UUID) -> Sequence[ApiKey]:
    await get_tenant(session, tenant_id)
    return await repository.list_keys(session, tenant_id)


async def _key(session: AsyncSession, tenant_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey:
    key = await repository.get_key(session, tenant_id, key_id)
    if key is None:
        raise ApiKeyNotFound(f"No API key {key_id} for tenant {tenant_id}.", param="key_id")
    return key


async def revoke_api_key(
    session: AsyncSession, tenant_id: uuid.UUID, key_id: uuid.UUID, *, actor: str = "admin"
) -> ApiKey:
    key = await _key(session, tenant_id, key_id)
    if key.revoked_at is None:
        before = key_snapshot(key)
        key.revoked_at = utcnow()
        await session.flush()
        invalidate_principals()
        await audit.record(
            session,
            actor=actor,
            action="api_key.revoke",
            target_type="api_key",
            target_id=key.id,
            before=before,
            after=key_snapshot(key),
        )
    return key


async def rotate_api_key(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    key_id: uuid.UUID,
    *,
    grace: timedelta,
    actor: str = "admin",
) -> tuple[ApiKey, ApiKey, str]:
    """A new key with the old one's name and scope; the old one works until now + grace."""
    old = await _key(session, tenant_id, key_id)
    if old.revoked_at is not None:
        raise ApiKeyRevoked(
            f"API key {key_id} is revoked; create a new one instead.", param="key_id"
        )
    before = key_snapshot(old)
    new, secret = await create_api_key(
        session, tenant_id, old.name, read_only=old.read_only, actor=actor
    )
    ends = utcnow() + grace
    if old.expires_at is None or old.expires_at > ends:
        old.expires_at = ends
    await session.flush()
    invalidate_principals()
    await audit.record(
        session,
        actor=actor,
        action="api_key.rotate",
        target_type="api_key",
        target_id=old.id,
        before=before,
        after={**key_snapshot(old), "replaced_by": str(new.id)},
    )
    return old, new, secret
