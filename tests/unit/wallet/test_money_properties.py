"""Properties of the money rules taken together, as the services chain them: a paid deal's commission (rate x
turnover, VAT, the plan's split, the offset) posted and invoiced to the agora; fixed split parts; a purchase, its
upgrade and their return reversing exactly; the referrer chain in both modes; the largest amounts."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from marketplace.money import BP_WHOLE, MAX_AMOUNT_MINOR, Money
from marketplace.wallet.ledger import (
    AccountKind,
    Allocation,
    MemoryLedger,
    build_deal_commission,
    build_exposure_purchase,
    build_lead_earnings,
    build_lead_refund,
    business_account,
    earnings_account_kind,
    marketplace_account,
)
from marketplace.wallet.offset import plan_offset
from marketplace.wallet.plans import (
    ROLE_CLUB_OPERATOR,
    ROLE_PLATFORM,
    ROLE_RECOMMENDER,
    EventKind,
    PlanEvent,
    deal_commission,
    default_plan,
    evaluate,
    parse_plan,
    sponsor_role,
)
from marketplace.wallet.vat import VatBreakdown, vat_breakdown

ILS = "ILS"
MAKER, SELLER, CLUB = "biz_maker", "biz_seller", "club_1"
PLAN = parse_plan(default_plan())


def ils(minor: int) -> Money:
    return Money(minor, ILS)


def _total(parts: list[VatBreakdown]) -> VatBreakdown:
    return VatBreakdown(
        Money.sum((p.net for p in parts), ILS),
        Money.sum((p.vat for p in parts), ILS),
        Money.sum((p.gross for p in parts), ILS),
    )


@settings(max_examples=200)
@given(turnover=st.integers(0, MAX_AMOUNT_MINOR), rate=st.integers(0, BP_WHOLE))
def test_a_deal_s_commission_is_the_rate_of_the_turnover_rounded_half_up_never_more_than_the_turnover(
    turnover: int, rate: int
) -> None:
    commission = deal_commission(ils(turnover), rate).amount_minor
    exact = Fraction(turnover * rate, BP_WHOLE)
    assert exact - Fraction(1, 2) < commission <= exact + Fraction(1, 2)
    assert 0 <= commission <= turnover
    assert deal_commission(ils(turnover + 1), rate).amount_minor >= commission  # more turnover never owes less


@settings(max_examples=150)
@given(
    turnover=st.integers(1, MAX_AMOUNT_MINOR),
    rate=st.integers(1, BP_WHOLE),
    vat_bp=st.sampled_from([0, 1700, 1800, 1900, 2500]),
    includes_vat=st.booleans(),
    seller_mode=st.sampled_from(["deal_maker", "lead_buyer", None]),
    in_club=st.booleans(),
    credit=st.integers(0, 10**9),
    available=st.integers(0, 10**9),
)
def test_a_paid_deal_s_commission_is_posted_and_invoiced_to_the_agora(
    turnover: int,
    rate: int,
    vat_bp: int,
    includes_vat: bool,
    seller_mode: str | None,
    in_club: bool,
    credit: int,
    available: int,
) -> None:
    """As settle_commission chains them: the commission, its VAT, the split of the net among who is at the deal, the
    offset from the deal maker's wallet. The invoice's VAT is what vat_payable receives, the shares and the
    marketplace's revenue add up to the invoice's net, the deal maker pays exactly the gross (wallet first), and the
    ledger stays balanced with no business account below zero."""
    gross = deal_commission(ils(turnover), rate)
    if not gross.is_positive:
        return
    invoice = vat_breakdown(gross, vat_bp, includes_vat)
    roles = (
        {ROLE_PLATFORM} | ({ROLE_RECOMMENDER} if seller_mode else set()) | ({ROLE_CLUB_OPERATOR} if in_club else set())
    )
    result = evaluate(PLAN, PlanEvent(EventKind.DEAL_PAID, invoice.net, present_roles=frozenset(roles)))
    split = {p.recipient_role: p.amount for p in result.split}
    assert Money.sum(split.values(), ILS) == invoice.net
    assert set(split) <= roles
    shares = []
    if seller_mode and ROLE_RECOMMENDER in split:
        shares.append(Allocation(business_account(SELLER, earnings_account_kind(seller_mode)), split[ROLE_RECOMMENDER]))
    if in_club and ROLE_CLUB_OPERATOR in split:
        shares.append(Allocation(marketplace_account(AccountKind.CLUB_PAYABLE, CLUB), split[ROLE_CLUB_OPERATOR]))

    ledger = MemoryLedger()
    if credit:
        ledger.post(build_lead_earnings("setup:credit", MAKER, "deal_maker", ils(credit)))
    if available:
        ledger.post(build_lead_earnings("setup:available", MAKER, "lead_buyer", ils(available)))
    offset = plan_offset(invoice.gross, ils(credit), ils(available))
    ledger.post(build_deal_commission("commission:x", MAKER, invoice, offset, shares=shares))

    def balance(account: Any) -> Money:
        return ledger.balance(account, ILS)

    assert balance(marketplace_account(AccountKind.VAT_PAYABLE)) == invoice.vat
    revenue = balance(marketplace_account(AccountKind.REVENUE))
    assert revenue == split.get(ROLE_PLATFORM, ils(0))
    assert revenue + Money.sum((s.amount for s in shares), ILS) == invoice.net
    paid_from_wallet = (
        ils(credit + available)
        - balance(business_account(MAKER, AccountKind.CREDIT))
        - balance(business_account(MAKER, AccountKind.AVAILABLE))
    )
    owed = balance(business_account(MAKER, AccountKind.RECEIVABLE))
    assert paid_from_wallet + owed == invoice.gross
    assert owed == (invoice.gross - ils(credit + available) if invoice.gross > ils(credit + available) else ils(0))
    assert set(ledger.trial_balance().values()) <= {0}


@settings(max_examples=150)
@given(
    price=st.integers(1, 10**12),
    upgrade=st.integers(0, 10**12),
    vat_bp=st.sampled_from([0, 1700, 1800, 1900]),
    includes_vat=st.booleans(),
    credit=st.integers(0, 10**12),
    available=st.integers(0, 10**12),
)
def test_a_returned_purchase_and_its_upgrade_are_reversed_exactly(
    price: int, upgrade: int, vat_bp: int, includes_vat: bool, credit: int, available: int
) -> None:
    """A lead buyer pays a price and maybe an upgrade (each its own invoice, its own VAT rounding), partly from its
    wallet, the rest left owed; the return reverses the invoices' sums: revenue and VAT back to nothing, the unpaid
    part cancelled, the rest back as credit, so the wallet is worth exactly what it was."""
    ledger = MemoryLedger()
    if credit:
        ledger.post(build_lead_earnings("setup:credit", MAKER, "deal_maker", ils(credit)))
    if available:
        ledger.post(build_lead_earnings("setup:available", MAKER, "lead_buyer", ils(available)))
    invoices: list[VatBreakdown] = []
    unpaid = ils(0)
    for step, amount in (("purchase", price), ("upgrade", upgrade)):
        if not amount:
            continue
        invoice = vat_breakdown(ils(amount), vat_bp, includes_vat)
        wallet_credit = ledger.balance(business_account(MAKER, AccountKind.CREDIT), ILS)
        wallet_available = ledger.balance(business_account(MAKER, AccountKind.AVAILABLE), ILS)
        offset = plan_offset(invoice.gross, wallet_credit, wallet_available)
        ledger.post(build_exposure_purchase(f"{step}:x", MAKER, invoice, offset))
        invoices.append(invoice)
        unpaid = unpaid + offset.to_charge
    total = _total(invoices)
    ledger.post(build_lead_refund("refund:x", MAKER, total, cancel_receivable=unpaid if unpaid.is_positive else None))

    assert ledger.balance(marketplace_account(AccountKind.REVENUE), ILS).is_zero
    assert ledger.balance(marketplace_account(AccountKind.VAT_PAYABLE), ILS).is_zero
    assert ledger.balance(business_account(MAKER, AccountKind.RECEIVABLE), ILS).is_zero
    worth = ledger.balance(business_account(MAKER, AccountKind.CREDIT), ILS) + ledger.balance(
        business_account(MAKER, AccountKind.AVAILABLE), ILS
    )
    assert worth == ils(credit + available)
    assert set(ledger.trial_balance().values()) <= {0}


@st.composite
def fixed_split_plans(draw: st.DrawFn) -> tuple[Any, list[str]]:
    """A plan whose split mixes fixed amounts and shares (summing to 10,000), over four roles."""
    roles = ["role_a", "role_b", "role_c", "role_d"]
    fixed = draw(st.sets(st.sampled_from(roles[1:]), max_size=3))
    shared = [r for r in roles if r not in fixed]
    cuts = sorted(draw(st.lists(st.integers(0, BP_WHOLE), min_size=len(shared) - 1, max_size=len(shared) - 1)))
    bounds = [0, *cuts, BP_WHOLE]
    recipients: list[dict[str, Any]] = []
    for role in roles:
        if role in fixed:
            amount = draw(st.integers(1, 10**6))
            recipients.append({"role": role, "fixed": {"amount_minor": amount, "currency": ILS}})
        else:
            index = shared.index(role)
            recipients.append({"role": role, "share_bp": bounds[index + 1] - bounds[index]})
    data = default_plan()
    data["tiers"] = {}
    data["commission_split"] = {"recipients": recipients, "unclaimed_to": draw(st.sampled_from(roles))}
    return parse_plan(data), roles


@settings(max_examples=200)
@given(plan_roles=fixed_split_plans(), minor=st.integers(0, 10**9), absent=st.sets(st.integers(0, 3)))
def test_a_split_with_fixed_parts_sums_to_the_commission_and_pays_nobody_absent(
    plan_roles: tuple[Any, list[str]], minor: int, absent: set[int]
) -> None:
    plan, roles = plan_roles
    present = {r for i, r in enumerate(roles) if i not in absent}
    result = evaluate(plan, PlanEvent(EventKind.DEAL_PAID, ils(minor), present_roles=frozenset(present)))
    parts = {p.recipient_role: p.amount for p in result.split}
    assert Money.sum(parts.values(), ILS) == ils(minor)
    assert all(part.is_positive for part in parts.values())
    for role in set(parts) - present:
        assert role == plan.unclaimed_to  # an absent role's part, fixed or shared, is unclaimed_to's alone
    left = minor
    for recipient in plan.split:  # fixed parts first, in order, never more than is left, whoever is at the deal
        if recipient.fixed is not None:
            taken = min(recipient.fixed.amount_minor, left)
            left -= taken
            if recipient.role in present and recipient.role != plan.unclaimed_to:
                assert parts.get(recipient.role, ils(0)).amount_minor == taken
    for recipient in plan.split:  # the shares divide what the fixed parts left, each within an agora of its share
        if recipient.share_bp is not None and recipient.role in present and recipient.role != plan.unclaimed_to:
            exact = Fraction(left * recipient.share_bp, BP_WHOLE)
            assert abs(parts.get(recipient.role, ils(0)).amount_minor - exact) < 1


@settings(max_examples=200)
@given(
    revenue=st.integers(0, MAX_AMOUNT_MINOR),
    referrer_bp=st.integers(0, 3000),
    chain=st.lists(st.integers(0, 3000), min_size=1, max_size=4),
)
def test_company_pays_gives_each_level_its_own_rate_of_the_revenue(
    revenue: int, referrer_bp: int, chain: list[int]
) -> None:
    assume(referrer_bp + sum(chain) <= BP_WHOLE)  # a plan paying out more than the revenue is refused (parse_plan)
    data = default_plan()
    data["tiers"] = {}
    data["customer_referrer"] = {"referrer_bp": referrer_bp, "sponsor_chain_bp": chain, "mode": "company_pays"}
    roles = frozenset({"referrer", *(sponsor_role(level) for level in range(1, len(chain) + 1))})
    event = PlanEvent(EventKind.CUSTOMER_PURCHASE, ils(revenue), present_roles=roles)
    paid = evaluate(parse_plan(data), event).by_role()
    assert paid.get("referrer", ils(0)) == ils(revenue).percent_bp(referrer_bp)
    for level, rate in enumerate(chain, start=1):
        assert paid.get(sponsor_role(level), ils(0)) == ils(revenue).percent_bp(rate)
