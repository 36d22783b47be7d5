"""The result cache: a job whose input content, model, parameters and seed match a stored success
reuses that success's result at once — no request to fal, no cost at fal.

Opt in per request (``"cache": true``) or per tenant (``cache_default``; a request's
``"cache": false`` still opts out). Only jobs that asked for the cache are looked up *and* only
their successes answer others: a tenant that never opted in never has its results reused.

**The key** is the SHA-256 of canonical JSON (sorted keys, no spaces, integral floats as
integers) of:

* the input video's content: its SHA-256 (an upload's is stored when it is uploaded; a URL's is
  computed by the worker's preflight from the bytes it fetched anyway), never its URL;
* the model's fal endpoint (aliases resolve to it);
* the parameters exactly as fal would receive them (the normalized upstream payload, without the
  video's URL), with fal's documented defaults filled in for what the gateway leaves out, so a
  request that spells a default and one that omits it are the same request;
* the seed, as given.

**The seed.** Models are stochastic: without a seed, two equal requests are two samples, and
reusing one for the other would give a caller who asked for a fresh sample an old one. So a model
that takes a ``seed`` is cacheable only with an explicit seed (ThinkSound without one: the job
runs upstream as usual, ``cache: {"hit": false, "reason": "seed_required"}``). A model that takes
no seed (Kling) has nothing to pin: asking for the cache is the caller saying any earlier
result for the same input and parameters will do, so it is cacheable as asked.

**Where it is looked up.** At accept when the input's hash is already known (an upload): a hit
is decided in the accept's own transaction, and the 202 already shows the job ``succeeded``.
Otherwise in the worker's dispatch, right after the preflight hashed the fetched input and
before anything is sent: a hit makes no upstream request.

**Sources** are successes that ran upstream (a hit is never a source: ``source_job`` always
names the run), of the same tenant unless the operator shares the cache
(``FOLEY_RESULT_CACHE_SHARED``), whose files are still there: not removed by retention, and,
with ``FOLEY_RETENTION_DAYS``, completed within it.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.catalog.registry import CATALOG, ModelSpec
from app.config import Settings
from app.files import service as files
from app.jobs.store.cache import find_source
from app.kit.clock import utcnow
from app.models import Job
from app.usage.billing import CACHE_HIT
from app.usage.prices import price_at

KEY_VERSION = 1

# fal's defaults for parameters the gateway sends only when the client gives them (models.md):
# filled into the key so that spelling a default and omitting it are the same request. A model
# missing here is still cached correctly: equal requests match; a spelled-out default misses.
UPSTREAM_DEFAULTS: dict[str, dict[str, Any]] = {
    "fal-ai/thinksound": {"num_inference_steps": 24, "cfg_scale": 5, "prompt": ""},
    "fal-ai/thinksound/audio": {"num_inference_steps": 24, "cfg_scale": 5, "prompt": ""},
}
# The payload fields that carry the video (never part of the key: its content is).
VIDEO_FIELDS = ("video_url",)

SEED_REQUIRED = "seed_required"


def wanted(requested: bool | None, tenant_default: bool) -> bool:
    """Whether a job asked for the cache: the request's word, else its tenant's default."""
    return tenant_default if requested is None else requested


def skipped_reason(spec: ModelSpec, job_input: Mapping[str, Any]) -> str | None:
    """Why a job that asked for the cache cannot use it (None: it can)."""
    takes_seed = "seed" in spec.input_model.model_fields
    if takes_seed and job_input.get("seed") is None:
        return SEED_REQUIRED
    return None


def cache_key(
    *, input_sha256: str, endpoint: str, upstream_payload: Mapping[str, Any], seed: Any
) -> str:
    """The key of a job (see the module's docstring); 64 hex characters."""
    params = {k: v for k, v in upstream_payload.items() if k not in VIDEO_FIELDS}
    params = {**UPSTREAM_DEFAULTS.get(endpoint, {}), **params}
    material = {
        "v": KEY_VERSION,
        "input_sha256": input_sha256,
        "endpoint": endpoint,
        "params": _canonical(params),
        "seed": seed,
    }
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _canonical(value: Any) -> Any:
    """Numbers as one spelling: 5.0 and 5 are the same parameter."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def presented(requested: bool, source_id: Any, reason: str | None) -> dict[str, Any] | None:
    """The job's ``cache`` member: null when it did not ask for the cache."""
    if not requested:
        return None
    if source_id is not None:
        return {"hit": True, "source_job": str(source_id)}
    out: dict[str, Any] = {"hit": False}
    if reason is not None:
        out["reason"] = reason
    return out


def with_file_ids(result: Any, new_ids: Mapping[str, str]) -> Any:
    """A source's result naming the hit's own file rows instead of the source's (every
    ``file_id`` anywhere in it, whatever the model's result looks like)."""
    if isinstance(result, dict):
        out = {}
        for k, v in result.items():
            named = k == "file_id" and isinstance(v, str)
            out[k] = new_ids.get(v, v) if named else with_file_ids(v, new_ids)
        return out
    if isinstance(result, list):
        return [with_file_ids(v, new_ids) for v in result]
    return result


def key_of(
    *,
    model: str,
    endpoint: str,
    job_input: Mapping[str, Any],
    upstream_payload: Mapping[str, Any],
    input_sha256: str | None,
) -> str | None:
    """The key of a job that asked for the cache, once its input's hash is known; None when it
    cannot be cached (no hash yet, or no explicit seed for a model that takes one)."""
    spec = CATALOG.resolve(model)
    if input_sha256 is None or spec is None or skipped_reason(spec, job_input) is not None:
        return None
    return cache_key(
        input_sha256=input_sha256,
        endpoint=endpoint,
        upstream_payload=upstream_payload,
        seed=job_input.get("seed"),
    )


@dataclass(frozen=True)
class Hit:
    """A stored success that answers a job: its result naming the job's own file rows (new ids
    for the source's)."""

    source_id: uuid.UUID
    key: str
    result: dict[str, Any]
    file_ids: dict[uuid.UUID, uuid.UUID]


async def hit_price_micros(session: AsyncSession) -> int | None:
    """What a hit costs now (None: no cache_hit price in force): a hit's budget estimate."""
    price = await price_at(session, CACHE_HIT, utcnow())
    return None if price is None else price.unit_price_micros


class SourceGone(Exception):
    """The source's files were removed between the lookup and the hit's transaction."""


async def look_up(
    session: AsyncSession,
    key: str,
    *,
    tenant_id: uuid.UUID,
    settings: Settings,
    exclude: uuid.UUID | None = None,
) -> Hit | None:
    """The hit for ``key``, if a stored success answers it: the tenant's own, or any tenant's
    when the operator shares the cache; never one whose files retention removed or is due to."""
    horizon = None
    if settings.retention_days is not None:
        horizon = utcnow() - timedelta(days=settings.retention_days)
    source = await find_source(
        session,
        key,
        tenant_id=None if settings.result_cache_shared else tenant_id,
        completed_after=horizon,
        exclude=exclude,
    )
    if source is None:
        return None
    file_ids = await files.planned_shares(session, source.id)
    if file_ids is None:
        return None
    renamed = {str(old): str(new) for old, new in file_ids.items()}
    return Hit(
        source_id=source.id,
        key=key,
        result=with_file_ids(source.result, renamed),
        file_ids=file_ids,
    )


async def record_files(session: AsyncSession, job: Job, hit: Hit) -> None:
    """The hit's file rows, in the transaction that makes the job succeed (SourceGone when
    retention removed the source's files meanwhile: the transaction is then rolled back)."""
    if not await files.share_job_outputs(
        session,
        source_job_id=hit.source_id,
        tenant_id=job.tenant_id,
        job_id=job.id,
        new_ids=hit.file_ids,
    ):
        raise SourceGone(str(hit.source_id))
