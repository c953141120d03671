"""A business blocked in another process, over HTTP (each test runs on SQLite and PostgreSQL).

Each process answers its guard from its own principal cache, and hears of a block made elsewhere only when the
ranking's pub/sub message arrives: in between, its guard still holds the business active. Every act that changes
something reads the business's status in the database inside its transaction (identity.services.refuse_if_blocked),
so the act is a 403 and nothing changes. (Before, in that window, a just-blocked business sold an inquiry, changed its
profile and its bids, claimed, upgraded, returned a lead for a refund and reported a new turnover on a kept deal.)

The other process is played here by the real block over HTTP, after which this process's cache is given back the
entry it held before (as a process that has not heard of the block still holds it).
"""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar
from sqlalchemy import func, select

from marketplace.db.models import Business, ClubMember, Exposure, ExposureEvent, Lead, LedgerTransaction, Offer
from marketplace.identity.services import Principal
from marketplace.identity.tokens import hash_token
from marketplace.settings import Settings
from tests.conftest import make_settings
from tests.factories import auth, lead_body, offer_lead_to, operator_token, register, submit_lead
from tests.integration.fraud_market import claimed_deal, report
from tests.integration.test_clubs import found_club, invitation, member


@pytest.fixture
def settings(settings: Settings, database_url: str) -> Settings:
    # Cached for ten minutes: what the guard holds cannot age out while a test runs, only a forget drops it.
    return make_settings(database_url, MARKETPLACE__SERVICE__PRINCIPAL_CACHE_MS="600000")


def ils(minor: int) -> dict[str, Any]:
    return {"amount_minor": minor, "currency": "ILS"}


async def block_elsewhere(app: Litestar, client: Any, business_id: str, token: str, mode: str) -> None:
    """An operator blocks the business (another process, in effect; not listed as unreliable, so that a rename is
    refused for the block alone): the operator has its 200, and this process's guard still holds the business
    active, as one that has not heard of the block yet does."""
    operator = await operator_token(app)
    blocked = await client.post(
        f"/v1/businesses/{business_id}/block", headers=auth(operator), json={"unreliable": False}
    )
    assert blocked.status_code == 200, blocked.text
    await app.state.ranking_sync.settled()  # this process's own forget is done with
    cache_active(app, business_id, token, mode)


def cache_active(app: Litestar, business_id: str, token: str, mode: str) -> None:
    """This process's guard holds the business active (put back before each act: one let through would make this
    process forget the token, and the acts after it would be refused by the guard, not by the database)."""
    stale = Principal(kind="business", id=business_id, mode=mode, status="active")
    app.state.principals.put(hash_token(token), stale)


def still_cached_active(app: Litestar, token: str) -> None:
    """The refusals came from the database, not from a guard that read the token again."""
    principal = app.state.principals.get(hash_token(token))
    assert principal is not None and principal.status == "active"


