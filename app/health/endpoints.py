from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

from app.db.migrate import current_revision, head_revision

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str = Field(description="ok: the process is up.")


class Readiness(BaseModel):
    status: str = Field(description="ready, or not_ready.")
    checks: dict[str, str] = Field(description="Each check (database, migrations): ok or why not.")


@router.get("/healthz", response_model=Health)
async def healthz() -> dict[str, str]:
    """The process is up (liveness)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready: see checks."}},
)
async def readyz(request: Request) -> JSONResponse:
    """The database answers and its schema is at the migrations' head (readiness)."""
    engine = request.app.state.engine
    checks: dict[str, str] = {}
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
        current, head = await current_revision(engine), head_revision()
        checks["migrations"] = "ok" if current == head else f"at {current}, head is {head}"
    except Exception as exc:  # readiness reports, it does not raise
        checks.setdefault("database", f"error: {type(exc).__name__}")
    ready = all(v == "ok" for v in checks.values()) and "migrations" in checks
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status_code=200 if ready else 503,
    )
