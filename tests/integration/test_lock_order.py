"""The one order every transaction takes rows in (README, "Lock order"): a lead's row before any business's, business
rows in id order, then the deals' and the wallets'. Claims and waves hold a lead's row while they take business rows;
an act that took its business's row first and a lead's after (a return, a report that decides a deal, an upgrade), or
a wave that waited for a lower business id than one it held, closed a cycle with them, and PostgreSQL undid one side
(a 503 `concurrent-change`, a wave job failed and retried). Each test holds the other side's rows from a connection
of its own, in the order a claim or a wave takes them, and asks for the second row once the act under test waits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from sqlalchemy import select, update

from marketplace.db.models import Business, Exposure, Offer
from marketplace.ranking.ports import Ranked
from tests.conftest import PG_ADMIN_DSN, PG_TEST_DB
from tests.factories import auth, register, submit_lead
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
    # Its second round found the lower id held and passed it over: nobody is offered the lead by this wave (the next
    # wave asks again).
    assert rounds == [set(), {high}, {high, low}]
    assert await db.count(Offer, Offer.lead_id == lead_id) == 0
