"""A lead from intake to a closed deal over HTTP: waves, claims, statuses, returns and the workers' sweeps."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update

from marketplace.clock import clock, next_day_start
from marketplace.db.models import BusinessRegion, Exposure, ExposureEvent, IdempotencyRecord, Lead, Offer
from tests.factories import auth, lead_body, offer_lead_to, offers_of, operator_token, register, submit_lead
from tests.integration.fraud_market import claimed_deal


async def _market(client):
    """Two businesses of each mode serving plumbing in Tel Aviv."""
    businesses = {}
    for name, mode in (("dm1", "deal_maker"), ("dm2", "deal_maker"), ("lb1", "lead_buyer"), ("lb2", "lead_buyer")):
        businesses[name] = await register(client, mode)
    return businesses


async def test_lead_to_closed_deal_end_to_end(app, client, db, settings):
    market = await _market(client)
    lead_id = await submit_lead(client, category="plumbing", region="tel-aviv")
    await app.state.jobs.run_due()

    wave_size = settings.categories["plumbing"].wave_size
    offered = {n for n, (_, token) in market.items() if await offers_of(client, token)}
    assert len(offered) == wave_size == 3
    for name in offered:
        offer = (await offers_of(client, market[name][1]))[0]
        assert offer["lead_id"] == lead_id and "contact" not in offer
        assert "phone" not in str(offer)

    # Not taken within the wave delay: the next wave reaches the remaining business.
    clock.advance(timedelta(seconds=settings.categories["plumbing"].wave_delay_seconds + 1))
    await app.state.jobs.run_due()
    assert all([await offers_of(client, token) for _, token in market.values()])
    waves = await db.scalars(select(Offer.wave).where(Offer.lead_id == lead_id))
    assert sorted(waves) == [1, 1, 1, 2]

    # A shared purchase by a lead buyer: it pays the lead price and sees the contact.
    lb_token = market["lb1"][1]
    offer_id = (await offers_of(client, lb_token))[0]["offer_id"]
    claimed = await client.post(f"/v1/offers/{offer_id}/claim", headers=auth(lb_token), json={"exclusive": False})
    assert claimed.status_code == 201, claimed.text
    assert claimed.json()["kind"] == "shared" and claimed.json()["commission_rate_bp"] is None  # it pays a price
    assert claimed.json()["price"] == {
        "amount_minor": settings.categories["plumbing"].lead_price_minor,
        "currency": "ILS",
    }
    assert claimed.json()["contact"]["phone"].startswith("+972")

    # A deal maker is assigned the lead, pays nothing now, and reports the deal to `paid`.
    dm_token = market["dm1"][1]
    dm_offer = (await offers_of(client, dm_token))[0]
    assert dm_offer["price"]["amount_minor"] == 0 and dm_offer["commission_rate_bp"] == 1500
    assigned = await client.post(f"/v1/offers/{dm_offer['offer_id']}/claim", headers=auth(dm_token))
    assert assigned.status_code == 201, assigned.text
    exposure_id = assigned.json()["id"]
    assert assigned.json()["kind"] == "assigned" and assigned.json()["commission_rate_bp"] == 1500
    # The other deal maker is assigned it too, before the deal is won (from then on nobody else is).
    dm2_token = market["dm2"][1]
    dm2_offer = (await offers_of(client, dm2_token))[0]
    dm2_exposure = await client.post(f"/v1/offers/{dm2_offer['offer_id']}/claim", headers=auth(dm2_token))
    assert dm2_exposure.status_code == 201, dm2_exposure.text
    # The other deal maker returns its lead (before any deal on it: once the customer hired someone, a return is
    # refused) and gets a replacement offer of a matching lead.
    other_lead = await submit_lead(client, category="plumbing", region="tel-aviv")
    returned = await client.post(
        f"/v1/exposures/{dm2_exposure.json()['id']}/return",
        headers=auth(dm2_token),
        json={"reason": "customer wants a gardener, not a plumber"},
    )
    assert returned.status_code == 200, returned.text
    replacement_id = returned.json()["replacement_offer_id"]
    assert replacement_id and returned.json()["refund"] is None
    replacement = [o for o in await offers_of(client, dm2_token) if o["offer_id"] == replacement_id]
    assert replacement and replacement[0]["lead_id"] == other_lead
    gone = await client.get(f"/v1/exposures/{dm2_exposure.json()['id']}", headers=auth(dm2_token))
    assert gone.json()["status"] == "returned" and gone.json()["contact"] is None
    lead = await db.scalar(select(Lead).where(Lead.id == lead_id))
    assert lead.exposure_count == 3  # lb1 and dm1 hold it; dm2 saw the contact: its place is not offered again
    stats = await client.get("/v1/businesses/me/stats", headers=auth(dm2_token))
    assert stats.json()["returned"] == 1 and stats.json()["return_rate_bp"] == 10_000

    won = await client.post(
        f"/v1/exposures/{exposure_id}/status",
        headers=auth(dm_token),
        json={"status": "won", "turnover": {"amount_minor": 1_000_000, "currency": "ILS"}},
    )
    assert won.status_code == 200, won.text
    paid = await client.post(f"/v1/exposures/{exposure_id}/status", headers=auth(dm_token), json={"status": "paid"})
    assert paid.status_code == 200, paid.text
    body = paid.json()
    assert body["status"] == "paid" and body["turnover"] == {"amount_minor": 1_000_000, "currency": "ILS"}
    assert [(h["from_status"], h["to_status"]) for h in body["history"]] == [
        (None, "new"),
        ("new", "won"),
        ("won", "paid"),
    ]
    assert all(h["actor"] == f"business:{market['dm1'][0]}" for h in body["history"])
    assert await db.count(ExposureEvent, ExposureEvent.exposure_id == exposure_id) == 3


async def test_lead_buyer_return_is_recorded_for_a_refund(app, client, db):
    _, token = await register(client, "lead_buyer")
    await submit_lead(client)
    await app.state.jobs.run_due()
    offer = (await offers_of(client, token))[0]
    exposure = (await client.post(f"/v1/offers/{offer['offer_id']}/claim", headers=auth(token))).json()
    response = await client.post(
        f"/v1/exposures/{exposure['id']}/return", headers=auth(token), json={"reason": "wrong number"}
    )
    assert response.status_code == 200
    assert response.json()["refund"] == exposure["price"]
    assert response.json()["replacement_offer_id"] is None
    # Refunded, and its slot back on the market: the contact is withdrawn from the exposure.
    assert exposure["contact"]["phone"]
    after = await client.get(f"/v1/exposures/{exposure['id']}", headers=auth(token))
    assert after.status_code == 200 and after.json()["status"] == "returned"
    assert after.json()["contact"] is None
    listed = (await client.get("/v1/exposures", headers=auth(token))).json()["items"]
    assert [e["contact"] for e in listed if e["id"] == exposure["id"]] == [None]


async def test_a_replayed_claim_shows_the_contact_as_the_exposure_may_now(app, client, db):
    """The stored answer of a claim keeps no contact at rest; a retry with its key shows the contact while the
    exposure holds the lead, and none once it was returned."""
    _, token = await register(client, "lead_buyer")
    await submit_lead(client)
    await app.state.jobs.run_due()
    offer = (await offers_of(client, token))[0]
    headers = {**auth(token), "Idempotency-Key": "claim-1"}
    first = await client.post(f"/v1/offers/{offer['offer_id']}/claim", headers=headers)
    assert first.status_code == 201 and first.json()["contact"]["phone"]
    stored = await db.scalar(select(IdempotencyRecord.body).where(IdempotencyRecord.key == "claim-1"))
    assert stored["id"] == first.json()["id"] and stored["contact"] is None
    again = await client.post(f"/v1/offers/{offer['offer_id']}/claim", headers=headers)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    returned = await client.post(
        f"/v1/exposures/{first.json()['id']}/return", headers=auth(token), json={"reason": "wrong number"}
    )
    assert returned.status_code == 200
    late = await client.post(f"/v1/offers/{offer['offer_id']}/claim", headers=headers)
    assert late.status_code == 201 and late.json()["id"] == first.json()["id"] and late.json()["contact"] is None


async def test_impossible_transition_names_the_allowed_states(app, client, db):
    _, token = await register(client, "deal_maker")
    await submit_lead(client)
    await app.state.jobs.run_due()
    offer = (await offers_of(client, token))[0]
    exposure_id = (await client.post(f"/v1/offers/{offer['offer_id']}/claim", headers=auth(token))).json()["id"]
    quoted = await client.post(f"/v1/exposures/{exposure_id}/status", headers=auth(token), json={"status": "quoted"})
    assert quoted.status_code == 200, quoted.text
    response = await client.post(
        f"/v1/exposures/{exposure_id}/status", headers=auth(token), json={"status": "contacted"}
    )
    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["allowed_next"] == ["won", "lost", "invoiced", "paid"]
    assert "won" in response.json()["detail"]
    lost = await client.post(f"/v1/exposures/{exposure_id}/status", headers=auth(token), json={"status": "lost"})
    assert lost.status_code == 200
    again = await client.post(f"/v1/exposures/{exposure_id}/status", headers=auth(token), json={"status": "won"})
    assert again.status_code == 409 and again.json()["allowed_next"] == []
    assert await db.scalar(select(Exposure.status).where(Exposure.id == exposure_id)) == "lost"
    # A paid deal needs its turnover.
    await submit_lead(client)
    await app.state.jobs.run_due()
    offer2 = (await offers_of(client, token))[0]
    e2 = (await client.post(f"/v1/offers/{offer2['offer_id']}/claim", headers=auth(token))).json()["id"]
    # Straight from new too (a skip past won): refused, and nothing of the win happened.
    no_turnover = await client.post(f"/v1/exposures/{e2}/status", headers=auth(token), json={"status": "paid"})
    assert no_turnover.status_code == 422 and no_turnover.json()["errors"][0]["field"] == "turnover"
    assert await db.scalar(select(Exposure.status).where(Exposure.id == e2)) == "new"
    assert await db.scalar(select(Lead.status).where(Lead.id == offer2["lead_id"])) == "open"
    await client.post(f"/v1/exposures/{e2}/status", headers=auth(token), json={"status": "won"})
    no_turnover = await client.post(f"/v1/exposures/{e2}/status", headers=auth(token), json={"status": "paid"})
    assert no_turnover.status_code == 422 and no_turnover.json()["errors"][0]["field"] == "turnover"
    # A turnover, when it is given, is above zero (for a won deal too).
    for status in ("invoiced", "paid"):
        zero = {"status": status, "turnover": {"amount_minor": 0, "currency": "ILS"}}
        response = await client.post(f"/v1/exposures/{e2}/status", headers=auth(token), json=zero)
        assert response.status_code == 422 and response.json()["errors"][0]["field"] == "turnover.amount_minor"
    assert await db.scalar(select(Exposure.status).where(Exposure.id == e2)) == "won"
    assert await db.scalar(select(Exposure.turnover_minor).where(Exposure.id == e2)) is None


async def test_a_report_skipping_past_won_wins_the_deal_on_the_way(app, client, db):
    """Forward skips run across the whole chain: a deal maker's `paid` (or `invoiced`) straight from `new` wins the
    deal on the way, with everything a `won` brings: its lead leaves the market (closed, a competitor's claim
    refused), its customer is asked (a survey caused by the win), its commission is charged on the turnover. It was a
    409 (allowed next: contacted, quoted, won, lost), so a business using the product as a plain lead manager needed
    a call per step it had nothing to say about."""
    from marketplace.db.models import Invoice, Survey

    dm_id, dm = await register(client, "deal_maker", profile={"categories": ["plumbing"]})
    late_id, late = await register(client, "lead_buyer", profile={"categories": ["plumbing"]})
    lead_id = await submit_lead(client, category="plumbing")
    dm_offer, late_offer = await offer_lead_to(app, lead_id, [dm_id, late_id])
    exposure = (await client.post(f"/v1/offers/{dm_offer}/claim", headers=auth(dm))).json()
    paid = await client.post(
        f"/v1/exposures/{exposure['id']}/status",
        headers=auth(dm),
        json={"status": "paid", "turnover": {"amount_minor": 100_000, "currency": "ILS"}},
    )
    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "paid" and paid.json()["lead"]["status"] == "closed"
    assert [(h["from_status"], h["to_status"]) for h in paid.json()["history"]] == [(None, "new"), ("new", "paid")]
    refused = await client.post(f"/v1/offers/{late_offer}/claim", headers=auth(late), json={"exclusive": False})
    assert refused.status_code == 409 and "left the market" in refused.json()["detail"], refused.text
    assert await db.scalar(select(Survey.cause).where(Survey.lead_id == lead_id)) == "won"
    assert await db.count(Invoice, Invoice.business_id == dm_id) == 1  # the commission

    # A lead buyer (a lead manager of its own: no turnover needed) reports the payment alone; its customer is asked
    # too, and its lead stays on the market (a lead buyer's word takes nothing off it).
    buyer_id, buyer = await register(client, "lead_buyer", profile={"categories": ["legal"]})
    other = await submit_lead(client, category="legal")
    (offer,) = await offer_lead_to(app, other, [buyer_id])
    bought = (await client.post(f"/v1/offers/{offer}/claim", headers=auth(buyer))).json()
    invoiced = await client.post(
        f"/v1/exposures/{bought['id']}/status", headers=auth(buyer), json={"status": "invoiced"}
    )
    assert invoiced.status_code == 200 and invoiced.json()["lead"]["status"] == "open", invoiced.text
    assert await db.scalar(select(Survey.cause).where(Survey.lead_id == other)) == "won"
    paid = await client.post(f"/v1/exposures/{bought['id']}/status", headers=auth(buyer), json={"status": "paid"})
    assert paid.status_code == 200, paid.text
    assert await db.count(Survey, Survey.lead_id == other) == 1  # asked once, at the win


async def test_claims_on_expired_full_or_foreign_offers_are_refused(app, client, db, settings):
    _, token = await register(client, "lead_buyer")
    _, other_token = await register(client, "lead_buyer")
    await submit_lead(client)
    await app.state.jobs.run_due()
    offer = (await offers_of(client, token))[0]
    foreign = await client.post(f"/v1/offers/{offer['offer_id']}/claim", headers=auth(other_token))
    assert foreign.status_code == 404
    clock.advance(timedelta(minutes=settings.windows.offer_ttl_minutes + 1))
    expired = await client.post(f"/v1/offers/{offer['offer_id']}/claim", headers=auth(token))
    assert expired.status_code == 409
    assert await db.count(Exposure) == 0
    # The sweep marks it expired and it no longer shows.
    await app.state.jobs.run_due()
    from workers.actors import expire_lapsed

    await expire_lapsed()
    assert await db.scalar(select(Offer.status).where(Offer.id == offer["offer_id"])) == "expired"
    assert await offers_of(client, token) == []


async def test_a_claim_refused_on_a_taken_lead_says_why(app, client, db):
    """Full, bought exclusively, or withdrawn: the 409 tells the business which (the contract's three cases)."""
    makers = [await register(client, "deal_maker") for _ in range(3)]
    (_, first), (_, second), (_, third) = makers
    buyers = [await register(client, "lead_buyer") for _ in range(2)]
    # legal: two exposures at most
    full_lead = (await client.post("/v1/leads", json=lead_body(category="legal"))).json()["id"]
    a, b, c = await offer_lead_to(app, full_lead, [m for m, _ in makers])
    for offer, token in ((a, first), (b, second)):
        assert (await client.post(f"/v1/offers/{offer}/claim", headers=auth(token))).status_code == 201
    full = await client.post(f"/v1/offers/{c}/claim", headers=auth(third))
    assert full.status_code == 409 and "full" in full.json()["detail"], full.text
    exclusive_lead = (await client.post("/v1/leads", json=lead_body())).json()["id"]
    x, y = await offer_lead_to(app, exclusive_lead, [b for b, _ in buyers])
    bought = await client.post(f"/v1/offers/{x}/claim", headers=auth(buyers[0][1]), json={"exclusive": True})
    assert bought.status_code == 201, bought.text
    late = await client.post(f"/v1/offers/{y}/claim", headers=auth(buyers[1][1]))
    assert late.status_code == 409 and "exclusively" in late.json()["detail"], late.text
    assert await db.count(Exposure) == 3


async def test_return_after_the_window_is_refused(app, client, db, settings):
    _, token = await register(client, "lead_buyer")
    await submit_lead(client)
    await app.state.jobs.run_due()
    offer = (await offers_of(client, token))[0]
    exposure_id = (await client.post(f"/v1/offers/{offer['offer_id']}/claim", headers=auth(token))).json()["id"]
    clock.advance(timedelta(days=settings.windows.return_days, minutes=1))
    response = await client.post(f"/v1/exposures/{exposure_id}/return", headers=auth(token), json={"reason": "x"})
    assert response.status_code == 409 and response.json()["returnable_until"].endswith("Z"), response.text
    assert await db.scalar(select(Exposure.status).where(Exposure.id == exposure_id)) == "new"
    empty_reason = await client.post(f"/v1/exposures/{exposure_id}/return", headers=auth(token), json={"reason": " "})
    assert empty_reason.status_code == 422


async def test_stale_leads_are_counted_per_business(app, client, settings, db):
    from marketplace.db.models import FraudDirty

    business_id, token = await register(client, "deal_maker")
    await submit_lead(client)
    await app.state.jobs.run_due()
    offer = (await offers_of(client, token))[0]
    await client.post(f"/v1/offers/{offer['offer_id']}/claim", headers=auth(token))
    from workers.actors import mark_stale

    await mark_stale()
    assert (await client.get("/v1/businesses/me/stats", headers=auth(token))).json()["stale"] == 0
    from workers.actors import fraud_scan

    await fraud_scan()  # the claim was news for the fraud assessment too: assessed, the business has no news left
    assert await db.count(FraudDirty) == 0
    clock.advance(timedelta(days=settings.windows.stale_days, seconds=1))
    await mark_stale()
    await mark_stale()  # delivered twice: changes nothing more
    assert (await client.get("/v1/businesses/me/stats", headers=auth(token))).json()["stale"] == 1
    # A stale lead is a fraud signal: its business is assessed again at the next scan.
    assert list(await db.scalars(select(FraudDirty.business_id))) == [business_id]


async def test_a_replacement_takes_the_returned_leads_place_within_the_caps(app, client, db):
    dm_id, dm = await register(client, "deal_maker", profile={"daily_cap": 1, "monthly_cap": 1})
    first = await submit_lead(client, category="plumbing")
    (offer_id,) = await offer_lead_to(app, first, [dm_id])
    claimed = await client.post(f"/v1/offers/{offer_id}/claim", headers=auth(dm))
    assert claimed.status_code == 201, claimed.text

    await submit_lead(client, category="plumbing")  # an open lead to replace it with
    returned = await client.post(f"/v1/exposures/{claimed.json()['id']}/return", headers=auth(dm), json={"reason": "x"})
    replacement = returned.json()["replacement_offer_id"]
    assert returned.status_code == 200 and replacement, returned.text
    assert (await client.post(f"/v1/offers/{replacement}/claim", headers=auth(dm))).status_code == 201
    # Any other lead is beyond its one a day.
    (other_offer,) = await offer_lead_to(app, await submit_lead(client, category="plumbing"), [dm_id])
    refused = await client.post(f"/v1/offers/{other_offer}/claim", headers=auth(dm))
    assert refused.status_code == 409 and "cap" in refused.json()["detail"]


async def test_a_return_does_not_hasten_the_next_wave(app, client, db, settings):
    """A business of the first wave that returns the lead at once does not hand it to the next wave early: the
    next wave still waits for the category's delay after the first."""
    makers = [await register(client, "deal_maker", profile={"categories": ["plumbing"]}) for _ in range(4)]
    await app.state.ranking_sync.settled()
    lead_id = await submit_lead(client, category="plumbing")
    await app.state.jobs.run_due()
    first_wave = [(b, t) for b, t in makers if await offers_of(client, t)]
    assert len(first_wave) == settings.categories["plumbing"].wave_size == 3
    (_, waiting), *_ = [(b, t) for b, t in makers if (b, t) not in first_wave]
    holder = first_wave[0][1]
    offer_id = (await offers_of(client, holder))[0]["offer_id"]
    exposure_id = (await client.post(f"/v1/offers/{offer_id}/claim", headers=auth(holder))).json()["id"]
    clock.advance(timedelta(minutes=1))
    returned = await client.post(f"/v1/exposures/{exposure_id}/return", headers=auth(holder), json={"reason": "x"})
    assert returned.status_code == 200, returned.text
    await app.state.jobs.run_due()
    assert await offers_of(client, waiting) == []  # the lead waits for its next wave
    due = await db.scalar(select(Lead.next_wave_at).where(Lead.id == lead_id))
    assert due is not None  # recorded, for the sweep of waves whose job was lost
    clock.advance(timedelta(seconds=settings.categories["plumbing"].wave_delay_seconds))
    await app.state.jobs.run_due()
    assert [o["lead_id"] for o in await offers_of(client, waiting)] == [lead_id]


async def test_a_return_with_nothing_to_replace_it_gets_the_next_lead_that_fits(app, client, db, settings):
    """No open lead fits when the deal maker returns one: it is owed a replacement, which the first wave of the
    next lead that fits offers it (beside the ranked wave, whoever the ranking picks); a lead that does not fit
    leaves it owed, and a replacement is offered once."""
    returner_id, returner = await register(client, "deal_maker", profile={"categories": ["plumbing"]})
    lead_id, exposure_id = await claimed_deal(app, client, returner_id, returner, category="plumbing")
    returned = await client.post(f"/v1/exposures/{exposure_id}/return", headers=auth(returner), json={"reason": "x"})
    assert returned.status_code == 200, returned.text
    assert returned.json()["replacement_offer_id"] is None and returned.json()["replacement_owed"] is True

    async def replacement() -> dict:
        """What the returned exposure shows of its replacement, the same in the list as on its own."""
        shown = (await client.get(f"/v1/exposures/{exposure_id}", headers=auth(returner))).json()["replacement"]
        listed = (await client.get("/v1/exposures", headers=auth(returner))).json()["items"]
        assert [e["replacement"] for e in listed if e["id"] == exposure_id] == [shown]
        return shown

    shown = await replacement()
    assert shown["status"] == "owed" and shown["offer_id"] is None
    returned_at = (await client.get(f"/v1/exposures/{exposure_id}", headers=auth(returner))).json()["returned_at"]
    window = timedelta(days=settings.windows.replacement_days)
    assert datetime.fromisoformat(shown["owed_until"]) == datetime.fromisoformat(returned_at) + window
    # Others who would take the whole first wave of the next plumbing lead.
    for _ in range(settings.categories["plumbing"].wave_size):
        await register(client, "deal_maker", profile={"categories": ["plumbing"]})
    await app.state.ranking_sync.settled()

    await submit_lead(client, category="legal")  # not its category: still owed
    await app.state.jobs.run_due()
    assert [o["lead_id"] for o in await offers_of(client, returner) if o["lead_id"] != lead_id] == []
    fitting = await submit_lead(client, category="plumbing")
    await app.state.jobs.run_due()
    (offer,) = [o for o in await offers_of(client, returner) if o["lead_id"] == fitting]
    assert offer["replaces_exposure_id"] == exposure_id
    assert await db.count(Offer, Offer.lead_id == fitting) == settings.categories["plumbing"].wave_size + 1
    owed = select(Exposure.replacement_owed_since).where(Exposure.id == exposure_id)
    assert await db.scalar(owed) is not None  # owed until it takes a replacement
    assert (await replacement())["status"] == "offered" and (await replacement())["offer_id"] == offer["offer_id"]
    claimed = await client.post(f"/v1/offers/{offer['offer_id']}/claim", headers=auth(returner))
    assert claimed.status_code == 201, claimed.text
    assert await db.scalar(owed) is None
    assert (await replacement())["status"] == "claimed" and (await replacement())["offer_id"] == offer["offer_id"]
    assert claimed.json()["replacement"] is None  # the deal it took replaces nothing of its own
    # Settled: the next plumbing lead goes by the ranking alone.
    later = await submit_lead(client, category="plumbing")
    await app.state.jobs.run_due()
    assert not any(o.replaces_exposure_id for o in await db.scalars(select(Offer).where(Offer.lead_id == later)))


async def test_a_returned_deal_shows_its_replacement_lapsed_once_the_window_passed(app, client, db, settings):
    """A replacement owed and never offered lapses after windows.replacement_days: the exposure says so (before the
    sweep clears the debt and after), not silently nothing. A lead buyer's return owes no replacement (a refund)."""
    from workers.actors import expire_lapsed

    returner_id, returner = await register(client, "deal_maker", profile={"categories": ["plumbing"]})
    buyer_id, buyer = await register(client, "lead_buyer", profile={"categories": ["legal"]})
    _, exposure_id = await claimed_deal(app, client, returner_id, returner, category="plumbing")
    _, bought_id = await claimed_deal(app, client, buyer_id, buyer, category="legal")  # no plumbing lead to offer
    for token, held in ((returner, exposure_id), (buyer, bought_id)):
        returned = await client.post(f"/v1/exposures/{held}/return", headers=auth(token), json={"reason": "x"})
        assert returned.status_code == 200, returned.text
    assert (await client.get(f"/v1/exposures/{bought_id}", headers=auth(buyer))).json()["replacement"] is None
    shown = (await client.get(f"/v1/exposures/{exposure_id}", headers=auth(returner))).json()
    assert shown["replacement"]["status"] == "owed"
    clock.advance(timedelta(days=settings.windows.replacement_days, seconds=1))
    owed_until = shown["replacement"]["owed_until"]
    lapsed = {"status": "lapsed", "owed_until": owed_until, "offer_id": None, "forfeited_at": None}
    assert (await client.get(f"/v1/exposures/{exposure_id}", headers=auth(returner))).json()["replacement"] == lapsed
    await expire_lapsed()
    assert await db.scalar(select(Exposure.replacement_owed_since).where(Exposure.id == exposure_id)) is None
    assert (await client.get(f"/v1/exposures/{exposure_id}", headers=auth(returner))).json()["replacement"] == lapsed


async def test_a_wave_offers_only_to_businesses_whose_profile_in_the_database_fits(app, client, db):
    """The ranking core may not have heard yet of a profile changed a moment ago in another process: the wave
    checks the profile in the database, which is the truth, as it marks the businesses offered."""
    moved_id, moved = await register(client, "deal_maker", profile={"categories": ["plumbing"]})
    _, stays = await register(client, "deal_maker", profile={"categories": ["plumbing"]})
    await app.state.ranking_sync.settled()
    async with app.state.sessions() as session:  # as another process would, without this one hearing of it
        gone = (BusinessRegion.business_id == moved_id) & (BusinessRegion.region == "tel-aviv")
        await session.execute(delete(BusinessRegion).where(gone))
        await session.commit()
    lead_id = await submit_lead(client, category="plumbing", region="tel-aviv")
    await app.state.jobs.run_due()
    assert [o["lead_id"] for o in await offers_of(client, stays)] == [lead_id]
    assert await offers_of(client, moved) == []
    assert await db.count(Offer, Offer.lead_id == lead_id, Offer.business_id == moved_id) == 0


async def test_a_replacement_offer_that_closes_unclaimed_leaves_the_replacement_owed(app, client, db, settings):
    """The lead offered as the replacement fills before the deal maker claims it: the deal maker is still owed one,
    and the next lead that fits is offered to it."""
    returner_id, returner = await register(client, "deal_maker", profile={"categories": ["legal"]})
    _, exposure_id = await claimed_deal(app, client, returner_id, returner, category="legal")
    returned = await client.post(f"/v1/exposures/{exposure_id}/return", headers=auth(returner), json={"reason": "x"})
    assert returned.json()["replacement_owed"] is True
    quick = [await register(client, "deal_maker", profile={"categories": ["legal"]}) for _ in range(2)]
    await app.state.ranking_sync.settled()
    first = await submit_lead(client, category="legal")  # two places, both taken by the ranked wave
    await app.state.jobs.run_due()
    (offer,) = [o for o in await offers_of(client, returner) if o["lead_id"] == first]
    for _, token in quick:
        (theirs,) = [o for o in await offers_of(client, token) if o["lead_id"] == first]
        assert (await client.post(f"/v1/offers/{theirs['offer_id']}/claim", headers=auth(token))).status_code == 201
    assert (await client.post(f"/v1/offers/{offer['offer_id']}/claim", headers=auth(returner))).status_code == 409
    second = await submit_lead(client, category="legal")
    await app.state.jobs.run_due()
    (again,) = [o for o in await offers_of(client, returner) if o["lead_id"] == second]
    assert again["replaces_exposure_id"] == exposure_id


async def test_two_first_waves_at_once_offer_two_replacements_owed_not_one_twice(app, client, db):
    """Two deal makers are owed a replacement; two leads that fit both go out at the same moment: each gets one (on
    PostgreSQL the wave that finds the oldest debt locked by the other takes the next)."""
    held = []
    for _ in range(2):
        business_id, token = await register(client, "deal_maker", profile={"categories": ["accounting"]})
        lead_id, exposure_id = await claimed_deal(app, client, business_id, token, category="accounting")
        held.append((token, lead_id, exposure_id))
    async with app.state.sessions() as session:  # their leads closed: no open lead to replace them with now
        closed = {"status": "expired", "expires_at": clock.now()}
        await session.execute(update(Lead).where(Lead.id.in_([h[1] for h in held])).values(**closed))
        await session.commit()
    owed = []
    for token, _, exposure_id in held:
        returned = await client.post(f"/v1/exposures/{exposure_id}/return", headers=auth(token), json={"reason": "x"})
        assert returned.status_code == 200 and returned.json()["replacement_owed"] is True, returned.text
        owed.append(exposure_id)
    await app.state.ranking_sync.settled()
    leads = [await submit_lead(client, category="accounting") for _ in range(2)]
    from workers.actors import send_wave

    await asyncio.gather(*(send_wave(lead_id, 1) for lead_id in leads))
    replacements = await db.scalars(select(Offer.replaces_exposure_id).where(Offer.lead_id.in_(leads)))
    assert sorted(r for r in replacements if r) == sorted(owed)


async def test_a_first_wave_that_read_a_debt_another_wave_just_offered_takes_the_next(app, client, db, monkeypatch):
    """The race the unique open replacement closes: a wave's read of the debts predates another wave's commit (on
    PostgreSQL the row lock it then takes is free), so it reads a debt already offered; its insert is refused, and it
    reads again and offers the next debt, not the same one twice."""
    from marketplace.offers import waves as offer_waves
    from workers.actors import send_wave

    held = []
    for _ in range(2):
        business_id, token = await register(client, "deal_maker", profile={"categories": ["accounting"]})
        lead_id, exposure_id = await claimed_deal(app, client, business_id, token, category="accounting")
        held.append((token, lead_id, exposure_id))
        clock.advance(timedelta(seconds=1))  # the first debt is the older one
    async with app.state.sessions() as session:  # their leads closed: no open lead to replace them with now
        closed = {"status": "expired", "expires_at": clock.now()}
        await session.execute(update(Lead).where(Lead.id.in_([h[1] for h in held])).values(**closed))
        await session.commit()
    for token, _, exposure_id in held:
        returned = await client.post(f"/v1/exposures/{exposure_id}/return", headers=auth(token), json={"reason": "x"})
        assert returned.json()["replacement_owed"] is True, returned.text
    await app.state.ranking_sync.settled()
    first_debt, second_debt = held[0][2], held[1][2]
    taken_lead = await submit_lead(client, category="accounting")
    await app.state.jobs.run_due()  # its first wave offers the older debt
    assert await db.scalar(select(Offer.replaces_exposure_id).where(Offer.lead_id == taken_lead, Offer.wave == 0)) == (
        first_debt
    )
    real = offer_waves.owed_replacement
    first_owed = await db.scalar(select(Exposure.business_id).where(Exposure.id == first_debt))
    reads = []

    async def stale_then_real(*args, **kwargs):
        reads.append(1)
        if len(reads) == 1:  # what a wave that read before that commit saw
            return first_debt, first_owed
        return await real(*args, **kwargs)

    monkeypatch.setattr(offer_waves, "owed_replacement", stale_then_real)
    later = await submit_lead(client, category="accounting")
    await send_wave(later, 1)
    replaces = await db.scalar(select(Offer.replaces_exposure_id).where(Offer.lead_id == later, Offer.wave == 0))
    assert replaces == second_debt and len(reads) == 2
    open_for_first = await db.count(Offer, Offer.replaces_exposure_id == first_debt, Offer.status == "open")
    assert open_for_first == 1


async def test_a_returned_lead_frees_its_place_under_the_caps_for_a_lead_already_offered(app, client, db):
    _, dm = await register(
        client, "deal_maker", profile={"categories": ["plumbing"], "daily_cap": 1, "monthly_cap": 100}
    )
    await app.state.ranking_sync.settled()
    first, second = [await submit_lead(client, category="plumbing") for _ in range(2)]
    await app.state.jobs.run_due()
    offers = {o["lead_id"]: o["offer_id"] for o in await offers_of(client, dm)}
    assert set(offers) == {first, second}  # both offered before it held any
    claimed = await client.post(f"/v1/offers/{offers[first]}/claim", headers=auth(dm))
    # At its cap, the other offer is withdrawn: off its list, and refused as withdrawn, not as over the cap.
    assert await offers_of(client, dm) == []
    refused = await client.post(f"/v1/offers/{offers[second]}/claim", headers=auth(dm))
    assert refused.status_code == 409 and "withdrawn" in refused.json()["detail"]
    # Why, as the offer recorded it (it was every possible cause at once).
    assert "reached its daily or monthly cap" in refused.json()["detail"], refused.text
    returned = await client.post(f"/v1/exposures/{claimed.json()['id']}/return", headers=auth(dm), json={"reason": "x"})
    # The lead it gave back no longer counts: the other lead, its offer withdrawn, is offered again as the replacement.
    assert returned.status_code == 200, returned.text
    replacement_id = returned.json()["replacement_offer_id"]  # made again under a new id
    assert [o["lead_id"] for o in await offers_of(client, dm) if o["offer_id"] == replacement_id] == [second]
    assert (await client.post(f"/v1/offers/{replacement_id}/claim", headers=auth(dm))).status_code == 201
    await app.state.ranking_sync.settled()
    # And the ranking core counts it as the database does: at its cap again, a new lead is not offered to it.
    third = await submit_lead(client, category="plumbing")
    await app.state.jobs.run_due()
    assert third not in {o["lead_id"] for o in await offers_of(client, dm)}


async def test_a_returned_lead_makes_its_business_a_candidate_again_today(app, client, db):
    _, dm = await register(
        client, "deal_maker", profile={"categories": ["plumbing"], "daily_cap": 1, "monthly_cap": 100}
    )
    await app.state.ranking_sync.settled()
    first = await submit_lead(client, category="plumbing")
    await app.state.jobs.run_due()
    (offer,) = await offers_of(client, dm)
    claimed = await client.post(f"/v1/offers/{offer['offer_id']}/claim", headers=auth(dm))
    await app.state.ranking_sync.settled()
    returned = await client.post(f"/v1/exposures/{claimed.json()['id']}/return", headers=auth(dm), json={"reason": "x"})
    assert returned.status_code == 200 and returned.json()["replacement_offer_id"] is None
    await app.state.ranking_sync.settled()
    later = await submit_lead(client, category="plumbing")
    await app.state.jobs.run_due()
    assert later in {o["lead_id"] for o in await offers_of(client, dm)}, first


async def test_a_replacement_for_an_older_lead_does_not_lift_todays_cap(app, client, db, settings):
    dm_id, dm = await register(client, "deal_maker", profile={"daily_cap": 1, "monthly_cap": 100})
    (yesterdays,) = await offer_lead_to(app, await submit_lead(client, category="plumbing"), [dm_id])
    older = (await client.post(f"/v1/offers/{yesterdays}/claim", headers=auth(dm))).json()["id"]
    clock.advance(timedelta(days=1))
    (todays,) = await offer_lead_to(app, await submit_lead(client, category="plumbing"), [dm_id])
    assert (await client.post(f"/v1/offers/{todays}/claim", headers=auth(dm))).status_code == 201
    await submit_lead(client, category="plumbing")  # an open lead to replace the older one with
    returned = await client.post(f"/v1/exposures/{older}/return", headers=auth(dm), json={"reason": "x"})
    replacement = returned.json()["replacement_offer_id"]
    assert returned.status_code == 200 and replacement, returned.text
    refused = await client.post(f"/v1/offers/{replacement}/claim", headers=auth(dm))
    assert refused.status_code == 409 and "daily cap" in refused.json()["detail"]  # yesterday's place, not today's


async def test_a_lead_whose_offer_was_withdrawn_may_be_the_replacement(app, client, db):
    dm_id, dm = await register(client, "deal_maker")
    first, second = [await submit_lead(client, category="plumbing") for _ in range(2)]
    (offer_id,) = await offer_lead_to(app, first, [dm_id])
    (withdrawn,) = await offer_lead_to(app, second, [dm_id])
    async with app.state.uow() as uow:  # withdrawn, as when its lead filled before a return freed a place
        await uow.session.execute(update(Offer).where(Offer.id == withdrawn).values(status="closed"))
    claimed = await client.post(f"/v1/offers/{offer_id}/claim", headers=auth(dm))
    returned = await client.post(f"/v1/exposures/{claimed.json()['id']}/return", headers=auth(dm), json={"reason": "x"})
    replacement_id = returned.json()["replacement_offer_id"]  # the same row, open again under a new id
    assert replacement_id != withdrawn and await db.count(Offer, Offer.lead_id == second) == 1
    (offer,) = [o for o in await offers_of(client, dm) if o["offer_id"] == replacement_id]
    assert offer["lead_id"] == second
    made_again = await db.scalar(select(Offer).where(Offer.id == replacement_id))
    assert made_again.replaces_exposure_id == claimed.json()["id"]
    assert (await client.post(f"/v1/offers/{replacement_id}/claim", headers=auth(dm))).status_code == 201


async def test_a_next_wave_whose_job_was_lost_is_sent_again(app, client, db, settings):
    from marketplace.offers.waves import waves_to_send_again
    from workers.actors import resend_lost_waves

    # A fixed mid-morning: run on the wall clock in the minutes before the local midnight, the advances below crossed
    # into a new local day, whose caps let another wave go out than the one this test counts.
    clock.freeze(datetime(2026, 3, 10, 8, 0, tzinfo=UTC))
    for _ in range(4):
        await register(client, "lead_buyer", profile={"categories": ["plumbing"]})
    await app.state.ranking_sync.settled()
    lead_id = await submit_lead(client, category="plumbing")
    await app.state.jobs.run_due()
    assert await db.count(Offer, Offer.lead_id == lead_id) == 3
    due = await db.scalar(select(Lead.next_wave_at).where(Lead.id == lead_id))
    delay = timedelta(seconds=settings.categories["plumbing"].wave_delay_seconds)
    assert due is not None
    assert abs(due.replace(tzinfo=clock.now().tzinfo) - (clock.now() + delay)) < timedelta(seconds=5)

    # The process that held the next wave's job is gone (jobs in memory): a new one schedules it again at its time.
    app.state.jobs._heap.clear()
    async with app.state.uow() as uow:
        (again,) = await waves_to_send_again(uow.session, overdue_by=None)
    assert again[:2] == (lead_id, 2) and 0 < again[2] <= delay.total_seconds()
    # Or the periodic sweep sends it once it is a minute late.
    clock.advance(delay + timedelta(seconds=30))
    await resend_lost_waves()
    await app.state.jobs.run_due()
    assert await db.count(Offer, Offer.lead_id == lead_id) == 3
    clock.advance(timedelta(minutes=1))
    await resend_lost_waves()
    await app.state.jobs.run_due()
    assert sorted(await db.scalars(select(Offer.wave).where(Offer.lead_id == lead_id))) == [1, 1, 1, 2]
    # Nobody is left: the next wave is due when the local day starts (caps free businesses then), and the sweep
    # sends nothing more before.
    retry = await db.scalar(select(Lead.next_wave_at).where(Lead.id == lead_id))
    assert retry.replace(tzinfo=UTC) == next_day_start(clock.now(), settings.jurisdiction.zone)
    clock.advance(timedelta(minutes=5))
    await resend_lost_waves()
    await app.state.jobs.run_due()
    assert await db.scalar(select(Lead.waves_sent).where(Lead.id == lead_id)) == 2


async def test_wave_message_delivered_twice_changes_nothing(app, client, db):
    for _ in range(2):
        await register(client, "lead_buyer")
    lead_id = await submit_lead(client)
    from workers.actors import send_wave

    await send_wave(lead_id, 1)
    await send_wave(lead_id, 1)
    assert await db.count(Offer, Offer.lead_id == lead_id) == 2


async def test_a_returned_place_does_not_go_back_to_the_market(app, client, db, settings):
    # A lead is exposed to at most max_exposures businesses: one that returned it has seen the contact all the same,
    # so its place is offered to nobody else (the customer is called by no more, and a claim and a return cannot hand
    # the contact on), though the return refunds it and no longer counts against its caps.
    assert settings.categories["plumbing"].max_exposures == settings.categories["plumbing"].wave_size == 3
    buyers = [await register(client, "lead_buyer", profile={"categories": ["plumbing"]}) for _ in range(3)]
    await app.state.ranking_sync.settled()
    lead_id = await submit_lead(client, category="plumbing")
    await app.state.jobs.run_due()
    exposures = []
    for _, token in buyers:
        (offer,) = [o for o in await offers_of(client, token) if o["lead_id"] == lead_id]
        claimed = await client.post(f"/v1/offers/{offer['offer_id']}/claim", headers=auth(token))
        assert claimed.status_code == 201, claimed.text
        exposures.append(claimed.json()["id"])
    assert (await db.scalar(select(Lead).where(Lead.id == lead_id))).status == "full"

    _, newcomer = await register(client, "lead_buyer", profile={"categories": ["plumbing"]})
    await app.state.ranking_sync.settled()
    returned = await client.post(
        f"/v1/exposures/{exposures[0]}/return", headers=auth(buyers[0][1]), json={"reason": "not my area"}
    )
    assert returned.status_code == 200 and returned.json()["refund"] is not None, returned.text
    for _ in range(3):
        clock.advance(timedelta(seconds=settings.categories["plumbing"].wave_delay_seconds))
        await app.state.jobs.run_due()
    assert [o for o in await offers_of(client, newcomer) if o["lead_id"] == lead_id] == []
    lead = await db.scalar(select(Lead).where(Lead.id == lead_id))
    assert (lead.status, lead.exposure_count) == ("full", 3)
    assert await db.count(Offer, Offer.lead_id == lead_id) == 3


async def test_a_business_that_becomes_a_candidate_gets_open_leads_whose_waves_had_stopped(app, client, db):
    lead_id = await submit_lead(client, category="legal", region="haifa")
    await app.state.jobs.run_due()  # its first wave finds nobody: the waves stop
    assert (await db.scalar(select(Lead).where(Lead.id == lead_id))).waves_sent == 1
    assert await db.count(Offer, Offer.lead_id == lead_id) == 0

    # A sign-up that fits it lets its waves go on.
    newcomer_id, newcomer = await register(
        client, "lead_buyer", profile={"categories": ["legal"], "regions": ["haifa"]}
    )
    await app.state.jobs.run_due()
    (offer,) = [o for o in await offers_of(client, newcomer) if o["lead_id"] == lead_id]
    assert offer["wave"] == 2

    # So does a profile widened to fit another such lead; one that does not fit is left alone.
    other_lead = await submit_lead(client, category="renovation", region="haifa")
    unfit_lead = await submit_lead(client, category="accounting", region="haifa")
    await app.state.jobs.run_due()
    widened = await client.patch(
        "/v1/businesses/me", headers=auth(newcomer), json={"profile": {"categories": ["legal", "renovation"]}}
    )
    assert widened.status_code == 200, widened.text
    await app.state.jobs.run_due()
    offered = {o["lead_id"] for o in await offers_of(client, newcomer)}
    assert other_lead in offered and unfit_lead not in offered
    assert await db.count(Offer, Offer.business_id == newcomer_id) == 2


async def test_an_offer_for_a_lead_the_profile_no_longer_fits_is_withdrawn(app, client, db):
    _, token = await register(client, "lead_buyer", profile={"categories": ["plumbing", "legal"]})
    await app.state.ranking_sync.settled()
    kept, dropped = await submit_lead(client, category="plumbing"), await submit_lead(client, category="legal")
    await app.state.jobs.run_due()
    offers = {o["lead_id"]: o["offer_id"] for o in await offers_of(client, token)}
    assert {kept, dropped} <= set(offers)
    narrowed = await client.patch(
        "/v1/businesses/me", headers=auth(token), json={"profile": {"categories": ["plumbing"]}}
    )
    assert narrowed.status_code == 200, narrowed.text
    assert {o["lead_id"] for o in await offers_of(client, token)} == {kept}
    refused = await client.post(f"/v1/offers/{offers[dropped]}/claim", headers=auth(token))
    assert refused.status_code == 409, refused.text
    assert (await client.post(f"/v1/offers/{offers[kept]}/claim", headers=auth(token))).status_code == 201


async def test_a_business_let_back_in_is_offered_again_the_leads_its_block_withdrew(app, client, db):
    business_id, token = await register(client, "lead_buyer", profile={"categories": ["legal"], "regions": ["haifa"]})
    await app.state.ranking_sync.settled()
    lead_id = await submit_lead(client, category="legal", region="haifa")
    await app.state.jobs.run_due()
    (first,) = [o for o in await offers_of(client, token) if o["lead_id"] == lead_id]
    op = await operator_token(app)
    blocked = await client.post(f"/v1/businesses/{business_id}/block", headers=auth(op), json={"unreliable": False})
    assert blocked.status_code == 200
    back = {"status": "active", "reason": "blocked by mistake"}
    assert (await client.post(f"/v1/businesses/{business_id}/status", headers=auth(op), json=back)).status_code == 200
    await app.state.jobs.run_due()
    assert await offers_of(client, token) == []  # not before the wave delay, as any next wave
    clock.advance(timedelta(seconds=app.state.settings.categories["legal"].wave_delay_seconds + 1))
    await app.state.jobs.run_due()
    (again,) = [o for o in await offers_of(client, token) if o["lead_id"] == lead_id]
    # The withdrawn offer made again, under a new id (the list is newest first by id); the old id is no offer now.
    assert again["offer_id"] != first["offer_id"] and again["wave"] == 2
    gone = await client.post(f"/v1/offers/{first['offer_id']}/claim", headers=auth(token))
    assert gone.status_code == 404, gone.text
    assert (await client.post(f"/v1/offers/{again['offer_id']}/claim", headers=auth(token))).status_code == 201
    assert await db.count(Offer, Offer.lead_id == lead_id) == 1


async def test_a_newcomer_is_offered_a_lead_whose_first_offers_are_still_open_after_the_wave_delay(app, client, db):
    _, first = await register(client, "lead_buyer", profile={"categories": ["legal"], "regions": ["haifa"]})
    await app.state.ranking_sync.settled()
    lead_id = await submit_lead(client, category="legal", region="haifa")
    await app.state.jobs.run_due()
    assert [o["lead_id"] for o in await offers_of(client, first)] == [lead_id]  # still open, unclaimed
    _, newcomer = await register(client, "lead_buyer", profile={"categories": ["legal"], "regions": ["haifa"]})
    await app.state.jobs.run_due()
    # A sign-up cannot hurry the lead past the business ranked first: its wave comes after the wave delay.
    assert [o for o in await offers_of(client, newcomer) if o["lead_id"] == lead_id] == []
    clock.advance(timedelta(seconds=app.state.settings.categories["legal"].wave_delay_seconds + 1))
    await app.state.jobs.run_due()
    (offer,) = [o for o in await offers_of(client, newcomer) if o["lead_id"] == lead_id]
    assert offer["wave"] == 2
    assert await db.count(Offer, Offer.lead_id == lead_id) == 2


async def test_an_offer_claimed_after_its_time_is_refused_as_expired(app, client, db):
    buyer_id, buyer = await register(client, "lead_buyer", profile={"categories": ["plumbing"]})
    (offer,) = await offer_lead_to(app, await submit_lead(client, category="plumbing"), [buyer_id])
    clock.advance(timedelta(hours=80))  # past the offer's time and its lead's
    refused = await client.post(f"/v1/offers/{offer}/claim", headers=auth(buyer), json={"exclusive": False})
    assert refused.status_code == 409 and refused.json()["detail"] == "this offer has expired", refused.text


async def test_a_deal_reported_won_takes_its_lead_off_the_market(app, client, db):
    """The customer hired the deal maker: its competitors' offers are withdrawn, nobody else buys the contact, and the
    lead goes out in no more waves. Those already holding it keep what they hold."""
    dm_id, dm = await register(client, "deal_maker", profile={"categories": ["plumbing"]})
    holder_id, holder = await register(client, "lead_buyer", profile={"categories": ["plumbing"]})
    late_id, late = await register(client, "lead_buyer", profile={"categories": ["plumbing"]})
    lead_id = await submit_lead(client, category="plumbing")
    dm_offer, holder_offer, late_offer = await offer_lead_to(app, lead_id, [dm_id, holder_id, late_id])
    held = await client.post(f"/v1/offers/{holder_offer}/claim", headers=auth(holder), json={"exclusive": False})
    assert held.status_code == 201, held.text
    exposure = (await client.post(f"/v1/offers/{dm_offer}/claim", headers=auth(dm))).json()
    won = await client.post(f"/v1/exposures/{exposure['id']}/status", headers=auth(dm), json={"status": "won"})
    assert won.status_code == 200, won.text
    # Closed, as the deal maker and the operator read it: its customer was served, not "expired" as if nobody had
    # taken it in time.
    assert won.json()["lead"]["status"] == "closed"
    operator = await operator_token(app)
    assert (await client.get(f"/v1/leads/{lead_id}", headers=auth(operator))).json()["status"] == "closed"

    assert await offers_of(client, late) == []
    refused = await client.post(f"/v1/offers/{late_offer}/claim", headers=auth(late), json={"exclusive": False})
    assert refused.status_code == 409, refused.text
    # Said as it is: withdrawn as the customer was served, not "expired" (the offer's own time had not run out).
    assert "left the market" in refused.json()["detail"] and "expired" not in refused.json()["detail"]
    assert await db.count(Exposure, Exposure.lead_id == lead_id) == 2
    lead = await db.scalar(select(Lead).where(Lead.id == lead_id))
    assert lead.expires_at <= clock.now()
    # The buyer that held it before keeps the contact it paid for.
    kept = await client.get(f"/v1/exposures/{held.json()['id']}", headers=auth(holder))
    assert kept.status_code == 200 and kept.json()["contact"] is not None
    # Saying won again (or moving on to invoiced) changes nothing more.
    invoiced = await client.post(
        f"/v1/exposures/{exposure['id']}/status", headers=auth(dm),
        json={"status": "invoiced", "turnover": {"amount_minor": 100_000, "currency": "ILS"}},
    )  # fmt: skip
    assert invoiced.status_code == 200, invoiced.text


async def test_a_claim_of_a_full_lead_then_won_says_it_left_the_market_not_that_it_is_full(app, client, db):
    """A lead that filled (its other offers withdrawn) and was then won by one of its deal makers has left the market:
    a late claim of a withdrawn offer was told the lead is full, which it was before the customer was served."""
    (dm_id, dm), (other_id, other) = [await register(client, "deal_maker") for _ in range(2)]
    late_id, late = await register(client, "lead_buyer")
    lead_id = await submit_lead(client, category="legal")  # two places
    dm_offer, other_offer, late_offer = await offer_lead_to(app, lead_id, [dm_id, other_id, late_id])
    exposure = (await client.post(f"/v1/offers/{dm_offer}/claim", headers=auth(dm))).json()
    assert (await client.post(f"/v1/offers/{other_offer}/claim", headers=auth(other))).status_code == 201
    assert await db.scalar(select(Lead.status).where(Lead.id == lead_id)) == "full"
    won = await client.post(f"/v1/exposures/{exposure['id']}/status", headers=auth(dm), json={"status": "won"})
    assert won.status_code == 200 and won.json()["lead"]["status"] == "closed", won.text
    refused = await client.post(f"/v1/offers/{late_offer}/claim", headers=auth(late), json={"exclusive": False})
    assert refused.status_code == 409, refused.text
    assert "left the market" in refused.json()["detail"] and "full" not in refused.json()["detail"], refused.text


async def test_a_full_lead_whose_deal_is_won_is_closed_and_stays_closed(app, client, db):
    """A full lead says closed too once its customer hired a business (it stayed `full`, its expiry brought forward,
    so nothing told it from a lead whose places were taken and that is still on the market); neither the expiry sweep
    nor the release of a blocked business's open deal on it brings it back."""
    from workers.actors import expire_lapsed

    dms = [await register(client, "deal_maker", profile={"categories": ["plumbing"]}) for _ in range(3)]
    lead_id = await submit_lead(client, category="plumbing")
    offers = await offer_lead_to(app, lead_id, [business_id for business_id, _ in dms])
    exposures = []
    for (_, token), offer in zip(dms, offers, strict=True):
        claimed = await client.post(f"/v1/offers/{offer}/claim", headers=auth(token))
        assert claimed.status_code == 201, claimed.text
        exposures.append(claimed.json()["id"])
    assert await db.scalar(select(Lead.status).where(Lead.id == lead_id)) == "full"

    won = await client.post(f"/v1/exposures/{exposures[0]}/status", headers=auth(dms[0][1]), json={"status": "won"})
    assert won.status_code == 200 and won.json()["lead"]["status"] == "closed", won.text
    operator = await operator_token(app)
    blocked = await client.post(f"/v1/businesses/{dms[1][0]}/block", headers=auth(operator), json={"reason": "x"})
    assert blocked.status_code == 200, blocked.text
    clock.advance(timedelta(hours=app.state.settings.windows.lead_ttl_hours + 1))
    await expire_lapsed()
    lead = await db.scalar(select(Lead).where(Lead.id == lead_id))
    assert (lead.status, lead.exposure_count) == ("closed", 3)
    # The blocked business's open deal stays as it was: its lead was not given back to the market.
    assert await db.scalar(select(Exposure.status).where(Exposure.id == exposures[1])) == "new"


async def _sold_and_offered(app, client, seller, *business_ids):
    sold = await client.post("/v1/businesses/me/leads", headers=auth(seller), json=lead_body(category="plumbing"))
    assert sold.status_code == 201, sold.text
    return sold.json()["id"], await offer_lead_to(app, sold.json()["id"], list(business_ids))


async def test_an_offer_of_a_blocked_sellers_lead_is_refused_saying_so(app, client, db):
    """A block takes the leads the business sold off the market (offers.closing.withdraw_sold_leads): a claim of one's
    offer is refused for that, not for a hire that never happened (nor as expired)."""
    op = await operator_token(app)
    seller_id, seller = await register(client, "lead_buyer", profile={"categories": ["renovation"]})
    late_id, late = await register(client, "lead_buyer", profile={"categories": ["plumbing"]})
    _, (offer,) = await _sold_and_offered(app, client, seller, late_id)
    blocked = await client.post(f"/v1/businesses/{seller_id}/block", headers=auth(op), json={"reason": "fraud"})
    assert blocked.status_code == 200, blocked.text

    refused = await client.post(f"/v1/offers/{offer}/claim", headers=auth(late), json={"exclusive": False})
    assert refused.status_code == 409, refused.text
    detail = refused.json()["detail"]
    assert "taken off the market" in detail and "sold it was blocked" in detail, detail
    assert "hired" not in detail and "expired" not in detail


async def test_a_hired_customers_lead_is_said_hired_though_its_seller_is_blocked_later(app, client, db):
    """The customer hired first (a deal maker's won deal took the lead off the market); its seller's block later took
    nothing more off: a claim of another offer says the customer hired."""
    op = await operator_token(app)
    seller_id, seller = await register(client, "lead_buyer", profile={"categories": ["renovation"]})
    dm_id, dm = await register(client, "deal_maker", profile={"categories": ["plumbing"]})
    late_id, late = await register(client, "lead_buyer", profile={"categories": ["plumbing"]})
    _, (dm_offer, late_offer) = await _sold_and_offered(app, client, seller, dm_id, late_id)
    exposure = (await client.post(f"/v1/offers/{dm_offer}/claim", headers=auth(dm))).json()
    won = await client.post(f"/v1/exposures/{exposure['id']}/status", headers=auth(dm), json={"status": "won"})
    assert won.status_code == 200, won.text
    blocked = await client.post(f"/v1/businesses/{seller_id}/block", headers=auth(op), json={"reason": "fraud"})
    assert blocked.status_code == 200, blocked.text

    refused = await client.post(f"/v1/offers/{late_offer}/claim", headers=auth(late), json={"exclusive": False})
    assert refused.status_code == 409, refused.text
    assert "hired a business" in refused.json()["detail"] and "blocked" not in refused.json()["detail"]
