"""Exposures, deal reports, invoices, the own account and settlements at their edges, over HTTP, as an outside client
meets them: beyond test_lifecycle.py, test_contract.py, test_wallet.py and test_access.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from marketplace.clock import clock
from marketplace.db.models import Exposure, Invoice, LedgerTransaction, Offer, Settlement
from tests.factories import auth, offer_lead_to, operator_token, register, submit_lead
from tests.integration.fraud_market import answer, claimed_deal, hired, report, survey_token
from tests.integration.test_bad_input import assert_problem
from tests.integration.test_contract import claimed_exposure
from workers.actors import mark_stale


def money(amount: int, currency: str = "ILS") -> dict[str, Any]:
    return {"amount_minor": amount, "currency": currency}


async def _report(client: Any, token: str, exposure_id: str, body: dict[str, Any]) -> Any:
    return await client.post(f"/v1/exposures/{exposure_id}/status", headers=auth(token), json=body)


# --- what was wrong ------------------------------------------------------------------------------------------------


async def test_an_invoice_asked_for_in_a_form_it_does_not_come_in_is_a_406(app, client, db):
    """An invoice comes as JSON or as a PDF. A client whose Accept header takes neither (a CSV, XML, a web page, an
    image) was answered 200 with JSON it said it could not use; it now gets a 406 naming the forms there are. An
    Accept that takes either (a wildcard, q-values) still chooses, and another business's invoice stays a 404."""
    _, owner, _ = await claimed_exposure(app, client, "lead_buyer")
    _, other = await register(client, "lead_buyer")
    (invoice,) = (await client.get("/v1/invoices", headers=auth(owner))).json()["items"]
    url = f"/v1/invoices/{invoice['id']}"
    for accept in ("text/csv", "application/xml", "text/html", "image/*", "text/*;q=0.9, application/pdf;q=0"):
        refused = await client.get(url, headers={**auth(owner), "Accept": accept})
        body = assert_problem(refused, 406)
        assert body["available"] == ["application/json", "application/pdf"], accept
        assert refused.headers["vary"] == "Accept", accept  # as the answers it stands for
        assert invoice["number"] not in refused.text
        head = await client.head(url, headers={**auth(owner), "Accept": accept})
        assert head.status_code == 406 and head.content == b"", accept
        # Whose invoice it is is settled first: nothing tells another business that it exists.
        assert_problem(await client.get(url, headers={**auth(other), "Accept": accept}), 404)
    for accept, media in (
        ("application/pdf, */*;q=0.1", "application/pdf"),
        ("text/csv, application/*;q=0.5", "application/json"),
        ("text/html, */*;q=0.8", "application/json"),
        ("application/json", "application/json"),
        ("", "application/json"),
    ):
        answer = await client.get(url, headers={**auth(owner), "Accept": accept})
        assert answer.status_code == 200 and answer.headers["content-type"].startswith(media), accept
        if media == "application/pdf":
            assert answer.content.startswith(b"%PDF")
    operator = await operator_token(app)
    assert_problem(await client.get(url, headers={**auth(operator), "Accept": "text/csv"}), 406)
    pdf = await client.get(url, headers={**auth(operator), "Accept": "application/pdf"})
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")


async def test_a_lead_buyer_reports_its_deals_without_a_turnover_it_owes_nothing_on(app, client, db):
    """A lead buyer paid for the contact; its deal reports are optional, a lead manager of its own (DESIGN 1), and
    owe nothing. Its `paid` was refused without a turnover (a 422), as a deal maker's is, whose commission is that
    turnover's share: it is now taken without one, and a turnover it does give is checked and kept as ever."""
    _, token, exposure_id = await claimed_exposure(app, client, "lead_buyer")
    transactions_before = await db.count(LedgerTransaction)
    invoices_before = await db.count(Invoice)
    for status in ("won", "invoiced", "paid"):
        response = await _report(client, token, exposure_id, {"status": status})
        assert response.status_code == 200, (status, response.text)
        assert response.json()["status"] == status and response.json()["turnover"] is None
    assert [h["to_status"] for h in response.json()["history"]] == ["new", "won", "invoiced", "paid"]
    assert await db.count(LedgerTransaction) == transactions_before  # no commission, no charge
    assert await db.count(Invoice) == invoices_before
    # One that states a turnover has it checked and kept.
    _, token2, exposure2 = await claimed_exposure(app, client, "lead_buyer")
    assert (await _report(client, token2, exposure2, {"status": "won"})).status_code == 200
    bad = await _report(client, token2, exposure2, {"status": "paid", "turnover": money(0)})
    assert_problem(bad, 422, "turnover.amount_minor")
    stated = await _report(client, token2, exposure2, {"status": "paid", "turnover": money(250_000)})
    assert stated.status_code == 200 and stated.json()["turnover"] == money(250_000)
    # A deal maker's paid still needs the turnover its commission is computed on.
    _, dm, dm_exposure = await claimed_exposure(app, client, "deal_maker")
    assert (await _report(client, dm, dm_exposure, {"status": "won"})).status_code == 200
    assert_problem(await _report(client, dm, dm_exposure, {"status": "paid"}), 422, "turnover")
    assert await db.scalar(select(Exposure.status).where(Exposure.id == dm_exposure)) == "won"
    assert await db.count(Settlement, Settlement.reference == dm_exposure) == 0


