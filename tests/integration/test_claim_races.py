"""Races the database must decide: many buyers on one exclusive lead, a limit of 3, repeated keys, upgrades, a return
and its customer's answer that it hired the business."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from marketplace.clock import clock
from marketplace.db.models import Exposure, Lead, Offer, Survey
from tests.factories import auth, lead_body, offer_lead_to, offers_of, operator_token, register, submit_lead
from tests.integration.fraud_market import answer, claimed_deal, hired, report, survey_token


async def _buyers(client, n):
    return [await register(client, "lead_buyer") for _ in range(n)]


async def test_fifty_buyers_race_for_one_exclusive_lead(app, client, db):
    buyers = await _buyers(client, 50)
    lead_id = await submit_lead(client)
    offers = await offer_lead_to(app, lead_id, [b for b, _ in buyers])
    responses = await asyncio.gather(
        *(
            client.post(f"/v1/offers/{o}/claim", headers=auth(t), json={"exclusive": True})
            for o, (_, t) in zip(offers, buyers, strict=True)
        )
    )
    assert Counter(r.status_code for r in responses) == {201: 1, 409: 49}
    assert await db.count(Exposure, Exposure.lead_id == lead_id) == 1
    lead = await db.scalar(select(Lead).where(Lead.id == lead_id))
    assert lead.is_exclusive and lead.exposure_count == 1 and lead.status == "full"


async def test_twenty_claims_on_a_lead_limited_to_three(app, client, db, settings):
    assert settings.categories["plumbing"].max_exposures == 3
    buyers = await _buyers(client, 20)
    lead_id = await submit_lead(client, category="plumbing")
    offers = await offer_lead_to(app, lead_id, [b for b, _ in buyers])
    responses = await asyncio.gather(
        *(
            client.post(f"/v1/offers/{o}/claim", headers=auth(t), json={"exclusive": False})
            for o, (_, t) in zip(offers, buyers, strict=True)
        )
    )
    assert Counter(r.status_code for r in responses) == {201: 3, 409: 17}
    assert await db.count(Exposure, Exposure.lead_id == lead_id) == 3
    assert (await db.scalar(select(Lead).where(Lead.id == lead_id))).exposure_count == 3


async def test_same_idempotency_key_ten_times_at_once_makes_one_exposure(app, client, db):
    (business_id, token), *_ = await _buyers(client, 1)
    lead_id = await submit_lead(client)
    (offer_id,) = await offer_lead_to(app, lead_id, [business_id])
    headers = {**auth(token), "Idempotency-Key": "claim-123"}
    responses = await asyncio.gather(
        *(client.post(f"/v1/offers/{offer_id}/claim", headers=headers, json={"exclusive": False}) for _ in range(10))
    )
    assert [r.status_code for r in responses] == [201] * 10, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert await db.count(Exposure, Exposure.lead_id == lead_id) == 1
    other_body = await client.post(f"/v1/offers/{offer_id}/claim", headers=headers, json={"exclusive": True})
    assert other_body.status_code == 422
    assert other_body.json()["errors"][0]["field"] == "Idempotency-Key"


async def test_upgrade_to_exclusive_races_a_competitors_claim(app, client, db):
    for _ in range(5):
        (holder_id, holder), (rival_id, rival) = await _buyers(client, 2)
        lead_id = await submit_lead(client)
        holder_offer, rival_offer = await offer_lead_to(app, lead_id, [holder_id, rival_id])
        first = await client.post(f"/v1/offers/{holder_offer}/claim", headers=auth(holder))
        assert first.status_code == 201
        upgrade, claim = await asyncio.gather(
            client.post(f"/v1/exposures/{first.json()['id']}/exclusive", headers=auth(holder)),
            client.post(f"/v1/offers/{rival_offer}/claim", headers=auth(rival)),
        )
        assert sorted([upgrade.status_code, claim.status_code]) in ([200, 409], [201, 409])
        lead = await db.scalar(select(Lead).where(Lead.id == lead_id))
        if upgrade.status_code == 200:
            assert lead.is_exclusive and lead.exposure_count == 1
            assert upgrade.json()["kind"] == "exclusive"
            assert upgrade.json()["price"]["amount_minor"] == 15000  # plumbing's exclusive price
        else:
            assert not lead.is_exclusive and lead.exposure_count == 2


async def test_no_exclusivity_once_a_competitor_has_seen_the_contact_even_if_it_returned_the_lead(app, client, db):
    (holder_id, holder), (rival_id, rival), (late_id, late) = await _buyers(client, 3)
    maker_id, maker = await register(client, "deal_maker")
    lead_id = await submit_lead(client)
    holder_offer, maker_offer, late_offer = await offer_lead_to(app, lead_id, [holder_id, maker_id, late_id])
    held = await client.post(f"/v1/offers/{holder_offer}/claim", headers=auth(holder))
    assigned = await client.post(f"/v1/offers/{maker_offer}/claim", headers=auth(maker))
    assert held.status_code == 201 and assigned.status_code == 201
    returned = await client.post(
        f"/v1/exposures/{assigned.json()['id']}/return", headers=auth(maker), json={"reason": "not my trade"}
    )
    assert returned.status_code == 200, returned.text
    # The deal maker saw the contact: its place still counts (a returned place is not offered again).
    assert (await db.scalar(select(Lead).where(Lead.id == lead_id))).exposure_count == 2

    # The holder is the only one left holding it, but the deal maker saw the contact: exclusivity would be sold for
    # nothing.
    upgrade = await client.post(f"/v1/exposures/{held.json()['id']}/exclusive", headers=auth(holder))
    assert upgrade.status_code == 409, upgrade.text
    assert "seen" in upgrade.json()["detail"]
    assert (await db.scalar(select(Exposure).where(Exposure.id == held.json()["id"]))).kind == "shared"

    # And nobody may buy the lead exclusively any more; a shared claim still may.
    second = await submit_lead(client)
    (rival_offer,) = await offer_lead_to(app, second, [rival_id])
    rival_listed = (await client.get("/v1/offers", headers=auth(rival))).json()["items"]
    assert [o["exclusive_available"] for o in rival_listed if o["offer_id"] == rival_offer] == [True]
    bought = await client.post(f"/v1/offers/{rival_offer}/claim", headers=auth(rival), json={"exclusive": True})
    assert bought.status_code == 201  # a lead nobody has seen: exclusive as before
    listed = {o["offer_id"]: o for o in (await client.get("/v1/offers", headers=auth(late))).json()["items"]}
    assert listed[late_offer]["exclusive_available"] is False  # the list says what the claim would answer
    exclusive = await client.post(f"/v1/offers/{late_offer}/claim", headers=auth(late), json={"exclusive": True})
    assert exclusive.status_code == 409, exclusive.text
    shared = await client.post(f"/v1/offers/{late_offer}/claim", headers=auth(late), json={"exclusive": False})
    assert shared.status_code == 201, shared.text
    lead = await db.scalar(select(Lead).where(Lead.id == lead_id))
    assert not lead.is_exclusive and lead.exposure_count == 3  # the holder, the deal maker who returned it, and late


async def test_no_exclusivity_once_a_competitor_has_seen_the_contact_even_if_a_block_freed_its_place(app, client, db):
    # A block's release gives a blocked deal maker's place back to the market (the lead's place count falls to one):
    # the one holder left still cannot buy the lead exclusively, nor can anyone else, as the deal maker saw the contact.
    (holder_id, holder), (late_id, late) = await _buyers(client, 2)
    maker_id, maker = await register(client, "deal_maker")
    lead_id = await submit_lead(client)
    holder_offer, maker_offer, late_offer = await offer_lead_to(app, lead_id, [holder_id, maker_id, late_id])
    held = await client.post(f"/v1/offers/{holder_offer}/claim", headers=auth(holder))
    assigned = await client.post(f"/v1/offers/{maker_offer}/claim", headers=auth(maker))
    assert held.status_code == 201 and assigned.status_code == 201
    operator = await operator_token(app)
    blocked = await client.post(f"/v1/businesses/{maker_id}/block", headers=auth(operator))
    assert blocked.status_code == 200, blocked.text
    assert (await db.scalar(select(Lead).where(Lead.id == lead_id))).exposure_count == 1

    upgrade = await client.post(f"/v1/exposures/{held.json()['id']}/exclusive", headers=auth(holder))
    assert upgrade.status_code == 409 and "seen" in upgrade.json()["detail"], upgrade.text
    exclusive = await client.post(f"/v1/offers/{late_offer}/claim", headers=auth(late), json={"exclusive": True})
    assert exclusive.status_code == 409, exclusive.text
    lead = await db.scalar(select(Lead).where(Lead.id == lead_id))
    assert not lead.is_exclusive and lead.exposure_count == 1


async def _returned_exclusive_goes_back_on_the_market(app, client, db, *, upgrade: bool) -> None:
    """An exclusive lead its holder returned went on being exclusive and full until it expired: refunded in full, the
    holder kept every competitor out (a tester). It goes back on the market as a shared lead with its remaining places:
    the businesses whose offers were withdrawn as it filled are offered it again, and may claim it shared; nobody may
    buy it exclusively, as the returner saw the contact."""
    buyers = await _buyers(client, 4)
    lead_id = await submit_lead(client)
    await app.state.jobs.run_due()  # the first wave: three of the four (the category's wave size)
    offered = {o.business_id: o.id for o in await db.scalars(select(Offer).where(Offer.lead_id == lead_id))}
    assert len(offered) == 3
    holder_id, holder = next((b, t) for b, t in buyers if b in offered)
    if upgrade:
        held = await client.post(f"/v1/offers/{offered[holder_id]}/claim", headers=auth(holder), json={})
        assert held.status_code == 201, held.text
        made = await client.post(f"/v1/exposures/{held.json()['id']}/exclusive", headers=auth(holder))
        assert made.status_code == 200, made.text
    else:
        claim = {"exclusive": True}
        held = await client.post(f"/v1/offers/{offered[holder_id]}/claim", headers=auth(holder), json=claim)
        assert held.status_code == 201, held.text
    lead = await db.scalar(select(Lead).where(Lead.id == lead_id))
    assert lead.is_exclusive and lead.status == "full"
    others = [(b, t) for b, t in buyers if b != holder_id]
    for _, token in others:  # the others' offers were withdrawn as the lead filled
        assert [o for o in await offers_of(client, token) if o["lead_id"] == lead_id] == []

    returned = await client.post(
        f"/v1/exposures/{held.json()['id']}/return", headers=auth(holder), json={"reason": "not my trade"}
    )
    assert returned.status_code == 200, returned.text
    assert returned.json()["refund"]["amount_minor"] == 15000  # the exclusive price, in full
    lead = await db.scalar(select(Lead).where(Lead.id == lead_id))
    # Shared again, open, its returned place still used (its contact reaches at most max_exposures businesses).
    assert (lead.status, lead.is_exclusive, lead.exposure_count) == ("open", False, 1)
    # An offer withdrawn as the lead filled says so, and that the lead is offered again (it said every other cause of
    # a withdrawal but that one, the lead's state no longer telling: a tester).
    other_id, other = next((b, t) for b, t in others if b in offered)
    old = await client.post(f"/v1/offers/{offered[other_id]}/claim", headers=auth(other), json={})
    assert old.status_code == 409 and "offered again" in old.json()["detail"], old.text

    await app.state.jobs.run_due()  # its next wave, at once: the three others (the wave size)
    listed = []
    for business_id, token in others:
        mine = [o for o in await offers_of(client, token) if o["lead_id"] == lead_id]
        assert len(mine) == 1, (business_id, mine)
        assert mine[0]["exclusive_available"] is False  # the list says what the claim would answer
        listed.append((token, mine[0]["offer_id"]))
    (first, first_offer), (second, second_offer) = listed[:2]
    exclusive = await client.post(f"/v1/offers/{first_offer}/claim", headers=auth(first), json={"exclusive": True})
    assert exclusive.status_code == 409 and "seen" in exclusive.json()["detail"], exclusive.text
    shared = await client.post(f"/v1/offers/{first_offer}/claim", headers=auth(first), json={"exclusive": False})
    assert shared.status_code == 201, shared.text
    assert shared.json()["kind"] == "shared"
    # The one holder now cannot make it exclusive either: the returner saw the contact.
    upgraded = await client.post(f"/v1/exposures/{shared.json()['id']}/exclusive", headers=auth(first))
    assert upgraded.status_code == 409, upgraded.text
    # The last place: the lead fills with the returned place counted (1 returned + 2 claims = max_exposures 3).
    last = await client.post(f"/v1/offers/{second_offer}/claim", headers=auth(second), json={"exclusive": False})
    assert last.status_code == 201, last.text
    lead = await db.scalar(select(Lead).where(Lead.id == lead_id))
    assert (lead.status, lead.is_exclusive, lead.exposure_count) == ("full", False, 3)


async def test_an_exclusive_lead_returned_by_its_buyer_goes_back_on_the_market_shared(app, client, db):
    await _returned_exclusive_goes_back_on_the_market(app, client, db, upgrade=False)


async def test_a_lead_upgraded_to_exclusive_and_returned_goes_back_on_the_market_shared(app, client, db):
    await _returned_exclusive_goes_back_on_the_market(app, client, db, upgrade=True)


async def test_an_exclusive_lead_returned_after_its_time_stays_off_the_market(app, client, db):
    """Only a lead still on the market goes back to it: one past its time is offered to nobody."""
    (holder_id, holder), (other_id, other) = await _buyers(client, 2)
    lead_id = await submit_lead(client)
    holder_offer, _ = await offer_lead_to(app, lead_id, [holder_id, other_id])
    held = await client.post(f"/v1/offers/{holder_offer}/claim", headers=auth(holder), json={"exclusive": True})
    assert held.status_code == 201, held.text
    clock.advance(timedelta(hours=80))  # past lead_ttl_hours (72), within the return window (7 days)
    returned = await client.post(
        f"/v1/exposures/{held.json()['id']}/return", headers=auth(holder), json={"reason": "not my trade"}
    )
    assert returned.status_code == 200, returned.text
    await app.state.jobs.run_due()
    lead = await db.scalar(select(Lead).where(Lead.id == lead_id))
    assert lead.status == "full" and lead.is_exclusive
    assert [o for o in await offers_of(client, other) if o["lead_id"] == lead_id] == []


async def test_a_business_never_claims_beyond_its_daily_cap_even_with_offers_open_at_once(app, client, db):
    buyer_id, buyer = await register(client, "lead_buyer", profile={"daily_cap": 2})
    offers = []
    for _ in range(6):  # offered before it held any: each wave saw it below its cap
        offers += await offer_lead_to(app, await submit_lead(client), [buyer_id])
    responses = await asyncio.gather(
        *(client.post(f"/v1/offers/{o}/claim", headers=auth(buyer), json={"exclusive": False}) for o in offers)
    )
    assert Counter(r.status_code for r in responses) == {201: 2, 409: 4}, [r.text for r in responses]
    # Refused at the cap, or, once a claim reached it, as withdrawn (its other offers could only be refused).
    refusals = [r.json()["detail"] for r in responses if r.status_code == 409]
    assert all("daily cap of 2" in d or "reached its daily or monthly cap" in d for d in refusals), refusals
    assert await offers_of(client, buyer) == []
    assert await db.count(Exposure, Exposure.business_id == buyer_id) == 2
    # The refused claims left nothing: their leads still have their places for others.
    assert sum(lead.exposure_count for lead in await db.scalars(select(Lead))) == 2


async def test_one_customer_submitting_twenty_times_at_once_is_one_lead(client, db):
    body = lead_body(category="plumbing")
    responses = await asyncio.gather(*(client.post("/v1/leads", json=body) for _ in range(20)))
    assert Counter(r.status_code for r in responses) == {201: 1, 200: 19}, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert await db.count(Lead) == 1
    assert (await db.scalar(select(Lead.seen_count))) == 20


async def test_a_claim_whose_offer_is_withdrawn_on_its_way_says_so_not_already_claimed(app, client, db, monkeypatch):
    """The offer was open when the claim read it, and withdrawn (a block, the deal won elsewhere) before the claim
    took it: the refusal says why as things stand, not that someone claimed it."""
    from marketplace.offers import claims as offer_claims

    buyer_id, buyer = await register(client, "lead_buyer")
    (offer_id,) = await offer_lead_to(app, await submit_lead(client), [buyer_id])
    real = offer_claims._check_claimer

    async def withdrawn_meanwhile(session, *args, **kwargs):
        reaches_cap = await real(session, *args, **kwargs)
        await session.execute(update(Offer).where(Offer.id == offer_id).values(status="closed"))
        return reaches_cap

    monkeypatch.setattr(offer_claims, "_check_claimer", withdrawn_meanwhile)
    refused = await client.post(f"/v1/offers/{offer_id}/claim", headers=auth(buyer), json={"exclusive": False})
    assert refused.status_code == 409, refused.text
    assert "withdrawn" in refused.json()["detail"] and "already been claimed" not in refused.json()["detail"]
    assert await db.count(Exposure, Exposure.business_id == buyer_id) == 0


async def test_a_return_racing_the_customers_hired_answer_never_refunds_after_the_hire(app, client, db, monkeypatch):
    """A lead buyer returns a lead (its price refunded) while its customer answers that it hired that very business
    (a deal: no return, test_exposure_edges.py). Either the answer commits first and the return is a 409, or the return
    commits first and the hire is recorded after it (a return then hired, a fraud signal): never a refund made after
    the hire had committed. The return checked for the hire before it took the lead's row, which the answer holds, so
    it refunded once the answer committed; and an answer about a lead off the market (take_off_the_market then locks
    nothing) did not wait for a return at all. Each case is forced once, then both run at once, on and off the
    market."""
    from marketplace.surveys import services as survey_services
    from marketplace.wallet import refunds as wallet_refunds

    operator = await operator_token(app)
    answering, refunding = asyncio.Event(), asyncio.Event()
    pause = {"answer": 0.0, "return": 0.0}
    refunds_after_a_hire: list[str] = []
    take_off, refund = survey_services.take_off_the_market, wallet_refunds.refund_exposure

    async def answer_holding_the_lead(session, lead_id):
        await take_off(session, lead_id)
        answering.set()
        await asyncio.sleep(pause["answer"])

    async def watched_refund(session, settings, exposure):
        refunding.set()
        await asyncio.sleep(pause["return"])
        # What is committed by now (each statement reads it on PostgreSQL; SQLite runs one writer at a time).
        hire = select(Survey.id).where(
            Survey.lead_id == exposure.lead_id, Survey.business_id == exposure.business_id, Survey.hired.is_(True)
        )
        if await session.scalar(hire.limit(1)) is not None:
            refunds_after_a_hire.append(exposure.id)
        return await refund(session, settings, exposure)

    monkeypatch.setattr(survey_services, "take_off_the_market", answer_holding_the_lead)
    monkeypatch.setattr(wallet_refunds, "refund_exposure", watched_refund)

    async def deal(*, off_the_market: bool) -> tuple[str, str, str, str]:
        """A lead buyer's deal reported contacted (still returnable), the survey's token (sent as another holder
        reports its deal lost), and the lead's expiry passed if asked."""
        buyer_id, buyer = await register(client, "lead_buyer")
        witness_id, witness = await register(client, "lead_buyer")
        lead_id, exposure_id = await claimed_deal(app, client, buyer_id, buyer)
        (witness_offer,) = await offer_lead_to(app, lead_id, [witness_id])
        shared = {"exclusive": False}
        witnessed = await client.post(f"/v1/offers/{witness_offer}/claim", headers=auth(witness), json=shared)
        assert witnessed.status_code == 201, witnessed.text
        await report(client, buyer, exposure_id, "contacted")
        await report(client, witness, witnessed.json()["id"], "lost")
        token = await survey_token(client, operator, lead_id)
        if off_the_market:  # past the lead's expiry (72 hours), within the return window (7 days)
            clock.advance(timedelta(days=4))
        return buyer_id, buyer, exposure_id, token

    def return_of(buyer: str, exposure_id: str) -> Any:
        return client.post(f"/v1/exposures/{exposure_id}/return", headers=auth(buyer), json={"reason": "irrelevant"})

    # The answer first, holding the lead's row: the return waits for it, then sees the hire.
    buyer_id, buyer, exposure_id, token = await deal(off_the_market=False)
    pause["answer"], answering = 0.5, asyncio.Event()
    answered = asyncio.create_task(answer(client, token, **hired(buyer_id, 150_000)))
    await answering.wait()
    returned = await return_of(buyer, exposure_id)
    assert (await answered).status_code == 200
    assert returned.status_code == 409 and "hired this business" in returned.json()["detail"], returned.text
    assert await db.scalar(select(Exposure.status).where(Exposure.id == exposure_id)) == "contacted"
    pause["answer"] = 0.0

    # The return first, on a lead off the market: the answer waits for the return to commit.
    buyer_id, buyer, exposure_id, token = await deal(off_the_market=True)
    pause["return"], refunding = 0.5, asyncio.Event()
    returning = asyncio.create_task(return_of(buyer, exposure_id))
    await refunding.wait()
    answered_later = await answer(client, token, **hired(buyer_id, 150_000))
    returned = await returning
    assert returned.status_code == 200 and returned.json()["refund"] is not None, returned.text
    assert answered_later.status_code == 200, answered_later.text
    pause["return"] = 0.0
    assert refunds_after_a_hire == []

    # Both at once, as they come.
    for off_the_market in (False, True) * 4:
        buyer_id, buyer, exposure_id, token = await deal(off_the_market=off_the_market)
        returned, answered_now = await asyncio.gather(
            return_of(buyer, exposure_id), answer(client, token, **hired(buyer_id, 150_000))
        )
        assert answered_now.status_code == 200, answered_now.text
        assert returned.status_code in (200, 409), returned.text
        if returned.status_code == 409:
            assert await db.scalar(select(Exposure.status).where(Exposure.id == exposure_id)) == "contacted"
        assert refunds_after_a_hire == [], off_the_market


