"""The HTTP contract (../shared/API.md) as an outside client meets it, beyond what test_access.py and
test_bad_input.py already hold: input no column can store, blank text, retries of every call that moves
money, list shapes, rate-limit answers, timestamps, and the served OpenAPI schema agreeing with the page."""

from __future__ import annotations

import re
from typing import Any

import httpx
from sqlalchemy import select

from marketplace.app import create_app, shutdown, startup
from marketplace.db.models import (
    ApiToken,
    Business,
    Club,
    Exposure,
    ExposureEvent,
    Lead,
    LeadContact,
    LedgerTransaction,
)
from marketplace.http.problems import PROBLEM
from tests.factories import auth, business_body, lead_body, offer_lead_to, operator_token, register, submit_lead
from tests.integration.test_bad_input import Table, assert_problem, nothing_written

ILS = "ILS"


def money(minor: int) -> dict[str, Any]:
    return {"amount_minor": minor, "currency": ILS}


async def claimed_exposure(app: Any, client: httpx.AsyncClient, mode: str, **lead: Any) -> tuple[str, str, str]:
    """A business of `mode` holding an exposure of a fresh lead: (business id, token, exposure id)."""
    business_id, token = await register(client, mode)
    lead_id = await submit_lead(client, **lead)
    (offer_id,) = await offer_lead_to(app, lead_id, [business_id])
    claimed = await client.post(f"/v1/offers/{offer_id}/claim", headers=auth(token), json={"exclusive": False})
    assert claimed.status_code == 201, claimed.text
    return business_id, token, str(claimed.json()["id"])


# --- input no column can store: a NUL character, JSON nested beyond any decoder ------------------------------


async def test_a_nul_character_in_a_body_is_422_naming_the_field_and_writes_nothing(app, client, db):
    # PostgreSQL refuses NUL in text outright (it was a 500 there); SQLite kept it. Either way it is bad input.
    business_id, token = await register(client, "lead_buyer", name="Before")
    table = Table()
    for case, method, path, body, headers, field in (
        ("lead description", "POST", "/v1/leads", lead_body(description="Leak\x00ing"), {}, "description"),
        ("lead contact name", "POST", "/v1/leads", lead_body(contact={"name": "Dana\x00"}), {}, "contact.name"),
        ("sold lead", "POST", "/v1/businesses/me/leads", lead_body(region="tel\x00aviv"), auth(token), "region"),
        ("sign-up name", "POST", "/v1/businesses", business_body(name="Alpha\x00"), {}, "name"),
        ("sign-up category", "POST", "/v1/businesses", business_body(profile={"categories": ["plumb\x00ing"]}), {},
         "profile.categories[0]"),
        ("profile name", "PATCH", "/v1/businesses/me", {"name": "Hijack\x00ed"}, auth(token), "name"),
        ("a key", "PATCH", "/v1/businesses/me", {"na\x00me": "Renamed"}, auth(token), "na\x00me"),
    ):
        response = await client.request(method, path, json=body, headers=headers)
        table.check(case, response, 422, field)
    table.done()
    await nothing_written(db, Lead, LeadContact)
    assert await db.count(Business) == 1 and await db.count(ApiToken) == 1
    assert await db.scalar(select(Business.name).where(Business.id == business_id)) == "Before"


async def test_a_long_id_is_not_echoed_back_at_length(client):
    _, token = await register(client, "lead_buyer")
    response = await client.get(f"/v1/exposures/exp_{'x' * 20_000}", headers=auth(token))
    assert response.status_code == 404, response.text[:200]
    assert len(response.json()["detail"]) <= 500 and len(response.content) < 2_000


async def test_a_nul_character_in_an_id_or_a_query_is_a_clean_4xx(app, client, db):
    _, buyer, exposure_id = await claimed_exposure(app, client, "lead_buyer")
    operator = await operator_token(app)
    events = await db.count(ExposureEvent)
    table = Table()
    for method, path, headers, json in (
        ("GET", "/v1/exposures/exp%00x", auth(buyer), None),
        ("POST", "/v1/exposures/exp%00x/status", auth(buyer), {"status": "contacted"}),
        ("POST", "/v1/exposures/exp%00x/return", auth(buyer), {"reason": "not mine"}),
        ("POST", "/v1/offers/off%00x/claim", auth(buyer), {"exclusive": False}),
        ("GET", "/v1/invoices/inv%00x", auth(buyer), None),
        ("GET", "/v1/leads/lead%00x", auth(operator), None),
        ("GET", "/v1/leads/lead%00x/ranking", auth(operator), None),
        ("POST", "/v1/businesses/biz%00x/block", auth(operator), None),
        ("POST", "/v1/settlements/stl%00x/confirm", auth(operator), None),
        ("POST", "/v1/fraud/alerts/alr%00x/decision", auth(operator), {"decision": "dismiss", "note": "n"}),
        ("GET", "/v1/surveys/tok%00x", {}, None),
    ):
        table.check(f"{method} {path}", await client.request(method, path, headers=headers, json=json), 404)
    for path, headers, field in (
        ("/v1/offers?cursor=off%00x", auth(buyer), "cursor"),
        ("/v1/exposures?cursor=exp%00x", auth(buyer), "cursor"),
        ("/v1/invoices?cursor=inv%00x", auth(buyer), "cursor"),
        ("/v1/notifications?kind=survey%00", auth(operator), "kind"),
        ("/v1/invoices?business_id=biz%00x", auth(operator), "business_id"),
    ):
        table.check(path, await client.get(path, headers=headers), 422, field)
    table.done()
    # The caller is still refused before anything is looked up: no token is still a 401, not a 404.
    assert_problem(await client.get("/v1/exposures/exp%00x"), 401)
    exposure = await db.scalar(select(Exposure).where(Exposure.id == exposure_id))
    assert exposure.status == "new" and await db.count(ExposureEvent) == events


