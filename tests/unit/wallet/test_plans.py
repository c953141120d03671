"""Commission plans: parsing with field-named errors, and evaluation into payouts and rewards."""

from __future__ import annotations

import itertools
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketplace.errors import InvalidInput
from marketplace.money import CurrencyMismatch, Money
from marketplace.wallet.plans import (
    CommissionPlan,
    EventKind,
    Payout,
    PayoutReason,
    PlanError,
    PlanEvent,
    Reward,
    deal_commission,
    default_plan,
    evaluate,
    is_referral_role,
    parse_plan,
    sponsor_level,
    sponsor_role,
)


def eur(text: str) -> Money:
    return Money.parse(text, "EUR")


def plan(**changes: Any) -> CommissionPlan:
    """The default plan, minus its ILS fixed amounts, with changes on top."""
    data: dict[str, Any] = default_plan()
    data["tiers"] = {}
    data.update(changes)
    return parse_plan(data)


def split_of(result_plan: CommissionPlan, amount: Money, roles: set[str] | None = None) -> dict[str, Money]:
    event = PlanEvent(EventKind.DEAL_PAID, amount, frozenset(roles) if roles is not None else None)
    return {p.recipient_role: p.amount for p in evaluate(result_plan, event).split}


# --- parsing --------------------------------------------------------------------------------------


def test_default_plan_parses_and_round_trips() -> None:
    parsed = parse_plan(default_plan())
    assert parsed.version == 1
    assert [(r.role, r.share_bp) for r in parsed.split] == [
        ("recommender", 7000),
        ("platform", 2500),
        ("club_operator", 500),
    ]
    assert parsed.customer_referrer is not None and parsed.customer_referrer.mode.value == "difference"
    assert parse_plan(parsed.to_json()) == parsed


def _errors(data: Any) -> dict[str, str]:
    with pytest.raises(PlanError) as caught:
        parse_plan(data)
    return {e.field: e.message for e in caught.value.errors}


def test_plan_errors_are_invalid_input_naming_each_field() -> None:
    data = default_plan()
    del data["version"]
    data["commission_split"]["recipients"][1]["share_bp"] = 2000
    data["customer_referrer"]["mode"] = "sponsor_pays"
    data["colour"] = "blue"
    errors = _errors(data)
    assert set(errors) == {"version", "commission_split.recipients", "customer_referrer.mode", "colour"}
    assert (
        "10000" in errors["commission_split.recipients"] and "9500" in errors["commission_split.recipients"]
    )
    assert issubclass(PlanError, InvalidInput) and PlanError.status_code == 422


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("version",), 0, "version"),
        (("version",), "1", "version"),
        (
            ("commission_split", "recipients", 0, "role"),
            "Recommender!",
            "commission_split.recipients[0].role",
        ),
        (("commission_split", "recipients", 0, "share_bp"), 70.0, "commission_split.recipients[0].share_bp"),
        (("commission_split", "recipients", 2, "role"), "platform", "commission_split.recipients[2].role"),
        (("commission_split", "unclaimed_to"), "nobody", "commission_split.unclaimed_to"),
        (("tiers", "closed_sale", "percent_bp"), 10_001, "tiers.closed_sale.percent_bp"),
        (
            ("tiers", "qualified_lead", "fixed"),
            {"amount_minor": 1.5, "currency": "ILS"},
            "tiers.qualified_lead.fixed",
        ),
        (
            ("tiers", "qualified_lead", "fixed"),
            {"amount_minor": 0, "currency": "ILS"},
            "tiers.qualified_lead.fixed",
        ),
        (
            ("tiers", "retention_bonus", "fixed"),
            {"amount_minor": 100, "currency": "ILS"},
            "tiers.retention_bonus",
        ),
        (("tiers", "lifetime_bonus", 0, "threshold"), {"amount_minor": 5, "currency": "EUR"}, None),
        (("customer_referrer", "referrer_bp"), -5, "customer_referrer.referrer_bp"),
        (("customer_referrer", "sponsor_chain_bp"), [2000, "x"], "customer_referrer.sponsor_chain_bp[1]"),
        (("rewards", 0, "on"), "lunch_time", "rewards[0].on"),
        (("rewards", 0, "description"), "  ", "rewards[0].description"),
        (("commission_rates_bp",), {"legal": 12_000}, "commission_rates_bp.legal"),
    ],
)
def test_a_wrong_field_is_named(path: tuple[Any, ...], value: Any, field: str | None) -> None:
    data = default_plan()
    target = data
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    errors = _errors(data)
    if field is None:  # a second currency: the message names both fields
        assert list(errors) == ["tiers.lifetime_bonus[0].threshold"]
        assert "one currency per plan" in errors["tiers.lifetime_bonus[0].threshold"]
    else:
        assert field in errors, errors


