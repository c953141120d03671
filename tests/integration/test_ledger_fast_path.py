"""The fast ledger path (marketplace/wallet/fast_store.py) has store.post()'s semantics, on both databases.

On PostgreSQL it writes through the ledger_post_batch() function (migration 0004), one round trip per transfer
or per group commit; on SQLite it is store.post() itself, which these tests assert too. The same scripted
sequence of money movements (new, replayed, refused for funds, reused key, accounts not yet created, two
postings to one account) gives the same outcomes and the same balances through store.post(), through
fast_store.post() and through GroupCommitLedger, and the same as the in-memory ledger (the executable
statement of the rules).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from litestar import Litestar
from sqlalchemy import func, select, text

from marketplace.db.models import LedgerAccount, LedgerPosting, LedgerTransaction
from marketplace.errors import InsufficientFunds
from marketplace.money import Money
from marketplace.wallet import fast_store, store
from marketplace.wallet.ledger import (
    AccountKind,
    IdempotencyConflict,
    MemoryLedger,
    Posting,
    Transfer,
    TransferKind,
    build_charge_received,
    build_exposure_purchase,
    build_lead_earnings,
    build_partner_bonus,
    build_withdrawal,
    business_account,
    marketplace_account,
)
from marketplace.wallet.offset import OffsetPlan
from marketplace.wallet.store import Posted
from marketplace.wallet.vat import VatBreakdown

ILS = "ILS"
Outcome = tuple[str, str | None]  # ("new" | "replay" | "insufficient" | "conflict", transaction id)


def m(minor: int) -> Money:
    return Money(minor, ILS)


def purchase(key: str, business: str, *, credit: int = 0, available: int = 0, charge: int = 0) -> Transfer:
    gross = credit + available + charge
    vat = gross * 18 // 118
    price = VatBreakdown(m(gross - vat), m(vat), m(gross))
    return build_exposure_purchase(key, business, price, OffsetPlan(m(credit), m(available), m(charge)))


def script(p: str) -> list[Transfer]:
    """Money movements for businesses {p}a, {p}b and a club {p}club; keys prefixed so that runs don't meet."""
    a, b = f"{p}a", f"{p}b"
    same_account = Transfer(
        f"{p}k14",
        TransferKind.REVERSAL,
        (
            Posting(business_account(a, AccountKind.AVAILABLE), m(300)),
            Posting(business_account(a, AccountKind.AVAILABLE), m(-200)),
            Posting(marketplace_account(AccountKind.REVENUE), m(-100)),
        ),
    ).validate()
    return [
        build_lead_earnings(f"{p}k1", a, "lead_buyer", m(10_000)),  # a's available 100.00
        build_lead_earnings(f"{p}k2", a, "deal_maker", m(5_000)),  # a's credit 50.00
        # available (the older account, updated first) would do, credit would not: refused, available untouched
        purchase(f"{p}k2b", a, credit=6_000, available=100),
        purchase(f"{p}k3", a, credit=5_000, available=6_800),  # credit 0, available 32.00
        purchase(f"{p}k3", a, credit=5_000, available=6_800),  # a retry: replayed
        purchase(f"{p}k3", a, credit=5_000, available=6_700),  # the key for other money: conflict
        build_withdrawal(f"{p}k6", a, "lead_buyer", m(10_000)),  # more than a has: refused
        build_withdrawal(f"{p}k7", a, "lead_buyer", m(3_200)),  # exactly all: available 0
        build_withdrawal(f"{p}k8", a, "lead_buyer", m(1)),  # one agora below zero: refused
        purchase(f"{p}k9", b, available=1_000),  # b has no accounts yet: refused, none created
        purchase(f"{p}k10", b, charge=11_800),  # b owes 118.00 (receivable, debit-normal)
        build_charge_received(f"{p}k11", b, m(11_800)),  # paid: receivable 0
        build_charge_received(f"{p}k12", b, m(1)),  # receivable below zero: refused
        build_partner_bonus(f"{p}k13", marketplace_account(AccountKind.CLUB_PAYABLE, f"{p}club"), m(700)),
        same_account,  # a's available: -3.00 + 2.00 = -1.00 on 0: refused
        build_lead_earnings(f"{p}k15", a, "lead_buyer", m(100)),  # available 1.00
        Transfer(same_account.idempotency_key.replace("k14", "k16"), same_account.kind, same_account.postings),
        build_lead_earnings(f"{p}k1", a, "lead_buyer", m(10_000)),  # the first key again, much later: replayed
    ]


