from __future__ import annotations

import uuid

from fastapi import APIRouter

from app.auth.dependencies import AdminDep
from app.db.session import SessionDep
from app.kit.pagination import ListPage
from app.tenants import service
from app.tenants.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut, TenantCreate, TenantOut

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[AdminDep])


@router.post("/tenants", response_model=TenantOut, status_code=201)
async def create_tenant(body: TenantCreate, session: SessionDep) -> TenantOut:
    tenant = await service.create_tenant(session, body.name)
    return TenantOut.model_validate(tenant, from_attributes=True)


@router.get("/tenants", response_model=ListPage[TenantOut])
async def list_tenants(session: SessionDep) -> ListPage[TenantOut]:
    tenants = await service.list_tenants(session)
    data = [TenantOut.model_validate(t, from_attributes=True) for t in tenants]
    return ListPage[TenantOut](data=data, has_more=False)


@router.get("/tenants/{tenant_id}", response_model=TenantOut)
async def get_tenant(tenant_id: uuid.UUID, session: SessionDep) -> TenantOut:
    tenant = await service.get_tenant(session, tenant_id)
    return TenantOut.model_validate(tenant, from_attributes=True)


@router.post("/tenants/{tenant_id}/keys", response_model=ApiKeyCreated, status_code=201)
async def create_key(
    tenant_id: uuid.UUID, session: SessionDep, body: ApiKeyCreate | None = None
) -> ApiKeyCreated:
    key, secret = await service.create_api_key(session, tenant_id, body.name if body else None)
    return ApiKeyCreated.model_validate({**_key_fields(key), "key": secret})


@router.get("/tenants/{tenant_id}/keys", response_model=ListPage[ApiKeyOut])
async def list_keys(tenant_id: uuid.UUID, session: SessionDep) -> ListPage[ApiKeyOut]:
    keys = await service.list_api_keys(session, tenant_id)
    return ListPage[ApiKeyOut](
        data=[ApiKeyOut.model_validate(_key_fields(k)) for k in keys], has_more=False
    )


@router.post("/tenants/{tenant_id}/keys/{key_id}/revoke", response_model=ApiKeyOut)
async def revoke_key(tenant_id: uuid.UUID, key_id: uuid.UUID, session: SessionDep) -> ApiKeyOut:
    key = await service.revoke_api_key(session, tenant_id, key_id)
    return ApiKeyOut.model_validate(_key_fields(key))


def _key_fields(key: object) -> dict:
    fields = ("id", "tenant_id", "name", "prefix", "created_at", "revoked_at", "last_used_at")
    return {f: getattr(key, f) for f in fields}
