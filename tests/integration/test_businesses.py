"""Sign-up, own account, profile changes and operators' status changes over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from marketplace.clock import clock
from marketplace.db.models import ApiToken, Business, BusinessStatusChange, Exposure, Lead, Offer
from marketplace.identity.tokens import hash_token
from tests.factories import (
    auth,
    business_body,
    lead_body,
    offer_lead_to,
    operator_token,
    register,
    sold_body,
    submit_lead,
)


async def test_sign_up_each_mode_returns_token_once_and_stores_it_hashed(client, db):
    for mode in ("deal_maker", "lead_buyer"):
        body = business_body(mode, phone="052-555-0177" if mode == "deal_maker" else "+972 52 555 0178")
        response = await client.post("/v1/businesses", json=body)
        assert response.status_code == 201, response.text
        data = response.json()
        assert data["mode"] == mode
        assert data["status"] == "active"
        assert data["phone"].startswith("+97252555")
        assert data["profile"]["categories"] == ["plumbing", "renovation"]
        token = data["api_token"]
        stored = await db.scalar(select(ApiToken).where(ApiToken.business_id == data["id"]))
        assert stored.token_hash == hash_token(token) and token not in stored.token_hash
        me = await client.get("/v1/businesses/me", headers=auth(token))
        assert me.status_code == 200
        assert "api_token" not in me.json()
        assert me.json()["id"] == data["id"]


async def test_profile_change_keeps_what_is_not_sent(client):
    _, token = await register(client, "deal_maker")
    response = await client.patch(
        "/v1/businesses/me",
        headers=auth(token),
        json={"name": "Renamed", "profile": {"regions": ["haifa"], "daily_cap": 5}},
    )
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["name"] == "Renamed"
    assert data["profile"]["regions"] == ["haifa"]
    assert data["profile"]["daily_cap"] == 5
    assert data["profile"]["categories"] == ["plumbing", "renovation"]
    again = await client.get("/v1/businesses/me", headers=auth(token))
    assert again.json()["profile"] == data["profile"]


async def test_a_change_that_changes_nothing_keeps_the_time_of_the_last_update(client):
    from marketplace.clock import clock

    _, token = await register(client, "deal_maker")
    before = (await client.get("/v1/businesses/me", headers=auth(token))).json()
    clock.advance(timedelta(minutes=5))
    for same in ({}, {"name": before["name"], "profile": {"daily_cap": before["profile"]["daily_cap"]}}):
        answer = await client.patch("/v1/businesses/me", headers=auth(token), json=same)
        assert answer.status_code == 200 and answer.json()["updated_at"] == before["updated_at"], (same, answer.text)
    renamed = await client.patch("/v1/businesses/me", headers=auth(token), json={"name": "Another name"})
    assert renamed.json()["updated_at"] > before["updated_at"]


async def test_a_null_in_a_profile_change_is_422_naming_the_field_and_changes_nothing(client):
    _, token = await register(client, "deal_maker")
    before = (await client.get("/v1/businesses/me", headers=auth(token))).json()
    for body, field in (
        ({"name": None}, "name"),
        ({"profile": None}, "profile"),
        ({"profile": {"daily_cap": None}}, "profile.daily_cap"),
        ({"name": "Renamed", "profile": {"categories": None}}, "profile.categories"),
    ):
        response = await client.patch("/v1/businesses/me", headers=auth(token), json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert [e["field"] for e in response.json()["errors"]] == [field], response.json()
    assert (await client.get("/v1/businesses/me", headers=auth(token))).json() == before


async def test_profile_change_with_caps_out_of_order_is_refused(client):
    _, token = await register(client)
    response = await client.patch("/v1/businesses/me", headers=auth(token), json={"profile": {"daily_cap": 9999}})
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["field"] == "profile.daily_cap" and "monthly_cap" in error["message"], error
    me = await client.get("/v1/businesses/me", headers=auth(token))
    assert me.json()["profile"]["daily_cap"] == 50


async def test_lowering_a_cap_to_what_was_received_withdraws_the_open_offers_replacements_too(app, client, db):
    clock.freeze(datetime(2026, 3, 10, 9, 0, tzinfo=UTC))  # mid-month, mid-day where the marketplace trades
    buyer_id, buyer = await register(client, "lead_buyer", profile={"daily_cap": 5, "monthly_cap": 100})
    claimed, kept, owed = [(await offer_lead_to(app, await submit_lead(client), [buyer_id]))[0] for _ in range(3)]
    exposure = await client.post(f"/v1/offers/{claimed}/claim", headers=auth(buyer), json={"exclusive": False})
    assert exposure.status_code == 201, exposure.text
    async with app.state.uow() as uow:  # a replacement it is owed, as a return makes one (its debt recorded)
        await uow.session.execute(
            update(Offer).where(Offer.id == owed).values(replaces_exposure_id=exposure.json()["id"])
        )
        await uow.session.execute(
            update(Exposure).where(Exposure.id == exposure.json()["id"]).values(replacement_owed_since=clock.now())
        )

    async def listed() -> set[str]:
        response = await client.get("/v1/offers", headers=auth(buyer))
        assert response.status_code == 200, response.text
        return {o["offer_id"] for o in response.json()["items"]}

    # One received today: a cap of 2 still takes one more, so nothing is withdrawn.
    lowered = await client.patch("/v1/businesses/me", headers=auth(buyer), json={"profile": {"daily_cap": 2}})
    assert lowered.status_code == 200, lowered.text
    assert await listed() == {kept, owed}
    # A cap of 1 is reached: a claim of `kept` could only be refused, so it leaves the list, as at a claim's cap; so
    # does the replacement, whose claim would be refused as well (what it was owed for stays owed).
    lowered = await client.patch("/v1/businesses/me", headers=auth(buyer), json={"profile": {"daily_cap": 1}})
    assert lowered.status_code == 200 and lowered.json()["profile"]["daily_cap"] == 1, lowered.text
    assert await listed() == set()
    assert await db.scalar(select(Offer.status).where(Offer.id == kept)) == "closed"
    assert await db.scalar(select(Offer.status).where(Offer.id == owed)) == "closed"
    refused = await client.post(f"/v1/offers/{kept}/claim", headers=auth(buyer), json={"exclusive": False})
    assert refused.status_code == 409 and "withdrawn" in refused.json()["detail"], refused.text
    assert "reached its daily or monthly cap" in refused.json()["detail"], refused.text

    # The next day the daily cap takes leads again, but a monthly cap lowered to the month's one lead is reached.
    clock.advance(timedelta(days=1))
    (tomorrows,) = await offer_lead_to(app, await submit_lead(client), [buyer_id])
    assert tomorrows in await listed()
    same = await client.patch("/v1/businesses/me", headers=auth(buyer), json={"profile": {"monthly_cap": 2}})
    assert same.status_code == 200 and tomorrows in await listed()
    lowered = await client.patch(
        "/v1/businesses/me", headers=auth(buyer), json={"profile": {"daily_cap": 1, "monthly_cap": 1}}
    )
    assert lowered.status_code == 200, lowered.text
    assert tomorrows not in await listed()
    assert await db.scalar(select(Offer.status).where(Offer.id == tomorrows)) == "closed"


async def test_duplicate_email_is_a_conflict(client, db):
    body = business_body()
    assert (await client.post("/v1/businesses", json=body)).status_code == 201
    again = business_body(email=body["email"].upper())
    response = await client.post("/v1/businesses", json=again)
    assert response.status_code == 409
    assert response.json()["errors"] == [{"field": "email", "message": "already registered"}]
    assert await db.count(Business) == 1


async def test_sign_ups_are_rate_limited_per_client_address_apart_from_intake(app, client, db):
    app.state.rate_limits["signup"].per_minute = 3
    statuses = [(await client.post("/v1/businesses", json=business_body())).status_code for _ in range(4)]
    assert statuses == [201, 201, 201, 429]
    assert await db.count(Business) == 3
    # Lead intake keeps its own budget: sign-ups never use it up.
    assert (await client.post("/v1/leads", json=lead_body())).status_code == 201


@pytest.mark.parametrize(
    "change",
    [{}, {"profile": {"categories": ["legal"], "regions": ["tel-aviv"], "daily_cap": 3}}],
    ids=["email", "email-and-profile"],
)
async def test_two_businesses_taking_one_email_at_once_get_a_conflict_not_an_error(client, db, change):
    # With a profile change too: its statements run before the savepoint that catches the unique index's refusal
    # (sessions do not autoflush, so the email is written in that savepoint, not by them).
    tokens = [(await register(client))[1] for _ in range(6)]
    body = {"email": "shared@x.example", **change}
    responses = await asyncio.gather(*(client.patch("/v1/businesses/me", headers=auth(t), json=body) for t in tokens))
    assert sorted(r.status_code for r in responses) == [200] + [409] * 5, [r.text for r in responses]
    assert await db.count(Business, Business.email == "shared@x.example") == 1


async def test_operator_blocks_and_the_business_is_listed_unreliable(app, client, db):
    business_id, token = await register(client)
    op = await operator_token(app)
    # Acting before the block: the process now holds the business's token in its principal cache.
    assert (await client.patch("/v1/businesses/me", headers=auth(token), json={"name": "Before"})).status_code == 200
    response = await client.post(f"/v1/businesses/{business_id}/block", headers=auth(op), json={"reason": "fraud"})
    assert response.status_code == 200
    assert response.json()["status"] == "blocked"
    (change,) = await db.scalars(select(BusinessStatusChange).where(BusinessStatusChange.business_id == business_id))
    assert (change.from_status, change.to_status, change.reason) == ("active", "blocked", "fraud") and change.unreliable
    listed = await client.get("/v1/unreliable")
    assert [b["id"] for b in listed.json()["items"]] == [business_id]
    # Blocking it again is kept (who asked, and why) but changes nothing: its updated_at stays.
    clock.advance(timedelta(minutes=5))
    again = await client.post(f"/v1/businesses/{business_id}/block", headers=auth(op), json={"reason": "again"})
    assert again.status_code == 200 and again.json()["updated_at"] == response.json()["updated_at"]
    # A blocked business may still read its account, but no longer act.
    assert (await client.get("/v1/businesses/me", headers=auth(token))).status_code == 200
    refused = await client.patch("/v1/businesses/me", headers=auth(token), json={"name": "x"})
    assert refused.status_code == 403

    # Let back in, it stays listed; only an operator's explicit correction takes the mark back, with its reason.
    back = {"status": "active", "reason": "appeal heard"}
    assert (await client.post(f"/v1/businesses/{business_id}/status", headers=auth(op), json=back)).status_code == 200
    assert [b["id"] for b in (await client.get("/v1/unreliable")).json()["items"]] == [business_id]
    unexplained = await client.post(
        f"/v1/businesses/{business_id}/status", headers=auth(op), json={"status": "active", "unreliable": False}
    )
    assert unexplained.status_code == 422 and unexplained.json()["errors"][0]["field"] == "reason"
    cleared = await client.post(
        f"/v1/businesses/{business_id}/status",
        headers=auth(op),
        json={"status": "active", "reason": "the alert was wrong", "unreliable": False},
    )
    assert cleared.status_code == 200 and cleared.json()["unreliable"] is False
    assert (await client.get("/v1/unreliable")).json()["items"] == []
    reasons = set(await db.scalars(select(BusinessStatusChange.reason)))
    assert "taken off the unreliable list: the alert was wrong" in reasons
    # A block without a reason is kept saying so.
    other_id, _ = await register(client)
    assert (await client.post(f"/v1/businesses/{other_id}/block", headers=auth(op))).status_code == 200
    reason = await db.scalar(select(BusinessStatusChange.reason).where(BusinessStatusChange.business_id == other_id))
    assert reason == "no reason given"
    # The status change takes none (test_a_status_change_says_why_or_changes_nothing).


async def test_a_block_through_the_status_call_never_takes_the_public_mark_back(app, client, db):
    """`POST .../status {"status": "blocked", "unreliable": false}` on a blocked business listed as unreliable took it
    off the public list while it stayed blocked, where `POST .../block {"unreliable": false}` keeps the mark (a block
    never takes a mark back). Both keep it now; letting the business back in with `unreliable: false` takes it off."""
    op = await operator_token(app)
    business_id, _ = await register(client)

    async def listed() -> list[str]:
        return [b["id"] for b in (await client.get("/v1/unreliable")).json()["items"]]

    blocked = await client.post(f"/v1/businesses/{business_id}/block", headers=auth(op), json={"reason": "fraud"})
    assert blocked.status_code == 200 and blocked.json()["unreliable"] is True, blocked.text
    for path, body in (
        ("block", {"reason": "re-block", "unreliable": False}),
        ("status", {"status": "blocked", "unreliable": False, "reason": "status call as a block"}),
    ):
        again = await client.post(f"/v1/businesses/{business_id}/{path}", headers=auth(op), json=body)
        assert again.status_code == 200, again.text
        assert again.json()["status"] == "blocked" and again.json()["unreliable"] is True, (path, again.text)
        assert await listed() == [business_id]
    assert await db.scalar(select(Business.unreliable_since).where(Business.id == business_id)) is not None
    back = {"status": "active", "unreliable": False, "reason": "the mark was wrong"}
    cleared = await client.post(f"/v1/businesses/{business_id}/status", headers=auth(op), json=back)
    assert cleared.status_code == 200 and cleared.json()["unreliable"] is False, cleared.text
    assert await listed() == []


async def test_operators_read_the_history_of_an_accounts_status_newest_first(app, client, db):
    """Every operator's change of an account is kept "with who made it and why" (business_status_changes), and could
    not be read over HTTP. `GET /v1/businesses/{id}/status-changes`: operators only, newest first, paged."""
    op = await operator_token(app)
    business_id, token = await register(client, "deal_maker")
    for path, body in (
        ("status", {"status": "suspended", "reason": "unpaid invoices"}),
        ("status", {"status": "active", "reason": "paid"}),
        ("block", {"reason": "fake inquiries"}),
        ("status", {"status": "active", "unreliable": False, "reason": "the mark was wrong"}),
    ):
        changed = await client.post(f"/v1/businesses/{business_id}/{path}", headers=auth(op), json=body)
        assert changed.status_code == 200, changed.text
    url = f"/v1/businesses/{business_id}/status-changes"
    listed = await client.get(url, headers=auth(op))
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert [(i["from_status"], i["status"], i["listed_unreliable"]) for i in items] == [
        ("blocked", "active", False),
        ("active", "blocked", True),
        ("suspended", "active", False),
        ("active", "suspended", False),
    ]
    assert items[0]["reason"] == "taken off the unreliable list: the mark was wrong"
    assert items[-1]["reason"] == "unpaid invoices" and items[-1]["at"]
    operator_id = items[0]["changed_by"].removeprefix("operator:")
    assert all(i["operator_id"] == operator_id and i["operator_name"] for i in items), items
    assert listed.json()["next_cursor"] is None
    # A page at a time, each change once.
    first = (await client.get(url, headers=auth(op), params={"limit": 3})).json()
    rest = (await client.get(url, headers=auth(op), params={"cursor": first["next_cursor"]})).json()
    assert [i["id"] for i in first["items"] + rest["items"]] == [i["id"] for i in items] and rest["next_cursor"] is None
    assert (await client.get(url, headers=auth(op), params={"cursor": "nonsense"})).status_code == 422
    # Operators only; an unknown business is a 404.
    assert (await client.get(url, headers=auth(token))).status_code == 403
    assert (await client.get("/v1/businesses/biz_nobody/status-changes", headers=auth(op))).status_code == 404


async def test_a_second_block_publishes_no_mark_the_operator_did_not_ask_for(app, client, db):
    """A block with `unreliable: false`, sent again without it (a retry, or another reason added), listed the business
    publicly as unreliable: a block of a blocked business changes only what it names, and keeps its mark otherwise."""
    op = await operator_token(app)

    async def block(business_id: str, body: dict[str, object] | None = None) -> dict[str, object]:
        response = await client.post(f"/v1/businesses/{business_id}/block", headers=auth(op), json=body)
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def listed() -> list[str]:
        return [b["id"] for b in (await client.get("/v1/unreliable")).json()["items"]]

    quiet_id, _ = await register(client)
    assert (await block(quiet_id, {"reason": "chargeback review", "unreliable": False}))["unreliable"] is False
    assert (await block(quiet_id, {"reason": "chargeback review"}))["unreliable"] is False
    assert (await block(quiet_id))["unreliable"] is False
    assert await listed() == []
    # Blocked through the status call (no mark), then by the block call: unmarked too.
    status_id, _ = await register(client)
    blocking = {"status": "blocked", "reason": "chargeback review"}
    changed = await client.post(f"/v1/businesses/{status_id}/status", headers=auth(op), json=blocking)
    assert changed.status_code == 200, changed.text
    assert (await block(status_id))["unreliable"] is False
    assert await listed() == []
    # Asked for, the mark is published, on a blocked business as on an active one (the first block's default).
    assert (await block(quiet_id, {"reason": "fraud confirmed", "unreliable": True}))["unreliable"] is True
    active_id, _ = await register(client)
    assert (await block(active_id))["unreliable"] is True
    assert sorted(await listed()) == sorted([quiet_id, active_id])
    # And kept by a block that leaves it out.
    assert (await block(active_id, {"reason": "again"}))["unreliable"] is True
    marks = await db.scalars(
        select(BusinessStatusChange.unreliable)
        .where(BusinessStatusChange.business_id == quiet_id)
        .order_by(BusinessStatusChange.changed_at, BusinessStatusChange.id)
    )
    assert marks == [False, False, False, True]


async def test_a_business_marked_unreliable_keeps_the_name_it_is_listed_under(app, client, db):
    op = await operator_token(app)
    business_id, token = await register(client, name="Shady Pipes")
    await register(client, name="Honest Pipes")
    block = await client.post(f"/v1/businesses/{business_id}/block", headers=auth(op), json={"reason": "fraud"})
    assert block.status_code == 200, block.text
    back = {"status": "active", "reason": "appeal heard"}
    assert (await client.post(f"/v1/businesses/{business_id}/status", headers=auth(op), json=back)).status_code == 200

    # Let back in, it is still listed: renamed, the public warning would name an honest competitor. The whole
    # change is refused, the fields that could change with it too.
    taking = {"name": "Honest Pipes", "profile": {"daily_cap": 7}}
    refused = await client.patch("/v1/businesses/me", headers=auth(token), json=taking)
    assert refused.status_code == 409, refused.text
    assert [e["field"] for e in refused.json()["errors"]] == ["name"]
    listed = (await client.get("/v1/unreliable")).json()["items"]
    assert [(b["id"], b["name"]) for b in listed] == [(business_id, "Shady Pipes")]
    me = (await client.get("/v1/businesses/me", headers=auth(token))).json()
    assert (me["name"], me["profile"]["daily_cap"]) == ("Shady Pipes", 50)
    # Its own name (spaces aside) and the other fields it may still change.
    same = {"name": " Shady Pipes ", "profile": {"daily_cap": 7}}
    kept = await client.patch("/v1/businesses/me", headers=auth(token), json=same)
    assert kept.status_code == 200, kept.text
    assert (kept.json()["name"], kept.json()["profile"]["daily_cap"]) == ("Shady Pipes", 7)
    # Nor may anyone else take the listed name (any case): neither a new sign-up (with a fresh email and phone, the
    # listed business coming back) nor another business renaming itself; refused, nothing is written.
    businesses = await db.count(Business)
    clone = await client.post("/v1/businesses", json=business_body("lead_buyer", name="shady pipes"))
    assert clone.status_code == 409 and clone.json()["errors"][0]["field"] == "name", clone.text
    assert await db.count(Business) == businesses
    _, honest = await register(client, name="Other Pipes")
    taken = await client.patch("/v1/businesses/me", headers=auth(honest), json={"name": "Shady Pipes"})
    assert taken.status_code == 409 and taken.json()["errors"][0]["field"] == "name", taken.text
    # However it is written: punctuation and spaces aside, and case over all of Unicode on both databases (SQLite's
    # lower() folded ASCII letters only, and an exact match let a full stop or a second space through).
    for written in ("SHADY  PIPES.", "Shady-Pipes!"):
        refused = await client.post("/v1/businesses", json=business_body("lead_buyer", name=written))
        assert refused.status_code == 409 and refused.json()["errors"][0]["field"] == "name", (written, refused.text)
        renaming = await client.patch("/v1/businesses/me", headers=auth(honest), json={"name": written})
        assert renaming.status_code == 409 and renaming.json()["errors"][0]["field"] == "name", renaming.text
    bau_id, _ = await register(client, name="Öko Bau")
    assert (await client.post(f"/v1/businesses/{bau_id}/block", headers=auth(op))).status_code == 200
    for written in ("ÖKO BAU", "öko bau.", "Oeko Bau"):
        answer = await client.post("/v1/businesses", json=business_body("lead_buyer", name=written))
        expected = 201 if written == "Oeko Bau" else 409  # another name, however close
        assert answer.status_code == expected, (written, answer.text)
    assert await db.count(Business) == businesses + 3
    # Suspended and listed, it may not rename either (only a blocked business is refused every change).
    suspend = {"status": "suspended", "reason": "under review", "unreliable": True}
    suspended = await client.post(f"/v1/businesses/{business_id}/status", headers=auth(op), json=suspend)
    assert suspended.status_code == 200, suspended.text
    renamed = await client.patch("/v1/businesses/me", headers=auth(token), json={"name": "Honest Pipes"})
    assert renamed.status_code == 409 and renamed.json()["errors"][0]["field"] == "name"

    # Taken off the list by an operator, it may rename.
    off = {"status": "active", "reason": "the alert was wrong", "unreliable": False}
    assert (await client.post(f"/v1/businesses/{business_id}/status", headers=auth(op), json=off)).status_code == 200
    renamed = await client.patch("/v1/businesses/me", headers=auth(token), json={"name": "Fresh Pipes"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Fresh Pipes"
    assert await db.scalar(select(Business.name).where(Business.id == business_id)) == "Fresh Pipes"


async def test_a_blocked_or_unreliable_business_phone_signs_up_no_one_else(app, client, db):
    op = await operator_token(app)
    blocked_id, _ = await register(client, "deal_maker", name="Gone Pipes", phone="+972 52 555 0190")
    assert (await client.post(f"/v1/businesses/{blocked_id}/block", headers=auth(op))).status_code == 200

    # The same business again under a new email, its phone written another way: refused, nothing written.
    clone = business_body("deal_maker", name="Gone Pipes", phone="052-555-0190")
    refused = await client.post("/v1/businesses", json=clone)
    assert refused.status_code == 409, refused.text
    assert [e["field"] for e in refused.json()["errors"]] == ["phone"]
    assert await db.count(Business) == 1
    # An active business's phone others may share (a franchise's branches).
    await register(client, phone="+972525550191")
    assert (await client.post("/v1/businesses", json=business_body(phone="052 555 0191"))).status_code == 201
    # Let back in but still listed as unreliable, its phone is refused too; taken off the list, no longer.
    listed_id, _ = await register(client, phone="+972525550192")
    assert (await client.post(f"/v1/businesses/{listed_id}/block", headers=auth(op))).status_code == 200
    back = {"status": "active", "reason": "appeal heard"}
    assert (await client.post(f"/v1/businesses/{listed_id}/status", headers=auth(op), json=back)).status_code == 200
    again = await client.post("/v1/businesses", json=business_body(phone="0525550192"))
    assert again.status_code == 409 and again.json()["errors"][0]["field"] == "phone"
    off = {"status": "active", "reason": "the alert was wrong", "unreliable": False}
    assert (await client.post(f"/v1/businesses/{listed_id}/status", headers=auth(op), json=off)).status_code == 200
    assert (await client.post("/v1/businesses", json=business_body(phone="0525550192"))).status_code == 201

    # A business may not take a blocked business's phone by changing its own either; its phone stays.
    other_id, other = await register(client)
    phone = await db.scalar(select(Business.phone).where(Business.id == other_id))
    taking = await client.patch("/v1/businesses/me", headers=auth(other), json={"phone": "+972-52-555-0190"})
    assert taking.status_code == 409, taking.text
    assert [e["field"] for e in taking.json()["errors"]] == ["phone"]
    assert (await client.get("/v1/businesses/me", headers=auth(other))).json()["phone"] == phone != "+972525550190"
    # Another active business's phone it may take.
    shared = await client.patch("/v1/businesses/me", headers=auth(other), json={"phone": "+972525550191"})
    assert shared.status_code == 200 and shared.json()["phone"] == "+972525550191"


async def test_operator_suspends_and_reactivates(app, client, db):
    business_id, _ = await register(client)
    op = await operator_token(app)
    for status, reason in (("suspended", "  unpaid invoices "), ("active", "paid")):
        response = await client.post(
            f"/v1/businesses/{business_id}/status", headers=auth(op), json={"status": status, "reason": reason}
        )
        assert response.status_code == 200
        assert response.json()["status"] == status
    # Each change is kept with who made it and why.
    changes = list(await db.scalars(select(BusinessStatusChange).order_by(BusinessStatusChange.changed_at)))
    assert [(c.from_status, c.to_status, c.reason, c.unreliable) for c in changes] == [
        ("active", "suspended", "unpaid invoices", False),
        ("suspended", "active", "paid", False),
    ]
    assert {c.changed_by for c in changes} == {changes[0].changed_by} and changes[0].changed_by.startswith("operator:")
    assert all(c.business_id == business_id for c in changes)
    back = {"status": "active", "reason": "paid"}
    missing = await client.post("/v1/businesses/biz_nope/status", headers=auth(op), json=back)
    assert missing.status_code == 404


async def test_a_status_change_says_why_or_changes_nothing(app, client, db):
    """The business is told why its status changed: a suspension, a block or a reactivation through the status call
    with no reason, an empty one or one of invisible characters alone is a 422 naming `reason`, and nothing changes
    (no status, no record, no message)."""
    from marketplace.db.models import Notification

    op = await operator_token(app)
    active_id, _ = await register(client)
    suspended_id, _ = await register(client)
    suspend = {"status": "suspended", "reason": "unpaid invoices"}
    assert (
        await client.post(f"/v1/businesses/{suspended_id}/status", headers=auth(op), json=suspend)
    ).status_code == 200
    changes, messages = await db.count(BusinessStatusChange), await db.count(Notification)
    for business_id, status in ((active_id, "suspended"), (active_id, "blocked"), (suspended_id, "active")):
        before = await db.scalar(select(Business.status).where(Business.id == business_id))
        for reason in (None, "", "   ", "\u200b\u2060", "\u3164\n"):
            body = {"status": status} | ({} if reason is None else {"reason": reason})
            r = await client.post(f"/v1/businesses/{business_id}/status", headers=auth(op), json=body)
            assert r.status_code == 422, (status, reason, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert [e["field"] for e in r.json()["errors"]] == ["reason"], (status, reason, r.text)
        assert await db.scalar(select(Business.status).where(Business.id == business_id)) == before
    assert (await db.count(BusinessStatusChange), await db.count(Notification)) == (changes, messages)
    # The block call is as it was: a reason is its own choice there.
    assert (await client.post(f"/v1/businesses/{active_id}/block", headers=auth(op))).status_code == 200


async def test_a_suspended_business_keeps_its_deals_but_takes_nothing_from_the_market(app, client, db):
    """A suspension is a hold, not a block: the business may read its account, manage it and report its deals, but
    not claim, buy exclusively, sell an inquiry nor withdraw, each a 403 that says it is suspended, nothing changed.
    Let back in, it may again."""
    from marketplace.db.models import Exposure

    op = await operator_token(app)
    business_id, token = await register(client, "lead_buyer")
    held_lead, waiting_lead = await submit_lead(client), await submit_lead(client, category="renovation")
    (held_offer,), (waiting_offer,) = [await offer_lead_to(app, x, [business_id]) for x in (held_lead, waiting_lead)]
    claimed = await client.post(f"/v1/offers/{held_offer}/claim", headers=auth(token), json={"exclusive": False})
    assert claimed.status_code == 201, claimed.text
    exposure_id = claimed.json()["id"]
    suspend = {"status": "suspended", "reason": "checking its sold inquiries"}
    suspended = await client.post(f"/v1/businesses/{business_id}/status", headers=auth(op), json=suspend)
    assert suspended.status_code == 200, suspended.text
    leads, exposures = await db.count(Lead), await db.count(Exposure)

    # In Haifa: outside its own profile's regions, an inquiry it may sell.
    contact = {"name": "Sold Inquiry", "phone": "+972525550166", "email": "sold@example.com"}
    sold = lead_body(region="haifa", contact=contact)
    for method, path, body in (
        ("POST", f"/v1/offers/{waiting_offer}/claim", {"exclusive": False}),
        ("POST", f"/v1/exposures/{exposure_id}/exclusive", None),
        ("POST", "/v1/businesses/me/leads", sold),
        ("POST", "/v1/wallet/withdrawals", {"amount": {"amount_minor": 100, "currency": "ILS"}}),
    ):
        refused = await client.request(method, path, headers=auth(token), json=body)
        assert refused.status_code == 403 and "suspended" in refused.json()["detail"], (path, refused.text)
    assert (await db.count(Lead), await db.count(Exposure)) == (leads, exposures)
    exposure = await db.scalar(select(Exposure).where(Exposure.id == exposure_id))
    assert exposure.kind == "shared"

    # What it holds and its account are still its own.
    assert (await client.get(f"/v1/exposures/{exposure_id}", headers=auth(token))).status_code == 200
    contacted = {"status": "contacted"}
    reported = await client.post(f"/v1/exposures/{exposure_id}/status", headers=auth(token), json=contacted)
    assert reported.status_code == 200, reported.text
    renamed = await client.patch("/v1/businesses/me", headers=auth(token), json={"name": "Held Pipes"})
    assert renamed.status_code == 200 and renamed.json()["status"] == "suspended"

    back = {"status": "active", "reason": "inquiries checked"}
    assert (await client.post(f"/v1/businesses/{business_id}/status", headers=auth(op), json=back)).status_code == 200
    assert (await client.post("/v1/businesses/me/leads", headers=auth(token), json=sold)).status_code == 201


async def test_a_business_is_told_when_an_operator_changes_its_account_status(app, client):
    """Each change of status (and of the public mark) puts an `account_status` message to the business's email in
    the outbox, with the reason; saying the same again sends nothing."""
    op = await operator_token(app)
    business_id, _ = await register(client, "deal_maker", name="Told Pipes", email="told@example.com")
    for path, body in (
        ("status", {"status": "suspended", "reason": "unpaid invoices"}),
        ("status", {"status": "suspended", "reason": "still unpaid"}),  # no change: no message
        ("status", {"status": "active", "reason": "paid"}),
        ("block", {"reason": "fake inquiries"}),
        ("block", {"reason": "fake inquiries"}),  # a retry: no message
        ("status", {"status": "active", "unreliable": False, "reason": "the mark was wrong"}),
    ):
        changed = await client.post(f"/v1/businesses/{business_id}/{path}", headers=auth(op), json=body)
        assert changed.status_code == 200, changed.text
    listed = await client.get(f"/v1/notifications?kind=account_status&reference={business_id}", headers=auth(op))
    assert listed.status_code == 200, listed.text
    messages = list(reversed(listed.json()["items"]))  # oldest first
    assert [(m["recipient"], m["subject"]) for m in messages] == [
        ("told@example.com", "Your account is suspended"),
        ("told@example.com", "Your account is active again"),
        ("told@example.com", "Your account is blocked"),
        ("told@example.com", "Your account is active again"),
    ]
    suspended, active, blocked, delisted = (m["body"] for m in messages)
    assert suspended.startswith("Told Pipes:") and "may not claim" in suspended
    assert suspended.endswith("Reason: unpaid invoices.")
    assert active.endswith("Reason: paid.")
    assert "listed publicly as unreliable" in blocked and blocked.endswith("Reason: fake inquiries.")
    assert "no longer on the public list" in delisted and "the mark was wrong" in delisted


async def test_an_operators_block_gives_the_open_leads_back_to_the_market(app, client, db):
    from marketplace.db.models import Exposure, Lead
    from tests.integration.fraud_market import claimed_deal, report

    op = await operator_token(app)
    blocked_id, blocked = await register(client, "deal_maker", name="Gone Pipes")
    other_id, other = await register(client, "deal_maker", name="Next Pipes")
    open_lead, open_exposure = await claimed_deal(app, client, blocked_id, blocked)
    won_lead, won_exposure = await claimed_deal(app, client, blocked_id, blocked)
    await report(client, blocked, won_exposure, "won", turnover=50_000)

    response = await client.post(f"/v1/businesses/{blocked_id}/block", headers=auth(op), json={})
    assert response.status_code == 200, response.text
    # The deal not yet won is closed as lost and its lead's slot is free again; the won deal stays, with what it owes.
    exposure = await db.scalar(select(Exposure).where(Exposure.id == open_exposure))
    assert exposure.status == "lost"
    lead = await db.scalar(select(Lead).where(Lead.id == open_lead))
    assert lead.status == "open" and lead.exposure_count == 0
    assert (await db.scalar(select(Exposure.status).where(Exposure.id == won_exposure))) == "won"
    assert (await db.scalar(select(Lead.exposure_count).where(Lead.id == won_lead))) == 1
    # The next wave offers the freed lead to another business that fits it.
    await app.state.jobs.run_due()
    offered = await client.get("/v1/offers", headers=auth(other))
    assert open_lead in [o["lead_id"] for o in offered.json()["items"]]
    assert other_id != blocked_id
    # Blocking again frees nothing twice.
    again = await client.post(f"/v1/businesses/{blocked_id}/block", headers=auth(op), json={})
    assert again.status_code == 200
    assert (await db.scalar(select(Lead.exposure_count).where(Lead.id == open_lead))) == 0


async def test_a_block_through_the_status_call_gives_the_open_leads_back_too(app, client, db):
    from marketplace.db.models import Exposure, Lead
    from tests.integration.fraud_market import claimed_deal

    op = await operator_token(app)
    blocked_id, blocked = await register(client, "deal_maker")
    lead_id, exposure_id = await claimed_deal(app, client, blocked_id, blocked)
    blocking = {"status": "blocked", "reason": "fraud"}
    response = await client.post(f"/v1/businesses/{blocked_id}/status", headers=auth(op), json=blocking)
    assert response.status_code == 200 and response.json()["status"] == "blocked"
    assert (await db.scalar(select(Exposure.status).where(Exposure.id == exposure_id))) == "lost"
    assert (await db.scalar(select(Lead.exposure_count).where(Lead.id == lead_id))) == 0
    # Not listed as unreliable: that is what POST .../block adds.
    assert (await client.get("/v1/unreliable")).json()["items"] == []


async def test_a_deal_released_by_a_block_cannot_be_returned_and_a_lead_buyer_keeps_what_it_bought(app, client, db):
    op = await operator_token(app)
    dm_id, dm = await register(client, "deal_maker")
    lb_id, lb = await register(client, "lead_buyer")
    lead_id = await submit_lead(client)
    offers = dict(zip((dm_id, lb_id), await offer_lead_to(app, lead_id, [dm_id, lb_id]), strict=True))
    assigned = (await client.post(f"/v1/offers/{offers[dm_id]}/claim", headers=auth(dm))).json()["id"]
    bought = (await client.post(f"/v1/offers/{offers[lb_id]}/claim", headers=auth(lb))).json()["id"]
    for business_id in (dm_id, lb_id):
        assert (await client.post(f"/v1/businesses/{business_id}/block", headers=auth(op))).status_code == 200
        back = {"status": "active", "reason": "cleared"}
        let_in = await client.post(f"/v1/businesses/{business_id}/status", headers=auth(op), json=back)
        assert let_in.status_code == 200, let_in.text

    # The deal maker's deal went back to the market with the block: it is not its to return any more.
    returned = await client.post(f"/v1/exposures/{assigned}/return", headers=auth(dm), json={"reason": "x"})
    assert returned.status_code == 409 and "released" in returned.json()["detail"], returned.text
    # The lead buyer paid for its lead: the block left it, and its contact, where they were.
    kept = (await client.get(f"/v1/exposures/{bought}", headers=auth(lb))).json()
    assert kept["status"] == "new" and kept["contact"] is not None
    assert (await db.scalar(select(Lead.exposure_count).where(Lead.id == lead_id))) == 1


async def test_a_block_takes_the_inquiries_the_business_sold_off_the_market(app, client, db):
    """A blocked seller earned on from every later claim of leads it sold (a tester: blocked and listed as
    unreliable, its sold lead was still bought and paid it 148.30). What was bought before the block stands."""
    op = await operator_token(app)
    seller_id, seller = await register(client, "lead_buyer", profile={"categories": ["plumbing"]})
    first_id, first = await register(client, "lead_buyer", profile={"categories": ["plumbing"]})
    late_id, late = await register(client, "lead_buyer", profile={"categories": ["plumbing"]})
    sold = await client.post("/v1/businesses/me/leads", headers=auth(seller), json=sold_body(category="plumbing"))
    assert sold.status_code == 201, sold.text
    lead_id = sold.json()["id"]
    offers = dict(zip((first_id, late_id), await offer_lead_to(app, lead_id, [first_id, late_id]), strict=True))
    bought = await client.post(f"/v1/offers/{offers[first_id]}/claim", headers=auth(first), json={"exclusive": False})
    assert bought.status_code == 201, bought.text

    assert (await client.post(f"/v1/businesses/{seller_id}/block", headers=auth(op))).status_code == 200

    refused = await client.post(f"/v1/offers/{offers[late_id]}/claim", headers=auth(late), json={"exclusive": False})
    assert refused.status_code == 409, refused.text
    assert [o["offer_id"] for o in (await client.get("/v1/offers", headers=auth(late))).json()["items"]] == []
    assert await db.scalar(select(Lead.status).where(Lead.id == lead_id)) == "closed"
    # The purchase made before the block stands, contact and all.
    kept = (await client.get(f"/v1/exposures/{bought.json()['id']}", headers=auth(first))).json()
    assert kept["contact"] is not None


async def test_the_stats_of_an_unknown_business_are_a_404(app, client):
    op = await operator_token(app)
    assert (await client.get("/v1/businesses/biz_nope/stats", headers=auth(op))).status_code == 404
    business_id, _ = await register(client)
    assert (await client.get(f"/v1/businesses/{business_id}/stats", headers=auth(op))).status_code == 200


# --- replacing a business's API token (a leaked one could only be blocked before) --------------------------------


async def live_tokens(db, business_id: str) -> list[str]:
    return list(
        await db.scalars(
            select(ApiToken.token_hash).where(ApiToken.business_id == business_id, ApiToken.revoked_at.is_(None))
        )
    )


async def test_a_business_replaces_its_own_token_and_the_old_one_is_refused_at_once(app, client, db):
    business_id, old = await register(client, "lead_buyer")
    other_id, other = await register(client, "deal_maker")
    # The old token in use just before (so this process holds it in its principal cache): a leaked token replaced
    # stops working at once here, not when the cached entry ages out.
    assert (await client.get("/v1/businesses/me", headers=auth(old))).status_code == 200
    assert (await client.get("/v1/businesses/me", headers=auth(other))).status_code == 200
    replaced = await client.post("/v1/businesses/me/api-token", headers=auth(old))
    assert replaced.status_code == 201, replaced.text
    assert replaced.json()["business_id"] == business_id
    new = replaced.json()["api_token"]
    assert new.startswith("mkb_") and new != old
    for call in (
        client.get("/v1/businesses/me", headers=auth(old)),
        client.get("/v1/exposures", headers=auth(old)),
        client.patch("/v1/businesses/me", headers=auth(old), json={"email": "thief@example.com"}),
        client.post("/v1/businesses/me/api-token", headers=auth(old)),  # nor can it replace the new one
    ):
        refused = await call
        assert refused.status_code == 401 and refused.headers["content-type"] == "application/problem+json"
    me = await client.get("/v1/businesses/me", headers=auth(new))
    assert me.status_code == 200 and me.json()["id"] == business_id and me.json()["email"] != "thief@example.com"
    assert "api_token" not in me.json()  # shown once, in the answer to the replacement only
    # Another business is untouched; the business has the one live token, stored hashed.
    assert (await client.get("/v1/businesses/me", headers=auth(other))).json()["id"] == other_id
    assert await live_tokens(db, business_id) == [hash_token(new)]
    assert await live_tokens(db, other_id) == [hash_token(other)]


async def test_a_blocked_business_may_replace_its_token_and_stays_blocked(app, client, db):
    # A blocked business still reads the contacts it bought with its token (and what it owes): a leaked one would
    # read them too, so it may cut that token off. The new token is as blocked as the old.
    business_id, old = await register(client, "lead_buyer")
    operator = await operator_token(app)
    assert (await client.post(f"/v1/businesses/{business_id}/block", headers=auth(operator))).status_code == 200
    replaced = await client.post("/v1/businesses/me/api-token", headers=auth(old))
    assert replaced.status_code == 201, replaced.text
    new = replaced.json()["api_token"]
    assert (await client.get("/v1/businesses/me", headers=auth(old))).status_code == 401
    me = await client.get("/v1/businesses/me", headers=auth(new))
    assert me.status_code == 200 and me.json()["status"] == "blocked"
    sell = await client.post("/v1/businesses/me/leads", headers=auth(new), json=lead_body())
    assert sell.status_code == 403, sell.text
    assert await db.count(Lead) == 0


async def test_an_operator_issues_a_business_a_new_token_and_only_operators_may(app, client, db):
    business_id, old = await register(client, "deal_maker")
    other_id, other = await register(client, "lead_buyer")
    operator = await operator_token(app)
    club = await client.post("/v1/clubs", headers=auth(operator), json={"name": "C", "operator_name": "Op"})
    club_operator = club.json()["operator_token"]
    assert (await client.get("/v1/businesses/me", headers=auth(old))).status_code == 200  # cached here
    for headers, status in ((auth(other), 403), (auth(club_operator), 403), ({}, 401), (auth("mkb_nobody"), 401)):
        refused = await client.post(f"/v1/businesses/{business_id}/api-token", headers=headers)
        assert refused.status_code == status and refused.headers["content-type"] == "application/problem+json"
    assert await live_tokens(db, business_id) == [hash_token(old)]  # nothing changed by the refusals
    issued = await client.post(f"/v1/businesses/{business_id}/api-token", headers=auth(operator))
    assert issued.status_code == 201, issued.text
    assert issued.json()["business_id"] == business_id
    new = issued.json()["api_token"]
    assert (await client.get("/v1/businesses/me", headers=auth(old))).status_code == 401
    assert (await client.get("/v1/businesses/me", headers=auth(new))).json()["id"] == business_id
    assert (await client.get("/v1/businesses/me", headers=auth(other))).json()["id"] == other_id
    assert await live_tokens(db, business_id) == [hash_token(new)]
    missing = await client.post("/v1/businesses/biz_nowhere/api-token", headers=auth(operator))
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"


async def test_a_business_is_told_at_its_email_of_every_replacement_of_its_token(app, client):
    """Whoever holds a leaked token may replace it and lock the business out: each replacement, its own or an
    operator's, puts an `account_token` message to the business's email in the outbox, the new token not in it."""
    business_id, old = await register(client, "deal_maker", name="Keyed Pipes", email="keyed@example.com")
    other_id, _ = await register(client, "lead_buyer")
    operator = await operator_token(app)
    replaced = await client.post("/v1/businesses/me/api-token", headers=auth(old))
    assert replaced.status_code == 201, replaced.text
    issued = await client.post(f"/v1/businesses/{business_id}/api-token", headers=auth(operator))
    assert issued.status_code == 201, issued.text
    listed = await client.get(f"/v1/notifications?kind=account_token&reference={business_id}", headers=auth(operator))
    assert listed.status_code == 200, listed.text
    by_itself, by_operator = reversed(listed.json()["items"])  # oldest first
    for message in (by_itself, by_operator):
        assert (message["recipient"], message["subject"]) == ("keyed@example.com", "Your API token was replaced")
        assert message["body"].startswith("Keyed Pipes:") and "an operator can issue you a new token" in message["body"]
        assert replaced.json()["api_token"] not in message["body"] and issued.json()["api_token"] not in message["body"]
    assert "made with it" in by_itself["body"] and "An operator issued" in by_operator["body"]
    others = await client.get(f"/v1/notifications?kind=account_token&reference={other_id}", headers=auth(operator))
    assert others.json()["items"] == []


async def test_the_old_address_hears_of_an_email_change(app, client):
    """Whoever holds a leaked token could move the account's mail to itself and then replace the token, the
    replacement's message going to its own address: the address the account had hears of the change."""
    business_id, token = await register(client, "deal_maker", name="Moved Pipes", email="first@example.com")
    operator = await operator_token(app)
    changed = await client.patch("/v1/businesses/me", headers=auth(token), json={"email": "thief@example.net"})
    assert changed.status_code == 200, changed.text
    again = await client.patch("/v1/businesses/me", headers=auth(token), json={"email": "thief@example.net"})
    assert again.status_code == 200, again.text  # the same address again: no change, no message
    listed = await client.get(f"/v1/notifications?kind=account_email&reference={business_id}", headers=auth(operator))
    (message,) = listed.json()["items"]
    assert (message["recipient"], message["subject"]) == ("first@example.com", "Your account's email was changed")
    assert "thief@example.net" in message["body"] and "ask an operator for a new token" in message["body"]


