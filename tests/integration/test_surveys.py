"""Customers' surveys through the HTTP API: sent when a deal is reported won or lost and when a lead goes
quiet, read from the operators' outbox, answered once through a signed link; the outbox and its SMTP sender."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from marketplace.clock import clock
from marketplace.db.models import Notification, Survey, UsedLink
from marketplace.fraud import services as fraud
from marketplace.notifications import services as delivery
from tests.factories import auth, operator_token, register
from tests.integration.fraud_market import answer, claimed_deal, hired, notifications, report, survey_token
from workers.actors import deliver_notifications, send_quiet_surveys


async def test_a_won_deal_sends_a_survey_that_works_once(app, client, db, settings):
    operator = await operator_token(app)
    dm_id, dm = await register(client, "deal_maker", name="Honest Plumbing")
    lb_id, lb = await register(client, "lead_buyer", name="Pipe Buyers")
    lead_id, exposure_id = await claimed_deal(app, client, dm_id, dm)
    (offer,) = await offer_lead_to_second(app, client, lead_id, lb_id, lb)
    assert await notifications(client, operator, kind="survey") == []  # claims alone ask nothing

    await report(client, dm, exposure_id, "won", turnover=150_000)
    (message,) = await notifications(client, operator, kind="survey")
    assert message["recipient"] == "dana@example.com" and message["reference"] == lead_id
    assert message["link"].startswith(f"{settings.notifications.public_base_url}/v1/surveys/")
    assert message["sent_at"] is None  # no mail server configured: the message is kept
    token = await survey_token(client, operator, lead_id)

    shown = await client.get(f"/v1/surveys/{token}")
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert body["lead_id"] == lead_id and body["category"] == "plumbing"
    assert body["businesses"] == [{"id": dm_id, "name": "Honest Plumbing"}, {"id": lb_id, "name": "Pipe Buyers"}]
    assert "dana" not in shown.text and "phone" not in shown.text

    answered = await answer(client, token, **hired(dm_id, 160_000, satisfaction=5, comment=" Quick and clean "))
    assert answered.status_code == 200, answered.text
    assert answered.json()["amount"] == {"amount_minor": 160_000, "currency": "ILS"}
    survey = await db.scalar(select(Survey).where(Survey.lead_id == lead_id))
    assert (survey.cause, survey.exposure_id, survey.hired, survey.business_id) == ("won", exposure_id, True, dm_id)
    assert (survey.amount_minor, survey.satisfaction, survey.comment) == (160_000, 5, "Quick and clean")
    assert await db.count(UsedLink, UsedLink.link_id == survey.link_id) == 1

    # A second use, or a look after the answer, is a 410; nothing changes.
    again = await answer(client, token, hired=False, satisfaction=1)
    assert again.status_code == 410 and again.headers["content-type"] == "application/problem+json"
    # The link is judged before the answer: a spent link with a bad answer is still a 410, not a 422.
    assert (await answer(client, token, hired=True, satisfaction=9)).status_code == 410
    assert (await client.post(f"/v1/surveys/{token}", json={"hired": "maybe"})).status_code == 410
    assert (await client.get(f"/v1/surveys/{token}")).status_code == 410
    assert (await db.scalar(select(Survey.satisfaction).where(Survey.id == survey.id))) == 5
    # The customer named whom it hired: further reports on the lead ask nothing more.
    await report(client, lb, offer, "lost")
    assert len(await notifications(client, operator, kind="survey")) == 1


async def offer_lead_to_second(app: Any, client: Any, lead_id: str, business_id: str, token: str) -> list[str]:
    """A second business claims the same lead: returns its exposure id."""
    from tests.factories import offer_lead_to

    (offer_id,) = await offer_lead_to(app, lead_id, [business_id])
    response = await client.post(f"/v1/offers/{offer_id}/claim", headers=auth(token), json={"exclusive": False})
    assert response.status_code == 201, response.text
    return [response.json()["id"]]


async def test_forged_expired_and_foreign_links(app, client, db, settings):
    operator = await operator_token(app)
    dm_id, dm = await register(client, "deal_maker")
    lead_id, exposure_id = await claimed_deal(app, client, dm_id, dm)
    await report(client, dm, exposure_id, "lost")
    token = await survey_token(client, operator, lead_id)
    payload, mac = token.split(".")
    forged = f"{payload}.{mac[:-2]}{'AA' if mac[-2:] != 'AA' else 'BB'}"
    for bad in (forged, "not-a-token", f"{payload}x.{mac}"):
        assert (await client.get(f"/v1/surveys/{bad}")).status_code == 404
        assert (await answer(client, bad, hired=False)).status_code == 404
        assert (await client.post(f"/v1/surveys/{bad}", json={"hired": True, "satisfaction": 9})).status_code == 404
    # A link the service signed for another purpose is no survey either.
    from marketplace.clock import utcnow
    from marketplace.identity.links import sign_link

    other = sign_link(settings.service.secret_key, "password-reset", lead_id, utcnow() + timedelta(days=1))
    assert (await client.get(f"/v1/surveys/{other}")).status_code == 404

    clock.advance(timedelta(days=settings.fraud.survey_ttl_days, seconds=1))
    assert (await client.get(f"/v1/surveys/{token}")).status_code == 410
    expired = await answer(client, token, hired=False)
    assert expired.status_code == 410 and "expired" in expired.json()["detail"]
    assert await db.count(UsedLink) == 0


async def test_bad_answers_are_422_naming_the_field_and_leave_the_link_usable(app, client, db):
    operator = await operator_token(app)
    dm_id, dm = await register(client, "deal_maker")
    stranger_id, _ = await register(client, "deal_maker")
    lead_id, exposure_id = await claimed_deal(app, client, dm_id, dm)
    await report(client, dm, exposure_id, "lost")
    token = await survey_token(client, operator, lead_id)
    cases = [
        ({"hired": True, "satisfaction": 6}, "satisfaction"),
        ({"hired": True, "satisfaction": 0}, "satisfaction"),
        ({"hired": True}, "satisfaction"),
        ({"satisfaction": 3}, "hired"),
        ({"hired": "yes", "satisfaction": 3}, "hired"),
        ({"hired": True, "satisfaction": "5"}, "satisfaction"),
        ({**hired(stranger_id), "satisfaction": 3}, "business_id"),
        ({"hired": False, "business_id": dm_id, "satisfaction": 3}, "business_id"),
        ({**hired(dm_id), "amount": {"amount_minor": 100, "currency": "EUR"}, "satisfaction": 3}, "amount.currency"),
        ({**hired(dm_id), "amount": {"amount_minor": -1, "currency": "ILS"}, "satisfaction": 3}, "amount.amount_minor"),
        ({**hired(dm_id), "amount": {"amount_minor": 0, "currency": "ILS"}, "satisfaction": 3}, "amount.amount_minor"),
        (
            {**hired(dm_id), "amount": {"amount_minor": 12.5, "currency": "ILS"}, "satisfaction": 3},
            "amount.amount_minor",
        ),
        ({"hired": False, "amount": {"amount_minor": 100, "currency": "ILS"}, "satisfaction": 3}, "amount"),
        ({"hired": False, "satisfaction": 3, "rating": 5}, "rating"),
    ]
    for body, field in cases:
        response = await client.post(f"/v1/surveys/{token}", json=body)
        assert response.status_code == 422, (body, response.status_code, response.text)
        assert field in [e["field"] for e in response.json()["errors"]], (body, response.json())
    assert await db.count(UsedLink) == 0
    # Someone hired outside the marketplace: hired without a business is a valid answer.
    ok = await answer(client, token, hired=True, satisfaction=2)
    assert ok.status_code == 200, ok.text
    assert ok.json()["business_id"] is None


async def test_one_survey_at_a_time(app, client, db, settings):
    operator = await operator_token(app)
    a_id, a = await register(client, "deal_maker")
    b_id, b = await register(client, "deal_maker")
    lead_id, a_exposure = await claimed_deal(app, client, a_id, a)
    (b_exposure,) = await offer_lead_to_second(app, client, lead_id, b_id, b)
    await report(client, a, a_exposure, "lost")
    await report(client, b, b_exposure, "won", turnover=90_000)
    assert len(await notifications(client, operator, kind="survey")) == 1  # the first is still unanswered
    token = await survey_token(client, operator, lead_id)
    assert (await answer(client, token, hired=False, satisfaction=3)).status_code == 200
    # "Not yet": a later report asks again.
    await report(client, b, b_exposure, "paid")
    assert len(await notifications(client, operator, kind="survey", reference=lead_id)) == 1  # paid asks nothing


async def _asked_again_up_to_the_limit(client: Any, db: Any, settings: Any, operator: str, lead_id: str) -> None:
    """Each time the lead has been quiet `quiet_days` more, one more survey, answered "not hired yet", up to the
    limit of surveys per lead."""
    for n in range(2, settings.fraud.max_surveys_per_lead + 2):
        clock.advance(timedelta(days=settings.fraud.quiet_days, minutes=1))
        await send_quiet_surveys()
        surveys = await db.count(Survey, Survey.lead_id == lead_id)
        assert surveys == min(n, settings.fraud.max_surveys_per_lead)
        if surveys < settings.fraud.max_surveys_per_lead:
            token = await survey_token(client, operator, lead_id)
            assert (await answer(client, token, hired=False, satisfaction=3)).status_code == 200


async def test_a_quiet_lead_gets_a_survey_and_quiet_leads_are_asked_again_later(app, client, db, settings):
    operator = await operator_token(app)
    dm_id, dm = await register(client, "deal_maker")
    lead_id, exposure_id = await claimed_deal(app, client, dm_id, dm)
    await report(client, dm, exposure_id, "contacted")
    await send_quiet_surveys()
    assert await notifications(client, operator, kind="survey") == []  # not quiet yet

    clock.advance(timedelta(days=settings.fraud.quiet_days, minutes=1))
    await send_quiet_surveys()
    await send_quiet_surveys()  # delivered twice: still one survey
    (first,) = await db.scalars(select(Survey).where(Survey.lead_id == lead_id))
    assert first.cause == "quiet" and first.exposure_id is None
    token = await survey_token(client, operator, lead_id)
    assert (await answer(client, token, hired=False, satisfaction=3)).status_code == 200

    # Still quiet after the customer said "not yet": asked again once as long has passed, up to the limit.
    await send_quiet_surveys()
    assert await db.count(Survey, Survey.lead_id == lead_id) == 1
    await _asked_again_up_to_the_limit(client, db, settings, operator, lead_id)


async def _reported_lost_and_answered(
    app: Any, client: Any, operator: str, business: tuple[str, str], **said: Any
) -> str:
    """A lead the business claims and reports lost at once, its survey answered as `said`: the lead's id."""
    business_id, token = business
    lead_id, exposure_id = await claimed_deal(app, client, business_id, token)
    await report(client, token, exposure_id, "lost")
    assert (await answer(client, await survey_token(client, operator, lead_id), **said)).status_code == 200
    return lead_id


