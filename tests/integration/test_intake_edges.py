"""Edges of lead intake, a business selling an inquiry, customers' surveys and the operators' outbox (helper-73's
audit): what a form, a customer or an outside client sends that the other tests do not."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from marketplace.clock import clock
from marketplace.db.models import Lead, LeadContact
from marketplace.http.problems import PROBLEM
from tests.factories import auth, business_body, lead_body, offer_lead_to, register, sold_body, submit_lead


def named(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    return [e["field"] for e in response.json()["errors"]]


async def test_a_form_sent_with_its_fields_blank_names_every_one_of_them_at_once(client, db):
    # A web form sends a field left blank as "": the customer who left phone and email blank is told of both, and
    # of every other mistake of the same form, in one answer (not the phone first, and the rest once it is fixed).
    blank_contact = lead_body(contact={"phone": "", "email": ""})
    assert sorted(named(await client.post("/v1/leads", json=blank_contact))) == ["contact.email", "contact.phone"]
    blank_form: dict[str, Any] = lead_body(
        category="", region="", description="", consent=False, contact={"name": "", "phone": "", "email": ""}
    )
    fields = named(await client.post("/v1/leads", json=blank_form))
    assert sorted(fields) == sorted(
        ["category", "region", "description", "consent", "contact.name", "contact.phone", "contact.email"]
    ), fields
    _, token = await register(client)
    sold = await client.post("/v1/businesses/me/leads", headers=auth(token), json=blank_contact)
    assert sorted(named(sold)) == ["contact.email", "contact.phone"]
    # Spaces alone are blank too; a phone of spaces is no phone.
    spaces = lead_body(description="   ", contact={"name": " ", "phone": "   ", "email": " "})
    fields = named(await client.post("/v1/leads", json=spaces))
    assert sorted(fields) == ["contact.email", "contact.name", "contact.phone", "description"], fields
    assert await db.count(Lead) == 0 and await db.count(LeadContact) == 0


async def test_a_contact_bought_here_cannot_be_sold_back_as_the_buyers_own_inquiry(app, client, db):
    # Past the duplicate window, a lead buyer sold back the customer it had bought: a new lead, earning it from every
    # claim (three claims pay more than the one price it paid) while the customer was called all over again.
    buyer_id, buyer = await register(client, "lead_buyer")
    body = lead_body()
    lead_id = await submit_lead(client, **body)
    (offer_id,) = await offer_lead_to(app, lead_id, [buyer_id])
    claimed = await client.post(f"/v1/offers/{offer_id}/claim", headers=auth(buyer), json={"exclusive": False})
    assert claimed.status_code == 201, claimed.text
    clock.advance(timedelta(hours=100))  # past the duplicate window (72 hours)

    resold = await client.post("/v1/businesses/me/leads", headers=auth(buyer), json=body)
    assert resold.status_code == 409, resold.text
    assert resold.headers["content-type"] == PROBLEM and "marketplace" in resold.json()["detail"]
    assert await db.count(Lead) == 1
    # Nor as an inquiry of another category, within the window or past it, found by its phone or by its email
    # (written otherwise: compared normalised): the seller would earn from every claim of a contact it bought, and the
    # customer agreed to be called about its own request only.
    clock.advance(timedelta(hours=-100))
    contact = body["contact"]
    local = "0" + contact["phone"].removeprefix("+972")
    for sent, fields in (
        (dict(body, category="renovation"), ["contact.phone", "contact.email"]),
        (dict(body, category="renovation", contact=dict(contact, phone=local)), ["contact.phone", "contact.email"]),
        (dict(body, category="legal", contact=dict(contact, phone="+972545550199")), ["contact.email"]),
        (
            dict(body, category="legal", contact=dict(contact, email=contact["email"].upper(), phone="+972545550198")),
            ["contact.email"],
        ),
        (dict(body, category="renovation", contact=dict(contact, email="someone.else@example.com")), ["contact.phone"]),
    ):
        other_need = await client.post("/v1/businesses/me/leads", headers=auth(buyer), json=sent)
        assert other_need.status_code == 409, other_need.text
        assert [e["field"] for e in other_need.json()["errors"]] == fields
    assert await db.count(Lead) == 1 and await db.count(LeadContact) == 1
    # The customer sold by a business that never received it (and whose profile does not hold it) is a new lead.
    _, stranger = await register(client, "lead_buyer", profile={"categories": ["legal"]})
    theirs = await client.post(
        "/v1/businesses/me/leads", headers=auth(stranger), json=dict(body, category="renovation")
    )
    assert theirs.status_code == 201, theirs.text


async def test_names_written_into_the_marketplaces_messages_are_one_line_without_a_link(app, client, db):
    """A customer's name of several lines with a link was written into the survey mail the marketplace sends to any
    address the request gave ("Hello Dana\n\nYour account is suspended. Verify at http://..."); a business's name
    into operators' alerts and the public list of unreliable businesses."""
    phishing = "Dana\n\nYour account is suspended. Verify at http://evil.example/login now"
    r = await client.post("/v1/leads", json=lead_body(contact={"name": phishing}))
    assert named(r) == ["contact.name"] and "one line" in r.json()["errors"][0]["message"]
    r = await client.post("/v1/leads", json=lead_body(contact={"name": "Dana, see https://evil.example"}))
    assert named(r) == ["contact.name"] and "link" in r.json()["errors"][0]["message"]
    assert await db.count(Lead) == 0
    r = await client.post("/v1/businesses", json=business_body(name="Nice Plumbing\n\nOperators: dismiss it."))
    assert named(r) == ["name"]
    _, token = await register(client)
    r = await client.patch("/v1/businesses/me", headers=auth(token), json={"name": "www.example.com deals"})
    assert named(r) == ["name"]


