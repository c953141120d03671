"""Edges of offers, waves and bids over HTTP.

Covers: a bid kept across a profile change; each wave place paying the bid of the first left out (core and club
paths), and
a bid lowered below an open offer's price withdrawing the offer (and the lead offered again); each
business seeing and claiming only its own offers; odd paging, claim and bid input as 4xx that change nothing; the
deal range's bounds; suspended, blocked, capped and non-member businesses never offered; paging a lead's ranking and
the offers list; a refused claim changing nothing; a narrower profile withdrawing only the offers that no longer fit."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from marketplace.clock import clock
from marketplace.db.models import Offer
from tests.factories import auth, offer_lead_to, offers_of, operator_token, register, submit_lead


def _bid(category: str, amount: int | None) -> dict[str, Any]:
    return {"category": category, "max_bid": None if amount is None else {"amount_minor": amount, "currency": "ILS"}}


async def _put_bids(client: Any, token: str, *bids: dict[str, Any]) -> Any:
    return await client.put("/v1/businesses/me/bids", headers=auth(token), json={"bids": list(bids)})


async def test_a_bid_survives_a_profile_change_that_keeps_its_category(app, client, settings):
    """A lead buyer bids on plumbing, then adds a category (plumbing stays): its plumbing bid stays. (The PATCH
    replaces the category rows; SQLAlchemy turns the delete and insert of the same key into an update that leaves
    max_bid_minor alone. Pinned so that a rewrite of update_business does not drop bids silently.)"""
    price = settings.categories["plumbing"].lead_price_minor
    _, buyer = await register(client, "lead_buyer", profile={"categories": ["plumbing"]})
    assert (await _put_bids(client, buyer, _bid("plumbing", 2 * price))).status_code == 200
    changed = await client.patch(
        "/v1/businesses/me", headers=auth(buyer), json={"profile": {"categories": ["plumbing", "legal"]}}
    )
    assert changed.status_code == 200, changed.text
    bids = (await client.get("/v1/businesses/me/bids", headers=auth(buyer))).json()["bids"]
    plumbing = next(b for b in bids if b["category"] == "plumbing")
    assert plumbing["max_bid"] == {"amount_minor": 2 * price, "currency": "ILS"}


async def test_offers_and_claims_are_each_business_s_own(app, client, db):
    """A business never sees or claims another's offer (404, and the offer stays open)."""
    a_id, a = await register(client, "lead_buyer")
    _, b = await register(client, "lead_buyer")
    lead = await submit_lead(client)
    (offer_a,) = await offer_lead_to(app, lead, [a_id])
    assert [o["offer_id"] for o in await offers_of(client, b) if o["lead_id"] == lead] == []
    refused = await client.post(f"/v1/offers/{offer_a}/claim", headers=auth(b))
    assert refused.status_code == 404
    assert (await db.scalar(select(Offer.status).where(Offer.id == offer_a))) == "open"
    mine = [o for o in await offers_of(client, a) if o["offer_id"] == offer_a]
    assert len(mine) == 1 and "contact" not in mine[0]["lead"]


async def test_odd_paging_input_is_a_client_error(app, client):
    _, buyer = await register(client, "lead_buyer")
    op = await operator_token(app)
    lead = await submit_lead(client)
    await app.state.jobs.run_due()
    for query in ("limit=0", "limit=-1", "limit=201", "limit=abc", "cursor=nonsense", "cursor=off_", "limit=1e3"):
        r = await client.get(f"/v1/offers?{query}", headers=auth(buyer))
        assert r.status_code in (400, 422), (query, r.status_code, r.text)
    for query in ("limit=0", "limit=201", "cursor=nonsense", "cursor=bGVhZDoxMA", "limit=x"):
        r = await client.get(f"/v1/leads/{lead}/ranking?{query}", headers=auth(op))
        assert r.status_code in (400, 422), (query, r.status_code, r.text)
    assert (await client.get("/v1/leads/nope/ranking", headers=auth(op))).status_code == 404
    assert (await client.get(f"/v1/leads/{lead}/ranking", headers=auth(buyer))).status_code == 403


