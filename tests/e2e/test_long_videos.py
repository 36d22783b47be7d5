"""Videos longer than the model takes, end to end: split into segments at scene cuts, each its own
request at fal (the emulator, which makes sound from the picture's motion), stitched with
crossfades onto the untouched original. Figures are checked on the file the gateway serves,
decoded with PyAV here (not with app.media)."""

from __future__ import annotations

import asyncio
import itertools
import signal
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from emulator.faults import rng_for
from tests.e2e.conftest import ADMIN
from tests.e2e.test_money import _micros
from tests.e2e.test_soundtrack import _corr, _download, _upload
from tests.e2e.test_workers import _worker_process
from tests.media.conftest import decode_audio, rms_db
from tests.support.soundtrack_clips import SceneClip, make_scene_clip, speechlike_track

KLING = "kling-video-to-audio"
KLING_ENDPOINT = "fal-ai/kling-video/video-to-audio"
ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}
# Five shots: the plan has scene cuts to choose from.
SHOTS_65S = (12.0, 17.0, 9.0, 14.0, 13.0)
ONSET_TOLERANCE_S = 0.05


@pytest.fixture(scope="module")
def clip_65s(tmp_path_factory: pytest.TempPathFactory) -> SceneClip:
    root = tmp_path_factory.mktemp("long-clips")
    return make_scene_clip(root / "scenes-65s.mp4", shots=SHOTS_65S, fps=12, gop=24)


@pytest.fixture(scope="module")
def clip_30s(tmp_path_factory: pytest.TempPathFactory) -> SceneClip:
    root = tmp_path_factory.mktemp("long-clips-30")
    return make_scene_clip(root / "scenes-30s.mp4", shots=(14.0, 16.0), fps=12, gop=24)


def detect_onsets(pcm: np.ndarray, sr: int) -> np.ndarray:
    """Energy flux peaks (RMS in 256-sample windows, hop 128; peaks above a fifth of the largest
    rise, at least 100 ms apart), as the emulator's own render tests find hits."""
    from scipy.signal import find_peaks

    mono = pcm.mean(axis=0)
    hop, window = 128, 256
    count = (len(mono) - window) // hop + 1
    frames = mono[np.arange(window)[None, :] + hop * np.arange(count)[:, None]]
    rms = np.sqrt(np.mean(frames**2, axis=1))
    flux = np.maximum(np.diff(rms), 0.0)
    peaks, _ = find_peaks(flux, height=0.2 * flux.max(), distance=round(0.1 * sr / hop))
    return np.asarray(((peaks + 1) * hop + window / 2) / sr)


async def _ledger(gw: Any) -> dict[str, tuple[str, str, int | None]]:
    rows = await gw.sql(
        "SELECT upstream_request_id, job_id::text, status::text, cost_micros FROM usage_records"
    )
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def _billed_by_fal(gw: Any) -> dict[str, int]:
    """What the emulator billed, per request, in micro-dollars."""
    return {r["request_id"]: _micros(r["cost"]) for r in gw.emu.usage_records()}