async def test_a_lost_deal_s_lead_is_asked_again_when_quiet_under_the_same_limits(app, client, db, settings):
    """A deal reported lost leaves its lead a quiet-lead survey like an open deal does: once its report is
    `quiet_days` old, no sooner than `quiet_days` after the last survey, up to `max_surveys_per_lead`, and never
    after the customer named whom it hired."""
    operator = await operator_token(app)
    dm_id, dm = await register(client, "deal_maker")
    lead_id, exposure_id = await claimed_deal(app, client, dm_id, dm)
    await report(client, dm, exposure_id, "lost")  # the first survey, cause "lost"
    await send_quiet_surveys()
    assert await db.count(Survey, Survey.lead_id == lead_id) == 1  # one unanswered at a time, and not quiet yet
    token = await survey_token(client, operator, lead_id)
    assert (await answer(client, token, hired=False, satisfaction=3)).status_code == 200
    await _asked_again_up_to_the_limit(client, db, settings, operator, lead_id)
    causes = list(await db.scalars(select(Survey.cause).where(Survey.lead_id == lead_id).order_by(Survey.created_at)))
    assert causes == ["lost"] + ["quiet"] * (settings.fraud.max_surveys_per_lead - 1)

    # A customer who says it hired someone is not asked again, whatever the lost report.
    other_lead = await _reported_lost_and_answered(app, client, operator, (dm_id, dm), hired=True, satisfaction=4)
    clock.advance(timedelta(days=settings.fraud.quiet_days, minutes=1))
    await send_quiet_surveys()
    assert await db.count(Survey, Survey.lead_id == other_lead) == 1


