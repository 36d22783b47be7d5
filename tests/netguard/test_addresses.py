"""The address classifier: every range a tenant may not reach, in every spelling of it."""

from __future__ import annotations

import ipaddress

import pytest

from app.netguard.addresses import Reason, classify, connect_address, embedded_ipv4

REFUSED = [
    # loopback
    ("127.0.0.1", Reason.LOOPBACK),
    ("127.255.255.254", Reason.LOOPBACK),
    ("::1", Reason.LOOPBACK),
    # private
    ("10.0.0.1", Reason.PRIVATE),
    ("10.255.255.255", Reason.PRIVATE),
    ("172.16.0.1", Reason.PRIVATE),
    ("172.31.255.254", Reason.PRIVATE),
    ("192.168.1.1", Reason.PRIVATE),
    ("fc00::1", Reason.PRIVATE),
    ("fd12:3456:789a::1", Reason.PRIVATE),
    ("fec0::1", Reason.PRIVATE),  # deprecated site-local
    ("64:ff9b:1::a00:1", Reason.PRIVATE),  # local-use NAT64 prefix
    # link-local and metadata
    ("169.254.0.1", Reason.LINK_LOCAL),
    ("169.254.255.254", Reason.LINK_LOCAL),
    ("fe80::1", Reason.LINK_LOCAL),
    ("fe80::1%eth0", Reason.LINK_LOCAL),
    ("febf::1", Reason.LINK_LOCAL),
    ("169.254.169.254", Reason.METADATA),
    ("169.254.170.2", Reason.METADATA),
    ("100.100.100.200", Reason.METADATA),
    ("fd00:ec2::254", Reason.METADATA),
    # unspecified / "this network"
    ("0.0.0.0", Reason.UNSPECIFIED),  # noqa: S104 (an address under test, not a bind)
    ("0.1.2.3", Reason.UNSPECIFIED),
    ("::", Reason.UNSPECIFIED),
    # multicast
    ("224.0.0.1", Reason.MULTICAST),
    ("239.255.255.250", Reason.MULTICAST),
    ("ff02::1", Reason.MULTICAST),
    ("ff05::1:3", Reason.MULTICAST),
    # CGNAT, benchmark, documentation, reserved
    ("100.64.0.1", Reason.CGNAT),
    ("100.127.255.254", Reason.CGNAT),
    ("198.18.0.1", Reason.BENCHMARK),
    ("198.19.255.254", Reason.BENCHMARK),
    ("2001:2::1", Reason.BENCHMARK),
    ("192.0.2.1", Reason.DOCUMENTATION),
    ("198.51.100.7", Reason.DOCUMENTATION),
    ("203.0.113.9", Reason.DOCUMENTATION),
    ("2001:db8::1", Reason.DOCUMENTATION),
    ("3fff::1", Reason.DOCUMENTATION),
    ("240.0.0.1", Reason.RESERVED),
    ("255.255.255.255", Reason.RESERVED),
    ("192.0.0.8", Reason.RESERVED),
    ("100::1", Reason.RESERVED),
    ("2001::1", Reason.RESERVED),  # Teredo
    ("::7f00:1", Reason.RESERVED),  # IPv4-compatible ::127.0.0.1 (deprecated form)
    ("::ffff:0:7f00:1", Reason.RESERVED),  # IPv4-translated ::ffff:0:127.0.0.1
    # IPv4-mapped IPv6: judged as the IPv4 address inside
    ("::ffff:127.0.0.1", Reason.LOOPBACK),
    ("::ffff:7f00:1", Reason.LOOPBACK),
    ("::ffff:10.0.0.1", Reason.PRIVATE),
    ("::ffff:169.254.169.254", Reason.METADATA),
    ("::ffff:0.0.0.0", Reason.UNSPECIFIED),
    ("::ffff:100.64.0.1", Reason.CGNAT),
    # NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carrying a forbidden IPv4 address
    ("64:ff9b::7f00:1", Reason.LOOPBACK),
    ("64:ff9b::a00:1", Reason.PRIVATE),
    ("64:ff9b::a9fe:a9fe", Reason.METADATA),
    ("2002:7f00:1::1", Reason.LOOPBACK),
    ("2002:c0a8:101::1", Reason.PRIVATE),
    ("2002:a9fe:a9fe::", Reason.METADATA),
]

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "172.32.0.1",  # just past 172.16/12
    "100.128.0.1",  # just past 100.64/10
    "169.255.0.1",
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
    "2002:808:808::1",  # 6to4 of 8.8.8.8
]


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_non_public_address_is_classified(address: str, reason: Reason) -> None:
    assert classify(ipaddress.ip_address(address)) is reason


@pytest.mark.parametrize("address", PUBLIC)
def test_public_address_is_not_classified(address: str) -> None:
    assert classify(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("address", "inner"),
    [
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("64:ff9b::a00:1", "10.0.0.1"),
        ("2002:c0a8:101::1", "192.168.1.1"),
        ("2606:4700::1", None),
    ],
)
def test_embedded_ipv4_is_extracted(address: str, inner: str | None) -> None:
    found = embedded_ipv4(ipaddress.IPv6Address(address))
    assert (str(found) if found else None) == inner


def test_connect_address_unwraps_ipv4_mapped_only() -> None:
    assert str(connect_address(ipaddress.ip_address("::ffff:127.0.0.1"))) == "127.0.0.1"
    assert str(connect_address(ipaddress.ip_address("::1"))) == "::1"
    assert str(connect_address(ipaddress.ip_address("64:ff9b::808:808"))) == "64:ff9b::808:808"
