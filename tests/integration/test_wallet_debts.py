"""Open debts in the wallet, on both databases: a returned sold lead takes its seller's earnings back (a debt when
they were spent), open debts are paid from wallet money as it arrives and by the worker, failed charges are tried
again on a schedule and never twice at once, and a withdrawal pays what the business owes first."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select

from marketplace.clock import clock
from marketplace.db.models import LedgerAccount, LedgerTransaction, Settlement
from marketplace.ids import new_id
from marketplace.wallet import debts, provider
from marketplace.wallet.queries import RETURN_SETTLING
from tests.factories import auth, operator_token, register
from tests.integration.test_wallet import (
    PRICE,
    accounts_of,
    assert_sound,
    claim,
    fund,
    money,
    quick_offer,
    wallet,
)
from tests.integration.test_wallet_races import leads_offered_to
from workers import actors

# What the seller of a plumbing lead earns when it is bought: 70 % of the net 50.85 (see test_wallet.py).
SHARE = 3560


async def entries(client: httpx.AsyncClient, token: str, **params: Any) -> list[tuple[str, str, int]]:
    response = await client.get("/v1/wallet/entries", headers=auth(token), params=params)
    assert response.status_code == 200, response.text
    return [(e["kind"], e["account"], e["amount"]["amount_minor"]) for e in response.json()["items"]]


async def return_lead(client: httpx.AsyncClient, token: str, exposure_id: str) -> dict[str, Any]:
    response = await client.post(
        f"/v1/exposures/{exposure_id}/return", headers=auth(token), json={"reason": "not what the customer needs"}
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def buy_from(app: Any, client: httpx.AsyncClient, buyer: tuple[str, str], seller_id: str | None) -> str:
    """The buyer claims a new lead (sold by seller_id, if given); returns the exposure id."""
    response = await claim(client, buyer[1], await quick_offer(app, buyer[0], seller_id=seller_id))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def settlement(db: Any, settlement_id: str) -> Settlement:
    (row,) = await db.scalars(select(Settlement).where(Settlement.id == settlement_id))
    return row


async def no_negative_balance(db: Any) -> None:
    negative = await db.count(LedgerAccount, LedgerAccount.non_negative.is_(True), LedgerAccount.balance_minor < 0)
    assert negative == 0


def collect(app):
    return debts.collect_open_debts(app.state.uow, app.state.settings)


def owed_matches_open_debts(state: dict[str, Any]) -> None:
    assert sum(d["amount"]["amount_minor"] for d in state["open_debts"]) == state["owed"]["amount_minor"], state
    assert all(d["direction"] == "charge" and d["status"] in ("pending", "failed") for d in state["open_debts"])


# --- gap 1: a returned sold lead -----------------------------------------------------------------------------


async def test_a_returned_sold_lead_takes_back_what_its_seller_earned(app, client, db):
    operator = await operator_token(app)
    buyer = await register(client, "lead_buyer")
    for seller_mode, kept_in in (("lead_buyer", "available"), ("deal_maker", "credit")):
        seller_id, seller = await register(client, seller_mode)
        exposure_id = await buy_from(app, client, buyer, seller_id)
        assert (await wallet(client, seller))[kept_in] == money(SHARE)

        assert (await return_lead(client, buyer[1], exposure_id))["refund"] == money(PRICE)
        state = await wallet(client, seller)
        assert state[kept_in] == money(0) and state["owed"] == money(0) and state["open_debts"] == []
        assert await entries(client, seller) == [
            ("earnings_reversal", kept_in, -SHARE),
            ("lead_earnings", kept_in, SHARE),
        ]
        response = await client.get("/v1/wallet/entries", headers=auth(seller), params={"kind": "earnings_reversal"})
        (reversal,) = response.json()["items"]
        assert reversal["reference"] == exposure_id and "returned" in reversal["memo"]

    # A lead can be returned once: the second try is refused and takes nothing more back.
    refused = await client.post(
        f"/v1/exposures/{exposure_id}/return", headers=auth(buyer[1]), json={"reason": "again"}
    )
    assert refused.status_code == 409
    assert await db.count(LedgerTransaction, LedgerTransaction.kind == "earnings_reversal") == 2
    balances = accounts_of(await assert_sound(client, operator))
    # The marketplace neither earned from the returned leads nor paid for them.
    assert balances.get("marketplace::acquisition_costs", 0) == 0
    assert balances.get("marketplace::revenue", 0) == 0


async def test_an_upgraded_sold_lead_returned_takes_back_both_earnings(app, client, db):
    operator = await operator_token(app)
    buyer = await register(client, "lead_buyer")
    seller_id, seller = await register(client, "deal_maker")
    offer_id = await quick_offer(app, buyer[0], seller_id=seller_id, category="accounting")
    response = await claim(client, buyer[1], offer_id)
    assert response.status_code == 201, response.text
    exposure_id = response.json()["id"]
    after_purchase = (await wallet(client, seller))["credit"]["amount_minor"]
    upgraded = await client.post(f"/v1/exposures/{exposure_id}/exclusive", headers=auth(buyer[1]))
    assert upgraded.status_code == 200, upgraded.text
    earned = (await wallet(client, seller))["credit"]["amount_minor"]
    assert earned > after_purchase > 0

    await return_lead(client, buyer[1], exposure_id)
    assert (await wallet(client, seller))["credit"] == money(0)
    assert (await entries(client, seller))[0] == ("earnings_reversal", "credit", -earned)
    assert accounts_of(await assert_sound(client, operator)).get("marketplace::acquisition_costs", 0) == 0


async def test_spent_earnings_of_a_returned_lead_are_an_open_debt_paid_from_the_next_earnings(app, client, db):
    operator = await operator_token(app)
    buyer = await register(client, "lead_buyer")
    seller_id, seller = await register(client, "lead_buyer")
    exposure_id = await buy_from(app, client, buyer, seller_id)
    # The buyer pays and its return window closes (the earnings are paid out only then), and the seller takes its
    # earnings out. Then the marketplace lengthens the return window, and the buyer returns the lead after all.
    (charge,) = (await wallet(client, buyer[1]))["pending_settlements"]
    assert (await client.post(f"/v1/settlements/{charge['id']}/confirm", headers=auth(operator))).status_code == 200
    settings = app.state.settings
    clock.advance(timedelta(days=settings.windows.return_days, minutes=1) + RETURN_SETTLING)
    payout = await client.post("/v1/wallet/withdrawals", headers=auth(seller), json={"amount": money(SHARE)})
    assert payout.status_code == 201, payout.text
    confirmed = await client.post(f"/v1/settlements/{payout.json()['id']}/confirm", headers=auth(operator))
    assert confirmed.status_code == 200

    # The earnings were paid out: taking them back leaves a debt, visible, never a negative balance.
    longer = settings.windows.return_days + 30
    app.state.settings = replace(settings, windows=replace(settings.windows, return_days=longer))
    await return_lead(client, buyer[1], exposure_id)
    state = await wallet(client, seller)
    assert state["available"] == money(0) and state["credit"] == money(0) and state["owed"] == money(SHARE)
    (debt,) = state["open_debts"]
    assert debt["direction"] == "charge" and debt["status"] == "pending" and debt["amount"] == money(SHARE)
    assert debt["reference"] == f"earnings-reversal:{exposure_id}" and debt["invoice_id"] is None
    assert state["withdrawable_amount"] == money(0)
    await no_negative_balance(db)
    assert await entries(client, seller) == [
        ("earnings_reversal", "receivable", SHARE),
        ("withdrawal", "available", -SHARE),
        ("lead_earnings", "available", SHARE),
    ]
    await assert_sound(client, operator)

    # The seller's next earnings pay it once they can no longer be taken back; the charge is withdrawn and points at
    # what paid it.
    await buy_from(app, client, buyer, seller_id)
    assert (await wallet(client, seller))["owed"] == money(SHARE)
    clock.advance(timedelta(days=longer, minutes=1) + RETURN_SETTLING)
    await collect(app)
    state = await wallet(client, seller)
    assert state["owed"] == money(0) and state["available"] == money(0) and state["open_debts"] == []
    paid_debt = await settlement(db, debt["id"])
    assert paid_debt.status == "cancelled" and paid_debt.confirmed_transaction_id
    assert await db.scalar(
        select(LedgerTransaction.kind).where(LedgerTransaction.id == paid_debt.confirmed_transaction_id)
    ) == "debt_offset"
    latest = await entries(client, seller)
    assert sorted(latest[:2]) == [("debt_offset", "available", -SHARE), ("debt_offset", "receivable", -SHARE)]
    assert latest[2] == ("lead_earnings", "available", SHARE)
    assert (await client.post(f"/v1/settlements/{debt['id']}/confirm", headers=auth(operator))).status_code == 409
    await assert_sound(client, operator)


# --- gap 2: collecting open debts ----------------------------------------------------------------------------


async def test_a_failed_charge_is_paid_in_part_by_later_earnings_and_retried_on_schedule(app, client, db):
    operator = await operator_token(app)
    buyer_id, buyer = await register(client, "lead_buyer")
    other = await register(client, "lead_buyer")
    exposure_id = await buy_from(app, client, (buyer_id, buyer), None)
    (first,) = (await wallet(client, buyer))["open_debts"]
    # The buyer has sold a lead too, a return window ago (so that it can no longer be returned).
    await buy_from(app, client, other, buyer_id)
    clock.advance(timedelta(days=app.state.settings.windows.return_days, minutes=1) + RETURN_SETTLING)
    failed = await client.post(f"/v1/settlements/{first['id']}/fail", headers=auth(operator))
    assert failed.status_code == 200
    state = await wallet(client, buyer)
    assert state["owed"] == money(PRICE) and [d["status"] for d in state["open_debts"]] == ["failed"]

    # Once that lead's buyer has paid, the earnings pay part of the debt; the rest stays failed, on the same invoice.
    assert (await wallet(client, buyer))["held"] == money(SHARE)  # held until the other pays
    (paid_for,) = (await wallet(client, other[1]))["pending_settlements"]
    assert (await client.post(f"/v1/settlements/{paid_for['id']}/confirm", headers=auth(operator))).is_success
    state = await wallet(client, buyer)
    assert state["owed"] == money(PRICE - SHARE) and state["available"] == money(0)
    owed_matches_open_debts(state)
    (rest,) = state["open_debts"]
    assert rest["status"] == "failed" and rest["amount"] == money(PRICE - SHARE)
    assert rest["invoice_id"] == first["invoice_id"] and rest["reference"] == exposure_id
    assert (await settlement(db, first["id"])).status == "cancelled"

    # The worker leaves a charge that just failed alone; a day later it charges the rest again, once.
    collected = await collect(app)
    assert collected.retried == 0
    clock.advance(timedelta(days=1, minutes=1))
    assert (await collect(app)).retried == 1
    assert (await collect(app)).retried == 0
    state = await wallet(client, buyer)
    (retry,) = state["open_debts"]
    assert retry["status"] == "pending" and retry["amount"] == money(PRICE - SHARE) and retry["id"] != rest["id"]
    assert retry["invoice_id"] == first["invoice_id"] and retry["reference"] == exposure_id
    assert (await settlement(db, rest["id"])).status == "cancelled"
    assert await db.count(Settlement, Settlement.business_id == buyer_id, Settlement.direction == "charge") == 3

    # It fails again: the next try waits twice as long.
    assert (await client.post(f"/v1/settlements/{retry['id']}/fail", headers=auth(operator))).status_code == 200
    clock.advance(timedelta(days=1, minutes=1))
    assert (await collect(app)).retried == 0
    clock.advance(timedelta(days=1))
    assert (await collect(app)).retried == 1
    (again,) = (await wallet(client, buyer))["open_debts"]
    assert (await client.post(f"/v1/settlements/{again['id']}/confirm", headers=auth(operator))).status_code == 200
    state = await wallet(client, buyer)
    assert state["owed"] == money(0) and state["open_debts"] == []
    await assert_sound(client, operator)


async def test_failed_charges_are_retried_page_by_page_and_at_most_five_times(app, client, db):
    operator = await operator_token(app)
    buyer_id, buyer = await register(client, "lead_buyer")
    for _ in range(3):
        await buy_from(app, client, (buyer_id, buyer), None)
    for debt in (await wallet(client, buyer))["open_debts"]:
        assert (await client.post(f"/v1/settlements/{debt['id']}/fail", headers=auth(operator))).status_code == 200
    clock.advance(timedelta(days=1, minutes=1))
    pages, retried, after = 0, 0, None
    while True:
        async with app.state.uow() as uow:
            charged, after = await debts.retry_failed_charges(uow.session, clock.now(), limit=1, after=after)
        pages, retried = pages + 1, retried + len(charged)
        if after is None:
            break
    assert retried == 3 and pages >= 3
    state = await wallet(client, buyer)
    assert [d["status"] for d in state["open_debts"]] == ["pending"] * 3
    owed_matches_open_debts(state)

    # Each debt fails four more times (five in all), each retry waiting twice as long; then it is left as it is.
    for failures in (2, 3, 4, 5):
        for debt in (await wallet(client, buyer))["open_debts"]:
            assert (await client.post(f"/v1/settlements/{debt['id']}/fail", headers=auth(operator))).status_code == 200
        wait = timedelta(days=2 ** (failures - 1))
        clock.advance(wait - timedelta(minutes=1))
        assert (await collect(app)).retried == 0
        clock.advance(timedelta(minutes=2))
        assert (await collect(app)).retried == (3 if failures < 5 else 0)
    state = await wallet(client, buyer)
    assert [d["status"] for d in state["open_debts"]] == ["failed"] * 3 and state["owed"] == money(3 * PRICE)
    clock.advance(timedelta(days=365))
    assert (await collect(app)).retried == 0
    assert await db.count(Settlement, Settlement.business_id == buyer_id) == 3 * 5
    await assert_sound(client, operator)


async def a_failed_charge(app: Any, client: Any, operator: str) -> tuple[str, str, dict[str, Any]]:
    """A lead buyer owing a purchase whose charge failed: its id, its token and the failed charge."""
    buyer_id, buyer = await register(client, "lead_buyer")
    await buy_from(app, client, (buyer_id, buyer), None)
    (charge,) = (await wallet(client, buyer))["open_debts"]
    assert (await client.post(f"/v1/settlements/{charge['id']}/fail", headers=auth(operator))).status_code == 200
    return buyer_id, buyer, charge


async def a_retried_charge(app: Any, client: Any, operator: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A failed charge the collector has tried again: the buyer's token, the failed charge and the pending retry."""
    _, buyer, first = await a_failed_charge(app, client, operator)
    clock.advance(timedelta(days=1, minutes=1))
    assert (await collect(app)).retried == 1
    (retry,) = (await wallet(client, buyer))["open_debts"]
    return buyer, first, retry

