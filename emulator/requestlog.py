"""The request log (every HTTP request the emulator received) and the ambiguous-submit drop.

Gateway tests read the log (`GET /_emulator/requests`) to prove what reached "fal" — or that
nothing did. Control-endpoint calls (`/_emulator/...`) are not logged.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ENTRY_KEY = "emulator.entry"
DROP_KEY = "emulator.drop"  # seconds to hold the connection before closing it unanswered


class RequestLog:
    def __init__(self, maxlen: int) -> None:
        self.entries: deque[dict[str, Any]] = deque(maxlen=maxlen)
        self._seq = itertools.count(1)

    def clear(self) -> None:
        self.entries.clear()

    def new_entry(self, method: str, path: str, query: bytes, at: float) -> dict[str, Any]:
        entry = {
            "seq": next(self._seq),
            "at": at,
            "method": method,
            "path": path,
            "query": query.decode("latin-1"),
            "model": None,
            "request_id": None,
            "status": None,
            "outcome": None,
            # a submit that created a request: its accepted X-Fal-Tags (who sent it, for a
            # gateway counting the requests each of its jobs made)
            "tags": None,
        }
        self.entries.append(entry)
        return entry

    def list(
        self,
        *,
        model: str | None = None,
        method: str | None = None,
        path_prefix: str | None = None,
        request_id: str | None = None,
        since_seq: int = 0,
    ) -> list[dict[str, Any]]:
        out = []
        for entry in list(self.entries):
            if entry["seq"] <= since_seq:
                continue
            if model is not None and entry["model"] != model:
                continue
            if method is not None and entry["method"] != method.upper():
                continue
            if path_prefix is not None and not entry["path"].startswith(path_prefix):
                continue
            if request_id is not None and entry["request_id"] != request_id:
                continue
            out.append({**entry, "at": datetime.fromtimestamp(entry["at"], UTC).isoformat()})
        return out


def _transport_of(receive: Receive) -> asyncio.BaseTransport | None:
    # uvicorn's receive is a bound method of its RequestResponseCycle, which holds the
    # connection's transport. No ASGI API closes a connection without answering, which is
    # exactly what an ambiguous submit needs. (uvloop's transports do not subclass asyncio's,
    # hence the duck typing.)
    cycle = getattr(receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is not None and callable(getattr(transport, "close", None)):
        return transport  # type: ignore[no-any-return]
    return None


FastPath = Callable[[Scope, Receive, Send], Awaitable[bool]]


class EmulatorFront:
    """The front of the app, as pure ASGI (cheap on the hot path): logs every request, gives
    it to `fast_path` (the queue API) first and to the FastAPI app when that declines, and
    performs ambiguous-submit drops."""

    def __init__(self, app: ASGIApp, log: RequestLog, fast_path: FastPath | None = None) -> None:
        self.app = app
        self.log = log
        self.fast_path = fast_path

    @property
    def state(self) -> Any:
        """The wrapped app's state (so `create_app(...).state.emu` works)."""
        return self.app.state  # type: ignore[attr-defined]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_emulator/"):
            await self.app(scope, receive, send)
            return
        entry = self.log.new_entry(
            scope["method"], scope["path"], scope["query_string"], time.time()
        )
        scope[ENTRY_KEY] = entry

        async def send_wrapper(message: Message) -> None:
            if DROP_KEY in scope:
                return  # the answer of an ambiguous submit is never sent
            if message["type"] == "http.response.start":
                entry["status"] = message["status"]
            await send(message)

        if self.fast_path is None or not await self.fast_path(scope, receive, send_wrapper):
            await self.app(scope, receive, send_wrapper)
        hold = scope.get(DROP_KEY)
        if hold is None:
            return
        entry["outcome"] = "dropped"
        await asyncio.sleep(hold)
        transport = _transport_of(receive)
        if transport is not None:
            transport.close()
            # Let the server see the connection go before the app returns, so it does not try
            # to answer the request itself.
            for _ in range(3):
                await asyncio.sleep(0)
            return
        # Fallback for a server without that attribute: promise a body and never send it.
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"64")]}
        )
        await send({"type": "http.response.body", "body": b"", "more_body": False})