EXPECTED = ["new", "new", "insufficient", "new", "replay", "conflict", "insufficient", "new", "insufficient",
            "insufficient", "new", "new", "insufficient", "new", "insufficient", "new", "new", "replay"]  # fmt: skip


def accounts_of(transfers: list[Transfer]) -> set[tuple[Any, str]]:
    return {(p.account, p.amount.currency) for t in transfers for p in t.postings}


async def open_accounts(app: Litestar, transfers: list[Transfer]) -> None:
    """Create (empty) every account the transfers touch, as earlier business would have."""
    async with app.state.uow() as uow:
        await store.account_ids(uow.session, accounts_of(transfers))


def check_replays(outcomes: list[Outcome]) -> None:
    """A replay answers with the first transaction's id."""
    assert outcomes[4][1] == outcomes[3][1] and outcomes[17][1] == outcomes[0][1]


async def outcome(call: Awaitable[Posted]) -> Outcome:
    try:
        posted = await call
    except InsufficientFunds:
        return ("insufficient", None)
    except IdempotencyConflict:
        return ("conflict", None)
    return ("replay" if posted.replayed else "new", posted.transaction_id)


def memory_outcomes(transfers: list[Transfer], ledger: MemoryLedger | None = None) -> list[str]:
    ledger = ledger if ledger is not None else MemoryLedger()
    seen: set[str] = set()
    kinds: list[str] = []
    for transfer in transfers:
        try:
            ledger.post(transfer)
        except InsufficientFunds:
            kinds.append("insufficient")
            continue
        except IdempotencyConflict:
            kinds.append("conflict")
            continue
        kinds.append("replay" if transfer.idempotency_key in seen else "new")
        seen.add(transfer.idempotency_key)
    return kinds


async def ledger_state(app: Litestar, prefix: str) -> dict[str, Any]:
    """What the database holds for one run, with the prefix taken out so that runs compare."""
    async with app.state.sessions() as session:
        balances = {
            code.replace(prefix, "<p>"): balance
            for code, balance in await session.execute(
                select(LedgerAccount.code, LedgerAccount.balance_minor).where(
                    LedgerAccount.code.contains(prefix, autoescape=True)
                )
            )
        }
        rows = await session.execute(
            select(LedgerTransaction.idempotency_key, LedgerAccount.code, LedgerPosting.amount_minor)
            .join(LedgerPosting, LedgerPosting.transaction_id == LedgerTransaction.id)
            .join(LedgerAccount, LedgerAccount.id == LedgerPosting.account_id)
            .where(LedgerTransaction.idempotency_key.startswith(prefix, autoescape=True))
            .order_by(LedgerTransaction.idempotency_key, LedgerPosting.id)
        )
        postings: dict[str, list[tuple[str, int]]] = {}
        for key, code, amount in rows:
            postings.setdefault(key.replace(prefix, "<p>"), []).append((code.replace(prefix, "<p>"), amount))
        assert await store.trial_balance(session) == {ILS: 0}
        assert await store.balance_mismatches(session) == []
    return {"balances": balances, "postings": postings}


async def group_ledger(app: Litestar, pipelines: int = 2) -> fast_store.GroupCommitLedger:
    return fast_store.GroupCommitLedger(app.state.engine, pipelines=pipelines)


def is_postgres(app: Litestar) -> bool:
    return bool(app.state.engine.dialect.name == "postgresql")


# --- equal semantics -------------------------------------------------------------------------------------


