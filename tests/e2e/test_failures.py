"""Failure paths end to end: upstream errors, cancels, lost/duplicate/forged webhooks, ambiguous
submits. Every test checks what reached the emulator ("fal"), not only the job's status."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.config import AmbiguousSubmitPolicy
from tests.support.clips import Clip
from tests.support.metrics import sample
from tests.support.waiting import eventually

REJECTED = "foley_fal_webhooks_rejected_total"


def thinksound(gw, clip: Clip, **extra: object) -> dict:  # type: ignore[no-untyped-def]
    return {"model": "thinksound", "input": {"video_url": gw.video_url(clip), **extra}}


async def test_upstream_422_fails_the_job_with_the_upstream_detail(gateway, clips) -> None:
    async with gateway(public=True) as gw:
        # A model-side 422 after fal accepted the request (no preflight can foresee it).
        gw.emu.control(failure_rates={"content_policy_violation": 1.0})
        job = await gw.create(
            {"model": "kling-video-to-audio", "input": {"video_url": gw.video_url(clips["bounce"])}}
        )
        done = await gw.wait(job["id"])
        assert done["status"] == "failed"
        error = done["error"]
        assert error["code"] == "upstream_validation"
        assert error["upstream"]["status_code"] == 422
        assert "content_policy_violation" in json.dumps(error["upstream"]["detail"])
        assert done["result"] is None
        assert len(gw.emu.submits()) == 1


async def test_runner_error_fails_the_job(gateway, clips) -> None:
    async with gateway(public=False) as gw:
        gw.emu.control(failure_rates={"runner_disconnected": 1.0})
        job = await gw.create(thinksound(gw, clips["bounce"]))
        done = await gw.wait(job["id"])
        assert done["status"] == "failed"
        assert done["error"]["code"] == "upstream_runner_error"
        assert done["error"]["upstream"]["error_type"] == "runner_disconnected"
        assert done["error"]["upstream"]["status_code"] == 503
        assert len(gw.emu.submits()) == 1  # failed at fal: not resubmitted by us


async def test_start_timeout(gateway, clips) -> None:
    async with gateway(public=False, upstream_start_timeout=timedelta(seconds=2)) as gw:
        gw.emu.control(queue_wait=4)
        job = await gw.create(thinksound(gw, clips["bounce"]))
        done = await gw.wait(job["id"], timeout=20)
        assert done["status"] == "failed"
        assert done["error"]["code"] == "upstream_start_timeout"
        assert done["error"]["upstream"]["status_code"] == 504
        assert len(gw.emu.submits()) == 1


async def test_cancel_while_queued_at_fal(gateway, clips) -> None:
    async with gateway(public=False) as gw:
        gw.emu.control(concurrency=1, run_time=4)
        first = await gw.create(thinksound(gw, clips["bounce"]))
        # The first holds fal's one slot before the second is sent: the second waits in fal's
        # queue (its status is live, so a job that gets the slot is 'processing' at once).
        await gw.wait(first["id"], until=lambda j: j["status"] == "processing")
        second = await gw.create(thinksound(gw, clips["bounce"]))
        await gw.wait(second["id"], until=lambda j: j["status"] == "starting")
        r = await gw.client.post(f"/v1/jobs/{second['id']}/cancel", headers=gw.headers)
        assert r.status_code == 200
        done = await gw.wait(second["id"])
        assert done["status"] == "canceled"
        cancels = [r for r in gw.emu.requests(method="PUT") if r["path"].endswith("/cancel")]
        assert len(cancels) == 1
        assert (await gw.wait(first["id"], timeout=30))["status"] == "succeeded"


async def test_cancel_while_running(gateway, clips) -> None:
    async with gateway(public=True, webhook_grace=timedelta(seconds=0.3)) as gw:
        gw.emu.control(run_time=6)
        job = await gw.create(thinksound(gw, clips["bounce"]))
        await gw.wait(job["id"], until=lambda j: j["status"] == "processing", timeout=20)
        r = await gw.client.post(f"/v1/jobs/{job['id']}/cancel", headers=gw.headers)
        assert r.status_code == 200 and r.json()["status"] == "processing"
        done = await gw.wait(job["id"], timeout=20)
        assert done["status"] == "canceled"
        assert done["error"]["upstream"]["status_code"] == 499


async def test_lost_webhook_is_completed_by_polling(gateway, clips) -> None:
    async with gateway(public=True, webhook_grace=timedelta(seconds=1)) as gw:
        gw.emu.control(webhook_drop_rate=1.0)
        job = await gw.create(thinksound(gw, clips["bounce"]))
        done = await gw.wait(job["id"], timeout=30)
        assert done["status"] == "succeeded"
        rows = await gw.sql("SELECT count(*) FROM fal_webhook_events")
        assert rows[0][0] == 0  # nothing arrived: polling did it


async def test_duplicate_webhooks_are_harmless(gateway, clips) -> None:
    async with gateway(public=True) as gw:
        gw.emu.control(webhook_duplicate_rate=1.0)
        job = await gw.create(thinksound(gw, clips["bounce"]))
        done = await gw.wait(job["id"])
        assert done["status"] == "succeeded"

        async def duplicate_recorded() -> bool:
            rows = await gw.sql("SELECT deliveries FROM fal_webhook_events")
            return bool(rows) and rows[0][0] >= 2

        # Recorded, the duplicate has done all it can: a delivery of an event already attached
        # to its job stops there (app.webhooks.service), nothing is left for a worker.
        await eventually(duplicate_recorded, what="the duplicate delivery recorded")
        rows = await gw.sql("SELECT deliveries FROM fal_webhook_events")
        assert rows == [(2,)] or rows[0][0] >= 2
        files = await gw.sql("SELECT kind FROM files WHERE job_id = :j", j=uuid.UUID(job["id"]))
        assert sorted(f[0] for f in files) == ["output_audio", "output_video"]
        assert (await gw.get(job["id"]))["status"] == "succeeded"


async def test_bad_signature_from_fal_is_rejected_and_polling_completes(gateway, clips) -> None:
    async with gateway(public=True, webhook_grace=timedelta(seconds=1)) as gw:
        before = await sample(gw.client, REJECTED, reason="bad_signature")
        gw.emu.control(webhook_bad_signature_rate=1.0)
        job = await gw.create(thinksound(gw, clips["bounce"]))
        done = await gw.wait(job["id"], timeout=30)
        assert done["status"] == "succeeded"
        assert (await gw.sql("SELECT count(*) FROM fal_webhook_events"))[0][0] == 0
        assert await sample(gw.client, REJECTED, reason="bad_signature") > before
        attempts = gw.emu.webhooks()
        assert attempts and all(a["status_code"] == 401 for a in attempts)


def _sign(emu, request_id: str, body: bytes, timestamp: int) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """An independent signer holding the emulator's private key (what a replayer could capture is
    only the headers; a forger has neither)."""
    pem = (emu.data_dir / "webhook_ed25519.pem").read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, Ed25519PrivateKey)
    user = "emulator-user"
    message = f"{request_id}\n{user}\n{timestamp}\n{hashlib.sha256(body).hexdigest()}"
    return {
        "X-Fal-Webhook-Request-Id": request_id,
        "X-Fal-Webhook-User-Id": user,
        "X-Fal-Webhook-Timestamp": str(timestamp),
        "X-Fal-Webhook-Signature": key.sign(message.encode()).hex(),
        "Content-Type": "application/json",
    }


@pytest.mark.parametrize("case", ["forged", "replayed", "tampered", "unsigned"])
async def test_forged_replayed_tampered_webhooks_get_401(gateway, case: str) -> None:
    async with gateway(public=True) as gw:
        rid = str(uuid.uuid4())
        body = json.dumps({"request_id": rid, "status": "OK", "payload": {"video": None}}).encode()
        now = int(time.time())
        if case == "forged":
            headers = _sign(gw.emu, rid, body, now)
            headers["X-Fal-Webhook-Signature"] = Ed25519PrivateKey.generate().sign(b"x").hex()
        elif case == "replayed":
            headers = _sign(gw.emu, rid, body, now - 3600)
        elif case == "tampered":
            headers = _sign(gw.emu, rid, body, now)
            body = body.replace(b'"OK"', b'"ERROR"')
        else:
            headers = {"Content-Type": "application/json"}
        r = await gw.client.post("/v1/webhooks/fal", content=body, headers=headers)
        assert r.status_code == 401, r.text
        assert r.json()["code"] == "webhook_signature_invalid"
        assert (await gw.sql("SELECT count(*) FROM fal_webhook_events"))[0][0] == 0
        # A correctly signed one for an unknown request is accepted and recorded as unmatched.
        good = _sign(gw.emu, rid, body, now)
        r = await gw.client.post("/v1/webhooks/fal", content=body, headers=good)
        assert r.status_code == 200
        assert await gw.sql("SELECT state FROM fal_webhook_events") == [("unmatched",)]


async def test_ambiguous_submit_is_attributed_by_its_webhook(gateway, clips) -> None:
    async with gateway(public=True, ambiguous_submit_grace=timedelta(seconds=30)) as gw:
        # fal creates the request but the answer never arrives.
        gw.emu.control(ambiguous_submit_rate=1.0, ambiguous_submit_hold_s=0.5)
        job = await gw.create(thinksound(gw, clips["bounce"]))
        done = await gw.wait(job["id"], timeout=30)
        assert done["status"] == "succeeded", done
        assert done["upstream"]["request_id"] is not None
        assert len(gw.emu.submits()) == 1  # never sent twice
        # Attached, it has fal's URLs by fal's rule: fal's own inference time is known and billed
        # (not the estimate).
        rid = done["upstream"]["request_id"]
        billed = [u for u in gw.emu.usage_records() if u["request_id"] == rid]
        assert done["metrics"]["inference_s"] is not None
        assert done["usage"]["status"] == "settled" and done["usage"]["units"] is not None
        assert len(billed) == 1
        assert float(done["usage"]["units"]) == pytest.approx(billed[0]["unit_quantity"])


@pytest.mark.parametrize("policy", [AmbiguousSubmitPolicy.fail, AmbiguousSubmitPolicy.retry])
async def test_ambiguous_submit_fal_cannot_say_follows_the_policy(
    gateway, clips, policy: AmbiguousSubmitPolicy
) -> None:
    # fal cannot say: its platform API refuses the (non-admin) key, and no webhook will come.
    async with gateway(
        public=False,
        ambiguous_submit_grace=timedelta(seconds=1),
        ambiguous_submit_policy=policy,
        fal_admin_key=None,
    ) as gw:
        gw.emu.control(ambiguous_submit_rate=1.0, ambiguous_submit_hold_s=0.2)
        job = await gw.create(thinksound(gw, clips["bounce"]))
        if policy is AmbiguousSubmitPolicy.fail:
            done = await gw.wait(job["id"], timeout=30)
            assert done["status"] == "failed"
            assert done["error"]["code"] == "upstream_submit_ambiguous"
            assert len(gw.emu.submits()) == 1
        else:
            await gw.wait(job["id"], until=lambda j: len(gw.emu.submits()) >= 2, timeout=30)
            gw.emu.control(ambiguous_submit_rate=0.0)
            done = await gw.wait(job["id"], timeout=30)
            # Retried once; with every answer lost the second is ambiguous too, and it fails.
            assert done["status"] == "failed"
            assert len(gw.emu.submits()) == 2


async def test_ingress_errors_are_retried_without_duplicates(gateway, clips) -> None:
    async with gateway(public=True) as gw:
        gw.emu.control(ingress_error_rates={503: 0.5}, seed=3)
        job = await gw.create(thinksound(gw, clips["bounce"]))
        done = await gw.wait(job["id"], timeout=60)
        assert done["status"] == "succeeded"
        created = [r for r in gw.emu.submits() if r.get("request_id")]
        assert len(created) == 1


async def test_an_ambiguous_submit_fal_received_is_found_without_a_webhook(gateway, clips) -> None:
    # No public URL (no webhook will come) and every submit answer lost: fal's platform API
    # says the request arrived; the job is that request's, runs to the end and is billed fal's
    # own numbers. Never a second request.
    async with gateway(
        public=False,
        ambiguous_lookup_delay=timedelta(seconds=1),
        ambiguous_submit_grace=timedelta(seconds=60),
        ambiguous_submit_policy=AmbiguousSubmitPolicy.fail,
    ) as gw:
        gw.emu.control(ambiguous_submit_rate=1.0, ambiguous_submit_hold_s=0.2)
        job = await gw.create(thinksound(gw, clips["bounce"]))
        done = await gw.wait(job["id"], timeout=40)
        assert done["status"] == "succeeded", done
        assert len(gw.emu.submits()) == 1
        rid = done["upstream"]["request_id"]
        (billed,) = [u for u in gw.emu.usage_records() if u["request_id"] == rid]
        assert float(done["usage"]["units"]) == pytest.approx(billed["unit_quantity"])
        r = await gw.client.get(f"/v1/jobs/{job['id']}/events", headers=gw.headers)
        attached = [e for e in r.json()["data"] if e["type"] == "job.attached"]
        assert attached and attached[0]["data"] == {"request_id": rid, "found_by": "platform"}


async def test_a_submit_fal_never_received_is_sent_once(gateway, clips) -> None:
    # A worker wrote 'sending' and died before the request left: the job is ambiguous, fal's
    # platform API lists nothing for it, so it never arrived and is sent — once.
    from app.jobs import lifecycle, store

    async with gateway(
        public=False,
        workers=0,
        ambiguous_lookup_delay=timedelta(seconds=1),
        ambiguous_submit_grace=timedelta(seconds=60),
    ) as gw:
        job = await gw.create(thinksound(gw, clips["bounce"]))
        async with gw.make_worker(owner="dies") as dying:
            (claimed,) = (
                await store.claim_dispatches(
                    dying.driver,
                    "dies",
                    gw.settings.lease_duration,
                    1,
                    10,
                    None,
                    gw.settings.worker_stale_after,
                )
            ).jobs
            assert (
                await dying.store.mark_sending(claimed, "dies", lifecycle.SubmitStarting()) is None
            )
            await store.give_back(dying.driver, "dies", [claimed.id])  # gone before the request
        worker = gw.make_worker(owner="next")
        running = asyncio.create_task(worker.run(shutdown_grace_s=5))
        try:
            done = await gw.wait(job["id"], timeout=40)
        finally:
            worker.stop()
            await running
        assert done["status"] == "succeeded", done
        assert len(gw.emu.submits()) == 1
        r = await gw.client.get(f"/v1/jobs/{job['id']}/events", headers=gw.headers)
        types = [e["type"] for e in r.json()["data"]]
        assert types[:5] == [
            "job.created",
            "job.submitting",
            "job.submit_ambiguous",
            "job.submit_retrying",
            "job.submitting",
        ]
