"""The credit-limit rules for new leads, said twice: in Python (the claim's check) and in SQL (the waves, the second
prices and the offer withdrawals filter by it). On both databases, the two agree on who is over the limit: a deal
maker owing more than its limit, a lead buyer that could not pay for a lead of the category (its wallet first, the
rest charged within its limit, the first limit until it has paid)."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import update

from marketplace.clock import utcnow
from marketplace.db.models import Business, Settlement
from marketplace.errors import InsufficientFunds
from marketplace.ids import new_id
from marketplace.money import Money
from marketplace.wallet import store
from marketplace.wallet.credit import (
    cannot_pay,
    credit_limit,
    least_price,
    over_credit_limit,
    over_limit,
    refuse_new_leads_over_limit,
)
from marketplace.wallet.ledger import build_exposure_purchase, build_lead_earnings
from marketplace.wallet.offset import OffsetPlan
from marketplace.wallet.vat import vat_breakdown
from tests.factories import register


async def _owing(
    app, client, mode: str, own_limit: int | None, owed: int, wallet: int = 0, paid: bool = False
) -> tuple[str, str]:
    """A business of this mode with its own limit (None: the default) that owes `owed` through the provider, with
    `wallet` in its wallet, and (`paid`) a charge of its own confirmed."""
    business_id, _ = await register(client, mode)
    async with app.state.uow() as uow:
        business = await uow.session.get(Business, business_id)
        assert business is not None
        currency = business.currency
        await uow.session.execute(
            update(Business).where(Business.id == business_id).values(credit_limit_minor=own_limit)
        )
        if owed:
            zero = Money.zero(currency)
            price = vat_breakdown(Money(owed, currency), 0, True)
            purchase = build_exposure_purchase(new_id("setup"), business_id, price, OffsetPlan(zero, zero, price.gross))
            await store.post(uow.session, purchase, business_id=business_id)
        if wallet:
            earned = build_lead_earnings(new_id("setup"), business_id, mode, Money(wallet, currency))
            await store.post(uow.session, earned, business_id=business_id)
        if paid:
            uow.session.add(
                Settlement(
                    id=new_id("stl"), business_id=business_id, direction="charge", method="test", amount_minor=1,
                    currency=currency, status="confirmed", transaction_id=new_id("txn"), reference=new_id("exp"),
                    created_at=utcnow(), confirmed_at=utcnow(),
                )
            )  # fmt: skip
    return business_id, currency


async def test_the_python_rule_and_the_sql_expression_agree_on_who_is_over_the_limit(app, client, db, settings):
    default = settings.wallet.default_credit_limit_minor
    cases = [
        ("deal_maker", None, 0),
        ("deal_maker", None, default),
        ("deal_maker", None, default + 1),
        ("deal_maker", 0, 0),
        ("deal_maker", 0, 1),
        ("deal_maker", 5_000, 5_000),
        ("deal_maker", 5_000, 5_001),
    ]
    expected: dict[str, bool] = {}
    for mode, own_limit, owed in cases:
        business_id, currency = await _owing(app, client, mode, own_limit, owed)
        over = over_limit(settings, mode, owed, own_limit)
        expected[business_id] = over
        if over:
            with pytest.raises(InsufficientFunds):
                refuse_new_leads_over_limit(settings, mode, owed, own_limit, currency)
        else:
            refuse_new_leads_over_limit(settings, mode, owed, own_limit, currency)
    assert [over for over in expected.values()] == [False, False, True, False, True, False, True]
    async with app.state.uow() as uow:
        in_sql = await over_credit_limit(uow.session, settings, list(expected))
    assert in_sql == {business_id for business_id, over in expected.items() if over}


async def test_the_python_rule_and_the_sql_expression_agree_on_which_lead_buyer_could_not_pay(
    app, client, db, settings
):
    first, default = 500_000, 1_000_000  # the marketplace's (the tests' settings allow more first)
    wallet_settings = dataclasses.replace(settings.wallet, first_credit_limit_minor=first)
    settings = dataclasses.replace(
        settings, wallet=dataclasses.replace(wallet_settings, default_credit_limit_minor=default)
    )
    price = least_price(settings, "legal")
    cases = [  # own limit, owed, wallet, paid
        (0, 0, 0, False),  # may owe nothing, has nothing: pays nothing
        (0, 1, 0, False),
        (0, 0, price, False),  # its wallet pays it all
        (0, 0, price - 1, False),
        (5_000, 5_000, price, False),  # owes its whole limit, and its wallet pays
        (5_000, 5_000, 0, False),  # the tester's: owes its whole limit, nothing to pay from
        (5_000, 5_000 + 1, price, False),  # beyond its limit already: a purchase is refused (charges._charge)
        (None, 0, 0, False),
        (None, first - price, 0, False),  # the first limit, exactly
        (None, first - price + 1, 0, False),
        (None, first - price + 1, 0, True),  # the default limit once it has paid
        (None, default - price + 1, 0, True),
        (None, default + 1, 0, True),
    ]
    expected: dict[str, bool] = {}
    for own_limit, owed, wallet, paid in cases:
        business_id, _ = await _owing(app, client, "lead_buyer", own_limit, owed, wallet, paid)
        async with app.state.uow() as uow:
            limit = await credit_limit(uow.session, settings, business_id, own_limit)
        expected[business_id] = cannot_pay(owed, wallet, price, limit)
    assert list(expected.values()) == [
        True, True, False, True, False, True, True, False, False, True, False, True, True
    ]  # fmt: skip
    async with app.state.uow() as uow:
        in_sql = await over_credit_limit(uow.session, settings, list(expected), "legal")
    assert in_sql == {business_id for business_id, over in expected.items() if over}
