"""The lead lifecycle at its edges, over HTTP (intake, offers, claims, exposures, returns, surveys, block): a
replacement owed until one is claimed, no exclusivity bought off the market, one value per query parameter, and odd
input on every lifecycle call refused with nothing changed."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from marketplace.clock import clock
from marketplace.db.models import Exposure, ExposureEvent, Lead, LedgerTransaction, Offer
from tests.factories import auth, lead_body, offer_lead_to, offers_of, operator_token, register, submit_lead
from tests.integration.fraud_market import claimed_deal, report, survey_token


def money(amount: Any, currency: Any = "ILS") -> dict[str, Any]:
    return {"amount_minor": amount, "currency": currency}


# --- what was wrong ------------------------------------------------------------------------------------------------


async def test_a_replacement_offered_at_the_return_that_fills_before_the_claim_leaves_the_replacement_owed(
    app, client, db
):
    """A deal maker returns a lead and is offered an open lead as its replacement at once; other businesses fill
    that lead before it claims (not its doing): it is still owed a replacement, as when the return found no lead and
    the owed replacement offered later fills first (test_lifecycle's
    test_a_replacement_offer_that_closes_unclaimed_leaves_the_replacement_owed)."""
    legal = {"categories": ["legal"]}  # two places a lead
    returner_id, returner = await register(client, "deal_maker", profile=legal)
    quick = [await register(client, "deal_maker", profile=legal) for _ in range(2)]
    _, exposure_id = await claimed_deal(app, client, returner_id, returner, category="legal")
    replacement_lead = await submit_lead(client, category="legal")  # open, offered to nobody yet
    returned = await client.post(f"/v1/exposures/{exposure_id}/return", headers=auth(returner), json={"reason": "x"})
    assert returned.status_code == 200, returned.text
    replacement_offer = returned.json()["replacement_offer_id"]
    assert replacement_offer is not None
    assert await db.scalar(select(Offer.lead_id).where(Offer.id == replacement_offer)) == replacement_lead
    # The two places of the replacement lead are taken by others first.
    offers = await offer_lead_to(app, replacement_lead, [b for b, _ in quick])
    for (_, token), offer_id in zip(quick, offers, strict=True):
        assert (await client.post(f"/v1/offers/{offer_id}/claim", headers=auth(token))).status_code == 201
    late = await client.post(f"/v1/offers/{replacement_offer}/claim", headers=auth(returner))
    assert late.status_code == 409
    # The next lead that fits is offered to it as the replacement it is still owed.
    await app.state.ranking_sync.settled()
    following = await submit_lead(client, category="legal")
    await app.state.jobs.run_due()
    mine = [o for o in await offers_of(client, returner) if o["lead_id"] == following]
    assert [o["replaces_exposure_id"] for o in mine] == [exposure_id], mine


async def _replacement_offered_then_capped(
    app: Any, client: Any, db: Any, *, owed: bool = True
) -> tuple[str, str, str, str]:
    """A deal maker with a daily cap of one returns a lead and is offered a replacement (an open lead that fits), then
    claims another lead, which reaches its cap: (its token, the returned exposure, the replacement offer, the
    exposure the capping claim gave). `owed`: whether the return recorded a debt (windows.replacement_days above 0)."""
    clock.freeze(datetime(2026, 3, 10, 9, 0, tzinfo=UTC))  # mid-day where the marketplace trades
    returner_id, returner = await register(
        client, "deal_maker", profile={"categories": ["legal"], "daily_cap": 1, "monthly_cap": 100}
    )
    _, exposure_id = await claimed_deal(app, client, returner_id, returner, category="legal")
    replacement_lead = await submit_lead(client, category="legal")  # open: the return offers it as the replacement
    other_lead = await submit_lead(client, category="legal")
    returned = await client.post(f"/v1/exposures/{exposure_id}/return", headers=auth(returner), json={"reason": "x"})
    assert returned.status_code == 200, returned.text
    replacement_offer = returned.json()["replacement_offer_id"]
    assert await db.scalar(select(Offer.lead_id).where(Offer.id == replacement_offer)) == replacement_lead
    owed_since = await db.scalar(select(Exposure.replacement_owed_since).where(Exposure.id == exposure_id))
    assert (owed_since is not None) == owed
    (other_offer,) = await offer_lead_to(app, other_lead, [returner_id])
    claimed = await client.post(f"/v1/offers/{other_offer}/claim", headers=auth(returner))
    assert claimed.status_code == 201, claimed.text  # its one lead of the day: the cap is reached
    return returner, exposure_id, replacement_offer, claimed.json()["id"]


async def test_a_claim_that_reaches_a_cap_withdraws_a_replacement_offer_and_the_replacement_stays_owed(app, client, db):
    """A deal maker with a replacement offer open claims another offer that reaches its daily cap: the replacement
    stayed listed, and its claim was a 409 for the cap (the claim that reaches a cap withdraws the offers it could only
    be refused). It is withdrawn now; the replacement stays owed, and the next day's first lead that fits is offered
    as it."""
    returner, exposure_id, replacement_offer, _ = await _replacement_offered_then_capped(app, client, db)

    assert await db.scalar(select(Offer.status).where(Offer.id == replacement_offer)) == "closed"
    assert replacement_offer not in {o["offer_id"] for o in await offers_of(client, returner)}
    refused = await client.post(f"/v1/offers/{replacement_offer}/claim", headers=auth(returner))
    assert refused.status_code == 409 and "withdrawn" in refused.json()["detail"], refused.text
    assert await db.scalar(select(Exposure.replacement_owed_since).where(Exposure.id == exposure_id)) is not None

    # The next day the cap takes a lead again: the first lead that fits is offered as the replacement still owed.
    clock.advance(timedelta(days=1))
    await app.state.ranking_sync.settled()
    following = await submit_lead(client, category="legal")
    await app.state.jobs.run_due()
    (again,) = [o for o in await offers_of(client, returner) if o["lead_id"] == following]
    assert again["replaces_exposure_id"] == exposure_id
    taken = await client.post(f"/v1/offers/{again['offer_id']}/claim", headers=auth(returner))
    assert taken.status_code == 201, taken.text
    assert await db.scalar(select(Exposure.replacement_owed_since).where(Exposure.id == exposure_id)) is None


async def test_a_claim_that_reaches_a_cap_keeps_a_replacement_offer_no_debt_stands_behind(app, client, db, settings):
    """With windows.replacement_days 0 no debt is recorded at a return (no later lead is offered as the replacement):
    the offer made at the return is all that is owed. A claim reaching the cap withdrew it as any other offer, and the
    replacement was lost without a word. It stays open now: refused while the cap holds, claimed once a lead returned
    makes room."""
    app.state.settings = replace(settings, windows=replace(settings.windows, replacement_days=0))
    returner, _, replacement_offer, capping = await _replacement_offered_then_capped(app, client, db, owed=False)

    assert await db.scalar(select(Offer.status).where(Offer.id == replacement_offer)) == "open"
    refused = await client.post(f"/v1/offers/{replacement_offer}/claim", headers=auth(returner))
    assert refused.status_code == 409 and "daily cap" in refused.json()["detail"], refused.text
    given_back = await client.post(f"/v1/exposures/{capping}/return", headers=auth(returner), json={"reason": "x"})
    assert given_back.status_code == 200, given_back.text
    taken = await client.post(f"/v1/offers/{replacement_offer}/claim", headers=auth(returner))
    assert taken.status_code == 201, taken.text


async def test_an_upgrade_of_a_lead_no_longer_on_the_market_is_refused_and_changes_nothing(app, client, db):
    """Exclusivity keeps competitors from a lead's contact; once the lead has expired nobody can claim it any more,
    so an upgrade would sell nothing. It is a 409, charges nothing, and leaves the lead expired (it was a 200, the
    difference charged, and the expired lead turned back to `full`)."""
    lb_id, lb = await register(client, "lead_buyer")
    lead_id, exposure_id = await claimed_deal(app, client, lb_id, lb)
    clock.advance(timedelta(hours=80))  # past lead_ttl_hours (72), within nothing else that matters here
    from workers.actors import expire_lapsed

    await expire_lapsed()
    assert await db.scalar(select(Lead.status).where(Lead.id == lead_id)) == "expired"
    transactions = await db.count(LedgerTransaction)
    upgrade = await client.post(f"/v1/exposures/{exposure_id}/exclusive", headers=auth(lb))
    assert upgrade.status_code == 409, upgrade.text
    assert await db.scalar(select(Lead.status).where(Lead.id == lead_id)) == "expired"
    assert await db.scalar(select(Exposure.kind).where(Exposure.id == exposure_id)) == "shared"
    assert await db.count(LedgerTransaction) == transactions


async def test_a_repeated_query_parameter_is_refused_not_silently_the_last(app, client, db):
    """`?status=new&status=lost` was answered as if only `status=lost` had been asked (the last won): the list looked
    filtered by what the client did not mean. Like an unknown parameter (http/access.py), it is a 422 naming it."""
    dm_id, dm = await register(client, "deal_maker")
    await claimed_deal(app, client, dm_id, dm)
    response = await client.get("/v1/exposures?status=new&status=lost", headers=auth(dm))
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["status"]


# --- what held: odd input on each lifecycle call is refused, and changes nothing ---------------------------------


async def test_odd_bodies_on_claims_reports_returns_and_surveys_are_refused_and_change_nothing(app, client, db):
    operator = await operator_token(app)
    dm_id, dm = await register(client, "deal_maker")
    lb_id, lb = await register(client, "lead_buyer")
    lead_id, exposure_id = await claimed_deal(app, client, dm_id, dm)
    (lb_offer,) = await offer_lead_to(app, await submit_lead(client), [lb_id])
    for body in ({"exclusive": "true"}, {"exclusive": None}, {"exclusive": 1}, {"exclusive": False, "x": 1}, [], 5):
        response = await client.post(f"/v1/offers/{lb_offer}/claim", headers=auth(lb), json=body)
        assert response.status_code == 422, (body, response.text)
    for path in ("/v1/offers/ü🙂/claim", "/v1/offers/" + "a" * 5000 + "/claim", "/v1/offers/%00/claim"):
        assert (await client.post(path, headers=auth(lb), json={})).status_code == 404
    for body in (
        {"status": "new"},
        {"status": "returned"},
        {"status": None},
        {"status": "WON"},
        {"status": "won", "turnover": money(1.5)},
        {"status": "won", "turnover": money(10**16)},
        {"status": "won", "turnover": money(100, "EUR")},
        {"status": "contacted", "turnover": money(100)},
        {"status": "contacted", "note": "x" * 2001},
        {},
    ):
        response = await client.post(f"/v1/exposures/{exposure_id}/status", headers=auth(dm), json=body)
        assert response.status_code == 422, (body, response.text)
    for body in (
        {"reason": None},
        {"reason": 5},
        {"reason": ""},
        {"reason": "\u3000\u00a0"},
        {"reason": "x" * 2001},
        {},
    ):
        response = await client.post(f"/v1/exposures/{exposure_id}/return", headers=auth(dm), json=body)
        assert response.status_code == 422, (body, response.text)
    # Another business's exposure is a 404 on every call, and in no list.
    for method, path, body in (
        ("GET", f"/v1/exposures/{exposure_id}", None),
        ("POST", f"/v1/exposures/{exposure_id}/status", {"status": "contacted"}),
        ("POST", f"/v1/exposures/{exposure_id}/return", {"reason": "x"}),
        ("POST", f"/v1/exposures/{exposure_id}/exclusive", None),
    ):
        assert (await client.request(method, path, headers=auth(lb), json=body)).status_code == 404
    assert (await client.get("/v1/exposures", headers=auth(lb))).json()["items"] == []
    assert await db.count(Exposure) == 1
    assert await db.scalar(select(Exposure.status).where(Exposure.id == exposure_id)) == "new"
    assert await db.count(ExposureEvent, ExposureEvent.exposure_id == exposure_id) == 1
    # Surveys: odd answers are 422s that leave the link usable; forged links 404s.
    await report(client, dm, exposure_id, "lost")
    token = await survey_token(client, operator, lead_id)
    for body in (
        {"hired": False, "satisfaction": 0},
        {"hired": False, "satisfaction": "5"},
        {"hired": False, "satisfaction": 5.0},
        {"hired": None, "satisfaction": 3},
        {"hired": True, "satisfaction": 3, "amount": money(10**20)},
        {"hired": True, "satisfaction": 3, "business_id": "ü"},
        {"hired": False, "satisfaction": 3, "amount": money(100)},
    ):
        response = await client.post(f"/v1/surveys/{token}", json=body)
        assert response.status_code == 422, (body, response.text)
    for forged in ("abc", "a.b.c", "ü.ü", "a" * 5000 + ".b", token.split(".")[0] + "."):
        assert (await client.get(f"/v1/surveys/{forged}")).status_code == 404
    answered = await client.post(f"/v1/surveys/{token}", json={"hired": False, "satisfaction": 3, "comment": "🙂 תודה"})
    assert answered.status_code == 200, answered.text


async def test_a_blocked_business_acts_no_more_at_once_and_a_second_block_releases_nothing_twice(app, client, db):
    operator = await operator_token(app)
    dm_id, dm = await register(client, "deal_maker")
    lead_id, exposure_id = await claimed_deal(app, client, dm_id, dm)
    (offer_id,) = await offer_lead_to(app, await submit_lead(client), [dm_id])
    assert (await client.get("/v1/offers", headers=auth(dm))).status_code == 200  # its token is in the cache now
    assert (await client.post(f"/v1/businesses/{dm_id}/block", headers=auth(operator), json={})).status_code == 200
    for path, body in (
        (f"/v1/offers/{offer_id}/claim", {}),
        (f"/v1/exposures/{exposure_id}/return", {"reason": "x"}),
        ("/v1/businesses/me/leads", lead_body()),
    ):
        assert (await client.post(path, headers=auth(dm), json=body)).status_code == 403
    released = await client.get(f"/v1/exposures/{exposure_id}", headers=auth(dm))
    assert released.json()["status"] == "lost" and released.json()["contact"] is None
    assert (await client.post(f"/v1/businesses/{dm_id}/block", headers=auth(operator))).status_code == 200
    assert await db.scalar(select(Lead.exposure_count).where(Lead.id == lead_id)) == 0
