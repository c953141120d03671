"""leads.next_wave_at: when a lead's next wave is due, so a wave job lost with its process is sent again

Revision ID: 0013_next_wave_at
Revises: 0012_referrers
Create Date: 2026-11-27 05:55:00.000000

In the embedded default (jobs in process) the next wave's job lived only in memory: a restart lost every later wave
of every open lead (only first waves were looked for again).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from marketplace.db.base import UTCDateTime

revision: str = "0013_next_wave_at"
down_revision: str | None = "0012_referrers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("next_wave_at", UTCDateTime(), nullable=True))
        batch_op.create_index(batch_op.f("ix_leads_next_wave_at"), ["next_wave_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_leads_next_wave_at"))
        batch_op.drop_column("next_wave_at")
