"""The wallet on the wire: balances, ledger entries, settlements, invoices, plans, the trial balance."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from marketplace.schemas import MoneyIn, MoneyOut


class Settlement(msgspec.Struct):
    id: str
    # The business charged or paid; None for a payout of what the marketplace owes a club operator or a referrer.
    business_id: str | None
    direction: str
    method: str
    amount: MoneyOut
    status: str
    invoice_id: str | None
    reference: str | None
    created_at: datetime
    confirmed_at: datetime | None  # only a confirmed one's
    # A payable's payout: its account (e.g. marketplace:club_x:club_payable); None for a business's settlement.
    payee: str | None = None
    failed_at: datetime | None = None  # a failed one's, kept when it is then cancelled


class Wallet(msgspec.Struct):
    business_id: str
    currency: str
    available: MoneyOut
    credit: MoneyOut
    owed: MoneyOut
    credit_limit: MoneyOut
    withdrawable: bool
    pending_settlements: list[Settlement]
    # Every charge still open, pending or failed: they add up to `owed`.
    open_debts: list[Settlement]
    # What a withdrawal could pay out now: available, less what it owes beyond its credit (debts are paid first)
    # and less the held earnings.
    withdrawable_amount: MoneyOut
    # Earnings for sold leads whose buyers have not paid yet, or may still return them: counted in the balance, but
    # neither paid out nor spent on the business's charges until the payers pay and the return windows close.
    held: MoneyOut


class Entry(msgspec.Struct):
    posting_id: str  # opaque, as every id
    transaction_id: str
    # What the posting is for this business: its transaction's kind, but `lead_earnings` for its share, as a lead's
    # seller, of the commission on the deal another business made of it (a `deal_commission` transaction).
    kind: str
    account: str
    # In the account's own terms: +100 on `credit` means the business has 1.00 more credit.
    amount: MoneyOut
    memo: str
    reference: str | None
    at: datetime


class WithdrawalRequest(msgspec.Struct, forbid_unknown_fields=True):
    amount: MoneyIn


class Payable(msgspec.Struct):
    """What the marketplace owes a club's operator or a referrer now (pending payouts already taken off)."""

    account: str  # club_payable | referrer_payable
    owner: str  # the club's id, or the referrer's name
    owed: MoneyOut
    # Of what is owed: held until its payers pay and its leads can no longer be returned; the rest may be paid out.
    held: MoneyOut
    payable: MoneyOut


class PayableOut(msgspec.Struct, forbid_unknown_fields=True):
    account: Literal["club_payable", "referrer_payable"]
    owner: Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
    amount: MoneyIn


class InvoiceSummary(msgspec.Struct):
    id: str
    number: str
    kind: str
    business_id: str
    net: MoneyOut
    vat: MoneyOut
    gross: MoneyOut
    vat_rate_bp: int
    issued_at: datetime
    corrects_invoice_id: str | None


class InvoiceDetail(msgspec.Struct):
    id: str
    number: str
    kind: str
    business_id: str
    net: MoneyOut
    vat: MoneyOut
    gross: MoneyOut
    vat_rate_bp: int
    issued_at: datetime
    corrects_invoice_id: str | None
    document: dict[str, Any]


class AccountBalance(msgspec.Struct):
    account: str
    balance: MoneyOut


class TrialBalance(msgspec.Struct):
    # Every posting summed per currency: zero in a sound ledger.
    totals: dict[str, int]
    balanced: bool
    marketplace_accounts: list[AccountBalance]
    # Business accounts whose kept balance differs from their postings (empty in a sound ledger).
    mismatches: list[dict[str, Any]]


class PlanIn(msgspec.Struct, forbid_unknown_fields=True):
    definition: dict[str, Any]


class Plan(msgspec.Struct):
    id: str
    version: int
    definition: dict[str, Any]
    created_by: str
    created_at: datetime


class CreditLimit(msgspec.Struct, forbid_unknown_fields=True):
    amount: MoneyIn
