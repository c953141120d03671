"""The fraud scan's cache of deals (fraud/deal_cache.py): after changes of every kind a deal has (a claim, moves with
their turnovers and wins, customers' answers about a lead others hold too, an answer given before the deal was
claimed, the stale sweep, a block's release), what it re-reads makes exactly the deals a full read does."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select

from marketplace.clock import clock
from marketplace.db.models import Exposure
from marketplace.exposures.services import mark_stale
from marketplace.fraud import deal_cache
from marketplace.fraud.deal_cache import DealCache, load_deals
from tests.factories import auth, offer_lead_to, operator_token, register, submit_lead
from tests.integration.fraud_market import answer, claimed_deal, hired, report, survey_token


async def claim(client: httpx.AsyncClient, offer_id: str, token: str) -> str:
    response = await client.post(f"/v1/offers/{offer_id}/claim", headers=auth(token), json={"exclusive": False})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_what_the_cache_re_reads_makes_the_deals_a_full_read_does(app, client, settings, db):
    operator = await operator_token(app)
    ids, tokens = zip(*[await register(client, "deal_maker", name=f"Pipes {n}") for n in range(3)], strict=True)
    a, b, c = ids
    ta, tb, tc = tokens
    cache = DealCache(full_every=timedelta(days=365))  # the stale sweep's step is days long
    clock.freeze(clock.now())
    steps: list[str] = []

    async def same(step: str, *, whole: bool = False) -> None:
        """The cache's deals are a full read's (after the first read of a business, re-read in part only)."""
        clock.advance(timedelta(minutes=20))  # past the margin: a change is found by its date, not by the overlap
        full_before, partial_before = cache.full_reads, cache.partial_reads
        async with app.state.uow() as uow:
            kept = await cache.read(uow.session, ids)
            fresh = dict(await load_deals(uow.session, ids))
        assert kept == fresh, step
        if not whole:
            assert (cache.full_reads, cache.partial_reads) == (full_before, partial_before + len(ids)), step
        steps.append(step)
        clock.advance(timedelta(minutes=40))

    await same("nothing yet", whole=True)
    _, deal_a1 = await claimed_deal(app, client, a, ta)
    _, deal_b1 = await claimed_deal(app, client, b, tb)
    await same("claims")
    # A lead both a and b hold.
    shared = await submit_lead(client)
    offer_a, offer_b = await offer_lead_to(app, shared, [a, b])
    await claim(client, offer_a, ta)
    deal_b2 = await claim(client, offer_b, tb)
    await same("a lead held by two")
    await report(client, ta, deal_a1, "contacted")
    await report(client, tb, deal_b1, "won", turnover=500_000)
    await same("moves, a win with its turnover")
    await report(client, tb, deal_b1, "invoiced", turnover=200_000)  # lowered after the win
    await same("an invoice, the turnover lowered")
    # b says it lost the shared lead; its customer answers that a hired a (a's deal itself did not change).
    await report(client, tb, deal_b2, "lost")
    await same("a loss")
    response = await answer(client, await survey_token(client, operator, shared), **hired(a, 90_000))
    assert response.status_code == 200, response.text
    await same("an answer about a lead another business reported")
    # A customer who hired nobody (the lead stays on the market), long before c claims the lead: c's new deal comes
    # with the answer given before it existed.
    early = await submit_lead(client)
    (offer_a3,) = await offer_lead_to(app, early, [a])
    deal_a3 = await claim(client, offer_a3, ta)
    await report(client, ta, deal_a3, "lost")
    response = await answer(client, await survey_token(client, operator, early), hired=False)
    assert response.status_code == 200, response.text
    await same("an answer that nobody was hired")
    clock.advance(timedelta(hours=3))
    await same("later")
    (offer_c,) = await offer_lead_to(app, early, [c])
    deal_c = await claim(client, offer_c, tc)
    await same("a claim of a lead answered about long before")
    # The stale sweep flips `stale` and nothing else a deal shows.
    changed_before = await db.scalar(select(Exposure.status_changed_at).where(Exposure.id == deal_c))
    clock.advance(timedelta(days=settings.windows.stale_days, seconds=1))
    async with app.state.uow() as uow:
        assert await mark_stale(uow.session, settings) >= 2
    assert await db.scalar(select(Exposure.stale).where(Exposure.id == deal_c)) is True
    assert await db.scalar(select(Exposure.status_changed_at).where(Exposure.id == deal_c)) == changed_before
    await same("the stale sweep")
    await report(client, tc, deal_c, "contacted")  # no longer stale
    await same("a stale deal moved")
    # c is blocked: its open deal on a lead still on the market goes back to it, closed by the block, and is no deal
    # of c's any more (the one on the lead past its time stays).
    _, open_c = await claimed_deal(app, client, c, tc)
    await same("a claim")
    response = await client.post(
        f"/v1/businesses/{c}/status", headers=auth(operator), json={"status": "blocked", "reason": "fraud"}
    )
    assert response.status_code == 200, response.text
    assert await db.scalar(select(Exposure.status).where(Exposure.id == open_c)) == "lost"
    async with app.state.uow() as uow:
        assert [d.exposure_id for d in (await load_deals(uow.session, [c]))[c]] == [deal_c]
    await same("a block's release")
    assert len(steps) == 14


async def test_a_change_committed_late_within_the_margin_is_found(app, client, settings):
    """A deal dated before the last read but committed after it (PostgreSQL, another process's clock) is found by
    the re-read's overlap."""
    business_id, token = await register(client, "deal_maker")
    await claimed_deal(app, client, business_id, token)
    cache = DealCache()
    clock.freeze(clock.now())
    dated = clock.now() - timedelta(minutes=5)  # its transaction began before the read, within the margin
    assert timedelta(minutes=5) < deal_cache.MARGIN
    async with app.state.uow() as uow:
        await cache.read(uow.session, [business_id])
    clock.advance(timedelta(minutes=5))
    _, late = await claimed_deal(app, client, business_id, token)
    async with app.state.uow() as uow:  # as if its transaction had begun before the read, and committed after it
        exposure = await uow.session.get(Exposure, late)
        assert exposure is not None
        exposure.created_at = exposure.status_changed_at = dated
        exposure.changed_at = dated
    clock.advance(timedelta(hours=1))
    async with app.state.uow() as uow:
        kept = await cache.read(uow.session, [business_id])
        assert kept == dict(await load_deals(uow.session, [business_id]))
    assert late in {d.exposure_id for d in kept[business_id]} and cache.partial_reads == 1


async def test_the_scheduled_scan_reads_through_the_cache_and_scores_as_before(app, client, settings, monkeypatch):
    """scan_dirty reads deals through the process's cache; the assessment it writes is a full read's."""
    from marketplace.fraud import services as fraud

    business_id, token = await register(client, "deal_maker")
    _, exposure_id = await claimed_deal(app, client, business_id, token)
    await report(client, token, exposure_id, "won", turnover=100_000)
    reads: list[Any] = []
    original = deal_cache.DealCache.read

    async def counted(self: DealCache, session: Any, business_ids: Any) -> Any:
        reads.append(list(business_ids))
        return await original(self, session, business_ids)

    monkeypatch.setattr(deal_cache.DealCache, "read", counted)
    found = await fraud.scan_dirty(app.state.uow, app.state.settings)
    assert found.assessed == 1 and reads == [[business_id]]


async def test_the_cache_keeps_at_most_its_deals_the_least_recently_read_out_first(app, client):
    ids = []
    for n in range(3):
        business_id, token = await register(client, "deal_maker", name=f"Kept {n}")
        await claimed_deal(app, client, business_id, token)
        ids.append(business_id)
    cache = DealCache(max_deals=2)
    async with app.state.uow() as uow:
        assert await cache.read(uow.session, ids) == dict(await load_deals(uow.session, ids))
        assert list(cache.kept) == ids[1:] and cache.size == 2
        await cache.read(uow.session, ids[1:2])  # read again: the last out now
        assert await cache.read(uow.session, ids[:1]) == dict(await load_deals(uow.session, ids[:1]))
    assert list(cache.kept) == [ids[1], ids[0]] and cache.full_reads == 4
