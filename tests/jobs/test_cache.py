"""The result cache at accept: a job whose input is an upload (its hash known) and whose model,
parameters and seed match a stored success is answered in the accept's own transaction — the
202 shows it succeeded, with its own file rows over the source's objects, a ledger row for the
hit at the cache's price, and nothing sent anywhere. Misses, other tenants, the shared setting,
retention and the key itself."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.catalog.registry import CATALOG
from app.config import Settings
from app.files import retention
from app.files import service as files
from app.jobs import cache, lifecycle
from app.jobs.store import JobStore
from app.models import FileKind, Job, StoredFile, UsageRecord, UsageStatus
from tests.conftest import ADMIN, TenantCreds
from tests.support.clips import Clip
from tests.usage.conftest import job_store


async def _upload(api: httpx.AsyncClient, tenant: TenantCreds, clip: Clip) -> str:
    r = await api.post(
        "/v1/files",
        content=Path(clip.path).read_bytes(),
        headers={**tenant.headers, "Content-Type": "video/mp4"},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _body(file_id: str, *, seed: int | None = 7, cache_: bool | None = True, **extra) -> dict:  # type: ignore[no-untyped-def, type-arg]
    inp = {"video_file_id": file_id, "prompt": "rain", **extra}
    if seed is not None:
        inp["seed"] = seed
    body: dict = {"model": "thinksound-audio", "input": inp}  # type: ignore[type-arg]
    if cache_ is not None:
        body["cache"] = cache_
    return body


async def _create(api: httpx.AsyncClient, tenant: TenantCreds, body: dict, **headers: str) -> dict:  # type: ignore[type-arg]
    r = await api.post("/v1/jobs", json=body, headers={**tenant.headers, **headers})
    assert r.status_code == 202, r.text
    return dict(r.json())


async def _run_upstream(
    api: httpx.AsyncClient,
    sessionmaker: async_sessionmaker,
    job: dict,
    tmp_path: Path,  # type: ignore[type-arg]
) -> str:
    """What the worker does for a job fal ran: its submit, then its success with a stored
    output (through the jobs store, as finalize does). Returns the output's file id."""
    store: JobStore = job_store(sessionmaker)
    job_id = uuid.UUID(job["id"])
    async with sessionmaker() as s:
        row = await s.get(Job, job_id)
        assert row is not None
        tenant_id, key = row.tenant_id, row.cache_key
    await store.apply(job_id, lifecycle.SubmitStarting(cache_key=key), owner=None)
    submitted = lifecycle.Submitted(f"req-{job_id}", None, None, None, 0)
    await store.apply(job_id, submitted, owner=None)
    audio = tmp_path / f"{job_id}.m4a"
    audio.write_bytes(b"generated audio " + job_id.bytes)
    storage = api.app.state.storage  # type: ignore[attr-defined]
    obj = await storage.put_file(
        f"jobs/{tenant_id}/{job_id}/audio.m4a", audio, content_type="audio/mp4"
    )
    file_id = uuid.uuid4()
    output = files.Output(
        file_id, FileKind.output_audio, obj.key, "audio.m4a", "audio/mp4", obj.size_bytes,
        obj.sha256, {"container": "mp4"}, None,
    )  # fmt: skip
    audio_entry = {
        "file_id": str(file_id),
        "content_type": "audio/mp4",
        "size_bytes": obj.size_bytes,
        "duration_s": 4.0,
    }
    result = {"prompt": "rain", "audio": audio_entry}

    async def record(conn: asyncpg.Connection, row: Job) -> None:
        await files.replace_job_outputs(conn, row.tenant_id, row.id, [output])

    await store.apply(job_id, lifecycle.Succeeded(result, {}, 2.0, None), owner=None, also=record)
    return str(file_id)


@pytest.fixture
async def source(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    sessionmaker: async_sessionmaker,
    mp4_with_audio: Clip,
    tmp_path: Path,
) -> dict:  # type: ignore[type-arg]
    """A job of ``tenant`` that asked for the cache, missed, and ran upstream: a source."""
    file_id = await _upload(api, tenant, mp4_with_audio)
    job = await _create(api, tenant, _body(file_id))
    assert job["status"] == "queued"
    assert job["cache"] == {"hit": False, "source_job": None, "reason": None}
    output = await _run_upstream(api, sessionmaker, job, tmp_path)
    return {"job": job["id"], "file": file_id, "output": output}


