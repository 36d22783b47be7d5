"""A tiny local HTTP server that receives webhooks in tests.

    with WebhookSink() as sink:
        ... submit with ?fal_webhook={sink.url} ...
        hook = sink.wait_for(1)[0]          # blocking; `await sink.wait_for_async(1)` in async
        hook.body, hook.headers, hook.json()

`sink.responses` scripts the answers: a list of status codes used in order (then 200), e.g.
`[500, 500]` to force two retries, or `[302]` for a redirect; `None` in it holds that request
open, unanswered, until the sink stops. Every call is recorded with its arrival time.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.waiting import eventually, eventually_sync


@dataclass
class ReceivedWebhook:
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float
    answered: int | None

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class WebhookSink:
    host: str = "127.0.0.1"
    responses: list[int | None] = field(default_factory=list)
    received: list[ReceivedWebhook] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "sink not started"
        return f"http://{self.host}:{self._server.server_address[1]}/hook"

    def start(self) -> WebhookSink:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                with sink._lock:
                    status = sink.responses.pop(0) if sink.responses else 200
                    sink.received.append(
                        ReceivedWebhook(
                            path=self.path,
                            headers={k.lower(): v for k, v in self.headers.items()},
                            body=body,
                            received_at=time.monotonic(),
                            answered=status,
                        )
                    )
                if status is None:
                    sink._released.wait()
                    return
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", f"http://{sink.host}:1/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> WebhookSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def clear(self) -> None:
        with self._lock:
            self.received.clear()
            self.responses.clear()

    def snapshot(self) -> list[ReceivedWebhook]:
        with self._lock:
            return list(self.received)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedWebhook]:
        return eventually_sync(
            lambda: self._at_least(count), timeout=timeout, interval=0.02, what=f"{count} webhooks"
        )

    async def wait_for_async(self, count: int, timeout: float = 10.0) -> list[ReceivedWebhook]:
        return await eventually(
            lambda: self._at_least(count), timeout=timeout, interval=0.02, what=f"{count} webhooks"
        )

    def _at_least(self, count: int) -> list[ReceivedWebhook]:
        got = self.snapshot()
        return got if len(got) >= count else []
