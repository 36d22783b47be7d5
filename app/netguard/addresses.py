"""What kind of destination an IP address is: public, or one of the ranges a tenant may not reach.

``classify`` works on ``ipaddress`` objects, i.e. after resolution: odd spellings of an address
(``2130706433``, ``0177.0.0.1``, ``0x7f.1``) are not matched as strings anywhere, the resolver
turns them into the address the operating system would connect to and that address is judged.

The ranges are listed explicitly rather than left to ``is_global``/``is_private``: those answers
changed between CPython patch releases (3.11.7 calls ``64:ff9b::a00:1``, ``fec0::1`` and
``::7f00:1`` global), and a refusal must give a stable ``reason``. ``is_global`` stays as the
last net for anything the tables miss.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Reason(StrEnum):
    """Why an address is not a public destination (stable: it appears in API errors)."""

    LOOPBACK = "loopback"
    PRIVATE = "private"
    LINK_LOCAL = "link_local"
    METADATA = "metadata"
    UNSPECIFIED = "unspecified"
    MULTICAST = "multicast"
    CGNAT = "cgnat"
    BENCHMARK = "benchmark"
    DOCUMENTATION = "documentation"
    RESERVED = "reserved"


# Cloud instance-metadata endpoints: credentials live there, so no policy switch permits them.
# AWS/GCP/Azure/OpenStack/DigitalOcean 169.254.169.254; ECS task 169.254.170.2; EKS pod identity
# 169.254.170.23 and fd00:ec2::23; AWS IMDS over IPv6 fd00:ec2::254; GCP IPv6 fd20:ce::254;
# Alibaba 100.100.100.200; Oracle's legacy 192.0.0.192.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "169.254.170.23",
        "100.100.100.200",
        "192.0.0.192",
        "fd00:ec2::254",
        "fd00:ec2::23",
        "fd20:ce::254",
    )
)

_V4_RANGES: tuple[tuple[ipaddress.IPv4Network, Reason], ...] = tuple(
    (ipaddress.IPv4Network(net), reason)
    for net, reason in (
        # "This network": Linux connects 0.0.0.0 (and friends) to the local host.
        ("0.0.0.0/8", Reason.UNSPECIFIED),
        ("127.0.0.0/8", Reason.LOOPBACK),
        ("10.0.0.0/8", Reason.PRIVATE),
        ("172.16.0.0/12", Reason.PRIVATE),
        ("192.168.0.0/16", Reason.PRIVATE),
        ("169.254.0.0/16", Reason.LINK_LOCAL),
        ("100.64.0.0/10", Reason.CGNAT),  # RFC 6598 shared address space (also Tailscale)
        ("198.18.0.0/15", Reason.BENCHMARK),  # RFC 2544
        ("192.0.2.0/24", Reason.DOCUMENTATION),
        ("198.51.100.0/24", Reason.DOCUMENTATION),
        ("203.0.113.0/24", Reason.DOCUMENTATION),
        ("224.0.0.0/4", Reason.MULTICAST),
        ("240.0.0.0/4", Reason.RESERVED),  # includes the broadcast 255.255.255.255
        ("192.0.0.0/24", Reason.RESERVED),  # IETF protocol assignments
        ("192.88.99.0/24", Reason.RESERVED),  # deprecated 6to4 relay anycast
    )
)

_V6_RANGES: tuple[tuple[ipaddress.IPv6Network, Reason], ...] = tuple(
    (ipaddress.IPv6Network(net), reason)
    for net, reason in (
        ("::/128", Reason.UNSPECIFIED),
        ("::1/128", Reason.LOOPBACK),
        ("fe80::/10", Reason.LINK_LOCAL),
        ("fc00::/7", Reason.PRIVATE),  # unique local addresses
        ("fec0::/10", Reason.PRIVATE),  # deprecated site-local, still routed inside some sites
        ("64:ff9b:1::/48", Reason.PRIVATE),  # RFC 8215 local-use NAT64
        ("ff00::/8", Reason.MULTICAST),
        ("2001:db8::/32", Reason.DOCUMENTATION),
        ("3fff::/20", Reason.DOCUMENTATION),  # RFC 9637
        ("2001:2::/48", Reason.BENCHMARK),
        ("100::/64", Reason.RESERVED),  # discard-only
        ("::/8", Reason.RESERVED),  # IPv4-compatible (::a.b.c.d) and IPv4-translated forms
        ("2001::/23", Reason.RESERVED),  # IETF protocol assignments, Teredo among them
    )
)

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a packet to ``ip`` ends up at, for the forms that carry one.

    IPv4-mapped (``::ffff:a.b.c.d``: a dual-stack socket connects to the IPv4 address itself),
    NAT64 (``64:ff9b::a.b.c.d``: a DNS64/NAT64 network translates it) and 6to4
    (``2002:aabb:ccdd::``: relayed to the IPv4 host).
    """
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def classify(ip: IPAddress) -> Reason | None:
    """``None`` for a public address, else why it is not one."""
    if ip in METADATA_ADDRESSES:
        return Reason.METADATA
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            return classify(inner)
        # Scope ids (fe80::1%eth0) do not change the range; compare without them.
        bare = ipaddress.IPv6Address(int(ip))
        for net6, reason in _V6_RANGES:
            if bare in net6:
                return reason
    else:
        for net4, reason in _V4_RANGES:
            if ip in net4:
                return reason
    if not ip.is_global or ip.is_reserved:
        return Reason.RESERVED
    return None


def connect_address(ip: IPAddress) -> IPAddress:
    """The address to open a socket to: IPv4-mapped forms as plain IPv4 (same endpoint, and it
    also works on a host whose IPv6 stack is off)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
