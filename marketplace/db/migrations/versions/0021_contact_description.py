"""lead_contacts.description: the customer's own words where the lead's description had contact details hidden

Revision ID: 0021_contact_description
Revises: 0020_business_phone_index
Create Date: 2026-11-29 12:05:00.000000

A customer who writes its phone number or email into the description handed its contact to every business offered
the lead, for nothing. The lead's description (the free summary) now has them hidden; the words as written are kept
with the contact, for the businesses that hold it. Leads made before keep their description as it was.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021_contact_description"
down_revision: str | None = "0020_business_phone_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("lead_contacts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("description", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lead_contacts", schema=None) as batch_op:
        batch_op.drop_column("description")
