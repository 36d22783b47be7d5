"""Request bodies are bounded while they are read, not after.

A body announced larger than its route's limit (``Content-Length``) is refused before a byte of
it is read; a chunked body is counted as it arrives and refused at the first chunk past the
limit, so a rejected body costs at most one chunk of memory whatever its size (an unauthenticated
``POST /v1/webhooks/fal`` used to read any body whole before checking its signature). The answer
is ``413`` problem+json, ``code: request_too_large``, with ``Connection: close``: the rest of the
body is never read.

Pure ASGI and cheap on the hot path: with ``Content-Length`` at or under the limit (every JSON
client), the server itself delivers no more than that, so nothing is wrapped.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.kit.problems import PROBLEM_JSON, ProblemError, problem_body


class RequestTooLarge(ProblemError):
    status = 413
    code = "request_too_large"


class _Exceeded(Exception):
    """Raised from receive() into the app, which unwinds; the middleware answers."""


class BodyLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        default_limit: int,
        limits: dict[tuple[str, str], tuple[int, str]],
        self_counting: frozenset[tuple[str, str]] = frozenset(),
    ) -> None:
        """``limits`` maps (method, path) to a route's own limit and the code its 413 carries:
        an upload refused here or by the endpoint's own exact count reads the same."""
        self.app = app
        self.default = (default_limit, RequestTooLarge.code)
        self.limits = limits
        # Routes that stream their body with an exact count of their own (uploads): here only
        # a declared Content-Length over the limit is refused. Cutting a chunked upload off
        # mid-stream closed the connection under a client still sending, which then saw a reset
        # instead of the 413; the route answers it after reading what it needs.
        self.self_counting = self_counting

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, code = self.limits.get((scope["method"], scope["path"]), self.default)
        length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
                break
        if length is not None:
            try:
                announced = int(length)
            except ValueError:
                announced = None  # the server refuses a malformed length before we see it
            if announced is not None and announced <= limit:
                await self.app(scope, receive, send)
                return
            if announced is not None:
                await _refuse(scope, send, limit, code)
                return

        if (scope["method"], scope["path"]) in self.self_counting:
            await self.app(scope, receive, send)
            return

        received = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _Exceeded
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # whatever the app made of the aborted read: the 413 replaces it
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _Exceeded:
            pass
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await _refuse(scope, send, limit, code)


async def _refuse(scope: Scope, send: Send, limit: int, code: str) -> None:
    body = problem_body(
        status=413,
        code=code,
        detail=f"The request body is larger than this endpoint accepts ({limit} bytes).",
        instance=scope.get("path"),
        extra={"limit_bytes": limit},
    )
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
