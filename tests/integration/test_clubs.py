"""Clubs over HTTP: an operator founds one and invites businesses; an invitation is used once; a lead inside the club
is offered to its members only; its operator earns the plan's club share of a deal's commission; sign-up may be by
invitation only."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
from sqlalchemy import func, select

from marketplace.db.models import Business, ClubMember, LedgerAccount, LedgerPosting, Offer
from tests.conftest import make_settings
from tests.factories import auth, business_body, lead_body, offers_of, operator_token, register, submit_lead
from tests.integration.fraud_market import notifications, report


async def found_club(client: httpx.AsyncClient, operator: str, name: str = "Haifa Builders Club") -> str:
    response = await client.post(
        "/v1/clubs", headers=auth(operator), json={"name": name, "operator_name": "Haifa Builders Association"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["members"] == 0
    return str(response.json()["id"])


async def invitation(client: httpx.AsyncClient, operator: str, club_id: str, **body: Any) -> str:
    response = await client.post(f"/v1/clubs/{club_id}/invitations", headers=auth(operator), json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["code"])


async def member(client: httpx.AsyncClient, operator: str, club_id: str, mode: str, **profile: Any) -> tuple[str, str]:
    code = await invitation(client, operator, club_id)
    body = business_body(mode, invitation=code, profile={"categories": ["plumbing"], **profile})
    response = await client.post("/v1/businesses", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"], response.json()["api_token"]


async def club_lead(app: Any, client: httpx.AsyncClient, club: str) -> str:
    """A customer's request inside the club, its first wave sent."""
    await app.state.ranking_sync.settled()
    response = await client.post("/v1/leads", json=lead_body(category="plumbing", club=club))
    assert response.status_code == 201, response.text
    await app.state.jobs.run_due()
    return str(response.json()["id"])


async def paid_club_deal(app: Any, client: httpx.AsyncClient, club: str, maker: str) -> str:
    """The member deal maker claims the club's new lead, wins it for 11,800.00 and reports it paid: its exposure."""
    lead = await club_lead(app, client, club)
    (offer,) = [o for o in await offers_of(client, maker) if o["lead_id"] == lead]
    claimed = await client.post(f"/v1/offers/{offer['offer_id']}/claim", headers=auth(maker))
    assert claimed.status_code == 201, claimed.text
    exposure = str(claimed.json()["id"])
    await report(client, maker, exposure, "won", turnover=1_180_000)
    await report(client, maker, exposure, "paid")
    return exposure


async def test_a_clubs_lead_is_offered_to_its_members_only(app, client, db):
    operator = await operator_token(app)
    club = await found_club(client, operator)
    insider_id, insider = await member(client, operator, club, "lead_buyer")
    _, outsider = await register(client, "lead_buyer", profile={"categories": ["plumbing"]})
    await app.state.ranking_sync.settled()

    inside = await client.post("/v1/leads", json=lead_body(category="plumbing", club=club))
    assert inside.status_code == 201, inside.text
    public = await submit_lead(client, category="plumbing")
    await app.state.jobs.run_due()
    seen = {o["lead_id"]: o["lead"]["club_id"] for o in await offers_of(client, insider)}
    assert seen == {inside.json()["id"]: club, public: None}  # the member sees which lead came through its club
    assert {o["lead_id"] for o in await offers_of(client, outsider)} == {public}
    # The operator's explanation lists the members alone as the club lead's candidates.
    ranking = await client.get(f"/v1/leads/{inside.json()['id']}/ranking", headers=auth(operator))
    assert {c["business_id"] for c in ranking.json()["items"]} == {insider_id}

    listed = await client.get("/v1/businesses/me/clubs", headers=auth(insider))
    assert [m["club_id"] for m in listed.json()["items"]] == [club] and listed.json()["next_cursor"] is None
    assert (await client.get(f"/v1/clubs/{club}", headers=auth(operator))).json()["members"] == 1


