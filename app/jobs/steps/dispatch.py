"""Sending a job to fal: check the input, write 'sending', submit, record fal's answer.

The submit is the one step that cannot simply be repeated (fal has no idempotency key), so
'sending' is committed *before* the HTTP call: a worker that finds it after a crash knows a
request may exist, and treats it as ambiguous instead of sending another.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.catalog.registry import CATALOG, ModelSpec
from app.files import service as files_service
from app.files.service import FileNotFound, FileRemoved
from app.jobs import cache, lifecycle
from app.jobs.preflight import Checked, InputRejected, InputUnavailable, preflight
from app.jobs.steps.context import StepContext, step_written
from app.jobs.steps.split import split, splits
from app.jobs.store import AlsoInSession, known_request_ids
from app.kit.clock import utcnow
from app.metrics import SUBMIT_LATENCY
from app.models import Job, StoredFile, SubmitState
from app.upstream.errors import (
    AmbiguousSubmitError,
    PermanentUpstreamError,
    TransientUpstreamError,
    UpstreamError,
)
from app.upstream.queue import request_urls
from app.usage.estimates import estimate_job

log = structlog.get_logger(__name__)


async def dispatch(ctx: StepContext, job: Job) -> None:
    spec = CATALOG.resolve(job.model)
    assert spec is not None, f"model {job.model} left the catalog"
    starting = lifecycle.SubmitStarting()
    # The result cache, before anything leaves: an upload's key was made at accept (and is
    # looked up again here: a source may have succeeded since), a URL's once the preflight
    # hashed what it fetched. A hit sends nothing upstream (not even an upload to fal's CDN).
    if job.cache_requested and job.cache_key is not None:
        if await _answered_from_cache(ctx, job, job.cache_key, None):
            return
    if job.input_probe is None:
        checked = await _preflight(ctx, job, spec)
        if checked is None:
            return
        starting = await _starting(ctx, job, spec, checked)
        if job.cache_requested and job.cache_key is None:
            key = cache.key_of(
                model=job.model,
                endpoint=job.endpoint,
                job_input=job.input,
                upstream_payload=job.upstream_payload,
                input_sha256=checked.sha256,
            )
            if key is not None:
                if await _answered_from_cache(ctx, job, key, checked.probe):
                    return
                starting = replace(starting, cache_key=key)
    refused = await ctx.store.mark_sending(job, ctx.owner, starting)
    if refused is not None:  # canceled meanwhile, or no longer within its budget
        step_written.set(refused)
        return
    await _submit(ctx, job)


async def _answered_from_cache(
    ctx: StepContext, job: Job, key: str, probe: dict[str, Any] | None
) -> bool:
    """Whether the step is over because a stored success answered the job (then it is written
    succeeded, its files are the source's objects). Looked up in the hit's own transaction:
    the source's file rows are share-locked until it commits, so retention cannot take them
    meanwhile, and a hit costs one transaction."""

    async def find(session: AsyncSession, row: Job) -> tuple[lifecycle.Event, AlsoInSession] | None:
        hit = await cache.look_up(
            session, key, tenant_id=row.tenant_id, settings=ctx.settings, exclude=row.id
        )
        if hit is None:
            return None

        async def record_files(session: AsyncSession, row: Job) -> None:
            if row.cache_source_id == hit.source_id:  # the hit was written, not refused
                await cache.record_files(session, row, hit)

        return lifecycle.CacheHit(hit.source_id, hit.result, key, probe), record_files

    applied = await ctx.apply_found(job.id, find)
    if applied is None:
        return False
    if applied.job.cache_source_id is not None:
        log.info(
            "answered from the result cache",
            job_id=str(job.id),
            source=str(applied.job.cache_source_id),
        )
    # Either way the step is over: a hit, or the job moved on meanwhile (canceled) and the
    # transition said when it is next due.
    return True


async def _preflight(ctx: StepContext, job: Job, spec: ModelSpec) -> Checked | None:
    """Check the input before any upstream request (see app.jobs.preflight). Returns what was
    measured, or None when the step ended here (rejected, or to be retried later)."""
    upload = None
    async with ctx.sessionmaker() as session:
        if job.input_file_id is not None:
            upload = await session.get(StoredFile, job.input_file_id)
        try:
            audio_uploads = await files_service.named_audio_uploads(
                session, job.tenant_id, spec, job.input
            )
        except FileNotFound as exc:  # checked at creation; gone only if its row was removed
            await ctx.apply(job.id, lifecycle.InputRejected(exc.code, exc.detail, {}))
            return None
    try:
        return await preflight(
            spec=spec,
            job_input=job.input,
            upload=upload,
            settings=ctx.settings,
            storage=ctx.storage,
            fal=ctx.fal,
            tmp_dir=ctx.tmp_dir,
            job_id=job.id,
            secret=ctx.tokens.secret,
            audio_uploads=audio_uploads,
        )
    except InputRejected as exc:
        if splits(job, spec, exc.code, ctx.settings):
            await split(ctx, job, spec)  # too long for the model: run as segments
            return None
        log.info(
            "input rejected before any upstream request",
            job_id=str(job.id),
            code=exc.code,
            **exc.measured,
        )
        await ctx.apply(job.id, lifecycle.InputRejected(exc.code, exc.message, exc.measured))
    except (InputUnavailable, UpstreamError, FileRemoved) as exc:
        message = getattr(exc, "detail", None) or str(exc)
        log.warning("input not available yet; will retry", job_id=str(job.id), error=message)
        await ctx.apply(job.id, lifecycle.InputUnavailable(message))
    return None


async def _starting(
    ctx: StepContext, job: Job, spec: ModelSpec, checked: Checked
) -> lifecycle.SubmitStarting:
    """What the preflight measured, to be written with 'sending': the probe, the payload with
    what was measured (the output length models take; the URL fal gets for an upload), and the
    estimate re-priced by it (prices are cached: this session reads the database only when the
    cache is cold)."""
    payload = spec.payload_for_probe(job.upstream_payload, checked.duration_s)
    payload.update(checked.payload_updates)
    if checked.video_url is not None:
        payload["video_url"] = checked.video_url
    async with ctx.sessionmaker() as session:
        estimate = await estimate_job(
            session, spec, ctx.settings, video_duration_s=checked.duration_s, payload=payload
        )
    if payload == job.upstream_payload:
        payload = None
    return lifecycle.SubmitStarting(
        probe=checked.probe, upstream_payload=payload, estimated_cost_micros=estimate.cost_micros
    )


async def _submit(ctx: StepContext, job: Job) -> None:
    """Send the job ('sending' is committed) and record what fal answered."""
    settings = ctx.settings
    webhook_url = (
        ctx.tokens.webhook_url(settings.public_url, job.id) if settings.public_url else None
    )
    try:
        submitted = await ctx.fal.submit(
            job.endpoint,
            job.upstream_payload,
            webhook_url=webhook_url,
            start_timeout_s=settings.upstream_start_timeout.total_seconds(),
            # Where fal reports tags, its billing events name the tenant and the job.
            tags={"foley.tenant": str(job.tenant_id), "foley.job": str(job.id)},
        )
    except AmbiguousSubmitError as exc:
        log.warning(
            "ambiguous submit; waiting for a webhook naming the job",
            job_id=str(job.id),
            error=str(exc),
        )
        await ctx.apply(job.id, lifecycle.SubmitAmbiguous(str(exc)))
        return
    except TransientUpstreamError as exc:
        # Certainly no request at fal: back to pending, try again later.
        log.warning(
            "submit failed before reaching fal; will retry", job_id=str(job.id), error=str(exc)
        )
        retry_after = float(exc.retry_after) if exc.retry_after else None
        await ctx.apply(job.id, lifecycle.SubmitFailed(str(exc), retry_after))
        return
    except PermanentUpstreamError as exc:
        if exc.code in ("upstream_auth", "upstream_account_locked"):
            log.error(
                "fal refused our credentials", job_id=str(job.id), code=exc.code, error=str(exc)
            )
        upstream = lifecycle.upstream_error(exc.status_code, exc.error_type, exc.detail)
        await ctx.apply(
            job.id,
            lifecycle.SubmitRefused(
                exc.code, exc.message, upstream, created=exc.request_id is not None
            ),
        )
        return

    SUBMIT_LATENCY.labels(job.model).observe((utcnow() - job.created_at).total_seconds())
    applied = await ctx.apply(
        job.id,
        lifecycle.Submitted(
            request_id=submitted.request_id,
            status_url=submitted.status_url,
            response_url=submitted.response_url,
            cancel_url=submitted.cancel_url,
            queue_position=submitted.queue_position,
            watched=submitted.status_url is not None and ctx.watcher.has_room(job.id),
        ),
    )
    log.info("submitted to fal", job_id=str(job.id), fal_request_id=submitted.request_id)
    if not applied.job.status.terminal:
        ctx.watcher.watch(applied.job)


async def found_mid_send(ctx: StepContext, job: Job) -> None:
    """A worker died between writing 'sending' and learning the answer: the request may exist."""
    log.warning(
        "found a submit interrupted mid-flight; treating it as ambiguous", job_id=str(job.id)
    )
    await ctx.apply(job.id, lifecycle.FoundMidSend())


async def resolve_ambiguous(ctx: StepContext, job: Job) -> None:
    """A submit whose answer was lost: ask fal whether the request arrived (its platform API),
    rather than only wait for a webhook naming the job. Found: it is the job's request, billed
    as such. fal shows none: it never arrived, and sending it is no second paid request. fal
    cannot say: wait for a webhook until the grace runs out, then the operator's policy."""
    found = await _look_up(ctx, job) if ctx.platform is not None else None
    if isinstance(found, lifecycle.Reschedule):  # too soon to be sure it never arrived
        await ctx.apply(job.id, found)
        return
    if isinstance(found, lifecycle.Attached | lifecycle.NeverReceived):
        log.warning(
            "ambiguous submit resolved by fal's platform API",
            job_id=str(job.id),
            fal_request_id=getattr(found, "request_id", None),
            received=isinstance(found, lifecycle.Attached),
        )
        applied = await ctx.apply(job.id, found)
        if isinstance(found, lifecycle.Attached) and not applied.job.status.terminal:
            ctx.watcher.watch(applied.job)
        return
    applied = await ctx.apply(job.id, lifecycle.AmbiguousDue())
    if applied.job.submit_state is SubmitState.pending:
        log.warning("no webhook named the ambiguous submit; resubmitting once", job_id=str(job.id))


# fal lists a request once its queue has it; a request sent this long ago and not listed never
# arrived. Generous against clock skew between us and fal.
LISTED_WITHIN = timedelta(seconds=5)


async def _look_up(
    ctx: StepContext, job: Job
) -> lifecycle.Attached | lifecycle.NeverReceived | lifecycle.Reschedule | None:
    """What fal's platform API says of the job's ambiguous submit; None when it cannot say."""
    assert ctx.platform is not None
    sent = job.submitted_at or job.created_at
    now = utcnow()
    job_tag = str(job.id)
    try:
        tagged = await ctx.platform.tagged_billing_events(("foley.job", job_tag))
    except UpstreamError:
        tagged = []  # fal does not report tags for this account: the listing alone can tell
    # Only events that do carry the job's tag: never trust the filter alone.
    ids = {
        e["request_id"]
        for e in tagged
        if isinstance(e.get("request_id"), str)
        and isinstance(e.get("tags"), dict)
        and e["tags"].get("foley.job") == job_tag
    }
    try:
        if not ids:
            listed = await ctx.platform.requests_by_endpoint(
                job.endpoint, start=sent - LISTED_WITHIN, end=now + LISTED_WITHIN
            )
            mine = [r for r in listed if r.json_input == job.upstream_payload]
            ids = {r.request_id for r in mine}
            async with ctx.sessionmaker() as session:  # other jobs' identical requests
                ids -= await known_request_ids(session, ids)
    except UpstreamError as exc:
        log.warning("fal's platform API cannot say; waiting", job_id=str(job.id), error=str(exc))
        return None
    if len(ids) == 1:
        (request_id,) = ids
        urls = request_urls(ctx.settings.fal_queue_url, job.endpoint, request_id)
        return lifecycle.Attached(
            request_id,
            urls.status_url,
            urls.response_url,
            urls.cancel_url,
            completed=False,
            found_by="platform",
        )
    if not ids:
        if now - sent >= LISTED_WITHIN:
            return lifecycle.NeverReceived()
        return lifecycle.Reschedule(sent + LISTED_WITHIN)
    return None  # several identical requests: fal cannot tell which is ours
