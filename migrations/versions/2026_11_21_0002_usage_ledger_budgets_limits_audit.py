"""usage ledger budgets limits audit

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 14:22:53.017104
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("target_type", sa.String(length=50), nullable=False),
        sa.Column("target_id", sa.String(length=100), nullable=False),
        sa.Column("before", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("after", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index(op.f("ix_audit_events_at"), "audit_events", ["at"], unique=False)
    op.create_table(
        "prices",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("unit", sa.String(length=32), nullable=False),
        sa.Column("unit_price_micros", sa.BigInteger(), nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prices")),
        sa.UniqueConstraint("model", "effective_from", name=op.f("uq_prices_model_effective_from")),
    )
    op.create_table(
        "budget_events",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("threshold_pct", sa.Integer(), nullable=False),
        sa.Column("spent_micros", sa.BigInteger(), nullable=False),
        sa.Column("budget_micros", sa.BigInteger(), nullable=False),
        sa.Column(
            "crossed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_budget_events_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id", "period_start", "threshold_pct", name=op.f("pk_budget_events")
        ),
    )
    op.create_table(
        "budget_periods",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("spent_micros", sa.BigInteger(), nullable=False),
        sa.Column("reserved_micros", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_budget_periods_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "period_start", name=op.f("pk_budget_periods")),
    )
    op.create_table(
        "rate_limit_windows",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_rate_limit_windows_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "window_start", name=op.f("pk_rate_limit_windows")),
    )
    op.create_table(
        "usage_daily",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("job_status", sa.String(length=20), nullable=False),
        sa.Column("unit", sa.String(length=32), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("units", sa.Numeric(precision=20, scale=6), nullable=False),
        sa.Column("cost_micros", sa.BigInteger(), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_usage_daily_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id", "day", "model", "job_status", name=op.f("pk_usage_daily")
        ),
    )
    op.create_table(
        "usage_records",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("upstream_request_id", sa.String(length=100), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("endpoint", sa.String(length=200), nullable=False),
        sa.Column("unit", sa.String(length=32), nullable=False),
        sa.Column("units", sa.Numeric(precision=18, scale=6), nullable=True),
        sa.Column("unit_price_micros", sa.BigInteger(), nullable=True),
        sa.Column("price_id", sa.UUID(), nullable=True),
        sa.Column("estimated_cost_micros", sa.BigInteger(), nullable=False),
        sa.Column("cost_micros", sa.BigInteger(), nullable=True),
        sa.Column(
            "status",
            sa.Enum("estimated", "settled", "unpriced", name="usage_status"),
            nullable=False,
        ),
        sa.Column("outcome", sa.String(length=40), nullable=True),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("orphan", sa.Boolean(), nullable=False),
        sa.Column("job_status", sa.String(length=20), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_usage_records_job_id_jobs"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["price_id"],
            ["prices.id"],
            name=op.f("fk_usage_records_price_id_prices"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_usage_records_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_records")),
        sa.UniqueConstraint(
            "upstream_request_id", name=op.f("uq_usage_records_upstream_request_id")
        ),
    )
    op.create_index(op.f("ix_usage_records_job_id"), "usage_records", ["job_id"], unique=False)
    op.create_index(
        "ix_usage_records_tenant_created",
        "usage_records",
        ["tenant_id", "created_at"],
        unique=False,
    )
    op.add_column("api_keys", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "api_keys",
        sa.Column("read_only", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.add_column(
        "jobs",
        sa.Column(
            "estimated_cost_micros", sa.BigInteger(), server_default=sa.text("0"), nullable=False
        ),
    )
    op.add_column(
        "jobs",
        sa.Column("reserved_micros", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column(
        "jobs", sa.Column("budget_period_start", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "jobs",
        sa.Column("usage_settled", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.add_column("tenants", sa.Column("budget_micros", sa.BigInteger(), nullable=True))
    op.add_column(
        "tenants",
        sa.Column("budget_period", sa.String(length=32), server_default="month", nullable=False),
    )
    op.add_column("tenants", sa.Column("budget_anchor", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "tenants",
        sa.Column(
            "budget_thresholds",
            sa.ARRAY(sa.Integer()),
            server_default=sa.text("'{50,80,100}'"),
            nullable=False,
        ),
    )
    op.add_column("tenants", sa.Column("rate_limit_per_minute", sa.Integer(), nullable=True))
    op.add_column("tenants", sa.Column("max_in_flight", sa.Integer(), nullable=True))
    op.add_column(
        "tenants",
        sa.Column(
            "weight", sa.Numeric(precision=8, scale=3), server_default=sa.text("1"), nullable=False
        ),
    )
    op.add_column("tenants", sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=True))

    # Prices are data; these are fal's published prices (models.md), effective from the start.
    prices = sa.table(
        "prices",
        sa.column("id", sa.UUID()),
        sa.column("model", sa.String()),
        sa.column("unit", sa.String()),
        sa.column("unit_price_micros", sa.BigInteger()),
        sa.column("effective_from", sa.DateTime(timezone=True)),
    )
    epoch = datetime(2024, 1, 1, tzinfo=UTC)
    op.bulk_insert(
        prices,
        [
            {
                "id": uuid.UUID("00000000-0000-4000-8000-000000000001"),
                "model": "fal-ai/kling-video/video-to-audio",
                "unit": "video",
                "unit_price_micros": 35_000,
                "effective_from": epoch,
            },
            {
                "id": uuid.UUID("00000000-0000-4000-8000-000000000002"),
                "model": "fal-ai/thinksound",
                "unit": "compute_second",
                "unit_price_micros": 1_000,
                "effective_from": epoch,
            },
            {
                "id": uuid.UUID("00000000-0000-4000-8000-000000000003"),
                "model": "fal-ai/thinksound/audio",
                "unit": "compute_second",
                "unit_price_micros": 1_000,
                "effective_from": epoch,
            },
        ],
    )
    # The audit log is append-only, enforced by the database itself.
    op.execute(
        """
        CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit_events is append-only';
        END $$;
        """
    )
    op.execute(
        "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events "
        "FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events")
    op.execute("DROP FUNCTION IF EXISTS audit_events_append_only()")
    op.drop_column("tenants", "suspended_at")
    op.drop_column("tenants", "weight")
    op.drop_column("tenants", "max_in_flight")
    op.drop_column("tenants", "rate_limit_per_minute")
    op.drop_column("tenants", "budget_thresholds")
    op.drop_column("tenants", "budget_anchor")
    op.drop_column("tenants", "budget_period")
    op.drop_column("tenants", "budget_micros")
    op.drop_column("jobs", "usage_settled")
    op.drop_column("jobs", "budget_period_start")
    op.drop_column("jobs", "reserved_micros")
    op.drop_column("jobs", "estimated_cost_micros")
    op.drop_column("api_keys", "read_only")
    op.drop_column("api_keys", "expires_at")
    op.drop_index("ix_usage_records_tenant_created", table_name="usage_records")
    op.drop_index(op.f("ix_usage_records_job_id"), table_name="usage_records")
    op.drop_table("usage_records")
    op.drop_table("usage_daily")
    op.drop_table("rate_limit_windows")
    op.drop_table("budget_periods")
    op.drop_table("budget_events")
    op.drop_table("prices")
    op.drop_index(op.f("ix_audit_events_at"), table_name="audit_events")
    op.drop_table("audit_events")
    op.execute("DROP TYPE IF EXISTS usage_status")