async def test_a_lead_buyer_s_lost_deal_leaves_its_lead_unasked(app, client, db, settings):
    """A lead buyer owes no commission on its deals: its `lost` asks the customer nothing more when the lead goes
    quiet (a deal maker's does: test above)."""
    operator = await operator_token(app)
    buyer = await register(client, "lead_buyer")
    lead_id = await _reported_lost_and_answered(app, client, operator, buyer, hired=False, satisfaction=3)
    clock.advance(timedelta(days=settings.fraud.quiet_days, minutes=1))
    await send_quiet_surveys()
    assert await db.count(Survey, Survey.lead_id == lead_id) == 1


async def test_notifications_are_for_operators_newest_first_and_paginated(app, client, db):
    operator = await operator_token(app)
    dm_id, dm = await register(client, "deal_maker")
    leads = []
    for _ in range(3):
        lead_id, exposure_id = await claimed_deal(app, client, dm_id, dm)
        await report(client, dm, exposure_id, "lost")
        leads.append(lead_id)
    first = await client.get("/v1/notifications", headers=auth(operator), params={"limit": 2})
    assert first.status_code == 200
    page = first.json()
    assert [m["reference"] for m in page["items"]] == [leads[2], leads[1]] and page["next_cursor"]
    rest = await client.get(
        "/v1/notifications", headers=auth(operator), params={"limit": 2, "cursor": page["next_cursor"]}
    )
    assert [m["reference"] for m in rest.json()["items"]] == [leads[0]] and rest.json()["next_cursor"] is None
    assert (await client.get("/v1/notifications", headers=auth(dm))).status_code == 403
    assert (await client.get("/v1/notifications")).status_code == 401
    assert (await client.get("/v1/notifications", headers=auth(operator), params={"limit": 0})).status_code == 422


