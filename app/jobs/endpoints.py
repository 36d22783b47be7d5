from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask

from app.auth.dependencies import CurrentTenant
from app.db.session import SessionDep
from app.jobs import service
from app.jobs.schemas import JobCreate, JobOut
from app.kit.pagination import ListPage
from app.models import JobStatus

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
validate_router = APIRouter(prefix="/v1/validate", tags=["jobs"])

PROBLEMS = {
    401: {"description": "Missing or invalid API key."},
    404: {"description": "No such job for this tenant."},
}


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@router.post(
    "",
    response_model=JobOut,
    status_code=202,
    responses={
        402: {"description": "The estimated cost exceeds the tenant's remaining budget."},
        403: {"description": "Tenant suspended, or a read-only key."},
        409: {"description": "The same Idempotency-Key is still being processed."},
        429: {"description": "Too many job creations; see Retry-After and RateLimit."},
        422: {"description": "Invalid input, unknown model, or Idempotency-Key reused."},
    },
)
async def create_job(
    body: JobCreate,
    request: Request,
    tenant: CurrentTenant,
    session: SessionDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    dry_run: Annotated[
        bool, Query(description="Validate, estimate and check the budget; create nothing.")
    ] = False,
) -> JSONResponse:
    """Accept a job. Answers 202 once the job is stored (its estimated cost reserved against the
    tenant's budget); a worker sends it to fal. With `dry_run=true`, answers 200 with the
    estimate and whether the budget allows it."""
    settings = request.app.state.settings
    if dry_run:
        return JSONResponse(await service.estimate_only(session, tenant, body, settings))
    accepted = await service.accept_job(
        session,
        request.app.state.sessionmaker,
        tenant,
        body,
        settings=settings,
        base_url=_base_url(request),
        path=request.url.path,
        idempotency_key=idempotency_key,
    )
    headers = dict(accepted.headers)
    if accepted.replayed:
        headers["Idempotent-Replayed"] = "true"
        return JSONResponse(accepted.body, status_code=accepted.status, headers=headers)
    # The wake-up runs after the response, hence after the commit (see app.jobs.notifier).
    return JSONResponse(
        accepted.body,
        status_code=accepted.status,
        headers=headers,
        background=BackgroundTask(request.app.state.notifier.poke),
    )


@validate_router.post(
    "",
    responses={200: {"description": "The verdict: valid, or the code a job would fail with."}},
)
async def validate_input(
    body: JobCreate, request: Request, tenant: CurrentTenant, session: SessionDep
) -> dict[str, Any]:
    """Fetch and probe the input now (as the worker would before paying for anything) and answer
    whether a job would be accepted upstream, with the measured probe and the estimate.
    Nothing is created and nothing is sent to fal."""
    state = request.app.state
    return await service.validate_sync(
        session, tenant, body, state.settings, state.storage, state.job_tokens.secret
    )


@router.get("", response_model=ListPage[JobOut])
async def list_jobs(
    request: Request,
    tenant: CurrentTenant,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    status: JobStatus | None = None,
    model: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    starting_after: uuid.UUID | None = None,
    ending_before: uuid.UUID | None = None,
) -> ListPage[JobOut]:
    """The tenant's jobs, newest first; keyset pagination with starting_after / ending_before."""
    rows, has_more = await service.list_jobs(
        session,
        tenant,
        limit=limit,
        status=status,
        model=model,
        created_after=created_after,
        created_before=created_before,
        starting_after=starting_after,
        ending_before=ending_before,
    )
    base = _base_url(request)
    return ListPage[JobOut](
        data=await service.present(session, rows, base), has_more=has_more, url="/v1/jobs"
    )


@router.get("/{job_id}", response_model=JobOut, responses=PROBLEMS)
async def get_job(
    job_id: uuid.UUID, request: Request, tenant: CurrentTenant, session: SessionDep
) -> JobOut:
    job = await service.get_job(session, tenant, job_id)
    return (await service.present(session, [job], _base_url(request)))[0]


@router.post(
    "/{job_id}/cancel",
    response_model=JobOut,
    responses={**PROBLEMS, 409: {"description": "The job already finished."}},
)
async def cancel_job(
    job_id: uuid.UUID, request: Request, tenant: CurrentTenant, session: SessionDep
) -> JobOut:
    """Cancel a job: at once if it never left the gateway, otherwise by asking fal."""
    job = await service.cancel_job(session, tenant, job_id)
    return (await service.present(session, [job], _base_url(request)))[0]