async def test_a_business_joins_later_and_is_offered_the_clubs_open_leads(app, client, db):
    operator = await operator_token(app)
    club = await found_club(client, operator)
    business_id, token = await register(client, "lead_buyer", profile={"categories": ["plumbing"]})
    lead = await client.post("/v1/leads", json=lead_body(category="plumbing", club=club))
    await app.state.jobs.run_due()
    assert await offers_of(client, token) == []

    code = await invitation(client, operator, club)
    joined = await client.post("/v1/businesses/me/clubs", headers=auth(token), json={"invitation": code})
    assert joined.status_code == 201, joined.text
    await app.state.jobs.run_due()
    assert [o["lead_id"] for o in await offers_of(client, token)] == [lead.json()["id"]]
    again = await client.post("/v1/businesses/me/clubs", headers=auth(token), json={"invitation": code})
    assert again.status_code == 422 and again.json()["errors"][0]["field"] == "invitation"
    assert await db.count(ClubMember, ClubMember.business_id == business_id) == 1


async def test_an_invitation_is_used_once_and_only_by_its_addressee(app, client, db):
    operator = await operator_token(app)
    club = await found_club(client, operator)
    code = await invitation(client, operator, club)
    bodies = [business_body("deal_maker", invitation=code) for _ in range(5)]
    responses = await asyncio.gather(*(client.post("/v1/businesses", json=b) for b in bodies))
    assert Counter(r.status_code for r in responses) == {201: 1, 422: 4}, [r.text for r in responses]
    assert await db.count(Business) == 1  # the refused sign-ups wrote nothing

    for_dana = await invitation(client, operator, club, email="dana@builders.example")
    (sent,) = [n for n in await notifications(client, operator) if n["kind"] == "invitation"]
    assert sent["recipient"] == "dana@builders.example" and for_dana in sent["body"]
    other = await client.post("/v1/businesses", json=business_body(invitation=for_dana, email="eve@x.example"))
    assert other.status_code == 422 and "another email" in other.json()["errors"][0]["message"]
    dana = await client.post("/v1/businesses", json=business_body(invitation=for_dana, email="Dana@Builders.example"))
    assert dana.status_code == 201, dana.text
    unknown = await client.post("/v1/businesses", json=business_body(invitation="inv_nonsense"))
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "invitation"
    assert await db.count(Business) == 2


async def test_leads_name_a_known_club_and_only_members_sell_into_it(app, client, db):
    operator = await operator_token(app)
    club = await found_club(client, operator)
    unknown = await client.post("/v1/leads", json=lead_body(club="club_nowhere"))
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "club"
    _, outsider = await register(client, "deal_maker")
    sold = await client.post(
        "/v1/businesses/me/leads", headers=auth(outsider), json=lead_body(club=club, region="haifa")
    )
    assert sold.status_code == 403
    _, insider = await member(client, operator, club, "deal_maker")
    sold = await client.post(
        "/v1/businesses/me/leads", headers=auth(insider), json=lead_body(club=club, region="haifa")
    )
    assert sold.status_code == 201, sold.text


async def test_clubs_are_for_operators_to_found_and_invite_into(app, client):
    _, business = await register(client)
    assert (
        await client.post("/v1/clubs", headers=auth(business), json={"name": "x", "operator_name": "y"})
    ).status_code == 403
    operator = await operator_token(app)
    blank = await client.post("/v1/clubs", headers=auth(operator), json={"name": " ", "operator_name": "y"})
    assert blank.status_code == 422 and blank.json()["errors"][0]["field"] == "name"
    missing = await client.post("/v1/clubs/club_nowhere/invitations", headers=auth(operator), json={})
    assert missing.status_code == 404
    page = await client.get("/v1/clubs", headers=auth(operator), params={"cursor": "garbage"})
    assert page.status_code == 422


async def test_the_club_operator_earns_its_share_of_a_deal_inside_the_club(app, client, db):
    operator = await operator_token(app)
    club = await found_club(client, operator)
    maker_id, maker = await member(client, operator, club, "deal_maker")
    await paid_club_deal(app, client, club, maker)
    # 30 % of 11,800.00 is 3,540.00 gross, 3,000.00 net of 18 % VAT; the club operator's 5 % of the net: 150.00.
    owed = await db.scalar(
        select(-func.sum(LedgerPosting.amount_minor))
        .join(LedgerAccount, LedgerAccount.id == LedgerPosting.account_id)
        .where(LedgerAccount.code == f"marketplace:{club}:club_payable")
    )
    rate = app.state.settings.categories["plumbing"].commission_rate_bp
    net = round(1_180_000 * rate / 10_000 / 1.18)
    assert owed == round(net * 0.05) and owed > 0
    assert await db.count(Offer, Offer.business_id == maker_id) == 1