async def test_an_identical_job_is_answered_at_accept_with_the_sources_result(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    sessionmaker: async_sessionmaker,
    source: dict,  # type: ignore[type-arg]
) -> None:
    hit = await _create(api, tenant, _body(source["file"]))
    assert hit["status"] == "succeeded" and hit["completed_at"] is not None
    assert hit["cache"] == {"hit": True, "source_job": source["job"], "reason": None}
    assert hit["upstream"]["request_id"] is None
    # Its own file row (its id, its tenant), the same bytes as the source's.
    new_file = hit["result"]["audio"]["file_id"]
    assert new_file != source["output"]
    mine = await api.get(f"/v1/files/{new_file}", headers=tenant.headers)
    theirs = await api.get(f"/v1/files/{source['output']}", headers=tenant.headers)
    assert mine.status_code == theirs.status_code == 200 and mine.content == theirs.content
    assert hit["usage"] == {
        "unit": "hit",
        "units": "1",
        "estimated_cost_usd": "0.000000",
        "cost_usd": "0.000000",
        "cost_usd_exact": "0.000000000",
        "status": "settled",
    }
    r = await api.get(f"/v1/jobs/{hit['id']}/events", headers=tenant.headers)
    kinds = [e["type"] for e in r.json()["data"]]
    assert kinds == ["job.created", "job.cache_hit", "job.succeeded"]
    assert r.json()["data"][1]["data"] == {"source_job": source["job"]}
    async with sessionmaker() as s:
        records = (
            await s.scalars(select(UsageRecord).where(UsageRecord.job_id == uuid.UUID(hit["id"])))
        ).all()
    assert [(r.upstream_request_id, r.model, r.outcome, r.status) for r in records] == [
        (None, "cache_hit", "cache_hit", UsageStatus.settled)
    ]
    # the GET shows the same
    again = await api.get(f"/v1/jobs/{hit['id']}", headers=tenant.headers)
    assert again.json()["cache"]["source_job"] == source["job"]


async def test_an_idempotent_replay_of_a_hit_answers_the_same(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    source: dict,  # type: ignore[type-arg]
) -> None:
    first = await _create(api, tenant, _body(source["file"]), **{"Idempotency-Key": "k1"})
    replay = await _create(api, tenant, _body(source["file"]), **{"Idempotency-Key": "k1"})
    assert first == replay and first["cache"]["hit"] is True


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"seed": 8}, None),
        ({"extra": {"steps": 30}}, None),
        ({"extra": {"prompt": "wind"}}, None),
        ({"seed": None}, "seed_required"),
    ],
)
async def test_another_seed_or_parameters_or_no_seed_is_a_miss(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    source: dict,
    change: dict,
    reason: str | None,  # type: ignore[type-arg]
) -> None:
    extra = change.get("extra", {})
    body = _body(source["file"], seed=change.get("seed", 7), **extra)
    job = await _create(api, tenant, body)
    assert job["status"] == "queued"
    assert job["cache"] == {"hit": False, "source_job": None, "reason": reason}


async def test_a_spelled_out_default_is_the_same_request(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    source: dict,  # type: ignore[type-arg]
) -> None:
    job = await _create(api, tenant, _body(source["file"], steps=24, guidance=5.0))
    assert job["cache"]["hit"] is True


