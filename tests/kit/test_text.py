"""Bad input is a 422 with a stable code and the offending param, never a 500: one rule for text
(no NUL), lengths and integer ranges read from the columns, bounded money and durations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.conftest import ADMIN, TenantCreds

NUL = "a\u0000b"
JOB_INPUT = {"video_url": "https://example.com/clip.mp4"}


def refused(r: httpx.Response, param: str, code: str) -> None:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["param"] == param, body
    assert any(e["param"] == param and e["code"] == code for e in body["errors"]), body


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (
            {"model": "thinksound", "input": {**JOB_INPUT, "prompt": NUL}},
            "input.prompt",
            "text_nul",
        ),
        ({"model": NUL, "input": JOB_INPUT}, "model", "text_nul"),
        ({"model": "x" * 201, "input": JOB_INPUT}, "model", "string_too_long"),
        (
            {"model": "thinksound", "input": JOB_INPUT, "metadata": {"k": NUL}},
            "metadata.k",
            "text_nul",
        ),
        (
            {"model": "thinksound", "input": JOB_INPUT, "metadata": {NUL: "v"}},
            f"metadata.{NUL}.[key]",
            "text_nul",
        ),
        (
            {"model": "thinksound", "input": JOB_INPUT, "metadata": {"k": "v" * 501}},
            "metadata.k",
            "string_too_long",
        ),
        (
            {"model": "thinksound", "input": JOB_INPUT, "metadata": {"k" * 41: "v"}},
            f"metadata.{'k' * 41}.[key]",
            "string_too_long",
        ),
        (
            {
                "model": "thinksound",
                "input": JOB_INPUT,
                "metadata": {f"k{i}": "v" for i in range(51)},
            },
            "metadata",
            "too_long",
        ),
        (
            {"model": "thinksound", "input": {"video_url": "https://example.com/a\u0000.mp4"}},
            "input.video_url",
            "text_nul",
        ),
    ],
)
async def test_job_text_is_refused_by_rule(
    api: httpx.AsyncClient, tenant: TenantCreds, body: dict, param: str, code: str
) -> None:
    refused(await api.post("/v1/jobs", json=body, headers=tenant.headers), param, code)


async def test_metadata_at_its_limits_is_accepted(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    metadata = {f"{i:02d}" + "k" * 38: "v" * 500 for i in range(50)}
    body = {"model": "thinksound", "input": JOB_INPUT, "metadata": metadata}
    r = await api.post("/v1/jobs?dry_run=true", json=body, headers=tenant.headers)
    assert r.status_code == 200, r.text


async def test_query_text_is_refused_by_rule(api: httpx.AsyncClient, tenant: TenantCreds) -> None:
    refused(await api.get("/v1/jobs?model=a%00b", headers=tenant.headers), "model", "text_nul")
    refused(await api.get("/v1/admin/prices?model=a%00b", headers=ADMIN), "model", "text_nul")
    r = await api.get("/v1/admin/prices", params={"model": "m" * 10_000}, headers=ADMIN)
    refused(r, "model", "string_too_long")
    job = "00000000-0000-0000-0000-000000000000"
    r = await api.get(f"/v1/jobs/{job}/events?after={2**31}", headers=tenant.headers)
    refused(r, "after", "less_than_equal")


async def test_tenant_and_key_names_are_refused_by_rule(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    refused(
        await api.post("/v1/admin/tenants", json={"name": NUL}, headers=ADMIN), "name", "text_nul"
    )
    r = await api.post("/v1/admin/tenants", json={"name": "n" * 201}, headers=ADMIN)
    refused(r, "name", "string_too_long")
    r = await api.patch(f"/v1/admin/tenants/{tenant.id}", json={"name": NUL}, headers=ADMIN)
    refused(r, "name", "text_nul")
    r = await api.post(f"/v1/admin/tenants/{tenant.id}/keys", json={"name": NUL}, headers=ADMIN)
    refused(r, "name", "text_nul")


@pytest.mark.parametrize(
    ("patch", "param", "code"),
    [
        ({"rate_limit_per_minute": 2**31}, "rate_limit_per_minute", "less_than_equal"),
        ({"max_in_flight": 2**31}, "max_in_flight", "less_than_equal"),
        ({"max_in_flight": 2**63}, "max_in_flight", "less_than_equal"),
        ({"budget_usd": "1e30"}, "budget_usd", "invalid_amount"),
        ({"budget_usd": "1e999999999"}, "budget_usd", "invalid_amount"),
        ({"budget_usd": "1000000000.000001"}, "budget_usd", "amount_too_large"),
        ({"budget_usd": "-0"}, "budget_usd", "negative_amount"),
        ({"budget_usd": "-1"}, "budget_usd", "negative_amount"),
        ({"budget_usd": "NaN"}, "budget_usd", "invalid_amount"),
        ({"budget_usd": "0.0000001"}, "budget_usd", "amount_too_precise"),
        ({"budget_period": "infd"}, "budget_period", "value_error"),
        ({"budget_period": "1e10d"}, "budget_period", "value_error"),
        ({"budget_period": "1" * 21}, "budget_period", "value_error"),
        ({"budget_period": "3651d"}, "budget_period", "value_error"),
        ({"budget_thresholds": list(range(1, 30))}, "budget_thresholds", "too_long"),
        ({"weight": 0.0001}, "weight", "greater_than_equal"),
    ],
)
async def test_tenant_limits_are_bounded_by_their_columns(
    api: httpx.AsyncClient, tenant: TenantCreds, patch: dict, param: str, code: str
) -> None:
    r = await api.patch(f"/v1/admin/tenants/{tenant.id}", json=patch, headers=ADMIN)
    refused(r, param, code)


async def test_tenant_limits_at_their_bounds_are_stored(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    patch = {
        "rate_limit_per_minute": 2**31 - 1,
        "max_in_flight": 2**31 - 1,
        "budget_usd": "1000000000",
        "budget_period": "3650d",
    }
    r = await api.patch(f"/v1/admin/tenants/{tenant.id}", json=patch, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["budget_usd"] == "1000000000.000000"
    assert r.json()["budget"]["period_end"]


async def test_prices_are_for_known_models_and_bounded(api: httpx.AsyncClient) -> None:
    price = {"model": "nope2", "unit": "video", "unit_price_usd": "0.01"}
    r = await api.post("/v1/admin/prices", json=price, headers=ADMIN)
    refused(r, "model", "unknown_model")
    assert r.json()["code"] == "unknown_model"
    for amount, code in (
        ("1e30", "invalid_amount"),
        ("2000000000", "amount_too_large"),
        ("-0.01", "negative_amount"),
    ):
        price = {"model": "thinksound", "unit": "compute_second", "unit_price_usd": amount}
        r = await api.post("/v1/admin/prices", json=price, headers=ADMIN)
        refused(r, "unit_price_usd", code)
    price = {"model": "m" * 10_000, "unit": "video", "unit_price_usd": "0.01"}
    refused(
        await api.post("/v1/admin/prices", json=price, headers=ADMIN), "model", "string_too_long"
    )


async def test_a_price_by_alias_is_stored_and_listed_under_the_model_id(
    api: httpx.AsyncClient,
) -> None:
    when = "2031-01-01T00:00:00Z"
    price = {
        "model": "thinksound",
        "unit": "compute_second",
        "unit_price_usd": "0.002",
        "effective_from": when,
    }
    r = await api.post("/v1/admin/prices", json=price, headers=ADMIN)
    assert r.status_code == 201, r.text
    assert r.json()["model"] == "fal-ai/thinksound"
    listed = (await api.get("/v1/admin/prices?model=thinksound", headers=ADMIN)).json()["data"]
    assert listed and {p["model"] for p in listed} == {"fal-ai/thinksound"}
    assert "0.002000" in {p["unit_price_usd"] for p in listed}


async def test_a_key_cannot_be_created_already_expired(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    r = await api.post(
        f"/v1/admin/tenants/{tenant.id}/keys", json={"expires_at": past}, headers=ADMIN
    )
    refused(r, "expires_at", "key_already_expired")
    # Without an offset a timestamp is UTC (it used to be compared with an aware one: a 500).
    naive = (datetime.now(UTC) + timedelta(days=1)).replace(tzinfo=None).isoformat()
    r = await api.post(
        f"/v1/admin/tenants/{tenant.id}/keys", json={"expires_at": naive}, headers=ADMIN
    )
    assert r.status_code == 201, r.text
    assert r.json()["expires_at"].endswith(("Z", "+00:00"))


async def test_timestamps_are_iso_8601_only(api: httpx.AsyncClient, tenant: TenantCreds) -> None:
    # pydantic alone would read a number as Unix time (0.5 → 1970)
    for value in ("0.5", "1700000000"):
        r = await api.get("/v1/jobs", params={"created_before": value}, headers=tenant.headers)
        refused(r, "created_before", "datetime_format")
    r = await api.get(
        "/v1/jobs", params={"created_before": "2031-01-01T00:00:00"}, headers=tenant.headers
    )
    assert r.status_code == 200


async def test_a_usage_range_backwards_is_a_422(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    r = await api.get("/v1/usage?from=2031-02-01&to=2031-01-01", headers=tenant.headers)
    refused(r, "to", "invalid_range")
    r = await api.get("/v1/usage?from=2000-01-01&to=2031-01-01", headers=tenant.headers)
    refused(r, "to", "range_too_long")


async def test_an_idempotency_key_is_checked_on_a_dry_run_too(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    body = {"model": "thinksound", "input": JOB_INPUT}
    headers = {**tenant.headers, "Idempotency-Key": "k" * 256}
    r = await api.post("/v1/jobs?dry_run=true", json=body, headers=headers)
    assert r.status_code == 422
    assert r.json()["code"] == "idempotency_key_invalid"
    assert r.json()["param"] == "Idempotency-Key"


async def test_true_and_false_are_not_numbers(api: httpx.AsyncClient, tenant: TenantCreds) -> None:
    body = {"model": "thinksound", "input": {**JOB_INPUT, "seed": True}}
    refused(
        await api.post("/v1/jobs", json=body, headers=tenant.headers),
        "input.seed",
        "bool_not_number",
    )
    r = await api.patch(
        f"/v1/admin/tenants/{tenant.id}", json={"rate_limit_per_minute": True}, headers=ADMIN
    )
    refused(r, "rate_limit_per_minute", "bool_not_number")