def test_company_pays_may_not_give_away_more_than_everything() -> None:
    data = default_plan()
    data["customer_referrer"] = {"referrer_bp": 5000, "sponsor_chain_bp": [6000], "mode": "company_pays"}
    assert "customer_referrer" in _errors(data)


def test_a_plan_that_is_not_an_object_is_refused() -> None:
    assert _errors([1, 2]) == {"plan": "must be an object, got list"}


def test_commission_rate_per_category_falls_back_to_the_category() -> None:
    parsed = plan(commission_rates_bp={"legal": 3000})
    assert parsed.rate_bp("legal", 1000) == 3000
    assert parsed.rate_bp("plumbing", 1500) == 1500


# --- the split ------------------------------------------------------------------------------------


def test_split_70_25_5() -> None:
    assert split_of(plan(), eur("1000.00")) == {
        "recommender": eur("700.00"),
        "platform": eur("250.00"),
        "club_operator": eur("50.00"),
    }


def test_split_rounding_uses_the_largest_remainder() -> None:
    assert split_of(plan(), eur("333.33")) == {
        "recommender": eur("233.33"),
        "platform": eur("83.33"),
        "club_operator": eur("16.67"),
    }


def test_an_absent_role_share_goes_to_unclaimed_to() -> None:
    assert split_of(plan(), eur("1000.00"), {"recommender", "platform"}) == {
        "recommender": eur("700.00"),
        "platform": eur("300.00"),
    }
    assert split_of(plan(), eur("333.33"), {"platform"}) == {"platform": eur("333.33")}


def _club_fee_plan() -> CommissionPlan:
    """The club operator a fixed 10.00, the rest 80/20 between recommender and platform (which takes what is
    unclaimed)."""
    return plan(
        commission_split={
            "recipients": [
                {"role": "club_operator", "fixed": {"amount_minor": 1_000, "currency": "EUR"}},
                {"role": "recommender", "share_bp": 8000},
                {"role": "platform", "share_bp": 2000},
            ],
            "unclaimed_to": "platform",
        }
    )


def test_fixed_recipients_are_paid_first_and_never_more_than_the_total() -> None:
    fixed = _club_fee_plan()
    assert split_of(fixed, eur("110.00")) == {
        "club_operator": eur("10.00"),
        "recommender": eur("80.00"),
        "platform": eur("20.00"),
    }
    assert split_of(fixed, eur("4.00")) == {"club_operator": eur("4.00")}
    with pytest.raises(CurrencyMismatch):
        split_of(fixed, Money(11_000, "ILS"))


def test_an_absent_fixed_recipient_s_amount_goes_to_unclaimed_to_not_to_the_shares() -> None:
    """A deal with no club under a plan that pays the club operator a fixed 10.00: the 10.00 is the platform's
    (unclaimed_to), and the recommender keeps its 80 % of what the fixed part leaves, not 80 % of the whole."""
    fixed = _club_fee_plan()
    assert split_of(fixed, eur("110.00"), {"recommender", "platform"}) == {
        "recommender": eur("80.00"),
        "platform": eur("30.00"),
    }
    assert split_of(fixed, eur("4.00"), {"recommender", "platform"}) == {"platform": eur("4.00")}


@st.composite
def shares(draw: st.DrawFn) -> list[int]:
    cuts = sorted(draw(st.lists(st.integers(0, 10_000), min_size=0, max_size=4)))
    bounds = [0, *cuts, 10_000]
    return [b - a for a, b in itertools.pairwise(bounds)]


@settings(max_examples=40)
@given(share_list=shares(), minor=st.integers(0, 10**11), absent=st.sets(st.integers(0, 4)))
def test_the_split_always_sums_to_the_commission(share_list: list[int], minor: int, absent: set[int]) -> None:
    roles = [f"role_{i}" for i in range(len(share_list))]
    parsed = plan(
        commission_split={
            "recipients": [{"role": r, "share_bp": s} for r, s in zip(roles, share_list, strict=True)],
            "unclaimed_to": roles[0],
        }
    )
    present = {r for i, r in enumerate(roles) if i not in absent} | {roles[0]}
    parts = split_of(parsed, Money(minor, "EUR"), present)
    assert sum(p.amount_minor for p in parts.values()) == minor
    assert set(parts) <= present
    if not absent:
        for role, share in zip(roles, share_list, strict=True):
            exact = Fraction(minor * share, 10_000)
            assert abs(parts.get(role, Money(0, "EUR")).amount_minor - exact) < 1


# --- tiers, referrers, rewards ---------------------------------------------------------------------


def _tiered() -> CommissionPlan:
    return parse_plan(default_plan())


