"""businesses: an index on phone

Revision ID: 0020_business_phone_index
Revises: 0019_release_closed
Create Date: 2026-11-29 09:40:00.000000

A sign-up (and a change of phone) is refused when its phone is a blocked or unreliable business's: only the email is
unique, and a blocked business came back at once under its name and phone with a new email. That lookup by phone runs
at every sign-up; without the index it read every business.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020_business_phone_index"
down_revision: str | None = "0019_release_closed"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("businesses", schema=None) as batch_op:
        batch_op.create_index("ix_businesses_phone", ["phone"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("businesses", schema=None) as batch_op:
        batch_op.drop_index("ix_businesses_phone")
