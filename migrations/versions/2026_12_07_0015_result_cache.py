"""result cache

The result cache (app.jobs.cache): a job asks for it (``jobs.cache_requested``, per request or
the tenant's ``cache_default``), carries its key once its input's content is known
(``cache_key``) and, when a stored success answered it, names that job (``cache_source_id``).
The partial index is the lookup: successes that ran upstream, by key.

A hit's file rows point at its source's storage objects, so ``files.storage_key`` is no longer
unique (an index instead; retention deletes an object only when no present row uses it). A hit
is on the usage ledger as a row with no upstream request: ``usage_records.upstream_request_id``
becomes nullable, and such rows are unique per job. Hits are priced as the pseudo-model
``cache_hit`` (unit ``hit``), seeded at $0: the operator's price to change
(``foley prices set cache_hit``).

Downgrading removes what only the cache made: the hits' ledger rows (and the seeded price) and
the hits' file rows (their objects are their sources'), so the unique constraint holds again.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 16:00:00
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CACHE_HIT_PRICE_ID = uuid.UUID("00000000-0000-4000-8000-00000000c0de")
_SOURCES = "status = 'succeeded' AND cache_key IS NOT NULL AND cache_source_id IS NULL"


def upgrade() -> None:
    op.add_column(
        "jobs",
        sa.Column("cache_requested", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.add_column("jobs", sa.Column("cache_key", sa.String(length=64), nullable=True))
    op.add_column("jobs", sa.Column("cache_source_id", sa.UUID(), nullable=True))
    op.create_index(
        "ix_jobs_cache_source",
        "jobs",
        ["cache_key", "completed_at"],
        unique=False,
        postgresql_where=sa.text(_SOURCES),
    )
    op.add_column(
        "tenants",
        sa.Column("cache_default", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.drop_constraint("uq_files_storage_key", "files", type_="unique")
    op.create_index("ix_files_storage_key", "files", ["storage_key"], unique=False)
    op.alter_column(
        "usage_records", "upstream_request_id", existing_type=sa.String(length=100), nullable=True
    )
    op.create_index(
        "uq_usage_records_cache_hit_job",
        "usage_records",
        ["job_id"],
        unique=True,
        postgresql_where=sa.text("upstream_request_id IS NULL"),
    )
    prices = sa.table(
        "prices",
        sa.column("id", sa.UUID()),
        sa.column("model", sa.String()),
        sa.column("unit", sa.String()),
        sa.column("unit_price_micros", sa.BigInteger()),
        sa.column("effective_from", sa.DateTime(timezone=True)),
    )
    op.bulk_insert(
        prices,
        [
            {
                "id": CACHE_HIT_PRICE_ID,
                "model": "cache_hit",
                "unit": "hit",
                "unit_price_micros": 0,
                "effective_from": datetime(2024, 1, 1, tzinfo=UTC),
            }
        ],
    )


def downgrade() -> None:
    op.execute("DELETE FROM usage_records WHERE upstream_request_id IS NULL")
    op.execute("DELETE FROM usage_daily WHERE model = 'cache_hit'")
    op.execute("DELETE FROM prices WHERE model = 'cache_hit'")
    op.drop_index(
        "uq_usage_records_cache_hit_job",
        table_name="usage_records",
        postgresql_where=sa.text("upstream_request_id IS NULL"),
    )
    op.alter_column(
        "usage_records", "upstream_request_id", existing_type=sa.String(length=100), nullable=False
    )
    op.execute(
        "DELETE FROM files f USING jobs j WHERE f.job_id = j.id AND j.cache_source_id IS NOT NULL"
    )
    op.drop_index("ix_files_storage_key", table_name="files")
    op.create_unique_constraint("uq_files_storage_key", "files", ["storage_key"])
    op.drop_column("tenants", "cache_default")
    op.drop_index("ix_jobs_cache_source", table_name="jobs", postgresql_where=sa.text(_SOURCES))
    op.drop_column("jobs", "cache_source_id")
    op.drop_column("jobs", "cache_key")
    op.drop_column("jobs", "cache_requested")
