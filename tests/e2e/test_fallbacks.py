"""A job naming several models, end to end: it moves from a model whose limits the video breaks,
and from a runner error, to the next — with every request fal ran billed once, to the cent of
fal's own bill."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from tests.support.clips import Clip, make_bouncing_square

KLING = "kling-video-to-audio"
KLING_ENDPOINT = "fal-ai/kling-video/video-to-audio"


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fallback-clips")
    return Path(make_bouncing_square(root / "long.mp4", duration_s=21.0, width=64, height=48).path)


def _micros(usd: float) -> int:
    return int((Decimal(str(usd)) * 1_000_000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


async def _ledger(gw, job_id: str) -> dict[str, tuple[str, str, int]]:  # type: ignore[no-untyped-def]
    rows = await gw.sql(
        "SELECT upstream_request_id, model, status, cost_micros FROM usage_records "
        "WHERE job_id = :job",
        job=job_id,
    )
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


async def test_a_video_too_long_for_the_first_model_runs_on_the_next(
    gateway, long_clip: Path
) -> None:
    async with gateway(public=False) as gw:
        url = gw.emu.upload(long_clip, "video/mp4")
        job = await gw.create({"model": [KLING, "thinksound"], "input": {"video_url": url}})
        assert job["model"] == KLING_ENDPOINT and job["models"] == [
            KLING_ENDPOINT,
            "fal-ai/thinksound",
        ]
        done = await gw.wait(job["id"], timeout=60)
        assert done["status"] == "succeeded", done
        assert done["model"] == "fal-ai/thinksound" and done["result"]["video"] is not None
        (attempt,) = done["attempts"]
        assert attempt["model"] == KLING_ENDPOINT and attempt["request_id"] is None
        assert attempt["error"]["code"] == "video_too_long" and attempt["cost_usd"] is None
        # Kling never saw it: its limits were checked before anything was sent
        assert [s["model"] for s in gw.emu.submits()] == ["fal-ai/thinksound"]
        types = [e["type"] for e in await gw.events(job["id"])]
        assert "job.fallback" in types and types[-1] == "job.succeeded"
        ledger = await _ledger(gw, job["id"])
        assert [(m, s) for m, s, _ in ledger.values()] == [("fal-ai/thinksound", "settled")]


async def test_a_runner_error_moves_the_job_on_and_both_requests_are_billed(
    gateway, clips: dict[str, Clip]
) -> None:
    async with gateway(public=False) as gw:
        gw.emu.control(failure_rates_by_model={KLING_ENDPOINT: {"runner_server_error": 1.0}})
        job = await gw.create(
            {"model": [KLING, "thinksound"], "input": {"video_url": gw.video_url(clips["bounce"])}}
        )
        done = await gw.wait(job["id"], timeout=60)
        assert done["status"] == "succeeded", done
        (attempt,) = done["attempts"]
        assert attempt["model"] == KLING_ENDPOINT and attempt["request_id"]
        assert attempt["error"]["code"] == "upstream_runner_error"
        assert attempt["error"]["upstream"]["status_code"] == 500
        submits = gw.emu.submits()
        assert [s["model"] for s in submits] == [KLING_ENDPOINT, "fal-ai/thinksound"]
        ledger = await _ledger(gw, job["id"])
        assert set(ledger) == {attempt["request_id"], done["upstream"]["request_id"]}
        assert all(status == "settled" for _, status, _ in ledger.values())
        # What fal billed, request by request (a runner's 5xx is not billed: $0 on both sides)
        bill = {r["request_id"]: _micros(r["cost"]) for r in gw.emu.usage_records()}
        ours = {rid: cost for rid, (_, _, cost) in ledger.items()}
        assert {rid: cost for rid, cost in ours.items() if cost} == {
            rid: cost for rid, cost in bill.items() if cost
        }
        assert attempt["cost_usd"] == f"{Decimal(ours[attempt['request_id']]) / 10**6:.6f}"
        assert done["usage"]["status"] == "settled"


async def test_when_every_model_fails_the_job_fails_with_what_each_cost(
    gateway, clips: dict[str, Clip]
) -> None:
    async with gateway(public=False) as gw:
        gw.emu.control(failure_rates={"runner_disconnected": 1.0})
        job = await gw.create(
            {"model": [KLING, "thinksound"], "input": {"video_url": gw.video_url(clips["bounce"])}}
        )
        done = await gw.wait(job["id"], timeout=60)
        assert done["status"] == "failed" and done["error"]["code"] == "upstream_runner_error"
        assert [a["model"] for a in done["attempts"]] == [KLING_ENDPOINT]
        assert done["model"] == "fal-ai/thinksound"
        assert len(gw.emu.submits()) == 2
        ledger = await _ledger(gw, job["id"])
        assert len(ledger) == 2 and all(s == "settled" for _, s, _ in ledger.values())


async def test_a_runner_422_is_the_inputs_fault_and_ends_the_job(
    gateway, clips: dict[str, Clip]
) -> None:
    """fal's runner refusing the input (a 422): no other model is tried."""
    async with gateway(public=False) as gw:
        gw.emu.control(
            failure_rates_by_model={"fal-ai/thinksound": {"content_policy_violation": 1.0}}
        )
        job = await gw.create(
            {"model": ["thinksound", KLING], "input": {"video_url": gw.video_url(clips["bounce"])}}
        )
        done = await gw.wait(job["id"], timeout=60)
        assert done["status"] == "failed" and done["error"]["code"] == "upstream_validation"
        assert done["attempts"] == [] and done["model"] == "fal-ai/thinksound"
        assert [s["model"] for s in gw.emu.submits()] == ["fal-ai/thinksound"]


async def test_auto_takes_the_first_model_that_takes_the_video(gateway, long_clip: Path) -> None:
    async with gateway(public=False) as gw:
        url = gw.emu.upload(long_clip, "video/mp4")
        job = await gw.create({"model": "auto", "input": {"video_url": url, "prompt": "a ball"}})
        assert len(job["models"]) >= 2
        done = await gw.wait(job["id"], timeout=60)
        assert done["status"] == "succeeded", done
        refused = [a["error"]["code"] for a in done["attempts"]]
        assert set(refused) <= {"video_too_long"}
        assert done["model"] == done["models"][len(refused)]
