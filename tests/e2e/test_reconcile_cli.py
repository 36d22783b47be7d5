"""`foley usage reconcile`, `foley prices`, `foley tenants budget` against a real database and
the emulator's platform API, as an operator runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import httpx

from app.config import AmbiguousSubmitPolicy
from tests.support.clips import Clip
from tests.support.waiting import eventually


def _foley(gw, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    env = {
        **os.environ,
        "FOLEY_ENV": "test",
        "FOLEY_DATABASE_URL": gw.settings.database_url,
        "FOLEY_DATA_DIR": str(gw.settings.data_dir),
        "FOLEY_FAL_PLATFORM_URL": f"{gw.emu.base_url}/v1",
        "FOLEY_FAL_ADMIN_KEY": gw.emu.admin_key,
        "FOLEY_LOG_LEVEL": "WARNING",
    }
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "app.entrypoints", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_reconcile_reports_every_difference(gateway, clips: dict[str, Clip]) -> None:
    async with gateway(public=True) as gw:
        url = gw.video_url(clips["bounce"])
        for _ in range(2):
            job = await gw.create({"model": "kling-video-to-audio", "input": {"video_url": url}})
            assert (await gw.wait(job["id"]))["status"] == "succeeded"
        today = datetime.now(UTC).date()
        window = ("--from", str(today), "--to", str(today + timedelta(days=1)))
        clean = _foley(gw, "usage", "reconcile", *window)
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert "no differences" in clean.stdout
        # A request fal billed that the gateway never heard of, and a ledger row that is wrong.
        r = httpx.post(
            f"{gw.emu.base_url}/fal-ai/kling-video/video-to-audio",
            headers=gw.emu.auth_headers,
            json={"video_url": url},
        )
        stranger = r.json()["request_id"]
        await eventually(
            lambda: any(e["request_id"] == stranger for e in gw.emu.usage_records()),
            timeout=20,
            interval=0.1,
            what="fal's bill to list the stranger",
        )
        tampered = (await gw.sql("SELECT upstream_request_id FROM usage_records LIMIT 1"))[0][0]
        # One nano-dollar off: the same micro-dollars, a different bill.
        await gw.sql(
            "UPDATE usage_records SET cost_nanos = cost_nanos + 1 WHERE upstream_request_id = :r",
            r=tampered,
        )
        dirty = _foley(gw, "usage", "reconcile", *window, "--json")
        assert dirty.returncode == 1, dirty.stderr
        report = json.loads(dirty.stdout)
        kinds = {(d["kind"], d["request_id"]) for d in report["differences"]}
        assert kinds == {("missing_in_ledger", stranger), ("cost_mismatch", tampered)}
        assert report["fal_requests"] == 3 and report["ledger_requests"] == 2


async def test_operator_cli_prices_and_budgets(gateway) -> None:
    async with gateway(public=True, workers=0) as gw:
        out = _foley(
            gw,
            "prices",
            "set",
            "fal-ai/thinksound",
            "--unit",
            "compute_second",
            "--usd",
            "0.0012",
            "--effective-from",
            "2099-01-01T00:00:00+00:00",
        )
        assert out.returncode == 0, out.stderr
        listed = _foley(gw, "prices", "list", "--model", "fal-ai/thinksound").stdout
        assert "0.001000" in listed and "0.001200" in listed
        out = _foley(
            gw,
            "tenants",
            "budget",
            gw.tenant_id,
            "--usd",
            "12.50",
            "--period",
            "30d",
            "--thresholds",
            "50,90",
        )
        assert out.returncode == 0, out.stderr
        tenant = json.loads(out.stdout)
        assert tenant["budget_usd"] == "12.500000" and tenant["budget_period"] == "2592000s"
        assert tenant["budget_thresholds"] == [50, 90]
        out = _foley(
            gw,
            "tenants",
            "limits",
            gw.tenant_id,
            "--rate-per-minute",
            "30",
            "--max-in-flight",
            "4",
            "--weight",
            "2",
        )
        assert json.loads(out.stdout)["max_in_flight"] == 4
        assert _foley(gw, "tenants", "suspend", gw.tenant_id).returncode == 0
        r = await gw.client.post(
            "/v1/jobs",
            headers=gw.headers,
            json={"model": "thinksound", "input": {"video_url": "https://x.example/a.mp4"}},
        )
        assert r.status_code == 403
        actors = await gw.sql("SELECT DISTINCT actor FROM audit_events WHERE actor LIKE 'cli:%'")
        assert len(actors) == 1


async def test_reconcile_bills_a_tagged_orphan_to_its_tenant_and_job_once(
    gateway, clips: dict[str, Clip]
) -> None:
    # fal cannot say (its platform API refuses the gateway's key, no webhook will come): the
    # ambiguous submit fails the job, though fal ran the request and billed it. fal reports the
    # request's tags (X-Fal-Tags: foley.tenant, foley.job) in its billing events.
    async with gateway(
        public=False,
        ambiguous_submit_grace=timedelta(seconds=1),
        ambiguous_submit_policy=AmbiguousSubmitPolicy.fail,
        fal_admin_key=None,
    ) as gw:
        gw.emu.control(ambiguous_submit_rate=1.0, ambiguous_submit_hold_s=0.2, tag_reporting=True)
        url = gw.video_url(clips["bounce"])
        job = await gw.create({"model": "thinksound", "input": {"video_url": url}})
        failed = await gw.wait(job["id"], timeout=30)
        assert failed["error"]["code"] == "upstream_submit_ambiguous", failed
        [sent] = gw.emu.submits()
        rid = sent["request_id"]

        def billed() -> list[dict]:  # type: ignore[type-arg]
            return [r for r in gw.emu.usage_records() if r["request_id"] == rid and r["billed"]]

        await eventually(billed, timeout=30, interval=0.1, what="fal's bill of the request")
        fal_nanos = round(billed()[0]["cost"] * 1e9)
        today = datetime.now(UTC).date()
        window = ("--from", str(today), "--to", str(today + timedelta(days=1)))
        seen = _foley(gw, "usage", "reconcile", *window, "--json")
        assert seen.returncode == 1, seen.stderr
        [missing] = json.loads(seen.stdout)["differences"]
        assert (missing["kind"], missing["request_id"]) == ("missing_in_ledger", rid)
        assert (missing["tenant_id"], missing["job_id"]) == (gw.tenant_id, job["id"])
        assert await gw.sql("SELECT count(*) FROM usage_records") == [(0,)]
        runs = [
            _foley(gw, "usage", "reconcile", *window, "--json", "--bill-orphans") for _ in range(2)
        ]
        assert [run.returncode for run in runs] == [0, 0], [run.stderr for run in runs]
        first, second = (json.loads(run.stdout) for run in runs)
        assert [
            (b["request_id"], b["tenant_id"], b["job_id"]) for b in first["billed_orphans"]
        ] == [(rid, gw.tenant_id, job["id"])]
        assert second["billed_orphans"] == [] and second["differences"] == []
        assert second["ledger_total_usd_exact"] == second["fal_total_usd_exact"]
        rows = await gw.sql(
            "SELECT upstream_request_id, tenant_id::text, job_id::text, cost_nanos, status::text "
            "FROM usage_records"
        )
        assert rows == [(rid, gw.tenant_id, job["id"], fal_nanos, "settled")]  # billed once
        # The job and the tenant's usage show what fal billed.
        usage = (await gw.get(job["id"]))["usage"]
        assert usage["cost_usd_exact"] == second["fal_total_usd_exact"]
        summary = (await gw.client.get("/v1/usage", headers=gw.headers)).json()
        assert summary["total_cost_usd"] == second["fal_total_usd"]