@pytest.mark.postgres_only  # SQLite runs one writer at a time: the report would wait for the block to commit anyway
async def test_a_blocks_release_never_reopens_a_lead_another_deal_maker_won_meanwhile(app, client, db, monkeypatch):
    """A block's release read the blocked deal maker's deal on a lead still on the market, and another deal maker's
    `won` on that lead committed before the release gave its place back (the select locked the business's deals, not
    their leads). The release freed the place regardless: the hired customer's lead went back out (open, a wave
    queued, its expiry set after the block's `now`). Now a block locks the leads it may write before its business's
    row (README "Lock order"), and a deciding report locks its lead first too: a `won` sent while the block releases
    waits for the block to commit, then takes the lead off the market. Either order, the hired lead ends closed."""
    from marketplace.businesses import status as account_status
    from marketplace.db.models import FraudRelease

    (maker_id, maker), (winner_id, winner) = [await register(client, "deal_maker") for _ in range(2)]
    lead_id = await submit_lead(client, category="plumbing")
    maker_offer, winner_offer = await offer_lead_to(app, lead_id, [maker_id, winner_id])
    held = await client.post(f"/v1/offers/{maker_offer}/claim", headers=auth(maker), json={"exclusive": False})
    won = await client.post(f"/v1/offers/{winner_offer}/claim", headers=auth(winner), json={"exclusive": False})
    assert held.status_code == 201 and won.status_code == 201
    real = account_status.free_a_place
    reports: list[asyncio.Task[dict[str, Any]]] = []

    async def won_meanwhile(session, lead, now):
        reports.append(asyncio.create_task(report(client, winner, won.json()["id"], "won", turnover=50_000)))
        await asyncio.sleep(0.3)
        assert not reports[0].done()  # it waits for the lead's row, which the block holds
        return await real(session, lead, now)

    monkeypatch.setattr(account_status, "free_a_place", won_meanwhile)
    operator = await operator_token(app)
    blocked = await client.post(f"/v1/businesses/{maker_id}/block", headers=auth(operator))
    assert blocked.status_code == 200, blocked.text
    assert (await asyncio.wait_for(reports[0], 10))["status"] == "won"
    lead = await db.scalar(select(Lead).where(Lead.id == lead_id))
    assert lead.status == "closed"  # the hire took it off the market after the block gave the place back
    assert await db.scalar(select(Exposure.status).where(Exposure.id == held.json()["id"])) == "lost"
    assert await db.count(FraudRelease, FraudRelease.exposure_id == held.json()["id"]) == 1


