"""Test data: valid request bodies with overridable fields, and helpers that sign businesses up over HTTP."""

from __future__ import annotations

import itertools
from typing import Any

import httpx

_seq = itertools.count(1)


def phone() -> str:
    # +972 52-555-xxxx is a valid Israeli mobile range in libphonenumber's metadata
    return f"+97252555{next(_seq) % 10000:04d}"


def business_body(mode: str = "lead_buyer", **overrides: Any) -> dict[str, Any]:
    n = next(_seq)
    body: dict[str, Any] = {
        "name": f"Business {n}",
        "email": f"business{n}@example.com",
        "phone": phone(),
        "mode": mode,
        "currency": "ILS",
        "profile": {
            "categories": ["plumbing", "renovation"],
            "regions": ["tel-aviv", "center"],
            "min_deal_minor": 0,
            "max_deal_minor": 10_000_000,
            "daily_cap": 50,
            "monthly_cap": 500,
        },
    }
    profile = overrides.pop("profile", None)
    if profile:
        body["profile"].update(profile)
    body.update(overrides)
    return body


def lead_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "category": "plumbing",
        "region": "tel-aviv",
        "description": "Leaking pipe under the kitchen sink",
        "budget": {"amount_minor": 150_000, "currency": "ILS"},
        "contact": {"name": "Dana Customer", "phone": phone(), "email": "dana@example.com"},
        "consent": True,
    }
    contact = overrides.pop("contact", None)
    if contact:
        body["contact"].update(contact)
    body.update(overrides)
    return body


def sold_body(**overrides: Any) -> dict[str, Any]:
    """A lead's body as an inquiry its seller sells, of its own customer: lead_body's email is every test customer's,
    and a contact the seller got from the marketplace (a lead it bought) is not its to sell. In Haifa unless told,
    outside business_body's regions: a seller sells only what its own profile does not hold (a 422 otherwise)."""
    body = lead_body(**{"region": "haifa", **overrides})
    if "email" not in (overrides.get("contact") or {}):
        body["contact"]["email"] = f"own{body['contact']['phone'].lstrip('+')}@example.com"
    return body


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(client: httpx.AsyncClient, mode: str = "lead_buyer", **overrides: Any) -> tuple[str, str]:
    response = await client.post("/v1/businesses", json=business_body(mode, **overrides))
    assert response.status_code == 201, response.text
    data = response.json()
    return data["id"], data["api_token"]


async def operator_token(app: Any, name: str = "Test operator") -> str:
    from marketplace.identity.services import create_operator

    async with app.state.uow() as uow:
        _, token = await create_operator(uow.session, name)
    return token


async def submit_lead(client: httpx.AsyncClient, **overrides: Any) -> str:
    response = await client.post("/v1/leads", json=lead_body(**overrides))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def offer_lead_to(app: Any, lead_id: str, business_ids: list[str]) -> list[str]:
    """Offers of one lead to many businesses at once (setup for races; waves offer a few at a time). Where a wave
    (a worker running beside the test) offered the lead to one of them first, its offer is the one returned."""
    from datetime import timedelta

    from sqlalchemy import select

    from marketplace.clock import utcnow
    from marketplace.db.models import Offer
    from marketplace.db.statements import insert_for
    from marketplace.ids import new_id

    now = utcnow()
    rows = [
        {
            "id": new_id("off"),
            "lead_id": lead_id,
            "business_id": business_id,
            "wave": 1,
            "rank": rank,
            "score": 0.0,
            "factors": {"policy": "test"},
            "status": "open",
            "created_at": now,
            "expires_at": now + timedelta(hours=1),
        }
        for rank, business_id in enumerate(business_ids, start=1)
    ]
    async with app.state.uow() as uow:
        if rows:
            await uow.session.execute(insert_for(uow.session)(Offer).values(rows).on_conflict_do_nothing())
        query = select(Offer.business_id, Offer.id).where(Offer.lead_id == lead_id, Offer.business_id.in_(business_ids))
        found = {business_id: offer_id for business_id, offer_id in await uow.session.execute(query)}
    return [found[b] for b in business_ids]


async def offers_of(client: httpx.AsyncClient, token: str) -> list[dict[str, Any]]:
    response = await client.get("/v1/offers", headers=auth(token))
    assert response.status_code == 200, response.text
    return list(response.json()["items"])
