"""Verification of fal's inbound webhooks (Ed25519 over a canonical message; keys from a JWKS).

fal signs ``request_id + "\\n" + user_id + "\\n" + timestamp + "\\n" + sha256_hex(raw body)``, the
first three being the ``X-Fal-Webhook-*`` header strings exactly as received, and publishes its
public keys at ``<REST host>/.well-known/jwks.json``. Neither fal client library ships a verifier;
this one follows the protocol page:

- accept when ANY published Ed25519 key verifies (fal rotates keys by publishing both);
- reject when the timestamp is more than ``tolerance`` away from now (bounds replays; duplicates
  inside the window are made harmless by the gateway storing events unique on request id);
- cache the JWKS at most ``cache_ttl`` (24 h), and when a signature fails, refetch it once in case
  the key rotated — but at most once per ``refetch_interval`` (10 s): otherwise anyone can make us
  hit fal's JWKS host once per forged request.

Verification works on the raw bytes, before any JSON parsing; the body is parsed only once the
signature holds, and its ``request_id`` must match the signed header.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
import time
from collections.abc import Callable, Mapping
from datetime import timedelta

import httpx
import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from app.upstream.errors import WebhookKeysUnavailableError, WebhookVerificationError
from app.upstream.schemas import FalWebhook, VerifiedWebhook

log = structlog.get_logger("app.upstream.webhooks")

REQUEST_ID_HEADER = "X-Fal-Webhook-Request-Id"
USER_ID_HEADER = "X-Fal-Webhook-User-Id"
TIMESTAMP_HEADER = "X-Fal-Webhook-Timestamp"
SIGNATURE_HEADER = "X-Fal-Webhook-Signature"

_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"[0-9a-fA-F]{128}")  # hex of a 64-byte Ed25519 signature

Clock = Callable[[], float]


def default_jwks_url(rest_url: str) -> str:
    return rest_url.rstrip("/") + "/.well-known/jwks.json"


def parse_webhook_body(raw: bytes | str) -> FalWebhook:
    """Parse a webhook body (OK, ERROR, or ``payload_error`` when fal could not serialise the
    output). Raises ``WebhookVerificationError("bad_body")``."""
    try:
        return FalWebhook.model_validate_json(raw)
    except ValidationError as exc:
        raise WebhookVerificationError("bad_body", "webhook body is not fal's shape") from exc


def signed_message(request_id: str, user_id: str, timestamp: str, raw_body: bytes) -> bytes:
    digest = hashlib.sha256(raw_body).hexdigest()
    return f"{request_id}\n{user_id}\n{timestamp}\n{digest}".encode()


def parse_jwks(document: object) -> tuple[Ed25519PublicKey, ...]:
    """The Ed25519 keys of a JWKS document; other key types and malformed entries are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        return ()
    keys: list[Ed25519PublicKey] = []
    for entry in document["keys"]:
        if not isinstance(entry, dict):
            continue
        if entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519":
            continue
        x = entry.get("x")
        if not isinstance(x, str):
            continue
        raw = _b64url_decode(x)
        if raw is None or len(raw) != 32:
            continue
        keys.append(Ed25519PublicKey.from_public_bytes(raw))
    return tuple(keys)


