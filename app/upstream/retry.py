"""The retry policy for calls to fal, with the reason for every rule.

The constraint that shapes everything: **fal has no idempotency key on submit**. A submit that
reached fal's queue creates a request that will run and be billed; sending it again creates a
second one. So the question for a failed submit is never "is this error transient?" but "could a
request have been created?". Only a *certain no* allows a retry here.

Submit (``POST queue/{endpoint}``) — retried in-process only when no request can exist:

1. ``httpx.ConnectError``, ``ConnectTimeout``, ``PoolTimeout``, ``ProxyError``: raised before a
   single byte of the request left this process (no connection, or none free in our pool).
2. 429: a rejection. fal does not enqueue a request it refuses with 429 (and a queue submit over
   the account's concurrency is not refused at all: it waits in fal's queue), so asking again
   after ``Retry-After`` cannot double anything.
3. 408: the server says it did not receive the whole request in time; an incomplete request
   cannot be acted on.
4. 502/503/504 **without** ``x-fal-request-id``: fal puts that header on every answer its queue
   service produces, so an error without it came from the ingress (nginx) in front of the queue
   (protocol page, "Errors"; ``fal_client`` uses the same test). Residual risk, written down so
   nobody rediscovers it: an nginx 504 (or a 502 "upstream closed the connection") can in principle
   follow a request the queue service had received. The issue and the protocol page treat these
   as safe, fal's queue enqueues in milliseconds, and ``ingress_gateway_errors_retryable=False``
   turns 502/504 into ambiguous submits for anyone who prefers to wait for a webhook instead.

Never retried, ambiguous (``AmbiguousSubmitError``):

- ``ReadTimeout``, ``ReadError``, ``RemoteProtocolError``, ``WriteTimeout``, ``WriteError`` and
  any other transport failure after the connection was made. The request (or most of it) was on
  the wire; fal may have enqueued it and only the answer was lost. Write failures are very
  probably safe (fal cannot act on a body it did not fully receive) but "probably" is not the
  standard when the cost is a second paid job.
- **5xx with ``x-fal-request-id``**: the queue service itself saw the request and assigned it an
  id, then failed. Whether the request was persisted before the failure is not observable from
  outside, and fal documents no "nothing was created" guarantee for these answers.
  ``X-Fal-Retryable`` / ``X-Fal-Needs-Retry`` describe whether the *failure* is worth retrying
  (they drive fal's own server-side retries), not whether a request exists, so they are recorded
  on the error but do not turn it into a retry. The header's id goes on the error so a later
  webhook or support ticket can be matched.
- Other 5xx without the header (500, 501, …): an ingress that answers 500 may have forwarded the
  request first; same reasoning.
- A 2xx we cannot read (no ``request_id`` / URLs in the body): a request exists but we cannot
  follow it; the worker must not submit a second one.

Not retried, permanent: other 4xx (401/403 auth or locked account, 404 unknown endpoint,
422 validation) and 504 with ``X-Fal-Request-Timeout-Type: user`` (our own start deadline fired:
asking again is a new decision, not a retry).

Status, result, cancel (GET/GET/PUT on the stored URLs) — idempotent, so retried on every
transport error including read timeouts, on 408/429, on ingress 502/503/504, and for status and
cancel also on 5xx from fal's queue service (the status endpoint never carries a model's answer).
The result endpoint is different: a 5xx *with* ``x-fal-request-id`` there is the model's stored
failure (e.g. 504 ``request_timeout``), a final answer, not a hiccup.

The status stream (GET ``…/status/stream``) is never retried in-process: it only spares polls,
and whoever follows it decides whether to reconnect or to poll ``status`` instead.

Any response carrying ``X-Fal-Retryable: false`` (or ``X-Fal-Needs-Retry: false``) is not retried.

Delays: capped exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff
And Jitter", 2015: full jitter spreads synchronized clients best): before retry *n* (1-based) sleep
``uniform(0, min(max_delay, base * 2 ** (n - 1)))``. A ``Retry-After`` (seconds or HTTP date) is
honoured exactly when it is at most ``retry_after_cap_s``; a longer one ends the in-process loop
with ``TransientUpstreamError(retry_after=...)`` so the worker reschedules instead of holding a
concurrency slot asleep. Attempts are bounded by ``max_attempts`` (first try included).
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import httpx

REQUEST_ID_HEADER = "x-fal-request-id"
RETRYABLE_HEADERS = ("x-fal-retryable", "x-fal-needs-retry")
TIMEOUT_TYPE_HEADER = "x-fal-request-timeout-type"

# Exceptions httpx raises before any byte of the request is sent.
NOTHING_SENT: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
)
# Misconfiguration (bad scheme or URL): raised before any I/O; asking again cannot help.
CONFIGURATION_ERRORS: tuple[type[Exception], ...] = (httpx.UnsupportedProtocol, httpx.InvalidURL)

INGRESS_ERROR_STATUSES = frozenset({502, 503, 504})
REJECTED_BEFORE_CREATION = frozenset({408, 429})

Uniform = Callable[[float, float], float]


class Verdict(StrEnum):
    """What to do with the outcome of one attempt."""

    RETRY = "retry"  # certainly not acted on (or idempotent): try again after a delay
    AMBIGUOUS = "ambiguous"  # a submit that may have created a request: never retried here
    FAIL = "fail"  # an exception that asking again cannot fix (configuration)
    ANSWER = "answer"  # a response to hand to the caller, which maps it to a value or an error


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounds and delays of one retry loop. Defaults suit submit; polls use ``CALL_POLICY``."""

    max_attempts: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    retry_after_cap_s: float = 30.0
    # See the module docstring, submit rule 4.
    ingress_gateway_errors_retryable: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay_s < 0 or self.max_delay_s < 0 or self.retry_after_cap_s < 0:
            raise ValueError("delays must not be negative")

    def backoff_s(self, retry_number: int, uniform: Uniform) -> float:
        """Full-jitter delay before retry ``retry_number`` (1 for the first retry)."""
        exponent = min(retry_number - 1, 62)  # 2**62 s is beyond any cap; avoids float overflow
        ceiling = min(self.max_delay_s, self.base_delay_s * math.pow(2, exponent))
        return uniform(0.0, ceiling)

    def delay_s(
        self, retry_number: int, retry_after: float | None, uniform: Uniform
    ) -> float | None:
        """Delay before the next attempt, or ``None`` when fal asked for more than the cap."""
        if retry_after is not None:
            return retry_after if retry_after <= self.retry_after_cap_s else None
        return self.backoff_s(retry_number, uniform)


