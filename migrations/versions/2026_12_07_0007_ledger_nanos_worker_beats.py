"""ledger nanos, worker beats

The ledger keeps what each request cost in nano-dollars, the precision fal bills with, beside the
micro-dollar amount rounded for that request alone; the daily rollups keep the exact sum, so a
period's total is rounded once (docs/money.md). Rows settled before keep what they can: a cost
that was units × price is recomputed exactly, any other (a settlement at the estimate) is its
micro-dollars. Workers beat in ``worker_beats``: a completed job leased to a worker that stopped
beating is taken over at once instead of after its lease.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("usage_records", sa.Column("cost_nanos", sa.BigInteger(), nullable=True))
    op.add_column(
        "usage_daily",
        sa.Column("cost_nanos", sa.BigInteger(), nullable=False, server_default="0"),
    )
    # round() of a positive numeric is half away from zero: half-up, as app.kit.money.
    op.execute(
        """
        UPDATE usage_records SET cost_nanos = CASE
            WHEN units IS NOT NULL AND unit_price_micros IS NOT NULL
                 AND cost_micros = round(units * unit_price_micros)
            THEN round(units * unit_price_micros * 1000)
            ELSE cost_micros * 1000
        END
        WHERE cost_micros IS NOT NULL
        """
    )
    # Rollups of days whose ledger rows were pruned keep their micro-dollars as they were.
    op.execute("UPDATE usage_daily SET cost_nanos = cost_micros * 1000")
    op.execute(
        """
        UPDATE usage_daily d SET cost_nanos = s.nanos FROM (
            SELECT tenant_id, (settled_at AT TIME ZONE 'UTC')::date AS day, model,
                   coalesce(job_status, 'unknown') AS job_status,
                   sum(cost_nanos) AS nanos, sum(cost_micros) AS micros
            FROM usage_records WHERE status = 'settled'
            GROUP BY 1, 2, 3, 4
        ) s
        WHERE d.tenant_id = s.tenant_id AND d.day = s.day AND d.model = s.model
          AND d.job_status = s.job_status AND d.cost_micros = s.micros
        """
    )
    op.create_table(
        "worker_beats",
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("owner", name=op.f("pk_worker_beats")),
    )


def downgrade() -> None:
    op.drop_table("worker_beats")
    op.drop_column("usage_daily", "cost_nanos")
    op.drop_column("usage_records", "cost_nanos")