async def _buyers_with_bids(client: Any, *amounts: int | None) -> list[tuple[str, str]]:
    out = []
    for amount in amounts:
        business_id, token = await register(client, "lead_buyer", profile={"categories": ["plumbing"]})
        if amount is not None:
            assert (await _put_bids(client, token, _bid("plumbing", amount))).status_code == 200
        out.append((business_id, token))
    return out


async def test_each_place_of_a_wave_pays_against_the_first_left_out(app, client, db, settings):
    """Four buyers of equal record bid 14,000, 12,000, 9,000 and 7,000 on plumbing (list price 6,000, waves of
    three): the wave's three places are one good, each kept against the first left for the next wave, so each pays
    7,000 (they paid 12,000, 9,000 and 7,000, each against the next place inside the wave)."""
    buyers = await _buyers_with_bids(client, 14_000, 12_000, 9_000, 7_000)
    app.state.ranker.core.explore_share = 0.0
    await app.state.ranking_sync.settled()
    lead = await submit_lead(client, category="plumbing")
    await app.state.jobs.run_due()
    offers = {o.business_id: o for o in await db.scalars(select(Offer).where(Offer.lead_id == lead))}
    assert set(offers) == {b for b, _ in buyers[:3]}
    assert [offers[b].price_minor for b, _ in buyers[:3]] == [7_000, 7_000, 7_000]
    for (business_id, token), bid in zip(buyers[:3], (14_000, 12_000, 9_000), strict=True):
        (shown,) = [o for o in await offers_of(client, token) if o["lead_id"] == lead]
        assert shown["price"]["amount_minor"] == offers[business_id].price_minor <= bid
        assert shown["exclusive_price"]["amount_minor"] == settings.categories["plumbing"].exclusive_price_minor


async def test_an_offer_carries_the_ranker_s_price_not_its_explanation(app, client, db, settings, monkeypatch):
    """The price charged is the ranker's typed Ranked.price_minor; the factors only explain it (a ranking whose
    explanation shows another number, or none, still offers at the price it set)."""
    import dataclasses

    buyers = await _buyers_with_bids(client, 14_000, 12_000, 9_000, 8_000)
    app.state.ranker.core.explore_share = 0.0
    await app.state.ranking_sync.settled()
    select_top = app.state.ranker.select

    def shown_otherwise(*args: Any, **kwargs: Any) -> Any:
        return [dataclasses.replace(r, factors={**r.factors, "price_minor": None}) for r in select_top(*args, **kwargs)]

    monkeypatch.setattr(app.state.ranker, "select", shown_otherwise)
    lead = await submit_lead(client, category="plumbing")
    await app.state.jobs.run_due()
    offers = {o.business_id: o for o in await db.scalars(select(Offer).where(Offer.lead_id == lead))}
    # The second price against the first left out, not the list price a None would mean.
    assert offers[buyers[0][0]].price_minor == 8_000


