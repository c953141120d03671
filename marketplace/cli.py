"""The `marketplace` command: serve, db upgrade, operator create and revoke."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from marketplace.clock import utcnow
from marketplace.settings import Settings, SettingsError, get_settings, load_settings
from marketplace.text import name_problem


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marketplace", description="The lead marketplace service.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_port, default=8000, help="1 to 65535")
    serve.add_argument("--workers", type=_at_least_one, default=1, help="API worker processes (at least 1)")
    serve.add_argument("--demo", action="store_true", help="load a small demo market first")

    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply every migration")
    rev = db_sub.add_parser("revision", help="autogenerate a migration from the models")
    rev.add_argument("-m", "--message", required=True)

    op = sub.add_parser("operator", help="operators")
    op_sub = op.add_subparsers(dest="operator_command", required=True)
    create = op_sub.add_parser("create", help="create an operator and print its API token")
    create.add_argument("--name", required=True, type=_operator_name, help="who the operator is (1 to 200 characters)")
    revoke = op_sub.add_parser(
        "revoke", help="revoke every API token of an operator (leaked or lost) and print a new one for it"
    )
    whose = revoke.add_mutually_exclusive_group(required=True)
    whose.add_argument("--token", help="a token of the operator (the leaked one; a revoked one will do)")
    whose.add_argument("--id", dest="operator_id", help="the operator's id (`operator:<id>` in its decisions)")

    sub.add_parser("worker", help="run dramatiq workers for the actors (needs REDIS_URL)")

    ranking = sub.add_parser("ranking", help="the ranking policies")
    ranking_sub = ranking.add_subparsers(dest="ranking_command", required=True)
    replay = ranking_sub.add_parser("replay", help="estimate what each policy would have earned on the recorded leads")
    replay.add_argument("--policies", default="rotation,random,profitability")
    replay.add_argument("--limit", type=int, default=5000, help="how many recorded leads to replay")
    ranking_sub.add_parser("train", help="train the conversion model on the history now")
    # These two own their options: everything after the word goes to their own parser.
    sub.add_parser("simulate", help="run a simulated market (see `marketplace simulate --help`)", add_help=False)
    sub.add_parser("bench", help="benchmarks (see `marketplace bench --help`)", add_help=False)
    return parser


async def _upgrade(settings: Settings) -> None:
    from marketplace.db import migrate
    from marketplace.db.engine import create_engine

    engine = create_engine(settings.service.database_url, settings.database)
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()


async def _revision(settings: Settings, message: str) -> None:
    from marketplace.db import migrate
    from marketplace.db.engine import create_engine

    engine = create_engine(settings.service.database_url, settings.database)
    try:
        await migrate.revision(engine, message)
    finally:
        await engine.dispose()


async def _create_operator(settings: Settings, name: str) -> str:
    from marketplace.db.engine import create_engine, create_session_factory
    from marketplace.identity.services import create_operator
    from marketplace.uow import UnitOfWorkFactory

    if settings.service.is_sqlite:
        await _upgrade(settings)
    engine = create_engine(settings.service.database_url, settings.database)
    try:
        async with UnitOfWorkFactory(create_session_factory(engine))() as uow:
            _, token = await create_operator(uow.session, name)
        return token
    finally:
        await engine.dispose()


async def _revoke_operator(settings: Settings, token: str | None, operator_id: str | None) -> str | None:
    """A new token for the operator (None: no such operator), every earlier one revoked. From the command line, not
    an endpoint: whoever holds a leaked operator token could otherwise replace it and lock the operator out."""
    from marketplace.db.engine import create_engine, create_session_factory
    from marketplace.identity.services import operator_of_token, reissue_operator_token
    from marketplace.uow import UnitOfWorkFactory

    if settings.service.is_sqlite:
        await _upgrade(settings)
    engine = create_engine(settings.service.database_url, settings.database)
    try:
        async with UnitOfWorkFactory(create_session_factory(engine))() as uow:
            if token is not None:
                operator_id = await operator_of_token(uow.session, token.strip())
            return None if operator_id is None else await reissue_operator_token(uow.session, operator_id)
    finally:
        await engine.dispose()


async def _load_demo(settings: Settings) -> list[str]:
    from marketplace.demo import load_demo

    return await load_demo(settings)


def _port(raw: str) -> int:
    """A TCP port: one beyond 65535 was taken modulo 65536 by the socket (70000 listened on 4464, announced as
    70000); 0 would be a port the links in messages cannot name."""
    port = _integer(raw)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 1 and 65535, got {port}")
    return port


def _at_least_one(raw: str) -> int:
    number = _integer(raw)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _integer(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {raw!r}") from None


def _operator_name(raw: str) -> str:
    """An operator's name is what its decisions and status changes are kept under: one that shows nothing, or one
    longer than its column, is refused before anything is written."""
    from sqlalchemy import String

    from marketplace.db.models import Operator

    column = Operator.__table__.c.name.type
    assert isinstance(column, String) and column.length is not None
    name, longest = raw.strip(), column.length
    problem = name_problem(name)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    if len(name) > longest:
        raise argparse.ArgumentTypeError(f"at most {longest} characters")
    return name


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("simulate", "bench"):
        return _delegate(argv[0], argv[1:])
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Alembic's start-up chatter (a line per plugin it sets up) says nothing to whoever runs a command; its lines on
    # the migrations it runs stay.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    try:
        settings = get_settings()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2

    if args.command in ("operator", "ranking"):
        refused = _refuse_unless_at_head(settings)
        if refused is not None:
            return refused

    if args.command == "db":
        if args.db_command == "upgrade":
            return _db_upgrade(settings)
        else:
            asyncio.run(_revision(settings, args.message))
        return 0
    if args.command == "operator":
        if args.operator_command == "revoke":
            token = asyncio.run(_revoke_operator(settings, args.token, args.operator_id))
            if token is None:
                print("operator revoke: no operator has that " + ("token" if args.token else "id"), file=sys.stderr)
                return 1
            print(token)
            return 0
        print(asyncio.run(_create_operator(settings, args.name)))
        return 0
    if args.command == "ranking":
        print(asyncio.run(_ranking(settings, args)))
        return 0
    if args.command == "worker":
        if not settings.service.redis_url:
            print("configuration error: REDIS_URL: required for `marketplace worker`", file=sys.stderr)
            return 2
        if settings.notifications.public_base_url == _SHIPPED_BASE_URL and _BASE_URL_ENV not in os.environ:
            print(
                f"warning: notifications.public_base_url is the shipped {_SHIPPED_BASE_URL}: links in the messages "
                f"this worker writes (quiet-lead surveys, alerts) point there; set {_BASE_URL_ENV}",
                file=sys.stderr,
            )
        refused = _refuse_unless_at_head(settings)
        if refused is not None:
            return refused
        from dramatiq.cli import main as dramatiq_main

        sys.argv = ["dramatiq", "workers.worker_entry", "--processes", "1", "--threads", "4"]
        return int(dramatiq_main() or 0)
    if args.command == "serve":
        if args.workers > 1 and not settings.service.redis_url:
            # Without Redis each process would keep its own ranking core (a sign-up in one is not offered the
            # leads the other takes in), token cache, rate limits and job queue, and each would send the daily jobs.
            print(
                f"configuration error: REDIS_URL: required for `marketplace serve --workers {args.workers}` "
                "(without Redis the service runs as one process: leave out --workers)",
                file=sys.stderr,
            )
            return 2
        refused = _refuse_unless_at_head(settings)
        if refused is not None:
            return refused
        return _serve(_served_at(settings, args), args)
    return 2


def _refuse_unless_at_head(settings: Settings) -> int | None:
    """On PostgreSQL (migrated by hand), 2 and one line when the database is not at this code's revision, or 1 and
    one line when it cannot be reached; None to go on. SQLite migrates itself where it is used."""
    if settings.service.is_sqlite:
        return None
    from sqlalchemy.exc import DBAPIError

    from marketplace.db import migrate
    from marketplace.db.engine import DatabaseUnavailable, create_engine

    async def check() -> str | None:
        engine = create_engine(settings.service.database_url, settings.database)
        try:
            return await migrate.check(engine)
        finally:
            await engine.dispose()

    try:
        problem = asyncio.run(check())
    except (DatabaseUnavailable, DBAPIError, OSError) as exc:
        _say_unusable(exc)
        return 1
    if problem is None:
        return None
    print(f"database error: {problem}", file=sys.stderr)
    return 2


def _say_unusable(exc: BaseException) -> None:
    """Unreachable, refused, a wrong password or database name: the driver's own error, in one line."""
    from sqlalchemy.exc import DBAPIError

    from marketplace.db.engine import DatabaseUnavailable

    driver: BaseException = exc
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        driver = exc.orig.__cause__ or exc.orig  # asyncpg's own error, under SQLAlchemy's adapter
    said = str(driver) if isinstance(driver, DatabaseUnavailable) else f"{type(driver).__name__}: {driver}"
    print(f"database error: cannot use the database: {' '.join(said.split())}", file=sys.stderr)