async def test_where_sign_up_is_by_invitation_none_is_a_403(app, client, db, database_url):
    from marketplace.app import create_app, shutdown, startup

    operator = await operator_token(app)
    club = await found_club(client, operator)
    code = await invitation(client, operator, club)
    closed = create_app(
        make_settings(database_url, MARKETPLACE__SERVICE__REGISTRATION_BY_INVITATION="true"),
        migrate_on_start=False,
        run_jobs_in_background=False,
    )
    await startup(closed.state)
    try:
        transport = httpx.ASGITransport(app=closed, client=("127.0.0.1", 50001))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            refused = await c.post("/v1/businesses", json=business_body())
            assert refused.status_code == 403 and "invitation" in refused.json()["detail"]
            invited = await c.post("/v1/businesses", json=business_body(invitation=code))
            assert invited.status_code == 201, invited.text
    finally:
        await shutdown(closed.state)
        await closed.state.engine.dispose()
    assert await db.count(Business) == 1


async def test_what_a_club_operator_is_owed_is_paid_out_once_by_an_operator(app, client, db):
    operator = await operator_token(app)
    club = await found_club(client, operator)
    _, maker = await member(client, operator, club, "deal_maker")
    await paid_club_deal(app, client, club, maker)

    listed = await client.get("/v1/payables", headers=auth(operator), params={"account": "club_payable"})
    assert listed.status_code == 200, listed.text
    ((payable),) = listed.json()["items"]
    owed = payable["owed"]["amount_minor"]
    assert payable["owner"] == club and owed > 0
    # Held while the deal maker has not paid its commission: the marketplace has not received what it would pay.
    assert payable["held"]["amount_minor"] == owed and payable["payable"]["amount_minor"] == 0
    earnings = (await client.get(f"/v1/clubs/{club}", headers=auth(operator))).json()["earnings"]
    assert earnings == payable  # the club's own page shows the same

    def payout(amount: int, key: str) -> Any:
        body = {"account": "club_payable", "owner": club, "amount": {"amount_minor": amount, "currency": "ILS"}}
        return client.post("/v1/payables/payouts", headers={**auth(operator), "Idempotency-Key": key}, json=body)

    early = await payout(owed, "k-early")
    assert early.status_code == 409 and early.json()["held"]["amount_minor"] == owed, early.text
    (charge,) = [
        s
        for s in (await client.get("/v1/settlements", headers=auth(maker))).json()["items"]
        if s["direction"] == "charge" and s["status"] == "pending"
    ]
    received = await client.post(f"/v1/settlements/{charge['id']}/confirm", headers=auth(operator))
    assert received.status_code == 200, received.text
    (payable,) = (await client.get("/v1/payables", headers=auth(operator))).json()["items"]
    assert payable["held"]["amount_minor"] == 0 and payable["payable"]["amount_minor"] == owed

    too_much = await payout(owed + 1, "k0")
    assert too_much.status_code == 409 and too_much.json()["owed"]["amount_minor"] == owed
    # Two payouts of everything at once: one is made, the other finds nothing left.
    first, second = await asyncio.gather(payout(owed, "k1"), payout(owed, "k2"))
    assert sorted((first.status_code, second.status_code)) == [201, 409], (first.text, second.text)
    made = first if first.status_code == 201 else second
    settlement = made.json()
    assert settlement["payee"] == f"marketplace:{club}:club_payable" and settlement["business_id"] is None
    assert settlement["status"] == "pending" and settlement["amount"]["amount_minor"] == owed
    replay = await payout(owed, "k1" if made is first else "k2")
    assert replay.status_code == 201 and replay.json()["id"] == settlement["id"]
    assert (await client.get("/v1/payables", headers=auth(operator))).json()["items"] == []

    failed = await client.post(f"/v1/settlements/{settlement['id']}/fail", headers=auth(operator))
    assert failed.status_code == 200 and failed.json()["status"] == "failed"
    (again,) = (await client.get("/v1/payables", headers=auth(operator))).json()["items"]
    assert again["owed"]["amount_minor"] == owed  # the transfer did not happen: owed again
    paid = await payout(owed, "k3" * 100)  # as long as a key may be (the payout's references hold its digest)
    assert paid.status_code == 201, paid.text
    confirmed = await client.post(f"/v1/settlements/{paid.json()['id']}/confirm", headers=auth(operator))
    assert confirmed.status_code == 200 and confirmed.json()["status"] == "confirmed"
    assert (await client.get("/v1/payables", headers=auth(operator))).json()["items"] == []
    balance = await client.get("/v1/wallet/trial-balance", headers=auth(operator))
    assert balance.json()["balanced"] is True, balance.text
    # Nobody else's money: a business cannot see or make payouts, and an unknown payee is a 404.
    assert (await client.get("/v1/payables", headers=auth(maker))).status_code == 403
    unknown = {"account": "referrer_payable", "owner": "nobody", "amount": {"amount_minor": 1, "currency": "ILS"}}
    assert (await client.post("/v1/payables/payouts", headers=auth(operator), json=unknown)).status_code == 404