async def test_json_nested_too_deeply_is_400_not_a_500(client, db):
    _, token = await register(client)
    json_header = {"content-type": "application/json"}
    table = Table()
    for depth in (2_000, 20_000):
        nested = b"[" * depth + b"]" * depth
        inside = b'{"category": ' + nested + b"}"
        table.check(f"{depth} deep", await client.post("/v1/leads", content=nested, headers=json_header), 400)
        table.check(f"{depth} deep field", await client.post("/v1/leads", content=inside, headers=json_header), 400)
        patched = await client.patch("/v1/businesses/me", content=inside, headers={**json_header, **auth(token)})
        table.check(f"{depth} deep profile change", patched, 400)
    table.done()
    await nothing_written(db, Lead)


# --- out-of-range values on the calls that move money ---------------------------------------------------------


async def test_huge_negative_or_fractional_amounts_are_422_and_move_nothing(app, client, db):
    _, maker, deal = await claimed_exposure(app, client, "deal_maker")
    buyer_id, buyer, bought = await claimed_exposure(app, client, "lead_buyer")
    lead2 = await submit_lead(client)
    (offer,) = await offer_lead_to(app, lead2, [buyer_id])
    transactions = await db.count(LedgerTransaction)
    table = Table()
    for case, token, path, body, field in (
        ("turnover over 10^15", maker, f"/v1/exposures/{deal}/status",
         {"status": "won", "turnover": money(10**16)}, "turnover.amount_minor"),
        ("turnover negative", maker, f"/v1/exposures/{deal}/status",
         {"status": "won", "turnover": money(-1)}, "turnover.amount_minor"),
        ("turnover a float", maker, f"/v1/exposures/{deal}/status",
         {"status": "won", "turnover": {"amount_minor": 100.5, "currency": ILS}}, "turnover.amount_minor"),
        ("turnover in words", maker, f"/v1/exposures/{deal}/status",
         {"status": "won", "turnover": {"amount_minor": "lots", "currency": ILS}}, "turnover.amount_minor"),
        ("note too long", maker, f"/v1/exposures/{deal}/status", {"status": "contacted", "note": "n" * 2001}, "note"),
        ("withdrawal over 10^15", buyer, "/v1/wallet/withdrawals", {"amount": money(10**16)}, "amount.amount_minor"),
        ("withdrawal negative", buyer, "/v1/wallet/withdrawals", {"amount": money(-500)}, "amount.amount_minor"),
        ("withdrawal a float", buyer, "/v1/wallet/withdrawals",
         {"amount": {"amount_minor": 0.5, "currency": ILS}}, "amount.amount_minor"),
        ("withdrawal no currency", buyer, "/v1/wallet/withdrawals", {"amount": {"amount_minor": 5}},
         "amount.currency"),
        ("claim exclusive as a string", buyer, f"/v1/offers/{offer}/claim", {"exclusive": "true"}, "exclusive"),
        ("claim exclusive as a number", buyer, f"/v1/offers/{offer}/claim", {"exclusive": 1}, "exclusive"),
        ("return reason too long", buyer, f"/v1/exposures/{bought}/return", {"reason": "r" * 2001}, "reason"),
        ("return reason a number", buyer, f"/v1/exposures/{bought}/return", {"reason": 7}, "reason"),
    ):
        table.check(case, await client.post(path, headers=auth(token), json=body), 422, field)
    table.done()
    assert await db.count(LedgerTransaction) == transactions
    statuses = await db.scalars(select(Exposure.status).where(Exposure.id.in_([deal, bought])))
    assert statuses == ["new", "new"]
    assert await db.count(Exposure) == 2  # the offer of the second lead was not claimed


# --- blank text -------------------------------------------------------------------------------------------------


async def test_text_of_spaces_alone_is_422_and_writes_nothing(client, db):
    business_id, token = await register(client, name="Alpha Plumbing")
    table = Table()
    table.check("sign-up name", await client.post("/v1/businesses", json=business_body(name="   ")), 422, "name")
    table.check("profile name", await client.patch("/v1/businesses/me", headers=auth(token), json={"name": " \t"}),
                422, "name")
    table.check("description", await client.post("/v1/leads", json=lead_body(description=" \n ")), 422, "description")
    table.check("contact name", await client.post("/v1/leads", json=lead_body(contact={"name": "  "})), 422,
                "contact.name")
    sold = await client.post("/v1/businesses/me/leads", headers=auth(token), json=lead_body(description="  "))
    table.check("sold description", sold, 422, "description")
    table.done()
    await nothing_written(db, Lead, LeadContact)
    assert await db.count(Business) == 1
    assert await db.scalar(select(Business.name).where(Business.id == business_id)) == "Alpha Plumbing"
    # Text with spaces around it is fine, and kept without them.
    renamed = await client.patch("/v1/businesses/me", headers=auth(token), json={"name": "  Beta Plumbing "})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Beta Plumbing"