async def test_store_fast_and_group_paths_give_the_same_outcomes_and_balances(app: Litestar) -> None:
    expected = memory_outcomes(script("s_"))
    assert expected == EXPECTED

    async def in_session(post: Callable[..., Awaitable[Posted]], transfer: Transfer) -> Outcome:
        async with app.state.uow() as uow:
            return await outcome(post(uow.session, transfer, business_id="biz", reference="ref"))

    runs: dict[str, list[Outcome]] = {"s_": [], "f_": [], "g_": []}
    for transfer in script("s_"):
        runs["s_"].append(await in_session(store.post, transfer))
    for transfer in script("f_"):
        runs["f_"].append(await in_session(fast_store.post, transfer))
    async with await group_ledger(app) as ledger:
        for transfer in script("g_"):
            runs["g_"].append(await outcome(ledger.post(transfer, business_id="biz", reference="ref")))
        if is_postgres(app):
            # Transfers that open accounts take the careful path, the others the set-based one.
            assert 0 < ledger.one_by_one < ledger.written

    states = {}
    for prefix, outcomes in runs.items():
        assert [kind for kind, _ in outcomes] == expected, prefix
        check_replays(outcomes)
        states[prefix] = await ledger_state(app, prefix)
    assert states["f_"] == states["s_"]
    assert states["g_"] == states["s_"]
    assert states["s_"]["balances"] == {
        "business:<p>a:available": 0,
        "business:<p>a:credit": 0,
        "business:<p>b:receivable": 0,
        "marketplace:<p>club:club_payable": 0,  # marketplace accounts keep no running balance
    }
    # The refused purchase by b created none of b's accounts: b:available does not exist.
    assert "business:<p>b:available" not in states["s_"]["balances"]


async def test_the_whole_script_in_one_batch_as_if_one_after_another(app: Litestar) -> None:
    """On PostgreSQL all of it is queued at once to one pipeline, so one statement writes it, set-based (every
    account is open); each transfer sees what the ones before it in the batch left. SQLite has no batches:
    there it goes through store.post() one after another, with the same outcome."""
    transfers = script("bat-")
    await open_accounts(app, transfers)
    async with await group_ledger(app, pipelines=1) as ledger:
        if is_postgres(app):
            outcomes = list(await asyncio.gather(*(outcome(ledger.post(t)) for t in transfers)))
            assert (ledger.batches, ledger.written, ledger.one_by_one) == (1, len(transfers), 0)
        else:
            outcomes = [await outcome(ledger.post(t)) for t in transfers]
    assert [kind for kind, _ in outcomes] == EXPECTED
    check_replays(outcomes)

    sequential = script("seq-")
    async with app.state.uow() as uow:
        for transfer in sequential:
            await outcome(store.post(uow.session, transfer))
    batched, by_store = await ledger_state(app, "bat-"), await ledger_state(app, "seq-")
    assert batched["postings"] == by_store["postings"]
    assert {k: v for k, v in batched["balances"].items() if k in by_store["balances"]} == by_store["balances"]
    assert all(v == 0 for k, v in batched["balances"].items() if k not in by_store["balances"])


async def test_random_sequences_match_the_memory_ledger(app: Litestar) -> None:
    """Random movements among four businesses, posted one after another through the group path."""
    rng = random.Random(20261126)
    for run in range(3):
        prefix = f"r{run}_"
        names = [f"{prefix}{n}" for n in range(4)]
        transfers: list[Transfer] = []
        for step in range(60):
            business = rng.choice(names)
            amount = rng.randint(1, 5_000)
            key = f"{prefix}{rng.randint(0, 45) if rng.random() < 0.15 else 1000 + step}"
            choice = rng.random()
            if choice < 0.35:
                transfers.append(
                    build_lead_earnings(key, business, rng.choice(["lead_buyer", "deal_maker"]), m(amount))
                )
            elif choice < 0.55:
                transfers.append(build_withdrawal(key, business, "lead_buyer", m(amount)))
            elif choice < 0.85:
                credit, available = rng.randint(0, amount), rng.randint(0, amount)
                transfers.append(purchase(key, business, credit=credit, available=available, charge=amount))
            else:
                transfers.append(build_charge_received(key, business, m(amount)))
        memory = MemoryLedger()
        expected = memory_outcomes(transfers, memory)
        async with await group_ledger(app) as ledger:
            got = [await outcome(ledger.post(t)) for t in transfers]
        assert [kind for kind, _ in got] == expected
        state = await ledger_state(app, prefix)
        for (account, _), balance in memory.balances().items():
            if account.is_business:
                assert state["balances"].get(account.code.replace(prefix, "<p>"), 0) == balance.amount_minor


