"""Settlements decided by an operator: a charge or payout confirmed (the money arrived or left) or failed."""

from __future__ import annotations

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.clock import utcnow
from marketplace.db.models import (
    LedgerAccount,
    LedgerPosting,
    LedgerTransaction,
    Settlement,
)
from marketplace.db.statements import rows_changed
from marketplace.errors import Conflict, InvalidInput, NotFound
from marketplace.identity.services import held_status
from marketplace.money import Money
from marketplace.settings import Settings
from marketplace.wallet import provider, store
from marketplace.wallet.debts import OPEN_CHARGE, chain_query, close_charge, collect_debts
from marketplace.wallet.ledger import (
    AccountKind,
    SettlementDirection,
    TransferKind,
    build_charge_received,
    build_provider_settlement,
    build_reversal,
)


async def confirm_settlement(
    session: AsyncSession, settings: Settings, settlement_id: str, operator: str, *, already_sent: bool = False
) -> Settlement:
    """The operator saw the money arrive (a charge) or leave (a payout): the ledger moves it through clearing.

    A charge is confirmed while it is pending, and also once it has failed while it is still the open debt (not
    cancelled: paid from the wallet, superseded by a later attempt, or its lead returned): a business whose charges
    failed, until the collector gave up or between two attempts, may pay by bank transfer all the same. The debt
    is paid once: its charges are locked first, and only its latest attempt, while none of them is confirmed, can
    be; a superseded charge's refusal names the attempt to confirm instead (_supersede_older_charges)."""
    settlement = await _settlement(session, settlement_id)
    if already_sent and settlement.direction != "payout":  # a charge's money comes in: nothing was sent
        raise InvalidInput.field(
            "already_sent", f"only a payout's confirmation takes already_sent; settlement {settlement.id} is a charge"
        )
    if settlement.status == "confirmed":
        return settlement
    others: list[Settlement] = []  # the debt's other charges, as they stand under the lock
    if settlement.direction == "charge":
        # Every attempt at this debt, held until the commit (in id order, as any two confirmations take them): of two
        # confirmations of one debt's charges at once, the second reads what the first did.
        chain = await session.scalars(
            chain_query(settlement).order_by(Settlement.id).with_for_update().execution_options(populate_existing=True)
        )
        others = sorted((c for c in chain if c.id != settlement.id), key=lambda c: (c.created_at, c.id))
    elif settlement.business_id is not None and settlement.status == "pending":
        # Its status as of now, the row held against a block until this commits (as a withdrawal holds it).
        status = await held_status(session, settlement.business_id)
        if not already_sent:  # the operator says the transfer left before the block: a fact to record, not refuse
            _refuse_payout_to_inactive(settlement, status)
    confirmable = or_(
        Settlement.status == "pending", and_(Settlement.status == "failed", Settlement.direction == "charge")
    )
    changed = await rows_changed(
        session,
        update(Settlement)
        .where(Settlement.id == settlement_id, confirmable)
        .values(status="confirmed", confirmed_at=utcnow(), confirmed_by=operator),
    )
    if changed != 1:
        settlement = await _decided_meanwhile(session, settlement_id)
        if settlement.status == "confirmed":  # by a repeat of this very call that got there first
            return settlement
        raise _not_confirmable(settlement, others)
    amount = Money(settlement.amount_minor, settlement.currency)
    if settlement.direction == "charge":
        await _supersede_older_charges(session, settlement, others)
        # Whoever earned from what this charge paid for (a sold lead's seller) may spend those earnings now: they pay
        # its open debts first. Every wallet locked in one order, as a purchase locks buyer and seller.
        earners = await _earned_from(session, settlement)
        await store.lock_wallets(session, (settlement.payer, *earners), settlement.currency)
        received = await store.post(
            session,
            build_charge_received(f"received:{settlement.id}", settlement.payer, amount),
            business_id=settlement.business_id,
            reference=settlement.id,
        )
        settlement.confirmed_transaction_id = received.transaction_id
        await store.post(
            session,
            build_provider_settlement(f"banked:{settlement.id}", amount, SettlementDirection.TO_BANK),
            reference=settlement.id,
        )
        for earner in earners:
            await collect_debts(session, settings, earner, settlement.currency)
    else:
        paid = await store.post(
            session,
            build_provider_settlement(f"paid-out:{settlement.id}", amount, SettlementDirection.FROM_BANK),
            reference=settlement.id,
        )
        settlement.confirmed_transaction_id = paid.transaction_id
    await session.refresh(settlement)
    return settlement


def _refuse_payout_to_inactive(payout: Settlement, status: str | None) -> None:
    """A business's payout leaves only while the business is active: one requested before a block (a confirmed fraud
    alert) or a suspension is not paid out after it. The operator fails it (the money goes back to the wallet, where
    it pays what the business owes) or, for a suspension, confirms it once the business is let back in. A transfer
    that had already left is recorded all the same (`already_sent`): the confirmation is a fact, not a permission."""
    sent = "; if the transfer had already left, confirm with ?already_sent=true to record it"
    if status == "blocked":
        raise Conflict(
            f"settlement {payout.id} is a payout to business {payout.business_id}, which is blocked: it is not paid "
            f"out; fail it (POST /v1/settlements/{payout.id}/fail) to return the money to the business's wallet"
            + sent,
            extra={"business_status": status},
        )
    if status == "suspended":
        raise Conflict(
            f"settlement {payout.id} is a payout to business {payout.business_id}, which is suspended: confirm it once "
            f"the business is let back in, or fail it (POST /v1/settlements/{payout.id}/fail) to return the money "
            "to its wallet" + sent,
            extra={"business_status": status},
        )