@pytest.mark.postgres_only  # SQLite runs one writer at a time: the return would wait for the report to commit
async def test_a_return_racing_a_deal_makers_won_on_the_lead_is_refused_never_refunded_beside_it(
    app, client, db, monkeypatch
):
    """A lead buyer returns its lead while a deal maker holding the same lead reports it won (the customer hired
    someone: no return, _HIRED_ANYONE). The report wrote `won` and took the lead's row only later (off the market),
    so a return taking that row in between read no uncommitted win, refunded, and both committed: a refund beside the
    hire. Now the report takes the lead's row before it writes the win: the return, forced into the window after the
    win is written, waits for the report to commit, then sees the hire (a 409)."""
    from marketplace.db.models import LedgerTransaction
    from marketplace.surveys import services as survey_services

    (maker_id, maker), (buyer_id, buyer) = await register(client, "deal_maker"), await register(client, "lead_buyer")
    lead_id = await submit_lead(client, category="plumbing")
    maker_offer, buyer_offer = await offer_lead_to(app, lead_id, [maker_id, buyer_id])
    shared = {"exclusive": False}
    deal = await client.post(f"/v1/offers/{maker_offer}/claim", headers=auth(maker), json=shared)
    bought = await client.post(f"/v1/offers/{buyer_offer}/claim", headers=auth(buyer), json=shared)
    assert deal.status_code == 201 and bought.status_code == 201, (deal.text, bought.text)
    deal_id, bought_id = deal.json()["id"], bought.json()["id"]
    won_written = asyncio.Event()
    real = survey_services.on_deal_reported

    async def won_written_and_held(session, *args, **kwargs):
        # `won` is flushed, not committed: the return runs now, within the report's transaction.
        won_written.set()
        await asyncio.sleep(0.5)
        return await real(session, *args, **kwargs)

    monkeypatch.setattr(survey_services, "on_deal_reported", won_written_and_held)
    winning = asyncio.create_task(
        client.post(
            f"/v1/exposures/{deal_id}/status",
            headers=auth(maker),
            json={"status": "won", "turnover": {"amount_minor": 50_000, "currency": "ILS"}},
        )
    )
    await won_written.wait()
    returned = await client.post(
        f"/v1/exposures/{bought_id}/return", headers=auth(buyer), json={"reason": "irrelevant"}
    )
    won = await winning
    assert won.status_code == 200, won.text
    assert returned.status_code == 409 and "hired a business" in returned.json()["detail"], returned.text
    assert await db.scalar(select(Exposure.status).where(Exposure.id == deal_id)) == "won"
    assert await db.scalar(select(Exposure.status).where(Exposure.id == bought_id)) == "new"
    assert await db.count(LedgerTransaction, LedgerTransaction.idempotency_key == f"refund:{bought_id}") == 0