async def test_a_lead_buyer_blocked_in_another_process_is_refused_every_act_and_nothing_changes(app, client, db):
    operator = await operator_token(app)
    club = await found_club(client, operator)
    buyer_id, buyer = await member(client, operator, club, "lead_buyer")
    _, exposure_id = await claimed_deal(app, client, buyer_id, buyer)
    other_lead = await submit_lead(client)
    (offer_id,) = await offer_lead_to(app, other_lead, [buyer_id])
    other_club = await found_club(client, operator, "Other club")
    code = await invitation(client, operator, other_club)

    await block_elsewhere(app, client, buyer_id, buyer, "lead_buyer")
    name = await db.scalar(select(Business.name).where(Business.id == buyer_id))
    transactions = await db.count(LedgerTransaction)
    events = await db.count(ExposureEvent)
    leads = await db.count(Lead)
    h = auth(buyer)

    calls: dict[str, tuple[str, str, Any]] = {
        "sell": ("POST", "/v1/businesses/me/leads", lead_body()),
        "patch": ("PATCH", "/v1/businesses/me", {"name": "Renamed"}),
        "bids": ("PUT", "/v1/businesses/me/bids", {"bids": [{"category": "plumbing", "max_bid": ils(9_000)}]}),
        "claim": ("POST", f"/v1/offers/{offer_id}/claim", {"exclusive": False}),
        "report": ("POST", f"/v1/exposures/{exposure_id}/status", {"status": "contacted"}),
        "join": ("POST", "/v1/businesses/me/clubs", {"invitation": code}),
        "leave": ("DELETE", f"/v1/businesses/me/clubs/{club}", None),
        "withdraw": ("POST", "/v1/wallet/withdrawals", {"amount": ils(100)}),
        "upgrade": ("POST", f"/v1/exposures/{exposure_id}/exclusive", None),
        "return": ("POST", f"/v1/exposures/{exposure_id}/return", {"reason": "wrong"}),
    }
    acts = {}
    for act, (method, path, body) in calls.items():
        cache_active(app, buyer_id, buyer, "lead_buyer")
        acts[act] = await client.request(method, path, headers=h, json=body)
    assert {act: r.status_code for act, r in acts.items()} == dict.fromkeys(acts, 403), {
        act: r.text for act, r in acts.items() if r.status_code != 403
    }
    still_cached_active(app, buyer)
    # Nothing changed: no lead sold, no money moved (no refund, no upgrade charge, no payout), the deal as it was.
    assert await db.count(Lead) == leads
    assert await db.count(Lead, Lead.seller_business_id == buyer_id) == 0
    assert await db.count(LedgerTransaction) == transactions
    assert await db.count(ExposureEvent) == events
    exposure = await db.scalar(select(Exposure).where(Exposure.id == exposure_id))
    assert (exposure.status, exposure.kind, exposure.returned_at) == ("new", "shared", None)
    assert await db.scalar(select(Business.name).where(Business.id == buyer_id)) == name
    assert await db.count(Exposure, Exposure.business_id == buyer_id) == 1  # the offer was not claimed
    assert await db.scalar(select(Offer.status).where(Offer.id == offer_id)) == "closed"  # the block withdrew it
    assert await db.count(ClubMember, ClubMember.business_id == buyer_id) == 1  # still in the first club only
    assert await db.count(ClubMember, ClubMember.club_id == other_club) == 0


async def test_a_claim_by_a_business_the_database_has_blocked_is_a_403_even_with_its_offer_open(app, client, db):
    """The offer still open (the block's withdrawal of offers aside): the claim reads the status, and claims nothing."""
    buyer_id, buyer = await register(client, "lead_buyer")
    lead_id = await submit_lead(client)
    (offer_id,) = await offer_lead_to(app, lead_id, [buyer_id])
    assert (await client.get("/v1/businesses/me", headers=auth(buyer))).status_code == 200  # its principal cached
    async with app.state.sessions() as session:  # as another process would, without this one hearing of it
        await session.execute(Business.__table__.update().where(Business.id == buyer_id).values(status="blocked"))
        await session.commit()
    claimed = await client.post(f"/v1/offers/{offer_id}/claim", headers=auth(buyer), json={"exclusive": False})
    assert claimed.status_code == 403, claimed.text
    still_cached_active(app, buyer)
    assert await db.count(Exposure, Exposure.lead_id == lead_id) == 0
    assert await db.scalar(select(Offer.status).where(Offer.id == offer_id)) == "open"
    assert await db.scalar(select(func.count()).select_from(LedgerTransaction)) == 0


async def test_a_deal_maker_blocked_in_another_process_settles_its_kept_deal_only_at_the_turnover_it_stated(
    app, client, db
):
    """What a blocked business may still do (report a kept deal invoiced and paid, at the turnover it stated) is
    judged by its status in the database too: a new, lower turnover on the way is a 403, not a smaller commission."""
    maker_id, maker = await register(client, "deal_maker")
    _, won = await claimed_deal(app, client, maker_id, maker)
    await report(client, maker, won, "won", turnover=50_000)
    await block_elsewhere(app, client, maker_id, maker, "deal_maker")
    lower = {"status": "invoiced", "turnover": ils(10_000)}
    refused = await client.post(f"/v1/exposures/{won}/status", headers=auth(maker), json=lower)
    assert refused.status_code == 403, refused.text
    assert await db.scalar(select(Exposure.turnover_minor).where(Exposure.id == won)) == 50_000
    assert (await report(client, maker, won, "invoiced"))["status"] == "invoiced"  # at the turnover it stated
    still_cached_active(app, maker)
