"""fraud_releases.closed: the release closed a deal still open (the block's "lost", not the business's report)

Revision ID: 0019_release_closed
Revises: 0018_one_open_replacement
Create Date: 2026-11-28 15:45:00.000000

A block closes a deal maker's open deals as lost. Those were counted as lost deals the business had reported, in its
own fraud signals (a business let back in was assessed on them) and in the category norms once it was active again.
Releases made before this column are told apart by the event the release wrote when it closed the deal.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019_release_closed"
down_revision: str | None = "0018_one_open_replacement"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("fraud_releases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("closed", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.execute(
        "UPDATE fraud_releases SET closed = TRUE WHERE EXISTS (SELECT 1 FROM exposure_events e "
        "WHERE e.exposure_id = fraud_releases.exposure_id AND e.to_status = 'lost' "
        "AND e.note LIKE 'released to the market:%')"
    )


def downgrade() -> None:
    with op.batch_alter_table("fraud_releases", schema=None) as batch_op:
        batch_op.drop_column("closed")
