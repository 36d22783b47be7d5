"""`/_emulator/...`: the control endpoint (admin key as `Bearer` or `Key`).

Not part of fal: this is how tests and developers steer faults and inspect what happened.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Request
from pydantic import BaseModel, ValidationError

from emulator.config import Knobs
from emulator.routes.common import emu_of
from emulator.state import Emulator


def _admin(request: Request) -> Emulator:
    emu = emu_of(request)
    if not emu.admin_ok(request.headers.get("authorization")):
        raise HTTPException(401, "admin key required: 'Authorization: Bearer <admin key>'")
    return emu


AdminEmu = Annotated[Emulator, Depends(_admin)]
router = APIRouter(prefix="/_emulator", tags=["emulator control"])


class ResetOptions(BaseModel):
    jobs: bool = True
    seed: int | None = None


@router.get("/health", summary="Liveness (no auth)")
async def health(request: Request) -> dict[str, Any]:
    return {"status": "ok", "base_url": emu_of(request).base_url}


@router.get("/state", summary="Settings, knobs and counters")
async def state(emu: AdminEmu) -> dict[str, Any]:
    engine = emu.engine
    return {
        "base_url": emu.base_url,
        "fast": emu.settings.fast,
        "data_dir": str(emu.settings.data_dir),
        "user_id": emu.settings.user_id,
        "seed": emu.seed,
        "knobs": emu.knobs.model_dump(mode="json"),
        "jwks": emu.signer.jwks(),
        "requests": {
            "known": len(engine.jobs),
            "running": len(engine.running),
            "queued": sum(1 for job in engine.jobs.values() if job.status == "IN_QUEUE"),
        },
    }


@router.get("/control", summary="Current knobs")
async def get_knobs(emu: AdminEmu) -> dict[str, Any]:
    return emu.knobs.model_dump(mode="json")


@router.post("/control", summary="Change knobs (partial update)")
async def set_knobs(emu: AdminEmu, patch: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    unknown = set(patch) - set(Knobs.model_fields)
    if unknown:
        raise HTTPException(422, f"unknown knobs: {sorted(unknown)}")
    try:
        knobs = emu.update_knobs(patch)
    except ValidationError as exc:
        raise HTTPException(422, exc.errors(include_url=False, include_context=False)) from exc
    return knobs.model_dump(mode="json")


@router.post("/reset", summary="Startup knobs; clear requests, logs, usage")
async def reset(
    emu: AdminEmu, options: Annotated[ResetOptions | None, Body()] = None
) -> dict[str, Any]:
    options = options or ResetOptions()
    return emu.reset(jobs=options.jobs, seed=options.seed).model_dump(mode="json")


@router.get("/requests", summary="Every HTTP request received (except /_emulator)")
async def request_log(
    emu: AdminEmu,
    model: str | None = None,
    method: str | None = None,
    path_prefix: str | None = None,
    request_id: str | None = None,
    since_seq: int = 0,
) -> dict[str, Any]:
    return {
        "requests": emu.requests.list(
            model=model,
            method=method,
            path_prefix=path_prefix,
            request_id=request_id,
            since_seq=since_seq,
        )
    }


@router.get("/jobs", summary="Known queue requests")
async def jobs(emu: AdminEmu) -> dict[str, Any]:
    return {
        "jobs": [
            {
                "request_id": job.request_id,
                "endpoint_id": job.endpoint_id,
                "status": job.status.value,
                "result_status": job.outcome.status_code if job.outcome else None,
            }
            for job in emu.engine.jobs.values()
        ]
    }


@router.get("/jobs/{request_id}", summary="One request: input with defaults, logs, result, usage")
async def job(emu: AdminEmu, request_id: str) -> dict[str, Any]:
    found = emu.engine.jobs.get(request_id)
    if found is None:
        raise HTTPException(404, "unknown request")
    return emu.engine.describe(found)


@router.get("/webhooks", summary="Every webhook delivery attempt")
async def webhooks(emu: AdminEmu, request_id: str | None = None) -> dict[str, Any]:
    attempts = [
        attempt
        for attempt in emu.webhooks.attempts
        if request_id is None or attempt["request_id"] == request_id
    ]
    return {"attempts": attempts}


@router.get("/usage", summary="Billing records, billed or not, with the reason")
async def usage(emu: AdminEmu) -> dict[str, Any]:
    return {"records": [record.as_dict() for record in emu.ledger.records]}
