"""job trace context, ledger export order

``jobs.traceparent``: the W3C ``traceparent`` of the request that accepted the job, when the
gateway exports traces (``OTEL_EXPORTER_OTLP_ENDPOINT``), so the worker's steps — dispatch, the
calls to fal, finalize — continue the accept's trace. Null otherwise, and for jobs accepted
before. No index: it is read with the claimed row, never searched.

``ix_usage_records_tenant_created`` gains ``id``: the CSV export reads a tenant's requests
``ORDER BY created_at, id`` and now streams them from the index, with no sort (a month of a
busy tenant is hundreds of thousands of rows). Rebuilding it locks the ledger against writes
while it builds (seconds per million rows).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_LEDGER_INDEX = "ix_usage_records_tenant_created"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("traceparent", sa.String(length=100), nullable=True))
    op.drop_index(_LEDGER_INDEX, table_name="usage_records")
    op.create_index(_LEDGER_INDEX, "usage_records", ["tenant_id", "created_at", "id"])


def downgrade() -> None:
    op.drop_index(_LEDGER_INDEX, table_name="usage_records")
    op.create_index(_LEDGER_INDEX, "usage_records", ["tenant_id", "created_at"])
    op.drop_column("jobs", "traceparent")
