"""job events partitioned by month

``job_events`` (about nine rows a job: the largest table by far) becomes a table partitioned by
month of its job's creation, ``job_created_at``, a new column: every event of a job lies in one
partition, so a partition is a month of jobs with their whole histories. That keeps what the
table guaranteed: a partition key must be part of every unique constraint, and
``(job_id, seq, job_created_at)`` is as unique as ``(job_id, seq)`` because a job has one
creation time; the primary key becomes ``(id, job_created_at)``, ``id`` still drawn from one
identity, continued from the old table's. A job's events are read with its creation time, so a
read touches one partition whatever the table's size.

Partitions are made ahead by ``job_events_add_partition(month)`` (named ``job_events_yYYYYmMM``,
bounds in UTC), here for every month from the oldest job's to two months ahead, then by the
workers' housekeeping; a ``DEFAULT`` partition takes any row no month's partition would (so an
insert never fails for want of one) and is meant to stay empty. Nothing drops a partition:
events are kept as long as their jobs, and jobs are kept (docs/scaling.md).

With it, ``ix_jobs_tenant_status_created`` and ``ix_jobs_tenant_model_created``: a tenant's jobs
listed by status or by model, newest first. Without them, ``?status=`` and ``?model=`` walk the
tenant's jobs newest first until a page of that status or model is found, all of them when the
tenant has none (a rare one scanned the whole history: measured growing with the table,
docs/scaling.md); with them, a page is read directly whatever the history. Built without
CONCURRENTLY (a migration runs in a transaction): on a large installation, create them
CONCURRENTLY by hand first (the same definitions; this migration then finds them).

Existing rows are copied (ids kept) before the NOTIFY and outbox triggers are put on the new
table: copying must not announce or deliver anything again. Downgrading copies them back into
a table of the old shape.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 16:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The triggers of 0008 and 0009 (their functions stay as they are).
DELIVERABLE = (
    "'job.started', 'job.processing', 'job.logs', 'job.succeeded', 'job.failed', "
    "'job.canceled', 'job.aborted'"
)
TRIGGERS = (
    "CREATE TRIGGER job_events_notify AFTER INSERT ON job_events FOR EACH ROW "
    "WHEN (NEW.type <> 'job.created') EXECUTE FUNCTION job_events_notify()",
    "CREATE TRIGGER job_events_outbox AFTER INSERT ON job_events FOR EACH ROW "
    f"WHEN (NEW.type IN ({DELIVERABLE})) EXECUTE FUNCTION job_events_outbox()",
)
# The next id follows the largest copied one: ids keep ordering every event.
SET_IDENTITY = (
    "SELECT setval(pg_get_serial_sequence('job_events', 'id'), "
    "coalesce((SELECT max(id) FROM job_events), 0) + 1, false)"
)


def upgrade() -> None:
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_jobs_tenant_status_created "
        "ON jobs (tenant_id, status, created_at, id)"
    )
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_jobs_tenant_model_created "
        "ON jobs (tenant_id, model, created_at, id)"
    )
    op.execute("DROP TRIGGER job_events_notify ON job_events")
    op.execute("DROP TRIGGER job_events_outbox ON job_events")
    op.execute("ALTER TABLE job_events RENAME TO job_events_unpartitioned")
    op.execute(
        "ALTER TABLE job_events_unpartitioned "
        "RENAME CONSTRAINT pk_job_events TO pk_job_events_unpartitioned"
    )
    op.execute("ALTER INDEX ix_job_events_job_seq RENAME TO ix_job_events_job_seq_unpartitioned")
    op.execute(
        "ALTER INDEX ix_job_events_tenant_id RENAME TO ix_job_events_tenant_id_unpartitioned"
    )
    op.execute(
        """
        CREATE TABLE job_events (
            id bigint GENERATED ALWAYS AS IDENTITY,
            job_id uuid NOT NULL,
            tenant_id uuid NOT NULL,
            seq integer NOT NULL,
            type varchar(40) NOT NULL,
            data jsonb NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            job_created_at timestamptz NOT NULL,
            CONSTRAINT pk_job_events PRIMARY KEY (id, job_created_at),
            CONSTRAINT fk_job_events_job_id_jobs FOREIGN KEY (job_id)
                REFERENCES jobs (id) ON DELETE CASCADE
        ) PARTITION BY RANGE (job_created_at)
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX ix_job_events_job_seq ON job_events (job_id, seq, job_created_at)"
    )
    op.execute("CREATE INDEX ix_job_events_tenant_id ON job_events (tenant_id, id)")
    op.execute("CREATE TABLE job_events_default PARTITION OF job_events DEFAULT")
    op.execute(
        """
        CREATE FUNCTION job_events_add_partition(month timestamptz) RETURNS boolean
        LANGUAGE plpgsql AS $$
        DECLARE
            first timestamp := date_trunc('month', month AT TIME ZONE 'UTC');
            name text := 'job_events_' || to_char(first, '"y"YYYY"m"MM');
        BEGIN
            IF to_regclass(name) IS NOT NULL THEN
                RETURN false;
            END IF;
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF job_events FOR VALUES FROM (%L) TO (%L)',
                name, first AT TIME ZONE 'UTC', (first + interval '1 month') AT TIME ZONE 'UTC'
            );
            RETURN true;
        END
        $$
        """
    )
    op.execute(
        """
        SELECT job_events_add_partition(m AT TIME ZONE 'UTC')
        FROM generate_series(
            date_trunc('month',
                       coalesce((SELECT min(created_at) FROM jobs), now()) AT TIME ZONE 'UTC'),
            date_trunc('month', now() AT TIME ZONE 'UTC') + interval '2 months',
            interval '1 month'
        ) AS m
        """
    )
    op.execute(
        "INSERT INTO job_events "
        "(id, job_id, tenant_id, seq, type, data, created_at, job_created_at) "
        "OVERRIDING SYSTEM VALUE "
        "SELECT e.id, e.job_id, e.tenant_id, e.seq, e.type, e.data, e.created_at, j.created_at "
        "FROM job_events_unpartitioned e JOIN jobs j ON j.id = e.job_id"
    )
    op.execute(SET_IDENTITY)
    op.execute("DROP TABLE job_events_unpartitioned")
    for trigger in TRIGGERS:
        op.execute(trigger)