async def test_policy_replay_offers_a_clubs_lead_to_its_members_only(app, client, settings):
    from marketplace.ranking.policies import make_ranker
    from marketplace.ranking.replay import replay

    operator = await operator_token(app)
    club = await found_club(client, operator)
    await member(client, operator, club, "deal_maker")
    for _ in range(3):  # as fit as the member, outside the club
        await register(client, "deal_maker", profile={"categories": ["plumbing"]})
    await app.state.ranking_sync.settled()
    await client.post("/v1/leads", json=lead_body(category="plumbing", club=club))
    await app.state.jobs.run_due()
    async with app.state.uow() as uow:
        policies = {name: make_ranker(name, settings, seed=1) for name in ("rotation", "random", "profitability")}
        await policies["profitability"].load(uow.session, clock_now())
        report = await replay(uow.session, settings, policies)
    assert report.leads == 1 and report.logged_estimated_per_lead > 0
    # Every policy could offer it to the one member only: what the logged offer was worth, not three places' worth.
    assert {round(v.per_lead, 6) for v in report.policies} == {round(report.logged_estimated_per_lead, 6)}


def clock_now() -> Any:
    from marketplace.clock import utcnow

    return utcnow()


async def test_a_clubs_operator_invites_into_its_own_club_only(app, client, db):
    operator = await operator_token(app)
    founded = await client.post(
        "/v1/clubs", headers=auth(operator), json={"name": "Negev Growers", "operator_name": "Negev Growers Assoc."}
    )
    assert founded.status_code == 201 and founded.json()["operator_token"].startswith("mkc_"), founded.text
    club, club_op = founded.json()["id"], founded.json()["operator_token"]
    other = await found_club(client, operator, name="Another club")

    response = await client.post(f"/v1/clubs/{club}/invitations", headers=auth(club_op), json={})
    assert response.status_code == 201, response.text
    bare = await client.post(f"/v1/clubs/{club}/invitations", headers=auth(club_op))  # no body: `email` is optional
    assert bare.status_code == 201 and bare.json()["code"] != response.json()["code"], bare.text
    joined = await client.post("/v1/businesses", json=business_body(invitation=response.json()["code"]))
    assert joined.status_code == 201, joined.text
    assert (await client.get(f"/v1/clubs/{club}", headers=auth(club_op))).json()["members"] == 1
    # Its members, by business id (whom it may take out), paged; a business's data stays its own.
    second = await client.post(f"/v1/clubs/{club}/invitations", headers=auth(club_op), json={})
    other_member = await client.post("/v1/businesses", json=business_body(invitation=second.json()["code"]))
    assert other_member.status_code == 201, other_member.text
    first_page = await client.get(f"/v1/clubs/{club}/members", headers=auth(club_op), params={"limit": 1})
    assert first_page.status_code == 200, first_page.text
    (one,) = first_page.json()["items"]
    assert set(one) == {"business_id", "name", "mode", "joined_at"}
    rest = await client.get(
        f"/v1/clubs/{club}/members", headers=auth(club_op), params={"cursor": first_page.json()["next_cursor"]}
    )
    listed = [one["business_id"]] + [m["business_id"] for m in rest.json()["items"]]
    assert listed == sorted([joined.json()["id"], other_member.json()["id"]]) and rest.json()["next_cursor"] is None
    assert (await client.get(f"/v1/clubs/{other}/members", headers=auth(club_op))).status_code == 404
    assert (await client.get("/v1/clubs/club_nowhere/members", headers=auth(operator))).status_code == 404
    bad = await client.get(f"/v1/clubs/{club}/members", headers=auth(club_op), params={"cursor": "nope"})
    assert bad.status_code == 422
    # Another club is unknown to it, and the marketplace's and businesses' routes are closed to it.
    assert (await client.post(f"/v1/clubs/{other}/invitations", headers=auth(club_op), json={})).status_code == 404
    assert (await client.get(f"/v1/clubs/{other}", headers=auth(club_op))).status_code == 404
    for method, path in (("GET", "/v1/clubs"), ("GET", "/v1/payables"), ("GET", "/v1/offers"), ("POST", "/v1/clubs")):
        assert (await client.request(method, path, headers=auth(club_op))).status_code == 403, path


