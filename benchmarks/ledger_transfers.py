"""Durable ledger transfers per second, with p50 and p99 latency, on SQLite and on PostgreSQL.

    python benchmarks/ledger_transfers.py [--backend sqlite|postgresql|both] [--seconds N]

Every transfer is a deal commission built by the pure builder (marketplace.wallet.ledger.build_deal_commission):
business A pays 118.00 ILS from its available balance (a conditional update that refuses to go below zero),
of which 18.00 is VAT, 75.00 revenue and 25.00 a share credited to business B's available balance. That is
four postings, two business balances moved, two marketplace accounts (which keep no running balance), and
one transaction row checked by the database's balance trigger. Each transfer is one committed database
transaction (or, on the group-commit path, one subtransaction of a shared commit) and counts only once that
commit has returned.

Workloads: "spread" picks A and B at random among --accounts businesses; "hot" always debits one business
(one hot row) and credits a random one. Each runs with 1, 8 and 32 concurrent clients (asyncio tasks in this
process, as requests in one service worker), for --seconds after a short warm-up.

Paths (--path):
  store     marketplace.wallet.store.post() in a session, one commit per transfer (what the service does)
  function  marketplace.wallet.fast_store.post(): the same in one round trip (PostgreSQL function), one commit
            per transfer
  group     marketplace.wallet.fast_store.GroupCommitLedger: one round trip per batch of concurrent
            transfers, one commit per batch
On SQLite the fast paths fall back to store.post(), so only "store" is measured there.

Each backend and path writes to a fresh database: PostgreSQL's is dropped and created again (--database,
default bench_ledger), SQLite's is a new file in a temporary directory. Accounts are funded in bulk before the
timed part (one funding transaction), and after the runs the ledger is checked: every currency sums to zero
and every business balance equals its postings.

Durability: PostgreSQL as configured (the settings are printed; synchronous_commit=on means a commit returns
after its WAL is flushed to disk). SQLite as the service configures it (marketplace/db/engine.py): WAL
journal with PRAGMA synchronous=NORMAL, so a commit survives a crash of the process but the last commits
before a power loss or OS crash may be lost (the WAL is synced at checkpoints, not at each commit).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from marketplace.clock import utcnow
from marketplace.db import migrate
from marketplace.db.engine import create_engine, create_session_factory
from marketplace.db.models import LedgerAccount, LedgerPosting, LedgerTransaction
from marketplace.errors import InsufficientFunds
from marketplace.money import Money
from marketplace.wallet import fast_store, store
from marketplace.wallet.ledger import (
    AccountKind,
    Allocation,
    Transfer,
    build_deal_commission,
    business_account,
    marketplace_account,
)
from marketplace.wallet.offset import OffsetPlan
from marketplace.wallet.vat import VatBreakdown

CURRENCY = "ILS"
GROSS, VAT, SHARE = 11_800, 1_800, 2_500
FUNDS = 100_000_000_000  # per business: a billion ILS, so that no transfer of the run is refused
HOT = "bench_hot"
PATHS = ("store", "function", "group")

Post = Callable[[Transfer, str], Awaitable[Any]]


@dataclass
class Cell:
    backend: str
    path: str
    workload: str
    clients: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    done: int = 0
    """Transfers completed in the cell, warm-up included."""
    batches: int | None = None
    written: int | None = None
    cpu_pressure: float | None = None
    cpu_python: float = 0.0
    """CPU seconds of this process (clients, writer, driver) during the cell."""
    cpu_server: float = 0.0
    """CPU seconds of the PostgreSQL backends serving the benchmark's database during the cell."""
    """Share of the cell's time in which some task on the host waited for a CPU (Linux PSI), in per cent."""

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def business_ids(count: int) -> list[str]:
    return [f"bench_{n:05d}" for n in range(count)]


# The same price, offset plan and share for every transfer: made once (as a service would look its plan up once).
PRICE = VatBreakdown(Money(GROSS - VAT, CURRENCY), Money(VAT, CURRENCY), Money(GROSS, CURRENCY))
OFFSET = OffsetPlan(Money(0, CURRENCY), Money(GROSS, CURRENCY), Money(0, CURRENCY))
SHARE_MONEY = Money(SHARE, CURRENCY)


def commission(key: str, payer: str, recipient: str) -> Transfer:
    share = Allocation(business_account(recipient, AccountKind.AVAILABLE), SHARE_MONEY)
    return build_deal_commission(key, payer, PRICE, OFFSET, shares=[share], memo="benchmark")


