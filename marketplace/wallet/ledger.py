"""Pure double-entry ledger rules: accounts, postings, balanced transfers and one builder per money movement.

Sign convention
---------------
A posting's amount is signed in the classic way: positive is a **debit**, negative a **credit**, and a
transfer's postings sum to zero per currency. Each account kind has a normal side (assets and expenses
are debit-normal, liabilities and revenue credit-normal); its *balance* is the sum of its postings times
that side (``Posting.balance_delta``), so a business's ``available`` of 50.00 means the marketplace owes
it 50.00 and a business's ``receivable`` of 18.00 means it owes the marketplace 18.00. Business balances
must never go below zero; marketplace accounts are not bounded. Balances are per (account, currency).

Accounts
--------
business ``available``   withdrawable money the marketplace owes a lead buyer (sold inquiries)
business ``credit``      marketplace credit: returns, a deal maker's sold inquiries; never paid out
business ``receivable``  what the business still owes: the part of a charge the provider has not collected
marketplace ``revenue``, ``vat_payable``, ``club_payable``, ``referrer_payable`` (owed to a club
operator / referrer; the counterparty's id may name the account), ``acquisition_costs`` (what the
marketplace pays for sold inquiries, referral fees and bonuses), ``provider_clearing`` (money held by
the payment provider on its way in or out) and ``bank`` (the marketplace's own bank account).

Money paths
-----------
charge (exposure purchase, deal commission): Dr credit, Dr available, Dr receivable (the rest to be
    charged) / Cr vat_payable (VAT), Cr revenue (net less the plan's shares), Cr payables (shares).
    Revenue is booked when the charge is made; the unpaid part stays an open, visible receivable.
charge received:      Dr provider_clearing / Cr receivable; only now is the debt paid.
provider settlement:  clearing ↔ bank, when the operator confirms the money arrived or left.
refund to credit:     Dr revenue, Dr vat_payable / Cr receivable (unpaid part) + Cr credit (the rest).
lead earnings, bonus: Dr acquisition_costs / Cr the seller's credit or available, or a payable.
earnings reversal:    a sold lead's buyer returned it, so the seller's earnings for that exposure come back:
    Dr the account they were paid into, Dr the other wallet account, Dr receivable (what the wallet no longer
    holds becomes an open debt) / Cr acquisition_costs.
debt offset:          money that arrived in a wallet pays what the business owes (credit, then available):
    Dr credit, Dr available / Cr receivable.
withdrawal, payout:   Dr available or a payable / Cr provider_clearing (the provider pays it out).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, NamedTuple

from marketplace.errors import Forbidden, InsufficientFunds, InvalidInput
from marketplace.money import CurrencyMismatch, Money
from marketplace.wallet.offset import OffsetPlan
from marketplace.wallet.vat import VatBreakdown

__all__ = [
    "MAX_POSTING_MINOR",
    "AccountKey",
    "AccountKind",
    "Allocation",
    "BusinessMode",
    "IdempotencyConflict",
    "MemoryLedger",
    "Posting",
    "SettlementDirection",
    "Transfer",
    "TransferKind",
    "UnbalancedTransfer",
    "WithdrawalNotAllowed",
    "build_charge_received",
    "build_deal_commission",
    "build_debt_offset",
    "build_earnings_reversal",
    "build_exposure_purchase",
    "build_lead_earnings",
    "build_lead_refund",
    "build_partner_bonus",
    "build_partner_bonuses",
    "build_payable_payout",
    "build_provider_settlement",
    "build_reversal",
    "build_withdrawal",
    "business_account",
    "earnings_account_kind",
    "marketplace_account",
]

MAX_POSTING_MINOR = 2**63 - 1
"""The largest amount a BIGINT column holds; a transfer beyond it could not be stored."""

Owner = Literal["business", "marketplace"]


class UnbalancedTransfer(ValueError):
    """A transfer breaks a ledger rule (sum per currency, zero posting, too few postings, no key)."""


class WithdrawalNotAllowed(Forbidden):
    """Only a lead buyer's available balance can be paid out; credit never."""


class IdempotencyConflict(InvalidInput):
    """An idempotency key was reused for a different movement of money."""


class BusinessMode(StrEnum):
    DEAL_MAKER = "deal_maker"
    LEAD_BUYER = "lead_buyer"


