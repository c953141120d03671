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
