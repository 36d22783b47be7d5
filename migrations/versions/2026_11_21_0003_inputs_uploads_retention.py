"""inputs uploads retention

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 14:46:13.847294
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Postgres adds an enum value in place (autogenerate does not see enum changes).
    op.execute("ALTER TYPE file_kind ADD VALUE IF NOT EXISTS 'input_upload' BEFORE 'output_video'")
    op.add_column("files", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "jobs", sa.Column("input_probe", postgresql.JSONB(astext_type=sa.Text()), nullable=True)
    )
    op.add_column("jobs", sa.Column("input_file_id", sa.UUID(), nullable=True))
    op.add_column(
        "jobs",
        sa.Column("data_removed", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.create_foreign_key(
        op.f("fk_jobs_input_file_id_files"),
        "jobs",
        "files",
        ["input_file_id"],
        ["id"],
        ondelete="SET NULL",
        use_alter=True,
    )


def downgrade() -> None:
    op.drop_constraint(op.f("fk_jobs_input_file_id_files"), "jobs", type_="foreignkey")
    op.drop_column("jobs", "data_removed")
    op.drop_column("jobs", "input_file_id")
    op.drop_column("jobs", "input_probe")
    op.drop_column("files", "deleted_at")
    # An enum value cannot be dropped: rebuild the type without it (uploads go with it).
    op.execute("DELETE FROM files WHERE kind = 'input_upload'")
    op.execute("ALTER TYPE file_kind RENAME TO file_kind_old")
    op.execute("CREATE TYPE file_kind AS ENUM ('output_video', 'output_audio')")
    op.execute("ALTER TABLE files ALTER COLUMN kind TYPE file_kind USING kind::text::file_kind")
    op.execute("DROP TYPE file_kind_old")
