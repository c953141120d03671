"""Invoice documents: the issued invoice as a value (JSON in, JSON out) and its rendering as a PDF with fpdf2.

The document is what was issued; it checks its own sums (lines, totals, payment steps) so that a PDF never
shows figures that disagree with each other.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from marketplace.clock import rfc3339
from marketplace.money import Money, format_rate_bp
from marketplace.wallet.offset import OffsetPlan

# Type sizes in typographic points (9.5 pt, 10 pt): layout, never money, which stays in integer minor units.
Points = float

__all__ = [
    "InvoiceDocument",
    "InvoiceKind",
    "InvoiceLine",
    "Party",
    "PaymentStep",
    "render_invoice_pdf",
    "steps_from_offset",
]

# A Unicode font shows names in Hebrew or with umlauts; the built-in Helvetica only knows Latin-1.
_FONT_CANDIDATES = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    Path("/usr/share/fonts/dejavu/DejaVuSans.ttf"),
    Path("/usr/share/fonts/TTF/DejaVuSans.ttf"),
    Path("/Library/Fonts/DejaVuSans.ttf"),
)
# Characters drawn without a glyph of their own (line breaks, joiners and direction marks, combining marks the shaper
# places or leaves out): the font lacking one is no reason to show a replacement.
_NO_GLYPH_NEEDED = frozenset({"Cc", "Cf", "Mn", "Me"})
_REPLACEMENT = "\ufffd"


class InvoiceKind(StrEnum):
    INVOICE = "invoice"
    CREDIT_NOTE = "credit_note"


@dataclass(frozen=True, slots=True)
class Party:
    name: str
    address: tuple[str, ...] = ()
    tax_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "address": list(self.address), "tax_id": self.tax_id}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Party:
        return cls(str(data["name"]), tuple(str(a) for a in data.get("address") or ()), data.get("tax_id"))


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    description: str
    net: Money
    vat: Money
    gross: Money

    def __post_init__(self) -> None:
        if self.net + self.vat != self.gross:
            raise ValueError(f"line {self.description!r}: net + VAT is not gross")

    def to_json(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "net": self.net.to_json(),
            "vat": self.vat.to_json(),
            "gross": self.gross.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InvoiceLine:
        return cls(
            str(data["description"]),
            Money.from_json(data["net"]),
            Money.from_json(data["vat"]),
            Money.from_json(data["gross"]),
        )


@dataclass(frozen=True, slots=True)
class PaymentStep:
    """How (part of) the gross is settled: offset from the wallet or charged through the provider."""

    description: str
    amount: Money

    def to_json(self) -> dict[str, Any]:
        return {"description": self.description, "amount": self.amount.to_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PaymentStep:
        return cls(str(data["description"]), Money.from_json(data["amount"]))


def steps_from_offset(
    offset: OffsetPlan, charged_via: str = "the payment provider"
) -> tuple[PaymentStep, ...]:
    """The invoice's payment steps for an offset plan, leaving out steps of zero."""
    steps = (
        PaymentStep("Offset from wallet credit", offset.from_credit),
        PaymentStep("Offset from available balance", offset.from_available),
        PaymentStep(f"Charged via {charged_via}", offset.to_charge),
    )
    return tuple(step for step in steps if not step.amount.is_zero)


