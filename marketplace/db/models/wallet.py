"""The ledger's tables: accounts with their balance, transactions, postings; invoices and settlements.

The rules live in the database too: a posting is never zero, a business balance never negative, an
idempotency key is unique, and a transaction row can only be written once its postings balance (triggers
in the migration; postings are written first, the transaction row last, under a deferred foreign key).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from marketplace.db.base import Base, UTCDateTime, one_of


class LedgerAccount(Base):
    __tablename__ = "ledger_accounts"
    __table_args__ = (
        UniqueConstraint("code", "currency"),
        CheckConstraint("NOT non_negative OR balance_minor >= 0", name="non_negative_balance"),
        Index("ix_ledger_accounts_owner_id", "owner_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # business:<id>:credit, marketplace::revenue, marketplace:<club id>:club_payable
    code: Mapped[str] = mapped_column(String(120))
    owner: Mapped[str] = mapped_column(String(20))
    owner_id: Mapped[str | None] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(40))
    currency: Mapped[str] = mapped_column(String(3))
    # In the account's normal terms (what a business has, or owes, is positive); kept in step with the
    # postings inside the same transaction, and a check compares the two.
    balance_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    non_negative: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class LedgerTransaction(Base):
    __tablename__ = "ledger_transactions"
    __table_args__ = (
        # The keys of a referrer's bonuses by their prefix (wallet/referrals.py): PostgreSQL's unique index serves a
        # LIKE 'prefix%' only under the "C" collation; this one under any. (SQLite reads them by a range of the unique
        # index, its BINARY collation being byte order.)
        Index(
            "ix_ledger_transactions_idempotency_key_prefix",
            "idempotency_key",
            postgresql_ops={"idempotency_key": "text_pattern_ops"},
        ).ddl_if(dialect="postgresql"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    memo: Mapped[str] = mapped_column(Text, default="")
    fingerprint: Mapped[str] = mapped_column(String(64))
    business_id: Mapped[str | None] = mapped_column(String(40), index=True)
    reference: Mapped[str | None] = mapped_column(String(80), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class LedgerPosting(Base):
    __tablename__ = "ledger_postings"
    __table_args__ = (
        CheckConstraint("amount_minor <> 0", name="non_zero"),
        Index("ix_ledger_postings_account_id_id", "account_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    transaction_id: Mapped[str] = mapped_column(
        ForeignKey("ledger_transactions.id", deferrable=True, initially="DEFERRED"), index=True
    )
    account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"))
    # Positive is a debit, negative a credit; a transaction's postings sum to zero per currency.
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))


class InvoiceSequence(Base):
    """The next number per issuer: taken with a conditional update, so numbers have no gaps."""

    __tablename__ = "invoice_sequences"

    issuer: Mapped[str] = mapped_column(String(80), primary_key=True)
    next_number: Mapped[int] = mapped_column(Integer, default=1)


class Invoice(Base):
    """Immutable once issued; a correction is a credit note (a new invoice pointing at this one)."""

    __tablename__ = "invoices"
    __table_args__ = (UniqueConstraint("issuer", "number"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    issuer: Mapped[str] = mapped_column(String(80))
    number: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(20))  # invoice | credit_note
    business_id: Mapped[str] = mapped_column(ForeignKey("businesses.id"), index=True)
    transaction_id: Mapped[str | None] = mapped_column(String(40), index=True)
    corrects_invoice_id: Mapped[str | None] = mapped_column(String(40))
    currency: Mapped[str] = mapped_column(String(3))
    net_minor: Mapped[int] = mapped_column(BigInteger)
    vat_minor: Mapped[int] = mapped_column(BigInteger)
    gross_minor: Mapped[int] = mapped_column(BigInteger)
    vat_rate_bp: Mapped[int] = mapped_column(Integer)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())


# A settlement's status: the CHECK below is written from it, and the operators' list filters by it.
SETTLEMENT_STATUSES = ("pending", "confirmed", "failed", "cancelled")


class Settlement(Base):
    """Money through the payment provider: a charge to collect or a payout to make, until confirmed."""

    __tablename__ = "settlements"
    __table_args__ = (
        CheckConstraint(one_of("status", SETTLEMENT_STATUSES), name="status"),
        CheckConstraint("direction IN ('charge', 'payout')", name="direction"),
        CheckConstraint("amount_minor > 0", name="positive"),
        CheckConstraint("(business_id IS NULL) <> (payee IS NULL)", name="one_party"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # The business paying or paid; None for a payout of what the marketplace owes a club operator or a referrer,
    # who is then the payee (its payable account's code, e.g. marketplace:club_x:club_payable).
    business_id: Mapped[str | None] = mapped_column(ForeignKey("businesses.id"), index=True)
    payee: Mapped[str | None] = mapped_column(String(120))
    direction: Mapped[str] = mapped_column(String(20))
    method: Mapped[str] = mapped_column(String(40))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(20), index=True)
    transaction_id: Mapped[str] = mapped_column(String(40))
    confirmed_transaction_id: Mapped[str | None] = mapped_column(String(40))
    invoice_id: Mapped[str | None] = mapped_column(String(40))
    # What the money is for (an exposure, a withdrawal), to find a charge again when its lead is refunded.
    reference: Mapped[str | None] = mapped_column(String(80), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    confirmed_by: Mapped[str | None] = mapped_column(String(80))

    @property
    def payer(self) -> str:
        """The business a charge collects from (every charge has one)."""
        if self.business_id is None:
            raise ValueError(f"settlement {self.id} pays out a payable, it has no business")
        return self.business_id


class CommissionPlanVersion(Base):
    """Commission plans are data: every change is a new version; a settlement names the version it used."""

    __tablename__ = "commission_plans"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    version: Mapped[int] = mapped_column(Integer)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class Referrer(Base):
    """Someone with a referral link (its name is its code's and its payable account's): a `partner` earns the plan's
    tiers (a fee per qualified lead, a share of each closed sale, lifetime and retention bonuses); a `customer` who
    refers others earns the plan's customer-referrer rate of what its referred customers bring, and its sponsor (who
    brought the customer in) the sponsor's rate, up the chain."""

    __tablename__ = "referrers"
    __table_args__ = (
        CheckConstraint("kind IN ('partner', 'customer')", name="kind"),
        CheckConstraint("sponsor_id IS NULL OR sponsor_id <> id", name="not_own_sponsor"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    sponsor_id: Mapped[str | None] = mapped_column(ForeignKey("referrers.id"))
    # Revenue (net) its referred leads brought the marketplace: the lifetime bonus's measure.
    lifetime_revenue_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