# --- databases -------------------------------------------------------------------------------------------


async def fresh_database(backend: str, args: argparse.Namespace, workdir: Path, tag: str) -> str:
    if backend == "sqlite":
        path = workdir / f"ledger_{tag}.db"
        return f"sqlite+aiosqlite:///{path}"
    query = f"?host={args.pg_socket}" if args.pg_socket else ""
    admin = await asyncpg.connect(f"{args.pg_url}/postgres{query}")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{args.database}"')
    finally:
        await admin.close()
    return f"{args.pg_url.replace('postgresql://', 'postgresql+asyncpg://')}/{args.database}{query}"


async def durability(engine: AsyncEngine) -> str:
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            journal = (await conn.execute(text("PRAGMA journal_mode"))).scalar()
            sync = (await conn.execute(text("PRAGMA synchronous"))).scalar()
            names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
            return f"SQLite journal_mode={journal}, synchronous={names.get(int(sync or 0), sync)}"
        settings = []
        for name in ("server_version", "synchronous_commit", "fsync", "wal_sync_method", "commit_delay",
                     "full_page_writes", "shared_buffers"):  # fmt: skip
            settings.append(f"{name}={(await conn.execute(text(f'SHOW {name}'))).scalar()}")
        return "PostgreSQL " + ", ".join(settings)


async def seed(engine: AsyncEngine, businesses: list[str]) -> None:
    """Every business's available balance funded with FUNDS, one earnings transaction each (outside the timed
    part, written in bulk), and the tables analysed, as a ledger in service would be."""
    now = utcnow()
    costs = marketplace_account(AccountKind.ACQUISITION_COSTS)
    accounts: list[dict[str, Any]] = [
        {"code": costs.code, "owner": "marketplace", "owner_id": None, "kind": costs.kind.value,
         "currency": CURRENCY, "balance_minor": 0, "non_negative": False, "created_at": now}
    ]  # fmt: skip
    for business in businesses:
        key = business_account(business, AccountKind.AVAILABLE)
        accounts.append(
            {"code": key.code, "owner": "business", "owner_id": business, "kind": key.kind.value,
             "currency": CURRENCY, "balance_minor": FUNDS, "non_negative": True, "created_at": now}
        )  # fmt: skip
    async with engine.begin() as conn:
        await conn.execute(insert(LedgerAccount), accounts)
        ids = {r.code: r.id for r in await conn.execute(text("SELECT code, id FROM ledger_accounts"))}
        postings: list[dict[str, Any]] = []
        transactions: list[dict[str, Any]] = []
        for business, account in zip(businesses, accounts[1:], strict=True):
            txn = f"txn_bench_funding_{business}"
            postings.append({"transaction_id": txn, "account_id": ids[costs.code], "amount_minor": FUNDS,
                             "currency": CURRENCY})  # fmt: skip
            postings.append({"transaction_id": txn, "account_id": ids[account["code"]], "amount_minor": -FUNDS,
                             "currency": CURRENCY})  # fmt: skip
            transactions.append({"id": txn, "idempotency_key": f"bench-funding-{business}", "kind": "lead_earnings",
                                 "memo": "funding", "fingerprint": "-", "business_id": business,
                                 "reference": None, "created_at": now})  # fmt: skip
        await conn.execute(insert(LedgerPosting), postings)
        await conn.execute(insert(LedgerTransaction), transactions)
    async with engine.begin() as conn:
        await conn.execute(text("ANALYZE"))


async def check_ledger(engine: AsyncEngine) -> str:
    sessions = create_session_factory(engine)
    async with sessions() as session:
        totals = await store.trial_balance(session)
        mismatches = await store.balance_mismatches(session)
        negative = (
            await session.execute(text("SELECT count(*) FROM ledger_accounts WHERE non_negative AND balance_minor < 0"))
        ).scalar()
    if any(totals.values()) or mismatches or negative:
        raise SystemExit(f"LEDGER BROKEN: trial balance {totals}, mismatches {mismatches[:5]}, negative {negative}")
    return f"ledger checked: trial balance {totals}, every business balance equals its postings, none negative"


# --- the timed part -------------------------------------------------------------------------------------