async def test_a_field_off_its_pattern_is_told_what_the_pattern_means_not_the_regex(app, client, db):
    lower = await client.post("/v1/leads", json=lead_body(budget={"amount_minor": 100_000, "currency": "ils"}))
    assert_problem(lower, 422, "budget.currency")
    (error,) = lower.json()["errors"]
    assert "three capital letters" in error["message"] and "regex" not in lower.text, lower.text
    operator = await operator_token(app)
    spaced = await client.post("/v1/referral-codes", headers=auth(operator), json={"referrer": "Big Partner"})
    assert_problem(spaced, 422, "referrer")
    assert "lower-case letters, digits" in spaced.json()["errors"][0]["message"], spaced.text
    assert "regex" not in spaced.text
    await nothing_written(db, Lead, LeadContact)


async def test_text_of_invisible_characters_alone_is_422_and_writes_nothing(app, client, db):
    # Zero-width spaces and joiners, the byte order mark, a soft hyphen, direction marks, a no-break space: a name
    # of them shows nothing, as one of spaces does not.
    business_id, token = await register(client, name="Alpha Plumbing")
    operator = await operator_token(app)
    table = Table()
    for invisible in ("\u200b", "\u200b\u200d \ufeff", "\u00ad\u200e\u00a0", "\u2060\u3000"):
        signed_up = await client.post("/v1/businesses", json=business_body(name=invisible))
        table.check(f"sign-up name {invisible!r}", signed_up, 422, "name")
        table.check(f"profile name {invisible!r}",
                    await client.patch("/v1/businesses/me", headers=auth(token), json={"name": invisible}), 422, "name")
        table.check(f"description {invisible!r}", await client.post("/v1/leads", json=lead_body(description=invisible)),
                    422, "description")
        table.check(f"contact name {invisible!r}",
                    await client.post("/v1/leads", json=lead_body(contact={"name": invisible})), 422, "contact.name")
        club = {"name": invisible, "operator_name": "Haifa Builders Association"}
        table.check(f"club name {invisible!r}", await client.post("/v1/clubs", headers=auth(operator), json=club),
                    422, "name")
    table.done()
    await nothing_written(db, Lead, LeadContact, Club)
    assert await db.count(Business) == 1
    assert await db.scalar(select(Business.name).where(Business.id == business_id)) == "Alpha Plumbing"
    # A visible character among them is a name (kept as written, but for the spaces around it).
    renamed = await client.patch("/v1/businesses/me", headers=auth(token), json={"name": "\u200bBeta\u200d "})
    assert renamed.status_code == 200 and renamed.json()["name"] == "\u200bBeta\u200d"


# --- another business's money ----------------------------------------------------------------------------------


async def test_a_business_never_sees_another_business_money(app, client):
    # test_access.py covers exposures and offers; here invoices (JSON and PDF), settlements and ledger entries.
    _, owner, _ = await claimed_exposure(app, client, "lead_buyer")  # an invoice, a pending charge, postings
    _, other = await register(client, "lead_buyer")
    owner_id = (await client.get("/v1/businesses/me", headers=auth(owner))).json()["id"]
    (invoice,) = (await client.get("/v1/invoices", headers=auth(owner))).json()["items"]
    (settlement,) = (await client.get("/v1/settlements", headers=auth(owner))).json()["items"]
    assert (await client.get("/v1/wallet/entries", headers=auth(owner))).json()["items"]

    for accept in ("application/json", "application/pdf"):
        response = await client.get(f"/v1/invoices/{invoice['id']}", headers={**auth(other), "Accept": accept})
        assert_problem(response, 404)
        assert invoice["number"] not in response.text
    for path in ("/v1/invoices", "/v1/settlements", "/v1/settlements?status=pending", "/v1/wallet/entries"):
        response = await client.get(path, headers=auth(other))
        assert response.status_code == 200 and response.json()["items"] == [], (path, response.text)
    # Asking for another business's invoices by filter is refused (as for any id: nothing tells it exists).
    for asked in (owner_id, "biz_nobody"):
        response = await client.get(f"/v1/invoices?business_id={asked}", headers=auth(other))
        assert_problem(response, 422)
        assert invoice["number"] not in response.text
    wallet = (await client.get("/v1/wallet", headers=auth(other))).json()
    assert wallet["owed"] == money(0) and wallet["pending_settlements"] == []
    assert settlement["id"] not in str(wallet)
    # The owner does get its PDF, so the 404 above is about who asked.
    pdf = await client.get(f"/v1/invoices/{invoice['id']}", headers={**auth(owner), "Accept": "application/pdf"})
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    # The Accept header's q-values decide: a PDF refused (q=0) or less wanted than JSON gives JSON (an Accept that
    # takes neither is a 406: test_exposure_edges.py).
    for accept, pdf_wanted in (
        ("application/json, application/pdf;q=0", False),
        ("application/pdf;q=0, */*", False),
        ("application/pdf;q=0.4, application/json", False),
        ("application/json;q=0.2, application/pdf", True),
        ("*/*", False),
    ):
        answer = await client.get(f"/v1/invoices/{invoice['id']}", headers={**auth(owner), "Accept": accept})
        assert answer.status_code == 200
        assert answer.content.startswith(b"%PDF") is pdf_wanted, accept


