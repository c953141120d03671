"""Money at its edges through the HTTP API: commissions of one agora, odd amounts and the largest turnover, each
split 70/25/5 to the cent (largest remainder), invoiced with VAT exactly as posted, and the ledger balanced."""

from __future__ import annotations

from typing import Any

import pytest

from marketplace.wallet.plans import default_plan
from tests.factories import auth, business_body, operator_token, register
from tests.integration.test_clubs import found_club, invitation
from tests.integration.test_wallet import ILS, claim, close_deal, invoices, quick_offer, wallet

# plumbing: commission_rate_bp 1500; Israel: 18 % VAT, prices include it; the default split 70/25/5 (recommender,
# platform, club operator).


async def club_member(client: Any, operator: str, club: str, mode: str) -> tuple[str, str]:
    body = business_body(mode, invitation=await invitation(client, operator, club))
    response = await client.post("/v1/businesses", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"], response.json()["api_token"]


async def payable_of(client: Any, operator: str, owner: str) -> int:
    items = (await client.get("/v1/payables", headers=auth(operator))).json()["items"]
    return sum(i["owed"]["amount_minor"] for i in items if i["owner"] == owner)


# Worked by hand: the commission (gross) is 15 % of the turnover rounded half-up; the net is gross / 1.18 rounded
# half-up, the VAT the rest; the net splits 70/25/5, each share's floor, and what the floors leave goes one agora
# at a time to the largest fractions.
@pytest.mark.parametrize(
    ("turnover", "seller_mode", "gross", "net", "vat", "shares"),
    [
        # 0.60 → 1 agora of commission, net 1 (0.85 rounded), no VAT: all of it the recommender's (0.7 of it).
        (4, "lead_buyer", 1, 1, 0, (1, 0, 0)),
        (7, "deal_maker", 1, 1, 0, (1, 0, 0)),  # 1.05 → 1 agora
        # Odd: 49,999.95 → 50,000 agorot, net 42,373 (42,372.88 rounded); 29,661.1 / 10,593.25 / 2,118.65: the
        # agora the floors leave goes to the club (.65).
        (333_333, "lead_buyer", 50_000, 42_373, 7_627, (29_661, 10_593, 2_119)),
        # The largest turnover the API takes: 88,983,050,847,457.9 / 31,779,661,016,949.25 / 6,355,932,203,389.85,
        # two agorot left by the floors: to the recommender (.9) and the club (.85).
        (
            10**15,
            "deal_maker",
            150_000_000_000_000,
            127_118_644_067_797,
            22_881_355_932_203,
            (88_983_050_847_458, 31_779_661_016_949, 6_355_932_203_390),
        ),
    ],
)
async def test_a_club_deal_s_commission_splits_to_the_cent_at_any_size(
    app, client, turnover, seller_mode, gross, net, vat, shares
):
    operator = await operator_token(app)
    club = await found_club(client, operator)
    seller_id, seller = await club_member(client, operator, club, seller_mode)
    maker_id, maker = await club_member(client, operator, club, "deal_maker")
    offer = await quick_offer(app, maker_id, seller_id=seller_id, club=club)
    claimed = await claim(client, maker, offer)
    assert claimed.status_code == 201, claimed.text
    paid = await close_deal(client, maker, claimed.json()["id"], turnover)
    assert paid.status_code == 200, paid.text

    recommender, _platform, club_share = shares
    assert sum(shares) == net and net + vat == gross  # the case's own arithmetic
    (charged,) = await invoices(client, maker)
    assert (charged["net"]["amount_minor"], charged["vat"]["amount_minor"], charged["gross"]["amount_minor"]) == (
        net,
        vat,
        gross,
    )
    # The deal maker had nothing in its wallet: all of it is owed (an open charge of exactly the gross).
    maker_wallet = await wallet(client, maker)
    assert maker_wallet["owed"]["amount_minor"] == gross
    assert [d["amount"]["amount_minor"] for d in maker_wallet["open_debts"]] == [gross]
    # Earnings: a deal maker's as credit, a lead buyer's as available.
    seller_wallet = await wallet(client, seller)
    earned_in, other = ("credit", "available") if seller_mode == "deal_maker" else ("available", "credit")
    assert seller_wallet[earned_in]["amount_minor"] == recommender
    assert seller_wallet[other]["amount_minor"] == 0
    assert await payable_of(client, operator, club) == club_share
    balance = await client.get("/v1/wallet/trial-balance", headers=auth(operator))
    assert balance.json()["balanced"] is True, balance.text


async def test_a_fixed_club_share_on_a_deal_outside_any_club_is_the_platform_s_not_the_recommender_s(app, client):
    """An operator's plan pays the club operator a fixed 10.00 and splits the rest 80/20. A deal outside any club:
    the 10.00 goes to the platform (unclaimed_to), and the lead's seller earns 80 % of what the fixed part leaves
    (80.00 of a net 110.00), not 80 % of the whole (88.00)."""
    operator = await operator_token(app)
    plan = default_plan(ILS)
    plan["commission_rates_bp"] = {"plumbing": 10_000}  # the commission is the turnover: 129.80 = 110.00 + 19.80 VAT
    plan["commission_split"] = {
        "recipients": [
            {"role": "club_operator", "fixed": {"amount_minor": 1_000, "currency": ILS}},
            {"role": "recommender", "share_bp": 8_000},
            {"role": "platform", "share_bp": 2_000},
        ],
        "unclaimed_to": "platform",
    }
    saved = await client.post("/v1/commission-plans", headers=auth(operator), json={"definition": plan})
    assert saved.status_code == 201, saved.text
    seller_id, seller = await register(client, "lead_buyer")
    maker_id, maker = await register(client, "deal_maker")
    claimed = await claim(client, maker, await quick_offer(app, maker_id, seller_id=seller_id))
    assert claimed.status_code == 201, claimed.text
    paid = await close_deal(client, maker, claimed.json()["id"], 12_980)
    assert paid.status_code == 200, paid.text

    (charged,) = await invoices(client, maker)
    assert (charged["net"]["amount_minor"], charged["vat"]["amount_minor"]) == (11_000, 1_980)
    assert (await wallet(client, seller))["available"]["amount_minor"] == 8_000
    assert (await client.get("/v1/payables", headers=auth(operator))).json()["items"] == []
    balance = await client.get("/v1/wallet/trial-balance", headers=auth(operator))
    assert balance.json()["balanced"] is True, balance.text
