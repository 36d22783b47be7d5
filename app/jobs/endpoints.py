from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import MutableHeaders

from app.auth.dependencies import AdminDep, CurrentTenant, current_principal
from app.catalog.registry import CATALOG
from app.db.session import SessionDep
from app.jobs import service, stream, validation
from app.jobs.docs import (
    CANCEL_AFTER_PARAMETER,
    EVENT_STREAM_RESPONSE,
    LAST_EVENT_ID_PARAMETER,
    PREFER_PARAMETER,
    held_response,
)
from app.jobs.holding import hold
from app.jobs.preferences import cancel_after, last_event_id, wait_preference
from app.jobs.schemas import FleetOut, JobCreate, JobEventOut, JobOut, ModelName
from app.kit.idempotency import MAX_KEY_LENGTH, check_key
from app.kit.pagination import ListPage
from app.kit.problems import InputValidationError, problems, validation_errors
from app.kit.routing import RequestRoute
from app.kit.text import UtcDatetime, column_int
from app.models import JobEvent, JobStatus, Tenant
from app.usage.schemas import EstimateOut, ValidationOut

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=RequestRoute)
validate_router = APIRouter(prefix="/v1/validate", tags=["jobs"])
fleet_router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[AdminDep])

PROBLEMS = problems(s404="No such job for this tenant.")


JSON = "application/json"

# Read from the request by create_job itself, documented here: see its comment.
CREATE_PARAMETERS = [
    {
        "name": "dry_run",
        "in": "query",
        "required": False,
        "schema": {"type": "boolean", "default": False},
        "description": "Validate, estimate and check the budget; create nothing.",
    },
    {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
        "description": "Retry safely: a repeat with the same key and body replays the first "
        "answer (kept at least 24 h); the same key with another body is refused.",
    },
    PREFER_PARAMETER,
    CANCEL_AFTER_PARAMETER,
]
# The schema is JobCreate's per-model description (app.jobs.schemas.job_create_schema).
CREATE_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobCreate"}}},
}
_FLAG = TypeAdapter(bool)


async def _job_create(request: Request) -> JobCreate:
    try:
        return JobCreate.model_validate_json(await request.body())
    except ValidationError as exc:
        raise InputValidationError(validation_errors(exc.errors())) from exc


def _base_url(request: Request) -> str:
    # Starlette rebuilds the base URL from the scope on every request; it depends only on these.
    scope = request.scope
    host = request.headers.get("host")
    key = (scope["scheme"], host, scope.get("server"), scope.get("root_path"))
    url = _BASE_URLS.get(key)
    if url is None:
        if len(_BASE_URLS) >= 256:
            _BASE_URLS.clear()
        url = _BASE_URLS[key] = str(request.base_url).rstrip("/")
    return url


_BASE_URLS: dict[tuple[object, ...], str] = {}


def _wait(request: Request) -> float | None:
    """Seconds to hold the request (``Prefer: wait``), or None."""
    values = request.headers.getlist("prefer")
    if not values:
        return None  # the usual case
    cap = int(request.app.state.settings.prefer_wait_max.total_seconds())
    return wait_preference(values, max_s=cap)


def _applied(headers: MutableHeaders | dict[str, str], wait: float) -> None:
    headers["Preference-Applied"] = f"wait={int(wait)}"
    headers["Vary"] = "Prefer"


async def _held(request: Request, tenant: Tenant, job_id: uuid.UUID, wait: float) -> JobOut:
    """The job once terminal or after ``wait`` s, read (and presented) in a short session each
    time: nothing is held open while waiting."""
    state = request.app.state
    base = _base_url(request)

    async def read() -> JobOut:
        async with state.sessionmaker() as session:
            job = await service.get_job(session, tenant, job_id)
            return (await service.present(session, [job], base))[0]

    return await hold(state.hub, job_id, read, seconds=wait, receive=request.receive)


def _query_flag(request: Request, name: str) -> bool:
    if not request.scope.get("query_string"):
        return False  # the usual case, without building the query's mapping
    value = request.query_params.get(name)
    if value is None:
        return False
    try:
        return _FLAG.validate_python(value)
    except ValidationError as exc:
        raise InputValidationError(validation_errors(exc.errors(), prefix=name)) from exc


