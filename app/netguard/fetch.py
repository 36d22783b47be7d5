"""``SafeFetcher``: GET/HEAD a tenant's URL without letting it steer the gateway anywhere else.

Per hop (the URL given, then each redirect target):
1. ``parse_url``: scheme, no credentials, a host.
2. ``vet_url``: resolve the host once, every address checked against the policy.
3. Connect to a vetted address, never to the name: the request is sent to
   ``scheme://<vetted ip>:<port>/path`` with ``Host: <original host[:port]>``, and for https the
   ``sni_hostname`` request extension set to the original host. httpcore passes that extension as
   ``server_hostname`` to ``ssl.SSLContext.wrap_socket``, which both sends it as SNI and verifies
   the certificate against it (``check_hostname`` stays on), so TLS still authenticates the name
   the tenant gave while the socket goes to the address we checked. Nothing below us resolves the
   name again, so a DNS answer that changes between check and connect (rebinding) cannot move the
   connection.
4. Connections are kept alive per host name, never shared between names: a pooled connection
   is keyed by the IP it was opened to, and reusing one opened (and certificate-checked) for
   one name for another name on the same IP would skip step 3 for the second. So each name
   (scheme, host, port) has a client of its own; a request on a kept connection that fails
   before any answer (the server closed it while it was idle) is sent once more, on a new
   connection (a GET or HEAD is safe to repeat). A client the caller injects keeps nothing:
   its requests carry ``Connection: close``.
5. Redirects (301/302/303/307/308 with a Location) are followed here, never by httpx, up to
   ``max_redirects``; the method stays GET/HEAD.

Bodies stream to a temporary file beside the destination (hashed as they go) and are renamed into
place only when complete; any failure, the caps included, removes it. A caller may ask for small
bodies in memory instead (``in_memory_max``): then no file is written at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import ssl
import tempfile
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import httpx

from app.netguard.addresses import IPAddress, connect_address
from app.netguard.errors import (
    ContentTooLarge,
    FetchFailed,
    FetchTimeout,
    OutboundRefused,
    TooManyRedirects,
    UrlRefused,
)
from app.netguard.policy import OutboundPolicy, Resolver, parse_url, vet_url

DEFAULT_USER_AGENT = "foley-gateway"
CHUNK_SIZE = 256 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

_TIMEOUT_PHASES: dict[type[httpx.TimeoutException], str] = {
    httpx.ConnectTimeout: "connect",
    httpx.ReadTimeout: "read",
    httpx.WriteTimeout: "write",
    httpx.PoolTimeout: "pool",
}


@dataclass(frozen=True, slots=True)
class FetchResult:
    final_url: str  # after redirects, with the hostname (not the IP we connected to)
    status: int
    size_bytes: int
    content_type: str | None
    sha256: str  # hex
    redirects: int
    address: str  # the vetted IP the body came from
    body: bytes | None = field(default=None, repr=False)  # when kept in memory (no file)


@dataclass(frozen=True, slots=True)
class HeadResult:
    final_url: str
    status: int
    content_length: int | None
    content_type: str | None
    redirects: int
    address: str
    headers: httpx.Headers


@dataclass(slots=True)
class _Opened:
    response: httpx.Response
    url: httpx.URL
    address: str
    redirects: int


@functools.cache
def default_tls_context() -> ssl.SSLContext:
    """certifi's roots, as httpx builds them for ``verify=True`` without ``trust_env``.

    Built once per process: loading the CA bundle costs ~23 ms of CPU, which a client per fetch
    paid every time (it was most of a job's preflight). Sharing one context is safe: httpcore
    only sets the same ALPN list on it before each handshake, and each connection gets its own
    ``SSLSocket``/``SSLObject`` with ``check_hostname`` on.
    """
    return httpx.create_ssl_context(verify=True, trust_env=False)


def build_client(
    *, verify: ssl.SSLContext | bool = True, max_connections: int | None = 20
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` fit for ``SafeFetcher`` (one per process is enough).

    ``trust_env=False``: an ``HTTP(S)_PROXY`` from the environment would make the proxy, not us,
    open the connection. No keep-alive (see step 4 above). Timeouts come per request from the
    policy. ``verify`` is httpx's (an ``ssl.SSLContext``, or True for certifi's roots, from
    ``default_tls_context``).
    """
    return httpx.AsyncClient(
        trust_env=False,
        follow_redirects=False,
        verify=default_tls_context() if verify is True else verify,
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=0),
    )


