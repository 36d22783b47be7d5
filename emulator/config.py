"""Settings of the fal emulator: startup-only settings and the runtime knobs.

`Knobs` holds everything the control endpoint (`POST /_emulator/control`) may change while the
emulator runs; `EmulatorSettings` adds what is fixed at start (address, data directory, keys of
the admin). Both read `FOLEY_EMULATOR_*` environment variables; CLI flags override them.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "FOLEY_EMULATOR_"


class Distribution(BaseModel):
    """A duration in seconds: fixed (`low == high`) or uniform between `low` and `high`.

    Accepted spellings: `2`, `"2"`, `"0.5..3"`, `[0.5, 3]`, `{"low": 0.5, "high": 3}`.
    """

    model_config = ConfigDict(frozen=True)

    low: float = Field(0.0, ge=0)
    high: float = Field(0.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("a duration is a number of seconds or 'low..high'")
        if isinstance(value, int | float):
            return {"low": value, "high": value}
        if isinstance(value, str):
            text = value.strip()
            low, sep, high = text.partition("..")
            try:
                return {"low": float(low), "high": float(high if sep else low)}
            except ValueError as exc:
                raise ValueError(f"cannot read {value!r}: use '2' or '0.5..3'") from exc
        if isinstance(value, list | tuple) and len(value) == 2:
            return {"low": value[0], "high": value[1]}
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Distribution:
        if self.high < self.low:
            raise ValueError("high must be >= low")
        return self

    def sample(self, rng: random.Random) -> float:
        if self.high == self.low:
            return self.low
        return rng.uniform(self.low, self.high)

    @property
    def is_zero(self) -> bool:
        return self.high == 0.0


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _parse_pairs(value: Any) -> Any:
    """`"a=1,b=2"` (CLI/env friendly) or a JSON object string or a dict."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return {}
        if text.startswith("{"):
            import json

            return json.loads(text)
        pairs = {}
        for part in text.split(","):
            key, sep, val = part.partition("=")
            if not sep:
                raise ValueError(f"expected KEY=VALUE, got {part!r}")
            pairs[key.strip()] = val.strip()
        return pairs
    return value


# Infrastructure failures the runner can be told to inject: error_type -> (status, detail).
INFRA_ERRORS: dict[str, tuple[int, str]] = {
    "request_timeout": (504, "Request timed out"),
    "startup_timeout": (504, "Runner startup timed out"),
    "runner_scheduling_failure": (503, "Failed to schedule the request on a runner"),
    "runner_connection_timeout": (503, "Timed out connecting to the runner"),
    "runner_disconnected": (503, "Runner disconnected"),
    "runner_connection_refused": (503, "Runner refused the connection"),
    "runner_connection_error": (503, "Error connecting to the runner"),
    "runner_incomplete_response": (502, "Runner returned an incomplete response"),
    "runner_server_error": (500, "Runner returned an internal server error"),
    "internal_error": (500, "Internal server error"),
    "bad_request": (400, "Bad request"),
}
# Model-level failures (a 422 `detail` list) that can be injected the same way.
MODEL_ERRORS: dict[str, str] = {
    "content_policy_violation": "The content could not be processed because it was flagged "
    "by a content checker.",
}
INGRESS_CODES = (429, 500, 502, 503, 504)


def _failure_rates(value: dict[str, float]) -> dict[str, float]:
    known = INFRA_ERRORS.keys() | MODEL_ERRORS.keys()
    for error_type, rate in value.items():
        if error_type not in known:
            raise ValueError(f"unknown error_type {error_type!r}; known: {sorted(known)}")
        if not 0 <= rate <= 1:
            raise ValueError("rates are probabilities between 0 and 1")
    if sum(value.values()) > 1 + 1e-9:
        raise ValueError("failure rates add up to more than 1")
    return value


