"""Every worked example of DESIGN.md section 3, to the cent."""

from __future__ import annotations

from marketplace.money import Money
from marketplace.wallet.ledger import (
    AccountKind,
    BusinessMode,
    MemoryLedger,
    build_deal_commission,
    build_lead_earnings,
    business_account,
    marketplace_account,
)
from marketplace.wallet.offset import plan_offset
from marketplace.wallet.plans import EventKind, PlanEvent, default_plan, evaluate, parse_plan
from marketplace.wallet.plans import deal_commission as commission_on
from marketplace.wallet.vat import vat_breakdown


def ils(text: str) -> Money:
    return Money.parse(text, "ILS")


def eur(text: str) -> Money:
    return Money.parse(text, "EUR")


def _split(commission: Money) -> dict[str, Money]:
    result = evaluate(parse_plan(default_plan()), PlanEvent(EventKind.DEAL_PAID, commission))
    return {p.recipient_role: p.amount for p in result.split}


def _referred(mode: str, revenue: Money) -> dict[str, Money]:
    plan = parse_plan(
        {**default_plan(), "customer_referrer": {"referrer_bp": 500, "sponsor_chain_bp": [2000], "mode": mode}}
    )
    result = evaluate(plan, PlanEvent(EventKind.CUSTOMER_PURCHASE, revenue))
    return {p.recipient_role: p.amount for p in result.payouts}


def test_deal_commission_30_percent_of_10000() -> None:
    assert commission_on(ils("10000.00"), 3000) == ils("3000.00")


def test_offset_commission_3000_with_credit_1200() -> None:
    plan = plan_offset(ils("3000.00"), credit=ils("1200.00"), available=ils("0.00"))
    assert plan.from_wallet == ils("1200.00")
    assert plan.to_charge == ils("1800.00")


def test_split_1000_eur_70_25_5() -> None:
    assert _split(eur("1000.00")) == {
        "recommender": eur("700.00"),
        "platform": eur("250.00"),
        "club_operator": eur("50.00"),
    }


def test_split_rounding_333_33_eur() -> None:
    parts = _split(eur("333.33"))
    assert parts == {"recommender": eur("233.33"), "platform": eur("83.33"), "club_operator": eur("16.67")}
    assert Money.sum(parts.values(), "EUR") == eur("333.33")


def test_customer_referrer_difference_mode() -> None:
    assert _referred("difference", eur("1000.00")) == {"referrer": eur("50.00"), "sponsor": eur("150.00")}


def test_customer_referrer_company_pays_mode() -> None:
    assert _referred("company_pays", eur("1000.00")) == {"referrer": eur("50.00"), "sponsor": eur("200.00")}


def test_vat_3000_ils_gross_at_18_percent() -> None:
    breakdown = vat_breakdown(ils("3000.00"), 1800, amount_includes_vat=True)
    assert (breakdown.net, breakdown.vat, breakdown.gross) == (ils("2542.37"), ils("457.63"), ils("3000.00"))


def test_the_examples_together_in_the_ledger() -> None:
    """Turnover 10,000.00 at 30 %, credit 1,200.00: the wallet pays 1,200.00, 1,800.00 stays owed."""
    ledger = MemoryLedger()
    ledger.post(build_lead_earnings("sold-inquiry", "biz_dm", BusinessMode.DEAL_MAKER, ils("1200.00")))
    commission = vat_breakdown(commission_on(ils("10000.00"), 3000), 1800, amount_includes_vat=True)
    credit = business_account("biz_dm", AccountKind.CREDIT)
    offset = plan_offset(commission.gross, ledger.balance(credit, "ILS"), ils("0.00"), credit_only=True)
    ledger.post(build_deal_commission("deal-paid", "biz_dm", commission, offset))
    assert ledger.balance(credit, "ILS") == ils("0.00")
    assert ledger.balance(business_account("biz_dm", AccountKind.RECEIVABLE), "ILS") == ils("1800.00")
    assert ledger.balance(marketplace_account(AccountKind.REVENUE), "ILS") == ils("2542.37")
    assert ledger.balance(marketplace_account(AccountKind.VAT_PAYABLE), "ILS") == ils("457.63")
    assert ledger.trial_balance() == {"ILS": 0}