def _db_upgrade(settings: Settings) -> int:
    """`marketplace db upgrade`: 0 at the latest migration; 2 and one line for a database at a revision this code
    does not know (a later release migrated it); 1 and one line when it cannot be used."""
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import DBAPIError

    from marketplace.db import migrate
    from marketplace.db.engine import DatabaseUnavailable

    try:
        asyncio.run(_upgrade(settings))
    except CommandError as exc:
        said = " ".join(str(exc).split())
        print(f"database error: {said}; this code's migrations end at {migrate.head()}", file=sys.stderr)
        return 2
    except (DatabaseUnavailable, DBAPIError, OSError) as exc:
        _say_unusable(exc)
        return 1
    print("database is at the latest migration")
    return 0


_SHIPPED_BASE_URL = "http://127.0.0.1:8000"
_BASE_URL_ENV = "MARKETPLACE__NOTIFICATIONS__PUBLIC_BASE_URL"


def _served_at(settings: Settings, args: argparse.Namespace) -> Settings:
    """Links in messages (surveys, invoices) point at the address the service answers on: while the public base
    URL is the shipped default and the environment does not set it, it follows --host and --port (uvicorn's
    worker processes read the same environment)."""
    if _BASE_URL_ENV in os.environ or settings.notifications.public_base_url != _SHIPPED_BASE_URL:
        return settings
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    host = f"[{host}]" if ":" in host else host  # an IPv6 address
    os.environ[_BASE_URL_ENV] = f"http://{host}:{args.port}"
    return load_settings()  # read again (get_settings keeps what it read first)