class AccountKind(StrEnum):
    AVAILABLE = "available"
    CREDIT = "credit"
    RECEIVABLE = "receivable"
    REVENUE = "revenue"
    VAT_PAYABLE = "vat_payable"
    CLUB_PAYABLE = "club_payable"
    REFERRER_PAYABLE = "referrer_payable"
    ACQUISITION_COSTS = "acquisition_costs"
    PROVIDER_CLEARING = "provider_clearing"
    BANK = "bank"

    @property
    def owner(self) -> Owner:
        return "business" if self in _BUSINESS_KINDS else "marketplace"

    @property
    def normal_sign(self) -> int:
        """+1 for debit-normal kinds (assets, expenses), -1 for credit-normal ones (liabilities, revenue)."""
        return 1 if self in _DEBIT_NORMAL else -1


_BUSINESS_KINDS = frozenset({AccountKind.AVAILABLE, AccountKind.CREDIT, AccountKind.RECEIVABLE})
_DEBIT_NORMAL = frozenset(
    {AccountKind.RECEIVABLE, AccountKind.ACQUISITION_COSTS, AccountKind.PROVIDER_CLEARING, AccountKind.BANK}
)
# Payables may be kept per counterparty (a club, a referrer); the marketplace's own accounts are single.
_COUNTERPARTY_KINDS = frozenset({AccountKind.CLUB_PAYABLE, AccountKind.REFERRER_PAYABLE})
# Where a share of a commission or a bonus may be credited.
_RECIPIENT_KINDS = _COUNTERPARTY_KINDS | {AccountKind.AVAILABLE, AccountKind.CREDIT}


class AccountKey(NamedTuple):
    owner: Owner
    owner_id: str | None
    kind: AccountKind

    def check(self) -> AccountKey:
        """Self, or ValueError when owner, id and kind do not fit together."""
        if not isinstance(self.kind, AccountKind):
            raise ValueError(f"account kind must be an AccountKind, got {self.kind!r}")
        if self.owner != self.kind.owner:
            raise ValueError(f"{self.kind} is a {self.kind.owner} account, not a {self.owner} one")
        if self.owner == "business" and not (isinstance(self.owner_id, str) and self.owner_id):
            raise ValueError(f"business account {self.kind} needs the business id")
        if self.owner == "marketplace" and self.owner_id is not None:
            if self.kind not in _COUNTERPARTY_KINDS:
                raise ValueError(f"marketplace account {self.kind} has no counterparty id")
            if not (isinstance(self.owner_id, str) and self.owner_id and ":" not in self.owner_id):
                raise ValueError(f"counterparty id must be a non-empty string without ':': {self.owner_id!r}")
        return self

    @property
    def is_business(self) -> bool:
        return self.owner == "business"

    @property
    def code(self) -> str:
        """One string per account for storage and display: business:biz_1:credit, marketplace::revenue."""
        return f"{self.owner}:{self.owner_id or ''}:{self.kind.value}"

    @classmethod
    def parse(cls, code: str) -> AccountKey:
        parts = code.split(":")
        if len(parts) != 3 or parts[0] not in ("business", "marketplace"):
            raise ValueError(f"not an account code: {code!r}")
        owner: Owner = "business" if parts[0] == "business" else "marketplace"
        try:
            kind = AccountKind(parts[2])
        except ValueError:
            raise ValueError(f"unknown account kind in {code!r}") from None
        return cls(owner, parts[1] or None, kind).check()


def business_account(business_id: str, kind: AccountKind) -> AccountKey:
    return AccountKey("business", business_id, kind).check()


def marketplace_account(kind: AccountKind, counterparty_id: str | None = None) -> AccountKey:
    return AccountKey("marketplace", counterparty_id, kind).check()


def earnings_account_kind(mode: BusinessMode | str) -> AccountKind:
    """Where a seller's earnings land: a deal maker's credit (not withdrawable), a lead buyer's available."""
    return AccountKind.CREDIT if BusinessMode(mode) is BusinessMode.DEAL_MAKER else AccountKind.AVAILABLE


class Posting(NamedTuple):
    account: AccountKey
    amount: Money
    """Positive is a debit, negative a credit."""

    @property
    def balance_delta(self) -> int:
        """How much the account's balance (in its normal terms) changes, in minor units."""
        return self.amount.amount_minor * self.account.kind.normal_sign


class Allocation(NamedTuple):
    """A positive amount credited to an account, e.g. a club operator's share of a commission."""

    account: AccountKey
    amount: Money