async def _supersede_older_charges(session: AsyncSession, charge: Settlement, others: list[Settlement]) -> None:
    """The charge being confirmed pays its debt: a debt is never collected twice. Each attempt cancels the one
    before it (the collector's and the wallet's conditional updates), so its debt has no other open or confirmed
    charge; should it ever have one, a newer attempt or a payment refuses this confirmation, naming it, and an
    older attempt still open is cancelled, superseded by this one (or the collector would charge it again): at the
    provider too when it is pending, as collect_debts cancels a charge the wallet paid. One the provider can no longer
    stop may yet collect the debt: this confirmation is refused, naming it, until its outcome is known. `others`: the
    debt's other charges, read under confirm_settlement's lock, oldest first."""
    for other in others:
        newer = (other.created_at, other.id) > (charge.created_at, charge.id)
        if other.status == "confirmed" or (newer and other.status in OPEN_CHARGE):
            raise _already_charged(charge, other)
    for other in others:
        if other.status not in OPEN_CHARGE:
            continue
        was = other.status
        if was == "pending" and not await provider.in_use.cancel(session, other):
            amount = Money(other.amount_minor, other.currency)
            raise Conflict(
                f"its debt is also charged as settlement {other.id} ({amount}, pending), which the payment provider "
                "can no longer stop: confirm or fail that one first",
                extra={"charge_of_debt": {"settlement_id": other.id, "status": was}},
            )
        await close_charge(session, other, was)


def _already_charged(charge: Settlement, other: Settlement) -> Conflict:
    """The refusal to confirm a charge whose debt is open, or was paid, as another charge."""
    amount = Money(other.amount_minor, other.currency)
    if other.status == "confirmed":
        detail = f"settlement {charge.id} is {charge.status}; its debt was paid as settlement {other.id} ({amount})"
    else:
        detail = (
            f"settlement {charge.id} is {charge.status}; its debt is open as settlement {other.id} ({amount}, "
            f"{other.status}): confirm that one"
        )
    return Conflict(detail, extra={"charge_of_debt": {"settlement_id": other.id, "status": other.status}})


def _not_confirmable(settlement: Settlement, others: list[Settlement]) -> Conflict:
    """Why a settlement that is not confirmed cannot be: a charge superseded by a later attempt at its debt (`others`,
    oldest first) names that attempt (the one an operator who saw the money arrive confirms instead)."""
    if settlement.direction == "charge":
        standing = [c for c in others if c.status in ("confirmed", *OPEN_CHARGE)]
        if standing:
            return _already_charged(settlement, standing[-1])
        return Conflict(
            f"settlement {settlement.id} is {settlement.status}; only a pending charge, or a failed one still owed, "
            "can be confirmed"
        )
    return Conflict(f"settlement {settlement.id} is {settlement.status}; only a pending one can be confirmed")


async def _earned_from(session: AsyncSession, charge: Settlement) -> list[str]:
    """The businesses (other than the payer) whose earnings were paid from what this charge is for."""
    if charge.reference is None:
        return []
    rows = await session.scalars(
        select(LedgerAccount.owner_id)
        .distinct()
        .join(LedgerPosting, LedgerPosting.account_id == LedgerAccount.id)
        .join(LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id)
        .where(
            LedgerTransaction.reference == charge.reference,
            LedgerTransaction.kind.in_((TransferKind.LEAD_EARNINGS.value, TransferKind.DEAL_COMMISSION.value)),
            LedgerAccount.owner == "business",
            LedgerAccount.kind.in_((AccountKind.AVAILABLE.value, AccountKind.CREDIT.value)),
            LedgerAccount.owner_id != charge.business_id,
        )
    )
    return sorted(r for r in rows if r is not None)


async def fail_settlement(session: AsyncSession, settings: Settings, settlement_id: str, operator: str) -> Settlement:
    """A charge that failed leaves the debt open (the receivable stays); a failed payout goes back to the wallet.
    Saying so again answers as the first time (as a confirmation does), and moves nothing."""
    settlement = await _settlement(session, settlement_id)
    if settlement.status == "failed":
        return settlement
    changed = await rows_changed(
        session,
        update(Settlement)
        .where(Settlement.id == settlement_id, Settlement.status == "pending")
        .values(status="failed", confirmed_at=utcnow(), confirmed_by=operator),
    )
    if changed != 1:
        settlement = await _decided_meanwhile(session, settlement_id)
        if settlement.status == "failed":  # by a repeat of this very call that got there first
            return settlement
        raise Conflict(f"settlement {settlement_id} is {settlement.status}; only a pending one can fail")
    if settlement.direction == "payout":
        # Back to the business's wallet, or owed again to the club operator or referrer it was paying.
        business_id = settlement.business_id
        original = await store.transfer_of(session, settlement.transaction_id)
        if business_id is not None:
            await store.lock_wallet(session, business_id, settlement.currency)
        memo = "Payout failed: " + ("back to the wallet" if business_id is not None else "owed again")
        await store.post(
            session,
            build_reversal(f"reversal:{settlement.id}", original, memo=memo),
            business_id=business_id,
            reference=settlement.id,
        )
        if business_id is not None:
            await collect_debts(session, settings, business_id, settlement.currency)
    await session.refresh(settlement)
    return settlement


async def _decided_meanwhile(session: AsyncSession, settlement_id: str) -> Settlement:
    """The settlement as another transaction left it: its decision committed between our read and our update (on
    PostgreSQL the update waited for it, then found the row no longer pending)."""
    settlement = await session.get(Settlement, settlement_id, populate_existing=True)
    assert settlement is not None
    return settlement


async def _settlement(session: AsyncSession, settlement_id: str) -> Settlement:
    settlement = await session.get(Settlement, settlement_id)
    if settlement is None:
        raise NotFound(f"no settlement {settlement_id}")
    return settlement
