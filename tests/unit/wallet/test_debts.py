"""Open debts as pure rules: reversed earnings of a returned lead, debts offset from the wallet, withdrawals that
pay what is owed first, and the retry schedule of failed charges; a property test over random sequences."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketplace.money import Money
from marketplace.wallet.debts import CHARGE_RETRY_AFTER, MAX_CHARGE_ATTEMPTS, retry_due
from marketplace.wallet.ledger import (
    AccountKind,
    BusinessMode,
    MemoryLedger,
    TransferKind,
    build_charge_received,
    build_debt_offset,
    build_earnings_reversal,
    build_exposure_purchase,
    build_lead_earnings,
    build_lead_refund,
    build_withdrawal,
    business_account,
    earnings_account_kind,
    marketplace_account,
)
from marketplace.wallet.offset import OffsetPlan, plan_offset
from marketplace.wallet.vat import vat_breakdown

ILS = "ILS"


def ils(minor: int) -> Money:
    return Money(minor, ILS)


def test_available_first_takes_a_lead_buyers_earnings_back_from_available_then_credit_then_owed():
    taken = plan_offset(ils(5_000), ils(1_000), ils(3_000), available_first=True)
    assert (taken.from_available, taken.from_credit, taken.to_charge) == (ils(3_000), ils(1_000), ils(1_000))
    # The default order (a charge) stays credit first.
    charged = plan_offset(ils(5_000), ils(1_000), ils(3_000))
    assert (charged.from_credit, charged.from_available, charged.to_charge) == (ils(1_000), ils(3_000), ils(1_000))


def test_earnings_reversal_takes_from_the_wallet_and_owes_the_rest():
    transfer = build_earnings_reversal("rev:1", "biz_s", OffsetPlan(ils(0), ils(1_000), ils(2_560)))
    assert transfer.kind is TransferKind.EARNINGS_REVERSAL
    by_account = {p.account: p.amount for p in transfer.postings}
    assert by_account == {
        business_account("biz_s", AccountKind.AVAILABLE): ils(1_000),
        business_account("biz_s", AccountKind.RECEIVABLE): ils(2_560),
        marketplace_account(AccountKind.ACQUISITION_COSTS): ils(-3_560),
    }
    with pytest.raises(ValueError, match="positive"):
        build_earnings_reversal("rev:2", "biz_s", OffsetPlan(ils(0), ils(0), ils(0)))


def test_debt_offset_moves_wallet_money_only():
    transfer = build_debt_offset("off:1", "biz_b", OffsetPlan(ils(500), ils(1_500), ils(0)))
    assert transfer.kind is TransferKind.DEBT_OFFSET
    assert sum(p.amount.amount_minor for p in transfer.postings) == 0
    assert {p.account.kind: p.balance_delta for p in transfer.postings} == {
        AccountKind.CREDIT: -500,
        AccountKind.AVAILABLE: -1_500,
        AccountKind.RECEIVABLE: -2_000,
    }
    with pytest.raises(ValueError, match="stay owed"):
        build_debt_offset("off:2", "biz_b", OffsetPlan(ils(500), ils(0), ils(1)))
    with pytest.raises(ValueError, match="positive"):
        build_debt_offset("off:3", "biz_b", OffsetPlan(ils(0), ils(0), ils(0)))


def test_failed_charges_are_retried_after_one_two_four_eight_days_then_left_to_an_operator():
    failed_at = datetime(2026, 1, 1, tzinfo=UTC)
    for failures, wait in ((1, 1), (2, 2), (3, 4), (4, 8)):
        after = CHARGE_RETRY_AFTER * wait
        assert not retry_due(failed_at, failures, failed_at + after - timedelta(seconds=1))
        assert retry_due(failed_at, failures, failed_at + after)
    assert MAX_CHARGE_ATTEMPTS == 5
    assert not retry_due(failed_at, MAX_CHARGE_ATTEMPTS, failed_at + timedelta(days=365))


# --- a property test: the wallet's money rules over random sequences ---------------------------------------


@dataclass
class Market:
    """The services' money rules on the in-memory ledger: one buyer, one seller (a lead buyer or a deal maker)."""

    seller_mode: BusinessMode
    ledger: MemoryLedger = field(default_factory=MemoryLedger)
    bought: list[tuple[str, int, int]] = field(default_factory=list)  # (exposure, price, seller's earnings)
    serial: int = 0

    def key(self, what: str) -> str:
        self.serial += 1
        return f"{what}:{self.serial}"

    def balance(self, business: str, kind: AccountKind) -> Money:
        return self.ledger.balance(business_account(business, kind), ILS)

    def wallet(self, business: str) -> tuple[Money, Money]:
        return self.balance(business, AccountKind.CREDIT), self.balance(business, AccountKind.AVAILABLE)

    def collect(self, business: str) -> None:
        """An open debt paid from wallet money (credit, then available), as collect_debts does."""
        owed = self.balance(business, AccountKind.RECEIVABLE)
        wallet = self.balance(business, AccountKind.CREDIT) + self.balance(business, AccountKind.AVAILABLE)
        payable = min(owed, wallet)
        if payable.is_positive:
            paid = plan_offset(payable, *self.wallet(business))
            self.ledger.post(build_debt_offset(self.key("offset"), business, paid))

    def earn(self, business: str, mode: BusinessMode, amount: int) -> None:
        self.ledger.post(build_lead_earnings(self.key("earn"), business, mode, ils(amount)))
        self.collect(business)

    def buy(self, price: int, share_bp: int) -> None:
        amount = vat_breakdown(ils(price), 1_800, True)
        offset = plan_offset(amount.gross, *self.wallet("buyer"))
        exposure = self.key("exposure")
        self.ledger.post(build_exposure_purchase(exposure, "buyer", amount, offset))
        earned = amount.net.percent_bp(share_bp)
        if earned.is_positive:
            self.earn("seller", self.seller_mode, earned.amount_minor)
        self.bought.append((exposure, price, earned.amount_minor))

    def return_lead(self, index: int) -> None:
        exposure, price, earned = self.bought.pop(index % len(self.bought))
        amount = vat_breakdown(ils(price), 1_800, True)
        cancel = min(self.balance("buyer", AccountKind.RECEIVABLE), amount.gross)
        self.ledger.post(build_lead_refund(f"refund:{exposure}", "buyer", amount, cancel_receivable=cancel))
        self.collect("buyer")
        if earned:
            taken = plan_offset(
                ils(earned),
                *self.wallet("seller"),
                available_first=earnings_account_kind(self.seller_mode) is AccountKind.AVAILABLE,
            )
            self.ledger.post(build_earnings_reversal(f"earnings-reversal:{exposure}", "seller", taken))

    def withdraw(self, business: str, mode: BusinessMode, amount: int) -> bool:
        """Debts first, then the payout if what is left in available covers it; False when refused."""
        if mode is not BusinessMode.LEAD_BUYER:
            return False
        before = MemoryLedger(dict(self.ledger._raw), dict(self.ledger._by_key), list(self.ledger.journal))
        self.collect(business)
        if self.balance(business, AccountKind.AVAILABLE) < ils(amount):
            self.ledger = before  # refused as a whole, as the rolled-back unit of work
            return False
        self.ledger.post(build_withdrawal(self.key("withdrawal"), business, mode, ils(amount)))
        return True

    def pay(self, business: str, amount: int) -> None:
        """The provider collected (part of) what the business owes."""
        owed = self.balance(business, AccountKind.RECEIVABLE)
        paid = min(owed, ils(amount))
        if paid.is_positive:
            self.ledger.post(build_charge_received(self.key("received"), business, paid))


