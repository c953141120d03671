"""Races the wallet must decide in the database: fifty purchases against a wallet that pays for ten, invoice
numbers under concurrency and rollback, one idempotency key posted twenty times at once, withdrawals at once,
businesses buying each other's sold leads at once, plan versions saved at once."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from datetime import timedelta
from typing import Any

import httpx
import msgspec
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from marketplace.clock import utcnow
from marketplace.db.models import (
    Business,
    CommissionPlanVersion,
    Exposure,
    Invoice,
    Lead,
    LedgerAccount,
    LedgerTransaction,
    Notification,
    Offer,
    Settlement,
)
from marketplace.ids import new_id
from marketplace.leads.schemas import LeadCreate
from marketplace.leads.services import submit_lead
from marketplace.money import Money
from marketplace.wallet import invoices, store
from marketplace.wallet.ledger import IdempotencyConflict, Transfer, build_lead_earnings, build_withdrawal
from marketplace.wallet.vat import VatBreakdown
from tests.factories import auth, lead_body, operator_token, register, sold_body

ILS = "ILS"
PRICE = 6000  # a plumbing lead


def money(minor: int) -> dict[str, Any]:
    return {"amount_minor": minor, "currency": ILS}


async def post_alone(app: Any, transfer: Transfer, business_id: str | None = None) -> store.Posted:
    """One transfer in its own unit of work, committed."""
    async with app.state.uow() as uow:
        return await store.post(uow.session, transfer, business_id=business_id)


async def leads_offered_to(app: Any, business_ids: list[str], sellers: list[str] | None = None) -> list[str]:
    """One new plumbing lead (sold by the seller at the same position, if given) offered to each business, made
    in one unit of work (setup, not under test); returns the offer ids in the same order."""
    now = utcnow()
    offers = []
    async with app.state.uow() as uow:
        for index, business_id in enumerate(business_ids):
            seller = sellers[index] if sellers else None
            data = msgspec.convert(lead_body() if seller is None else sold_body(), LeadCreate)
            lead, _ = await submit_lead(uow.session, app.state.settings, data, seller_business_id=seller)
            offer = Offer(
                id=new_id("off"),
                lead_id=lead.id,
                business_id=business_id,
                wave=1,
                rank=1,
                score=0.0,
                factors={"policy": "test"},
                status="open",
                created_at=now,
                expires_at=now + timedelta(hours=1),
            )
            uow.session.add(offer)
            offers.append(offer.id)
    return offers


async def claim(client: httpx.AsyncClient, token: str, offer_id: str) -> httpx.Response:
    return await client.post(f"/v1/offers/{offer_id}/claim", headers=auth(token), json={"exclusive": False})


async def wallet(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    response = await client.get("/v1/wallet", headers=auth(token))
    assert response.status_code == 200, response.text
    return dict(response.json())


async def assert_ledger_sound(app: Any) -> None:
    async with app.state.sessions() as session:
        assert all(total == 0 for total in (await store.trial_balance(session)).values())
        assert await store.balance_mismatches(session) == []
        negative = await session.scalar(
            select(func.count())
            .select_from(LedgerAccount)
            .where(LedgerAccount.non_negative.is_(True), LedgerAccount.balance_minor < 0)
        )
        assert negative == 0


async def invoice_numbers(db: Any) -> list[int]:
    return sorted(await db.scalars(select(Invoice.number)))


async def test_fifty_purchases_against_a_wallet_that_pays_for_ten(app, client, db):
    operator = await operator_token(app)
    buyer_id, buyer = await register(client, "lead_buyer")
    # Nothing may be owed through the provider: only the wallet pays, and it holds exactly ten prices.
    limited = await client.post(
        f"/v1/businesses/{buyer_id}/credit-limit", headers=auth(operator), json={"amount": money(0)}
    )
    assert limited.status_code == 200
    await post_alone(app, build_lead_earnings(new_id("setup"), buyer_id, "lead_buyer", Money(10 * PRICE, ILS)))
    offers = await leads_offered_to(app, [buyer_id] * 50)

    responses = await asyncio.gather(*(claim(client, buyer, offer_id) for offer_id in offers))

    assert Counter(r.status_code for r in responses) == {201: 10, 409: 40}, [
        r.text for r in responses if r.status_code >= 500
    ]
    assert all("insufficient-funds" in r.json()["type"] for r in responses if r.status_code == 409)
    state = await wallet(client, buyer)
    assert state["available"] == money(0) and state["credit"] == money(0) and state["owed"] == money(0)
    assert state["pending_settlements"] == []
    assert await db.count(Exposure) == 10
    assert await db.scalar(select(func.sum(Lead.exposure_count))) == 10  # the refused claims left no trace
    assert await db.count(LedgerTransaction, LedgerTransaction.kind == "exposure_purchase") == 10
    assert await db.count(Settlement) == 0
    # Ten invoices, numbered one after the other: the refused claims took no number.
    assert await invoice_numbers(db) == list(range(1, 11))
    await assert_ledger_sound(app)


async def test_invoice_numbers_stay_consecutive_under_concurrency_and_rollback(app, client, db):
    buyers = [await register(client, "lead_buyer") for _ in range(10)]
    offers = await leads_offered_to(app, [b for b, _ in buyers])
    # The first claims of a new market: they also race to seed the commission plan's first version.
    assert await db.count(CommissionPlanVersion) == 0
    bought = await asyncio.gather(*(claim(client, t, o) for o, (_, t) in zip(offers, buyers, strict=True)))
    assert [r.status_code for r in bought] == [201] * 10, [r.text for r in bought if r.status_code != 201]
    assert await invoice_numbers(db) == list(range(1, 11))
    assert await db.count(CommissionPlanVersion) == 1
    assert len(set(await db.scalars(select(Exposure.plan_version_id)))) == 1

    # Credit notes for five returns, racing five more purchases: still one number each, no gap, no repeat.
    more_offers = await leads_offered_to(app, [b for b, _ in buyers[5:]])
    returns = [
        client.post(f"/v1/exposures/{r.json()['id']}/return", headers=auth(t), json={"reason": "wrong trade"})
        for r, (_, t) in zip(bought[:5], buyers[:5], strict=True)
    ]
    purchases = [claim(client, t, o) for o, (_, t) in zip(more_offers, buyers[5:], strict=True)]
    results = await asyncio.gather(*returns, *purchases)
    assert [r.status_code for r in results] == [200] * 5 + [201] * 5, [r.text for r in results]
    assert await invoice_numbers(db) == list(range(1, 21))
    assert await db.count(Invoice, Invoice.kind == "credit_note") == 5
    documents = await db.scalars(select(Invoice.document))
    assert sorted(int(d["number"].removeprefix("LM-")) for d in documents) == list(range(1, 21))
    await assert_ledger_sound(app)

    # An invoice whose unit of work is rolled back takes no number, even when the sequence row was taken before
    # the rollback (the commit's flush failed): the next invoice gets 21.
    class Abandoned(Exception):
        pass

    amount = VatBreakdown(Money(5085, ILS), Money(915, ILS), Money(6000, ILS))
    with pytest.raises(Abandoned):
        async with app.state.uow() as uow:
            business = await uow.session.get(Business, buyers[0][0])
            issued = invoices.issue_invoice(
                uow.session, app.state.settings, business, amount, "abandoned", transaction_id="txn_none"
            )
            assert issued.number is None  # numbered as its transaction commits
            raise Abandoned
    existing = await db.scalar(select(Invoice.id).limit(1))
    with pytest.raises(IntegrityError):
        async with app.state.uow() as uow:
            business = await uow.session.get(Business, buyers[0][0])
            clash = invoices.issue_invoice(
                uow.session, app.state.settings, business, amount, "abandoned", transaction_id="txn_none"
            )
            clash.id = existing  # a duplicate key: the commit's flush fails after numbering
    assert await invoice_numbers(db) == list(range(1, 21))
    (last_offer,) = await leads_offered_to(app, [buyers[0][0]])
    assert (await claim(client, buyers[0][1], last_offer)).status_code == 201
    assert await invoice_numbers(db) == list(range(1, 22))

    # Two invoices of one transaction: consecutive numbers, each with its message, dated in number order.
    async with app.state.uow() as uow:
        business = await uow.session.get(Business, buyers[1][0])
        pair = [
            invoices.issue_invoice(
                uow.session, app.state.settings, business, amount, f"pair {i}", transaction_id=f"txn_pair{i}"
            )
            for i in range(2)
        ]
    stored = {i.id: i for i in await db.scalars(select(Invoice).where(Invoice.id.in_([p.id for p in pair])))}
    assert [stored[p.id].number for p in pair] == [22, 23]
    assert [stored[p.id].document["number"] for p in pair] == ["LM-000022", "LM-000023"]
    dated = sorted(await db.scalars(select(Invoice)), key=lambda i: i.number)
    assert all(a.issued_at <= b.issued_at for a, b in itertools.pairwise(dated))
    messages = await db.scalars(select(Notification).where(Notification.reference.in_([p.id for p in pair])))
    assert sorted(m.subject.split(":")[0] for m in messages) == ["Invoice LM-000022", "Invoice LM-000023"]


async def test_one_idempotency_key_posted_twenty_times_at_once_moves_money_once_or_conflicts(app, client, db):
    business_id, token = await register(client, "lead_buyer")
    earnings = build_lead_earnings("race:earnings", business_id, "lead_buyer", Money(5_000, ILS))

    posted = await asyncio.gather(*(post_alone(app, earnings, business_id) for _ in range(20)))

    assert len({p.transaction_id for p in posted}) == 1
    assert sorted(p.replayed for p in posted) == [False] + [True] * 19
    assert await db.count(LedgerTransaction, LedgerTransaction.idempotency_key == "race:earnings") == 1
    assert (await wallet(client, token))["available"] == money(5_000)

    # A withdrawal of all of it, twenty times at once: paid out once, not refused as overdrawn.
    withdrawal = build_withdrawal("race:withdrawal", business_id, "lead_buyer", Money(5_000, ILS))
    paid = await asyncio.gather(*(post_alone(app, withdrawal, business_id) for _ in range(20)))
    assert len({p.transaction_id for p in paid}) == 1 and sum(not p.replayed for p in paid) == 1
    assert (await wallet(client, token))["available"] == money(0)

    # The same key for different money is refused, also when both arrive at once.
    first = build_lead_earnings("race:reused", business_id, "lead_buyer", Money(1_000, ILS))
    await post_alone(app, first, business_id)
    different = build_lead_earnings("race:reused", business_id, "lead_buyer", Money(2_000, ILS))
    with pytest.raises(IdempotencyConflict) as refused:
        await post_alone(app, different, business_id)
    assert refused.value.status_code == 422
    assert [e.field for e in refused.value.errors] == ["Idempotency-Key"]

    # Ten of one amount and ten of another under a fresh key, all at once: one of them wins, once; every post of
    # the other amount is refused as a conflict, and the wallet moved by the winner's amount only.
    a = build_lead_earnings("race:contested", business_id, "lead_buyer", Money(100, ILS))
    b = build_lead_earnings("race:contested", business_id, "lead_buyer", Money(200, ILS))
    results = await asyncio.gather(*(post_alone(app, t, business_id) for t in [a, b] * 10), return_exceptions=True)
    successes = [r for r in results if isinstance(r, store.Posted)]
    conflicts = [r for r in results if isinstance(r, IdempotencyConflict)]
    assert len(successes) == len(conflicts) == 10, results
    assert len({s.transaction_id for s in successes}) == 1 and sum(not s.replayed for s in successes) == 1
    a_won = [isinstance(r, store.Posted) for r in results[0::2]]
    b_won = [isinstance(r, store.Posted) for r in results[1::2]]
    assert (a_won, b_won) in (([True] * 10, [False] * 10), ([False] * 10, [True] * 10))
    won = 100 if a_won[0] else 200
    assert (await wallet(client, token))["available"] == money(1_000 + won)
    assert await db.count(LedgerTransaction, LedgerTransaction.idempotency_key == "race:contested") == 1
    await assert_ledger_sound(app)


async def test_concurrent_withdrawals_never_overdraw(app, client, db):
    business_id, token = await register(client, "lead_buyer")
    await post_alone(app, build_lead_earnings(new_id("setup"), business_id, "lead_buyer", Money(10_000, ILS)))
    responses = await asyncio.gather(
        *(client.post("/v1/wallet/withdrawals", headers=auth(token), json={"amount": money(3_000)}) for _ in range(10))
    )
    assert Counter(r.status_code for r in responses) == {201: 3, 409: 7}
    assert (await wallet(client, token))["available"] == money(1_000)
    assert await db.count(Settlement, Settlement.direction == "payout") == 3
    await assert_ledger_sound(app)


@pytest.mark.parametrize("decision", ["confirm", "fail"])
async def test_an_operator_deciding_one_payout_ten_times_at_once_gets_one_answer(app, client, db, decision):
    business_id, token = await register(client, "lead_buyer")
    await post_alone(app, build_lead_earnings(new_id("setup"), business_id, "lead_buyer", Money(10_000, ILS)))
    payout = await client.post("/v1/wallet/withdrawals", headers=auth(token), json={"amount": money(4_000)})
    operator = await operator_token(app)
    path = f"/v1/settlements/{payout.json()['id']}/{decision}"
    responses = await asyncio.gather(*(client.post(path, headers=auth(operator)) for _ in range(10)))
    # Said ten times, it is done once and each repeat answers as the first (a repeat after it was done does too).
    assert Counter(r.status_code for r in responses) == {200: 10}, [r.text for r in responses]
    assert {r.json()["status"] for r in responses} == {"confirmed" if decision == "confirm" else "failed"}
    assert (await wallet(client, token))["available"] == money(6_000 if decision == "confirm" else 10_000)
    await assert_ledger_sound(app)


async def test_businesses_buying_each_others_sold_leads_at_once(app, client, db):
    """Each buyer's purchase credits the other's earnings while the other's purchase locks its own wallet: the
    locks must be taken in one order, or the database kills one of them as a deadlock."""
    (a_id, a), (b_id, b) = [await register(client, "lead_buyer") for _ in range(2)]
    pairs = [(a_id, b_id, b), (b_id, a_id, a)] * 5
    offers = await leads_offered_to(app, [buyer_id for _, buyer_id, _ in pairs], sellers=[s for s, _, _ in pairs])
    responses = await asyncio.gather(*(claim(client, t, o) for o, (_, _, t) in zip(offers, pairs, strict=True)))
    assert [r.status_code for r in responses] == [201] * 10, [r.text for r in responses if r.status_code != 201]
    share = 3560  # 70 % of the net price of each lead
    assert await db.count(LedgerTransaction, LedgerTransaction.kind == "lead_earnings") == 10
    for business_id, token in ((a_id, a), (b_id, b)):
        # Earnings land in available, held while their buyers have not paid (each purchase is charged, pending):
        # every purchase is owed in full, as the open charges.
        state = await wallet(client, token)
        assert state["available"]["amount_minor"] == state["held"]["amount_minor"] == 5 * share
        assert state["owed"]["amount_minor"] == 5 * PRICE
        charged = await db.scalar(
            select(func.coalesce(func.sum(Settlement.amount_minor), 0)).where(
                Settlement.business_id == business_id, Settlement.status.in_(("pending", "failed"))
            )
        )
        assert state["owed"]["amount_minor"] == charged
    await assert_ledger_sound(app)


async def test_plan_versions_saved_at_once_are_numbered_in_turn(app, client, db):
    operator = await operator_token(app)
    first = await client.get("/v1/commission-plans", headers=auth(operator))
    assert [p["version"] for p in first.json()["items"]] == [1]
    definition = first.json()["items"][0]["definition"]
    del definition["version"]  # each numbered in turn
    responses = await asyncio.gather(
        *(
            client.post("/v1/commission-plans", headers=auth(operator), json={"definition": definition})
            for _ in range(12)
        )
    )
    assert [r.status_code for r in responses] == [201] * 12, [r.text for r in responses]
    assert sorted(r.json()["version"] for r in responses) == list(range(2, 14))
    assert sorted(await db.scalars(select(CommissionPlanVersion.version))) == list(range(1, 14))
