"""Outbound fetch safety: fetch URLs on a tenant's behalf without reaching what they should not.

Every URL the gateway fetches for a tenant (input videos; later, tenant webhooks) goes through
here. A destination is refused when any address its host resolves to is loopback, private,
link-local, cloud metadata, unspecified, multicast, CGNAT, benchmark, documentation or otherwise
reserved (IPv4-mapped, NAT64 and 6to4 forms judged by the IPv4 address inside) unless the
``OutboundPolicy`` permits it; metadata addresses are never permitted. Names are resolved once per
hop and the connection goes to the checked address (DNS rebinding cannot redirect it), redirects
are followed by hand and checked again, sizes and times are capped.

- ``check_url(url, policy)`` at request validation: a 422 before a job exists.
- ``SafeFetcher(policy).download(url, dest)`` / ``head`` / ``probe_headers`` in the worker.
- Errors: ``OutboundRefused`` and its subclasses, each with a stable ``code``.

Modules: ``addresses`` (what kind of address an IP is), ``policy`` (the policy, resolution, URL
checks), ``fetch`` (the pinned fetcher), ``errors``.
"""

from app.netguard.addresses import METADATA_ADDRESSES, IPAddress, Reason, classify
from app.netguard.errors import (
    ContentTooLarge,
    CredentialsNotAllowed,
    DestinationNotAllowed,
    FetchError,
    FetchFailed,
    FetchTimeout,
    InvalidUrl,
    OutboundRefused,
    SchemeNotAllowed,
    TooManyRedirects,
    Unresolvable,
    UrlRefused,
)
from app.netguard.fetch import FetchResult, HeadResult, SafeFetcher, build_client
from app.netguard.policy import OutboundPolicy, Resolver, check_url, system_resolver

__all__ = [
    "METADATA_ADDRESSES",
    "ContentTooLarge",
    "CredentialsNotAllowed",
    "DestinationNotAllowed",
    "FetchError",
    "FetchFailed",
    "FetchResult",
    "FetchTimeout",
    "HeadResult",
    "IPAddress",
    "InvalidUrl",
    "OutboundPolicy",
    "OutboundRefused",
    "Reason",
    "Resolver",
    "SafeFetcher",
    "SchemeNotAllowed",
    "TooManyRedirects",
    "Unresolvable",
    "UrlRefused",
    "build_client",
    "check_url",
    "classify",
    "system_resolver",
]
