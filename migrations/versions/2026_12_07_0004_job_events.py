"""job events

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 09:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "jobs", sa.Column("event_seq", sa.Integer(), server_default=sa.text("0"), nullable=False)
    )
    op.create_table(
        "job_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_events_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_events")),
    )
    op.create_index("ix_job_events_job_seq", "job_events", ["job_id", "seq"], unique=True)
    op.create_index("ix_job_events_tenant_id", "job_events", ["tenant_id", "id"])
    # Jobs that existed before the log get their creation as their first event.
    op.execute(
        "INSERT INTO job_events (job_id, tenant_id, seq, type, data, created_at) "
        "SELECT id, tenant_id, 1, 'job.created', jsonb_build_object('status', 'queued'), "
        "created_at FROM jobs"
    )
    op.execute("UPDATE jobs SET event_seq = 1")


def downgrade() -> None:
    op.drop_index("ix_job_events_tenant_id", table_name="job_events")
    op.drop_index("ix_job_events_job_seq", table_name="job_events")
    op.drop_table("job_events")
    op.drop_column("jobs", "event_seq")
