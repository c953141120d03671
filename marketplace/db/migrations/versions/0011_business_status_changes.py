"""business_status_changes: every operator's change of an account's status, with who made it and why

Revision ID: 0011_business_status_changes
Revises: 0010_planner_indexes
Create Date: 2026-11-26 15:10:00.000000

A block, a suspension or a reactivation (and the block of a confirmed fraud alert) was applied without a trace
of who decided it or why; the reason an operator gave was dropped.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from marketplace.db.base import UTCDateTime

revision: str = "0011_business_status_changes"
down_revision: str | None = "0010_planner_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "business_status_changes",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("business_id", sa.String(length=40), nullable=False),
        sa.Column("from_status", sa.String(length=20), nullable=False),
        sa.Column("to_status", sa.String(length=20), nullable=False),
        sa.Column("unreliable", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("changed_by", sa.String(length=80), nullable=False),
        sa.Column("changed_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["business_id"],
            ["businesses.id"],
            name=op.f("fk_business_status_changes_business_id_businesses"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_business_status_changes")),
    )
    with op.batch_alter_table("business_status_changes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_business_status_changes_business_id"), ["business_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("business_status_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_business_status_changes_business_id"))
    op.drop_table("business_status_changes")
