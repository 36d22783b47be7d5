"""create_app(): the HTTP API. The worker is a separate process (app.worker), same database."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response

from app.account.endpoints import router as account_router
from app.auth.throttle import FailedAuthThrottle
from app.catalog.endpoints import router as models_router
from app.config import Settings, get_settings
from app.console.endpoints import router as console_router
from app.db.driver import EngineDriver
from app.db.engine import create_engine, create_sessionmaker, resolve_database_url
from app.db.outage import install_outage_handler
from app.files.endpoints import router as files_router
from app.files.service import UploadTooLarge
from app.health.endpoints import router as health_router
from app.jobs.endpoints import fleet_router, validate_router
from app.jobs.endpoints import router as jobs_router
from app.jobs.hub import JobHub
from app.jobs.notifier import WorkerNotifier
from app.jobs.schemas import job_create_schema
from app.jobs.steps.context import policy_of
from app.jobs.store import JobStore
from app.kit.api_docs import install_docs
from app.kit.body_limit import BodyLimitMiddleware
from app.kit.openapi import install_openapi
from app.kit.problems import install_problem_handlers, internal_error
from app.kit.process import freeze_startup_heap
from app.kit.request_id import RequestIdMiddleware
from app.metrics import JOB_WAITERS
from app.notifications.endpoints import admin_router as webhooks_admin_router
from app.notifications.endpoints import router as webhook_endpoints_router
from app.notifications.endpoints import secret_router as webhook_secret_router
from app.notifications.openapi import install_webhooks
from app.storage import storage_from_settings
from app.telemetry import tracing
from app.telemetry.exposition import ApiMetrics, check_metrics_token
from app.telemetry.gauges import DatabaseGauges
from app.telemetry.server_timing import ServerTimingMiddleware
from app.tenants.endpoints import keys_router
from app.tenants.endpoints import router as admin_router
from app.upstream.fal import FalTimeouts, build_http_client
from app.upstream.webhooks import FalWebhookVerifier
from app.usage.endpoints import admin_router as usage_admin_router
from app.usage.endpoints import router as usage_router
from app.webhooks.endpoints import router as webhooks_router
from app.webhooks.tokens import JobTokens, resolve_webhook_secret

DESCRIPTION = """
Foley sends your videos to fal.ai's video-to-audio models and gives back the video with generated
sound, and the sound on its own.

* **Jobs** are accepted at once (`202`), stored, and sent to fal by a worker. Follow them with
  `GET /v1/jobs/{id}/events` as an event stream (`Accept: text/event-stream`), hold a request
  with `Prefer: wait=N` until the job is finished, or poll `GET /v1/jobs/{id}` until `status` is
  `succeeded`, `failed`, `canceled` or `aborted`.
* **Results** are fetched from fal as soon as a job completes, measured, and served from the
  gateway (`GET /v1/files/{id}`), so they outlive fal's expiring URLs.
* **Errors** are RFC 9457 problem details with a stable `code` and the offending `param`.

Authenticate with `Authorization: Bearer <tenant API key>`; the admin API takes the admin token.
"""


def create_app(settings: Settings | None = None, *, engine: AsyncEngine | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_engine = engine is None
        if own_engine:
            url = await asyncio.to_thread(resolve_database_url, settings)
            app.state.engine = create_engine(url, pool_size=settings.db_pool_size)
        else:
            app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(app.state.engine)
        app.state.driver_pool = EngineDriver(app.state.engine)
        app.state.job_store = JobStore(
            app.state.sessionmaker,
            app.state.driver_pool,
            policy=policy_of(settings),
            bill_422=settings.bill_upstream_422,
        )
        app.state.notifier = WorkerNotifier(app.state.driver_pool)
        # One LISTEN connection (from the pool) for every event stream and held request.
        app.state.hub = hub = JobHub(app.state.engine)
        hub.start()
        JOB_WAITERS.set_function(lambda: hub.waiting)
        http = build_http_client(FalTimeouts())
        app.state.webhook_verifier = FalWebhookVerifier(
            settings.jwks_url, http, tolerance=settings.webhook_tolerance
        )
        freeze_startup_heap()
        try:
            yield
        finally:
            gc.unfreeze()
            await app.state.hub.aclose()
            await app.state.notifier.aclose()
            await http.aclose()
            if own_engine:
                await app.state.engine.dispose()

    app = FastAPI(
        title="Foley",
        version="0.1.0",
        summary="A self-hosted gateway to fal.ai's video-to-audio models.",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # The gateway's telemetry is its own: traces from app.telemetry.tracing (OpenTelemetry's
        # FastAPI instrumentation, when configured), metrics from app.metrics. FastAPI's native
        # telemetry would trace requests a second time once a tracer provider is set, and asks
        # OpenTelemetry for its three providers on every request even when none is.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.storage = storage_from_settings(settings)
    app.state.job_tokens = JobTokens(resolve_webhook_secret(settings))
    app.state.admin_auth_throttle = FailedAuthThrottle()
    # Inside the request id (added first): its 413 carries the id like every other answer.
    app.add_middleware(
        BodyLimitMiddleware,
        default_limit=settings.max_request_bytes,
        # An upload is the video plus its multipart framing; the endpoint enforces the video's
        # own limit exactly while streaming it to storage.
        limits={("POST", "/v1/files"): (settings.max_input_bytes + 64 * 1024, UploadTooLarge.code)},
        self_counting=frozenset({("POST", "/v1/files")}),
    )
    app.add_middleware(RequestIdMiddleware, on_error=internal_error)
    # Outermost: it times everything the gateway does for a request.
    app.add_middleware(ServerTimingMiddleware)
    install_problem_handlers(app)
    install_outage_handler(app)
    # The jobs routes sit on the app's own router, first, not included: routes are matched in
    # order, and FastAPI matches an included router's routes through a layer of its own on every
    # request, about a tenth of the cost of creating a job, the busiest endpoint (bench/README.md).
    # They are plain APIRoutes with full paths, so they serve and document the same way; only
    # app.dependency_overrides would not reach them (nothing here uses it).
    app.router.routes[0:0] = jobs_router.routes
    for router in (
        health_router,
        validate_router,
        files_router,
        models_router,
        webhooks_router,
        usage_router,
        webhook_endpoints_router,
        webhook_secret_router,
        account_router,
        keys_router,
        admin_router,
        usage_admin_router,
        webhooks_admin_router,
        fleet_router,
        console_router,
    ):
        app.include_router(router)

    install_docs(app)
    install_webhooks(app)
    install_openapi(app, components={"JobCreate": job_create_schema})

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        check_metrics_token(request.headers.get("authorization"), settings.metrics_token)
        exposition: ApiMetrics | None = getattr(request.app.state, "metrics", None)
        if exposition is None:  # built at the first scrape, on the pool the app runs with
            exposition = request.app.state.metrics = ApiMetrics(
                DatabaseGauges(
                    request.app.state.driver_pool,
                    max_age=settings.metrics_refresh_interval,
                    fal_slots=settings.fal_concurrency,
                    worker_stale_after=settings.worker_stale_after,
                )
            )
        return Response(await exposition.render(), media_type=CONTENT_TYPE_LATEST)

    tracing.configure("foley-api")
    tracing.instrument_app(app)

    return app