async def test_an_invoice_says_its_form_depends_on_accept(app, client):
    # The same URL answers JSON or a PDF by the Accept header: a cache must key on it (Vary), or it could hand the
    # PDF to a client that asked for JSON.
    _, owner, _ = await claimed_exposure(app, client, "lead_buyer")
    (invoice,) = (await client.get("/v1/invoices", headers=auth(owner))).json()["items"]
    for accept, media in (
        (None, "application/json"),
        ("application/json", "application/json"),
        ("application/pdf", "application/pdf"),
        ("application/pdf;q=0, */*;q=0.5", "application/json"),
    ):
        headers = auth(owner) if accept is None else {**auth(owner), "Accept": accept}
        answer = await client.get(f"/v1/invoices/{invoice['id']}", headers=headers)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith(media), accept
        vary = {v.strip().lower() for v in answer.headers.get_list("vary", split_commas=True)}
        assert "accept" in vary, (accept, answer.headers)


# --- Idempotency-Key on every POST that moves money ----------------------------------------------------------


async def test_a_retried_paid_report_answers_as_the_first_and_charges_the_commission_once(app, client, db):
    # A deal maker's `paid` settles the commission: the retry of a report whose answer was lost must not be a
    # 409 (paid to paid), and must not charge again.
    _, maker, exposure_id = await claimed_exposure(app, client, "deal_maker")
    path = f"/v1/exposures/{exposure_id}/status"
    won = await client.post(path, headers=auth(maker), json={"status": "won", "turnover": money(1_000_000)})
    assert won.status_code == 200, won.text
    keyed = {**auth(maker), "Idempotency-Key": "paid-1"}
    first = await client.post(path, headers=keyed, json={"status": "paid"})
    assert first.status_code == 200, first.text
    again = await client.post(path, headers=keyed, json={"status": "paid"})
    assert again.status_code == 200, again.text
    assert again.json() == first.json() and again.json()["status"] == "paid"
    assert await db.count(LedgerTransaction, LedgerTransaction.kind == "deal_commission") == 1
    # The same key with another body is a 422; without a key a second `paid` is the pipeline's 409.
    other = await client.post(path, headers=keyed, json={"status": "paid", "note": "again"})
    assert_problem(other, 422, "Idempotency-Key")
    unkeyed = await client.post(path, headers=auth(maker), json={"status": "paid"})
    assert assert_problem(unkeyed, 409)["allowed_next"] == []
    assert await db.count(LedgerTransaction, LedgerTransaction.kind == "deal_commission") == 1
    history = await db.scalars(select(ExposureEvent.to_status).where(ExposureEvent.exposure_id == exposure_id))
    assert history.count("paid") == 1


# --- filters and lists ----------------------------------------------------------------------------------------


async def test_an_unknown_status_filter_is_422_not_an_empty_list(app, client):
    _, buyer, exposure_id = await claimed_exposure(app, client, "lead_buyer")
    assert_problem(await client.get("/v1/exposures?status=nwe", headers=auth(buyer)), 422, "status")
    listed = await client.get("/v1/exposures?status=new", headers=auth(buyer))
    assert [e["id"] for e in listed.json()["items"]] == [exposure_id]
    assert (await client.get("/v1/exposures?status=won", headers=auth(buyer))).json()["items"] == []


async def test_an_empty_cursor_is_the_first_page_on_every_business_list(app, client):
    _, token, _ = await claimed_exposure(app, client, "lead_buyer")  # a purchase: entries, an invoice, a settlement
    for path in ("/v1/wallet/entries", "/v1/exposures", "/v1/offers", "/v1/invoices", "/v1/settlements"):
        first = await client.get(path, headers=auth(token))
        empty = await client.get(f"{path}?cursor=", headers=auth(token))
        assert first.status_code == empty.status_code == 200, (path, empty.text)
        assert empty.json() == first.json(), path
        assert first.json()["items"] or path == "/v1/offers", path  # its one offer was claimed


