"""The outbound policy, name resolution, and the URL check shared by the API and the fetcher.

``check_url`` is what an endpoint calls to reject ``http://169.254.169.254/…`` with a 422 before
a job exists; ``SafeFetcher`` calls the same ``vet_url`` on every hop and then connects to one of
the addresses it returned (never to the name again).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import httpx

from app.netguard.addresses import IPAddress, Reason, classify
from app.netguard.errors import (
    CredentialsNotAllowed,
    DestinationNotAllowed,
    InvalidUrl,
    SchemeNotAllowed,
    Unresolvable,
)

# A resolver takes (host, port) and answers the addresses to consider, best first. Strings or
# ``ipaddress`` objects; anything unparsable makes the name unresolvable.
Resolver = Callable[[str, int], Awaitable[Iterable[str | IPAddress]]]

SUPPORTED_SCHEMES = frozenset({"http", "https"})
DEFAULT_PORTS = {"http": 80, "https": 443}
# Longer URLs are refused before any work: no legitimate video link needs more, and the URL ends
# up in the jobs table and in logs.
MAX_URL_LENGTH = 8192

_LABELS = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*"
_HOSTNAME = re.compile(f"^{_LABELS}$")
_ALLOWLIST_NAME = re.compile(rf"^(\*\.)?{_LABELS}$")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboundPolicy:
    """Where the gateway may fetch from on a tenant's behalf, and how much.

    Public addresses are always allowed. ``allow_loopback`` permits 127/8 and ::1 (development,
    the emulator); ``allow_private`` permits RFC 1918 and fc00::/7 (not CGNAT 100.64/10, where
    Alibaba's metadata lives: allowlist it if needed). ``allowlist`` entries widen further:
    a CIDR (``"10.1.2.0/24"``, a bare address means /32 or /128), an exact hostname
    (``"minio.internal"``, which then may resolve anywhere) or ``"*.example.internal"``
    (subdomains only). Cloud metadata addresses are refused whatever the policy says.

    Time caps: ``connect_timeout_s`` bounds each TCP/TLS connect and each DNS lookup,
    ``read_timeout_s`` each socket read or write, ``total_timeout_s`` the whole fetch, every
    redirect and the body included.
    """

    max_bytes: int
    allow_loopback: bool = False
    allow_private: bool = False
    allowlist: tuple[str, ...] = ()
    max_redirects: int = 5
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    total_timeout_s: float = 300.0
    allowed_schemes: tuple[str, ...] = ("http", "https")
    _networks: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)
    _hostnames: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if self.max_redirects < 0:
            raise ValueError("max_redirects must not be negative")
        for name in ("connect_timeout_s", "read_timeout_s", "total_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if not self.allowed_schemes or not set(self.allowed_schemes) <= SUPPORTED_SCHEMES:
            raise ValueError(f"allowed_schemes must be a non-empty subset of {SUPPORTED_SCHEMES}")
        networks: list[IPNetwork] = []
        hostnames: set[str] = set()
        for entry in self.allowlist:
            text = entry.strip().lower()
            try:
                # strict: "10.1.2.3/24" is a typo for something, fail rather than guess.
                networks.append(ipaddress.ip_network(text, strict=True))
                continue
            except ValueError:
                pass
            name = text.rstrip(".")
            if not _ALLOWLIST_NAME.match(name):
                raise ValueError(f"allowlist entry is neither a CIDR nor a hostname: {entry!r}")
            hostnames.add(name)
        object.__setattr__(self, "_networks", tuple(networks))
        object.__setattr__(self, "_hostnames", frozenset(hostnames))

    def refusal(self, ip: IPAddress, host: str | None = None) -> Reason | None:
        """``None`` when this policy lets a fetch for ``host`` connect to ``ip``, else the reason
        it does not."""
        reason = classify(ip)
        if reason is None:
            return None
        if reason is Reason.METADATA:
            return reason
        if reason is Reason.LOOPBACK and self.allow_loopback:
            return None
        if reason is Reason.PRIVATE and self.allow_private:
            return None
        if self._listed_address(ip) or (host is not None and self._listed_host(host)):
            return None
        return reason

    def _listed_address(self, ip: IPAddress) -> bool:
        candidates: list[IPAddress] = [type(ip)(int(ip))]  # without a scope id
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        return any(
            c in net for c in candidates for net in self._networks if c.version == net.version
        )

    def _listed_host(self, host: str) -> bool:
        name = host.lower().rstrip(".")
        if name in self._hostnames:
            return True
        return any(entry.startswith("*.") and name.endswith(entry[1:]) for entry in self._hostnames)


async def system_resolver(host: str, port: int, *, flags: int = 0) -> list[str]:
    """The operating system's answer (``getaddrinfo``, in the loop's thread pool), in its order.

    This is also where odd IPv4 spellings become real addresses: glibc reads ``2130706433``,
    ``0x7f.1`` and ``0177.0.0.1`` as 127.0.0.1, exactly as a socket connect would.
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=flags
    )
    return [str(info[4][0]) for info in infos]


