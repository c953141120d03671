"""indexes for referral rewards: bonus keys by prefix (PostgreSQL), leads by referral code, contacts by phone

Revision ID: 0022_referral_indexes
Revises: 0021_contact_description
Create Date: 2026-11-29 15:00:00.000000

A referrer's lifetime and retention bonuses are their own ledger transactions, found by their idempotency keys'
prefix while the referrer's row and the wallets are locked: PostgreSQL's unique index serves `LIKE 'prefix%'` only
under the "C" collation, so a text_pattern_ops index serves it under any (SQLite reads a range of the unique index).
Whether a purchase is a repeat, and which later purchases a return leaves without an earlier one, read a referrer's
customers' leads by referral code and phone: neither column had an index, so each read scanned every lead.

Built inside the upgrade's transaction, which holds writes to ledger_transactions (every posting) while it builds: on
a large ledger, build it first without holding them, and this migration finds it there:
    CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_ledger_transactions_idempotency_key_prefix
        ON ledger_transactions (idempotency_key text_pattern_ops);
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0022_referral_indexes"
down_revision: str | None = "0021_contact_description"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(
            "ix_ledger_transactions_idempotency_key_prefix",
            "ledger_transactions",
            ["idempotency_key"],
            unique=False,
            postgresql_ops={"idempotency_key": "text_pattern_ops"},
            if_not_exists=True,
        )
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.create_index("ix_leads_referral_code_created_at", ["referral_code", "created_at"], unique=False)
    with op.batch_alter_table("lead_contacts", schema=None) as batch_op:
        batch_op.create_index("ix_lead_contacts_phone", ["phone"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("lead_contacts", schema=None) as batch_op:
        batch_op.drop_index("ix_lead_contacts_phone")
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_index("ix_leads_referral_code_created_at")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_ledger_transactions_idempotency_key_prefix", table_name="ledger_transactions")
