"""Every table, imported from here by every domain (and by Alembic's autogenerate)."""

from app.db.base import Base
from app.models.api_key import ApiKey
from app.models.audit_event import AuditEvent
from app.models.budget import BudgetEvent, BudgetPeriod, RateLimitWindow
from app.models.console_session import ConsoleSession
from app.models.fal_webhook_event import FalWebhookEvent, WebhookEventState
from app.models.idempotency_key import IdempotencyKey
from app.models.job import TERMINAL_STATUSES, Job, JobStatus, SubmitState
from app.models.job_event import JobEvent
from app.models.price import Price
from app.models.stored_file import FileKind, StoredFile
from app.models.tenant import Tenant
from app.models.usage import UsageDaily, UsageRecord, UsageStatus
from app.models.webhook import (
    DeliveryStatus,
    NotificationOutbox,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSigningKey,
)
from app.models.worker_beat import WorkerBeat

__all__ = [
    "TERMINAL_STATUSES",
    "ApiKey",
    "AuditEvent",
    "Base",
    "BudgetEvent",
    "BudgetPeriod",
    "ConsoleSession",
    "DeliveryStatus",
    "FalWebhookEvent",
    "FileKind",
    "IdempotencyKey",
    "Job",
    "JobEvent",
    "JobStatus",
    "NotificationOutbox",
    "Price",
    "RateLimitWindow",
    "StoredFile",
    "SubmitState",
    "Tenant",
    "UsageDaily",
    "UsageRecord",
    "UsageStatus",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEventState",
    "WebhookSigningKey",
    "WorkerBeat",
]
