"""Ranking core benchmark: time to rank one lead (top 10 and top 100 after the profile filters), updates per
second, memory per business and build time, for 100,000 and 1,000,000 businesses; and in the same run the
same ranking as an indexed PostgreSQL query (filters, ORDER BY score, LIMIT k), the baseline a typical
system uses.

    python benchmarks/ranking_core.py [--sizes 100000,1000000] [--leads 5000] [--no-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
import tracemalloc

import numpy as np

from marketplace.ranking.core import Profile, RankingCore
from marketplace.ranking.scoring import CategoryPrior, History, Terms, score

CATEGORIES = [f"cat{i:02d}" for i in range(20)]
REGIONS = [f"reg{i:02d}" for i in range(20)]
PRIOR = CategoryPrior(0.2, 500_000, 0.1, 10)
PG_DSN = os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_DB = "bench_ranking"


def market(n: int, seed: int = 1) -> list[tuple[Profile, dict]]:
    rng = np.random.default_rng(seed)
    out = []
    n_cats = rng.integers(1, 4, n)
    n_regs = rng.integers(1, 5, n)
    modes = rng.random(n) < 0.5
    received = rng.integers(0, 200, n)
    lo = rng.integers(0, 5, n) * 100_000
    hi = lo + rng.integers(1, 20, n) * 100_000
    for i in range(n):
        cats = tuple(rng.choice(CATEGORIES, n_cats[i], replace=False).tolist())
        regs = tuple(rng.choice(REGIONS, n_regs[i], replace=False).tolist())
        mode = "lead_buyer" if modes[i] else "deal_maker"
        r = int(received[i])
        scores = {
            c: score(
                History(r, int(r * rng.random() * 0.4), int(r * 0.2 * 400_000), int(r * rng.random() * 0.2)),
                PRIOR,
                Terms(mode, 6000, 1500, int(6000 + rng.integers(0, 4) * 1000)),
            )
            for c in cats
        }
        out.append((Profile(f"biz{i:07d}", mode, cats, regs, int(lo[i]), int(hi[i])), scores))
    return out


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99)]


def bench_core(n: int, leads: int) -> dict[str, float]:
    data = market(n)
    gc.collect()
    tracemalloc.start()
    t0 = time.perf_counter()
    core = RankingCore(explore_share=0.1, seed=2)
    for profile, scores in data:
        core.upsert(profile, scores)
    core.compact()
    build_s = time.perf_counter() - t0
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rng = np.random.default_rng(3)
    queries = [
        (CATEGORIES[rng.integers(20)], REGIONS[rng.integers(20)], int(rng.integers(1, 20) * 100_000))
        for _ in range(leads)
    ]
    figures: dict[str, float] = {"businesses": n, "build_s": build_s, "memory_bytes_per_business": current / n}
    for k in (10, 100):
        for c, r, b in queries[:200]:  # warm up
            core.rank(c, r, b, k)
        samples = []
        for c, r, b in queries:
            start = time.perf_counter_ns()
            core.rank(c, r, b, k)
            samples.append((time.perf_counter_ns() - start) / 1000)
        figures[f"top{k}_p50_us"], figures[f"top{k}_p99_us"] = percentiles(samples)
    # Updates: a business's scores change (a claim, a status, a new estimate): all its entries are replaced.
    picks = rng.integers(0, n, 20_000)
    start = time.perf_counter()
    for i in picks.tolist():
        profile, scores = data[i]
        core.upsert(profile, scores)
    elapsed = time.perf_counter() - start
    figures["update_us"] = elapsed / len(picks) * 1e6
    figures["updates_per_s"] = len(picks) / elapsed
    figures["_queries"] = queries  # type: ignore[assignment]
    figures["_data"] = data  # type: ignore[assignment]
    return figures


async def bench_postgres(data: list[tuple[Profile, dict]], queries: list[tuple[str, str, int]]) -> dict[str, float]:
    import asyncpg

    admin = await asyncpg.connect(PG_DSN)
    await admin.execute(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
    await admin.execute(f"CREATE DATABASE {PG_DB}")
    await admin.close()
    conn = await asyncpg.connect(PG_DSN.rsplit("/", 1)[0] + f"/{PG_DB}")
    try:
        await conn.execute(
            "CREATE UNLOGGED TABLE entries (business_id text, category text, region text, score float8,"
            " min_deal bigint, max_deal bigint, active boolean)"
        )
        rows = [
            (p.business_id, c, r, s[c].value, p.min_deal_minor, p.max_deal_minor, True)
            for p, s in data
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
        figures: dict[str, float] = {}
        for k in (10, 100):
            for c, r, b in queries[:200]:
                await statement.fetch(c, r, b, k)
            samples = []
            for c, r, b in queries[:2000]:
                start = time.perf_counter_ns()
                await statement.fetch(c, r, b, k)
                samples.append((time.perf_counter_ns() - start) / 1000)
            figures[f"pg_top{k}_p50_us"], figures[f"pg_top{k}_p99_us"] = percentiles(samples)
        return figures
    finally:
        await conn.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--leads", type=int, default=5000)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)
    print(
        f"{'businesses':>10} {'build s':>8} {'B/biz':>7} {'top10 p50/p99 us':>18} {'top100 p50/p99 us':>19} "
        f"{'update us':>9} {'pg top100 p50/p99 us':>21} {'speed-up p50':>12}"
    )
    for n in (int(x) for x in args.sizes.split(",")):
        f = bench_core(n, args.leads)
        pg: dict[str, float] = {}
        if not args.no_postgres:
            pg = asyncio.run(bench_postgres(f["_data"], f["_queries"]))  # type: ignore[arg-type]
        pg_cell = f"{pg['pg_top100_p50_us']:>9.0f}/{pg['pg_top100_p99_us']:<9.0f}" if pg else f"{'-':>21}"
        speedup = f"{pg['pg_top100_p50_us'] / f['top100_p50_us']:>11.1f}x" if pg else f"{'-':>12}"
        print(
            f"{n:>10} {f['build_s']:>8.1f} {f['memory_bytes_per_business']:>7.0f} "
            f"{f['top10_p50_us']:>8.1f}/{f['top10_p99_us']:<9.1f} "
            f"{f['top100_p50_us']:>8.1f}/{f['top100_p99_us']:<10.1f}"
            f" {f['update_us']:>9.1f} {pg_cell} {speedup}"
        )
        if pg:
            print(f"{'':>10} postgres top10 p50/p99 us: {pg['pg_top10_p50_us']:.0f}/{pg['pg_top10_p99_us']:.0f}")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
