"""catalogue prices

fal's published prices of the models added to the catalogue (models.md), effective from the
start like the first ones: MMAudio v2 $0.001, Mirelo SFX v1.5 $0.01 and Sonilo v1.1 $0.009 per
output second (every sample's seconds counted), ControlFoley $0.015 per video.
HunyuanVideo-Foley gets none: fal publishes no price for it, so its jobs stay unpriced (and
block settlement) until the operator sets one.

Downgrading removes these rows; usage settled at them keeps its amounts and loses the link.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 15:10:00
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PRICES = (
    ("00000000-0000-4000-8000-000000000004", "fal-ai/mmaudio-v2", "output_second", 1_000),
    ("00000000-0000-4000-8000-000000000005", "fal-ai/controlfoley", "video", 15_000),
    (
        "00000000-0000-4000-8000-000000000006",
        "mirelo-ai/sfx-v1.5/video-to-audio",
        "output_second",
        10_000,
    ),
    ("00000000-0000-4000-8000-000000000007", "sonilo/v1.1/video-to-music", "output_second", 9_000),
)


_prices = sa.table(
    "prices",
    sa.column("id", sa.UUID()),
    sa.column("model", sa.String()),
    sa.column("unit", sa.String()),
    sa.column("unit_price_micros", sa.BigInteger()),
    sa.column("effective_from", sa.DateTime(timezone=True)),
)
_usage = sa.table("usage_records", sa.column("price_id", sa.UUID()))


def upgrade() -> None:
    epoch = datetime(2024, 1, 1, tzinfo=UTC)
    op.bulk_insert(
        _prices,
        [
            {
                "id": uuid.UUID(price_id),
                "model": model,
                "unit": unit,
                "unit_price_micros": micros,
                "effective_from": epoch,
            }
            for price_id, model, unit, micros in _PRICES
        ],
    )


def downgrade() -> None:
    ids = [uuid.UUID(price_id) for price_id, *_ in _PRICES]
    op.execute(_usage.update().where(_usage.c.price_id.in_(ids)).values(price_id=None))
    op.execute(_prices.delete().where(_prices.c.id.in_(ids)))
