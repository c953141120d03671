"""What referrers and their sponsors earn (wallet/referrals.py): the plan's tiers for a partner, the customer-referrer
rule with its difference bonus for a customer who refers others, all as acquisition costs on top of the revenue."""

from __future__ import annotations

import contextlib
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select

from marketplace.db.models import Exposure, LedgerTransaction
from marketplace.money import Money
from marketplace.wallet.vat import vat_breakdown
from tests.factories import auth, lead_body, offer_lead_to, operator_token, register
from tests.integration.test_wallet import accounts_of, assert_sound, claim, close_deal


def pct(amount_minor: int, bp: int) -> int:
    return Money(amount_minor, "ILS").percent_bp(bp).amount_minor


async def code_for(client: httpx.AsyncClient, operator: str, **body: Any) -> str:
    issued = await client.post("/v1/referral-codes", headers=auth(operator), json=body)
    assert issued.status_code == 201, issued.text
    assert issued.json()["kind"] == body.get("kind", "partner") and issued.json()["sponsor"] == body.get("sponsor")
    return str(issued.json()["code"])


async def referred_offer(app: Any, client: httpx.AsyncClient, business_id: str, code: str, **lead: Any) -> str:
    response = await client.post("/v1/leads", json=lead_body(referral_code=code, **lead))
    assert response.status_code == 201, response.text
    (offer_id,) = await offer_lead_to(app, response.json()["id"], [business_id])
    return offer_id


async def payables(client: httpx.AsyncClient, operator: str) -> dict[str, int]:
    balances = accounts_of(await assert_sound(client, operator))
    return {k.split(":")[1]: v for k, v in balances.items() if k.endswith(":referrer_payable")} | {
        "costs": balances.get("marketplace::acquisition_costs", 0)
    }


