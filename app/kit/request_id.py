"""A request id on every request: taken from ``X-Request-Id`` when the caller sends a sane one,
generated otherwise, echoed on the response and bound to every log line (with the tenant and
the job, where the request binds them: app.auth, app.jobs.service).

An exception no handler took is answered here, inside the request id's scope: Starlette's own
last-resort handler sits outside every middleware, so its 500 carried no id (neither in the body
nor as ``X-Request-Id``) and it re-raised, which made the server drop the connection."""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable
from contextvars import ContextVar

import structlog
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger(__name__)

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
_SANE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def current_request_id() -> str | None:
    return _request_id.get()


# Sends the 500 answer of an unhandled exception (problem+json, from app.kit.problems: kit
# modules do not import each other in a cycle, so it is given to the middleware).
InternalErrorResponder = Callable[[Scope, Send], Awaitable[None]]


class RequestIdMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): it must not buffer streamed file responses."""

    def __init__(self, app: ASGIApp, on_error: InternalErrorResponder) -> None:
        self.app = app
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        rid = incoming if incoming and _SANE.match(incoming) else f"req_{os.urandom(16).hex()}"
        token = _request_id.set(rid)
        structlog.contextvars.bind_contextvars(request_id=rid)

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            # The client left mid-request (an upload dropped): nobody to answer, no bug to log.
            log.info("client disconnected", path=scope.get("path"))
        except Exception:
            log.exception("unhandled error", path=scope.get("path"))
            if started:
                raise  # half a response is out: only closing the connection can tell the client
            await self.on_error(scope, send_with_id)
        finally:
            # And what the request bound on its way: its tenant, the job it created.
            structlog.contextvars.unbind_contextvars("request_id", "tenant_id", "job_id")
            _request_id.reset(token)
