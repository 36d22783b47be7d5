"""Every table, imported from here by every domain (and by Alembic's autogenerate)."""

from app.db.base import Base
from app.models.api_key import ApiKey
from app.models.fal_webhook_event import FalWebhookEvent, WebhookEventState
from app.models.idempotency_key import IdempotencyKey
from app.models.job import TERMINAL_STATUSES, Job, JobStatus, SubmitState
from app.models.stored_file import FileKind, StoredFile
from app.models.tenant import Tenant

__all__ = [
    "TERMINAL_STATUSES",
    "ApiKey",
    "Base",
    "FalWebhookEvent",
    "FileKind",
    "IdempotencyKey",
    "Job",
    "JobStatus",
    "StoredFile",
    "SubmitState",
    "Tenant",
    "WebhookEventState",
]