@dataclass(frozen=True, slots=True)
class InvoiceDocument:
    number: str
    issuer: Party
    recipient: Party
    issued_at: datetime
    currency: str
    lines: tuple[InvoiceLine, ...]
    net: Money
    vat: Money
    gross: Money
    vat_rate_bp: int
    steps: tuple[PaymentStep, ...] = ()
    kind: InvoiceKind = InvoiceKind.INVOICE
    corrects: str | None = None
    """For a credit note: the number of the invoice it corrects."""
    note: str = ""

    def __post_init__(self) -> None:
        if not self.number.strip():
            raise ValueError("an invoice needs a number")
        if not self.lines:
            raise ValueError(f"invoice {self.number} has no lines")
        for name in ("net", "vat", "gross"):
            if getattr(self, name).currency != self.currency:
                raise ValueError(f"invoice {self.number}: {name} is not in {self.currency}")
        if self.net + self.vat != self.gross:
            raise ValueError(f"invoice {self.number}: net + VAT is not gross")
        for total, name in ((self.net, "net"), (self.vat, "vat"), (self.gross, "gross")):
            if Money.sum((getattr(line, name) for line in self.lines), self.currency) != total:
                raise ValueError(f"invoice {self.number}: the lines' {name} do not add up to {total}")
        if self.steps and Money.sum((s.amount for s in self.steps), self.currency) != self.gross:
            raise ValueError(f"invoice {self.number}: the payment steps do not add up to {self.gross}")
        if self.kind is InvoiceKind.CREDIT_NOTE and not self.corrects:
            raise ValueError(f"credit note {self.number} must name the invoice it corrects")

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "kind": self.kind.value,
            "corrects": self.corrects,
            "issuer": self.issuer.to_json(),
            "recipient": self.recipient.to_json(),
            "issued_at": rfc3339(self.issued_at),  # RFC 3339 UTC, as every timestamp
            "currency": self.currency,
            "vat_rate_bp": self.vat_rate_bp,
            "lines": [line.to_json() for line in self.lines],
            "net": self.net.to_json(),
            "vat": self.vat.to_json(),
            "gross": self.gross.to_json(),
            "steps": [step.to_json() for step in self.steps],
            "note": self.note,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InvoiceDocument:
        issued_at = data["issued_at"]
        return cls(
            number=str(data["number"]),
            kind=InvoiceKind(data.get("kind", InvoiceKind.INVOICE.value)),
            corrects=data.get("corrects"),
            issuer=Party.from_json(data["issuer"]),
            recipient=Party.from_json(data["recipient"]),
            issued_at=issued_at if isinstance(issued_at, datetime) else datetime.fromisoformat(issued_at),
            currency=str(data["currency"]),
            vat_rate_bp=int(data["vat_rate_bp"]),
            lines=tuple(InvoiceLine.from_json(line) for line in data["lines"]),
            net=Money.from_json(data["net"]),
            vat=Money.from_json(data["vat"]),
            gross=Money.from_json(data["gross"]),
            steps=tuple(PaymentStep.from_json(step) for step in data.get("steps") or ()),
            note=str(data.get("note") or ""),
        )


class _Pdf:
    """fpdf2 with the few drawing helpers an invoice needs."""

    def __init__(self) -> None:
        # fpdf2 pulls in Pillow and fontTools (about a second); only a process that renders pays for it.
        from fpdf import FPDF
        from fpdf.fonts import TTFFont

        self.pdf = FPDF(format="A4")
        self.pdf.set_margins(18, 18, 18)
        self.pdf.set_auto_page_break(auto=True, margin=18)
        font = next((path for path in _FONT_CANDIDATES if path.is_file()), None)
        self.unicode = font is not None
        self.glyphs: Mapping[int, Any] = {}
        if font is not None:
            self.pdf.add_font("Body", "", str(font))
            bold = font.with_name("DejaVuSans-Bold.ttf")
            self.pdf.add_font("Body", "B", str(bold if bold.is_file() else font))
            self.family = "Body"
            body = self.pdf.fonts["body"]
            self.glyphs = body.cmap if isinstance(body, TTFFont) else {}
            # Shaping (HarfBuzz) with the bidi algorithm draws a right-to-left run, a name in Hebrew, in the order it
            # is read, beside latin text and figures kept left to right; without it the letters come out mirrored.
            self.pdf.set_text_shaping(True)
        else:
            self.family = "Helvetica"

    def text(self, value: str) -> str:
        # Helvetica cannot draw characters outside Latin-1; a '?' is better than a failed invoice.
        if not self.unicode:
            return value.encode("latin-1", "replace").decode("latin-1")
        # A character the font has no glyph for (an emoji in a name) would be left out without a trace; the
        # replacement character shows that something is there which the PDF cannot draw.
        if value.isascii():
            return value
        return "".join(
            ch
            if ord(ch) in self.glyphs or unicodedata.category(ch) in _NO_GLYPH_NEEDED
            else _REPLACEMENT
            for ch in value
        )

    def font(self, size: Points, *, bold: bool = False) -> None:
        self.pdf.set_font(self.family, "B" if bold else "", size)

    def line(self, value: str, *, size: Points = 10, bold: bool = False, align: str = "L") -> None:
        self.font(size, bold=bold)
        self.pdf.cell(0, size * 0.55, self.text(value), align=align, new_x="LMARGIN", new_y="NEXT")

    def row(
        self, cells: Sequence[str], widths: Sequence[float], *, bold: bool = False, border: str = ""
    ) -> None:
        self.font(9.5, bold=bold)
        for index, (value, width) in enumerate(zip(cells, widths, strict=True)):
            align = "L" if index == 0 else "R"
            self.pdf.cell(width, 6.5, self.text(value), border=border, align=align)
        self.pdf.ln(6.5)


