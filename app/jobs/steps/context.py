"""What a step works with: the worker's clients, and its lease on the job."""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.jobs import lifecycle
from app.jobs.store import Also, Applied, Find, JobStore
from app.models import Job, StoredFile
from app.storage import Storage
from app.upstream.fal import FalClient
from app.upstream.platform import PlatformClient
from app.webhooks import service as webhooks
from app.webhooks.tokens import JobTokens

# The last transition a step wrote (None: none). Each step runs in a task of its own, so the
# worker reads its step's value: when the job is next due (it looks again then instead of
# claiming at once, since nothing of this job is due, or only at its next poll), or that it ended.
step_written: ContextVar[Applied | None] = ContextVar("step_written", default=None)


class Watcher:
    """Follows fal's status stream of jobs at fal (app.worker.watch); the steps hand it jobs."""

    def watch(self, job: Job) -> bool:
        """Follow ``job``'s status; False when it cannot (no room, no status URL)."""
        return False

    def has_room(self, job_id: uuid.UUID) -> bool:
        """Whether ``watch`` would follow this job now (streams on, room left)."""
        return False


@dataclass
class StepContext:
    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    store: JobStore
    fal: FalClient
    storage: Storage
    tokens: JobTokens
    owner: str
    tmp_dir: Path
    watcher: Watcher
    # fal's platform API, to learn whether an ambiguous submit arrived (None: not configured).
    platform: PlatformClient | None = None

    async def apply(
        self, job_id: uuid.UUID, event: lifecycle.Event, *, also: Also | None = None
    ) -> Applied:
        """Write ``event``'s transition under our lease (LeaseLost if it is not ours any more)."""
        applied = await self.store.apply(job_id, event, owner=self.owner, also=also)
        step_written.set(applied)
        return applied

    async def apply_found(self, job_id: uuid.UUID, find: Find) -> Applied | None:
        """``apply`` of what ``find`` reads in the transition's own transaction (None: it found
        nothing, nothing was written and the lease is still ours)."""
        applied = await self.store.apply_found(job_id, find, owner=self.owner)
        if applied is not None:
            step_written.set(applied)
        return applied

    async def input_upload(self, job: Job) -> StoredFile | None:
        """The tenant's upload the job's input is (None: the input is a URL, or the upload's
        row is gone)."""
        if job.input_file_id is None:
            return None
        async with self.sessionmaker() as session:
            return await session.get(StoredFile, job.input_file_id)


def webhook_processed(event_id: uuid.UUID | None) -> Also | None:
    """The webhook event that told us how the job ended, marked processed in the job's
    transition."""
    if event_id is None:
        return None

    async def mark(conn: asyncpg.Connection, job: Job) -> None:
        await webhooks.mark_processed(conn, event_id)

    return mark


def platform_key(settings: Settings) -> str | None:
    """The key for fal's platform API: the admin key, else FAL_KEY (admin-scope keys only)."""
    key = settings.fal_admin_key or settings.fal_key
    return key.get_secret_value() if key is not None else None


def policy_of(settings: Settings) -> lifecycle.Policy:
    """The lifecycle's view of the settings. After a submit nobody follows on its status stream,
    the first look is the webhook's grace when a webhook will tell, the shortest poll
    otherwise (a followed one is looked at every ``poll_interval_max``, as a safety net)."""
    return lifecycle.Policy(
        poll_min=settings.poll_interval_min,
        poll_max=settings.poll_interval_max,
        first_look=settings.webhook_grace if settings.public_url else settings.poll_interval_min,
        ambiguous_grace=settings.ambiguous_submit_grace,
        ambiguous_lookup=settings.ambiguous_lookup_delay if platform_key(settings) else None,
        retry_ambiguous=settings.ambiguous_submit_policy.value == "retry",
        max_attempts=settings.fallback_max_attempts,
    )
