"""Signing in and out of the console, and the pictures of a job's sound."""

from __future__ import annotations

import asyncio
import hmac
import uuid
from dataclasses import dataclass
from pathlib import Path

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.dependencies import authenticate
from app.auth.keys import KEY_PREFIX
from app.auth.throttle import FailedAuthThrottle
from app.config import Settings
from app.console import images, sessions
from app.files import service as files_service
from app.kit.problems import ProblemError, Unauthorized
from app.storage import Storage

log = structlog.get_logger(__name__)


class SignInRefused(Unauthorized):
    code = "sign_in_refused"


class CrossOriginRefused(ProblemError):
    status = 403
    code = "cross_origin_request"


@dataclass(frozen=True)
class SignedIn:
    token: str
    admin: bool


async def sign_in(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    throttle: FailedAuthThrottle,
    *,
    secret: str,
    source: str,
) -> SignedIn:
    """A session for a tenant key or the operator's admin token (one field takes either). A
    failure of either kind is throttled like the admin API's (app.auth.throttle): the form is
    where an admin token would be guessed."""
    token = settings.admin_token
    if token is not None and hmac.compare_digest(
        secret.encode(), token.get_secret_value().encode()
    ):
        throttle.succeeded(source)
        return SignedIn(await _open(sessionmaker, settings, api_key_id=None), admin=True)
    if secret.startswith(KEY_PREFIX):
        try:
            principal = await authenticate(sessionmaker, settings, secret)
        except Unauthorized:
            pass
        else:
            return SignedIn(
                await _open(sessionmaker, settings, api_key_id=principal.api_key.id), admin=False
            )
    delay, failures = await throttle.failed(source)
    log.warning("console sign-in refused", source=source, failures=failures, delayed_s=delay)
    raise SignInRefused("That is neither a valid API key nor the admin token.", param="secret")


async def _open(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    api_key_id: uuid.UUID | None,
) -> str:
    async with sessionmaker() as session, session.begin():
        return await sessions.open_session(
            session, api_key_id=api_key_id, ttl=settings.console_session_ttl
        )


async def sign_out(sessionmaker: async_sessionmaker[AsyncSession], session_id: uuid.UUID) -> None:
    async with sessionmaker() as session, session.begin():
        await sessions.close_session(session, session_id)


async def sound_picture(
    session: AsyncSession,
    storage: Storage,
    *,
    tenant_id: uuid.UUID,
    file_id: uuid.UUID,
    kind: images.Kind,
    tmp_dir: Path,
) -> bytes:
    """The PNG of one of the tenant's files' sound (404 for another tenant's file)."""
    file = await files_service.get_file(session, tenant_id, file_id)
    files_service.ensure_present(file)
    async with files_service.local_copy(storage, file.storage_key, tmp_dir) as path:
        return await asyncio.to_thread(images.render, path, kind)