@pytest.mark.postgres_only  # SQLite runs one writer at a time: the claim would wait for the report to commit
async def test_a_claim_losing_the_lead_to_a_deal_won_at_once_hears_why_as_a_claim_a_moment_later(
    app, client, db, monkeypatch
):
    """A lead buyer's shared claim read its offer open while a deal maker's `won` on the same lead was written and not
    yet committed, then waited for the lead's row and lost it: it was told the vague "this lead is taken: it is full,
    bought exclusively, closed (off the market) or expired", while a claim a moment later hears the lead left the
    market, the customer having hired a business. Now both hear the latter."""
    from marketplace.surveys import services as survey_services

    (maker_id, maker), (buyer_id, buyer) = await register(client, "deal_maker"), await register(client, "lead_buyer")
    lead_id = await submit_lead(client, category="plumbing")
    maker_offer, buyer_offer = await offer_lead_to(app, lead_id, [maker_id, buyer_id])
    deal = await client.post(f"/v1/offers/{maker_offer}/claim", headers=auth(maker), json={"exclusive": False})
    assert deal.status_code == 201, deal.text
    won_written = asyncio.Event()
    real = survey_services.on_deal_reported

    async def won_written_and_held(session, *args, **kwargs):
        won_written.set()  # the lead's row is held by the report until it commits
        await asyncio.sleep(0.5)
        return await real(session, *args, **kwargs)

    monkeypatch.setattr(survey_services, "on_deal_reported", won_written_and_held)
    winning = asyncio.create_task(report(client, maker, deal.json()["id"], "won", turnover=50_000))
    await won_written.wait()
    lost = await client.post(f"/v1/offers/{buyer_offer}/claim", headers=auth(buyer), json={"exclusive": False})
    await winning
    later = await client.post(f"/v1/offers/{buyer_offer}/claim", headers=auth(buyer), json={"exclusive": False})
    assert lost.status_code == later.status_code == 409, (lost.text, later.text)
    assert "hired a business" in later.json()["detail"], later.text
    assert lost.json()["detail"] == later.json()["detail"], (lost.text, later.text)
    assert await db.count(Exposure, Exposure.business_id == buyer_id) == 0