async def test_concurrent_debt_collection_charges_a_failed_debt_once(app, client, db):
    operator = await operator_token(app)
    _, buyer, _first = await a_failed_charge(app, client, operator)
    clock.advance(timedelta(days=2))
    results = await asyncio.gather(*(collect(app) for _ in range(4)))
    assert sum(r.retried for r in results) == 1
    state = await wallet(client, buyer)
    assert [d["status"] for d in state["open_debts"]] == ["pending"]
    owed_matches_open_debts(state)


async def test_a_failed_charge_keeps_its_failure_on_record_when_it_is_cancelled(app, client, db):
    """Cancelled because its lead was returned, or superseded by a retry: the charge reads cancelled (no longer
    listed as failed) and still says when it failed. A charge cancelled while pending never failed."""
    operator = await operator_token(app)
    buyer_id, buyer = await register(client, "lead_buyer")
    returned, retried, never_failed = [await buy_from(app, client, (buyer_id, buyer), None) for _ in range(3)]
    charge_of = {d["reference"]: d["id"] for d in (await wallet(client, buyer))["open_debts"]}
    failures = {}
    for exposure_id in (returned, retried):
        answer = await client.post(f"/v1/settlements/{charge_of[exposure_id]}/fail", headers=auth(operator))
        assert answer.status_code == 200 and answer.json()["status"] == "failed" and answer.json()["failed_at"]
        failures[charge_of[exposure_id]] = answer.json()["failed_at"]

    await return_lead(client, buyer, returned)
    await return_lead(client, buyer, never_failed)
    clock.advance(timedelta(days=1, minutes=1))
    assert (await collect(app)).retried == 1

    async def listed(**params: str) -> dict[str, dict[str, Any]]:
        response = await client.get("/v1/settlements", headers=auth(buyer), params=params)
        assert response.status_code == 200, response.text
        return {s["id"]: s for s in response.json()["items"]}

    everything = await listed()
    for settlement_id, failed_at in failures.items():
        assert everything[settlement_id]["status"] == "cancelled"
        assert everything[settlement_id]["failed_at"] == failed_at  # the failure stays on record
        assert everything[settlement_id]["confirmed_at"] is None
    assert everything[charge_of[never_failed]]["status"] == "cancelled"
    assert everything[charge_of[never_failed]]["failed_at"] is None
    (retry,) = (s for s in everything.values() if s["status"] == "pending")
    assert retry["reference"] == retried and retry["failed_at"] is None
    # The status says what the charge is now: cancelled, not failed.
    assert await listed(status="failed") == {}
    assert set(await listed(status="cancelled")) == {*failures, charge_of[never_failed]}
    operator_view = await client.get("/v1/settlements", headers=auth(operator), params={"status": "cancelled"})
    assert {s["id"]: s["failed_at"] for s in operator_view.json()["items"] if s["id"] in failures} == failures
    await assert_sound(client, operator)