async def _return(client: Any, token: str, exposure_id: str) -> Any:
    return await client.post(f"/v1/exposures/{exposure_id}/return", headers=auth(token), json={"reason": "irrelevant"})


async def test_a_lead_the_customer_says_it_hired_this_business_for_cannot_be_returned(app, client, db):
    """A lead may be returned only before a deal was made on it. A business that reported nothing, or its call
    (`contacted`), returned it as irrelevant after its customer had answered that it hired that very business: a lead
    buyer got its price back, a deal maker a replacement. It is now a 409, and nothing changes; a holder the customer
    did not hire may not either: the customer hired someone, so the lead was relevant (test below). (A third
    holder's `lost` sends the customer the survey.)"""
    operator = await operator_token(app)
    lb_id, lb = await register(client, "lead_buyer")
    other_id, other = await register(client, "lead_buyer")
    witness_id, witness = await register(client, "lead_buyer")
    lead_id, exposure_id = await claimed_deal(app, client, lb_id, lb)
    other_offer, witness_offer = await offer_lead_to(app, lead_id, [other_id, witness_id])
    claimed = await client.post(f"/v1/offers/{other_offer}/claim", headers=auth(other), json={"exclusive": False})
    assert claimed.status_code == 201, claimed.text
    witnessed = await client.post(f"/v1/offers/{witness_offer}/claim", headers=auth(witness), json={"exclusive": False})
    assert witnessed.status_code == 201, witnessed.text
    await report(client, lb, exposure_id, "contacted")
    await report(client, witness, witnessed.json()["id"], "lost")
    token = await survey_token(client, operator, lead_id)
    assert (await answer(client, token, **hired(lb_id, 150_000, satisfaction=5))).status_code == 200
    transactions = await db.count(LedgerTransaction)

    refused = assert_problem(await _return(client, lb, exposure_id), 409)
    assert "hired this business" in refused["detail"]
    assert await db.scalar(select(Exposure.status).where(Exposure.id == exposure_id)) == "contacted"
    assert await db.scalar(select(Exposure.returned_at).where(Exposure.id == exposure_id)) is None
    assert await db.count(LedgerTransaction) == transactions  # no refund
    shown = (await client.get(f"/v1/exposures/{exposure_id}", headers=auth(lb))).json()
    assert shown["status"] == "contacted" and shown["contact"] is not None

    # The other holder was not hired, but the customer hired someone: a real customer with a real need, whom it lost
    # to a competitor; its lead was relevant too, and is not refunded.
    refused = assert_problem(await _return(client, other, claimed.json()["id"]), 409)
    assert "competitor" in refused["detail"], refused
    assert await db.count(LedgerTransaction) == transactions

    # A deal maker whose customer says it hired it gets no replacement for the lead either.
    dm_id, dm = await register(client, "deal_maker")
    dm2_id, dm2 = await register(client, "deal_maker")
    dm_lead, dm_exposure = await claimed_deal(app, client, dm_id, dm)
    (dm2_offer,) = await offer_lead_to(app, dm_lead, [dm2_id])
    lost = await client.post(f"/v1/offers/{dm2_offer}/claim", headers=auth(dm2), json={"exclusive": False})
    assert lost.status_code == 201, lost.text
    await submit_lead(client)  # an open lead a replacement could be made of
    await report(client, dm2, lost.json()["id"], "lost")
    token = await survey_token(client, operator, dm_lead)
    assert (await answer(client, token, **hired(dm_id, 150_000))).status_code == 200
    offers = await db.count(Offer, Offer.business_id == dm_id)
    assert_problem(await _return(client, dm, dm_exposure), 409)
    assert await db.count(Offer, Offer.business_id == dm_id) == offers
    assert await db.scalar(select(Exposure.status).where(Exposure.id == dm_exposure)) == "new"
    assert await db.scalar(select(Exposure.replacement_owed_since).where(Exposure.id == dm_exposure)) is None


