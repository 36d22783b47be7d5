"""The ledger as CSV, one row per billable request, written by Postgres itself.

``COPY (SELECT …) TO STDOUT (FORMAT csv, HEADER)`` formats every value in the server and the
gateway only passes its bytes on: decoding 340k rows into Python objects and writing them back
out as text through ``csv`` kept the API at 92 % of a core for 47,000 rows/s
(bench/usage_bench.py). The SELECT renders each value as the API does: money as USD with six
decimals (``cost_usd_exact``: fal's nine), units without trailing zeros, timestamps in ISO 8601
UTC (``2026-12-07T15:01:57.123456+00:00``, no fraction when it is zero), booleans as
``true``/``false``, a missing value as an empty field.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

from app.db.driver import DriverPool

CSV_COLUMNS = [
    "tenant_id",
    "request_id",
    "job_id",
    "model",
    "endpoint",
    "unit",
    "units",
    "unit_price_usd",
    "cost_usd",
    "estimated_cost_usd",
    "status",
    "outcome",
    "flagged",
    "orphan",
    "created_at",
    "settled_at",
    "cost_usd_exact",
]


def _iso(column: str) -> str:
    # What Python's isoformat() writes for a UTC datetime; the fraction is the only '.' in it.
    return (
        f"replace(to_char({column} AT TIME ZONE 'UTC', "
        f"'YYYY-MM-DD\"T\"HH24:MI:SS.US'), '.000000', '') || '+00:00'"
    )


# A bigint times a numeric of scale 6 (or 9) is a numeric of that scale: "0.035000", exactly.
_SELECT = f"""
SELECT tenant_id AS tenant_id,
       upstream_request_id AS request_id,
       job_id AS job_id,
       model AS model,
       endpoint AS endpoint,
       unit AS unit,
       trim_scale(units) AS units,
       unit_price_micros * 0.000001 AS unit_price_usd,
       cost_micros * 0.000001 AS cost_usd,
       estimated_cost_micros * 0.000001 AS estimated_cost_usd,
       status AS status,
       outcome AS outcome,
       flagged::text AS flagged,
       orphan::text AS orphan,
       {_iso("created_at")} AS created_at,
       {_iso("settled_at")} AS settled_at,
       cost_nanos * 0.000000001 AS cost_usd_exact
FROM usage_records
WHERE created_at >= $1 AND created_at < $2{{tenant}}
-- the table's columns: a bare created_at here would name the output's text of that name
ORDER BY usage_records.created_at, usage_records.id
"""  # noqa: S608 (no value is spliced in: the timestamps' expressions, and "$3" for a tenant)

# What one chunk of the body holds, at least (the last may hold less). A socket read from
# Postgres holds ~10 kB: handed on one by one, each paid its way through the queue, every ASGI
# middleware, a write to the client and the client's read, CPU that Postgres (which formats the
# rows and bounds the export) then lacked on two cores (bench/usage_bench.py, bench/README.md).
_CHUNK_BYTES = 256 * 1024
# Chunks waiting for a slow client, at most: the export's memory stays flat (a few MB) whatever
# the client's pace.
_BUFFERED_CHUNKS = 8


def export_query(
    *, start: date, end: date, tenant_id: uuid.UUID | None
) -> tuple[str, list[object]]:
    """The export's SELECT and its arguments: [start, end) in UTC days, one tenant or all."""
    lo = datetime.combine(start, datetime.min.time(), tzinfo=UTC)
    hi = datetime.combine(end, datetime.min.time(), tzinfo=UTC)
    if tenant_id is None:
        return _SELECT.format(tenant=""), [lo, hi]
    return _SELECT.format(tenant=" AND tenant_id = $3"), [lo, hi, tenant_id]


def planner_settings(tenant_id: uuid.UUID | None) -> tuple[str, ...]:
    """What the export's transaction sets before its COPY. A tenant's rows are read in the
    index's order, not sorted: the planner prices that index scan as random reads (tenants'
    rows interleave in the heap), but a ledger is written in time order, so the scan reads the
    heap nearly in order, and a sort made the first byte wait for the whole month (and spilled
    to disk). An export of every tenant has no such index, and is sorted."""
    return () if tenant_id is None else ("SET LOCAL enable_sort = off",)


async def export_csv(
    driver: DriverPool, *, start: date, end: date, tenant_id: uuid.UUID | None
) -> AsyncIterator[bytes]:
    """The CSV's bytes as Postgres writes them, header first. It takes a connection of its own
    while the body streams (the request's session has closed by then) and gives it back when
    the last chunk is out, or at once when the client goes away (the COPY is canceled)."""
    query, args = export_query(start=start, end=end, tenant_id=tenant_id)
    chunks: asyncio.Queue[bytes | None] = asyncio.Queue(_BUFFERED_CHUNKS)
    failed: list[BaseException] = []

    pending = bytearray()

    async def flush() -> None:
        # RFC 4180's CRLF, as the export always ended its lines; no value holds a newline
        # (ids, names of models and units, outcomes).
        await chunks.put(bytes(pending.replace(b"\n", b"\r\n")))
        pending.clear()

    async def gather(data: bytes) -> None:
        pending.extend(data)
        if len(pending) >= _CHUNK_BYTES:
            await flush()

    async def copy() -> None:
        try:
            async with driver.acquire() as conn, conn.transaction():
                for setting in planner_settings(tenant_id):
                    await conn.execute(setting)
                await conn.copy_from_query(query, *args, output=gather, format="csv", header=True)
            if pending:
                await flush()
        except Exception as exc:  # the reader raises it: a broken body, not a silent end
            failed.append(exc)
        await chunks.put(None)  # not when canceled: then nobody reads any more

    task = asyncio.create_task(copy(), name="usage-export")
    try:
        while (chunk := await chunks.get()) is not None:
            yield chunk
        if failed:
            raise failed[0]
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