async def test_wallet_money_that_arrives_outside_a_sale_is_collected_by_the_worker(app, client, db):
    operator = await operator_token(app)
    buyer_id, buyer = await register(client, "lead_buyer")
    await buy_from(app, client, (buyer_id, buyer), None)
    await buy_from(app, client, (buyer_id, buyer), None)
    debts = (await wallet(client, buyer))["open_debts"]
    assert [d["status"] for d in debts] == ["pending", "pending"]
    await fund(app, buyer_id, "lead_buyer", PRICE + 1_000)  # earnings posted straight to the ledger
    state = await wallet(client, buyer)
    assert state["owed"] == money(2 * PRICE) and state["withdrawable_amount"] == money(0)

    # The actor's round (what the periodic schedule runs): the oldest debt first, the rest of the money on the next.
    assert "collect_debts" in actors.PERIODIC
    app.state.jobs.enqueue("collect_debts")
    assert await app.state.jobs.run_due() >= 1
    state = await wallet(client, buyer)
    assert state["available"] == money(0) and state["owed"] == money(PRICE - 1_000)
    owed_matches_open_debts(state)
    oldest = min(debts, key=lambda d: d["id"])
    assert (await settlement(db, oldest["id"])).status == "cancelled"
    (rest,) = state["open_debts"]
    assert rest["status"] == "pending" and rest["amount"] == money(PRICE - 1_000)
    await assert_sound(client, operator)


