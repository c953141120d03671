"""`marketplace bench http`: the HTTP load harness from the command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import msgspec
import uvloop

from marketplace.bench import http_load as load
from marketplace.bench.client import Connection, HttpError, split_url
from marketplace.bench.server import (
    ActivitySampler,
    CpuMeter,
    ScratchServer,
    ServerConfig,
    Usage,
    busy_cores,
    database_counters,
    pinned,
    postgres_backends,
)


def _cpus(text: str) -> set[int]:
    return {int(part) for part in text.split(",") if part.strip()}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marketplace bench", description="Benchmarks of the running service.")
    sub = parser.add_subparsers(dest="bench", required=True)
    http = sub.add_parser(
        "http",
        help="drive the HTTP API with concurrent clients and print req/s and p50/p99 per call",
        description=(
            "Seed a market through the API, then run timed phases (lead intake; offers and claims; status "
            "updates) with closed-loop clients and print requests/s, p50/p99 latency and errors per call. "
            "By default it starts the service itself on a scratch PostgreSQL database (uvicorn workers and a "
            "dramatiq job worker on the server's core), and pins itself to the other core."
        ),
    )
    http.add_argument("--url", help="drive this running server instead (e.g. http://127.0.0.1:8000)")
    http.add_argument(
        "--start-server",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="start the service on a scratch database (default: yes unless --url is given)",
    )
    http.add_argument("--seconds", type=float, default=15.0, help="measured seconds per phase (default 15)")
    http.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds at the start of each phase")
    http.add_argument("--concurrency", type=int, default=32, help="concurrent clients (connections), default 32")
    http.add_argument("--server-workers", type=int, default=2, help="uvicorn worker processes (default 2)")
    http.add_argument("--businesses", type=int, default=300, help="businesses seeded per mode (default 300)")
    http.add_argument(
        "--phases",
        default="intake,claims,status",
        help="which phases, in order; `floor` (GET /v1/regions: no database, no Redis) shows what the "
        "framework alone costs",
    )
    http.add_argument("--server-cpus", default="0", help="cores for the service (default 0)")
    http.add_argument("--client-cpus", default="1", help="cores for the load generator (default 1)")
    http.add_argument("--port", type=int, default=18080, help="port of the started server")
    http.add_argument("--database", default="bench_http", help="scratch database (dropped and created)")
    http.add_argument(
        "--admin-dsn",
        default=os.environ.get("BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL connection used to create the scratch database",
    )
    http.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/14",
        help="Redis for the started server's jobs (default database 14). Its database is EMPTIED (FLUSHDB) at the "
        "start: name one that no other service or benchmark running at the same time uses",
    )
    http.add_argument(
        "--uvicorn-options",
        default="--no-access-log --loop uvloop --http httptools",
        help='options of the started uvicorn (write --uvicorn-options="..." as the value starts with --)',
    )
    http.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra setting for the started server, e.g. MARKETPLACE__RANKING__POLICY=rotation (repeatable)",
    )
    http.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness of the started server and of the generator; on a shared machine e.g. -10 (needs root) "
        "puts them ahead of other processes (PostgreSQL itself keeps its own)",
    )
    http.add_argument("--profile", type=Path, help="sample the API workers with py-spy per phase into this folder")
    http.add_argument("--json", type=Path, help="also write the figures as JSON here")
    http.add_argument("--seed", type=int, default=1)
    http.add_argument("--wave-timeout", type=float, default=600.0, help="longest wait for the first waves")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = set(phases) - {"floor", "intake", "claims", "status"}
    if unknown:
        print(f"unknown phases: {sorted(unknown)}", file=sys.stderr)
        return 2
    start_server = args.url is None if args.start_server is None else args.start_server
    if not start_server and args.url is None:
        print("--no-start-server needs --url", file=sys.stderr)
        return 2
    if start_server and args.url is not None:
        print(
            "--url drives a running server: leave out --start-server (the started one listens on --port)",
            file=sys.stderr,
        )
        return 2
    if args.profile and not start_server:
        print("--profile samples the workers of the server the benchmark starts (not with --url)", file=sys.stderr)
        return 2
    bad = [item for item in args.server_env if "=" not in item]
    if bad:
        print(f"--server-env wants NAME=VALUE, got {bad}", file=sys.stderr)
        return 2
    available = os.sched_getaffinity(0)
    client_cpus = _cpus(args.client_cpus) & available
    server_cpus = _cpus(args.server_cpus) & available
    if not client_cpus or (start_server and not server_cpus):
        print(f"the cores asked for are not available (this process may use {sorted(available)})", file=sys.stderr)
        return 2

    idle = busy_cores()
    if max(idle.values(), default=0.0) > 0.15:
        print(
            "warning: before the benchmark started, other processes kept the cores busy ("
            + ", ".join(f"core {c} {b:.0%}" for c, b in sorted(idle.items()))
            + "): the figures will understate the service",
            file=sys.stderr,
            flush=True,
        )
    server: ScratchServer | None = None
    if start_server:
        server = ScratchServer(
            ServerConfig(
                database=args.database,
                admin_dsn=args.admin_dsn,
                redis_url=args.redis_url,
                port=args.port,
                workers=args.server_workers,
                server_cpus=server_cpus,
                uvicorn_options=tuple(args.uvicorn_options.split()),
                nice=args.nice,
                extra_env=dict(item.split("=", 1) for item in args.server_env),
            )
        )
        url = server.config.url
    else:
        url = args.url
    try:
        if server is not None:
            print(
                f"preparing the scratch database {args.database} (dropped, created, migrated) and emptying Redis "
                f"{args.redis_url} (FLUSHDB) ...",
                flush=True,
            )
            asyncio.run(server.prepare_database())
            server.start()
            print(
                f"started {args.server_workers} uvicorn worker(s) {' '.join(server.config.uvicorn_options)} and a "
                f"dramatiq job worker on core(s) {sorted(server_cpus)}; logs in {server.config.log_dir}",
                flush=True,
            )
        with pinned(client_cpus, args.nice):
            results = uvloop.run(_drive(args, url, phases, server))
    except (RuntimeError, OSError) as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.stop()
            print("stopped the servers it started", flush=True)

    print(load.format_results(results))
    command = "marketplace bench " + " ".join(argv)
    print(f"\nrerun: {command}")
    print(
        "cores busy before the start (other processes): "
        + ", ".join(f"core {c} {b:.0%}" for c, b in sorted(idle.items()))
    )
    if args.json:
        report = {
            "command": command,
            "cores_busy_before_start": {str(c): round(b, 3) for c, b in sorted(idle.items())},
            "phases": load.results_json(results),
        }
        args.json.write_text(json.dumps(report, indent=2))
    errors = sum(s.server_errors + s.net_errors for r in results for s in r.calls.values())
    return 1 if errors else 0


async def _drive(
    args: argparse.Namespace, url: str, phases: list[str], server: ScratchServer | None
) -> list[load.PhaseResult]:
    host, port, prefix = split_url(url)
    await _wait_healthy(host, port, prefix, server)
    catalog = await load.load_catalog(host, port, prefix)
    market = load.Market(catalog, args.seed)
    t = time.perf_counter()
    await load.seed_businesses(market, host, port, prefix, args.businesses)
    print(
        f"seeded {len(market.businesses)} businesses ({args.businesses} of each mode) "
        f"in {time.perf_counter() - t:.1f} s",
        flush=True,
    )
    await asyncio.sleep(1.0)  # the ranking cores of every process pick the new businesses up

    results: list[load.PhaseResult] = []
    for name in phases:
        if name == "claims" and "intake" not in phases:
            # Offers come from leads: submit some first (not measured).
            await _prefill_leads(market, host, port, prefix, args, server)
        if name == "status" and not market.exposures:
            print("no exposures to move along (run the claims phase first)", file=sys.stderr)
            continue
        phase = {
            "floor": load.floor_phase,
            "intake": load.intake_phase,
            "claims": load.claims_phase,
            "status": load.status_phase,
        }[name](market, args.seconds, args.warmup)
        print(
            f"phase {name}: {args.warmup:g} s warm-up + {args.seconds:g} s with {args.concurrency} clients ...",
            flush=True,
        )
        meter = _meter(args, server, name)
        result = await load.run_phase(phase, host, port, prefix, args.concurrency, meter)
        if server is not None:
            server.check_alive()
        if name == "intake":
            result.notes.extend(await _wait_for_waves(args, market, host, port, prefix, server))
        if name == "claims":
            result.notes.append(f"{len(market.exposures)} exposures claimed for the status phase")
        results.append(result)
        if args.profile:
            from marketplace.bench.profile import summarise

            summary = summarise(sorted(args.profile.glob(f"{name}-*.txt")))
            (args.profile / f"{name}-summary.txt").write_text(summary + "\n")
            print(f"profile of phase {name}:\n{summary}", flush=True)
    return results


async def _wait_healthy(
    host: str, port: int, prefix: str, server: ScratchServer | None, limit_s: float = 120.0
) -> None:
    deadline = time.perf_counter() + limit_s
    last: object = None
    while time.perf_counter() < deadline:
        if server is not None:
            server.check_alive()
        conn = Connection(host, port, timeout=5)
        try:
            status, body = await conn.request("GET", prefix + "/health")
            if status == 200:
                return
            last = (status, body[:200])
        except (OSError, TimeoutError, HttpError) as exc:  # still starting
            last = exc
        finally:
            conn.close()
        await asyncio.sleep(0.5)
    raise RuntimeError(f"the server at {host}:{port} did not become healthy in {limit_s:.0f} s: {last!r}")


def _meter(
    args: argparse.Namespace, server: ScratchServer | None, phase: str
) -> Callable[[], Awaitable[Callable[[], Awaitable[Usage]]]]:
    """CPU of the generator and the service's processes over the measured part of a phase (and py-spy)."""

    async def groups() -> dict[str, list[int]]:
        out = {"generator": [os.getpid()]}
        if server is not None:
            out["api"] = server.api_pids()
            out["job worker"] = server.worker_pids()
            out["postgres"] = await postgres_backends(server.config.admin_dsn, server.config.database)
        return out

    async def counters() -> dict[str, int]:
        if server is None:
            return {}
        return await database_counters(server.config.admin_dsn, server.config.database)

    async def start() -> Callable[[], Awaitable[Usage]]:
        meter = CpuMeter()
        db_before = await counters()
        activity = None
        if server is not None:
            activity = ActivitySampler(server.config.admin_dsn, server.config.database)
            await activity.start()
        meter.start(await groups())
        sampler = None
        if args.profile and server is not None:
            from marketplace.bench.profile import start_sampling

            sampler = start_sampling(_api_workers(server), args.profile, phase, args.seconds)

        async def stop() -> Usage:
            usage = meter.stop(await groups())
            db_after = await counters()
            usage.database = {k: v - db_before.get(k, 0) for k, v in db_after.items()}
            if activity is not None:
                usage.activity = await activity.stop()
            if sampler is not None:
                await asyncio.to_thread(sampler.stop)
            return usage

        return stop

    return start


