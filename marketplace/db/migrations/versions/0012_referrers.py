"""referrers: who holds a referral link, of which kind (partner or customer), its sponsor, its lifetime revenue

Revision ID: 0012_referrers
Revises: 0011_business_status_changes
Create Date: 2026-11-27 05:35:00.000000

The plan's tiers (a qualified lead's fee, lifetime and retention bonuses) and its customer-referrer rule (a
sponsor's difference bonus) need to know who a referrer is, who sponsored it and what it has brought so far.
A code issued before this migration names a referrer without a row: it is a partner with no sponsor.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from marketplace.db.base import UTCDateTime

revision: str = "0012_referrers"
down_revision: str | None = "0011_business_status_changes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "referrers",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("sponsor_id", sa.String(length=40), nullable=True),
        sa.Column("lifetime_revenue_minor", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("kind IN ('partner', 'customer')", name=op.f("ck_referrers_kind")),
        sa.CheckConstraint("sponsor_id IS NULL OR sponsor_id <> id", name=op.f("ck_referrers_not_own_sponsor")),
        sa.ForeignKeyConstraint(["sponsor_id"], ["referrers.id"], name=op.f("fk_referrers_sponsor_id_referrers")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referrers")),
    )


def downgrade() -> None:
    op.drop_table("referrers")
