from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, async_sessionmaker

from app.kit.idempotency import IdempotencyGuard, request_fingerprint
from app.models import Job
from tests.conftest import TenantCreds

VIDEO = "https://media.example/clip.mp4"


def thinksound(**input_: object) -> dict:
    return {"model": "thinksound", "input": {"video_url": VIDEO, **input_}}


def kling(**input_: object) -> dict:
    return {"model": "kling-video-to-audio", "input": {"video_url": VIDEO, **input_}}


async def test_create_answers_202_with_location_after_commit(
    api: httpx.AsyncClient, tenant: TenantCreds, connection: AsyncConnection
) -> None:
    r = await api.post(
        "/v1/jobs",
        json={**thinksound(prompt="rain"), "metadata": {"a": "1"}},
        headers=tenant.headers,
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"http://foley.test/v1/jobs/{job['id']}"
    assert job["object"] == "job" and job["status"] == "queued"
    assert job["model"] == "fal-ai/thinksound"
    assert job["input"] == {"video_url": VIDEO, "prompt": "rain"}
    assert job["metadata"] == {"a": "1"}
    assert job["upstream"] == {
        "provider": "fal",
        "endpoint": "fal-ai/thinksound",
        "request_id": None,
        "queue_position": None,
    }
    assert job["urls"]["cancel"].endswith(f"/v1/jobs/{job['id']}/cancel")
    assert job["urls"]["events"].endswith(f"/v1/jobs/{job['id']}/events")
    # The row is there and is what a worker will send upstream.
    payload = (
        await connection.execute(select(Job.upstream_payload).where(Job.id == uuid.UUID(job["id"])))
    ).scalar_one()
    assert payload == {"video_url": VIDEO, "prompt": "rain"}


async def test_kling_always_gets_both_prompts(
    api: httpx.AsyncClient, tenant: TenantCreds, connection: AsyncConnection
) -> None:
    r = await api.post("/v1/jobs", json=kling(), headers=tenant.headers)
    assert r.status_code == 202
    row = (
        await connection.execute(
            select(Job.upstream_payload).where(Job.id == uuid.UUID(r.json()["id"]))
        )
    ).scalar_one()
    assert set(row) == {"video_url", "sound_effect_prompt", "background_music_prompt", "asmr_mode"}
    assert "car" not in row["sound_effect_prompt"].lower()
    r = await api.post(
        "/v1/jobs", json=kling(prompt="footsteps", music_prompt="piano"), headers=tenant.headers
    )
    row = (
        await connection.execute(
            select(Job.upstream_payload).where(Job.id == uuid.UUID(r.json()["id"]))
        )
    ).scalar_one()
    assert row["sound_effect_prompt"] == "footsteps"
    assert row["background_music_prompt"] == "piano"


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (thinksound(colour="red"), "input.colour", "extra_forbidden"),
        (kling(prompt="x" * 201), "input.prompt", "string_too_long"),
        (kling(seed=3), "input.seed", "extra_forbidden"),
        (thinksound(steps=1), "input.steps", "greater_than_equal"),
        ({"model": "thinksound", "input": {}}, "input", "value_error"),  # neither source
        (thinksound(video_file_id=str(uuid.uuid4())), "input", "value_error"),  # both
        (
            {"model": "thinksound", "input": {"video_url": "ftp://x/y.mp4"}},
            "input.video_url",
            "value_error",
        ),
        ({"model": "nope", "input": {"video_url": VIDEO}}, "model", "unknown_model"),
        ({"input": {"video_url": VIDEO}}, "model", "missing"),
        (
            {**thinksound(), "output": {"audio_format": "opus", "sample_rate": 44100}},
            "output.sample_rate",
            "rate_not_in_format",
        ),
        (
            {**thinksound(), "output": {"mix": {"duck_db": 0}}},
            "output.mix",
            "mix_needs_mix_mode",
        ),
        ({**thinksound(), "output": {"audio_mode": "karaoke"}}, "output.audio_mode", "enum"),
        ({**thinksound(), "output": {"sample_rate": 96000}}, "output.sample_rate", "literal_error"),
        (
            {**thinksound(), "output": {"loudness": {"target_lufs": 3}}},
            "output.loudness.target_lufs",
            "less_than",
        ),
        ({**thinksound(), "output": {"volume": 11}}, "output.volume", "extra_forbidden"),
        ({**thinksound(), "model": ["thinksound", "nope"]}, "model.1", "unknown_model"),
        (
            {**thinksound(), "model": ["thinksound", "fal-ai/thinksound"]},
            "model.1",
            "duplicate_model",
        ),
        # Kling takes no seed: the input must suit every model named
        (
            {**thinksound(seed=3), "model": ["thinksound", "kling-video-to-audio"]},
            "input.seed",
            "extra_forbidden",
        ),
        ({**thinksound(), "model": []}, "model", "too_short"),
        ({**thinksound(colour="red"), "model": "auto"}, "input", "no_model_takes_input"),
        ({**thinksound(), "prefer": ["kling-video-to-audio"]}, "prefer", "prefer_needs_auto"),
        ({**thinksound(), "model": "auto", "prefer": ["nope"]}, "prefer.0", "unknown_model"),
        (
            {**thinksound(), "model": "auto", "prefer": ["thinksound-audio"]},
            "prefer.0",
            "not_an_auto_model",
        ),
        (
            {**thinksound(), "model": "auto", "prefer": ["thinksound", "fal-ai/thinksound"]},
            "prefer.1",
            "duplicate_model",
        ),
    ],
)
async def test_bad_input_is_a_422_naming_the_field(
    api: httpx.AsyncClient, tenant: TenantCreds, body: dict, param: str, code: str
) -> None:
    r = await api.post("/v1/jobs", json=body, headers=tenant.headers)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["param"] == param
    assert problem["errors"][0]["code"] == code
    assert problem["status"] == 422 and problem["request_id"]
    assert (await api.get("/v1/jobs", headers=tenant.headers)).json()["data"] == []