async def test_a_replaced_token_is_forgotten_by_every_process(app, client, monkeypatch):
    # Other processes forget a business's cached tokens when they hear it changed (the ranking's pub/sub message,
    # as for a block): both replacements publish it, as every change of a business does.
    from marketplace.ranking.sync import CHANGED

    published: list[tuple[str, tuple[str, ...]]] = []
    monkeypatch.setattr(app.state.ranking_sync, "_publish", lambda kind, ids: published.append((kind, tuple(ids))))
    business_id, token = await register(client, "lead_buyer")
    operator = await operator_token(app)
    assert (await client.post("/v1/businesses/me/api-token", headers=auth(token))).status_code == 201
    assert (await client.post(f"/v1/businesses/{business_id}/api-token", headers=auth(operator))).status_code == 201
    assert published.count((CHANGED, (business_id,))) == 2


async def _token_messages(app: Any, client: Any, business_id: str) -> list[dict[str, Any]]:
    operator = await operator_token(app, "Reader")
    listed = await client.get(f"/v1/notifications?kind=account_token&reference={business_id}", headers=auth(operator))
    assert listed.status_code == 200, listed.text
    return list(listed.json()["items"])


def _refused_as_revoked(response: Any) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == 'Bearer realm="marketplace"'
    assert response.json()["type"].endswith("not-authenticated")