async def run_cell(cell: Cell, post: Post, businesses: list[str], seconds: float, warmup: float) -> None:
    rng = random.Random(f"{cell.backend}-{cell.path}-{cell.workload}-{cell.clients}")
    run = f"{cell.path[0]}{cell.workload[0]}{cell.clients}_{os.getpid()}_{time.time_ns()}"
    deadline_warm = time.perf_counter() + warmup
    deadline = deadline_warm + seconds

    async def client(n: int) -> None:
        counter = 0
        while True:
            now = time.perf_counter()
            if now >= deadline:
                return
            counter += 1
            if cell.workload == "hot":
                payer = HOT
                recipient = rng.choice(businesses)
            else:
                payer, recipient = rng.sample(businesses, 2)
            transfer = commission(f"{run}-{n}-{counter}", payer, recipient)
            t0 = time.perf_counter()
            try:
                await post(transfer, payer)
            except InsufficientFunds:
                cell.errors["insufficient funds"] += 1
                continue
            except Exception as exc:
                cell.errors[type(exc).__name__] += 1
                continue
            t1 = time.perf_counter()
            cell.done += 1
            if t0 >= deadline_warm and t1 <= deadline:
                cell.latencies.append(t1 - t0)

    await asyncio.gather(*(client(n) for n in range(cell.clients)))
    cell.seconds = seconds


def make_post(
    path: str, engine: AsyncEngine, pipelines: int, min_share: int
) -> tuple[Post, Callable[[], Awaitable[None]], Any]:
    sessions = create_session_factory(engine)
    if path == "store":

        async def post_store(transfer: Transfer, payer: str) -> Any:
            async with sessions() as session, session.begin():
                return await store.post(session, transfer, business_id=payer)

        return post_store, _nothing, None
    if path == "function":

        async def post_function(transfer: Transfer, payer: str) -> Any:
            async with sessions() as session, session.begin():
                return await fast_store.post(session, transfer, business_id=payer)

        return post_function, _nothing, None
    ledger = fast_store.GroupCommitLedger(engine, pipelines=pipelines, min_share=min_share)

    async def post_group(transfer: Transfer, payer: str) -> Any:
        return await ledger.post(transfer, business_id=payer)

    return post_group, ledger.aclose, ledger


async def _nothing() -> None:
    return None


async def bench_backend(backend: str, args: argparse.Namespace, workdir: Path) -> list[Cell]:
    businesses = business_ids(args.accounts)
    paths = [p for p in args.paths if backend == "postgresql" or p == "store"]
    cells: list[Cell] = []
    for path in paths:
        url = await fresh_database(backend, args, workdir, path)
        engine = create_engine(url)
        await migrate.upgrade(engine)
        await seed(engine, [*businesses, HOT])
        print(f"\n[{backend} / {path}] {await durability(engine)}", flush=True)
        post, close, ledger = make_post(path, engine, args.pipelines, args.min_share)
        try:
            for workload in args.workloads:
                for clients in args.clients:
                    cell = Cell(backend, path, workload, clients)
                    before = (ledger.batches, ledger.written) if ledger is not None else (0, 0)
                    stalled, started = cpu_stall_us(), time.perf_counter()
                    python0, server0 = time.process_time(), server_cpu(backend, args.database)
                    await run_cell(cell, post, businesses, args.seconds, args.warmup)
                    cell.cpu_python = time.process_time() - python0
                    cell.cpu_server = server_cpu_since(backend, args.database, server0)
                    if stalled is not None and (now := cpu_stall_us()) is not None:
                        cell.cpu_pressure = 100 * (now - stalled) / 1e6 / (time.perf_counter() - started)
                    if ledger is not None:
                        cell.batches = ledger.batches - before[0]
                        cell.written = ledger.written - before[1]
                    cells.append(cell)
                    print("  " + row(cell), flush=True)
        finally:
            await close()
        print(f"  {await check_ledger(engine)}", flush=True)
        await engine.dispose()
    return cells


def server_cpu(backend: str, database: str) -> dict[int, int]:
    """CPU clock ticks so far of each PostgreSQL process connected to database (their title names it)."""
    ticks: dict[int, int] = {}
    if backend != "postgresql":
        return ticks
    tag = f" {database} ".encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if tag not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks[int(pid)] = int(fields[11]) + int(fields[12])
    return ticks


