"""The simulator's in-process client hands the app what a server would: method, path, query, headers, body."""

from __future__ import annotations

from litestar import Litestar

from marketplace.simulation.asgi_client import AsgiClient
from tests.factories import business_body


async def test_a_sign_up_then_an_authenticated_read_with_query_parameters(app: Litestar) -> None:
    client = AsgiClient(app)
    created = await client.request("POST", "/v1/businesses", json=business_body("lead_buyer"))
    assert created.status_code == 201, created.text
    token = created.json()["api_token"]
    auth = {"Authorization": f"Bearer {token}"}
    offers = await client.request("GET", "/v1/offers", params={"limit": 5}, headers=auth)
    assert offers.status_code == 200, offers.text
    assert offers.json()["items"] == []
    refused = await client.request("GET", "/v1/offers", params={"limit": 0}, headers=auth)
    assert refused.status_code == 422
    assert refused.header("content-type") == "application/problem+json"
    assert refused.json()["errors"][0]["field"] == "limit"


async def test_a_bad_body_and_a_missing_token_are_answered_as_over_http(app: Litestar) -> None:
    client = AsgiClient(app)
    bad = await client.request("POST", "/v1/businesses", json={"mode": "nobody"})
    assert bad.status_code == 422
    assert bad.header("Content-Type") == "application/problem+json"
    assert (await client.request("GET", "/v1/offers")).status_code == 401
