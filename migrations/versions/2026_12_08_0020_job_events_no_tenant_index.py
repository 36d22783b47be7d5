"""job_events: no index by tenant

``ix_job_events_tenant_id`` (tenant, id) was made for a reader of a tenant's events after a
cursor, which the notifications never became: they reach the outbox through triggers in the
event's own transaction (migration 0009), and every read of the log names its job
(``ix_job_events_job_seq``). Nothing reads it; every event wrote it, five or six per job.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-08 05:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_job_events_tenant_id")


def downgrade() -> None:
    op.execute("CREATE INDEX ix_job_events_tenant_id ON job_events (tenant_id, id)")
