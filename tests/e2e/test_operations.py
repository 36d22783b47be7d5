"""Operations, end to end: the metrics the API and a worker export while a job runs through the
emulator (and every metric the Grafana dashboard and the alert rules name among them), the JSON
logs' context, and one trace per job from accept to finalize."""

from __future__ import annotations

import io
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import yaml
from fastapi import APIRouter
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from app.auth.dependencies import CurrentTenant
from app.logging import configure_logging
from app.telemetry import tracing
from app.telemetry.exposition import start_metrics_server
from tests.e2e.conftest import ADMIN
from tests.support.clips import Clip
from tests.support.emulator import free_port

ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
THINKSOUND = "fal-ai/thinksound"
LIVE = ("queued", "starting", "processing")


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _exported_names(text: str) -> set[str]:
    """Every name a query may use: each sample's, and for each declared family (a labelled
    counter may have no sample yet) the names its type gives it."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count")}
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + s for s in suffixes.get(family.type, ()))
        names.update(s.name for s in family.samples)
    return names


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _named_in_deploy() -> dict[str, set[str]]:
    """The metric names each query of the dashboard and the rules uses (ours all start with
    foley_; Prometheus' own, like `up`, are not the gateway's to export)."""
    exprs: dict[str, str] = {}
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            exprs[f"alert {rule['alert']}"] = rule["expr"]
    dashboard = json.loads((DEPLOY / "grafana" / "foley.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            exprs[f"panel {panel['title']} {target['refId']}"] = target["expr"]
    # Label values in quotes are not names: dropped before looking.
    return {
        where: set(re.findall(r"\bfoley_[a-z0-9_]+", re.sub(r'"[^"]*"', "", expr)))
        for where, expr in exprs.items()
    }


async def _scrape(url: str) -> str:
    async with httpx.AsyncClient() as client:
        r = await client.get(url)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


async def test_the_metrics_of_a_job_and_every_metric_the_dashboard_and_alerts_name(
    gateway, clips: dict[str, Clip]
) -> None:
    port = free_port()
    async with gateway(
        public=True,
        worker_metrics_port=port,
        worker_metrics_host="127.0.0.1",
        metrics_refresh_interval=0,
    ) as gw:
        r = await gw.client.patch(
            f"/v1/admin/tenants/{gw.tenant_id}", json={"budget_usd": "10.00"}, headers=ADMIN_H
        )
        assert r.status_code == 200, r.text
        worker_url = f"http://127.0.0.1:{port}/metrics"
        api_before = _samples(await _scrape(f"{gw.base_url}/metrics"))
        worker_before = _samples(await _scrape(worker_url))
        job = await gw.create(
            {"model": "thinksound", "input": {"video_url": gw.video_url(clips["bounce"])}}
        )
        done = await gw.wait(job["id"])
        assert done["status"] == "succeeded", done
        api_text = await _scrape(f"{gw.base_url}/metrics")
        worker_text = await _scrape(worker_url)
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://127.0.0.1:{port}/nothing")).status_code == 404

    api, worker = _samples(api_text), _samples(worker_text)

    def delta(now: dict, before: dict, name: str, **labels: str) -> float:
        return _value(now, name, **labels) - _value(before, name, **labels)

    # Counted where they happen: the accept in the API, the rest in the worker.
    assert delta(api, api_before, "foley_jobs_created_total", model=THINKSOUND) == 1
    finished = {"model": THINKSOUND, "status": "succeeded"}
    assert delta(worker, worker_before, "foley_jobs_finished_total", **finished) == 1
    assert delta(worker, worker_before, "foley_job_submit_latency_seconds_count", model=THINKSOUND)
    assert (
        delta(
            worker,
            worker_before,
            "foley_fal_request_duration_seconds_count",
            operation="submit",
            outcome="2xx",
        )
        == 1
    )
    assert delta(worker, worker_before, "foley_worker_steps_total") >= 1
    assert _value(worker, "foley_worker_step_slots") == gw.settings.worker_concurrency
    # Read from the database by the API's scrape: nothing live, the tenant's spend and budget.
    assert _value(api, "foley_queue_depth") == 0
    assert _value(api, "foley_fal_slots_in_use") == 0
    assert _value(api, "foley_fal_slots") == gw.settings.fal_concurrency
    assert _value(api, "foley_workers_alive") >= 1  # this one (another test's may linger)
    for status in LIVE:
        assert _value(api, "foley_jobs", model=THINKSOUND, status=status) == 0
    cost = Decimal(done["usage"]["cost_usd"])
    exact = Decimal(done["usage"]["cost_usd_exact"])  # the month's spend: nano-dollars
    assert cost > 0
    tenant = {"tenant_id": gw.tenant_id}
    assert _value(api, "foley_tenant_spend_usd", **tenant) == pytest.approx(float(exact))
    assert _value(api, "foley_tenant_budget_usd", **tenant) == 10.0
    assert _value(api, "foley_tenant_budget_spent_usd", **tenant) == pytest.approx(float(cost))
    assert _value(api, "foley_tenant_budget_remaining_usd", **tenant) == pytest.approx(
        10.0 - float(cost)
    )

    exported = _exported_names(api_text) | _exported_names(worker_text)
    named = _named_in_deploy()
    assert len(named) > 20 and all(named.values()), named  # the files were read, each query too
    missing = {
        where: sorted(names - exported) for where, names in named.items() if names - exported
    }
    assert missing == {}


async def test_the_queue_gauges_show_a_job_waiting(gateway, clips: dict[str, Clip]) -> None:
    async with gateway(workers=0, metrics_refresh_interval=0) as gw:
        job = await gw.create(
            {"model": "thinksound", "input": {"video_url": gw.video_url(clips["bounce"])}}
        )
        api = _samples(await _scrape(f"{gw.base_url}/metrics"))
        assert _value(api, "foley_queue_depth") == 1
        assert _value(api, "foley_queue_oldest_age_seconds") > 0
        assert _value(api, "foley_jobs", model=THINKSOUND, status="queued") == 1
        assert _value(api, "foley_jobs", model=THINKSOUND, status="processing") == 0
        assert (await gw.client.post(f"/v1/jobs/{job['id']}/cancel", headers=gw.headers)).is_success


async def test_a_worker_metrics_port_taken_fails_the_start() -> None:
    server = await start_metrics_server("127.0.0.1", 0)
    try:
        taken = server.sockets[0].getsockname()[1]
        with pytest.raises(OSError):
            await start_metrics_server("127.0.0.1", taken)
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
def json_logs() -> Any:
    buffer = io.StringIO()
    configure_logging("INFO", "json", file=buffer, cache_loggers=False)
    try:
        yield buffer
    finally:
        structlog.reset_defaults()


async def test_log_lines_carry_the_request_the_tenant_and_the_job(
    gateway, clips: dict[str, Clip], json_logs: io.StringIO
) -> None:
    log = structlog.get_logger("tests.operations")
    probe = APIRouter()

    @probe.get("/v1/_test/log")
    async def log_something(tenant: CurrentTenant) -> dict[str, str]:
        log.info("a line from a tenant's request")
        return {"ok": "yes"}

    async with gateway(public=True) as gw:
        assert gw.app is not None
        gw.app.include_router(probe)
        r = await gw.client.get(
            "/v1/_test/log", headers={**gw.headers, "X-Request-Id": "req-ops-logs"}
        )
        assert r.status_code == 200, r.text
        job = await gw.create(
            {"model": "thinksound", "input": {"video_url": gw.video_url(clips["bounce"])}}
        )
        assert (await gw.wait(job["id"]))["status"] == "succeeded"

    lines = [json.loads(line) for line in json_logs.getvalue().splitlines() if line.strip()]
    request_line = next(e for e in lines if e["event"] == "a line from a tenant's request")
    assert request_line["request_id"] == "req-ops-logs"
    assert request_line["tenant_id"] == gw.tenant_id
    submitted = next(e for e in lines if e["event"] == "submitted to fal")
    assert submitted["job_id"] == job["id"] and submitted["tenant_id"] == gw.tenant_id
    # Every line of the job's steps (the worker's: no request) names its tenant, and the step's
    # context ends with the step: the worker's own lines name no job.
    steps = [e for e in lines if e.get("job_id") == job["id"] and "request_id" not in e]
    assert len(steps) >= 2
    assert all(e.get("tenant_id") == gw.tenant_id for e in steps)
    stopped = next(e for e in lines if e["event"] == "worker stopped")
    assert "job_id" not in stopped and "tenant_id" not in stopped


@pytest.fixture
def spans() -> Any:
    exporter = InMemorySpanExporter()
    tracing.configure("foley-test", exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.shutdown()


async def test_one_trace_follows_a_job_from_accept_to_finalize(
    gateway, clips: dict[str, Clip], spans: InMemorySpanExporter
) -> None:
    # The test's own httpx calls are not traced: instrumented, they would start an unsampled
    # trace of the test's whose context the API then honours, as it honours any caller's.
    async with gateway(public=True) as gw:
        with suppress_instrumentation():
            job = await gw.create(
                {"model": "thinksound", "input": {"video_url": gw.video_url(clips["bounce"])}}
            )
            assert (await gw.wait(job["id"]))["status"] == "succeeded"
        stored = await gw.sql("SELECT traceparent FROM jobs WHERE id = :id", id=job["id"])

    finished = spans.get_finished_spans()
    accept = next(s for s in finished if s.kind is SpanKind.SERVER and s.name == "POST /v1/jobs")
    trace_id = accept.context.trace_id
    flags = int(accept.context.trace_flags)
    assert flags & 1  # sampled
    assert stored[0][0] == f"00-{trace_id:032x}-{accept.context.span_id:016x}-{flags:02x}"
    steps = [s for s in finished if s.name.startswith("job.")]
    assert {"job.dispatch", "job.finalize"} <= {s.name for s in steps}
    assert all(s.context.trace_id == trace_id for s in steps)  # one trace for the job
    assert all(s.attributes["foley.job_id"] == job["id"] for s in steps if s.name != "job.finalize")
    dispatch = next(s for s in steps if s.name == "job.dispatch")
    assert dispatch.parent is not None and dispatch.parent.span_id == accept.context.span_id
    # fal's submit (httpx) and the database's statements (asyncpg) sit in the same trace.
    in_trace = [s for s in finished if s.context.trace_id == trace_id]
    submit = [
        s
        for s in in_trace
        if s.kind is SpanKind.CLIENT
        and s.attributes.get("http.request.method", s.attributes.get("http.method")) == "POST"
        and "fal-ai/thinksound" in str(s.attributes.get("url.full", s.attributes.get("http.url")))
    ]
    assert len(submit) == 1 and submit[0].parent.span_id == dispatch.context.span_id
    assert any(s.attributes.get("db.system") == "postgresql" for s in in_trace)
    # Nothing runs outside a request or a step in its own one-span trace (claims, beats).
    roots = [s for s in finished if s.parent is None]
    assert all(s.kind is not SpanKind.CLIENT for s in roots)