class TransferKind(StrEnum):
    EXPOSURE_PURCHASE = "exposure_purchase"
    DEAL_COMMISSION = "deal_commission"
    LEAD_REFUND = "lead_refund"
    LEAD_EARNINGS = "lead_earnings"
    PARTNER_BONUS = "partner_bonus"
    CHARGE_RECEIVED = "charge_received"
    WITHDRAWAL = "withdrawal"
    PAYABLE_PAYOUT = "payable_payout"
    PROVIDER_SETTLEMENT = "provider_settlement"
    REVERSAL = "reversal"
    EARNINGS_REVERSAL = "earnings_reversal"
    DEBT_OFFSET = "debt_offset"


class SettlementDirection(StrEnum):
    TO_BANK = "to_bank"
    """The provider paid collected money into the marketplace's bank account."""
    FROM_BANK = "from_bank"
    """The marketplace's bank funded payouts (withdrawals, payables) the provider made."""


@dataclass(frozen=True, slots=True)
class Transfer:
    idempotency_key: str
    kind: TransferKind
    postings: tuple[Posting, ...]
    memo: str = ""

    def validate(self) -> Transfer:
        """Self, or UnbalancedTransfer naming the first broken rule."""
        if not isinstance(self.idempotency_key, str) or not self.idempotency_key.strip():
            raise UnbalancedTransfer("a transfer needs a non-empty idempotency key")
        if len(self.postings) < 2:
            raise UnbalancedTransfer(f"a transfer needs at least two postings, got {len(self.postings)}")
        sums: dict[str, int] = defaultdict(int)
        for index, posting in enumerate(self.postings):
            if not isinstance(posting, Posting) or not isinstance(posting.amount, Money):
                raise UnbalancedTransfer(f"postings[{index}] is not a Posting of Money")
            try:
                posting.account.check()
            except ValueError as exc:
                raise UnbalancedTransfer(f"postings[{index}]: {exc}") from None
            if posting.amount.is_zero:
                raise UnbalancedTransfer(f"postings[{index}] to {posting.account.code} is zero")
            if abs(posting.amount.amount_minor) > MAX_POSTING_MINOR:
                raise UnbalancedTransfer(f"postings[{index}] exceeds the largest storable amount")
            sums[posting.amount.currency] += posting.amount.amount_minor
        off = {currency: total for currency, total in sums.items() if total != 0}
        if off:
            raise UnbalancedTransfer(f"postings do not sum to zero: {off} (minor units per currency)")
        return self

    @property
    def currencies(self) -> frozenset[str]:
        return frozenset(p.amount.currency for p in self.postings)

    def fingerprint(self) -> str:
        """A digest of what the transfer moves, to tell a retry (same) from a reused key (different)."""
        body = {
            "kind": self.kind.value,
            "postings": sorted(
                [p.account.code, p.amount.currency, p.amount.amount_minor] for p in self.postings
            ),
        }
        return hashlib.sha256(json.dumps(body, separators=(",", ":")).encode()).hexdigest()


# --- builders --------------------------------------------------------------------------------------


def _positive(amount: Money, name: str) -> Money:
    if not isinstance(amount, Money):
        raise TypeError(f"{name} must be Money, got {type(amount).__name__}")
    if not amount.is_positive:
        raise ValueError(f"{name} must be positive, got {amount}")
    return amount


def _recipient(account: AccountKey, name: str) -> AccountKey:
    if account.check().kind not in _RECIPIENT_KINDS:
        raise ValueError(f"{name}: only a business's credit or available or a payable, not {account.code}")
    return account


def _transfer(key: str, kind: TransferKind, postings: Iterable[Posting], memo: str) -> Transfer:
    # Postings to the same account and currency are merged and zeros dropped, so that a builder never emits
    # a zero posting for an unused step (say, nothing taken from credit).
    merged: dict[tuple[AccountKey, str], int] = {}
    for posting in postings:
        slot = (posting.account, posting.amount.currency)
        merged[slot] = merged.get(slot, 0) + posting.amount.amount_minor
    kept = tuple(
        Posting(account, Money(amount, currency)) for (account, currency), amount in merged.items() if amount
    )
    return Transfer(key, kind, kept, memo).validate()