def _gate(monkeypatch: pytest.MonkeyPatch, hold: Callable[[bool], Awaitable[None]]) -> None:
    """Each token replacement over HTTP, once past the guard (its token let in) and before its transaction reads
    anything, awaits `hold(by_operator)`."""
    from marketplace.businesses import controllers

    real = controllers.reissue_business_token

    async def gated(session: Any, business_id: str, **kwargs: Any) -> str:
        await hold(bool(kwargs.get("by_operator")))
        return await real(session, business_id, **kwargs)

    monkeypatch.setattr(controllers, "reissue_business_token", gated)


@pytest.mark.parametrize("thief_first", [False, True])
async def test_an_operators_new_token_outlives_a_replacement_made_with_the_stolen_one_on_its_way(
    app, client, db, monkeypatch, thief_first
):
    """A thief's replacement made with the stolen token, let in by the guard while that token still stood, went on
    after an operator's replacement had cut the token off: it revoked the token the operator handed to the owner and
    kept a working one of its own. Its transaction now finds the token it came with replaced: a 401, nothing changed,
    no message. Had the thief's gone first, the operator's cuts the thief's new token off."""
    business_id, stolen = await register(client, "lead_buyer")
    operator = await operator_token(app)
    assert (await client.get("/v1/businesses/me", headers=auth(stolen))).status_code == 200  # cached here
    thief_in, go = asyncio.Event(), asyncio.Event()

    async def hold(by_operator: bool) -> None:
        if not by_operator:
            thief_in.set()
            await go.wait()

    _gate(monkeypatch, hold)
    if thief_first:
        go.set()
        thief = await client.post("/v1/businesses/me/api-token", headers=auth(stolen))
        assert thief.status_code == 201, thief.text
        issued = await client.post(f"/v1/businesses/{business_id}/api-token", headers=auth(operator))
    else:
        in_flight = asyncio.ensure_future(client.post("/v1/businesses/me/api-token", headers=auth(stolen)))
        await asyncio.wait({in_flight, asyncio.ensure_future(thief_in.wait())}, return_when=asyncio.FIRST_COMPLETED)
        assert thief_in.is_set(), (await in_flight).text  # past the guard with the stolen token
        issued = await client.post(f"/v1/businesses/{business_id}/api-token", headers=auth(operator))
        go.set()
        thief = await in_flight
        _refused_as_revoked(thief)
    assert issued.status_code == 201, issued.text
    handed_over = issued.json()["api_token"]
    me = await client.get("/v1/businesses/me", headers=auth(handed_over))
    assert me.status_code == 200 and me.json()["id"] == business_id
    assert await live_tokens(db, business_id) == [hash_token(handed_over)]
    if thief_first:
        assert (await client.get("/v1/businesses/me", headers=auth(thief.json()["api_token"]))).status_code == 401
    messages = await _token_messages(app, client, business_id)
    assert len(messages) == (2 if thief_first else 1)  # the refused call told no one anything
    assert "An operator issued" in messages[0]["body"]  # newest first