@router.post(
    "",
    response_model=JobOut,
    status_code=202,
    responses={
        200: {"model": EstimateOut, "description": "With dry_run=true: the estimate."},
        201: held_response("With `Prefer: wait`: the job, finished within the wait."),
        202: held_response(
            "The job, stored (with `Prefer: wait`: still running when the wait ended)."
        ),
        **problems(
            402,
            409,
            429,
            s403="Tenant suspended (`tenant_suspended`), or a read-only key.",
            s400="`invalid_header`: a Cancel-After that is not a duration (`param` names it).",
            s422="Invalid input, unknown model, or Idempotency-Key reused.",
            s503="No price is configured for the model, so its budget cannot be checked.",
        ),
    },
    openapi_extra={
        "parameters": CREATE_PARAMETERS,
        "requestBody": CREATE_BODY,
        "security": [{current_principal.scheme_name: []}],
    },
)
async def create_job(request: Request) -> Response:
    """Accept a job. Answers 202 once the job is stored (its estimated cost reserved against the
    tenant's budget); a worker sends it to fal. With `dry_run=true`, answers 200 with the
    estimate and whether the budget allows it.

    `Prefer: wait=N` holds the answer until the job is finished (201) or N seconds passed (202,
    the job as it then stands); `Cancel-After: 90s` cancels the job when that time has passed
    (a job that had not started at fal ends `aborted`, at no cost)."""
    # The gateway's hottest endpoint, written to cost little (bench/README.md). The key, the
    # body, Idempotency-Key and dry_run are read here, not declared as dependencies and
    # parameters (the OpenAPI description above says what they are): FastAPI resolves those anew
    # on every request, and that was a fifth of this endpoint's work; pydantic parses the JSON
    # body in one pass. No request-wide session: accepting opens what it needs (often one
    # statement on the driver pool, see app.db.driver) and commits before answering.
    principal = await current_principal(request)
    body = await _job_create(request)
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None:
        check_key(idempotency_key)
    dry_run = _query_flag(request, "dry_run")
    deadline = request.headers.get("cancel-after")
    cancel_in = cancel_after(deadline) if deadline is not None else None
    state = request.app.state
    tenant = principal.tenant
    if dry_run:
        async with state.sessionmaker() as session:
            return JSONResponse(await service.estimate_only(session, tenant, body, state.settings))
    accepted = await service.accept_job(
        state.sessionmaker,
        state.driver_pool,
        tenant,
        body,
        settings=state.settings,
        base_url=_base_url(request),
        # the key's scope (only then: building the URL costs)
        path=request.url.path if idempotency_key else "",
        idempotency_key=idempotency_key,
        cancel_after=cancel_in,
        job_store=state.job_store,
    )
    headers = dict(accepted.headers)
    if accepted.replayed:
        headers["Idempotent-Replayed"] = "true"
        return Response(accepted.body, accepted.status, headers, JSON)
    state.notifier.poke()  # the job is committed: wake a worker (coalesced, see the notifier)
    wait = _wait(request)
    if wait is None:
        return Response(accepted.body, accepted.status, headers, JSON)
    assert accepted.job_id is not None  # not a replay: the job was stored just now
    job = await _held(request, tenant, accepted.job_id, wait)
    _applied(headers, wait)
    status = 201 if job.status.terminal else accepted.status
    return Response(job.model_dump_json().encode(), status, headers, JSON)


@validate_router.post(
    "",
    response_model=ValidationOut,
    responses={200: {"description": "The verdict: valid, or the code a job would fail with."}},
)
async def validate_input(
    body: JobCreate, request: Request, tenant: CurrentTenant, session: SessionDep
) -> dict[str, Any]:
    """Fetch and probe the input now (as the worker would before paying for anything) and answer
    whether a job would be accepted upstream, with the measured probe and the estimate.
    Nothing is created and nothing is sent to fal."""
    state = request.app.state
    return await validation.validate(
        session, tenant, body, state.settings, state.storage, state.job_tokens.secret
    )


