"""exposures.replacement_held_by, replacement_forfeited_at: a replacement the customer contradicted

Revision ID: 0028_replacement_forfeits
Revises: 0027_offer_withdrawn_for
Create Date: 2026-11-29 23:30:00.000000

A deal maker's return whose customer then said it hired that business (the `returned_then_hired` fraud signal) kept
its replacement owed through the alert and after its confirmation: once the business was let back in, it was offered
the replacement its false return had earned. The replacement is now held while an open alert names the return
(`replacement_held_by`: the alert; no replacement is offered, an open offer of one is withdrawn), owed again if the
alert is dismissed, and forfeited if it is confirmed (`replacement_forfeited_at`: the debt is cancelled for good).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from marketplace.db.base import UTCDateTime

revision: str = "0028_replacement_forfeits"
down_revision: str | None = "0027_offer_withdrawn_for"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("exposures", schema=None) as batch_op:
        batch_op.add_column(sa.Column("replacement_held_by", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("replacement_forfeited_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("exposures", schema=None) as batch_op:
        batch_op.drop_column("replacement_forfeited_at")
        batch_op.drop_column("replacement_held_by")