# Kept-alive clients, one per host name (step 4 above), per event loop, for every fetcher built
# without one: a download of a name fetched a moment ago (fal's CDN, a tenant's bucket) then
# skips the TCP (and TLS) connect, ~1 ms of CPU for a 300 KiB body over plain HTTP. The least
# recently used names past HOSTS_KEPT lose theirs, closed once any fetch that may still use it
# has timed out.
HOSTS_KEPT = 32
KEEPALIVE_S = 4.0  # under common servers' idle timeouts (Node's is 5 s)
_LOOP_CLIENTS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, OrderedDict[tuple[str, str, int | None], httpx.AsyncClient]
] = weakref.WeakKeyDictionary()
_RETIRING: set[asyncio.Task[None]] = set()


def _host_client(url: httpx.URL, retire_after_s: float) -> httpx.AsyncClient:
    """The running loop's client for ``url``'s host name."""
    loop = asyncio.get_running_loop()
    clients = _LOOP_CLIENTS.get(loop)
    if clients is None:
        clients = _LOOP_CLIENTS[loop] = OrderedDict()
    key = (url.scheme, url.host, url.port)
    client = clients.pop(key, None)
    if client is None or client.is_closed:
        client = httpx.AsyncClient(
            trust_env=False,
            follow_redirects=False,
            verify=default_tls_context(),
            limits=httpx.Limits(
                max_connections=None, max_keepalive_connections=8, keepalive_expiry=KEEPALIVE_S
            ),
        )
    clients[key] = client  # the most recently used last
    while len(clients) > HOSTS_KEPT:
        _, retired = clients.popitem(last=False)
        loop.call_later(retire_after_s, _close, retired)
    return client


def _close(client: httpx.AsyncClient) -> None:
    task = asyncio.ensure_future(client.aclose())
    _RETIRING.add(task)  # held: a task nobody holds may vanish
    task.add_done_callback(_RETIRING.discard)


