"""The wallet's money paths at their edges, over HTTP: idempotency keys (scoped per business, as long as the contract
allows, retried and raced), invoices and settlements kept to their business, operator confirmations, commissions and
claims offset from the wallet, withdrawals against open debts an operator is settling, and bad input answered with
a 4xx."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from sqlalchemy import select

from marketplace.db.models import Invoice, LedgerTransaction, Settlement
from marketplace.wallet import settlements
from tests.factories import auth, operator_token, register
from tests.integration.test_wallet import (
    assert_sound,
    buy,
    claim,
    fund,
    money,
    quick_offer,
    wallet,
)


async def test_one_idempotency_key_used_by_two_businesses_pays_each_out_once(app, client, db):
    a_id, a = await register(client, "lead_buyer")
    b_id, b = await register(client, "lead_buyer")
    await fund(app, a_id, "lead_buyer", 10_000)
    await fund(app, b_id, "lead_buyer", 10_000)
    ra = await client.post(
        "/v1/wallet/withdrawals", headers={**auth(a), "Idempotency-Key": "k"}, json={"amount": money(1_000)}
    )
    rb = await client.post(
        "/v1/wallet/withdrawals", headers={**auth(b), "Idempotency-Key": "k"}, json={"amount": money(1_000)}
    )
    assert ra.status_code == rb.status_code == 201, (ra.text, rb.text)
    assert ra.json()["id"] != rb.json()["id"]
    assert (await wallet(client, a))["available"] == money(9_000)
    assert (await wallet(client, b))["available"] == money(9_000)


async def test_invoices_and_settlements_of_another_business_are_not_found(app, client, db):
    a_id, a = await register(client, "lead_buyer")
    _, b = await register(client, "lead_buyer")
    await buy(app, client, a_id, a)
    (inv,) = (await client.get("/v1/invoices", headers=auth(a))).json()["items"]
    for accept in ("application/json", "application/pdf"):
        r = await client.get(f"/v1/invoices/{inv['id']}", headers={**auth(b), "Accept": accept})
        assert r.status_code == 404, r.text
    r = await client.get(f"/v1/invoices?business_id={a_id}", headers=auth(b))
    assert r.status_code in (403, 404, 422), r.text
    assert (await client.get("/v1/invoices", headers=auth(b))).json()["items"] == []
    pdf = await client.get(f"/v1/invoices/{inv['id']}", headers={**auth(a), "Accept": "application/pdf"})
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    op = await operator_token(app)
    r = await client.get(f"/v1/invoices/{inv['id']}", headers={**auth(op), "Accept": "application/pdf"})
    assert r.status_code == 200
    assert (await client.get("/v1/invoices/inv_nope", headers=auth(a))).status_code == 404
    # settlements of another
    s = (await client.get("/v1/settlements", headers=auth(b))).json()["items"]
    assert s == []


async def test_the_lists_of_invoices_and_entries_answer_406_to_an_accept_they_cannot_serve(app, client, db):
    """The contract's Accept rule holds for the invoice list as for an invoice: JSON only, so a PDF or CSV asked for
    is a 406 naming what it comes in; the entries come in the form `?format=` names, and an Accept that does not take
    it is a 406 too (pointing at `?format=csv`). What takes JSON, however it says so, gets the list."""
    a_id, a = await register(client, "lead_buyer")
    await buy(app, client, a_id, a)
    for path, fine in (("/v1/invoices", "application/json"), ("/v1/wallet/entries", "application/json")):
        for accept in ("application/pdf", "text/csv", "text/html, application/json;q=0"):
            refused = await client.get(path, headers={**auth(a), "Accept": accept})
            assert refused.status_code == 406, (path, accept, refused.text)
            assert refused.json()["available"] == [fine] and refused.headers["Vary"] == "Accept"
        for accept in (None, "*/*", "application/*", "application/json", "text/csv;q=1, application/json;q=0.1"):
            headers = {**auth(a), **({"Accept": accept} if accept else {})}
            listed = await client.get(path, headers=headers)
            assert listed.status_code == 200 and listed.json()["items"], (path, accept, listed.text)
    assert "format=csv" in (await client.get("/v1/wallet/entries", headers={**auth(a), "Accept": "text/csv"})).text
    for accept in ("text/csv", "text/*", "*/*"):
        exported = await client.get("/v1/wallet/entries?format=csv", headers={**auth(a), "Accept": accept})
        assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv"), accept
    refused = await client.get("/v1/wallet/entries?format=csv", headers={**auth(a), "Accept": "application/json"})
    assert refused.status_code == 406 and refused.json()["available"] == ["text/csv"]


async def test_confirming_a_charge_is_for_operators_and_a_keyed_retry_replays(app, client, db):
    a_id, a = await register(client, "lead_buyer")
    exposure = await buy(app, client, a_id, a)
    (debt,) = (await wallet(client, a))["open_debts"]
    r = await client.post(f"/v1/settlements/{debt['id']}/confirm", headers=auth(a))
    assert r.status_code in (401, 403), r.text
    op = await operator_token(app)
    assert (await client.post("/v1/settlements/stl_nope/confirm", headers=auth(op))).status_code == 404
    keyed = {**auth(op), "Idempotency-Key": "c1"}
    first = await client.post(f"/v1/settlements/{debt['id']}/confirm", headers=keyed)
    again = await client.post(f"/v1/settlements/{debt['id']}/confirm", headers=keyed)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert await db.count(LedgerTransaction, LedgerTransaction.kind == "charge_received") == 1
    state = await wallet(client, a)
    assert state["owed"] == money(0)
    await assert_sound(client, op)
    assert exposure["status"] == "new"


async def test_already_sent_on_a_charge_is_refused_and_changes_nothing(app, client, db):
    """`already_sent` says a payout's transfer left: on a charge (money coming in) it means nothing, so it is a 422
    naming it, not silently ignored, and the charge stays as it was."""
    a_id, a = await register(client, "lead_buyer")
    await buy(app, client, a_id, a)
    (debt,) = (await wallet(client, a))["open_debts"]
    op = await operator_token(app)
    r = await client.post(f"/v1/settlements/{debt['id']}/confirm?already_sent=true", headers=auth(op))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    (error,) = r.json()["errors"]
    assert error["field"] == "already_sent" and "only a payout" in error["message"], r.text
    assert await db.scalar(select(Settlement.status).where(Settlement.id == debt["id"])) == "pending"
    assert await db.count(LedgerTransaction, LedgerTransaction.kind == "charge_received") == 0
    r = await client.post(f"/v1/settlements/{debt['id']}/confirm", headers=auth(op))
    assert r.status_code == 200 and r.json()["status"] == "confirmed", r.text
    r = await client.post(f"/v1/settlements/{debt['id']}/confirm?already_sent=true", headers=auth(op))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "already_sent", r.text
    await assert_sound(client, op)


async def test_a_settlement_key_stands_for_its_options_too(app, client, db):
    """`?already_sent=true` changes what a confirmation does: the same `Idempotency-Key` without it (the call the
    refusal asked for) is another request, a 422 naming the key, not the first answer replayed as its own."""
    a_id, a = await register(client, "lead_buyer")
    await buy(app, client, a_id, a)
    (debt,) = (await wallet(client, a))["open_debts"]
    op = await operator_token(app)
    keyed = {**auth(op), "Idempotency-Key": "decide-1"}
    r = await client.post(f"/v1/settlements/{debt['id']}/confirm?already_sent=true", headers=keyed)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "already_sent", r.text
    again = await client.post(f"/v1/settlements/{debt['id']}/confirm?already_sent=true", headers=keyed)
    assert again.status_code == 422 and again.headers.get("idempotent-replayed") == "true", again.text
    other = await client.post(f"/v1/settlements/{debt['id']}/confirm", headers=keyed)
    assert other.status_code == 422 and other.json()["errors"][0]["field"] == "Idempotency-Key", other.text
    assert await db.scalar(select(Settlement.status).where(Settlement.id == debt["id"])) == "pending"
    r = await client.post(f"/v1/settlements/{debt['id']}/confirm", headers={**auth(op), "Idempotency-Key": "decide-2"})
    assert r.status_code == 200 and r.json()["status"] == "confirmed", r.text
    await assert_sound(client, op)


async def test_a_keyed_claim_retried_charges_once_offset_from_the_wallet(app, client, db):
    b_id, b = await register(client, "lead_buyer")
    await fund(app, b_id, "lead_buyer", 2_000)
    offer = await quick_offer(app, b_id)
    h = {**auth(b), "Idempotency-Key": "claim-1"}
    r1 = await client.post(f"/v1/offers/{offer}/claim", headers=h, json={"exclusive": False})
    r2 = await client.post(f"/v1/offers/{offer}/claim", headers=h, json={"exclusive": False})
    assert r1.status_code == r2.status_code == 201, (r1.text, r2.text)
    assert r1.json() == r2.json()
    r3 = await client.post(f"/v1/offers/{offer}/claim", headers=h, json={"exclusive": True})
    assert r3.status_code == 422
    state = await wallet(client, b)
    assert state["available"] == money(0) and state["owed"] == money(4_000)
    assert await db.count(LedgerTransaction, LedgerTransaction.kind == "exposure_purchase") == 1
    assert await db.count(Invoice) == 1


async def test_a_keyed_paid_report_retried_settles_the_commission_once(app, client, db):
    dm_id, dm = await register(client, "deal_maker")
    await fund(app, dm_id, "deal_maker", 120_000)
    offer = await quick_offer(app, dm_id)
    exp = await claim(client, dm, offer)
    assert exp.status_code == 201, exp.text
    eid = exp.json()["id"]
    h = {**auth(dm), "Idempotency-Key": "paid-1"}
    body = {"status": "paid", "turnover": money(1_000_000)}
    won = await client.post(f"/v1/exposures/{eid}/status", headers=auth(dm), json={"status": "won"})
    assert won.status_code == 200, won.text
    r1 = await client.post(f"/v1/exposures/{eid}/status", headers=h, json=body)
    r2 = await client.post(f"/v1/exposures/{eid}/status", headers=h, json=body)
    assert r1.status_code == r2.status_code == 200, (r1.text, r2.text)
    state = await wallet(client, dm)
    # Plumbing's 15 % of 10,000.00 is 1,500.00: 1,200.00 offset from credit, 300.00 owed.
    assert state["credit"] == money(0) and state["owed"] == money(30_000), state
    assert await db.count(LedgerTransaction, LedgerTransaction.kind == "deal_commission") == 1


async def test_one_key_withdrawn_eight_times_at_once_pays_out_once(app, client, db):
    a_id, a = await register(client, "lead_buyer")
    await fund(app, a_id, "lead_buyer", 10_000)
    h = {**auth(a), "Idempotency-Key": "same"}
    rs = await asyncio.gather(
        *(client.post("/v1/wallet/withdrawals", headers=h, json={"amount": money(3_000)}) for _ in range(8))
    )
    codes = Counter(r.status_code for r in rs)
    assert set(codes) <= {201, 409}, [r.text for r in rs]
    assert len({r.json()["id"] for r in rs if r.status_code == 201}) == 1
    assert (await wallet(client, a))["available"] == money(7_000)
    assert await db.count(Settlement, Settlement.direction == "payout") == 1


async def test_a_withdrawal_with_a_long_idempotency_key_is_paid_out_once(app, client, db):
    """Any key of 1 to 200 characters is accepted: the ledger key and references are made of its digest (the key
    itself in `withdrawal:<key>`, a varchar(80), made PostgreSQL answer a 500; SQLite does not check lengths)."""
    a_id, a = await register(client, "lead_buyer")
    await fund(app, a_id, "lead_buyer", 10_000)
    for n, length in enumerate((70, 200)):
        key = str(n) * length
        r = await client.post(
            "/v1/wallet/withdrawals", headers={**auth(a), "Idempotency-Key": key}, json={"amount": money(1_000)}
        )
        assert r.status_code == 201, (length, r.status_code, r.text)
        again = await client.post(
            "/v1/wallet/withdrawals", headers={**auth(a), "Idempotency-Key": key}, json={"amount": money(1_000)}
        )
        assert again.status_code == 201 and again.json()["id"] == r.json()["id"]
    assert (await wallet(client, a))["available"] == money(8_000)


async def test_wallet_routes_answer_bad_input_with_4xx(app, client, db):
    _, a = await register(client, "lead_buyer")
    op = await operator_token(app)
    h = auth(a)
    cases = [
        ("get", "/v1/wallet/entries?since=garbage", None, h),
        ("get", "/v1/wallet/entries?cursor=99999999999999999999999", None, h),
        ("get", "/v1/wallet/entries?limit=100000", None, h),
        ("get", "/v1/wallet/entries?kind=nope", None, h),
        ("get", "/v1/wallet/entries?format=xml", None, h),
        ("get", "/v1/invoices?cursor=garbage", None, h),
        ("get", "/v1/invoices?cursor=inv_zzzzzzzzzzzzzzzzzzzzzzzzzz", None, h),
        ("get", "/v1/invoices?limit=-1", None, h),
        ("post", "/v1/wallet/withdrawals", {"amount": {"amount_minor": 1.5, "currency": "ILS"}}, h),
        ("post", "/v1/wallet/withdrawals", {"amount": {"amount_minor": "100", "currency": "ILS"}}, h),
        ("post", "/v1/wallet/withdrawals", {"amount": {"amount_minor": -100, "currency": "ILS"}}, h),
        ("post", "/v1/wallet/withdrawals", {"amount": {"amount_minor": 10**16, "currency": "ILS"}}, h),
        ("post", "/v1/wallet/withdrawals", {"amount": {"amount_minor": 100, "currency": "ils"}}, h),
        ("post", "/v1/wallet/withdrawals", {}, h),
        ("post", "/v1/wallet/withdrawals", [], h),
        ("post", "/v1/wallet/withdrawals", {"amount": money(100), "extra": 1}, h),
        ("post", "/v1/wallet/withdrawals", {"amount": money(100)}, {**h, "Idempotency-Key": "x" * 201}),
        ("post", "/v1/wallet/withdrawals", {"amount": money(100)}, {**h, "Idempotency-Key": ""}),
        ("post", "/v1/settlements/%00/confirm", None, auth(op)),
        ("post", "/v1/settlements/" + "s" * 300 + "/confirm", None, auth(op)),
        ("get", "/v1/invoices/" + "i" * 300, None, h),
        ("get", "/v1/settlements?cursor=stl_zzzzzzzzzzzzzzzzzzzzzzzzz", None, h),
    ]
    bad = []
    for method, path, body, headers in cases:
        if method == "get":
            r = await client.get(path, headers=headers)
        else:
            r = await client.post(path, headers=headers, json=body)
        if not (400 <= r.status_code < 500 or (method == "get" and r.status_code == 200 and "cursor=inv_z" in path)):
            bad.append((path, body, r.status_code, r.text[:200]))
    assert bad == [], "\n".join(map(str, bad))


@pytest.mark.postgres_only
async def test_a_withdrawal_while_an_operator_fails_a_debt_still_pays_the_debt_first(app, client, db):
    a_id, a = await register(client, "lead_buyer")
    await buy(app, client, a_id, a)  # owes 6,000 (pending charge)
    await fund(app, a_id, "lead_buyer", 10_000)
    (debt,) = (await wallet(client, a))["open_debts"]
    async with app.state.uow() as uow:  # the operator's "fail" in flight, holding the charge's row
        await settlements.fail_settlement(uow.session, app.state.settings, debt["id"], "operator:test")
        task = asyncio.create_task(
            client.post("/v1/wallet/withdrawals", headers=auth(a), json={"amount": money(10_000)})
        )
        await asyncio.sleep(1.0)
    r = await task
    state = await wallet(client, a)
    # What it owes (6,000, its charge now failed) comes before any withdrawal: at most 4,000 may leave, so 10,000 is
    # refused and the wallet still covers the debt. (The collection passes over the charge the operator holds; the
    # withdrawal used to pay out all 10,000 then, leaving 6,000 owed over an empty wallet.)
    assert r.status_code == 409, (r.status_code, r.text, state)
    assert state["available"] == money(10_000) and state["owed"] == money(6_000)


async def test_statement_dates_beyond_the_calendar_in_utc_are_a_422(app, client, db):
    """A valid RFC 3339 time whose UTC instant falls outside year 1..9999 is bad input, not a 500."""
    _, token = await register(client, "lead_buyer")
    for query in ("since=0001-01-01T00:00:00%2B01:00", "until=9999-12-31T23:59:59-05:00"):
        response = await client.get(f"/v1/wallet/entries?{query}", headers=auth(token))
        assert response.status_code == 422, (query, response.status_code, response.text)


@pytest.mark.parametrize("hold", ["blocked", "suspended"])
async def test_a_payout_requested_before_a_block_or_suspension_is_not_confirmed_after_it(app, client, db, hold):
    """The money of a business taken out of the market does not leave: the operator fails the payout (back to the
    wallet) or, after a suspension, confirms it once the business is let back in."""
    a_id, a = await register(client, "lead_buyer")
    await fund(app, a_id, "lead_buyer", 10_000)
    r = await client.post(
        "/v1/wallet/withdrawals", headers={**auth(a), "Idempotency-Key": "w1"}, json={"amount": money(4_000)}
    )
    assert r.status_code == 201, r.text
    payout = r.json()
    op = await operator_token(app)
    if hold == "blocked":
        r = await client.post(f"/v1/businesses/{a_id}/block", headers=auth(op), json={"reason": "fraud"})
    else:
        r = await client.post(
            f"/v1/businesses/{a_id}/status", headers=auth(op), json={"status": "suspended", "reason": "checks"}
        )
    assert r.status_code == 200, r.text
    r = await client.post(f"/v1/settlements/{payout['id']}/confirm", headers=auth(op))
    assert r.status_code == 409, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert hold in r.json()["detail"] and r.json()["business_status"] == hold
    assert await db.scalar(select(Settlement.status).where(Settlement.id == payout["id"])) == "pending"
    assert await db.count(LedgerTransaction, LedgerTransaction.idempotency_key == f"paid-out:{payout['id']}") == 0
    if hold == "suspended":
        r = await client.post(
            f"/v1/businesses/{a_id}/status", headers=auth(op), json={"status": "active", "reason": "cleared"}
        )
        assert r.status_code == 200, r.text
        r = await client.post(f"/v1/settlements/{payout['id']}/confirm", headers=auth(op))
        assert r.status_code == 200 and r.json()["status"] == "confirmed", r.text
    else:
        r = await client.post(f"/v1/settlements/{payout['id']}/fail", headers=auth(op))
        assert r.status_code == 200 and r.json()["status"] == "failed", r.text
        assert (await wallet(client, a))["available"] == money(10_000)
    await assert_sound(client, op)


async def test_a_payout_that_left_before_the_block_is_recorded_when_the_operator_says_so(app, client, db):
    """Confirming a payout records that the money left: one sent before the block is confirmed with
    `?already_sent=true` (the refusal says so), never made to look as if it came back to the wallet."""
    a_id, a = await register(client, "lead_buyer")
    await fund(app, a_id, "lead_buyer", 10_000)
    r = await client.post(
        "/v1/wallet/withdrawals", headers={**auth(a), "Idempotency-Key": "w1"}, json={"amount": money(4_000)}
    )
    payout = r.json()
    op = await operator_token(app)
    assert (await client.post(f"/v1/businesses/{a_id}/block", headers=auth(op))).status_code == 200
    refused = await client.post(f"/v1/settlements/{payout['id']}/confirm", headers=auth(op))
    assert refused.status_code == 409 and "already_sent=true" in refused.json()["detail"], refused.text
    wrong = await client.post(f"/v1/settlements/{payout['id']}/confirm?already_sent=yes", headers=auth(op))
    assert wrong.status_code == 422 and wrong.json()["errors"][0]["field"] == "already_sent", wrong.text
    r = await client.post(f"/v1/settlements/{payout['id']}/confirm?already_sent=true", headers=auth(op))
    assert r.status_code == 200 and r.json()["status"] == "confirmed", r.text
    assert await db.count(LedgerTransaction, LedgerTransaction.idempotency_key == f"paid-out:{payout['id']}") == 1
    assert (await client.get(f"/v1/businesses/{a_id}/wallet", headers=auth(op))).json()["available"] == money(6_000)
    await assert_sound(client, op)


async def test_an_operator_sees_a_business_wallet_as_the_business_does_and_a_suspended_one_withdraws_nothing(
    app, client, db
):
    a_id, a = await register(client, "lead_buyer")
    await fund(app, a_id, "lead_buyer", 10_000)
    await buy(app, client, a_id, a)
    op = await operator_token(app)
    own = await wallet(client, a)
    r = await client.get(f"/v1/businesses/{a_id}/wallet", headers=auth(op))
    assert r.status_code == 200, r.text
    assert r.json() == own and own["withdrawable"] is True
    assert (await client.get("/v1/businesses/biz_nope/wallet", headers=auth(op))).status_code == 404
    assert (await client.get(f"/v1/businesses/{a_id}/wallet", headers=auth(a))).status_code == 403
    r = await client.post(
        f"/v1/businesses/{a_id}/status", headers=auth(op), json={"status": "suspended", "reason": "checks"}
    )
    assert r.status_code == 200, r.text
    shown = await wallet(client, a)
    assert shown["withdrawable"] is False and shown["withdrawable_amount"] == money(0)
    assert shown["available"] == own["available"]  # the money stays; it is not paid out meanwhile
