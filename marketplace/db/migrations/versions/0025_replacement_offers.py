"""offers: a partial index on replaces_exposure_id, so that a returned deal shows what became of its replacement

Revision ID: 0025_replacement_offers
Revises: 0024_alert_opened_with
Create Date: 2026-11-29 17:45:00.000000

A deal maker's returned exposure now says whether its replacement is owed, offered, claimed or lapsed (`replacement`
on `GET /v1/exposures`), read from the offers that name it. Only the open one had an index (0018's unique one): a
claimed one was found by walking every claimed offer of the business. Partial: only replacement offers are in it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025_replacement_offers"
down_revision: str | None = "0024_alert_opened_with"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_REPLACEMENT = "replaces_exposure_id IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("offers", schema=None) as batch_op:
        batch_op.create_index(
            "ix_offers_replaces_exposure_id",
            ["replaces_exposure_id"],
            unique=False,
            sqlite_where=sa.text(_REPLACEMENT),
            postgresql_where=sa.text(_REPLACEMENT),
        )


def downgrade() -> None:
    with op.batch_alter_table("offers", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_offers_replaces_exposure_id",
            sqlite_where=sa.text(_REPLACEMENT),
            postgresql_where=sa.text(_REPLACEMENT),
        )
