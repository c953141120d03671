"""Edges of the fraud part over HTTP: surveys answered twice at once, operators' decisions raced, the pages of the
alert, notification and public unreliable lists (the last one's cursor standing on its own), odd input on every
fraud route (never a 500), and the reliability the ranking reads once a block is lifted."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from marketplace.clock import clock
from marketplace.db.models import Business, Exposure, FraudDecision, Lead, Offer, Survey, UsedLink
from marketplace.fraud.services import load_deals, load_peers
from tests.factories import auth, offers_of, operator_token, register, submit_lead
from tests.integration.fraud_market import answer, claimed_deal, hired, notifications, report, survey_token
from tests.integration.test_fraud import alerts, hide_a_won_deal
from workers.actors import expire_lapsed, fraud_scan, send_quiet_surveys


async def _reliability(db, business_id: str) -> int:
    return int(await db.scalar(select(Business.reliability_bp).where(Business.id == business_id)))


async def _ranking_reliability(client, operator: str, business_id: str) -> float:
    lead_id = await submit_lead(client)
    ranking = await client.get(f"/v1/leads/{lead_id}/ranking", headers=auth(operator))
    assert ranking.status_code == 200, ranking.text
    (factors,) = [c["factors"] for c in ranking.json()["items"] if c["business_id"] == business_id]
    return float(factors["reliability"])


# --- what was wrong -------------------------------------------------------------------------------------------


async def test_reactivation_after_a_confirmed_alert_restores_the_reliability_the_ranking_reads(app, client, db):
    """A confirmed alert, then the operator lets the business back in: what the confirmed alert held no longer
    counts against it (rules.undecided), as after a dismissal, whose reliability is worked out again at once.
    Reliability is back to 1.0 once it is active again. (Reactivation marked nothing for re-assessment, so it kept
    the confirmed alert's reliability, 0.41, in the ranking until the daily full rescan; it is assessed at once.)"""
    operator = await operator_token(app)
    dm_id, dm = await register(client, "deal_maker")
    await hide_a_won_deal(app, client, operator, dm_id, dm)
    (alert,) = await alerts(client, operator)
    assert await _reliability(db, dm_id) < 10_000
    decided = await client.post(
        f"/v1/fraud/alerts/{alert['id']}/decision", headers=auth(operator), json={"decision": "confirm", "note": "x"}
    )
    assert decided.status_code == 200, decided.text
    back = await client.post(
        f"/v1/businesses/{dm_id}/status", headers=auth(operator), json={"status": "active", "reason": "appeal"}
    )
    assert back.status_code == 200, back.text
    await fraud_scan()
    assert await _reliability(db, dm_id) == 10_000
    assert await _ranking_reliability(client, operator, dm_id) == 1.0


async def test_the_unreliable_list_pages_on_after_the_cursor_business_is_taken_off_it(app, client):
    """The next page carries on after where the client stopped, whatever changed in between: the cursor holds the
    last business's mark time and id. (It was the id alone, resolved at the next request: once an operator took that
    business off the list, the next page was a 422, and one marked again skipped or repeated entries.)"""
    clock.freeze(datetime(2025, 3, 3, 12, tzinfo=UTC))
    operator = await operator_token(app)
    for _ in range(3):
        business_id, _ = await register(client)
        assert (await client.post(f"/v1/businesses/{business_id}/block", headers=auth(operator))).status_code == 200
    everyone = [b["id"] for b in (await client.get("/v1/unreliable")).json()["items"]]
    first = (await client.get("/v1/unreliable", params={"limit": 1})).json()
    assert [b["id"] for b in first["items"]] == everyone[:1] and first["next_cursor"]
    cleared = await client.post(
        f"/v1/businesses/{everyone[0]}/status",
        headers=auth(operator),
        json={"status": "active", "reason": "the mark was wrong", "unreliable": False},
    )
    assert cleared.status_code == 200, cleared.text
    second = await client.get("/v1/unreliable", params={"limit": 1, "cursor": first["next_cursor"]})
    assert second.status_code == 200, second.text
    assert [b["id"] for b in second.json()["items"]] == everyone[1:2]


async def _replacement_of(client, token: str, exposure_id: str) -> dict:
    response = await client.get(f"/v1/exposures/{exposure_id}", headers=auth(token))
    assert response.status_code == 200, response.text
    return dict(response.json()["replacement"])


async def _replacements_offered(app, client, token: str, exposure_id: str) -> list[dict]:
    """The next lead that fits goes out in its first wave: the offers it makes the business as the replacement."""
    await app.state.ranking_sync.settled()
    lead_id = await submit_lead(client)
    await app.state.jobs.run_due()
    mine = await offers_of(client, token)
    return [o for o in mine if o["lead_id"] == lead_id and o["replaces_exposure_id"] == exposure_id]


async def _returned_then_hired(app, client, db, settings) -> tuple[str, str, str, str, str, str]:
    """A deal maker returns a lead as irrelevant (owed a replacement, none open), is offered one by the next lead that
    fits, and the customer then says it hired it: the scan opens a returned_then_hired alert. (operator, business id,
    token, returned exposure, the replacement offer made before the alert, the alert)."""
    operator = await operator_token(app)
    returner_id, returner = await register(client, "deal_maker", name="Returner")
    lead_id, exposure_id = await claimed_deal(app, client, returner_id, returner)
    returned = await client.post(
        f"/v1/exposures/{exposure_id}/return", headers=auth(returner), json={"reason": "not our area"}
    )
    assert returned.status_code == 200 and returned.json()["replacement_owed"] is True, returned.text
    clock.advance(timedelta(days=settings.fraud.quiet_days, minutes=1))
    await send_quiet_surveys()
    response = await answer(client, await survey_token(client, operator, lead_id), **hired(returner_id, 50_000))
    assert response.status_code == 200, response.text
    (offer,) = await _replacements_offered(app, client, returner, exposure_id)  # before any scan: offered
    await fraud_scan()
    (alert,) = await alerts(client, operator, status="open")
    assert alert["business_id"] == returner_id and alert["reasons"][0]["kind"] == "returned_then_hired"
    return operator, returner_id, returner, exposure_id, offer["offer_id"], alert["id"]


async def test_a_confirmed_alert_forfeits_the_replacement_of_a_return_its_customer_contradicted(
    app, client, db, settings
):
    """A deal maker returned a lead as irrelevant, and its customer says it hired that business (DESIGN: a good lead
    returned as irrelevant). The replacement stayed owed through the alert (its open offer claimable) and after the
    confirmation; once the business was let back in, the next lead was offered to it as that replacement. While the
    alert is open the replacement is held (the offer withdrawn, none made); confirmed, it is forfeited for good."""
    operator, returner_id, returner, exposure_id, offer_id, alert_id = await _returned_then_hired(
        app, client, db, settings
    )

    # Open alert: the offer made before it is withdrawn, and no new one is made.
    assert await db.scalar(select(Offer.withdrawn_for).where(Offer.id == offer_id)) == "fraud_alert"
    refused = await client.post(f"/v1/offers/{offer_id}/claim", headers=auth(returner))
    assert refused.status_code == 409 and "hired this business" in refused.json()["detail"], refused.text
    assert (await _replacement_of(client, returner, exposure_id))["status"] == "held"
    assert await _replacements_offered(app, client, returner, exposure_id) == []

    decided = await client.post(
        f"/v1/fraud/alerts/{alert_id}/decision", headers=auth(operator), json={"decision": "confirm", "note": "lied"}
    )
    assert decided.status_code == 200, decided.text
    replacement = await _replacement_of(client, returner, exposure_id)
    assert replacement["status"] == "forfeited" and replacement["forfeited_at"] is not None, replacement
    assert await db.scalar(select(Exposure.replacement_owed_since).where(Exposure.id == exposure_id)) is None

    # Let back in: still no replacement for the false return.
    back = await client.post(
        f"/v1/businesses/{returner_id}/status", headers=auth(operator), json={"status": "active", "reason": "talked"}
    )
    assert back.status_code == 200, back.text
    await app.state.jobs.run_due()
    assert await _replacements_offered(app, client, returner, exposure_id) == []
    assert (await _replacement_of(client, returner, exposure_id))["status"] == "forfeited"


async def test_a_dismissed_alert_makes_the_replacement_it_held_owed_again(app, client, db, settings):
    """The customer's word alone costs the deal maker nothing for good (customers are unverified): dismissed, the
    alert's hold is lifted, and the next lead that fits is offered as the replacement."""
    operator, _, returner, exposure_id, _, alert_id = await _returned_then_hired(app, client, db, settings)
    assert (await _replacement_of(client, returner, exposure_id))["status"] == "held"

    decided = await client.post(
        f"/v1/fraud/alerts/{alert_id}/decision", headers=auth(operator), json={"decision": "dismiss", "note": "ok"}
    )
    assert decided.status_code == 200, decided.text
    assert (await _replacement_of(client, returner, exposure_id))["status"] == "owed"
    (offer,) = await _replacements_offered(app, client, returner, exposure_id)
    taken = await client.post(f"/v1/offers/{offer['offer_id']}/claim", headers=auth(returner))
    assert taken.status_code == 201, taken.text
    assert (await _replacement_of(client, returner, exposure_id))["status"] == "claimed"


# --- what held (kept: each could break) -----------------------------------------------------------------------


async def test_a_survey_link_answered_twice_at_once_is_answered_once(app, client, db):
    operator = await operator_token(app)
    dm_id, dm = await register(client, "deal_maker")
    lead_id, exposure_id = await claimed_deal(app, client, dm_id, dm)
    await report(client, dm, exposure_id, "lost")
    token = await survey_token(client, operator, lead_id)
    responses = await asyncio.gather(
        answer(client, token, hired=False, satisfaction=2), answer(client, token, **hired(dm_id, 1_000))
    )
    assert sorted(r.status_code for r in responses) == [200, 410], [r.text for r in responses]
    (kept,) = [r.json() for r in responses if r.status_code == 200]
    survey = await db.scalar(select(Survey).where(Survey.lead_id == lead_id))
    assert (survey.hired, survey.business_id) == (kept["hired"], kept["business_id"])
    assert await db.count(UsedLink) == 1


async def test_two_decisions_on_one_alert_at_once_apply_one(app, client, db):
    operator = await operator_token(app)
    dm_id, dm = await register(client, "deal_maker")
    await hide_a_won_deal(app, client, operator, dm_id, dm)
    (alert,) = await alerts(client, operator)
    path = f"/v1/fraud/alerts/{alert['id']}/decision"
    responses = await asyncio.gather(
        client.post(path, headers=auth(operator), json={"decision": "confirm", "note": "a"}),
        client.post(path, headers=auth(operator), json={"decision": "dismiss", "note": "b"}),
    )
    assert sorted(r.status_code for r in responses) == [200, 409], [r.text for r in responses]
    (decision,) = await db.scalars(select(FraudDecision))
    (won,) = [r.json() for r in responses if r.status_code == 200]
    assert won["decision"]["decision"] == decision.decision


async def test_lists_page_through_every_item_once(app, client):
    clock.freeze(datetime(2025, 3, 3, 12, tzinfo=UTC))  # every mark at one time: ties broken by id
    operator = await operator_token(app)
    for _ in range(3):
        dm_id, dm = await register(client, "deal_maker")
        await hide_a_won_deal(app, client, operator, dm_id, dm)
        assert (await client.post(f"/v1/businesses/{dm_id}/block", headers=auth(operator))).status_code == 200

    async def paged(path: str, limit: int, headers: dict[str, str]) -> list[str]:
        seen: list[str] = []
        cursor = None
        for _ in range(50):
            params = {"limit": limit} | ({"cursor": cursor} if cursor else {})
            page = await client.get(path, headers=headers, params=params)
            assert page.status_code == 200, page.text
            seen += [item["id"] for item in page.json()["items"]]
            cursor = page.json()["next_cursor"]
            if not cursor:
                return seen
        raise AssertionError("no end")

    every_alert = [a["id"] for a in await alerts(client, operator, limit=200)]
    assert len(every_alert) == 3 and await paged("/v1/fraud/alerts", 1, auth(operator)) == every_alert
    every_message = [m["id"] for m in await notifications(client, operator)]
    assert await paged("/v1/notifications", 2, auth(operator)) == every_message
    everyone = [b["id"] for b in (await client.get("/v1/unreliable", params={"limit": 200})).json()["items"]]
    assert len(everyone) == 3 and await paged("/v1/unreliable", 1, {}) == everyone
    for params in ({"limit": 0}, {"limit": 201}, {"limit": "1.0"}, {"cursor": "x"}, {"cursor": "ntf_x"}):
        for path, headers in (
            ("/v1/fraud/alerts", auth(operator)),
            ("/v1/notifications", auth(operator)),
            ("/v1/unreliable", {}),
        ):
            response = await client.get(path, headers=headers, params=params)
            assert response.status_code == 422, (path, params, response.text)


async def test_alerts_filter_by_business_with_status_and_pages(app, client, db):
    """An operator reviewing one business lists its alerts alone (`?business_id=`), with `?status=` and page by page;
    an empty `?business_id=` is a 422 naming it, not every business's alerts."""
    clock.freeze(datetime(2025, 3, 3, 12, tzinfo=UTC))
    operator = await operator_token(app)
    a_id, a = await register(client, "deal_maker")
    b_id, b = await register(client, "deal_maker")
    await hide_a_won_deal(app, client, operator, a_id, a)
    await hide_a_won_deal(app, client, operator, b_id, b)
    (first,) = await alerts(client, operator, business_id=a_id)
    assert first["business_id"] == a_id
    r = await client.post(
        f"/v1/fraud/alerts/{first['id']}/decision", headers=auth(operator), json={"decision": "dismiss", "note": "ok"}
    )
    assert r.status_code == 200, r.text
    clock.advance(timedelta(days=1))
    await hide_a_won_deal(app, client, operator, a_id, a)
    of_a = await alerts(client, operator, business_id=a_id)
    assert [x["business_id"] for x in of_a] == [a_id, a_id] and of_a[1]["id"] == first["id"], of_a
    assert [x["id"] for x in await alerts(client, operator, business_id=a_id, status="dismissed")] == [first["id"]]
    assert [x["id"] for x in await alerts(client, operator, business_id=a_id, status="open")] == [of_a[0]["id"]]
    assert [x["business_id"] for x in await alerts(client, operator, business_id=b_id)] == [b_id]
    assert await alerts(client, operator, business_id=b_id, status="dismissed") == []
    assert await alerts(client, operator, business_id="biz_nope") == []
    page = await client.get("/v1/fraud/alerts", headers=auth(operator), params={"business_id": a_id, "limit": 1})
    assert [x["id"] for x in page.json()["items"]] == [of_a[0]["id"]] and page.json()["next_cursor"], page.text
    params = {"business_id": a_id, "limit": 1, "cursor": page.json()["next_cursor"]}
    rest = await client.get("/v1/fraud/alerts", headers=auth(operator), params=params)
    assert [x["id"] for x in rest.json()["items"]] == [first["id"]] and rest.json()["next_cursor"] is None, rest.text
    empty = await client.get("/v1/fraud/alerts?business_id=", headers=auth(operator))
    assert empty.status_code == 422 and empty.json()["errors"][0]["field"] == "business_id", empty.text


async def test_odd_input_on_the_fraud_routes_is_refused_never_a_500(app, client, db):
    operator = await operator_token(app)
    dm_id, dm = await register(client, "deal_maker")
    await hide_a_won_deal(app, client, operator, dm_id, dm)
    (alert,) = await alerts(client, operator)
    lead_id, exposure_id = await claimed_deal(app, client, dm_id, dm)
    await report(client, dm, exposure_id, "lost")
    token = await survey_token(client, operator, lead_id)
    used = await db.count(UsedLink)  # the hidden deal's answer spent one
    as_json = {"content-type": "application/json"}
    decision = f"/v1/fraud/alerts/{alert['id']}/decision"
    for body in (
        b"null",
        b"[]",
        b'"x"',
        b"",
        b'{"decision":"CONFIRM","note":"x"}',
        b'{"decision":null,"note":"x"}',
        b'{"decision":"confirm","note":"a\\u0000b"}',
        b'{"decision":"confirm","note":"' + b"x" * 2001 + b'"}',
    ):
        response = await client.post(decision, headers={**auth(operator), **as_json}, content=body)
        assert response.status_code == 422, (body, response.text)
    assert await db.count(FraudDecision) == 0
    for path in (
        "/v1/fraud/alerts/" + "a" * 500,
        "/v1/fraud/alerts/%E2%82%AC",
        "/v1/surveys/" + "a" * 5000,
        "/v1/surveys/a.b.c",
        "/v1/surveys/%E2%82%AC.%E2%82%AC",
        "/v1/surveys/.",
        "/v1/surveys/e30.",
        "/v1/surveys/%20",
    ):
        assert (await client.get(path, headers=auth(operator))).status_code == 404, path
    for body in (
        b"null",
        b"[]",
        b'{"hired":true,"satisfaction":3,"business_id":"' + b"b" * 41 + b'"}',
        b'{"hired":true,"satisfaction":3,"comment":"' + b"c" * 2001 + b'"}',
    ):
        response = await client.post(f"/v1/surveys/{token}", headers=as_json, content=body)
        assert response.status_code == 422, (body, response.text)
    assert await db.count(UsedLink) == used  # refused answers leave the link usable
    assert (await client.get(f"/v1/surveys/{token}")).status_code == 200
    for body in (b"[]", b'"x"', b'{"reason": 5}', b'{"unreliable": null}', b"{"):
        response = await client.post(
            f"/v1/businesses/{dm_id}/block", headers={**auth(operator), **as_json}, content=body
        )
        assert response.status_code in (400, 422), (body, response.text)
    assert (await db.scalar(select(Business.status).where(Business.id == dm_id))) == "active"
    assert (await client.post("/v1/businesses/biz_nope/block", headers=auth(operator))).status_code == 404


async def test_deals_a_block_closed_are_not_the_business_reporting_them_lost(app, client, db):
    """A block closes a deal maker's open deals as lost. They were counted as lost deals it had reported: in its own
    signals once it was let back in, and in the category norms. Only the deal it reported lost itself still is."""
    operator = await operator_token(app)
    dm_id, dm = await register(client, "deal_maker")
    await claimed_deal(app, client, dm_id, dm)  # left open
    _, contacted = await claimed_deal(app, client, dm_id, dm)
    await report(client, dm, contacted, "contacted")
    _, its_own_loss = await claimed_deal(app, client, dm_id, dm)
    await report(client, dm, its_own_loss, "lost")
    blocked = await client.post(f"/v1/businesses/{dm_id}/block", headers=auth(operator), json={"reason": "x"})
    assert blocked.status_code == 200, blocked.text
    back = await client.post(
        f"/v1/businesses/{dm_id}/status", headers=auth(operator), json={"status": "active", "reason": "appeal"}
    )
    assert back.status_code == 200, back.text

    statuses = await db.scalars(select(Exposure.status).where(Exposure.business_id == dm_id))
    assert sorted(statuses) == ["lost", "lost", "lost"]  # the block closed the two open deals
    async with app.state.sessions() as session:
        deals = (await load_deals(session, [dm_id]))[dm_id]
        peers = await load_peers(session)
    assert [(d.exposure_id, d.status) for d in deals] == [(its_own_loss, "lost")]
    (counts,) = [c for (mode, _), c in peers.items() if mode == "deal_maker"]
    assert (counts.exposures, counts.lost) == (1, 1)


async def test_a_decision_missing_its_fields_names_every_one_and_decides_nothing(app, client, db):
    """`{}` names both required fields, not only the first; a note given twice or holding an unpaired surrogate
    escape is refused naming it; the alert stays open for a decision that is whole."""
    operator = await operator_token(app)
    dm_id, dm = await register(client, "deal_maker")
    await hide_a_won_deal(app, client, operator, dm_id, dm)
    (alert,) = await alerts(client, operator)
    path = f"/v1/fraud/alerts/{alert['id']}/decision"
    headers = {**auth(operator), "content-type": "application/json"}
    empty = await client.post(path, headers=headers, content=b"{}")
    assert empty.status_code == 422, empty.text
    assert empty.headers["content-type"] == "application/problem+json"
    assert empty.json()["errors"] == [
        {"field": "decision", "message": "Object missing required field `decision`"},
        {"field": "note", "message": "Object missing required field `note`"},
    ]
    only_note = await client.post(path, headers=headers, content=b'{"note": "x"}')
    assert [e["field"] for e in only_note.json()["errors"]] == ["decision"], only_note.text
    for body, message in (
        (b'{"decision": "dismiss", "decision": "confirm", "note": "x"}', "given more than once; it takes one value"),
        (b'{"decision": "confirm", "note": "\\ud800"}', "is not valid Unicode"),
    ):
        refused = await client.post(path, headers=headers, content=body)
        assert refused.status_code == 422, refused.text
        (error,) = refused.json()["errors"]
        assert error["field"] == ("decision" if b"dismiss" in body else "note") and message in error["message"], error
    assert await db.count(FraudDecision) == 0
    (still,) = await alerts(client, operator)
    assert still["status"] == alert["status"] and still["decision"] is None


async def test_deals_a_block_closed_are_no_losses_in_the_ranking_the_model_or_the_stats(app, client, db, monkeypatch):
    """A deal maker claims four leads and leaves them `new`; an operator blocks it by mistake and lets it back in. The
    block closed the four deals as lost, and they counted as its own losses: `lost: 4` in its stats, p_won 0.25 ->
    0.1786 and its score 30000 -> 21429 against a newcomer's 30000, and as lost samples for the conversion model and
    the category's prior. Now its ranking equals a peer's with the same real history (one deal each reported lost),
    and its stats say `closed_by_block: 4`, `lost: 1`."""
    from marketplace.ranking import service as ranking

    operator = await operator_token(app)
    d1_id, d1 = await register(client, "deal_maker")
    peer_id, peer = await register(client, "deal_maker")
    for business_id, token in ((d1_id, d1), (peer_id, peer)):
        _, own_loss = await claimed_deal(app, client, business_id, token)
        await report(client, token, own_loss, "lost")
    for _ in range(4):
        await claimed_deal(app, client, d1_id, d1)  # left `new`
    blocked = await client.post(
        f"/v1/businesses/{d1_id}/block", headers=auth(operator), json={"reason": "mistake", "unreliable": False}
    )
    assert blocked.status_code == 200, blocked.text
    back = await client.post(
        f"/v1/businesses/{d1_id}/status",
        headers=auth(operator),
        json={"status": "active", "reason": "block was a mistake"},
    )
    assert back.status_code == 200, back.text

    for path, token in (("/v1/businesses/me/stats", d1), (f"/v1/businesses/{d1_id}/stats", operator)):
        stats = (await client.get(path, headers=auth(token))).json()
        assert (stats["exposures"], stats["lost"], stats["closed_by_block"]) == (5, 1, 4), stats

    lead_id = await submit_lead(client)
    ranking_out = await client.get(f"/v1/leads/{lead_id}/ranking", headers=auth(operator))
    assert ranking_out.status_code == 200, ranking_out.text
    factors = {c["business_id"]: c["factors"] for c in ranking_out.json()["items"]}
    assert factors[d1_id]["history_exposures"] == factors[peer_id]["history_exposures"] == 1
    assert factors[d1_id]["p_won"] < 0.25  # its own reported loss still counts
    mine, theirs = ({k: v for k, v in factors[b].items() if k != "explored"} for b in (d1_id, peer_id))
    assert mine == theirs

    # The conversion model learns from the two losses the businesses reported, each from a business whose win rate
    # is one loss in; the category's prior counts those two decided deals only.
    samples: list[ranking.Sample] = []
    monkeypatch.setattr(ranking, "train", lambda s: samples.extend(s))
    async with app.state.uow() as uow:
        assert await ranking.train_conversion_model(uow.session, app.state.settings) is None
        priors = await ranking.load_category_priors(uow.session, app.state.settings)
    assert [s.won for s in samples] == [False, False]
    k = ranking.PRIOR_STRENGTH
    prior = priors["plumbing"].win_rate
    assert prior == pytest.approx(k * ranking.DEFAULT_WIN_RATE / (2 + k))
    assert [s.business_win_rate for s in samples] == [pytest.approx(k * prior / (1 + k))] * 2


async def test_a_block_releases_only_deals_whose_lead_is_still_on_the_market(app, client, db):
    """A confirmed alert's block gave back leads already past their time: `released_leads` named an expired lead no
    wave went out for, and the deal on it was closed as lost with its contact hidden, for nobody. Now a deal on a
    lead past its time (swept to `expired` or not yet) stays as it is; a live lead in the same block is released."""
    operator = await operator_token(app)
    dm_id, dm = await register(client, "deal_maker")
    await hide_a_won_deal(app, client, operator, dm_id, dm)
    (alert,) = await alerts(client, operator)
    swept_lead, swept = await claimed_deal(app, client, dm_id, dm)
    clock.advance(timedelta(hours=app.state.settings.windows.lead_ttl_hours + 1))
    await expire_lapsed()
    assert await db.scalar(select(Lead.status).where(Lead.id == swept_lead)) == "expired"
    live_lead, live = await claimed_deal(app, client, dm_id, dm)

    decided = await client.post(
        f"/v1/fraud/alerts/{alert['id']}/decision", headers=auth(operator), json={"decision": "confirm", "note": "x"}
    )
    assert decided.status_code == 200, decided.text
    assert decided.json()["released_leads"] == [live_lead]
    kept = (await client.get(f"/v1/exposures/{swept}", headers=auth(dm))).json()
    assert kept["status"] == "new" and kept["contact"] is not None
    released = (await client.get(f"/v1/exposures/{live}", headers=auth(dm))).json()
    assert released["status"] == "lost" and released["contact"] is None
    swept_row = await db.scalar(select(Lead).where(Lead.id == swept_lead))
    assert (swept_row.status, swept_row.exposure_count) == ("expired", 1)
    live_row = await db.scalar(select(Lead).where(Lead.id == live_lead))
    assert (live_row.status, live_row.exposure_count) == ("open", 0)


async def test_an_operators_block_leaves_a_deal_on_a_lead_past_its_time_not_yet_swept(app, client, db):
    """The lead's time ran out but the sweep has not marked it `expired` yet: still not on the market, so not
    released (it was: closed as lost, its contact hidden, and the lead turned `expired` by the release itself)."""
    operator = await operator_token(app)
    dm_id, dm = await register(client, "deal_maker")
    lapsed_lead, lapsed = await claimed_deal(app, client, dm_id, dm)
    clock.advance(timedelta(hours=app.state.settings.windows.lead_ttl_hours + 1))
    live_lead, live = await claimed_deal(app, client, dm_id, dm)
    before = await db.scalar(select(Lead.status).where(Lead.id == lapsed_lead))
    assert (await client.post(f"/v1/businesses/{dm_id}/block", headers=auth(operator))).status_code == 200
    kept = (await client.get(f"/v1/exposures/{lapsed}", headers=auth(dm))).json()
    assert kept["status"] == "new" and kept["contact"] is not None
    lapsed_row = await db.scalar(select(Lead).where(Lead.id == lapsed_lead))
    assert (lapsed_row.status, lapsed_row.exposure_count) == (before, 1)
    assert (await client.get(f"/v1/exposures/{live}", headers=auth(dm))).json()["contact"] is None
    assert await db.scalar(select(Lead.exposure_count).where(Lead.id == live_lead)) == 0


async def test_a_note_or_a_return_reason_of_invisible_characters_alone_is_refused_and_nothing_moves(app, client, db):
    """`"\\u200b"` passed where blank text is refused: an alert was dismissed, and a lead returned for its refund,
    on a reason that says nothing (text.blank, as names and descriptions are read)."""
    operator = await operator_token(app)
    dm_id, dm = await register(client, "deal_maker")
    await hide_a_won_deal(app, client, operator, dm_id, dm)
    (alert,) = await alerts(client, operator)
    for note in ("\u200b", "\u200b\u200f", "\ufeff", " \u2060\u200d ", "\u2800", "\u3164"):
        r = await client.post(
            f"/v1/fraud/alerts/{alert['id']}/decision",
            headers=auth(operator),
            json={"decision": "dismiss", "note": note},
        )
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "note", r.text
    (still,) = await alerts(client, operator)
    assert still["status"] == "open"
    lb_id, lb = await register(client, "lead_buyer")
    _, exposure_id = await claimed_deal(app, client, lb_id, lb)
    for reason in ("\u200b", "\ufeff", "\u2060\u200d", "\u3164", "\u115f\uffa0", "\u034f"):
        r = await client.post(f"/v1/exposures/{exposure_id}/return", headers=auth(lb), json={"reason": reason})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "reason", r.text
    assert (await db.scalar(select(Exposure.status).where(Exposure.id == exposure_id))) == "new"