async def test_a_refused_transfer_leaves_no_trace_and_the_session_goes_on(app: Litestar) -> None:
    async with app.state.uow() as uow:
        await fast_store.post(uow.session, build_lead_earnings("fund", "biz_a", "lead_buyer", m(500)))
    async with app.state.uow() as uow:
        with pytest.raises(InsufficientFunds):
            await fast_store.post(uow.session, build_withdrawal("too-much", "biz_a", "lead_buyer", m(501)))
        with pytest.raises(InsufficientFunds):
            await fast_store.post(uow.session, purchase("nobody", "biz_new", available=100))
        # The same session, the same transaction: a transfer after the refused ones is written and commits.
        posted = await fast_store.post(uow.session, build_withdrawal("fits", "biz_a", "lead_buyer", m(500)))
        assert not posted.replayed
    async with app.state.sessions() as session:
        keys = set(await session.scalars(select(LedgerTransaction.idempotency_key)))
        assert keys == {"fund", "fits"}
        assert not list(await session.scalars(select(LedgerAccount.code).where(LedgerAccount.owner_id == "biz_new")))
        available = await session.scalar(
            select(LedgerAccount.balance_minor).where(LedgerAccount.code == "business:biz_a:available")
        )
        assert available == 0


async def test_keys_are_shared_with_store_post_in_both_directions(app: Litestar) -> None:
    first = build_lead_earnings("shared-1", "biz_a", "lead_buyer", m(700))
    second = build_lead_earnings("shared-2", "biz_a", "lead_buyer", m(300))
    async with app.state.uow() as uow:
        by_store = await store.post(uow.session, first)
        by_fast = await fast_store.post(uow.session, second)
    async with await group_ledger(app) as ledger:
        assert await ledger.post(first) == Posted(by_store.transaction_id, replayed=True)
        with pytest.raises(IdempotencyConflict):
            await ledger.post(build_lead_earnings("shared-1", "biz_a", "lead_buyer", m(701)))
    async with app.state.uow() as uow:
        assert await store.post(uow.session, second) == Posted(by_fast.transaction_id, replayed=True)
        with pytest.raises(IdempotencyConflict):
            await store.post(uow.session, build_lead_earnings("shared-2", "biz_b", "lead_buyer", m(300)))
    async with app.state.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(LedgerTransaction)) == 2


# --- concurrency and group commit ----------------------------------------------------------------------------


async def test_fifty_concurrent_withdrawals_against_funds_for_ten(app: Litestar) -> None:
    async with app.state.uow() as uow:
        await store.post(uow.session, build_lead_earnings("fund", "biz_a", "lead_buyer", m(10 * 600)))
    async with await group_ledger(app) as ledger:
        outcomes = await asyncio.gather(
            *(outcome(ledger.post(build_withdrawal(f"w{n}", "biz_a", "lead_buyer", m(600)))) for n in range(50))
        )
        if is_postgres(app):
            assert ledger.batches < ledger.written == 50  # several transfers shared a commit
    assert sorted(kind for kind, _ in outcomes) == ["insufficient"] * 40 + ["new"] * 10
    async with app.state.sessions() as session:
        balance = await session.scalar(
            select(LedgerAccount.balance_minor).where(LedgerAccount.code == "business:biz_a:available")
        )
        assert balance == 0
        assert await session.scalar(select(func.count()).select_from(LedgerTransaction)) == 11
        assert await store.balance_mismatches(session) == []


async def test_the_same_key_twenty_times_at_once_moves_money_once(app: Litestar) -> None:
    # The accounts exist first: this is about the key (store.post creates missing accounts in set order, so two
    # writers creating the same two accounts at once may deadlock, which is not what is tested here).
    async with app.state.uow() as uow:
        await store.post(uow.session, build_lead_earnings("open", "biz_a", "lead_buyer", m(1)))
    transfer = build_lead_earnings("once", "biz_a", "lead_buyer", m(1_000))
    async with await group_ledger(app) as ledger:
        # From the group writer and from store.post in sessions of their own, all at once.
        async def by_store() -> Outcome:
            async with app.state.uow() as uow:
                return await outcome(store.post(uow.session, transfer))

        outcomes = await asyncio.gather(
            *(outcome(ledger.post(transfer)) for _ in range(15)), *(by_store() for _ in range(5))
        )
    assert sorted(kind for kind, _ in outcomes) == ["new"] + ["replay"] * 19
    assert len({txn for _, txn in outcomes}) == 1
    async with app.state.sessions() as session:
        balance = await session.scalar(
            select(LedgerAccount.balance_minor).where(LedgerAccount.code == "business:biz_a:available")
        )
        assert balance == 1_001
        assert await session.scalar(select(func.count()).select_from(LedgerPosting)) == 4