def downgrade() -> None:
    op.execute("DROP INDEX ix_jobs_tenant_status_created")
    op.execute("DROP INDEX ix_jobs_tenant_model_created")
    op.execute(
        """
        CREATE TABLE job_events_unpartitioned (
            id bigint GENERATED ALWAYS AS IDENTITY,
            job_id uuid NOT NULL,
            tenant_id uuid NOT NULL,
            seq integer NOT NULL,
            type varchar(40) NOT NULL,
            data jsonb NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_job_events_unpartitioned PRIMARY KEY (id),
            CONSTRAINT fk_job_events_job_id_jobs FOREIGN KEY (job_id)
                REFERENCES jobs (id) ON DELETE CASCADE
        )
        """
    )
    op.execute(
        "INSERT INTO job_events_unpartitioned "
        "(id, job_id, tenant_id, seq, type, data, created_at) OVERRIDING SYSTEM VALUE "
        "SELECT id, job_id, tenant_id, seq, type, data, created_at FROM job_events"
    )
    op.execute("DROP TABLE job_events")  # and its partitions
    op.execute("DROP FUNCTION job_events_add_partition(timestamptz)")
    op.execute("ALTER TABLE job_events_unpartitioned RENAME TO job_events")
    op.execute(SET_IDENTITY)
    op.execute(
        "ALTER TABLE job_events RENAME CONSTRAINT pk_job_events_unpartitioned TO pk_job_events"
    )
    op.execute("CREATE UNIQUE INDEX ix_job_events_job_seq ON job_events (job_id, seq)")
    op.execute("CREATE INDEX ix_job_events_tenant_id ON job_events (tenant_id, id)")
    for trigger in TRIGGERS:
        op.execute(trigger)