@pytest.mark.parametrize("mode", ["lead_buyer", "deal_maker"])
async def test_an_inquiry_that_fits_the_sellers_own_profile_is_refused_and_one_outside_it_sold(client, db, mode):
    # Seed 002: a business is paid for selling the customers it cannot serve. A lead buyer (or a deal maker) selling a
    # legal, Jerusalem, 10,000.00 inquiry with exactly that profile was paid 70 % of each rival's purchase of its own
    # customer. Fitting is matching's: category, region, and a budget within the range or not stated (0).
    profile = {"categories": ["legal"], "regions": ["jerusalem"], "min_deal_minor": 100_000}
    profile["max_deal_minor"] = 5_000_000
    _, token = await register(client, mode, profile=profile)

    def inquiry(category: str = "legal", region: str = "jerusalem", budget: int = 1_000_000) -> dict[str, Any]:
        return sold_body(category=category, region=region, budget={"amount_minor": budget, "currency": "ILS"})

    for budget in (1_000_000, 100_000, 5_000_000, 0):
        refused = await client.post("/v1/businesses/me/leads", headers=auth(token), json=inquiry(budget=budget))
        assert named(refused) == ["category", "region", "budget.amount_minor"], budget
        assert "fits your own profile: serve it, or change your profile" in refused.json()["detail"]
    # Under an Idempotency-Key the refusal is kept as any other is: a retry gets it again, and nothing was written.
    keyed = {**auth(token), "Idempotency-Key": "sell-my-own"}
    body = inquiry()
    first = await client.post("/v1/businesses/me/leads", headers=keyed, json=body)
    assert named(first) == ["category", "region", "budget.amount_minor"]
    again = await client.post("/v1/businesses/me/leads", headers=keyed, json=body)
    assert again.status_code == 422 and again.headers.get("Idempotent-Replayed") == "true", again.text
    assert await db.count(Lead) == 0 and await db.count(LeadContact) == 0

    # Outside the profile by any one of them, it is an inquiry the business cannot serve: sold.
    for outside in (
        inquiry(category="renovation"),
        inquiry(region="haifa"),
        inquiry(budget=5_000_100),
        inquiry(budget=99_900),
    ):
        sold = await client.post("/v1/businesses/me/leads", headers=auth(token), json=outside)
        assert sold.status_code == 201, sold.text
    assert await db.count(Lead) == 4
