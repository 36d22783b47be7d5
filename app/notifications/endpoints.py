"""The webhook endpoints API (tenants), its operator's view (``/v1/admin``), and the default
secret that signs jobs' own webhooks."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app.auth.dependencies import AdminDep, CurrentTenant
from app.db.session import SessionDep
from app.kit.pagination import ListPage
from app.kit.problems import problems
from app.notifications import service
from app.notifications.schemas import (
    DeliveryOut,
    EndpointCreate,
    EndpointCreated,
    EndpointOut,
    EndpointUpdate,
    RotateSecret,
    SigningSecretOut,
)

router = APIRouter(prefix="/v1/webhook-endpoints", tags=["webhooks"])
secret_router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
admin_router = APIRouter(
    prefix="/v1/admin/webhook-endpoints", tags=["admin"], dependencies=[AdminDep]
)

PROBLEMS = problems(s404="No such webhook endpoint (or delivery) for this tenant.")
LIST_PROBLEMS = problems(s400="`invalid_cursor`: starting_after names nothing.")
Limit = Annotated[int, Query(ge=1, le=100, description="How many, 1–100.")]
StartingAfter = Annotated[
    uuid.UUID | None, Query(description="The page after this id (newest first).")
]


@router.post("", response_model=EndpointCreated, status_code=201)
async def create_endpoint(
    body: EndpointCreate, request: Request, tenant: CurrentTenant, session: SessionDep
) -> EndpointCreated:
    """Subscribe a URL to events. The answer holds the signing secret: it is shown now and at
    rotations only."""
    endpoint = await service.create_endpoint(session, tenant.id, body, request.app.state.settings)
    return EndpointCreated(**EndpointOut.of(endpoint).model_dump(), secret=endpoint.secret)


@router.get("", response_model=ListPage[EndpointOut], responses=LIST_PROBLEMS)
async def list_endpoints(
    tenant: CurrentTenant,
    session: SessionDep,
    limit: Limit = 20,
    starting_after: StartingAfter = None,
) -> ListPage[EndpointOut]:
    """Your endpoints, newest first."""
    rows, more = await service.list_endpoints(
        session, tenant.id, limit=limit, starting_after=starting_after
    )
    return ListPage[EndpointOut](
        data=[EndpointOut.of(e) for e in rows], has_more=more, url="/v1/webhook-endpoints"
    )


@router.get("/{endpoint_id}", response_model=EndpointOut, responses=PROBLEMS)
async def get_endpoint(
    endpoint_id: uuid.UUID, tenant: CurrentTenant, session: SessionDep
) -> EndpointOut:
    return EndpointOut.of(await service.get_endpoint(session, tenant.id, endpoint_id))


@router.patch("/{endpoint_id}", response_model=EndpointOut, responses=PROBLEMS)
async def update_endpoint(
    endpoint_id: uuid.UUID,
    body: EndpointUpdate,
    request: Request,
    tenant: CurrentTenant,
    session: SessionDep,
) -> EndpointOut:
    """Change its URL, events or description, or pause (`enabled: false`) and resume it."""
    settings = request.app.state.settings
    return EndpointOut.of(
        await service.update_endpoint(session, tenant.id, endpoint_id, body, settings)
    )


@router.delete("/{endpoint_id}", status_code=204, responses=PROBLEMS)
async def delete_endpoint(
    endpoint_id: uuid.UUID, tenant: CurrentTenant, session: SessionDep
) -> Response:
    """Delete it, with its deliveries."""
    await service.delete_endpoint(session, tenant.id, endpoint_id)
    return Response(status_code=204)


@router.post("/{endpoint_id}/rotate-secret", response_model=EndpointCreated, responses=PROBLEMS)
async def rotate_secret(
    endpoint_id: uuid.UUID,
    tenant: CurrentTenant,
    session: SessionDep,
    body: RotateSecret | None = None,
) -> EndpointCreated:
    """A new secret; the old one signs beside it for `grace_seconds` (both signatures in
    `webhook-signature`, space-separated), then stops."""
    grace = timedelta(seconds=(body or RotateSecret()).grace_seconds)
    endpoint, secret = await service.rotate_secret(session, tenant.id, endpoint_id, grace)
    return EndpointCreated(**EndpointOut.of(endpoint).model_dump(), secret=secret)


@router.post("/{endpoint_id}/test", response_model=DeliveryOut, status_code=202, responses=PROBLEMS)
async def test_endpoint(
    endpoint_id: uuid.UUID, tenant: CurrentTenant, session: SessionDep
) -> DeliveryOut:
    """Send it a `ping` event now; its delivery shows how it went."""
    return DeliveryOut.of(*await service.send_test(session, tenant.id, endpoint_id))


@router.get(
    "/{endpoint_id}/deliveries",
    response_model=ListPage[DeliveryOut],
    responses={**PROBLEMS, **LIST_PROBLEMS},
)
async def list_deliveries(
    endpoint_id: uuid.UUID,
    tenant: CurrentTenant,
    session: SessionDep,
    limit: Limit = 20,
    starting_after: StartingAfter = None,
) -> ListPage[DeliveryOut]:
    """What was sent to it, newest first, each with every attempt (time, status code,
    duration, error)."""
    return await _deliveries(session, tenant.id, endpoint_id, limit, starting_after)


@router.post(
    "/{endpoint_id}/deliveries/{delivery_id}/redeliver",
    response_model=DeliveryOut,
    status_code=202,
    responses=PROBLEMS,
)
async def redeliver(
    endpoint_id: uuid.UUID,
    delivery_id: uuid.UUID,
    request: Request,
    tenant: CurrentTenant,
    session: SessionDep,
) -> DeliveryOut:
    """Send a delivery again now, with the same webhook-id and body (one attempt; a delivery
    still being retried is attempted now instead of at its time)."""
    settings = request.app.state.settings
    found = await service.redeliver(session, tenant.id, endpoint_id, delivery_id, settings)
    return DeliveryOut.of(*found)


@secret_router.get("/default/secret", response_model=SigningSecretOut)
async def default_secret(tenant: CurrentTenant, session: SessionDep) -> SigningSecretOut:
    """The secret that signs your jobs' own webhooks (`"webhook"` on `POST /v1/jobs`), as
    Replicate serves it: verify them with it (Standard Webhooks)."""
    return SigningSecretOut(key=await service.default_secret(session, tenant.id))


async def _deliveries(
    session: SessionDep,
    tenant_id: uuid.UUID | None,
    endpoint_id: uuid.UUID,
    limit: int,
    starting_after: uuid.UUID | None,
) -> ListPage[DeliveryOut]:
    rows, attempts, more = await service.list_deliveries(
        session, tenant_id, endpoint_id, limit=limit, starting_after=starting_after
    )
    return ListPage[DeliveryOut](
        data=[DeliveryOut.of(d, attempts[d.id]) for d in rows],
        has_more=more,
        url=f"/v1/webhook-endpoints/{endpoint_id}/deliveries",
    )


# --- the operator: any tenant's --------------------------------------------------------------


@admin_router.get("", response_model=ListPage[EndpointOut], responses=LIST_PROBLEMS)
async def admin_list_endpoints(
    session: SessionDep,
    tenant_id: Annotated[uuid.UUID | None, Query(description="Only this tenant's.")] = None,
    limit: Limit = 20,
    starting_after: StartingAfter = None,
) -> ListPage[EndpointOut]:
    """Every tenant's endpoints (or one tenant's), newest first."""
    rows, more = await service.list_endpoints(
        session, None, limit=limit, starting_after=starting_after, of_tenant=tenant_id
    )
    return ListPage[EndpointOut](
        data=[EndpointOut.of(e) for e in rows], has_more=more, url="/v1/admin/webhook-endpoints"
    )


@admin_router.get("/{endpoint_id}", response_model=EndpointOut, responses=PROBLEMS)
async def admin_get_endpoint(endpoint_id: uuid.UUID, session: SessionDep) -> EndpointOut:
    return EndpointOut.of(await service.get_endpoint(session, None, endpoint_id))


@admin_router.patch("/{endpoint_id}", response_model=EndpointOut, responses=PROBLEMS)
async def admin_update_endpoint(
    endpoint_id: uuid.UUID, body: EndpointUpdate, request: Request, session: SessionDep
) -> EndpointOut:
    """Change any tenant's endpoint (e.g. re-enable one the gateway disabled)."""
    settings = request.app.state.settings
    return EndpointOut.of(await service.update_endpoint(session, None, endpoint_id, body, settings))


@admin_router.get(
    "/{endpoint_id}/deliveries",
    response_model=ListPage[DeliveryOut],
    responses={**PROBLEMS, **LIST_PROBLEMS},
)
async def admin_list_deliveries(
    endpoint_id: uuid.UUID,
    session: SessionDep,
    limit: Limit = 20,
    starting_after: StartingAfter = None,
) -> ListPage[DeliveryOut]:
    return await _deliveries(session, None, endpoint_id, limit, starting_after)


@admin_router.post(
    "/{endpoint_id}/deliveries/{delivery_id}/redeliver",
    response_model=DeliveryOut,
    status_code=202,
    responses=PROBLEMS,
)
async def admin_redeliver(
    endpoint_id: uuid.UUID, delivery_id: uuid.UUID, request: Request, session: SessionDep
) -> DeliveryOut:
    settings = request.app.state.settings
    found = await service.redeliver(session, None, endpoint_id, delivery_id, settings)
    return DeliveryOut.of(*found)