async def test_a_65s_clip_through_kling_comes_back_whole_with_hits_on_the_impacts(
    gateway, clip_65s: SceneClip, tmp_path: Path
) -> None:
    async with gateway(public=False) as gw:
        job = await gw.create({"model": KLING, "input": {"video_url": gw.video_url(clip_65s)}})
        done = await gw.wait(job["id"], timeout=180)
        assert done["status"] == "succeeded", done
        segments = done["segments"]
        # Kling takes 3-20 s: four segments, neighbours overlapping, covering the whole clip
        assert len(segments) == 4, segments
        assert segments[0]["start_s"] == 0.0 and segments[-1]["end_s"] == pytest.approx(65.0)
        for a, b in itertools.pairwise(segments):
            assert b["start_s"] < a["end_s"]  # an overlap to crossfade over
        assert all(3.0 <= s["end_s"] - s["start_s"] <= 20.0 for s in segments)
        # one request per segment reached fal, each billed to this tenant, as fal billed it
        submits = gw.emu.submits()
        assert [s["model"] for s in submits] == [KLING_ENDPOINT] * 4
        ledger = await _ledger(gw)
        assert set(ledger) == {s["request_id"] for s in segments}
        assert {job_id for job_id, _, _ in ledger.values()} == {s["job_id"] for s in segments}
        billed = _billed_by_fal(gw)
        assert {r: c for r, (_, _, c) in ledger.items()} == billed
        assert done["usage"]["status"] == "settled"
        assert done["usage"]["cost_usd"] == f"{sum(billed.values()) / 1e6:.6f}"
        # the job's events tell each segment's end, in order, without gaps
        events = await gw.events(job["id"])
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        ended = [e["data"] for e in events if e["type"] == "job.segment_ended"]
        assert sorted(e["index"] for e in ended) == [0, 1, 2, 3]
        assert {e["request_id"] for e in ended} == {s["request_id"] for s in segments}
        assert all(e["status"] == "succeeded" for e in ended)
        assert events[-1]["type"] == "job.succeeded"
        # the segments are not jobs of the tenant's list, and tell no one on their own
        listed = (await gw.client.get("/v1/jobs", headers=gw.headers)).json()["data"]
        assert [j["id"] for j in listed] == [job["id"]]

        video = await _download(gw, done["result"]["video"]["url"], tmp_path / "out.mp4")
    # the original's picture, packet for packet, with 65 s of sound under it
    with av.open(str(video)) as made, av.open(str(clip_65s.path)) as original:
        assert [bytes(p) for p in made.demux(video=0) if p.size] == [
            bytes(p) for p in original.demux(video=0) if p.size
        ]
    audio, rate = decode_audio(video)
    assert audio.shape[1] / rate == pytest.approx(65.0, abs=0.05)
    # the hits land on the clip's impacts, through every segment and handover
    onsets = detect_onsets(audio, rate)
    # (an impact in the clip's last frames has no frame after it to show the bounce: the
    # emulator cannot hear it, whether the video is split or not)
    truth = np.array([t for t in clip_65s.impacts if t < clip_65s.duration_s - 0.25])
    assert len(truth) > 150
    missing = [t for t in truth if np.min(np.abs(onsets - t)) > ONSET_TOLERANCE_S]
    spurious = [t for t in onsets if np.min(np.abs(truth - t)) > ONSET_TOLERANCE_S]
    assert missing == [], f"impacts without an onset: {missing}"
    # The emulator's foley adds a transient of its own now and then (its render tests allow one
    # in ten impacts): never at a handover, where a click or a doubled hit would be.
    assert len(spurious) <= 0.1 * len(truth), f"onsets away from any impact: {spurious}"
    for a, b in itertools.pairwise(segments):
        # the 0.5 s crossfade, centred in the overlap, and 0.1 s around it
        middle = (b["start_s"] + a["end_s"]) / 2
        near = [t for t in spurious if abs(t - middle) <= 0.35]
        assert near == [], f"onsets at the handover around {middle}: {near}"
    # no gap and no click at a handover: over each overlap, the level in 50 ms windows stays
    # within the range the sound has elsewhere, and no sample jumps more than it does elsewhere
    levels = np.array(
        [
            rms_db(audio[:, i : i + rate // 20])
            for i in range(0, audio.shape[1] - rate // 20, rate // 20)
        ]
    )
    jumps = np.abs(np.diff(audio, axis=1)).max(axis=0)
    away = np.ones(audio.shape[1] - 1, dtype=bool)
    for a, b in itertools.pairwise(segments):
        lo, hi = round((b["start_s"] - 0.25) * rate), round((a["end_s"] + 0.25) * rate)
        away[lo:hi] = False
    for a, b in itertools.pairwise(segments):
        lo, hi = b["start_s"] - 0.25, a["end_s"] + 0.25
        inside = levels[round(lo * 20) : round(hi * 20)]
        assert inside.min() >= np.percentile(levels, 1) - 3.0, (lo, hi, inside.min())
        window = jumps[round(lo * rate) : round(hi * rate)]
        assert window.max() <= jumps[away].max() * 1.05, (lo, hi)


def _seed_failing_one_of_two(rate: float) -> int:
    """A fault seed under which, of the first two submits, exactly one fails (at ``rate``) and the
    third succeeds: the emulator draws each submit's failure from (seed, its sequence number)."""
    for seed in range(10_000):
        fails = [rng_for(seed, seq).random() < rate for seq in (1, 2, 3)]
        if fails[0] != fails[1] and not fails[2]:
            return seed
    raise AssertionError("no seed")


async def test_a_segment_failing_at_fal_runs_again_once_and_the_job_succeeds(
    gateway, clip_30s: SceneClip
) -> None:
    async with gateway(public=False) as gw:
        gw.emu.control(
            seed=_seed_failing_one_of_two(0.5),
            failure_rates_by_model={KLING_ENDPOINT: {"runner_server_error": 0.5}},
        )
        job = await gw.create({"model": KLING, "input": {"video_url": gw.video_url(clip_30s)}})
        done = await gw.wait(job["id"], timeout=120)
        assert done["status"] == "succeeded", done
        assert sorted(s["tries"] for s in done["segments"]) == [1, 2]
        retried = [e for e in await gw.events(job["id"]) if e["type"] == "job.segment_retried"]
        assert len(retried) == 1
        assert retried[0]["data"]["error"]["code"] == "upstream_runner_error"
        # three requests at fal, all on the ledger; the failed one billed nothing (a 5xx)
        ledger = await _ledger(gw)
        assert len(ledger) == 3 == len(gw.emu.submits())
        assert {r: c for r, (_, _, c) in ledger.items()} == _billed_by_fal(gw)
        assert ledger[_request_of(ledger, retried)][2] == 0


def _request_of(ledger: dict[str, tuple[str, str, int | None]], retried: list[dict]) -> str:
    failed_job = retried[0]["data"]["failed_job"]
    (request,) = [r for r, (job_id, _, _) in ledger.items() if job_id == failed_job]
    return request


async def test_a_segment_failing_twice_fails_the_job_with_what_was_billed(
    gateway, clip_30s: SceneClip
) -> None:
    async with gateway(public=False) as gw:
        gw.emu.control(failure_rates_by_model={KLING_ENDPOINT: {"runner_server_error": 1.0}})
        job = await gw.create({"model": KLING, "input": {"video_url": gw.video_url(clip_30s)}})
        done = await gw.wait(job["id"], timeout=120)
        assert done["status"] == "failed", done
        assert done["error"]["code"] == "segment_failed"
        assert all(s["tries"] == 2 and s["status"] == "failed" for s in done["segments"])
        # each segment ran twice, never more; every request is on the ledger as fal billed it
        assert len(gw.emu.submits()) == 4
        ledger = await _ledger(gw)
        assert len(ledger) == 4
        assert {r: c for r, (_, _, c) in ledger.items()} == _billed_by_fal(gw)
        assert done["usage"]["cost_usd"] == "0.000000"


async def test_cancel_cancels_every_segment_at_fal(gateway, clip_30s: SceneClip) -> None:
    async with gateway(public=False) as gw:
        gw.emu.control(run_time_by_model={KLING_ENDPOINT: 60})
        job = await gw.create({"model": KLING, "input": {"video_url": gw.video_url(clip_30s)}})
        running = await gw.wait(
            job["id"],
            until=lambda j: bool(j["segments"]) and all(s["request_id"] for s in j["segments"]),
            timeout=60,
        )
        r = await gw.client.post(f"/v1/jobs/{job['id']}/cancel", headers=gw.headers)
        assert r.status_code in (200, 202), r.text
        done = await gw.wait(job["id"], timeout=60)
        assert done["status"] == "canceled", done
        assert all(s["status"] == "canceled" for s in done["segments"])
        # fal was asked to cancel each segment's request
        canceled = {e["request_id"] for e in gw.emu.requests(method="PUT") if e.get("request_id")}
        assert canceled == {s["request_id"] for s in running["segments"]}
        ledger = await _ledger(gw)
        assert set(ledger) == canceled
        assert {r: c for r, (_, _, c) in ledger.items()} == _billed_by_fal(gw)


async def test_the_budget_reserves_the_whole_job_before_any_segment_runs(
    gateway, clip_30s: SceneClip
) -> None:
    async with gateway(public=False) as gw:
        gw.emu.control(run_time_by_model={KLING_ENDPOINT: 60})
        # Kling bills a video per request: two segments need two, and the budget holds one
        model = (await gw.client.get(f"/v1/models/{KLING}", headers=gw.headers)).json()
        one = float(model["price"]["price_usd"])
        r = await gw.client.patch(
            f"/v1/admin/tenants/{gw.tenant_id}",
            json={"budget_usd": f"{one * 1.5:.6f}"},
            headers=ADMIN_H,
        )
        assert r.status_code == 200, r.text
        job = await gw.create({"model": KLING, "input": {"video_url": gw.video_url(clip_30s)}})
        done = await gw.wait(job["id"], timeout=60)
        assert done["status"] == "failed" and done["error"]["code"] == "budget_exceeded", done
        assert gw.emu.submits() == [] and done["segments"] is None
        # a budget that holds both: the reservation is the whole job's, on its segments
        r = await gw.client.patch(
            f"/v1/admin/tenants/{gw.tenant_id}",
            json={"budget_usd": f"{one * 2.5:.6f}"},
            headers=ADMIN_H,
        )
        job = await gw.create({"model": KLING, "input": {"video_url": gw.video_url(clip_30s)}})
        await gw.wait(job["id"], until=lambda j: bool(j["segments"]), timeout=60)
        (reserved,) = await gw.sql("SELECT reserved_micros FROM budget_periods")
        assert reserved[0] == round(2 * one * 1_000_000)
        rows = await gw.sql(
            "SELECT reserved_micros FROM jobs WHERE parent_id = :id OR id = :id", id=job["id"]
        )
        assert sum(r[0] for r in rows) == reserved[0]
        r = await gw.client.post(f"/v1/jobs/{job['id']}/cancel", headers=gw.headers)
        await gw.wait(job["id"], timeout=60)


async def test_segments_are_the_tenants_alone_and_canceled_only_with_their_job(
    gateway, clip_30s: SceneClip
) -> None:
    async with gateway(public=False) as gw:
        gw.emu.control(run_time_by_model={KLING_ENDPOINT: 60})
        job = await gw.create({"model": KLING, "input": {"video_url": gw.video_url(clip_30s)}})
        running = await gw.wait(job["id"], until=lambda j: bool(j["segments"]), timeout=60)
        child = running["segments"][0]["job_id"]
        # its tenant reads a segment by id; canceling it alone is refused
        assert (await gw.get(child))["status"] in ("queued", "starting", "processing")
        r = await gw.client.post(f"/v1/jobs/{child}/cancel", headers=gw.headers)
        assert r.status_code == 409 and r.json()["code"] == "job_not_cancelable", r.text
        # another tenant sees neither the job nor its segments
        _, other_key = await gw.new_tenant("other")
        other = {"Authorization": f"Bearer {other_key}"}
        for job_id in (job["id"], child):
            r = await gw.client.get(f"/v1/jobs/{job_id}", headers=other)
            assert r.status_code == 404, r.text
        r = await gw.client.post(f"/v1/jobs/{job['id']}/cancel", headers=other)
        assert r.status_code == 404
        await gw.client.post(f"/v1/jobs/{job['id']}/cancel", headers=gw.headers)
        await gw.wait(job["id"], timeout=60)


async def test_mix_keeps_the_original_track_under_the_stitched_sound(
    gateway, tmp_path: Path
) -> None:
    """A 4 s clip with a speech-like track, through ThinkSound capped at 3 s: two segments. No
    ducking and no loudness: the mix is exactly original + gain × the stitched sound, which a
    generated_only job of the same video gives (the emulator's sound is deterministic)."""
    rate, gain_db = 44_100, -6.0
    voice = speechlike_track(4.0, rate, seed=3)
    talking = make_scene_clip(tmp_path / "talking.mp4", shots=(4.0,), audio=voice, audio_rate=rate)
    common = {"audio_format": "wav", "sample_rate": rate, "loudness": None}
    async with gateway(public=False, thinksound_max_duration_s=3.0, segment_overlap_s=0.5) as gw:
        url = gw.emu.upload(talking.path, "video/mp4")
        body = {"model": "thinksound", "input": {"video_url": url, "prompt": "a ball"}}
        mixed_job = await gw.create(
            body
            | {
                "output": common
                | {
                    "audio_mode": "mix",
                    "mix": {"duck_db": 0, "original_gain_db": 0, "generated_gain_db": gain_db},
                }
            }
        )
        alone_job = await gw.create(body | {"output": common | {"audio_mode": "generated_only"}})
        mixed_done = await gw.wait(mixed_job["id"], timeout=60)
        alone_done = await gw.wait(alone_job["id"], timeout=60)
        for done in (mixed_done, alone_done):
            assert done["status"] == "succeeded", done
            assert len(done["segments"]) == 2
        assert mixed_done["result"]["soundtrack"]["audio_mode"] == "mix"
        mixed, mixed_rate = decode_audio(
            await _download(gw, mixed_done["result"]["audio"]["url"], tmp_path / "mix.wav")
        )
        alone, alone_rate = decode_audio(
            await _download(gw, alone_done["result"]["audio"]["url"], tmp_path / "alone.wav")
        )
    original, original_rate = decode_audio(Path(talking.path))
    assert mixed_rate == alone_rate == original_rate == rate
    n = min(mixed.shape[1], alone.shape[1], original.shape[1])
    assert n >= 3.9 * rate
    mixed, alone, original = mixed[:, :n], alone[:, :n], original[:, :n]
    under = mixed - alone * 10 ** (gain_db / 20)
    assert _corr(under, original) >= 0.95  # the original is intact under the stitched sound
    assert _corr(mixed - original, alone) >= 0.95  # and the stitched sound is there


async def test_segments_run_within_the_tenants_in_flight_cap(gateway, clip_30s: SceneClip) -> None:
    """The split job holds no slot of its own: with one request in flight allowed, its segments
    run one after the other (never both at fal at once) and the job still finishes."""
    async with gateway(public=False) as gw:
        r = await gw.client.patch(
            f"/v1/admin/tenants/{gw.tenant_id}", json={"max_in_flight": 1}, headers=ADMIN_H
        )
        assert r.status_code == 200, r.text
        gw.emu.control(run_time_by_model={KLING_ENDPOINT: 1})
        job = await gw.create({"model": KLING, "input": {"video_url": gw.video_url(clip_30s)}})
        done = await gw.wait(job["id"], timeout=90)
        assert done["status"] == "succeeded", done
        assert len(done["segments"]) == 2
        # fal had the second request only once the first had completed there
        ran = sorted(
            (gw.emu.job(s["request_id"]) for s in done["segments"]),
            key=lambda j: j["submitted_at"],
        )
        first_done = datetime.fromisoformat(ran[0]["completed_at"])
        assert datetime.fromisoformat(ran[1]["submitted_at"]) >= first_done, ran


async def test_a_worker_killed_while_segments_run_loses_nothing_and_sends_each_once(
    gateway, clip_30s: SceneClip, tmp_path: Path
) -> None:
    """The worker that split the job (and follows its segments at fal) is SIGKILLed: another
    takes the job and its segments over once their leases end; nothing is sent again."""
    lease = timedelta(seconds=2)
    async with gateway(public=False, workers=0, lease_duration=lease) as gw:
        gw.emu.control(run_time_by_model={KLING_ENDPOINT: 4})
        # (its next look at a segment it follows on fal's stream, as the tests' workers do)
        worker = _worker_process(gw, lease, tmp_path / "worker.log", FOLEY_POLL_INTERVAL_MAX="1")
        try:
            job = await gw.create({"model": KLING, "input": {"video_url": gw.video_url(clip_30s)}})
            await gw.wait(
                job["id"],
                until=lambda j: bool(j["segments"]) and all(s["request_id"] for s in j["segments"]),
                timeout=60,
            )
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
        survivor = gw.make_worker(owner="survivor")
        task = asyncio.create_task(survivor.run(shutdown_grace_s=5))
        try:
            done = await gw.wait(job["id"], timeout=60)
        finally:
            survivor.stop()
            await task
        assert done["status"] == "succeeded", done
        assert all(s["tries"] == 1 for s in done["segments"])
        assert len(gw.emu.submits()) == 2  # each segment's request, once
        ledger = await _ledger(gw)
        assert set(ledger) == {s["request_id"] for s in done["segments"]}
        assert {r: c for r, (_, _, c) in ledger.items()} == _billed_by_fal(gw)


async def test_an_upload_longer_than_the_model_takes_is_reserved_whole_at_accept(
    gateway, clip_30s: SceneClip
) -> None:
    """An upload's length is known when it is accepted: the job is priced and reserved as the
    segments it will run as (two Kling videos), before any worker sees it."""
    async with gateway(public=False, workers=0) as gw:
        r = await gw.client.patch(
            f"/v1/admin/tenants/{gw.tenant_id}", json={"budget_usd": "1.00"}, headers=ADMIN_H
        )
        assert r.status_code == 200, r.text
        upload = await _upload(gw, Path(clip_30s.path))  # {"video_file_id": …}
        job = await gw.create({"model": KLING, "input": upload})
        model = (await gw.client.get(f"/v1/models/{KLING}", headers=gw.headers)).json()
        two = round(2 * float(model["price"]["price_usd"]) * 1_000_000)
        ((estimated, reserved),) = await gw.sql(
            "SELECT estimated_cost_micros, reserved_micros FROM jobs WHERE id = :id", id=job["id"]
        )
        assert estimated == reserved == two
        ((held,),) = await gw.sql("SELECT reserved_micros FROM budget_periods")
        assert held == two
        # and POST /v1/validate says the same of it
        verdict = (
            await gw.client.post(
                "/v1/validate",
                headers=gw.headers,
                json={"model": KLING, "input": upload},
            )
        ).json()
        assert verdict["valid"] is True and len(verdict["segments"]) == 2
        assert verdict["estimate"]["estimated_cost_usd"] == f"{two / 1e6:.6f}"
