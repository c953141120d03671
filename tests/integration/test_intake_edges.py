"""Edges of lead intake, a business selling an inquiry, customers' surveys and the operators' outbox (helper-73's
audit): what a form, a customer or an outside client sends that the other tests do not."""

from __future__ import annotations

from typing import Any

import httpx

from marketplace.db.models import Lead, LeadContact
from marketplace.http.problems import PROBLEM
from tests.factories import auth, lead_body, register


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
