from __future__ import annotations

import uuid
from datetime import timedelta

from fastapi import APIRouter

from app.auth.dependencies import AdminActor, AdminDep, CurrentPrincipal, Principal
from app.db.session import SessionDep
from app.kit.pagination import ListPage
from app.kit.problems import problems
from app.tenants import service
from app.tenants.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    ApiKeyRotate,
    ApiKeyRotated,
    TenantCreate,
    TenantOut,
    TenantUpdate,
)
from app.usage import budgets

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[AdminDep])
# A tenant's own keys, with the key it calls with (read-only keys only list them).
keys_router = APIRouter(prefix="/v1/keys", tags=["keys"])


async def _out(session: SessionDep, tenant) -> TenantOut:  # type: ignore[no-untyped-def]
    current = await budgets.view(session, tenant)
    return TenantOut.of(tenant, current.to_dict() if current else None)


@router.post("/tenants", response_model=TenantOut, status_code=201)
async def create_tenant(body: TenantCreate, session: SessionDep, actor: AdminActor) -> TenantOut:
    tenant = await service.create_tenant(session, body.name, actor=actor)
    return await _out(session, tenant)


@router.get("/tenants", response_model=ListPage[TenantOut])
async def list_tenants(session: SessionDep) -> ListPage[TenantOut]:
    tenants = await service.list_tenants(session)
    return ListPage[TenantOut](data=[TenantOut.of(t) for t in tenants], has_more=False)


@router.get("/tenants/{tenant_id}", response_model=TenantOut)
async def get_tenant(tenant_id: uuid.UUID, session: SessionDep) -> TenantOut:
    return await _out(session, await service.get_tenant(session, tenant_id))


@router.patch("/tenants/{tenant_id}", response_model=TenantOut)
async def update_tenant(
    tenant_id: uuid.UUID, body: TenantUpdate, session: SessionDep, actor: AdminActor
) -> TenantOut:
    """Budget (`budget_usd`, `budget_period`, `budget_thresholds`), limits
    (`rate_limit_per_minute`, `max_in_flight`, `weight`) and `suspended`."""
    tenant = await service.update_tenant(session, tenant_id, body, actor=actor)
    return await _out(session, tenant)


@router.post("/tenants/{tenant_id}/keys", response_model=ApiKeyCreated, status_code=201)
async def create_key(
    tenant_id: uuid.UUID, session: SessionDep, actor: AdminActor, body: ApiKeyCreate | None = None
) -> ApiKeyCreated:
    body = body or ApiKeyCreate()
    key, secret = await service.create_api_key(
        session,
        tenant_id,
        body.name,
        read_only=body.read_only,
        expires_at=body.expires_at,
        actor=actor,
    )
    return ApiKeyCreated.model_validate({**ApiKeyOut.of(key).model_dump(), "key": secret})


@router.get("/tenants/{tenant_id}/keys", response_model=ListPage[ApiKeyOut])
async def list_keys(tenant_id: uuid.UUID, session: SessionDep) -> ListPage[ApiKeyOut]:
    keys = await service.list_api_keys(session, tenant_id)
    return ListPage[ApiKeyOut](data=[ApiKeyOut.of(k) for k in keys], has_more=False)


@router.post("/tenants/{tenant_id}/keys/{key_id}/revoke", response_model=ApiKeyOut)
async def revoke_key(
    tenant_id: uuid.UUID, key_id: uuid.UUID, session: SessionDep, actor: AdminActor
) -> ApiKeyOut:
    return ApiKeyOut.of(await service.revoke_api_key(session, tenant_id, key_id, actor=actor))


@router.post(
    "/tenants/{tenant_id}/keys/{key_id}/rotate",
    response_model=ApiKeyRotated,
    status_code=201,
    responses=problems(s409="The key is revoked: it cannot be rotated."),
)
async def rotate_key(
    tenant_id: uuid.UUID,
    key_id: uuid.UUID,
    session: SessionDep,
    actor: AdminActor,
    body: ApiKeyRotate | None = None,
) -> ApiKeyRotated:
    """A new key; the old one keeps working for `grace_seconds`, then expires."""
    grace = timedelta(seconds=(body or ApiKeyRotate()).grace_seconds)
    old, new, secret = await service.rotate_api_key(
        session, tenant_id, key_id, grace=grace, actor=actor
    )
    created = ApiKeyCreated.model_validate({**ApiKeyOut.of(new).model_dump(), "key": secret})
    return ApiKeyRotated(old=ApiKeyOut.of(old), new=created)


def _actor(principal: Principal) -> str:
    return f"key:{principal.api_key.prefix}"


@keys_router.get("", response_model=ListPage[ApiKeyOut])
async def list_own_keys(principal: CurrentPrincipal, session: SessionDep) -> ListPage[ApiKeyOut]:
    """Your tenant's keys (never their secrets), oldest first."""
    keys = await service.list_api_keys(session, principal.tenant.id)
    return ListPage[ApiKeyOut](data=[ApiKeyOut.of(k) for k in keys], has_more=False)


@keys_router.post(
    "", response_model=ApiKeyCreated, status_code=201, responses=problems(s403="A read-only key.")
)
async def create_own_key(
    principal: CurrentPrincipal, session: SessionDep, body: ApiKeyCreate | None = None
) -> ApiKeyCreated:
    """A new key for your tenant; its secret is in this answer only."""
    body = body or ApiKeyCreate()
    key, secret = await service.create_api_key(
        session,
        principal.tenant.id,
        body.name,
        read_only=body.read_only,
        expires_at=body.expires_at,
        actor=_actor(principal),
    )
    return ApiKeyCreated.model_validate({**ApiKeyOut.of(key).model_dump(), "key": secret})


@keys_router.post(
    "/{key_id}/revoke",
    response_model=ApiKeyOut,
    responses=problems(s404="No such key for this tenant.", s403="A read-only key."),
)
async def revoke_own_key(
    key_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep
) -> ApiKeyOut:
    """The key stops working at once (and the console sessions signed in with it end)."""
    key = await service.revoke_api_key(
        session, principal.tenant.id, key_id, actor=_actor(principal)
    )
    return ApiKeyOut.of(key)


@keys_router.post(
    "/{key_id}/rotate",
    response_model=ApiKeyRotated,
    status_code=201,
    responses=problems(
        s404="No such key for this tenant.",
        s409="The key is revoked: it cannot be rotated.",
        s403="A read-only key.",
    ),
)
async def rotate_own_key(
    key_id: uuid.UUID,
    principal: CurrentPrincipal,
    session: SessionDep,
    body: ApiKeyRotate | None = None,
) -> ApiKeyRotated:
    """A new key; the old one keeps working for `grace_seconds`, then expires."""
    grace = timedelta(seconds=(body or ApiKeyRotate()).grace_seconds)
    old, new, secret = await service.rotate_api_key(
        session, principal.tenant.id, key_id, grace=grace, actor=_actor(principal)
    )
    created = ApiKeyCreated.model_validate({**ApiKeyOut.of(new).model_dump(), "key": secret})
    return ApiKeyRotated(old=ApiKeyOut.of(old), new=created)
