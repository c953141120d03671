"""The payment provider port, and its local implementation: bank transfer / manual settlement.

A charge or payout becomes a pending settlement; nothing counts as paid until an operator confirms that
the money arrived (or left), which moves it through the provider-clearing account in the ledger. Card
providers (the Sharetrust platform uses Mangopay) plug in behind the same port.
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
    ) -> Settlement: ...

    async def payout(
        self, session: AsyncSession, business_id: str, amount: Money, *, transaction_id: str, reference: str
    ) -> Settlement: ...


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
    ) -> Settlement:
        return self._record(session, "charge", business_id, amount, transaction_id, reference, invoice_id)

    async def payout(
        self, session: AsyncSession, business_id: str, amount: Money, *, transaction_id: str, reference: str
    ) -> Settlement:
        return self._record(session, "payout", business_id, amount, transaction_id, reference, None)

    def _record(
        self,
        session: AsyncSession,
        direction: str,
        business_id: str,
        amount: Money,
        transaction_id: str,
        reference: str,
        invoice_id: str | None,
    ) -> Settlement:
        settlement = Settlement(
            id=new_id("stl"),
            business_id=business_id,
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
