"""Outbound webhooks end to end: a real API, a worker, the emulator, and receivers that verify
every delivery with the standardwebhooks package, as tenants' receivers do."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from datetime import timedelta
from typing import Any

from standardwebhooks import Webhook

from tests.support.clips import Clip
from tests.support.waiting import eventually
from tests.support.webhook_sink import ReceivedWebhook, WebhookSink

KLING = "kling-video-to-audio"


def verified(hook: ReceivedWebhook, secret: str) -> dict[str, Any]:
    """The payload, once its signature checks out (raises otherwise)."""
    return Webhook(secret).verify(hook.body, hook.headers)  # type: ignore[no-any-return]


async def add_endpoint(gw, url: str, **fields: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    r = await gw.client.post(
        "/v1/webhook-endpoints", json={"url": url, **fields}, headers=gw.headers
    )
    assert r.status_code == 201, r.text
    return r.json()


# A job.logs event appended as the store would (each its own transaction here).
APPEND_LOGS = (
    "INSERT INTO job_events (job_id, tenant_id, seq, type, data, job_created_at) "
    "SELECT id, tenant_id, $2, 'job.logs', '{}'::jsonb, created_at FROM jobs WHERE id = $1"
)


async def ended_job_and_logs_endpoint(  # type: ignore[no-untyped-def]
    gw, clips: dict[str, Clip], sink: WebhookSink
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A job run to its end, then an endpoint for job.logs (so only what follows is sent)."""
    job = await gw.create({"model": KLING, "input": {"video_url": gw.video_url(clips["bounce"])}})
    await gw.wait(job["id"])
    return job, await add_endpoint(gw, sink.url, events=["job.logs"])


def of_type(hooks: list[ReceivedWebhook], kind: str) -> list[ReceivedWebhook]:
    return [h for h in hooks if h.json()["type"] == kind]


async def test_a_job_s_events_reach_an_endpoint_signed_with_the_job_as_get_shows_it(
    gateway, clips: dict[str, Clip]
) -> None:
    with WebhookSink() as sink:
        async with gateway() as gw:
            endpoint = await add_endpoint(gw, sink.url)
            assert endpoint["secret"].startswith("whsec_")
            job = await gw.create(
                {"model": KLING, "input": {"video_url": gw.video_url(clips["bounce"])}}
            )
            done = await gw.wait(job["id"])
            assert done["status"] == "succeeded"
            hooks = await eventually(
                lambda: of_type(sink.snapshot(), "job.succeeded"), what="job.succeeded delivered"
            )
            payload = verified(hooks[0], endpoint["secret"])
            assert payload["data"] == await gw.get(job["id"])

            async def recorded() -> list[dict[str, Any]]:
                r = await gw.client.get(
                    f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=gw.headers
                )
                listed = r.json()["data"]
                return listed if all(d["status"] == "succeeded" for d in listed) else []

            # Every delivery made (a job.logs may wait its turn) has been received by now.
            listed = await eventually(recorded, what="every delivery recorded")
            kinds = [verified(h, endpoint["secret"])["type"] for h in sink.snapshot()]
            assert {"job.started", "job.processing", "job.succeeded"} <= set(kinds)
            assert "job.created" not in kinds and "job.submitting" not in kinds
            ids = [h.header("webhook-id") for h in sink.snapshot()]
            assert len(ids) == len(set(ids))  # one message per event
            assert sorted(d["event"] for d in listed) == sorted(kinds)
            attempt = listed[0]["attempts"][0]
            assert attempt["status_code"] == 200 and attempt["error"] is None
            assert attempt["duration_ms"] >= 0


