"""What a unit of work may remember: the objects it loaded (for its own life) and ledger account ids (once
committed, for the process's life), and never an id a rollback took back."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar
from sqlalchemy import event, select

from marketplace.db.models import LedgerAccount
from marketplace.wallet import store
from marketplace.wallet.ledger import AccountKind, business_account


def count_statements(app: Litestar, like: str) -> list[str]:
    seen: list[str] = []

    @event.listens_for(app.state.engine.sync_engine, "before_cursor_execute")
    def _count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if like in statement:
            seen.append(statement)

    return seen


def keys(business_id: str) -> set[Any]:
    return {(business_account(business_id, kind), "ILS") for kind in (AccountKind.AVAILABLE, AccountKind.CREDIT)}


async def test_account_ids_are_read_once_committed_and_then_from_memory(app: Litestar) -> None:
    reads = count_statements(app, "FROM ledger_accounts")
    async with app.state.uow() as uow:
        created = await store.account_ids(uow.session, keys("biz_cached"))
    first = len(reads)
    assert first >= 1
    async with app.state.uow() as uow:
        assert await store.account_ids(uow.session, keys("biz_cached")) == created
    assert len(reads) == first  # no statement: both ids were committed


async def test_an_account_created_by_a_rolled_back_transaction_is_not_remembered(app: Litestar) -> None:
    class Abort(Exception):
        pass

    with pytest.raises(Abort):
        async with app.state.uow() as uow:
            gone = await store.account_ids(uow.session, keys("biz_rolled_back"))
            raise Abort
    async with app.state.uow() as uow:
        again = await store.account_ids(uow.session, keys("biz_rolled_back"))
        rows = await uow.session.execute(
            select(LedgerAccount.code, LedgerAccount.id).where(LedgerAccount.owner_id == "biz_rolled_back")
        )
        stored = {code: account_id for code, account_id in rows}
    assert sorted(again.values()) == sorted(stored.values())
    # SQLite may hand a rolled-back rowid out again, PostgreSQL never: either way the ids used are the stored ones.
    assert len(gone) == len(again)


async def test_a_unit_of_work_reads_an_object_once_even_when_nobody_holds_it(app: Litestar) -> None:
    async with app.state.uow() as uow:
        await store.account_ids(uow.session, keys("biz_kept"))
    reads = count_statements(app, "FROM ledger_accounts")
    async with app.state.uow() as uow:
        account_id = (
            await uow.session.scalars(select(LedgerAccount.id).where(LedgerAccount.owner_id == "biz_kept"))
        ).first()
        before = len(reads)
        await uow.session.get(LedgerAccount, account_id)  # loaded, then dropped by this code
        await uow.session.get(LedgerAccount, account_id)  # the session kept it: no second read
    assert len(reads) == before + 1


async def test_ids_seen_before_a_released_savepoint_are_forgotten_on_rollback(app: Litestar) -> None:
    """A savepoint's release is not the transaction's commit: a transfer posted (its savepoint released) in a unit
    of work that then fails must not leave the ids of the accounts that unit created in the cache, or the next
    account created (SQLite reuses rowids) would receive that business's money."""
    from marketplace.money import Money
    from marketplace.wallet.ledger import build_lead_earnings

    class Abort(Exception):
        pass

    with pytest.raises(Abort):
        async with app.state.uow() as uow:
            await store.lock_wallet(uow.session, "biz_savepoint", "ILS")  # creates its accounts, no savepoint
            earned = build_lead_earnings("earnings:savepoint", "biz_savepoint", "lead_buyer", Money(1_000, "ILS"))
            await store.post(uow.session, earned, business_id="biz_savepoint")  # its savepoint is released
            raise Abort
    async with app.state.uow() as uow:
        other = await store.account_ids(uow.session, keys("biz_other"))  # may take the rolled-back rowids
    async with app.state.uow() as uow:
        mine = await store.account_ids(uow.session, keys("biz_savepoint"))
        rows = await uow.session.execute(
            select(LedgerAccount.code, LedgerAccount.id).where(LedgerAccount.owner_id == "biz_savepoint")
        )
        stored = {code: account_id for code, account_id in rows}
    assert not set(mine.values()) & set(other.values())
    assert {code: account_id for (code, _), account_id in mine.items()} == stored


async def test_a_row_read_for_update_refreshes_the_object_the_session_already_holds(app: Litestar) -> None:
    from sqlalchemy import update

    async with app.state.uow() as uow:
        await store.account_ids(uow.session, keys("biz_locked"))
    async with app.state.uow() as uow:
        account = await an_account_of(uow.session, "biz_locked")
        # The row changes behind the object's back (as another transaction would before this one's lock).
        await uow.session.execute(
            update(LedgerAccount).where(LedgerAccount.id == account.id).values(balance_minor=777),
            execution_options={"synchronize_session": False},
        )
        assert account.balance_minor == 0
        assert await read_locked(uow.session, account.id) is account and account.balance_minor == 777
        got = await uow.session.get(LedgerAccount, account.id, with_for_update=True)
        assert got is account and got.balance_minor == 777


async def test_a_locking_read_keeps_the_changes_the_session_has_not_written_yet(app: Litestar) -> None:
    """Refreshing on FOR UPDATE must not discard a change made to the object before it (autoflush is off)."""
    async with app.state.uow() as uow:
        await store.account_ids(uow.session, keys("biz_pending"))
    async with app.state.uow() as uow:
        account = await an_account_of(uow.session, "biz_pending")
        account.balance_minor = 500  # not flushed yet
        assert await read_locked(uow.session, account.id) is account and account.balance_minor == 500
    async with app.state.uow() as uow:
        stored = await uow.session.scalar(select(LedgerAccount.balance_minor).where(LedgerAccount.id == account.id))
    assert stored == 500


async def an_account_of(session: Any, business_id: str) -> LedgerAccount:
    return (
        await session.scalars(select(LedgerAccount).where(LedgerAccount.owner_id == business_id).limit(1))
    ).one()


async def read_locked(session: Any, account_id: int) -> LedgerAccount:
    return (await session.scalars(select(LedgerAccount).where(LedgerAccount.id == account_id).with_for_update())).one()


async def test_a_row_attached_from_returning_is_a_clean_kept_object_and_refreshes_one_already_held(
    app: Litestar,
) -> None:
    import gc

    from sqlalchemy import insert, inspect, update

    from marketplace.db.models import InvoiceSequence
    from marketplace.db.statements import attach

    table = InvoiceSequence.__table__
    reads = count_statements(app, "FROM invoice_sequences")
    async with app.state.uow() as uow:
        session = uow.session
        await session.execute(insert(table).values(issuer="attach-test", next_number=5))
        row = (
            await session.execute(
                update(table).where(table.c.issuer == "attach-test").values(next_number=6).returning(*table.c)
            )
        ).one()
        attached = attach(session, InvoiceSequence, row)
        state = inspect(attached)
        assert state.persistent and not state.modified
        assert (attached.issuer, attached.next_number) == ("attach-test", 6)
        identity = id(attached)
        del attached, state
        gc.collect()
        # Kept for the unit of work, as loaded objects are: found by key without a statement.
        again = await session.get(InvoiceSequence, "attach-test")
        assert again is not None and id(again) == identity and again.next_number == 6
        assert reads == []

        row = (
            await session.execute(
                update(table).where(table.c.issuer == "attach-test").values(next_number=9).returning(*table.c)
            )
        ).one()
        refreshed = attach(session, InvoiceSequence, row)
        assert refreshed is again and again.next_number == 9 and not inspect(again).modified
        assert not session.dirty
