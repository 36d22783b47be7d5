"""The jobs store's transitions as plain statements on the raw connection (app.jobs.store.
transitions writes with them): the row lock, the UPDATE of a transition's columns with or
without its events, the 'sending' mark in one statement, and values as the driver takes them."""

from __future__ import annotations

import enum
import functools
import json
from typing import Any

from sqlalchemy.dialects.postgresql import JSONB

from app.jobs.store.claims import COLUMNS as _COLUMNS
from app.models import Job

LOCK_JOB = f"SELECT {_COLUMNS} FROM jobs WHERE id = $1 FOR UPDATE"  # noqa: S608 (our columns)
COLUMN_OF = {
    Job.__mapper__.get_property_by_column(column).key: column for column in Job.__table__.columns
}


@functools.cache
def update_sql(keys: tuple[str, ...]) -> str:
    """The UPDATE of these attributes of a job (always among a few sets: built once each)."""
    sets = []
    for i, key in enumerate(keys, start=2):
        column = COLUMN_OF[key]
        cast = "::jsonb" if isinstance(column.type, JSONB) else ""
        sets.append(f'"{column.name}" = ${i}{cast}')
    return f"UPDATE jobs SET {', '.join(sets)}, updated_at = now() WHERE id = $1"  # noqa: S608


@functools.cache
def update_with_events_sql(keys: tuple[str, ...]) -> str:
    """``update_sql(keys)`` (none: the row as it is) and the INSERT of the job's events, as
    one statement: $1 the job, then the attributes' values, then the tenant, the events' time,
    their seqs, types and data (JSON text), and the job's creation (the events' partition).
    A data-modifying WITH runs whether or not it is read."""
    n = len(keys) + 2
    update = f"WITH job AS ({update_sql(keys)}) " if keys else ""
    return f"""{update}
        INSERT INTO job_events (job_id, tenant_id, seq, type, data, created_at, job_created_at)
        SELECT $1, ${n}, e.seq, e.type, e.data::jsonb, ${n + 1}, ${n + 5}
        FROM unnest(${n + 2}::integer[], ${n + 3}::text[], ${n + 4}::text[]) AS e(seq, type, data)
    """  # noqa: S608 (our columns)


def param(key: str, value: Any) -> Any:
    """A value as the raw connection takes it: JSON as text, enums as their values."""
    if value is None:
        return None
    if isinstance(COLUMN_OF[key].type, JSONB):
        return json.dumps(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


# Columns as lifecycle.decide(SubmitStarting) sets them; NULL leaves one as it is (the probe and
# the payload are JSON objects, never JSON null). The event takes the next seq, in the same
# statement. Through SQLAlchemy this cost more CPU than its round trip.
MARK_SENDING_ALONE = """
    WITH job AS (
        UPDATE jobs SET submit_state = 'sending', submit_attempts = submit_attempts + 1,
            submitted_at = $3, updated_at = now(), event_seq = event_seq + 1,
            input_probe = coalesce($4::jsonb, input_probe),
            upstream_payload = coalesce($5::jsonb, upstream_payload),
            estimated_cost_micros = coalesce($6::bigint, estimated_cost_micros),
            cache_key = coalesce($9, cache_key)
        WHERE id = $1 AND lease_owner = $2 AND submit_state = 'pending'
          AND budget_period_start IS NULL
          AND status IN ('queued', 'starting', 'processing')
        RETURNING id, tenant_id, event_seq, created_at
    )
    INSERT INTO job_events (job_id, tenant_id, seq, type, data, created_at, job_created_at)
    SELECT id, tenant_id, event_seq, $7, $8::jsonb, $3, created_at FROM job
"""