async def test_a_member_leaves_or_is_removed_and_is_offered_the_clubs_leads_no_more(app, client, db):
    operator = await operator_token(app)
    founded = await client.post("/v1/clubs", headers=auth(operator), json={"name": "C", "operator_name": "Op"})
    club, club_op = founded.json()["id"], founded.json()["operator_token"]
    leaver_id, leaver = await member(client, operator, club, "lead_buyer")
    removed_id, removed = await member(client, operator, club, "lead_buyer")
    lead = await club_lead(app, client, club)
    assert [o["lead_id"] for o in await offers_of(client, leaver)] == [lead]
    (left_offer,), (removed_offer,) = await offers_of(client, leaver), await offers_of(client, removed)

    assert (await client.delete(f"/v1/businesses/me/clubs/{club}", headers=auth(leaver))).status_code == 204
    gone = await client.delete(f"/v1/clubs/{club}/members/{removed_id}", headers=auth(club_op))
    assert gone.status_code == 204, gone.text
    assert await offers_of(client, leaver) == [] and await offers_of(client, removed) == []  # withdrawn
    # A claim of an offer so withdrawn is told that (it was one 409 naming caps, credit, bids and blocks, not clubs).
    for token, offer, why in ((leaver, left_offer, "left"), (removed, removed_offer, "was removed from")):
        claim = await client.post(f"/v1/offers/{offer['offer_id']}/claim", headers=auth(token), json={})
        assert claim.status_code == 409, claim.text
        assert claim.json()["detail"] == (
            f"this offer was withdrawn: the business {why} the lead's club, whose leads are for its members only"
        )
    again = await client.delete(f"/v1/businesses/me/clubs/{club}", headers=auth(leaver))
    assert again.status_code == 404
    assert (await client.get(f"/v1/clubs/{club}", headers=auth(club_op))).json()["members"] == 0
    later = (await client.post("/v1/leads", json=lead_body(category="plumbing", club=club))).json()["id"]
    await app.state.jobs.run_due()
    assert later not in {o["lead_id"] for o in await offers_of(client, leaver)}
    # A business cannot remove another from a club.
    assert (await client.delete(f"/v1/clubs/{club}/members/{leaver_id}", headers=auth(removed))).status_code == 403


async def test_a_club_operators_token_is_reissued_and_the_old_one_stops_working(app, client):
    operator = await operator_token(app)
    founded = await client.post("/v1/clubs", headers=auth(operator), json={"name": "C", "operator_name": "Op"})
    club, old = founded.json()["id"], founded.json()["operator_token"]
    # The old token in use just before (so this process holds it in its principal cache): a leaked token replaced
    # stops working at once here, not when the cached entry ages out.
    assert (await client.get(f"/v1/clubs/{club}", headers=auth(old))).status_code == 200
    reissued = await client.post(f"/v1/clubs/{club}/operator-token", headers=auth(operator))
    assert reissued.status_code == 201 and reissued.json()["club_id"] == club, reissued.text
    new = reissued.json()["operator_token"]
    assert (await client.get(f"/v1/clubs/{club}", headers=auth(old))).status_code == 401
    invite = await client.post(f"/v1/clubs/{club}/invitations", headers=auth(old), json={})
    assert invite.status_code == 401
    assert (await client.get(f"/v1/clubs/{club}", headers=auth(new))).status_code == 200
    missing = await client.post("/v1/clubs/club_nowhere/operator-token", headers=auth(operator))
    assert missing.status_code == 404


