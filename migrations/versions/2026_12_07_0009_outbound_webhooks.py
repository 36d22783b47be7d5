"""outbound webhooks

Tenants' webhook endpoints, their default signing key, the deliveries owed and every attempt,
the jobs' own webhook, and the outbox the fan-out reads.

The outbox is filled by triggers, in the transaction that appends the event: a row exists if and
only if its event committed, whichever path appended it (the store's raw fast path, its one-
statement 'sending' mark, the session path, and any added later). Only events someone may want
are written: a deliverable type, and a tenant with an enabled endpoint or a job with its own
webhook (two index probes; a tenant without webhooks pays nothing more). Creations are never
delivered, so the accept path pays nothing either.

A row written wakes the fan-out on ``foley_webhooks`` (delivered at commit). Not on
``foley_events``: that one announces every job event, wanted or not, and would have the fan-out
look into an empty outbox after each. The transitions that write a row NOTIFY ``foley_events``
already, so their commit takes the notify queue's lock either way; a transaction's identical
NOTIFYs are delivered once.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# app.notifications.events.JOB_EVENT_TYPES (a migration is static: spelled out here).
DELIVERABLE = (
    "'job.started', 'job.processing', 'job.logs', 'job.succeeded', 'job.failed', "
    "'job.canceled', 'job.aborted'"
)


def upgrade() -> None:
    op.add_column("jobs", sa.Column("webhook_url", sa.Text(), nullable=True))
    op.add_column(
        "jobs", sa.Column("webhook_events", postgresql.ARRAY(sa.String(length=60)), nullable=True)
    )
    op.create_table(
        "webhook_endpoints",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("events", postgresql.ARRAY(sa.String(length=60)), nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("disabled_reason", sa.String(length=200), nullable=True),
        sa.Column("secret", sa.String(length=200), nullable=False),
        sa.Column("previous_secret", sa.String(length=200), nullable=True),
        sa.Column("previous_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_webhook_endpoints_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
    )
    op.create_index(
        op.f("ix_webhook_endpoints_tenant_id"), "webhook_endpoints", ["tenant_id"], unique=False
    )
    op.create_table(
        "webhook_signing_keys",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("secret", sa.String(length=200), nullable=False),
        sa.Column("previous_secret", sa.String(length=200), nullable=True),
        sa.Column("previous_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_webhook_signing_keys_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_webhook_signing_keys")),
    )
    status = postgresql.ENUM(
        "pending", "succeeded", "failed", name="webhook_delivery_status", create_type=False
    )
    status.create(op.get_bind())
    op.create_table(
        "webhook_deliveries",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("endpoint_id", sa.UUID(), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=True),
        sa.Column("message_id", sa.String(length=60), nullable=False),
        sa.Column("type", sa.String(length=60), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", status, nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("schedule_pos", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String(length=100), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name=op.f("fk_webhook_deliveries_endpoint_id_webhook_endpoints"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_webhook_deliveries_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index(
        "ix_webhook_deliveries_lane",
        "webhook_deliveries",
        ["target", "next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_webhook_deliveries_leased",
        "webhook_deliveries",
        ["target"],
        unique=False,
        postgresql_where=sa.text("status = 'pending' AND lease_owner IS NOT NULL"),
    )
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_webhook_deliveries_endpoint",
        "webhook_deliveries",
        ["endpoint_id", "created_at"],
        unique=False,
    )
    op.create_index(
        "ix_webhook_deliveries_job_logs",
        "webhook_deliveries",
        ["job_id", "target", "created_at"],
        unique=False,
        postgresql_where=sa.text("type = 'job.logs'"),
    )
    op.create_index(
        op.f("ix_webhook_deliveries_tenant_id"), "webhook_deliveries", ["tenant_id"], unique=False
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("delivery_id", sa.UUID(), nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["webhook_deliveries.id"],
            name=op.f("fk_webhook_attempts_delivery_id_webhook_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_attempts")),
    )
    op.create_index(
        op.f("ix_webhook_attempts_delivery_id"), "webhook_attempts", ["delivery_id"], unique=False
    )
    op.create_table(
        "notification_outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("type", sa.String(length=60), nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=True),
        sa.Column("job_event_seq", sa.Integer(), nullable=True),
        sa.Column("budget_period_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("threshold_pct", sa.Integer(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_outbox")),
    )
    op.execute(
        """
        CREATE FUNCTION job_events_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM webhook_endpoints
                       WHERE tenant_id = NEW.tenant_id AND enabled)
               OR EXISTS (SELECT 1 FROM jobs
                          WHERE id = NEW.job_id AND webhook_url IS NOT NULL) THEN
                INSERT INTO notification_outbox
                    (tenant_id, type, job_id, job_event_seq, occurred_at)
                VALUES (NEW.tenant_id, NEW.type, NEW.job_id, NEW.seq, NEW.created_at);
                PERFORM pg_notify('foley_webhooks', 'outbox');
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER job_events_outbox AFTER INSERT ON job_events FOR EACH ROW "
        f"WHEN (NEW.type IN ({DELIVERABLE})) EXECUTE FUNCTION job_events_outbox()"
    )
    op.execute(
        """
        CREATE FUNCTION budget_events_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM webhook_endpoints
                       WHERE tenant_id = NEW.tenant_id AND enabled) THEN
                INSERT INTO notification_outbox
                    (tenant_id, type, budget_period_start, threshold_pct, occurred_at)
                VALUES (NEW.tenant_id, 'budget.threshold_crossed', NEW.period_start,
                        NEW.threshold_pct, NEW.crossed_at);
                PERFORM pg_notify('foley_webhooks', 'outbox');
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER budget_events_outbox AFTER INSERT ON budget_events FOR EACH ROW "
        "EXECUTE FUNCTION budget_events_outbox()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS budget_events_outbox ON budget_events")
    op.execute("DROP FUNCTION IF EXISTS budget_events_outbox()")
    op.execute("DROP TRIGGER IF EXISTS job_events_outbox ON job_events")
    op.execute("DROP FUNCTION IF EXISTS job_events_outbox()")
    op.drop_table("notification_outbox")
    op.drop_index(op.f("ix_webhook_attempts_delivery_id"), table_name="webhook_attempts")
    op.drop_table("webhook_attempts")
    op.drop_index(op.f("ix_webhook_deliveries_tenant_id"), table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_job_logs", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_endpoint", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_due", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_leased", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_lane", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    postgresql.ENUM(name="webhook_delivery_status").drop(op.get_bind())
    op.drop_table("webhook_signing_keys")
    op.drop_index(op.f("ix_webhook_endpoints_tenant_id"), table_name="webhook_endpoints")
    op.drop_table("webhook_endpoints")
    op.drop_column("jobs", "webhook_events")
    op.drop_column("jobs", "webhook_url")
