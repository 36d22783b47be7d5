"""job output options

``jobs.output_options``: what the caller asked of the finished sound (``"output"`` at creation:
audio mode, format, sample rate, loudness, mix gains), or NULL for the model's own outputs kept
as they came (every job before this revision).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "jobs", sa.Column("output_options", postgresql.JSONB(astext_type=sa.Text()), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("jobs", "output_options")