async def test_earnings_arriving_while_an_operator_confirms_the_debt_pay_it_once(app, client, db):
    """Sales of the seller's leads (each paying its debts from the earnings), the operator confirming its charge and
    the collector's round, all at once: no deadlock, and the debt is paid once, by the wallet or by the transfer."""
    operator = await operator_token(app)
    seller_id, seller = await register(client, "lead_buyer")
    await buy_from(app, client, (seller_id, seller), None)
    (debt,) = (await wallet(client, seller))["open_debts"]
    buyers = [await register(client, "lead_buyer") for _ in range(4)]
    offers = await leads_offered_to(app, [b for b, _ in buyers], sellers=[seller_id] * len(buyers))
    claims = [claim(client, token, offer_id) for (_, token), offer_id in zip(buyers, offers, strict=True)]
    confirm = client.post(f"/v1/settlements/{debt['id']}/confirm", headers=auth(operator))
    *claimed, confirmed, _ = await asyncio.gather(*claims, confirm, collect(app))
    assert [r.status_code for r in claimed] == [201] * len(buyers), [r.text for r in claimed]
    assert confirmed.status_code in (200, 409), confirmed.text

    state = await wallet(client, seller)
    owed_matches_open_debts(state)
    offsets = await db.count(LedgerTransaction, LedgerTransaction.kind == "debt_offset")
    received = await db.count(LedgerTransaction, LedgerTransaction.kind == "charge_received")
    earned = len(buyers) * SHARE
    if confirmed.status_code == 200:  # the transfer paid it: the earnings stay in the wallet
        assert (received, offsets) == (1, 0)
        assert state["available"] == money(earned) and state["owed"] == money(0)
    else:  # the earnings paid it first (the first sale part of it); the charge can no longer be confirmed
        assert received == 0 and offsets in (1, 2)
        assert state["available"] == money(earned - PRICE) and state["owed"] == money(0)
        assert (await settlement(db, debt["id"])).status == "cancelled"
    await no_negative_balance(db)
    await assert_sound(client, operator)