async def test_a_bid_lowered_below_an_offer_s_price_withdraws_the_offer_and_the_lead_is_offered_again(
    app, client, db, settings
):
    """Four buyers bid 14,000, 12,000, 9,000 and 7,000 (list price 6,000): the first three are offered a lead at
    7,000, what keeps their places against the fourth. The first lowers its bid to the list price before claiming
    (bidding high to take a place, claiming at the list price, while the others pay 7,000 for theirs): the place was
    earned by the old bid, so its offer is withdrawn (gone from its list, its claim a 409 saying so, the ranking
    showing it closed). The others' offers stand. After the wave
    delay the lead goes on with a next wave, the buyer in it by the bid in force, at the list price. (Before, the
    offer stayed, its price capped at the lowered bid.)"""
    price = settings.categories["plumbing"].lead_price_minor
    (top_id, top), (second_id, _), (third_id, _), _ = await _buyers_with_bids(client, 14_000, 12_000, 9_000, 7_000)
    app.state.ranker.core.explore_share = 0.0
    await app.state.ranking_sync.settled()
    lead = await submit_lead(client, category="plumbing")
    await app.state.jobs.run_due()
    (offer,) = [o for o in await offers_of(client, top) if o["lead_id"] == lead]
    assert offer["price"]["amount_minor"] == 7_000
    assert (await _put_bids(client, top, _bid("plumbing", price))).status_code == 200
    assert [o for o in await offers_of(client, top) if o["lead_id"] == lead] == []
    refused = await client.post(f"/v1/offers/{offer['offer_id']}/claim", headers=auth(top))
    assert refused.status_code == 409, refused.text
    assert "lowered its bid" in refused.json()["detail"]
    offers = {o.business_id: o.status for o in await db.scalars(select(Offer).where(Offer.lead_id == lead))}
    assert offers == {top_id: "closed", second_id: "open", third_id: "open"}
    op = await operator_token(app)
    ranking = (await client.get(f"/v1/leads/{lead}/ranking", headers=auth(op))).json()["items"]
    assert [c["offer_status"] for c in ranking if c["business_id"] == top_id and c["offered"]] == ["closed"]
    # The withdrawn place is not lost: the lead is offered again after the wave delay, the buyer by its new bid.
    clock.advance(timedelta(seconds=settings.categories["plumbing"].wave_delay_seconds + 1))
    await app.state.jobs.run_due()
    again = await db.scalar(select(Offer).where(Offer.lead_id == lead, Offer.business_id == top_id))
    assert again is not None and again.status == "open" and again.wave == 2 and again.price_minor == price
    (offer,) = [o for o in await offers_of(client, top) if o["lead_id"] == lead]
    claimed = await client.post(f"/v1/offers/{offer['offer_id']}/claim", headers=auth(top))
    assert claimed.status_code == 201, claimed.text
    assert claimed.json()["price"]["amount_minor"] == price


async def test_a_bid_lowered_or_withdrawn_keeps_the_offers_it_would_still_have_earned(app, client, db, settings):
    """An offer at 12,000 (the second price against the 12,000 bid left out of the wave) stays at its price when the
    14,000 bid is lowered to 12,000, which would have earned the place; withdrawn (the list price), the bid no longer
    does."""
    (top_id, top), *_ = await _buyers_with_bids(client, 14_000, 12_000, 12_000, 12_000)
    app.state.ranker.core.explore_share = 0.0
    await app.state.ranking_sync.settled()
    lead = await submit_lead(client, category="plumbing")
    await app.state.jobs.run_due()
    assert (await _put_bids(client, top, _bid("plumbing", 12_000))).status_code == 200
    (offer,) = [o for o in await offers_of(client, top) if o["lead_id"] == lead]
    assert offer["price"]["amount_minor"] == 12_000
    assert (await _put_bids(client, top, _bid("plumbing", None))).status_code == 200
    status = await db.scalar(select(Offer.status).where(Offer.lead_id == lead, Offer.business_id == top_id))
    assert status == "closed"
    # Its claim says why, as the README promises (it was one 409 naming every cause a withdrawal may have).
    refused = await client.post(f"/v1/offers/{offer['offer_id']}/claim", headers=auth(top))
    assert refused.status_code == 409, refused.text
    assert refused.json()["detail"] == "this offer was withdrawn: the business lowered its bid below the offer's price"