async def test_a_lead_worked_as_relevant_cannot_be_returned(app, client, db):
    """A deal maker reported a lead contacted, quoted and lost, then returned it as irrelevant, and was owed a free
    replacement (a lead buyer got its price back): a lead it quoted on was relevant, and every deal lost would have
    turned into a new lead. A lead is returned only while new or contacted; once quoted or lost the return is a 409
    naming the status and why, and nothing changes (no replacement, no refund). A contacted one is still returned."""
    dm_id, dm = await register(client, "deal_maker")
    await submit_lead(client)  # an open lead a replacement could be made of
    for worked in (("contacted", "quoted"), ("contacted", "quoted", "lost"), ("lost",)):
        _, exposure_id = await claimed_deal(app, client, dm_id, dm)
        for status in worked:
            await report(client, dm, exposure_id, status)
        offers = await db.count(Offer, Offer.business_id == dm_id)
        refused = assert_problem(await _return(client, dm, exposure_id), 409)
        assert f"status {worked[-1]}" in refused["detail"] and "relevant" in refused["detail"], refused
        assert await db.scalar(select(Exposure.status).where(Exposure.id == exposure_id)) == worked[-1]
        assert await db.scalar(select(Exposure.returned_at).where(Exposure.id == exposure_id)) is None
        assert await db.scalar(select(Exposure.replacement_owed_since).where(Exposure.id == exposure_id)) is None
        assert await db.count(Offer, Offer.business_id == dm_id) == offers  # no replacement offered
    lb_id, lb = await register(client, "lead_buyer")
    _, bought = await claimed_deal(app, client, lb_id, lb)
    await report(client, lb, bought, "lost")
    transactions = await db.count(LedgerTransaction)
    refused = assert_problem(await _return(client, lb, bought), 409)
    assert "status lost" in refused["detail"], refused
    assert await db.count(LedgerTransaction) == transactions  # no refund
    assert await db.scalar(select(Exposure.status).where(Exposure.id == bought)) == "lost"

    # A lead the business only called is returned as ever: the call is how it learns the lead is irrelevant.
    _, called = await claimed_deal(app, client, dm_id, dm)
    await report(client, dm, called, "contacted")
    returned = await _return(client, dm, called)
    assert returned.status_code == 200 and returned.json()["status"] == "returned", returned.text


async def test_a_lead_whose_customer_hired_a_competitor_cannot_be_returned(app, client, db):
    """A holder that lost the customer to a competitor (a deal maker's `won` closed the lead) returned it from `new`
    or `contacted` for a free replacement or its price back (a tester): a lead whose customer hired someone was
    relevant. A 409, nothing changes; a lead closed because its seller was blocked, with no hire, is still returned."""
    winner_id, winner = await register(client, "deal_maker")
    loser_id, loser = await register(client, "deal_maker")
    buyer_id, buyer = await register(client, "lead_buyer")
    await submit_lead(client)  # an open lead a replacement could be made of
    lead_id = await submit_lead(client)
    offers = await offer_lead_to(app, lead_id, [winner_id, loser_id, buyer_id])
    exposures = []
    for offer_id, token in zip(offers, (winner, loser, buyer), strict=True):
        claimed = await client.post(f"/v1/offers/{offer_id}/claim", headers=auth(token), json={"exclusive": False})
        assert claimed.status_code == 201, claimed.text
        exposures.append(claimed.json()["id"])
    await report(client, loser, exposures[1], "contacted")
    await report(client, winner, exposures[0], "won", turnover=150_000)
    transactions, offers_made = await db.count(LedgerTransaction), await db.count(Offer)
    for token, exposure_id, status in ((loser, exposures[1], "contacted"), (buyer, exposures[2], "new")):
        refused = assert_problem(await _return(client, token, exposure_id), 409)
        assert "hired" in refused["detail"] and "competitor" in refused["detail"], refused
        assert await db.scalar(select(Exposure.status).where(Exposure.id == exposure_id)) == status
    assert await db.count(LedgerTransaction) == transactions and await db.count(Offer) == offers_made
    assert await db.scalar(select(Exposure.replacement_owed_since).where(Exposure.id == exposures[1])) is None

    # (The customer's own answer naming a competitor: test_a_lead_the_customer_says_it_hired_this_business_for_...)
    # A lead nobody was hired for is returned as ever; so is one a lead buyer reported won (its free report owes
    # nothing and leaves the lead on the market: it takes nobody's return away).
    _, kept = await claimed_deal(app, client, loser_id, loser)
    assert (await _return(client, loser, kept)).status_code == 200
    other_id, other = await register(client, "lead_buyer")
    lead_id = await submit_lead(client)
    offers = await offer_lead_to(app, lead_id, [buyer_id, other_id])
    held = []
    for offer_id, token in zip(offers, (buyer, other), strict=True):
        claimed = await client.post(f"/v1/offers/{offer_id}/claim", headers=auth(token), json={"exclusive": False})
        assert claimed.status_code == 201, claimed.text
        held.append(claimed.json()["id"])
    await report(client, buyer, held[0], "won")
    returned = await _return(client, other, held[1])
    assert returned.status_code == 200 and returned.json()["refund"] is not None, returned.text