# --- a failed charge paid by bank transfer after all ---------------------------------------------------------


async def confirm(client: httpx.AsyncClient, operator: str, settlement_id: str, **headers: str) -> httpx.Response:
    return await client.post(f"/v1/settlements/{settlement_id}/confirm", headers={**auth(operator), **headers})


async def fail_until_given_up(app: Any, client: httpx.AsyncClient, operator: str, buyer: str) -> list[str]:
    """The buyer's one debt fails five times, each retry on schedule; then the collector leaves it to an operator.
    Returns the ids of its charges, oldest first (the last one failed and open)."""
    charges = []
    for failures in range(1, debts.MAX_CHARGE_ATTEMPTS + 1):
        (debt,) = (await wallet(client, buyer))["open_debts"]
        assert debt["status"] == "pending"
        charges.append(debt["id"])
        assert (await client.post(f"/v1/settlements/{debt['id']}/fail", headers=auth(operator))).status_code == 200
        clock.advance(timedelta(days=2 ** (failures - 1), minutes=1))
        assert (await collect(app)).retried == (1 if failures < debts.MAX_CHARGE_ATTEMPTS else 0)
    return charges


async def received(db: Any, settlement_id: str) -> int:
    """How many times the money of this charge came in (its `received:` ledger transaction)."""
    return int(await db.count(LedgerTransaction, LedgerTransaction.idempotency_key == f"received:{settlement_id}"))


async def test_a_charge_the_collector_gave_up_on_is_confirmed_when_the_transfer_arrives(app, client, db):
    operator = await operator_token(app)
    buyer_id, buyer = await register(client, "lead_buyer")
    await buy_from(app, client, (buyer_id, buyer), None)
    *superseded, last = await fail_until_given_up(app, client, operator, buyer)
    state = await wallet(client, buyer)
    assert state["owed"] == money(PRICE) and [d["id"] for d in state["open_debts"]] == [last]
    clock.advance(timedelta(days=30))
    assert (await collect(app)).retried == 0  # left to an operator

    # The business pays by bank transfer: the operator records it on the failed charge, as on a pending one.
    keyed = {"Idempotency-Key": "bank-statement-2026-12-31"}
    confirmed = await confirm(client, operator, last, **keyed)
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "confirmed" and confirmed.json()["confirmed_at"]
    state = await wallet(client, buyer)
    assert state["owed"] == money(0) and state["open_debts"] == [] and state["available"] == money(0)
    assert await received(db, last) == 1
    assert await db.count(LedgerTransaction, LedgerTransaction.kind == "charge_received") == 1
    assert ("charge_received", "receivable", -PRICE) in await entries(client, buyer)

    # Said again, with its key or without: the first answer, nothing moves; and it can no longer fail.
    again = await confirm(client, operator, last, **keyed)
    assert again.status_code == 200 and again.json() == confirmed.json()
    assert (await confirm(client, operator, last)).json()["status"] == "confirmed"
    assert (await client.post(f"/v1/settlements/{last}/fail", headers=auth(operator))).status_code == 409
    # An earlier attempt (cancelled, superseded) is no second way to collect it: refused, naming the payment.
    earlier = await confirm(client, operator, superseded[-1])
    assert earlier.status_code == 409 and last in earlier.json()["detail"]
    assert earlier.json()["charge_of_debt"] == {"settlement_id": last, "status": "confirmed"}
    assert await received(db, last) == 1 and await received(db, superseded[-1]) == 0
    clock.advance(timedelta(days=365))
    assert (await collect(app)).retried == 0
    assert await db.count(Settlement, Settlement.business_id == buyer_id) == debts.MAX_CHARGE_ATTEMPTS
    assert (await wallet(client, buyer))["owed"] == money(0)
    await assert_sound(client, operator)


async def test_money_arriving_between_two_attempts_is_confirmed_on_the_failed_one(app, client, db):
    operator = await operator_token(app)
    buyer_id, buyer, debt = await a_failed_charge(app, client, operator)
    clock.advance(timedelta(hours=3))  # the next attempt is a day after the failure
    assert (await confirm(client, operator, debt["id"])).status_code == 200
    assert (await wallet(client, buyer))["owed"] == money(0)
    clock.advance(timedelta(days=2))
    assert (await collect(app)).retried == 0  # paid: nothing to charge again
    assert await db.count(Settlement, Settlement.business_id == buyer_id) == 1
    assert await received(db, debt["id"]) == 1
    await assert_sound(client, operator)