def parse_url(url: str | httpx.URL, policy: OutboundPolicy) -> httpx.URL:
    """An absolute URL with an allowed scheme, a host and no credentials, or ``UrlRefused``.

    Credentials are refused, not stripped: a URL that needs them would fail without them anyway,
    and storing or logging it would keep a secret in the jobs table.
    """
    if isinstance(url, str) and len(url) > MAX_URL_LENGTH:
        raise InvalidUrl(f"URL longer than {MAX_URL_LENGTH} characters")
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url.strip())
        host = parsed.raw_host.decode("ascii")
    except (httpx.InvalidURL, ValueError) as exc:  # IDNA errors are ValueErrors too
        raise InvalidUrl(f"not a valid URL: {exc}") from exc
    if not parsed.scheme:
        raise InvalidUrl("URL must be absolute (scheme://host/…)")
    if parsed.scheme not in policy.allowed_schemes:
        raise SchemeNotAllowed(parsed.scheme, policy.allowed_schemes)
    if parsed.userinfo:
        raise CredentialsNotAllowed("URLs with credentials (user:password@) are not accepted")
    if not host:
        raise InvalidUrl("URL has no host")
    if not _is_literal(host) and not _HOSTNAME.match(host.lower().rstrip(".")):
        raise InvalidUrl(f"not a valid hostname: {host!r}")
    return parsed


async def resolve(
    host: str, port: int, policy: OutboundPolicy, resolver: Resolver | None = None
) -> list[IPAddress]:
    """Every address ``host`` stands for, deduplicated, in the resolver's order. An IP literal
    is its own answer (no lookup)."""
    literal = literal_address(host)
    if literal is not None:
        return [literal]
    lookup = resolver or system_resolver
    try:
        async with asyncio.timeout(policy.connect_timeout_s):
            answers = list(await lookup(host, port))
    except TimeoutError as exc:
        raise Unresolvable(f"looking up {host} timed out", retryable=True, host=host) from exc
    except socket.gaierror as exc:
        temporary = exc.errno == socket.EAI_AGAIN
        raise Unresolvable(
            f"{host} does not resolve ({exc.strerror})", retryable=temporary, host=host
        ) from exc
    except OSError as exc:
        raise Unresolvable(f"{host} does not resolve ({exc})", host=host) from exc
    addresses: list[IPAddress] = []
    for answer in answers:
        try:
            ip = answer if not isinstance(answer, str) else ipaddress.ip_address(answer)
        except ValueError as exc:
            raise Unresolvable(f"{host} resolved to a non-address {answer!r}", host=host) from exc
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise Unresolvable(f"{host} has no address", host=host)
    return addresses


async def vet_url(
    url: httpx.URL, policy: OutboundPolicy, resolver: Resolver | None = None
) -> list[IPAddress]:
    """Resolve a parsed URL's host once and check every address; all must be permitted.

    One forbidden address refuses the whole name: a resolver may answer a public and a private
    address together hoping the fetcher picks the second.
    """
    host = url.raw_host.decode("ascii")
    port = url.port or DEFAULT_PORTS[url.scheme]
    addresses = await resolve(host, port, policy, resolver)
    for ip in addresses:
        reason = policy.refusal(ip, host)
        if reason is not None:
            shown_host = str(ip) if _is_literal(host) else host
            raise DestinationNotAllowed(shown_host, str(ip), reason.value)
    return addresses


async def check_url(
    url: str, policy: OutboundPolicy, resolver: Resolver | None = None
) -> list[IPAddress]:
    """The addresses ``url`` may be fetched from under ``policy``, or ``UrlRefused``.

    For validation at request time. The answer is a snapshot: DNS may change before the fetch,
    which is why ``SafeFetcher`` checks again and connects only to what it checked.
    """
    return await vet_url(parse_url(url, policy), policy, resolver)


_IPV4_CHARS = frozenset("0123456789.")


def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` spells, or None for a name. What ``ipaddress.ip_address`` reads: an
    IPv4 address is digits and dots, an IPv6 one has a colon; anything else is a name, known
    without the two failed parses (and their exceptions) that asking it would cost, on every
    job's URL."""
    if ":" not in host and not _IPV4_CHARS.issuperset(host):
        return None
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _is_literal(host: str) -> bool:
    return literal_address(host) is not None
