"""The ranking core moves in place on what this process commits (sign-ups, claims, paid deals, returns),
without reading the database back, and ends where a fresh read of the database would put it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from marketplace.clock import (
    clock,
    utcnow,
)
from marketplace.db.models import Business, Offer
from marketplace.exposures.services import mark_stale
from marketplace.ranking.service import ProfitabilityRanker
from tests.factories import auth, lead_body, offers_of, register, submit_lead
from tests.integration.fraud_market import report


async def _fresh_copy(app) -> ProfitabilityRanker:
    """A ranker read from the database alone, with the same category averages and plan terms as the running one."""
    live = app.state.ranker
    fresh = ProfitabilityRanker(app.state.settings)
    fresh.priors = dict(live.priors)
    fresh.rates, fresh.sold_kept_bp = dict(live.rates), live.sold_kept_bp
    async with app.state.sessions() as session:
        ids = list(await session.scalars(select(Business.id)))
        await fresh.refresh(session, ids, utcnow())
    return fresh


async def test_events_update_the_core_as_a_fresh_read_of_the_database_would(app, client, db, settings):
    # A fixed mid-morning: on the wall clock just before the local midnight, the wave delay below crossed into a new
    # local day, whose counts the core and a fresh read then dated differently.
    clock.freeze(datetime(2026, 3, 10, 8, 0, tzinfo=UTC))
    ranker = app.state.ranker
    assert isinstance(ranker, ProfitabilityRanker)
    one_a_day = {"categories": ["plumbing"], "daily_cap": 1}
    buyers = [await register(client, "lead_buyer", profile={"categories": ["plumbing"]}) for _ in range(2)]
    makers = [await register(client, "deal_maker", profile=one_a_day), await register(client, "deal_maker")]
    seller_id, seller = await register(client, "lead_buyer", profile={"categories": ["renovation"]})
    refreshed: list[str] = []
    real_refresh = ranker.refresh

    async def counting_refresh(session, ids, now):
        refreshed.extend(ids)
        await real_refresh(session, ids, now)

    ranker.refresh = counting_refresh
    # Sign-ups are known without a read: the core holds each with its profile.
    assert all(business_id in ranker.core for business_id, _ in buyers + makers)

    sold = await client.post("/v1/businesses/me/leads", headers=auth(seller), json=lead_body(category="plumbing"))
    assert sold.status_code == 201, sold.text
    sold_lead = sold.json()["id"]
    for _ in range(3):
        await submit_lead(client, category="plumbing")
    await app.state.jobs.run_due()
    clock.advance(timedelta(seconds=settings.categories["plumbing"].wave_delay_seconds + 1))
    await app.state.jobs.run_due()  # the second waves reach whoever the first missed

    exposures: dict[str, list[str]] = {}
    for business_id, token in makers + buyers:  # one lead each, two for the uncapped deal maker
        offers = sorted(await offers_of(client, token), key=lambda o: o["lead_id"] != sold_lead)  # the sold one first
        for offer in offers[: 2 if business_id == makers[1][0] else 1]:
            claimed = await client.post(f"/v1/offers/{offer['offer_id']}/claim", headers=auth(token), json={})
            assert claimed.status_code == 201, claimed.text
            exposures.setdefault(business_id, []).append(claimed.json()["id"])
    await app.state.ranking_sync.settled()
    assert exposures, "somebody claimed something"

    # A lead buyer returns one (before any deal on its lead: once a customer hired someone, a return is refused); a
    # deal maker's deal reaches paid.
    maker_id, maker = makers[1]
    assert makers[0][0] in exposures and maker_id in exposures and all(b in exposures for b, _ in buyers)
    buyer_id, buyer = buyers[0]
    returned = await client.post(
        f"/v1/exposures/{exposures[buyer_id][0]}/return", headers=auth(buyer), json={"reason": "not a plumbing job"}
    )
    assert returned.status_code == 200, returned.text
    exposure_id = exposures[maker_id][0]
    for status in ("contacted", "quoted", "won", "invoiced"):
        await report(client, maker, exposure_id, status)
    await report(client, maker, exposure_id, "paid", 1_234_567)
    # The capped deal maker loses its deal: decided, not won.
    await report(client, makers[0][1], exposures[makers[0][0]][0], "lost")
    await app.state.ranking_sync.settled()

    assert refreshed == [], "claims, statuses and returns were applied without reading the database back"
    fresh = await _fresh_copy(app)
    assert ranker.standings.keys() == fresh.standings.keys()
    for business_id, standing in fresh.standings.items():
        assert ranker.standings[business_id] == standing, business_id
    assert ranker.core.snapshot() == fresh.core.snapshot()
    # The deal maker with a cap of one lead a day left the core's buckets once it took one.
    capped_id = makers[0][0]
    assert all(capped_id not in [b for b, _ in entries] for entries in ranker.core.snapshot().values())
    assert ranker.standings[seller_id].sold_minor > 0
    assert ranker.standings[seller_id].sold_minor == fresh.standings[seller_id].sold_minor

    # Days later the deal maker's other lead has gone stale (a failure, once a read finds it), and then it reports
    # the deal won after all. This core may still count the deal as undecided, so the move reads the business back.
    # (Time stands still from here: an unpaid win's weight, and so its business's score, moves with the clock.)
    clock.freeze(utcnow() + timedelta(days=settings.windows.stale_days + 1))
    others = [b for b in ranker.standings if b != maker_id]
    async with app.state.sessions() as session:
        assert await mark_stale(session, settings) >= 1
        await session.commit()
        await real_refresh(session, others, utcnow())  # a new day for their caps; the deal maker is left as it was
    late = exposures[maker_id][1]
    term = timedelta(days=settings.fraud.unpaid_days)
    assert ranker.standings[maker_id].history_of("plumbing", utcnow(), term).decided == 1  # the stale one not yet
    await report(client, maker, late, "won", 500_000)
    won_at = utcnow()
    await app.state.ranking_sync.settled()
    assert refreshed == [maker_id]
    after = ranker.standings[maker_id].history_of("plumbing", utcnow(), term)
    assert (after.decided, after.wins, after.won_unpaid, after.turnover_minor) == (2, 2, 1, 1_234_567 + 500_000)
    fresh = await _fresh_copy(app)
    for business_id, standing in fresh.standings.items():
        assert ranker.standings[business_id] == standing, business_id
    assert ranker.core.snapshot() == fresh.core.snapshot()

    # Half its payment term later the unpaid win weighs half a failure to pay. The invoice does not restart the
    # term (a fresh read dates the win by its `won` step too), and the payment is applied in place.
    refreshed.clear()
    clock.advance(term / 2)
    async with app.state.sessions() as session:
        await real_refresh(session, others, utcnow())
    await report(client, maker, late, "invoiced")
    await app.state.ranking_sync.settled()
    assert ranker.standings[maker_id].won_at["plumbing"] == {late: won_at}
    assert ranker.standings[maker_id].history_of("plumbing", utcnow(), term).unpaid_weight == pytest.approx(0.5)
    fresh = await _fresh_copy(app)
    held, read = ranker.standings[maker_id], fresh.standings[maker_id]
    assert (held.won_at, held.history) == (read.won_at, read.history)
    async with app.state.sessions() as session:
        await real_refresh(session, [maker_id], utcnow())  # its new day, as the full refresh would
    await report(client, maker, late, "paid", 600_000)
    await app.state.ranking_sync.settled()
    assert refreshed == []
    after = ranker.standings[maker_id].history_of("plumbing", utcnow(), term)
    assert (after.paid_deals, after.won_unpaid, after.unpaid_weight) == (2, 0, 0.0)
    assert after.turnover_minor == 1_234_567 + 600_000
    fresh = await _fresh_copy(app)
    for business_id, standing in fresh.standings.items():
        assert ranker.standings[business_id] == standing, business_id
    assert ranker.core.snapshot() == fresh.core.snapshot()


async def test_a_wave_holds_the_configured_share_of_explored_places(app, client, db, settings):
    """Exploration takes its share of the places a wave offers (not a place beyond the wave, which is
    dropped), so newcomers and the little known are offered leads."""
    app.state.ranker.core.explore_share = 0.3
    price = settings.categories["plumbing"].lead_price_minor
    for i in range(12):  # bids set them apart: a clear order that exploration departs from
        _, token = await register(client, "lead_buyer", profile={"categories": ["plumbing"], "regions": ["tel-aviv"]})
        bid = {"category": "plumbing", "max_bid": {"amount_minor": price + 100 * i, "currency": "ILS"}}
        assert (
            await client.put("/v1/businesses/me/bids", headers=auth(token), json={"bids": [bid]})
        ).status_code == 200
    await app.state.ranking_sync.settled()
    for _ in range(40):
        await submit_lead(client, category="plumbing", region="tel-aviv")
    await app.state.jobs.run_due()  # the first wave of each
    offers = list(await db.scalars(select(Offer)))
    assert len(offers) == 40 * settings.categories["plumbing"].wave_size
    explored = sum(1 for o in offers if o.factors.get("explored"))
    assert 0.2 <= explored / len(offers) <= 0.4, explored
