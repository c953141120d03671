"""fraud_alerts.opened_risk_score, opened_reasons, opened_evidence: what an alert opened with

Revision ID: 0024_alert_opened_with
Revises: 0023_lead_closed
Create Date: 2026-11-29 17:20:00.000000

An open alert follows each scan of its business: one that corrected its reports (paid at the customer's amount)
left the alert open at risk 0 with no reasons and no evidence, and the operator could not see why it had opened.
What it opened with is kept beside what it shows now. Alerts opened before keep null there: what they opened with
was not kept, and their current evidence may be something else.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024_alert_opened_with"
down_revision: str | None = "0023_lead_closed"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("fraud_alerts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("opened_risk_score", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("opened_reasons", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("opened_evidence", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fraud_alerts", schema=None) as batch_op:
        batch_op.drop_column("opened_evidence")
        batch_op.drop_column("opened_reasons")
        batch_op.drop_column("opened_risk_score")
