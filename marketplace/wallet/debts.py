"""Open debts and their collection.

What a business owes is its `receivable`, and each part of it is an open charge: a settlement in
`pending` (the provider is collecting it) or `failed`. A debt is collected (collect_debts) from wallet money as it
arrives (earnings, refunds, a failed payout), before any withdrawal, and by the `collect_debts` worker,
which also tries failed charges again on a schedule. Either way the charge it replaces is `cancelled` (paid from
the wallet, or superseded by the next attempt, which keeps its transaction, invoice and reference), so that the
open charges always add up to what is owed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, and_, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from marketplace.clock import utcnow
from marketplace.db.models import (
    LedgerAccount,
    Settlement,
)
from marketplace.db.statements import rows_changed
from marketplace.ids import new_id
from marketplace.money import Money
from marketplace.settings import Settings
from marketplace.uow import UnitOfWorkFactory
from marketplace.wallet import provider, store
from marketplace.wallet.ledger import (
    AccountKind,
    build_debt_offset,
)
from marketplace.wallet.offset import plan_offset
from marketplace.wallet.queries import spendable

OPEN_CHARGE = ("pending", "failed")
# A failed charge is tried again a day after it failed, then two, four, eight days after each further failure;
# after MAX_CHARGE_ATTEMPTS attempts it stays failed (open, visible) for an operator to pursue.
CHARGE_RETRY_AFTER = timedelta(days=1)
MAX_CHARGE_ATTEMPTS = 5


def charge_key(transaction_id: str, attempt: int) -> str:
    """The idempotency key of the n-th attempt to charge the debt a ledger transaction left open."""
    return f"charge:{transaction_id}:{attempt}"


async def collect_debts(session: AsyncSession, settings: Settings, business_id: str, currency: str) -> Money:
    """Pay a business's open debts from its wallet (credit, then available), oldest first. Returns what was paid.

    Each debt paid is one ledger transaction keyed on the charge it settles (`debt-offset:<settlement>`); the charge
    is cancelled at the provider (a pending one only if the provider can still stop it) and, when the wallet pays
    part of it, the rest is a new charge of the same debt. Charges another transaction holds right now (an operator
    confirming one) are skipped, not waited for: their wallet is locked after them elsewhere.
    """
    zero = Money.zero(currency)
    open_charges = list(
        await session.scalars(open_charges_query(business_id, currency).with_for_update(skip_locked=True))
    )
    if not open_charges:
        return zero
    balances = await store.lock_wallet(session, business_id, currency)
    credit, available = await spendable(session, settings, business_id, currency, balances)
    owed = balances[AccountKind.RECEIVABLE]
    paid_total = 0
    for charge in open_charges:
        payable = min(charge.amount_minor, credit + available, owed)
        if payable <= 0:
            break
        was = charge.status
        if was == "pending" and not await provider.in_use.cancel(session, charge):
            continue
        if not await close_charge(session, charge, was):
            continue
        paid = plan_offset(Money(payable, currency), Money(credit, currency), Money(available, currency))
        posted = await store.post(
            session,
            build_debt_offset(
                f"debt-offset:{charge.id}",
                business_id,
                paid,
                memo=f"Open debt paid from the wallet ({charge.reference or charge.id})",
            ),
            business_id=business_id,
            reference=charge.reference,
        )
        charge.confirmed_transaction_id = posted.transaction_id
        if payable < charge.amount_minor:
            await _next_attempt(session, charge, charge.amount_minor - payable, failed=was == "failed")
        credit -= paid.from_credit.amount_minor
        available -= paid.from_available.amount_minor
        owed -= payable
        paid_total += payable
    await session.flush()
    return Money(paid_total, currency)


async def close_charge(session: AsyncSession, charge: Settlement, was: str) -> bool:
    """Cancel an open charge (paid from the wallet, or superseded by a new attempt), if it is still as it was."""
    changed = await rows_changed(
        session,
        update(Settlement).where(Settlement.id == charge.id, Settlement.status == was).values(status="cancelled"),
    )
    if changed == 1:
        charge.status = "cancelled"  # the loaded row, in step with the update
    return changed == 1


def chain_query(charge: Settlement) -> Select[Settlement]:
    """Every charge of the debt this charge belongs to (the same ledger transaction)."""
    return select(Settlement).where(
        Settlement.business_id == charge.business_id,
        Settlement.transaction_id == charge.transaction_id,
        Settlement.direction == "charge",
    )


async def _chain(session: AsyncSession, charge: Settlement) -> list[Settlement]:
    """Every charge of the debt this charge belongs to (the same ledger transaction), one after the other."""
    return list(await session.scalars(chain_query(charge)))


def _failures(chain: list[Settlement]) -> int:
    """How many times a debt's charge failed: failed charges and those superseded by a retry carry the time of the
    failure and no transaction (one paid from the wallet links its debt offset; a confirmed one, the money in)."""
    return sum(1 for c in chain if c.confirmed_at is not None and c.confirmed_transaction_id is None)


async def _next_attempt(session: AsyncSession, previous: Settlement, amount_minor: int, *, failed: bool) -> Settlement:
    """The rest of a debt as a charge of its own, keeping the debt's transaction, invoice and reference.

    After a pending charge the provider is asked for the rest; after a failed one the rest stays failed with the
    same time of failure, so that the retry schedule decides when to charge it again."""
    amount = Money(amount_minor, previous.currency)
    if not failed:
        attempt = len(await _chain(session, previous)) + 1
        return await provider.in_use.charge(
            session,
            previous.payer,
            amount,
            transaction_id=previous.transaction_id,
            reference=previous.reference or previous.id,
            invoice_id=previous.invoice_id,
            idempotency_key=charge_key(previous.transaction_id, attempt),
        )
    rest = Settlement(
        id=new_id("stl"),
        business_id=previous.business_id,
        direction="charge",
        method=previous.method,
        amount_minor=amount_minor,
        currency=previous.currency,
        status="failed",
        transaction_id=previous.transaction_id,
        invoice_id=previous.invoice_id,
        reference=previous.reference,
        created_at=utcnow(),
        confirmed_at=previous.confirmed_at,
        confirmed_by=previous.confirmed_by,
    )
    session.add(rest)
    return rest


def retry_due(failed_at: datetime, failures: int, now: datetime) -> bool:
    """Whether a debt whose charge failed `failures` times, the last at failed_at, is to be charged again."""
    if failures >= MAX_CHARGE_ATTEMPTS:
        return False
    return now >= failed_at + CHARGE_RETRY_AFTER * 2 ** max(failures - 1, 0)


async def retry_failed_charges(
    session: AsyncSession, now: datetime, *, limit: int = 200, after: tuple[datetime, str] | None = None
) -> tuple[list[Settlement], tuple[datetime, str] | None]:
    """Charge again the failed debts whose time has come: each as a new attempt with its own idempotency key
    (`charge:<transaction>:<attempt>`), the failed charge superseded by it, so that a debt is charged once at a
    time however often (or concurrently) this runs. One page of candidates, oldest failure first, after `after`;
    returns the new charges and where the next page starts (None after the last)."""
    chain = aliased(Settlement)
    failures = (
        select(func.count())
        .select_from(chain)
        .where(
            chain.business_id == Settlement.business_id,
            chain.transaction_id == Settlement.transaction_id,
            chain.direction == "charge",
            chain.confirmed_at.is_not(None),
            chain.confirmed_transaction_id.is_(None),
        )
        .scalar_subquery()
    )
    query = (
        select(Settlement)
        .where(
            Settlement.direction == "charge",
            Settlement.status == "failed",
            Settlement.confirmed_at <= now - CHARGE_RETRY_AFTER,
            failures < MAX_CHARGE_ATTEMPTS,  # those left to an operator would fill every page
        )
        .order_by(Settlement.confirmed_at, Settlement.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if after is not None:
        query = query.where(tuple_(Settlement.confirmed_at, Settlement.id) > tuple_(*after))
    due = list(await session.scalars(query))
    retried = []
    for charge in due:
        debt = await _chain(session, charge)
        if charge.confirmed_at is None or not retry_due(charge.confirmed_at, _failures(debt), now):
            continue
        if not await close_charge(session, charge, "failed"):
            continue
        retried.append(
            await provider.in_use.charge(
                session,
                charge.payer,
                Money(charge.amount_minor, charge.currency),
                transaction_id=charge.transaction_id,
                reference=charge.reference or charge.id,
                invoice_id=charge.invoice_id,
                idempotency_key=charge_key(charge.transaction_id, len(debt) + 1),
            )
        )
    await session.flush()
    last = due[-1] if len(due) == limit else None
    return retried, (last.confirmed_at, last.id) if last is not None and last.confirmed_at is not None else None


@dataclass(frozen=True, slots=True)
class DebtCollection:
    businesses: int
    """Businesses whose wallet paid (part of) their debts."""
    retried: int
    """Failed charges tried again."""


async def collect_open_debts(uow_factory: UnitOfWorkFactory, settings: Settings, *, limit: int = 500) -> DebtCollection:
    """The worker's round: every business that owes and has wallet money pays from it (one transaction each, so a
    busy wallet holds up nobody else), then failed charges whose time has come are tried again."""
    # Driven by the open charges (settlements by status are indexed; owing businesses are few), not by a scan of
    # every wallet.
    async with uow_factory() as uow:
        rows = await uow.session.execute(
            select(Settlement.business_id, Settlement.currency)
            .join(
                LedgerAccount,
                and_(
                    LedgerAccount.owner_id == Settlement.business_id,
                    LedgerAccount.currency == Settlement.currency,
                    LedgerAccount.owner == "business",
                    LedgerAccount.kind.in_((AccountKind.CREDIT.value, AccountKind.AVAILABLE.value)),
                    LedgerAccount.balance_minor > 0,
                ),
            )
            .where(Settlement.direction == "charge", Settlement.status.in_(OPEN_CHARGE))
            .distinct()
            .limit(limit)
        )
        owing = [(str(owner_id), str(currency)) for owner_id, currency in rows]
    paid = 0
    for business_id, currency in owing:
        async with uow_factory() as uow:
            if (await collect_debts(uow.session, settings, business_id, currency)).is_positive:
                paid += 1
    now, retried, after = utcnow(), 0, None
    for _ in range(50):  # a page per transaction; what is left waits for the next round
        async with uow_factory() as uow:
            charged, after = await retry_failed_charges(uow.session, now, after=after)
        retried += len(charged)
        if after is None:
            break
    return DebtCollection(paid, retried)


def open_charges_query(business_id: str, currency: str) -> Select[Settlement]:
    """A business's open debts, oldest first: its charges still pending or failed."""
    return (
        select(Settlement)
        .where(
            Settlement.business_id == business_id,
            Settlement.currency == currency,
            Settlement.direction == "charge",
            Settlement.status.in_(OPEN_CHARGE),
        )
        .order_by(Settlement.created_at, Settlement.id)
    )


async def open_charges(session: AsyncSession, business_id: str, currency: str) -> list[Settlement]:
    return list(await session.scalars(open_charges_query(business_id, currency)))
