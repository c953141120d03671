"""A faster way to write transfers on PostgreSQL, with store.post()'s semantics: one round trip per transfer
and, for transfers that stand alone, several transfers per commit (group commit).

Two entry points:

``post(session, transfer)``
    store.post() in one round trip: the database function ``ledger_post_batch`` (migrations
    0004_ledger_function, 0006_ledger_statement_checks) checks the idempotency key, creates missing accounts,
    moves the business balances (conditionally, never below zero, accounts locked in ascending id order),
    inserts the postings and the transaction row. It runs in the caller's transaction and commits with it, like
    store.post(); a refused transfer (insufficient funds, idempotency conflict) leaves no trace and the session
    stays usable.
    On SQLite this *is* store.post().

``GroupCommitLedger(engine).post(transfer)``
    A transfer on its own, durable when the call returns. Concurrent callers are collected into one
    ``SELECT ... FROM ledger_post_batch(...)`` statement run outside an explicit transaction (its implicit
    transaction commits, and with synchronous_commit on is flushed to disk, before the reply arrives, so one
    round trip is the write *and* the commit). There is no timer: a batch is whatever arrived while the
    previous one was being written and flushed, so a lone caller waits for nobody and under load one flush
    serves many transfers. The function works a batch out in order, exactly as if its transfers had been
    posted one after another: each is atomic on its own (a refused one moves nothing and does not disturb the
    others) and each caller gets its own result or exception. Use it for money movements that need not
    commit together with other rows; a charge that writes an invoice in the same unit of work keeps using
    ``post(session, ...)``. On SQLite it falls back to one store.post() per transaction.

Outcomes, the same as store.post(): a new transfer → Posted(id, replayed=False); a retry with the same key and
the same movement of money → Posted(first id, replayed=True), nothing moves; the same key for different
money → IdempotencyConflict; a business balance that would fall below zero → InsufficientFunds, nothing moves.
Marketplace accounts keep no running balance. If the connection breaks while a batch is in flight, its
callers get the connection error and cannot know whether the batch committed: retrying with the same
idempotency key is safe (a replay).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from marketplace.clock import utcnow
from marketplace.db.conflicts import TRANSIENT_SQLSTATES
from marketplace.errors import InsufficientFunds
from marketplace.ids import new_id
from marketplace.wallet import store
from marketplace.wallet.ledger import IdempotencyConflict, Transfer
from marketplace.wallet.store import Posted

__all__ = ["BATCH_SQL", "GroupCommitLedger", "LedgerWriteError", "post", "uses_database_function"]

BATCH_SQL = (
    "SELECT out_ord, out_transaction_id, out_replayed, out_sqlstate, out_message, out_batched FROM ledger_post_batch("
    "$1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::timestamptz[], "
    "$9::integer[], $10::text[], $11::text[], $12::bigint[])"
)
_BATCH_TEXT = text(
    "SELECT out_ord, out_transaction_id, out_replayed, out_sqlstate, out_message, out_batched FROM ledger_post_batch("
    "CAST(:ids AS text[]), CAST(:keys AS text[]), CAST(:kinds AS text[]), CAST(:memos AS text[]), "
    "CAST(:fingerprints AS text[]), CAST(:business_ids AS text[]), CAST(:refs AS text[]), "
    "CAST(:created_at AS timestamptz[]), CAST(:counts AS integer[]), CAST(:codes AS text[]), "
    "CAST(:currencies AS text[]), CAST(:amounts AS bigint[]))"
)
_BATCH_PARAMS = (
    "ids", "keys", "kinds", "memos", "fingerprints", "business_ids", "refs", "created_at", "counts", "codes",
    "currencies", "amounts",
)  # fmt: skip

INSUFFICIENT_FUNDS = "LDG01"
IDEMPOTENCY_CONFLICT = "LDG02"
MAX_ATTEMPTS = 3
# When the function falls back to writing a batch one transfer at a time, each is a subtransaction; up to 64
# per transaction stay in PostgreSQL's per-backend cache of subtransaction ids (beyond it every snapshot on
# the server gets slower).
MAX_BATCH = 64
# Idle pipelines share a queue out only in parts of at least this many transfers. A commit has a fixed cost (on
# the benchmark's 2-CPU machine about as much server CPU as four transfers), which a part smaller than that would
# pay for little overlap. Larger values trade the overlap for CPU: with eight callers, min_share=8 (one commit of
# eight instead of two of four) took 30 % less CPU per transfer for the same rate on a saturated machine.
MIN_SHARE = 4


class LedgerWriteError(RuntimeError):
    """The database refused a transfer for a reason other than funds or idempotency (a broken rule)."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(f"{sqlstate}: {message}")
        self.sqlstate = sqlstate