class SafeFetcher:
    """Fetches tenant URLs under an ``OutboundPolicy`` (see the module docstring for how).

    ``resolver`` defaults to the system's ``getaddrinfo``; ``http`` to the running event loop's
    client of each host name (shared by such fetchers, kept alive, never closed by them). An
    injected client is not closed either, and keeps no connection; it must not use a proxy
    (build it with ``build_client`` or ``trust_env=False``). Safe to share between tasks.
    """

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        resolver: Resolver | None = None,
        http: httpx.AsyncClient | None = None,
        user_agent: str = DEFAULT_USER_AGENT,
    ) -> None:
        self.policy = policy
        self._resolver = resolver
        self._http = http
        self._user_agent = user_agent
        self._timeout = httpx.Timeout(
            connect=policy.connect_timeout_s,
            read=policy.read_timeout_s,
            write=policy.read_timeout_s,
            pool=policy.connect_timeout_s,
        )

    async def aclose(self) -> None:
        """Nothing to release (the client is shared or the caller's); kept for ``async with``."""

    async def __aenter__(self) -> SafeFetcher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def download(
        self, url: str, dest: str | os.PathLike[str], *, in_memory_max: int = 0
    ) -> FetchResult:
        """GET ``url`` into ``dest`` (created or replaced only on success).

        A body of at most ``in_memory_max`` bytes is answered in ``FetchResult.body`` instead,
        and ``dest`` is not touched: for small bodies the file's creation, writes and rename
        (each a trip to a thread) cost more than the transfer. A body that declares or turns
        out to be longer goes to ``dest`` as usual.

        Raises an ``OutboundRefused`` subclass; ``dest`` is then untouched and no temporary file
        remains. A declared Content-Length over ``max_bytes`` is refused before the body is read;
        a body that goes past it anyway is cut off.
        """
        dest = Path(dest)
        with self._total_deadline():
            async with asyncio.timeout(self.policy.total_timeout_s):
                opened = await self._open("GET", url)
                try:
                    declared = _content_length(opened.response)
                    if declared is not None and declared > self.policy.max_bytes:
                        raise ContentTooLarge(self.policy.max_bytes, declared=declared)
                    size, sha256, body = await _save(
                        opened.response,
                        dest,
                        self.policy.max_bytes,
                        where=opened.url,
                        in_memory_max=in_memory_max,
                    )
                finally:
                    await opened.response.aclose()
        return FetchResult(
            final_url=str(opened.url),
            status=opened.response.status_code,
            size_bytes=size,
            content_type=opened.response.headers.get("content-type"),
            sha256=sha256,
            redirects=opened.redirects,
            address=opened.address,
            body=body,
        )

    async def head(self, url: str) -> HeadResult:
        """HEAD ``url`` (redirects followed and checked). Some signed URLs (S3 presigned GETs)
        refuse HEAD: use ``probe_headers`` for those."""
        return await self._headers_only("HEAD", url)

    async def probe_headers(self, url: str) -> HeadResult:
        """GET ``url`` and stop after the headers: the body is never read."""
        return await self._headers_only("GET", url)

    async def _headers_only(self, method: Literal["GET", "HEAD"], url: str) -> HeadResult:
        with self._total_deadline():
            async with asyncio.timeout(self.policy.total_timeout_s):
                opened = await self._open(method, url)
                await opened.response.aclose()
        response = opened.response
        return HeadResult(
            final_url=str(opened.url),
            status=response.status_code,
            content_length=_content_length(response),
            content_type=response.headers.get("content-type"),
            redirects=opened.redirects,
            address=opened.address,
            headers=response.headers,
        )

    @contextlib.contextmanager
    def _total_deadline(self) -> Iterator[None]:
        try:
            yield
        except TimeoutError as exc:  # raised by asyncio.timeout when the deadline passed
            raise FetchTimeout(
                f"fetch took longer than {self.policy.total_timeout_s:g} s", phase="total"
            ) from exc

    async def _open(self, method: str, url: str) -> _Opened:
        """Follow redirects hop by hop; the answer is the first non-redirect 2xx (streaming)."""
        redirects = 0
        current: httpx.URL | None = None
        location: str | httpx.URL = url
        while True:
            try:
                current = parse_url(
                    location if current is None else _join(current, location), self.policy
                )
                addresses = await vet_url(current, self.policy, self._resolver)
            except UrlRefused as exc:
                if redirects:
                    exc.at_redirect(redirects)
                raise
            response, address = await self._send_pinned(method, current, addresses)
            status = response.status_code
            next_location = response.headers.get("location")
            if status in REDIRECT_STATUSES and next_location:
                await response.aclose()
                if redirects >= self.policy.max_redirects:
                    raise TooManyRedirects(self.policy.max_redirects)
                redirects += 1
                location = next_location
                continue
            # 206 only answers a Range request, and we send none: it would be a partial file.
            if not response.is_success or status == 206:
                await response.aclose()
                error = FetchFailed(f"{current.raw_host.decode()} answered {status}", status=status)
                if redirects:
                    error.at_redirect(redirects)
                raise error
            return _Opened(response, current, address, redirects)

    async def _send_pinned(
        self, method: str, url: httpx.URL, addresses: list[IPAddress]
    ) -> tuple[httpx.Response, str]:
        """Send to the first vetted address that accepts a connection. Trying the next one after
        a failed connect is safe: nothing was sent. Any other failure ends the fetch."""
        failure: httpx.TransportError | None = None
        for ip in addresses:
            target = connect_address(ip)
            try:
                response = await self._send(method, url, target)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                failure = exc
                continue
            except httpx.HTTPError as exc:
                raise _mapped(exc, url) from exc
            return response, str(target)
        assert failure is not None
        raise _mapped(failure, url) from failure

    async def _send(self, method: str, url: httpx.URL, target: IPAddress) -> httpx.Response:
        if self._http is not None:
            request = self._pinned_request(method, url, target, keep_alive=False)
            # auth=None: an injected client's default auth must not reach a tenant's server.
            return await self._http.send(request, stream=True, follow_redirects=False, auth=None)
        http = _host_client(url, retire_after_s=self.policy.total_timeout_s + 1)
        request = self._pinned_request(method, url, target, keep_alive=True)
        try:
            return await http.send(request, stream=True, follow_redirects=False)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            # A kept connection the server closed while it was idle fails so, before any answer
            # (httpcore drops the ones it can see closed): once more, on a new connection.
            request = self._pinned_request(method, url, target, keep_alive=True)
            return await http.send(request, stream=True, follow_redirects=False)

    def _pinned_request(
        self, method: str, url: httpx.URL, ip: IPAddress, *, keep_alive: bool
    ) -> httpx.Request:
        host = url.raw_host.decode("ascii")
        extensions: dict[str, object] = {"timeout": self._timeout.as_dict()}
        if url.scheme == "https":
            extensions["sni_hostname"] = host
        headers = {
            "Host": url.netloc.decode("ascii"),
            "User-Agent": self._user_agent,
            "Accept": "*/*",
            # Media is already compressed; identity keeps Content-Length equal to the file size.
            "Accept-Encoding": "identity",
        }
        if not keep_alive:
            headers["Connection"] = "close"
        # Built directly rather than with client.build_request: no client cookies or default
        # headers are merged in.
        return httpx.Request(
            method, url.copy_with(host=str(ip)), headers=headers, extensions=extensions
        )