def _api_workers(server: ScratchServer) -> list[int]:
    """uvicorn's worker processes (or the one process when it runs a single worker)."""
    pids = server.api_pids()
    workers = []
    for pid in pids:
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                workers.append(pid)
    return workers or pids[:1]


async def _wait_for_waves(
    args: argparse.Namespace, market: load.Market, host: str, port: int, prefix: str, server: ScratchServer | None
) -> list[str]:
    """Wait (not measured) until the job worker has sent every new lead's first wave, so the claims phase
    finds the offers; report how far behind the worker was."""
    t0 = time.perf_counter()
    if server is not None:
        import asyncpg

        conn = await asyncpg.connect(server.config.database_dsn)
        try:
            query = "SELECT count(*) FILTER (WHERE waves_sent = 0 AND status = 'open'), count(*) FROM leads"
            waiting, total = await conn.fetchrow(query)
            behind = waiting
            last_progress, last_waiting = time.perf_counter(), waiting
            while waiting and time.perf_counter() - t0 < args.wave_timeout:
                if time.perf_counter() - last_progress > 60:
                    break
                await asyncio.sleep(0.5)
                waiting, total = await conn.fetchrow(query)
                if waiting < last_waiting:
                    last_progress, last_waiting = time.perf_counter(), waiting
            offers = await conn.fetchval("SELECT count(*) FROM offers")
        finally:
            await conn.close()
        took = time.perf_counter() - t0
        notes = [
            f"first waves: {behind} of {total} leads were still waiting when intake ended; the job worker caught up "
            f"in {took:.1f} s ({behind / took if took > 0 else 0:.0f} leads/s alone on the server's core); "
            f"{offers} offers in all"
        ]
        if waiting:
            notes.append(f"!   {waiting} leads still had no first wave after {took:.0f} s")
        return notes
    # Against a server we did not start: wait until the offers the businesses see stop growing.
    sample = market.businesses[:100]
    seen, stable = -1, 0
    conn_ = Connection(host, port)
    try:
        while stable < 3 and time.perf_counter() - t0 < args.wave_timeout:
            total_offers = 0
            for business in sample:
                status, body = await conn_.request("GET", prefix + "/v1/offers?limit=200", headers=business.auth)
                if status == 200:
                    total_offers += len(msgspec.json.decode(body, type=load._OfferPage).items)
            stable = stable + 1 if total_offers == seen else 0
            seen = total_offers
            await asyncio.sleep(1.0)
    finally:
        conn_.close()
    return [f"first waves: offers seen by 100 businesses settled at {seen} after {time.perf_counter() - t0:.1f} s"]


async def _prefill_leads(
    market: load.Market, host: str, port: int, prefix: str, args: argparse.Namespace, server: ScratchServer | None
) -> None:
    phase = load.intake_phase(market, seconds=min(args.seconds, 10.0), warmup=0.0)
    await load.run_phase(phase, host, port, prefix, args.concurrency)
    await _wait_for_waves(args, market, host, port, prefix, server)
