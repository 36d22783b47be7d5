"""Accepting a job: the one-statement path and the transactional path store the same job."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, async_sessionmaker

from app.catalog.registry import CATALOG
from app.config import Settings
from app.jobs import store
from app.models import Job
from app.usage.estimates import PRICE_CACHE, RATIO_CACHE, estimate_from_cache, estimate_job
from tests.conftest import TenantCreds

BODY = {
    "model": "thinksound",
    "input": {"video_url": "https://media.example/clip.mp4", "prompt": "rain", "seed": 3},
    "metadata": {"order": "42"},
}
# what differs between two jobs made from the same body
PER_JOB = {"id", "created_at", "updated_at", "next_action_at"}


@pytest.fixture
def alone_inserts(monkeypatch: pytest.MonkeyPatch) -> list[uuid.UUID]:
    """The ids of the jobs stored by the one-statement path (the real insert still runs)."""
    seen: list[uuid.UUID] = []
    real = store.insert_unless_budgeted

    async def spy(driver, job):  # type: ignore[no-untyped-def]
        inserted = await real(driver, job)
        if inserted:
            seen.append(job.id)
        return inserted

    monkeypatch.setattr(store, "insert_unless_budgeted", spy)
    return seen


async def _row(connection: AsyncConnection, job_id: str) -> dict[str, object]:
    jobs = Job.__table__
    result = await connection.execute(select(jobs).where(jobs.c.id == uuid.UUID(job_id)))
    return dict(result.mappings().one())


async def test_both_ways_of_storing_a_job_write_the_same_row(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    connection: AsyncConnection,
    alone_inserts: list[uuid.UUID],
) -> None:
    # cold price cache: the estimate needs the database, so the job goes in with a session
    first = await api.post("/v1/jobs", json=BODY, headers=tenant.headers)
    # warm cache, nothing else to commit: one INSERT on the driver pool
    alone = await api.post("/v1/jobs", json=BODY, headers=tenant.headers)
    # an idempotency record must commit with the job: the transactional path again
    keyed = await api.post(
        "/v1/jobs", json=BODY, headers={**tenant.headers, "Idempotency-Key": "k-1"}
    )
    assert [r.status_code for r in (first, alone, keyed)] == [202, 202, 202]
    assert alone_inserts == [uuid.UUID(alone.json()["id"])]

    rows = [await _row(connection, r.json()["id"]) for r in (first, alone, keyed)]
    same = [{k: v for k, v in row.items() if k not in PER_JOB} for row in rows]
    assert same[1] == same[0] == same[2]
    assert rows[1]["next_action_at"] == rows[1]["created_at"]  # due at once
    # and the answers are the same resource
    answers = [r.json() for r in (first, alone, keyed)]
    for answer in answers:
        for key in ("id", "created_at", "urls"):
            answer.pop(key)
    assert answers[1] == answers[0] == answers[2]


async def test_a_job_is_read_back_as_it_was_answered(
    api: httpx.AsyncClient, tenant: TenantCreds, alone_inserts: list[uuid.UUID]
) -> None:
    await api.post("/v1/jobs", json=BODY, headers=tenant.headers)  # warms the price cache
    created = await api.post("/v1/jobs", json=BODY, headers=tenant.headers)
    assert alone_inserts == [uuid.UUID(created.json()["id"])]
    read = await api.get(created.headers["location"], headers=tenant.headers)
    assert read.status_code == 200
    assert read.json() == created.json()


async def test_dry_run_must_be_a_boolean(api: httpx.AsyncClient, tenant: TenantCreds) -> None:
    r = await api.post("/v1/jobs?dry_run=perhaps", json=BODY, headers=tenant.headers)
    assert r.status_code == 422
    problem = r.json()
    assert problem["code"] == "validation_error"
    assert problem["param"] == "dry_run"
    assert [e["code"] for e in problem["errors"]] == ["bool_parsing"]
    r = await api.post("/v1/jobs?dry_run=1", json=BODY, headers=tenant.headers)
    assert r.status_code == 200 and r.json()["object"] == "estimate"
    r = await api.post("/v1/jobs?dry_run=false", json=BODY, headers=tenant.headers)
    assert r.status_code == 202


async def test_openapi_documents_the_create_parameters(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    operation = spec["paths"]["/v1/jobs"]["post"]
    params = {(p["in"], p["name"]): p for p in operation["parameters"]}
    assert params[("query", "dry_run")]["schema"]["type"] == "boolean"
    assert params[("header", "Idempotency-Key")]["schema"]["type"] == "string"
    body = operation["requestBody"]
    assert body["required"] is True
    schemas = spec["components"]["schemas"]

    def resolve(schema: dict) -> dict:
        return schemas[schema["$ref"].rsplit("/", 1)[-1]] if "$ref" in schema else schema

    # One variant per model (a oneOf on `model`), or one naming several: each the same envelope.
    one_model, several = resolve(body["content"]["application/json"]["schema"])["anyOf"]
    variants = [*resolve(one_model)["oneOf"], several]
    assert len(variants) > 2
    for variant in map(resolve, variants):
        assert set(variant["required"]) == {"model", "input"}
        assert variant["additionalProperties"] is False
    assert operation["security"] == [{"HTTPBearer": []}]


async def test_location_follows_the_host_asked(api: httpx.AsyncClient, tenant: TenantCreds) -> None:
    for host in ("a.example", "b.example:8443", "a.example"):
        r = await api.post("/v1/jobs", json=BODY, headers={**tenant.headers, "Host": host})
        assert r.status_code == 202
        assert r.headers["location"] == f"http://{host}/v1/jobs/{r.json()['id']}"
        assert r.json()["urls"]["self"] == r.headers["location"]


async def test_estimate_from_cache_only_when_warm(
    sessionmaker: async_sessionmaker, settings: Settings
) -> None:
    spec = CATALOG.resolve("thinksound")
    assert spec is not None
    PRICE_CACHE.clear()
    RATIO_CACHE.clear()
    assert estimate_from_cache(spec, settings) is None
    async with sessionmaker() as session:  # the migration's seeded prices
        loaded = await estimate_job(session, spec, settings, video_duration_s=4.0)
    assert loaded.cost_micros
    assert estimate_from_cache(spec, settings, video_duration_s=4.0) == loaded
    RATIO_CACHE.clear()  # compute seconds come from the learned ratio: it must be cached too
    assert estimate_from_cache(spec, settings, video_duration_s=4.0) is None


async def test_output_second_estimates_count_the_samples_and_the_probed_length(
    sessionmaker: async_sessionmaker, settings: Settings
) -> None:
    spec = CATALOG.require("mirelo-sfx")
    payload = spec.upstream_payload(
        spec.validate_input({"video_url": "https://media.example/clip.mp4", "samples": 4})
    )
    PRICE_CACHE.clear()
    async with sessionmaker() as session:  # the migration's seeded prices ($0.01 / s)
        probed = await estimate_job(session, spec, settings, video_duration_s=4.0, payload=payload)
        unprobed = await estimate_job(session, spec, settings, payload=payload)
    assert (probed.unit, probed.units, probed.cost_micros) == ("output_second", 16, 160_000)
    # before the probe: the default video length, within the model's longest output (10 s)
    expected = min(settings.estimate_default_video_s, 10.0) * 4
    assert unprobed.units == pytest.approx(expected)
    # no database needed once the price is cached: no learned ratio for output seconds
    assert estimate_from_cache(spec, settings, video_duration_s=4.0, payload=payload) == probed


async def test_a_model_fal_publishes_no_price_for_has_none_in_force(
    sessionmaker: async_sessionmaker, settings: Settings
) -> None:
    spec = CATALOG.require("hunyuan-foley")
    PRICE_CACHE.clear()
    async with sessionmaker() as session:
        estimate = await estimate_job(session, spec, settings, video_duration_s=4.0)
    assert estimate.cost_micros is None  # refused where a budget is checked, never reserved at $0


@pytest.mark.parametrize(
    ("content", "code", "param"),
    [
        (b'{"model": "thinksound", "input": ', "json_invalid", None),
        (b"[]", "model_type", None),
        (b'{"model": "thinksound"}', "missing", "input"),
        (b'{"model": "thinksound", "input": {}, "colour": "red"}', "extra_forbidden", "colour"),
    ],
)
async def test_a_body_that_is_not_a_job_is_a_422(
    api: httpx.AsyncClient, tenant: TenantCreds, content: bytes, code: str, param: str | None
) -> None:
    r = await api.post(
        "/v1/jobs",
        content=content,
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 422
    problem = r.json()
    assert problem["code"] == "validation_error"
    assert problem["errors"][0]["code"] == code
    assert (problem["param"] or None) == param


@pytest.mark.parametrize(
    "authorization", [None, "Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "fk_live_abc"]
)
async def test_creating_without_a_bearer_key_is_a_401(
    api: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    r = await api.post("/v1/jobs", json=BODY, headers=headers)
    assert r.status_code == 401
    assert r.json()["code"] == "missing_api_key"
    assert r.headers["www-authenticate"] == 'Bearer realm="foley"'


async def test_creating_with_an_unknown_key_is_a_401(api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/jobs", json=BODY, headers={"Authorization": "Bearer fk_live_nope"})
    assert r.status_code == 401
    assert r.json()["code"] == "invalid_api_key"
