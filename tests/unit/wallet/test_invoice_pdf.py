"""Invoice documents: their own sums, JSON, and a PDF a person can read."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from marketplace.money import Money
from marketplace.wallet import invoice_pdf
from marketplace.wallet.invoice_pdf import (
    InvoiceDocument,
    InvoiceKind,
    InvoiceLine,
    Party,
    PaymentStep,
    render_invoice_pdf,
    steps_from_offset,
)
from marketplace.wallet.offset import plan_offset
from marketplace.wallet.vat import vat_breakdown


def ils(minor: int) -> Money:
    return Money(minor, "ILS")


def commission_invoice(number: str = "IL-2025-000042", **changes: object) -> InvoiceDocument:
    price = vat_breakdown(ils(300_000), 1800, amount_includes_vat=True)
    fields: dict[str, object] = {
        "number": number,
        "issuer": Party("Lead Marketplace Ltd", ("1 Rothschild Blvd", "Tel Aviv"), "515151515"),
        "recipient": Party("Cohen Renovations", ("Haifa",)),
        "issued_at": datetime(2025, 3, 1, 9, 30, tzinfo=UTC),
        "currency": "ILS",
        "lines": (
            InvoiceLine("Commission 30 % on deal turnover 10,000.00 ILS", price.net, price.vat, price.gross),
        ),
        "net": price.net,
        "vat": price.vat,
        "gross": price.gross,
        "vat_rate_bp": 1800,
        "steps": steps_from_offset(plan_offset(price.gross, ils(120_000), ils(0)), "bank transfer"),
    }
    fields.update(changes)
    return InvoiceDocument(**fields)  # type: ignore[arg-type]


def test_steps_from_offset_show_wallet_and_charge_and_skip_zero_steps() -> None:
    steps = steps_from_offset(plan_offset(ils(300_000), ils(120_000), ils(0)), "bank transfer")
    assert steps == (
        PaymentStep("Offset from wallet credit", ils(120_000)),
        PaymentStep("Charged via bank transfer", ils(180_000)),
    )


def test_pdf_is_a_pdf_naming_the_invoice() -> None:
    pdf = render_invoice_pdf(commission_invoice())
    assert pdf.startswith(b"%PDF-")
    assert pdf.rstrip().endswith(b"%%EOF")
    assert b"Invoice IL-2025-000042" in pdf  # the document title, stored uncompressed
    assert len(pdf) > 1_000


def test_pdf_from_json_equals_pdf_from_the_document() -> None:
    doc = commission_invoice()
    assert InvoiceDocument.from_json(doc.to_json()) == doc
    assert b"Invoice IL-2025-000042" in render_invoice_pdf(doc.to_json())


def test_credit_note_names_what_it_corrects() -> None:
    doc = commission_invoice("IL-2025-000043", kind=InvoiceKind.CREDIT_NOTE, corrects="IL-2025-000042")
    assert b"Credit note IL-2025-000043" in render_invoice_pdf(doc)
    with pytest.raises(ValueError, match="must name the invoice"):
        commission_invoice("IL-2025-000044", kind=InvoiceKind.CREDIT_NOTE)


def test_without_a_unicode_font_text_outside_latin1_still_renders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(invoice_pdf, "_FONT_CANDIDATES", ())
    doc = commission_invoice(recipient=Party("כהן שיפוצים Müller", ("חיפה",)))
    assert render_invoice_pdf(doc).startswith(b"%PDF-")


def test_unicode_names_render_with_a_unicode_font() -> None:
    doc = commission_invoice(recipient=Party("כהן שיפוצים בע״מ", ("חיפה",)), note="Danke, Müller & Söhne")
    assert render_invoice_pdf(doc).startswith(b"%PDF-")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"gross": ils(300_001)}, "net \\+ VAT is not gross"),
        ({"lines": ()}, "no lines"),
        ({"number": " "}, "needs a number"),
        ({"steps": (PaymentStep("Charged", ils(1)),)}, "payment steps"),
        ({"net": ils(254_236), "vat": ils(45_764)}, "lines' net"),
        ({"currency": "EUR"}, "not in EUR"),
    ],
)
def test_an_invoice_whose_figures_disagree_is_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        commission_invoice(**changes)
