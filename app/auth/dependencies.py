"""Who is calling: a tenant (``Authorization: Bearer fk_live_…``) or the operator (admin token)."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import structlog
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.keys import hash_api_key
from app.config import Settings
from app.console import sessions as console_sessions
from app.kit.clock import utcnow
from app.kit.problems import Forbidden, Unauthorized
from app.metrics import ADMIN_AUTH_FAILURES
from app.models import ApiKey, Tenant

log = structlog.get_logger(__name__)

admin_bearer = HTTPBearer(
    auto_error=False, scheme_name="AdminToken", description="The operator's admin token."
)

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="foley"'}


@dataclass(frozen=True)
class Principal:
    tenant: Tenant
    api_key: ApiKey


class ReadOnlyKey(Forbidden):
    code = "key_read_only"


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CsrfTokenInvalid(Forbidden):
    code = "csrf_token_invalid"


class NotATenantSession(Forbidden):
    code = "operator_session"


async def console_session(request: Request) -> console_sessions.SignedIn | None:
    """The console session of the request's cookie, if any and live (once per request). Only a
    request without an Authorization header is read this way: an API client's own key always
    wins over whatever cookie a browser might also hold."""
    if "console_session" in request.scope.get("state", {}):
        return request.state.console_session  # type: ignore[no-any-return]
    token = request.cookies.get(console_sessions.COOKIE)
    signed_in = None
    if token:
        signed_in = await console_sessions.resolve(request.app.state.sessionmaker, token)
    request.state.console_session = signed_in
    return signed_in


def check_csrf(request: Request, signed_in: console_sessions.SignedIn) -> None:
    """A cookie is sent by the browser whoever made the page; the CSRF token only by ours."""
    if request.method in SAFE_METHODS:
        return
    if not signed_in.csrf_matches(request.headers.get(console_sessions.CSRF_HEADER)):
        raise CsrfTokenInvalid(
            "A console request that changes something must carry its X-CSRF-Token header.",
            param="X-CSRF-Token",
        )


async def _by_cookie(request: Request) -> Principal | None:
    signed_in = await console_session(request)
    if signed_in is None:
        return None
    if signed_in.api_key is None or signed_in.tenant is None:
        raise NotATenantSession(
            "The operator's console session has no tenant: tenant endpoints take a tenant key."
        )
    check_csrf(request, signed_in)
    return Principal(tenant=signed_in.tenant, api_key=signed_in.api_key)


class TenantKeyAuth(HTTPBearer):
    """The tenant's API key from ``Authorization: Bearer``, resolved to its tenant. One dependency
    that is also the OpenAPI security scheme: every FastAPI dependency costs a little on every
    request, and this one is on all of them."""

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        # HTTPBearer's own parsing, without the credentials model it builds around the result
        authorization = request.headers.get("authorization")
        if authorization is None and console_sessions.COOKIE in request.headers.get("cookie", ""):
            principal = await _by_cookie(request)
            if principal is not None:
                if principal.api_key.read_only and request.method not in SAFE_METHODS:
                    raise ReadOnlyKey("This API key is read-only: it can only read (GET).")
                return principal
        scheme, key = get_authorization_scheme_param(authorization)
        if scheme.lower() != "bearer" or not key:
            raise Unauthorized(
                "Send your API key as 'Authorization: Bearer <key>'.",
                code="missing_api_key",
                headers=_CHALLENGE,
            )
        state = request.app.state
        principal = await authenticate(state.sessionmaker, state.settings, key)
        # Every log line of the request names the tenant (the request id's middleware unbinds it).
        structlog.contextvars.bind_contextvars(tenant_id=str(principal.tenant.id))
        if principal.api_key.read_only and request.method not in SAFE_METHODS:
            raise ReadOnlyKey("This API key is read-only: it can only read (GET).")
        return principal


current_principal = TenantKeyAuth(
    auto_error=False, scheme_name="HTTPBearer", description="A tenant API key (fk_live_…)."
)


async def authenticate(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, api_key: str
) -> Principal:
    """The key's tenant. From the cache when it was looked up within FOLEY_AUTH_CACHE_TTL (no
    database at all); otherwise in a short session of its own, ended before the request takes
    other connections (rate limit, idempotency, its work): holding one while waiting for another
    deadlocks a full pool."""
    key_hash = hash_api_key(api_key)
    now = utcnow()
    cached = _PRINCIPALS.get(key_hash)
    if cached is not None and (cached[0] <= time.monotonic() or not _usable(cached[1], now)):
        cached = None
    if cached is not None and not _touch_due(cached[1], now, settings):
        return Principal(tenant=cached[2], api_key=cached[1])
    async with sessionmaker() as session:
        if cached is not None:
            key, tenant = cached[1], cached[2]
        else:
            stmt = (
                select(ApiKey, Tenant)
                .join(Tenant, Tenant.id == ApiKey.tenant_id)
                .where(ApiKey.key_hash == key_hash)
                .where(ApiKey.revoked_at.is_(None))
                .where(or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now))
            )
            row = (await session.execute(stmt)).first()
            if row is None:
                _PRINCIPALS.pop(key_hash, None)
                raise Unauthorized(
                    "The API key is not valid, expired or was revoked.",
                    code="invalid_api_key",
                    headers=_CHALLENGE,
                )
            key, tenant = row.ApiKey, row.Tenant
            # Detached: the cache outlives the session, and nothing writes through them (last
            # use is an UPDATE statement).
            session.expunge(key)
            session.expunge(tenant)
            ttl = settings.auth_cache_ttl.total_seconds()
            if ttl > 0:
                if len(_PRINCIPALS) > 10_000:
                    _PRINCIPALS.clear()
                _PRINCIPALS[key_hash] = (time.monotonic() + ttl, key, tenant)
        if _touch_due(key, now, settings):
            # Throttled: one write per key per interval, not one per request.
            await session.execute(
                update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now)
            )
            key.last_used_at = now
        await session.commit()
    return Principal(tenant=tenant, api_key=key)


def _touch_due(key: ApiKey, now: datetime, settings: Settings) -> bool:
    return key.last_used_at is None or now - key.last_used_at >= settings.key_touch_interval


# Key → (deadline, key, tenant) for FOLEY_AUTH_CACHE_TTL: a key lookup per request is a large
# share of a short request. Changes made through this process (revoke, rotate, tenant update)
# clear it at once; another process sees them within the TTL.
_PRINCIPALS: dict[str, tuple[float, ApiKey, Tenant]] = {}


def _usable(key: ApiKey, now: datetime) -> bool:
    return key.revoked_at is None and (key.expires_at is None or key.expires_at > now)


def invalidate_principals() -> None:
    _PRINCIPALS.clear()


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def current_tenant(principal: CurrentPrincipal) -> Tenant:
    return principal.tenant


CurrentTenant = Annotated[Tenant, Depends(current_tenant)]


async def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)],
) -> str:
    """The admin actor's name for the audit log."""
    token = request.app.state.settings.admin_token
    if token is None:
        raise Unauthorized(
            "Admin API disabled: FOLEY_ADMIN_TOKEN is not set.", code="admin_disabled"
        )
    if credentials is None and console_sessions.COOKIE in request.headers.get("cookie", ""):
        signed_in = await console_session(request)
        if signed_in is not None and signed_in.admin:
            check_csrf(request, signed_in)
            return "admin:console"
    given = credentials.credentials if credentials else ""
    source = request.client.host if request.client else "unknown"
    throttle = request.app.state.admin_auth_throttle
    if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
        reason = "wrong_token" if given else "missing_token"
        ADMIN_AUTH_FAILURES.labels(reason=reason).inc()
        delay, failures = await throttle.failed(source)
        # One line per failure, never the token itself.
        log.warning(
            "admin authentication failed",
            reason=reason,
            source=source,
            path=request.url.path,
            failures=failures,
            delayed_s=delay,
        )
        raise Unauthorized("Invalid admin token.", code="invalid_admin_token", headers=_CHALLENGE)
    throttle.succeeded(source)
    return "admin"


AdminDep = Depends(require_admin)
AdminActor = Annotated[str, Depends(require_admin)]