async def test_a_superseded_failed_charge_names_the_pending_retry_to_confirm_instead(app, client, db):
    operator = await operator_token(app)
    buyer, first, retry = await a_retried_charge(app, client, operator)
    assert retry["status"] == "pending" and retry["id"] != first["id"]

    # The transfer the operator sees answers the first request: confirming that charge would collect the debt a
    # second time once the pending retry is paid too. Refused, naming the retry; nothing moves.
    refused = await confirm(client, operator, first["id"])
    assert refused.status_code == 409, refused.text
    assert refused.json()["charge_of_debt"] == {"settlement_id": retry["id"], "status": "pending"}
    assert retry["id"] in refused.json()["detail"] and "confirm that one" in refused.json()["detail"]
    state = await wallet(client, buyer)
    assert state["owed"] == money(PRICE) and [d["id"] for d in state["open_debts"]] == [retry["id"]]
    assert await db.count(LedgerTransaction, LedgerTransaction.kind == "charge_received") == 0

    assert (await confirm(client, operator, retry["id"])).status_code == 200
    assert (await wallet(client, buyer))["owed"] == money(0)
    assert (await confirm(client, operator, first["id"])).status_code == 409
    assert await db.count(LedgerTransaction, LedgerTransaction.kind == "charge_received") == 1
    await assert_sound(client, operator)


async def test_a_cancelled_charge_or_a_failed_payout_stays_unconfirmable(app, client, db):
    operator = await operator_token(app)
    buyer_id, buyer = await register(client, "lead_buyer")
    exposure_id = await buy_from(app, client, (buyer_id, buyer), None)
    (debt,) = (await wallet(client, buyer))["open_debts"]
    assert (await client.post(f"/v1/settlements/{debt['id']}/fail", headers=auth(operator))).status_code == 200
    await return_lead(client, buyer, exposure_id)  # the price of a returned lead is collected from nobody
    assert (await settlement(db, debt["id"])).status == "cancelled"
    refused = await confirm(client, operator, debt["id"])
    assert refused.status_code == 409 and "cancelled" in refused.json()["detail"]
    assert "charge_of_debt" not in refused.json()
    assert (await wallet(client, buyer))["owed"] == money(0)

    # A failed payout went back to the wallet: it was never paid out, and confirming it would pay it out twice.
    await fund(app, buyer_id, "lead_buyer", 5_000)
    payout = await client.post("/v1/wallet/withdrawals", headers=auth(buyer), json={"amount": money(5_000)})
    assert payout.status_code == 201, payout.text
    payout_id = payout.json()["id"]
    assert (await client.post(f"/v1/settlements/{payout_id}/fail", headers=auth(operator))).status_code == 200
    assert (await confirm(client, operator, payout_id)).status_code == 409
    assert (await wallet(client, buyer))["available"] == money(5_000)
    assert await db.count(LedgerTransaction, LedgerTransaction.kind == "charge_received") == 0
    await assert_sound(client, operator)


async def test_confirming_a_failed_charge_while_the_collector_retries_it_collects_once(app, client, db):
    operator = await operator_token(app)
    buyer_id, buyer, first = await a_failed_charge(app, client, operator)
    clock.advance(timedelta(days=1, minutes=1))  # the retry is due

    confirmed, collected = await asyncio.gather(confirm(client, operator, first["id"]), collect(app))
    if confirmed.status_code == 200:  # the transfer was booked first: nothing left to charge again
        assert collected.retried == 0
        assert await db.count(Settlement, Settlement.business_id == buyer_id) == 1
    else:  # the retry came first: the refusal names it, and the money is booked on it
        assert confirmed.status_code == 409, confirmed.text
        assert collected.retried == 1
        retry = confirmed.json()["charge_of_debt"]
        assert retry["status"] == "pending"
        assert (await confirm(client, operator, retry["settlement_id"])).status_code == 200
    state = await wallet(client, buyer)
    assert state["owed"] == money(0) and state["open_debts"] == [] and state["pending_settlements"] == []
    assert await db.count(LedgerTransaction, LedgerTransaction.kind == "charge_received") == 1
    await assert_sound(client, operator)


async def test_confirming_the_old_failed_and_the_new_pending_attempt_at_once_collects_once(app, client, db):
    operator = await operator_token(app)
    buyer, first, retry = await a_retried_charge(app, client, operator)

    old, new = await asyncio.gather(confirm(client, operator, first["id"]), confirm(client, operator, retry["id"]))
    assert (old.status_code, new.status_code) == (409, 200), (old.text, new.text)
    assert old.json()["charge_of_debt"]["settlement_id"] == retry["id"]
    assert await db.count(LedgerTransaction, LedgerTransaction.kind == "charge_received") == 1
    assert (await wallet(client, buyer))["owed"] == money(0)
    await assert_sound(client, operator)