async def test_a_failing_receiver_is_retried_with_the_same_webhook_id(
    gateway, clips: dict[str, Clip]
) -> None:
    schedule = "0s,200ms,200ms,200ms"
    with WebhookSink(responses=[500, 503]) as sink:
        async with gateway(tenant_webhook_retry_schedule=schedule) as gw:
            endpoint = await add_endpoint(gw, sink.url, events=["job.succeeded"])
            job = await gw.create(
                {"model": KLING, "input": {"video_url": gw.video_url(clips["bounce"])}}
            )
            await gw.wait(job["id"])
            hooks = await sink.wait_for_async(3, timeout=30)
            assert [h.answered for h in hooks] == [500, 503, 200]
            assert len({h.header("webhook-id") for h in hooks}) == 1
            assert len({h.body for h in hooks}) == 1
            for h in hooks:
                assert verified(h, endpoint["secret"])["type"] == "job.succeeded"

            async def recorded() -> dict[str, Any] | None:
                # The sender writes attempts' outcomes in batches, after the receiver answered.
                r = await gw.client.get(
                    f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=gw.headers
                )
                (delivery,) = r.json()["data"]
                return delivery if delivery["status"] != "pending" else None

            delivery = await eventually(recorded, what="the delivery's outcome written")
            assert [a["status_code"] for a in delivery["attempts"]] == [500, 503, 200]
            assert delivery["status"] == "succeeded"
            assert delivery["webhook_id"] == hooks[0].header("webhook-id")


async def test_410_disables_the_endpoint(gateway) -> None:
    with WebhookSink(responses=[410]) as sink:
        async with gateway() as gw:
            endpoint = await add_endpoint(gw, sink.url)
            r = await gw.client.post(
                f"/v1/webhook-endpoints/{endpoint['id']}/test", headers=gw.headers
            )
            assert r.status_code == 202, r.text
            await sink.wait_for_async(1)

            async def disabled() -> dict[str, Any] | None:
                r = await gw.client.get(
                    f"/v1/webhook-endpoints/{endpoint['id']}", headers=gw.headers
                )
                return r.json() if not r.json()["enabled"] else None

            shown = await eventually(disabled, what="the endpoint disabled")
            assert "410" in shown["disabled_reason"]
            audit = await gw.sql(
                "SELECT action FROM audit_events WHERE target_id = :id", id=endpoint["id"]
            )
            assert [a.action for a in audit] == ["webhook_endpoint.disabled"]
            # Disabled, it is sent nothing (a ping waits until it is enabled again).
            await gw.client.post(f"/v1/webhook-endpoints/{endpoint['id']}/test", headers=gw.headers)
            r = await gw.client.patch(
                f"/v1/webhook-endpoints/{endpoint['id']}",
                json={"enabled": True},
                headers=gw.headers,
            )
            assert r.json()["enabled"] is True and r.json()["disabled_reason"] is None
            hooks = await sink.wait_for_async(2)
            assert hooks[1].answered == 200 and hooks[1].json()["type"] == "ping"


async def test_during_a_rotation_grace_both_secrets_verify(gateway) -> None:
    with WebhookSink() as sink:
        async with gateway() as gw:
            endpoint = await add_endpoint(gw, sink.url)
            old = endpoint["secret"]
            r = await gw.client.post(
                f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret",
                json={"grace_seconds": 3600},
                headers=gw.headers,
            )
            assert r.status_code == 200, r.text
            new = r.json()["secret"]
            assert new != old and new.startswith("whsec_")
            await gw.client.post(f"/v1/webhook-endpoints/{endpoint['id']}/test", headers=gw.headers)
            (hook,) = await sink.wait_for_async(1)
            assert len(hook.header("webhook-signature").split(" ")) == 2
            assert verified(hook, new)["type"] == "ping"
            assert verified(hook, old)["type"] == "ping"

            # Without a grace the old secret stops at once.
            r = await gw.client.post(
                f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret",
                json={"grace_seconds": 0},
                headers=gw.headers,
            )
            newest = r.json()["secret"]
            await gw.client.post(f"/v1/webhook-endpoints/{endpoint['id']}/test", headers=gw.headers)
            hook = (await sink.wait_for_async(2))[1]
            assert len(hook.header("webhook-signature").split(" ")) == 1
            assert verified(hook, newest)["type"] == "ping"


