"""Fraud watch through the HTTP API and the workers: a business that hides a won deal is caught by its
customer's survey, scored, alerted on once, confirmed by an operator (blocked, listed as unreliable, its open
leads back on the market, its commissions still owed) or dismissed (reopening only on new evidence)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from marketplace.clock import clock
from marketplace.db.models import (
    Business,
    BusinessStatusChange,
    Exposure,
    ExposureEvent,
    FraudAlert,
    FraudAssessment,
    FraudDecision,
    FraudDirty,
    FraudModel,
    Lead,
    Offer,
    Survey,
)
from marketplace.fraud import services as fraud
from tests.factories import auth, offers_of, operator_token, register, submit_lead
from tests.integration.fraud_market import answer, claimed_deal, hired, notifications, report, survey_token
from workers.actors import fraud_scan, send_quiet_surveys, train_fraud_model


async def alerts(client: httpx.AsyncClient, operator: str, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/v1/fraud/alerts", headers=auth(operator), params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def hide_a_won_deal(app: Any, client: httpx.AsyncClient, operator: str, business_id: str, token: str) -> str:
    """The customer hired the business, which reported the deal lost; the customer says so in its survey."""
    lead_id, exposure_id = await claimed_deal(app, client, business_id, token)
    await report(client, token, exposure_id, "lost")
    response = await answer(client, await survey_token(client, operator, lead_id), **hired(business_id, 180_000))
    assert response.status_code == 200, response.text
    await app.state.jobs.run_due()  # the leads' waves went out
    await fraud_scan()  # the scheduled scan: the answer was news for the business
    return lead_id


async def test_a_hidden_deal_opens_one_alert_and_a_confirmation_blocks_and_frees_the_leads(app, client, db):
    operator = await operator_token(app)
    hider_id, hider = await register(client, "deal_maker", name="Shady Pipes")
    honest_id, honest = await register(client, "deal_maker", name="Honest Pipes")
    await register(client, "lead_buyer", name="Pipe Buyers")

    # A deal it did report and was paid for: the commission is owed, whatever happens next.
    paid_lead, paid = await claimed_deal(app, client, hider_id, hider)
    await report(client, hider, paid, "won", turnover=100_000)
    paid_survey = await survey_token(client, operator, paid_lead)
    assert (await answer(client, paid_survey, **hired(hider_id, 100_000))).status_code == 200
    await report(client, hider, paid, "paid")
    owed = (await client.get("/v1/wallet", headers=auth(hider))).json()["owed"]
    assert owed["amount_minor"] > 0
    # Two leads it is still working on, one it lost, and a deal it won that is not paid yet.
    open_leads = [await claimed_deal(app, client, hider_id, hider) for _ in range(2)]
    await report(client, hider, open_leads[1][1], "contacted")
    lost_lead, lost = await claimed_deal(app, client, hider_id, hider)
    await report(client, hider, lost, "lost")
    won_lead, won = await claimed_deal(app, client, hider_id, hider)
    await report(client, hider, won, "won", turnover=200_000)
    await app.state.jobs.run_due()
    assert await alerts(client, operator) == []  # an honest-looking history: no alert

    hidden_lead = await hide_a_won_deal(app, client, operator, hider_id, hider)
    (alert,) = await alerts(client, operator)
    assert alert["business_id"] == hider_id and alert["business_name"] == "Shady Pipes" and alert["status"] == "open"
    assert alert["risk_score"] >= 0.5 and alert["decision"] is None
    assert alert["reasons"][0]["kind"] == "hidden_deal" and alert["reasons"][0]["leads"] == [hidden_lead]
    assert alert["evidence"][0]["leads"] == [hidden_lead] and "reported lost" in alert["evidence"][0]["text"]
    (message,) = await notifications(client, operator, kind="alert")
    assert message["reference"] == alert["id"] and "Shady Pipes" in message["subject"]
    assert message["link"].endswith(f"/v1/fraud/alerts/{alert['id']}")

    # The risk feeds the ranking's reliability factor; the honest business keeps 1.0.
    hider_row = await db.scalar(select(Business).where(Business.id == hider_id))
    assert hider_row.reliability_bp < 10_000
    assert (await db.scalar(select(Business.reliability_bp).where(Business.id == honest_id))) == 10_000
    risk = await client.get(f"/v1/fraud/businesses/{hider_id}", headers=auth(operator))
    assert risk.status_code == 200 and risk.json()["reliability_bp"] == hider_row.reliability_bp
    assert risk.json()["assessed"] is True and risk.json()["computed_at"]
    # A business no scan has had news of is no 404: nothing found yet, and it says so.
    newcomer_id, _ = await register(client, "lead_buyer")
    fresh = (await client.get(f"/v1/fraud/businesses/{newcomer_id}", headers=auth(operator))).json()
    assert fresh["assessed"] is False and fresh["computed_at"] is None
    assert fresh["risk_score"] == 0 and fresh["reasons"] == [] and fresh["reliability_bp"] == 10_000
    assert (await client.get("/v1/fraud/businesses/biz_nope", headers=auth(operator))).status_code == 404
    fresh_lead = await submit_lead(client)
    ranking = await client.get(f"/v1/leads/{fresh_lead}/ranking", headers=auth(operator))
    factors = {c["business_id"]: c["factors"] for c in ranking.json()["items"] if not c["offered"]}
    assert factors[hider_id]["reliability"] == hider_row.reliability_bp / 10_000
    assert factors[honest_id]["reliability"] == 1.0

    # More news keeps the one alert up to date rather than opening another.
    await hide_a_won_deal(app, client, operator, hider_id, hider)
    (updated,) = await alerts(client, operator)
    assert updated["id"] == alert["id"] and updated["risk_score"] > alert["risk_score"]
    assert len(await notifications(client, operator, kind="alert")) == 1

    # A business never sees any score, its own or another's.
    for method, path in (
        ("GET", "/v1/fraud/alerts"),
        ("GET", f"/v1/fraud/alerts/{alert['id']}"),
        ("POST", f"/v1/fraud/alerts/{alert['id']}/decision"),
        ("GET", f"/v1/fraud/businesses/{hider_id}"),
        ("GET", f"/v1/fraud/businesses/{honest_id}"),
        ("GET", "/v1/notifications"),
    ):
        for token in (hider, honest):
            body = {"decision": "dismiss", "note": "x"}
            response = await client.request(method, path, headers=auth(token), json=body)
            assert response.status_code == 403, (method, path, response.text)
    me = (await client.get("/v1/businesses/me", headers=auth(hider))).json()
    assert me["unreliable"] is False and not {"reliability_bp", "risk_score", "alert"} & set(me)
    assert "reliability" not in str(me).replace("unreliable", "") and "risk" not in str(me)

    # The operator confirms: blocked, listed publicly, its open leads back on the market.
    before = {lead_id: await db.scalar(select(Lead).where(Lead.id == lead_id)) for lead_id, _ in open_leads}
    decided = await client.post(
        f"/v1/fraud/alerts/{alert['id']}/decision",
        headers=auth(operator),
        json={"decision": "confirm", "note": "The customer confirmed paying 1,800.00 ILS"},
    )
    assert decided.status_code == 200, decided.text
    body = decided.json()
    assert body["status"] == "confirmed" and body["business_status"] == "blocked"
    assert body["decision"]["decision"] == "confirm" and body["decision"]["decided_by"].startswith("operator:")
    assert body["decision"]["note"] == "The customer confirmed paying 1,800.00 ILS"
    (block,) = await db.scalars(select(BusinessStatusChange).where(BusinessStatusChange.business_id == hider_id))
    assert (block.to_status, block.unreliable, block.changed_by) == ("blocked", True, body["decision"]["decided_by"])
    assert alert["id"] in block.reason and "1,800.00 ILS" in block.reason
    # The business is told what the alert found, in the words its reasons show; the operator's note stays theirs.
    (told,) = await notifications(client, operator, kind="account_status")
    assert told["subject"] == "Your account is blocked" and "1,800.00 ILS" not in told["body"]
    assert f"Reason: a fraud alert was confirmed ({updated['reasons'][0]['text']}" in told["body"]
    # Its open leads and the lead it reported lost are freed. The won and the paid one stay, and so do the leads
    # whose customers say they hired it: they were served, and new calls would only bother them.
    assert set(body["released_leads"]) == {lead_id for lead_id, _ in open_leads} | {lost_lead}
    assert not {paid_lead, won_lead, hidden_lead} & set(body["released_leads"])
    unreliable = (await client.get("/v1/unreliable")).json()["items"]
    assert [b["id"] for b in unreliable] == [hider_id]
    assert (await db.scalar(select(Business.status).where(Business.id == hider_id))) == "blocked"
    for lead_id, exposure_id in open_leads:
        lead = await db.scalar(select(Lead).where(Lead.id == lead_id))
        assert lead.exposure_count == before[lead_id].exposure_count - 1 and lead.status == "open"
        exposure = await db.scalar(select(Exposure).where(Exposure.id == exposure_id))
        assert exposure.status == "lost"
        event = await db.scalar(
            select(ExposureEvent).where(ExposureEvent.exposure_id == exposure_id).order_by(ExposureEvent.id.desc())
        )
        assert event.actor == body["decision"]["decided_by"] and "released" in (event.note or "")
        # Its place went back to the market, and so did the contact: the blocked business no longer sees it.
        shown = (await client.get(f"/v1/exposures/{exposure_id}", headers=auth(hider))).json()
        assert shown["status"] == "lost" and shown["contact"] is None
    listed = {e["id"]: e for e in (await client.get("/v1/exposures", headers=auth(hider))).json()["items"]}
    assert all(listed[exposure_id]["contact"] is None for _, exposure_id in open_leads)
    assert listed[paid]["contact"] is not None  # a deal it keeps keeps its contact
    assert (await db.scalar(select(Exposure.status).where(Exposure.id == paid))) == "paid"
    # A new wave reaches the honest business with the freed leads.
    await app.state.jobs.run_due()
    offered = {o["lead_id"] for o in await offers_of(client, honest)}
    assert {lead_id for lead_id, _ in open_leads} <= offered
    assert await db.count(Offer, Offer.business_id == hider_id, Offer.status == "open") == 0
    # What it owes stays owed; it may still read it, but no longer act, except to settle what it owes: the deal
    # it won is paid, and its commission is charged.
    assert (await client.get("/v1/wallet", headers=auth(hider))).json()["owed"] == owed
    for exposure_id, status in ((won, "lost"), (open_leads[0][1], "contacted")):
        acting = await client.post(f"/v1/exposures/{exposure_id}/status", headers=auth(hider), json={"status": status})
        assert acting.status_code == 403 and "blocked" in acting.json()["detail"]
    assert (await client.post("/v1/businesses/me/leads", headers=auth(hider), json={})).status_code == 403
    returning = await client.post(f"/v1/exposures/{won}/return", headers=auth(hider), json={"reason": "x"})
    assert returning.status_code == 403
    settled = await report(client, hider, won, "paid", turnover=200_000)
    assert settled["status"] == "paid"
    assert (await client.get("/v1/wallet", headers=auth(hider))).json()["owed"]["amount_minor"] > owed["amount_minor"]

    # Decided once, kept with who and why; a second decision is a conflict.
    again = await client.post(
        f"/v1/fraud/alerts/{alert['id']}/decision", headers=auth(operator), json={"decision": "dismiss", "note": "x"}
    )
    assert again.status_code == 409
    (decision,) = await db.scalars(select(FraudDecision))
    assert (decision.decision, decision.business_id, decision.features["hidden_weight"]) == ("confirm", hider_id, 2.0)
    # While it stays blocked, later scans open nothing more.
    await fraud_scan()
    await train_fraud_model()
    assert [a["id"] for a in await alerts(client, operator)] == [alert["id"]]
    # An operator lets it back in: what the confirmed alert held does not count twice, new evidence does.
    back = await client.post(
        f"/v1/businesses/{hider_id}/status", headers=auth(operator), json={"status": "active", "reason": "appeal"}
    )
    assert back.status_code == 200, back.text
    await fraud_scan()
    assert [a["id"] for a in await alerts(client, operator)] == [alert["id"]]
    another = await hide_a_won_deal(app, client, operator, hider_id, hider)
    reopened = await alerts(client, operator, status="open")
    assert len(reopened) == 1 and reopened[0]["id"] != alert["id"]
    assert another in {lead for reason in reopened[0]["reasons"] for lead in reason["leads"]}


async def test_a_dismissed_alert_reopens_only_on_new_evidence(app, client, db, settings):
    operator = await operator_token(app)
    dm_id, dm = await register(client, "deal_maker")
    await hide_a_won_deal(app, client, operator, dm_id, dm)
    (alert,) = await alerts(client, operator, status="open")
    reliability = select(Business.reliability_bp).where(Business.id == dm_id)
    assert (await db.scalar(reliability)) < 10_000  # the hidden deal lowers its place in the ranking
    dismissed = await client.post(
        f"/v1/fraud/alerts/{alert['id']}/decision",
        headers=auth(operator),
        json={"decision": "dismiss", "note": "The customer mixed us up with another plumber"},
    )
    assert dismissed.status_code == 200, dismissed.text
    assert dismissed.json()["status"] == "dismissed" and dismissed.json()["business_status"] == "active"
    # What the operator dismissed no longer counts against it, at once and on every later assessment.
    assert (await db.scalar(reliability)) == 10_000
    assert await alerts(client, operator, status="open") == []

    # News without new evidence (another report, the daily rescan, time passing) opens nothing.
    lead_id, exposure_id = await claimed_deal(app, client, dm_id, dm)
    await report(client, dm, exposure_id, "contacted")
    await fraud_scan()
    clock.advance(timedelta(days=1))
    await train_fraud_model()
    assert await alerts(client, operator, status="open") == []
    assert (await db.scalar(select(Business.status).where(Business.id == dm_id))) == "active"
    assert (await db.scalar(reliability)) == 10_000

    # A new hidden deal on another lead reopens it: a new alert, the dismissed one stays as it was.
    await report(client, dm, exposure_id, "lost")
    response = await answer(client, await survey_token(client, operator, lead_id), **hired(dm_id))
    assert response.status_code == 200
    await app.state.jobs.run_due()
    await fraud_scan()  # the scheduled scan takes the answer's news
    (reopened,) = await alerts(client, operator, status="open")
    assert reopened["id"] != alert["id"]
    # Its reason is the new deal alone, said so: the dismissed one is not put before the operator again as grounds
    # (the evidence, kept for the record, still lists both).
    reason = reopened["reasons"][0]
    assert reason["leads"] == [lead_id] and reason["text"].startswith("1 deal no operator has decided on yet"), reason
    assert len(reopened["evidence"][0]["leads"]) == 2
    assert (await db.scalar(reliability)) < 10_000  # the new hidden deal counts
    (old,) = await alerts(client, operator, status="dismissed")
    assert old["id"] == alert["id"] and old["decision"]["note"].startswith("The customer mixed")


async def test_dismissed_evidence_does_not_add_to_patterns_that_come_later(app, client, db):
    """Twins with the same later pattern (won deals reported far below the customer's budget), one of them with a
    dismissed hidden deal before: the dismissal adds nothing to its risk, so the pattern opens no alert for it
    (on its own a pattern never does), and both rank alike."""
    operator = await operator_token(app)
    twin_id, twin = await register(client, "deal_maker", name="Twin with a dismissal")
    other_id, other = await register(client, "deal_maker", name="Twin without")
    await hide_a_won_deal(app, client, operator, twin_id, twin)
    (alert,) = await alerts(client, operator, status="open")
    decided = {"decision": "dismiss", "note": "the customer mixed us up"}
    url = f"/v1/fraud/alerts/{alert['id']}/decision"
    assert (await client.post(url, headers=auth(operator), json=decided)).is_success
    for business_id, token in ((twin_id, twin), (other_id, other)):
        for _ in range(3):
            _, exposure_id = await claimed_deal(app, client, business_id, token)
            await report(client, token, exposure_id, "won", turnover=20_000)  # budget 1,500.00: won at 200.00
    await fraud_scan()
    risk = {
        a.business_id: a.risk_score
        for a in await db.scalars(select(FraudAssessment).where(FraudAssessment.business_id.in_([twin_id, other_id])))
    }
    assert risk[other_id] > 0  # the pattern is there, for both
    assert risk[twin_id] == pytest.approx(risk[other_id])
    assert await alerts(client, operator, status="open") == []
    of = select(Business.reliability_bp)
    twin_reliability = await db.scalar(of.where(Business.id == twin_id))
    assert twin_reliability == await db.scalar(of.where(Business.id == other_id)) and twin_reliability < 10_000


async def test_silence_and_returns_are_caught_by_the_quiet_lead_survey(app, client, db, settings):
    operator = await operator_token(app)
    silent_id, silent = await register(client, "deal_maker", name="Silent")
    returner_id, returner = await register(client, "lead_buyer", name="Returner")
    quiet_lead, quiet_exposure = await claimed_deal(app, client, silent_id, silent)
    returned_lead, exposure_id = await claimed_deal(app, client, returner_id, returner)
    returned = await client.post(f"/v1/exposures/{exposure_id}/return", headers=auth(returner), json={"reason": "spam"})
    assert returned.status_code == 200

    clock.advance(timedelta(days=settings.fraud.quiet_days, minutes=1))
    await send_quiet_surveys()
    for lead_id, business_id in ((quiet_lead, silent_id), (returned_lead, returner_id)):
        response = await answer(client, await survey_token(client, operator, lead_id), **hired(business_id, 50_000))
        assert response.status_code == 200, response.text
    await app.state.jobs.run_due()
    await fraud_scan()  # the scheduled scan takes the answers' news
    # The returned lead the customer hired it for counts at once; silence only once the grace period is over.
    open_now = {a["business_id"]: a for a in await alerts(client, operator, status="open")}
    assert set(open_now) == {returner_id}
    assert open_now[returner_id]["reasons"][0]["kind"] == "returned_then_hired"
    # The answer scheduled a recheck of the hired business for the end of its grace (news for the next scheduled
    # scan): no daily rescan needed.
    clock.advance(timedelta(days=settings.fraud.report_grace_days) - timedelta(minutes=1))
    await app.state.jobs.run_due()
    await fraud_scan()
    assert {a["business_id"] for a in await alerts(client, operator, status="open")} == {returner_id}
    clock.advance(timedelta(minutes=3))
    await app.state.jobs.run_due()
    await fraud_scan()
    open_now = {a["business_id"]: a for a in await alerts(client, operator, status="open")}
    assert set(open_now) == {returner_id, silent_id}
    assert "(1 not reported won or lost)" in open_now[silent_id]["reasons"][0]["text"]

    # Confirmed: the deal it never reported stays with it (its customer says it hired it; no new round of calls),
    # and the blocked business may still report it won and paid, at the turnover it states first.
    decided = await client.post(
        f"/v1/fraud/alerts/{open_now[silent_id]['id']}/decision",
        headers=auth(operator),
        json={"decision": "confirm", "note": "hired, never reported"},
    )
    assert decided.status_code == 200 and quiet_lead not in decided.json()["released_leads"]
    assert (await db.scalar(select(Exposure.status).where(Exposure.id == quiet_exposure))) == "new"
    assert (await db.scalar(select(Lead.exposure_count).where(Lead.id == quiet_lead))) == 1
    await report(client, silent, quiet_exposure, "won", turnover=50_000)
    changed = await client.post(
        f"/v1/exposures/{quiet_exposure}/status",
        headers=auth(silent),
        json={"status": "paid", "turnover": {"amount_minor": 100, "currency": "ILS"}},
    )
    assert changed.status_code == 403 and "turnover" in changed.json()["detail"]
    paid = await report(client, silent, quiet_exposure, "paid", turnover=50_000)
    assert paid["status"] == "paid" and paid["turnover"]["amount_minor"] == 50_000


async def test_a_deal_reported_lost_at_once_is_asked_about_again_once_its_lead_goes_quiet(app, client, db, settings):
    """A deal maker reports `lost` right after claiming: the lead's survey goes out before the customer decided, and
    the customer answers "not hired". The lost deal's lead is surveyed again once quiet; a later "hired, this
    business" contradicts the report."""
    operator = await operator_token(app)
    business_id, token = await register(client, "deal_maker", name="Quick Loser")
    lead_id, exposure_id = await claimed_deal(app, client, business_id, token)
    await report(client, token, exposure_id, "lost")
    first = await survey_token(client, operator, lead_id)
    assert (await answer(client, first, hired=False, satisfaction=3)).status_code == 200
    await send_quiet_surveys()
    assert len(await notifications(client, operator, kind="survey", reference=lead_id)) == 1  # not quiet yet

    clock.advance(timedelta(days=settings.fraud.quiet_days, minutes=1))
    await send_quiet_surveys()
    sent = await notifications(client, operator, kind="survey", reference=lead_id)
    assert len(sent) == 2
    surveys = list(await db.scalars(select(Survey).where(Survey.lead_id == lead_id).order_by(Survey.created_at)))
    assert [s.cause for s in surveys] == ["lost", "quiet"]
    second = await survey_token(client, operator, lead_id)
    assert second != first
    response = await answer(client, second, **hired(business_id, 120_000))
    assert response.status_code == 200, response.text
    await app.state.jobs.run_due()
    await fraud_scan()
    (alert,) = await alerts(client, operator, status="open")
    assert alert["business_id"] == business_id
    assert alert["reasons"][0]["kind"] == "hidden_deal" and alert["reasons"][0]["leads"] == [lead_id]
    assert "reported lost" in alert["reasons"][0]["text"]


async def test_decisions_train_the_model_that_then_scores_businesses(app, client, db, settings):
    operator = await operator_token(app)
    ids = []
    for n in range(2):
        business_id, token = await register(client, "deal_maker", name=f"Suspect {n}")
        await hide_a_won_deal(app, client, operator, business_id, token)
        ids.append(business_id)
    by_business = {a["business_id"]: a["id"] for a in await alerts(client, operator)}
    for business_id, decision in zip(ids, ("confirm", "dismiss"), strict=True):
        response = await client.post(
            f"/v1/fraud/alerts/{by_business[business_id]}/decision",
            headers=auth(operator),
            json={"decision": decision, "note": f"{decision} after a call with the customer"},
        )
        assert response.status_code == 200, response.text
    # Too few decisions (and businesses) for either model with the defaults.
    await train_fraud_model()
    assert await db.count(FraudModel) == 0
    one_each = dataclasses.replace(settings, fraud=dataclasses.replace(settings.fraud, min_labels_per_class=1))
    async with app.state.uow() as uow:
        row = await fraud.train_model(uow.session, one_each)
    assert row is not None and row.kind == "logistic_regression" and row.labels == 2
    third_id, third = await register(client, "deal_maker")
    await hide_a_won_deal(app, client, operator, third_id, third)
    assessment = await db.scalar(select(FraudAssessment).where(FraudAssessment.business_id == third_id))
    assert assessment.model_id == row.id and assessment.model_score is not None
    body = (await client.get(f"/v1/fraud/businesses/{third_id}", headers=auth(operator))).json()
    assert body["model_score"] == round(assessment.model_score, 4)
    assert any(r["kind"] == "model_logistic_regression" for r in body["reasons"])


async def test_decision_input_and_unknown_alerts(app, client, db):
    operator = await operator_token(app)
    dm_id, dm = await register(client, "deal_maker")
    await hide_a_won_deal(app, client, operator, dm_id, dm)
    (alert,) = await alerts(client, operator)
    path = f"/v1/fraud/alerts/{alert['id']}/decision"
    for body, field in (
        ({"decision": "maybe", "note": "x"}, "decision"),
        ({"decision": "confirm"}, "note"),
        ({"decision": "confirm", "note": ""}, "note"),
        ({"decision": "confirm", "note": "   "}, "note"),
        ({"decision": "confirm", "note": "x", "block": False}, "block"),
    ):
        response = await client.post(path, headers=auth(operator), json=body)
        assert response.status_code == 422, (body, response.text)
        assert field in [e["field"] for e in response.json()["errors"]]
    assert await db.count(FraudDecision) == 0
    assert (await db.scalar(select(FraudAlert.status).where(FraudAlert.id == alert["id"]))) == "open"
    missing = await client.post(
        "/v1/fraud/alerts/alr_nope/decision", headers=auth(operator), json={"decision": "dismiss", "note": "x"}
    )
    assert missing.status_code == 404
    assert (await client.get("/v1/fraud/alerts/alr_nope", headers=auth(operator))).status_code == 404
    wrong_status = await client.get("/v1/fraud/alerts", headers=auth(operator), params={"status": "closed"})
    assert wrong_status.status_code == 422


async def test_marks_are_taken_apart_from_the_assessment_and_put_back_when_it_fails(app, client, db, monkeypatch):
    a_id, _ = await register(client, "deal_maker")
    b_id, _ = await register(client, "deal_maker")
    async with app.state.uow() as uow:
        fraud.mark_dirty(uow.session, a_id, b_id)
        fraud.mark_dirty(uow.session, a_id)  # marked twice: one mark
    assert await db.count(FraudDirty) == 2
    async with app.state.uow() as uow:
        assert sorted(await fraud.claim_dirty(uow.session)) == sorted([a_id, b_id])
    assert await db.count(FraudDirty) == 0
    with pytest.raises(LookupError):  # news of a transaction that rolls back never happened
        async with app.state.uow() as uow:
            fraud.mark_dirty(uow.session, a_id)
            raise LookupError
    async with app.state.uow() as uow:  # news after the marks were taken waits for the next scan
        fraud.mark_dirty(uow.session, b_id)
    assert (await db.scalars(select(FraudDirty.business_id))) == [b_id]

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(fraud, "assess_businesses", broken)
    with pytest.raises(RuntimeError):
        await fraud.scan_dirty(app.state.uow, app.state.settings)
    assert (await db.scalars(select(FraudDirty.business_id))) == [b_id]  # put back for the next scan
    monkeypatch.undo()
    found = await fraud.scan_dirty(app.state.uow, app.state.settings)
    assert found.assessed == 1 and await db.count(FraudDirty) == 0
    assert await db.count(FraudAssessment, FraudAssessment.business_id == b_id) == 1


async def test_a_won_deal_counts_as_never_paid_from_its_win_not_from_its_invoice(app, client, settings):
    """The never-paid signal dates a deal by its `won` step (as the ranking dates a win's payment term), so a
    business cannot keep an unpaid deal out of it by sending a fresh invoice."""
    business_id, token = await register(client, "deal_maker")
    lead_id, exposure_id = await claimed_deal(app, client, business_id, token)
    clock.freeze(clock.now())
    won_at = clock.now()
    await report(client, token, exposure_id, "won", 250_000)
    clock.advance(timedelta(days=settings.fraud.unpaid_days - 5))
    await report(client, token, exposure_id, "invoiced")  # 5 days before the win's term is over
    clock.advance(timedelta(days=6))
    async with app.state.uow() as uow:
        (held,) = (await fraud.load_deals(uow.session, [business_id]))[business_id]
        assert (held.status, held.won_at) == ("invoiced", won_at)
        await fraud.assess_businesses(uow.session, settings, [business_id])
    risk = await client.get(f"/v1/fraud/businesses/{business_id}", headers=auth(await operator_token(app)))
    assert risk.status_code == 200, risk.text
    evidence = {e["kind"]: e for e in risk.json()["evidence"]}
    assert "never_paid" in evidence, risk.json()
    assert lead_id in evidence["never_paid"]["leads"]


async def test_an_assessment_the_session_holds_reads_what_a_later_scan_wrote(app, client, settings):
    """A scan writes its assessments in one statement, not through the session's objects: one the session already
    holds is expired, so that it reads the scan's row rather than the one before."""
    business_id, token = await register(client, "deal_maker")
    await claimed_deal(app, client, business_id, token)
    clock.freeze(clock.now())
    async with app.state.uow() as uow:
        await fraud.assess_businesses(uow.session, settings, [business_id])
        held = await uow.session.get(FraudAssessment, business_id)
        assert held is not None and held.computed_at == clock.now()
        clock.advance(timedelta(hours=1))
        await fraud.assess_businesses(uow.session, settings, [business_id])
        assert held.computed_at == clock.now()
        assert await uow.session.get(FraudAssessment, business_id) is held


async def test_won_deals_the_customers_paid_for_and_never_reported_paid_open_an_alert(app, client, db, settings):
    """A deal maker reports deals won and never paid, so it is charged no commission; each customer says it hired the
    business and names what it paid. Once the win's payment term is over, that is a hidden deal, not only the capped
    never-paid pattern: the daily rescan (time alone moved the signal) opens an alert naming the leads."""
    operator = await operator_token(app)
    business_id, token = await register(client, "deal_maker", name="Never Paid Pipes")
    clock.freeze(clock.now())
    leads = []
    for _ in range(3):
        lead_id, exposure_id = await claimed_deal(app, client, business_id, token)
        await report(client, token, exposure_id, "won", 1_000_000)
        response = await answer(client, await survey_token(client, operator, lead_id), **hired(business_id, 1_000_000))
        assert response.status_code == 200, response.text
        leads.append(lead_id)
    await app.state.jobs.run_due()
    await fraud_scan()
    clock.advance(timedelta(days=settings.fraud.unpaid_days - 1))
    await train_fraud_model()  # the daily rescan: within the term the business may still report them paid
    assert await alerts(client, operator) == []
    clock.advance(timedelta(days=2))
    await train_fraud_model()
    (alert,) = await alerts(client, operator)
    assert alert["business_id"] == business_id and alert["risk_score"] >= settings.fraud.alert_threshold_bp / 10_000
    evidence = {e["kind"]: e for e in alert["evidence"]}
    hidden = evidence["hidden_deal"]
    assert sorted(hidden["leads"]) == sorted(leads) and hidden["count"] == 3
    assert hidden["weight"] == pytest.approx(3 * 0.4) and "3 won, paid by the customer, never reported paid" in hidden[
        "text"
    ]
    assert "never_paid" not in evidence  # the same deals are not counted again as the pattern

    # It reports them paid at last (its commission charged): the open alert is left with no evidence, and a block
    # would rest on nothing, so a confirmation is refused (409) and the alert can only be dismissed.
    async with app.state.uow() as uow:
        won = await uow.session.scalars(select(Exposure.id).where(Exposure.business_id == business_id))
        exposure_ids = list(won)
    for exposure_id in exposure_ids:
        await report(client, token, exposure_id, "paid")
    await fraud_scan()
    (resolved,) = await alerts(client, operator)
    assert resolved["status"] == "open" and resolved["evidence"] == [] and resolved["risk_score"] == 0
    url = f"/v1/fraud/alerts/{alert['id']}/decision"
    refused = await client.post(url, headers=auth(operator), json={"decision": "confirm", "note": "queue"})
    assert refused.status_code == 409 and "below the alert threshold" in refused.json()["detail"], refused.text
    assert (await db.scalar(select(Business.status).where(Business.id == business_id))) == "active"
    dismissed = await client.post(url, headers=auth(operator), json={"decision": "dismiss", "note": "paid since"})
    assert dismissed.status_code == 200, dismissed.text


async def test_an_alert_shows_the_deals_behind_it_and_keeps_what_it_opened_with(app, client, db):
    """An operator decides on facts: each deal the evidence names, with what the business reported on it and when, and
    what its customer answered (a tester saw "lowest 70% of it" and a lead id, and no route showing the rest). A
    business that then corrects its report takes the open alert's risk and reasons to nothing; what the alert opened
    with stays beside them, so the operator still sees why it opened."""
    operator = await operator_token(app)
    business_id, token = await register(client, "deal_maker", name="Low Pipes")
    lead_id, exposure_id = await claimed_deal(app, client, business_id, token)
    await report(client, token, exposure_id, "contacted")
    await report(client, token, exposure_id, "won", turnover=50_000)
    said = hired(business_id, 100_000, satisfaction=2, comment="Paid 1,000.00 in cash")
    assert (await answer(client, await survey_token(client, operator, lead_id), **said)).status_code == 200
    await app.state.jobs.run_due()
    await fraud_scan()

    (listed,) = await alerts(client, operator)
    one = await client.get(f"/v1/fraud/alerts/{listed['id']}", headers=auth(operator))
    assert one.status_code == 200, one.text
    alert = one.json()
    assert alert == listed  # the list shows the same facts
    assert [r["kind"] for r in alert["reasons"]] == ["under_reported"] and alert["risk_score"] >= 0.5
    assert alert["opened_risk_score"] == alert["risk_score"]
    assert alert["opened_reasons"] == alert["reasons"] and alert["opened_evidence"] == alert["evidence"]
    (deal,) = alert["deals"]
    assert {k: deal[k] for k in ("exposure_id", "lead_id", "category", "status", "evidence", "opened_evidence")} == {
        "exposure_id": exposure_id,
        "lead_id": lead_id,
        "category": "plumbing",
        "status": "won",
        "evidence": ["under_reported"],
        "opened_evidence": ["under_reported"],
    }
    assert deal["budget"] == {"amount_minor": 150_000, "currency": "ILS"}
    assert deal["turnover"] == {"amount_minor": 50_000, "currency": "ILS"}
    steps = [(h["from_status"], h["to_status"], h["turnover"]) for h in deal["history"]]
    assert steps == [(None, "new", None), ("new", "contacted", None), ("contacted", "won", deal["turnover"])]
    assert all(h["at"] and h["actor"] for h in deal["history"])
    (said_back,) = deal["answers"]
    assert said_back["hired"] is True and said_back["business_id"] == business_id and said_back["lead_id"] == lead_id
    assert said_back["amount"] == {"amount_minor": 100_000, "currency": "ILS"} and said_back["satisfaction"] == 2
    assert said_back["comment"] == "Paid 1,000.00 in cash" and said_back["answered_at"]

    # It reports the deal paid at the customer's amount: the alert, still open, is left with no risk and no reasons,
    # and keeps what it opened with, the deal (now paid) with it.
    await report(client, token, exposure_id, "paid", turnover=100_000)
    await fraud_scan()
    now = (await client.get(f"/v1/fraud/alerts/{alert['id']}", headers=auth(operator))).json()
    assert now["status"] == "open" and now["risk_score"] == 0 and now["reasons"] == [] and now["evidence"] == []
    assert now["opened_risk_score"] == alert["risk_score"] and now["opened_reasons"] == alert["reasons"]
    assert now["opened_evidence"] == alert["evidence"]
    (deal,) = now["deals"]
    assert (deal["status"], deal["evidence"], deal["opened_evidence"]) == ("paid", [], ["under_reported"])
    assert deal["turnover"]["amount_minor"] == 100_000 and deal["history"][-1]["to_status"] == "paid"
    decided = await client.post(
        f"/v1/fraud/alerts/{alert['id']}/decision", headers=auth(operator), json={"decision": "dismiss", "note": "paid"}
    )
    assert decided.status_code == 200 and decided.json()["deals"] == now["deals"], decided.text
    # An alert opened before migration 0024 kept nothing of its opening: shown as null, not as an empty opening.
    async with app.state.uow() as uow:
        row = await uow.session.get(FraudAlert, alert["id"])
        row.opened_risk_score = row.opened_reasons = row.opened_evidence = None
    old = (await client.get(f"/v1/fraud/alerts/{alert['id']}", headers=auth(operator))).json()
    assert (old["opened_risk_score"], old["opened_reasons"], old["opened_evidence"]) == (None, None, None)
    assert old["deals"] == []  # its evidence is empty now, and its opening's is unknown


async def test_a_turnover_lowered_after_the_win_is_a_pattern_naming_the_lead(app, client, db, settings):
    """A deal maker reports 10,000.00 at the win and 1.00 at payment, and so owes commission on 1.00: the scan names
    the deal on the business's own word, a pattern that opens no alert on its own."""
    operator = await operator_token(app)
    business_id, token = await register(client, "deal_maker")
    lead_id, exposure_id = await claimed_deal(app, client, business_id, token)
    await report(client, token, exposure_id, "won", 1_000_000)
    await report(client, token, exposure_id, "paid", 100)
    _, open_deal = await claimed_deal(app, client, business_id, token)
    await report(client, token, open_deal, "contacted")
    await fraud_scan()
    async with app.state.uow() as uow:
        deals = {d.exposure_id: d for d in (await fraud.load_deals(uow.session, [business_id]))[business_id]}
    assert (deals[exposure_id].turnover_minor, deals[exposure_id].highest_turnover_minor) == (100, 1_000_000)
    assert deals[open_deal].highest_turnover_minor is None  # only won deals are looked up
    risk = await client.get(f"/v1/fraud/businesses/{business_id}", headers=auth(operator))
    assert risk.status_code == 200, risk.text
    evidence = {e["kind"]: e for e in risk.json()["evidence"]}
    assert "lowered_turnover" in evidence, risk.json()
    lowered = evidence["lowered_turnover"]
    assert lowered["leads"] == [lead_id] and lowered["count"] == 1 and lowered["weight"] == pytest.approx(0.15)
    assert "lowered after the win" in lowered["text"] and "under 1%" in lowered["text"]
    assert 0 < risk.json()["risk_score"] < settings.fraud.alert_threshold_bp / 10_000
    assert await alerts(client, operator) == []
    assert await db.count(FraudAlert, FraudAlert.business_id == business_id) == 0


async def test_category_norms_count_every_business_but_the_blocked(app, client):
    """load_peers: per (mode, category), every exposure, the decided and lost deals, the returns and the stale open
    ones, over the businesses not blocked (a blocked business's history is no norm)."""
    makers = [await register(client, "deal_maker") for _ in range(3)]
    buyer = await register(client, "lead_buyer")
    exposures: dict[str, list[str]] = {}
    for business_id, token in [*makers, buyer]:
        exposures[business_id] = [(await claimed_deal(app, client, business_id, token))[1] for _ in range(2)]
    (a, _), (b, _), (blocked, _) = makers
    async with app.state.uow() as uow:
        session = uow.session
        before = await fraud.load_peers(session)
        for exposure_id, status, stale in [
            (exposures[a][0], "lost", False),
            (exposures[a][1], "won", False),
            (exposures[b][0], "contacted", True),
            (exposures[b][1], "returned", False),
            (exposures[blocked][0], "lost", False),
            (exposures[blocked][1], "lost", False),
            (exposures[buyer[0]][0], "returned", False),
        ]:
            exposure = await session.get(Exposure, exposure_id)
            exposure.status, exposure.stale = status, stale
        (await session.get(Business, blocked)).status = "blocked"
        await session.flush()
        peers = await fraud.load_peers(session)
    # Every lead is a plumbing request (tests.factories.lead_body).
    assert before[("deal_maker", "plumbing")] == fraud.CategoryCounts(exposures=6)
    expected = fraud.CategoryCounts(exposures=4, decided=2, lost=1, returned=1, stale=1)
    assert peers[("deal_maker", "plumbing")] == expected
    assert peers[("lead_buyer", "plumbing")] == fraud.CategoryCounts(exposures=2, returned=1)
