"""Typed shapes of fal's answers (the wire, parsed) and of this client's outcomes.

Wire models ignore unknown fields (fal adds fields over time; an extra key must not break a job)
and keep the whole answer in ``raw`` where the gateway may want to store it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Submitted(_Wire):
    """fal's answer to a queue submit. The three URLs are opaque: store them, use them verbatim."""

    request_id: str = Field(min_length=1)
    status_url: str = Field(min_length=1)
    response_url: str = Field(min_length=1)
    cancel_url: str = Field(min_length=1)
    queue_position: int | None = None
    # Shown in fal's webhook docs; equal to request_id unless fal retried the job.
    gateway_request_id: str | None = None


class QueueState(StrEnum):
    # There is no failed or cancelled state: a failed request is COMPLETED with ``error``.
    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"


class LogEntry(_Wire):
    message: str = ""
    level: str | None = None  # STDERR|STDOUT|ERROR|INFO|WARN|DEBUG
    source: str | None = None
    timestamp: datetime | None = None

    @field_validator("timestamp", mode="before")
    @classmethod
    def _lenient_timestamp(cls, value: Any) -> Any:
        # A log line with an odd timestamp must not fail the whole status poll.
        if value is None or isinstance(value, datetime):
            return value
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return None
        return None


class Metrics(_Wire):
    model_config = ConfigDict(extra="allow", frozen=True)

    # Seconds of runner time: the only per-request usage figure fal gives.
    inference_time: float | None = None


class QueueStatus(_Wire):
    status: QueueState
    queue_position: int | None = None  # 0-based, only while IN_QUEUE
    logs: list[LogEntry] = Field(default_factory=list)
    metrics: Metrics | None = None
    error: str | None = None  # set on COMPLETED when the request failed
    error_type: str | None = None  # machine code, e.g. runner_disconnected
    request_id: str | None = None
    raw: dict[str, Any] = Field(default_factory=dict)

    @field_validator("logs", mode="before")
    @classmethod
    def _null_logs(cls, value: Any) -> Any:
        return [] if value is None else value

    @property
    def completed(self) -> bool:
        return self.status is QueueState.COMPLETED

    @property
    def failed(self) -> bool:
        return self.completed and (self.error is not None or self.error_type is not None)

    @property
    def inference_time(self) -> float | None:
        return self.metrics.inference_time if self.metrics else None


# --- result outcomes: fal answered about the request; the worker matches on these ---------------


@dataclass(frozen=True, slots=True)
class ResultOk:
    output: dict[str, Any]
    request_id: str | None


@dataclass(frozen=True, slots=True)
class ResultFailed:
    """The model's (or fal's infrastructure's) final failure for this request."""

    status_code: int
    body: Any
    error_type: str | None
    detail: Any  # str, or pydantic's list of {loc, msg, type} for 422
    # Whether a fresh submit could reasonably succeed: fal's X-Fal-Retryable/X-Fal-Needs-Retry when
    # present, else True for 5xx (never billed, infrastructure) other than our own start timeout.
    retryable: bool
    request_id: str | None = None

    @property
    def message(self) -> str:
        if isinstance(self.detail, str):
            return self.detail
        if isinstance(self.detail, list) and self.detail:
            first = self.detail[0]
            if isinstance(first, dict) and "msg" in first:
                return str(first["msg"])
        return f"upstream answered {self.status_code}"


@dataclass(frozen=True, slots=True)
class ResultCancelled:
    """499: the request was cancelled (the app honoured a cancel while running)."""

    status_code: int
    error_type: str | None
    detail: Any
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class ResultPending:
    """400 before completion: we asked too soon (or status ran ahead). Poll again."""

    detail: Any
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class ResultNotFound:
    """404: unknown request, or its result expired (kept ~1 h; 6 min when ≥ 10 KB)."""

    detail: Any
    request_id: str | None = None


ResultOutcome = ResultOk | ResultFailed | ResultCancelled | ResultPending | ResultNotFound


class CancelOutcome(StrEnum):
    # 202: a queued request is dropped; a running one is asked to stop.
    CANCELLATION_REQUESTED = "CANCELLATION_REQUESTED"
    ALREADY_COMPLETED = "ALREADY_COMPLETED"  # 400: too late, fetch the result
    NOT_FOUND = "NOT_FOUND"  # 404
    OK = "OK"  # listed by newer docs


class Downloaded(NamedTuple):
    size: int
    content_type: str | None


# --- inbound webhooks ---------------------------------------------------------------------------

WebhookOutcome = Literal["ok", "error", "payload_unavailable"]


class FalWebhook(_Wire):
    """The body fal POSTs to ``fal_webhook``."""

    request_id: str = Field(min_length=1)
    gateway_request_id: str | None = None
    status: str  # "OK" | "ERROR" (kept open: a new value must not make a genuine call 401)
    payload: Any = None
    payload_error: str | None = None
    error: str | None = None  # e.g. "Invalid status code: 422"; then payload holds the error body

    @property
    def outcome(self) -> WebhookOutcome:
        """``payload_unavailable``: fal could not serialise the output; fetch the result instead."""
        if self.payload is None and self.payload_error is not None:
            return "payload_unavailable"
        return "ok" if self.status == "OK" else "error"


@dataclass(frozen=True, slots=True)
class VerifiedWebhook:
    request_id: str
    gateway_request_id: str | None
    status: str
    payload: Any
    payload_error: str | None
    error: str | None
    user_id: str
    timestamp: int
    body: FalWebhook
