"""Reading the wallet: a business's balances and entries, invoices, settlements."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.clock import utcnow
from marketplace.db.models import (
    Business,
    CommissionPlanVersion,
    Exposure,
    Invoice,
    LedgerAccount,
    LedgerPosting,
    LedgerTransaction,
    Settlement,
)
from marketplace.errors import InvalidInput, NotFound
from marketplace.exposures.rules import RETURNABLE
from marketplace.identity.services import Principal
from marketplace.money import Money
from marketplace.pagination import check_cursor, check_limit, page_of
from marketplace.schemas import MoneyOut
from marketplace.settings import Settings
from marketplace.wallet import schemas
from marketplace.wallet.credit import credit_limit, standing_limit
from marketplace.wallet.ledger import AccountKind, TransferKind
from marketplace.wallet.offset import withdrawable as withdrawable_after_debts


def settlement_out(s: Settlement) -> schemas.Settlement:
    return schemas.Settlement(
        id=s.id,
        business_id=s.business_id,
        direction=s.direction,
        method=s.method,
        amount=MoneyOut(s.amount_minor, s.currency),
        status=s.status,
        invoice_id=s.invoice_id,
        reference=s.reference,
        created_at=s.created_at,
        # The row keeps one decision time (a failed charge's retries are scheduled from it): shown under its name.
        confirmed_at=s.confirmed_at if s.status == "confirmed" else None,
        payee=s.payee,
        # A failure stays on record when its charge is cancelled (the lead returned, the debt paid from the wallet,
        # a retry in its place): only an open charge is cancelled, and of those only a failed one has a decision time.
        failed_at=s.confirmed_at if s.status in ("failed", "cancelled") else None,
    )


async def wallet_of(session: AsyncSession, settings: Settings, business_id: str) -> schemas.Wallet:
    business = await session.get(Business, business_id)
    if business is None:
        raise NotFound(f"no business {business_id}")
    cur = business.currency
    rows = await session.execute(
        select(LedgerAccount.kind, LedgerAccount.balance_minor).where(
            LedgerAccount.owner == "business", LedgerAccount.owner_id == business_id, LedgerAccount.currency == cur
        )
    )
    balances = {AccountKind(kind): amount for kind, amount in rows}
    pending = list(
        await session.scalars(
            select(Settlement)
            .where(Settlement.business_id == business_id, Settlement.status.in_(("pending", "failed")))
            .order_by(Settlement.id.desc())
        )
    )
    if business.mode == "deal_maker":
        # It buys nothing, so the first limit (on purchases) never applies: the standing one guards its next lead
        # (wallet.credit.refuse_new_leads_over_limit).
        limit = standing_limit(settings, business.credit_limit_minor)
    else:
        limit = await credit_limit(session, settings, business_id, business.credit_limit_minor)
    available = balances.get(AccountKind.AVAILABLE, 0)
    # A lead buyer's earnings can be paid out; a deal maker's are credit only, and an account that is not active
    # (blocked, or suspended until it is let back in) withdraws nothing (identity.services.refuse_inactive).
    withdrawable = business.mode == "lead_buyer" and business.status == "active"
    credit = balances.get(AccountKind.CREDIT, 0)
    held_in = await held_earnings(session, settings, business_id, cur) if available > 0 or credit > 0 else {}
    held = sum(held_in.values())
    # What the next withdrawal would allow: it collects the open debts from the wallet first (offset.withdrawable).
    free = withdrawable_after_debts(
        Money(available, cur),
        Money(balances.get(AccountKind.RECEIVABLE, 0), cur),
        Money(held_in.get(AccountKind.AVAILABLE, 0), cur),
        credit=Money(credit, cur),
        held_credit=Money(held_in.get(AccountKind.CREDIT, 0), cur),
    )
    return schemas.Wallet(
        business_id=business_id,
        currency=cur,
        available=MoneyOut(available, cur),
        credit=MoneyOut(balances.get(AccountKind.CREDIT, 0), cur),
        owed=MoneyOut(balances.get(AccountKind.RECEIVABLE, 0), cur),
        credit_limit=MoneyOut(limit, cur),
        withdrawable=withdrawable,
        pending_settlements=[settlement_out(s) for s in pending if s.status == "pending"],
        open_debts=[settlement_out(s) for s in pending if s.direction == "charge" and s.currency == cur],
        withdrawable_amount=MoneyOut(free.amount_minor if withdrawable else 0, cur),
        held=MoneyOut(held, cur),
    )


# How long past a purchase's return deadline its seller's earnings stay held: a return that began before the
# deadline may still be committing.
RETURN_SETTLING = timedelta(hours=1)
# A seller earns from its sold lead's purchase (lead_earnings) and from the commission on the deal made of it (its
# share of a deal_commission): each is held until what it was paid from is paid (and a purchase until it can no
# longer be returned).
_EARNING_KINDS = (TransferKind.LEAD_EARNINGS.value, TransferKind.DEAL_COMMISSION.value)


async def held_earnings(
    session: AsyncSession, settings: Settings, business_id: str, currency: str
) -> dict[AccountKind, int]:
    """A business's earnings for leads it sold whose buyers have not paid for them yet (the buyer's charge for the
    purchase, or the deal maker's for the commission, is pending or failed), or whose buyer may still return the
    lead (a purchase within its return window, in a status a return is open to), per account they sit in (a lead
    buyer's available, a deal maker's credit). They count in its balance but are spent on nothing, neither paid out
    nor used to pay its own charges and debts, until the payer pays and the return window closes: so that two
    accounts cannot turn a purchase or a reported turnover nobody pays for into cash, or into a debt paid off, and
    the marketplace never pays out earnings a return then takes back. A returned lead's earnings are taken back
    (its charge is cancelled or refunded, so they are not held)."""
    unpaid = exists().where(
        Settlement.reference == LedgerTransaction.reference,
        Settlement.direction == "charge",
        Settlement.status.in_(("pending", "failed")),
        Settlement.business_id != business_id,
    )
    returnable = exists().where(
        Exposure.id == LedgerTransaction.reference,
        Exposure.status.in_(RETURNABLE),
        # Returnable up to the deadline itself, and held a while past it: a return begun just before the deadline
        # may still be committing (its status not yet written) when a withdrawal reads this.
        Exposure.created_at >= utcnow() - timedelta(days=settings.windows.return_days) - RETURN_SETTLING,
    )
    rows = await session.execute(
        select(LedgerAccount.kind, func.sum(LedgerPosting.amount_minor))
        .join(LedgerPosting, LedgerPosting.account_id == LedgerAccount.id)
        .join(LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id)
        .where(
            LedgerAccount.owner == "business",
            LedgerAccount.owner_id == business_id,
            LedgerAccount.kind.in_((AccountKind.AVAILABLE.value, AccountKind.CREDIT.value)),
            LedgerAccount.currency == currency,
            LedgerTransaction.kind.in_(_EARNING_KINDS),
            or_(unpaid, returnable),
        )
        .group_by(LedgerAccount.kind)
    )
    # Earnings are credited (negative postings) to the business's account.
    held = {AccountKind.AVAILABLE: 0, AccountKind.CREDIT: 0}
    held.update({AccountKind(kind): -int(total or 0) for kind, total in rows})
    return held


async def spendable(
    session: AsyncSession, settings: Settings, business_id: str, currency: str, balances: Mapping[AccountKind, int]
) -> tuple[int, int]:
    """What of its credit and available balances a business may spend on its charges and debts now: all but its
    held earnings (read only when it has a balance to spend, which most buyers have not)."""
    credit, available = balances.get(AccountKind.CREDIT, 0), balances.get(AccountKind.AVAILABLE, 0)
    if credit <= 0 and available <= 0:
        return credit, available
    held = await held_earnings(session, settings, business_id, currency)
    return max(0, credit - held[AccountKind.CREDIT]), max(0, available - held[AccountKind.AVAILABLE])


# A deal's commission is one balanced transaction: the deal maker pays it (debits to its wallet) and the plan's shares
# come out of its net, the lead's seller's credited to the seller's wallet. To the seller that credit is earnings from
# a lead it sold, as its share of a purchase is (a lead_earnings transaction of its own): its entries show it so, in
# kind and memo, and `kind` filters by the kind shown, so the list, the filter and the CSV export agree. The ledger
# keeps the one transaction. A share is told by whose it is, not by its sign: a posting of the commission to a
# business other than the deal's maker (the exposure the transaction references), whatever the maker's own postings
# (from credit, available, receivable) look like.
_SHARE_OF_COMMISSION_JOIN = and_(
    LedgerTransaction.kind == TransferKind.DEAL_COMMISSION.value,
    Exposure.id == LedgerTransaction.reference,
    Exposure.business_id != LedgerAccount.owner_id,
)
_SHOWN_KIND = case((Exposure.id.is_not(None), TransferKind.LEAD_EARNINGS.value), else_=LedgerTransaction.kind)


def _entry_memo(txn: LedgerTransaction, lead_id: str | None) -> str:
    """The transaction's memo, but for a seller's share of a commission (the only entry whose lead the query reads:
    the deal maker's memo names its rate and its deal, not what the seller earned)."""
    if lead_id is None:
        return txn.memo
    return f"Sold lead {lead_id}: share of the commission on the deal another business made of it"


async def entries_of(
    session: AsyncSession,
    business_id: str,
    *,
    limit: int,
    cursor: int | None,
    since: datetime | None,
    until: datetime | None,
    kind: str | None,
) -> tuple[list[schemas.Entry], str | None]:
    query = (
        select(
            LedgerPosting,
            LedgerAccount.kind.label("account_kind"),
            LedgerTransaction,
            _SHOWN_KIND.label("shown_kind"),
            Exposure.lead_id,
        )
        .join(LedgerAccount, LedgerAccount.id == LedgerPosting.account_id)
        .join(LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id)
        .outerjoin(Exposure, _SHARE_OF_COMMISSION_JOIN)  # only for a seller's share: its lead
        .where(LedgerAccount.owner == "business", LedgerAccount.owner_id == business_id)
    )
    if cursor is not None:
        query = query.where(LedgerPosting.id < cursor)
    if since is not None:
        query = query.where(LedgerTransaction.created_at >= since)
    if until is not None:
        query = query.where(LedgerTransaction.created_at < until)
    if kind:
        query = query.where(_SHOWN_KIND == kind)  # noqa: SIM300 (a CASE expression, not a constant)
    rows = (await session.execute(query.order_by(LedgerPosting.id.desc()).limit(limit + 1))).all()
    items = [
        schemas.Entry(
            posting_id=str(posting.id),
            transaction_id=txn.id,
            kind=shown_kind,
            account=account_kind,
            amount=MoneyOut(posting.amount_minor * AccountKind(account_kind).normal_sign, posting.currency),
            memo=_entry_memo(txn, lead_id),
            reference=txn.reference,
            at=txn.created_at,
        )
        for posting, account_kind, txn, shown_kind, lead_id in rows[:limit]
    ]
    return items, (str(items[-1].posting_id) if len(rows) > limit and items else None)


# --- an invoice's payment steps as they stand --------------------------------------------------------------------

# How the part of an invoice charged through the provider stands now (invoice_steps): the debt it left is paid by
# the charge (confirmed), still owed (pending, failed), paid later from the wallet (a debt offset) or cancelled
# (its lead returned: the credit note says how).
CHARGE_PAID = "Charged via the payment provider, paid"
CHARGE_PENDING = "Charged via the payment provider"
CHARGE_FAILED = "Charged via the payment provider, failed (still owed)"
PAID_LATER = {
    AccountKind.CREDIT: "Charged, then paid from wallet credit",
    AccountKind.AVAILABLE: "Charged, then paid from available balance",
}
CHARGE_CANCELLED = "Charge cancelled, not collected"
# A credit note's steps (written when it is issued): how the refund was made.
REFUND_CANCELLED = "Open charge cancelled"
REFUND_TO = {
    AccountKind.CREDIT: "Refunded as wallet credit",
    AccountKind.AVAILABLE: "Refunded to available balance",
}


@dataclass(frozen=True, slots=True)
class ChargedPart:
    """What became of an invoice's charge, from the ledger and the settlements of its transaction (one source of
    truth: nothing is written to the invoice after it is issued). Amounts in minor units."""

    from_available: int
    """Paid from the available balance at issue."""
    to_charge: int
    """Left to charge through the provider at issue (the receivable the invoice's transaction opened)."""
    later: Mapping[AccountKind, int]
    """Of to_charge, paid later from the wallet (debt offsets of its charges), per account."""
    confirmed: int
    pending: int
    failed: int

    @property
    def cancelled(self) -> int:
        """Of to_charge, neither paid nor owed any more: cancelled (its lead returned)."""
        return self.to_charge - sum(self.later.values()) - self.confirmed - self.pending - self.failed

    @property
    def paid_from_available(self) -> int:
        """What the business paid for it out of its available balance, at issue or later."""
        return self.from_available + self.later.get(AccountKind.AVAILABLE, 0)

    def steps(self, currency: str) -> list[dict[str, Any]]:
        parts = [
            (CHARGE_PAID, self.confirmed),
            *((PAID_LATER[kind], self.later.get(kind, 0)) for kind in (AccountKind.CREDIT, AccountKind.AVAILABLE)),
            (CHARGE_PENDING, self.pending),
            (CHARGE_FAILED, self.failed),
            (CHARGE_CANCELLED, self.cancelled),
        ]
        return [{"description": d, "amount": Money(a, currency).to_json()} for d, a in parts if a]


# An invoice's transaction (a purchase, an upgrade, a commission), and the debt offsets that paid its charge later.
_CHARGING_KINDS = tuple(
    kind.value for kind in (TransferKind.EXPOSURE_PURCHASE, TransferKind.DEAL_COMMISSION, TransferKind.DEBT_OFFSET)
)


async def charged_parts(session: AsyncSession, invoices: list[Invoice]) -> dict[str, ChargedPart]:
    """Per invoice id (those of a transaction that charged: a purchase, an upgrade, a commission), how its charge
    stands: two queries for any number of invoices."""
    by_txn = {i.transaction_id: i for i in invoices if i.kind == "invoice" and i.transaction_id}
    if not by_txn:
        return {}
    charges = list(
        await session.scalars(
            select(Settlement).where(Settlement.transaction_id.in_(list(by_txn)), Settlement.direction == "charge")
        )
    )
    charges = [c for c in charges if c.business_id == by_txn[c.transaction_id].business_id]
    # The debt offsets that paid (part of) a charge from the wallet: each names the charge's transaction.
    offset_of = {
        c.confirmed_transaction_id: c.transaction_id
        for c in charges
        if c.status == "cancelled" and c.confirmed_transaction_id is not None
    }
    rows = await session.execute(
        select(LedgerPosting.transaction_id, LedgerAccount.owner_id, LedgerAccount.kind, LedgerPosting.amount_minor)
        .join(LedgerAccount, LedgerAccount.id == LedgerPosting.account_id)
        .join(LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id)
        .where(
            LedgerPosting.transaction_id.in_([*by_txn, *offset_of]),
            LedgerAccount.owner == "business",
            LedgerAccount.kind.in_(
                (AccountKind.CREDIT.value, AccountKind.AVAILABLE.value, AccountKind.RECEIVABLE.value)
            ),
            LedgerTransaction.kind.in_(_CHARGING_KINDS),
        )
    )
    from_available: dict[str, int] = {}
    to_charge: dict[str, int] = {}
    later: dict[str, dict[AccountKind, int]] = {}
    for txn_id, owner_id, kind, amount in rows:
        origin = offset_of.get(txn_id, txn_id)
        if owner_id != by_txn[origin].business_id:
            continue  # a share of a commission paid to another business
        account = AccountKind(kind)
        if txn_id in offset_of:  # a debt offset: taken from credit or available (receivable goes down)
            if account is not AccountKind.RECEIVABLE:
                spent = later.setdefault(origin, {})
                spent[account] = spent.get(account, 0) + amount
        elif account is AccountKind.AVAILABLE:
            from_available[origin] = from_available.get(origin, 0) + amount
        elif account is AccountKind.RECEIVABLE:
            to_charge[origin] = to_charge.get(origin, 0) + amount
    parts = {}
    for txn_id, inv in by_txn.items():
        mine = [c for c in charges if c.transaction_id == txn_id]
        parts[inv.id] = ChargedPart(
            from_available=from_available.get(txn_id, 0),
            to_charge=to_charge.get(txn_id, 0),
            later=later.get(txn_id, {}),
            confirmed=sum(c.amount_minor for c in mine if c.status == "confirmed"),
            pending=sum(c.amount_minor for c in mine if c.status == "pending"),
            failed=sum(c.amount_minor for c in mine if c.status == "failed"),
        )
    return parts


def _charged_step(step: Mapping[str, Any]) -> bool:
    return str(step.get("description", "")).startswith("Charged via")


def steps_as_they_stand(invoice: Invoice, part: ChargedPart | None) -> list[dict[str, Any]]:
    """The invoice's payment steps: those of its issue paid from the wallet, and the charge as it stands now (paid,
    still owed, paid later from the wallet, cancelled). A document whose figures do not agree with the ledger (none
    known) is shown as issued."""
    issued: list[dict[str, Any]] = list(invoice.document.get("steps") or [])
    if part is None or part.to_charge <= 0 or part.cancelled < 0:
        return issued
    kept = [step for step in issued if not _charged_step(step)]
    steps = kept + part.steps(invoice.currency)
    if sum(int(step["amount"]["amount_minor"]) for step in steps) != invoice.gross_minor:
        return issued
    return steps


async def invoice_document(session: AsyncSession, invoice: Invoice) -> dict[str, Any]:
    """The invoice's document as served (JSON and PDF): as issued, with its payment steps as they stand."""
    parts = await charged_parts(session, [invoice])
    return {**invoice.document, "steps": steps_as_they_stand(invoice, parts.get(invoice.id))}


def invoice_summary(i: Invoice) -> schemas.InvoiceSummary:
    return schemas.InvoiceSummary(
        id=i.id,
        number=i.document["number"],
        kind=i.kind,
        business_id=i.business_id,
        net=MoneyOut(i.net_minor, i.currency),
        vat=MoneyOut(i.vat_minor, i.currency),
        gross=MoneyOut(i.gross_minor, i.currency),
        vat_rate_bp=i.vat_rate_bp,
        issued_at=i.issued_at,
        corrects_invoice_id=i.corrects_invoice_id,
    )


def invoice_detail(i: Invoice, document: dict[str, Any] | None = None) -> schemas.InvoiceDetail:
    s = invoice_summary(i)
    return schemas.InvoiceDetail(
        **{f: getattr(s, f) for f in s.__struct_fields__}, document=i.document if document is None else document
    )


async def invoice_for(session: AsyncSession, principal: Principal, invoice_id: str) -> Invoice:
    invoice = await session.get(Invoice, invoice_id)
    if invoice is None or (principal.kind == "business" and invoice.business_id != principal.id):
        raise NotFound(f"no invoice {invoice_id}")
    return invoice


async def invoices_for(
    session: AsyncSession, principal: Principal, business_id: str | None, limit: int, cursor: str | None
) -> tuple[list[schemas.InvoiceSummary], str | None]:
    query = select(Invoice)
    if principal.kind == "business":
        if business_id is not None and business_id != principal.id:
            raise InvalidInput.field("business_id", "a business lists its own invoices; only operators filter by one")
        query = query.where(Invoice.business_id == principal.id)
    elif business_id:
        query = query.where(Invoice.business_id == business_id)
    if check_cursor(cursor, "inv"):
        query = query.where(Invoice.id < cursor)
    rows = list(await session.scalars(query.order_by(Invoice.id.desc()).limit(limit + 1)))
    items = [invoice_summary(i) for i in rows[:limit]]
    return items, (items[-1].id if len(rows) > limit and items else None)


async def settlements_for(
    session: AsyncSession, principal: Principal, status: str | None, limit: int, cursor: str | None
) -> tuple[list[schemas.Settlement], str | None]:
    query = select(Settlement)
    if principal.kind == "business":
        query = query.where(Settlement.business_id == principal.id)
    if status:
        query = query.where(Settlement.status == status)
    if check_cursor(cursor, "stl"):
        query = query.where(Settlement.id < cursor)
    rows = list(await session.scalars(query.order_by(Settlement.id.desc()).limit(limit + 1)))
    items = [settlement_out(s) for s in rows[:limit]]
    return items, (items[-1].id if len(rows) > limit and items else None)


async def plan_versions(
    session: AsyncSession, limit: int, cursor: str | None
) -> tuple[list[CommissionPlanVersion], str | None]:
    """One page of the commission plan's versions, newest first, and the next page's cursor."""
    # By version, newest first (ids made in the same instant need not sort as versions do); the cursor is the last
    # version's id.
    query = select(CommissionPlanVersion).order_by(CommissionPlanVersion.version.desc())
    if check_cursor(cursor, "plan"):
        after = select(CommissionPlanVersion.version).where(CommissionPlanVersion.id == cursor)
        query = query.where(CommissionPlanVersion.version < after.scalar_subquery())
    rows = list(await session.scalars(query.limit(check_limit(limit) + 1)))
    return page_of(rows, limit, lambda r: r.id)
