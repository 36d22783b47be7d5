"""The outbound error family: every reason a tenant-supplied URL is not fetched.

Two groups, because callers take different branches:

- ``UrlRefused``: the URL (or a redirect target) is unacceptable as such: wrong scheme,
  credentials, a destination the policy forbids, a name that does not resolve. An API validating a
  request answers 422 with the ``code``; ``check_url`` raises only these.
- ``FetchError``: the URL was acceptable but fetching it failed or went past a cap (redirects,
  size, time, an HTTP error status).

Each class carries a stable ``code`` (changing one is an API change), a human ``detail`` that never
contains URL credentials or query strings, ``extra`` (JSON-safe facts for a problem body:
``ip``, ``reason``, ``status``, ``limit`` …) and ``retryable`` (asking again later may work).
They are plain exceptions on purpose: this package knows nothing of FastAPI, the API layer maps
them to problem+json.
"""

from __future__ import annotations

from typing import Any, ClassVar


class OutboundRefused(Exception):
    """Base of every error raised by ``app.netguard``: the gateway did not get the resource."""

    code: ClassVar[str] = "outbound_refused"

    def __init__(self, detail: str, *, retryable: bool = False, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retryable = retryable
        self.extra: dict[str, Any] = {k: v for k, v in extra.items() if v is not None}

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"

    def at_redirect(self, hop: int) -> None:
        """Mark the error as raised for the ``hop``-th redirect target, not the URL given."""
        self.extra["redirect"] = hop
        self.detail = f"redirect {hop}: {self.detail}"


class UrlRefused(OutboundRefused):
    """The URL itself is not acceptable; nothing was sent to it."""


class InvalidUrl(UrlRefused):
    code: ClassVar[str] = "url_invalid"


class SchemeNotAllowed(UrlRefused):
    code: ClassVar[str] = "url_scheme_not_allowed"

    def __init__(self, scheme: str, allowed: tuple[str, ...]) -> None:
        shown = scheme or "(none)"
        super().__init__(
            f"scheme {shown!r} is not allowed (allowed: {', '.join(allowed)})",
            scheme=scheme,
        )
        self.scheme = scheme


class CredentialsNotAllowed(UrlRefused):
    """``user:password@`` in a URL: refused rather than stripped (see ``app.netguard``)."""

    code: ClassVar[str] = "url_credentials_not_allowed"


class DestinationNotAllowed(UrlRefused):
    """The host is, or resolves to, an address the policy forbids (``reason`` says which kind)."""

    code: ClassVar[str] = "url_destination_not_allowed"

    def __init__(self, host: str, ip: str, reason: str) -> None:
        where = ip if host == ip else f"{host} resolves to {ip}, which"
        super().__init__(
            f"{where} is not an allowed destination ({reason})", host=host, ip=ip, reason=reason
        )
        self.host = host
        self.ip = ip
        self.reason = reason


class Unresolvable(UrlRefused):
    """The name has no address (``retryable`` when the lookup failed temporarily or timed out)."""

    code: ClassVar[str] = "url_unresolvable"


class FetchError(OutboundRefused):
    """The URL was acceptable; fetching it failed or exceeded a cap."""


class TooManyRedirects(FetchError):
    code: ClassVar[str] = "too_many_redirects"

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} redirects", limit=limit)
        self.limit = limit


class ContentTooLarge(FetchError):
    """Over ``limit`` bytes: ``declared`` when Content-Length said so up front, else ``received``
    (the count when the stream was cut)."""

    code: ClassVar[str] = "content_too_large"

    def __init__(
        self, limit: int, *, declared: int | None = None, received: int | None = None
    ) -> None:
        if declared is not None:
            detail = f"content is {declared} bytes, over the {limit} byte limit"
        else:
            detail = f"content exceeds the {limit} byte limit"
        super().__init__(detail, limit=limit, declared=declared, received=received)
        self.limit = limit
        self.declared = declared
        self.received = received


class FetchTimeout(FetchError):
    """``phase``: ``connect``, ``read``, ``write``, ``pool`` (a socket operation) or ``total``
    (the whole fetch, redirects and body included)."""

    code: ClassVar[str] = "fetch_timeout"

    def __init__(self, detail: str, *, phase: str) -> None:
        super().__init__(detail, retryable=True, phase=phase)
        self.phase = phase


class FetchFailed(FetchError):
    """An HTTP error answer (``status`` set), or a connection that failed or broke off
    (``status`` None)."""

    code: ClassVar[str] = "fetch_failed"

    def __init__(self, detail: str, *, status: int | None = None) -> None:
        retryable = status is None or status >= 500 or status in (408, 429)
        super().__init__(detail, retryable=retryable, status=status)
        self.status = status