class FalWebhookVerifier:
    """Verifies fal webhooks. One per process (it holds the JWKS cache); safe for concurrent use.

    ``clock`` returns unix seconds and drives the timestamp window, the cache age and the refetch
    rate limit, so tests can move time.
    """

    def __init__(
        self,
        jwks_url: str,
        http_client: httpx.AsyncClient,
        *,
        cache_ttl: timedelta = timedelta(hours=24),
        tolerance: timedelta = timedelta(seconds=300),
        refetch_interval: timedelta = timedelta(seconds=10),
        fetch_timeout_s: float = 10.0,
        clock: Clock = time.time,
    ) -> None:
        if cache_ttl > timedelta(hours=24):
            raise ValueError("fal allows caching its JWKS for at most 24 h")
        self._jwks_url = jwks_url
        self._http = http_client
        self._cache_ttl = cache_ttl.total_seconds()
        self._tolerance = tolerance.total_seconds()
        self._refetch_interval = refetch_interval.total_seconds()
        self._fetch_timeout = fetch_timeout_s
        self._clock = clock
        self._keys: tuple[Ed25519PublicKey, ...] = ()
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch attempt, successful or not
        self._generation = 0  # bumped by every successful fetch
        self._lock = asyncio.Lock()

    async def verify(self, headers: Mapping[str, str], raw_body: bytes) -> VerifiedWebhook:
        """Verify and parse one delivery. Raises ``WebhookVerificationError(reason)`` for a call
        to reject (401), ``WebhookKeysUnavailableError`` when fal's keys cannot be had (503)."""
        request_id = _header(headers, REQUEST_ID_HEADER)
        user_id = _header(headers, USER_ID_HEADER)
        timestamp = _header(headers, TIMESTAMP_HEADER)
        signature_hex = _header(headers, SIGNATURE_HEADER)
        if not request_id or user_id is None or not timestamp or not signature_hex:
            raise WebhookVerificationError("missing_header")
        if not _TIMESTAMP.fullmatch(timestamp):
            raise WebhookVerificationError("bad_timestamp")
        if abs(self._clock() - int(timestamp)) > self._tolerance:
            raise WebhookVerificationError("timestamp_out_of_window")
        if not _SIGNATURE.fullmatch(signature_hex):
            raise WebhookVerificationError("malformed_signature")
        signature = bytes.fromhex(signature_hex)
        message = signed_message(request_id, user_id, timestamp, raw_body)

        keys, generation = await self._current_keys()
        if not _any_verifies(keys, signature, message):
            keys = await self._keys_after_failure(generation)
            if not keys or not _any_verifies(keys, signature, message):
                raise WebhookVerificationError("bad_signature")

        body = parse_webhook_body(raw_body)
        # The header names the request fal signed for; the body must be about the same one.
        # gateway_request_id is accepted too: it is the id fal used before retrying the job.
        if request_id not in (body.request_id, body.gateway_request_id):
            raise WebhookVerificationError("request_id_mismatch")
        return VerifiedWebhook(
            request_id=body.request_id,
            gateway_request_id=body.gateway_request_id,
            status=body.status,
            payload=body.payload,
            payload_error=body.payload_error,
            error=body.error,
            user_id=user_id,
            timestamp=int(timestamp),
            body=body,
        )

    async def _current_keys(self) -> tuple[tuple[Ed25519PublicKey, ...], int]:
        if self._fresh():
            return self._keys, self._generation
        async with self._lock:
            # Another coroutine may have fetched while we waited; and while fal's JWKS host is
            # failing, ask it at most once per refetch interval (503s meanwhile: fal redelivers).
            if not self._fresh() and self._may_fetch():
                await self._fetch()
            if not self._fresh():
                raise WebhookKeysUnavailableError(
                    "fal's JWKS could not be fetched", operation="jwks"
                )
            return self._keys, self._generation

    async def _keys_after_failure(self, seen: int) -> tuple[Ed25519PublicKey, ...]:
        """Keys to try once more after a failed signature: newer ones another coroutine fetched,
        or one rate-limited refetch; ``()`` when neither is available."""
        async with self._lock:
            if self._generation != seen:
                return self._keys
            if not self._may_fetch():
                return ()
            await self._fetch()
            return self._keys if self._generation != seen else ()

    def _may_fetch(self) -> bool:
        return (
            self._attempted_at is None
            or self._clock() - self._attempted_at >= self._refetch_interval
        )

    def _fresh(self) -> bool:
        return (
            self._fetched_at is not None
            and bool(self._keys)
            and self._clock() - self._fetched_at < self._cache_ttl
        )

    async def _fetch(self) -> None:
        """Fetch the JWKS; on failure keep the previous keys (still bounded by their TTL)."""
        self._attempted_at = self._clock()
        try:
            response = await self._http.get(
                self._jwks_url,
                headers={"Accept": "application/json"},
                timeout=self._fetch_timeout,
            )
            response.raise_for_status()
            keys = parse_jwks(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("upstream.jwks_fetch_failed", url=self._jwks_url, error=repr(exc))
            return
        if not keys:
            log.warning("upstream.jwks_without_keys", url=self._jwks_url)
            return
        self._keys = keys
        self._fetched_at = self._clock()
        self._generation += 1
        log.info("upstream.jwks_fetched", url=self._jwks_url, keys=len(keys))


def _any_verifies(keys: tuple[Ed25519PublicKey, ...], signature: bytes, message: bytes) -> bool:
    for key in keys:
        try:
            key.verify(signature, message)
        except InvalidSignature:
            continue
        return True
    return False


def _b64url_decode(value: str) -> bytes | None:
    """base64url with or without ``=`` padding (fal has published both)."""
    stripped = value.strip().rstrip("=")
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError):
        return None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup that works for plain dicts as well as Starlette/httpx headers."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, candidate in headers.items():
        if key.lower() == wanted:
            return candidate
    return None