async def test_two_open_attempts_at_one_debt_confirmed_at_once_collect_it_once(app, client, db):
    """A state no path of the service leaves (each attempt cancels the one before it): a failed charge and a newer
    pending one of the same debt, both open, as a provider retrying on its own might leave them. Confirmed at once,
    in either order, the newer one is the payment and the older one is refused, then cancelled, never charged.
    The buyer owes for another lead too, so the ledger's receivable (never below zero) would not catch a second
    collection of the first debt: it would silently pay the other one."""
    operator = await operator_token(app)
    buyer_id, buyer = await register(client, "lead_buyer")
    await buy_from(app, client, (buyer_id, buyer), None)
    (first,) = (await wallet(client, buyer))["open_debts"]
    await buy_from(app, client, (buyer_id, buyer), None)
    (other,) = [d for d in (await wallet(client, buyer))["open_debts"] if d["id"] != first["id"]]
    assert (await client.post(f"/v1/settlements/{first['id']}/fail", headers=auth(operator))).status_code == 200
    clock.advance(timedelta(minutes=1))
    async with app.state.uow() as uow:
        old = await uow.session.get(Settlement, first["id"])
        assert old is not None
        newer = Settlement(
            id=new_id("stl"),
            business_id=buyer_id,
            direction="charge",
            method=old.method,
            amount_minor=old.amount_minor,
            currency=old.currency,
            status="pending",
            transaction_id=old.transaction_id,
            invoice_id=old.invoice_id,
            reference=old.reference,
            created_at=clock.now(),
        )
        uow.session.add(newer)
        newer_id = newer.id

    answers = await asyncio.gather(confirm(client, operator, first["id"]), confirm(client, operator, newer_id))
    assert [a.status_code for a in answers] == [409, 200], [a.text for a in answers]
    assert answers[0].json()["charge_of_debt"]["settlement_id"] == newer_id
    assert await db.count(LedgerTransaction, LedgerTransaction.kind == "charge_received") == 1
    assert (await settlement(db, first["id"])).status == "cancelled"  # superseded by the payment
    state = await wallet(client, buyer)
    assert state["owed"] == money(PRICE) and [d["id"] for d in state["open_debts"]] == [other["id"]]
    clock.advance(timedelta(days=365))
    assert (await collect(app)).retried == 0
    await assert_sound(client, operator)


async def test_an_older_pending_attempt_superseded_by_a_confirmed_one_is_cancelled_at_the_provider_too(
    app, client, db, monkeypatch
):
    """Two pending attempts at one debt (no path of the service leaves them; a provider retrying on its own might):
    confirming the newer cancelled the older in the database only, so a card provider would still collect it, the
    debt paid twice. It is withdrawn at the provider as well, as collect_debts withdraws a charge the wallet paid;
    one the provider can no longer stop refuses the confirmation, naming it, and nothing changes."""
    operator = await operator_token(app)
    cancelled_at_provider: list[str] = []
    stoppable = {"yes": True}

    class Provider(provider.ManualBankTransfer):
        async def cancel(self, session: Any, settlement: Settlement) -> bool:
            if stoppable["yes"]:
                cancelled_at_provider.append(settlement.id)
            return stoppable["yes"]

    monkeypatch.setattr(provider, "in_use", Provider())

    async def two_pending_attempts() -> tuple[str, str]:
        buyer_id, buyer = await register(client, "lead_buyer")
        await buy_from(app, client, (buyer_id, buyer), None)
        (first,) = (await wallet(client, buyer))["open_debts"]
        clock.advance(timedelta(minutes=1))
        async with app.state.uow() as uow:
            old = await uow.session.get(Settlement, first["id"])
            assert old is not None and old.status == "pending"
            newer = replace_settlement(old, id=new_id("stl"), created_at=clock.now())
            uow.session.add(newer)
        return first["id"], newer.id

    # The provider cannot stop the older one: the payment is refused, naming it; nothing is cancelled nor received.
    stoppable["yes"] = False
    older, newer = await two_pending_attempts()
    refused = await confirm(client, operator, newer)
    assert refused.status_code == 409, refused.text
    assert refused.json()["charge_of_debt"] == {"settlement_id": older, "status": "pending"}
    assert (await settlement(db, older)).status == "pending" and (await settlement(db, newer)).status == "pending"
    assert await db.count(LedgerTransaction, LedgerTransaction.kind == "charge_received") == 0

    # It can: the older one is cancelled at the provider and in the database, the newer one is the payment.
    stoppable["yes"] = True
    older, newer = await two_pending_attempts()
    confirmed = await confirm(client, operator, newer)
    assert confirmed.status_code == 200, confirmed.text
    assert cancelled_at_provider == [older]
    assert (await settlement(db, older)).status == "cancelled"
    assert await db.count(LedgerTransaction, LedgerTransaction.kind == "charge_received") == 1
    await assert_sound(client, operator)


def replace_settlement(row: Settlement, **changes: Any) -> Settlement:
    """A copy of a settlement row (a new one to add), with some columns changed."""
    columns = {c.key: getattr(row, c.key) for c in Settlement.__table__.columns}
    return Settlement(**{**columns, **changes})


# --- gap 3: withdrawals while owing --------------------------------------------------------------------------


