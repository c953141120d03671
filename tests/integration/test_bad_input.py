"""Bad input: each answered with the right 4xx as problem+json naming the field, and nothing written."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from marketplace.db.models import ApiToken, Business, BusinessCategory, Exposure, Lead, LeadContact
from marketplace.http.access import Access
from marketplace.http.problems import PROBLEM
from marketplace.leads import services as lead_services
from tests.factories import auth, business_body, lead_body, offer_lead_to, operator_token, register, submit_lead


def assert_problem(response: httpx.Response, status: int, *fields: str) -> dict[str, Any]:
    """RFC 9457 shape; for invalid input every named field is among the `errors`, each with a reason."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    for key in ("type", "title", "detail"):
        assert isinstance(body[key], str) and body[key], (key, body)
    if status == 400:  # one type for a body that is not JSON, whichever layer found it
        assert body["type"].endswith("/malformed-request"), body
    if fields:
        named = [e["field"] for e in body["errors"]]
        assert all(isinstance(e["message"], str) and e["message"] for e in body["errors"]), body
        for field in fields:
            assert field in named, (field, body["errors"])
    return body


class Table:
    """Runs every case of a table and reports all the failures at once, each under its case's name."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def check(self, case: str, response: httpx.Response, status: int, *fields: str) -> None:
        try:
            assert_problem(response, status, *fields)
        except AssertionError as exc:
            self.failures.append(f"{case}: {exc}")

    def done(self) -> None:
        assert not self.failures, "\n".join(self.failures)


def without(body: dict[str, Any], *path: str) -> dict[str, Any]:
    inner = body
    for key in path[:-1]:
        inner = inner[key]
    del inner[path[-1]]
    return body


async def nothing_written(db: Any, *models: Any) -> None:
    for model in models:
        assert await db.count(model) == 0, model.__tablename__


# --- lead intake -----------------------------------------------------------------------------------------


def money(amount: Any, currency: Any = "ILS") -> dict[str, Any]:
    return {"amount_minor": amount, "currency": currency}


LEAD_CASES: list[tuple[str, Callable[[], dict[str, Any]], str]] = [
    ("consent-missing", lambda: without(lead_body(), "consent"), "consent"),
    ("consent-false", lambda: lead_body(consent=False), "consent"),
    ("consent-a-string", lambda: lead_body(consent="yes"), "consent"),
    ("consent-the-string-true", lambda: lead_body(consent="true"), "consent"),
    ("budget-a-float", lambda: lead_body(budget=money(12.5)), "budget.amount_minor"),
    ("budget-a-string", lambda: lead_body(budget=money("1500")), "budget.amount_minor"),
    ("budget-a-whole-float", lambda: lead_body(budget=money(1500.0)), "budget.amount_minor"),
    ("budget-negative", lambda: lead_body(budget=money(-1)), "budget.amount_minor"),
    ("budget-not-money", lambda: lead_body(budget=150_000), "budget"),
    ("budget-no-currency", lambda: without(lead_body(), "budget", "currency"), "budget.currency"),
    ("currency-foreign", lambda: lead_body(budget=money(100, "EUR")), "budget.currency"),
    ("currency-not-iso", lambda: lead_body(budget=money(100, "shekel")), "budget.currency"),
    ("category-unknown", lambda: lead_body(category="astrology"), "category"),
    ("category-a-number", lambda: lead_body(category=7), "category"),
    ("region-unknown", lambda: lead_body(region="atlantis"), "region"),
    ("phone-too-short-a-number", lambda: lead_body(contact={"phone": "12345"}), "contact.phone"),
    ("phone-words", lambda: lead_body(contact={"phone": "call me maybe"}), "contact.phone"),
    # Read as a keypad spelling, it would be stored (and sold) as +972542255669, a number nobody gave.
    ("phone-spelled-in-letters", lambda: lead_body(contact={"phone": "+972 54 CALL NOW"}), "contact.phone"),
    ("phone-a-letter-among-digits", lambda: lead_body(contact={"phone": "052-555-O199"}), "contact.phone"),
    ("phone-missing", lambda: without(lead_body(), "contact", "phone"), "contact.phone"),
    ("phone-a-number", lambda: lead_body(contact={"phone": 525550100}), "contact.phone"),
    ("email-invalid", lambda: lead_body(contact={"email": "dana-at-example"}), "contact.email"),
    ("email-missing", lambda: without(lead_body(), "contact", "email"), "contact.email"),
    ("email-null", lambda: lead_body(contact={"email": None}), "contact.email"),
    ("contact-unknown-field", lambda: lead_body(contact={"address": "1 Main St"}), "contact.address"),
    ("description-empty", lambda: lead_body(description=""), "description"),
    ("client-sets-id", lambda: lead_body(id="lead_mine"), "id"),
    ("client-sets-status", lambda: lead_body(status="full"), "status"),
]


async def test_invalid_leads_are_422_naming_the_field_and_write_nothing(client, db):
    table = Table()
    for case, make, field in LEAD_CASES:
        table.check(case, await client.post("/v1/leads", json=make()), 422, field)
    table.done()
    await nothing_written(db, Lead, LeadContact)


async def test_every_invalid_field_of_a_lead_is_named_at_once(client, db):
    body = lead_body(category="astrology", region="atlantis", consent=False, contact={"phone": "call me"})
    response = await client.post("/v1/leads", json=body)
    problem = assert_problem(response, 422, "category", "region", "consent", "contact.phone")
    assert len(problem["errors"]) == 4
    await nothing_written(db, Lead, LeadContact)


async def test_every_field_of_the_wrong_type_is_named_at_once(client, db):
    body = business_body("lead_buyer", name=1, colour="blue")
    del body["phone"]
    body["profile"].update(daily_cap="3", categories=["plumbing", 7])
    response = await client.post("/v1/businesses", json=body)
    problem = assert_problem(response, 422, "name", "phone", "colour", "profile.daily_cap", "profile.categories[1]")
    assert len(problem["errors"]) == 5, problem["errors"]
    assert problem["detail"] == problem["errors"][0]["message"]
    # One wrong field is named alone, as before.
    response = await client.post("/v1/businesses", json=business_body("lead buyer"))
    assert len(assert_problem(response, 422, "mode")["errors"]) == 1
    await nothing_written(db, Business, BusinessCategory, ApiToken)
    # Thousands of wrong items are answered with the first fifty, not an answer larger than the body.
    many = business_body("lead_buyer", **{f"x{i}": i for i in range(3000)})
    response = await client.post("/v1/businesses", json=many)
    assert len(assert_problem(response, 422, "x0", "x49")["errors"]) == 50
    unknown = business_body("lead_buyer")  # the service's own checks are capped the same way
    unknown["profile"].update(categories=[f"c{i:03}" for i in range(100)], regions=[f"r{i:03}" for i in range(100)])
    response = await client.post("/v1/businesses", json=unknown)
    assert len(assert_problem(response, 422, "profile.categories[0]")["errors"]) == 50


async def test_business_selling_an_invalid_inquiry_gets_the_same_answers(client, db):
    _, token = await register(client)
    response = await client.post("/v1/businesses/me/leads", headers=auth(token), json=lead_body(consent=False))
    assert_problem(response, 422, "consent")
    response = await client.post(
        "/v1/businesses/me/leads", headers=auth(token), json=lead_body(contact={"phone": "0000"})
    )
    assert_problem(response, 422, "contact.phone")
    response = await client.post(
        "/v1/businesses/me/leads", headers=auth(token), json=lead_body(contact={"phone": "+972 54 CALL NOW"})
    )
    assert_problem(response, 422, "contact.phone")
    await nothing_written(db, Lead, LeadContact)


# --- malformed and oversized bodies ----------------------------------------------------------------------

MALFORMED = {
    "garbage": b"{not json",
    "truncated": b'{"category": "plumbing",',
    "not-utf8": b"\xff\xfe{}",
    "not-utf8-in-a-string": b'{"name": "\xff", "category": "\xc3"}',
    "single-quotes": b"{'single': 'quotes'}",
}


async def test_malformed_json_is_400_and_writes_nothing(client, db):
    _, token = await register(client)
    headers = {"content-type": "application/json"}
    table = Table()
    for case, content in MALFORMED.items():
        for method, path, extra in (
            ("POST", "/v1/leads", {}),
            ("POST", "/v1/businesses", {}),
            ("PATCH", "/v1/businesses/me", auth(token)),
            ("POST", "/v1/businesses/me/leads", auth(token)),
        ):
            response = await client.request(method, path, content=content, headers={**headers, **extra})
            table.check(f"{case} {method} {path}", response, 400)
    table.done()
    await nothing_written(db, Lead, LeadContact)
    assert await db.count(Business) == 1


async def test_a_body_that_is_not_json_is_415_and_writes_nothing(client, db):
    from tests.factories import lead_body

    body = json.dumps(lead_body()).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        response = await client.post("/v1/leads", content=body, headers={"content-type": content_type})
        problem = assert_problem(response, 415)
        assert "application/json" in problem["detail"]
    await nothing_written(db, Lead, LeadContact)
    # JSON with parameters, a JSON-based type, or no Content-Type at all: read as JSON.
    for content_type in ("application/json; charset=utf-8", "application/vnd.x+json", None):
        headers = {"content-type": content_type} if content_type else {}
        response = await client.post("/v1/leads", content=json.dumps(lead_body()).encode(), headers=headers)
        assert response.status_code == 201, (headers, response.text)


async def test_missing_body_is_422_asking_for_one(client, db):
    response = await client.post("/v1/leads")
    problem = assert_problem(response, 422, "body")
    assert "body" in problem["errors"][0]["message"]
    await nothing_written(db, Lead)


async def test_body_over_the_limit_is_413_even_when_it_is_otherwise_valid(settings, client, db):
    _, token = await register(client)
    limit = settings.service.max_body_bytes
    # Valid JSON with valid fields, padded with whitespace: only its size is wrong.
    padded = (json.dumps(lead_body()) + " " * limit).encode()
    assert len(padded) > limit

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(padded), 4096):
            yield padded[i : i + 4096]

    json_header = {"content-type": "application/json"}
    for path, headers in (("/v1/leads", {}), ("/v1/businesses/me/leads", auth(token))):
        assert_problem(await client.post(path, content=padded, headers={**json_header, **headers}), 413)
        # Without a Content-Length (chunked), the limit holds while the body is read.
        assert_problem(await client.post(path, content=chunks(), headers={**json_header, **headers}), 413)
    signup = (json.dumps(business_body()) + " " * limit).encode()
    assert_problem(await client.post("/v1/businesses", content=signup, headers=json_header), 413)
    await nothing_written(db, Lead, LeadContact)
    assert await db.count(Business) == 1
    # Just under the limit is accepted: the 413 is about size, not about padding.
    fits = (json.dumps(lead_body()) + " " * 100).encode()
    assert (await client.post("/v1/leads", content=fits, headers=json_header)).status_code == 201


# --- tokens and other businesses' data --------------------------------------------------------------------


async def test_missing_or_wrong_token_is_401_and_writes_nothing(client, db):
    business_id, token = await register(client)
    table = Table()
    for case, headers in (
        ("missing", {}),
        ("unknown", auth("mkb_forged")),
        ("empty", {"Authorization": "Bearer "}),
        ("other-scheme", {"Authorization": f"Token {token}"}),
        ("token-cut", auth(token[:-1])),
    ):
        sold = await client.post("/v1/businesses/me/leads", headers=headers, json=lead_body())
        table.check(f"{case} sell", sold, 401)
        renamed = await client.patch("/v1/businesses/me", headers=headers, json={"name": "Hijacked"})
        table.check(f"{case} rename", renamed, 401)
        table.check(f"{case} read", await client.get("/v1/businesses/me", headers=headers), 401)
    table.done()
    await nothing_written(db, Lead, LeadContact)
    assert await db.scalar(select(Business.name).where(Business.id == business_id)) != "Hijacked"


async def test_a_business_reading_or_changing_another_is_refused_and_nothing_changes(app, client, db):
    victim_id, _ = await register(client, name="Victim Ltd")
    _, intruder = await register(client)
    assert_problem(await client.get(f"/v1/businesses/{victim_id}", headers=auth(intruder)), 403)
    assert_problem(await client.get(f"/v1/businesses/{victim_id}/stats", headers=auth(intruder)), 403)
    blocked = await client.post(f"/v1/businesses/{victim_id}/block", headers=auth(intruder), json={"reason": "x"})
    assert_problem(blocked, 403)
    status = await client.post(
        f"/v1/businesses/{victim_id}/status", headers=auth(intruder), json={"status": "suspended", "reason": "x"}
    )
    assert_problem(status, 403)
    assert_problem(await client.get("/v1/exposures/exp_not_mine", headers=auth(intruder)), 404)
    victim = await db.scalar(select(Business).where(Business.id == victim_id))
    assert victim.status == "active" and victim.unreliable_since is None and victim.name == "Victim Ltd"
    # The same calls by an operator do go through, so the refusals above are about who asked.
    op = await operator_token(app)
    assert (await client.get(f"/v1/businesses/{victim_id}", headers=auth(op))).status_code == 200


# --- sign-up and profile changes ----------------------------------------------------------------------------

SIGNUP_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("sets-status", {"status": "active"}, "status"),
    ("sets-id", {"id": "biz_mine"}, "id"),
    ("sets-api-token", {"api_token": "mkb_chosen"}, "api_token"),
    ("sets-balance", {"balance": {"amount_minor": 1_000_000, "currency": "ILS"}}, "balance"),
    ("sets-unreliable", {"unreliable": False}, "unreliable"),
    ("sets-status-in-profile", {"profile": {"status": "active"}}, "profile.status"),
    ("mode-unknown", {"mode": "broker"}, "mode"),
    ("currency-foreign", {"currency": "EUR"}, "currency"),
    ("phone-invalid", {"phone": "12345"}, "phone"),
    ("phone-spelled-in-letters", {"phone": "+972 52 PIPES 99"}, "phone"),
    ("email-invalid", {"email": "not-an-email"}, "email"),
    ("categories-empty", {"profile": {"categories": []}}, "profile.categories"),
    ("regions-empty", {"profile": {"regions": []}}, "profile.regions"),
    ("category-unknown", {"profile": {"categories": ["plumbing", "astrology"]}}, "profile.categories[1]"),
    ("region-unknown", {"profile": {"regions": ["atlantis"]}}, "profile.regions[0]"),
    ("daily-cap-over-monthly", {"profile": {"daily_cap": 10, "monthly_cap": 5}}, "profile.monthly_cap"),
    ("min-deal-over-max", {"profile": {"min_deal_minor": 10_000, "max_deal_minor": 5_000}}, "profile.max_deal_minor"),
    ("min-deal-negative", {"profile": {"min_deal_minor": -1}}, "profile.min_deal_minor"),
    ("cap-a-float", {"profile": {"daily_cap": 12.5}}, "profile.daily_cap"),
    ("cap-zero", {"profile": {"daily_cap": 0}}, "profile.daily_cap"),
    ("cap-a-string", {"profile": {"monthly_cap": "ten"}}, "profile.monthly_cap"),
    ("cap-a-numeric-string", {"profile": {"monthly_cap": "500"}}, "profile.monthly_cap"),
    ("deal-a-float", {"profile": {"max_deal_minor": 12.5}}, "profile.max_deal_minor"),
]


async def test_invalid_sign_ups_are_422_naming_the_field_and_write_nothing(client, db):
    table = Table()
    for case, overrides, field in SIGNUP_CASES:
        body = business_body("lead_buyer")
        for key, value in overrides.items():
            if key == "profile":
                body["profile"].update(value)
            else:
                body[key] = value
        response = await client.post("/v1/businesses", json=body)
        table.check(case, response, 422, field)
        if response.headers.get("content-type") != PROBLEM or "api_token" in response.json():
            table.failures.append(f"{case}: a token was issued")
    table.done()
    await nothing_written(db, Business, BusinessCategory, ApiToken)


PATCH_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("sets-status", {"status": "active"}, "status"),
    ("sets-id", {"id": "biz_mine"}, "id"),
    ("sets-api-token", {"api_token": "mkb_chosen"}, "api_token"),
    ("sets-balance", {"balance": {"amount_minor": 1_000_000, "currency": "ILS"}}, "balance"),
    ("sets-available", {"available": 1_000_000}, "available"),
    ("sets-mode", {"mode": "deal_maker"}, "mode"),
    ("sets-status-in-profile", {"profile": {"status": "active"}}, "profile.status"),
    ("sets-status-with-a-valid-name", {"name": "Renamed", "status": "active"}, "status"),
    # A pair out of order is named by the field sent, not by the stored one it was not sent with.
    ("caps-out-of-order-with-a-valid-name", {"name": "Renamed", "profile": {"daily_cap": 600}}, "profile.daily_cap"),
    ("deals-out-of-order", {"profile": {"min_deal_minor": 20_000_000}}, "profile.min_deal_minor"),
    ("monthly-cap-below-the-stored-daily", {"profile": {"monthly_cap": 10}}, "profile.monthly_cap"),
    ("max-deal-below-min", {"profile": {"max_deal_minor": 0, "min_deal_minor": 1}}, "profile.max_deal_minor"),
    ("categories-empty", {"profile": {"categories": []}}, "profile.categories"),
    ("category-unknown", {"profile": {"categories": ["astrology"]}}, "profile.categories[0]"),
    ("cap-a-float", {"profile": {"daily_cap": 12.5}}, "profile.daily_cap"),
    ("phone-invalid", {"phone": "12345"}, "phone"),
    ("phone-spelled-in-letters", {"phone": "+972 52 PIPES 99"}, "phone"),
    ("name-empty", {"name": ""}, "name"),
]


async def test_invalid_profile_changes_are_422_and_change_nothing(app, client, db):
    business_id, token = await register(client, "lead_buyer")
    op = await operator_token(app)
    suspended = await client.post(
        f"/v1/businesses/{business_id}/status", headers=auth(op), json={"status": "suspended", "reason": "checks"}
    )
    assert suspended.status_code == 200
    before = (await client.get("/v1/businesses/me", headers=auth(token))).json()
    table = Table()
    for case, data, field in PATCH_CASES:
        table.check(case, await client.patch("/v1/businesses/me", headers=auth(token), json=data), 422, field)
        after = (await client.get("/v1/businesses/me", headers=auth(token))).json()
        if after != before:
            table.failures.append(f"{case}: the account changed to {after}")
    table.done()
    stored = await db.scalar(select(Business).where(Business.id == business_id))
    assert stored.status == "suspended" and stored.mode == "lead_buyer"
    assert await db.count(Business) == 1


async def test_taking_another_business_email_is_409_and_changes_nothing(client, db):
    await register(client, email="taken@example.com")
    business_id, token = await register(client, email="mine@example.com")
    response = await client.patch(
        "/v1/businesses/me", headers=auth(token), json={"name": "Renamed", "email": "TAKEN@example.com"}
    )
    assert_problem(response, 409, "email")
    stored = await db.scalar(select(Business).where(Business.id == business_id))
    assert stored.email == "mine@example.com" and stored.name != "Renamed"


# --- query parameters, unknown routes ------------------------------------------------------------------------


async def test_bad_query_parameter_is_422_naming_it(client):
    _, token = await register(client)
    table = Table()
    for query in ("limit=abc", "limit=0", "limit=201", "limit=1.5", "limit=1.0", "limit=1e2", "limit=+5", "limit=0201"):
        table.check(query, await client.get(f"/v1/offers?{query}", headers=auth(token)), 422, "limit")
    table.done()


def tokens_by_access(operator: str, lead_buyer: str) -> dict[Access, str | None]:
    """A token each route's access rule lets in: the operator's, the lead buyer's, none for public routes."""
    return {
        Access.PUBLIC: None,
        Access.OPERATOR: operator,
        Access.BUSINESS_OR_OPERATOR: operator,
        Access.CLUB_OR_OPERATOR: operator,
        Access.BUSINESS: lead_buyer,
        Access.LEAD_BUYER: lead_buyer,
        Access.BUSINESS_SETTLING: lead_buyer,
    }


