"""club_invitations.created_by: who invited, the club's own operator or the marketplace's

Revision ID: 0026_invitation_created_by
Revises: 0025_replacement_offers
Create Date: 2026-11-29 18:00:00.000000

A club's operator may have the marketplace email only a few invitations a day, and the marketplace's operators are not
limited; but the count took every invitation of the club, so a marketplace operator's invitations used up the club
operator's day. Each invitation now keeps who made it, and only the club operator's are counted. Invitations made
before keep null there (who made them was not kept) and are counted, as they were.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0026_invitation_created_by"
down_revision: str | None = "0025_replacement_offers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("club_invitations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("created_by", sa.String(length=80), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("club_invitations", schema=None) as batch_op:
        batch_op.drop_column("created_by")
