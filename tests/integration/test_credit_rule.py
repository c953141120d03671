"""The credit-limit rule for new leads, said twice: in Python (the claim's check) and in SQL (the waves and the
offer withdrawals filter by it). On both databases, the two agree on who is over the limit."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from marketplace.db.models import Business
from marketplace.errors import InsufficientFunds
from marketplace.ids import new_id
from marketplace.money import Money
from marketplace.wallet import store
from marketplace.wallet.credit import over_credit_limit, over_limit, refuse_new_leads_over_limit
from marketplace.wallet.ledger import build_exposure_purchase
from marketplace.wallet.offset import OffsetPlan
from marketplace.wallet.vat import vat_breakdown
from tests.factories import register


async def _owing(app, client, mode: str, own_limit: int | None, owed: int) -> tuple[str, str]:
    """A business of this mode with its own limit (None: the default) that owes `owed` through the provider."""
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
        ("lead_buyer", 0, 1),
        ("lead_buyer", None, default + 1),
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
    assert [over for over in expected.values()] == [False, False, True, False, True, False, True, False, False]
    async with app.state.uow() as uow:
        in_sql = await over_credit_limit(uow.session, settings, list(expected))
    assert in_sql == {business_id for business_id, over in expected.items() if over}
