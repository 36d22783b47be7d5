"""Tenants and their API keys (the operator's side)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.keys import display_prefix, generate_api_key, hash_api_key
from app.kit.clock import utcnow
from app.kit.problems import NotFound
from app.models import ApiKey, Tenant
from app.tenants import repository


class TenantNotFound(NotFound):
    code = "tenant_not_found"


class ApiKeyNotFound(NotFound):
    code = "api_key_not_found"


async def create_tenant(session: AsyncSession, name: str) -> Tenant:
    tenant = Tenant(id=uuid.uuid4(), name=name)
    session.add(tenant)
    await session.flush()
    await session.refresh(tenant)
    return tenant


async def get_tenant(session: AsyncSession, tenant_id: uuid.UUID) -> Tenant:
    tenant = await repository.get_tenant(session, tenant_id)
    if tenant is None:
        raise TenantNotFound(f"No tenant {tenant_id}.", param="tenant_id")
    return tenant


async def list_tenants(session: AsyncSession) -> Sequence[Tenant]:
    return await repository.list_tenants(session)


async def create_api_key(
    session: AsyncSession, tenant_id: uuid.UUID, name: str | None = None
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
    )
    session.add(key)
    await session.flush()
    await session.refresh(key)
    return key, secret


async def list_api_keys(session: AsyncSession, tenant_id: uuid.UUID) -> Sequence[ApiKey]:
    await get_tenant(session, tenant_id)
    return await repository.list_keys(session, tenant_id)


async def revoke_api_key(session: AsyncSession, tenant_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey:
    key = await repository.get_key(session, tenant_id, key_id)
    if key is None:
        raise ApiKeyNotFound(f"No API key {key_id} for tenant {tenant_id}.", param="key_id")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        await session.flush()
    return key
