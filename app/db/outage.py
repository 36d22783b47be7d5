"""The database is unreachable: every endpoint answers 503 problem+json with ``Retry-After``.

A client (and fal, delivering a webhook) retries a 503; a 500 says "our bug" and fal gives up
on it. The accepted jobs are in Postgres, so nothing accepted is lost while it is down; what is
refused is refused whole (nothing half-written), and the same request works once it is back.
"""

from __future__ import annotations

import errno

import asyncpg
import sqlalchemy.exc
import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app.kit.problems import problem_response

log = structlog.get_logger(__name__)

RETRY_AFTER_S = 2

_DRIVER_UNAVAILABLE = (
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.ConnectionRejectionError,
    asyncpg.exceptions.InterfaceError,  # e.g. "connection is closed"
)
_SOCKET_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ENOENT, errno.EPIPE, errno.ETIMEDOUT}


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the database cannot be reached right now."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sqlalchemy.exc.TimeoutError):  # no pooled connection came free
            return True
        if isinstance(current, sqlalchemy.exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, _DRIVER_UNAVAILABLE):
            return True
        if isinstance(current, ConnectionError | TimeoutError):
            return True
        if isinstance(current, OSError) and current.errno in _SOCKET_ERRNOS:
            return True
        if isinstance(current, sqlalchemy.exc.DBAPIError) and current.orig is not None:
            current = current.orig
            continue
        current = current.__cause__ or current.__context__
    return False


def install_outage_handler(app: FastAPI) -> None:
    """503 for the database's absence, whatever layer it surfaced in (a session, the raw
    driver, the pool); anything else goes on as the 500 it is."""

    async def _handler(request: Request, exc: Exception) -> JSONResponse:
        if not database_unavailable(exc):
            log.exception("unhandled error", path=request.url.path, exc_info=exc)
            return problem_response(
                request,
                status=500,
                code="internal_error",
                detail="An internal error occurred; quote the request_id when reporting it.",
            )
        log.warning("database unavailable", path=request.url.path, error=str(exc))
        return problem_response(
            request,
            status=503,
            code="database_unavailable",
            detail="The database cannot be reached right now; nothing was changed. Retry.",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    for kind in (
        sqlalchemy.exc.SQLAlchemyError,
        # What a raw checkout (app.db.driver) raises when the server refuses a new connection,
        # e.g. "the database system is shutting down": the dialect's DBAPI error around
        # asyncpg's, which no other kind here covers.
        sqlalchemy.exc.EmulatedDBAPIException,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        OSError,
    ):
        app.add_exception_handler(kind, _handler)  # type: ignore[arg-type]
