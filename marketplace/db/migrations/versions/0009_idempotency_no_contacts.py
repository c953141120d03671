"""idempotency_records: stored answers keep no lead contact (data only)

Revision ID: 0009_idempotency_no_contacts
Revises: 0008_offers_created_at
Create Date: 2026-11-26 11:00:00.000000

From this revision on, an answer stored for an `Idempotency-Key` leaves an exposure's contact out and a replay
reads it from the live data (`marketplace/http/idempotency.py: Private`), so that a returned lead's contact is
not shown again and no contact is kept at rest beside the lead's own table. Answers stored before it still hold
the contact: this blanks it. Nothing to undo on downgrade (a replay fills the contact in either way).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_idempotency_no_contacts"
down_revision: str | None = "0008_offers_created_at"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

records = sa.table(
    "idempotency_records",
    sa.column("scope", sa.String),
    sa.column("key", sa.String),
    sa.column("status_code", sa.Integer),
    sa.column("body", sa.JSON),
)


def upgrade() -> None:
    bind = op.get_bind()
    answers = bind.execute(
        sa.select(records.c.scope, records.c.key, records.c.body).where(
            records.c.status_code >= 200, records.c.status_code < 300
        )
    )
    for scope, key, body in answers.all():
        if isinstance(body, dict) and body.get("contact") is not None:
            bind.execute(
                records.update()
                .where(records.c.scope == scope, records.c.key == key)
                .values(body={**body, "contact": None})
            )


def downgrade() -> None:
    pass