async def test_the_unreliable_list_is_paginated_like_every_list(app, client):
    operator = await operator_token(app)
    blocked = []
    for _ in range(5):
        business_id, _ = await register(client)
        response = await client.post(f"/v1/businesses/{business_id}/block", headers=auth(operator))
        assert response.status_code == 200, response.text
        blocked.append(business_id)
    kept, _ = await register(client)
    await client.post(f"/v1/businesses/{kept}/block", headers=auth(operator), json={"unreliable": False})

    everything = await client.get("/v1/unreliable")
    assert everything.status_code == 200
    assert set(everything.json()) == {"items", "next_cursor"} and everything.json()["next_cursor"] is None
    assert sorted(b["id"] for b in everything.json()["items"]) == sorted(blocked)
    walked: list[str] = []
    cursor = None
    while True:
        page = (await client.get("/v1/unreliable", params={"limit": 2, **({"cursor": cursor} if cursor else {})}))
        assert page.status_code == 200, page.text
        assert len(page.json()["items"]) <= 2
        walked += [b["id"] for b in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert walked == [b["id"] for b in everything.json()["items"]]  # the same order, nothing twice or missed
    for query, field in (("limit=0", "limit"), ("limit=201", "limit"), ("cursor=biz_never_listed", "cursor")):
        assert_problem(await client.get(f"/v1/unreliable?{query}"), 422, field)


# --- answers that tell a client what to do next ---------------------------------------------------------------


async def test_refusals_carry_the_standard_headers(app, client):
    app.state.rate_limits["intake"].per_minute = 1
    assert (await client.post("/v1/leads", json=lead_body())).status_code == 201
    limited = await client.post("/v1/leads", json=lead_body())
    problem = assert_problem(limited, 429)
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert problem["retry_after_seconds"] == int(limited.headers["Retry-After"])
    unauthenticated = await client.get("/v1/businesses/me")
    assert_problem(unauthenticated, 401)
    assert unauthenticated.headers["WWW-Authenticate"].startswith("Bearer")
    wrong_method = await client.delete("/v1/leads")
    assert_problem(wrong_method, 405)
    assert "POST" in wrong_method.headers["Allow"]


async def test_a_retried_settlement_confirmation_answers_as_the_first_and_moves_money_once(app, client, db):
    operator = await operator_token(app)
    _, buyer, exposure_id = await claimed_exposure(app, client, "lead_buyer")  # an empty wallet: a bank transfer
    (charge,) = (await client.get("/v1/settlements?status=pending", headers=auth(buyer))).json()["items"]
    assert charge["reference"] == exposure_id and charge["direction"] == "charge"
    path = f"/v1/settlements/{charge['id']}/confirm"
    keyed = {**auth(operator), "Idempotency-Key": "bank-statement-17"}
    first = await client.post(path, headers=keyed)
    again = await client.post(path, headers=keyed)
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert again.json() == first.json() and first.json()["status"] == "confirmed"
    assert await db.count(LedgerTransaction, LedgerTransaction.kind == "charge_received") == 1
    # The key belongs to that confirmation: on another call it is a 422, and nothing moves.
    reused = await client.post(f"/v1/settlements/{charge['id']}/fail", headers=keyed)
    assert_problem(reused, 422, "Idempotency-Key")
    assert_problem(await client.post(f"/v1/settlements/{charge['id']}/fail", headers=auth(operator)), 409)
    wallet = (await client.get("/v1/wallet", headers=auth(buyer))).json()
    assert wallet["owed"] == money(0)
    assert_problem(await client.get("/v1/settlements?status=done", headers=auth(buyer)), 422, "status")


# --- the served OpenAPI schema agrees with the page ------------------------------------------------------------

# Every call API.md names, with the success statuses it gives (or the one a client of its kind expects).
CALLS: dict[tuple[str, str], set[str]] = {
    ("GET", "/health"): {"200"},
    ("GET", "/v1/regions"): {"200"},
    ("GET", "/v1/categories"): {"200"},
    ("POST", "/v1/businesses"): {"201"},
    ("GET", "/v1/businesses/me"): {"200"},
    ("PATCH", "/v1/businesses/me"): {"200"},
    ("POST", "/v1/leads"): {"201", "200"},
    ("POST", "/v1/businesses/me/leads"): {"201", "200"},
    ("GET", "/v1/offers"): {"200"},
    ("POST", "/v1/offers/{}/claim"): {"201"},
    ("GET", "/v1/exposures"): {"200"},
    ("GET", "/v1/exposures/{}"): {"200"},
    ("POST", "/v1/exposures/{}/exclusive"): {"200"},
    ("POST", "/v1/exposures/{}/status"): {"200"},
    ("POST", "/v1/exposures/{}/return"): {"200"},
    ("GET", "/v1/wallet"): {"200"},
    ("GET", "/v1/wallet/entries"): {"200"},
    ("POST", "/v1/wallet/withdrawals"): {"201"},
    ("GET", "/v1/invoices"): {"200"},
    ("GET", "/v1/invoices/{}"): {"200"},
    ("GET", "/v1/surveys/{}"): {"200"},
    ("POST", "/v1/surveys/{}"): {"200"},
    ("GET", "/v1/notifications"): {"200"},
    ("GET", "/v1/leads/{}/ranking"): {"200"},
    ("GET", "/v1/fraud/alerts"): {"200"},
    ("POST", "/v1/fraud/alerts/{}/decision"): {"200"},
    ("POST", "/v1/businesses/{}/block"): {"200"},
    ("GET", "/v1/unreliable"): {"200"},
    ("POST", "/v1/settlements/{}/confirm"): {"200"},
}
PAGINATED = {"/v1/offers", "/v1/exposures", "/v1/wallet/entries", "/v1/invoices", "/v1/notifications",
             "/v1/fraud/alerts", "/v1/unreliable"}
MOVES_MONEY = {"/v1/offers/{}/claim", "/v1/exposures/{}/exclusive", "/v1/exposures/{}/status",
               "/v1/exposures/{}/return", "/v1/wallet/withdrawals", "/v1/settlements/{}/confirm"}
PUBLIC = {"/health", "/v1/regions", "/v1/categories", "/v1/businesses", "/v1/leads", "/v1/surveys/{}",
          "/v1/unreliable"}


async def test_the_served_openapi_schema_agrees_with_the_contract(client):
    response = await client.get("/docs/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    for elsewhere in ("/openapi.json", "/schema/openapi.json"):  # where clients commonly look: the same schema
        assert (await client.get(elsewhere)).json() == schema, elsewhere
    components = schema["components"]["schemas"]

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = components[node["$ref"].rsplit("/", 1)[1]]
        return node

    served = {(method.upper(), re.sub(r"\{[^}]+\}", "{}", path)): op
              for path, ops in schema["paths"].items() for method, op in ops.items()}
    failures = []
    for (method, path), successes in CALLS.items():
        op = served.get((method, path))
        if op is None:
            failures.append(f"{method} {path}: not in the schema")
            continue
        answers = op["responses"]
        for status in successes:
            content = answers.get(status, {}).get("content", {}).get("application/json", {})
            if not content.get("schema"):
                failures.append(f"{method} {path}: no {status} with a JSON body documented")
        if path in PAGINATED:
            body = resolve(answers["200"]["content"]["application/json"]["schema"])
            if not {"items", "next_cursor"} <= set(body.get("properties", {})):
                failures.append(f"{method} {path}: the list is not documented as {{items, next_cursor}}")
            if not {"limit", "cursor"} <= {p["name"] for p in op.get("parameters", [])}:
                failures.append(f"{method} {path}: limit and cursor are not documented")
            limits = [p["schema"] for p in op.get("parameters", []) if p["name"] == "limit"]
            if limits and (limits[0].get("minimum"), limits[0].get("maximum")) != (1, 200):
                failures.append(f"{method} {path}: limit is not documented as 1 to 200")
        if path in MOVES_MONEY and "Idempotency-Key" not in {p["name"] for p in op.get("parameters", [])}:
            failures.append(f"{method} {path}: Idempotency-Key is not documented")
        if not op.get("description", "").strip():
            failures.append(f"{method} {path}: what the call does is not described")
        if (op.get("security") == [{"bearer": []}]) == (path in PUBLIC):
            failures.append(f"{method} {path}: the bearer token is {'' if path in PUBLIC else 'not '}required")
        expected_errors = {"422"} | ({"401", "403"} if path not in PUBLIC else set())
        expected_errors |= {"404"} if "{}" in path else set()
        expected_errors |= {"413", "415"} if "requestBody" in op else set()  # too large; not sent as JSON
        missing = expected_errors - set(answers)
        if missing:
            failures.append(f"{method} {path}: refusals {sorted(missing)} are not documented")
        for status, answer in answers.items():
            if status >= "400":
                media = answer.get("content", {})
                problem = resolve(media.get(PROBLEM, {}).get("schema", {}))
                if list(media) != [PROBLEM] or not {"type", "title", "status", "detail", "errors"} <= set(
                    problem.get("properties", {})
                ):
                    failures.append(f"{method} {path}: {status} is documented as {list(media)}, not problem+json")
    # Every list is a page ({items, next_cursor}), beside the two the contract shows as bare arrays.
    for (method, path), op in served.items():
        answer = op["responses"].get("200", {}).get("content", {}).get("application/json", {})
        listed = method == "GET" and resolve(answer.get("schema", {})).get("type") == "array"
        if listed and path not in ("/v1/regions", "/v1/categories"):
            failures.append(f"{method} {path}: a list that is not paginated")
    assert not failures, "\n".join(failures)
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["bearer"]["description"],
    }
    # The invoice's PDF form and the entries' CSV one (`?format=csv`); the claim's body may be left out (a shared
    # claim), as the server accepts.
    assert set(served[("GET", "/v1/invoices/{}")]["responses"]["200"]["content"]) == {
        "application/json",
        "application/pdf",
    }
    entries = served[("GET", "/v1/wallet/entries")]["responses"]["200"]["content"]
    assert set(entries) == {"application/json", "text/csv"}
    assert entries["text/csv"]["schema"]["type"] == "string"
    assert served[("POST", "/v1/offers/{}/claim")]["requestBody"]["required"] is False
    # A filter's values are listed (a client learns them from the schema, not from a 422); so are a key's bounds.
    def parameter(call: tuple[str, str], name: str) -> dict[str, Any]:
        return next(p for p in served[call].get("parameters", []) if p["name"] == name)

    filters = {
        (("GET", "/v1/exposures"), "status"): {"new", "contacted", "quoted", "won", "lost", "invoiced", "paid"},
        (("GET", "/v1/fraud/alerts"), "status"): {"open", "confirmed", "dismissed"},
        (("GET", "/v1/settlements"), "status"): {"pending", "confirmed", "failed", "cancelled"},
        (("GET", "/v1/wallet/entries"), "format"): {"json", "csv"},
        (("GET", "/v1/wallet/entries"), "kind"): {"exposure_purchase", "deal_commission", "withdrawal"},
        (("GET", "/v1/payables"), "account"): {"club_payable", "referrer_payable"},
        (("GET", "/v1/notifications"), "kind"): {"survey", "alert", "invoice"},
    }
    for (call, name), some in filters.items():
        listed = parameter(call, name)["schema"].get("enum")
        assert listed and some <= set(listed), (call, name, listed)
    key = parameter(("POST", "/v1/wallet/withdrawals"), "Idempotency-Key")["schema"]
    assert (key.get("minLength"), key.get("maxLength")) == (1, 200), key
    # A field a PATCH may leave out keeps the bounds the server enforces (a lower bound of 0 too).
    patch = components["ProfilePatch"]["properties"]
    assert patch["min_deal_minor"] == {"type": "integer", "minimum": 0, "maximum": 10**15}
    assert patch["daily_cap"]["minimum"] == 1 and patch["categories"]["type"] == "array"
    # Every refusal a rate-limited call may answer, and when to come back from it.
    signup = served[("POST", "/v1/businesses")]["responses"]
    assert {"409", "429"} <= set(signup), "an email already taken; too many sign-ups from one address"
    for call in (("POST", "/v1/businesses"), ("POST", "/v1/leads")):
        retry_after = served[call]["responses"]["429"]["headers"]["Retry-After"]
        assert retry_after["schema"] == {"type": "integer", "minimum": 1}, call
    # The extensions problems carry are documented.
    assert {"allowed_next", "retry_after_seconds", "held"} <= set(components["Problem"]["properties"])
    # Refusals of calls beyond the contract's table: a payout to an owner nobody knows; a sign-up without an
    # invitation where sign-up is by invitation. An invitation's body may be left out (any email), as the server takes.
    assert "404" in served[("POST", "/v1/payables/payouts")]["responses"]
    assert "403" in served[("POST", "/v1/businesses")]["responses"]
    assert served[("POST", "/v1/clubs/{}/invitations")]["requestBody"]["required"] is False
    # Patterns are JSON Schema's (ECMA-262) regular expressions: no Python-only anchor (there, a letter).
    def patterns(node: Any) -> list[str]:
        if isinstance(node, dict):
            own = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
            return own + [p for value in node.values() for p in patterns(value)]
        return [p for value in node for p in patterns(value)] if isinstance(node, list) else []

    found = patterns(schema)
    assert found and not [p for p in found if re.search(r"\\[AZz]", p)], found


# --- the wire style: timestamps and money ---------------------------------------------------------------------

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|\+00:00)$")
TIMESTAMP_KEYS = re.compile(r"(_at|_until|^since|^at)$")