async def test_a_job_that_did_not_ask_is_neither_answered_nor_a_source(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    sessionmaker: async_sessionmaker,
    source: dict,  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    for asked in (None, False):
        job = await _create(api, tenant, _body(source["file"], cache_=asked))
        assert job["status"] == "queued" and job["cache"] is None
    # Another input, run without the cache: it answers nobody.
    plain = await _create(api, tenant, _body(source["file"], seed=99, cache_=None))
    await _run_upstream(api, sessionmaker, plain, tmp_path)
    asked = await _create(api, tenant, _body(source["file"], seed=99))
    assert asked["status"] == "queued" and asked["cache"] == {
        "hit": False,
        "source_job": None,
        "reason": None,
    }


async def test_the_tenants_default_opts_in_and_a_request_can_opt_out(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    source: dict,  # type: ignore[type-arg]
) -> None:
    r = await api.patch(
        f"/v1/admin/tenants/{tenant.id}", json={"cache_default": True}, headers=ADMIN
    )
    assert r.status_code == 200 and r.json()["cache_default"] is True
    by_default = await _create(api, tenant, _body(source["file"], cache_=None))
    assert by_default["cache"]["hit"] is True
    opted_out = await _create(api, tenant, _body(source["file"], cache_=False))
    assert opted_out["status"] == "queued" and opted_out["cache"] is None
    bad = await api.patch(
        f"/v1/admin/tenants/{tenant.id}", json={"cache_default": "yes"}, headers=ADMIN
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["param"] == "cache_default"


async def test_another_tenant_never_gets_the_result_unless_the_cache_is_shared(
    api: httpx.AsyncClient,
    other_tenant: TenantCreds,
    settings: Settings,
    source: dict,  # type: ignore[type-arg]
    mp4_with_audio: Clip,
) -> None:
    # The same bytes, uploaded by another tenant: the same content hash.
    theirs = await _upload(api, other_tenant, mp4_with_audio)
    miss = await _create(api, other_tenant, _body(theirs))
    assert miss["status"] == "queued" and miss["cache"]["hit"] is False
    # another tenant's source job id is not theirs to read
    r = await api.get(f"/v1/jobs/{source['job']}", headers=other_tenant.headers)
    assert r.status_code == 404
    api.app.state.settings = settings.model_copy(update={"result_cache_shared": True})  # type: ignore[attr-defined]
    hit = await _create(api, other_tenant, _body(theirs))
    assert hit["status"] == "succeeded" and hit["cache"]["source_job"] == source["job"]
    new_file = hit["result"]["audio"]["file_id"]
    assert (await api.get(f"/v1/files/{new_file}", headers=other_tenant.headers)).status_code == 200


async def test_a_source_whose_files_retention_removed_is_a_miss(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    sessionmaker: async_sessionmaker,
    source: dict,  # type: ignore[type-arg]
    mp4_with_audio: Clip,
) -> None:
    async with sessionmaker() as s:
        # everything this test made is older than a retention of a microsecond
        assert await retention.remove_expired(s, api.app.state.storage, 1e-11) > 0  # type: ignore[attr-defined]
        await s.commit()
    again = await _upload(api, tenant, mp4_with_audio)
    job = await _create(api, tenant, _body(again))
    assert job["status"] == "queued" and job["cache"]["hit"] is False


async def test_a_hit_is_billed_at_the_operators_price_and_settles_the_budget(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    source: dict,  # type: ignore[type-arg]
) -> None:
    r = await api.post(
        "/v1/admin/prices",
        json={"model": "cache_hit", "unit": "hit", "unit_price_usd": "0.002"},
        headers=ADMIN,
    )
    assert r.status_code == 201, r.text
    wrong = await api.post(
        "/v1/admin/prices",
        json={"model": "cache_hit", "unit": "video", "unit_price_usd": "0.002"},
        headers=ADMIN,
    )
    assert wrong.status_code == 422 and wrong.json()["errors"][0]["param"] == "unit"
    r = await api.patch(
        f"/v1/admin/tenants/{tenant.id}", json={"budget_usd": "1.00"}, headers=ADMIN
    )
    assert r.status_code == 200
    before = (await api.get("/v1/me", headers=tenant.headers)).json()["budget"]
    hit = await _create(api, tenant, _body(source["file"]))
    assert hit["cache"]["hit"] is True
    assert hit["usage"]["cost_usd"] == "0.002000" and hit["usage"]["status"] == "settled"
    after = (await api.get("/v1/me", headers=tenant.headers)).json()["budget"]
    spent = Decimal(after["spent_usd"]) - Decimal(before["spent_usd"])
    assert spent == Decimal("0.002") and after["reserved_usd"] == before["reserved_usd"]


async def test_retention_keeps_an_object_another_present_row_uses(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    sessionmaker: async_sessionmaker,
    source: dict,  # type: ignore[type-arg]
) -> None:
    hit = await _create(api, tenant, _body(source["file"]))
    storage = api.app.state.storage  # type: ignore[attr-defined]
    mine = uuid.UUID(hit["result"]["audio"]["file_id"])
    async with sessionmaker() as s:
        src = await s.get(StoredFile, uuid.UUID(source["output"]))
        row = await s.get(StoredFile, mine)
        assert src is not None and row is not None and src.storage_key == row.storage_key
        key = src.storage_key
        # The hit's row is younger than the retention; the source's is not.
        await s.execute(
            update(StoredFile)
            .where(StoredFile.id == mine)
            .values(created_at=func.now() + timedelta(days=1))
        )
        await s.commit()
    async with sessionmaker() as s:
        assert await retention.remove_expired(s, storage, 1e-11) >= 1
        await s.commit()
    assert await storage.stat(key) is not None  # the hit's row still uses it
    src_job = await api.get(f"/v1/jobs/{source['job']}", headers=tenant.headers)
    assert src_job.json()["data_removed"] is True
    assert (await api.get(f"/v1/files/{mine}", headers=tenant.headers)).status_code == 200
    gone = await api.get(f"/v1/files/{source['output']}", headers=tenant.headers)
    assert gone.status_code == 410
    async with sessionmaker() as s:
        await s.execute(
            update(StoredFile)
            .where(StoredFile.id == mine)
            .values(created_at=func.now() - timedelta(days=1))
        )
        assert await retention.remove_expired(s, storage, 1e-11) == 1  # the hit's row
        await s.commit()
    assert await storage.stat(key) is None  # the last row that used it is gone


def test_the_key_is_the_content_the_endpoint_the_parameters_and_the_seed() -> None:
    base = {
        "input_sha256": "a" * 64,
        "endpoint": "fal-ai/thinksound",
        "upstream_payload": {"video_url": "https://x/1.mp4", "prompt": "", "seed": 1},
        "seed": 1,
    }
    key = cache.cache_key(**base)  # type: ignore[arg-type]
    assert len(key) == 64
    other_url = {**base, "upstream_payload": {**base["upstream_payload"], "video_url": "data:,"}}  # type: ignore[dict-item]
    assert cache.cache_key(**other_url) == key  # the URL is not the content  # type: ignore[arg-type]
    defaults = {**base["upstream_payload"], "num_inference_steps": 24, "cfg_scale": 5.0}  # type: ignore[dict-item]
    assert cache.cache_key(**{**base, "upstream_payload": defaults}) == key  # type: ignore[arg-type]
    for change in (
        {"input_sha256": "b" * 64},
        {"endpoint": "fal-ai/thinksound/audio"},
        {"seed": 2},
        {"upstream_payload": {**base["upstream_payload"], "cfg_scale": 6}},  # type: ignore[dict-item]
    ):
        assert cache.cache_key(**{**base, **change}) != key  # type: ignore[arg-type]
    thinksound = CATALOG.require("thinksound")
    kling = CATALOG.require("kling-video-to-audio")
    assert cache.skipped_reason(thinksound, {"seed": None}) == "seed_required"
    assert cache.skipped_reason(thinksound, {"seed": 0}) is None
    assert cache.skipped_reason(kling, {}) is None  # nothing to pin: the opt-in is the word


async def test_a_model_without_a_seed_is_cached_as_asked(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    sessionmaker: async_sessionmaker,
    mp4_with_audio: Clip,
    tmp_path: Path,
) -> None:
    file_id = await _upload(api, tenant, mp4_with_audio)
    body = {
        "model": "kling-video-to-audio",
        "input": {"video_file_id": file_id, "prompt": "steps"},
        "cache": True,
    }
    first = await _create(api, tenant, body)
    assert first["status"] == "queued" and first["cache"]["hit"] is False
    await _run_upstream(api, sessionmaker, first, tmp_path)
    second = await _create(api, tenant, body)
    assert second["status"] == "succeeded" and second["cache"]["source_job"] == first["id"]
    # the defaults Kling is always sent are part of the key: another music prompt misses
    other = {**body, "input": {**body["input"], "music_prompt": "calm piano"}}
    assert (await _create(api, tenant, other))["status"] == "queued"
