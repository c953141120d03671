"""A returned lead: its price given back (open charges cancelled, paid available back to available, the rest as
credit) with a credit note per invoice, and what its seller and partner earned from it taken back.

Services never commit; each runs inside the caller's unit of work, so the money moves with the claim,
the status change or the return that caused it, or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.db.models import (
    Exposure,
    FraudRelease,
    Invoice,
    Lead,
    LedgerAccount,
    LedgerPosting,
    LedgerTransaction,
    Settlement,
)
from marketplace.money import Money
from marketplace.settings import Settings
from marketplace.wallet import provider, referrals, store
from marketplace.wallet.charges import business_of, qualifying_revenue
from marketplace.wallet.debts import OPEN_CHARGE, charge_key, collect_debts
from marketplace.wallet.invoice_pdf import PaymentStep
from marketplace.wallet.invoices import breakdown, issue_invoice
from marketplace.wallet.ledger import (
    AccountKind,
    build_earnings_reversal,
    build_lead_refund,
    earnings_account_kind,
)
from marketplace.wallet.offset import plan_offset
from marketplace.wallet.plan_versions import plan_of
from marketplace.wallet.queries import (
    REFUND_CANCELLED,
    REFUND_TO,
    ChargedPart,
    charged_parts,
)
from marketplace.wallet.vat import VatBreakdown


async def claim_returned(session: AsyncSession, settings: Settings, lead: Lead, exposure: Exposure) -> None:
    """A claim of a partner's lead was returned: the qualified-lead fee it earned is taken back, and the claim of a
    business still holding the lead that qualifies it (the earliest: a lead buyer's purchase, a deal maker's deal whose
    commission was charged; not one a block released) earns it instead."""
    if not lead.referral_code or not await referrals.take_back_qualified_fee(session, lead, exposure):
        return
    holders = list(
        await session.scalars(
            select(Exposure)
            .where(
                Exposure.lead_id == lead.id,
                Exposure.id != exposure.id,
                Exposure.status != "returned",
                (Exposure.mode != "deal_maker") | (Exposure.status == "paid"),
                ~exists().where(FraudRelease.exposure_id == Exposure.id),
            )
            .order_by(Exposure.created_at, Exposure.id)
        )
    )
    for holder in holders:
        price = qualifying_revenue(settings, holder)
        if price is not None:
            plan = await plan_of(session, settings, holder.plan_version_id)
            await referrals.reward_qualified_lead(session, plan, lead, holder, price)
            return


async def refund_exposure(session: AsyncSession, settings: Settings, exposure: Exposure) -> VatBreakdown | None:
    """A lead buyer's returned lead: its price comes back, first cancelling what is still unpaid of the
    charge, then what was paid from the available balance back to it (at the purchase, or later from earnings that
    paid the charge: withdrawable money stays withdrawable), the rest as wallet credit. Each credit note lists how.
    Returns what was given back: the gross, and the net and VAT it reverses (where prices are net, the net is the
    exposure's price and the gross what was paid for it, VAT on top).

    The lead's seller earned a share of that price (charge_exposure); the price is given back, so the share is
    taken back too (reverse_earnings), in the same transaction.
    """
    if exposure.price_minor <= 0:
        return None
    # The refund's postings by account kind: revenue and VAT debited with the net and VAT it reverses, the buyer's
    # accounts credited with their sum (build_lead_refund).
    refunded = dict(
        (
            await session.execute(
                select(LedgerAccount.kind, func.sum(LedgerPosting.amount_minor))
                .join(LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id)
                .join(LedgerAccount, LedgerAccount.id == LedgerPosting.account_id)
                .where(LedgerTransaction.idempotency_key == f"refund:{exposure.id}")
                .group_by(LedgerAccount.kind)
            )
        ).all()
    )
    if refunded:  # refunded before: what it gave back, and nothing moves again (its charges are gone)
        net = Money(int(refunded.get(AccountKind.REVENUE.value) or 0), exposure.currency)
        vat = Money(int(refunded.get(AccountKind.VAT_PAYABLE.value) or 0), exposure.currency)
        return VatBreakdown(net, vat, net + vat)
    business = await business_of(session, exposure.business_id)
    lead = await session.get(Lead, exposure.lead_id)
    seller_id = lead.seller_business_id if lead is not None else None
    charged = list(
        await session.scalars(
            select(Invoice)
            .where(
                Invoice.business_id == business.id,
                Invoice.kind == "invoice",
                Invoice.transaction_id.in_(
                    select(LedgerTransaction.id).where(LedgerTransaction.reference == exposure.id)
                ),
            )
            .order_by(Invoice.number)
        )
    )
    amount = breakdown(settings, Money(exposure.price_minor, exposure.currency))
    # The price is the invoices' gross where prices include VAT (Israel), their net where they do not (Germany).
    priced = (lambda i: i.gross_minor) if settings.jurisdiction.prices_include_vat else (lambda i: i.net_minor)
    invoiced_exactly = bool(charged) and sum(priced(i) for i in charged) == exposure.price_minor
    if invoiced_exactly:
        # Reverse exactly what was invoiced: a purchase and its upgrade to exclusive each rounded their own VAT,
        # which can differ by an agora from the VAT of the whole price at once.
        amount = VatBreakdown(
            Money(sum(i.net_minor for i in charged), exposure.currency),
            Money(sum(i.vat_minor for i in charged), exposure.currency),
            Money(sum(i.gross_minor for i in charged), exposure.currency),
        )
    # A failed charge is as unpaid as a pending one (its debt stays open): both are cancelled, never credited.
    pending = list(
        await session.scalars(
            select(Settlement)
            .where(
                Settlement.business_id == business.id,
                Settlement.reference == exposure.id,
                Settlement.direction == "charge",
                Settlement.status.in_(OPEN_CHARGE),
            )
            .with_for_update()
        )
    )
    unpaid = Money(sum(s.amount_minor for s in pending), exposure.currency)
    cancel = min(unpaid, amount.gross)
    # What the buyer paid out of its available balance (at the purchase, or later from its earnings for the charge it
    # left) goes back there: withdrawable money stays withdrawable. Read before the charges are cancelled below.
    refunds = _refund_parts(amount, cancel, charged if invoiced_exactly else [], await charged_parts(session, charged))
    to_available = Money.sum((r.to_available for r in refunds), exposure.currency)
    # Buyer and seller locked in one order, as for the purchase that paid the seller (store.lock_wallets).
    wallets = {business.id} | ({seller_id} if seller_id else set())
    locked = await store.lock_wallets(session, wallets, exposure.currency)
    posted = await store.post(
        session,
        build_lead_refund(
            f"refund:{exposure.id}",
            business.id,
            amount,
            cancel_receivable=cancel if cancel.is_positive else None,
            to_available=to_available if to_available.is_positive else None,
            memo=f"Returned lead {exposure.lead_id}",
        ),
        business_id=business.id,
        reference=exposure.id,
    )
    if not posted.replayed:
        for settlement in pending:
            settlement.status = "cancelled"
        if invoiced_exactly:  # a credit note for each invoice (a purchase, its upgrade), for what that one said
            for original, refund in zip(charged, refunds, strict=True):
                issue_invoice(
                    session,
                    settings,
                    business,
                    VatBreakdown(
                        Money(original.net_minor, original.currency),
                        Money(original.vat_minor, original.currency),
                        Money(original.gross_minor, original.currency),
                    ),
                    f"Credit note: returned lead {exposure.lead_id}",
                    transaction_id=posted.transaction_id,
                    corrects=original,
                    steps=refund.steps(),
                )
        else:
            (refund,) = refunds
            issue_invoice(
                session,
                settings,
                business,
                amount,
                f"Credit note: returned lead {exposure.lead_id}",
                transaction_id=posted.transaction_id,
                corrects=charged[0] if charged else None,
                steps=refund.steps(),
            )
    if seller_id is not None and seller_id != business.id:
        await reverse_earnings(session, exposure, seller_id)
    if lead is not None and lead.referral_code and not posted.replayed:  # once, with the refund itself
        await referrals.take_back_rewards(session, lead, exposure, amount.net)
    # Credit given back pays the buyer's other open debts first.
    if locked[business.id].get(AccountKind.RECEIVABLE, 0) > cancel.amount_minor and amount.gross > cancel:
        await collect_debts(session, settings, business.id, exposure.currency)
    return amount


@dataclass(frozen=True, slots=True)
class _Refund:
    """How one credit note's amount comes back: the open charge cancelled, to available, the rest as credit."""

    gross: Money
    cancelled: Money
    to_available: Money

    def steps(self) -> tuple[PaymentStep, ...]:
        parts = (
            (REFUND_CANCELLED, self.cancelled),
            (REFUND_TO[AccountKind.AVAILABLE], self.to_available),
            (REFUND_TO[AccountKind.CREDIT], self.gross - self.cancelled - self.to_available),
        )
        return tuple(PaymentStep(description, part) for description, part in parts if part.is_positive)


def _refund_parts(
    amount: VatBreakdown, cancel: Money, notes: list[Invoice], parts: Mapping[str, ChargedPart]
) -> list[_Refund]:
    """A refund of `amount` that cancels `cancel` of open charges, per credit note: one for each of `notes` (the
    invoices it corrects one by one), else one for the whole. Each gives back what its invoice's buyer paid from
    `available` to available, after its own open charge is cancelled; the rest is credit."""
    currency = amount.currency
    if not notes:
        paid = sum(part.paid_from_available for part in parts.values())
        return [_Refund(amount.gross, cancel, min(Money(paid, currency), amount.gross - cancel))]
    gross = [Money(note.gross_minor, currency) for note in notes]
    none = ChargedPart(from_available=0, to_charge=0, later={}, confirmed=0, pending=0, failed=0)
    part_of = [parts.get(note.id, none) for note in notes]
    owed = [Money(part.pending + part.failed, currency) for part in part_of]
    cancelled, left = [], cancel
    for index in range(len(notes)):  # each note's own open charge first
        cancelled.append(min(owed[index], gross[index], left))
        left = left - cancelled[index]
    for index in range(len(notes)):  # what is left (an open charge of the lead on no invoice: none known)
        more = min(left, gross[index] - cancelled[index])
        cancelled[index], left = cancelled[index] + more, left - more
    refunds = []
    for part, whole, cut in zip(part_of, gross, cancelled, strict=True):
        refunds.append(_Refund(whole, cut, min(Money(part.paid_from_available, currency), whole - cut)))
    return refunds


async def reverse_earnings(session: AsyncSession, exposure: Exposure, seller_id: str) -> Money | None:
    """Take back what a lead's seller earned for this exposure (its purchase and any upgrade), now that the buyer
    returned the lead and got its price back. It comes out of the account it was paid into, then the seller's other
    wallet account; what the seller has already spent is owed as an open debt (a charge, like any other), never a
    negative balance. Returns the amount taken back, or None when the seller earned nothing for it."""
    keys = [f"earnings:{step}:{exposure.id}" for step in ("purchase", "upgrade")]
    credited = await session.scalar(
        select(func.coalesce(func.sum(LedgerPosting.amount_minor), 0))
        .join(LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id)
        .join(LedgerAccount, LedgerAccount.id == LedgerPosting.account_id)
        .where(
            LedgerTransaction.idempotency_key.in_(keys),
            LedgerAccount.owner == "business",
            LedgerAccount.owner_id == seller_id,
            LedgerPosting.currency == exposure.currency,
        )
    )
    earned = -int(credited or 0)  # credits to a business account are negative postings
    if earned <= 0:
        return None
    seller = await business_of(session, seller_id)
    balances = await store.lock_wallet(session, seller_id, exposure.currency)
    taken = plan_offset(
        Money(earned, exposure.currency),
        Money(balances[AccountKind.CREDIT], exposure.currency),
        Money(balances[AccountKind.AVAILABLE], exposure.currency),
        available_first=earnings_account_kind(seller.mode) is AccountKind.AVAILABLE,
    )
    posted = await store.post(
        session,
        build_earnings_reversal(
            f"earnings-reversal:{exposure.id}",
            seller_id,
            taken,
            memo=f"Sold lead {exposure.lead_id} returned by its buyer: earnings reversed",
        ),
        business_id=seller_id,
        reference=exposure.id,
    )
    if not posted.replayed and taken.to_charge.is_positive:
        await provider.in_use.charge(
            session,
            seller_id,
            taken.to_charge,
            transaction_id=posted.transaction_id,
            reference=f"earnings-reversal:{exposure.id}",
            invoice_id=None,  # no sale: the marketplace takes back what it paid for the lead
            idempotency_key=charge_key(posted.transaction_id, 1),
        )
    return taken.total