# Not plain decimal digits: each a 422 naming `limit` on every list, never read as a number (`1e2` was 100).
NOT_DIGITS = ["1.0", "1e0", "1e2", "5.", "+5", "-5", " 5", "5 ", "0x10", "1_0", "", "\u0665", "\uff15", "abc"]


async def test_every_lists_limit_is_plain_digits_leading_zeros_allowed(app, client):
    lead_buyer_id, lead_buyer = await register(client, "lead_buyer")
    operator = await operator_token(app)
    token_for = tokens_by_access(operator, lead_buyer)
    lists = [
        (re.sub(r"\{[^}]+\}", "x", route.path), token_for[handler.opt["access"]])
        for route in app.routes
        for handler in getattr(route, "route_handlers", [])
        if "GET" in getattr(handler, "http_methods", ()) and "limit" in handler.opt.get("query_parameters", ())
    ]
    assert len(lists) >= 13 and ("/v1/offers", lead_buyer) in lists, lists
    table = Table()
    for path, token in lists:
        for value in NOT_DIGITS:  # refused by the parameter's type, before the route looks up any id in its path
            response = await client.get(path, params={"limit": value}, headers=auth(token) if token else {})
            table.check(f"{path}?limit={value!r}", response, 422, "limit")
    table.done()
    (offer_id,) = await offer_lead_to(app, await submit_lead(client), [lead_buyer_id])
    for value in ("05", "0001", "0200"):  # leading zeros are still the number; the 200 rule stays
        page = await client.get("/v1/offers", params={"limit": value}, headers=auth(lead_buyer))
        assert page.status_code == 200 and [o["offer_id"] for o in page.json()["items"]] == [offer_id], page.text
    notifications = await client.get("/v1/notifications", params={"limit": "007"}, headers=auth(operator))
    assert notifications.status_code == 200, notifications.text
    # The served schema still describes every list's limit as an integer from 1 to 200.
    schema = (await client.get("/schema/openapi.json")).json()
    limits = [
        parameter["schema"]
        for operations in schema["paths"].values()
        for operation in operations.values()
        for parameter in operation.get("parameters", [])
        if parameter["name"] == "limit"
    ]
    assert len(limits) == len(lists)
    assert all((s.get("type"), s.get("minimum"), s.get("maximum")) == ("integer", 1, 200) for s in limits), limits