async def test_waves_reach_the_deal_range_s_bounds_and_nobody_outside_it(app, client, db):
    """A budget equal to a business's min or max deal is in its range; one a minor unit outside is not."""
    budget = 150_000
    at_min, _ = await register(client, "lead_buyer", profile={"categories": ["legal"], "min_deal_minor": budget})
    at_max, _ = await register(
        client, "deal_maker", profile={"categories": ["legal"], "min_deal_minor": 0, "max_deal_minor": budget}
    )
    below, _ = await register(client, "lead_buyer", profile={"categories": ["legal"], "max_deal_minor": budget - 1})
    above, _ = await register(client, "deal_maker", profile={"categories": ["legal"], "min_deal_minor": budget + 1})
    await app.state.ranking_sync.settled()
    lead = await submit_lead(client, category="legal", budget={"amount_minor": budget, "currency": "ILS"})
    await app.state.jobs.run_due()
    offered = set(await db.scalars(select(Offer.business_id).where(Offer.lead_id == lead)))
    assert offered == {at_min, at_max}
    assert not {below, above} & offered


async def test_suspended_and_blocked_businesses_are_never_offered_nor_ranked(app, client, db):
    op = await operator_token(app)
    active, _ = await register(client, "lead_buyer", profile={"categories": ["legal"]})
    suspended, s_token = await register(client, "lead_buyer", profile={"categories": ["legal"]})
    blocked, _ = await register(client, "deal_maker", profile={"categories": ["legal"]})
    change = {"status": "suspended", "reason": "checking"}
    assert (await client.post(f"/v1/businesses/{suspended}/status", headers=auth(op), json=change)).status_code == 200
    assert (await client.post(f"/v1/businesses/{blocked}/block", headers=auth(op), json={})).status_code == 200
    await app.state.ranking_sync.settled()
    lead = await submit_lead(client, category="legal")
    await app.state.jobs.run_due()
    offered = set(await db.scalars(select(Offer.business_id).where(Offer.lead_id == lead)))
    assert offered == {active}
    ranking = (await client.get(f"/v1/leads/{lead}/ranking", headers=auth(op))).json()
    assert {c["business_id"] for c in ranking["items"]} == {active}
    # A suspended business changing its profile is offered nothing either.
    widened = await client.patch("/v1/businesses/me", headers=auth(s_token), json={"profile": {"regions": ["haifa"]}})
    assert widened.status_code == 200, widened.text  # suspended, not blocked: it still manages its account
    await app.state.jobs.run_due()
    assert suspended not in set(await db.scalars(select(Offer.business_id)))


async def test_an_offer_withdrawn_by_a_suspension_says_so_once_the_business_is_let_back_in(app, client, db):
    """A suspension withdraws the business's open offers; while suspended its claim is a 403, and once it is active
    again the claim of such an offer is a 409 naming the suspension (the offer records it), as with a block."""
    op = await operator_token(app)
    for status in ("suspended", "blocked"):
        buyer_id, buyer = await register(client, "lead_buyer", profile={"categories": ["legal"]})
        (offer,) = await offer_lead_to(app, await submit_lead(client, category="legal"), [buyer_id])
        change = {"status": status, "reason": "checking"}
        assert (
            await client.post(f"/v1/businesses/{buyer_id}/status", headers=auth(op), json=change)
        ).status_code == 200
        assert (await client.post(f"/v1/offers/{offer}/claim", headers=auth(buyer), json={})).status_code == 403
        back = {"status": "active", "reason": "checked"}
        assert (await client.post(f"/v1/businesses/{buyer_id}/status", headers=auth(op), json=back)).status_code == 200
        refused = await client.post(f"/v1/offers/{offer}/claim", headers=auth(buyer), json={})
        assert refused.status_code == 409, refused.text
        assert refused.json()["detail"] == f"this offer was withdrawn: the business's account was {status}"
        assert await db.scalar(select(Offer.status).where(Offer.id == offer)) == "closed"