class FakeSmtp:
    """A minimal SMTP server on the test's event loop: enough of the protocol for smtplib."""

    def __init__(self, refuse: str | None = None, hang_up_after: int | None = None, goodbye: str = "221 bye") -> None:
        self.messages: list[tuple[list[str], str]] = []
        self.refuse = refuse
        self.hang_up_after = hang_up_after  # messages taken before the connection is dropped without a word
        self.goodbye = goodbye  # the answer to QUIT
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def say(line: str) -> None:
            writer.write((line + "\r\n").encode())

        say("220 fake ESMTP")
        recipients: list[str] = []
        while line := (await reader.readline()).decode().rstrip("\r\n"):
            verb = line.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                say("250 fake")
            elif verb == "MAIL":
                if self.hang_up_after is not None and len(self.messages) >= self.hang_up_after:
                    self.hang_up_after = None  # once: the next connection is served again
                    break
                recipients = []
                say("250 ok")
            elif verb == "RCPT":
                address = line.split(":", 1)[1].strip("<> ")
                if address == self.refuse:
                    say("550 no such user")
                else:
                    recipients.append(address)
                    say("250 ok")
            elif verb == "DATA":
                say("354 go on")
                lines = []
                while (data := (await reader.readline()).decode().rstrip("\r\n")) != ".":
                    lines.append(data)
                self.messages.append((recipients, "\n".join(lines)))
                say("250 queued")
            elif verb == "RSET":
                say("250 ok")
            elif verb == "QUIT":
                say(self.goodbye)
                await writer.drain()
                break
            else:
                say("502 not here")
            await writer.drain()
        writer.close()


