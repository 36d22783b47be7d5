"""Serving Prometheus' text format: the API's ``GET /metrics`` (the process's metrics and the
database's gauges) and a worker's own endpoint on ``FOLEY_WORKER_METRICS_PORT``.

A worker's endpoint is a small asyncio server in the worker's own loop, not prometheus_client's
thread server: it starts and stops with the worker, and a port already taken fails the start
(the operator asked for that port) instead of a thread dying unseen.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from pydantic import SecretStr

from app.kit.problems import Unauthorized
from app.telemetry.gauges import DatabaseGauges

log = structlog.get_logger(__name__)


class MetricsTokenRequired(Unauthorized):
    code = "invalid_metrics_token"


def check_metrics_token(authorization: str | None, token: SecretStr | None) -> None:
    """With FOLEY_METRICS_TOKEN set, the API's /metrics answers only the bearer of it."""
    if token is None:
        return
    scheme, _, given = (authorization or "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise MetricsTokenRequired(
            "GET /metrics needs 'Authorization: Bearer <FOLEY_METRICS_TOKEN>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )


class ApiMetrics:
    """The API's exposition: the process's registry, then the database's gauges (read first if
    their reading is stale)."""

    def __init__(self, gauges: DatabaseGauges) -> None:
        self.gauges = gauges
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(gauges)

    async def render(self) -> bytes:
        await self.gauges.refresh()
        return generate_latest(REGISTRY) + generate_latest(self._registry)


# A scraper's request is a line and a few headers; anything longer is not one.
_MAX_REQUEST_BYTES = 16 * 1024
_READ_TIMEOUT_S = 10.0


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT_S)
        if len(head) > _MAX_REQUEST_BYTES:
            raise ValueError("request too long")
        method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        path = target.split("?", 1)[0]
        if method in ("GET", "HEAD") and path in ("/metrics", "/"):
            status, content_type, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest(REGISTRY)
        else:
            status, content_type, body = "404 Not Found", "text/plain", b"not found\n"
        writer.write(
            (
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            + (b"" if method == "HEAD" else body)
        )
        await writer.drain()
    except (TimeoutError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass  # not a scraper, or gone: nothing to answer
    except ConnectionError:
        pass
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def start_metrics_server(host: str, port: int) -> asyncio.Server:
    """Serve this process's registry at ``http://host:port/metrics`` (until the server is
    closed). Raises OSError when the port cannot be bound."""
    server = await asyncio.start_server(_answer, host, port, limit=_MAX_REQUEST_BYTES)
    bound = server.sockets[0].getsockname()[1] if server.sockets else port
    log.info("worker metrics served", host=host, port=bound)
    return server