class Knobs(BaseModel):
    """Everything that can change at run time through `POST /_emulator/control`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Queue
    concurrency: int = Field(4, ge=1, le=1000, description="account concurrency (fal: 2-40)")
    keys: Annotated[list[str] | None, NoDecode] = Field(
        None, description="accepted FAL keys; None accepts any non-empty key"
    )
    seed: int | None = Field(None, description="fault RNG seed; None picks one at start")
    queue_wait: Distribution = Field(
        default_factory=Distribution, description="minimum time each request spends IN_QUEUE"
    )
    run_time: Distribution = Field(
        default_factory=Distribution, description="simulated compute seconds added to each run"
    )
    run_time_by_model: Annotated[dict[str, Distribution], NoDecode] = Field(
        default_factory=dict, description="per-endpoint override of run_time"
    )
    log_interval_s: float = Field(0.5, gt=0, description="progress log cadence while computing")
    # Failures
    failure_rates: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict, description="error_type -> probability that a run fails with it"
    )
    failure_rates_by_model: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="per-endpoint override of failure_rates (endpoint id -> error_type -> rate)",
    )
    ingress_error_rates: Annotated[dict[int, float], NoDecode] = Field(
        default_factory=dict, description="HTTP code -> probability a submit gets an nginx error"
    )
    ambiguous_submit_rate: float = Field(0.0, ge=0, le=1)
    ambiguous_submit_hold_s: float = Field(1.0, ge=0, le=120)
    account_locked: bool = False
    result_ttl_s: float | None = Field(
        None, ge=0, description="None: fal's rule (3600 s; 360 s for results of 10 KB or more)"
    )
    validate_at_submit: bool = Field(
        True, description="schema errors answer the submit (422); False: the runner returns them"
    )
    bill_runner_422: bool = Field(
        True, description="bill compute-second models for the time spent before a runner 422"
    )
    tag_reporting: bool = Field(
        False,
        description="billing events carry the request's tags (fal: off until fal support "
        "enables it for the account)",
    )
    # Webhooks
    webhook_retry_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [0.5, 1.0, 2.0, 4.0],
        description="seconds to wait before each retry after a non-2xx answer",
    )
    webhook_timeout_s: float = Field(15.0, gt=0)
    webhook_delay: Distribution = Field(default_factory=Distribution)
    webhook_drop_rate: float = Field(0.0, ge=0, le=1)
    webhook_duplicate_rate: float = Field(0.0, ge=0, le=1)
    webhook_reorder_rate: float = Field(0.0, ge=0, le=1)
    webhook_reorder_hold_s: float = Field(2.0, ge=0)
    webhook_bad_signature_rate: float = Field(0.0, ge=0, le=1)
    webhook_payload_error_rate: float = Field(0.0, ge=0, le=1)
    # Streams and models
    sse_keepalive_s: float = Field(15.0, gt=0)
    thinksound_shortfall_s: float = Field(
        0.0, ge=0, le=5, description="cut this much from ThinkSound audio, like the real model"
    )

    @field_validator("keys", mode="before")
    @classmethod
    def _keys(cls, value: Any) -> Any:
        value = _split_csv(value)
        if value == []:
            return None
        return value

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _schedule(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("run_time_by_model", "failure_rates", "ingress_error_rates", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        return _parse_pairs(value)

    @field_validator("failure_rates_by_model")
    @classmethod
    def _failure_types_by_model(
        cls, value: dict[str, dict[str, float]]
    ) -> dict[str, dict[str, float]]:
        return {endpoint: _failure_rates(rates) for endpoint, rates in value.items()}

    @field_validator("failure_rates")
    @classmethod
    def _failure_types(cls, value: dict[str, float]) -> dict[str, float]:
        return _failure_rates(value)

    @field_validator("ingress_error_rates")
    @classmethod
    def _ingress(cls, value: dict[int, float]) -> dict[int, float]:
        for code, rate in value.items():
            if code not in INGRESS_CODES:
                raise ValueError(f"ingress error codes are {INGRESS_CODES}")
            if not 0 <= rate <= 1:
                raise ValueError("rates are probabilities between 0 and 1")
        if sum(value.values()) > 1 + 1e-9:
            raise ValueError("ingress error rates add up to more than 1")
        return value

    def run_time_for(self, endpoint_id: str) -> Distribution:
        return self.run_time_by_model.get(endpoint_id, self.run_time)

    def failure_rates_for(self, endpoint_id: str) -> dict[str, float]:
        return self.failure_rates_by_model.get(endpoint_id, self.failure_rates)


class EmulatorSettings(BaseSettings, Knobs):
    """Startup settings (env prefix `FOLEY_EMULATOR_`) plus the initial value of every knob."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    public_url: str | None = Field(
        None, description="base URL put in submit answers and file URLs; default http://host:port"
    )
    data_dir: Path = Path(".foley/emulator")
    fast: bool = Field(False, description="benchmark mode: no media work, cached outputs")
    admin_key: str | None = Field(
        None, description="admin key for /_emulator and /v1; generated and kept in data_dir"
    )
    user_id: str = Field("foley-emulator", description="X-Fal-Webhook-User-Id of webhooks")
    media_workers: int = Field(2, ge=1, le=64, description="threads doing media work")
    request_log_size: int = Field(10_000, ge=1)
    max_kept_results: int = Field(
        200_000,
        ge=1,
        description="memory bound: completed requests, usage records and webhook attempts kept",
    )
    max_download_mb: int = Field(500, ge=1, description="largest input any model will fetch")
    log_level: str = "warning"

    def knobs(self) -> Knobs:
        return Knobs.model_validate(self.model_dump(include=set(Knobs.model_fields)))

    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = self.host
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a wildcard bind is advertised as loopback
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"