async def test_a_withdrawal_pays_open_debts_first_or_is_refused_naming_them(app, client, db):
    operator = await operator_token(app)
    lb_id, lb = await register(client, "lead_buyer")
    await buy_from(app, client, (lb_id, lb), None)
    (debt,) = (await wallet(client, lb))["open_debts"]
    await fund(app, lb_id, "lead_buyer", 10_000)  # available arrives while the purchase is still owed
    state = await wallet(client, lb)
    assert state["available"] == money(10_000) and state["owed"] == money(PRICE)
    assert state["withdrawable_amount"] == money(10_000 - PRICE)

    refused = await client.post("/v1/wallet/withdrawals", headers=auth(lb), json={"amount": money(10_000)})
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert "insufficient-funds" in problem["type"] and debt["id"] in problem["detail"]
    assert problem["withdrawable"] == money(10_000 - PRICE) and problem["owed"] == money(PRICE)
    assert [d["settlement_id"] for d in problem["open_debts"]] == [debt["id"]]
    # Named as they stand (the collection the refusal rolled back had cancelled it in its transaction).
    assert [d["status"] for d in problem["open_debts"]] == ["pending"] and "pending" in problem["detail"]
    # Refused as a whole: the debt is still open, nothing was offset or paid out.
    state = await wallet(client, lb)
    assert state["available"] == money(10_000) and state["owed"] == money(PRICE)
    assert (await settlement(db, debt["id"])).status == "pending"
    assert await db.count(LedgerTransaction, LedgerTransaction.kind.in_(("debt_offset", "withdrawal"))) == 0

    keyed = {**auth(lb), "Idempotency-Key": "wd-debts"}
    paid = await client.post("/v1/wallet/withdrawals", headers=keyed, json={"amount": money(10_000 - PRICE)})
    assert paid.status_code == 201, paid.text
    again = await client.post("/v1/wallet/withdrawals", headers=keyed, json={"amount": money(10_000 - PRICE)})
    assert again.status_code == 201 and again.json()["id"] == paid.json()["id"]
    state = await wallet(client, lb)
    assert state["available"] == money(0) and state["owed"] == money(0) and state["open_debts"] == []
    assert (await settlement(db, debt["id"])).status == "cancelled"
    assert await db.count(LedgerTransaction, LedgerTransaction.kind == "debt_offset") == 1
    assert await db.count(LedgerTransaction, LedgerTransaction.kind == "withdrawal") == 1
    await assert_sound(client, operator)


async def test_a_failed_payout_back_in_the_wallet_pays_what_was_owed_meanwhile(app, client, db):
    operator = await operator_token(app)
    lb_id, lb = await register(client, "lead_buyer")
    await fund(app, lb_id, "lead_buyer", 10_000)
    payout = await client.post("/v1/wallet/withdrawals", headers=auth(lb), json={"amount": money(10_000)})
    assert payout.status_code == 201
    await buy_from(app, client, (lb_id, lb), None)  # the wallet is empty: the price is owed
    assert (await wallet(client, lb))["owed"] == money(PRICE)

    failed = await client.post(f"/v1/settlements/{payout.json()['id']}/fail", headers=auth(operator))
    assert failed.status_code == 200
    state = await wallet(client, lb)
    assert state["available"] == money(10_000 - PRICE) and state["owed"] == money(0) and state["open_debts"] == []
    await assert_sound(client, operator)


async def test_a_deal_makers_credit_is_never_withdrawable(app, client, db):
    dm_id, dm = await register(client, "deal_maker")
    await fund(app, dm_id, "deal_maker", 10_000)
    state = await wallet(client, dm)
    assert state["credit"] == money(10_000) and state["withdrawable"] is False
    assert state["withdrawable_amount"] == money(0)
    refused = await client.post("/v1/wallet/withdrawals", headers=auth(dm), json={"amount": money(1)})
    assert refused.status_code == 403
    assert (await wallet(client, dm))["credit"] == money(10_000)


# --- statements: bad filters ---------------------------------------------------------------------------------


async def test_statement_filters_are_checked(app, client, db):
    _, lb = await register(client, "lead_buyer")
    for params, field in (
        ({"kind": "free_money"}, "kind"),
        ({"kind": "free_money", "format": "csv"}, "kind"),
        ({"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"since": "2026-02-01T00:00:00"}, "since"),
        ({"until": "2026-02-01T00:00:00", "format": "csv"}, "until"),
        # The CSV export is every entry: a page's limit or cursor (garbage or not) would be silently ignored.
        ({"limit": "10", "format": "csv"}, "limit"),
        ({"cursor": "garbage", "format": "csv"}, "cursor"),
    ):
        response = await client.get("/v1/wallet/entries", headers=auth(lb), params=params)
        assert response.status_code == 422, (params, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["errors"][0]["field"] == field
    for kind in ("earnings_reversal", "debt_offset"):
        response = await client.get("/v1/wallet/entries", headers=auth(lb), params={"kind": kind})
        assert response.status_code == 200 and response.json()["items"] == []
    assert await db.scalar(select(func.count()).select_from(LedgerTransaction)) == 0
