"""The policy and ``check_url``: what an API can refuse with a 422 before any job exists.

No test here opens a connection: names go through ``ScriptedResolver``, and the one lookup through
the operating system is restricted to numeric hosts (``AI_NUMERICHOST``: never a DNS query).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.netguard import (
    CredentialsNotAllowed,
    DestinationNotAllowed,
    InvalidUrl,
    OutboundPolicy,
    Reason,
    SchemeNotAllowed,
    Unresolvable,
    UrlRefused,
    check_url,
    system_resolver,
)
from app.netguard.policy import literal_address
from tests.netguard.conftest import ScriptedResolver

STRICT = OutboundPolicy(max_bytes=1024)
numeric_only = functools.partial(system_resolver, flags=socket.AI_NUMERICHOST)


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


# --- the policy object --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_bytes": 0},
        {"max_bytes": 1, "max_redirects": -1},
        {"max_bytes": 1, "connect_timeout_s": 0},
        {"max_bytes": 1, "total_timeout_s": -1},
        {"max_bytes": 1, "allowed_schemes": ("http", "ftp")},
        {"max_bytes": 1, "allowed_schemes": ()},
        {"max_bytes": 1, "allowlist": ("10.1.2.3/24",)},  # host bits set: a typo, not a guess
        {"max_bytes": 1, "allowlist": ("not a host!",)},
    ],
)
def test_invalid_policy_fails_at_construction(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        OutboundPolicy(**kwargs)


def test_loopback_switch_permits_loopback_only() -> None:
    policy = OutboundPolicy(max_bytes=1, allow_loopback=True)
    assert policy.refusal(ip("127.0.0.1")) is None
    assert policy.refusal(ip("127.9.9.9")) is None
    assert policy.refusal(ip("::1")) is None
    assert policy.refusal(ip("::ffff:127.0.0.1")) is None
    assert policy.refusal(ip("10.0.0.1")) is Reason.PRIVATE
    assert policy.refusal(ip("0.0.0.0")) is Reason.UNSPECIFIED  # noqa: S104


def test_private_switch_permits_rfc1918_and_ula_but_not_link_local_or_cgnat() -> None:
    policy = OutboundPolicy(max_bytes=1, allow_private=True)
    for address in ("10.0.0.1", "172.20.1.1", "192.168.0.10", "fd00::5"):
        assert policy.refusal(ip(address)) is None
    assert policy.refusal(ip("127.0.0.1")) is Reason.LOOPBACK
    assert policy.refusal(ip("169.254.1.1")) is Reason.LINK_LOCAL
    assert policy.refusal(ip("100.64.0.1")) is Reason.CGNAT


def test_allowlisted_cidr_permits_exactly_its_range() -> None:
    policy = OutboundPolicy(max_bytes=1, allowlist=("10.1.2.0/24", "127.0.0.1", "fd00:1::/64"))
    assert policy.refusal(ip("10.1.2.77")) is None
    assert policy.refusal(ip("::ffff:10.1.2.77")) is None
    assert policy.refusal(ip("10.1.3.1")) is Reason.PRIVATE
    assert policy.refusal(ip("127.0.0.1")) is None
    assert policy.refusal(ip("127.0.0.2")) is Reason.LOOPBACK
    assert policy.refusal(ip("fd00:1::9")) is None
    assert policy.refusal(ip("fd00:2::9")) is Reason.PRIVATE


def test_allowlisted_hostname_permits_its_addresses_wildcards_only_subdomains() -> None:
    policy = OutboundPolicy(max_bytes=1, allowlist=("MinIO.internal.", "*.corp.example"))
    assert policy.refusal(ip("10.9.9.9"), "minio.internal") is None
    assert policy.refusal(ip("10.9.9.9"), "minio.internal.") is None
    assert policy.refusal(ip("10.9.9.9"), "other.internal") is Reason.PRIVATE
    assert policy.refusal(ip("10.9.9.9"), "a.b.corp.example") is None
    assert policy.refusal(ip("10.9.9.9"), "corp.example") is Reason.PRIVATE
    assert policy.refusal(ip("10.9.9.9"), "evilcorp.example") is Reason.PRIVATE


def test_metadata_is_refused_whatever_the_policy_says() -> None:
    policy = OutboundPolicy(
        max_bytes=1,
        allow_loopback=True,
        allow_private=True,
        allowlist=("169.254.0.0/16", "0.0.0.0/0", "::/0", "metadata.google.internal"),
    )
    assert policy.refusal(ip("169.254.1.1")) is None  # the allowlist does widen link-local…
    for address in ("169.254.169.254", "::ffff:169.254.169.254", "fd00:ec2::254"):
        assert policy.refusal(ip(address), "metadata.google.internal") is Reason.METADATA


# --- check_url ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/v.mp4",
        "file:///etc/passwd",
        "gopher://example.com:70/_x",
        "javascript:alert(1)",
        "data:video/mp4;base64,AAAA",
        "ws://example.com/",
    ],
)
async def test_non_http_scheme_is_refused(url: str) -> None:
    with pytest.raises(SchemeNotAllowed) as caught:
        await check_url(url, STRICT, ScriptedResolver())
    assert caught.value.code == "url_scheme_not_allowed"


async def test_scheme_outside_a_narrowed_policy_is_refused() -> None:
    policy = OutboundPolicy(max_bytes=1, allowed_schemes=("https",))
    with pytest.raises(SchemeNotAllowed):
        await check_url("http://example.com/", policy, ScriptedResolver())


@pytest.mark.parametrize(
    "url", ["/relative/v.mp4", "http://", "http://exa mple.com/", "http://[::1/", "x" * 9000]
)
async def test_malformed_url_is_invalid(url: str) -> None:
    with pytest.raises(InvalidUrl) as caught:
        await check_url(url, STRICT, ScriptedResolver())
    assert caught.value.code == "url_invalid"


@pytest.mark.parametrize(
    "url",
    ["http://user:secret@example.com/v.mp4", "https://token@example.com/", "http://:p@x.com/"],
)
async def test_credentials_in_url_are_refused_and_not_echoed(url: str) -> None:
    resolver = ScriptedResolver()
    with pytest.raises(CredentialsNotAllowed) as caught:
        await check_url(url, STRICT, resolver)
    assert "secret" not in str(caught.value) and "token" not in str(caught.value)
    assert resolver.calls == []


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/", Reason.LOOPBACK),
        ("http://127.0.0.1:8080/v.mp4", Reason.LOOPBACK),
        ("http://[::1]/", Reason.LOOPBACK),
        ("http://[::ffff:127.0.0.1]/", Reason.LOOPBACK),
        ("http://[::ffff:7f00:1]:9000/", Reason.LOOPBACK),
        ("http://10.0.0.1/", Reason.PRIVATE),
        ("https://192.168.0.1/", Reason.PRIVATE),
        ("http://[fd00::1]/", Reason.PRIVATE),
        ("http://169.254.169.254/latest/meta-data/", Reason.METADATA),
        ("http://[fd00:ec2::254]/latest/meta-data/", Reason.METADATA),
        ("http://169.254.1.1/", Reason.LINK_LOCAL),
        ("http://[fe80::1]/", Reason.LINK_LOCAL),
        ("http://0.0.0.0:8000/", Reason.UNSPECIFIED),
        ("http://[::]/", Reason.UNSPECIFIED),
        ("http://224.0.0.1/", Reason.MULTICAST),
        ("http://100.64.1.1/", Reason.CGNAT),
        ("http://[64:ff9b::a9fe:a9fe]/", Reason.METADATA),
    ],
)
async def test_ip_literal_destination_is_refused_without_a_lookup(url: str, reason: Reason) -> None:
    resolver = ScriptedResolver()
    with pytest.raises(DestinationNotAllowed) as caught:
        await check_url(url, STRICT, resolver)
    assert caught.value.code == "url_destination_not_allowed"
    assert caught.value.reason == reason.value
    assert caught.value.extra["reason"] == reason.value
    assert resolver.calls == []


@pytest.mark.parametrize(
    ("url", "resolved"),
    [
        ("http://2130706433/", "127.0.0.1"),  # decimal
        ("http://0x7f000001/", "127.0.0.1"),  # hex
        ("http://0x7f.1/", "127.0.0.1"),  # hex, short form
        ("http://017700000001/", "127.0.0.1"),  # octal
        ("http://127.1/", "127.0.0.1"),  # short form
        ("http://0xa9.0xfe.0xa9.0xfe/", "169.254.169.254"),
        ("http://2852039166/", "169.254.169.254"),
        ("http://0/", "0.0.0.0"),  # noqa: S104
    ],
)
async def test_odd_ipv4_spelling_is_judged_as_the_address_it_resolves_to(
    url: str, resolved: str
) -> None:
    with pytest.raises(DestinationNotAllowed) as caught:
        await check_url(url, STRICT, numeric_only)
    assert caught.value.ip == resolved


async def test_zero_padded_octal_dotted_quad_is_refused() -> None:
    # httpx rejects "0177.0.0.1" as an invalid IPv4 address before any lookup; either way it is
    # never fetched.
    with pytest.raises(UrlRefused):
        await check_url("http://0177.0.0.1/", STRICT, numeric_only)


async def test_name_resolving_to_a_private_address_is_refused() -> None:
    resolver = ScriptedResolver()
    resolver.add("videos.example.com", ["10.20.30.40"])
    with pytest.raises(DestinationNotAllowed) as caught:
        await check_url("https://videos.example.com/v.mp4", STRICT, resolver)
    error = caught.value
    assert (error.host, error.ip, error.reason) == ("videos.example.com", "10.20.30.40", "private")
    assert "videos.example.com resolves to 10.20.30.40" in error.detail


async def test_name_resolving_to_public_and_private_addresses_is_refused() -> None:
    resolver = ScriptedResolver()
    resolver.add("mixed.example.com", ["93.184.215.14", "2606:4700::1", "127.0.0.1"])
    with pytest.raises(DestinationNotAllowed) as caught:
        await check_url("http://mixed.example.com/", STRICT, resolver)
    assert (caught.value.ip, caught.value.reason) == ("127.0.0.1", "loopback")


async def test_name_resolving_to_mapped_metadata_is_refused() -> None:
    resolver = ScriptedResolver()
    resolver.add("sneaky.example.com", ["::ffff:169.254.169.254"])
    with pytest.raises(DestinationNotAllowed) as caught:
        await check_url("http://sneaky.example.com/", STRICT, resolver)
    assert caught.value.reason == "metadata"


async def test_public_name_answers_its_vetted_addresses_in_order() -> None:
    resolver = ScriptedResolver()
    resolver.add("cdn.example.com", ["93.184.215.14", "93.184.215.14", "2606:4700::6810:84e5"])
    addresses = await check_url("https://cdn.example.com/v.mp4", STRICT, resolver)
    assert addresses == [ip("93.184.215.14"), ip("2606:4700::6810:84e5")]
    assert resolver.calls == ["cdn.example.com"]


async def test_international_name_is_looked_up_in_its_ascii_form() -> None:
    resolver = ScriptedResolver()
    resolver.add("xn--bcher-kva.example", ["10.0.0.9"])
    with pytest.raises(DestinationNotAllowed) as caught:
        await check_url("http://bücher.example/v.mp4", STRICT, resolver)
    assert caught.value.host == "xn--bcher-kva.example"


async def test_allowlisted_name_may_resolve_privately() -> None:
    resolver = ScriptedResolver()
    resolver.add("minio.internal", ["10.1.2.3"])
    policy = OutboundPolicy(max_bytes=1, allowlist=("minio.internal",))
    assert await check_url("http://minio.internal:9000/b/v.mp4", policy, resolver) == [
        ip("10.1.2.3")
    ]


async def test_unknown_name_is_unresolvable_and_not_retryable() -> None:
    with pytest.raises(Unresolvable) as caught:
        await check_url("http://nowhere.invalid/", STRICT, ScriptedResolver())
    assert caught.value.code == "url_unresolvable"
    assert caught.value.retryable is False


async def test_temporary_lookup_failure_is_retryable() -> None:
    async def flaky(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    with pytest.raises(Unresolvable) as caught:
        await check_url("http://flaky.example.com/", STRICT, flaky)
    assert caught.value.retryable is True


async def test_empty_or_garbage_answer_is_unresolvable() -> None:
    resolver = ScriptedResolver()
    resolver.add("empty.example.com", [])
    resolver.add("garbage.example.com", ["not-an-ip"])
    for host in ("empty.example.com", "garbage.example.com"):
        with pytest.raises(Unresolvable):
            await check_url(f"http://{host}/", STRICT, resolver)


async def test_hanging_lookup_times_out_as_unresolvable() -> None:
    async def hangs(host: str, port: int) -> list[str]:
        await asyncio.sleep(10)  # a resolver that hangs: the lookup's timeout must fire
        return []

    policy = OutboundPolicy(max_bytes=1, connect_timeout_s=0.05)
    with pytest.raises(Unresolvable) as caught:
        await check_url("http://slow-dns.example.com/", policy, hangs)
    assert caught.value.retryable is True


# --- literal_address: the cheap test for "is this host an address?" --------------------------


def _ip_address_or_none(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "10.0.0.1",
        "::1",
        "fe80::1%eth0",
        "::ffff:169.254.169.254",
        "2001:db8::1",
        "example.com",
        "0x7f.1",  # glibc reads it as 127.0.0.1; ipaddress does not: a name, resolved later
        "2130706433",
        "0177.0.0.1",
        "1.2.3",
        "1.2.3.4.5",
        "",
        ".",
        "١٢٣.٠.٠.١",  # digits of another script: not an IPv4 address to ipaddress either
    ],
)
def test_literal_address_reads_what_ipaddress_reads(host: str) -> None:
    assert literal_address(host) == _ip_address_or_none(host)


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.text(),
        st.text(alphabet="0123456789.", max_size=20),
        st.text(alphabet="0123456789abcdef:.%", max_size=45),
        st.ip_addresses().map(str),
    )
)
def test_literal_address_agrees_with_ipaddress_on_any_text(host: str) -> None:
    assert literal_address(host) == _ip_address_or_none(host)
