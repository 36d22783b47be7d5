"""jobs: the request id unique where there is one

``jobs.upstream_request_id`` was a unique constraint: its index held an entry for every job,
NULL until the job reached fal, and took one more on every update of the row (a job's updates
change indexed columns, so each writes every index). A partial unique index keeps the same
guarantee for the ids that exist and skips the NULLs: one index write less per accepted job and
per update before the submit.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-08 01:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint("uq_jobs_upstream_request_id", "jobs", type_="unique")
    op.create_index(
        "uq_jobs_upstream_request_id",
        "jobs",
        ["upstream_request_id"],
        unique=True,
        postgresql_where=sa.text("upstream_request_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_jobs_upstream_request_id", table_name="jobs")
    op.create_unique_constraint("uq_jobs_upstream_request_id", "jobs", ["upstream_request_id"])
