"""Engine and session factory for SQLite (embedded default) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session

from marketplace.settings import DatabaseSettings


class DatabaseUnavailable(Exception):
    """The database would not give a connection: it refused (too many clients, starting up or shutting down) or
    could not be reached. Nothing was sent on that connection; the HTTP layer answers 503 with Retry-After."""

    def __init__(self, what: str, message: str) -> None:
        super().__init__(f"{what}: {message}")
        self.what = what  # the driver's error: TooManyConnectionsError, ConnectionRefusedError, ...


def create_engine(database_url: str, pool: DatabaseSettings | None = None, **overrides: Any) -> AsyncEngine:
    """An engine for `database_url`, its pool as `pool` says (settings.database; its defaults when None): on
    PostgreSQL its size and timeout, on a SQLite file its timeout (one connection a process); `overrides` on top."""
    if database_url.startswith("sqlite"):
        from marketplace.db import sqlite_driver  # registers the in-loop aiosqlite dialect

        if database_url.startswith("sqlite+aiosqlite:"):
            database_url = f"sqlite+{sqlite_driver.DRIVER}:" + database_url.split(":", 1)[1]
        if f"+{sqlite_driver.DRIVER}:" in database_url and ":memory:" not in database_url:
            # Statements run on the event loop's thread (see sqlite_driver): one connection per engine, so that
            # a request waits for the database on the pool, never in SQLite's busy handler on the loop.
            pool_timeout = (pool or DatabaseSettings()).pool_timeout_seconds
            overrides = {"pool_size": 1, "max_overflow": 0, "pool_timeout": pool_timeout, **overrides}
        engine = create_async_engine(database_url, connect_args={"timeout": 30}, **overrides)
        _sqlite_pragmas(engine)
        return engine
    pool = pool or DatabaseSettings()
    options: dict[str, Any] = {
        "pool_size": pool.pool_size,
        "max_overflow": pool.max_overflow,
        "pool_timeout": pool.pool_timeout_seconds,
    }
    options.update(overrides)
    engine = create_async_engine(database_url, **options)
    if not options.get("pool_pre_ping"):
        _ping_idle_connections(engine)
    _discard_confused_connections(engine)
    _tell_refused_connections(engine)
    return engine


# PostgreSQL's SQLSTATEs for a connection it will not give now: too many connections (max_connections reached),
# the server starting up, recovering or shutting down, the database not accepting connections (ALTER DATABASE ...
# ALLOW_CONNECTIONS false, as during maintenance: 55000 at connect time).
REFUSED_SQLSTATES = frozenset({"53300", "57P03", "55000"})


def _tell_refused_connections(engine: AsyncEngine) -> None:
    """A connection the server refuses, or cannot be reached for, raises DatabaseUnavailable: the one error that
    says this connection never reached the database, told apart from a fault (a wrong password or database name stays
    what the driver raised). Only new connections pass here, never a statement on one."""

    @event.listens_for(engine.sync_engine, "do_connect")
    def _connect(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        try:
            return dialect.connect(*cargs, **cparams)
        except Exception as exc:
            if getattr(exc, "sqlstate", None) in REFUSED_SQLSTATES or isinstance(exc, OSError | TimeoutError):
                driver = exc.__cause__ or exc  # asyncpg's own error, under SQLAlchemy's adapter
                raise DatabaseUnavailable(type(driver).__name__, str(driver)) from exc
            raise


def _discard_confused_connections(engine: AsyncEngine) -> None:
    """asyncpg's "cannot switch to state N; another operation is in progress" (InternalClientError) means the
    connection's protocol lost track of where it was (seen once here under load, in twenty concurrent posts of one
    idempotency key; a known asyncpg/SQLAlchemy race, sqlalchemy#13241). SQLAlchemy does not count it as a
    disconnect, so the connection would go back to the pool and fail the requests that get it next: it is dropped
    instead (the statement that met it still fails, and its transaction rolls back)."""

    @event.listens_for(engine.sync_engine, "handle_error")
    def _confused(context: Any) -> None:
        if type(context.original_exception).__name__ == "InternalClientError":
            context.is_disconnect = True


# A pooled connection idle this long is pinged before it is handed out (the server may have restarted or dropped
# it meanwhile); one returned a moment ago is not. SQLAlchemy's pool_pre_ping pings at every checkout: a round
# trip and a server transaction for every request (about half of the PostgreSQL transactions under load).
PING_AFTER_IDLE_SECONDS = 5.0


def _ping_idle_connections(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        # One the server ended a moment ago (pg_terminate_backend, a restart) is known closed to the driver already:
        # replaced at no cost, not handed out to fail its request with a 500 ("connection is closed").
        driver = getattr(dbapi_connection, "_connection", None)
        if driver is not None and driver.is_closed():
            raise InvalidatePoolError("a pooled connection was closed by the server")
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            dbapi_connection.ping()
        except Exception as exc:
            # The pool reconnects this slot, and replaces every connection older than it (after a server restart
            # they are all gone, those returned a moment ago too), as pool_pre_ping does.
            raise InvalidatePoolError("a pooled connection was lost while idle") from exc


def _sqlite_pragmas(engine: AsyncEngine) -> None:
    from marketplace.db import sqlite_driver

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, open transactions, so that each one can start IMMEDIATE below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Short: SQLite's busy handler sleeps on the event loop's thread; sqlite_driver retries BEGIN IMMEDIATE
        # asynchronously instead (another process's write lock), up to its LOCK_WAIT_SECONDS.
        cursor.execute(f"PRAGMA busy_timeout={sqlite_driver.BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # SQLite has one writer; taking the write lock at BEGIN makes concurrent transactions queue for it (on
        # the pool within a process, in sqlite_driver's retry between processes) instead of failing when a
        # reader later tries to write.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class RequestSession(Session):
    """A session that keeps every object it loaded or wrote until it closes.

    SQLAlchemy's identity map holds objects weakly: a lead read by one service function and not kept by its
    caller is gone when the next one asks for it by id, and `session.get` then queries it again (a claim read
    its lead three times). A session here lives for one request or one job, so it may as well keep them."""


@event.listens_for(RequestSession, "loaded_as_persistent")
@event.listens_for(RequestSession, "detached_to_persistent")  # db.statements.attach
@event.listens_for(RequestSession, "pending_to_persistent")
def _keep(session: Session, instance: Any) -> None:
    session.info.setdefault("kept", []).append(instance)


@event.listens_for(RequestSession, "do_orm_execute")
def _fresh_when_locked(orm_execute: Any) -> None:
    # A row read FOR UPDATE is read to act on its locked, current values: an object this session already holds
    # (loaded before the lock was taken) is refreshed from it rather than handed back as it was.
    # Changes not yet flushed are written first (as autoflush would), so that the refresh cannot discard them.
    if orm_execute.is_select and getattr(orm_execute.statement, "_for_update_arg", None) is not None:
        session = orm_execute.session
        if session.new or session.dirty or session.deleted:
            session.flush()
        orm_execute.update_execution_options(populate_existing=True)


@event.listens_for(RequestSession, "after_soft_rollback")
def _forget(session: Session, _transaction: Any) -> None:
    session.info.pop("kept", None)


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False, sync_session_class=RequestSession)
