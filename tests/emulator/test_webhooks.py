"""Webhooks: documented bodies, Ed25519 signatures checked by an independent verifier, retries,
redirects, fault knobs, and a key that survives a restart."""

from __future__ import annotations

import base64
import hashlib
import itertools
import time
from functools import partial
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tests.support.emulator import EmulatorProcess
from tests.support.fal_queue import submit, wait_status
from tests.support.waiting import eventually_sync
from tests.support.webhook_sink import ReceivedWebhook, WebhookSink

THINKSOUND = "fal-ai/thinksound"
VIDEO = {"video_url": "https://example.invalid/clip.mp4"}


# --- an independent verifier of fal's documented scheme (not the emulator's code) --------------
def fetch_jwks(base_url: str) -> list[Ed25519PublicKey]:
    document = httpx.get(f"{base_url}/.well-known/jwks.json").json()
    keys = []
    for jwk in document["keys"]:
        assert (jwk["kty"], jwk["crv"]) == ("OKP", "Ed25519")
        x = jwk["x"] + "=" * (-len(jwk["x"]) % 4)
        keys.append(Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x)))
    return keys


def verify(hook: ReceivedWebhook, keys: list[Ed25519PublicKey], *, max_age: float = 300) -> bool:
    request_id = hook.header("x-fal-webhook-request-id")
    user_id = hook.header("x-fal-webhook-user-id")
    timestamp = hook.header("x-fal-webhook-timestamp")
    signature = hook.header("x-fal-webhook-signature")
    if not (request_id and user_id and timestamp and signature):
        return False
    if abs(time.time() - int(timestamp)) > max_age:
        return False
    message = "\n".join(
        [request_id, user_id, timestamp, hashlib.sha256(hook.body).hexdigest()]
    ).encode()
    for key in keys:
        try:
            key.verify(bytes.fromhex(signature), message)
        except InvalidSignature:
            continue
        return True
    return False


def final_outcomes(emu: EmulatorProcess, request_id: str) -> list[str]:
    """The outcomes of a request's delivery attempts once the last is final (delivered, failed,
    refused or dropped: no retry follows it); empty while one may."""
    outcomes = [a["outcome"] for a in emu.webhooks(request_id)]
    return outcomes if outcomes and outcomes[-1] != "retrying" else []


def _submit(emu: EmulatorProcess, client: httpx.Client, sink: WebhookSink, **kw: Any) -> str:
    handle = submit(client, emu.base_url, THINKSOUND, kw.pop("payload", VIDEO), webhook=sink.url)
    return str(handle["request_id"])


# --- bodies and signatures -------------------------------------------------------------------
def test_ok_webhook_is_signed_and_carries_the_output(
    fast_emu: EmulatorProcess, fast_client: httpx.Client, sink: WebhookSink
) -> None:
    request_id = _submit(fast_emu, fast_client, sink)
    hook = sink.wait_for(1)[0]
    body = hook.json()
    assert body["request_id"] == body["gateway_request_id"] == request_id
    assert body["status"] == "OK"
    assert (
        body["payload"]
        == fast_client.get(f"{fast_emu.base_url}/fal-ai/thinksound/requests/{request_id}").json()
    )
    assert hook.header("content-type") == "application/json"
    assert hook.header("x-fal-webhook-request-id") == request_id
    assert verify(hook, fetch_jwks(fast_emu.base_url))
    tampered = ReceivedWebhook(hook.path, hook.headers, hook.body + b" ", 0, 200)
    assert not verify(tampered, fetch_jwks(fast_emu.base_url))


def test_error_webhook_carries_the_error_body(
    fast_emu: EmulatorProcess, fast_client: httpx.Client, sink: WebhookSink
) -> None:
    fast_emu.control(validate_at_submit=False)
    request_id = _submit(fast_emu, fast_client, sink, payload={"cfg_scale": 99})
    body = sink.wait_for(1)[0].json()
    assert body["status"] == "ERROR"
    assert body["error"] == "Invalid status code: 422"
    assert body["request_id"] == request_id
    assert {item["type"] for item in body["payload"]["detail"]} == {"missing", "less_than_equal"}


