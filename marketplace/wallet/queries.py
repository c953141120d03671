"""Reading the wallet: a business's balances and entries, invoices, settlements."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlalchemy import exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.clock import utcnow
from marketplace.db.models import (
    Business,
    Exposure,
    Invoice,
    LedgerAccount,
    LedgerPosting,
    LedgerTransaction,
    Settlement,
)
from marketplace.errors import InvalidInput, NotFound
from marketplace.exposures.rules import RETURNABLE
from marketplace.http.pagination import check_cursor
from marketplace.identity.services import Principal
from marketplace.schemas import MoneyOut
from marketplace.settings import Settings
from marketplace.wallet import schemas
from marketplace.wallet.ledger import AccountKind, TransferKind


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
        # (wallet.services.refuse_new_leads_over_limit).
        limit = standing_limit(settings, business.credit_limit_minor)
    else:
        limit = await credit_limit(session, settings, business_id, business.credit_limit_minor)
    available = balances.get(AccountKind.AVAILABLE, 0)
    owed_beyond_credit = max(0, balances.get(AccountKind.RECEIVABLE, 0) - balances.get(AccountKind.CREDIT, 0))
    # A lead buyer's earnings can be paid out; a deal maker's are credit only, and a blocked account withdraws nothing.
    withdrawable = business.mode == "lead_buyer" and business.status != "blocked"
    credit = balances.get(AccountKind.CREDIT, 0)
    held_in = await held_earnings(session, settings, business_id, cur) if available > 0 or credit > 0 else {}
    held = sum(held_in.values())
    held_available = held_in.get(AccountKind.AVAILABLE, 0)
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
        withdrawable_amount=MoneyOut(
            max(0, available - owed_beyond_credit - held_available) if withdrawable else 0, cur
        ),
        held=MoneyOut(held, cur),
    )


# How long past a purchase's return deadline its seller's earnings stay held: a return that began before the
# deadline may still be committing.
RETURN_SETTLING = timedelta(hours=1)
# A seller earns from its sold lead's purchase (lead_earnings) and from the commission on the deal made of it (its
# share of a deal_commission): each is held until what it was paid from is paid (and a purchase until it can no
# longer be returned).
_EARNING_KINDS = (TransferKind.LEAD_EARNINGS.value, TransferKind.DEAL_COMMISSION.value)


async def credit_limit(session: AsyncSession, settings: Settings, business_id: str, own_limit_minor: int | None) -> int:
    """How much a business may owe through the payment provider: its own limit (an operator's), else the
    marketplace's default once it has paid a charge of its own, and the smaller first limit until then."""
    limit = standing_limit(settings, own_limit_minor)
    if own_limit_minor is not None or settings.wallet.first_credit_limit_minor >= limit:
        return limit
    return limit if await has_paid(session, business_id) else settings.wallet.first_credit_limit_minor


def standing_limit(settings: Settings, own_limit_minor: int | None) -> int:
    """An operator's limit for the business, else the marketplace's default: what a business known to pay may owe."""
    return settings.wallet.default_credit_limit_minor if own_limit_minor is None else own_limit_minor


def within_first_limit(settings: Settings, own_limit_minor: int | None, owing_minor: int) -> bool:
    """Whether owing this much is allowed whatever the business's history (so that the hot path reads none)."""
    limit = standing_limit(settings, own_limit_minor)
    if own_limit_minor is None:
        limit = min(settings.wallet.first_credit_limit_minor, limit)
    return owing_minor <= limit


async def has_paid(session: AsyncSession, business_id: str) -> bool:
    """Whether a charge of the business's own has been received (an operator confirmed its bank transfer) for
    something it kept: a lead it returned gave the money back (as credit), so paying for it proves nothing."""
    paid = await session.scalar(
        select(Settlement.id)
        .where(
            Settlement.business_id == business_id,
            Settlement.direction == "charge",
            Settlement.status == "confirmed",
            ~exists().where(Exposure.id == Settlement.reference, Exposure.status == "returned"),
        )
        .limit(1)
    )
    return paid is not None


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
        select(LedgerPosting, LedgerAccount.kind.label("account_kind"), LedgerTransaction)
        .join(LedgerAccount, LedgerAccount.id == LedgerPosting.account_id)
        .join(LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id)
        .where(LedgerAccount.owner == "business", LedgerAccount.owner_id == business_id)
    )
    if cursor is not None:
        query = query.where(LedgerPosting.id < cursor)
    if since is not None:
        query = query.where(LedgerTransaction.created_at >= since)
    if until is not None:
        query = query.where(LedgerTransaction.created_at < until)
    if kind:
        query = query.where(LedgerTransaction.kind == kind)
    rows = (await session.execute(query.order_by(LedgerPosting.id.desc()).limit(limit + 1))).all()
    items = [
        schemas.Entry(
            posting_id=str(posting.id),
            transaction_id=txn.id,
            kind=txn.kind,
            account=account_kind,
            amount=MoneyOut(posting.amount_minor * AccountKind(account_kind).normal_sign, posting.currency),
            memo=txn.memo,
            reference=txn.reference,
            at=txn.created_at,
        )
        for posting, account_kind, txn in rows[:limit]
    ]
    return items, (str(items[-1].posting_id) if len(rows) > limit and items else None)


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


def invoice_detail(i: Invoice) -> schemas.InvoiceDetail:
    s = invoice_summary(i)
    return schemas.InvoiceDetail(**{f: getattr(s, f) for f in s.__struct_fields__}, document=i.document)


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