@pytest.mark.parametrize(
    ("role", "paid"),
    [
        ("referrer", True),
        ("sponsor", True),
        ("sponsor_2", True),
        ("sponsor_10", True),
        ("sponsor_1", False),  # the first sponsor is "sponsor"
        ("sponsor_02", False),
        ("refferer", False),
        ("recommender", False),
        ("platform", False),
    ],
)
def test_a_tier_pays_the_referrer_or_a_sponsor_by_the_name_sponsor_role_gives(role: str, paid: bool) -> None:
    assert is_referral_role(role) is paid
    assert all(is_referral_role(sponsor_role(level)) for level in range(1, 30))
    assert (sponsor_level(role) is not None) is (paid and role != "referrer")
    assert all(sponsor_level(sponsor_role(level)) == level for level in range(1, 30))


def test_a_partners_tiers_pay_as_far_up_its_sponsor_chain_as_their_roles_name() -> None:
    data = default_plan()
    assert parse_plan(data).tier_sponsor_levels() == 0  # the default plan's tiers pay the referrer only
    data["tiers"]["closed_sale"]["role"] = "sponsor"
    assert parse_plan(data).tier_sponsor_levels() == 1
    data["tiers"]["lifetime_bonus"][0]["role"] = "sponsor_3"
    assert parse_plan(data).tier_sponsor_levels() == 3


def test_qualified_lead_fee() -> None:
    result = evaluate(_tiered(), PlanEvent(EventKind.QUALIFIED_LEAD, Money(15_000, "ILS")))
    assert result.payouts == (Payout("referrer", Money(2_000, "ILS"), PayoutReason.QUALIFIED_LEAD),)
    assert result.split == () and result.rewards == ()


def test_closed_sale_fee_comes_on_top_of_the_split() -> None:
    result = evaluate(_tiered(), PlanEvent(EventKind.DEAL_PAID, Money(100_000, "ILS")))
    assert sum(p.amount.amount_minor for p in result.split) == 100_000
    assert result.bonuses == (Payout("referrer", Money(5_000, "ILS"), PayoutReason.CLOSED_SALE),)
    assert result.total == Money(105_000, "ILS")
    assert result.rewards == (Reward("recommender", "A business lunch as thanks"),)


def test_a_fee_for_an_absent_role_is_not_paid() -> None:
    event = PlanEvent(EventKind.DEAL_PAID, Money(100_000, "ILS"), frozenset({"platform", "club_operator"}))
    result = evaluate(_tiered(), event)
    assert result.bonuses == () and result.rewards == ()
    assert result.by_role() == {"platform": Money(95_000, "ILS"), "club_operator": Money(5_000, "ILS")}


def test_lifetime_bonus_is_paid_once_when_the_threshold_is_crossed() -> None:
    def bonus(before: int, amount: int, kind: EventKind = EventKind.DEAL_PAID) -> list[Payout]:
        event = PlanEvent(kind, Money(amount, "ILS"), lifetime_revenue_before=Money(before, "ILS"))
        return [p for p in evaluate(_tiered(), event).payouts if p.reason is PayoutReason.LIFETIME_BONUS]

    assert bonus(9_990_000, 10_000) == [Payout("referrer", Money(50_000, "ILS"), PayoutReason.LIFETIME_BONUS)]
    assert bonus(9_990_000, 9_999) == []  # not yet
    assert bonus(10_000_000, 10_000) == []  # already paid when it was crossed
    no_history = evaluate(_tiered(), PlanEvent(EventKind.DEAL_PAID, Money(10**9, "ILS")))
    assert no_history.payouts and all(p.reason is not PayoutReason.LIFETIME_BONUS for p in no_history.payouts)
    # A tester's finding: a customer referrer got the partner's lifetime bonus. The tiers are a partner's.
    assert bonus(9_990_000, 10_000, EventKind.CUSTOMER_PURCHASE) == []


def test_retention_bonus_only_on_a_partners_repeat_purchase() -> None:
    first = evaluate(_tiered(), PlanEvent(EventKind.DEAL_PAID, Money(100_000, "ILS")))
    repeat = evaluate(_tiered(), PlanEvent(EventKind.DEAL_PAID, Money(100_000, "ILS"), repeat_purchase=True))
    assert [p for p in first.payouts if p.reason is PayoutReason.RETENTION_BONUS] == []
    assert [p for p in repeat.payouts if p.reason is PayoutReason.RETENTION_BONUS] == [
        Payout("referrer", Money(2_000, "ILS"), PayoutReason.RETENTION_BONUS)
    ]
    # A customer referrer's repeat purchase earns its rate, no retention bonus (a tester's finding: it earned both).
    event = PlanEvent(EventKind.CUSTOMER_PURCHASE, Money(100_000, "ILS"), frozenset({"referrer"}), repeat_purchase=True)
    assert evaluate(_tiered(), event).payouts == (
        Payout("referrer", Money(5_000, "ILS"), PayoutReason.CUSTOMER_REFERRER),
    )