async def test_same_idempotency_key_replays_the_first_response(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    headers = {**tenant.headers, "Idempotency-Key": "order-1"}
    first = await api.post("/v1/jobs", json=thinksound(), headers=headers)
    second = await api.post("/v1/jobs", json=thinksound(), headers=headers)
    assert first.status_code == second.status_code == 202
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert second.headers["location"] == first.headers["location"]
    assert len((await api.get("/v1/jobs", headers=tenant.headers)).json()["data"]) == 1


async def test_same_idempotency_key_different_body_is_rejected(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    headers = {**tenant.headers, "Idempotency-Key": "order-2"}
    assert (await api.post("/v1/jobs", json=thinksound(), headers=headers)).status_code == 202
    r = await api.post("/v1/jobs", json=thinksound(prompt="other"), headers=headers)
    assert r.status_code == 422
    assert r.json()["code"] == "idempotency_key_reused"


async def test_idempotency_key_in_flight_is_409(
    api: httpx.AsyncClient, tenant: TenantCreds, sessionmaker: async_sessionmaker
) -> None:
    body = thinksound()
    from app.jobs.schemas import JobCreate

    guard = IdempotencyGuard(
        sessionmaker,
        tenant_id=uuid.UUID(tenant.id),
        key="order-3",
        method="POST",
        path="/v1/jobs",
        fingerprint=request_fingerprint(
            "POST", "/v1/jobs", JobCreate.model_validate(body).model_dump(mode="json")
        ),
        retention=__import__("datetime").timedelta(hours=24),
    )
    assert await guard.claim() is None  # another request holds the key, still executing
    try:
        r = await api.post(
            "/v1/jobs", json=body, headers={**tenant.headers, "Idempotency-Key": "order-3"}
        )
        assert r.status_code == 409
        assert r.json()["code"] == "idempotency_request_in_progress"
    finally:
        await guard.done()


async def test_idempotency_keys_are_per_tenant(
    api: httpx.AsyncClient, tenant: TenantCreds, other_tenant: TenantCreds
) -> None:
    a = await api.post(
        "/v1/jobs", json=thinksound(), headers={**tenant.headers, "Idempotency-Key": "k"}
    )
    b = await api.post(
        "/v1/jobs", json=thinksound(), headers={**other_tenant.headers, "Idempotency-Key": "k"}
    )
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] != b.json()["id"]


async def test_failed_request_releases_its_idempotency_key(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    headers = {**tenant.headers, "Idempotency-Key": "k2"}
    assert (
        await api.post("/v1/jobs", json={"model": "x", "input": {}}, headers=headers)
    ).status_code == 422
    assert (await api.post("/v1/jobs", json=thinksound(), headers=headers)).status_code == 202


async def test_list_filters_and_keyset_pagination(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    ids = []
    for i in range(5):
        body = thinksound() if i % 2 == 0 else kling()
        ids.append((await api.post("/v1/jobs", json=body, headers=tenant.headers)).json()["id"])
    newest_first = list(reversed(ids))
    page1 = (await api.get("/v1/jobs?limit=2", headers=tenant.headers)).json()
    assert [j["id"] for j in page1["data"]] == newest_first[:2] and page1["has_more"]
    page2 = (
        await api.get(f"/v1/jobs?limit=2&starting_after={newest_first[1]}", headers=tenant.headers)
    ).json()
    assert [j["id"] for j in page2["data"]] == newest_first[2:4] and page2["has_more"]
    page3 = (
        await api.get(f"/v1/jobs?limit=2&starting_after={newest_first[3]}", headers=tenant.headers)
    ).json()
    assert [j["id"] for j in page3["data"]] == newest_first[4:] and not page3["has_more"]
    back = (
        await api.get(f"/v1/jobs?limit=2&ending_before={newest_first[2]}", headers=tenant.headers)
    ).json()
    assert [j["id"] for j in back["data"]] == newest_first[:2] and not back["has_more"]
    klings = (await api.get("/v1/jobs?model=kling-video-to-audio", headers=tenant.headers)).json()
    assert {j["id"] for j in klings["data"]} == {ids[1], ids[3]}
    queued = (await api.get("/v1/jobs?status=queued", headers=tenant.headers)).json()
    assert len(queued["data"]) == 5
    assert (await api.get("/v1/jobs?status=succeeded", headers=tenant.headers)).json()["data"] == []
    created = page1["data"][0]["created_at"]
    older = (
        await api.get("/v1/jobs", params={"created_before": created}, headers=tenant.headers)
    ).json()
    assert newest_first[0] not in {j["id"] for j in older["data"]}
    r = await api.get(f"/v1/jobs?starting_after={uuid.uuid4()}", headers=tenant.headers)
    assert r.status_code == 400 and r.json()["code"] == "invalid_cursor"


async def test_cancel_a_job_still_queued_here_is_immediate(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    job = (await api.post("/v1/jobs", json=thinksound(), headers=tenant.headers)).json()
    r = await api.post(f"/v1/jobs/{job['id']}/cancel", headers=tenant.headers)
    assert r.status_code == 200
    assert r.json()["status"] == "canceled" and r.json()["completed_at"]
    r = await api.post(f"/v1/jobs/{job['id']}/cancel", headers=tenant.headers)
    assert r.status_code == 409 and r.json()["code"] == "job_not_cancelable"


async def test_a_jobs_events_are_its_history_in_order(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    job = (await api.post("/v1/jobs", json=thinksound(), headers=tenant.headers)).json()
    other = (await api.post("/v1/jobs", json=thinksound(), headers=tenant.headers)).json()
    await api.post(f"/v1/jobs/{job['id']}/cancel", headers=tenant.headers)
    r = await api.get(f"/v1/jobs/{job['id']}/events", headers=tenant.headers)
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["object"] == "list" and page["has_more"] is False
    assert [(e["seq"], e["type"]) for e in page["data"]] == [
        (1, "job.created"),
        (2, "job.canceled"),
    ]
    assert {e["job_id"] for e in page["data"]} == {job["id"]}  # not the other job's
    assert page["data"][1]["data"]["error"]["code"] == "canceled"
    assert page["data"][0]["id"] < page["data"][1]["id"]
    # after a seq, and a page at a time
    r = await api.get(f"/v1/jobs/{job['id']}/events?after=1", headers=tenant.headers)
    assert [e["seq"] for e in r.json()["data"]] == [2]
    r = await api.get(f"/v1/jobs/{job['id']}/events?limit=1", headers=tenant.headers)
    assert [e["seq"] for e in r.json()["data"]] == [1] and r.json()["has_more"] is True
    r = await api.get(f"/v1/jobs/{other['id']}/events", headers=tenant.headers)
    assert [e["type"] for e in r.json()["data"]] == ["job.created"]


async def test_another_tenants_job_is_404_everywhere(
    api: httpx.AsyncClient, tenant: TenantCreds, other_tenant: TenantCreds
) -> None:
    job = (await api.post("/v1/jobs", json=thinksound(), headers=tenant.headers)).json()
    for method, path in [
        ("GET", f"/v1/jobs/{job['id']}"),
        ("GET", f"/v1/jobs/{job['id']}/events"),
        ("POST", f"/v1/jobs/{job['id']}/cancel"),
    ]:
        r = await api.request(method, path, headers=other_tenant.headers)
        assert r.status_code == 404, (method, path)
        assert r.json()["code"] == "job_not_found"
    assert (await api.get("/v1/jobs", headers=other_tenant.headers)).json()["data"] == []
    r = await api.get(f"/v1/jobs?starting_after={job['id']}", headers=other_tenant.headers)
    assert r.status_code == 400
    # And the owner still sees it, untouched.
    assert (await api.get(f"/v1/jobs/{job['id']}", headers=tenant.headers)).json()[
        "status"
    ] == "queued"


async def test_models_catalog(api: httpx.AsyncClient, tenant: TenantCreds) -> None:
    r = await api.get("/v1/models", headers=tenant.headers)
    models = {m["id"]: m for m in r.json()["data"]}
    assert set(models) >= {
        "fal-ai/thinksound",
        "fal-ai/thinksound/audio",
        "fal-ai/kling-video/video-to-audio",
    }
    kling_ = models["fal-ai/kling-video/video-to-audio"]
    assert kling_["aliases"] == ["kling-video-to-audio"]
    assert kling_["price"] == {"unit": "video", "price_usd": "0.035000"}
    assert kling_["limits"]["max_duration_s"] == 20.0
    assert "music_prompt" in kling_["input_schema"]["properties"]
    assert models["fal-ai/thinksound"]["outputs"] == ["video", "audio"]
    r = await api.get("/v1/models/thinksound-audio", headers=tenant.headers)
    assert r.json()["id"] == "fal-ai/thinksound/audio"
    assert (await api.get("/v1/models/nope", headers=tenant.headers)).status_code == 404


async def test_models_catalog_shows_units_limits_and_several_outputs(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    r = await api.get("/v1/models", headers=tenant.headers)
    models = {m["id"]: m for m in r.json()["data"]}
    assert len(models) == 8
    mirelo = models["mirelo-ai/sfx-v1.5/video-to-audio"]
    assert mirelo["price"] == {"unit": "output_second", "price_usd": "0.010000"}
    assert mirelo["outputs"] == ["audio", "samples"]
    assert (mirelo["limits"]["min_duration_s"], mirelo["limits"]["max_duration_s"]) == (1.0, 10.0)
    samples = mirelo["input_schema"]["properties"]["samples"]
    assert (samples["minimum"], samples["maximum"], samples["default"]) == (2, 8, 2)
    assert "duration" not in mirelo["input_schema"]["properties"]  # the gateway's to set
    assert models["sonilo/v1.1/video-to-music"]["limits"]["max_duration_s"] == 600.0
    assert models["fal-ai/hunyuan-video-foley"]["price"] == {"unit": "video", "price_usd": None}
    control = models["fal-ai/controlfoley"]
    assert control["limits"]["audio_inputs"] == [
        {
            "fields": ["reference_audio_url", "reference_audio_file_id"],
            "min_duration_s": 2.0,
            "max_duration_s": 4.0,
        }
    ]
    r = await api.get("/v1/models/mmaudio", headers=tenant.headers)
    assert r.json()["price"] == {"unit": "output_second", "price_usd": "0.001000"}


async def test_health(api: httpx.AsyncClient, connection: AsyncConnection) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    r = await api.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"database": "ok", "migrations": "ok"}
    await connection.execute(text("SELECT 1"))


async def test_output_options_are_kept_with_every_default_filled_in(
    api: httpx.AsyncClient, tenant: TenantCreds, connection: AsyncConnection
) -> None:
    plain = await api.post("/v1/jobs", json=thinksound(), headers=tenant.headers)
    assert plain.json()["output"] is None  # the model's outputs as they came
    r = await api.post(
        "/v1/jobs", json={**thinksound(), "output": {"audio_mode": "mix"}}, headers=tenant.headers
    )
    assert r.status_code == 202, r.text
    expected = {
        "audio_mode": "mix",
        "audio_format": "aac",
        "sample_rate": 48000,
        "channels": 2,
        "loudness": {"target_lufs": -16.0, "true_peak_dbtp": -1.0},
        "mix": {"original_gain_db": 0.0, "generated_gain_db": -4.0, "duck_db": 12.0},
    }
    assert r.json()["output"] == expected
    stored = (
        await connection.execute(
            select(Job.output_options).where(Job.id == uuid.UUID(r.json()["id"]))
        )
    ).scalar_one()
    assert stored == expected
    is_null = (
        await connection.execute(
            text("SELECT output_options IS NULL FROM jobs WHERE id = :id"),
            {"id": uuid.UUID(plain.json()["id"])},
        )
    ).scalar_one()
    assert is_null  # SQL NULL, not JSON null
    loud_off = await api.post(
        "/v1/jobs", json={**thinksound(), "output": {"loudness": None}}, headers=tenant.headers
    )
    assert loud_off.json()["output"]["loudness"] is None


async def test_a_job_naming_several_models_starts_on_the_first(
    api: httpx.AsyncClient, tenant: TenantCreds, connection: AsyncConnection
) -> None:
    r = await api.post(
        "/v1/jobs",
        json={**thinksound(prompt="rain"), "model": ["kling-video-to-audio", "thinksound"]},
        headers=tenant.headers,
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["model"] == "fal-ai/kling-video/video-to-audio"
    assert job["models"] == ["fal-ai/kling-video/video-to-audio", "fal-ai/thinksound"]
    assert job["attempts"] == []
    (candidates,) = (
        await connection.execute(select(Job.candidates).where(Job.id == uuid.UUID(job["id"])))
    ).one()
    # each with the payload fal gets for it (Kling always gets both prompts)
    assert candidates[0]["upstream_payload"]["sound_effect_prompt"] == "rain"
    assert candidates[1]["upstream_payload"] == {"video_url": VIDEO, "prompt": "rain"}
    one = await api.post("/v1/jobs", json=thinksound(), headers=tenant.headers)
    assert one.json()["models"] is None


async def test_auto_tries_the_models_it_prefers_first(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    plain = await api.post(
        "/v1/jobs", json={**thinksound(prompt="rain"), "model": "auto"}, headers=tenant.headers
    )
    preferred = await api.post(
        "/v1/jobs",
        json={
            **thinksound(prompt="rain"),
            "model": "auto",
            "prefer": ["mmaudio", "kling-video-to-audio"],
        },
        headers=tenant.headers,
    )
    assert plain.status_code == preferred.status_code == 202, preferred.text
    auto = plain.json()["models"]
    assert preferred.json()["models"][:2] == [
        "fal-ai/mmaudio-v2",
        "fal-ai/kling-video/video-to-audio",
    ]
    assert sorted(preferred.json()["models"]) == sorted(auto)  # the same models, reordered
    assert preferred.json()["model"] == "fal-ai/mmaudio-v2"
