"""leads.status 'closed': a lead taken off the market before its time, told apart from one whose time ran out

Revision ID: 0023_lead_closed
Revises: 0022_referral_indexes
Create Date: 2026-11-29 17:00:00.000000

A lead whose customer hired a business (a deal maker's deal reported won, invoiced or paid; the customer's survey
answer), or whose seller was blocked, was set `expired` (an open one) or left `full`, its expiry brought forward:
the deal maker that won it and the operator read "nobody took it in time". Such leads are now `closed`.

The leads closed before this revision are found by what took them off: their expiry was brought forward to the
moment it happened, so the hire or the block came at or before it (a deal maker's first won, invoiced or paid report,
a customer's answer naming a hire, the seller's block while the lead was in). A hire reported before a lead's time ran
out took it off the market (or would have, before the market was left on a win), so a lead that hire came in time for
is closed either way.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0023_lead_closed"
down_revision: str | None = "0022_referral_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CLOSED_EARLY = """
UPDATE leads SET status = 'closed'
WHERE status IN ('expired', 'full') AND (
    EXISTS (
        SELECT 1 FROM exposure_events e JOIN exposures x ON x.id = e.exposure_id
        WHERE x.lead_id = leads.id AND x.mode = 'deal_maker' AND e.to_status IN ('won', 'invoiced', 'paid')
            AND e.at <= leads.expires_at
    )
    OR EXISTS (
        SELECT 1 FROM surveys s
        WHERE s.lead_id = leads.id AND s.hired AND s.answered_at <= leads.expires_at
    )
    OR EXISTS (
        SELECT 1 FROM business_status_changes b
        WHERE b.business_id = leads.seller_business_id AND b.to_status = 'blocked'
            AND b.changed_at >= leads.created_at AND b.changed_at <= leads.expires_at
    )
)
"""


def upgrade() -> None:
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_leads_status"), type_="check")
        batch_op.create_check_constraint(
            batch_op.f("ck_leads_status"), "status IN ('open', 'full', 'expired', 'closed')"
        )
    op.execute(_CLOSED_EARLY)


def downgrade() -> None:
    # As they were before: a full lead stayed full, an open one was expired.
    op.execute(
        "UPDATE leads SET status = CASE WHEN is_exclusive OR exposure_count >= max_exposures THEN 'full' "
        "ELSE 'expired' END WHERE status = 'closed'"
    )
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_leads_status"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_leads_status"), "status IN ('open', 'full', 'expired')")