async def test_a_job_s_own_webhook_gets_the_events_its_filter_names(
    gateway, clips: dict[str, Clip]
) -> None:
    with WebhookSink() as sink, WebhookSink() as completed_only:
        async with gateway() as gw:
            url = gw.video_url(clips["bounce"])
            job = await gw.create(
                {
                    "model": KLING,
                    "input": {"video_url": url},
                    "webhook": sink.url,
                    "webhook_events_filter": ["start", "completed"],
                }
            )
            other = await gw.create(
                {"model": KLING, "input": {"video_url": url}, "webhook": completed_only.url}
            )
            await gw.wait(job["id"])
            await gw.wait(other["id"])
            r = await gw.client.get("/v1/webhooks/default/secret", headers=gw.headers)
            secret = r.json()["key"]
            assert secret.startswith("whsec_")
            got = await eventually(
                lambda: of_type(sink.snapshot(), "job.succeeded"), what="the job's completion"
            )
            kinds = {verified(h, secret)["type"] for h in sink.snapshot()}
            assert kinds == {"job.started", "job.processing", "job.succeeded"}
            assert verified(got[0], secret)["data"] == await gw.get(job["id"])
            (done,) = await completed_only.wait_for_async(1)
            assert verified(done, secret)["data"]["id"] == other["id"]
            # No endpoint was involved: the tenant's endpoint list is empty.
            r = await gw.client.get("/v1/webhook-endpoints", headers=gw.headers)
            assert r.json()["data"] == []


async def test_a_job_webhook_filter_without_a_webhook_is_refused(gateway) -> None:
    async with gateway() as gw:
        r = await gw.client.post(
            "/v1/jobs",
            json={
                "model": KLING,
                "input": {"video_url": "https://example.com/a.mp4"},
                "webhook_events_filter": ["completed"],
            },
            headers=gw.headers,
        )
        assert r.status_code == 422
        r = await gw.client.post(
            "/v1/jobs",
            json={
                "model": KLING,
                "input": {"video_url": "https://example.com/a.mp4"},
                "webhook": "http://169.254.169.254/latest",
            },
            headers=gw.headers,
        )
        assert r.status_code == 422 and r.json()["param"] == "webhook"


async def test_endpoint_urls_pass_the_outbound_guard(gateway) -> None:
    async with gateway(outbound_allow_loopback=False) as gw:
        for url, code in [
            ("http://127.0.0.1:9/hook", "url_destination_not_allowed"),
            ("http://10.1.2.3/hook", "url_destination_not_allowed"),
            ("http://169.254.169.254/latest/meta-data", "url_destination_not_allowed"),
            ("ftp://example.com/hook", "url_scheme_not_allowed"),
        ]:
            r = await gw.client.post("/v1/webhook-endpoints", json={"url": url}, headers=gw.headers)
            assert r.status_code == 422, (url, r.text)
            problem = r.json()
            assert problem["param"] == "url", problem
            assert [e["code"] for e in problem["errors"]] == [code], problem
        r = await gw.client.get("/v1/webhook-endpoints", headers=gw.headers)
        assert r.json()["data"] == []


async def test_another_tenant_s_endpoints_and_deliveries_are_404(gateway) -> None:
    with WebhookSink() as sink:
        async with gateway() as gw:
            endpoint = await add_endpoint(gw, sink.url)
            await gw.client.post(f"/v1/webhook-endpoints/{endpoint['id']}/test", headers=gw.headers)
            await sink.wait_for_async(1)
            r = await gw.client.get(
                f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=gw.headers
            )
            delivery = r.json()["data"][0]["id"]
            _, key = await gw.new_tenant("other")
            other = {"Authorization": f"Bearer {key}"}
            base = f"/v1/webhook-endpoints/{endpoint['id']}"
            for method, path, body in [
                ("GET", base, None),
                ("PATCH", base, {"enabled": False}),
                ("DELETE", base, None),
                ("POST", f"{base}/rotate-secret", {"grace_seconds": 0}),
                ("POST", f"{base}/test", None),
                ("GET", f"{base}/deliveries", None),
                ("POST", f"{base}/deliveries/{delivery}/redeliver", None),
            ]:
                r = await gw.client.request(method, path, json=body, headers=other)
                assert r.status_code == 404, (method, path, r.text)
                assert r.json()["code"] == "webhook_endpoint_not_found"
            r = await gw.client.get("/v1/webhook-endpoints", headers=other)
            assert r.json()["data"] == []
            # The operator sees any tenant's.
            admin = {"Authorization": "Bearer e2e-admin-token"}
            r = await gw.client.get(f"/v1/admin/webhook-endpoints/{endpoint['id']}", headers=admin)
            assert r.status_code == 200 and r.json()["tenant_id"] == gw.tenant_id
            r = await gw.client.get(
                "/v1/admin/webhook-endpoints", params={"tenant_id": gw.tenant_id}, headers=admin
            )
            assert [e["id"] for e in r.json()["data"]] == [endpoint["id"]]
            r = await gw.client.get(
                f"/v1/admin/webhook-endpoints/{endpoint['id']}/deliveries", headers=admin
            )
            assert r.json()["data"][0]["id"] == delivery