def test_infrastructure_failure_webhook(
    fast_emu: EmulatorProcess, fast_client: httpx.Client, sink: WebhookSink
) -> None:
    fast_emu.control(failure_rates={"runner_server_error": 1.0})
    _submit(fast_emu, fast_client, sink)
    body = sink.wait_for(1)[0].json()
    assert (body["status"], body["error"]) == ("ERROR", "Invalid status code: 500")
    assert body["payload"]["error_type"] == "runner_server_error"


def test_payload_error_webhook(
    fast_emu: EmulatorProcess, fast_client: httpx.Client, sink: WebhookSink
) -> None:
    fast_emu.control(webhook_payload_error_rate=1.0)
    request_id = _submit(fast_emu, fast_client, sink)
    hook = sink.wait_for(1)[0]
    body = hook.json()
    assert body["payload"] is None and body["payload_error"]
    assert body["request_id"] == request_id
    assert verify(hook, fetch_jwks(fast_emu.base_url))
    # The result stays available through the queue.
    result_url = f"{fast_emu.base_url}/fal-ai/thinksound/requests/{request_id}"
    assert fast_client.get(result_url).is_success


def test_webhook_on_cancel_of_a_queued_request(
    fast_emu: EmulatorProcess, fast_client: httpx.Client, sink: WebhookSink
) -> None:
    fast_emu.control(concurrency=1, run_time=1.0)
    submit(fast_client, fast_emu.base_url, THINKSOUND, VIDEO)
    handle = submit(fast_client, fast_emu.base_url, THINKSOUND, VIDEO, webhook=sink.url)
    fast_client.put(handle["cancel_url"])
    body = sink.wait_for(1)[0].json()
    assert (body["status"], body["error"]) == ("ERROR", "Invalid status code: 499")


# --- delivery --------------------------------------------------------------------------------
def test_non_2xx_is_retried_on_the_backoff_schedule(
    fast_emu: EmulatorProcess, fast_client: httpx.Client, sink: WebhookSink
) -> None:
    fast_emu.control(webhook_retry_schedule=[0.2, 0.4, 0.8])
    sink.responses = [500, 503]
    request_id = _submit(fast_emu, fast_client, sink)
    hooks = sink.wait_for(3)
    gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(hooks)]
    assert 0.15 <= gaps[0] < 0.2 + 0.5  # the schedule, with room for a loaded machine
    assert 0.35 <= gaps[1] < 0.4 + 0.5
    assert len({hook.body for hook in hooks}) == 1  # the same body every time
    attempts = fast_emu.webhooks(request_id)
    assert [(a["attempt"], a["status_code"], a["outcome"]) for a in attempts] == [
        (1, 500, "retrying"),
        (2, 503, "retrying"),
        (3, 200, "delivered"),
    ]


def test_retries_stop_when_the_schedule_is_exhausted(
    fast_emu: EmulatorProcess, fast_client: httpx.Client, sink: WebhookSink
) -> None:
    fast_emu.control(webhook_retry_schedule=[0.05])
    sink.responses = [500, 500, 500]
    request_id = _submit(fast_emu, fast_client, sink)
    # "failed" is recorded once the schedule is spent: no attempt follows it.
    outcomes = eventually_sync(
        lambda: final_outcomes(fast_emu, request_id), what="the delivery to end"
    )
    assert outcomes == ["retrying", "failed"]
    assert len(sink.snapshot()) == 2


def test_redirect_is_a_permanent_failure(
    fast_emu: EmulatorProcess, fast_client: httpx.Client, sink: WebhookSink
) -> None:
    fast_emu.control(webhook_retry_schedule=[0.05, 0.05])
    sink.responses = [302]
    request_id = _submit(fast_emu, fast_client, sink)
    eventually_sync(lambda: final_outcomes(fast_emu, request_id), what="the delivery to end")
    attempts = fast_emu.webhooks(request_id)
    assert [(a["status_code"], a["outcome"]) for a in attempts] == [(302, "permanent_failure")]
    assert len(sink.snapshot()) == 1


