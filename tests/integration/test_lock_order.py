"""The one order every transaction takes rows in (README, "Lock order"): a lead's row before any business's, business
rows in id order, then the deals' and the wallets'. Claims and waves hold a lead's row while they take business rows;
an act that took its business's row first and a lead's after (a return, a report that decides a deal, an upgrade, a
block), or a wave that waited for a lower business id than one it held, closed a cycle with them, and PostgreSQL undid
one side (a 503 `concurrent-change`, a wave job failed and retried). Each test holds the other side's rows from a
connection of its own, in the order a claim or a wave takes them, and asks for the second row once the act under test
waits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import select, update

from marketplace.clock import clock, utcnow
from marketplace.db.models import Business, Exposure, Lead, Offer
from marketplace.ranking.ports import Ranked
from tests.conftest import PG_ADMIN_DSN, PG_TEST_DB
from tests.factories import auth, operator_token, register, submit_lead
from tests.integration.fraud_market import claimed_deal

pytestmark = pytest.mark.postgres_only  # SQLite runs one writer at a time: nothing waits for a row, nor deadlocks

_BLOCKED_BY = "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))"


async def _other_side(first: tuple[str, str], then: tuple[str, str], act: Callable[[], Awaitable[Any]]) -> Any:
    """Another transaction (a claim's, a wave's) holds `first` (table, id) FOR NO KEY UPDATE; `act` runs until it
    waits for that transaction (or is done); the transaction then asks for `then`, and ends (rolled back) once it has
    it. Returns what `act` returned. The other side never looks for a deadlock itself (its deadlock_timeout is a
    minute): had `act` held `then` while waiting for `first`, PostgreSQL would undo `act` a second after it began to
    wait."""
    dsn = PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{PG_TEST_DB}"
    other, watcher = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        await other.execute("SET deadlock_timeout = '1min'")
        await other.execute("BEGIN")
        await other.execute(f"SELECT 1 FROM {first[0]} WHERE id = $1 FOR NO KEY UPDATE", first[1])
        holder = other.get_server_pid()
        running = asyncio.ensure_future(act())
        for _ in range(1000):  # until the act waits for the other side (or is done without waiting for it)
            if running.done() or await watcher.fetchval(_BLOCKED_BY, holder):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the act never waited for the other side's row")
        # What the claim or the wave takes next; waited for (no deadlock) only as long as the act holds it.
        taking = asyncio.ensure_future(
            other.execute(f"SELECT 1 FROM {then[0]} WHERE id = $1 FOR NO KEY UPDATE", then[1])
        )
        done, _ = await asyncio.wait({running, taking}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        assert done, "neither side went on"
        if taking in done:
            await taking
            await other.execute("ROLLBACK")
        answer = await asyncio.wait_for(running, timeout=30)
        if taking not in done:
            await asyncio.wait_for(taking, timeout=30)
            await other.execute("ROLLBACK")
        return answer
    finally:
        await other.close()
        await watcher.close()


async def _returnable_deal(app: Any, client: Any, mode: str) -> tuple[str, str, str, str]:
    business_id, token = await register(client, mode)
    lead_id, exposure_id = await claimed_deal(app, client, business_id, token)
    return business_id, token, lead_id, exposure_id


@pytest.mark.parametrize(
    ("mode", "path", "body"),
    [
        ("lead_buyer", "return", {"reason": "irrelevant"}),
        ("deal_maker", "return", {"reason": "irrelevant"}),
        ("lead_buyer", "exclusive", None),
        ("lead_buyer", "status", {"status": "lost"}),
        ("deal_maker", "status", {"status": "won", "turnover": {"amount_minor": 50_000, "currency": "ILS"}}),
    ],
)
async def test_an_act_on_a_deal_takes_its_lead_row_before_its_business_row(app, client, db, mode, path, body):
    """A claim of the lead (or its wave) holds the lead's row and then asks for a business's row; the business's
    return, upgrade or deciding report of its deal on that lead took the business's row first and waited for the
    lead's: a deadlock, the act undone (503). Now it waits for the lead's row holding no business row, and goes
    through once the claim has ended."""
    business_id, token, lead_id, exposure_id = await _returnable_deal(app, client, mode)

    def act() -> Awaitable[Any]:
        url = f"/v1/exposures/{exposure_id}/{path}"
        return (
            client.post(url, headers=auth(token), json=body)
            if body is not None
            else client.post(url, headers=auth(token))
        )

    answer = await _other_side(("leads", lead_id), ("businesses", business_id), act)
    assert answer.status_code == 200, answer.text
    expected = {"return": "returned", "exclusive": "new", "status": (body or {}).get("status")}[path]
    assert await db.scalar(select(Exposure.status).where(Exposure.id == exposure_id)) == expected


async def test_a_waves_later_round_never_waits_for_a_lower_business_id_than_one_it_holds(app, client, db, monkeypatch):
    """A wave locks its picks in id order, then asks whether each may take the lead; one refused leaves its place to the
    next candidate, chosen in a next round. That round's pick may have a lower id than a row the wave holds: waiting
    for it closed a cycle with a claim, a report or another wave holding it and then asking for the higher one (most of
    a tester's deadlocked waves). Now a lower id is taken only if free: one held is passed over for this wave, as a
    refused one is, and the wave goes through."""
    from marketplace.offers import waves as offer_waves
    from workers.actors import send_wave

    ids = sorted([(await register(client, "lead_buyer"))[0] for _ in range(2)])
    low, high = ids
    # The higher one is picked first and refused (suspended: the wave's own question, _able, says so); the lower one is
    # the next round's pick.
    async with app.state.sessions() as session:
        await session.execute(update(Business).where(Business.id == high).values(status="suspended"))
        await session.commit()
    lead_id = await submit_lead(client)
    rounds: list[set[str]] = []

    async def high_then_low(session, ranker, lead, wave_size, now, zone, left_out):
        rounds.append(set(left_out))
        picks = [Ranked(b, 1.0) for b in (high, low) if b not in left_out][:1]
        return picks, False

    monkeypatch.setattr(offer_waves, "_candidates_in_order", high_then_low)

    async def wave() -> str:
        await send_wave(lead_id, 1)
        return "sent"

    assert await _other_side(("businesses", low), ("businesses", high), wave) == "sent"
    # Its second round found the lower id held and passed it over: nobody is offered the lead by this wave; the next
    # wave, after the delay, asks again (though the ranker said nobody was left).
    assert rounds == [set(), {high}, {high, low}]
    assert await db.count(Offer, Offer.lead_id == lead_id) == 0
    due = await db.scalar(select(Lead.next_wave_at).where(Lead.id == lead_id))
    delay = app.state.settings.categories["plumbing"].wave_delay_seconds
    assert due is not None and due.replace(tzinfo=None) <= (utcnow() + timedelta(seconds=delay)).replace(tzinfo=None)


async def test_a_business_passed_over_as_busy_is_asked_again_by_the_next_wave(app, client, db, settings):
    """A later round's pick below an id the wave holds, held by another transaction (every act of that business
    holds its row FOR SHARE: `held_status`), is passed over for that wave. It is still a candidate: the lead goes on
    with a next wave after the wave delay, which asks it again. (It was counted neither as offered nor as left, so
    the ranker said nobody was left and the lead's waves stopped until the next local day.) The real ranker orders
    the candidates (by their bids, with no exploration) and says whether anyone is left."""
    plumbing = settings.categories["plumbing"]
    assert plumbing.wave_size == 3  # the wave's three, and a fourth the last lead buyer's price is set against
    # Five buyers, the lowest bid registered first (ids are time-ordered): the lowest id, so that the round that
    # reaches it holds higher ids already.
    buyers = []
    for amount in (7_000, 14_000, 12_000, 10_000, 9_000):
        business_id, token = await register(client, "lead_buyer", profile={"categories": ["plumbing"]})
        bid = {"category": "plumbing", "max_bid": {"amount_minor": amount, "currency": "ILS"}}
        put = await client.put("/v1/businesses/me/bids", headers=auth(token), json={"bids": [bid]})
        assert put.status_code == 200, put.text
        buyers.append(business_id)
    busy, top, *rest = buyers
    assert busy == min(buyers)
    app.state.ranker.core.explore_share = 0.0
    await app.state.ranking_sync.settled()
    await app.state.jobs.run_due()
    # The best is refused by the database (suspended there; the ranker has not heard): the first round asks it, the
    # next two and the fourth (the third's price); the second round asks the fifth, the busy one, for the third's price.
    async with app.state.sessions() as session:
        await session.execute(update(Business).where(Business.id == top).values(status="suspended"))
        await session.commit()
    dsn = PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{PG_TEST_DB}"
    other = await asyncpg.connect(dsn)
    try:
        await other.execute("BEGIN")
        await other.execute("SELECT 1 FROM businesses WHERE id = $1 FOR SHARE", busy)  # an act of its own
        lead_id = await submit_lead(client, category="plumbing")
        await app.state.jobs.run_due()
        await other.execute("ROLLBACK")
    finally:
        await other.close()
    offered = {o.business_id: o.wave for o in await db.scalars(select(Offer).where(Offer.lead_id == lead_id))}
    assert offered == dict.fromkeys(rest, 1)
    due = await db.scalar(select(Lead.next_wave_at).where(Lead.id == lead_id))
    assert due is not None
    assert due.replace(tzinfo=None) <= (utcnow() + timedelta(seconds=plumbing.wave_delay_seconds)).replace(tzinfo=None)
    clock.advance(timedelta(seconds=plumbing.wave_delay_seconds + 1))
    await app.state.jobs.run_due()
    offered = {o.business_id: o.wave for o in await db.scalars(select(Offer).where(Offer.lead_id == lead_id))}
    assert offered == {**dict.fromkeys(rest, 1), busy: 2}


@pytest.mark.parametrize("how", ["block", "status", "fraud alert"])
async def test_a_block_takes_its_deals_leads_rows_before_its_business_row(app, client, db, how):
    """A block gives a deal maker's open deals back to the market (their leads' places freed): it took the business's
    row, then its deals', then their leads'. A claim of one of those leads (or its wave, or the business's own return or
    report) holds the lead's row and then asks for the business's: a deadlock, the block undone (503). Now the block
    locks its deals' leads first, in id order, then the business's row: it waits for the claim, which goes on, and then
    blocks. By hand (`POST .../block`, `POST .../status`) and on a confirmed fraud alert (fraud.decide)."""
    from tests.integration.test_fraud import alerts, hide_a_won_deal

    operator = await operator_token(app)
    business_id, token = await register(client, "deal_maker")
    if how == "fraud alert":
        await hide_a_won_deal(app, client, operator, business_id, token)
        (alert,) = await alerts(client, operator)
    lead_id, exposure_id = await claimed_deal(app, client, business_id, token)
    places = await db.scalar(select(Lead.exposure_count).where(Lead.id == lead_id))

    def act() -> Awaitable[Any]:
        if how == "block":
            return client.post(f"/v1/businesses/{business_id}/block", headers=auth(operator))
        if how == "status":
            body = {"status": "blocked", "reason": "fraud"}
            return client.post(f"/v1/businesses/{business_id}/status", headers=auth(operator), json=body)
        decision = {"decision": "confirm", "note": "it hid a deal"}
        return client.post(f"/v1/fraud/alerts/{alert['id']}/decision", headers=auth(operator), json=decision)

    answer = await _other_side(("leads", lead_id), ("businesses", business_id), act)
    assert answer.status_code == 200, answer.text
    assert await db.scalar(select(Business.status).where(Business.id == business_id)) == "blocked"
    assert await db.scalar(select(Exposure.status).where(Exposure.id == exposure_id)) == "lost"
    assert await db.scalar(select(Lead.exposure_count).where(Lead.id == lead_id)) == places - 1
