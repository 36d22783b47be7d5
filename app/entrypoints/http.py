"""uvicorn's HTTP protocol, with deadlines for each request's head and for the pace of its body.

uvicorn times out only the idle time between requests on a kept-alive connection: a client that
connects and dribbles its request line and headers (or sends nothing) holds the connection and a
file descriptor for as long as it likes — 200 such clients took the API from 37 to 338 open files
and were never cut off. Here a request's head must be complete within ``head_timeout_s`` of its
first byte (or of the connection, for the first request); past it the connection is closed.

A body is held to a pace, not to a total (nginx's ``client_body_timeout``): an upload over a slow
link may take minutes, but no more than ``body_timeout_s`` may pass between two of its pieces
while the gateway is ready to read. A client that stops sending mid-body gets 408 problem+json
and the connection is closed; the handler reading the body sees a disconnect (it has stored
nothing: uploads are committed only once whole). Time the gateway itself stops reading (the
handler busy, or the server waiting for the handler to ask for a ``100-continue`` body) is not
the client's and never counts.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.kit.problems import problem_body

log = structlog.get_logger(__name__)

HEAD_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 30.0


def _timeout_response(path: str | None) -> bytes:
    body = json.dumps(
        problem_body(
            status=408,
            code="request_body_timeout",
            detail="The request's body stopped arriving; send it again.",
            instance=path,
        )
    ).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/problem+json\r\n"
        f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class DeadlineProtocol(HttpToolsProtocol):
    head_timeout_s = HEAD_TIMEOUT_S
    body_timeout_s = BODY_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        # The gateway was not reading when the body's deadline last passed: the client's time
        # had not started.
        self._was_not_reading = False
        self._arm(self.head_timeout_s, self._head_too_slow)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(self.head_timeout_s, self._head_too_slow)

    def on_headers_complete(self) -> None:
        # Armed before the request starts: a request with no body completes in the same parse,
        # which disarms it again.
        self._was_not_reading = False
        self._arm(self.body_timeout_s, self._body_too_slow)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._was_not_reading = False
        self._arm(self.body_timeout_s, self._body_too_slow)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, seconds: float, then: Callable[[], None]) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, then)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def _body_too_slow(self) -> None:
        self._deadline = None
        cycle = self.cycle
        if self.transport.is_closing() or cycle is None:
            return
        if self.flow.read_paused or cycle.waiting_for_100_continue:
            # The gateway is not reading: the client is not late.
            self._was_not_reading = True
            self._arm(self.body_timeout_s, self._body_too_slow)
            return
        if self._was_not_reading:
            # It started reading (asked to continue, or resumed) since the last deadline, maybe
            # a moment ago: the client gets a whole pace from then, not what was left of it.
            self._was_not_reading = False
            self._arm(self.body_timeout_s, self._body_too_slow)
            return
        log.warning("http.body_timeout", client=self.client, path=self.scope.get("path"))
        answered = cycle.response_started
        # The handler's reads now see a disconnect and its answer, if any, is dropped: the
        # connection carries the 408 alone.
        cycle.disconnected = True
        cycle.message_event.set()
        if not answered:
            self.transport.write(_timeout_response(self.scope.get("path")))
        self.transport.close()


def with_deadlines(*, head_s: float, body_s: float) -> type[DeadlineProtocol]:
    """The protocol class for these deadlines (uvicorn takes a class)."""
    return type(
        "DeadlineProtocol",
        (DeadlineProtocol,),
        {"head_timeout_s": head_s, "body_timeout_s": body_s},
    )