def _charge(
    key: str,
    kind: TransferKind,
    business_id: str,
    price: VatBreakdown,
    offset: OffsetPlan,
    shares: Sequence[Allocation],
    memo: str,
) -> Transfer:
    _positive(price.gross, "price.gross")
    if price.net.is_negative or price.vat.is_negative:
        raise ValueError(f"net and VAT must not be negative: {price}")
    if offset.total != price.gross:
        raise ValueError(f"the offset plan covers {offset.total}, the charge is {price.gross}")
    shared = Money.zero(price.currency)
    for index, share in enumerate(shares):
        _positive(share.amount, f"shares[{index}].amount")
        _recipient(share.account, f"shares[{index}].account")
        shared = shared + share.amount
    if shared > price.net:
        raise ValueError(f"shares ({shared}) exceed the net amount ({price.net}); VAT is not shared")
    postings = [
        Posting(business_account(business_id, AccountKind.CREDIT), offset.from_credit),
        Posting(business_account(business_id, AccountKind.AVAILABLE), offset.from_available),
        Posting(business_account(business_id, AccountKind.RECEIVABLE), offset.to_charge),
        Posting(marketplace_account(AccountKind.VAT_PAYABLE), -price.vat),
        Posting(marketplace_account(AccountKind.REVENUE), -(price.net - shared)),
    ]
    postings += [Posting(share.account, -share.amount) for share in shares]
    return _transfer(key, kind, postings, memo)


def build_exposure_purchase(
    idempotency_key: str, business_id: str, price: VatBreakdown, offset: OffsetPlan, *, memo: str = ""
) -> Transfer:
    """A lead buyer pays a lead's price: wallet first per offset, the rest left as a receivable to charge."""
    return _charge(idempotency_key, TransferKind.EXPOSURE_PURCHASE, business_id, price, offset, (), memo)


def build_deal_commission(
    idempotency_key: str,
    business_id: str,
    commission: VatBreakdown,
    offset: OffsetPlan,
    *,
    shares: Sequence[Allocation] = (),
    memo: str = "",
) -> Transfer:
    """A deal maker's commission on a paid deal; shares (club operator, recommender) come out of the net."""
    kind = TransferKind.DEAL_COMMISSION
    return _charge(idempotency_key, kind, business_id, commission, offset, shares, memo)


def build_charge_received(
    idempotency_key: str, business_id: str, amount: Money, *, memo: str = ""
) -> Transfer:
    """The provider collected (part of) a business's receivable: the debt is paid, money sits in clearing."""
    _positive(amount, "amount")
    return _transfer(
        idempotency_key,
        TransferKind.CHARGE_RECEIVED,
        [
            Posting(marketplace_account(AccountKind.PROVIDER_CLEARING), amount),
            Posting(business_account(business_id, AccountKind.RECEIVABLE), -amount),
        ],
        memo,
    )


def build_lead_refund(
    idempotency_key: str,
    business_id: str,
    price: VatBreakdown,
    *,
    cancel_receivable: Money | None = None,
    to_available: Money | None = None,
    memo: str = "",
) -> Transfer:
    """A returned lead's price back: first cancels the unpaid part (cancel_receivable), gives what was paid from the
    available balance back to it (to_available: a lead buyer's withdrawable money stays withdrawable), the rest to
    credit.

    price is the breakdown of the original purchase, so that VAT is reversed exactly as it was charged.
    """
    _positive(price.gross, "price.gross")
    zero = Money.zero(price.currency)
    cancelled = cancel_receivable if cancel_receivable is not None else zero
    available = to_available if to_available is not None else zero
    for name, part in (("cancel_receivable", cancelled), ("to_available", available)):
        if part.currency != price.currency:
            raise CurrencyMismatch(price.currency, part.currency, "refund")
        if part.is_negative:
            raise ValueError(f"{name} must not be negative, got {part}")
    if cancelled + available > price.gross:
        raise ValueError(f"cancel_receivable and to_available ({cancelled} + {available}) exceed {price.gross}")
    return _transfer(
        idempotency_key,
        TransferKind.LEAD_REFUND,
        [
            Posting(marketplace_account(AccountKind.REVENUE), price.net),
            Posting(marketplace_account(AccountKind.VAT_PAYABLE), price.vat),
            Posting(business_account(business_id, AccountKind.RECEIVABLE), -cancelled),
            Posting(business_account(business_id, AccountKind.AVAILABLE), -available),
            Posting(business_account(business_id, AccountKind.CREDIT), -(price.gross - cancelled - available)),
        ],
        memo,
    )


