"""POST a signed message to a receiver under the outbound policy: one attempt, its outcome.

The URL goes through app.netguard as an input video's does: resolved, every address vetted
(loopback, private, metadata … refused unless the policy allows them), and the connection made
to the vetted address (``Host`` and TLS SNI carry the name), so a DNS answer that changes after
the check cannot move it. Redirects are never followed: a 3xx is a failed attempt. The request
itself is app.notifications.http1's (kept-alive connections, per name: see there why).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import timedelta

import httpx

from app.kit.ttlcache import TTLCache
from app.netguard import OutboundPolicy, OutboundRefused, UrlRefused
from app.netguard.addresses import IPAddress, connect_address
from app.netguard.fetch import default_tls_context
from app.netguard.policy import DEFAULT_PORTS, parse_url, vet_url
from app.notifications.http1 import Answer, Http1Pool, ProtocolError
from app.upstream.retry import parse_retry_after

USER_AGENT = "foley-webhooks"
# Vetted addresses of a name are reused this long (vetting is what costs: a DNS lookup).
RESOLVE_TTL_S = 30.0
# How much of a failed answer's body is kept with the attempt.
ERROR_BODY_CHARS = 200


@dataclass(frozen=True, slots=True)
class Outcome:
    status_code: int | None  # None: no answer (refused, unreachable, timed out)
    duration_ms: int
    error: str | None  # None: a 2xx
    retry_after: timedelta | None = None  # from a 429 or 503

    @property
    def ok(self) -> bool:
        return self.error is None


class Transport:
    """Sends attempts; one per worker process, shared by its delivery tasks."""

    def __init__(self, policy: OutboundPolicy, timeout: timedelta) -> None:
        self.policy = policy
        self.timeout_s = timeout.total_seconds()
        self._pool = Http1Pool(default_tls_context(), connect_timeout_s=min(5.0, self.timeout_s))
        self._vetted: TTLCache[list[IPAddress]] = TTLCache(RESOLVE_TTL_S)

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def post(self, url: str, headers: dict[str, str], body: str) -> Outcome:
        started = time.monotonic()

        def outcome(
            status: int | None, error: str | None, retry_after: timedelta | None = None
        ) -> Outcome:
            return Outcome(status, int((time.monotonic() - started) * 1000), error, retry_after)

        try:
            parsed = parse_url(url, self.policy)
            addresses = await self._vetted.get_or_load(
                (parsed.scheme, parsed.raw_host, parsed.port),
                lambda: vet_url(parsed, self.policy),
            )
        except (UrlRefused, OutboundRefused) as exc:
            return outcome(None, f"{exc.code}: {exc.detail}")
        try:
            async with asyncio.timeout(self.timeout_s):
                answer = await self._send(parsed, addresses, headers, body.encode())
        except TimeoutError:
            return outcome(None, f"no answer within {self.timeout_s:g} s")
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            return outcome(None, f"{type(exc).__name__}: {exc}".rstrip(": "))
        except (ProtocolError, ValueError) as exc:
            return outcome(None, f"not an HTTP answer: {exc}")
        status = answer.status
        if 200 <= status < 300:
            return outcome(status, None)
        if 300 <= status < 400:
            return outcome(status, f"answered {status} (redirects are not followed)")
        text = answer.body[:ERROR_BODY_CHARS].decode("utf-8", "replace").strip()
        wait_s = (
            parse_retry_after(answer.headers.get("retry-after")) if status in (429, 503) else None
        )
        retry_after = None if wait_s is None else timedelta(seconds=wait_s)
        return outcome(status, f"answered {status}" + (f": {text}" if text else ""), retry_after)

    async def _send(
        self, url: httpx.URL, addresses: list[IPAddress], headers: dict[str, str], body: bytes
    ) -> Answer:
        host = url.raw_host.decode("ascii")
        target = url.raw_path.decode("ascii") or "/"
        failure: OSError | None = None
        for ip in addresses:
            try:
                return await self._pool.post(
                    scheme=url.scheme,
                    address=str(connect_address(ip)),
                    port=url.port or DEFAULT_PORTS[url.scheme],
                    host=host,
                    host_header=url.netloc.decode("ascii"),
                    target=target,
                    headers={"User-Agent": USER_AGENT, **headers},
                    body=body,
                )
            except ConnectionRefusedError as exc:
                failure = exc  # nothing was sent: the next vetted address may take it
        assert failure is not None
        raise failure