@pytest.mark.parametrize("accounts_open", [False, True], ids=["new-accounts", "open-accounts"])
async def test_withdrawing_everything_twenty_times_at_once_with_one_key_is_one_withdrawal(
    app: Litestar, accounts_open: bool
) -> None:
    """The retries that lose the race find the balance gone, and must answer with the winner's transaction (a
    replay), not InsufficientFunds: through the group writer, fast_store.post() and store.post() at once."""
    async with app.state.uow() as uow:
        await store.post(uow.session, build_lead_earnings("fund", "biz_a", "lead_buyer", m(2_500)))
    transfer = build_withdrawal("all-of-it", "biz_a", "lead_buyer", m(2_500))
    if accounts_open:
        await open_accounts(app, [transfer])

    async def in_session(post: Callable[..., Awaitable[Posted]]) -> Outcome:
        async with app.state.uow() as uow:
            return await outcome(post(uow.session, transfer))

    async with await group_ledger(app) as ledger:
        outcomes = await asyncio.gather(
            *(outcome(ledger.post(transfer)) for _ in range(10)),
            *(in_session(fast_store.post) for _ in range(5)),
            *(in_session(store.post) for _ in range(5)),
        )
    assert sorted(kind for kind, _ in outcomes) == ["new"] + ["replay"] * 19
    assert len({txn for _, txn in outcomes}) == 1
    async with app.state.sessions() as session:
        balance = await session.scalar(
            select(LedgerAccount.balance_minor).where(LedgerAccount.code == "business:biz_a:available")
        )
        assert balance == 0
        assert await session.scalar(select(func.count()).select_from(LedgerTransaction)) == 2
        assert await store.balance_mismatches(session) == []


@pytest.mark.parametrize("accounts_open", [False, True], ids=["new-accounts", "open-accounts"])
async def test_one_batch_with_mixed_outcomes_gives_each_caller_its_own(app: Litestar, accounts_open: bool) -> None:
    async with app.state.uow() as uow:
        await store.post(uow.session, build_lead_earnings("fund", "biz_a", "lead_buyer", m(1_002)))
    transfers = [
        build_withdrawal("ok-1", "biz_a", "lead_buyer", m(400)),
        build_withdrawal("too-much", "biz_a", "lead_buyer", m(5_000)),
        build_lead_earnings("fund", "biz_a", "lead_buyer", m(999)),  # the funding key for other money
        build_withdrawal("ok-2", "biz_a", "lead_buyer", m(600)),
        build_withdrawal("ok-1", "biz_a", "lead_buyer", m(400)),  # the same as the first: a replay
        build_withdrawal("last", "biz_a", "lead_buyer", m(1)),
        build_withdrawal("again", "biz_a", "lead_buyer", m(5_000)),  # refused: the key stays unused
        build_withdrawal("again", "biz_a", "lead_buyer", m(1)),  # so the same key for other money is new
    ]
    if accounts_open:
        await open_accounts(app, transfers)
    async with await group_ledger(app, pipelines=1) as ledger:
        outcomes = await asyncio.gather(*(outcome(ledger.post(t)) for t in transfers))
        if is_postgres(app):
            # Queued together, written by one statement: set-based, or one by one when an account is new
            # (provider_clearing, which no withdrawal had used before).
            assert (ledger.batches, ledger.written, ledger.one_by_one) == (1, 8, 0 if accounts_open else 8)
    kinds = [kind for kind, _ in outcomes]
    if is_postgres(app):  # in queue order
        assert kinds == ["new", "insufficient", "conflict", "new", "replay", "new", "insufficient", "new"]
    else:  # SQLite: one store.post per transaction, in whatever order they took the write lock
        assert [kinds[i] for i in (1, 2, 3, 5, 7)] == ["insufficient", "conflict", "new", "new", "new"]
        assert sorted([kinds[0], kinds[4]]) == ["new", "replay"]
        assert kinds[6] in ("insufficient", "conflict")
    assert outcomes[4][1] == outcomes[0][1]
    async with app.state.sessions() as session:
        balance = await session.scalar(
            select(LedgerAccount.balance_minor).where(LedgerAccount.code == "business:biz_a:available")
        )
        assert balance == 0
        assert await session.scalar(select(func.count()).select_from(LedgerTransaction)) == 5