def wire_style_faults(node: Any, where: str = "$") -> list[str]:
    """Timestamps that are not RFC 3339 UTC, and money that is not {amount_minor: int, currency: "ABC"}."""
    faults = []
    if isinstance(node, dict):
        if "amount_minor" in node:
            amount, currency = node.get("amount_minor"), node.get("currency")
            if type(amount) is not int or not (isinstance(currency, str) and re.fullmatch(r"[A-Z]{3}", currency)):
                faults.append(f"{where}: money {node}")
        for key, value in node.items():
            if TIMESTAMP_KEYS.search(key) and value is not None and not (
                isinstance(value, str) and RFC3339_UTC.match(value)
            ):
                faults.append(f"{where}.{key}: timestamp {value!r}")
            faults += wire_style_faults(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            faults += wire_style_faults(item, f"{where}[{i}]")
    elif isinstance(node, float) and not any(part in where for part in ("score", "factors", "category_prior")):
        # Only the ranking's scores, factors and a category's prior (rates, pseudo-exposures) are not money.
        faults.append(f"{where}: a float {node}")
    return faults


async def test_timestamps_are_rfc3339_utc_and_money_is_minor_units_with_a_currency_everywhere(app, client):
    operator = await operator_token(app)
    seller_id, seller = await register(client, "lead_buyer")
    outside = lead_body(category="renovation", region="haifa")  # outside its own profile: its to sell
    sold = await client.post("/v1/businesses/me/leads", headers=auth(seller), json=outside)
    assert sold.status_code == 201, sold.text
    maker_id, maker, deal = await claimed_exposure(app, client, "deal_maker")
    buyer_id, buyer, bought = await claimed_exposure(app, client, "lead_buyer", category="renovation")
    for status, extra in (("won", {"turnover": money(500_000)}), ("paid", {})):
        moved = await client.post(f"/v1/exposures/{deal}/status", headers=auth(maker), json={"status": status, **extra})
        assert moved.status_code == 200, moved.text
    returned = await client.post(f"/v1/exposures/{bought}/return", headers=auth(buyer), json={"reason": "wrong city"})
    assert returned.status_code == 200, returned.text
    await client.post(f"/v1/businesses/{seller_id}/block", headers=auth(operator))
    lead_id = (await client.get(f"/v1/exposures/{deal}", headers=auth(maker))).json()["lead_id"]
    invoice_id = (await client.get("/v1/invoices", headers=auth(maker))).json()["items"][0]["id"]

    faults = []
    checked = 0
    for token, paths in (
        (None, ["/v1/categories", "/v1/unreliable"]),
        (maker, ["/v1/businesses/me", "/v1/exposures", f"/v1/exposures/{deal}", "/v1/wallet", "/v1/wallet/entries",
                 "/v1/invoices", f"/v1/invoices/{invoice_id}", "/v1/settlements"]),
        (buyer, ["/v1/offers", "/v1/exposures", f"/v1/exposures/{bought}", "/v1/wallet", "/v1/wallet/entries",
                 "/v1/invoices"]),
        (operator, [f"/v1/leads/{lead_id}", f"/v1/leads/{lead_id}/ranking", "/v1/notifications", "/v1/fraud/alerts",
                    f"/v1/businesses/{buyer_id}", "/v1/settlements", "/v1/invoices"]),
    ):
        for path in paths:
            response = await client.get(path, headers=auth(token) if token else {})
            assert response.status_code == 200, (path, response.text)
            faults += [f"{path} {fault}" for fault in wire_style_faults(response.json())]
            checked += 1
    faults += [f"return {fault}" for fault in wire_style_faults(returned.json())]
    assert not faults, "\n".join(faults)
    assert checked == 23 and maker_id != buyer_id


# --- start-up -------------------------------------------------------------------------------------------------


async def test_leads_waiting_when_the_service_starts_are_offered_at_once(settings, client):
    # `marketplace serve --demo` stores its leads before the service runs: their first wave is offered at
    # start-up, not after the sweep's minute, so the printed tokens see offers straight away.
    _, token = await register(client, "lead_buyer")
    lead_id = await submit_lead(client)  # this app never runs its jobs: as if it had stopped right here
    service = create_app(settings, migrate_on_start=False, run_jobs_in_background=True)
    await startup(service.state)
    try:
        await service.state.jobs.run_due()  # waits for the background loop if it holds the queue
        transport = httpx.ASGITransport(app=service, client=("127.0.0.1", 50001))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as restarted:
            offers = (await restarted.get("/v1/offers", headers=auth(token))).json()["items"]
    finally:
        await shutdown(service.state)
    assert [o["lead_id"] for o in offers] == [lead_id]


async def test_health_is_a_503_problem_when_the_database_cannot_be_reached() -> None:
    from marketplace.app import create_app
    from marketplace.simulation.asgi_client import AsgiClient
    from tests.conftest import make_settings

    # Port 9 (discard) on the loopback: nothing listens, the connection is refused at once.
    app = create_app(make_settings("postgresql+asyncpg://postgres@127.0.0.1:9/nowhere"), migrate_on_start=False)
    try:
        answer = await AsgiClient(app).request("GET", "/health")
    finally:
        await app.state.engine.dispose()
    assert answer.status_code == 503
    assert answer.header("content-type") == "application/problem+json"
    body = answer.json()
    assert body["status"] == 503 and body["detail"] == "the database cannot be reached" and body["database"]


async def test_head_answers_like_get_without_a_body_and_options_names_the_methods(app, client):
    _, token = await register(client, "lead_buyer")
    for path, headers in (("/health", {}), ("/v1/regions", {}), ("/v1/wallet", auth(token))):
        got = await client.get(path, headers=headers)
        head = await client.head(path, headers=headers)
        assert head.status_code == got.status_code == 200, (path, head.text)
        assert head.content == b"" and head.headers["content-type"] == got.headers["content-type"]
    assert (await client.head("/v1/wallet")).status_code == 401  # HEAD is no way around the token
    options = await client.options("/v1/wallet")
    assert options.status_code == 204, options.text
    assert {"GET", "OPTIONS"} <= {m.strip() for m in options.headers["allow"].split(",")}

    def allowed(response: httpx.Response) -> set[str]:
        return {m.strip() for m in response.headers["allow"].split(",")}

    # Every method of the path, whichever controller declares it (GET and PATCH of /me live apart), HEAD beside GET.
    expected = {
        "/v1/businesses/me": {"GET", "HEAD", "PATCH", "OPTIONS"},
        "/v1/surveys/some-token": {"GET", "HEAD", "POST", "OPTIONS"},
        "/v1/commission-plans": {"GET", "HEAD", "POST", "OPTIONS"},
        "/v1/wallet": {"GET", "HEAD", "OPTIONS"},
    }
    for path, methods in expected.items():
        answer = await client.options(path)
        assert answer.status_code == 204 and allowed(answer) == methods, (path, answer.headers.get("allow"))
    refused = await client.delete("/v1/wallet", headers=auth(token))
    assert refused.status_code == 405 and allowed(refused) == {"GET", "HEAD", "OPTIONS"}


async def test_a_query_parameter_a_route_does_not_take_is_422_naming_it(app, client):
    operator = await operator_token(app)
    _, token = await register(client, "lead_buyer")
    for path, headers, name in (
        ("/v1/settlements?business_id=biz_x", auth(operator), "business_id"),
        ("/v1/invoices?business_id=biz_x&limit=5", auth(token), "business_id"),
        ("/v1/wallet?verbose=1", auth(token), "verbose"),
        ("/v1/categories?lang=de", {}, "lang"),
    ):
        response = await client.get(path, headers=headers)
        assert response.status_code == 422, (path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert [e["field"] for e in response.json()["errors"]] == [name]
    assert (await client.get("/v1/invoices?limit=5", headers=auth(token))).status_code == 200
    assert (await client.get("/v1/settlements?status=pending", headers=auth(operator))).status_code == 200


async def test_the_schema_states_the_values_the_service_refuses_beyond_their_types(settings, client):
    """What the server enforces is in the served schema: a profile's codes are non-empty strings, a customer's
    consent must be true, a return's reason is not empty, and every currency sent is the marketplace's own (from its
    settings)."""
    components = (await client.get("/schema/openapi.json")).json()["components"]["schemas"]
    for name in ("ProfileIn", "ProfilePatch"):
        for field in ("categories", "regions"):
            items = components[name]["properties"][field]["items"]
            assert (items.get("minLength"), items.get("maxLength")) == (1, 60), (name, field, items)
    assert components["LeadCreate"]["properties"]["consent"]["enum"] == [True]
    # A reason that must be given says so (an empty one is a 422), as a status change's does.
    for name in ("ReturnRequest", "StatusChange"):
        reason = components[name]["properties"]["reason"]
        assert (reason.get("minLength"), reason.get("maxLength")) == (1, 2000), (name, reason)
    for name in ("MoneyIn", "BusinessCreate"):
        assert components[name]["properties"]["currency"]["enum"] == [settings.currency], name
