"""The outbound-fetch policy built from the settings, and the cheap check done at request time.

A job's ``video_url`` is checked fully (DNS resolved, every address vetted, redirects re-checked)
by the worker before anything is fetched. At request time only what needs no network is checked
(scheme, credentials, and a host that is an IP literal), so creating a job never waits on DNS.
"""

from __future__ import annotations

import functools

from app.config import Settings
from app.kit.problems import InputValidationError
from app.netguard import OutboundPolicy, OutboundRefused
from app.netguard.errors import DestinationNotAllowed
from app.netguard.policy import literal_address, parse_url


def outbound_policy(settings: Settings, max_bytes: int | None = None) -> OutboundPolicy:
    return _policy(
        max_bytes or settings.max_input_bytes,
        settings.allow_loopback,
        settings.outbound_allow_private,
        tuple(settings.outbound_allowlist),
        settings.input_fetch_timeout.total_seconds(),
    )


@functools.lru_cache(maxsize=64)
def _policy(
    max_bytes: int,
    allow_loopback: bool,
    allow_private: bool,
    allowlist: tuple[str, ...],
    timeout: float,
) -> OutboundPolicy:
    # Built once per distinct setting (it parses the allowlist), not on every job creation;
    # the policy is immutable, so sharing it is safe.
    return OutboundPolicy(
        max_bytes=max_bytes,
        allow_loopback=allow_loopback,
        allow_private=allow_private,
        allowlist=allowlist,
        connect_timeout_s=min(10.0, timeout),
        read_timeout_s=min(30.0, timeout),
        total_timeout_s=timeout,
    )


def check_video_url(url: str, policy: OutboundPolicy, *, param: str = "input.video_url") -> None:
    if url.startswith("data:"):
        return
    try:
        parsed = parse_url(url, policy)
        host = parsed.raw_host.decode("ascii").strip("[]")
        ip = literal_address(host)
        if ip is None:
            return  # a name: resolved and vetted by the worker before the fetch
        reason = policy.refusal(ip, None)
        if reason is not None:
            raise DestinationNotAllowed(host, str(ip), reason.value)
    except OutboundRefused as exc:
        raise InputValidationError(
            [{"param": param, "code": exc.code, "message": exc.detail}]
        ) from exc
