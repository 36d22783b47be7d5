"""Fixtures for the outbound fetcher: a raw local HTTP(S) server on 127.0.0.1, a scripted resolver,
and a transport spy that refuses to let any request leave for a non-loopback address.

Real connections only ever go to 127.0.0.1 (or ::1). A request the spy sees for any other address
is answered by the spy itself (``canned``) or fails the test; it is never sent.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# --- resolver -----------------------------------------------------------------------------------


@dataclass
class ScriptedResolver:
    """Answers from a script: ``answers[host]`` is a list of answers used in turn (the last one
    repeats). Unknown names fail as NXDOMAIN would. Every lookup is recorded."""

    answers: dict[str, list[list[str]]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def add(self, host: str, *answers: list[str]) -> None:
        self.answers[host] = list(answers)

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        script = self.answers.get(host)
        if not script:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        turn = sum(1 for h in self.calls if h == host) - 1
        return script[min(turn, len(script) - 1)]


# --- transport spy ------------------------------------------------------------------------------


class SpyTransport(httpx.AsyncBaseTransport):
    """Records every request the fetcher hands to httpx, before any socket exists.

    Loopback destinations go on to the real transport; anything else is answered by ``canned``
    (no connection is made) or raises, failing the test.
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        canned: Callable[[httpx.Request], httpx.Response] | None = None,
    ) -> None:
        self.inner = inner
        self.canned = canned
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        # A name here would mean the connection was not pinned: fail loudly.
        ip = ipaddress.ip_address(request.url.host)
        if ip.is_loopback:
            return await self.inner.handle_async_request(request)
        if self.canned is None:
            raise AssertionError(f"the fetcher tried to reach {ip}")
        return self.canned(request)

    async def aclose(self) -> None:
        await self.inner.aclose()

    @property
    def hosts(self) -> list[str]:
        return [r.url.host for r in self.requests]


def spy_client(
    *,
    verify: ssl.SSLContext | bool = True,
    canned: Callable[[httpx.Request], httpx.Response] | None = None,
) -> tuple[httpx.AsyncClient, SpyTransport]:
    """A client configured like ``build_client`` with the spy in front of the real transport."""
    inner = httpx.AsyncHTTPTransport(
        verify=verify, limits=httpx.Limits(max_keepalive_connections=0)
    )
    spy = SpyTransport(inner, canned)
    return httpx.AsyncClient(transport=spy, trust_env=False, follow_redirects=False), spy


# --- local server -------------------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


Handler = Callable[[Seen, asyncio.StreamWriter], Awaitable[None]]


class LocalServer:
    """A deliberately raw HTTP/1.1 server on 127.0.0.1 (one request per connection), so tests
    can send what a well-behaved framework would not: lying lengths, stalls, endless redirects."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.routes: dict[str, Handler] = {}
        self.seen: list[Seen] = []
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self.sni_names: list[str | None] = []  # the SNI of each TLS handshake
        self._tasks: set[asyncio.Task[None]] = set()
        if tls is not None:
            tls.sni_callback = self._on_sni

    def _on_sni(self, _sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        self.sni_names.append(name)

    @property
    def origin(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def url(self, host: str, path: str) -> str:
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}{path}"

    def route(self, path: str, handler: Handler) -> None:
        self.routes[path] = handler

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *header_lines = head.decode("latin-1").split("\r\n")
            method, path, _ = line.split(" ", 2)
            headers = {}
            for raw in header_lines:
                if raw:
                    name, _, value = raw.partition(":")
                    headers[name.strip().lower()] = value.strip()
            seen = Seen(method, path, headers)
            self.seen.append(seen)
            handler = self.routes.get(path.split("?")[0], not_found)
            await handler(seen, writer)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]


async def respond(
    writer: asyncio.StreamWriter,
    status: int,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    content_length: bool = True,
) -> None:
    lines = [f"HTTP/1.1 {status} X", "Connection: close", *(f"{k}: {v}" for k, v in headers)]
    if content_length:
        lines.append(f"Content-Length: {len(body)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    await writer.drain()


async def not_found(seen: Seen, writer: asyncio.StreamWriter) -> None:
    await respond(writer, 404, body=b"not found")


def serve_bytes(data: bytes, content_type: str = "video/mp4") -> Handler:
    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> None:
        body = b"" if seen.method == "HEAD" else data
        lines = [
            "HTTP/1.1 200 OK",
            "Connection: close",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(data)}",
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    return handler


def redirect_to(location: str, status: int = 302) -> Handler:
    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> None:
        await respond(writer, status, [("Location", location)])

    return handler


@pytest.fixture
async def server() -> AsyncIterator[LocalServer]:
    srv = LocalServer()
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
def resolver() -> ScriptedResolver:
    return ScriptedResolver()


# --- TLS ----------------------------------------------------------------------------------------


@dataclass
class Pki:
    ca_file: Path
    cert_files: dict[str, tuple[Path, Path]]  # hostname → (cert chain, key)

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def server_context(self, hostname: str) -> ssl.SSLContext:
        cert, key = self.cert_files[hostname]
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        return ctx


def _write_pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA and one leaf certificate each for media.test and other.test."""
    root = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "netguard test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = _write_pem(root / "ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM))
    files: dict[str, tuple[Path, Path]] = {}
    for hostname in ("media.test", "other.test"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        cert_file = _write_pem(
            root / f"{hostname}.pem", cert.public_bytes(serialization.Encoding.PEM)
        )
        key_file = _write_pem(
            root / f"{hostname}.key",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        files[hostname] = (cert_file, key_file)
    return Pki(ca_file=ca_file, cert_files=files)