def test_unreachable_target_is_retried_and_recorded(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    fast_emu.control(webhook_retry_schedule=[0.05])
    handle = submit(
        fast_client, fast_emu.base_url, THINKSOUND, VIDEO, webhook="http://127.0.0.1:9/hook"
    )
    request_id = handle["request_id"]
    eventually_sync(
        lambda: final_outcomes(fast_emu, request_id), timeout=5, what="the delivery to end"
    )
    attempts = fast_emu.webhooks(request_id)
    assert [a["outcome"] for a in attempts] == ["retrying", "failed"]
    assert attempts[0]["error"] and attempts[0]["status_code"] is None


# --- fault knobs -----------------------------------------------------------------------------
def test_drop_knob_never_delivers(
    fast_emu: EmulatorProcess, fast_client: httpx.Client, sink: WebhookSink
) -> None:
    fast_emu.control(webhook_drop_rate=1.0)
    request_id = _submit(fast_emu, fast_client, sink)
    wait_status(fast_client, f"{fast_emu.base_url}/fal-ai/thinksound/requests/{request_id}/status")
    # "dropped" is recorded instead of a delivery: none follows it.
    outcomes = eventually_sync(
        lambda: final_outcomes(fast_emu, request_id), what="the webhook's fate"
    )
    assert outcomes == ["dropped"]
    assert sink.snapshot() == []


def test_delay_knob_delays_delivery(
    fast_emu: EmulatorProcess, fast_client: httpx.Client, sink: WebhookSink
) -> None:
    fast_emu.control(webhook_delay=0.6)
    started = time.monotonic()
    _submit(fast_emu, fast_client, sink)
    hook = sink.wait_for(1)[0]
    assert hook.received_at - started >= 0.55


def test_duplicate_knob_delivers_twice(
    fast_emu: EmulatorProcess, fast_client: httpx.Client, sink: WebhookSink
) -> None:
    fast_emu.control(webhook_duplicate_rate=1.0)
    request_id = _submit(fast_emu, fast_client, sink)
    first, second = sink.wait_for(2)
    assert first.body == second.body
    assert first.header("x-fal-webhook-request-id") == second.header("x-fal-webhook-request-id")
    keys = fetch_jwks(fast_emu.base_url)
    assert verify(first, keys) and verify(second, keys)
    assert [a["duplicate"] for a in fast_emu.webhooks(request_id)] == [False, True]


def test_reorder_knob_delivers_a_later_completion_first(
    fast_emu: EmulatorProcess, fast_client: httpx.Client, sink: WebhookSink
) -> None:
    fast_emu.control(webhook_reorder_rate=1.0, webhook_reorder_hold_s=5)
    first = _submit(fast_emu, fast_client, sink)
    wait_status(fast_client, f"{fast_emu.base_url}/fal-ai/thinksound/requests/{first}/status")
    second = _submit(fast_emu, fast_client, sink)
    hooks = sink.wait_for(2)
    assert [hook.json()["request_id"] for hook in hooks] == [second, first]


def test_held_webhook_is_released_after_the_hold(
    fast_emu: EmulatorProcess, fast_client: httpx.Client, sink: WebhookSink
) -> None:
    fast_emu.control(webhook_reorder_rate=1.0, webhook_reorder_hold_s=0.4)
    started = time.monotonic()
    _submit(fast_emu, fast_client, sink)
    assert sink.wait_for(1)[0].received_at - started >= 0.35


def test_bad_signature_knob_fails_verification(
    fast_emu: EmulatorProcess, fast_client: httpx.Client, sink: WebhookSink
) -> None:
    fast_emu.control(webhook_bad_signature_rate=1.0)
    _submit(fast_emu, fast_client, sink)
    hook = sink.wait_for(1)[0]
    assert len(hook.header("x-fal-webhook-signature") or "") == 128
    assert not verify(hook, fetch_jwks(fast_emu.base_url))


def test_webhook_faults_are_reproducible_with_the_seed(
    fast_emu: EmulatorProcess, fast_client: httpx.Client, sink: WebhookSink
) -> None:
    def outcomes() -> list[str]:
        fast_emu.reset(seed=1234)
        fast_emu.control(webhook_drop_rate=0.5)
        ids = [_submit(fast_emu, fast_client, sink) for _ in range(8)]
        firsts = [eventually_sync(partial(fast_emu.webhooks, r), what="an attempt")[0] for r in ids]
        return [attempt["outcome"] for attempt in firsts]

    first = outcomes()
    assert set(first) == {"dropped", "delivered"}
    assert outcomes() == first
