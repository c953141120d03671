"""Offsetting a charge against the wallet: credit first, then available, the rest charged."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketplace.money import CurrencyMismatch, Money
from marketplace.wallet.offset import OffsetPlan, plan_offset, withdrawable


def ils(minor: int) -> Money:
    return Money(minor, "ILS")


def test_credit_covers_part_of_the_charge() -> None:
    plan = plan_offset(ils(300_000), credit=ils(120_000), available=ils(0))
    assert plan == OffsetPlan(from_credit=ils(120_000), from_available=ils(0), to_charge=ils(180_000))
    assert plan.from_wallet == ils(120_000)
    assert plan.total == ils(300_000)


def test_credit_is_used_before_available() -> None:
    plan = plan_offset(ils(10_000), credit=ils(3_000), available=ils(5_000))
    assert (plan.from_credit, plan.from_available, plan.to_charge) == (ils(3_000), ils(5_000), ils(2_000))


def test_wallet_covers_everything_and_keeps_the_rest() -> None:
    plan = plan_offset(ils(10_000), credit=ils(4_000), available=ils(50_000))
    assert (plan.from_credit, plan.from_available, plan.to_charge) == (ils(4_000), ils(6_000), ils(0))


def test_credit_only_leaves_available_untouched() -> None:
    plan = plan_offset(ils(10_000), credit=ils(3_000), available=ils(50_000), credit_only=True)
    assert (plan.from_credit, plan.from_available, plan.to_charge) == (ils(3_000), ils(0), ils(7_000))


def test_zero_charge_moves_nothing() -> None:
    plan = plan_offset(ils(0), credit=ils(3_000), available=ils(5_000))
    assert plan.total == ils(0) and plan.from_wallet == ils(0)


@pytest.mark.parametrize(
    ("charge", "credit", "available"),
    [(ils(-1), ils(0), ils(0)), (ils(1), ils(-1), ils(0)), (ils(1), ils(0), ils(-5))],
)
def test_negative_amounts_are_refused(charge: Money, credit: Money, available: Money) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        plan_offset(charge, credit, available)


def test_currencies_must_agree() -> None:
    with pytest.raises(CurrencyMismatch):
        plan_offset(ils(100), Money(100, "EUR"), ils(0))
    with pytest.raises(CurrencyMismatch):
        OffsetPlan(ils(1), Money(1, "EUR"), ils(1))


def test_to_json() -> None:
    assert plan_offset(ils(300), ils(100), ils(0)).to_json() == {
        "from_credit": {"amount_minor": 100, "currency": "ILS"},
        "from_available": {"amount_minor": 0, "currency": "ILS"},
        "to_charge": {"amount_minor": 200, "currency": "ILS"},
    }


@settings(max_examples=50)
@given(
    charge=st.integers(0, 10**12),
    credit=st.integers(0, 10**12),
    available=st.integers(0, 10**12),
    credit_only=st.booleans(),
)
def test_offset_sums_to_the_charge_and_never_exceeds_a_balance(
    charge: int, credit: int, available: int, credit_only: bool
) -> None:
    plan = plan_offset(ils(charge), ils(credit), ils(available), credit_only=credit_only)
    assert plan.from_credit + plan.from_available + plan.to_charge == ils(charge)
    assert ils(0) <= plan.from_credit <= ils(credit)
    assert ils(0) <= plan.from_available <= ils(available)
    assert plan.to_charge >= ils(0)
    if credit_only:
        assert plan.from_available == ils(0)
    # The wallet is used to the full before anything is charged, credit before available.
    if plan.from_available.is_positive:
        assert plan.from_credit == ils(credit)
    if plan.to_charge.is_positive:
        assert plan.from_credit == ils(credit)
        assert credit_only or plan.from_available == ils(available)


_minor = st.integers(0, 50_000)


@settings(max_examples=500)
@given(available=_minor, credit=_minor, owed=_minor, held_available=_minor, held_credit=_minor)
def test_the_wallet_view_shows_what_a_withdrawal_then_allows(
    available: int, credit: int, owed: int, held_available: int, held_credit: int
) -> None:
    """The wallet view's withdrawable amount (its balances, the debts not collected yet) is what a withdrawal allows
    once it has collected them (collect_debts: spendable credit first, then spendable available, held earnings
    spent on nothing), and paying it out leaves the held earnings and any debt still owed covered."""
    held_available, held_credit = min(held_available, available), min(held_credit, credit)
    shown = withdrawable(
        ils(available), ils(owed), ils(held_available), credit=ils(credit), held_credit=ils(held_credit)
    )
    spend_credit, spend_available = ils(credit - held_credit), ils(available - held_available)
    paid = plan_offset(min(ils(owed), spend_credit + spend_available), spend_credit, spend_available)
    after_available, still_owed = ils(available) - paid.from_available, ils(owed) - paid.total
    allowed = withdrawable(after_available, still_owed, ils(held_available))
    assert shown == allowed
    if allowed.is_positive:
        assert after_available - allowed >= ils(held_available) + still_owed
    # As the view had it before the rule was shared (a lead buyer's earnings are never held in credit).
    if held_credit == 0:
        assert shown == ils(max(0, available - max(0, owed - credit) - held_available))
    # As the withdrawal had it: what is left of available after held earnings and what is still owed.
    assert allowed == ils(
        max(0, available - paid.from_available.amount_minor - held_available - still_owed.amount_minor)
    )
