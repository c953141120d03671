"""The service's hot HTTP calls one at a time, in process, on a simulated market's SQLite database: what a call
costs the service's own code, SQLAlchemy and SQLite, without a network, a server or other clients.

    python benchmarks/http_calls.py [--db PATH] [--calls offers,offers_unread,lead,claim,status] [-n 400]

Without --db it first simulates one day of the default scenario (`marketplace simulate --days 1`, about a minute)
and uses its database. The database is copied before each call kind, so every run starts from the same market.
Calls go through the ASGI app as the simulator's do (marketplace/simulation/asgi_client.py), the service's clock
frozen at the market's last moment:

  offers         GET /v1/offers of 200 businesses in turn, their tokens in the principal cache
  offers_unread  the same with the principal cache emptied before each call (the token is read from the database)
  lead           POST /v1/leads, a new customer each, and the first wave's job after it (timed apart)
  claim          POST /v1/offers/{id}/claim of the market's open offers, newest first, with an Idempotency-Key
                 (some are 409: the lead filled, or the business reached a cap, meanwhile)
  status         POST /v1/exposures/{id}/status of the open deals, one step each (new -> contacted -> quoted -> lost)

Prints p50 and mean milliseconds per call kind, the answers' status codes, and the process's CPU time per call.
Timings are wall clock: run it on an otherwise idle machine, and more than once; on a shared one the CPU time per
call is the steadier figure.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import select

from marketplace.clock import clock
from marketplace.db.models import Business, Exposure, Lead, Offer
from marketplace.identity.services import issue_business_token
from marketplace.simulation.cli import in_process_app, simulation_settings
from marketplace.simulation.market import InProcessService
from marketplace.simulation.scenario import load_scenario

KINDS = ("offers", "offers_unread", "lead", "claim", "status")
NEXT_STATUS = {"new": "contacted", "contacted": "quoted", "quoted": "lost"}


def simulated_market(folder: Path) -> Path:
    """One simulated day of the default scenario; its SQLite database."""
    out = folder / "market"
    command = [sys.executable, "-m", "marketplace.cli", "simulate", "--days", "1", "--no-progress", "--out", str(out)]
    print("simulating one day of the default scenario (about a minute) ...", flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return out / "market.db"


def copy_database(source: Path, target: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        path = Path(str(source) + suffix)
        if path.exists():
            shutil.copy(path, str(target) + suffix)


async def run_kind(kind: str, database: Path, n: int) -> tuple[list[float], list[float], Counter[int], list[float]]:
    settings = simulation_settings(f"sqlite+aiosqlite:///{database}", load_scenario("default"))
    app = in_process_app(settings, None, 1, migrate=False)
    service = InProcessService(app)
    await service.start()
    client = service.client
    tokens: dict[str, str] = {}
    samples: list[float] = []
    cpu: list[float] = []  # the process's CPU time per call: steadier than the wall clock on a shared machine
    after: list[float] = []  # the jobs a call left due (the lead's first wave)
    codes: Counter[int] = Counter()

    async def token_of(session: Any, business_id: str) -> str:
        if business_id not in tokens:
            tokens[business_id] = issue_business_token(session, business_id)
        return tokens[business_id]

    async def timed(method: str, path: str, **kwargs: Any) -> None:
        started, started_cpu = time.perf_counter(), time.process_time()
        response = await client.request(method, path, **kwargs)
        samples.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
        codes[response.status_code] += 1

    work: list[Any]  # what each call needs: (business, token), (offer, token), (exposure, token, status), a lead's
    try:
        async with app.state.sessions() as session:
            if kind in ("offers", "offers_unread"):
                ids = list(
                    await session.scalars(
                        select(Business.id).where(Business.status == "active").order_by(Business.id).limit(200)
                    )
                )
                work = [(b, await token_of(session, b)) for b in ids]
                last = None
            elif kind == "claim":
                last = await session.scalar(select(Offer.created_at).order_by(Offer.created_at.desc()).limit(1))
                rows = await session.execute(
                    select(Offer.id, Offer.business_id).where(Offer.status == "open").order_by(Offer.created_at.desc())
                )
                work = [(offer_id, await token_of(session, b)) for offer_id, b in list(rows)[:n]]
            elif kind == "status":
                last = await session.scalar(select(Exposure.created_at).order_by(Exposure.created_at.desc()).limit(1))
                rows = await session.execute(
                    select(Exposure.id, Exposure.business_id, Exposure.status)
                    .where(Exposure.status.in_(list(NEXT_STATUS)))
                    .order_by(Exposure.created_at.desc())
                )
                work = [(e, await token_of(session, b), s) for e, b, s in list(rows)[:n]]
            else:  # lead
                last = await session.scalar(select(Lead.created_at).order_by(Lead.created_at.desc()).limit(1))
                work = list(await session.execute(select(Lead.category, Lead.region, Lead.budget_minor).limit(200)))
            await session.commit()
        if last is not None:
            clock.freeze(last)

        if kind in ("offers", "offers_unread"):
            for _, token in work[:20]:  # warm up (and, for "offers", fill the principal cache)
                await client.request("GET", "/v1/offers", headers={"authorization": f"Bearer {token}"})
            for i in range(n):
                _, token = work[i % len(work)]
                if kind == "offers_unread":
                    app.state.principals.clear()
                await timed("GET", "/v1/offers", headers={"authorization": f"Bearer {token}"})
        elif kind == "claim":
            for offer_id, token in work:
                headers = {"authorization": f"Bearer {token}", "idempotency-key": str(uuid.uuid4())}
                await timed("POST", f"/v1/offers/{offer_id}/claim", json={"exclusive": False}, headers=headers)
                await service.settle()
        elif kind == "status":
            for exposure_id, token, status in work:
                await timed(
                    "POST",
                    f"/v1/exposures/{exposure_id}/status",
                    json={"status": NEXT_STATUS[status]},
                    headers={"authorization": f"Bearer {token}"},
                )
                await service.settle()
        else:
            for i in range(n):
                category, region, budget = work[i % len(work)]
                body = {
                    "category": category,
                    "region": region,
                    "description": "a customer's need, for the benchmark",
                    "budget": {"amount_minor": budget, "currency": settings.currency},
                    "contact": {"name": "Customer", "phone": f"+97250{i:07d}", "email": f"bench{i}@example.com"},
                    "consent": True,
                }
                await timed("POST", "/v1/leads", json=body)
                started = time.perf_counter()
                await service.run_jobs()
                after.append((time.perf_counter() - started) * 1000)
    finally:
        await service.stop()
        clock.reset()
    return samples, cpu, codes, after


def summary(samples: list[float]) -> str:
    if not samples:
        return "no calls"
    ordered = sorted(samples)
    return f"p50 {ordered[len(ordered) // 2]:6.2f} ms, mean {sum(ordered) / len(ordered):6.2f} ms"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, help="a simulated market's SQLite database (default: simulate one day)")
    parser.add_argument("--calls", default=",".join(KINDS))
    parser.add_argument("-n", type=int, default=400, help="calls per kind (at most the open offers or deals there are)")
    args = parser.parse_args(argv)
    kinds = [k for k in args.calls.split(",") if k]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown call kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    with tempfile.TemporaryDirectory(prefix="bench-http-calls-") as folder:
        source = args.db or simulated_market(Path(folder))
        for kind in kinds:
            database = Path(folder) / f"{kind}.db"
            copy_database(source, database)
            samples, cpu, codes, after = asyncio.run(run_kind(kind, database, args.n))
            line = f"{kind:14s} n={len(samples):4d}  {summary(samples)}  {dict(sorted(codes.items()))}"
            if cpu:
                line += f"; CPU {sum(cpu) / len(cpu):.2f} ms a call"
            if after:
                line += f"; its first wave (job) {summary(after)}"
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