async def _ranking(settings: Settings, args: argparse.Namespace) -> str:
    from marketplace.db.engine import create_engine, create_session_factory
    from marketplace.ranking.policies import make_ranker
    from marketplace.ranking.replay import format_report, replay
    from marketplace.ranking.service import train_conversion_model
    from marketplace.uow import UnitOfWorkFactory

    engine = create_engine(settings.service.database_url, settings.database)
    uow = UnitOfWorkFactory(create_session_factory(engine))
    try:
        if args.ranking_command == "train":
            async with uow() as unit:
                row = await train_conversion_model(unit.session, settings)
            return "too little history to train on yet" if row is None else f"trained {row.id}: {row.metrics}"
        policies = {}
        async with uow() as unit:
            for name in args.policies.split(","):
                policy = make_ranker(name.strip(), settings, seed=0)
                if hasattr(policy, "load"):
                    await policy.load(unit.session, utcnow())
                policies[name.strip()] = policy
            report = await replay(unit.session, settings, policies, limit=args.limit)
        return format_report(report, settings.currency)
    finally:
        await engine.dispose()


def _delegate(command: str, rest: list[str]) -> int:
    try:
        get_settings()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if command == "simulate":
        from marketplace.simulation.cli import main as simulate_main

        return simulate_main(rest)
    from marketplace.bench.cli import main as bench_main

    return bench_main(rest)


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    if settings.service.is_sqlite:
        asyncio.run(_upgrade(settings))
    if args.demo:
        for line in asyncio.run(_load_demo(settings)):
            print(line)
    base = f"http://{args.host}:{args.port}"
    print(f"API:  {base}/v1   (health: {base}/health)")
    print(f"Docs: {base}/docs")
    # X-Forwarded-For is believed only from the configured proxies (uvicorn would trust 127.0.0.1's by default).
    proxies = settings.service.trusted_proxies
    network = {"host": args.host, "port": args.port, "proxy_headers": bool(proxies), "forwarded_allow_ips": proxies}
    if args.workers > 1:
        uvicorn.run("marketplace.asgi:app", workers=args.workers, log_level="warning", **network)
    else:
        from marketplace.app import create_app

        uvicorn.run(create_app(settings), log_level="info", **network)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