async def test_unknown_route_and_wrong_method_are_problems_too(client):
    assert_problem(await client.get("/v1/no-such-thing"), 404)
    assert_problem(await client.delete("/v1/leads"), 405)


# --- unexpected errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [RuntimeError("boom: internal detail"), OperationalError("SELECT internal detail", {}, Exception("db down"))],
    ids=["bug", "database"],
)
async def test_unexpected_error_is_500_with_a_request_id_and_no_stack_trace(client, db, monkeypatch, caplog, error):
    real = lead_services.submit_lead

    async def fails_after_writing(session: Any, *args: Any, **kwargs: Any) -> Any:
        await real(session, *args, **kwargs)  # the lead is flushed, so a missing rollback would keep it
        raise error

    monkeypatch.setattr(lead_services, "submit_lead", fails_after_writing)
    with caplog.at_level(logging.ERROR, logger="marketplace"):
        first = await client.post("/v1/leads", json=lead_body())
        second = await client.post("/v1/leads", json=lead_body())
    problem = assert_problem(first, 500)
    request_id = problem["request_id"]
    assert request_id and request_id != "-" and request_id in problem["detail"]
    assert assert_problem(second, 500)["request_id"] != request_id
    for leak in ("Traceback", "internal detail", type(error).__name__, 'File "', ".py"):
        assert leak not in first.text, leak
    logged = [r for r in caplog.records if request_id in r.getMessage()]
    assert logged and logged[0].exc_info is not None and logged[0].exc_info[1] is error
    await nothing_written(db, Lead, LeadContact)


