"""Lead intake over HTTP: customers, duplicates, businesses selling an inquiry, the contact kept apart."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from marketplace.clock import clock, utcnow
from marketplace.db.models import Lead, LeadContact
from marketplace.leads.status import on_the_market
from tests.factories import auth, lead_body, offer_lead_to, offers_of, operator_token, register, submit_lead


def _words_shown(answer: Any) -> str:
    """Every text an answer shows but its ids and timestamps (an id's base32 or a timestamp's microseconds may hold
    any three digits: "054" in 20:50:30.620542Z failed a run)."""
    if isinstance(answer, dict):
        return " ".join(
            _words_shown(v) for k, v in answer.items() if k != "id" and not k.endswith(("_id", "_at", "_until"))
        )
    if isinstance(answer, list):
        return " ".join(_words_shown(v) for v in answer)
    return str(answer)



async def test_contact_details_written_in_the_description_are_seen_only_by_the_contact_s_holders(app, client, db):
    """A customer writing its phone and email into the description: every business offered the lead reads them
    hidden; the business that claims it, and operators, read the words as written; a return takes them away again,
    and a retried claim (the same Idempotency-Key) shows them as the exposure may now."""
    words = "Leaking pipe. Call me at 054-123-4567 or write to dana.levi@gmail.com, Dana"
    hidden = "Leaking pipe. Call me at [phone hidden] or write to [email hidden], Dana"
    buyer_id, buyer = await register(client, "lead_buyer")
    lead_id = (await client.post("/v1/leads", json=lead_body(description=words))).json()["id"]
    (offer,) = await offer_lead_to(app, lead_id, [buyer_id])
    (listed,) = await offers_of(client, buyer)
    shown = _words_shown(listed)
    assert listed["lead"]["description"] == hidden and "054" not in shown and "gmail" not in shown
    assert await db.scalar(select(Lead.description).where(Lead.id == lead_id)) == hidden  # the free summary's

    claim = {**auth(buyer), "Idempotency-Key": "claim-described"}
    claimed = await client.post(f"/v1/offers/{offer}/claim", headers=claim, json={"exclusive": False})
    assert claimed.status_code == 201 and claimed.json()["lead"]["description"] == words, claimed.text
    exposure_id = claimed.json()["id"]
    held = (await client.get(f"/v1/exposures/{exposure_id}", headers=auth(buyer))).json()
    assert held["lead"]["description"] == words
    op = await operator_token(app)
    assert (await client.get(f"/v1/leads/{lead_id}", headers=auth(op))).json()["description"] == words

    returned = await client.post(f"/v1/exposures/{exposure_id}/return", headers=auth(buyer), json={"reason": "no"})
    assert returned.status_code == 200, returned.text
    after = (await client.get(f"/v1/exposures/{exposure_id}", headers=auth(buyer))).json()
    assert after["contact"] is None and after["lead"]["description"] == hidden
    replayed = await client.post(f"/v1/offers/{offer}/claim", headers=claim, json={"exclusive": False})
    assert replayed.headers.get("Idempotent-Replayed") == "true"
    assert replayed.json()["contact"] is None and replayed.json()["lead"]["description"] == hidden


async def test_a_phone_in_digits_of_another_script_or_an_address_spelled_out_is_hidden_from_the_offered(app, client):
    """Arabic-Indic, Persian and full-width digits, an @ with spaces or in brackets, a phone in words, a bare "at" with
    "dot"s, messenger handles and profile links: each still a contact the customer handed over, hidden from the
    businesses offered the lead as an ASCII one is."""
    written = {
        "اتصل بي ٠٥٢٥٥٥١٢٣٤": "اتصل بي [phone hidden]",
        "شماره ۰۵۲۵۵۵۱۲۳۴ لطفا": "شماره [phone hidden] لطفا",
        "Contact: ０５２５５５１２３４": "Contact: [phone hidden]",  # noqa: RUF001
        "or ٠٠٩٧٢٥٢٥٥٥١٢٣٤ / ٩٧٢٥٢٥٥٥٤٣٢١": "or [phone hidden] / [phone hidden]",
        "mail: dana @ gmail.com or dana(at)walla.co.il": "mail: [email hidden] or [email hidden]",
        "telegram @dana_plumb, instagram instagram.com/dana.plumb, fb facebook.com/dana.cohen": (
            "telegram [handle hidden], instagram instagram.com/[handle hidden], fb facebook.com/[handle hidden]"
        ),
        "skype: dana.cohen77, name Dana Cohen, 12 Herzl St apt 4 Haifa": (
            "skype: [handle hidden], name Dana Cohen, 12 Herzl St apt 4 Haifa"
        ),
        "my phone is zero five four one two three four five six seven": "my phone is [phone hidden]",
        "email dana at gmail dot com": "email [email hidden]",
    }
    buyer_id, buyer = await register(client, "lead_buyer")
    leads = {}
    for i, words in enumerate(written):
        body = lead_body(description=words, contact={"phone": f"+97252555{i:04d}", "email": f"c{i}@example.com"})
        response = await client.post("/v1/leads", json=body)
        assert response.status_code == 201, response.text
        leads[response.json()["id"]] = words
        await offer_lead_to(app, response.json()["id"], [buyer_id])
    shown = {offer["lead_id"]: offer["lead"]["description"] for offer in await offers_of(client, buyer)}
    assert shown == {lead_id: written[words] for lead_id, words in leads.items()}


async def test_the_lead_s_own_phone_and_email_are_hidden_from_the_offered_however_written(app, client, db):
    """An en dash, a newline, a zero-width space between the phone's digits, a letter O for its zero, the address's
    local part spaced out or with " at ": the businesses offered the lead read none of them; its holders read the
    words as written."""
    written = {
        "Call 054\u20137654718 after six": "Call [phone hidden] after six",
        "054\n7654718 or 054\u200b7654718": "[phone hidden] or [phone hidden]",
        "O54-7654718, d a n 727 @ g m a i l . c o m, budget 5,000": "[phone hidden], [email hidden], budget 5,000",
        "write dan727 at gmail, 3\u20134 days": "write [email hidden], 3\u20134 days",
    }
    buyer_id, buyer = await register(client, "lead_buyer")
    leads = {}
    for i, words in enumerate(written):
        contact = {"phone": "+972547654718", "email": "dan727@gmail.com"}
        body = lead_body(
            description=words, category=["plumbing", "renovation", "legal", "accounting"][i], contact=contact
        )
        response = await client.post("/v1/leads", json=body)
        assert response.status_code == 201, response.text
        leads[response.json()["id"]] = words
        await offer_lead_to(app, response.json()["id"], [buyer_id])
    listed = await offers_of(client, buyer)
    shown = {offer["lead_id"]: offer["lead"]["description"] for offer in listed}
    assert shown == {lead_id: written[words] for lead_id, words in leads.items()}
    assert "7654718" not in _words_shown(listed) and "gmail" not in _words_shown(listed)
    for lead_id, words in leads.items():  # the words as written, for the contact's holders
        assert await db.scalar(select(LeadContact.description).where(LeadContact.lead_id == lead_id)) == words


async def test_customer_lead_is_normalised_and_contact_stored_apart(app, client, db):
    body = lead_body(contact={"phone": "052-555-0199", "email": "Dana@Example.COM"})
    response = await client.post("/v1/leads", json=body)
    assert response.status_code == 201, response.text
    lead_id = response.json()["id"]
    assert response.json()["status"] == "open"
    lead = await db.scalar(select(Lead).where(Lead.id == lead_id))
    assert lead.budget_minor == 150_000 and lead.currency == "ILS" and lead.source == "customer"
    assert not hasattr(lead, "phone")
    contact = await db.scalar(select(LeadContact).where(LeadContact.lead_id == lead_id))
    assert contact.phone == "+972525550199"
    assert contact.email == "dana@example.com"
    op = await operator_token(app)
    detail = await client.get(f"/v1/leads/{lead_id}", headers=auth(op))
    assert detail.json()["contact"]["phone"] == "+972525550199"


async def test_duplicate_within_window_is_one_lead_seen_again(client, db):
    body = lead_body()
    first = await client.post("/v1/leads", json=body)
    # Same phone written differently, same category: the same customer with the same need.
    again = dict(body, contact=dict(body["contact"], phone=body["contact"]["phone"].replace("+972", "0")))
    second = await client.post("/v1/leads", json=again)
    assert first.status_code == 201 and second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["duplicate"] is True
    assert await db.count(Lead) == 1
    assert await db.scalar(select(Lead.seen_count)) == 2
    other_category = await client.post("/v1/leads", json=dict(body, category="renovation"))
    assert other_category.status_code == 201
    assert await db.count(Lead) == 2


async def test_same_contact_after_the_window_is_a_new_lead(settings, client, db):
    body = lead_body()
    assert (await client.post("/v1/leads", json=body)).status_code == 201
    clock.advance(timedelta(hours=settings.windows.dedup_hours, minutes=1))
    response = await client.post("/v1/leads", json=body)
    assert response.status_code == 201
    assert await db.count(Lead) == 2


async def test_the_same_need_within_the_window_is_one_lead_whatever_became_of_it(app, client, db):
    # A deal maker claims the lead and reports the deal won (the lead is taken off the market): the same request again
    # a moment later from the customer is the same lead, not a new one to sell other businesses a customer already
    # served. The business that got the contact here selling it on is refused outright (a 409, nothing written: not
    # counted as seen again), as a contact it received from the marketplace.
    body = lead_body(category="plumbing", region="tel-aviv")
    _, buyer = await register(client, "deal_maker")
    lead_id = (await client.post("/v1/leads", json=body)).json()["id"]
    await app.state.jobs.run_due()
    (offer,) = await offers_of(client, buyer)
    offer_id = offer["offer_id"]
    claim = await client.post(f"/v1/offers/{offer_id}/claim", headers=auth(buyer), json={"exclusive": False})
    assert claim.status_code == 201, claim.text
    won = await client.post(
        f"/v1/exposures/{claim.json()['id']}/status",
        headers=auth(buyer),
        json={"status": "won", "turnover": {"amount_minor": 500_000, "currency": "ILS"}},
    )
    assert won.status_code == 200, won.text
    # Closed, not expired: the customer was served, which is not a lead nobody took in time.
    assert won.json()["lead"]["status"] == "closed"
    assert (await db.scalar(select(Lead.expires_at).where(Lead.id == lead_id))) <= utcnow()
    # It says so at once, not only once the expiry sweep has run.
    assert await db.scalar(select(Lead.status).where(Lead.id == lead_id)) == "closed"

    again = await client.post("/v1/leads", json=body)
    assert again.status_code == 200 and again.json()["id"] == lead_id and again.json()["duplicate"] is True
    assert again.json()["status"] == "closed"
    sold_back = await client.post("/v1/businesses/me/leads", headers=auth(buyer), json=body)
    assert sold_back.status_code == 409, sold_back.text
    assert [e["field"] for e in sold_back.json()["errors"]] == ["contact.phone", "contact.email"]
    # An expired one too (its lifetime is the window's, so this only happens when it ended early).
    async with app.state.uow() as uow:
        await uow.session.execute(update(Lead).where(Lead.id == lead_id).values(status="expired"))
    assert (await client.post("/v1/leads", json=body)).json()["id"] == lead_id
    assert await db.count(Lead) == 1
    assert await db.scalar(select(Lead.seen_count)) == 3
    assert await db.scalar(select(Lead.seller_business_id)) is None  # the seller route changed nothing of it

    clock.advance(timedelta(hours=72, minutes=1))
    after = await client.post("/v1/leads", json=body)
    assert after.status_code == 201 and after.json()["id"] != lead_id


async def test_a_need_that_ended_unserved_within_the_window_is_asked_again_as_a_new_lead(app, client, db, settings):
    # Leads living shorter than the window: one whose time ran out with nobody holding its contact is not joined
    # (the customer is still unserved); one a business had is, even once it ended.
    from dataclasses import replace

    app.state.settings = replace(settings, windows=replace(settings.windows, lead_ttl_hours=24))
    body = lead_body(category="legal", region="haifa")  # nobody serves it
    first = (await client.post("/v1/leads", json=body)).json()["id"]
    assert (await client.post("/v1/leads", json=body)).json()["id"] == first  # open: the same request again
    clock.advance(timedelta(hours=25))
    again = await client.post("/v1/leads", json=body)
    assert again.status_code == 201 and again.json()["id"] != first
    async with app.state.uow() as uow:  # had by a business (its place counted), then its time ran out
        ended = utcnow() - timedelta(minutes=1)
        had = update(Lead).where(Lead.id == again.json()["id"]).values(exposure_count=1, expires_at=ended)
        await uow.session.execute(had)
    assert (await client.post("/v1/leads", json=body)).json()["id"] == again.json()["id"]
    assert await db.count(Lead) == 2


async def test_business_sells_an_inquiry(client, db):
    seller_id, token = await register(client, "lead_buyer")
    response = await client.post("/v1/businesses/me/leads", headers=auth(token), json=lead_body(category="legal"))
    assert response.status_code == 201, response.text
    lead = await db.scalar(select(Lead).where(Lead.id == response.json()["id"]))
    assert lead.source == "business" and lead.seller_business_id == seller_id
    anonymous = await client.post("/v1/businesses/me/leads", json=lead_body())
    assert anonymous.status_code == 401


async def test_intake_is_rate_limited_per_client_address(app, client, db):
    app.state.rate_limits["intake"].per_minute = 3
    statuses = [(await client.post("/v1/leads", json=lead_body())).status_code for _ in range(5)]
    assert statuses == [201, 201, 201, 429, 429]
    assert await db.count(Lead) == 3


async def test_invalid_requests_count_against_the_intake_limit_too(app, client, db):
    app.state.rate_limits["intake"].per_minute = 3
    statuses = [(await client.post("/v1/leads", json={})).status_code for _ in range(2)]
    statuses.append((await client.post("/v1/leads", params={"x": "\x00"}, json=lead_body())).status_code)
    statuses.append((await client.post("/v1/leads", json={})).status_code)
    assert statuses == [422, 422, 422, 429]
    assert (await client.post("/v1/leads", json=lead_body())).status_code == 429
    assert await db.count(Lead) == 0


async def test_a_number_of_its_countrys_length_is_taken_whether_or_not_the_library_knows_its_range(client, db):
    # 050-123-4567 is a mobile number libphonenumber's metadata does not list as allocated: a customer typing it is
    # still a customer. A number too short or too long for its country is refused, naming the field.
    taken = await client.post("/v1/leads", json=lead_body(contact={"phone": "050-123-4567"}))
    assert taken.status_code == 201, taken.text
    lead_id = taken.json()["id"]
    assert await db.scalar(select(LeadContact.phone).where(LeadContact.lead_id == lead_id)) == "+972501234567"
    for wrong in ("050-123", "+972 50 123 4567 8901"):
        refused = await client.post("/v1/leads", json=lead_body(contact={"phone": wrong}))
        assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "contact.phone", refused.text


async def test_an_inquiry_sold_with_an_idempotency_key_is_one_lead_and_another_inquiry_under_it_a_422(client, db):
    """`POST /v1/businesses/me/leads` takes an `Idempotency-Key` as every other POST that does: a retry is answered
    with the first answer, the key with another inquiry is refused, and neither makes a second lead."""
    _, seller = await register(client, "deal_maker")
    headers = {**auth(seller), "Idempotency-Key": "sell-once"}
    body = lead_body(category="renovation", region="haifa")  # outside its profile's regions: its to sell
    first = await client.post("/v1/businesses/me/leads", headers=headers, json=body)
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers, first.text
    again = await client.post("/v1/businesses/me/leads", headers=headers, json=body)
    assert again.status_code == 201 and again.headers.get("Idempotent-Replayed") == "true"
    assert again.json() == first.json()
    other = await client.post("/v1/businesses/me/leads", headers=headers, json=lead_body(category="renovation"))
    assert other.status_code == 422 and other.json()["errors"][0]["field"] == "Idempotency-Key", other.text
    assert await db.count(Lead) == 1
    schema = (await client.get("/schema/openapi.json")).json()
    parameters = schema["paths"]["/v1/businesses/me/leads"]["post"].get("parameters", [])
    assert "Idempotency-Key" in {p["name"] for p in parameters}


async def test_on_the_market_is_open_or_full_before_its_time(app, client, db):
    """leads.status.on_the_market, the one definition a block's release (the freed place, the deals it reopens) and a
    lead's taking off the market read: open or full, and not past its time, whatever its status still says."""
    now = utcnow()
    kinds = {
        "open": ("open", timedelta(days=1)),
        "full": ("full", timedelta(days=1)),
        "open, past its time": ("open", -timedelta(seconds=1)),
        "full, past its time": ("full", -timedelta(seconds=1)),
        "expired": ("expired", -timedelta(days=1)),
        "closed": ("closed", timedelta(days=1)),
    }
    ids = {}
    for kind, (status, left) in kinds.items():
        ids[kind] = await submit_lead(client)
        async with app.state.uow() as uow:
            await uow.session.execute(
                update(Lead).where(Lead.id == ids[kind]).values(status=status, expires_at=now + left)
            )
    found = set(await db.scalars(select(Lead.id).where(Lead.id.in_(ids.values()), *on_the_market(Lead, now))))
    assert found == {ids["open"], ids["full"]}