async def test_an_offer_made_as_its_business_left_the_club_is_neither_shown_nor_claimed(app, client, db):
    from sqlalchemy import delete

    operator = await operator_token(app)
    club = await found_club(client, operator)
    leaver_id, leaver = await member(client, operator, club, "lead_buyer")
    lead = await club_lead(app, client, club)
    (offer,) = await offers_of(client, leaver)
    # The wave read the members just before the business left, and made its offer after (the race, by hand).
    async with app.state.uow() as uow:
        await uow.session.execute(delete(ClubMember).where(ClubMember.business_id == leaver_id))
    assert await offers_of(client, leaver) == []
    claim = await client.post(f"/v1/offers/{offer['offer_id']}/claim", headers=auth(leaver), json={"exclusive": False})
    assert claim.status_code == 409 and "no longer" in claim.json()["detail"], claim.text
    assert lead and await db.count(Offer, Offer.status == "claimed") == 0


async def test_the_same_customer_inside_a_club_and_on_the_open_market_is_two_leads(app, client):
    operator = await operator_token(app)
    club, other = await found_club(client, operator), await found_club(client, operator, name="Other")
    body = lead_body(category="plumbing")
    opened = await client.post("/v1/leads", json=body)
    inside = await client.post("/v1/leads", json={**body, "club": club})
    elsewhere = await client.post("/v1/leads", json={**body, "club": other})
    again = await client.post("/v1/leads", json={**body, "club": club})
    assert [r.status_code for r in (opened, inside, elsewhere, again)] == [201, 201, 201, 200]
    assert len({opened.json()["id"], inside.json()["id"], elsewhere.json()["id"]}) == 3
    assert again.json()["id"] == inside.json()["id"]  # within one club, one need is one lead


async def test_a_repeat_inside_a_club_is_the_same_lead(app, client, db):
    """Leads keep the dedup key they always had (category and phone); the club is matched beside it."""
    operator = await operator_token(app)
    club = await found_club(client, operator)
    body = lead_body(category="plumbing", club=club)
    first = await client.post("/v1/leads", json=body)
    again = await client.post("/v1/leads", json=body)
    assert (first.status_code, again.status_code) == (201, 200) and again.json()["id"] == first.json()["id"]


def _limit_invitations(app: Any, *, per_email: int, per_day: int) -> None:
    """The club operators' invitation email limits, as the test needs them."""
    import dataclasses

    service = app.state.settings.service
    app.state.settings = dataclasses.replace(
        app.state.settings,
        service=dataclasses.replace(
            service, club_invitations_per_email_per_day=per_email, club_invitation_emails_per_day=per_day
        ),
    )


async def test_a_clubs_operator_has_a_few_invitations_a_day_emailed_and_no_more(app, client, db):
    # A club operator's token (a third party's) made the marketplace email any address, as often as it liked.
    from datetime import timedelta

    from marketplace.clock import clock
    from marketplace.db.models import ClubInvitation, Notification

    _limit_invitations(app, per_email=3, per_day=5)
    operator = await operator_token(app)
    founded = await client.post("/v1/clubs", headers=auth(operator), json={"name": "C", "operator_name": "Op"})
    club, club_op = founded.json()["id"], auth(founded.json()["operator_token"])
    other = await client.post("/v1/clubs", headers=auth(operator), json={"name": "D", "operator_name": "Op"})

    async def invite(headers: dict[str, str], email: str | None, club_id: str = club) -> httpx.Response:
        return await client.post(f"/v1/clubs/{club_id}/invitations", headers=headers, json={"email": email})

    async def mailed(to: str) -> int:
        return sum(n["recipient"] == to for n in await notifications(client, operator, kind="invitation"))

    assert [(await invite(club_op, "victim@example.org")).status_code for _ in range(3)] == [201] * 3
    for email, per in (("Victim@Example.org", "to one address"), (None, None), ("a@x.example", None)):
        response = await invite(club_op, email)
        if per is None:
            assert response.status_code == 201, response.text  # a code handed over, or another address
            continue
        assert response.status_code == 429 and response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert per in problem["detail"] and "3" in problem["detail"]
        wait = int(response.headers["Retry-After"])
        assert problem["retry_after_seconds"] == wait and 86_000 < wait <= 86_400
    assert await mailed("victim@example.org") == 3
    assert (await invite(club_op, "b@x.example")).status_code == 201  # five emailed by this club today
    refused = await invite(club_op, "c@x.example")
    assert refused.status_code == 429 and "5 invitations by email a day" in refused.json()["detail"], refused.text
    assert await mailed("c@x.example") == 0
    assert await db.count(ClubInvitation) == 6 and await db.count(Notification) == 5  # nothing of the refusals
    assert (await invite(club_op, None)).status_code == 201  # a code for the operator to hand over: nobody mailed
    # The marketplace's own operators are not limited, nor is another club.
    assert (await invite(auth(operator), "victim@example.org")).status_code == 201
    assert (await invite(auth(other.json()["operator_token"]), "c@x.example", other.json()["id"])).status_code == 201
    clock.advance(timedelta(days=1, seconds=1))  # a day later: the first ones are out of the count
    assert (await invite(club_op, "victim@example.org")).status_code == 201