async def test_a_cursor_no_list_gave_out_is_refused_on_every_list(app, client):
    from tests.factories import auth, operator_token, register

    _, token = await register(client)
    op = await operator_token(app)
    for path, who in (
        ("/v1/offers", token),
        ("/v1/exposures", token),
        ("/v1/invoices", token),
        ("/v1/settlements", token),
        ("/v1/notifications", op),
        ("/v1/fraud/alerts", op),
        ("/v1/wallet/entries", token),
        ("/v1/unreliable", None),
        ("/v1/clubs", op),
        ("/v1/payables", op),
    ):
        # Numbers too: a posting id beyond 64 bits, or digits that are not ASCII, was never a cursor.
        for cursor in ("garbage", "off_" + "0" * 25, "exp_" + "!" * 26, str(2**63), "\u00b2", "-1"):
            headers = auth(who) if who else {}
            response = await client.get(path, params={"cursor": cursor}, headers=headers)
            assert response.status_code == 422, (path, cursor, response.text)
            assert response.json()["errors"][0]["field"] == "cursor", (path, response.text)
        first = await client.get(path, headers=auth(who) if who else {})
        assert first.status_code == 200, (path, first.text)


async def test_an_empty_contact_email_is_an_invalid_address_not_a_missing_one(client, db):
    from marketplace.db.models import Lead
    from tests.factories import lead_body

    body = lead_body()
    body["contact"]["email"] = ""
    response = await client.post("/v1/leads", json=body)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "contact.email"
    assert await db.count(Lead) == 0


