"""What one SQL statement costs at each layer the service can send it through, on SQLite (the simulator's database)
and PostgreSQL: the floor under every HTTP call, which makes ~20-30 of them.

    python benchmarks/statement_overhead.py [--backend sqlite|postgresql|both] [-n 5000]

The same point read (a business's caps by its id, as a claim reads them) and the same one-row update, through:

  session ORM columns   AsyncSession.execute(select(Business.daily_cap, ...)): how most services read
  session Core table    AsyncSession.execute on the model's Table (db.statements.table): the hot paths' prebuilt reads
  connection Core       AsyncConnection.execute of the same statement (no ORM session layer)
  run_sync Core         Connection.execute inside one greenlet (conn.run_sync): no greenlet hand-off per statement
  driver                the DB-API connection's own cursor (sqlite3 / asyncpg), no SQLAlchemy at all

Prints microseconds per statement (mean of n, after a warm-up). Each run creates its own database: a temporary
SQLite file, and on PostgreSQL a scratch database `bench_statements` (dropped and created).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.db import migrate
from marketplace.db.engine import create_engine, create_session_factory
from marketplace.db.models import Business
from marketplace.db.statements import table

PG_ADMIN = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
PG_DATABASE = "bench_statements"
BUSINESS_ID = "biz_bench"


def _updated_id(i: int) -> str:
    return f"biz_bench_{i:06d}"


async def _seed(url: str, n: int) -> None:
    """The business every read reads, and n others for the updates: each update changes a row of its own (on
    PostgreSQL, thousands of updates of one row in one transaction leave a chain of versions that every later
    statement on it walks, and the figures would grow with n)."""
    engine = create_engine(url)
    try:
        await migrate.upgrade(engine)
        sessions = create_session_factory(engine)
        async with sessions() as session:
            now = datetime.now(UTC)
            for i, business_id in enumerate([BUSINESS_ID, *(_updated_id(i) for i in range(n))]):
                session.add(
                    Business(
                        id=business_id, name="Bench", email=f"bench{i}@example.com", phone="+972500000000",
                        mode="deal_maker", currency="ILS", status="active", min_deal_minor=0, max_deal_minor=10**9,
                        daily_cap=10, monthly_cap=100, created_at=now, updated_at=now,
                    )
                )  # fmt: skip
            await session.commit()
    finally:
        await engine.dispose()


WARMUP = 500
LAYERS = 5


async def _time(n: int, call: Callable[[], Awaitable[Any]]) -> float:
    for _ in range(WARMUP):
        await call()
    started = time.perf_counter()
    for _ in range(n):
        await call()
    return (time.perf_counter() - started) / n * 1e6


async def measure(url: str, n: int) -> list[tuple[str, float, float]]:
    """(layer, read us, update us) per layer, each layer in a transaction of its own (rolled back)."""
    engine = create_engine(url)
    sessions = create_session_factory(engine)
    b = table(Business).c
    orm_read = select(Business.daily_cap, Business.monthly_cap).where(Business.id == bindparam("b"))
    orm_write = (
        update(Business)
        .where(Business.id == bindparam("b"))
        .values(daily_cap=Business.daily_cap)
        .execution_options(synchronize_session=False)
    )
    core_read = select(b.daily_cap, b.monthly_cap).where(b.id == bindparam("b"))
    core_write = update(table(Business)).where(b.id == bindparam("b")).values(daily_cap=b.daily_cap)
    read = {"b": BUSINESS_ID}
    postgres = url.startswith("postgresql")
    raw_read = f"SELECT daily_cap, monthly_cap FROM businesses WHERE id = {'$1' if postgres else '?'}"
    raw_write = f"UPDATE businesses SET daily_cap = daily_cap WHERE id = {'$1' if postgres else '?'}"

    taken = 0

    def rows_to_update() -> Iterator[str]:
        """Rows no earlier layer updated (a rolled-back update leaves a dead version of its row on PostgreSQL)."""
        nonlocal taken
        taken += n + WARMUP
        return iter([_updated_id(i) for i in range(taken - n - WARMUP, taken)])

    async def layer(name: str, how: Callable[[AsyncSession], Awaitable[tuple[float, float]]]) -> None:
        async with sessions() as session:
            reads, writes = await how(session)
            await session.rollback()
        rows.append((name, reads, writes))

    async def orm_session(session: AsyncSession) -> tuple[float, float]:
        ids = rows_to_update()
        return (
            await _time(n, lambda: _all(session.execute(orm_read, read))),
            await _time(n, lambda: session.execute(orm_write, {"b": next(ids)})),
        )

    async def core_session(session: AsyncSession) -> tuple[float, float]:
        ids = rows_to_update()
        return (
            await _time(n, lambda: _all(session.execute(core_read, read))),
            await _time(n, lambda: session.execute(core_write, {"b": next(ids)})),
        )

    async def core_connection(session: AsyncSession) -> tuple[float, float]:
        conn, ids = await session.connection(), rows_to_update()
        return (
            await _time(n, lambda: _all(conn.execute(core_read, read))),
            await _time(n, lambda: conn.execute(core_write, {"b": next(ids)})),
        )

    async def one_greenlet(session: AsyncSession) -> tuple[float, float]:
        conn, ids = await session.connection(), rows_to_update()

        def read_many(sync_conn: Any) -> None:
            for _ in range(n):
                sync_conn.execute(core_read, read).all()

        def write_many(sync_conn: Any) -> None:
            for _ in range(n):
                sync_conn.execute(core_write, {"b": next(ids)})

        return await _sync_time(n, conn, read_many), await _sync_time(n, conn, write_many)

    async def driver_itself(session: AsyncSession) -> tuple[float, float]:
        ids = rows_to_update()
        driver: Any = (await (await session.connection()).get_raw_connection()).driver_connection
        if postgres:
            return (
                await _time(n, lambda: driver.fetch(raw_read, BUSINESS_ID)),
                await _time(n, lambda: driver.execute(raw_write, next(ids))),
            )
        sqlite = driver._conn  # aiosqlite's sqlite3 connection, used on this thread (db/sqlite_driver.py)

        async def sqlite_read() -> None:
            sqlite.execute(raw_read, (BUSINESS_ID,)).fetchall()

        async def sqlite_write() -> None:
            sqlite.execute(raw_write, (next(ids),))

        return await _time(n, sqlite_read), await _time(n, sqlite_write)

    rows: list[tuple[str, float, float]] = []
    try:
        await layer("session ORM columns", orm_session)
        await layer("session Core table", core_session)
        await layer("connection Core", core_connection)
        await layer("run_sync Core", one_greenlet)
        await layer("driver (asyncpg)" if postgres else "driver (sqlite3)", driver_itself)
    finally:
        await engine.dispose()
    return rows


async def _all(result: Awaitable[Any]) -> None:
    (await result).all()


async def _sync_time(n: int, conn: Any, work: Callable[[Any], None]) -> float:
    started = time.perf_counter()
    await conn.run_sync(work)
    return (time.perf_counter() - started) / n * 1e6


async def _postgres_url() -> str:
    admin = create_engine(PG_ADMIN)
    try:
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f"DROP DATABASE IF EXISTS {PG_DATABASE}"))
            await conn.execute(text(f"CREATE DATABASE {PG_DATABASE}"))
    finally:
        await admin.dispose()
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{PG_DATABASE}"


async def main(backends: list[str], n: int) -> None:
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix="bench-statements-") as folder:
            url = f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}" if backend == "sqlite" else await _postgres_url()
            await _seed(url, LAYERS * (n + WARMUP))
            print(f"{backend}: us per statement (mean of {n})")
            print(f"  {'layer':22s} {'point read':>10s} {'update':>10s}")
            for layer, read, write in await measure(url, n):
                print(f"  {layer:22s} {read:10.1f} {write:10.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("-n", type=int, default=5000)
    args = parser.parse_args()
    asyncio.run(main(["sqlite", "postgresql"] if args.backend == "both" else [args.backend], args.n))