async def test_redelivery_sends_the_same_message_again(gateway) -> None:
    with WebhookSink() as sink:
        async with gateway(tenant_webhook_retry_schedule="0s,100ms") as gw:
            endpoint = await add_endpoint(gw, sink.url)
            base = f"/v1/webhook-endpoints/{endpoint['id']}"
            await gw.client.post(f"{base}/test", headers=gw.headers)
            (first,) = await sink.wait_for_async(1)
            delivery = (await gw.client.get(f"{base}/deliveries", headers=gw.headers)).json()
            delivery_id = delivery["data"][0]["id"]

            async def finished() -> bool:
                r = await gw.client.get(f"{base}/deliveries", headers=gw.headers)
                return r.json()["data"][0]["status"] == "succeeded"

            await eventually(finished, what="the ping recorded")
            r = await gw.client.post(
                f"{base}/deliveries/{delivery_id}/redeliver", headers=gw.headers
            )
            assert r.status_code == 202, r.text
            second = (await sink.wait_for_async(2))[1]
            assert second.header("webhook-id") == first.header("webhook-id")
            assert second.body == first.body
            assert verified(second, endpoint["secret"])["type"] == "ping"


def _worker_env(gw, **settings: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    s = gw.settings
    return {
        **os.environ,
        "FOLEY_ENV": "test",
        "FOLEY_DATA_DIR": str(s.data_dir),
        "FOLEY_DATABASE_URL": s.database_url or "",
        "FOLEY_PUBLIC_URL": s.public_url or "",
        "FOLEY_FAL_QUEUE_URL": s.fal_queue_url,
        "FOLEY_FAL_REST_URL": s.fal_rest_url,
        "FOLEY_FAL_CDN_URL": s.fal_cdn_url,
        "FAL_KEY": s.fal_key.get_secret_value() if s.fal_key else "",
        "FOLEY_WORKER_POLL_INTERVAL": "0.2",
        **settings,
    }


async def test_a_worker_killed_mid_delivery_loses_nothing(gateway, tmp_path) -> None:
    lease = timedelta(seconds=2)
    # The first attempt reaches the receiver, which holds it unanswered: the worker is killed
    # while it waits. Another worker sends it again once the lease is over, same webhook-id.
    with WebhookSink(responses=[None]) as sink:
        async with gateway(
            workers=0, tenant_webhook_lease=lease, tenant_webhook_timeout=timedelta(seconds=1.5)
        ) as gw:
            endpoint = await add_endpoint(gw, sink.url)
            env = _worker_env(
                gw,
                FOLEY_TENANT_WEBHOOK_LEASE=str(lease.total_seconds()),
                FOLEY_TENANT_WEBHOOK_TIMEOUT="1.5",
            )
            log = tmp_path / "worker.log"
            worker = subprocess.Popen(
                [sys.executable, "-m", "app.entrypoints", "worker"],
                env=env,
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
            )
            try:
                r = await gw.client.post(
                    f"/v1/webhook-endpoints/{endpoint['id']}/test", headers=gw.headers
                )
                assert r.status_code == 202
                await sink.wait_for_async(1, timeout=30)
            finally:
                worker.send_signal(signal.SIGKILL)  # mid-delivery: the receiver has it
                worker.wait(10)
            rows = await gw.sql("SELECT status, attempts, lease_owner FROM webhook_deliveries")
            assert [(r.status, r.attempts) for r in rows] == [("pending", 0)], log.read_text()
            assert rows[0].lease_owner is not None
            survivor = gw.make_worker(owner="survivor")
            task = asyncio.create_task(survivor.run(shutdown_grace_s=5))
            try:
                first, again = await sink.wait_for_async(2, timeout=30)
            finally:
                survivor.stop()
                await task
            assert again.answered == 200
            assert again.header("webhook-id") == first.header("webhook-id")
            assert again.body == first.body
            assert verified(again, endpoint["secret"])["type"] == "ping"


async def test_an_event_is_delivered_only_if_its_transition_committed(
    gateway, clips: dict[str, Clip]
) -> None:
    with WebhookSink() as sink:
        async with gateway() as gw:
            job, endpoint = await ended_job_and_logs_endpoint(gw, clips, sink)
            async with gw.engine.connect() as sa_conn:
                driver = (await sa_conn.get_raw_connection()).driver_connection
                tx = driver.transaction()
                await tx.start()
                await driver.execute(APPEND_LOGS, uuid.UUID(job["id"]), 1000)
                await tx.rollback()
                await driver.execute(APPEND_LOGS, uuid.UUID(job["id"]), 1001)
            (hook,) = await sink.wait_for_async(1)
            assert hook.header("webhook-id") == f"msg_{uuid.UUID(job['id']).hex}_1001"
            assert verified(hook, endpoint["secret"])["data"] == await gw.get(job["id"])
            # Nothing else is owed: the rolled-back event left no trace.
            assert await gw.sql("SELECT * FROM notification_outbox") == []
            rows = await gw.sql("SELECT message_id FROM webhook_deliveries")
            assert [r.message_id for r in rows] == [hook.header("webhook-id")]


async def test_a_budget_threshold_crossed_is_delivered_with_the_budget(
    gateway, clips: dict[str, Clip]
) -> None:
    with WebhookSink() as sink:
        async with gateway() as gw:
            admin = {"Authorization": "Bearer e2e-admin-token"}
            r = await gw.client.patch(
                f"/v1/admin/tenants/{gw.tenant_id}",
                json={"budget_usd": "0.05", "budget_thresholds": [50, 100]},
                headers=admin,
            )
            assert r.status_code == 200, r.text
            endpoint = await add_endpoint(gw, sink.url, events=["budget.threshold_crossed"])
            job = await gw.create(
                {"model": KLING, "input": {"video_url": gw.video_url(clips["bounce"])}}
            )
            assert (await gw.wait(job["id"]))["status"] == "succeeded"
            (hook,) = await sink.wait_for_async(1)
            payload = verified(hook, endpoint["secret"])
            assert payload["type"] == "budget.threshold_crossed"
            assert payload["data"]["threshold_pct"] == 50
            assert payload["data"]["budget_usd"] == "0.050000"
            assert payload["data"]["spent_usd"] == "0.035000"


async def test_finished_deliveries_are_pruned_after_the_retention(gateway) -> None:
    with WebhookSink() as sink:
        async with gateway(tenant_webhook_retention=timedelta(0)) as gw:
            endpoint = await add_endpoint(gw, sink.url)
            base = f"/v1/webhook-endpoints/{endpoint['id']}"
            await gw.client.post(f"{base}/test", headers=gw.headers)
            await sink.wait_for_async(1)

            async def finished() -> bool:
                r = await gw.client.get(f"{base}/deliveries", headers=gw.headers)
                return r.json()["data"][0]["status"] == "succeeded"

            await eventually(finished, what="the ping recorded")
            done = await gw.workers[0].housekeep()
            assert done["webhook_deliveries_pruned"] == 1
            r = await gw.client.get(f"{base}/deliveries", headers=gw.headers)
            assert r.json()["data"] == []
            assert await gw.sql("SELECT * FROM webhook_attempts") == []


async def test_job_logs_are_sent_at_most_every_interval_with_every_line(
    gateway, clips: dict[str, Clip]
) -> None:
    with WebhookSink() as sink:
        async with gateway(tenant_webhook_logs_interval=timedelta(seconds=1)) as gw:
            job, endpoint = await ended_job_and_logs_endpoint(gw, clips, sink)
            async with gw.engine.connect() as sa_conn:
                driver = (await sa_conn.get_raw_connection()).driver_connection
                for seq in (1001, 1002, 1003):  # three in a row, well within the interval
                    await driver.execute(APPEND_LOGS, uuid.UUID(job["id"]), seq)
            first, second = await sink.wait_for_async(2, timeout=30)
            assert first.header("webhook-id").endswith("_1001")
            # The other two went as one, its turn an interval after the first.
            assert second.header("webhook-id").endswith("_1002")
            assert second.received_at - first.received_at >= 0.9
            assert verified(second, endpoint["secret"])["data"] == await gw.get(job["id"])
            rows = await gw.sql("SELECT count(*) AS n FROM webhook_deliveries")
            assert rows[0].n == 2
