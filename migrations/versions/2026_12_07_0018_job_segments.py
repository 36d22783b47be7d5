"""job segments

A video longer than its model takes is split into segments, each a job of its own (a *child*:
``parent_id`` names the job it is a segment of, ``segment`` where it lies: index, start, end,
try). The parent's submit state is ``split``: its requests are its segments'.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Postgres ≥ 12 adds an enum value inside a transaction; it is usable once committed.
    op.execute("ALTER TYPE submit_state ADD VALUE IF NOT EXISTS 'split'")
    op.add_column(
        "jobs",
        sa.Column(
            "parent_id",
            sa.UUID(),
            sa.ForeignKey("jobs.id", ondelete="CASCADE", name="fk_jobs_parent_id"),
            nullable=True,
        ),
    )
    op.add_column(
        "jobs", sa.Column("segment", postgresql.JSONB(astext_type=sa.Text()), nullable=True)
    )
    op.create_index(
        "ix_jobs_parent_id",
        "jobs",
        ["parent_id"],
        unique=False,
        postgresql_where=sa.text("parent_id IS NOT NULL"),
    )


def downgrade() -> None:
    # A split job's segments go with the column that names them; the job itself is failed.
    op.execute(
        "UPDATE jobs SET status = 'failed', submit_state = 'submitted', next_action_at = NULL "
        "WHERE submit_state = 'split'"
    )
    op.execute("DELETE FROM jobs WHERE parent_id IS NOT NULL")
    op.drop_index(
        "ix_jobs_parent_id", table_name="jobs", postgresql_where=sa.text("parent_id IS NOT NULL")
    )
    op.drop_column("jobs", "segment")
    op.drop_column("jobs", "parent_id")
    op.execute("ALTER TYPE submit_state RENAME TO submit_state_with_split")
    op.execute("CREATE TYPE submit_state AS ENUM ('pending', 'sending', 'submitted', 'ambiguous')")
    op.execute(
        "ALTER TABLE jobs ALTER COLUMN submit_state TYPE submit_state "
        "USING submit_state::text::submit_state"
    )
    op.execute("DROP TYPE submit_state_with_split")
