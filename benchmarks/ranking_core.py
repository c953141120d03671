"""Ranking core benchmark: time to rank one lead (top 10 and top 100 after the profile filters, with the
exploration share and the learned per-lead factor applied), updates per second, memory per business and
build time, for 100,000 and 1,000,000 businesses; and in the same run the same ranking as an indexed
PostgreSQL query (filters, ORDER BY score, LIMIT k), the baseline a typical system uses.

    python benchmarks/ranking_core.py [--sizes 100000,1000000] [--leads 5000] [--no-postgres]

Other options: --updates 20000, --memory-sample 200000 (businesses built under tracemalloc), --pg-dsn (or
BENCH_PG_DSN), --pg-database bench_ranking_core (dropped and created again). Timings are wall clock; the
load average and the share of time some task waited for a CPU (Linux pressure stall information) are
printed with each figure, since neighbours on a shared machine move them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from marketplace.ranking.core import LeadFactor, Profile, RankingCore, warm_up
from marketplace.ranking.scoring import CategoryPrior, History, Score, Terms, score

CATEGORIES = [f"cat{i:02d}" for i in range(20)]
REGIONS = [f"reg{i:02d}" for i in range(20)]
PRIOR = CategoryPrior(0.2, 500_000, 0.1, 10)
PG_DSN = os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_DB = "bench_ranking_core"
# A learned conversion model's weights (ranking/model.py): budgets above the category's mean and budgets in
# the middle of a deal maker's range close more often. Mean budget 1,000,000 minor units in every category.
LEAD_FACTOR = LeadFactor(w_budget=0.3, w_fit=0.5, mean_log_budget={c: math.log(1_000_000) for c in CATEGORIES})
# A model that learned only the budget effect (as on the simulator's market, where the deal range's centre does
# not matter): it moves deal makers against lead buyers but keeps the deal makers' own order.
BUDGET_FACTOR = LeadFactor(w_budget=0.3, w_fit=0.0, mean_log_budget=LEAD_FACTOR.mean_log_budget)
# The weights the service's own conversion model learned on the simulated default scenario (seventh session,
# `marketplace simulate --ranker profitability`, the model trained on its last day, 41,176 decided deals): a
# small fit weight, a budget weight near zero.
LEARNED_FACTOR = LeadFactor(w_budget=-0.047, w_fit=0.104, mean_log_budget=LEAD_FACTOR.mean_log_budget)
CONFIGURATIONS = (
    ("", "with per-lead factor (budget and fit weights)", LEAD_FACTOR),
    ("learned_", "with per-lead factor (weights learned on the simulated market)", LEARNED_FACTOR),
    ("budget_", "with per-lead factor (budget weight only)", BUDGET_FACTOR),
    ("plain_", "without per-lead factor", LeadFactor()),
)


class Market:
    """Businesses in 1-3 categories and 1-4 regions of 20 each, half lead buyers, with a history each."""

    def __init__(self, n: int, seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        self.n = n
        n_cats = rng.integers(1, 4, n)
        n_regs = rng.integers(1, 5, n)
        self.buyer = rng.random(n) < 0.5
        self.received = rng.integers(0, 200, n)
        lo = rng.integers(0, 5, n) * 100_000
        hi = lo + rng.integers(1, 20, n) * 100_000
        # Distinct categories and regions per business: the first columns of a random permutation per row.
        cats = np.argsort(rng.random((n, len(CATEGORIES))), axis=1)[:, :3]
        regs = np.argsort(rng.random((n, len(REGIONS))), axis=1)[:, :4]
        self.paid_share = rng.random((n, 3)) * 0.4
        self.returned_share = rng.random((n, 3)) * 0.2
        self.bid = 6000 + rng.integers(0, 4, (n, 3)) * 1000
        self.entries: list[tuple[Profile, dict[str, Score]]] = []
        for i in range(n):
            categories = tuple(CATEGORIES[c] for c in cats[i, : n_cats[i]].tolist())
            regions = tuple(REGIONS[r] for r in regs[i, : n_regs[i]].tolist())
            mode = "lead_buyer" if self.buyer[i] else "deal_maker"
            profile = Profile(f"biz{i:07d}", mode, categories, regions, int(lo[i]), int(hi[i]))
            self.entries.append((profile, self.scores(i, profile, int(self.received[i]))))

    def scores(self, i: int, profile: Profile, received: int) -> dict[str, Score]:
        return {
            c: score(
                History(
                    received,
                    int(received * self.paid_share[i, j]),
                    int(received * 0.2 * 400_000),
                    int(received * self.returned_share[i, j]),
                ),
                PRIOR,
                Terms(profile.mode, 6000, 1500, int(self.bid[i, j])),
            )
            for j, c in enumerate(profile.categories)
        }


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99)]


def cpu_stall_us() -> int | None:
    """Microseconds in which some task on the host waited for a CPU (Linux pressure stall information)."""
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return None
    return int(first.rsplit("total=", 1)[1])


class Conditions:
    """The load around a measurement: load average at its end, share of its time some task waited for a CPU."""

    def __enter__(self) -> Conditions:
        self.stall, self.started = cpu_stall_us(), time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        now = cpu_stall_us()
        elapsed = time.perf_counter() - self.started
        self.stall_share = 100 * (now - self.stall) / 1e6 / elapsed if now is not None and self.stall else None
        self.load = os.getloadavg()[0]

    def __str__(self) -> str:
        stall = f"{self.stall_share:.0f}%" if self.stall_share is not None else "-"
        return f"load {self.load:.1f}, CPU stall {stall}"


def time_ranks(core: RankingCore, queries: list[tuple[str, str, int]], k: int) -> tuple[float, float]:
    for c, r, b in queries[:200]:  # warm up
        core.rank(c, r, b, k)
    samples = []
    clock = time.perf_counter_ns
    for c, r, b in queries:
        start = clock()
        core.rank(c, r, b, k)
        samples.append((clock() - start) / 1000)
    return percentiles(samples)


def build(entries: list[tuple[Profile, dict[str, Score]]]) -> RankingCore:
    core = RankingCore(explore_share=0.1, seed=2)
    for profile, scores in entries:
        core.upsert(profile, scores)
    core.compact()
    return core


def bench_core(market: Market, leads: int, updates: int, memory_sample: int) -> dict[str, object]:
    n = market.n
    # As the service does at start-up: every compiled loop loaded once (the first update would otherwise wait a
    # quarter of a second for numba's cache, a tenth of the timed updates' whole time).
    warm_up()
    # Memory from a build traced by tracemalloc (which slows allocation down several times, so the build is
    # timed on its own), over the first businesses of the market: bytes per business hardly depend on size.
    sample = market.entries[: min(n, memory_sample)]
    gc.collect()
    tracemalloc.start()
    traced = build(sample)
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del traced
    gc.collect()
    t0 = time.perf_counter()
    core = build(market.entries)
    build_s = time.perf_counter() - t0
    figures: dict[str, object] = {
        "businesses": n,
        "build_s": build_s,
        "memory_bytes_per_business": current / len(sample),
        "memory_sample": len(sample),
    }
    rng = np.random.default_rng(3)
    # Updates: a business's scores change (one more exposure, a new estimate): all its entries are replaced.
    picks = rng.integers(0, n, updates).tolist()
    changed: list[tuple[Profile, dict[str, Score]]] = []
    for i in picks:
        profile = market.entries[i][0]
        changed.append((profile, market.scores(i, profile, int(market.received[i]) + 1 + len(changed) % 7)))
    samples = []
    clock = time.perf_counter_ns
    with Conditions() as conditions:
        started = time.perf_counter()
        for profile, scores in changed:
            start = clock()
            core.upsert(profile, scores)
            samples.append((clock() - start) / 1000)
        elapsed = time.perf_counter() - started
    figures["update_p50_us"], figures["update_p99_us"] = percentiles(samples)
    figures["update_mean_us"] = elapsed / len(changed) * 1e6
    figures["updates_per_s"] = len(changed) / elapsed
    figures["update_conditions"] = conditions
    queries = [
        (CATEGORIES[rng.integers(20)], REGIONS[rng.integers(20)], int(rng.integers(1, 20) * 100_000))
        for _ in range(leads)
    ]
    figures["queries"] = queries
    # Ranking after the updates (the state a serving process is in), with the learned per-lead factor and
    # without it; exploration on (10 % of places) in both.
    for label, _, factor in CONFIGURATIONS:
        core.lead_factor = factor
        for k in (10, 100):
            with Conditions() as conditions:
                figures[f"{label}top{k}_p50_us"], figures[f"{label}top{k}_p99_us"] = time_ranks(core, queries, k)
            figures[f"{label}top{k}_conditions"] = conditions
    return figures


async def bench_postgres(
    entries: list[tuple[Profile, dict[str, Score]]], queries: list[tuple[str, str, int]], dsn: str, database: str
) -> dict[str, object]:
    import asyncpg

    admin = await asyncpg.connect(dsn)
    await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{database}"')
    await admin.close()
    conn = await asyncpg.connect(dsn.rsplit("/", 1)[0] + f"/{database}")
    try:
        await conn.execute(
            "CREATE UNLOGGED TABLE entries (business_id text, category text, region text, score float8,"
            " min_deal bigint, max_deal bigint, active boolean)"
        )
        rows = [
            (p.business_id, c, r, s[c].value, p.min_deal_minor, p.max_deal_minor, True)
            for p, s in entries
            for c in p.categories
            for r in p.regions
        ]
        await conn.copy_records_to_table("entries", records=rows)
        await conn.execute("CREATE INDEX ON entries (category, region, score DESC)")
        await conn.execute("ANALYZE entries")
        statement = await conn.prepare(
            "SELECT business_id, score FROM entries WHERE category = $1 AND region = $2 AND active"
            " AND min_deal <= $3 AND max_deal >= $3 ORDER BY score DESC LIMIT $4"
        )
        figures: dict[str, object] = {}
        for k in (10, 100):
            for c, r, b in queries[:200]:
                await statement.fetch(c, r, b, k)
            samples = []
            with Conditions() as conditions:
                for c, r, b in queries[:2000]:
                    start = time.perf_counter_ns()
                    await statement.fetch(c, r, b, k)
                    samples.append((time.perf_counter_ns() - start) / 1000)
            figures[f"pg_top{k}_p50_us"], figures[f"pg_top{k}_p99_us"] = percentiles(samples)
            figures[f"pg_top{k}_conditions"] = conditions
        return figures
    finally:
        await conn.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--leads", type=int, default=5000)
    parser.add_argument("--updates", type=int, default=20_000)
    parser.add_argument("--memory-sample", type=int, default=200_000, help="businesses built under tracemalloc")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--pg-dsn", default=PG_DSN)
    parser.add_argument("--pg-database", default=PG_DB)
    args = parser.parse_args(argv)
    for n in (int(x) for x in args.sizes.split(",")):
        started = time.perf_counter()
        market = Market(n)
        print(f"{n:,} businesses: market generated in {time.perf_counter() - started:.0f} s", flush=True)
        f = bench_core(market, args.leads, args.updates, args.memory_sample)
        pg: dict[str, object] = {}
        if not args.no_postgres:
            pg = asyncio.run(bench_postgres(market.entries, f["queries"], args.pg_dsn, args.pg_database))  # type: ignore[arg-type]
        print(
            f"  build {f['build_s']:.1f} s, {f['memory_bytes_per_business']:.0f} bytes per business"
            f" (traced over {f['memory_sample']:,})\n"
            f"  update p50/p99 {f['update_p50_us']:.1f}/{f['update_p99_us']:.1f} us, mean {f['update_mean_us']:.1f} us,"
            f" {f['updates_per_s']:,.0f} updates/s ({f['update_conditions']})"
        )
        for label, name, _ in CONFIGURATIONS:
            for k in (10, 100):
                print(
                    f"  top {k:<3} {name}, exploration on: p50/p99 {f[f'{label}top{k}_p50_us']:.1f}/"
                    f"{f[f'{label}top{k}_p99_us']:.1f} us ({f[f'{label}top{k}_conditions']})"
                )
        if pg:
            for k in (10, 100):
                p50 = pg[f"pg_top{k}_p50_us"]
                print(
                    f"  top {k:<3} PostgreSQL indexed query: p50/p99 {p50:.0f}/{pg[f'pg_top{k}_p99_us']:.0f} us"
                    f" ({pg[f'pg_top{k}_conditions']}); core faster at p50:"
                    + ", ".join(f" {p50 / f[f'{label}top{k}_p50_us']:.1f}x {name}" for label, name, _ in CONFIGURATIONS)  # type: ignore[operator]
                )
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
