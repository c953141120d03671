"""Writing transfers to the database ledger: accounts, postings, the transaction row, and balances kept in step.

One transfer is one savepoint: the business balances move by conditional UPDATEs (a balance that would go
below zero stops the whole transfer), the postings are inserted, then the transaction row, which the
database accepts only if the postings balance. A retry with the same idempotency key moves nothing and
returns the first transaction. Marketplace accounts keep no running balance (they would be a hot row in
every transfer); their balances are sums of postings.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, bindparam, event, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from marketplace.clock import utcnow
from marketplace.db.models import LedgerAccount, LedgerPosting, LedgerTransaction
from marketplace.db.statements import insert_for, table
from marketplace.errors import InsufficientFunds
from marketplace.ids import new_id
from marketplace.money import Money
from marketplace.uow import after_commit
from marketplace.wallet.credit import WalletEased
from marketplace.wallet.ledger import (
    AccountKey,
    AccountKind,
    IdempotencyConflict,
    Posting,
    Transfer,
    TransferKind,
    business_account,
)

BUSINESS_KINDS = (AccountKind.AVAILABLE, AccountKind.CREDIT, AccountKind.RECEIVABLE)


@dataclass(frozen=True, slots=True)
class Posted:
    transaction_id: str
    replayed: bool


async def account_ids(session: AsyncSession, keys: set[tuple[AccountKey, str]]) -> dict[tuple[str, str], int]:
    """Ids of (account, currency) pairs, creating the accounts that do not exist yet."""
    wanted = {(key.code, currency): key for key, currency in keys}
    known = _known_ids(session)
    found = {pair: known[pair] for pair in wanted if pair in known}
    if len(found) < len(wanted):
        found.update(await _load_ids(session, {pair for pair in wanted if pair not in found}))
    # Sorted, so that concurrent first uses insert (and wait on) the same rows in the same order.
    missing = sorted(pair for pair in wanted if pair not in found)
    if missing:
        now = utcnow()
        rows = [
            {
                "code": code,
                "owner": wanted[(code, currency)].owner,
                "owner_id": wanted[(code, currency)].owner_id,
                "kind": wanted[(code, currency)].kind.value,
                "currency": currency,
                "balance_minor": 0,
                "non_negative": wanted[(code, currency)].is_business,
                "created_at": now,
            }
            for code, currency in missing
        ]
        await insert_ignore(session, LedgerAccount, rows)
        found.update(await _load_ids(session, set(missing)))
    return found


# An account's id never changes and no account is ever deleted, so ids once committed are kept per database for
# the process's life. Ids a transaction read wait in its session until it commits: an account it created itself
# would vanish with a rollback.
_COMMITTED_IDS: weakref.WeakKeyDictionary[Engine, dict[tuple[str, str], int]] = weakref.WeakKeyDictionary()
_SEEN = "ledger_account_ids"
# The balances of the business wallets this transaction locked (lock_wallets), kept in step by its transfers: what
# post tells a transfer that lowered what a business owes or added to its wallet (WalletEased) with, no read.
_LOCKED = "ledger_locked_balances"


def _known_ids(session: AsyncSession) -> dict[tuple[str, str], int]:
    return _COMMITTED_IDS.get(session.sync_session.get_bind(), {})  # type: ignore[arg-type]


@event.listens_for(Session, "after_commit")
def _keep_committed_ids(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint released (SQLAlchemy calls that a commit too): the transaction may still roll back
    session.info.pop(_LOCKED, None)
    seen = session.info.pop(_SEEN, None)
    if seen:
        _COMMITTED_IDS.setdefault(session.get_bind(), {}).update(seen)  # type: ignore[arg-type]


@event.listens_for(Session, "after_soft_rollback")
def _drop_seen_ids(session: Session, _transaction: Any) -> None:
    session.info.pop(_SEEN, None)
    # A savepoint rolled back too: the balances it moved are no longer known (a wallet locked again is).
    session.info.pop(_LOCKED, None)


async def insert_ignore(session: AsyncSession, model: Any, rows: dict[str, Any] | list[dict[str, Any]]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING on either database (rows another transaction may create too)."""
    await session.execute(insert_for(session)(model).values(rows).on_conflict_do_nothing())


