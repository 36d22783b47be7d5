"""A result-cache hit decided: the job ends succeeded with a stored success's result, billed at
the cache's own price (app.usage.ledger), never fal's; only for a job no request of which may
exist at fal."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.jobs.lifecycle import events as ev
from app.jobs.lifecycle.endings import finish
from app.jobs.lifecycle.transitions import JobLike, Transition
from app.models.job import JobStatus, SubmitState
from app.usage.billing import CACHE_HIT, Outcome


def cache_hit(job: JobLike, event: ev.CacheHit, now: datetime) -> Transition:
    if (
        job.status is not JobStatus.queued
        or job.submit_state is not SubmitState.pending
        or job.submit_attempts > 0
    ):
        # A request may exist at fal (or another step is sending it, or one was sent before: an
        # ambiguous submit the retry policy sends again may still run): that run decides it.
        return Transition(next_action_at=now)
    changes: dict[str, Any] = {
        "result": event.result,
        "cache_key": event.cache_key,
        "cache_source_id": event.source_job,
    }
    if event.probe is not None:
        changes["input_probe"] = event.probe
    return finish(
        job,
        now,
        JobStatus.succeeded,
        billed=Outcome(CACHE_HIT),
        changes=changes,
        before=(("job.cache_hit", {"source_job": str(event.source_job)}),),
    )
