"""RFC 9457 problem details: one error base class carrying its HTTP status, one handler, one shape.

Every error the API returns is ``application/problem+json`` with ``type``, ``title``, ``status``,
``detail``, ``instance`` and the extensions ``code`` (stable, machine-readable), ``param`` (the
offending field, dotted) and ``request_id``. Domain errors subclass :class:`ProblemError` beside
the service that raises them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, ClassVar

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route
from starlette.types import Message, Scope, Send

from app.kit.examples import with_examples
from app.kit.request_id import current_request_id

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://foley.dev/problems/"


class ProblemFieldError(BaseModel):
    param: str = Field(description="The offending field, dotted (input.prompt, metadata.k).")
    code: str = Field(description="Why, as a stable code (text_nul, string_too_long, missing …).")
    message: str | None = Field(description="Why, for people.")


class Problem(BaseModel):
    """An error, as RFC 9457 problem details (``application/problem+json``)."""

    model_config = with_examples(
        {
            "type": "https://foley.dev/problems/validation_error",
            "title": "Unprocessable Content",
            "status": 422,
            "detail": "input.prompt: String should have at most 200 characters",
            "instance": "/v1/jobs",
            "code": "string_too_long",
            "param": "input.prompt",
            "request_id": "req_5f0c…",
            "errors": [
                {
                    "param": "input.prompt",
                    "code": "string_too_long",
                    "message": "String should have at most 200 characters",
                }
            ],
        },
        extra="allow",
    )

    type: str = Field(description="A URI naming the kind of problem (ends with its code).")
    title: str = Field(description="The HTTP status's phrase.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong, for people.")
    instance: str | None = Field(description="The request's path.")
    code: str = Field(description="A stable, machine-readable code (e.g. rate_limited).")
    param: str | None = Field(description="The offending parameter or field, dotted, if any.")
    request_id: str | None = Field(
        description="The request's id (also the X-Request-Id header): quote it when reporting."
    )
    errors: list[ProblemFieldError] | None = Field(
        default=None, description="With a 422: every offending field."
    )


# What each error status means in this API, for the OpenAPI description of every operation.
PROBLEM_STATUSES: dict[int, str] = {
    400: "A malformed request: a body that cannot be read, or a cursor naming nothing.",
    401: "Missing or invalid credentials.",
    402: "The estimated cost exceeds the remaining budget (`budget_exceeded`).",
    403: "Not allowed: a read-only key, or a suspended tenant.",
    404: "No such object (for this tenant).",
    409: "A conflict with the object's state, or a request with this Idempotency-Key running.",
    410: "Gone: deleted by the retention policy.",
    411: "Length required: a multipart upload without Content-Length.",
    413: "The request body is larger than the endpoint accepts (`request_too_large`).",
    416: "The requested range is outside the file.",
    422: "Invalid input: `errors` lists every offending field with a stable code.",
    429: "Too many job creations: see Retry-After and the RateLimit headers.",
    503: "A dependency is unavailable right now; retry later.",
}


def problem_response_doc(status: int, description: str | None = None) -> dict[str, Any]:
    """An OpenAPI response object: the Problem schema as ``application/problem+json``."""
    return {
        "description": description or PROBLEM_STATUSES[status],
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def problems(*statuses: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: ``problems(402, 409, s429="…")``."""
    out: dict[int | str, dict[str, Any]] = {s: problem_response_doc(s) for s in statuses}
    for key, text in described.items():
        status = int(key.removeprefix("s"))
        out[status] = problem_response_doc(status, text)
    return out


class ProblemError(Exception):
    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str | None] = None

    def __init__(
        self,
        detail: str,
        *,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
        code: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.param = param
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})
        if code is not None:
            self.code = code  # type: ignore[misc]
        if status is not None:
            self.status = status  # type: ignore[misc]


class BadRequest(ProblemError):
    status = 400
    code = "bad_request"


class Unauthorized(ProblemError):
    status = 401
    code = "unauthorized"


class Forbidden(ProblemError):
    status = 403
    code = "forbidden"


class NotFound(ProblemError):
    status = 404
    code = "not_found"


class Conflict(ProblemError):
    status = 409
    code = "conflict"


class Gone(ProblemError):
    status = 410
    code = "gone"


class Unprocessable(ProblemError):
    status = 422
    code = "validation_error"


def problem_body(
    *,
    status: int,
    code: str,
    detail: str,
    instance: str | None,
    title: str | None = None,
    param: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": TYPE_BASE + code,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": instance,
        "code": code,
        "param": param,
        "request_id": current_request_id(),
    }
    if extra:
        body.update(extra)
    return body


def problem_response(
    request: Request | None,
    *,
    status: int,
    code: str,
    detail: str,
    title: str | None = None,
    param: str | None = None,
    extra: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = problem_body(
        status=status,
        code=code,
        detail=detail,
        title=title,
        instance=request.url.path if request is not None else None,
        param=param,
        extra=extra,
    )
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _loc_to_param(loc: Sequence[Any]) -> str:
    # pydantic names the member of a union a value failed in its loc (e.g. ``list[str]``,
    # ``function-after[…]``): a type, not a field of the request.
    parts = [
        str(p) for p in loc if p not in ("body", "query", "path", "header") and not _union_member(p)
    ]
    return ".".join(parts)


def _union_member(part: Any) -> bool:
    return isinstance(part, str) and _UNION_MEMBER.fullmatch(part) is not None


_UNION_MEMBER = re.compile(r"[a-z][a-z-]*\[.*\]|str|int|float|bool")


def validation_errors(errors: Sequence[Mapping[str, Any]], *, prefix: str = "") -> list[dict]:
    out = []
    for err in errors:
        param = _loc_to_param(err.get("loc", ()))
        if prefix:
            param = f"{prefix}.{param}" if param else prefix
        out.append({"param": param, "code": err.get("type", "invalid"), "message": err.get("msg")})
    return out


class InputValidationError(Unprocessable):
    """A request body that failed schema validation; ``errors`` lists every offending field."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        first = errors[0] if errors else {"param": None, "message": "invalid input"}
        detail = f"{first['param']}: {first['message']}" if first["param"] else first["message"]
        super().__init__(detail, param=first["param"], extra={"errors": errors})


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(
            request,
            status=exc.status,
            code=exc.code,
            detail=exc.detail,
            title=exc.title,
            param=exc.param,
            extra=exc.extra,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = InputValidationError(validation_errors(exc.errors()))
        return await _problem(request, err)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request)
        return problem_response(
            request, status=exc.status_code, code=code, detail=str(exc.detail), headers=headers
        )


def _allowed_methods(request: Request) -> str:
    """Every method the path has. Starlette answers 405 from the first route whose path matches,
    so its Allow lists that route's methods only (GET /v1/jobs and POST /v1/jobs are two)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods and route.path_regex.match(request.url.path):
            methods |= route.methods
    return ", ".join(sorted(methods))


async def internal_error(scope: Scope, send: Send) -> None:
    """The answer to an exception no handler took (sent by app.kit.request_id's middleware)."""
    response = JSONResponse(
        problem_body(
            status=500,
            code="internal_error",
            detail="An internal error occurred; quote the request_id when reporting it.",
            instance=scope.get("path"),
        ),
        status_code=500,
        media_type=PROBLEM_JSON,
    )
    await response(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