async def test_the_outbox_is_sent_through_smtp_once_and_a_refused_message_is_retried(app, client, db, settings):
    server = FakeSmtp(refuse="nobody@example.com")
    port = await server.start()
    try:
        smtp = dataclasses.replace(
            settings, notifications=dataclasses.replace(settings.notifications, smtp_url=f"smtp://127.0.0.1:{port}")
        )
        # Without a mail server the job sends nothing and the messages are only kept.
        async with app.state.uow() as uow:
            fraud.notify(uow.session, "survey", "dana@example.com", "How did it go?", "Tell us", link="http://x/1")
            fraud.notify(uow.session, "alert", "nobody@example.com", "Alert", "Look")
        await deliver_notifications()
        assert server.messages == []
        assert await delivery.deliver_notifications(app.state.uow, smtp) == 1
        assert await delivery.deliver_notifications(app.state.uow, smtp) == 0  # sent ones are not sent again
        ((recipients, text),) = server.messages
        assert recipients == ["dana@example.com"] and "Subject: How did it go?" in text and "http://x/1" in text
        rows = {n.recipient: n for n in await db.scalars(select(Notification))}
        assert rows["dana@example.com"].sent_at is not None and rows["dana@example.com"].attempts == 1
        refused = rows["nobody@example.com"]
        assert refused.sent_at is None and "550" in (refused.last_error or "") and refused.claimed_at is None
        # Retried on later runs, up to the limit of attempts.
        for _ in range(delivery.MAX_DELIVERY_ATTEMPTS + 2):
            await delivery.deliver_notifications(app.state.uow, smtp)
        refused = await db.scalar(select(Notification).where(Notification.recipient == "nobody@example.com"))
        assert refused.attempts == delivery.MAX_DELIVERY_ATTEMPTS and refused.sent_at is None
        assert len(server.messages) == 1
    finally:
        await server.stop()


async def test_a_connection_lost_half_way_sends_nothing_twice(app, db, settings):
    # A server that drops the connection after one message, and answers every goodbye with an error.
    server = FakeSmtp(hang_up_after=1, goodbye="421 closing anyway")
    port = await server.start()
    try:
        smtp = dataclasses.replace(
            settings, notifications=dataclasses.replace(settings.notifications, smtp_url=f"smtp://127.0.0.1:{port}")
        )
        async with app.state.uow() as uow:
            for name in ("ann", "ben", "cy"):
                fraud.notify(uow.session, "survey", f"{name}@example.com", "How did it go?", "Tell us")
        # The server takes the first message, then drops the connection: the first is sent, the others retried.
        assert await delivery.deliver_notifications(app.state.uow, smtp) == 1
        ((taken, _),) = server.messages
        rows = {n.recipient: n for n in await db.scalars(select(Notification))}
        assert [r for r, n in rows.items() if n.sent_at is not None] == taken
        assert all(n.last_error and n.claimed_at is None for r, n in rows.items() if r not in taken)
        assert await delivery.deliver_notifications(app.state.uow, smtp) == 2
        assert await delivery.deliver_notifications(app.state.uow, smtp) == 0
        assert sorted(recipients[0] for recipients, _ in server.messages) == [
            "ann@example.com",
            "ben@example.com",
            "cy@example.com",
        ]
    finally:
        await server.stop()


async def test_a_customer_who_says_it_hired_someone_gets_no_more_offers_made_of_its_lead(app, client, db):
    from marketplace.db.models import Lead, Offer
    from tests.factories import offer_lead_to
    from workers.actors import expire_lapsed

    operator = await operator_token(app)
    a_id, a = await register(client, "deal_maker")
    others = [await register(client, "lead_buyer") for _ in range(2)]
    lead_id, exposure = await claimed_deal(app, client, a_id, a)
    await offer_lead_to(app, lead_id, [others[0][0]])  # an offer still open
    await report(client, a, exposure, "lost")
    assert (await answer(client, await survey_token(client, operator, lead_id), hired=True)).status_code == 200

    # Served: its open offers are withdrawn, no next wave goes out, and it is closed at once (not expired: its
    # customer was served, it did not run out of time), as the sweep leaves it.
    assert await db.count(Offer, Offer.lead_id == lead_id, Offer.status == "open") == 0
    await app.state.jobs.run_due()
    app.state.jobs.enqueue("send_wave", lead_id, 2)
    await app.state.jobs.run_due()
    assert await db.count(Offer, Offer.lead_id == lead_id) == 2  # the claimed one and the withdrawn one: no new
    assert await db.scalar(select(Lead.status).where(Lead.id == lead_id)) == "closed"
    await expire_lapsed()
    assert await db.scalar(select(Lead.status).where(Lead.id == lead_id)) == "closed"  # not expired by the sweep