def build_lead_earnings(
    idempotency_key: str, business_id: str, mode: BusinessMode | str, amount: Money, *, memo: str = ""
) -> Transfer:
    """A business earns for an inquiry it sold: credit for a deal maker, available for a lead buyer."""
    _positive(amount, "amount")
    return _transfer(
        idempotency_key,
        TransferKind.LEAD_EARNINGS,
        [
            Posting(marketplace_account(AccountKind.ACQUISITION_COSTS), amount),
            Posting(business_account(business_id, earnings_account_kind(mode)), -amount),
        ],
        memo,
    )


def build_earnings_reversal(
    idempotency_key: str, business_id: str, taken: OffsetPlan, *, memo: str = ""
) -> Transfer:
    """A seller's earnings for a lead its buyer returned, taken back: from the wallet as planned (taken.from_credit,
    taken.from_available), and what the wallet no longer holds (taken.to_charge) owed as a receivable."""
    _positive(taken.total, "taken.total")
    return _transfer(
        idempotency_key,
        TransferKind.EARNINGS_REVERSAL,
        [
            Posting(business_account(business_id, AccountKind.CREDIT), taken.from_credit),
            Posting(business_account(business_id, AccountKind.AVAILABLE), taken.from_available),
            Posting(business_account(business_id, AccountKind.RECEIVABLE), taken.to_charge),
            Posting(marketplace_account(AccountKind.ACQUISITION_COSTS), -taken.total),
        ],
        memo,
    )


def build_debt_offset(idempotency_key: str, business_id: str, paid: OffsetPlan, *, memo: str = "") -> Transfer:
    """An open debt paid from the wallet: paid.from_credit and paid.from_available settle that much receivable.

    paid.to_charge must be zero: what the wallet cannot pay stays owed, and is no movement.
    """
    _positive(paid.from_wallet, "paid.from_wallet")
    if not paid.to_charge.is_zero:
        raise ValueError(f"a debt offset moves wallet money only; {paid.to_charge} would stay owed")
    return _transfer(
        idempotency_key,
        TransferKind.DEBT_OFFSET,
        [
            Posting(business_account(business_id, AccountKind.CREDIT), paid.from_credit),
            Posting(business_account(business_id, AccountKind.AVAILABLE), paid.from_available),
            Posting(business_account(business_id, AccountKind.RECEIVABLE), -paid.from_wallet),
        ],
        memo,
    )


def build_partner_bonus(
    idempotency_key: str, recipient: AccountKey, amount: Money, *, memo: str = ""
) -> Transfer:
    """A plan's fee or bonus (referrer, sponsor, tier) the marketplace pays on top of a commission."""
    return build_partner_bonuses(idempotency_key, [(recipient, amount)], memo=memo)


def build_partner_bonuses(
    idempotency_key: str, payouts: Sequence[tuple[AccountKey, Money]], *, memo: str = ""
) -> Transfer:
    """A plan's fees and bonuses for one event (a referrer's and its sponsors'), in one transfer: acquisition costs
    the marketplace bears, owed to each recipient."""
    if not payouts:
        raise ValueError("a bonus transfer needs at least one payout")
    for recipient, amount in payouts:
        _positive(amount, "amount")
        _recipient(recipient, "recipient")
    owed: dict[AccountKey, Money] = {}  # one posting per recipient (a referrer's fee and bonus of one event)
    for recipient, amount in payouts:
        owed[recipient] = owed[recipient] + amount if recipient in owed else amount
    total = Money.sum(owed.values(), payouts[0][1].currency)
    return _transfer(
        idempotency_key,
        TransferKind.PARTNER_BONUS,
        [
            Posting(marketplace_account(AccountKind.ACQUISITION_COSTS), total),
            *(Posting(recipient, -amount) for recipient, amount in owed.items()),
        ],
        memo,
    )


def build_withdrawal(
    idempotency_key: str,
    business_id: str,
    mode: BusinessMode | str,
    amount: Money,
    *,
    from_kind: AccountKind = AccountKind.AVAILABLE,
    memo: str = "",
) -> Transfer:
    """A lead buyer's available balance paid out through the provider; credit and deal makers never."""
    if from_kind is not AccountKind.AVAILABLE:
        raise WithdrawalNotAllowed(f"only the available balance can be withdrawn, not {from_kind}")
    if BusinessMode(mode) is not BusinessMode.LEAD_BUYER:
        raise WithdrawalNotAllowed("a deal maker's credit is not withdrawable; only lead buyers withdraw")
    _positive(amount, "amount")
    return _transfer(
        idempotency_key,
        TransferKind.WITHDRAWAL,
        [
            Posting(business_account(business_id, AccountKind.AVAILABLE), amount),
            Posting(marketplace_account(AccountKind.PROVIDER_CLEARING), -amount),
        ],
        memo,
    )


