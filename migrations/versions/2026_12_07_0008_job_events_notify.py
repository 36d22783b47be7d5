"""job events notify

Every committed job event (but a job's creation) is announced on ``foley_events`` with the
payload ``<job_id>:<seq>:<type>``: the event stream, held ``Prefer: wait`` requests and the
webhook fan-out wake on it instead of polling. A trigger, so every path that appends events
announces them, and a NOTIFY issued inside the transaction is delivered if and only if it
commits. Creations are left out because nothing can be waiting on a job not yet known, and the
accept path is the one whose commits must not serialize on the NOTIFY queue's lock.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 12:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION job_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify(
                'foley_events', NEW.job_id::text || ':' || NEW.seq || ':' || NEW.type
            );
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER job_events_notify AFTER INSERT ON job_events FOR EACH ROW "
        "WHEN (NEW.type <> 'job.created') EXECUTE FUNCTION job_events_notify()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS job_events_notify ON job_events")
    op.execute("DROP FUNCTION IF EXISTS job_events_notify()")