async def test_notifications_refuse_an_unknown_kind(app, client):
    from tests.factories import auth, operator_token

    op = await operator_token(app)
    response = await client.get("/v1/notifications", params={"kind": "bogus"}, headers=auth(op))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "kind"
    assert (await client.get("/v1/notifications", params={"kind": "survey"}, headers=auth(op))).status_code == 200


async def test_a_body_sent_to_a_call_that_takes_none_is_refused_and_changes_nothing(app, client, db):
    lb_id, lb = await register(client, "lead_buyer")
    (offer_id,) = await offer_lead_to(app, await submit_lead(client), [lb_id])
    exposure_id = (await client.post(f"/v1/offers/{offer_id}/claim", headers=auth(lb))).json()["id"]
    url = f"/v1/exposures/{exposure_id}/exclusive"
    for body in (b'{"exclusive": "garbage"}', b"[]", b'"text"', b'{"note": "\\ud800"}'):
        refused = await client.post(url, headers={**auth(lb), "Content-Type": "application/json"}, content=body)
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"] == [{"field": "body", "message": "this call takes no body: send none (or {})"}]
    for malformed in (b"not json", b'{"a":', b"[" * 30_000 + b"]" * 30_000):  # malformed as on every other call: 400
        refused = await client.post(url, headers={**auth(lb), "Content-Type": "application/json"}, content=malformed)
        assert refused.status_code == 400, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
    assert await db.scalar(select(Exposure.kind).where(Exposure.id == exposure_id)) == "shared"
    # No body is sent as nothing, {} or null, however spaced: the first upgrades, the others find it done.
    for i, nothing in enumerate((b"{ }", b"null", b" \n", b"{}")):
        answer = await client.post(url, headers={**auth(lb), "Content-Type": "application/json"}, content=nothing)
        assert answer.status_code == (200 if i == 0 else 409), answer.text
    assert await db.scalar(select(Exposure.kind).where(Exposure.id == exposure_id)) == "exclusive"