# --- which path runs where -----------------------------------------------------------------------------------


async def test_sqlite_falls_back_to_store_post_and_postgresql_uses_the_function(
    app: Litestar, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    original = store.post

    async def counting_post(session: Any, transfer: Transfer, **kwargs: Any) -> Posted:
        calls.append(transfer.idempotency_key)
        return await original(session, transfer, **kwargs)

    monkeypatch.setattr(store, "post", counting_post)
    async with app.state.uow() as uow:
        await fast_store.post(uow.session, build_lead_earnings("in-session", "biz_a", "lead_buyer", m(100)))
    async with await group_ledger(app) as ledger:
        await ledger.post(build_lead_earnings("grouped", "biz_a", "lead_buyer", m(100)))
    async with app.state.sessions() as session:
        functions = (
            set(
                await session.scalars(
                    text("SELECT proname FROM pg_proc WHERE proname IN ('ledger_post', 'ledger_post_batch')")
                )
            )
            if is_postgres(app)
            else set()
        )
    if is_postgres(app):
        assert fast_store.uses_database_function(app.state.engine)
        assert calls == []
        assert functions == {"ledger_post", "ledger_post_batch"}
    else:
        assert not fast_store.uses_database_function(app.state.engine)
        assert calls == ["in-session", "grouped"]


async def test_the_database_still_refuses_an_unbalanced_transfer(app: Litestar) -> None:
    """Whatever calls the function, the 0002 triggers hold: postings that do not sum to zero are not written.
    (On SQLite, where there is no function, the same rule is the trigger under store.post.)"""
    async with app.state.sessions() as session:
        if is_postgres(app):
            row = (
                await session.execute(
                    text(
                        "SELECT * FROM ledger_post_batch(ARRAY['txn_x'], ARRAY['bad'], ARRAY['reversal'], ARRAY[''],"
                        " ARRAY['f'], ARRAY[NULL], ARRAY[NULL], ARRAY[now()], ARRAY[2],"
                        " ARRAY['business:biz_a:credit', 'marketplace::revenue'], ARRAY['ILS', 'ILS'],"
                        " ARRAY[-100, 99]::bigint[])"
                    )
                )
            ).one()
            assert row.out_sqlstate == "23514" and "unbalanced" in row.out_message
            await session.commit()
        else:
            with pytest.raises(Exception, match="unbalanced"):
                await session.execute(
                    text(
                        "INSERT INTO ledger_transactions (id, idempotency_key, kind, memo, fingerprint, created_at)"
                        " VALUES ('txn_x', 'bad', 'reversal', '', 'f', '2026-01-01 00:00:00')"
                    )
                )
            await session.rollback()
    async with app.state.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(LedgerTransaction)) == 0
        assert await session.scalar(select(func.count()).select_from(LedgerPosting)) == 0
        assert await session.scalar(select(func.count()).select_from(LedgerAccount)) == 0