async def test_a_survey_link_s_token_is_in_no_log_line(app, settings, capsys, caplog, monkeypatch):
    # A customer's survey link is a bearer credential: uvicorn's access log wrote it in full for every request
    # (`marketplace serve`), and so would the service's own line about an unexpected error on such a path.
    import logging
    import socket

    import httpx
    import uvicorn

    from marketplace.identity.links import sign_link
    from marketplace.surveys import services as surveys

    token = sign_link(settings.service.secret_key, "survey", "lead_nowhere", clock.now() + timedelta(days=7))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # uvicorn's own logging set-up (as `marketplace serve` has it): its access lines go to stdout, captured here.
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="info", lifespan="on"))
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(500):  # ten seconds at most
            if server.started:
                break
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get(f"/v1/surveys/{token}")).status_code == 404  # a well-signed link of no lead
            assert (await http.get(f"/V1/Surveys/{token}/?x=1")).status_code == 404
            monkeypatch.setattr(surveys, "check_survey_link", _boom)
            with caplog.at_level(logging.ERROR, logger="marketplace"):
                assert (await http.post(f"/v1/surveys/{token}", json={"hired": False})).status_code == 500
    finally:
        server.should_exit = True
        await serving
    access = capsys.readouterr().out
    assert '"GET /v1/surveys/<redacted> HTTP/1.1" 404' in access, access
    assert '"GET /V1/Surveys/<redacted>/?x=1 HTTP/1.1" 404' in access, access
    assert '"POST /v1/surveys/<redacted> HTTP/1.1" 500' in access, access
    (error,) = [r for r in caplog.records if r.name == "marketplace.http"]
    assert "unexpected error handling POST /v1/surveys/<redacted> (request " in error.getMessage()
    logged = access + "\n".join(r.getMessage() for r in caplog.records)
    assert token not in logged and token.split(".")[0] not in logged and token.split(".")[1] not in logged


