"""Withdrawals: a lead buyer's available balance paid out to its bank account, after what it owes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.db.models import (
    Business,
    LedgerTransaction,
    Settlement,
)
from marketplace.errors import InsufficientFunds, InvalidInput
from marketplace.identity.services import refuse_if_inactive
from marketplace.ids import key_digest
from marketplace.money import Money
from marketplace.settings import Settings
from marketplace.wallet import provider, store
from marketplace.wallet.debts import collect_debts, open_charges
from marketplace.wallet.ledger import (
    AccountKind,
    build_withdrawal,
)
from marketplace.wallet.offset import withdrawable
from marketplace.wallet.queries import RETURN_SETTLING, held_earnings


async def withdraw(
    session: AsyncSession, settings: Settings, business: Business, amount: Money, key: str
) -> Settlement:
    """A lead buyer takes money out of its available balance (never credit); the payout waits for an operator.

    What the business owes is paid first: its open debts are offset from the wallet (credit, then available, as
    for any charge), and only the available balance left after that can be paid out. Asking for more is a 409
    naming the open debts and what can be withdrawn; nothing is changed then.
    """
    if amount.currency != business.currency:
        raise InvalidInput.field("amount.currency", f"the wallet is in {business.currency}")
    if not amount.is_positive:
        raise InvalidInput.field("amount.amount_minor", "must be above zero")
    # Its status as of now, the row held against a block until this commits: a block that committed after the
    # request was let in refuses it here, and a block that comes after this payout is written finds it written.
    await refuse_if_inactive(session, business.id)  # a suspended one's earnings wait for its reactivation too
    ref = key_digest(key)  # a key may be longer than the references' columns take
    ledger_key = f"withdrawal:{business.id}:{ref}"
    transfer = build_withdrawal(
        ledger_key, business.id, business.mode, amount, memo="Withdrawal to the business's bank account"
    )
    balances = await store.lock_wallet(session, business.id, amount.currency)
    # Looked up with the wallet locked: a concurrent request with the same key has committed by now.
    done = await session.scalar(select(LedgerTransaction.id).where(LedgerTransaction.idempotency_key == ledger_key))
    if done is None:
        owed = Money(balances[AccountKind.RECEIVABLE], amount.currency)
        # As they stand before the collection below (which settles or cancels them in this transaction): a refusal
        # rolls that back and names them as they still are.
        debts = (
            [_OpenDebt.of(d) for d in await open_charges(session, business.id, amount.currency)]
            if owed.is_positive
            else []
        )
        if owed.is_positive:
            await collect_debts(session, settings, business.id, amount.currency)
            balances = await store.lock_wallet(session, business.id, amount.currency)
        available = Money(balances[AccountKind.AVAILABLE], amount.currency)
        held_in = await held_earnings(session, settings, business.id, amount.currency)
        held = Money(held_in[AccountKind.AVAILABLE], amount.currency)
        # What is still owed after that (a debt whose charge an operator is settling at this moment is passed over
        # by the collection, its row locked) stays in the wallet too: a payout never leaves a debt behind.
        still_owed = Money(balances[AccountKind.RECEIVABLE], amount.currency)
        free = withdrawable(available, still_owed, held)
        if free < amount:
            raise _not_withdrawable(amount, free, owed, debts, held)
    posted = await store.post(session, transfer, business_id=business.id, reference=f"withdrawal:{ref}")
    if posted.replayed:
        existing = await session.scalar(select(Settlement).where(Settlement.transaction_id == posted.transaction_id))
        assert existing is not None
        return existing
    settlement = await provider.in_use.payout(
        session, business.id, amount, transaction_id=posted.transaction_id, reference=f"withdrawal:{ref}"
    )
    await session.flush()
    return settlement


@dataclass(frozen=True, slots=True)
class _OpenDebt:
    """An open debt as a withdrawal read it, before its collection changed the row."""

    id: str
    amount: Money
    status: str
    reference: str | None

    @classmethod
    def of(cls, row: Settlement) -> _OpenDebt:
        return cls(row.id, Money(row.amount_minor, row.currency), row.status, row.reference)


def _duration(span: timedelta) -> str:
    """A span of whole minutes in words: "an hour", "2 hours", "30 minutes"."""
    minutes = int(span.total_seconds()) // 60
    if minutes % 60:
        return f"{minutes} minutes"
    return "an hour" if minutes == 60 else f"{minutes // 60} hours"


# How long past a purchase's return deadline its seller's earnings stay held (queries.RETURN_SETTLING), as a refusal
# says it.
_SETTLING = _duration(RETURN_SETTLING)


def _not_withdrawable(
    amount: Money, available: Money, owed: Money, debts: list[_OpenDebt], held: Money
) -> InsufficientFunds:
    """The refusal of a withdrawal: what can be withdrawn, the earnings held (until their buyers pay and can no longer
    return the leads), and the open debts that come first, by name."""
    extra: dict[str, object] = {"withdrawable": available.to_json(), "owed": owed.to_json(), "held": held.to_json()}
    waiting = (
        f" ({held} of earnings wait for the buyers of the leads sold to pay, or until {_SETTLING} after their return "
        "windows close)"
        if held.is_positive
        else ""
    )
    if not owed.is_positive:
        return InsufficientFunds(f"{amount} asked, {available} can be withdrawn{waiting}", extra=extra)
    extra["open_debts"] = [
        {"settlement_id": d.id, "amount": d.amount.to_json(), "status": d.status, "reference": d.reference}
        for d in debts
    ]
    named = ", ".join(f"{d.id} ({d.amount}, {d.status})" for d in debts) or "none listed"
    return InsufficientFunds(
        f"the business owes {owed} (open debts: {named}); what it owes is paid from the wallet before any "
        f"withdrawal, which leaves {available} to withdraw{waiting}, not {amount}",
        extra=extra,
    )
