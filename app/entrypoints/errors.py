"""How `foley` reports a failure: one line on stderr and exit status 1, never a traceback.

Errors an operator can act on (a tenant that does not exist, a value out of range, a database
that is missing, unreachable or not migrated, fal's platform API not answering) are said as
they are. Anything else is a bug: it is named in one line too, and `--debug` (or
``FOLEY_DEBUG=1``) shows its traceback instead. Usage errors stay click's (exit status 2).
"""

from __future__ import annotations

import asyncio


class CliError(Exception):
    """Something the operator can fix, said in one line (what is wrong and what to do)."""


DEBUG_HINT = "run with --debug (or FOLEY_DEBUG=1) for the traceback"


def describe(exc: BaseException) -> str:
    """The one line that reports ``exc``."""
    import httpx
    import pydantic
    import sqlalchemy.exc

    from app.kit.problems import ProblemError

    if isinstance(exc, CliError):
        return str(exc)
    if isinstance(exc, ProblemError):
        return exc.detail
    if isinstance(exc, pydantic.ValidationError):
        return "invalid value: " + "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'input'}: {error['msg']}"
            for error in exc.errors()
        )
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        # The driver's own exception (asyncpg's, with its SQLSTATE) under SQLAlchemy's adapter.
        orig = exc.orig if exc.orig is not None else exc
        return _database_error(getattr(orig, "driver_exception", None) or orig)
    if isinstance(exc, sqlalchemy.exc.SQLAlchemyError):
        return f"database error: {_first_line(exc)}"
    if _is_postgres_error(exc):
        return _database_error(exc)
    if isinstance(exc, ConnectionError | asyncio.TimeoutError | TimeoutError):
        return f"cannot reach the database: {_first_line(exc) or type(exc).__name__}"
    if isinstance(exc, httpx.HTTPError):
        where = f" ({exc.request.url})" if _has_request(exc) else ""
        return f"HTTP request failed{where}: {_first_line(exc) or type(exc).__name__}"
    return f"unexpected error: {type(exc).__name__}: {_first_line(exc)}; {DEBUG_HINT}"


def _database_error(exc: BaseException) -> str:
    if _is_postgres_error(exc):
        sqlstate = getattr(exc, "sqlstate", None)
        message = _first_line(exc)
        if sqlstate == "42P01":  # undefined_table: a database that was never migrated
            return f"database error: {message}; run `foley migrate` against this database"
        return f"database error: {message}"
    if isinstance(exc, OSError | asyncio.TimeoutError | TimeoutError):
        return f"cannot reach the database: {_first_line(exc) or type(exc).__name__}"
    return f"database error: {_first_line(exc) or type(exc).__name__}"


def _is_postgres_error(exc: BaseException) -> bool:
    import asyncpg

    return isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError)


def _has_request(exc: BaseException) -> bool:
    try:
        return exc.request is not None  # type: ignore[attr-defined]
    except RuntimeError:  # httpx raises when the error carries no request
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
