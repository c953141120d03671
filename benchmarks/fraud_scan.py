"""The fraud scan of businesses with news (`fraud.services.assess_businesses`, what the hourly `fraud_scan` job runs
for each batch it claims), over a simulated market's SQLite database: what one scan costs, split into its reads
(`_load_scan`: the businesses, the category norms, every deal with its customers' answers, the model, alerts and
assessments), its scoring (`_score_scan`: signals, rules, model) and its writes (`_persist_scan` and the flush).

    python benchmarks/fraud_scan.py --db PATH [--businesses 60] [--pick busy|recent] [-n 20] [--hourly K]
        [--save FILE | --check FILE] [--ab OTHER_CHECKOUT --rounds 3]

--db names a simulated market's database (`marketplace simulate --days 14 --out DIR` leaves DIR/market.db); it is
copied first, and every scan runs in a transaction that is rolled back, so each one finds the same market. The
service's clock is frozen at the market's last moment (its newest deal event). The businesses: the `--businesses`
with the most deals (`busy`), or those whose deals moved in the market's last simulated hour, as the hourly scan
finds them (`recent`, up to `--businesses`).

The scans run as the hourly scheduled scan does (`scan_dirty`): through the process's cache of deals where the
checkout has one (fraud/deal_cache.py, twenty-seventh session; the warm-up scan reads every deal, the timed ones what
changed since). `--hourly K`: between two scans the clock moves an hour and K deals of the businesses move (the
oldest undecided first: contacted, then lost), committed, as a market's hour would, so that what a scan re-reads is
news; each scan's results are kept and compared. The copy is migrated to this checkout's schema first.

Prints the mean milliseconds per scan and per business, wall clock and CPU (time.process_time), for the whole scan
and each part. `--save FILE` writes what the scan wrote (the assessment rows, the businesses' reliability, their
alerts, the scan's result); `--check FILE` compares with such a file and fails (exit 1) on any difference: a change
meant to make the scan cheaper must leave it identical. `--ab OTHER` runs the benchmark alternately on OTHER's code
(PYTHONPATH=OTHER, e.g. /work/main) and this checkout's, `--rounds` times each, checking this checkout's results
against OTHER's: on a shared machine, compare the rounds side by side, and the CPU figures more than the wall's.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from marketplace.clock import clock
from marketplace.db.engine import create_engine, create_session_factory
from marketplace.db.migrate import upgrade
from marketplace.db.models import Business, Exposure, ExposureEvent, FraudAlert, FraudAssessment
from marketplace.exposures.moves import move_to
from marketplace.exposures.rules import UNDECIDED
from marketplace.fraud import services
from marketplace.simulation.cli import simulation_settings
from marketplace.simulation.scenario import load_scenario

PARTS = ("_load_scan", "_score_scan")


def copy_database(source: Path, target: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        path = Path(str(source) + suffix)
        if path.exists():
            shutil.copy(path, str(target) + suffix)


class Timer:
    """Wall and CPU seconds spent in the wrapped functions of `services` (the scan's parts)."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def wrap(self, name: str) -> None:
        original: Callable[..., Any] | None = getattr(services, name, None)
        if original is None:
            return
        timer = self

        if asyncio.iscoroutinefunction(original):

            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                wall, cpu = time.perf_counter(), time.process_time()
                try:
                    return await original(*args, **kwargs)
                finally:
                    timer.add(name, time.perf_counter() - wall, time.process_time() - cpu)

            setattr(services, name, timed_async)
        else:

            def timed(*args: Any, **kwargs: Any) -> Any:
                wall, cpu = time.perf_counter(), time.process_time()
                try:
                    return original(*args, **kwargs)
                finally:
                    timer.add(name, time.perf_counter() - wall, time.process_time() - cpu)

            setattr(services, name, timed)

    def add(self, name: str, wall: float, cpu: float) -> None:
        self.wall[name] = self.wall.get(name, 0.0) + wall
        self.cpu[name] = self.cpu.get(name, 0.0) + cpu


async def pick(session: Any, how: str, count: int) -> list[str]:
    if how == "busy":
        rows = await session.execute(
            select(Exposure.business_id)
            .group_by(Exposure.business_id)
            .order_by(func.count(Exposure.id).desc(), Exposure.business_id)
            .limit(count)
        )
        return sorted(r[0] for r in rows)
    last = await session.scalar(select(func.max(ExposureEvent.at)))
    rows = await session.execute(
        select(Exposure.business_id)
        .join(ExposureEvent, ExposureEvent.exposure_id == Exposure.id)
        .where(ExposureEvent.at > last - timedelta(hours=1))
        .distinct()
    )
    return sorted(r[0] for r in rows)[:count]


async def written(session: Any, ids: list[str], result: services.ScanResult) -> dict[str, Any]:
    """What the scan wrote, read back from the database (before the rollback)."""
    assessments = {
        r.business_id: {k: v for k, v in r._mapping.items()}
        for r in await session.execute(select(FraudAssessment.__table__).where(FraudAssessment.business_id.in_(ids)))
    }
    reliability = dict(
        list(await session.execute(select(Business.id, Business.reliability_bp).where(Business.id.in_(ids))))
    )
    alerts: dict[str, list[dict[str, Any]]] = {}
    for r in await session.execute(
        select(FraudAlert.__table__).where(FraudAlert.business_id.in_(ids)).order_by(FraudAlert.opened_at)
    ):
        row = dict(r._mapping)
        if row["id"] in result.opened:
            row["id"] = "(opened by the scan)"
        alerts.setdefault(row["business_id"], []).append(row)
    return json.loads(
        json.dumps(
            {
                "assessments": assessments,
                "reliability": reliability,
                "alerts": alerts,
                "result": {
                    "assessed": result.assessed,
                    "opened": len(result.opened),
                    "reliability_changed": sorted(result.reliability_changed),
                },
            },
            sort_keys=True,
            default=str,
        )
    )


async def move_deals(sessions: Any, ids: list[str], count: int) -> None:
    """An hour of the market: `count` of these businesses' undecided deals move (the oldest first: new or quoted to
    contacted, contacted to lost), committed, dated now."""
    async with sessions() as session:
        deals = list(
            await session.scalars(
                select(Exposure)
                .where(Exposure.business_id.in_(ids), Exposure.status.in_(UNDECIDED))
                .order_by(Exposure.status_changed_at, Exposure.id)
                .limit(count)
            )
        )
        for exposure in deals:
            to = "lost" if exposure.status == "contacted" else "contacted"
            move_to(session, exposure, "benchmark", to, None, clock.now())
        await session.commit()


async def run(
    database: Path, how: str, count: int, scans: int, hourly: int = 0
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    url = f"sqlite+aiosqlite:///{database}"
    settings = simulation_settings(url, load_scenario("default"))
    engine = create_engine(url)
    await upgrade(engine)  # this checkout's schema (a market made by another's may lack its columns)
    sessions = create_session_factory(engine)
    timer = Timer()
    for name in PARTS:
        timer.wrap(name)
    # As the scheduled scan reads (scan_dirty): through the process's cache of deals, where the checkout has one.
    cached = {"cached": True} if "cached" in inspect.signature(services.assess_businesses).parameters else {}
    try:
        async with sessions() as session:
            last = await session.scalar(select(func.max(ExposureEvent.at)))
            ids = await pick(session, how, count)
            deals = await session.scalar(select(func.count(Exposure.id)).where(Exposure.business_id.in_(ids)))
            await session.rollback()
        assert last is not None
        clock.freeze(last)
        snapshots: list[dict[str, Any]] = []
        walls: list[float] = []
        cpus: list[float] = []
        for i in range(scans + 1):  # the first warms up: the category norms, the model and the deals are read once
            if i == 1:
                timer.wall.clear()
                timer.cpu.clear()
            if hourly and i:
                clock.advance(timedelta(hours=1))
                await move_deals(sessions, ids, hourly)
            async with sessions() as session:
                wall, cpu = time.perf_counter(), time.process_time()
                result = await services.assess_businesses(session, settings, ids, **cached)
                if i:
                    walls.append(time.perf_counter() - wall)
                    cpus.append(time.process_time() - cpu)
                seen = await written(session, ids, result)
                await session.rollback()
            if hourly or not snapshots:
                snapshots.append(seen)
            elif seen != snapshots[0]:
                raise SystemExit("two scans of the same market wrote different results")
    finally:
        clock.reset()
        await engine.dispose()
    total_wall, total_cpu = sum(walls), sum(cpus)
    figures: dict[str, Any] = {
        "businesses": len(ids),
        "deals": deals,
        "scans": scans,
        "hourly": hourly,
        "wall_ms": 1000 * total_wall / scans,
        "cpu_ms": 1000 * total_cpu / scans,
        # The least a scan took: on a shared machine, less at the mercy of what else runs than the mean.
        "min_wall_ms": 1000 * min(walls),
        "min_cpu_ms": 1000 * min(cpus),
        "parts": {
            "load": (1000 * timer.wall.get("_load_scan", 0) / scans, 1000 * timer.cpu.get("_load_scan", 0) / scans),
            "score": (1000 * timer.wall.get("_score_scan", 0) / scans, 1000 * timer.cpu.get("_score_scan", 0) / scans),
        },
    }
    load_wall, load_cpu = figures["parts"]["load"]
    score_wall, score_cpu = figures["parts"]["score"]
    figures["parts"]["persist"] = (
        figures["wall_ms"] - load_wall - score_wall,
        figures["cpu_ms"] - load_cpu - score_cpu,
    )
    return figures, snapshots


def report(figures: dict[str, Any], label: str = "") -> str:
    n = figures["businesses"]
    lines = [
        f"{label}{n} businesses ({figures['deals']} deals), {figures['scans']} scans"
        f"{' an hour apart, ' + str(figures['hourly']) + ' deals moving each hour' if figures.get('hourly') else ''}: "
        f"{figures['wall_ms']:.1f} ms wall, {figures['cpu_ms']:.1f} ms CPU per scan "
        f"({figures['wall_ms'] / n:.2f} / {figures['cpu_ms'] / n:.2f} ms per business); "
        f"the fastest {figures['min_wall_ms']:.1f} ms wall, {figures['min_cpu_ms']:.1f} ms CPU"
    ]
    for part in ("load", "score", "persist"):
        wall, cpu = figures["parts"][part]
        lines.append(f"{label}  {part:8s} {wall:7.1f} ms wall {cpu:7.1f} ms CPU")
    return "\n".join(lines)


def differences(a: Any, b: Any, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                out.append(f"{where}/{key}: only in {'the reference' if key in a else 'this run'}")
            else:
                out += differences(a[key], b[key], f"{where}/{key}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def ab(args: argparse.Namespace) -> int:
    """Alternate rounds on the other checkout's code and this one's, each in its own process."""
    here = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="bench-fraud-scan-ab-") as folder:
        reference = Path(folder) / "reference.json"
        common = [
            str(Path(__file__).resolve()),
            "--db",
            str(args.db),
            "--businesses",
            str(args.businesses),
            "--pick",
            args.pick,
            "-n",
            str(args.n),
            "--hourly",
            str(args.hourly),
            "--json",
        ]
        results: dict[str, list[dict[str, Any]]] = {"other": [], "this": []}
        for round_ in range(args.rounds):
            for side, path in (("other", args.ab), ("this", here)):
                extra = ["--save", str(reference)] if side == "other" else ["--check", str(reference)]
                env = {**os.environ, "PYTHONPATH": str(path)}
                done = subprocess.run(
                    [sys.executable, *common, *extra], env=env, check=True, capture_output=True, text=True, cwd=path
                )
                figures = json.loads(done.stdout.strip().splitlines()[-1])
                results[side].append(figures)
                print(report(figures, f"round {round_ + 1} {side:5s} "), flush=True)
        for side in ("other", "this"):
            runs = results[side]
            wall = sorted(r["wall_ms"] for r in runs)[len(runs) // 2]
            cpu = sorted(r["cpu_ms"] for r in runs)[len(runs) // 2]
            fastest = min(r["min_cpu_ms"] for r in runs)
            print(
                f"{side:5s} ({args.ab if side == 'other' else here}): median of the rounds' means {wall:.1f} ms wall, "
                f"{cpu:.1f} ms CPU; the fastest scan {fastest:.1f} ms CPU"
            )
        print("results identical to the other checkout's in every round")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, required=True, help="a simulated market's SQLite database")
    parser.add_argument("--businesses", type=int, default=60)
    parser.add_argument("--pick", choices=("busy", "recent"), default="busy")
    parser.add_argument("-n", type=int, default=20, help="scans timed (after one that warms up)")
    parser.add_argument("--hourly", type=int, default=0, help="deals moved, an hour apart, between two scans")
    parser.add_argument("--save", type=Path, help="write what the scan wrote to this file")
    parser.add_argument("--check", type=Path, help="compare what the scan wrote with this file")
    parser.add_argument("--json", action="store_true", help="print the figures as one line of JSON")
    parser.add_argument("--ab", type=Path, help="another checkout: alternate rounds on its code and this one's")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.ab:
        return ab(args)
    with tempfile.TemporaryDirectory(prefix="bench-fraud-scan-") as folder:
        database = Path(folder) / "market.db"
        copy_database(args.db, database)
        figures, snapshot = asyncio.run(run(database, args.pick, args.businesses, args.n, args.hourly))
    if args.save:
        args.save.write_text(json.dumps(snapshot, sort_keys=True))
    if args.check:
        found = differences(json.loads(args.check.read_text()), snapshot)
        if found:
            print(f"{len(found)} differences from {args.check}:", *found[:20], sep="\n", file=sys.stderr)
            return 1
    print(json.dumps(figures) if args.json else report(figures), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