@dataclass(frozen=True, slots=True)
class _Row:
    """One transfer's arguments to ledger_post_batch."""

    transaction_id: str
    key: str
    kind: str
    memo: str
    fingerprint: str
    business_id: str | None
    reference: str | None
    created_at: datetime
    codes: tuple[str, ...]
    currencies: tuple[str, ...]
    amounts: tuple[int, ...]


def _row(transfer: Transfer, business_id: str | None, reference: str | None) -> _Row:
    transfer.validate()
    return _Row(
        new_id("txn"),
        transfer.idempotency_key,
        transfer.kind.value,
        transfer.memo,
        transfer.fingerprint(),
        business_id,
        reference,
        utcnow().astimezone(UTC),
        tuple(p.account.code for p in transfer.postings),
        tuple(p.amount.currency for p in transfer.postings),
        tuple(p.amount.amount_minor for p in transfer.postings),
    )


def _columns(rows: Sequence[_Row]) -> tuple[list[Any], ...]:
    return (
        [r.transaction_id for r in rows],
        [r.key for r in rows],
        [r.kind for r in rows],
        [r.memo for r in rows],
        [r.fingerprint for r in rows],
        [r.business_id for r in rows],
        [r.reference for r in rows],
        [r.created_at for r in rows],
        [len(r.codes) for r in rows],
        [code for r in rows for code in r.codes],
        [currency for r in rows for currency in r.currencies],
        [amount for r in rows for amount in r.amounts],
    )


def _outcome(transaction_id: str | None, replayed: bool | None, sqlstate: str | None, message: str | None) -> Posted:
    """A row of ledger_post_batch as store.post() would have answered: Posted, or its exception."""
    if sqlstate is None:
        assert transaction_id is not None
        return Posted(transaction_id, replayed=bool(replayed))
    if sqlstate == INSUFFICIENT_FUNDS:
        raise InsufficientFunds("the wallet does not hold enough for this")
    if sqlstate == IDEMPOTENCY_CONFLICT:
        raise IdempotencyConflict.field("Idempotency-Key", "this key already moved different money")
    raise LedgerWriteError(sqlstate, message or "")


def uses_database_function(session_or_engine: AsyncSession | AsyncEngine | AsyncConnection) -> bool:
    """Whether transfers go through ledger_post_batch (PostgreSQL) or store.post() (SQLite)."""
    if isinstance(session_or_engine, AsyncSession):
        return session_or_engine.get_bind().dialect.name == "postgresql"
    return session_or_engine.dialect.name == "postgresql"


async def post(
    session: AsyncSession, transfer: Transfer, *, business_id: str | None = None, reference: str | None = None
) -> Posted:
    """store.post() in one round trip (PostgreSQL); store.post() itself on SQLite."""
    if not uses_database_function(session):
        return await store.post(session, transfer, business_id=business_id, reference=reference)
    row = _row(transfer, business_id, reference)
    params = dict(zip(_BATCH_PARAMS, _columns([row]), strict=True))
    for _ in range(MAX_ATTEMPTS):
        result = (await session.execute(_BATCH_TEXT, params)).one()
        if result.out_sqlstate not in TRANSIENT_SQLSTATES:  # worth another attempt in a later batch
            break
    return _outcome(result.out_transaction_id, result.out_replayed, result.out_sqlstate, result.out_message)


@dataclass(eq=False)
class _Pending:
    row: _Row
    future: asyncio.Future[Posted]
    attempts: int = 0


