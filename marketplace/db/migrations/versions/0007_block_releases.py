"""fraud_releases: a release may come from an operator's block as well as a confirmed alert (alert_id optional)

Revision ID: 0007_block_releases
Revises: 0006_ledger_statement_checks
Create Date: 2026-11-26 06:30:00.000000

An operator's block (POST /v1/businesses/{id}/block) gives the business's open leads back to the market, as a
confirmed fraud alert does; the release then names no alert.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_block_releases"
down_revision: str | None = "0006_ledger_statement_checks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("fraud_releases", schema=None) as batch_op:
        batch_op.alter_column("alert_id", existing_type=sa.String(length=40), nullable=True)


def downgrade() -> None:
    # Deleting those rows would let a later confirmed alert free the same leads' slots a second time.
    blocks = op.get_bind().execute(sa.text("SELECT count(*) FROM fraud_releases WHERE alert_id IS NULL")).scalar()
    if blocks:
        raise RuntimeError(
            f"{blocks} leads were released by operators' blocks: 0006 has no place for them (downgrade refused)"
        )
    with op.batch_alter_table("fraud_releases", schema=None) as batch_op:
        batch_op.alter_column("alert_id", existing_type=sa.String(length=40), nullable=False)
