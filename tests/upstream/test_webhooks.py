"""FalWebhookVerifier with real Ed25519 keys generated here and a JWKS served over httpx's
MockTransport; time is an injected clock."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.upstream import (
    FalWebhookVerifier,
    WebhookKeysUnavailableError,
    WebhookVerificationError,
    parse_webhook_body,
)
from app.upstream.webhooks import parse_jwks

JWKS_URL = "https://rest.test/.well-known/jwks.json"
NOW = 1_800_000_000
RID = "5f0a9a4e-1b7e-4c55-9e39-7f1e2c3d4b5a"
USER = "user-42"


def jwk(key: Ed25519PrivateKey, *, padded: bool = False) -> dict[str, str]:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    x = base64.urlsafe_b64encode(raw).decode()
    return {"kty": "OKP", "crv": "Ed25519", "x": x if padded else x.rstrip("=")}


def sign(
    key: Ed25519PrivateKey,
    body: bytes,
    *,
    request_id: str = RID,
    user_id: str = USER,
    timestamp: int = NOW,
) -> dict[str, str]:
    message = f"{request_id}\n{user_id}\n{timestamp}\n{hashlib.sha256(body).hexdigest()}"
    return {
        "X-Fal-Webhook-Request-Id": request_id,
        "X-Fal-Webhook-User-Id": user_id,
        "X-Fal-Webhook-Timestamp": str(timestamp),
        "X-Fal-Webhook-Signature": key.sign(message.encode()).hex(),
    }


def body_for(request_id: str = RID, **extra: object) -> bytes:
    document: dict[str, object] = {
        "request_id": request_id,
        "gateway_request_id": request_id,
        "status": "OK",
        "payload": {"audio": {"url": "https://cdn/a.mp3"}},
    }
    document.update(extra)
    return json.dumps(document).encode()


@dataclass
class Clock:
    now: float = NOW

    def __call__(self) -> float:
        return self.now


@dataclass
class JwksHost:
    """A JWKS endpoint whose published keys the test changes; counts fetches."""

    keys: list[dict[str, str]] = field(default_factory=list)
    fetches: int = 0
    status: int = 200

    async def handle(self, request: httpx.Request) -> httpx.Response:
        assert str(request.url) == JWKS_URL
        assert "authorization" not in request.headers
        self.fetches += 1
        return httpx.Response(self.status, json={"keys": self.keys})


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def host(key: Ed25519PrivateKey) -> JwksHost:
    return JwksHost(keys=[jwk(key)])


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def verifier(host: JwksHost, clock: Clock) -> AsyncIterator[FalWebhookVerifier]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(host.handle)) as http:
        yield FalWebhookVerifier(JWKS_URL, http, clock=clock)


async def reason_of(verifier: FalWebhookVerifier, headers: dict[str, str], body: bytes) -> str:
    with pytest.raises(WebhookVerificationError) as caught:
        await verifier.verify(headers, body)
    return caught.value.reason


async def test_valid_webhook_is_verified_and_parsed(
    verifier: FalWebhookVerifier, key: Ed25519PrivateKey
) -> None:
    body = body_for()
    verified = await verifier.verify(sign(key, body), body)
    assert verified.request_id == RID
    assert verified.user_id == USER
    assert verified.timestamp == NOW
    assert verified.status == "OK"
    assert verified.payload == {"audio": {"url": "https://cdn/a.mp3"}}
    assert verified.body.outcome == "ok"


async def test_lowercase_header_names_are_accepted(
    verifier: FalWebhookVerifier, key: Ed25519PrivateKey
) -> None:
    body = body_for()
    headers = {name.lower(): value for name, value in sign(key, body).items()}
    assert (await verifier.verify(headers, body)).request_id == RID


@pytest.mark.parametrize("padded", [True, False])
async def test_jwks_x_with_or_without_padding(
    host: JwksHost, verifier: FalWebhookVerifier, key: Ed25519PrivateKey, padded: bool
) -> None:
    host.keys = [jwk(key, padded=padded)]
    assert jwk(key, padded=True)["x"].endswith("=")  # a 32-byte key always pads in base64
    body = body_for()
    assert (await verifier.verify(sign(key, body), body)).request_id == RID


async def test_tampered_body_is_rejected(
    verifier: FalWebhookVerifier, key: Ed25519PrivateKey
) -> None:
    body = body_for()
    headers = sign(key, body)
    tampered = body.replace(b"a.mp3", b"b.mp3")
    assert await reason_of(verifier, headers, tampered) == "bad_signature"


async def test_reserialised_body_is_rejected(
    verifier: FalWebhookVerifier, key: Ed25519PrivateKey
) -> None:
    # Verification is over the raw bytes: the same JSON with other whitespace is another message.
    body = body_for()
    headers = sign(key, body)
    assert await reason_of(verifier, headers, json.dumps(json.loads(body), indent=1).encode()) == (
        "bad_signature"
    )


async def test_signed_headers_cannot_be_changed(
    verifier: FalWebhookVerifier, key: Ed25519PrivateKey
) -> None:
    body = body_for()
    headers = sign(key, body)
    headers["X-Fal-Webhook-User-Id"] = "someone-else"
    assert await reason_of(verifier, headers, body) == "bad_signature"


async def test_body_about_another_request_is_rejected(
    verifier: FalWebhookVerifier, key: Ed25519PrivateKey
) -> None:
    body = body_for(request_id="other-request", gateway_request_id="other-request")
    assert await reason_of(verifier, sign(key, body), body) == "request_id_mismatch"


async def test_header_may_name_the_gateway_request_id_after_a_fal_retry(
    verifier: FalWebhookVerifier, key: Ed25519PrivateKey
) -> None:
    body = body_for(request_id="retried-id", gateway_request_id=RID)
    verified = await verifier.verify(sign(key, body), body)
    assert verified.request_id == "retried-id"
    assert verified.gateway_request_id == RID


@pytest.mark.parametrize(
    ("skew", "accepted"), [(-300, True), (300, True), (-301, False), (301, False)]
)
async def test_timestamp_window_is_300_seconds_either_way(
    verifier: FalWebhookVerifier, key: Ed25519PrivateKey, clock: Clock, skew: int, accepted: bool
) -> None:
    body = body_for()
    headers = sign(key, body, timestamp=NOW + skew)
    if accepted:
        await verifier.verify(headers, body)
    else:
        assert await reason_of(verifier, headers, body) == "timestamp_out_of_window"


async def test_replay_after_the_window_is_rejected(
    verifier: FalWebhookVerifier, key: Ed25519PrivateKey, clock: Clock
) -> None:
    body = body_for()
    headers = sign(key, body)
    await verifier.verify(headers, body)
    clock.now += 301
    assert await reason_of(verifier, headers, body) == "timestamp_out_of_window"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda h: h.pop("X-Fal-Webhook-Signature"), "missing_header"),
        (lambda h: h.pop("X-Fal-Webhook-Request-Id"), "missing_header"),
        (lambda h: h.pop("X-Fal-Webhook-Timestamp"), "missing_header"),
        (lambda h: h.pop("X-Fal-Webhook-User-Id"), "missing_header"),
        (lambda h: h.update({"X-Fal-Webhook-Timestamp": "1.8e9"}), "bad_timestamp"),
        (lambda h: h.update({"X-Fal-Webhook-Timestamp": "-5"}), "bad_timestamp"),
        (lambda h: h.update({"X-Fal-Webhook-Signature": "zz" * 64}), "malformed_signature"),
        (lambda h: h.update({"X-Fal-Webhook-Signature": "ab" * 32}), "malformed_signature"),
        (lambda h: h.update({"X-Fal-Webhook-Signature": "00" * 64}), "bad_signature"),
    ],
)
async def test_malformed_deliveries(
    verifier: FalWebhookVerifier, key: Ed25519PrivateKey, mutate: object, reason: str
) -> None:
    body = body_for()
    headers = sign(key, body)
    mutate(headers)  # type: ignore[operator]
    assert await reason_of(verifier, headers, body) == reason


async def test_hmac_style_signature_is_rejected(verifier: FalWebhookVerifier) -> None:
    import hmac

    body = body_for()
    headers = sign(Ed25519PrivateKey.generate(), body)
    headers["X-Fal-Webhook-Signature"] = hmac.new(
        b"secret", body, hashlib.sha512
    ).hexdigest()  # 64 bytes, right length, wrong kind
    assert await reason_of(verifier, headers, body) == "bad_signature"


async def test_any_published_key_may_verify(
    host: JwksHost, verifier: FalWebhookVerifier, key: Ed25519PrivateKey
) -> None:
    other = Ed25519PrivateKey.generate()
    host.keys = [jwk(other), {"kty": "RSA", "n": "x", "e": "AQAB"}, jwk(key)]
    body = body_for()
    assert (await verifier.verify(sign(key, body), body)).request_id == RID
    body2 = body_for()
    assert (await verifier.verify(sign(other, body2), body2)).request_id == RID
    assert host.fetches == 1


async def test_key_rotation_refetches_once_and_then_verifies(
    host: JwksHost, verifier: FalWebhookVerifier, key: Ed25519PrivateKey, clock: Clock
) -> None:
    body = body_for()
    await verifier.verify(sign(key, body), body)
    assert host.fetches == 1

    rotated = Ed25519PrivateKey.generate()
    host.keys = [jwk(rotated)]
    clock.now += 60
    body = body_for()
    verified = await verifier.verify(sign(rotated, body, timestamp=int(clock.now)), body)
    assert verified.request_id == RID
    assert host.fetches == 2


async def test_forged_traffic_cannot_hammer_the_jwks_host(
    host: JwksHost, verifier: FalWebhookVerifier, key: Ed25519PrivateKey, clock: Clock
) -> None:
    forger = Ed25519PrivateKey.generate()
    body = body_for()
    for _ in range(20):
        assert await reason_of(verifier, sign(forger, body), body) == "bad_signature"
    assert host.fetches == 1  # the first fetch was < 10 s ago: no refetch

    clock.now += 10
    for _ in range(20):
        assert (
            await reason_of(verifier, sign(forger, body, timestamp=int(clock.now)), body)
            == "bad_signature"
        )
    assert host.fetches == 2  # one refetch per interval, whatever the volume

    # Genuine deliveries keep working from the cache meanwhile.
    assert (await verifier.verify(sign(key, body, timestamp=int(clock.now)), body)).user_id == USER
    assert host.fetches == 2


async def test_jwks_cache_expires_after_24_hours(
    host: JwksHost, verifier: FalWebhookVerifier, key: Ed25519PrivateKey, clock: Clock
) -> None:
    body = body_for()
    await verifier.verify(sign(key, body), body)
    clock.now += 23 * 3600
    await verifier.verify(sign(key, body, timestamp=int(clock.now)), body)
    assert host.fetches == 1
    clock.now += 3600
    await verifier.verify(sign(key, body, timestamp=int(clock.now)), body)
    assert host.fetches == 2


async def test_concurrent_deliveries_share_one_fetch(
    host: JwksHost, verifier: FalWebhookVerifier, key: Ed25519PrivateKey
) -> None:
    body = body_for()
    results = await asyncio.gather(*(verifier.verify(sign(key, body), body) for _ in range(10)))
    assert len(results) == 10
    assert host.fetches == 1


async def test_unreachable_jwks_is_a_transient_error_not_a_rejection(
    host: JwksHost, verifier: FalWebhookVerifier, key: Ed25519PrivateKey, clock: Clock
) -> None:
    host.status = 503
    body = body_for()
    with pytest.raises(WebhookKeysUnavailableError):
        await verifier.verify(sign(key, body), body)
    with pytest.raises(WebhookKeysUnavailableError):  # and not asked again within 10 s
        await verifier.verify(sign(key, body), body)
    assert host.fetches == 1
    host.status = 200
    clock.now += 10
    assert (
        await verifier.verify(sign(key, body, timestamp=int(clock.now)), body)
    ).request_id == RID


async def test_a_cache_ttl_above_24_hours_is_refused() -> None:
    async with httpx.AsyncClient() as http:
        with pytest.raises(ValueError, match="24 h"):
            FalWebhookVerifier(JWKS_URL, http, cache_ttl=timedelta(hours=25))


def test_parse_jwks_skips_foreign_and_malformed_keys(key: Ed25519PrivateKey) -> None:
    document = {
        "keys": [
            jwk(key),
            {"kty": "OKP", "crv": "X25519", "x": jwk(key)["x"]},
            {"kty": "OKP", "crv": "Ed25519", "x": "c2hvcnQ"},  # 5 bytes
            {"kty": "OKP", "crv": "Ed25519"},
            "junk",
        ]
    }
    assert len(parse_jwks(document)) == 1
    assert parse_jwks({"nope": []}) == ()


# --- body parsing -------------------------------------------------------------------------------


def test_parse_ok_body() -> None:
    hook = parse_webhook_body(body_for())
    assert hook.outcome == "ok" and hook.payload is not None


def test_parse_error_body_keeps_the_error_payload() -> None:
    detail = [{"loc": ["body", "video_url"], "msg": "too long", "type": "video_duration_too_long"}]
    hook = parse_webhook_body(
        body_for(status="ERROR", error="Invalid status code: 422", payload={"detail": detail})
    )
    assert hook.outcome == "error"
    assert hook.error == "Invalid status code: 422"
    assert hook.payload == {"detail": detail}


def test_parse_payload_error_body_means_fetch_the_result() -> None:
    hook = parse_webhook_body(
        body_for(payload=None, payload_error="Response payload is not JSON serializable.")
    )
    assert hook.outcome == "payload_unavailable"


def test_parse_rejects_what_is_not_a_fal_webhook() -> None:
    for raw in (b"not json", b"{}", b'{"status": "OK"}', b"[]"):
        with pytest.raises(WebhookVerificationError) as caught:
            parse_webhook_body(raw)
        assert caught.value.reason == "bad_body"