async def test_a_sign_up_or_a_change_with_several_wrong_values_names_each(client, db):
    body = business_body("lead_buyer", name=" ", email="not-an-email", phone="12", currency="EUR")
    body["profile"].update(categories=["astrology"], daily_cap=90, monthly_cap=10)
    problem = assert_problem(
        await client.post("/v1/businesses", json=body),
        422,
        "currency",
        "name",
        "email",
        "phone",
        "profile.categories[0]",
        "profile.monthly_cap",
    )
    assert len(problem["errors"]) == 6
    await nothing_written(db, Business, BusinessCategory, ApiToken)
    _, token = await register(client)
    before = (await client.get("/v1/businesses/me", headers=auth(token))).json()
    change = {"name": "Renamed", "email": "bad", "phone": "12", "profile": {"regions": ["atlantis"]}}
    response = await client.patch("/v1/businesses/me", headers=auth(token), json=change)
    assert len(assert_problem(response, 422, "email", "phone", "profile.regions[0]")["errors"]) == 3
    assert (await client.get("/v1/businesses/me", headers=auth(token))).json() == before  # the name did not change


REPEATED = "given more than once; it takes one value"


async def test_a_key_given_twice_in_one_object_is_422_naming_it_and_writes_nothing(client, db):
    """The decoder would keep the last of two values silently; a key repeated, at any depth and however written
    (spaced before its colon, or escaped), is refused naming each one."""
    as_json = {"content-type": "application/json"}
    sign_up = json.dumps(business_body("lead_buyer"))
    twice = '{"name": "Other", ' + sign_up[1:].replace('"profile": {', '"profile": {"daily_cap" : 1, ', 1)
    problem = assert_problem(
        await client.post("/v1/businesses", content=twice, headers=as_json), 422, "name", "profile.daily_cap"
    )
    assert problem["errors"] == [
        {"field": "name", "message": REPEATED},
        {"field": "profile.daily_cap", "message": REPEATED},
    ]
    assert problem["detail"] == REPEATED
    await nothing_written(db, Business, BusinessCategory, ApiToken)
    lead = json.dumps(lead_body())
    for case, content, field in (
        ("top level", '{"consent": true, ' + lead[1:], "consent"),
        ("nested", lead.replace('"contact": {', '"contact": {"phone": "+972500000000", ', 1), "contact.phone"),
        ("escaped", '{"\\u0063ategory": "plumbing", ' + lead[1:], "category"),
        ("spaced", lead[:-1] + ', "region"\n : "center"}', "region"),
    ):
        response = await client.post("/v1/leads", content=content, headers=as_json)
        assert [e["field"] for e in assert_problem(response, 422, field)["errors"]] == [field], case
    await nothing_written(db, Lead, LeadContact)
    # A change given a key twice changes nothing.
    _, token = await register(client)
    before = (await client.get("/v1/businesses/me", headers=auth(token))).json()
    change = b'{"name": "Renamed", "profile": {"daily_cap": 3, "daily_cap": 4}}'
    response = await client.patch("/v1/businesses/me", content=change, headers={**auth(token), **as_json})
    assert_problem(response, 422, "profile.daily_cap")
    assert (await client.get("/v1/businesses/me", headers=auth(token))).json() == before
    # Strings holding colons and `":` are no repeated keys: the body is taken.
    said = lead_body(description='The plumber said "come at 10:00": it leaks at https://example.com/sink')
    assert (await client.post("/v1/leads", content=json.dumps(said), headers=as_json)).status_code == 201