async def test_of_replacements_made_at_once_with_one_token_one_is_made_and_the_others_are_refused(
    app, client, db, monkeypatch
):
    """Four replacements with one token, each let in by the guard before any had replaced it, then made one at a time
    (the business's row lock; SQLite's one writer): each answered 201 and three of the new tokens were dead on arrival,
    four messages sent. The first replaces it; the others find the token they came with gone: 401, as one sent after it
    is."""
    business_id, token = await register(client, "deal_maker")
    assert (await client.get("/v1/businesses/me", headers=auth(token))).status_code == 200  # cached here
    calls, arrived, go = 4, [], asyncio.Event()

    async def hold(_by_operator: bool) -> None:
        arrived.append(True)
        if len(arrived) == calls:
            go.set()
        await go.wait()

    _gate(monkeypatch, hold)
    answers = await asyncio.gather(
        *(client.post("/v1/businesses/me/api-token", headers=auth(token)) for _ in range(calls))
    )
    made = [a for a in answers if a.status_code == 201]
    assert len(made) == 1, [a.text for a in answers]
    for refused in (a for a in answers if a.status_code != 201):
        _refused_as_revoked(refused)
    new = made[0].json()["api_token"]
    assert (await client.get("/v1/businesses/me", headers=auth(new))).status_code == 200
    assert await live_tokens(db, business_id) == [hash_token(new)]
    assert len(await _token_messages(app, client, business_id)) == 1
    # And one after another: the second is refused at the guard.
    _refused_as_revoked(await client.post("/v1/businesses/me/api-token", headers=auth(token)))