@dataclass(eq=False)
class GroupCommitLedger:
    """Durable transfers, several per commit on PostgreSQL; see the module's docstring.

    max_batch bounds the transfers in one commit; pipelines is how many batches may be in flight at once, each
    on a connection of its own: with two, one batch is worked out while the other one's commit is flushed to
    disk, and whatever is queued is shared out between idle pipelines, in parts of at least min_share transfers.
    Pipelines cannot deadlock one another: each batch locks all its business accounts at once, in ascending id
    order.
    """

    engine: AsyncEngine
    max_batch: int = MAX_BATCH
    pipelines: int = 2
    min_share: int = MIN_SHARE
    _queue: deque[_Pending] = field(default_factory=deque, init=False)
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, init=False)
    _sessions: async_sessionmaker[AsyncSession] | None = field(default=None, init=False)
    _closed: bool = field(default=False, init=False)
    _busy: int = field(default=0, init=False)
    batches: int = field(default=0, init=False)
    """How many batches were written (for measurements: written / batches is the mean batch size)."""
    written: int = field(default=0, init=False)
    one_by_one: int = field(default=0, init=False)
    """Transfers the database wrote through its careful path (an account to create, or a batch undone)."""

    def __post_init__(self) -> None:
        if not 1 <= self.max_batch <= MAX_BATCH:
            raise ValueError(f"max_batch must be between 1 and {MAX_BATCH}")
        if self.pipelines < 1:
            raise ValueError("pipelines must be at least 1")
        if self.min_share < 1:
            raise ValueError("min_share must be at least 1")
        if not uses_database_function(self.engine):
            self._sessions = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)

    async def post(self, transfer: Transfer, *, business_id: str | None = None, reference: str | None = None) -> Posted:
        """Write transfer in a transaction of its own (maybe shared with concurrent callers' transfers);
        it is committed when this returns."""
        if self._closed:
            raise RuntimeError("this GroupCommitLedger is closed")
        if self._sessions is not None:
            async with self._sessions() as session, session.begin():
                return await store.post(session, transfer, business_id=business_id, reference=reference)
        pending = _Pending(_row(transfer, business_id, reference), asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._run()) for _ in range(self.pipelines)]
        self._wakeup.set()
        return await pending.future

    async def aclose(self) -> None:
        """Finish what is queued, then stop the writers and return their connections."""
        self._closed = True
        self._wakeup.set()
        tasks, self._tasks = self._tasks, []
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> GroupCommitLedger:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def _run(self) -> None:
        writer: _Writer | None = None
        try:
            while True:
                if not self._queue:
                    if self._closed:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                # With another writer idle, the queue is shared out, so that both work (and flush) at once; but
                # not in parts smaller than min_share, for which one commit of all costs less than two.
                parts = max(1, min(self.pipelines - self._busy, len(self._queue) // self.min_share))
                share = -(-len(self._queue) // parts)
                batch = [self._queue.popleft() for _ in range(min(share, self.max_batch))]
                self._busy += 1
                try:
                    if writer is None:
                        writer = await _Writer.open(self.engine)
                    await self._write(writer, batch)
                except BaseException as exc:
                    # The connection is in doubt (broken, cancelled mid-statement): its callers cannot know
                    # whether the batch committed (a retry with the same key is safe); start a new one.
                    for pending in batch:
                        _fail(pending.future, exc)
                    if writer is not None:
                        await writer.discard()
                    writer = None
                    if not isinstance(exc, Exception):
                        raise
                finally:
                    self._busy -= 1
        finally:
            if writer is not None:
                await writer.close()

    async def _write(self, writer: _Writer, batch: list[_Pending]) -> None:
        try:
            results = await writer.post_batch(_columns([p.row for p in batch]))
        except asyncpg.PostgresError as exc:
            if writer.is_closed():  # the server ended the session (shutdown, terminated): the batch is in doubt
                raise
            # The server refused the statement as a whole, so nothing of it was written. Should one transfer
            # be the cause, the others must not fail with it: write each one alone.
            if len(batch) == 1:
                _fail(batch[0].future, exc)
                return
            for pending in batch:
                await self._write(writer, [pending])
            return
        self.batches += 1
        self.written += len(batch)
        for pending, result in zip(batch, results, strict=True):
            # out_ord, out_transaction_id, out_replayed, out_sqlstate, out_message, out_batched
            sqlstate = result[3]
            if not result[5]:
                self.one_by_one += 1
            if sqlstate in TRANSIENT_SQLSTATES and pending.attempts + 1 < MAX_ATTEMPTS:
                pending.attempts += 1
                self._queue.append(pending)
                continue
            if pending.future.done():  # the caller was cancelled; the transfer stands (or not) all the same
                continue
            if sqlstate is None:
                pending.future.set_result(Posted(result[1], replayed=bool(result[2])))
                continue
            try:
                _outcome(result[1], result[2], sqlstate, result[4])
            except Exception as exc:
                pending.future.set_exception(exc)
        if self._queue:  # retries of transient failures
            self._wakeup.set()


@dataclass(eq=False)
class _Writer:
    """One pipeline's connection, taken from the engine's pool for as long as the pipeline runs, and the batch
    statement prepared on it once. Statements go to the driver directly: no explicit transaction, so each
    statement's implicit one commits (and, with synchronous_commit on, is flushed to disk) before the server
    answers."""

    connection: AsyncConnection
    driver: Any
    statement: Any

    @classmethod
    async def open(cls, engine: AsyncEngine) -> _Writer:
        connection = await engine.connect()
        try:
            raw = await connection.get_raw_connection()
            driver: Any = raw.driver_connection
            return cls(connection, driver, await driver.prepare(BATCH_SQL))
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.invalidate()
            raise

    async def post_batch(self, columns: tuple[list[Any], ...]) -> list[Any]:
        return list(await self.statement.fetch(*columns))

    def is_closed(self) -> bool:
        return bool(self.driver.is_closed())

    async def discard(self) -> None:
        with contextlib.suppress(Exception):
            await self.connection.invalidate()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.connection.close()


def _fail(future: asyncio.Future[Posted], exc: BaseException) -> None:
    if future.done():
        return
    if isinstance(exc, Exception):
        future.set_exception(exc)
    else:
        future.cancel()