async def test_an_unpaired_surrogate_escape_is_422_naming_the_field_and_writes_nothing(client, db):
    """`\\ud800` alone is no Unicode character: the decoder refused it as `Input data was truncated`, a 400 that
    sent the client looking for a cut-off body. It is a 422 naming the field and saying why."""
    as_json = {"content-type": "application/json"}
    lead = json.dumps(lead_body())
    for case, content, field in (
        ("high alone", lead.replace('"Leaking pipe', '"Leaking \\ud800pipe', 1), "description"),
        ("at the end", lead.replace('"Dana Customer"', '"Dana \\ud800"', 1), "contact.name"),
        ("low alone", lead.replace('"Dana Customer"', '"\\udc00Dana"', 1), "contact.name"),
        ("high then not low", lead.replace('"Leaking pipe', '"\\ud800\\u0041', 1), "description"),
    ):
        problem = assert_problem(await client.post("/v1/leads", content=content, headers=as_json), 422, field)
        assert "unpaired surrogate" in problem["detail"] and "not valid Unicode" in problem["detail"], (case, problem)
    await nothing_written(db, Lead, LeadContact)
    # Malformed JSON with one is malformed still (400), and a pair written as two escapes is one character.
    truncated = '{"description": "\\ud800", "category":'
    assert_problem(await client.post("/v1/leads", content=truncated, headers=as_json), 400)
    paired = lead.replace('"Leaking pipe', '"Leaking \\ud83d\\udca7 pipe', 1)
    created = await client.post("/v1/leads", content=paired, headers=as_json)
    assert created.status_code == 201, created.text


async def test_a_call_that_takes_no_body_refuses_one_sent_as_another_media_type_with_a_415(app, client, db):
    """The README's rule for every POST: a body sent as another media type (a form, `text/plain`) is a 415, `{}` as
    text/plain included; no body at all stays no body, whatever its Content-Type says."""
    from litestar.handlers import HTTPRouteHandler

    lb_id, lb = await register(client, "lead_buyer")
    (offer_id,) = await offer_lead_to(app, await submit_lead(client), [lb_id])
    exposure_id = (await client.post(f"/v1/offers/{offer_id}/claim", headers=auth(lb))).json()["id"]
    op = await operator_token(app)
    calls = {
        "/v1/exposures/{exposure_id:str}/exclusive": (f"/v1/exposures/{exposure_id}/exclusive", lb),
        "/v1/settlements/{settlement_id:str}/confirm": ("/v1/settlements/stl_none/confirm", op),
        "/v1/settlements/{settlement_id:str}/fail": ("/v1/settlements/stl_none/fail", op),
        "/v1/clubs/{club_id:str}/operator-token": ("/v1/clubs/club_none/operator-token", op),
        "/v1/businesses/{business_id:str}/api-token": ("/v1/businesses/biz_none/api-token", op),
        # Last: answered, it revokes the token it was called with.
        "/v1/businesses/me/api-token": ("/v1/businesses/me/api-token", (await register(client, "deal_maker"))[1]),
    }
    bodiless = {
        route.path
        for route in app.routes
        for handler in getattr(route, "route_handlers", [])
        if isinstance(handler, HTTPRouteHandler)
        and handler.http_methods & {"POST", "PUT", "PATCH"}
        and "data" not in handler.parsed_fn_signature.parameters
    }
    assert bodiless == set(calls)  # a new call that takes no body is checked here too
    for path, token in calls.values():
        for content_type, body in (("application/x-www-form-urlencoded", b"a=1"), ("text/plain", b"{}")):
            refused = await client.post(path, headers={**auth(token), "Content-Type": content_type}, content=body)
            problem = assert_problem(refused, 415)
            assert "application/json" in problem["detail"], (path, content_type)
        # No body: past the media type check to the call itself (done, or a 404 for an id that does not exist).
        answered = await client.post(path, headers={**auth(token), "Content-Type": "text/plain"})
        assert answered.status_code in (200, 201, 404), (path, answered.text)
    assert await db.scalar(select(Exposure.kind).where(Exposure.id == exposure_id)) == "exclusive"
    schema = (await client.get("/schema/openapi.json")).json()
    ids = {"stl": "/{settlement_id}/", "club": "/{club_id}/", "biz": "/{business_id}/"}
    for path, _ in calls.values():
        template = re.sub(r"/(stl|club|biz)_none/", lambda m: ids[m[1]], path)
        template = template.replace(exposure_id, "{exposure_id}")
        assert "415" in schema["paths"][template]["post"]["responses"], template


