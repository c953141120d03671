"""offers: at most one open replacement offer per returned exposure (a partial unique index)

Revision ID: 0018_one_open_replacement
Revises: 0017_notifications_by_kind
Create Date: 2026-11-27 17:15:00.000000

Two first waves at once could both offer the replacement a deal maker is owed: on PostgreSQL the second wave's read
of the debts may be taken before the first commits, and the row lock it then takes is free. With the index the
second insert fails and the wave takes the next debt. Any duplicates already open are withdrawn first (the older
offer stays).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018_one_open_replacement"
down_revision: str | None = "0017_notifications_by_kind"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OPEN_REPLACEMENT = "status = 'open' AND replaces_exposure_id IS NOT NULL"


def upgrade() -> None:
    op.execute(
        "UPDATE offers SET status = 'closed' WHERE status = 'open' AND replaces_exposure_id IS NOT NULL AND id NOT IN "
        "(SELECT MIN(id) FROM offers WHERE status = 'open' AND replaces_exposure_id IS NOT NULL "
        "GROUP BY replaces_exposure_id)"
    )
    with op.batch_alter_table("offers", schema=None) as batch_op:
        batch_op.create_index(
            "ux_offers_open_replacement",
            ["replaces_exposure_id"],
            unique=True,
            sqlite_where=sa.text(_OPEN_REPLACEMENT),
            postgresql_where=sa.text(_OPEN_REPLACEMENT),
        )


def downgrade() -> None:
    with op.batch_alter_table("offers", schema=None) as batch_op:
        batch_op.drop_index(
            "ux_offers_open_replacement",
            sqlite_where=sa.text(_OPEN_REPLACEMENT),
            postgresql_where=sa.text(_OPEN_REPLACEMENT),
        )