async def test_a_replacement_made_with_a_token_another_process_replaced_is_refused(app, client, db):
    """The guard may let a token in from this process's principal cache after another process replaced it (before
    this one hears of it): the replacement asks the database, not the cache, whether the token stands."""
    from marketplace.identity.services import reissue_business_token

    business_id, stolen = await register(client, "lead_buyer")
    assert (await client.get("/v1/businesses/me", headers=auth(stolen))).status_code == 200  # cached here
    async with app.state.uow() as uow:  # an operator's replacement in another process: this cache is not told
        handed_over = await reissue_business_token(uow.session, business_id, by_operator=True)
    _refused_as_revoked(await client.post("/v1/businesses/me/api-token", headers=auth(stolen)))
    assert await live_tokens(db, business_id) == [hash_token(handed_over)]
    assert len(await _token_messages(app, client, business_id)) == 1


@pytest.mark.postgres_only  # SQLite has no row locks
async def test_a_replacement_waiting_for_the_row_behind_an_operators_is_refused(app, client, db):
    """The thief's replacement queued for the business's row behind the operator's (both let in while the stolen
    token stood) takes the row once the operator's has committed: it reads the token revoked and is a 401."""
    import asyncpg

    from tests.conftest import PG_ADMIN_DSN, PG_TEST_DB

    business_id, stolen = await register(client, "lead_buyer")
    operator = await operator_token(app)
    assert (await client.get("/v1/businesses/me", headers=auth(stolen))).status_code == 200  # cached here
    dsn = PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{PG_TEST_DB}"
    holder, watcher = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"

    async def queued(count: int) -> None:
        for _ in range(1000):
            if await watcher.fetchval(waiting) >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{count} calls never waited for the business's row")

    try:
        await holder.execute("BEGIN")
        await holder.execute("SELECT 1 FROM businesses WHERE id = $1 FOR NO KEY UPDATE", business_id)
        issuing = asyncio.ensure_future(client.post(f"/v1/businesses/{business_id}/api-token", headers=auth(operator)))
        await queued(1)
        stealing = asyncio.ensure_future(client.post("/v1/businesses/me/api-token", headers=auth(stolen)))
        await queued(2)
        await holder.execute("ROLLBACK")
        issued, thief = await asyncio.wait_for(asyncio.gather(issuing, stealing), timeout=30)
    finally:
        await holder.close()
        await watcher.close()
    assert issued.status_code == 201, issued.text
    _refused_as_revoked(thief)
    handed_over = issued.json()["api_token"]
    assert (await client.get("/v1/businesses/me", headers=auth(handed_over))).status_code == 200
    assert await live_tokens(db, business_id) == [hash_token(handed_over)]
    assert len(await _token_messages(app, client, business_id)) == 1