async def test_returnable_until_is_shown_only_while_a_return_is_open_to_the_deal(app, client, db, settings):
    """`returnable_until` was the claim plus the return window for every deal, a quoted, lost, won or returned one
    too, though only a new or contacted one may be returned (rules.RETURNABLE): a client read a window that no return
    could use. It is null once the status is not returnable."""
    dm_id, dm = await register(client, "deal_maker")

    async def until(exposure_id: str) -> str | None:
        response = await client.get(f"/v1/exposures/{exposure_id}", headers=auth(dm))
        assert response.status_code == 200, response.text
        return response.json()["returnable_until"]  # type: ignore[no-any-return]

    _, exposure_id = await claimed_deal(app, client, dm_id, dm)
    created = await db.scalar(select(Exposure.created_at).where(Exposure.id == exposure_id))
    window_end = created + timedelta(days=settings.windows.return_days)
    assert await until(exposure_id) == window_end.isoformat().replace("+00:00", "Z")
    await report(client, dm, exposure_id, "contacted")
    assert await until(exposure_id) is not None
    for status in ("quoted", "won"):
        await report(client, dm, exposure_id, status, turnover=50_000 if status == "won" else None)
        assert await until(exposure_id) is None, status
    _, returned = await claimed_deal(app, client, dm_id, dm)
    assert (await _return(client, dm, returned)).status_code == 200
    assert await until(returned) is None


async def test_a_lead_buyer_s_won_report_leaves_the_lead_on_the_market(app, client, db):
    """A lead buyer's reports are a lead manager of its own and owe nothing: its free `won` took the lead off the
    market, so a buyer that paid the shared price and reported `won` at once had bought exclusivity (the other
    businesses offered the lead got a 409). Its report now leaves the lead on the market; a deal maker's `won`, which
    commits it to a commission, still takes it off."""
    a_id, a = await register(client, "lead_buyer")
    b_id, b = await register(client, "lead_buyer")
    lead_id = await submit_lead(client)
    offer_a, offer_b = await offer_lead_to(app, lead_id, [a_id, b_id])
    claimed = await client.post(f"/v1/offers/{offer_a}/claim", headers=auth(a), json={"exclusive": False})
    assert claimed.status_code == 201, claimed.text
    await report(client, a, claimed.json()["id"], "won")
    assert await db.scalar(select(Offer.status).where(Offer.id == offer_b)) == "open"
    second = await client.post(f"/v1/offers/{offer_b}/claim", headers=auth(b), json={"exclusive": False})
    assert second.status_code == 201, second.text

    dm_id, dm = await register(client, "deal_maker")
    c_id, c = await register(client, "lead_buyer")
    lead_id = await submit_lead(client)
    offer_dm, offer_c = await offer_lead_to(app, lead_id, [dm_id, c_id])
    claimed = await client.post(f"/v1/offers/{offer_dm}/claim", headers=auth(dm))
    assert claimed.status_code == 201, claimed.text
    await report(client, dm, claimed.json()["id"], "won", turnover=150_000)
    assert await db.scalar(select(Offer.status).where(Offer.id == offer_c)) != "open"
    refused = await client.post(f"/v1/offers/{offer_c}/claim", headers=auth(c), json={"exclusive": False})
    assert refused.status_code == 409, refused.text


