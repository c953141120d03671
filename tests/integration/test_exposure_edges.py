"""Exposures, deal reports, invoices, the own account and settlements at their edges, over HTTP, as an outside client
meets them: beyond test_lifecycle.py, test_contract.py, test_wallet.py and test_access.py."""

from __future__ import annotations

from typing import Any

from tests.factories import auth, operator_token, register
from tests.integration.test_bad_input import assert_problem
from tests.integration.test_contract import claimed_exposure


def money(amount: int, currency: str = "ILS") -> dict[str, Any]:
    return {"amount_minor": amount, "currency": currency}


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