def server_cpu_since(backend: str, database: str, before: dict[int, int]) -> float:
    """CPU seconds the database's PostgreSQL processes used since before (those still running now)."""
    now = server_cpu(backend, database)
    return sum(ticks - before.get(pid, 0) for pid, ticks in now.items()) / os.sysconf("SC_CLK_TCK")


def cpu_stall_us() -> int | None:
    """Microseconds in which some task on the host waited for a CPU (Linux pressure stall information)."""
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return int(first.rsplit("total=", 1)[1])


HEADER = (
    "| backend | path | workload | clients | transfers/s | p50 ms | p99 ms | per commit | CPU µs per transfer"
    " | CPU stall % | errors |"
)
RULE = "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"


def row(cell: Cell) -> str:
    errors = ", ".join(f"{name} {count}" for name, count in cell.errors.items()) or "0"
    per_commit = f"{(cell.written or 0) / cell.batches:.1f}" if cell.batches else "1"
    pressure = f"{cell.cpu_pressure:.0f}" if cell.cpu_pressure is not None else "-"
    # All transfers of the cell (warm-up included) did the work measured by the CPU clocks.
    done = max(1, cell.done)
    cpu = f"{cell.cpu_python / done * 1e6:,.0f}"
    if cell.backend == "postgresql":
        cpu += f" + {cell.cpu_server / done * 1e6:,.0f}"
    return (
        f"| {cell.backend} | {cell.path} | {cell.workload} | {cell.clients} | {cell.rate:,.0f} | "
        f"{cell.percentile(0.50):.2f} | {cell.percentile(0.99):.2f} | {per_commit} | {cpu} | {pressure} | {errors} |"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per cell (default 10)")
    parser.add_argument("--warmup", type=float, default=1.0, help="untimed seconds before each cell (default 1)")
    parser.add_argument("--clients", default="1,8,32", help="concurrent clients, comma-separated (default 1,8,32)")
    parser.add_argument("--workloads", default="spread,hot", help="spread and/or hot (default both)")
    parser.add_argument("--accounts", type=int, default=10_000, help="businesses in the spread workload")
    parser.add_argument("--path", default="store,function,group", help=f"any of {', '.join(PATHS)} (default all)")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432", help="server, no database")
    parser.add_argument(
        "--pg-socket", default="", help="connect through this Unix socket directory instead (e.g. /var/run/postgresql)"
    )
    parser.add_argument("--database", default="bench_ledger", help="PostgreSQL database to drop and create")
    parser.add_argument(
        "--pipelines", type=int, default=2, help="batches in flight at once on the group path (default 2)"
    )
    parser.add_argument(
        "--min-share",
        type=int,
        default=fast_store.MIN_SHARE,
        help=f"idle pipelines share the queue in parts of at least this many (default {fast_store.MIN_SHARE})",
    )
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop", help="event loop (as uvicorn)")
    args = parser.parse_args(argv)
    args.clients = [int(c) for c in args.clients.split(",")]
    args.workloads = [w for w in args.workloads.split(",") if w]
    args.paths = [p for p in args.path.split(",") if p]
    if not set(args.workloads) <= {"spread", "hot"} or not set(args.paths) <= set(PATHS):
        parser.error("unknown workload or path")
    if args.accounts < 2:
        parser.error("--accounts must be at least 2")
    return args


async def main(args: argparse.Namespace) -> None:
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    load = os.getloadavg()
    print(
        f"ledger transfers: {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, loop {args.loop}, "
        f"{args.accounts:,} accounts, {args.seconds:g} s per cell, group path: {args.pipelines} pipelines, "
        f"min share {args.min_share}"
    )
    cells: list[Cell] = []
    with tempfile.TemporaryDirectory(prefix="bench_ledger_") as workdir:
        for backend in backends:
            cells += await bench_backend(backend, args, Path(workdir))
    print("\n" + HEADER + "\n" + RULE)
    for cell in cells:
        print(row(cell))
    print(
        "\nper commit: mean transfers per commit (group path; 1 elsewhere). CPU µs per transfer: this process"
        " (clients building transfers, writer, driver) + the PostgreSQL backends of the benchmark's database, over"
        " all transfers of the cell; two CPUs give at most 2,000,000 / (their sum) transfers/s. CPU stall %: share"
        " of the cell's time in which some task on the host waited for a CPU (Linux PSI); high values mean the"
        " figures are bound by what else runs on the machine."
    )


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.loop == "uvloop":
        with contextlib.suppress(ImportError):
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(main(arguments))
