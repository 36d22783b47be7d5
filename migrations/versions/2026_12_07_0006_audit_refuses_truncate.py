"""audit refuses truncate

The append-only trigger of 0002 is a row trigger (UPDATE, DELETE); TRUNCATE fires no row
triggers, so it emptied the audit log unopposed. A statement trigger refuses it too.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 10:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events")