async def test_a_customer_referrer_and_its_sponsor_earn_the_difference_bonus(app, client, db):
    operator = await operator_token(app)
    await code_for(client, operator, referrer="club-bob", kind="customer")
    dana = await code_for(client, operator, referrer="dana", kind="customer", sponsor="club-bob")

    # A deal closed for 10,000.00 at 30 %: the net commission 2,542.37 is the revenue the customer brought. Dana
    # earns 5 % of it, her sponsor 20 % less what was paid below him (seed 001: 50.00 and 150.00 of 1,000.00).
    dm_id, dm = await register(client, "deal_maker", profile={"categories": ["legal"]})
    exposure = await claim(client, dm, await referred_offer(app, client, dm_id, dana, category="legal"))
    assert (await payables(client, operator)) == {"costs": 0}  # a customer earns on revenue, not on a claim
    assert (await close_deal(client, dm, exposure.json()["id"], 1_000_000)).status_code == 200
    net = 254_237
    dana_share, bob_share = pct(net, 500), pct(net, 2000) - pct(net, 500)
    assert (dana_share, bob_share) == (12_712, 38_135)
    assert await payables(client, operator) == {"dana": dana_share, "club-bob": bob_share, "costs": net // 5}

    # A lead buyer's purchase of a lead she referred is revenue too (net 211.86 of 250.00); given back on a return,
    # so are the rewards it earned.
    lb_id, lb = await register(client, "lead_buyer", profile={"categories": ["legal"]})
    bought = await claim(client, lb, await referred_offer(app, client, lb_id, dana, category="legal"))
    assert bought.status_code == 201, bought.text
    after_purchase = await payables(client, operator)
    assert after_purchase["dana"] == dana_share + pct(21_186, 500)
    assert after_purchase["club-bob"] == bob_share + pct(21_186, 2000) - pct(21_186, 500)
    returned = await client.post(f"/v1/exposures/{bought.json()['id']}/return", headers=auth(lb), json={"reason": "x"})
    assert returned.status_code == 200, returned.text
    assert await payables(client, operator) == {"dana": dana_share, "club-bob": bob_share, "costs": net // 5}

    # What the referrers are owed is listed for the operators, and paid out (a bank transfer, confirmed later).
    listed = await client.get("/v1/payables", headers=auth(operator), params={"account": "referrer_payable"})
    owed = {p["owner"]: p["owed"]["amount_minor"] for p in listed.json()["items"]}
    assert owed == {"dana": dana_share, "club-bob": bob_share}
    first = (await client.get("/v1/payables", headers=auth(operator), params={"limit": 1})).json()
    assert [p["owner"] for p in first["items"]] == ["club-bob"] and first["next_cursor"]
    rest = await client.get("/v1/payables", headers=auth(operator), params={"limit": 1, "cursor": first["next_cursor"]})
    assert [p["owner"] for p in rest.json()["items"]] == ["dana"] and rest.json()["next_cursor"] is None
    body = {"account": "referrer_payable", "owner": "dana", "amount": {"amount_minor": dana_share, "currency": "ILS"}}
    # Held until the deal maker pays the commission her reward is a share of.
    held = await client.post("/v1/payables/payouts", headers=auth(operator), json=body)
    assert held.status_code == 409 and held.json()["held"]["amount_minor"] == dana_share, held.text
    (charge,) = [
        s for s in (await client.get("/v1/settlements", headers=auth(dm))).json()["items"] if s["status"] == "pending"
    ]
    assert (await client.post(f"/v1/settlements/{charge['id']}/confirm", headers=auth(operator))).status_code == 200
    paid = await client.post("/v1/payables/payouts", headers=auth(operator), json=body)
    assert paid.status_code == 201 and paid.json()["payee"] == "marketplace:dana:referrer_payable", paid.text
    page = await client.get("/v1/payables", headers=auth(operator), params={"limit": 1})
    assert [p["owner"] for p in page.json()["items"]] == ["club-bob"] and page.json()["next_cursor"] is None
    assert (await payables(client, operator))["dana"] == 0


async def test_a_partner_earns_the_lifetime_and_the_retention_bonus(app, client, db):
    operator = await operator_token(app)
    code = await code_for(client, operator, referrer="site-9")
    dm_id, dm = await register(client, "deal_maker", profile={"categories": ["legal", "accounting"]})
    customer = {"contact": {"phone": "+972525550999"}}

    # A first deal: the qualified-lead fee (20.00) and 5 % of the net commission.
    first = await claim(client, dm, await referred_offer(app, client, dm_id, code, category="legal", **customer))
    assert (await close_deal(client, dm, first.json()["id"], 1_000_000)).status_code == 200
    earned = 2_000 + 12_712
    assert (await payables(client, operator))["site-9"] == earned

    # The same customer buys again (another category): a repeat purchase, and its commission (net 101,694.92 on a
    # 600,000.00 deal at 20 %) carries the partner's lifetime revenue past 100,000.00: 5 % + 2 % retention + 500.00.
    second = await claim(client, dm, await referred_offer(app, client, dm_id, code, category="accounting", **customer))
    assert second.json()["commission_rate_bp"] == 2000
    assert (await close_deal(client, dm, second.json()["id"], 60_000_000)).status_code == 200
    net = vat_breakdown(Money(12_000_000, "ILS"), 1800, True).net.amount_minor
    assert net == 10_169_492 and 12_712 + net >= 10_000_000 > 12_712
    expected = earned + 2_000 + pct(net, 500) + pct(net, 200) + 50_000
    assert (await payables(client, operator))["site-9"] == expected

    # A third deal of the same customer: retention again, the lifetime bonus not (it is paid once).
    # (Another deal maker: the first owes 120,000.00, above its credit limit, and is assigned no new lead.)
    other_id, other = await register(client, "deal_maker")
    third = await claim(
        client, other, await referred_offer(app, client, other_id, code, category="plumbing", **customer)
    )
    assert (await close_deal(client, other, third.json()["id"], 1_000_000)).status_code == 200
    net = vat_breakdown(Money(150_000, "ILS"), 1800, True).net.amount_minor  # 15 % of 10,000.00
    assert (await payables(client, operator))["site-9"] == expected + 2_000 + pct(net, 500) + pct(net, 200)


async def test_a_referrers_kind_and_sponsor_are_checked_and_fixed(app, client):
    operator = await operator_token(app)
    await code_for(client, operator, referrer="ann", kind="customer")
    for body, field in (
        ({"referrer": "ben", "sponsor": "nobody"}, "sponsor"),
        ({"referrer": "ben", "sponsor": "ben"}, "sponsor"),
        ({"referrer": "ben", "kind": "reseller"}, "kind"),
    ):
        refused = await client.post("/v1/referral-codes", headers=auth(operator), json=body)
        assert refused.status_code == 422, refused.text
        assert [e["field"] for e in refused.json()["errors"]] == [field]
    changed = await client.post(
        "/v1/referral-codes", headers=auth(operator), json={"referrer": "ann", "kind": "partner"}
    )
    assert changed.status_code == 409, changed.text
    again = await client.post(
        "/v1/referral-codes", headers=auth(operator), json={"referrer": "ann", "kind": "customer"}
    )
    assert again.status_code == 201 and again.json()["kind"] == "customer"
    # Asked for with its name alone, a known referrer gets its code, as registered.
    url = "/v1/referral-codes"
    named = await client.post(url, headers=auth(operator), json={"referrer": "ann"})
    assert named.status_code == 201, named.text
    assert (named.json()["kind"], named.json()["code"]) == ("customer", again.json()["code"])
    sponsored = await code_for(client, operator, referrer="cid", kind="customer", sponsor="ann")
    named = await client.post(url, headers=auth(operator), json={"referrer": "cid"})
    assert named.status_code == 201 and named.json()["sponsor"] == "ann" and named.json()["code"] == sponsored


async def test_the_qualified_lead_fee_stands_once_per_lead_on_a_claim_that_is_kept(app, client, db):
    operator = await operator_token(app)
    code = await code_for(client, operator, referrer="site-3")
    (a_id, a), (b_id, b), (c_id, c) = [
        await register(client, "lead_buyer", profile={"categories": ["accounting"]}) for _ in range(3)
    ]
    response = await client.post("/v1/leads", json=lead_body(referral_code=code, category="accounting"))
    lead_id = response.json()["id"]
    (offer_a, offer_b) = await offer_lead_to(app, lead_id, [a_id, b_id])
    first = await claim(client, a, offer_a)
    assert (await payables(client, operator))["site-3"] == 2_000
    second = await claim(client, b, offer_b)  # a second claim of the lead pays no second fee
    assert second.status_code == 201, second.text
    assert (await payables(client, operator))["site-3"] == 2_000

    async def give_back(token: str, exposure: httpx.Response) -> None:
        url = f"/v1/exposures/{exposure.json()['id']}/return"
        returned = await client.post(url, headers=auth(token), json={"reason": "not what was asked"})
        assert returned.status_code == 200, returned.text

    await give_back(a, first)  # the claim that earned it is returned; another business keeps the lead, and earns it
    assert (await payables(client, operator))["site-3"] == 2_000
    fees = await db.scalars(select(LedgerTransaction.reference).where(LedgerTransaction.memo.startswith("Qualified")))
    assert sorted(fees) == sorted([first.json()["id"], second.json()["id"]])  # A's (taken back), then B's
    await give_back(b, second)  # nobody keeps it now: it was not a qualified lead, and the fee is taken back
    assert (await payables(client, operator)).get("site-3", 0) == 0

    # The fee changed since; the lead's next claim (its third place: a returned one is not given again) earns the fee
    # in force now.
    plan = (await client.get("/v1/commission-plans", headers=auth(operator))).json()["items"][0]["definition"]
    plan["tiers"]["qualified_lead"]["fixed"]["amount_minor"] = 3_000
    del plan["version"]  # numbered as the next version
    assert (await client.post("/v1/commission-plans", headers=auth(operator), json={"definition": plan})).is_success
    (offer_c,) = await offer_lead_to(app, lead_id, [c_id])
    third = await claim(client, c, offer_c)
    assert third.status_code == 201, third.text
    assert (await payables(client, operator))["site-3"] == 3_000  # (payables checks the trial balance each time)


async def test_a_reward_on_a_purchase_is_paid_out_only_once_the_lead_can_no_longer_be_returned(
    app, client, db, settings
):
    from datetime import timedelta

    from marketplace.clock import clock

    operator = await operator_token(app)
    dana = await code_for(client, operator, referrer="dana", kind="customer")
    lb_id, lb = await register(client, "lead_buyer", profile={"categories": ["legal"]})
    bought = await claim(client, lb, await referred_offer(app, client, lb_id, dana, category="legal"))
    (charge,) = [s for s in (await client.get("/v1/settlements", headers=auth(lb))).json()["items"]]
    assert (await client.post(f"/v1/settlements/{charge['id']}/confirm", headers=auth(operator))).status_code == 200

    async def dana_now() -> dict[str, int]:
        (p,) = (await client.get("/v1/payables", headers=auth(operator))).json()["items"]
        return {k: p[k]["amount_minor"] for k in ("owed", "held", "payable")}

    reward = pct(21_186, 500)  # 5 % of the purchase's net price
    # Paid for, but the buyer may still return the lead, which takes the reward back: held.
    assert await dana_now() == {"owed": reward, "held": reward, "payable": 0}
    clock.advance(timedelta(days=settings.windows.return_days, minutes=1))
    assert await dana_now() == {"owed": reward, "held": 0, "payable": reward}
    late = await client.post(f"/v1/exposures/{bought.json()['id']}/return", headers=auth(lb), json={"reason": "x"})
    assert late.status_code == 409  # past the window: the reward stands
    body = {"account": "referrer_payable", "owner": "dana", "amount": {"amount_minor": reward, "currency": "ILS"}}
    assert (await client.post("/v1/payables/payouts", headers=auth(operator), json=body)).status_code == 201


async def test_a_deal_makers_claim_earns_no_qualified_lead_fee_until_its_commission_is_charged(app, client, db):
    """A tester's finding: a deal maker pays nothing for a claim, yet its claim earned the partner the qualified-lead
    fee, and a deal reported lost closed the return window: the fee was paid out in cash. A partner posting leads
    with its code and a friendly deal maker claiming and dropping them farmed the marketplace. A deal maker's claim
    qualifies the lead only once its deal's commission is charged; the fee is held until that charge is paid."""
    operator = await operator_token(app)
    code = await code_for(client, operator, referrer="site-9")
    (dm_id, dm), (other_id, other) = [
        await register(client, "deal_maker", profile={"categories": ["legal"]}) for _ in range(2)
    ]

    # The farm: claimed and reported lost, or claimed and returned: no fee, nothing owed or payable.
    for drop in ("lost", "returned"):
        lead_id = (await client.post("/v1/leads", json=lead_body(referral_code=code, category="legal"))).json()["id"]
        (offer_id,) = await offer_lead_to(app, lead_id, [dm_id])
        assigned = await claim(client, dm, offer_id)
        assert assigned.status_code == 201, assigned.text
        assert (await payables(client, operator)).get("site-9", 0) == 0
        url = f"/v1/exposures/{assigned.json()['id']}"
        if drop == "lost":
            dropped = await client.post(f"{url}/status", headers=auth(dm), json={"status": "lost"})
        else:
            dropped = await client.post(f"{url}/return", headers=auth(dm), json={"reason": "not ours"})
        assert dropped.status_code == 200, dropped.text
        assert (await payables(client, operator)).get("site-9", 0) == 0
    listed = (await client.get("/v1/payables", headers=auth(operator))).json()["items"]
    assert [p for p in listed if p["owner"] == "site-9"] == []
    body = {"account": "referrer_payable", "owner": "site-9", "amount": {"amount_minor": 2_000, "currency": "ILS"}}
    assert (await client.post("/v1/payables/payouts", headers=auth(operator), json=body)).status_code == 409

    # A deal won and paid with a turnover brings a commission: the fee (20.00) and the closed sale's 5 % of its net,
    # once per lead, though two deal makers close deals on it.
    lead_id = (await client.post("/v1/leads", json=lead_body(referral_code=code, category="legal"))).json()["id"]
    offer_dm, offer_other = await offer_lead_to(app, lead_id, [dm_id, other_id])
    first, second = await claim(client, dm, offer_dm), await claim(client, other, offer_other)
    assert first.status_code == second.status_code == 201, second.text
    assert (await payables(client, operator)).get("site-9", 0) == 0
    assert (await close_deal(client, dm, first.json()["id"], 1_000_000)).status_code == 200
    assert (await payables(client, operator))["site-9"] == 2_000 + pct(254_237, 500)
    assert (await close_deal(client, other, second.json()["id"], 1_000_000)).status_code == 200
    assert (await payables(client, operator))["site-9"] == 2_000 + 2 * pct(254_237, 500)
    fees = await db.scalars(select(LedgerTransaction.reference).where(LedgerTransaction.memo.startswith("Qualified")))
    assert list(fees) == [first.json()["id"]]

    # Held, as the closed-sale share is, until the deal maker pays the commission's charge.
    held = await client.post("/v1/payables/payouts", headers=auth(operator), json=body)
    assert held.status_code == 409 and held.json()["held"]["amount_minor"] == 2_000 + 2 * pct(254_237, 500), held.text
    (charge,) = [
        s for s in (await client.get("/v1/settlements", headers=auth(dm))).json()["items"] if s["status"] == "pending"
    ]
    assert (await client.post(f"/v1/settlements/{charge['id']}/confirm", headers=auth(operator))).status_code == 200
    paid = await client.post("/v1/payables/payouts", headers=auth(operator), json=body)
    assert paid.status_code == 201, paid.text


async def test_the_qualified_lead_fee_is_never_more_than_the_revenue_that_qualified_the_lead(app, client, db):
    """A tester's finding: a friendly deal maker reporting its deal paid at a turnover of a few agorot (a commission of
    0.01) earned the partner the whole 20.00 fee, the farm back for 0.01 a lead. The fee is cut to what the deal
    brought, net."""
    operator = await operator_token(app)
    code = await code_for(client, operator, referrer="site-10")
    dm_id, dm = await register(client, "deal_maker", profile={"categories": ["legal"]})
    lead_id = (await client.post("/v1/leads", json=lead_body(referral_code=code, category="legal"))).json()["id"]
    (offer_id,) = await offer_lead_to(app, lead_id, [dm_id])
    assigned = await claim(client, dm, offer_id)
    assert assigned.status_code == 201, assigned.text
    assert (await close_deal(client, dm, assigned.json()["id"], 7)).status_code == 200  # 30 % of 0.07: 0.02 gross
    fee = await db.scalar(select(LedgerTransaction).where(LedgerTransaction.memo.startswith("Qualified")))
    assert fee is not None
    owed = (await payables(client, operator))["site-10"]
    assert 0 < owed <= 2, owed  # the net of a 0.02 commission, not 20.00 (and nothing more: no closed-sale share)


async def test_a_lead_buyers_returned_purchase_leaves_the_fee_to_a_deal_makers_deal_once_its_commission_is_charged(
    app, client, db
):
    """A lead buyer's purchase qualifies the lead at once; returned, its fee is taken back, and a business still holding
    the lead earns it only with a claim that qualifies it: a deal maker's open deal does not, until its commission is
    charged."""
    operator = await operator_token(app)
    code = await code_for(client, operator, referrer="site-5")
    lb_id, lb = await register(client, "lead_buyer", profile={"categories": ["accounting"]})
    dm_id, dm = await register(client, "deal_maker", profile={"categories": ["accounting"]})
    lead_id = (await client.post("/v1/leads", json=lead_body(referral_code=code, category="accounting"))).json()["id"]
    offer_lb, offer_dm = await offer_lead_to(app, lead_id, [lb_id, dm_id])
    bought = await claim(client, lb, offer_lb)
    assert bought.status_code == 201, bought.text
    assert (await payables(client, operator))["site-5"] == 2_000
    deal = await claim(client, dm, offer_dm)
    assert deal.status_code == 201, deal.text
    returned = await client.post(f"/v1/exposures/{bought.json()['id']}/return", headers=auth(lb), json={"reason": "x"})
    assert returned.status_code == 200, returned.text
    assert (await payables(client, operator)).get("site-5", 0) == 0  # the deal maker's claim brought nothing yet
    assert (await close_deal(client, dm, deal.json()["id"], 1_000_000)).status_code == 200
    commission = Money(1_000_000, "ILS").percent_bp(deal.json()["commission_rate_bp"])  # 20 %: 2,000.00
    closed_sale = pct(vat_breakdown(commission, 1800, True).net.amount_minor, 500)
    assert (await payables(client, operator))["site-5"] == 2_000 + closed_sale
    fees = await db.scalars(select(LedgerTransaction.reference).where(LedgerTransaction.memo.startswith("Qualified")))
    assert sorted(fees) == sorted([bought.json()["id"], deal.json()["id"]])  # the purchase's (taken back), the deal's


async def test_a_partners_tiers_that_name_a_sponsor_pay_its_sponsor_chain(app, client, db):
    """A tester's finding: a plan's tier paying role `sponsor` was accepted, and a partner registered with a sponsor,
    yet a partner's tiers paid its referrer only: the sponsor never earned. A tier names who it pays: the partner's
    sponsor (sponsor), the sponsor's (sponsor_2), ...; nobody where the chain ends."""
    from marketplace.wallet.plans import default_plan

    operator = await operator_token(app)
    plan = default_plan("ILS")
    del plan["version"]  # numbered as the next version
    plan["tiers"]["qualified_lead"] = {"role": "sponsor", "fixed": {"amount_minor": 1_500, "currency": "ILS"}}
    plan["tiers"]["closed_sale"] = {"role": "sponsor_2", "percent_bp": 500}
    saved = await client.post("/v1/commission-plans", headers=auth(operator), json={"definition": plan})
    assert saved.status_code == 201, saved.text
    await code_for(client, operator, referrer="top")
    await code_for(client, operator, referrer="boss", sponsor="top")
    agent = await code_for(client, operator, referrer="agent", sponsor="boss")
    solo = await code_for(client, operator, referrer="solo")

    lb_id, lb = await register(client, "lead_buyer", profile={"categories": ["legal"]})
    assert (await claim(client, lb, await referred_offer(app, client, lb_id, agent, category="legal"))).is_success
    assert await payables(client, operator) == {"boss": 1_500, "costs": 1_500}
    dm_id, dm = await register(client, "deal_maker", profile={"categories": ["legal"]})
    deal = await claim(client, dm, await referred_offer(app, client, dm_id, agent, category="legal"))
    assert (await close_deal(client, dm, deal.json()["id"], 1_000_000)).status_code == 200
    closed_sale = pct(254_237, 500)
    assert await payables(client, operator) == {"boss": 3_000, "top": closed_sale, "costs": 3_000 + closed_sale}
    # A partner with no sponsor: the sponsors' tiers pay nobody.
    assert (await claim(client, lb, await referred_offer(app, client, lb_id, solo, category="legal"))).is_success
    assert await payables(client, operator) == {"boss": 3_000, "top": closed_sale, "costs": 3_000 + closed_sale}


@pytest.mark.postgres_only
@pytest.mark.parametrize("mode", ["lead_buyer", "deal_maker"])
async def test_a_return_and_a_claim_at_once_leave_the_qualified_lead_fee_with_the_claim_kept(app, client, db, mode):
    # The claim that earned the fee is returned while another business claims the lead: whichever commits first, the
    # fee ends with the claim that is kept (the return used to see no other holder, the claim a fee still standing).
    import asyncio

    from marketplace.exposures.services import return_exposure
    from marketplace.identity.services import Principal
    from marketplace.offers.claims import claim_offer

    operator = await operator_token(app)
    code = await code_for(client, operator, referrer="site-9")
    (a_id, a), (b_id, _) = [await register(client, mode, profile={"categories": ["accounting"]}) for _ in range(2)]
    lead_id = (await client.post("/v1/leads", json=lead_body(referral_code=code, category="accounting"))).json()["id"]
    offer_a, offer_b = await offer_lead_to(app, lead_id, [a_id, b_id])
    first = await claim(client, a, offer_a)
    assert first.status_code == 201, first.text
    fee = (await payables(client, operator)).get("site-9", 0)
    settings = app.state.settings
    returned, claimed = asyncio.Event(), asyncio.Event()

    async def give_back() -> None:
        async with app.state.uow() as uow:
            owner = Principal("business", a_id, mode, "active")
            await return_exposure(uow.session, settings, owner, first.json()["id"], "not mine")
            returned.set()
            # The claim runs while the return is not committed yet (it waits for the lead's row, or finishes).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(claimed.wait(), 1)

    async def take() -> None:
        await returned.wait()
        async with app.state.uow() as uow:
            await claim_offer(uow.session, settings, Principal("business", b_id, mode, "active"), offer_b, False)
        claimed.set()

    await asyncio.gather(give_back(), take())
    assert await db.count(Exposure, Exposure.lead_id == lead_id, Exposure.status != "returned") == 1
    assert (await payables(client, operator)).get("site-9", 0) == fee  # B's claim holds it now


# --- bonuses a return leaves standing or not -------------------------------------------------------------------

NET = 21_186  # a legal lead's net price (250.00 with VAT): the revenue a purchase brings
ACCOUNTING_NET = 10_169  # an accounting lead's (120.00)
PRICES = (25_000, 12_000, 15_000)  # a legal, an accounting, a renovation lead (with VAT)
THRESHOLD, BONUS = 30_000, 5_000  # a lifetime bonus of 50.00 at 300.00: the second purchase crosses it


async def low_threshold_plan(client: httpx.AsyncClient, operator: str) -> None:
    from marketplace.wallet.plans import default_plan

    plan = default_plan("ILS")
    del plan["version"]  # numbered as the next version
    plan["customer_referrer"]["sponsor_chain_bp"] = []
    plan["tiers"]["lifetime_bonus"] = [
        {
            "role": "referrer",
            "threshold": {"amount_minor": THRESHOLD, "currency": "ILS"},
            "fixed": {"amount_minor": BONUS, "currency": "ILS"},
        }
    ]
    saved = await client.post("/v1/commission-plans", headers=auth(operator), json={"definition": plan})
    assert saved.status_code == 201, saved.text


async def lifetime_bonuses(db: Any, referrer: str) -> tuple[int, int]:
    """How many of the referrer's lifetime bonuses were paid, and how many stand (were not taken back)."""
    async with db._sessions() as session:
        keys = set(
            await session.scalars(
                select(LedgerTransaction.idempotency_key).where(
                    LedgerTransaction.idempotency_key.startswith(f"referral:lifetime:{referrer}:")
                )
            )
        )
    paid = [k for k in keys if not k.endswith(":returned")]
    return len(paid), sum(1 for k in paid if f"{k}:returned" not in keys)


async def lifetime_of(db: Any, referrer: str) -> int:
    from marketplace.db.models import Referrer

    async with db._sessions() as session:
        return int(await session.scalar(select(Referrer.lifetime_revenue_minor).where(Referrer.id == referrer)) or 0)


async def give_back(client: httpx.AsyncClient, token: str, exposure_id: str) -> None:
    returned = await client.post(f"/v1/exposures/{exposure_id}/return", headers=auth(token), json={"reason": "x"})
    assert returned.status_code == 200, returned.text


async def test_a_customer_referrer_earns_no_lifetime_bonus(app, client, db):
    """A tester's finding: a customer referrer whose referred purchases carried its lifetime revenue past the
    threshold was paid the plan's lifetime bonus, a partner's tier. It earns its rate only; its lifetime is kept."""
    operator = await operator_token(app)
    await low_threshold_plan(client, operator)
    dana = await code_for(client, operator, referrer="dana", kind="customer")
    lb_id, lb = await register(client, "lead_buyer", profile={"categories": ["legal"]})
    rate = pct(NET, 500)
    bought = [
        await claim(client, lb, await referred_offer(app, client, lb_id, dana, category="legal")) for _ in range(2)
    ]
    assert all(b.status_code == 201 for b in bought), bought[-1].text
    assert 2 * NET >= THRESHOLD > NET  # the second purchase crosses the threshold
    assert (await payables(client, operator))["dana"] == 2 * rate
    assert await lifetime_bonuses(db, "dana") == (0, 0) and await lifetime_of(db, "dana") == 2 * NET
    await give_back(client, lb, bought[0].json()["id"])
    assert (await payables(client, operator))["dana"] == rate and await lifetime_of(db, "dana") == NET


async def partner_with_customer(
    app: Any, client: httpx.AsyncClient, operator: str, referrer: str, phone: str, buyers: int
) -> tuple[str, list[tuple[str, str]], str, str]:
    """A partner's code, lead buyers offered the customer's first (legal) lead, and a deal maker for its later ones
    (accounting): the code, the buyers (token, offer), the deal maker's token and its offer of a later lead."""
    code = await code_for(client, operator, referrer=referrer)
    lbs = [await register(client, "lead_buyer", profile={"categories": ["legal"]}) for _ in range(buyers)]
    body = lead_body(referral_code=code, category="legal", contact={"phone": phone})
    first = await client.post("/v1/leads", json=body)
    assert first.status_code == 201, first.text
    offers = await offer_lead_to(app, first.json()["id"], [lb_id for lb_id, _ in lbs])
    dm_id, dm = await register(client, "deal_maker", profile={"categories": ["accounting"]})
    later = await referred_offer(app, client, dm_id, code, category="accounting", contact={"phone": phone})
    return code, [(token, offer) for (_, token), offer in zip(lbs, offers, strict=True)], dm, later


DEAL_NET = vat_breakdown(Money(200_000, "ILS"), 1800, True).net.amount_minor  # 20 % of a 10,000.00 accounting deal


async def repeat_deal(client: httpx.AsyncClient, dm: str, offer_id: str) -> str:
    """The deal maker closes the customer's later lead for 10,000.00: a repeat purchase, once an earlier one stands."""
    deal = await claim(client, dm, offer_id)
    assert deal.status_code == 201, deal.text
    assert (await close_deal(client, dm, deal.json()["id"], 1_000_000)).status_code == 200
    return str(deal.json()["id"])


async def test_a_retention_bonus_stands_while_an_earlier_purchase_of_the_customer_does(app, client, db):
    """A partner's retention bonus rewards a repeat purchase: once every earlier purchase of the customer is returned,
    the later deal was no repeat, and its bonus is taken back (it stayed)."""
    operator = await operator_token(app)
    _, ((x, offer_x), (y, offer_y)), dm, later = await partner_with_customer(
        app, client, operator, "site-5", "+972525550777", 2
    )
    by_x, by_y = await claim(client, x, offer_x), await claim(client, y, offer_y)
    assert by_x.status_code == by_y.status_code == 201, by_y.text
    await repeat_deal(client, dm, later)
    fee, share, retention = 2_000, pct(DEAL_NET, 500), pct(DEAL_NET, 200)
    assert (await payables(client, operator))["site-5"] == 2 * fee + share + retention
    await give_back(client, x, by_x.json()["id"])  # Y's purchase of the first lead still makes it a repeat
    assert (await payables(client, operator))["site-5"] == 2 * fee + share + retention
    await give_back(client, y, by_y.json()["id"])  # no earlier purchase stands: no repeat after all
    assert (await payables(client, operator))["site-5"] == fee + share


async def retention_bonuses(db: Any, exposure_ids: list[str]) -> dict[str, tuple[int, int]]:
    """Per exposure: how many retention bonuses its purchase was paid, and how many stand (not taken back)."""
    async with db._sessions() as session:
        keys = set(
            await session.scalars(
                select(LedgerTransaction.idempotency_key).where(
                    LedgerTransaction.idempotency_key.startswith("referral:retention:")
                )
            )
        )
    counts: dict[str, tuple[int, int]] = {}
    for key in keys:
        if key.endswith(":returned") or key.split(":")[3] not in exposure_ids:
            continue
        paid, standing = counts.get(key.split(":")[3], (0, 0))
        counts[key.split(":")[3]] = (paid + 1, standing + (f"{key}:returned" not in keys))
    return counts


async def test_a_retention_bonus_taken_back_stands_again_when_an_earlier_purchase_does(app, client, db):
    """A tester's finding: L1 offered to X and Y, X buys it; the same customer's L2, a partner's deal, is a repeat
    (its retention bonus). X returns L1: no earlier purchase stands, the bonus is taken back. Y then claims its offer
    of L1: an earlier purchase stands again, and so does the bonus (it was not paid again)."""
    operator = await operator_token(app)
    _, ((x, offer_x), (y, offer_y)), dm, later = await partner_with_customer(
        app, client, operator, "site-6", "+972525550776", 2
    )
    by_x = await claim(client, x, offer_x)
    assert by_x.status_code == 201, by_x.text
    repeat = await repeat_deal(client, dm, later)
    fee, share, retention = 2_000, pct(DEAL_NET, 500), pct(DEAL_NET, 200)
    assert (await payables(client, operator))["site-6"] == 2 * fee + share + retention
    await give_back(client, x, by_x.json()["id"])  # L1's fee goes with the claim that earned it
    assert (await payables(client, operator))["site-6"] == fee + share
    by_y = await claim(client, y, offer_y)  # L1 bought again: L2 a repeat again
    assert by_y.status_code == 201, by_y.text
    assert (await payables(client, operator))["site-6"] == 2 * fee + share + retention
    assert await retention_bonuses(db, [repeat]) == {repeat: (2, 1)}

    # Settled again (as the next event of the referrer would), nothing moves: one stands at most.
    from marketplace.db.models import Exposure, Lead
    from marketplace.wallet.referrals import _lock_referrer, _settle_retention

    async with app.state.uow() as uow:
        await _lock_referrer(uow.session, "site-6")
        exposure = await uow.session.get(Exposure, by_y.json()["id"])
        assert exposure is not None
        lead = await uow.session.get(Lead, exposure.lead_id)
        assert lead is not None
        await _settle_retention(uow.session, lead, exposure)
    assert (await payables(client, operator))["site-6"] == 2 * fee + share + retention
    assert await retention_bonuses(db, [repeat]) == {repeat: (2, 1)}

    await give_back(client, y, by_y.json()["id"])  # taken back again, under its own number
    assert (await payables(client, operator))["site-6"] == fee + share
    assert await retention_bonuses(db, [repeat]) == {repeat: (2, 0)}


async def test_a_customer_referrers_repeat_purchase_earns_its_rate_and_no_retention_bonus(app, client, db):
    """A tester's finding: a customer referrer was paid the partner's retention bonus on a repeat purchase."""
    operator = await operator_token(app)
    dana = await code_for(client, operator, referrer="dana", kind="customer")
    lb_id, lb = await register(client, "lead_buyer", profile={"categories": ["legal", "accounting"]})
    customer = {"contact": {"phone": "+972525550778"}}
    first = await claim(client, lb, await referred_offer(app, client, lb_id, dana, category="legal", **customer))
    repeat = await claim(client, lb, await referred_offer(app, client, lb_id, dana, category="accounting", **customer))
    assert first.status_code == repeat.status_code == 201, repeat.text
    assert (await payables(client, operator))["dana"] == pct(NET, 500) + pct(ACCOUNTING_NET, 500)
    assert await retention_bonuses(db, [first.json()["id"], repeat.json()["id"]]) == {}
    await give_back(client, lb, repeat.json()["id"])
    assert (await payables(client, operator))["dana"] == pct(NET, 500)


async def test_a_partners_retention_bonus_goes_with_the_earlier_purchase_that_made_the_deal_a_repeat(app, client, db):
    """A partner's customer bought a lead (a lead buyer's claim), then made a deal: the deal's retention bonus
    (2 % of its net commission) is taken back when that purchase is returned; the commission's share stays."""
    operator = await operator_token(app)
    code = await code_for(client, operator, referrer="site-9")
    lb_id, lb = await register(client, "lead_buyer", profile={"categories": ["legal"]})
    dm_id, dm = await register(client, "deal_maker", profile={"categories": ["accounting"]})
    customer = {"contact": {"phone": "+972525550779"}}
    bought = await claim(client, lb, await referred_offer(app, client, lb_id, code, category="legal", **customer))
    assert bought.status_code == 201, bought.text
    deal = await claim(client, dm, await referred_offer(app, client, dm_id, code, category="accounting", **customer))
    assert (await close_deal(client, dm, deal.json()["id"], 1_000_000)).status_code == 200
    net = vat_breakdown(Money(200_000, "ILS"), 1800, True).net.amount_minor  # 20 % of 10,000.00
    fee = 2_000  # the qualified-lead fee, once per lead
    assert (await payables(client, operator))["site-9"] == 2 * fee + pct(net, 500) + pct(net, 200)
    await give_back(client, lb, bought.json()["id"])  # its fee goes too, and the deal was no repeat after all
    assert (await payables(client, operator))["site-9"] == fee + pct(net, 500)


@pytest.mark.parametrize("earlier", ["returned", "kept"])
async def test_a_retention_bonus_is_held_until_the_earlier_purchase_can_no_longer_be_returned(
    app, client, db, settings, earlier
):
    """A tester's finding: a retention bonus stands on an earlier purchase of the customer (its return takes the
    bonus back), yet was paid out while that purchase could still be returned; the return then left the referrer's
    payable at minus the bonus. It is held until the earlier purchase is past its return window (and paid for)."""
    from datetime import timedelta

    from marketplace.clock import clock

    operator = await operator_token(app)
    _, ((lb, offer),), dm, later = await partner_with_customer(app, client, operator, "site-8", "+972525550775", 1)
    bought = await claim(client, lb, offer)  # E1: the customer's first purchase, returnable for the window
    assert bought.status_code == 201, bought.text
    await repeat_deal(client, dm, later)  # E2: its deal, a repeat purchase (the retention bonus)
    for token in (lb, dm):  # both charges paid: only the return window holds anything
        (charge,) = [s for s in (await client.get("/v1/settlements", headers=auth(token))).json()["items"]]
        assert (await client.post(f"/v1/settlements/{charge['id']}/confirm", headers=auth(operator))).is_success

    async def site_now() -> dict[str, int]:
        listed = (await client.get("/v1/payables", headers=auth(operator))).json()["items"]  # one owed nothing: none
        mine = [p for p in listed if p["owner"] == "site-8"]
        return {k: sum(p[k]["amount_minor"] for p in mine) for k in ("owed", "held", "payable")}

    fee, share, retention = 2_000, pct(DEAL_NET, 500), pct(DEAL_NET, 200)
    # E1's fee is held by E1's own window; the retention bonus on E2 by E1's too.
    assert await site_now() == {"owed": 2 * fee + share + retention, "held": fee + retention, "payable": fee + share}
    paid = {"amount_minor": fee + share, "currency": "ILS"}
    body = {"account": "referrer_payable", "owner": "site-8", "amount": paid}
    assert (await client.post("/v1/payables/payouts", headers=auth(operator), json=body)).status_code == 201
    if earlier == "returned":
        await give_back(client, lb, bought.json()["id"])  # E1's fee and E2's retention bonus back: nothing paid out
        assert await site_now() == {"owed": 0, "held": 0, "payable": 0}
        assert (await payables(client, operator)).get("site-8", 0) == 0  # (the trial balance: never below zero)
    else:
        clock.advance(timedelta(days=settings.windows.return_days, minutes=1))
        assert await site_now() == {"owed": fee + retention, "held": 0, "payable": fee + retention}


@pytest.mark.postgres_only
async def test_two_returns_at_once_take_their_revenue_out_of_the_lifetime_once_each(app, client, db):
    """Two returns at once (the referrer's row taken in turn) each take their revenue out of the lifetime and their
    rewards back; a customer referrer past the threshold was paid no lifetime bonus, and none is left."""
    import asyncio

    from marketplace.exposures.services import return_exposure
    from marketplace.identity.services import Principal

    operator = await operator_token(app)
    await low_threshold_plan(client, operator)
    dana = await code_for(client, operator, referrer="dana", kind="customer")
    buyers = [await register(client, "lead_buyer", profile={"categories": ["legal"]}) for _ in range(3)]
    bought = []
    for buyer_id, token in buyers:
        claimed = await claim(client, token, await referred_offer(app, client, buyer_id, dana, category="legal"))
        assert claimed.status_code == 201, claimed.text
        bought.append(claimed.json()["id"])
    assert (await payables(client, operator))["dana"] == 3 * pct(NET, 500)

    async def give_back_at_once(index: int) -> None:
        async with app.state.uow() as uow:
            owner = Principal("business", buyers[index][0], "lead_buyer", "active")
            await return_exposure(uow.session, app.state.settings, owner, bought[index], "not mine")

    await asyncio.gather(give_back_at_once(0), give_back_at_once(1))
    assert (await payables(client, operator))["dana"] == pct(NET, 500)
    assert await lifetime_bonuses(db, "dana") == (0, 0) and await lifetime_of(db, "dana") == NET


_examples = iter(range(10**6))


@hsettings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@example(steps=[-1, -1, 0, -1])  # A, B crosses the threshold, A returned, C crosses again
@example(steps=[-1, -1, -1, 1])  # the crossing purchase B returned, A and C still above
@example(steps=[-1, -1, -1, -1, 0, 8])  # lead 3 a repeat of lead 0's customer; lead 0 returned, then bought by B
@given(steps=st.lists(st.one_of(st.just(-1), st.integers(0, 7), st.integers(8, 11)), min_size=3, max_size=9))
async def test_random_purchases_and_returns_owe_a_customer_referrer_its_rate_of_the_purchases_kept(
    app, client, db, steps
):
    """Purchases (-1: a new lead, bought by A), returns (0..7: of the i-th purchase, if it is still kept) and B's
    claims of a lead offered to it too (8..11: lead i - 8, once) in any order. Leads go to three customers in turn
    (lead k: customer k % 3; legal leads first). A customer referrer is owed its rate of the purchases kept and
    nothing else, whether its lifetime crosses the plan's threshold or a customer's purchase is a repeat (those
    bonuses are a partner's); its lifetime is the revenue of the purchases kept; the ledger stays sound."""
    operator = await operator_token(app)
    await low_threshold_plan(client, operator)
    index = next(_examples)
    name = f"prop-{index}"
    code = await code_for(client, operator, referrer=name, kind="customer")
    categories = ["legal", "accounting", "renovation"]
    (a_id, a), (b_id, b) = [await register(client, "lead_buyer", profile={"categories": categories}) for _ in range(2)]
    prices = zip(categories, PRICES, strict=True)
    nets = {c: vat_breakdown(Money(p, "ILS"), 1800, True).net.amount_minor for c, p in prices}
    leads: list[tuple[str, str]] = []  # per lead: its id and category
    offers_b: dict[int, str] = {}  # per lead: B's offer of it, until B claims it
    bought: list[tuple[str, int, str]] = []  # per purchase: exposure, lead index, buyer's token
    kept: set[str] = set()

    async def buy(lead: int, token: str, offer_id: str) -> None:
        claimed = await claim(client, token, offer_id)
        assert claimed.status_code == 201, claimed.text
        bought.append((claimed.json()["id"], lead, token))
        kept.add(claimed.json()["id"])

    for step in steps:
        if step == -1:
            k = len(leads)
            category = categories[k // 3 % 3]
            customer = {"contact": {"phone": f"+97252{index % 1000:03d}{k % 3:04d}"}}
            created = await client.post("/v1/leads", json=lead_body(referral_code=code, category=category, **customer))
            assert created.status_code == 201, created.text
            offer_a, offers_b[k] = await offer_lead_to(app, created.json()["id"], [a_id, b_id])
            leads.append((created.json()["id"], category))
            await buy(k, a, offer_a)
        elif step >= 8:
            if step - 8 in offers_b:
                await buy(step - 8, b, offers_b.pop(step - 8))
        elif step < len(bought) and bought[step][0] in kept:
            await give_back(client, bought[step][2], bought[step][0])
            kept.discard(bought[step][0])
        net = {e: nets[leads[k][1]] for e, k, _ in bought}
        assert await lifetime_of(db, name) == sum(net[e] for e in kept)
        owed = (await payables(client, operator)).get(name, 0)  # (payables checks the trial balance)
        assert owed == sum(pct(net[e], 500) for e in kept), (steps, step)
        assert await lifetime_bonuses(db, name) == (0, 0)
        assert await retention_bonuses(db, [e for e, _, _ in bought]) == {}, (steps, step)
