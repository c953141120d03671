"""clubs, their invitations and members; leads.club_id; settlements paying out a club's or a referrer's payable

Revision ID: 0014_clubs
Revises: 0013_next_wave_at
Create Date: 2026-11-27 08:10:00.000000

A lead inside a club is offered to its members only; its operator earns the plan's club share of a deal's
commission (club_payable). A payout of a payable names its payee instead of a business.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from marketplace.db.base import UTCDateTime

revision: str = "0014_clubs"
down_revision: str | None = "0013_next_wave_at"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "clubs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("operator_name", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clubs")),
    )
    op.create_table(
        "club_invitations",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("club_id", sa.String(length=40), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_by", sa.String(length=40), nullable=True),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["club_id"], ["clubs.id"], name=op.f("fk_club_invitations_club_id_clubs")),
        sa.ForeignKeyConstraint(["used_by"], ["businesses.id"], name=op.f("fk_club_invitations_used_by_businesses")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_club_invitations")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_club_invitations_code_hash")),
    )
    with op.batch_alter_table("club_invitations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_club_invitations_club_id"), ["club_id"], unique=False)
    op.create_table(
        "club_members",
        sa.Column("club_id", sa.String(length=40), nullable=False),
        sa.Column("business_id", sa.String(length=40), nullable=False),
        sa.Column("invitation_id", sa.String(length=40), nullable=False),
        sa.Column("joined_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["business_id"], ["businesses.id"], name=op.f("fk_club_members_business_id_businesses")
        ),
        sa.ForeignKeyConstraint(["club_id"], ["clubs.id"], name=op.f("fk_club_members_club_id_clubs")),
        sa.ForeignKeyConstraint(
            ["invitation_id"], ["club_invitations.id"], name=op.f("fk_club_members_invitation_id_club_invitations")
        ),
        sa.PrimaryKeyConstraint("club_id", "business_id", name=op.f("pk_club_members")),
    )
    with op.batch_alter_table("club_members", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_club_members_business_id"), ["business_id"], unique=False)
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("club_id", sa.String(length=40), nullable=True))
        batch_op.create_index(batch_op.f("ix_leads_club_id"), ["club_id"], unique=False)
        batch_op.create_foreign_key(batch_op.f("fk_leads_club_id_clubs"), "clubs", ["club_id"], ["id"])
    with op.batch_alter_table("settlements", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payee", sa.String(length=120), nullable=True))
        batch_op.alter_column("business_id", existing_type=sa.String(length=40), nullable=True)
        batch_op.create_check_constraint(op.f("ck_settlements_one_party"), "(business_id IS NULL) <> (payee IS NULL)")


def downgrade() -> None:
    with op.batch_alter_table("settlements", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_settlements_one_party"), type_="check")
        batch_op.alter_column("business_id", existing_type=sa.String(length=40), nullable=False)
        batch_op.drop_column("payee")
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_leads_club_id_clubs"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_leads_club_id"))
        batch_op.drop_column("club_id")
    with op.batch_alter_table("club_members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_club_members_business_id"))
    op.drop_table("club_members")
    with op.batch_alter_table("club_invitations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_club_invitations_club_id"))
    op.drop_table("club_invitations")
    op.drop_table("clubs")