async def _load_ids(session: AsyncSession, pairs: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    if not pairs:
        return {}
    codes = {code for code, _ in pairs}
    rows = await session.execute(
        select(LedgerAccount.code, LedgerAccount.currency, LedgerAccount.id).where(LedgerAccount.code.in_(codes))
    )
    loaded = {(r.code, r.currency): r.id for r in rows if (r.code, r.currency) in pairs}
    session.info.setdefault(_SEEN, {}).update(loaded)
    return loaded


# Locked in ascending id order (see lock_wallets); built once, as every charge runs it.
_LOCK_ACCOUNTS = (
    select(LedgerAccount.owner_id, LedgerAccount.kind, LedgerAccount.balance_minor)
    .where(LedgerAccount.id.in_(bindparam("ids", expanding=True)))
    .order_by(LedgerAccount.id)
    .with_for_update()
)


async def lock_wallet(session: AsyncSession, business_id: str, currency: str) -> dict[AccountKind, int]:
    """Lock a business's accounts (creating them) and return their balances, so a plan computed from them
    (an offset, a credit limit) cannot be overtaken by a concurrent charge before it is posted."""
    return (await lock_wallets(session, [business_id], currency))[business_id]


async def lock_wallets(
    session: AsyncSession, business_ids: Iterable[str], currency: str
) -> dict[str, dict[AccountKind, int]]:
    """Lock the accounts of several businesses at once, in ascending id order, and return their balances.

    A transfer between two businesses (a purchase that earns the lead's seller its share) locks both wallets
    here before moving either: locking the payer's first and the seller's on update would deadlock against the
    seller buying one of the payer's leads at the same moment.
    """
    wanted = sorted(set(business_ids))
    keys = {(business_account(business_id, kind), currency) for business_id in wanted for kind in BUSINESS_KINDS}
    ids = await account_ids(session, keys)
    rows = await session.execute(_LOCK_ACCOUNTS, {"ids": sorted(ids.values())})
    balances: dict[str, dict[AccountKind, int]] = {business_id: {} for business_id in wanted}
    for r in rows:
        balances[r.owner_id][AccountKind(r.kind)] = r.balance_minor
    locked = session.info.setdefault(_LOCKED, {})
    for business_id, held in balances.items():
        locked[(business_id, currency)] = dict(held)
    return balances


async def post(
    session: AsyncSession, transfer: Transfer, *, business_id: str | None = None, reference: str | None = None
) -> Posted:
    transfer.validate()
    fingerprint = transfer.fingerprint()
    # Written first, asked after: a new key (nearly every call) costs no lookup. A key already used fails the
    # transaction row's unique constraint, or a balance the first use already moved, and the savepoint takes
    # back whatever this attempt wrote.
    try:
        async with session.begin_nested():
            transaction_id = await _write(session, transfer, fingerprint, business_id, reference)
    except (IntegrityError, InsufficientFunds):
        # Written before, by an earlier call or by a concurrent holder of the same key (PostgreSQL made this one
        # wait for it): on its key, or on a balance it already moved (a retried withdrawal of everything would
        # otherwise be refused).
        previous = await _previous(session, transfer.idempotency_key)
        if previous is None:
            raise
        return _replay(previous, fingerprint)
    _note_eased(session, transfer)
    return Posted(transaction_id, replayed=False)


def _note_eased(session: AsyncSession, transfer: Transfer) -> None:
    """Record, for the commit, each business this transfer took down what it owes (receivable) or up its wallet
    (credit, available), with its balances before and after (WalletEased): a layer above may offer it the leads it
    was passed over for. The ledger says what moved, not what follows from it. Balances come from the wallet's lock
    (lock_wallets), kept in step here; a purchase (a wallet down, a debt up) records nothing."""
    moved: dict[tuple[str, str], dict[AccountKind, int]] = {}
    for posting in transfer.postings:
        account = posting.account
        if account.is_business and account.owner_id is not None:
            deltas = moved.setdefault((account.owner_id, posting.amount.currency), {})
            deltas[account.kind] = deltas.get(account.kind, 0) + posting.balance_delta
    if not moved:
        return
    locked: dict[tuple[str, str], dict[AccountKind, int]] = session.info.get(_LOCKED, {})
    for (business_id, currency), deltas in moved.items():
        before = locked.get((business_id, currency))
        after = None
        if before is not None:
            after = {kind: before.get(kind, 0) + deltas.get(kind, 0) for kind in BUSINESS_KINDS}
            locked[(business_id, currency)] = after
        eased = deltas.get(AccountKind.RECEIVABLE, 0) < 0 or any(
            deltas.get(kind, 0) > 0 for kind in (AccountKind.CREDIT, AccountKind.AVAILABLE)
        )
        if eased:
            after_commit(session, WalletEased(business_id, currency, before, after))


async def _previous(session: AsyncSession, key: str) -> LedgerTransaction | None:
    return (
        await session.execute(select(LedgerTransaction).where(LedgerTransaction.idempotency_key == key))
    ).scalar_one_or_none()


def _replay(previous: LedgerTransaction, fingerprint: str) -> Posted:
    if previous.fingerprint != fingerprint:
        raise IdempotencyConflict.field("Idempotency-Key", "this key already moved different money")
    return Posted(previous.id, replayed=True)


# A transfer's statements, built once (every movement of money runs them; building a statement costs
# SQLAlchemy more than SQLite takes to run it). Core statements on the tables: no ORM objects are involved.
_ACCOUNTS, _POSTINGS, _TRANSACTIONS = table(LedgerAccount), table(LedgerPosting), table(LedgerTransaction)
# A business balance moves only if it stays at or above zero: the database decides, not a read before.
_MOVE_BALANCE = (
    update(_ACCOUNTS)
    .where(_ACCOUNTS.c.id == bindparam("account_id"), _ACCOUNTS.c.balance_minor + bindparam("delta") >= 0)
    .values(balance_minor=_ACCOUNTS.c.balance_minor + bindparam("delta"))
    .returning(_ACCOUNTS.c.id)
)
_INSERT_POSTINGS = insert(_POSTINGS)
_INSERT_TRANSACTION = insert(_TRANSACTIONS)


async def _write(
    session: AsyncSession, transfer: Transfer, fingerprint: str, business_id: str | None, reference: str | None
) -> str:
    ids = await account_ids(session, {(p.account, p.amount.currency) for p in transfer.postings})
    deltas: dict[int, int] = defaultdict(int)
    for posting in transfer.postings:
        if posting.account.is_business:
            deltas[ids[(posting.account.code, posting.amount.currency)]] += posting.balance_delta
    for account_id in sorted(deltas):
        delta = deltas[account_id]
        if delta == 0:
            continue
        changed = await session.execute(_MOVE_BALANCE, {"account_id": account_id, "delta": delta})
        if changed.first() is None:
            raise InsufficientFunds("the wallet does not hold enough for this")
    transaction_id = new_id("txn")
    await session.execute(
        _INSERT_POSTINGS,
        [
            {
                "transaction_id": transaction_id,
                "account_id": ids[(p.account.code, p.amount.currency)],
                "amount_minor": p.amount.amount_minor,
                "currency": p.amount.currency,
            }
            for p in transfer.postings
        ],
    )
    await session.execute(
        _INSERT_TRANSACTION,
        {
            "id": transaction_id,
            "idempotency_key": transfer.idempotency_key,
            "kind": transfer.kind.value,
            "memo": transfer.memo,
            "fingerprint": fingerprint,
            "business_id": business_id,
            "reference": reference,
            "created_at": utcnow(),
        },
    )
    return transaction_id


async def trial_balance(session: AsyncSession) -> dict[str, int]:
    """The sum of every posting per currency: zero, or the ledger is broken."""
    rows = await session.execute(
        select(LedgerPosting.currency, func.sum(LedgerPosting.amount_minor)).group_by(LedgerPosting.currency)
    )
    return {currency: int(total or 0) for currency, total in rows}


async def balance_mismatches(session: AsyncSession) -> list[tuple[str, str, int, int]]:
    """Business accounts whose kept balance differs from their postings: (code, currency, kept, derived)."""
    derived = (
        select(LedgerPosting.account_id, func.sum(LedgerPosting.amount_minor).label("total"))
        .group_by(LedgerPosting.account_id)
        .subquery()
    )
    rows = await session.execute(
        select(
            LedgerAccount.code, LedgerAccount.currency, LedgerAccount.kind, LedgerAccount.balance_minor, derived.c.total
        )
        .outerjoin(derived, derived.c.account_id == LedgerAccount.id)
        .where(LedgerAccount.non_negative.is_(True))
    )
    mismatches = []
    for r in rows:
        expected = int(r.total or 0) * AccountKind(r.kind).normal_sign
        if expected != r.balance_minor:
            mismatches.append((r.code, r.currency, r.balance_minor, expected))
    return mismatches


async def marketplace_balances(session: AsyncSession) -> list[tuple[str, str, int]]:
    """(account code, currency, balance in the account's normal terms) of the marketplace's accounts."""
    rows = await session.execute(
        select(LedgerAccount.code, LedgerAccount.kind, LedgerPosting.currency, func.sum(LedgerPosting.amount_minor))
        .join(LedgerPosting, LedgerPosting.account_id == LedgerAccount.id)
        .where(LedgerAccount.owner == "marketplace")
        .group_by(LedgerAccount.code, LedgerAccount.kind, LedgerPosting.currency)
        .order_by(LedgerAccount.code)
    )
    return [(code, currency, int(total) * AccountKind(kind).normal_sign) for code, kind, currency, total in rows]


async def transfer_of(session: AsyncSession, transaction_id: str) -> Transfer:
    """A written transaction as a Transfer again (to reverse it)."""
    row = await session.get(LedgerTransaction, transaction_id)
    if row is None:
        raise LookupError(transaction_id)
    postings = await session.execute(
        select(LedgerAccount.code, LedgerPosting.amount_minor, LedgerPosting.currency)
        .join(LedgerAccount, LedgerAccount.id == LedgerPosting.account_id)
        .where(LedgerPosting.transaction_id == transaction_id)
        .order_by(LedgerPosting.id)
    )
    return Transfer(
        row.idempotency_key,
        TransferKind(row.kind),
        tuple(Posting(AccountKey.parse(code), Money(amount, currency)) for code, amount, currency in postings),
        row.memo,
    )