@pytest.mark.postgres_only  # SQLite runs one writer at a time: the second claim would wait for the first to commit
async def test_a_claim_losing_the_last_place_hears_the_lead_is_full(app, client, db, monkeypatch):
    """Two shared claims for a lead's last place: the loser, which read its offer open and waited for the lead's row,
    hears the lead is full, as a claim a moment later does, not the vague "taken" refusal."""
    from marketplace.offers import claims as offer_claims

    buyers = await _buyers(client, 4)
    lead_id = await submit_lead(client, category="plumbing")  # three places
    offers = await offer_lead_to(app, lead_id, [b for b, _ in buyers])
    for offer_id, (_, token) in zip(offers[:2], buyers[:2], strict=True):
        taken = await client.post(f"/v1/offers/{offer_id}/claim", headers=auth(token), json={"exclusive": False})
        assert taken.status_code == 201, taken.text
    (winner_id, winner), (_, loser) = buyers[2:]
    lead_held = asyncio.Event()
    real = offer_claims._check_claimer

    async def holding_the_lead(session, settings, business, now):
        if business.id == winner_id:
            lead_held.set()  # the winner has taken the lead's last place, its row held until it commits
            await asyncio.sleep(0.5)
        return await real(session, settings, business, now)

    monkeypatch.setattr(offer_claims, "_check_claimer", holding_the_lead)
    winning = asyncio.create_task(
        client.post(f"/v1/offers/{offers[2]}/claim", headers=auth(winner), json={"exclusive": False})
    )
    await lead_held.wait()
    lost = await client.post(f"/v1/offers/{offers[3]}/claim", headers=auth(loser), json={"exclusive": False})
    assert (await winning).status_code == 201
    later = await client.post(f"/v1/offers/{offers[3]}/claim", headers=auth(loser), json={"exclusive": False})
    assert lost.status_code == later.status_code == 409, (lost.text, later.text)
    assert "this lead is full" in later.json()["detail"], later.text
    assert lost.json()["detail"] == later.json()["detail"], (lost.text, later.text)
