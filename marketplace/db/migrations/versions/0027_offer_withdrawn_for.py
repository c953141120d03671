"""offers.withdrawn_for: why an offer was withdrawn, where its claim can be told

Revision ID: 0027_offer_withdrawn_for
Revises: 0026_invitation_created_by
Create Date: 2026-11-29 20:00:00.000000

An offer withdrawn because its business lowered its bid below the offer's price, reached a cap of leads, or could no
longer pay within its credit limit was only `closed`, and a claim of it got one 409 listing every possible cause. The
offer now keeps which of these withdrew it ("bid_lowered", "cap", "credit_limit"; null for any other withdrawal and
for offers withdrawn before), and the claim's 409 says it. Made again (a later wave), an offer forgets it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027_offer_withdrawn_for"
down_revision: str | None = "0026_invitation_created_by"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("offers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("withdrawn_for", sa.String(length=20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("offers", schema=None) as batch_op:
        batch_op.drop_column("withdrawn_for")