async def test_a_lead_s_ranking_pages_through_every_candidate_once(app, client):
    """Seven fitting businesses, a wave of three offered: pages of two cover all seven once, positions 1..7, the
    last page with no next cursor; each page in the contract's list shape."""
    ids = {
        (await register(client, mode, profile={"categories": ["plumbing"]}))[0]
        for mode in ["lead_buyer"] * 4 + ["deal_maker"] * 3
    }
    op = await operator_token(app)
    await app.state.ranking_sync.settled()
    lead = await submit_lead(client, category="plumbing")
    await app.state.jobs.run_due()
    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(10):
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = await client.get(f"/v1/leads/{lead}/ranking?{query}", headers=auth(op))
        assert page.status_code == 200, page.text
        body = page.json()
        assert set(body) == {"lead_id", "policy", "items", "next_cursor", "candidates"} and len(body["items"]) <= 2
        seen += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert [c["position"] for c in seen] == list(range(1, 8))
    assert {c["business_id"] for c in seen} == ids and len(seen) == 7
    assert sum(c["offered"] for c in seen) == 3
    for c in seen:
        if c["factors"].get("mode") == "lead_buyer" and c["offered"]:
            assert c["factors"]["price_minor"] >= app.state.settings.categories["plumbing"].lead_price_minor