steps = st.one_of(
    st.tuples(st.just("buy"), st.sampled_from([6_000, 12_000, 30_000]), st.sampled_from([0, 3_500, 7_000])),
    st.tuples(st.just("return"), st.integers(0, 20)),
    st.tuples(st.just("earn"), st.sampled_from(["buyer", "seller"]), st.integers(1, 20_000)),
    st.tuples(st.just("withdraw"), st.sampled_from(["buyer", "seller"]), st.integers(1, 20_000)),
    st.tuples(st.just("pay"), st.sampled_from(["buyer", "seller"]), st.integers(1, 20_000)),
)


@settings(max_examples=300, deadline=None)
@given(seller_mode=st.sampled_from(list(BusinessMode)), sequence=st.lists(steps, max_size=30))
def test_returns_debts_and_withdrawals_keep_the_ledger_sound(seller_mode, sequence):
    market = Market(seller_mode)
    modes = {"buyer": BusinessMode.LEAD_BUYER, "seller": seller_mode}
    reversed_total = earned_total = 0
    for step in sequence:
        match step:
            case ("buy", price, share_bp):
                market.buy(price, share_bp)
                earned_total += market.bought[-1][2]
            case ("return", index) if market.bought:
                reversed_total += market.bought[index % len(market.bought)][2]
                market.return_lead(index)
            case ("earn", who, amount):
                market.earn(who, modes[who], amount)
                earned_total += amount
            case ("withdraw", who, amount):
                wallet_before = market.balance(who, AccountKind.AVAILABLE)
                owed_before = market.balance(who, AccountKind.RECEIVABLE)
                done = market.withdraw(who, modes[who], amount)
                if done:
                    # A payout only ever happens with nothing owed (or nothing left in the wallet to pay it with).
                    assert market.balance(who, AccountKind.RECEIVABLE).is_zero or (
                        market.balance(who, AccountKind.CREDIT).is_zero
                        and market.balance(who, AccountKind.AVAILABLE).is_zero
                    )
                else:
                    assert market.balance(who, AccountKind.AVAILABLE) == wallet_before
                    assert market.balance(who, AccountKind.RECEIVABLE) == owed_before
            case ("pay", who, amount):
                market.pay(who, amount)
        # Every currency sums to zero; no business account is below zero (the in-memory ledger refuses that).
        assert all(total == 0 for total in market.ledger.trial_balance().values())
        for (account, _), balance in market.ledger.balances().items():
            if account.is_business:
                assert not balance.is_negative, account
        # Money in a wallet and an open debt never stay side by side: the wallet pays first.
        for who in ("buyer", "seller"):
            owed = market.balance(who, AccountKind.RECEIVABLE)
            wallet = market.balance(who, AccountKind.CREDIT) + market.balance(who, AccountKind.AVAILABLE)
            assert owed.is_zero or wallet.is_zero, (who, owed, wallet)
    # What the marketplace paid for leads is what it paid out less what it took back.
    costs = market.ledger.balance(marketplace_account(AccountKind.ACQUISITION_COSTS), ILS)
    assert costs == ils(earned_total - reversed_total)
