"""businesses: no index on status; offers: the expiry sweep's index covers open offers only

Revision ID: 0010_planner_indexes
Revises: 0009_idempotency_no_contacts
Create Date: 2026-11-26 12:00:00.000000

Two indexes that cost time instead of saving it, found by timing every statement of a simulated market:

- `ix_businesses_status`. A wave marks the businesses it offers a lead to with
  `UPDATE businesses ... WHERE id IN (...) AND status = 'active'`. SQLite keeps no statistics unless ANALYZE
  runs, and without them its planner rated the status index (one lookup, "about ten rows") above the primary
  key (one lookup per id): the statement walked every active business, ~590 µs at 2,400 businesses against
  ~40 µs by key, and it was 40 % of the database's time in a simulated market. Three values, nearly every row
  `active`: no query is served by it (PostgreSQL would not use it either).
- `ix_offers_expires_at` becomes `ix_offers_open_expires_at`, on expires_at for open offers only. The expiry
  sweep (`status = 'open' AND expires_at <= now`) walked every offer that ever expired: 12 ms after three
  simulated days, growing every day; now it reads only the open offers that lapsed. Partial, not
  (status, expires_at): without statistics SQLite preferred a (status, expires_at) index to the business's own
  index for a business's open offers, and to the lead's for closing a lead's open offers, walking every open
  offer of the market (the sweep names the status as a literal, which a partial index needs).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_planner_indexes"
down_revision: str | None = "0009_idempotency_no_contacts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("businesses", schema=None) as batch_op:
        batch_op.drop_index("ix_businesses_status")
    with op.batch_alter_table("offers", schema=None) as batch_op:
        batch_op.drop_index("ix_offers_expires_at")
        batch_op.create_index(
            "ix_offers_open_expires_at",
            ["expires_at"],
            unique=False,
            sqlite_where=sa.text("status = 'open'"),
            postgresql_where=sa.text("status = 'open'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("offers", schema=None) as batch_op:
        batch_op.drop_index("ix_offers_open_expires_at")
        batch_op.create_index("ix_offers_expires_at", ["expires_at"], unique=False)
    with op.batch_alter_table("businesses", schema=None) as batch_op:
        batch_op.create_index("ix_businesses_status", ["status"], unique=False)
