"""The payment provider port, and its local implementation: bank transfer / manual settlement.

A charge or payout becomes a pending settlement; nothing counts as paid until an operator confirms that
the money arrived (or left), which moves it through the provider-clearing account in the ledger. Card
providers (the Sharetrust platform uses Mangopay) plug in behind the same port.

Every charge carries an idempotency key bound to the debt and the attempt (``charge:<transaction>:<n>``): an
adapter passes it to its provider, so that a request sent twice (a worker delivered twice, a timeout) charges once.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.clock import utcnow
from marketplace.db.models import Settlement
from marketplace.ids import new_id
from marketplace.money import Money


class PaymentProvider(Protocol):
    method: str

    async def charge(
        self,
        session: AsyncSession,
        business_id: str,
        amount: Money,
        *,
        transaction_id: str,
        reference: str,
        invoice_id: str | None,
        idempotency_key: str,
    ) -> Settlement: ...

    async def payout(
        self,
        session: AsyncSession,
        business_id: str | None,
        amount: Money,
        *,
        transaction_id: str,
        reference: str,
        payee: str | None = None,
    ) -> Settlement:
        """Pay a business (`business_id`), or a club operator or referrer (`payee`: its payable account's code)."""
        ...

    async def cancel(self, session: AsyncSession, settlement: Settlement) -> bool:
        """Withdraw a pending charge before it collects (its debt was paid from the wallet instead); False when
        the provider can no longer stop it, so the debt waits for the charge's outcome."""
        ...


class ManualBankTransfer:
    """Records what is to be collected or paid out; an operator confirms each transfer seen on the bank account."""

    method = "bank_transfer"

    async def charge(
        self,
        session: AsyncSession,
        business_id: str,
        amount: Money,
        *,
        transaction_id: str,
        reference: str,
        invoice_id: str | None,
        idempotency_key: str,
    ) -> Settlement:
        # A bank transfer is a request to the business; the key's guard is the caller's conditional update of the
        # debt it charges (one attempt per debt at a time).
        return self._record(session, "charge", business_id, amount, transaction_id, reference, invoice_id)

    async def payout(
        self,
        session: AsyncSession,
        business_id: str | None,
        amount: Money,
        *,
        transaction_id: str,
        reference: str,
        payee: str | None = None,
    ) -> Settlement:
        return self._record(session, "payout", business_id, amount, transaction_id, reference, None, payee)

    async def cancel(self, session: AsyncSession, settlement: Settlement) -> bool:
        # Nothing is collected until an operator confirms the transfer, and a cancelled one can no longer be.
        return True

    def _record(
        self,
        session: AsyncSession,
        direction: str,
        business_id: str | None,
        amount: Money,
        transaction_id: str,
        reference: str,
        invoice_id: str | None,
        payee: str | None = None,
    ) -> Settlement:
        settlement = Settlement(
            id=new_id("stl"),
            business_id=business_id,
            payee=payee,
            direction=direction,
            method=self.method,
            amount_minor=amount.amount_minor,
            currency=amount.currency,
            status="pending",
            transaction_id=transaction_id,
            invoice_id=invoice_id,
            reference=reference,
            created_at=utcnow(),
        )
        session.add(settlement)
        return settlement


# The provider every charge, payout and cancellation goes through (a test swaps it here).
in_use: PaymentProvider = ManualBankTransfer()