async def test_a_clubs_operator_s_invitations_to_one_mailbox_are_counted_however_its_address_is_spelled(
    app, client, db
):
    """victim+1@gmail.com, v.ictim@gmail.com and victim@googlemail.com reach victim@gmail.com's mailbox: counted as
    one address (they were three more, and a +tag per mail made the limit none). Each is mailed as it was written; a
    +tag elsewhere is the same mailbox, dots elsewhere another one."""
    _limit_invitations(app, per_email=3, per_day=20)
    operator = await operator_token(app)
    founded = await client.post("/v1/clubs", headers=auth(operator), json={"name": "C", "operator_name": "Op"})
    club, club_op = founded.json()["id"], auth(founded.json()["operator_token"])

    async def invite(email: str) -> int:
        response = await client.post(f"/v1/clubs/{club}/invitations", headers=club_op, json={"email": email})
        return response.status_code

    spellings = ["victim+1@gmail.com", "v.ictim@gmail.com", "Victim+x@GoogleMail.com"]
    assert [await invite(address) for address in spellings] == [201] * 3
    assert [await invite(a) for a in ("victim@gmail.com", "victim+2@gmail.com", "vic.tim@googlemail.com")] == [429] * 3
    recipients = sorted(n["recipient"] for n in await notifications(client, operator, kind="invitation"))
    assert recipients == sorted(["victim+1@gmail.com", "v.ictim@gmail.com", "victim+x@googlemail.com"])
    assert [await invite("dana@x.example") for _ in range(2)] == [201] * 2
    assert await invite("dana+leads@x.example") == 201
    assert await invite("Dana+other@x.example") == 429
    assert await invite("d.ana@x.example") == 201  # not Gmail: a dot may make another mailbox


async def test_the_marketplace_operators_invitations_do_not_use_up_the_club_operators_day(app, client, db):
    """Only the club's own operator is limited, and only its invitations are counted: each invitation keeps who made
    it (`created_by`), and the marketplace's operators' invitations into the club leave the club operator's day
    whole."""

    from sqlalchemy import select

    from marketplace.db.models import ClubInvitation

    _limit_invitations(app, per_email=2, per_day=3)
    operator = await operator_token(app)
    founded = await client.post("/v1/clubs", headers=auth(operator), json={"name": "C", "operator_name": "Op"})
    club, club_op = founded.json()["id"], auth(founded.json()["operator_token"])

    async def invite(headers: dict[str, str], email: str) -> int:
        response = await client.post(f"/v1/clubs/{club}/invitations", headers=headers, json={"email": email})
        return response.status_code

    mailed = ["dana@x.example", "dana@x.example", "ron@x.example"]
    assert [await invite(auth(operator), address) for address in mailed] == [201] * 3
    # The club's operator still has its two to one address and its three in all.
    assert [await invite(club_op, address) for address in mailed] == [201] * 3
    assert await invite(club_op, "dana@x.example") == 429
    assert await invite(club_op, "noa@x.example") == 429
    made_by = sorted(await db.scalars(select(ClubInvitation.created_by)))
    assert made_by[:3] == [f"club:{club}"] * 3
    assert len(set(made_by[3:])) == 1 and made_by[3].startswith("operator:op")
