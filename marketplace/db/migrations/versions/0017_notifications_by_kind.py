"""notifications: an index on (kind, id) in place of the one on kind alone

Revision ID: 0017_notifications_by_kind
Revises: 0016_owed_replacements
Create Date: 2026-11-27 14:40:00.000000

`GET /v1/notifications?kind=...` pages newest first by id: with the index on kind alone every page sorted all of a
kind's messages (81 ms a call in a 28-day simulated market with 50,000 messages).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017_notifications_by_kind"
down_revision: str | None = "0016_owed_replacements"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index("ix_notifications_kind_id", ["kind", "id"], unique=False)
        batch_op.drop_index("ix_notifications_kind")


def downgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index("ix_notifications_kind", ["kind"], unique=False)
        batch_op.drop_index("ix_notifications_kind_id")
