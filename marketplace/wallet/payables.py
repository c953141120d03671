"""What the marketplace owes club operators and referrers (`club_payable`, `referrer_payable`, one account each),
and its payout by an operator's bank transfer: booked from the payable to the provider's clearing at once, pending
until the transfer is confirmed (POST /v1/settlements/{id}/confirm), owed again if it fails.

Part of what is owed is held, and not paid out yet: a share of a commission, or a reward on a purchase, whose payer
has not paid (its charge is pending or failed: the marketplace has not received the money it would pay out of),
and a reward on a lead its buyer may still return (within the return window: the return takes the reward back).
A retention bonus stands on another purchase too, an earlier one of the same customer (wallet/referrals.py: the return
of the last of those takes it back): it is held until one of them can no longer be returned and its charge is paid."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from marketplace.clock import utcnow
from marketplace.db.models import (
    Club,
    Exposure,
    Lead,
    LeadContact,
    LedgerAccount,
    LedgerPosting,
    LedgerTransaction,
    Referrer,
    Settlement,
)
from marketplace.db.statements import starts_with
from marketplace.errors import FieldErrors, InsufficientFunds, InvalidInput, NotFound
from marketplace.exposures.rules import RETURNABLE
from marketplace.ids import key_digest
from marketplace.money import Money
from marketplace.schemas import MoneyOut
from marketplace.settings import Settings
from marketplace.wallet import schemas, store
from marketplace.wallet.ledger import AccountKey, AccountKind, build_payable_payout, marketplace_account
from marketplace.wallet.provider import PaymentProvider
from marketplace.wallet.referrals import RETENTION_PREFIX, TAKEN_BACK

KINDS = {
    AccountKind.CLUB_PAYABLE.value: AccountKind.CLUB_PAYABLE,
    AccountKind.REFERRER_PAYABLE.value: AccountKind.REFERRER_PAYABLE,
}
_PAYABLE = (LedgerAccount.owner == "marketplace", LedgerAccount.kind.in_(list(KINDS)))


async def _owed(session: AsyncSession, *where: ColumnElement[bool]) -> dict[int, tuple[str, str | None, str, int]]:
    """Per payable account: (kind, owner, currency, what it holds, credit positive)."""
    rows = await session.execute(
        select(
            LedgerAccount.id,
            LedgerAccount.kind,
            LedgerAccount.owner_id,
            LedgerAccount.currency,
            func.sum(LedgerPosting.amount_minor),
        )
        .join(LedgerPosting, LedgerPosting.account_id == LedgerAccount.id)
        .where(*_PAYABLE, *where)
        .group_by(LedgerAccount.id, LedgerAccount.kind, LedgerAccount.owner_id, LedgerAccount.currency)
    )
    return {r[0]: (r[1], r[2], r[3], -int(r[4] or 0)) for r in rows}


async def _held(session: AsyncSession, settings: Settings, now: datetime, account_ids: Sequence[int]) -> dict[int, int]:
    """Per payable account, what it holds that may not be paid out yet (see the module's docstring)."""
    if not account_ids:
        return {}
    unpaid = exists().where(
        Settlement.reference == LedgerTransaction.reference,
        Settlement.direction == "charge",
        Settlement.status.in_(("pending", "failed")),
    )
    cutoff = now - timedelta(days=settings.windows.return_days)  # returnable up to the deadline
    returnable = exists().where(
        Exposure.id == LedgerTransaction.reference,
        Exposure.status.in_(RETURNABLE),
        Exposure.created_at >= cutoff,
    )
    # A retention bonus (referral:retention:{step}:{exposure}[:n]) stands while an earlier purchase of the customer
    # does: held until one of them is final (kept, past its return window, its charge not pending or failed). One
    # taken back and its take-back (`:returned`) net to nothing, and are not held either.
    retention = starts_with(session, LedgerTransaction.idempotency_key, RETENTION_PREFIX)
    take_back = aliased(LedgerTransaction)
    taken_back = or_(
        LedgerTransaction.idempotency_key.endswith(TAKEN_BACK),
        exists().where(take_back.idempotency_key == LedgerTransaction.idempotency_key + TAKEN_BACK),
    )
    repeat, repeat_lead, repeat_contact = aliased(Exposure), aliased(Lead), aliased(LeadContact)
    earlier, earlier_lead, earlier_contact = aliased(Exposure), aliased(Lead), aliased(LeadContact)
    final_earlier = exists().where(
        repeat.id == LedgerTransaction.reference,
        repeat_lead.id == repeat.lead_id,
        repeat_contact.lead_id == repeat_lead.id,
        earlier_lead.referral_code == repeat_lead.referral_code,
        earlier_lead.id != repeat_lead.id,
        earlier_lead.created_at < repeat_lead.created_at,
        earlier_contact.lead_id == earlier_lead.id,
        earlier_contact.phone == repeat_contact.phone,
        earlier.lead_id == earlier_lead.id,
        earlier.status != "returned",
        or_(earlier.price_minor > 0, earlier.status == "paid"),  # a purchase, as _is_repeat_purchase counts one
        ~and_(earlier.status.in_(RETURNABLE), earlier.created_at >= cutoff),
        ~exists().where(
            Settlement.reference == earlier.id,
            Settlement.direction == "charge",
            Settlement.status.in_(("pending", "failed")),
        ),
    )
    rows = await session.execute(
        select(LedgerPosting.account_id, func.sum(LedgerPosting.amount_minor))
        .join(LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id)
        .where(
            LedgerPosting.account_id.in_(list(account_ids)),
            or_(unpaid, returnable, and_(retention, ~final_earlier)),
            ~and_(retention, taken_back),
        )
        .group_by(LedgerPosting.account_id)
    )
    return {account_id: max(0, -int(total or 0)) for account_id, total in rows}


def _payable(kind: str, owner: str, currency: str, owed: int, held: int) -> schemas.Payable:
    """Owed, the part of it held (never more than is owed), and the rest, which may be paid out now."""
    kept = min(held, max(owed, 0))
    return schemas.Payable(
        kind, owner, MoneyOut(owed, currency), MoneyOut(kept, currency), MoneyOut(max(0, owed - kept), currency)
    )


async def owed_to(session: AsyncSession, settings: Settings, kind: AccountKind, owner: str) -> schemas.Payable:
    """What the marketplace owes one club operator or referrer, in its currency: owed, held, payable now."""
    code, currency = marketplace_account(kind, owner).code, settings.currency
    owed = await _owed(session, LedgerAccount.code == code, LedgerAccount.currency == currency)
    ((account_id, (_, _, _, total)),) = owed.items() or [(0, ("", None, currency, 0))]
    held = (await _held(session, settings, utcnow(), [account_id])).get(account_id, 0)
    return _payable(kind.value, owner, currency, total, held)


async def payables(
    session: AsyncSession, settings: Settings, account: str | None, limit: int, cursor: str | None
) -> tuple[list[schemas.Payable], str | None]:
    """Every club operator and referrer the marketplace owes something: what it is owed, what of that is held, and
    what may be paid out now; in order of account and owner (a page's cursor is its last `account:owner`)."""
    if account is not None and account not in KINDS:
        raise InvalidInput.field("account", f"one of {', '.join(KINDS)}")
    after: tuple[str, str] | None = None
    if cursor:
        kind, _, owner = cursor.partition(":")
        if kind not in KINDS or not owner:
            raise InvalidInput.field("cursor", "not a cursor this list gave out")
        after = (kind, owner)
    owed = await _owed(session, *([LedgerAccount.kind == account] if account is not None else []))
    # Sorted here: the database's collation may order owners otherwise than the cursor compares them.
    listed = sorted(
        (kind, owner, account_id)
        for account_id, (kind, owner, _, total) in owed.items()
        if owner is not None and total and (after is None or (kind, owner) > after)
    )
    page = listed[:limit]
    held = await _held(session, settings, utcnow(), [account_id for _, _, account_id in page])
    items = [
        _payable(kind, owner, owed[account_id][2], owed[account_id][3], held.get(account_id, 0))
        for kind, owner, account_id in page
    ]
    return items, (f"{items[-1].account}:{items[-1].owner}" if len(listed) > limit else None)


async def _payee(session: AsyncSession, kind: AccountKind, owner: str) -> AccountKey:
    known = await session.get(Club if kind is AccountKind.CLUB_PAYABLE else Referrer, owner)
    if known is None:
        raise NotFound(f"no {'club' if kind is AccountKind.CLUB_PAYABLE else 'referrer'} {owner}")
    return marketplace_account(kind, owner)


async def pay_out(
    session: AsyncSession,
    settings: Settings,
    provider: PaymentProvider,
    data: schemas.PayableOut,
    key: str,
) -> Settlement:
    """Pay a club operator or a referrer part or all of what may be paid out now (owed, less what is held). More is
    a 409 naming what is owed, held and payable; the account is locked while that is read, so two payouts at once
    cannot both take the same money."""
    amount = Money(data.amount.amount_minor, data.amount.currency)
    found = FieldErrors()
    if amount.currency != settings.currency:
        found.add("amount.currency", f"this marketplace works in {settings.currency}")
    if not amount.is_positive:
        found.add("amount.amount_minor", "must be above zero")
    found.refuse_if_any("the payout is invalid")
    account = await _payee(session, KINDS[data.account], data.owner)
    ids = await store.account_ids(session, {(account, amount.currency)})
    account_id = ids[(account.code, amount.currency)]
    await session.execute(select(LedgerAccount.id).where(LedgerAccount.id == account_id).with_for_update())
    ref = key_digest(key)  # a key may be longer than the references' columns take
    ledger_key = f"payable-payout:{account.code}:{ref}"
    done = await session.scalar(select(LedgerTransaction.id).where(LedgerTransaction.idempotency_key == ledger_key))
    if done is None:
        now = await owed_to(session, settings, account.kind, data.owner)
        if amount.amount_minor > now.payable.amount_minor:
            owed, held, payable = (Money(m.amount_minor, m.currency) for m in (now.owed, now.held, now.payable))
            raise InsufficientFunds(
                f"{amount} asked, {payable} can be paid out to {data.owner} now ({owed} owed, {held} of it held "
                "until its payers pay and its leads can no longer be returned)",
                extra={"owed": owed.to_json(), "held": held.to_json(), "payable": payable.to_json()},
            )
    transfer = build_payable_payout(ledger_key, account, amount, memo=f"Payout to {data.owner} ({data.account})")
    posted = await store.post(session, transfer, reference=f"payout:{data.owner}")
    if posted.replayed:
        existing = await session.scalar(select(Settlement).where(Settlement.transaction_id == posted.transaction_id))
        assert existing is not None
        return existing
    settlement = await provider.payout(
        session, None, amount, transaction_id=posted.transaction_id, reference=f"payout:{ref}", payee=account.code
    )
    await session.flush()
    return settlement
