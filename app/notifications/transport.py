"""POST a signed message to a receiver under the outbound policy: one attempt, its outcome.

The URL goes through app.netguard as an input video's does: resolved, every address vetted
(loopback, private, metadata … refused unless the policy allows them), and the connection made
to the vetted address (``Host`` and TLS SNI carry the name), so a DNS answer that changes after
the check cannot move it. Redirects are never followed: a 3xx is a failed attempt.

Unlike app.netguard's fetcher, connections are kept alive: a busy receiver takes many deliveries
a second. That is safe because each receiver host has its own client: a pooled connection (keyed
by the vetted IP) is only ever reused for the name whose certificate it checked.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import httpx

from app.kit.ttlcache import TTLCache
from app.netguard import OutboundPolicy, OutboundRefused, UrlRefused
from app.netguard.addresses import IPAddress, connect_address
from app.netguard.fetch import default_tls_context
from app.netguard.policy import parse_url, vet_url

USER_AGENT = "foley-webhooks"
# Vetted addresses of a name are reused this long (vetting is what costs: a DNS lookup).
RESOLVE_TTL_S = 30.0
# Receivers' clients kept (each with its idle connections); the least recently used go first.
MAX_CLIENTS = 256
# How much of a failed answer's body is kept with the attempt.
ERROR_BODY_CHARS = 200


@dataclass(frozen=True, slots=True)
class Outcome:
    status_code: int | None  # None: no answer (refused, unreachable, timed out)
    duration_ms: int
    error: str | None  # None: a 2xx
    retry_after: timedelta | None = None  # from a 429 or 503
    refused: bool = False  # the URL is not allowed (no later attempt can succeed as is)

    @property
    def ok(self) -> bool:
        return self.error is None


class Transport:
    """Sends attempts; one per worker process, shared by its delivery tasks."""

    def __init__(self, policy: OutboundPolicy, timeout: timedelta) -> None:
        self.policy = policy
        self.timeout_s = timeout.total_seconds()
        self._timeouts = httpx.Timeout(self.timeout_s, connect=min(5.0, self.timeout_s))
        self._clients: OrderedDict[str, httpx.AsyncClient] = OrderedDict()
        self._vetted: TTLCache[list[IPAddress]] = TTLCache(RESOLVE_TTL_S)

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), OrderedDict()
        await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)

    async def post(self, url: str, headers: dict[str, str], body: str) -> Outcome:
        started = time.monotonic()

        def outcome(status: int | None, error: str | None, **more: object) -> Outcome:
            ms = int((time.monotonic() - started) * 1000)
            return Outcome(status, ms, error, **more)  # type: ignore[arg-type]

        try:
            parsed = parse_url(url, self.policy)
            host = parsed.raw_host.decode("ascii")
            addresses = await self._vetted.get_or_load(
                (host, parsed.port, parsed.scheme), lambda: vet_url(parsed, self.policy)
            )
        except UrlRefused as exc:
            return outcome(None, f"{exc.code}: {exc.detail}", refused=not exc.retryable)
        except OutboundRefused as exc:
            return outcome(None, f"{exc.code}: {exc.detail}")
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await self._send(parsed, addresses, headers, body)
        except TimeoutError:
            return outcome(None, f"no answer within {self.timeout_s:g} s")
        except httpx.HTTPError as exc:
            return outcome(None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        status = response.status_code
        if 200 <= status < 300:
            return outcome(status, None)
        text = response.text[:ERROR_BODY_CHARS].strip()
        error = f"answered {status}" + (f": {text}" if text else "")
        if 300 <= status < 400:
            error = f"answered {status} (redirects are not followed)"
        retry_after = _retry_after(response) if status in (429, 503) else None
        return outcome(status, error, retry_after=retry_after)

    async def _send(
        self, url: httpx.URL, addresses: list[IPAddress], headers: dict[str, str], body: str
    ) -> httpx.Response:
        client = self._client(url)
        failure: httpx.TransportError | None = None
        for ip in addresses:
            host = url.raw_host.decode("ascii")
            extensions: dict[str, object] = {"timeout": self._timeouts.as_dict()}
            if url.scheme == "https":
                extensions["sni_hostname"] = host
            request = httpx.Request(
                "POST",
                url.copy_with(host=str(connect_address(ip))),
                headers={"Host": url.netloc.decode("ascii"), "User-Agent": USER_AGENT, **headers},
                content=body.encode(),
                extensions=extensions,
            )
            try:
                response = await client.send(request, follow_redirects=False, auth=None)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                failure = exc  # nothing was sent: the next vetted address may take it
                continue
            return response
        assert failure is not None
        raise failure

    def _client(self, url: httpx.URL) -> httpx.AsyncClient:
        key = f"{url.scheme}://{url.netloc.decode('ascii')}"
        client = self._clients.get(key)
        if client is not None:
            self._clients.move_to_end(key)
            return client
        if len(self._clients) >= MAX_CLIENTS:
            _, old = self._clients.popitem(last=False)
            asyncio.get_running_loop().create_task(old.aclose())
        # trust_env=False: a proxy from the environment would open the connection, not us.
        client = httpx.AsyncClient(
            trust_env=False,
            follow_redirects=False,
            verify=default_tls_context(),
            timeout=self._timeouts,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )
        self._clients[key] = client
        return client


def _retry_after(response: httpx.Response) -> timedelta | None:
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return timedelta(seconds=int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(timedelta(0), when - datetime.now(UTC))
