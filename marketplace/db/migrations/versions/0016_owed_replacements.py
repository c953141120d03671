"""exposures.replacement_owed_since: a deal maker's return that found no open lead to replace it is owed one

Revision ID: 0016_owed_replacements
Revises: 0015_club_tokens
Create Date: 2026-11-27 11:00:00.000000

A return with no matching open lead at that moment left the deal maker without a replacement, and nothing recorded
that one was owed; the first wave of the next lead that fits now offers it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from marketplace.db.base import UTCDateTime

revision: str = "0016_owed_replacements"
down_revision: str | None = "0015_club_tokens"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("exposures", schema=None) as batch_op:
        batch_op.add_column(sa.Column("replacement_owed_since", UTCDateTime(), nullable=True))
        batch_op.create_index(
            "ix_exposures_replacement_owed_since",
            ["replacement_owed_since"],
            unique=False,
            postgresql_where=sa.text("replacement_owed_since IS NOT NULL"),
            sqlite_where=sa.text("replacement_owed_since IS NOT NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("exposures", schema=None) as batch_op:
        batch_op.drop_index("ix_exposures_replacement_owed_since")
        batch_op.drop_column("replacement_owed_since")