async def _boom(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("boom")


async def test_the_survey_mail_gives_its_dates_on_the_marketplaces_local_calendar(app, client, db, settings):
    """A request made at 00:45 in Jerusalem (22:45 UTC the day before) was "asked on 29 November", and a link working
    until 00:45 local on 14 December "until 13 December": the dates were UTC's."""
    assert settings.jurisdiction.time_zone == "Asia/Jerusalem"
    clock.freeze(datetime(2026, 11, 29, 22, 45, tzinfo=UTC))
    operator = await operator_token(app)
    dm_id, dm = await register(client, "deal_maker")
    _, exposure_id = await claimed_deal(app, client, dm_id, dm)
    await report(client, dm, exposure_id, "won", turnover=150_000)
    (message,) = await notifications(client, operator, kind="survey")
    assert "on 30 November 2026." in message["body"], message["body"]
    expires = datetime(2026, 11, 29, 22, 45, tzinfo=UTC) + timedelta(days=settings.fraud.survey_ttl_days)
    local = expires.astimezone(settings.jurisdiction.zone)
    assert f"until {local:%d %B %Y, %H:%M}." in message["body"] and local.hour == 0, message["body"]


async def _won_at_the_claim(app: Any, client: Any, db: Any) -> dict[str, Any]:
    """Two deal makers offered one lead by its first wave; one claims it and reports it won at once, taking the lead off
    the market (its competitor's offer withdrawn, its claim a 409). Returns the parties and the survey token."""
    from marketplace.db.models import Lead, Offer
    from tests.factories import offers_of, submit_lead

    operator = await operator_token(app)
    winner_id, winner = await register(client, "deal_maker", name="Early Wins")
    rival_id, rival = await register(client, "deal_maker", name="Slow Quotes")
    lead_id = await submit_lead(client)
    await app.state.jobs.run_due()  # the first wave: both deal makers
    offered = {o.business_id: o.id for o in await db.scalars(select(Offer).where(Offer.lead_id == lead_id))}
    assert set(offered) == {winner_id, rival_id}
    claimed = await client.post(f"/v1/offers/{offered[winner_id]}/claim", headers=auth(winner), json={})
    assert claimed.status_code == 201, claimed.text
    exposure_id = claimed.json()["id"]
    await report(client, winner, exposure_id, "won", turnover=150_000)
    lead = await db.scalar(select(Lead).where(Lead.id == lead_id))
    assert lead.status == "closed"
    assert [o for o in await offers_of(client, rival) if o["lead_id"] == lead_id] == []
    refused = await client.post(f"/v1/offers/{offered[rival_id]}/claim", headers=auth(rival), json={})
    assert refused.status_code == 409 and "hired" in refused.json()["detail"], refused.text
    return {
        "operator": operator, "lead_id": lead_id, "exposure_id": exposure_id, "winner_id": winner_id,
        "winner": winner, "rival_id": rival_id, "rival": rival, "token": await survey_token(client, operator, lead_id),
    }


async def _evidence(app: Any, client: Any, operator: str, business_id: str) -> dict[str, dict[str, Any]]:
    await fraud.scan_dirty(app.state.uow, app.state.settings)
    found = await client.get(f"/v1/fraud/businesses/{business_id}", headers=auth(operator))
    assert found.status_code == 200, found.text
    return {e["kind"]: e for e in found.json()["evidence"]}


async def test_a_won_reported_at_the_claim_that_the_customer_says_it_hired_nobody_for_puts_the_lead_back(
    app, client, db, settings
):
    """A deal maker's `won` at its claim took the lead off the market on its word alone: every competitor shut out for
    free (what a lead buyer pays the exclusive price for), and the customer, who hired nobody, left with that one
    business; its "not hired" changed nothing (a tester). Now the lead goes back on the market with its places and its
    waves go on, and the contradicted `won` is evidence against the deal maker; the deal stays as reported."""
    from marketplace.db.models import Exposure, Lead
    from tests.factories import offers_of

    won = await _won_at_the_claim(app, client, db)
    lead_id, rival = won["lead_id"], won["rival"]
    closed_at = (await db.scalar(select(Lead).where(Lead.id == lead_id))).expires_at
    answered = await answer(client, won["token"], hired=False, satisfaction=3, comment="still comparing quotes")
    assert answered.status_code == 200, answered.text
    lead = await db.scalar(select(Lead).where(Lead.id == lead_id))
    # Open again until its own time (the won had brought its expiry forward to the report), its place still used.
    assert (lead.status, lead.exposure_count, lead.is_exclusive) == ("open", 1, False)
    assert lead.expires_at == lead.created_at + timedelta(hours=settings.windows.lead_ttl_hours) > closed_at
    assert await db.scalar(select(Exposure.status).where(Exposure.id == won["exposure_id"])) == "won"

    await app.state.jobs.run_due()  # its next wave, sent once the answer committed: the competitor is offered it again
    (offer,) = [o for o in await offers_of(client, rival) if o["lead_id"] == lead_id]
    claimed = await client.post(f"/v1/offers/{offer['offer_id']}/claim", headers=auth(rival), json={})
    assert claimed.status_code == 201, claimed.text
    assert claimed.json()["contact"]["email"] == "dana@example.com"
    # The contradicted `won` is no hire: the lead taken again may be returned as any lead may (it was refused as one
    # "whose customer hired someone", a review).
    returned = await client.post(
        f"/v1/exposures/{claimed.json()['id']}/return", headers=auth(rival), json={"reason": "not my kind of job"}
    )
    assert returned.status_code == 200, returned.text
    assert returned.json()["status"] == "returned"

    evidence = await _evidence(app, client, won["operator"], won["winner_id"])
    signal = evidence["won_contradicted"]
    assert signal["leads"] == [lead_id] and signal["count"] == 1 and signal["weight"] == 0.5
    assert "reported won" in signal["text"] and "1 hired nobody" in signal["text"]
    assert "won_contradicted" not in await _evidence(app, client, won["operator"], won["rival_id"])
    # Reported paid since (a token turnover's commission): still contradicted, the answer dated after the win, not
    # the payment.
    await report(client, won["winner"], won["exposure_id"], "paid", turnover=150_000)
    assert (await _evidence(app, client, won["operator"], won["winner_id"]))["won_contradicted"]["count"] == 1


async def test_a_won_reported_at_the_claim_that_the_customer_confirms_keeps_the_lead_closed(app, client, db):
    """The honest deal maker: its customer says it hired it. The lead stays off the market, no competitor is offered
    it, and the deal maker has no evidence against it."""
    from marketplace.db.models import Lead
    from tests.factories import offers_of

    won = await _won_at_the_claim(app, client, db)
    lead_id = won["lead_id"]
    answered = await answer(client, won["token"], **hired(won["winner_id"], 150_000, satisfaction=5))
    assert answered.status_code == 200, answered.text
    await app.state.jobs.run_due()
    app.state.jobs.enqueue("send_wave", lead_id, 2)
    await app.state.jobs.run_due()
    assert await db.scalar(select(Lead.status).where(Lead.id == lead_id)) == "closed"
    assert [o for o in await offers_of(client, won["rival"]) if o["lead_id"] == lead_id] == []
    assert await _evidence(app, client, won["operator"], won["winner_id"]) == {}


async def test_a_contradicted_won_on_a_lead_past_its_time_or_hired_elsewhere_stays_closed(app, client, db):
    """Only a lead a deal maker's `won` alone took off the market, and still within its time, goes back on it: a
    customer who hired another business was served (still evidence against the deal maker that reported it won), and
    one answering after the lead's time is offered to nobody."""
    from marketplace.db.models import Lead
    from tests.factories import offer_lead_to, submit_lead

    operator = await operator_token(app)
    winner_id, winner = await register(client, "deal_maker")
    rival_id, rival = await register(client, "deal_maker")
    lead_id = await submit_lead(client)
    winner_offer, rival_offer = await offer_lead_to(app, lead_id, [winner_id, rival_id])
    for token, offer_id in ((rival, rival_offer), (winner, winner_offer)):
        claimed = await client.post(f"/v1/offers/{offer_id}/claim", headers=auth(token), json={})
        assert claimed.status_code == 201, claimed.text
    await report(client, winner, claimed.json()["id"], "won", turnover=150_000)
    assert (await answer(client, await survey_token(client, operator, lead_id), **hired(rival_id))).status_code == 200
    assert await db.scalar(select(Lead.status).where(Lead.id == lead_id)) == "closed"
    signal = (await _evidence(app, client, operator, winner_id))["won_contradicted"]
    assert signal["leads"] == [lead_id] and "1 hired another business" in signal["text"]

    late_id = await submit_lead(client)
    (late_offer,) = await offer_lead_to(app, late_id, [winner_id])
    claimed = await client.post(f"/v1/offers/{late_offer}/claim", headers=auth(winner), json={})
    assert claimed.status_code == 201, claimed.text
    await report(client, winner, claimed.json()["id"], "won", turnover=150_000)
    clock.advance(timedelta(hours=80))  # past lead_ttl_hours (72), within the survey's 14 days
    answered = await answer(client, await survey_token(client, operator, late_id), hired=False)
    assert answered.status_code == 200, answered.text
    assert await db.scalar(select(Lead.status).where(Lead.id == late_id)) == "closed"
    assert (await _evidence(app, client, operator, winner_id))["won_contradicted"]["count"] == 2