SUBMIT_POLICY = RetryPolicy()
# Status/result/cancel are cheap, idempotent and polled again later anyway: a few quick tries.
CALL_POLICY = RetryPolicy(max_attempts=4, base_delay_s=0.25, max_delay_s=4.0)
# The status stream gets one attempt: see the module docstring.
STREAM_POLICY = RetryPolicy(max_attempts=1)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now (RFC 9110 §10.2.3: delay-seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if math.isnan(seconds) or math.isinf(seconds):
            return None
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


def retryable_hint(headers: httpx.Headers) -> bool | None:
    """fal's ``X-Fal-Retryable`` (newer) or ``X-Fal-Needs-Retry`` (older), if either is present."""
    for name in RETRYABLE_HEADERS:
        raw = headers.get(name)
        if raw is None:
            continue
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes"}:
            return True
        if lowered in {"0", "false", "no"}:
            return False
    return None


def from_fal(response: httpx.Response) -> bool:
    """True when fal's queue service produced the answer (not the ingress in front of it)."""
    return REQUEST_ID_HEADER in response.headers


def is_user_start_timeout(response: httpx.Response) -> bool:
    return response.status_code == 504 and response.headers.get(TIMEOUT_TYPE_HEADER) == "user"


def classify_submit_exception(exc: Exception) -> Verdict:
    if isinstance(exc, NOTHING_SENT):
        return Verdict.RETRY
    if isinstance(exc, CONFIGURATION_ERRORS):
        return Verdict.FAIL
    # Everything else happened with a connection open and the request (partly) written.
    return Verdict.AMBIGUOUS


def classify_submit_response(response: httpx.Response, policy: RetryPolicy) -> Verdict:
    verdict = _submit_response_verdict(response, policy)
    if verdict is Verdict.RETRY and retryable_hint(response.headers) is False:
        return Verdict.ANSWER
    return verdict


def _submit_response_verdict(response: httpx.Response, policy: RetryPolicy) -> Verdict:
    status = response.status_code
    if status < 400:
        return Verdict.ANSWER
    if status in REJECTED_BEFORE_CREATION:
        return Verdict.RETRY
    if is_user_start_timeout(response):
        return Verdict.ANSWER
    if status in INGRESS_ERROR_STATUSES and not from_fal(response):
        if status == 503 or policy.ingress_gateway_errors_retryable:
            return Verdict.RETRY
        return Verdict.AMBIGUOUS
    if status >= 500:
        return Verdict.AMBIGUOUS
    return Verdict.ANSWER


def classify_call_exception(exc: Exception) -> Verdict:
    if isinstance(exc, CONFIGURATION_ERRORS):
        return Verdict.FAIL
    if isinstance(exc, httpx.TransportError):
        return Verdict.RETRY
    # DecodingError, TooManyRedirects …: the server answered something unusable; not transient.
    return Verdict.FAIL


def classify_call_response(response: httpx.Response, *, model_answers: bool) -> Verdict:
    """For idempotent calls. ``model_answers`` is True for the result endpoint, whose 5xx with
    ``x-fal-request-id`` are the model's final answer rather than a queue hiccup."""
    verdict = _call_response_verdict(response, model_answers=model_answers)
    if verdict is Verdict.RETRY and retryable_hint(response.headers) is False:
        return Verdict.ANSWER
    return verdict


def _call_response_verdict(response: httpx.Response, *, model_answers: bool) -> Verdict:
    status = response.status_code
    if status < 400:
        return Verdict.ANSWER
    if status in REJECTED_BEFORE_CREATION:
        return Verdict.RETRY
    if status in INGRESS_ERROR_STATUSES and not from_fal(response):
        return Verdict.RETRY
    if status >= 500 and not model_answers and not is_user_start_timeout(response):
        return Verdict.RETRY
    return Verdict.ANSWER