async def test_offers_page_by_cursor_newest_first_without_repeats(app, client):
    buyer_id, buyer = await register(client, "lead_buyer")
    leads = [await submit_lead(client, category="plumbing") for _ in range(5)]
    for lead in leads:
        await offer_lead_to(app, lead, [buyer_id])
    got: list[str] = []
    cursor = None
    for _ in range(5):
        r = await client.get("/v1/offers?limit=2" + (f"&cursor={cursor}" if cursor else ""), headers=auth(buyer))
        assert r.status_code == 200, r.text
        got += [o["lead_id"] for o in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert sorted(got) == sorted(leads) and len(got) == 5


async def test_a_claim_refused_at_the_cap_changes_nothing(app, client, db):
    """Refused at its daily cap (409): the lead keeps its places, the offer stays open, no exposure is made."""
    from marketplace.db.models import Exposure, Lead

    buyer_id, buyer = await register(client, "lead_buyer", profile={"daily_cap": 1, "monthly_cap": 10})
    first, second = await submit_lead(client), await submit_lead(client, category="renovation")
    (o1,) = await offer_lead_to(app, first, [buyer_id])
    (o2,) = await offer_lead_to(app, second, [buyer_id])
    assert (await client.post(f"/v1/offers/{o1}/claim", headers=auth(buyer))).status_code == 201
    refused = await client.post(f"/v1/offers/{o2}/claim", headers=auth(buyer))
    assert refused.status_code == 409, refused.text
    assert (await db.scalar(select(Lead.exposure_count).where(Lead.id == second))) == 0
    assert (await db.scalar(select(Lead.status).where(Lead.id == second))) == "open"
    assert await db.count(Exposure, Exposure.lead_id == second) == 0


async def test_a_narrower_region_or_deal_range_withdraws_only_the_offers_that_no_longer_fit(app, client, db):
    buyer_id, buyer = await register(client, "lead_buyer", profile={"regions": ["tel-aviv", "center"]})
    tlv = await submit_lead(client, region="tel-aviv", budget={"amount_minor": 100_000, "currency": "ILS"})
    center = await submit_lead(client, region="center", budget={"amount_minor": 100_000, "currency": "ILS"})
    big = await submit_lead(client, region="tel-aviv", budget={"amount_minor": 900_000, "currency": "ILS"})
    unstated = await submit_lead(client, region="tel-aviv", budget={"amount_minor": 0, "currency": "ILS"})
    offers = {lead: (await offer_lead_to(app, lead, [buyer_id]))[0] for lead in (tlv, center, big, unstated)}
    changed = await client.patch(
        "/v1/businesses/me",
        headers=auth(buyer),
        json={"profile": {"regions": ["tel-aviv"], "max_deal_minor": 500_000}},
    )
    assert changed.status_code == 200, changed.text
    assert {o["lead_id"] for o in await offers_of(client, buyer)} == {tlv, unstated}
    # Their claims say why (the offer records it, as a lowered bid's does).
    for lead in (center, big):
        refused = await client.post(f"/v1/offers/{offers[lead]}/claim", headers=auth(buyer), json={})
        assert refused.status_code == 409, refused.text
        assert refused.json()["detail"] == (
            "this offer was withdrawn: the business's profile (categories, regions, deal range) no longer fits the lead"
        )


async def test_odd_claim_and_bid_bodies_are_client_errors_that_change_nothing(app, client, db, settings):
    buyer_id, buyer = await register(client, "lead_buyer", profile={"categories": ["plumbing"]})
    (offer,) = await offer_lead_to(app, await submit_lead(client), [buyer_id])
    for body in ({"exclusive": "yes"}, {"exclusive": None}, {"exclusive": 1}, [], {"exclusive": False, "x": 1}, "x"):
        r = await client.post(f"/v1/offers/{offer}/claim", headers=auth(buyer), json=body)
        assert r.status_code in (400, 422), (body, r.status_code, r.text)
    r = await client.post(
        f"/v1/offers/{offer}/claim", headers={**auth(buyer), "Content-Type": "application/json"}, content=b"{"
    )
    assert r.status_code in (400, 422), r.text
    assert (await db.scalar(select(Offer.status).where(Offer.id == offer))) == "open"
    price = settings.categories["plumbing"].lead_price_minor
    assert (await _put_bids(client, buyer, _bid("plumbing", 2 * price))).status_code == 200
    for bids in (
        [{"category": "plumbing", "max_bid": {"amount_minor": 10**30, "currency": "ILS"}}],
        [{"category": "plumbing", "max_bid": {"amount_minor": -1, "currency": "ILS"}}],
        [{"category": "plumbing", "max_bid": {"amount_minor": 7000.5, "currency": "ILS"}}],
        [{"category": "plumbing", "max_bid": {"amount_minor": 7000, "currency": "EUR"}}],
        [{"category": "plumbing", "max_bid": {"amount_minor": 7000, "currency": "ils"}}],
        [{"category": 7, "max_bid": None}],
        [{"category": "plumbing"}],
        [_bid("plumbing", 7000), _bid("renovation", 20_000)],  # one not its category: all refused
    ):
        r = await client.put("/v1/businesses/me/bids", headers=auth(buyer), json={"bids": bids})
        assert r.status_code in (400, 422), (bids, r.status_code, r.text)
    for body in ({}, {"bids": None}, {"bids": "x"}, {"bids": [None]}):
        r = await client.put("/v1/businesses/me/bids", headers=auth(buyer), json=body)
        assert r.status_code in (400, 422), (body, r.status_code, r.text)
    bids = (await client.get("/v1/businesses/me/bids", headers=auth(buyer))).json()["bids"]
    assert bids[0]["max_bid"]["amount_minor"] == 2 * price


async def test_a_clubs_lead_prices_its_members_by_second_price_and_skips_one_at_its_cap(app, client, db):
    """Inside a club (waves matched by the database, not the core): four members bid 14,000, 12,000, 9,000 and
    7,000, a fifth is at its daily cap; the capped member and
    every outsider are not offered it: the wave of three pays 7,000 each, what keeps its places against the fourth."""
    from tests.integration.test_clubs import club_lead, found_club, member

    op = await operator_token(app)
    club = await found_club(client, op)
    members = []
    for amount in (14_000, 12_000, 9_000, 7_000):
        business_id, token = await member(client, op, club, "lead_buyer")
        assert (await _put_bids(client, token, _bid("plumbing", amount))).status_code == 200
        members.append(business_id)
    capped_id, capped = await member(client, op, club, "lead_buyer", daily_cap=1, monthly_cap=5)
    (first,) = await offer_lead_to(app, await submit_lead(client, category="renovation"), [capped_id])
    assert (await client.post(f"/v1/offers/{first}/claim", headers=auth(capped))).status_code == 201
    outsider, _ = await register(client, "lead_buyer", profile={"categories": ["plumbing"]})
    app.state.ranker.core.explore_share = 0.0
    lead = await club_lead(app, client, club)
    offers = {o.business_id: o for o in await db.scalars(select(Offer).where(Offer.lead_id == lead))}
    assert set(offers) == set(members[:3])
    assert [offers[b].price_minor for b in members[:3]] == [7_000, 7_000, 7_000]
    assert capped_id not in offers and outsider not in offers


async def test_a_put_of_bids_withdraws_the_bid_of_a_category_it_does_not_name(app, client, db, settings):
    """PUT replaces the bids (RFC 9110): a category of the business the body leaves out has its bid withdrawn, as an
    explicit null does (it kept its old bid: the PUT merged). The withdrawal withdraws that category's open offers
    priced above the list price (the places the old bid earned) and reaches the ranking core; a refused PUT still
    changes nothing."""
    plumbing = settings.categories["plumbing"].lead_price_minor
    renovation = settings.categories["renovation"].lead_price_minor
    buyer_id, buyer = await register(client, "lead_buyer", profile={"categories": ["plumbing", "renovation"]})
    both = await _put_bids(client, buyer, _bid("plumbing", plumbing + 100), _bid("renovation", renovation + 200))
    assert both.status_code == 200, both.text
    lead = await submit_lead(client, category="renovation")
    (offer,) = await offer_lead_to(app, lead, [buyer_id])
    async with app.state.uow() as uow:  # offered under the renovation bid
        await uow.session.execute(update(Offer).where(Offer.id == offer).values(price_minor=renovation + 200))
    await app.state.ranking_sync.settled()
    assert app.state.ranker.standings[buyer_id].bids["renovation"] == renovation + 200

    # Refused (a category not its own): nothing changes, the renovation bid included.
    refused = await _put_bids(client, buyer, _bid("plumbing", plumbing + 300), _bid("legal", None))
    assert refused.status_code == 422, refused.text
    kept = (await client.get("/v1/businesses/me/bids", headers=auth(buyer))).json()["bids"]
    assert [b["max_bid"]["amount_minor"] for b in kept] == [plumbing + 100, renovation + 200]
    one = await _put_bids(client, buyer, _bid("plumbing", plumbing + 300))
    assert one.status_code == 200, one.text
    expected = {"plumbing": {"amount_minor": plumbing + 300, "currency": "ILS"}, "renovation": None}
    assert {b["category"]: b["max_bid"] for b in one.json()["bids"]} == expected
    shown = (await client.get("/v1/businesses/me/bids", headers=auth(buyer))).json()["bids"]
    assert {b["category"]: b["max_bid"] for b in shown} == expected
    assert await db.scalar(select(Offer.status).where(Offer.id == offer)) == "closed"
    await app.state.ranking_sync.settled()
    assert app.state.ranker.standings[buyer_id].bids == {"plumbing": plumbing + 300, "renovation": None}
    # An empty list withdraws every bid.
    assert (await _put_bids(client, buyer)).status_code == 200
    shown = (await client.get("/v1/businesses/me/bids", headers=auth(buyer))).json()["bids"]
    assert [b["max_bid"] for b in shown] == [None, None]


async def test_a_lead_left_with_nobody_is_offered_again_when_the_day_starts_and_a_cap_frees_its_business(
    app, client, db, settings
):
    """The waves stop when nobody fitting is left to offer a lead to. A business at its daily cap becomes a candidate
    again when the local day starts, with no change of its own to wake the lead: the lead tries again then."""
    from datetime import timedelta

    from marketplace.clock import clock, next_day_start, utcnow
    from marketplace.db.models import Lead
    from workers.actors import resend_lost_waves

    _, buyer = await register(client, "lead_buyer", profile={"daily_cap": 1, "monthly_cap": 10})
    await submit_lead(client)
    await app.state.jobs.run_due()
    (first,) = await offers_of(client, buyer)
    assert (await client.post(f"/v1/offers/{first['offer_id']}/claim", headers=auth(buyer))).status_code == 201

    waiting = await submit_lead(client)  # its only fitting business is at its cap today
    await app.state.jobs.run_due()
    assert await offers_of(client, buyer) == []
    assert await db.scalar(select(Lead.next_wave_at).where(Lead.id == waiting)) is not None
    # The periodic sweep of waves due sends it once the day has started (a minute late, as any wave it takes up).
    clock.advance(next_day_start(utcnow(), settings.jurisdiction.zone) - utcnow() - timedelta(minutes=1))
    await resend_lost_waves()
    await app.state.jobs.run_due()
    assert await offers_of(client, buyer) == []  # still today: the cap holds
    clock.advance(timedelta(minutes=3))
    await resend_lost_waves()
    await app.state.jobs.run_due()
    (offer,) = await offers_of(client, buyer)
    assert offer["lead_id"] == waiting
    claimed = await client.post(f"/v1/offers/{offer['offer_id']}/claim", headers=auth(buyer))
    assert claimed.status_code == 201, claimed.text


async def test_a_wave_counts_the_caps_in_the_database_not_only_in_its_process_s_ranking(app, client, db):
    """A process's ranking core may not have heard of a claim or a cap another process took (Redis away): the wave
    counts each pick's leads of the day in the database and passes over one at its cap (its claim could only be
    refused), offering the lead to the next one instead."""
    from marketplace.db.models import Business

    capped_id, capped = await register(client, "lead_buyer", profile={"daily_cap": 5, "monthly_cap": 50})
    _, other = await register(client, "lead_buyer", profile={"daily_cap": 5, "monthly_cap": 50})
    await submit_lead(client)
    await app.state.jobs.run_due()
    (first,) = await offers_of(client, capped)
    assert (await client.post(f"/v1/offers/{first['offer_id']}/claim", headers=auth(capped))).status_code == 201
    # Another process lowered its cap to the one lead it has had today; this process's core never heard of it.
    async with app.state.uow() as uow:
        await uow.session.execute(update(Business).where(Business.id == capped_id).values(daily_cap=1))
    waiting = await submit_lead(client)
    await app.state.jobs.run_due()
    assert [o["lead_id"] for o in await offers_of(client, capped)] == []
    assert waiting in {o["lead_id"] for o in await offers_of(client, other)}


async def test_a_pick_the_wave_passes_over_takes_no_one_elses_turn_in_the_rotation(app, database_url):
    """The rotation policy offers the businesses offered longest ago first. A deal maker over its credit limit was
    first in turn: the wave marked the next one offered, chose again without the refused one, and the rotation then
    put the just-marked business at the back: it lost its turn without being offered the lead (a review)."""
    import httpx

    from marketplace.app import create_app, shutdown, startup
    from marketplace.db.models import Business
    from tests.conftest import make_settings

    settings = make_settings(database_url, MARKETPLACE__RANKING__POLICY="rotation")
    rotating = create_app(settings, migrate_on_start=False, run_jobs_in_background=False)
    await startup(rotating.state)
    try:
        transport = httpx.ASGITransport(app=rotating, client=("127.0.0.1", 50002))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            profile = {"categories": ["legal"]}
            a, b, c, d = [(await register(client, "deal_maker", profile=profile))[0] for _ in range(4)]
            async with rotating.state.sessions() as session:  # a owes more than it may: 0 above a limit below zero
                await session.execute(update(Business).where(Business.id == a).values(credit_limit_minor=-1))
                await session.commit()
            assert settings.categories["legal"].wave_size == 2
            lead_id = await submit_lead(client, category="legal")
            await rotating.state.jobs.run_due()
            async with rotating.state.sessions() as session:
                offered = set(await session.scalars(select(Offer.business_id).where(Offer.lead_id == lead_id)))
                marked = set(
                    await session.scalars(
                        select(Business.id).where(Business.id.in_([a, b, c, d]), Business.last_offered_at.is_not(None))
                    )
                )
    finally:
        await shutdown(rotating.state)
        await rotating.state.engine.dispose()
    assert offered == {b, c}
    assert marked == {b, c}
