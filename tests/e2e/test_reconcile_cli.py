"""`foley usage reconcile`, `foley prices`, `foley tenants budget` against a real database and
the emulator's platform API, as an operator runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import httpx

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
        await gw.sql(
            "UPDATE usage_records SET cost_micros = 1 WHERE upstream_request_id = :r", r=tampered
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
