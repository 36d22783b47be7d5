"""job fallbacks

A job may name several models: ``jobs.candidates`` lists them in order, each with the payload
fal gets for it (NULL: one model, every job before this revision), and ``jobs.attempts`` the
attempts it left behind when it fell back (model, request, error, cost).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 16:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "jobs", sa.Column("candidates", postgresql.JSONB(astext_type=sa.Text()), nullable=True)
    )
    op.add_column(
        "jobs",
        sa.Column(
            "attempts",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_column("jobs", "attempts")
    op.drop_column("jobs", "candidates")
