"""Invoices and credit notes for every charge: issued in the charging transaction, numbered without gaps as it
commits; the VAT breakdown of a price under the jurisdiction."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sqlalchemy import bindparam, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from marketplace.clock import utcnow
from marketplace.db.at_commit import at_commit, defer
from marketplace.db.models import (
    Business,
    Invoice,
    InvoiceSequence,
)
from marketplace.db.statements import of_session, per_database, table
from marketplace.ids import new_id
from marketplace.money import Money
from marketplace.notifications.outbox import notify
from marketplace.settings import Settings
from marketplace.wallet.invoice_pdf import (
    InvoiceDocument,
    InvoiceKind,
    InvoiceLine,
    Party,
    PaymentStep,
    steps_from_offset,
)
from marketplace.wallet.offset import OffsetPlan
from marketplace.wallet.vat import VatBreakdown, vat_breakdown

ISSUER = "marketplace"


def breakdown(settings: Settings, amount: Money) -> VatBreakdown:
    jurisdiction = settings.jurisdiction
    return vat_breakdown(amount, jurisdiction.vat_rate_bp, jurisdiction.prices_include_vat)


_SEQUENCES = table(InvoiceSequence)
_TAKE_INVOICE_NUMBERS = (
    update(_SEQUENCES)
    .where(_SEQUENCES.c.issuer == ISSUER)
    .values(next_number=_SEQUENCES.c.next_number + bindparam("count"))
    .returning(_SEQUENCES.c.next_number - bindparam("count"))
)
_CREATE_SEQUENCE = per_database(
    lambda insert: insert(InvoiceSequence).values(issuer=ISSUER, next_number=1).on_conflict_do_nothing()
)
_UNNUMBERED = "wallet.unnumbered_invoices"
_PROVISIONAL = "(numbered at commit)"


def _take_invoice_numbers(session: Session, count: int) -> int:
    """The first of `count` consecutive numbers per issuer, with no gaps: the sequence row is taken by a
    conditional update in this transaction, so concurrent invoices queue on it and a rolled-back transaction gives
    its numbers back."""
    for _ in range(2):
        first = session.execute(_TAKE_INVOICE_NUMBERS, {"count": count}).scalar()
        if first is not None:
            return int(first)
        session.execute(of_session(_CREATE_SEQUENCE, session))
    raise RuntimeError("invoice sequence could not be created")


@dataclass
class _Unnumbered:
    """An invoice issued in this transaction, waiting for its number (see _number_invoices)."""

    invoice: Invoice
    document: InvoiceDocument  # checked when issued, under a provisional number and date
    business: Business
    description: str
    public_base_url: str


@at_commit(_UNNUMBERED)
def _number_invoices(session: Session, pending: list[_Unnumbered]) -> None:
    """Invoices get their numbers as their transaction commits: one update of the sequence row for all of them,
    then the invoices and their messages are written by the commit's flush. Every charge across the marketplace
    queues on that row until its transaction ends: taken at the commit (db/at_commit.py), it is held for the commit
    alone, not for the rest of the claim or status report that charged. Numbers follow the order of the commits and
    issued_at is the moment of numbering, so a later number is never dated before an earlier one."""
    first = _take_invoice_numbers(session, len(pending))
    now = utcnow()
    for offset, item in enumerate(pending):
        invoice = item.invoice
        document = dataclasses.replace(item.document, number=f"LM-{first + offset:06d}", issued_at=now)
        invoice.number, invoice.issued_at, invoice.document = first + offset, now, document.to_json()
        session.add(invoice)
        # The business gets its invoice by message (in the embedded default it lands in GET /v1/notifications).
        title = "Credit note" if document.kind is InvoiceKind.CREDIT_NOTE else "Invoice"
        notify(
            session,
            "invoice",
            item.business.email,
            f"{title} {document.number}: {document.gross}",
            f"{title} {document.number} for {item.business.name}: {item.description}. Net {document.net}, "
            f"VAT {document.vat}, total {document.gross}.",
            link=f"{item.public_base_url}/v1/invoices/{invoice.id}",
            reference=invoice.id,
        )


def _parties(settings: Settings, business: Business) -> tuple[Party, Party]:
    """The invoice's issuer (the jurisdiction's, or the [wallet] default) and the business it is for."""
    w, j = settings.wallet, settings.jurisdiction
    if j.issuer_name:  # the jurisdiction's company, as a whole (never its name with another's tax id)
        issuer = Party(j.issuer_name, (j.issuer_address,), j.issuer_tax_id or None)
    else:
        issuer = Party(w.issuer_name, (w.issuer_address,), w.issuer_tax_id)
    return issuer, Party(business.name, (business.email,), None)


def issue_invoice(
    session: AsyncSession,
    settings: Settings,
    business: Business,
    amount: VatBreakdown,
    description: str,
    *,
    transaction_id: str,
    offset: OffsetPlan | None = None,
    corrects: Invoice | None = None,
    steps: tuple[PaymentStep, ...] = (),
) -> Invoice:
    """An invoice (or, with `corrects`, a credit note) for a charge of this transaction. Its id is known at once;
    its number, date, document and message are written when the transaction commits (_number_invoices)."""
    issuer, recipient = _parties(settings, business)
    kind = InvoiceKind.CREDIT_NOTE if corrects is not None else InvoiceKind.INVOICE
    invoice = Invoice(
        id=new_id("inv"),
        issuer=ISSUER,
        kind=kind.value,
        business_id=business.id,
        transaction_id=transaction_id,
        corrects_invoice_id=corrects.id if corrects is not None else None,
        currency=amount.currency,
        net_minor=amount.net.amount_minor,
        vat_minor=amount.vat.amount_minor,
        gross_minor=amount.gross.amount_minor,
        vat_rate_bp=settings.jurisdiction.vat_rate_bp,
    )
    document = InvoiceDocument(
        number=_PROVISIONAL,
        issuer=issuer,
        recipient=recipient,
        issued_at=utcnow(),
        currency=amount.currency,
        lines=(InvoiceLine(description, amount.net, amount.vat, amount.gross),),
        net=amount.net,
        vat=amount.vat,
        gross=amount.gross,
        vat_rate_bp=settings.jurisdiction.vat_rate_bp,
        steps=steps_from_offset(offset) if offset is not None else steps,
        kind=kind,
        corrects=corrects.document["number"] if corrects is not None else None,
    )
    item = _Unnumbered(invoice, document, business, description, settings.notifications.public_base_url)
    defer(session, _UNNUMBERED, item)
    return invoice