def test_fixed_amounts_apply_only_in_their_currency() -> None:
    with pytest.raises(CurrencyMismatch):
        evaluate(_tiered(), PlanEvent(EventKind.QUALIFIED_LEAD, Money(15_000, "EUR")))


def referrer_plan(mode: str, chain: list[int]) -> CommissionPlan:
    return plan(customer_referrer={"referrer_bp": 500, "sponsor_chain_bp": chain, "mode": mode})


def referred(result_plan: CommissionPlan, revenue: Money, roles: set[str] | None = None) -> dict[str, Money]:
    event = PlanEvent(EventKind.CUSTOMER_PURCHASE, revenue, frozenset(roles) if roles is not None else None)
    return evaluate(result_plan, event).by_role()


def test_customer_referrer_difference_and_company_pays() -> None:
    assert referred(referrer_plan("difference", [2000]), eur("1000.00")) == {
        "referrer": eur("50.00"),
        "sponsor": eur("150.00"),
    }
    assert referred(referrer_plan("company_pays", [2000]), eur("1000.00")) == {
        "referrer": eur("50.00"),
        "sponsor": eur("200.00"),
    }


def test_a_sponsor_chain_gets_each_level_its_difference() -> None:
    assert referred(referrer_plan("difference", [2000, 3000, 2500]), eur("1000.00")) == {
        "referrer": eur("50.00"),
        "sponsor": eur("150.00"),
        "sponsor_2": eur("100.00"),  # 30 % - 20 %; the third level is below what was paid and gets nothing
    }
    assert referred(referrer_plan("company_pays", [2000, 3000]), eur("1000.00")) == {
        "referrer": eur("50.00"),
        "sponsor": eur("200.00"),
        "sponsor_2": eur("300.00"),
    }
    assert sponsor_role(1) == "sponsor" and sponsor_role(3) == "sponsor_3"


def test_without_a_referrer_the_sponsor_gets_its_full_rate_in_difference_mode() -> None:
    assert referred(referrer_plan("difference", [2000]), eur("1000.00"), {"sponsor"}) == {
        "sponsor": eur("200.00")
    }


@settings(max_examples=40)
@given(
    revenue=st.integers(0, 10**11),
    referrer=st.integers(0, 10_000),
    chain=st.lists(st.integers(0, 10_000), max_size=4),
)
def test_difference_mode_pays_the_chain_exactly_its_top_rate(
    revenue: int, referrer: int, chain: list[int]
) -> None:
    parsed = plan(
        customer_referrer={"referrer_bp": referrer, "sponsor_chain_bp": chain, "mode": "difference"}
    )
    paid = referred(parsed, Money(revenue, "EUR"))
    top = max([referrer, *chain])
    assert sum(m.amount_minor for m in paid.values()) == Money(revenue, "EUR").percent_bp(top).amount_minor
    assert all(m.is_positive for m in paid.values())


def test_events_with_negative_amounts_are_refused() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        PlanEvent(EventKind.DEAL_PAID, eur("-1.00"))


def test_result_json() -> None:
    result = evaluate(plan(), PlanEvent(EventKind.DEAL_PAID, eur("1000.00"), frozenset({"platform"})))
    assert result.to_json() == {
        "plan_version": 1,
        "event": "deal_paid",
        "payouts": [
            {
                "recipient_role": "platform",
                "amount": {"amount_minor": 100_000, "currency": "EUR"},
                "reason": "split",
            }
        ],
        "rewards": [],
    }


# --- commission -----------------------------------------------------------------------------------


def test_deal_commission() -> None:
    assert deal_commission(Money.parse("10000.00", "ILS"), 3000) == Money.parse("3000.00", "ILS")
    assert deal_commission(Money(1, "ILS"), 5000) == Money(1, "ILS")
    with pytest.raises(ValueError):
        deal_commission(Money(100, "ILS"), 10_001)
    with pytest.raises(ValueError):
        deal_commission(Money(-100, "ILS"), 3000)


def test_default_plan_in_another_currency() -> None:
    euro = parse_plan(default_plan("EUR"))
    result = evaluate(euro, PlanEvent(EventKind.QUALIFIED_LEAD, eur("150.00")))
    assert result.payouts == (Payout("referrer", eur("20.00"), PayoutReason.QUALIFIED_LEAD),)
    assert default_plan("JPY")["tiers"]["qualified_lead"]["fixed"] == {"amount_minor": 20, "currency": "JPY"}
    assert default_plan() == default_plan("ILS") and default_plan() is not default_plan()
    with pytest.raises(ValueError):
        default_plan("eur")