def build_payable_payout(
    idempotency_key: str, payable: AccountKey, amount: Money, *, memo: str = ""
) -> Transfer:
    """What the marketplace owes a club operator or referrer, paid out through the provider."""
    _positive(amount, "amount")
    if payable.check().kind not in _COUNTERPARTY_KINDS:
        raise ValueError(f"only club and referrer payables are paid out this way, not {payable.code}")
    return _transfer(
        idempotency_key,
        TransferKind.PAYABLE_PAYOUT,
        [Posting(payable, amount), Posting(marketplace_account(AccountKind.PROVIDER_CLEARING), -amount)],
        memo,
    )


def build_provider_settlement(
    idempotency_key: str, amount: Money, direction: SettlementDirection | str, *, memo: str = ""
) -> Transfer:
    """The operator confirmed money moved between the provider's clearing and the marketplace's bank."""
    _positive(amount, "amount")
    clearing = marketplace_account(AccountKind.PROVIDER_CLEARING)
    bank = marketplace_account(AccountKind.BANK)
    to_bank = SettlementDirection(direction) is SettlementDirection.TO_BANK
    debit, credit = (bank, clearing) if to_bank else (clearing, bank)
    return _transfer(
        idempotency_key,
        TransferKind.PROVIDER_SETTLEMENT,
        [Posting(debit, amount), Posting(credit, -amount)],
        memo,
    )


def build_reversal(idempotency_key: str, original: Transfer, *, memo: str = "") -> Transfer:
    """The exact opposite of original: the ledger is append-only, so a mistake is undone by a new transfer."""
    original.validate()
    if idempotency_key == original.idempotency_key:
        raise ValueError("a reversal needs its own idempotency key")
    postings = [Posting(p.account, -p.amount) for p in original.postings]
    memo = memo or f"reversal of {original.idempotency_key}"
    return _transfer(idempotency_key, TransferKind.REVERSAL, postings, memo)


# --- an in-memory ledger ---------------------------------------------------------------------------


@dataclass
class MemoryLedger:
    """The database's ledger rules in memory: idempotent posting, non-negative business balances.

    For tests, simulations and as the executable statement of what the SQL must guarantee.
    """

    _raw: dict[tuple[AccountKey, str], int] = field(default_factory=dict)
    _by_key: dict[str, Transfer] = field(default_factory=dict)
    journal: list[Transfer] = field(default_factory=list)

    def post(self, transfer: Transfer) -> Transfer:
        """Apply transfer once; a retry with the same key returns the first transfer and moves nothing."""
        transfer.validate()
        first = self._by_key.get(transfer.idempotency_key)
        if first is not None:
            if first.fingerprint() != transfer.fingerprint():
                raise IdempotencyConflict(
                    f"idempotency key {transfer.idempotency_key!r} was already used for another transfer"
                )
            return first
        deltas: dict[tuple[AccountKey, str], int] = defaultdict(int)
        for posting in transfer.postings:
            deltas[(posting.account, posting.amount.currency)] += posting.amount.amount_minor
        # All checks before any change: a refused transfer leaves no trace, as a rolled-back one would.
        for (account, currency), delta in deltas.items():
            if account.is_business:
                after = (self._raw.get((account, currency), 0) + delta) * account.kind.normal_sign
                if after < 0:
                    raise InsufficientFunds(
                        f"{account.code} would fall to {Money(after, currency)}",
                        extra={"account": account.code},
                    )
        for slot, delta in deltas.items():
            self._raw[slot] = self._raw.get(slot, 0) + delta
        self._by_key[transfer.idempotency_key] = transfer
        self.journal.append(transfer)
        return transfer

    def balance(self, account: AccountKey, currency: str) -> Money:
        """The account's balance in its normal terms (what a business sees in its wallet)."""
        return Money(self._raw.get((account, currency), 0) * account.kind.normal_sign, currency)

    def balances(self) -> Mapping[tuple[AccountKey, str], Money]:
        return {slot: self.balance(*slot) for slot in self._raw}

    def trial_balance(self) -> dict[str, int]:
        """Sum of all raw (debit-positive) balances per currency; zero for each currency in a sound ledger."""
        totals: dict[str, int] = defaultdict(int)
        for (_, currency), raw in self._raw.items():
            totals[currency] += raw
        return dict(totals)
