"""Console sessions: the only code that reads or writes ``console_sessions`` rows.

The cookie carries a random 256-bit token; the row keeps its SHA-256 (a copy of the table signs
nobody in), whose session it is (a tenant's key, or the operator), the CSRF token every
mutation must echo in ``X-CSRF-Token`` (the synchronizer-token pattern: the page gets it, a
cross-site form cannot) and when it ends. A tenant's session is read joined to its key, so
revoking or expiring the key ends the session at its next request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.kit.clock import utcnow
from app.models import ApiKey, ConsoleSession, Tenant

COOKIE = "foley_console"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class SignedIn:
    """A live session: the operator's (``api_key`` None) or a tenant key's."""

    id: uuid.UUID
    csrf_token: str
    api_key: ApiKey | None
    tenant: Tenant | None

    @property
    def admin(self) -> bool:
        return self.api_key is None

    def csrf_matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.csrf_token.encode())


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def open_session(
    session: AsyncSession, *, api_key_id: uuid.UUID | None, ttl: timedelta
) -> str:
    """A new session (the operator's when ``api_key_id`` is None); returns the cookie's token.
    Sessions already past their end are deleted on the way: sign-ins are rare, and it keeps the
    table to the live ones without a housekeeping task."""
    now = utcnow()
    await session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
    token = secrets.token_urlsafe(32)
    session.add(
        ConsoleSession(
            id=uuid.uuid4(),
            token_hash=_hash(token),
            api_key_id=api_key_id,
            admin=api_key_id is None,
            csrf_token=secrets.token_urlsafe(32),
            expires_at=now + ttl,
        )
    )
    await session.flush()
    return token


async def resolve(sessionmaker: async_sessionmaker[AsyncSession], token: str) -> SignedIn | None:
    """The live session of this cookie token, or None (unknown, ended, or its key unusable).
    A short session of its own, like the key lookup (app.auth.dependencies.authenticate)."""
    now = utcnow()
    stmt = (
        select(ConsoleSession, ApiKey, Tenant)
        .outerjoin(ApiKey, ApiKey.id == ConsoleSession.api_key_id)
        .outerjoin(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ConsoleSession.token_hash == _hash(token))
        .where(ConsoleSession.expires_at > now)
        .where(
            or_(
                ConsoleSession.admin,
                ApiKey.revoked_at.is_(None)
                & or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
            )
        )
    )
    async with sessionmaker() as session:
        row = (await session.execute(stmt)).first()
    if row is None:
        return None
    return SignedIn(
        id=row.ConsoleSession.id,
        csrf_token=row.ConsoleSession.csrf_token,
        api_key=row.ApiKey,
        tenant=row.Tenant,
    )


async def close_session(session: AsyncSession, session_id: uuid.UUID) -> None:
    await session.execute(delete(ConsoleSession).where(ConsoleSession.id == session_id))
