from __future__ import annotations

from fastapi import APIRouter, Request

from app.account import service
from app.account.schemas import MeOut
from app.auth.dependencies import CurrentPrincipal
from app.db.session import SessionDep

router = APIRouter(prefix="/v1/me", tags=["account"])


@router.get("", response_model=MeOut)
async def get_me(request: Request, principal: CurrentPrincipal, session: SessionDep) -> MeOut:
    """The key you called with (its scope and expiry), its tenant, the limits in force and the
    budget now: spent, reserved, remaining, and when the period resets."""
    return MeOut.model_validate(await service.me(session, principal, request.app.state.settings))
