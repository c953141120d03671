"""exposures.changed_at: when anything of an exposure last changed, for the fraud scan's cache of deals

Revision ID: 0029_exposure_changed_at
Revises: 0028_replacement_forfeits
Create Date: 2026-11-29 23:00:00.000000

The hourly fraud scan re-read every deal of every business with news; it now keeps them in the process
(fraud/deal_cache.py) and re-reads only the exposures changed since it last read them. A move dates itself
(status_changed_at), but the stale sweep flips `stale` without any date: every write of an exposure now sets
changed_at (the model's default and onupdate, on the service's clock), read off an index of its own (on it alone: no
other statement filters on it, so no other plan changes). Existing exposures take their last move's time (a process
reading them after the upgrade starts with an empty cache). Null is allowed only so that SQLite need not copy the
whole table to forbid it: every row has one after the upgrade, and every insert and update sets it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from marketplace.db.base import UTCDateTime

revision: str = "0029_exposure_changed_at"
down_revision: str | None = "0028_replacement_forfeits"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("exposures", schema=None) as batch_op:
        batch_op.add_column(sa.Column("changed_at", UTCDateTime(), nullable=True))
    op.execute("UPDATE exposures SET changed_at = status_changed_at")
    with op.batch_alter_table("exposures", schema=None) as batch_op:
        batch_op.create_index("ix_exposures_changed_at", ["changed_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("exposures", schema=None) as batch_op:
        batch_op.drop_index("ix_exposures_changed_at")
        batch_op.drop_column("changed_at")
