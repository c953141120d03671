"""Helpers for the survey and fraud tests: claimed deals, reports, survey links read from the outbox, answers."""

from __future__ import annotations

from typing import Any

import httpx

from tests.factories import auth, offer_lead_to, submit_lead


async def claimed_deal(
    app: Any, client: httpx.AsyncClient, business_id: str, token: str, **lead: Any
) -> tuple[str, str]:
    """A new customer lead offered to and claimed by the business: (lead id, exposure id)."""
    lead_id = await submit_lead(client, **lead)
    (offer_id,) = await offer_lead_to(app, lead_id, [business_id])
    response = await client.post(f"/v1/offers/{offer_id}/claim", headers=auth(token), json={"exclusive": False})
    assert response.status_code == 201, response.text
    return lead_id, str(response.json()["id"])


async def report(
    client: httpx.AsyncClient, token: str, exposure_id: str, status: str, turnover: int | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"status": status}
    if turnover is not None:
        body["turnover"] = {"amount_minor": turnover, "currency": "ILS"}
    response = await client.post(f"/v1/exposures/{exposure_id}/status", headers=auth(token), json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def notifications(client: httpx.AsyncClient, operator: str, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/v1/notifications", headers=auth(operator), params={"limit": 200, **params})
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def survey_token(client: httpx.AsyncClient, operator: str, lead_id: str) -> str:
    """The token of the newest survey link sent about the lead, read from the outbox like an operator would."""
    sent = await notifications(client, operator, kind="survey", reference=lead_id)
    assert sent, f"no survey was sent for {lead_id}"
    link = sent[0]["link"]
    assert link and "/v1/surveys/" in link and link in sent[0]["body"]
    return str(link.rsplit("/", 1)[1])


async def answer(client: httpx.AsyncClient, token: str, **body: Any) -> httpx.Response:
    body.setdefault("satisfaction", 4)
    return await client.post(f"/v1/surveys/{token}", json=body)


def hired(business_id: str, amount: int | None = None, **rest: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"hired": True, "business_id": business_id, **rest}
    if amount is not None:
        body["amount"] = {"amount_minor": amount, "currency": "ILS"}
    return body
