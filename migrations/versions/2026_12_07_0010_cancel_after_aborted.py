"""cancel after, aborted

``Cancel-After`` on a job: ``jobs.cancel_after_at`` is when it is to be canceled, and the status
``aborted`` says it was terminated before it started running at fal (Replicate's meaning), at no
cost. No index: while the deadline is ahead the job's ``next_action_at`` is kept at or before it
(app.jobs.lifecycle), so the claims' own index finds it when it comes due.

Downgrading turns aborted jobs into canceled ones (what they were before this revision): an
enum value cannot be dropped, so the type is rebuilt without it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LIVE = "status IN ('queued', 'starting', 'processing')"


def upgrade() -> None:
    # Postgres ≥ 12 adds an enum value inside a transaction; it is usable once committed.
    op.execute("ALTER TYPE job_status ADD VALUE IF NOT EXISTS 'aborted'")
    op.add_column("jobs", sa.Column("cancel_after_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "cancel_after_at")
    op.execute("UPDATE jobs SET status = 'canceled' WHERE status = 'aborted'")
    # The partial index's predicate compares with the type's values: rebuilt around the swap.
    op.drop_index("ix_jobs_due", table_name="jobs", postgresql_where=sa.text(_LIVE))
    op.execute("ALTER TYPE job_status RENAME TO job_status_with_aborted")
    op.execute(
        "CREATE TYPE job_status AS ENUM "
        "('queued', 'starting', 'processing', 'succeeded', 'failed', 'canceled')"
    )
    op.execute(
        "ALTER TABLE jobs ALTER COLUMN status TYPE job_status USING status::text::job_status"
    )
    op.execute("DROP TYPE job_status_with_aborted")
    op.create_index(
        "ix_jobs_due", "jobs", ["next_action_at"], unique=False, postgresql_where=sa.text(_LIVE)
    )