async def test_every_read_answers_406_to_an_accept_that_takes_no_json_and_json_to_one_that_does(app, client, db):
    """The README's Accept rule on every GET, in one place (the access guard): a read that comes as JSON only answers
    an Accept that takes no JSON (`text/csv`) with a 406 naming application/json, as the invoices and entries did
    alone before; what takes JSON however it says so (no header, `*/*`, `application/*`, q-values, problem+json) is
    answered as before. The routes that choose their form themselves keep their own answer (an invoice's PDF, the
    entries' CSV), and /health and the OpenAPI schema answer whatever is asked. Each such 406 is in the schema."""
    from litestar.handlers import HTTPRouteHandler

    from marketplace.http.negotiation import ANY_ACCEPT, CHOOSES_FORM

    _, lead_buyer = await register(client, "lead_buyer")
    operator = await operator_token(app)
    token_for = tokens_by_access(operator, lead_buyer)
    reads = [
        (route.path, handler)
        for route in app.routes
        for handler in getattr(route, "route_handlers", [])
        if isinstance(handler, HTTPRouteHandler) and "GET" in handler.http_methods and "access" in handler.opt
    ]
    assert len(reads) >= 30, [path for path, _ in reads]
    own_forms = {path for path, handler in reads if handler.opt.get(CHOOSES_FORM)}
    assert own_forms == {"/v1/invoices", "/v1/invoices/{invoice_id:str}", "/v1/wallet/entries"}
    any_accept = {path for path, handler in reads if handler.opt.get(ANY_ACCEPT)}
    assert any_accept == {"/health", "/openapi.json", "/schema/openapi.json"}
    table = Table()
    for template, handler in reads:
        path = re.sub(r"\{[^}]+\}", "x", template)
        token = token_for[handler.opt["access"]]
        headers = auth(token) if token else {}
        csv = await client.get(path, headers={**headers, "Accept": "text/csv"})
        if template in any_accept:
            assert csv.status_code == 200, (path, csv.text)
        elif template == "/v1/invoices/{invoice_id:str}":  # its 406 comes after the lookup: test_exposure_edges
            table.check(f"{path} text/csv", csv, 404)
        else:
            table.check(f"{path} text/csv", csv, 406)
            if csv.status_code == 406:
                assert csv.json()["available"] == ["application/json"], path  # the entries' CSV: `?format=csv`
                assert csv.headers["vary"] == "Accept", path
        for accept in ("*/*", None):
            answered = await client.get(path, headers={**headers, **({"Accept": accept} if accept else {})})
            # As without the header: a list or one's own record, or a 404 for the id "x" (a survey's link is a 422).
            assert answered.status_code in (200, 404, 422), (path, accept, answered.text)
            if "{" not in template:
                assert answered.status_code == 200, (path, accept, answered.text)
    table.done()
    for accept in (
        "application/*",
        "application/json;q=0.1, text/csv",
        "application/problem+json",
        "text/html, */*;q=0.1",
        "application/json, application/problem+json",
        "*",  # a bare star, as old clients send: */*
        "application/*+json",  # any JSON (RFC 6839's suffix)
    ):
        answered = await client.get("/v1/offers", headers={**auth(lead_buyer), "Accept": accept})
        assert answered.status_code == 200 and answered.json()["items"] == [], (accept, answered.text)
    for accept in ("text/html, application/json;q=0", "image/*", "application/xml", "application/*+xml"):
        assert_problem(await client.get("/v1/wallet", headers={**auth(lead_buyer), "Accept": accept}), 406)
    head = await client.head("/v1/exposures", headers={**auth(lead_buyer), "Accept": "text/csv"})
    assert head.status_code == 406 and head.content == b""
    schema = (await client.get("/schema/openapi.json")).json()
    for path, operations in schema["paths"].items():
        if "get" in operations and path != "/health":
            assert "406" in operations["get"]["responses"], path
    assert "406" not in schema["paths"]["/health"]["get"]["responses"]
