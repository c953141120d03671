"""Invoice documents: their own sums, JSON, and a PDF a person can read."""

from __future__ import annotations

import re
import zlib
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

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


def _stream(obj: bytes) -> bytes:
    found = re.search(rb"stream\r?\n(.*?)\r?\nendstream", obj, re.S)
    if found is None:
        return b""
    try:
        return zlib.decompress(found.group(1))
    except zlib.error:
        return found.group(1)


def _unescape(raw: bytes) -> bytes:
    escapes = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}

    def one(match: re.Match[bytes]) -> bytes:
        code = match.group(1)
        return bytes([int(code, 8) & 0xFF]) if code[:1].isdigit() else escapes.get(code, code)

    return re.sub(rb"\\([0-7]{1,3}|.)", one, raw, flags=re.S)


def visual_lines(pdf: bytes) -> list[str]:
    """The PDF's text as a reader sees it: glyphs placed on one baseline, read left to right by where they stand
    (not in the order they are drawn), each mapped to its character through its font's ToUnicode map; a glyph the
    map does not name reads `<gid>`. Enough of PDF for what fpdf2 writes: `Td`/`Tm` positions, `Tj` strings of
    two-byte glyph ids."""
    objects = {int(m.group(1)): m.group(2) for m in re.finditer(rb"(\d+) 0 obj(.*?)endobj", pdf, re.S)}
    maps: dict[int, dict[int, str]] = {}
    for number, obj in objects.items():
        to_unicode = re.search(rb"/ToUnicode (\d+) 0 R", obj)
        if to_unicode:
            cmap = _stream(objects[int(to_unicode.group(1))])
            maps[number] = {
                int(gid, 16): bytes.fromhex(text.decode()).decode("utf-16-be")
                for block in re.findall(rb"beginbfchar(.*?)endbfchar", cmap, re.S)
                for gid, text in re.findall(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block)
            }
    fonts = {name.decode(): int(ref) for name, ref in re.findall(rb"/(F\d+) (\d+) 0 R", pdf)}
    token = re.compile(
        rb"/(F\d+) [\d.]+ Tf|([\d.-]+) ([\d.-]+) Td|1 0 0 1 ([\d.-]+) ([\d.-]+) Tm|\(((?:\\.|[^\\)])*)\) Tj", re.S
    )
    rows: dict[float, list[tuple[float, str]]] = defaultdict(list)
    for obj in objects.values():
        content = _stream(obj)
        if b" Tj" not in content:
            continue
        names: dict[int, str] = {}
        x = y = 0.0
        for m in token.finditer(content):
            if m.group(1):
                names = maps.get(fonts[m.group(1).decode()], {})
            elif m.group(2) or m.group(4):
                x, y = (float(m.group(2)), float(m.group(3))) if m.group(2) else (float(m.group(4)), float(m.group(5)))
            else:
                raw = _unescape(m.group(6))
                gids = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
                rows[round(y, 1)].append((x, "".join(names.get(gid, f"<{gid}>") for gid in gids)))
    return ["".join(text for _, text in sorted(row)) for _, row in sorted(rows.items(), reverse=True)]


def test_a_hebrew_name_is_drawn_right_to_left_beside_latin_text_and_figures() -> None:
    """Hebrew reads right to left: the PDF places its first letter rightmost, as a reader of Hebrew expects, while
    latin words, figures and amounts keep their left-to-right order, in a line of their own or within Hebrew."""
    doc = commission_invoice(
        recipient=Party("כהן שיפוצים", ("רחוב הרצל 12, חיפה", "Suite 4B")), note="תודה Cohen 1,234.50 ILS"
    )
    lines = visual_lines(render_invoice_pdf(doc))
    seen = "\n".join(lines)
    assert "םיצופיש ןהכ" in seen, lines  # "כהן שיפוצים" as it stands on the page, left to right
    assert "הפיח ,12 לצרה בוחר" in seen, lines  # the street number stays "12" inside the Hebrew
    assert "Suite 4B" in seen and "Lead Marketplace Ltd" in seen, lines
    assert "Cohen 1,234.50 ILS הדות" in seen, lines  # a Hebrew note: the latin words and the amount read left to right
    assert "Total (gross)3,000.00 ILS" in lines, lines


def test_a_character_the_font_cannot_draw_shows_as_a_replacement_not_as_nothing() -> None:
    doc = commission_invoice(recipient=Party("שרברב דוד 🚰"), note="Cohen 🚰 & Söhne")
    seen = "\n".join(visual_lines(render_invoice_pdf(doc)))
    assert "\ufffd דוד ברברש" in seen, seen  # the emoji ends the name: leftmost, as the name reads right to left
    assert "Cohen \ufffd & Söhne" in seen, seen


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
def test_an_invoice_whose_figures_disagree_is_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        commission_invoice(**changes)
