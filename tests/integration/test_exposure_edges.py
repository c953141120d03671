"""Exposures, deal reports, invoices, the own account and settlements at their edges, over HTTP, as an outside client
meets them: beyond test_lifecycle.py, test_contract.py, test_wallet.py and test_access.py."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from marketplace.db.models import Exposure, Invoice, LedgerTransaction, Settlement
from tests.factories import auth, operator_token, register
from tests.integration.test_bad_input import assert_problem
from tests.integration.test_contract import claimed_exposure


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
