"""What the marketplace owes club operators and referrers (`club_payable`, `referrer_payable`, one account each),
and its payout by an operator's bank transfer: booked from the payable to the provider's clearing at once, pending
until the transfer is confirmed (POST /v1/settlements/{id}/confirm), owed again if it fails."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.db.models import Club, LedgerAccount, LedgerPosting, LedgerTransaction, Referrer, Settlement
from marketplace.errors import InsufficientFunds, InvalidInput, NotFound
from marketplace.money import Money
from marketplace.schemas import MoneyOut
from marketplace.settings import Settings
from marketplace.wallet import schemas, store
from marketplace.wallet.ledger import AccountKey, AccountKind, build_payable_payout, marketplace_account
from marketplace.wallet.provider import PaymentProvider

KINDS = {
    AccountKind.CLUB_PAYABLE.value: AccountKind.CLUB_PAYABLE,
    AccountKind.REFERRER_PAYABLE.value: AccountKind.REFERRER_PAYABLE,
}


# What each payable account holds, credit positive: club operators' and referrers' accounts with their owner's id.
_OWED = (
    select(LedgerAccount.kind, LedgerAccount.owner_id, LedgerAccount.currency, func.sum(LedgerPosting.amount_minor))
    .join(LedgerPosting, LedgerPosting.account_id == LedgerAccount.id)
    .where(LedgerAccount.owner == "marketplace", LedgerAccount.kind.in_(list(KINDS)))
    .group_by(LedgerAccount.kind, LedgerAccount.owner_id, LedgerAccount.currency)
    .order_by(LedgerAccount.kind, LedgerAccount.owner_id)
)


async def payables(
    session: AsyncSession, account: str | None, limit: int, cursor: str | None
) -> tuple[list[schemas.Payable], str | None]:
    """Every club operator and referrer the marketplace owes something, with what it owes (credit balances), in
    order of account and owner; a page's cursor is its last `account:owner`."""
    if account is not None and account not in KINDS:
        raise InvalidInput.field("account", f"one of {', '.join(KINDS)}")
    after: tuple[str, str] | None = None
    if cursor:
        kind, _, owner = cursor.partition(":")
        if kind not in KINDS or not owner:
            raise InvalidInput.field("cursor", "not a cursor this list gave out")
        after = (kind, owner)
    query = _OWED
    if account is not None:
        query = query.where(LedgerAccount.kind == account)
    rows = sorted((kind, owner, currency, total) for kind, owner, currency, total in await session.execute(query))
    owed = [
        schemas.Payable(kind, owner, MoneyOut(-int(total), currency))
        for kind, owner, currency, total in rows  # sorted here: the database's collation may order otherwise
        if owner is not None and total and (after is None or (kind, owner) > after)
    ]
    items = owed[:limit]
    return items, (f"{items[-1].account}:{items[-1].owner}" if len(owed) > limit else None)


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
    """Pay a club operator or a referrer part or all of what it is owed. More than it is owed is a 409 naming what
    is; the account is locked while that is read, so two payouts at once cannot both take the same money."""
    amount = Money(data.amount.amount_minor, data.amount.currency)
    if amount.currency != settings.currency:
        raise InvalidInput.field("amount.currency", f"this marketplace works in {settings.currency}")
    if not amount.is_positive:
        raise InvalidInput.field("amount.amount_minor", "must be above zero")
    account = await _payee(session, KINDS[data.account], data.owner)
    ids = await store.account_ids(session, {(account, amount.currency)})
    account_id = ids[(account.code, amount.currency)]
    await session.execute(select(LedgerAccount.id).where(LedgerAccount.id == account_id).with_for_update())
    ledger_key = f"payable-payout:{account.code}:{key}"
    done = await session.scalar(select(LedgerTransaction.id).where(LedgerTransaction.idempotency_key == ledger_key))
    if done is None:
        owed = -int(
            await session.scalar(
                select(func.coalesce(func.sum(LedgerPosting.amount_minor), 0)).where(
                    LedgerPosting.account_id == account_id
                )
            )
            or 0
        )
        if amount.amount_minor > owed:
            raise InsufficientFunds(
                f"{amount} asked, {Money(owed, amount.currency)} is owed to {data.owner}",
                extra={"owed": Money(owed, amount.currency).to_json()},
            )
    transfer = build_payable_payout(ledger_key, account, amount, memo=f"Payout to {data.owner} ({data.account})")
    posted = await store.post(session, transfer, reference=f"payout:{data.owner}")
    if posted.replayed:
        existing = await session.scalar(select(Settlement).where(Settlement.transaction_id == posted.transaction_id))
        assert existing is not None
        return existing
    settlement = await provider.payout(
        session, None, amount, transaction_id=posted.transaction_id, reference=f"payout:{key}", payee=account.code
    )
    await session.flush()
    return settlement
