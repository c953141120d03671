"""A lead buyer's return gives back each part of the price the way it was paid (what came from its withdrawable
`available` balance goes back there; credit and card payments come back as credit; an open charge is cancelled),
and invoices show their payment steps as they stand (a charge paid later from the wallet, paid, cancelled), credit
notes how the refund was made. On both databases, to the agora, with the ledger sound."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from marketplace.db.models import Exposure, Invoice, LedgerTransaction
from marketplace.wallet import debts, refunds
from tests.factories import auth, offer_lead_to, operator_token, register, submit_lead
from tests.integration.test_wallet import (
    ILS,
    _return,
    accounts_of,
    assert_sound,
    claim,
    close_deal,
    fund,
    invoice,
    invoices,
    money,
    wallet,
)

# plumbing: 60.00 shared, 150.00 exclusive (an upgrade costs 90.00).
SHARED, EXCLUSIVE = 6000, 15000


def step(description: str, minor: int) -> dict[str, Any]:
    return {"description": description, "amount": money(minor)}


async def _claim(app: Any, client: Any, business_id: str, token: str, *, exclusive: bool) -> dict[str, Any]:
    (offer_id,) = await offer_lead_to(app, await submit_lead(client), [business_id])
    response = await claim(client, token, offer_id, exclusive=exclusive)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _collect(app: Any, business_id: str) -> None:
    async with app.state.uow() as uow:
        await debts.collect_debts(uow.session, app.state.settings, business_id, ILS)


async def test_a_returned_lead_gives_back_to_available_what_was_paid_from_available(app, client, db):
    """The tester's case in small: credit 20.00, available 30.00 (withdrawable), an exclusive lead of 150.00 takes
    both and charges 100.00; its return cancels the charge, gives 30.00 back to available, 20.00 to credit."""
    operator = await operator_token(app)
    lb_id, lb = await register(client, "lead_buyer")
    await fund(app, lb_id, "deal_maker", 2000)  # credit
    await fund(app, lb_id, "lead_buyer", 3000)  # available
    before = await wallet(client, lb)
    assert before["withdrawable_amount"] == money(3000) and before["credit"] == money(2000)

    exposure = await _claim(app, client, lb_id, lb, exclusive=True)
    bought = await wallet(client, lb)
    assert (bought["credit"], bought["available"], bought["owed"]) == (money(0), money(0), money(10_000))
    (charged,) = await invoices(client, lb)
    issued = [step("Offset from wallet credit", 2000), step("Offset from available balance", 3000)]
    pending = [*issued, step("Charged via the payment provider", 10_000)]
    assert (await invoice(client, lb, charged["id"]))["document"]["steps"] == pending

    returned = await _return(client, lb, exposure["id"])
    assert returned["refund"] == money(EXCLUSIVE)
    after = await wallet(client, lb)
    assert (after["credit"], after["available"], after["owed"]) == (money(2000), money(3000), money(0))
    assert after["withdrawable_amount"] == money(3000) and after["open_debts"] == []
    # The invoice as served now: the charge was cancelled. The credit note says how the refund was made.
    cancelled = [*issued, step("Charge cancelled, not collected", 10_000)]
    assert (await invoice(client, lb, charged["id"]))["document"]["steps"] == cancelled
    (note,) = [i for i in await invoices(client, lb) if i["kind"] == "credit_note"]
    assert (await invoice(client, lb, note["id"]))["document"]["steps"] == [
        step("Open charge cancelled", 10_000),
        step("Refunded to available balance", 3000),
        step("Refunded as wallet credit", 2000),
    ]
    pdf = await client.get(f"/v1/invoices/{charged['id']}", headers={**auth(lb), "Accept": "application/pdf"})
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    # The money is withdrawable again.
    out = await client.post("/v1/wallet/withdrawals", headers=auth(lb), json={"amount": money(3000)})
    assert out.status_code == 201, out.text
    tb = await assert_sound(client, operator)
    assert accounts_of(tb)["marketplace::revenue"] == 0 and accounts_of(tb)["marketplace::vat_payable"] == 0

    # Refunded once: asked again, the refund answers as the first time and moves nothing.
    async with app.state.uow() as uow:
        row = await uow.session.get(Exposure, exposure["id"])
        assert row is not None
        again = await refunds.refund_exposure(uow.session, app.state.settings, row)
    assert again is not None and again.gross.amount_minor == EXCLUSIVE
    # With the net and VAT the first answer named: those of the invoice it corrects.
    assert (
        [again.net.amount_minor, again.vat.amount_minor]
        == [returned[f"refund_{part}"]["amount_minor"] for part in ("net", "vat")]
        == [charged[part]["amount_minor"] for part in ("net", "vat")]
    )
    assert await db.count(LedgerTransaction, LedgerTransaction.kind == "lead_refund") == 1
    assert len([i for i in await invoices(client, lb) if i["kind"] == "credit_note"]) == 1
    await assert_sound(client, operator)


async def test_an_upgraded_lead_whose_charge_was_partly_paid_from_earnings_gives_each_part_back(app, client, db):
    """Shared 60.00: 10.00 from available, 50.00 charged, of which 20.00 is later paid from released earnings
    (a debt offset) and 30.00 still owed. The upgrade's 90.00: 40.00 from credit, 50.00 charged and paid by bank
    transfer. The return: 30.00 cancelled and 30.00 to available (first credit note), 90.00 to credit (second)."""
    operator = await operator_token(app)
    lb_id, lb = await register(client, "lead_buyer")
    await fund(app, lb_id, "lead_buyer", 1000)
    exposure = await _claim(app, client, lb_id, lb, exclusive=False)
    await fund(app, lb_id, "lead_buyer", 2000)
    await _collect(app, lb_id)
    assert (await wallet(client, lb))["owed"] == money(3000)
    (first,) = await invoices(client, lb)
    assert (await invoice(client, lb, first["id"]))["document"]["steps"] == [
        step("Offset from available balance", 1000),
        step("Charged, then paid from available balance", 2000),
        step("Charged via the payment provider", 3000),
    ]

    await fund(app, lb_id, "deal_maker", 4000)  # credit
    upgraded = await client.post(f"/v1/exposures/{exposure['id']}/exclusive", headers=auth(lb))
    assert upgraded.status_code == 200, upgraded.text
    second = (await invoices(client, lb))[-1]
    assert second["gross"] == money(EXCLUSIVE - SHARED)
    upgrade_charge = next(d for d in (await wallet(client, lb))["open_debts"] if d["invoice_id"] == second["id"])
    assert upgrade_charge["amount"] == money(5000)
    paid = await client.post(f"/v1/settlements/{upgrade_charge['id']}/confirm", headers=auth(operator))
    assert paid.status_code == 200, paid.text
    assert (await invoice(client, lb, second["id"]))["document"]["steps"] == [
        step("Offset from wallet credit", 4000),
        step("Charged via the payment provider, paid", 5000),
    ]

    assert (await _return(client, lb, exposure["id"]))["refund"] == money(EXCLUSIVE)
    after = await wallet(client, lb)
    assert (after["credit"], after["available"], after["owed"]) == (money(9000), money(3000), money(0))
    assert after["withdrawable_amount"] == money(3000)
    notes = [i for i in await invoices(client, lb) if i["kind"] == "credit_note"]
    assert [n["corrects_invoice_id"] for n in notes] == [first["id"], second["id"]]
    assert [(await invoice(client, lb, n["id"]))["document"]["steps"] for n in notes] == [
        [step("Open charge cancelled", 3000), step("Refunded to available balance", 3000)],
        [step("Refunded as wallet credit", 9000)],
    ]
    assert (await invoice(client, lb, first["id"]))["document"]["steps"] == [
        step("Offset from available balance", 1000),
        step("Charged, then paid from available balance", 2000),
        step("Charge cancelled, not collected", 3000),
    ]
    tb = await assert_sound(client, operator)
    assert accounts_of(tb)["marketplace::revenue"] == 0 and accounts_of(tb)["marketplace::vat_payable"] == 0


async def test_a_commission_paid_later_from_credit_reads_so_on_its_invoice(app, client, db):
    """A deal maker's commission of 300.00 (30 % of 1,000.00) charged with an empty wallet, then paid from credit it
    earned: the invoice no longer says it is charged through the provider."""
    operator = await operator_token(app)
    dm_id, dm = await register(client, "deal_maker", profile={"categories": ["legal"]})
    lead_id = await submit_lead(client, category="legal")
    (offer_id,) = await offer_lead_to(app, lead_id, [dm_id])
    assigned = await claim(client, dm, offer_id)
    assert (await close_deal(client, dm, assigned.json()["id"], 100_000)).status_code == 200
    (commission,) = await invoices(client, dm)
    assert (await invoice(client, dm, commission["id"]))["document"]["steps"] == [
        step("Charged via the payment provider", 30_000)
    ]
    await fund(app, dm_id, "deal_maker", 30_000)
    await _collect(app, dm_id)
    state = await wallet(client, dm)
    assert state["owed"] == money(0) and state["credit"] == money(0)
    assert (await invoice(client, dm, commission["id"]))["document"]["steps"] == [
        step("Charged, then paid from wallet credit", 30_000)
    ]
    # The list is unchanged (it carries no steps); the invoice's stored document is as issued.
    assert {i["id"] for i in await invoices(client, dm)} == {commission["id"]}
    stored = await db.scalar(select(Invoice.document).where(Invoice.id == commission["id"]))
    assert stored["steps"] == [step("Charged via the payment provider", 30_000)]
    await assert_sound(client, operator)