@router.get(
    "",
    response_model=ListPage[JobOut],
    responses=problems(
        s400="`invalid_cursor`: no such job to page from, or both starting_after and ending_before."
    ),
)
async def list_jobs(
    request: Request,
    tenant: CurrentTenant,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    status: JobStatus | None = None,
    model: Annotated[
        ModelName | None,  # type: ignore[valid-type]
        Query(
            description="Only this model's jobs: its id or an alias.",
            json_schema_extra={"enum": CATALOG.names()},
        ),
    ] = None,
    created_after: UtcDatetime | None = None,
    created_before: UtcDatetime | None = None,
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


@router.get(
    "/{job_id}",
    response_model=JobOut,
    responses={
        200: held_response(
            "The job (with `Prefer: wait`: as it stood when the wait ended, or once finished)."
        ),
        **PROBLEMS,
    },
    openapi_extra={"parameters": [PREFER_PARAMETER]},
)
async def get_job(
    job_id: uuid.UUID, request: Request, response: Response, tenant: CurrentTenant
) -> JobOut:
    """The job. `Prefer: wait=N` holds the answer until it is finished or N seconds passed."""
    # A session of its own per read, not the request's: a held request holds no connection.
    wait = _wait(request)
    if wait is not None:
        _applied(response.headers, wait)
        return await _held(request, tenant, job_id, wait)
    async with request.app.state.sessionmaker() as session:
        job = await service.get_job(session, tenant, job_id)
        return (await service.present(session, [job], _base_url(request)))[0]


@router.post(
    "/{job_id}/cancel",
    response_model=JobOut,
    responses={**PROBLEMS, **problems(s409="The job already finished.")},
)
async def cancel_job(
    job_id: uuid.UUID, request: Request, tenant: CurrentTenant, session: SessionDep
) -> JobOut:
    """Cancel a job: at once if it never left the gateway, otherwise by asking fal."""
    job = await service.cancel_job(session, request.app.state.job_store, tenant, job_id)
    return (await service.present(session, [job], _base_url(request)))[0]


@router.get(
    "/{job_id}/events",
    response_model=ListPage[JobEventOut],
    responses={
        200: EVENT_STREAM_RESPONSE,
        204: {"description": "An event stream resumed after the job's end: nothing follows."},
        **PROBLEMS,
        **problems(s400="`invalid_header`: a Last-Event-ID that is not an event's seq."),
    },
    openapi_extra={"parameters": [LAST_EVENT_ID_PARAMETER]},
)
async def list_job_events(
    job_id: uuid.UUID,
    request: Request,
    tenant: CurrentTenant,
    limit: Annotated[int, Query(ge=1, le=100)] = 100,
    after: Annotated[
        column_int(JobEvent.seq),  # type: ignore[valid-type]
        Query(description="Only events after this seq (a job's events start at 1)."),
    ] = 0,
) -> Any:
    """The job's history, oldest first: every transition as it was committed. With
    `Accept: text/event-stream`, a live stream of them (Server-Sent Events) that ends after the
    job's final event; a reconnecting client sends `Last-Event-ID` and gets what followed."""
    state = request.app.state
    resume = last_event_id(request.headers.get("last-event-id"))
    if resume is not None:
        after = resume
    if stream.wants_stream(request.headers.get("accept")):
        return await stream.open_stream(
            hub=state.hub,
            sessionmaker=state.sessionmaker,
            tenant=tenant,
            job_id=job_id,
            after=after,
            keepalive_s=state.settings.event_stream_keepalive.total_seconds(),
        )
    async with state.sessionmaker() as session:
        rows, has_more = await service.job_events(session, tenant, job_id, after=after, limit=limit)
    return ListPage[JobEventOut](
        data=[JobEventOut.model_validate(r, from_attributes=True) for r in rows],
        has_more=has_more,
        url=f"/v1/jobs/{job_id}/events",
    )


@fleet_router.get("/fleet", response_model=FleetOut)
async def fleet(request: Request, session: SessionDep) -> FleetOut:
    """The workers alive, unfinished jobs by status and age, and fal's slots in use."""
    return await service.fleet(session, request.app.state.settings)
