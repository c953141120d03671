"""`marketplace simulate [options]` and `marketplace simulate compare [options]`: run a simulated market and
write its report, or run the same seeded market under several ranking policies and compare them."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from marketplace.settings import Settings, SettingsError, load_settings
from marketplace.simulation.scenario import Scenario, ScenarioError, available, check_categories, load_scenario

# The embedded default needs no secret, but a simulation must not create one beside the developer's files.
SIMULATION_SECRET = "simulation-only-secret-key-0123456789"


def _parser(compare: bool) -> argparse.ArgumentParser:
    prog = "marketplace simulate compare" if compare else "marketplace simulate"
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Run the same seeded market under several ranking policies and print the figures side by side."
            if compare
            else "Run an agent-based market through the service's HTTP API over simulated days; write its report."
        ),
        epilog=(
            "In process (the default) the service runs on this event loop with its clock driven by the simulation. "
            "With --url the server keeps its wall clock: waves after the first, expiries, stale sweeps and return "
            "windows follow real time there, so time-dependent figures are not meaningful; start that server with "
            "MARKETPLACE__SERVICE__INTAKE_RATE_LIMIT_PER_MINUTE, MARKETPLACE__WALLET__DEFAULT_CREDIT_LIMIT_MINOR and "
            "MARKETPLACE__WALLET__FIRST_CREDIT_LIMIT_MINOR raised (the simulator cannot lift them there). Without "
            "--operator-token the customers never see the survey links (read from GET /v1/notifications), and "
            "neither the fraud alerts nor the trial balance are read: the report says so. The database in process: "
            "--database-url, else DATABASE_URL when it is PostgreSQL, else a fresh SQLite file in the output folder; "
            "a database that already holds tables is refused unless --reset-database."
        ),
    )
    parser.add_argument("--scenario", default="default", help=f"a name ({', '.join(available())}) or a .toml path")
    parser.add_argument("--seed", type=int, help="seed of every random draw (default: the scenario's)")
    parser.add_argument("--days", type=int, help="simulated days")
    parser.add_argument("--businesses", type=int, help="businesses at the start")
    parser.add_argument("--newcomers", type=int, help="businesses that sign up during the run")
    parser.add_argument("--leads-per-day", type=float, help="customers' requests per day (Poisson)")
    parser.add_argument("--dishonest-share", type=float, help="share of businesses that cheat")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override any scenario field by its dotted path, e.g. --set customers.junk_share=0.1",
    )
    if compare:
        parser.add_argument(
            "--rankers", default="rotation,random,profitability", help="comma-separated ranking policies"
        )
    else:
        parser.add_argument("--ranker", help="ranking policy (default: the service's setting ranking.policy)")
    default_out = "reports/compare-<scenario>-<seed>/" if compare else "reports/sim-<scenario>-<seed>/"
    parser.add_argument("--out", type=Path, help=f"output folder (default {default_out})")
    parser.add_argument("--url", help="drive a running server at this base URL instead of the in-process app")
    parser.add_argument(
        "--operator-token",
        help="with --url: an operator token (checked at the start), to send the survey links to the customers and "
        "read the fraud alerts and the trial balance; without it those are missing from the report",
    )
    parser.add_argument(
        "--database-url", help="in process: the database to run on (it must be empty: one with tables is refused)"
    )
    parser.add_argument(
        "--reset-database", action="store_true",
        help="in process: wipe the database first (PostgreSQL: its public schema; SQLite: the file), "
        "else it must be empty",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str]) -> int:
    compare = bool(argv) and argv[0] == "compare"
    args = _parser(compare).parse_args(argv[1:] if compare else argv)
    try:
        scenario = load_scenario(
            args.scenario,
            overrides={
                "seed": args.seed,
                "days": args.days,
                "businesses": args.businesses,
                "newcomers": args.newcomers,
                "leads_per_day": args.leads_per_day,
                "honesty.dishonest_share": args.dishonest_share,
            },
            settings_overrides=args.set,
        )
    except ScenarioError as exc:
        print(f"scenario error: {exc}", file=sys.stderr)
        return 2
    if args.url and (compare or args.ranker):
        # A running server ranks with its own policy (its setting ranking.policy): the simulator cannot choose it.
        print(
            f"{'compare' if compare else '--ranker'} with --url: a running server ranks with its own ranking.policy; "
            "run in process to choose the policy",
            file=sys.stderr,
        )
        return 2
    problem = _check_options(args, compare)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    if compare:
        rankers = [r.strip() for r in args.rankers.split(",") if r.strip()]
        out = args.out or Path("reports") / f"compare-{scenario.name}-{scenario.seed}"
        return asyncio.run(_compare(scenario, rankers, out, args))
    out = args.out or Path("reports") / f"sim-{scenario.name}-{scenario.seed}"
    try:
        data = asyncio.run(_simulate(scenario, args.ranker, out, args))
    except ScenarioError as exc:
        print(f"scenario error: {exc}", file=sys.stderr)
        return 2
    except FAILURES as exc:
        print(f"simulation error: {_describe(exc)}", file=sys.stderr)
        return 2
    from marketplace.simulation.report import summary

    print(summary(data))
    print(f"report: {out / 'report.md'}")
    return 0


# What ends a run with one line (exit 2) rather than a traceback: wrong settings or scenario, a database or a server
# that cannot be used, an output folder that cannot be written.
FAILURES = (SettingsError, RuntimeError, ValueError, OSError, httpx.HTTPError)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.HTTPError):
        url = getattr(getattr(exc, "_request", None), "url", None)
        return f"{type(exc).__name__}{f' ({url})' if url else ''}: {exc or 'no answer'}"
    return str(exc) or type(exc).__name__


def _check_options(args: argparse.Namespace, compare: bool) -> str | None:
    """What can be refused before anything is started or written: a line naming the option, or None."""
    from marketplace.settings import RANKING_POLICIES

    if compare:
        rankers = [r.strip() for r in args.rankers.split(",") if r.strip()]
        if not rankers:
            return "--rankers: name at least one policy"
        unknown = [r for r in rankers if r not in RANKING_POLICIES]
        if unknown:
            return f"--rankers: unknown ranking policy {unknown[0]!r} (known: {', '.join(RANKING_POLICIES)})"
        if len(set(rankers)) != len(rankers):
            return f"--rankers: a policy is named twice ({args.rankers})"
    elif args.ranker is not None and args.ranker not in RANKING_POLICIES:
        return f"--ranker: unknown ranking policy {args.ranker!r} (known: {', '.join(RANKING_POLICIES)})"
    if args.url:
        try:
            url = httpx.URL(args.url)
        except httpx.InvalidURL as exc:
            return f"--url {args.url}: not a URL ({exc})"
        if url.scheme not in ("http", "https") or not url.host:
            return f"--url {args.url}: expected the server's base URL, e.g. http://127.0.0.1:8000"
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        return f"--out {args.out}: exists and is not a folder"
    return None


async def _compare(scenario: Scenario, rankers: list[str], out: Path, args: argparse.Namespace) -> int:
    from marketplace.simulation.report import comparison_text, write_comparison

    runs: dict[str, dict[str, Any]] = {}
    for i, ranker in enumerate(rankers):
        try:
            # Every run after the first finds the previous run's market in the database it was given.
            runs[ranker] = await _simulate(scenario, ranker, out / ranker, args, reset=args.reset_database or i > 0)
        except ScenarioError as exc:
            print(f"scenario error: {exc}", file=sys.stderr)
            return 2
        except FAILURES as exc:
            print(f"simulation error ({ranker}): {_describe(exc)}", file=sys.stderr)
            return 2
    write_comparison(runs, out)
    print(comparison_text(runs))
    print(f"reports: {out}/<ranker>/report.md, comparison: {out / 'comparison.md'}")
    return 0


def simulation_settings(database_url: str, scenario: Scenario) -> Settings:
    env = dict(os.environ)
    from marketplace.simulation.market import simulation_env

    env.update(simulation_env(scenario))
    env["DATABASE_URL"] = database_url
    env.setdefault("SECRET_KEY", SIMULATION_SECRET)
    if not env["SECRET_KEY"]:
        env["SECRET_KEY"] = SIMULATION_SECRET
    return load_settings(env=env)


async def _simulate(
    scenario: Scenario, ranker: str | None, out: Path, args: argparse.Namespace, *, reset: bool | None = None
) -> dict[str, Any]:
    from marketplace.simulation.market import InProcessService, RemoteService, Simulation
    from marketplace.simulation.report import write_report

    progress = not args.no_progress and sys.stderr.isatty()
    if args.url:
        service: InProcessService | RemoteService = RemoteService(
            args.url, args.operator_token, scenario.url_pause_seconds
        )
        simulation = Simulation(scenario, service, ranker="the server's (ranking.policy)", progress=progress)
    else:
        url, fresh = _database_url(args, out)
        settings = simulation_settings(url, scenario)
        # Before anything is written: a misspelt category in the scenario, against the service's own.
        check_categories(scenario, settings.categories)
        reset = fresh or (args.reset_database if reset is None else reset)
        if url.startswith("postgresql"):
            await prepare_postgres(url, reset=reset)
        elif url.startswith("sqlite"):
            await prepare_sqlite(url, reset=reset)
        # The policy is made here even when it is the service's own, so that it is seeded with the scenario's seed.
        app = in_process_app(settings, ranker or settings.ranking.policy, scenario.seed)
        simulation = Simulation(scenario, InProcessService(app), ranker=app.state.ranker.name, progress=progress)
    result = await simulation.run()
    return write_report(result, out)


def _database_url(args: argparse.Namespace, out: Path) -> tuple[str, bool]:
    """The database to run on, and whether it is the run's own SQLite file (made afresh: an earlier run's removed)."""
    if args.database_url:
        return str(args.database_url), False
    env_url = os.environ.get("DATABASE_URL", "")
    if env_url.startswith(("postgresql", "postgres://")):
        return env_url, False
    # A fresh SQLite file per run, never the developer's ./marketplace.db.
    return f"sqlite+aiosqlite:///{(out / 'market.db').resolve()}", True


def in_process_app(settings: Settings, ranker: str | None, seed: int, *, migrate: bool = True) -> Any:
    """The service's app with the chosen ranking policy (seeded with the simulation's seed), migrated at
    start, its jobs run by the simulation on simulated time rather than by a background loop."""
    from marketplace.app import create_app

    # A simulation migrates a database of its own at every run: a line per migration (27 of them) before its progress
    # bar says nothing to whoever runs it. A failing migration still raises.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    app = create_app(settings, migrate_on_start=migrate, run_jobs_in_background=False)
    if ranker is not None:
        from marketplace.ranking.policies import make_ranker

        chosen = make_ranker(ranker, settings, seed=seed)
        app.state.ranker = chosen
        sync = getattr(app.state, "ranking_sync", None)
        if sync is not None:
            sync.ranker = chosen  # the sync keeps the ranker's in-memory core in step with the database
    return app


async def prepare_sqlite(url: str, *, reset: bool) -> None:
    """As `prepare_postgres`, for a SQLite file: wiped (the file removed) when asked, else it must hold no table."""
    from sqlalchemy import text

    from marketplace.db.engine import create_engine

    path = _sqlite_file(url, reset=reset)
    if path is None:
        return
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            tables = (
                await conn.execute(text("SELECT count(*) FROM sqlite_master WHERE type = 'table'"))
            ).scalar_one()
    finally:
        await engine.dispose()
    if tables:
        raise RuntimeError(
            f"{path} already holds {tables} tables: a simulation needs an empty database (name a new file, or pass "
            "--reset-database to wipe this one)"
        )


def _sqlite_file(url: str, *, reset: bool) -> Path | None:
    """The SQLite file to look into, or None: in memory, not there yet, or removed (reset)."""
    from sqlalchemy import make_url

    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    path = Path(database)
    if reset:
        path.parent.mkdir(parents=True, exist_ok=True)  # the run's own output folder, for a fresh file
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return None
    return path if path.exists() else None


async def prepare_postgres(url: str, *, reset: bool) -> None:
    """A simulation needs an empty database: wipe it when asked, refuse a market that is already there."""
    from sqlalchemy import text

    from marketplace.db.engine import create_engine

    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            tables = (
                await conn.execute(text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"))
            ).scalar_one()
            if tables and not reset:
                raise RuntimeError(
                    f"{url.rsplit('@', 1)[-1]} already holds {tables} tables: a simulation needs an empty database "
                    "(create one, e.g. `psql -h 127.0.0.1 -U postgres -c 'CREATE DATABASE sim'`, "
                    "or pass --reset-database to wipe this one)"
                )
            if tables:
                await conn.execute(text("DROP SCHEMA public CASCADE"))
                await conn.execute(text("CREATE SCHEMA public"))
    finally:
        await engine.dispose()

