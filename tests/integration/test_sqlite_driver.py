"""The embedded default's SQLite adapter: statements on the event loop's thread, one connection per engine."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError

from marketplace.db import sqlite_driver
from marketplace.db.engine import create_engine


@pytest.fixture
async def engine(tmp_path: Path) -> Any:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL CHECK (n >= 0))"))
        await conn.execute(text("INSERT INTO counter (id, n) VALUES (1, 0)"))
    yield engine
    await engine.dispose()


async def test_the_embedded_default_uses_the_in_loop_dialect_with_one_connection(engine: Any) -> None:
    assert engine.dialect.driver == sqlite_driver.DRIVER
    assert engine.pool.size() == 1


async def test_statements_run_on_the_event_loops_thread(engine: Any) -> None:
    threads: list[int] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _record(*_: Any) -> None:
        threads.append(threading.get_ident())

    async with engine.begin() as conn:
        assert (await conn.execute(text("SELECT n FROM counter WHERE id = 1"))).scalar_one() == 0
    assert threads and set(threads) == {threading.get_ident()}


async def test_concurrent_transactions_queue_on_the_pool_and_none_is_lost(engine: Any) -> None:
    async def bump() -> None:
        async with engine.begin() as conn:
            n = (await conn.execute(text("SELECT n FROM counter WHERE id = 1"))).scalar_one()
            await asyncio.sleep(0)  # give the other tasks a turn inside the transaction
            await conn.execute(text("UPDATE counter SET n = :n WHERE id = 1"), {"n": n + 1})

    await asyncio.gather(*(bump() for _ in range(40)))
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT n FROM counter WHERE id = 1"))).scalar_one() == 40


async def test_a_failed_statement_rolls_back_its_transaction_and_the_connection_stays_usable(engine: Any) -> None:
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE counter SET n = 5 WHERE id = 1"))
            await conn.execute(text("UPDATE counter SET n = -1 WHERE id = 1"))
    async with engine.begin() as conn:
        assert (await conn.execute(text("SELECT n FROM counter WHERE id = 1"))).scalar_one() == 0
        rows = await conn.execute(text("INSERT INTO counter (id, n) VALUES (2, 7), (3, 8) RETURNING id"))
        assert sorted(rows.scalars()) == [2, 3]


async def test_another_process_write_lock_is_waited_for_without_stalling_the_event_loop(engine: Any) -> None:
    """A second process (here a thread with its own connection) holds SQLite's write lock; a transaction of
    this engine waits for it asynchronously: the event loop keeps running, and the transaction goes through
    once the lock is released."""
    database = engine.url.database
    holding = threading.Event()

    def other_process() -> None:
        other = sqlite3.connect(database, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("UPDATE counter SET n = n + 100 WHERE id = 1")
            holding.set()
            time.sleep(0.4)
            other.execute("COMMIT")
        finally:
            other.close()

    holder = threading.Thread(target=other_process)
    holder.start()
    await asyncio.get_running_loop().run_in_executor(None, holding.wait)
    lags: list[float] = []

    async def ticker() -> None:
        while holder.is_alive():
            started = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - started - 0.005)

    async def bump() -> int:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE counter SET n = n + 1 WHERE id = 1"))
            return int((await conn.execute(text("SELECT n FROM counter WHERE id = 1"))).scalar_one())

    waited = time.perf_counter()
    _, n = await asyncio.gather(ticker(), bump())
    holder.join()
    assert n == 101  # after the other process's commit, never instead of it
    assert time.perf_counter() - waited >= 0.2
    # The loop was never held for the other process's 400 ms: it kept ticking every few milliseconds while the
    # transaction waited (counted, not timed: a busy machine stretches each tick, but a blocked loop ticks not at
    # all until the lock is gone).
    assert len(lags) >= 5, lags
