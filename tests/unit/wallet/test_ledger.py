"""Ledger rules: account keys, balanced transfers, one builder per money movement and the in-memory ledger."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketplace.errors import Forbidden, InsufficientFunds, InvalidInput
from marketplace.money import Money
from marketplace.wallet.ledger import (
    AccountKey,
    AccountKind,
    Allocation,
    BusinessMode,
    IdempotencyConflict,
    MemoryLedger,
    Posting,
    SettlementDirection,
    Transfer,
    TransferKind,
    UnbalancedTransfer,
    WithdrawalNotAllowed,
    build_charge_received,
    build_deal_commission,
    build_exposure_purchase,
    build_lead_earnings,
    build_lead_refund,
    build_partner_bonus,
    build_payable_payout,
    build_provider_settlement,
    build_reversal,
    build_withdrawal,
    business_account,
    earnings_account_kind,
    marketplace_account,
)
from marketplace.wallet.offset import OffsetPlan, plan_offset
from marketplace.wallet.vat import VatBreakdown, vat_breakdown

BIZ = "biz_1"
CREDIT = business_account(BIZ, AccountKind.CREDIT)
AVAILABLE = business_account(BIZ, AccountKind.AVAILABLE)
RECEIVABLE = business_account(BIZ, AccountKind.RECEIVABLE)
REVENUE = marketplace_account(AccountKind.REVENUE)
VAT = marketplace_account(AccountKind.VAT_PAYABLE)
CLEARING = marketplace_account(AccountKind.PROVIDER_CLEARING)
BANK = marketplace_account(AccountKind.BANK)
COSTS = marketplace_account(AccountKind.ACQUISITION_COSTS)
CLUB = marketplace_account(AccountKind.CLUB_PAYABLE, "club_1")


def ils(minor: int) -> Money:
    return Money(minor, "ILS")


def price_ils(gross_minor: int) -> VatBreakdown:
    return vat_breakdown(ils(gross_minor), 1800, amount_includes_vat=True)


def as_map(transfer: Transfer) -> dict[AccountKey, int]:
    return {p.account: p.amount.amount_minor for p in transfer.postings}


def funded_ledger(*, credit: int = 0, available: int = 0) -> MemoryLedger:
    ledger = MemoryLedger()
    if credit:
        ledger.post(build_lead_earnings("seed-credit", BIZ, BusinessMode.DEAL_MAKER, ils(credit)))
    if available:
        ledger.post(build_lead_earnings("seed-available", BIZ, BusinessMode.LEAD_BUYER, ils(available)))
    return ledger


# --- accounts -------------------------------------------------------------------------------------


def test_account_kinds_belong_to_their_owner() -> None:
    assert {k for k in AccountKind if k.owner == "business"} == {
        AccountKind.AVAILABLE,
        AccountKind.CREDIT,
        AccountKind.RECEIVABLE,
    }
    assert AccountKind.REVENUE.owner == "marketplace"
    assert AccountKind.RECEIVABLE.normal_sign == 1 and AccountKind.CREDIT.normal_sign == -1


@pytest.mark.parametrize(
    "key",
    [
        AccountKey("business", None, AccountKind.CREDIT),
        AccountKey("business", "", AccountKind.CREDIT),
        AccountKey("marketplace", None, AccountKind.CREDIT),
        AccountKey("business", BIZ, AccountKind.REVENUE),
        AccountKey("marketplace", "x", AccountKind.REVENUE),
        AccountKey("marketplace", "a:b", AccountKind.CLUB_PAYABLE),
    ],
)
def test_ill_formed_account_keys_are_refused(key: AccountKey) -> None:
    with pytest.raises(ValueError):
        key.check()


def test_account_code_round_trip() -> None:
    for key in (CREDIT, REVENUE, CLUB):
        assert AccountKey.parse(key.code) == key
    assert CREDIT.code == "business:biz_1:credit"
    assert REVENUE.code == "marketplace::revenue"
    with pytest.raises(ValueError):
        AccountKey.parse("business:biz_1:wallet")
    with pytest.raises(ValueError):
        AccountKey.parse("nobody::revenue")


def test_earnings_land_in_credit_for_deal_makers_and_available_for_lead_buyers() -> None:
    assert earnings_account_kind("deal_maker") is AccountKind.CREDIT
    assert earnings_account_kind(BusinessMode.LEAD_BUYER) is AccountKind.AVAILABLE
    with pytest.raises(ValueError):
        earnings_account_kind("affiliate")


# --- transfer rules -------------------------------------------------------------------------------


def test_a_balanced_transfer_validates() -> None:
    transfer = Transfer("k", TransferKind.REVERSAL, (Posting(BANK, ils(5)), Posting(CLEARING, ils(-5))))
    assert transfer.validate() is transfer


@pytest.mark.parametrize(
    ("key", "postings", "message"),
    [
        ("k", (Posting(BANK, ils(5)), Posting(CLEARING, ils(-4))), "do not sum to zero"),
        ("k", (Posting(BANK, ils(5)),), "at least two postings"),
        ("k", (), "at least two postings"),
        ("k", (Posting(BANK, ils(0)), Posting(CLEARING, ils(0))), "is zero"),
        ("", (Posting(BANK, ils(5)), Posting(CLEARING, ils(-5))), "idempotency key"),
        ("  ", (Posting(BANK, ils(5)), Posting(CLEARING, ils(-5))), "idempotency key"),
        ("k", (Posting(BANK, ils(5)), Posting(CLEARING, Money(-5, "EUR"))), "do not sum to zero"),
        ("k", (Posting(BANK, ils(2**63)), Posting(CLEARING, ils(-(2**63)))), "largest storable"),
        (
            "k",
            (Posting(AccountKey("business", None, AccountKind.CREDIT), ils(5)), Posting(BANK, ils(-5))),
            "business id",
        ),
    ],
)
def test_transfers_breaking_a_rule_are_refused(key: str, postings: tuple[Posting, ...], message: str) -> None:
    with pytest.raises(UnbalancedTransfer, match=message):
        Transfer(key, TransferKind.REVERSAL, postings).validate()


def test_each_currency_balances_on_its_own() -> None:
    postings = (
        Posting(BANK, ils(5)),
        Posting(CLEARING, ils(-5)),
        Posting(BANK, Money(7, "EUR")),
        Posting(CLEARING, Money(-7, "EUR")),
    )
    assert Transfer("k", TransferKind.PROVIDER_SETTLEMENT, postings).validate().currencies == {"ILS", "EUR"}


def test_fingerprint_ignores_memo_and_order_but_not_amounts() -> None:
    a = Transfer("k", TransferKind.REVERSAL, (Posting(BANK, ils(5)), Posting(CLEARING, ils(-5))), memo="x")
    b = Transfer("k", TransferKind.REVERSAL, (Posting(CLEARING, ils(-5)), Posting(BANK, ils(5))), memo="y")
    c = Transfer("k", TransferKind.REVERSAL, (Posting(BANK, ils(6)), Posting(CLEARING, ils(-6))))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_unbalanced_transfer_and_currency_errors_are_value_errors_business_errors_map_to_http() -> None:
    assert issubclass(UnbalancedTransfer, ValueError)
    assert issubclass(WithdrawalNotAllowed, Forbidden) and WithdrawalNotAllowed.status_code == 403
    assert issubclass(IdempotencyConflict, InvalidInput) and IdempotencyConflict.status_code == 422


# --- builders -------------------------------------------------------------------------------------


def test_exposure_purchase_pays_from_credit_available_and_leaves_a_receivable() -> None:
    price = price_ils(15_000)  # 150.00 incl. 18 % VAT = 127.12 + 22.88
    transfer = build_exposure_purchase("buy-1", BIZ, price, OffsetPlan(ils(5_000), ils(3_000), ils(7_000)))
    assert transfer.kind is TransferKind.EXPOSURE_PURCHASE
    assert as_map(transfer) == {
        CREDIT: 5_000,
        AVAILABLE: 3_000,
        RECEIVABLE: 7_000,
        VAT: -2_288,
        REVENUE: -12_712,
    }


def test_exposure_purchase_paid_entirely_from_credit_has_no_zero_postings() -> None:
    transfer = build_exposure_purchase(
        "buy-1", BIZ, price_ils(15_000), plan_offset(ils(15_000), ils(20_000), ils(0))
    )
    assert set(as_map(transfer)) == {CREDIT, VAT, REVENUE}


def test_charge_must_match_the_offset_plan() -> None:
    with pytest.raises(ValueError, match="offset plan covers"):
        build_exposure_purchase("buy-1", BIZ, price_ils(15_000), plan_offset(ils(14_999), ils(0), ils(0)))
    with pytest.raises(ValueError, match="positive"):
        build_exposure_purchase("buy-1", BIZ, price_ils(0), plan_offset(ils(0), ils(0), ils(0)))


def test_deal_commission_with_shares_out_of_the_net() -> None:
    commission = price_ils(300_000)  # 2,542.37 + 457.63
    offset = plan_offset(commission.gross, ils(120_000), ils(0), credit_only=True)
    shares = [
        Allocation(CLUB, ils(12_712)),
        Allocation(business_account("biz_src", AccountKind.CREDIT), ils(1_000)),
    ]
    transfer = build_deal_commission("deal-1", BIZ, commission, offset, shares=shares)
    assert as_map(transfer) == {
        CREDIT: 120_000,
        RECEIVABLE: 180_000,
        VAT: -45_763,
        REVENUE: -(254_237 - 12_712 - 1_000),
        CLUB: -12_712,
        business_account("biz_src", AccountKind.CREDIT): -1_000,
    }


def test_shares_cannot_exceed_the_net_or_go_to_odd_accounts() -> None:
    commission = price_ils(11_800)  # net 100.00, VAT 18.00
    offset = plan_offset(commission.gross, ils(0), ils(0))
    with pytest.raises(ValueError, match="exceed the net"):
        build_deal_commission("d", BIZ, commission, offset, shares=[Allocation(CLUB, ils(10_001))])
    with pytest.raises(ValueError, match="not marketplace::bank"):
        build_deal_commission("d", BIZ, commission, offset, shares=[Allocation(BANK, ils(1))])
    with pytest.raises(ValueError, match="positive"):
        build_deal_commission("d", BIZ, commission, offset, shares=[Allocation(CLUB, ils(0))])


def test_charge_received_settles_the_receivable_into_clearing() -> None:
    assert as_map(build_charge_received("paid-1", BIZ, ils(7_000))) == {CLEARING: 7_000, RECEIVABLE: -7_000}


def test_lead_refund_cancels_the_unpaid_part_and_credits_the_rest() -> None:
    transfer = build_lead_refund("ret-1", BIZ, price_ils(15_000), cancel_receivable=ils(7_000))
    assert as_map(transfer) == {REVENUE: 12_712, VAT: 2_288, RECEIVABLE: -7_000, CREDIT: -8_000}
    assert as_map(build_lead_refund("ret-2", BIZ, price_ils(15_000))) == {
        REVENUE: 12_712,
        VAT: 2_288,
        CREDIT: -15_000,
    }
    with pytest.raises(ValueError, match="exceed"):
        build_lead_refund("ret-3", BIZ, price_ils(15_000), cancel_receivable=ils(15_001))


def test_lead_refund_gives_what_was_paid_from_available_back_to_available() -> None:
    transfer = build_lead_refund(
        "ret-4", BIZ, price_ils(15_000), cancel_receivable=ils(7_000), to_available=ils(5_000)
    )
    assert as_map(transfer) == {REVENUE: 12_712, VAT: 2_288, RECEIVABLE: -7_000, AVAILABLE: -5_000, CREDIT: -3_000}
    with pytest.raises(ValueError, match="exceed"):
        build_lead_refund("ret-5", BIZ, price_ils(15_000), cancel_receivable=ils(7_000), to_available=ils(8_001))


def test_lead_earnings_by_mode() -> None:
    maker = build_lead_earnings("earn-1", BIZ, "deal_maker", ils(2_500))
    buyer = build_lead_earnings("earn-2", BIZ, BusinessMode.LEAD_BUYER, ils(2_500))
    assert as_map(maker) == {COSTS: 2_500, CREDIT: -2_500}
    assert as_map(buyer) == {COSTS: 2_500, AVAILABLE: -2_500}


def test_partner_bonus_goes_to_a_payable_or_a_wallet() -> None:
    referrer = marketplace_account(AccountKind.REFERRER_PAYABLE, "ref_9")
    assert as_map(build_partner_bonus("bonus-1", referrer, ils(5_000))) == {COSTS: 5_000, referrer: -5_000}
    with pytest.raises(ValueError):
        build_partner_bonus("bonus-2", RECEIVABLE, ils(5_000))
    with pytest.raises(ValueError):
        build_partner_bonus("bonus-3", REVENUE, ils(5_000))


def test_withdrawal_of_a_lead_buyers_available() -> None:
    assert as_map(build_withdrawal("wd-1", BIZ, "lead_buyer", ils(4_000))) == {
        AVAILABLE: 4_000,
        CLEARING: -4_000,
    }


def test_deal_makers_and_credit_never_withdraw() -> None:
    with pytest.raises(WithdrawalNotAllowed, match="deal maker"):
        build_withdrawal("wd-1", BIZ, BusinessMode.DEAL_MAKER, ils(4_000))
    with pytest.raises(WithdrawalNotAllowed, match="only the available"):
        build_withdrawal("wd-2", BIZ, BusinessMode.LEAD_BUYER, ils(4_000), from_kind=AccountKind.CREDIT)


def test_payable_payout_and_provider_settlement() -> None:
    assert as_map(build_payable_payout("po-1", CLUB, ils(900))) == {CLUB: 900, CLEARING: -900}
    with pytest.raises(ValueError):
        build_payable_payout("po-2", REVENUE, ils(900))
    to_bank = build_provider_settlement("st-1", ils(7_000), SettlementDirection.TO_BANK)
    from_bank = build_provider_settlement("st-2", ils(7_000), "from_bank")
    assert as_map(to_bank) == {BANK: 7_000, CLEARING: -7_000}
    assert as_map(from_bank) == {CLEARING: 7_000, BANK: -7_000}


@pytest.mark.parametrize("amount", [ils(0), ils(-1)])
def test_builders_refuse_amounts_that_are_not_positive(amount: Money) -> None:
    with pytest.raises(ValueError, match="positive"):
        build_charge_received("k", BIZ, amount)
    with pytest.raises(ValueError, match="positive"):
        build_lead_earnings("k", BIZ, "lead_buyer", amount)


def test_reversal_is_the_exact_opposite() -> None:
    original = build_lead_earnings("earn-1", BIZ, "lead_buyer", ils(2_500))
    reversal = build_reversal("earn-1-rev", original)
    assert as_map(reversal) == {COSTS: -2_500, AVAILABLE: 2_500}
    assert reversal.memo == "reversal of earn-1"
    with pytest.raises(ValueError, match="own idempotency key"):
        build_reversal("earn-1", original)


# --- the in-memory ledger -------------------------------------------------------------------------


def test_worked_flow_commission_offset_then_bank_transfer() -> None:
    ledger = funded_ledger(credit=120_000)
    commission = price_ils(300_000)
    offset = plan_offset(commission.gross, ledger.balance(CREDIT, "ILS"), ledger.balance(AVAILABLE, "ILS"))
    ledger.post(build_deal_commission("deal-1", BIZ, commission, offset))
    assert ledger.balance(CREDIT, "ILS") == ils(0)
    assert ledger.balance(RECEIVABLE, "ILS") == ils(180_000)  # open and visible until the money is in
    assert ledger.balance(REVENUE, "ILS") == ils(254_237)
    assert ledger.balance(VAT, "ILS") == ils(45_763)
    ledger.post(build_charge_received("deal-1-paid", BIZ, ils(180_000)))
    ledger.post(build_provider_settlement("deal-1-bank", ils(180_000), "to_bank"))
    assert ledger.balance(RECEIVABLE, "ILS") == ils(0)
    assert ledger.balance(CLEARING, "ILS") == ils(0)
    assert ledger.balance(BANK, "ILS") == ils(180_000)
    assert ledger.trial_balance() == {"ILS": 0}


def test_a_retry_moves_money_once_and_returns_the_first_transfer() -> None:
    ledger = MemoryLedger()
    first = build_lead_earnings("earn-1", BIZ, "lead_buyer", ils(2_500), memo="first")
    retry = build_lead_earnings("earn-1", BIZ, "lead_buyer", ils(2_500), memo="second")
    assert ledger.post(first) is first
    assert ledger.post(retry) is first
    assert ledger.balance(AVAILABLE, "ILS") == ils(2_500)
    assert len(ledger.journal) == 1


def test_reusing_a_key_for_other_money_is_a_conflict() -> None:
    ledger = MemoryLedger()
    ledger.post(build_lead_earnings("earn-1", BIZ, "lead_buyer", ils(2_500)))
    with pytest.raises(IdempotencyConflict):
        ledger.post(build_lead_earnings("earn-1", BIZ, "lead_buyer", ils(2_501)))
    assert ledger.balance(AVAILABLE, "ILS") == ils(2_500)


def test_business_balances_never_go_below_zero_and_a_refusal_changes_nothing() -> None:
    ledger = funded_ledger(available=4_000)
    before = dict(ledger.balances())
    with pytest.raises(InsufficientFunds, match="business:biz_1:available"):
        ledger.post(build_withdrawal("wd-1", BIZ, "lead_buyer", ils(4_001)))
    assert dict(ledger.balances()) == before
    assert "wd-1" not in {t.idempotency_key for t in ledger.journal}
    ledger.post(build_withdrawal("wd-2", BIZ, "lead_buyer", ils(4_000)))
    assert ledger.balance(AVAILABLE, "ILS") == ils(0)


def test_receivable_cannot_be_overpaid() -> None:
    ledger = MemoryLedger()
    with pytest.raises(InsufficientFunds):
        ledger.post(build_charge_received("paid-1", BIZ, ils(1)))


def test_reversal_restores_every_balance() -> None:
    ledger = funded_ledger(credit=5_000)
    before = dict(ledger.balances())
    purchase = build_exposure_purchase(
        "buy-1", BIZ, price_ils(15_000), plan_offset(ils(15_000), ils(5_000), ils(0))
    )
    ledger.post(purchase)
    assert ledger.balances() != before
    ledger.post(build_reversal("buy-1-rev", purchase))
    assert {slot: m for slot, m in ledger.balances().items() if not m.is_zero} == {
        slot: m for slot, m in before.items() if not m.is_zero
    }


# --- properties -----------------------------------------------------------------------------------


def _raw_sums(transfer: Transfer) -> Counter[str]:
    sums: Counter[str] = Counter()
    for posting in transfer.postings:
        sums[posting.amount.currency] += posting.amount.amount_minor
    return sums


amounts = st.integers(1, 10**10)
currencies = st.sampled_from(["ILS", "EUR"])


@st.composite
def any_transfer(draw: st.DrawFn) -> Transfer:
    currency = draw(currencies)
    gross = Money(draw(amounts), currency)
    price = vat_breakdown(gross, draw(st.integers(0, 2500)), draw(st.booleans()))
    which = draw(st.integers(0, 7))
    if which in (0, 1):
        offset = plan_offset(
            price.gross,
            Money(draw(st.integers(0, 10**10)), currency),
            Money(draw(st.integers(0, 10**10)), currency),
            credit_only=draw(st.booleans()),
        )
        if which == 0:
            return build_exposure_purchase("k", BIZ, price, offset)
        club_share = price.net.percent_bp(draw(st.integers(0, 10_000)))
        shares = [Allocation(CLUB, club_share)] if club_share.is_positive else []
        return build_deal_commission("k", BIZ, price, offset, shares=shares)
    if which == 2:
        cancel = Money(draw(st.integers(0, price.gross.amount_minor)), currency)
        return build_lead_refund("k", BIZ, price, cancel_receivable=cancel)
    if which == 3:
        return build_lead_earnings("k", BIZ, draw(st.sampled_from(list(BusinessMode))), gross)
    if which == 4:
        return build_withdrawal("k", BIZ, "lead_buyer", gross)
    if which == 5:
        return build_charge_received("k", BIZ, gross)
    if which == 6:
        return build_provider_settlement("k", gross, draw(st.sampled_from(list(SettlementDirection))))
    return build_partner_bonus("k", CLUB, gross)


@settings(max_examples=50)
@given(transfer=any_transfer())
def test_every_builder_produces_a_balanced_transfer(transfer: Transfer) -> None:
    assert len(transfer.postings) >= 2
    assert all(not p.amount.is_zero for p in transfer.postings)
    assert all(total == 0 for total in _raw_sums(transfer).values())
    assert build_reversal("k-rev", transfer).validate()


@dataclass
class _Market:
    """Three businesses trading in one ledger, every step computed from the balances as a service would."""

    ledger: MemoryLedger = field(default_factory=MemoryLedger)
    modes: tuple[BusinessMode, ...] = (
        BusinessMode.LEAD_BUYER,
        BusinessMode.DEAL_MAKER,
        BusinessMode.LEAD_BUYER,
    )
    purchases: list[tuple[str, VatBreakdown]] = field(default_factory=list)
    count: int = 0

    def balance(self, business: str, kind: AccountKind, currency: str) -> Money:
        return self.ledger.balance(business_account(business, kind), currency)

    def step(self, op: str, index: int, minor: int, currency: str) -> None:
        self.count += 1
        key = f"op-{self.count}"
        business, mode = f"biz_{index}", self.modes[index]
        money = Money(minor, currency)
        credit = self.balance(business, AccountKind.CREDIT, currency)
        available = self.balance(business, AccountKind.AVAILABLE, currency)
        receivable = self.balance(business, AccountKind.RECEIVABLE, currency)
        transfer: Transfer | None = None
        if op == "purchase":
            price = vat_breakdown(money, 1800, amount_includes_vat=True)
            transfer = build_exposure_purchase(
                key, business, price, plan_offset(price.gross, credit, available)
            )
            self.purchases.append((business, price))
        elif op == "refund" and self.purchases:
            buyer, price = self.purchases.pop(minor % len(self.purchases))
            owed = self.balance(buyer, AccountKind.RECEIVABLE, price.currency)
            transfer = build_lead_refund(key, buyer, price, cancel_receivable=min(owed, price.gross))
        elif op == "earn":
            transfer = build_lead_earnings(key, business, mode, money)
        elif op == "commission":
            commission = vat_breakdown(money, 1900, amount_includes_vat=False)
            offset = plan_offset(
                commission.gross, credit, available, credit_only=mode is BusinessMode.DEAL_MAKER
            )
            club = commission.net.percent_bp(500)
            shares = [Allocation(CLUB, club)] if club.is_positive else []
            transfer = build_deal_commission(key, business, commission, offset, shares=shares)
        elif op == "withdraw":
            if mode is BusinessMode.DEAL_MAKER:
                with pytest.raises(WithdrawalNotAllowed):
                    build_withdrawal(key, business, mode, money)
            elif available.is_positive:
                transfer = build_withdrawal(key, business, mode, min(money, available))
        elif op == "receive" and receivable.is_positive:
            transfer = build_charge_received(key, business, min(money, receivable))
        elif op == "settle":
            transfer = build_provider_settlement(
                key, money, SettlementDirection.TO_BANK if minor % 2 else "from_bank"
            )
        if transfer is not None:
            assert self.ledger.post(transfer) is transfer  # a step planned from the balances is never refused
            assert self.ledger.post(transfer) is transfer  # its retry moves nothing


operations = st.lists(
    st.tuples(
        st.sampled_from(["purchase", "refund", "earn", "commission", "withdraw", "receive", "settle"]),
        st.integers(0, 2),
        st.integers(1, 10**8),
        currencies,
    ),
    max_size=40,
)


@settings(max_examples=40)
@given(ops=operations)
def test_random_trading_keeps_the_ledger_balanced_and_wallets_non_negative(
    ops: list[tuple[str, int, int, str]],
) -> None:
    market = _Market()
    for op, index, minor, currency in ops:
        market.step(op, index, minor, currency)
        assert all(total == 0 for total in market.ledger.trial_balance().values())
    for (account, _), balance in market.ledger.balances().items():
        if account.is_business:
            assert not balance.is_negative, f"{account.code} is {balance}"
    # The balances are exactly the journal's postings: nothing moved twice on a retry.
    replay = MemoryLedger()
    for transfer in market.ledger.journal:
        replay.post(transfer)
    assert replay.balances() == market.ledger.balances()
    assert len({t.idempotency_key for t in market.ledger.journal}) == len(market.ledger.journal)