async def _save(
    response: httpx.Response,
    dest: Path,
    max_bytes: int,
    *,
    where: httpx.URL,
    in_memory_max: int = 0,
) -> tuple[int, str, bytes | None]:
    """Stream the body to a unique temporary file beside ``dest``, then rename it over ``dest``
    (answering ``None`` for the body); or, while it fits ``in_memory_max``, keep it in memory
    (answering the bytes, ``dest`` untouched)."""
    declared = _content_length(response)
    held: list[bytes] | None = None
    if in_memory_max > 0 and (declared is None or declared <= in_memory_max):
        held = []
    handle: BinaryIO | None = None
    partial = ""
    digest = hashlib.sha256()
    size = 0
    try:
        if held is None:
            handle, partial = await _open_partial(dest)
        try:
            async for chunk in response.aiter_bytes(CHUNK_SIZE):
                size += len(chunk)
                if size > max_bytes:
                    raise ContentTooLarge(max_bytes, received=size)
                digest.update(chunk)
                if held is not None:
                    held.append(chunk)
                    if size <= in_memory_max:
                        continue
                    # Longer than it fits (it declared no length): to the file after all.
                    handle, partial = await _open_partial(dest)
                    chunk, held = b"".join(held), None
                assert handle is not None
                await asyncio.to_thread(handle.write, chunk)
        except httpx.HTTPError as exc:
            raise _mapped(exc, where, received=size) from exc
        if held is not None:
            return size, digest.hexdigest(), b"".join(held)
        assert handle is not None
        await asyncio.to_thread(_close_into, handle, partial, dest)  # one hop (~120 µs), not two
    except BaseException:
        # Synchronous on purpose: this also runs on cancellation, where an await could be cut.
        if handle is not None:
            handle.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
        raise
    return size, digest.hexdigest(), None


async def _open_partial(dest: Path) -> tuple[BinaryIO, str]:
    fd, partial = await asyncio.to_thread(
        tempfile.mkstemp, dir=dest.parent, prefix=f".{dest.name}.", suffix=".part"
    )
    return os.fdopen(fd, "wb"), partial


def _close_into(handle: BinaryIO, partial: str, dest: Path) -> None:
    handle.close()
    os.replace(partial, dest)


def _join(base: httpx.URL, location: str | httpx.URL) -> httpx.URL | str:
    try:
        return base.join(location)
    except (httpx.InvalidURL, ValueError):
        return str(location)  # parse_url reports it


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length", "").strip()
    return int(value) if value.isdigit() else None


def _mapped(
    exc: httpx.HTTPError, url: httpx.URL, *, received: int | None = None
) -> OutboundRefused:
    """An httpx failure as one of ours; only the URL's host is named (queries may be secrets)."""
    where = url.raw_host.decode("ascii")
    for cls, phase in _TIMEOUT_PHASES.items():
        if isinstance(exc, cls):
            return FetchTimeout(f"{phase} timed out talking to {where}", phase=phase)
    if received is not None:
        detail = f"download from {where} broke off after {received} bytes: {type(exc).__name__}"
    else:
        detail = f"could not fetch from {where}: {type(exc).__name__}: {exc}"
    return FetchFailed(detail)
