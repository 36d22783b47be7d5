"""The gateway's one settings class.

Every value comes from the environment (prefix ``FOLEY_``; fal's own ``FAL_KEY`` is read as is) or
from a ``.env`` file. Durations are ``timedelta`` given as seconds (``30``, ``2.5``), with a unit
(``500ms``, ``30s``, ``5m``, ``1h``, ``7d``) or in ISO 8601 (``PT30S``); secrets are ``SecretStr``.
In production it refuses to start with a missing or placeholder secret, so a copy-pasted example
config cannot reach production.
"""

from __future__ import annotations

import re
import tomllib
from datetime import timedelta
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Values people paste from examples; never acceptable as a real secret.
PLACEHOLDER_SECRETS = frozenset(
    {"", "changeme", "change-me", "secret", "admin", "password", "foley", "test", "xxx", "todo"}
)


PROJECT_NAME = "foley"


def find_checkout(start: Path | None = None) -> Path | None:
    """The nearest directory at or above ``start`` (default: the working directory) holding
    Foley's ``pyproject.toml``: the checkout (or the image's /app) a command runs in."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / "pyproject.toml"
        if not candidate.is_file():
            continue
        try:
            project = tomllib.loads(candidate.read_text()).get("project", {})
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue
        if project.get("name") == PROJECT_NAME:
            return directory
    return None


def home_dir() -> Path:
    """Where the ``.env`` and the ``.foley`` data directory are looked for: the checkout found
    from the working directory, else the working directory itself. So `foley tenants list` run
    from ``docs/`` or ``/tmp/x`` inside a checkout sees what `make up` in its root made."""
    return find_checkout() or Path.cwd()


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: Any) -> Any:
    """Seconds as a number ("2.5"), a number with a unit ("500ms", "30s", "5m", "1h", "7d"), or
    anything pydantic's timedelta takes (ISO 8601 "PT30S", "00:00:30")."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", value)
        if m:
            return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2) or "s"])
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class AmbiguousSubmitPolicy(StrEnum):
    """What to do when a submit may have reached fal but no answer came back.

    ``fail`` never risks a second paid request; ``retry`` resubmits once after the grace period.
    """

    fail = "fail"
    retry = "retry"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FOLEY_", env_file=".env", extra="ignore", populate_by_name=True
    )

    env: Environment = Environment.development
    log_level: str = "INFO"
    log_format: Literal["console", "json"] = "console"
    metrics_refresh_interval: Duration = Field(
        default=timedelta(seconds=15),
        description="The API's gauges of the database (jobs, queue, slots, spend, budgets) are "
        "read again by a scrape when older than this.",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="When set, the API's GET /metrics requires 'Authorization: Bearer <this>' "
        "(it shows tenants' ids and spend).",
    )

    # --- storage of state -------------------------------------------------------------------
    database_url: str | None = Field(
        default=None,
        description="postgresql://… of an external Postgres ≥ 15; absent → embedded server.",
    )
    data_dir: Path = Field(
        default_factory=lambda: home_dir() / ".foley",
        description="Embedded database, files, development secrets; default <checkout>/.foley.",
    )
    http_head_timeout: Duration = Field(
        default=timedelta(seconds=10),
        description="A request's line and headers must arrive within this, or the connection "
        "is closed (a slow client cannot hold connections open).",
    )
    http_body_timeout: Duration = Field(
        default=timedelta(seconds=30),
        description="At most this between two pieces of a request's body while the gateway "
        "reads it (a pace, not a total: slow uploads pass, stalled ones get 408).",
    )
    db_pool_size: int = Field(
        default=20, ge=1, description="The API's database connections at most (one pool)."
    )

    # --- fal -------------------------------------------------------------------------------
    fal_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("FAL_KEY", "FOLEY_FAL_KEY")
    )
    fal_queue_url: str = "https://queue.fal.run"
    fal_rest_url: str = "https://rest.fal.ai"
    fal_cdn_url: str = "https://v3.fal.media"
    fal_jwks_url: str | None = Field(
        default=None, description="Defaults to <fal_rest_url>/.well-known/jwks.json."
    )
    fal_platform_url: str = "https://api.fal.ai/v1"
    fal_concurrency: int = Field(
        default=10, ge=1, description="Requests in flight at fal at once, across all workers."
    )
    upstream_connect_timeout: Duration = timedelta(seconds=5)
    upstream_read_timeout: Duration = timedelta(seconds=30)
    upstream_start_timeout: Duration = Field(
        default=timedelta(minutes=15),
        description="Sent as X-Fal-Request-Timeout: fal gives up if the job has not started.",
    )

    # --- webhooks and polling -----------------------------------------------------------------
    public_url: str | None = Field(
        default=None, description="Where fal can reach this gateway; absent → polling only."
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="HMAC key for the job token carried in fal webhook URLs."
    )
    webhook_tolerance: Duration = timedelta(seconds=300)
    poll_interval_min: Duration = timedelta(seconds=1)
    poll_interval_max: Duration = timedelta(seconds=30)
    webhook_grace: Duration = Field(
        default=timedelta(seconds=30),
        description="With a public URL, how long to wait for a webhook before polling.",
    )
    status_streams: bool = Field(
        default=True,
        description="Follow fal's status stream of each job at fal (live status, logs and "
        "completion within about a second); off, jobs are polled (and told by webhooks).",
    )
    status_streams_max: int = Field(
        default=200,
        ge=0,
        description="Status streams one worker keeps open at most; jobs past it are polled.",
    )
    ambiguous_submit_grace: Duration = timedelta(seconds=120)
    ambiguous_lookup_delay: Duration = Field(
        default=timedelta(seconds=10),
        description="After an ambiguous submit, when to ask fal's platform API whether the "
        "request arrived (needs FOLEY_FAL_ADMIN_KEY or an admin-scope FAL_KEY).",
    )
    ambiguous_submit_policy: AmbiguousSubmitPolicy = AmbiguousSubmitPolicy.fail
    fallback_max_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Models one job that names several may run on at most (the first included).",
    )
    job_timeout: Duration = Field(
        default=timedelta(hours=1), description="A job still unfinished after this fails."
    )

    # --- worker ------------------------------------------------------------------------------
    worker_concurrency: int = Field(default=8, ge=1)
    worker_shutdown_grace: Duration = Field(
        default=timedelta(seconds=30),
        description="On SIGTERM, how long running steps may finish before their leases are "
        "given back (a container's termination grace must exceed it).",
    )
    lease_duration: Duration = timedelta(seconds=60)
    worker_poll_interval: Duration = Field(
        default=timedelta(seconds=2), description="Fallback wake-up when no NOTIFY arrives."
    )
    worker_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Serve the worker's Prometheus metrics at http://<host>:<port>/metrics; off "
        "when unset (several workers on one host would fight over one port).",
    )
    worker_metrics_host: str = Field(
        default="0.0.0.0",  # noqa: S104 (a scraper comes from another host: the point of it)
        description="Address the worker's metrics endpoint binds.",
    )
    worker_stale_after: Duration = Field(
        default=timedelta(seconds=5),
        description="A worker that has not beaten for this long is taken for dead: its jobs fal "
        "reported complete are taken over at once (the others wait out their lease).",
    )
    max_output_bytes: int = 512 * 1024 * 1024
    housekeeping_interval: Duration = Field(
        default=timedelta(seconds=60),
        description="Pruning, retention and settling of unpriced usage, this often.",
    )

    # --- media: inputs, uploads, storage, retention ------------------------------------------
    max_input_bytes: int = Field(
        default=200 * 1024 * 1024, description="Largest input video fetched or uploaded."
    )
    input_fetch_timeout: Duration = timedelta(seconds=120)
    outbound_allow_loopback: bool | None = Field(
        default=None,
        description="Fetch tenant URLs on loopback; default: only in development (the emulator).",
    )
    outbound_allow_private: bool = False
    outbound_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="CIDRs or host names always allowed (comma-separated)."
    )
    upload_delivery: Literal["fal_cdn", "signed_url"] = Field(
        default="fal_cdn",
        description="How an uploaded file reaches fal: its CDN, or a signed gateway URL "
        "(needs FOLEY_PUBLIC_URL).",
    )
    signed_url_ttl: Duration = timedelta(hours=2)
    storage_backend: Literal["local", "s3"] = "local"
    storage_presign: bool = Field(
        default=False, description="Serve downloads by redirect to a presigned URL (S3)."
    )
    s3_bucket: str | None = None
    s3_prefix: str = ""
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_force_path_style: bool = False
    thinksound_max_duration_s: float = Field(
        default=30.0, gt=0, description="Longest input video sent to ThinkSound."
    )
    max_video_s: float = Field(
        default=600.0,
        gt=0,
        le=3600,
        description="Longest video a job takes: one longer than its model takes is split into "
        "segments (one request each, their sound stitched), up to this length.",
    )
    segment_overlap_s: float = Field(
        default=1.0,
        ge=0.5,
        le=5.0,
        description="How much neighbouring segments of a split video overlap: their sound is "
        "crossfaded there.",
    )
    retention_days: float | None = Field(
        default=None, gt=0, description="Delete inputs and outputs after this many days."
    )
    result_cache_shared: bool = Field(
        default=False,
        description="The result cache answers a job with another tenant's stored success "
        "(both asked for the cache). Off: never across tenants.",
    )

    # --- money, limits ------------------------------------------------------------------------
    fal_admin_key: SecretStr | None = Field(
        default=None, description="Key for fal's platform usage API (reconcile); else FAL_KEY."
    )
    bill_upstream_422: bool = Field(
        default=True,
        description="Charge tenants the compute seconds a model spent before it answered 422 "
        "(fal bills GPU time spent; per-video models: nothing). Off: such 422s cost nothing, "
        "and reconcile shows what fal billed for them.",
    )
    estimate_default_video_s: float = Field(
        default=10.0, gt=0, description="Video length assumed by estimates when not probed."
    )
    estimate_compute_per_video_second: float = Field(
        default=1.0, gt=0, description="ThinkSound compute s per video s until enough are seen."
    )
    estimate_min_samples: int = Field(default=5, ge=1)
    rate_limit_per_minute: int | None = Field(
        default=None, ge=1, description="Default job creations per tenant per minute."
    )
    max_in_flight_per_tenant: int | None = Field(
        default=None, ge=1, description="Default cap on a tenant's requests at fal at once."
    )
    usage_retention: Duration = Field(
        default=timedelta(days=400),
        description="Settled ledger rows older than this are pruned (daily rollups stay).",
    )
    auth_cache_ttl: Duration = Field(
        default=timedelta(seconds=2),
        description="How long a process reuses an API key lookup (0 disables).",
    )
    key_touch_interval: Duration = Field(
        default=timedelta(seconds=60), description="How often a key's last_used_at is written."
    )
    console_session_ttl: Duration = Field(
        default=timedelta(hours=12),
        description="How long a console sign-in lasts (the session then ends; sign in again).",
    )

    # --- outbound webhooks: telling tenants (app.notifications) ------------------------------
    tenant_webhook_retry_schedule: Annotated[list[Duration], NoDecode] = Field(
        default_factory=lambda: [
            timedelta(0),
            timedelta(seconds=5),
            timedelta(minutes=5),
            timedelta(minutes=30),
            timedelta(hours=2),
            timedelta(hours=5),
            timedelta(hours=10),
            timedelta(hours=10),
        ],
        description="When each attempt of a delivery is made, after the one before "
        "(comma-separated durations; the first is the delay of the first attempt).",
    )
    tenant_webhook_timeout: Duration = Field(
        default=timedelta(seconds=10),
        description="A receiver must answer 2xx within this; longer is a failed attempt.",
    )
    tenant_webhook_lease: Duration = Field(
        default=timedelta(seconds=60),
        description="A delivery being attempted is held this long: a worker that died "
        "mid-attempt leaves it to another after it (longer than the timeout).",
    )
    tenant_webhook_concurrency: int = Field(
        default=64, ge=1, description="Deliveries one worker attempts at once."
    )
    tenant_webhook_receiver_concurrency: int = Field(
        default=10,
        ge=1,
        description="Deliveries in flight to one receiver at once, across all workers.",
    )
    tenant_webhook_disable_after: Duration = Field(
        default=timedelta(days=5),
        description="An endpoint whose every attempt has failed for this long is disabled.",
    )
    tenant_webhook_retention: Duration = Field(
        default=timedelta(days=30),
        description="Finished deliveries and their attempts are kept this long.",
    )
    tenant_webhook_logs_interval: Duration = Field(
        default=timedelta(milliseconds=500),
        description="job.logs is sent at most this often per job and receiver.",
    )

    # --- telling the caller: the event stream, held requests --------------------------------
    event_stream_keepalive: Duration = Field(
        default=timedelta(seconds=15),
        gt=timedelta(0),
        description="An idle event stream gets a comment this often (proxies keep it open).",
    )
    prefer_wait_max: Duration = Field(
        default=timedelta(seconds=60),
        ge=timedelta(0),
        le=timedelta(seconds=60),
        description="Longest a `Prefer: wait` request is held (and its default).",
    )

    # --- access -------------------------------------------------------------------------------
    admin_token: SecretStr | None = None
    max_request_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest request body but uploads (JSON, fal's webhooks); larger → 413.",
    )
    idempotency_retention: Duration = timedelta(hours=24)

    @field_validator("fal_queue_url", "fal_rest_url", "fal_cdn_url", "fal_platform_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return v.rstrip("/")

    @field_validator("public_url", "fal_jwks_url")
    @classmethod
    def _optional_url(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Settings:
        if self.env is not Environment.production:
            return self
        for name in ("admin_token", "webhook_secret", "fal_key"):
            secret: SecretStr | None = getattr(self, name)
            if secret is None or secret.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
                raise ValueError(f"{name} must be set to a real secret when env=production")
        if self.database_url is None:
            raise ValueError("database_url must be set when env=production")
        return self

    @field_validator("tenant_webhook_retry_schedule", mode="before")
    @classmethod
    def _durations_csv(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [part.strip() for part in v.split(",") if part.strip()]
        return v

    @model_validator(mode="after")
    def _webhook_schedule(self) -> Settings:
        if not self.tenant_webhook_retry_schedule:
            raise ValueError("tenant_webhook_retry_schedule needs at least one attempt")
        if self.tenant_webhook_lease <= self.tenant_webhook_timeout:
            raise ValueError("tenant_webhook_lease must be longer than tenant_webhook_timeout")
        return self

    @field_validator("outbound_allowlist", mode="before")
    @classmethod
    def _csv(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [part.strip() for part in v.split(",") if part.strip()]
        return v

    @property
    def allow_loopback(self) -> bool:
        if self.outbound_allow_loopback is not None:
            return self.outbound_allow_loopback
        return self.env is not Environment.production

    @property
    def jwks_url(self) -> str:
        return self.fal_jwks_url or f"{self.fal_rest_url}/.well-known/jwks.json"

    @property
    def uses_embedded_db(self) -> bool:
        return self.database_url is None


@lru_cache
def get_settings() -> Settings:
    """The process's settings: the environment, then the ``.env`` of `home_dir()`."""
    return Settings(_env_file=home_dir() / ".env")  # type: ignore[call-arg]
