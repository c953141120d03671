"""api_tokens.club_id: a club's operator has a token of its own, to invite businesses into its club

Revision ID: 0015_club_tokens
Revises: 0014_clubs
Create Date: 2026-11-27 08:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015_club_tokens"
down_revision: str | None = "0014_clubs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ONE_OWNER = (
    "(CASE WHEN business_id IS NULL THEN 0 ELSE 1 END) + (CASE WHEN operator_id IS NULL THEN 0 ELSE 1 END)"
    " + (CASE WHEN club_id IS NULL THEN 0 ELSE 1 END) = 1"
)


def upgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("club_id", sa.String(length=40), nullable=True))
        batch_op.create_index(batch_op.f("ix_api_tokens_club_id"), ["club_id"], unique=False)
        batch_op.create_foreign_key(batch_op.f("fk_api_tokens_club_id_clubs"), "clubs", ["club_id"], ["id"])
        batch_op.drop_constraint(batch_op.f("ck_api_tokens_exactly_one_owner"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_api_tokens_exactly_one_owner"), ONE_OWNER)


def downgrade() -> None:
    op.execute("DELETE FROM api_tokens WHERE club_id IS NOT NULL")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_api_tokens_exactly_one_owner"), type_="check")
        batch_op.create_check_constraint(
            batch_op.f("ck_api_tokens_exactly_one_owner"), "(business_id IS NULL) <> (operator_id IS NULL)"
        )
        batch_op.drop_constraint(batch_op.f("fk_api_tokens_club_id_clubs"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_api_tokens_club_id"))
        batch_op.drop_column("club_id")