async def test_a_won_deal_waiting_for_its_payment_does_not_go_stale(app, client, db, settings):
    """A deal stays stale-free while the customer's payment is awaited: only `paid` may follow `won`, so a won deal
    marked stale could not be cleared honestly. Only undecided deals (new, contacted, quoted) go stale now; a won one
    marked stale before (by the old sweep) is not shown nor counted as stale."""
    _, token, won_id = await claimed_exposure(app, client, "deal_maker")
    _, _, open_id = await claimed_exposure(app, client, "deal_maker")
    await report(client, token, won_id, "won", turnover=150_000)
    clock.advance(timedelta(days=settings.windows.stale_days, seconds=1))
    await mark_stale()
    assert await db.scalar(select(Exposure.stale).where(Exposure.id == won_id)) is False
    # (The other deal maker's undecided deal did go stale.)
    assert await db.scalar(select(Exposure.stale).where(Exposure.id == open_id)) is True
    stats = (await client.get("/v1/businesses/me/stats", headers=auth(token))).json()
    assert (stats["stale"], stats["won"]) == (0, 1)

    # One the old sweep marked stale: neither shown nor counted as stale.
    async with app.state.uow() as uow:
        await uow.session.execute(update(Exposure).where(Exposure.id == won_id).values(stale=True))
    assert (await client.get(f"/v1/exposures/{won_id}", headers=auth(token))).json()["stale"] is False
    assert (await client.get("/v1/businesses/me/stats", headers=auth(token))).json()["stale"] == 0
    paid = await _report(client, token, won_id, {"status": "paid", "turnover": money(150_000)})
    assert paid.status_code == 200 and paid.json()["stale"] is False


async def test_a_deal_moves_one_way_whoever_moves_it(app, client, db):
    """A report, a return and a block's release each move a deal as exposures.moves.move_to does: an event from its
    status to the new one, with who and why, at the very moment the deal's status changed, and the deal no longer
    stale. (A return stamped its event with a clock read of its own, a moment after the deal's.)"""
    from marketplace.db.models import ExposureEvent

    business_id, token = await register(client, "deal_maker")
    _, reported = await claimed_deal(app, client, business_id, token)
    _, returned = await claimed_deal(app, client, business_id, token)
    _, released = await claimed_deal(app, client, business_id, token)
    async with app.state.uow() as uow:
        await uow.session.execute(update(Exposure).where(Exposure.business_id == business_id).values(stale=True))
    moved = await _report(client, token, reported, {"status": "contacted", "note": "called back"})
    assert moved.status_code == 200, moved.text
    back = await client.post(f"/v1/exposures/{returned}/return", headers=auth(token), json={"reason": "not mine"})
    assert back.status_code == 200, back.text
    operator = await operator_token(app)
    assert (await client.post(f"/v1/businesses/{business_id}/block", headers=auth(operator))).status_code == 200

    async def moves(exposure_id: str) -> list[tuple[Any, ...]]:
        events = await db.scalars(
            select(ExposureEvent).where(ExposureEvent.exposure_id == exposure_id).order_by(ExposureEvent.at)
        )
        return [(e.from_status, e.to_status, e.note, e.turnover_minor, e.at) for e in events]

    for exposure_id, expected in (
        (reported, [(None, "new"), ("new", "contacted", "called back"), ("contacted", "lost")]),
        (returned, [(None, "new"), ("new", "returned", "not mine")]),
        (released, [(None, "new"), ("new", "lost")]),
    ):
        deal = await db.scalar(select(Exposure).where(Exposure.id == exposure_id))
        history = await moves(exposure_id)
        assert [m[:2] for m in history] == [e[:2] for e in expected]
        assert [m[2] for m, e in zip(history, expected, strict=True) if len(e) == 3] == [
            e[2] for e in expected if len(e) == 3
        ]
        *_, (_, last, note, turnover, at) = history
        assert (last, at, deal.stale, turnover) == (deal.status, deal.status_changed_at, False, None)
        if last == "lost":
            assert note == "released to the market: the business was blocked by an operator"


async def test_a_returned_exposure_is_not_bought_exclusively_and_hears_why(app, client, db):
    """Its upgrade was refused as "only a lead buyer's shared exposure can become exclusive", which it is: the reason
    is that it was returned."""
    lb_id, lb = await register(client, "lead_buyer")
    _, exposure_id = await claimed_deal(app, client, lb_id, lb)
    r = await client.post(f"/v1/exposures/{exposure_id}/return", headers=auth(lb), json={"reason": "wrong city"})
    assert r.status_code == 200, r.text
    r = await client.post(f"/v1/exposures/{exposure_id}/exclusive", headers=auth(lb))
    body = assert_problem(r, 409)
    assert "returned" in body["detail"], body
    assert await db.count(Invoice) == 2  # the purchase and its credit note: nothing charged for the refusal