async def test_the_checks_hold_for_statements_of_many_rows(app: Litestar) -> None:
    """On PostgreSQL the balance and closed-transaction checks run once per statement over all its rows (0006),
    on SQLite once per row (0002); either way a statement of many rows is judged whole: balanced transactions
    written together are accepted, one unbalanced transaction (or one without postings) refuses its whole
    statement, and postings for a transaction already written are refused."""
    revenue, vat = marketplace_account(AccountKind.REVENUE), marketplace_account(AccountKind.VAT_PAYABLE)
    async with app.state.uow() as uow:
        ids = await store.account_ids(uow.session, {(revenue, ILS), (vat, ILS)})
    r, v = ids[(revenue.code, ILS)], ids[(vat.code, ILS)]

    def postings(*rows: tuple[str, int, int]) -> Any:
        values = ", ".join(f"('{txn}', {account}, {amount}, 'ILS')" for txn, account, amount in rows)
        return text(f"INSERT INTO ledger_postings (transaction_id, account_id, amount_minor, currency) VALUES {values}")

    def transactions(*ids_: str) -> Any:
        values = ", ".join(f"('{txn}', 'key-{txn}', 'reversal', '', 'f', '2026-01-01 00:00:00')" for txn in ids_)
        return text(
            "INSERT INTO ledger_transactions (id, idempotency_key, kind, memo, fingerprint, created_at)"
            f" VALUES {values}"
        )

    async with app.state.sessions() as session:
        await session.execute(postings(("t1", r, 100), ("t1", v, -100), ("t2", r, 5), ("t2", v, -3), ("t2", v, -2)))
        await session.execute(transactions("t1", "t2"))
        await session.commit()
    refused = [
        # t4 does not sum to zero: t3, balanced, is refused with it.
        [postings(("t3", r, 100), ("t3", v, -100), ("t4", r, 100), ("t4", v, -99)), transactions("t3", "t4")],
        # t6 has no postings at all.
        [postings(("t5", r, 7), ("t5", v, -7)), transactions("t5", "t6")],
        # t1 is written: nothing may be added to it, not even postings that sum to zero.
        [postings(("t1", r, 1), ("t1", v, -1))],
    ]
    for statements in refused:
        async with app.state.sessions() as session:
            with pytest.raises(Exception, match=r"unbalanced|already written"):
                for statement in statements:
                    await session.execute(statement)
            await session.rollback()
    async with app.state.sessions() as session:
        written = set(await session.scalars(select(LedgerTransaction.id)))
        assert written == {"t1", "t2"}
        assert await session.scalar(select(func.count()).select_from(LedgerPosting)) == 5
        assert await store.trial_balance(session) == {ILS: 0}


@pytest.mark.postgres_only
async def test_the_group_writer_starts_a_new_connection_when_its_own_is_lost(app: Litestar) -> None:
    """A batch whose connection is lost is in doubt: its callers get the error, and a retry with the same key
    is safe (written once). The writer then carries on, on a new connection with the statement prepared again."""
    async with await group_ledger(app, pipelines=1) as ledger:
        first = await ledger.post(build_lead_earnings("before", "biz_a", "lead_buyer", m(100)))
        async with app.state.sessions() as session:
            ended = await session.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid() AND query LIKE '%ledger_post_batch%'"
                )
            )
        assert ended == 1
        lost = build_lead_earnings("lost", "biz_a", "lead_buyer", m(10))
        with pytest.raises(Exception):  # noqa: B017 - whichever error the driver raises for a lost connection
            await ledger.post(lost)
        retried = await outcome(ledger.post(lost))
        after = await ledger.post(build_lead_earnings("after", "biz_a", "lead_buyer", m(1)))
    assert not first.replayed and not after.replayed and retried[0] in ("new", "replay")
    async with app.state.sessions() as session:
        keys = list(await session.scalars(select(LedgerTransaction.idempotency_key)))
        assert sorted(keys) == ["after", "before", "lost"]
        balance = await session.scalar(
            select(LedgerAccount.balance_minor).where(LedgerAccount.code == "business:biz_a:available")
        )
        assert balance == 111
        assert await store.balance_mismatches(session) == []


@pytest.mark.postgres_only
@pytest.mark.parametrize(("min_share", "batches"), [(1, [3, 3]), (3, [3, 3]), (4, [6])])
async def test_idle_pipelines_share_a_queue_only_in_parts_of_min_share(
    app: Litestar, min_share: int, batches: list[int]
) -> None:
    """Six transfers queued at once before either of two idle pipelines runs: shared out in two parts of three,
    unless parts that small are not allowed, and then one commit takes all six."""
    transfers = [build_lead_earnings(f"share-{n}", "biz_a", "lead_buyer", m(100)) for n in range(6)]
    await open_accounts(app, transfers)
    sizes: list[int] = []
    ledger = fast_store.GroupCommitLedger(app.state.engine, pipelines=2, min_share=min_share)
    write = ledger._write

    async def counting_write(writer: Any, batch: list[Any]) -> None:
        sizes.append(len(batch))
        await write(writer, batch)

    ledger._write = counting_write  # type: ignore[method-assign]
    async with ledger:
        outcomes = await asyncio.gather(*(outcome(ledger.post(t)) for t in transfers))
    assert sorted(sizes) == batches
    assert [kind for kind, _ in outcomes] == ["new"] * 6