@pytest.mark.postgres_only  # SQLite has no row locks
async def test_a_block_or_a_profile_change_does_not_wait_for_rows_referring_to_the_business(app, client, db):
    """A transaction writing a row that refers to a business (an exposure, a status change) holds a key-share lock on
    the business's row until it commits. The services that lock the row to change it (get_business(for_update=True):
    a block, a profile change, bids) took it FOR UPDATE, which waits for that lock (and deadlocks with it once the
    writer waits in turn); FOR NO KEY UPDATE does not, as a claim's lock on its business does not."""
    business_id, token = await register(client, "deal_maker")
    operator = await operator_token(app)
    calls = (
        lambda: client.patch("/v1/businesses/me", headers=auth(token), json={"name": "Renamed Ltd"}),
        lambda: client.post(f"/v1/businesses/{business_id}/block", headers=auth(operator), json={}),
    )
    for call in calls:
        async with app.state.sessions() as session, session.begin():
            await session.execute(
                select(Business.id).where(Business.id == business_id).with_for_update(read=True, key_share=True)
            )
            task = asyncio.create_task(call())
            done, _ = await asyncio.wait({task}, timeout=5)
        response = await task
        assert response.status_code == 200, response.text
        assert done, "it waited for the key-share lock"
    assert await db.scalar(select(Business.status).where(Business.id == business_id)) == "blocked"


async def test_the_mark_comes_off_with_a_reason_whoever_asks(app, client, db):
    """`unreliable: false` needs a reason in the service that writes the reason (businesses.status.set_status), not in
    the HTTP route alone: a call from elsewhere is refused alike, before it changes anything."""
    from marketplace.businesses import status as account_status
    from marketplace.errors import InvalidInput

    business_id, _ = await register(client)
    for reason in ("  ", "\u200b", "\ufeff\u2060"):  # invisible characters alone say nothing either (text.blank)
        with pytest.raises(InvalidInput) as refused:
            async with app.state.uow() as uow:
                await account_status.set_status(
                    uow.session, business_id, "active", actor="operator:test", reason=reason, unreliable=False
                )
        assert refused.value.errors[0].field == "reason"
    assert await db.count(BusinessStatusChange, BusinessStatusChange.business_id == business_id) == 0