def render_invoice_pdf(invoice: InvoiceDocument | Mapping[str, Any]) -> bytes:
    """The invoice as PDF bytes a person can read; a mapping is read with InvoiceDocument.from_json."""
    doc = invoice if isinstance(invoice, InvoiceDocument) else InvoiceDocument.from_json(invoice)
    title = "Credit note" if doc.kind is InvoiceKind.CREDIT_NOTE else "Invoice"
    out = _Pdf()
    pdf = out.pdf
    pdf.set_title(f"{title} {doc.number}")
    pdf.set_author(out.text(doc.issuer.name))
    pdf.set_creator("marketplace")
    pdf.set_creation_date(doc.issued_at)
    pdf.add_page()
    width = pdf.epw

    out.line(f"{title} {doc.number}", size=18, bold=True)
    out.line(f"Issued {doc.issued_at:%Y-%m-%d}", size=10)
    if doc.corrects:
        out.line(f"Corrects invoice {doc.corrects}", size=10)
    pdf.ln(4)

    top = pdf.get_y()
    half = width / 2
    for column, (label, party) in enumerate((("From", doc.issuer), ("To", doc.recipient))):
        pdf.set_xy(pdf.l_margin + column * half, top)
        block = [party.name, *party.address]
        if party.tax_id:
            block.append(f"Tax id: {party.tax_id}")
        out.font(9, bold=True)
        pdf.cell(half, 5, label, new_x="LEFT", new_y="NEXT")
        out.font(10)
        for text in block:
            pdf.cell(half - 4, 5, out.text(text), new_x="LEFT", new_y="NEXT")
    pdf.set_xy(pdf.l_margin, max(pdf.get_y(), top + 30))
    pdf.ln(4)

    widths = (width * 0.46, width * 0.18, width * 0.18, width * 0.18)
    rate = f"{format_rate_bp(doc.vat_rate_bp)}%"
    out.font(9.5)
    # A table, unlike cells, wraps a long description instead of running over the amounts.
    with pdf.table(
        col_widths=widths,
        text_align=("LEFT", "RIGHT", "RIGHT", "RIGHT"),
        borders_layout="HORIZONTAL_LINES",
        line_height=5.5,
        first_row_as_headings=True,
    ) as table:
        table.row(("Description", "Net", f"VAT {rate}", "Gross"))
        for item in doc.lines:
            table.row((out.text(item.description), item.net.format(), item.vat.format(), item.gross.format()))
    pdf.ln(2)
    totals = (width * 0.64, width * 0.36)
    out.row(("Net", doc.net.format()), totals, border="T")
    out.row((f"VAT {rate}", doc.vat.format()), totals)
    out.row(("Total (gross)", doc.gross.format()), totals, bold=True, border="T")

    if doc.steps:
        pdf.ln(6)
        out.line("Payment", size=11, bold=True)
        for step in doc.steps:
            out.row((step.description, step.amount.format()), totals)
    if doc.note:
        pdf.ln(6)
        out.font(9)
        pdf.multi_cell(0, 5, out.text(doc.note), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
