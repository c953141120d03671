"""A request that cannot get a database connection (every one of its process's pool in use past the pool timeout, or
the server refusing a new one: too many clients, connection refused) is a 503 problem with Retry-After, logged in one
line, not a 500 with a traceback; a connection that fails for a fault (a wrong password, a bug) is still a 500."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import httpx
import pytest
from litestar import Litestar

from marketplace.app import create_app, shutdown, startup
from marketplace.http import problems
from marketplace.settings import Settings
from tests.conftest import make_settings
from tests.factories import auth, register

WITHDRAWAL = {"amount": {"amount_minor": 100, "currency": "ILS"}}


@asynccontextmanager
async def serving(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    await startup(app.state)
    try:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c
    finally:
        await shutdown(app.state)
        await app.state.engine.dispose()


@pytest.fixture
def one_log_line_a_burst(monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusals' log throttle as a fresh process has it, and no burst outlasting it within the test."""
    monkeypatch.setitem(problems._unavailable_log, "at", float("-inf"))
    monkeypatch.setitem(problems._unavailable_log, "unlogged", 0)
    monkeypatch.setattr(problems, "UNAVAILABLE_LOG_EVERY_SECONDS", 1e9)


def assert_unavailable(answer: httpx.Response, database: str) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["retry-after"] == str(problems.RETRY_UNAVAILABLE_SECONDS)
    body = answer.json()
    assert body["type"] == "https://errors.marketplace.example/service-unavailable"
    assert body["retry_after_seconds"] == problems.RETRY_UNAVAILABLE_SECONDS
    assert body["database"] == database
    assert body["request_id"]


@pytest.fixture
async def one_connection_app(settings: Settings) -> Litestar:
    """The app with one connection a process, waited for a second at most (settings.database, as the environment sets
    it). Made before the test runs: the app configures logging, which would drop the test's log capture."""
    tight = make_settings(
        settings.service.database_url,
        MARKETPLACE__DATABASE__POOL_SIZE="1",
        MARKETPLACE__DATABASE__MAX_OVERFLOW="0",
        MARKETPLACE__DATABASE__POOL_TIMEOUT_SECONDS="1",
    )
    return create_app(tight, migrate_on_start=False, run_jobs_in_background=False)


async def test_a_request_that_waits_past_the_pool_timeout_is_a_503_with_retry_after(
    one_connection_app: Litestar, caplog: pytest.LogCaptureFixture, one_log_line_a_burst: None
) -> None:
    app = one_connection_app
    pool = app.state.engine.sync_engine.pool
    assert pool.size() == 1 and pool._max_overflow == 0 and pool._timeout == 1
    async with serving(app) as client:
        _, token = await register(client, "lead_buyer")
        with caplog.at_level(logging.WARNING, logger="marketplace.http"):
            async with app.state.engine.connect():  # the pool's one connection, busy with something else
                answers = [await client.post("/v1/wallet/withdrawals", json=WITHDRAWAL, headers=auth(token))]
                answers.append(await client.post("/v1/wallet/withdrawals", json=WITHDRAWAL, headers=auth(token)))
        for answer in answers:
            assert_unavailable(answer, "PoolTimeout")
        # Once a connection is free again the same request is answered (nothing to withdraw: a 409).
        again = await client.post("/v1/wallet/withdrawals", json=WITHDRAWAL, headers=auth(token))
        assert again.status_code == 409, again.text
    lines = [r for r in caplog.records if r.name == "marketplace.http"]
    assert len(lines) == 1, [r.getMessage() for r in lines]  # one line for the burst
    assert lines[0].levelno == logging.WARNING and lines[0].exc_info is None  # not a traceback
    assert "no database connection" in lines[0].getMessage()


@pytest.mark.postgres_only
@pytest.mark.parametrize(
    ("refusal", "database"),
    [
        (asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"), "TooManyConnectionsError"),
        (asyncpg.exceptions.CannotConnectNowError("the database system is starting up"), "CannotConnectNowError"),
        (ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"), "ConnectionRefusedError"),
        (
            asyncpg.exceptions.ObjectNotInPrerequisiteStateError(
                'database "marketplace" is not currently accepting connections'
            ),
            "ObjectNotInPrerequisiteStateError",
        ),
    ],
)
async def test_a_connection_the_server_refuses_is_a_503_with_retry_after(
    app: Litestar,
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    one_log_line_a_burst: None,
    refusal: Exception,
    database: str,
) -> None:
    _, token = await register(client, "lead_buyer")

    async def refuse(*_args: object, **_kwargs: object) -> None:
        raise refusal

    await app.state.engine.dispose()  # no pooled connection left: the next request asks the server for one
    monkeypatch.setattr(asyncpg, "connect", refuse)  # what SQLAlchemy's asyncpg dialect calls to connect
    with caplog.at_level(logging.WARNING, logger="marketplace.http"):
        answers = [await client.post("/v1/wallet/withdrawals", json=WITHDRAWAL, headers=auth(token)) for _ in range(3)]
    for answer in answers:
        assert_unavailable(answer, database)
    lines = [r for r in caplog.records if r.name == "marketplace.http"]
    assert len(lines) == 1 and lines[0].exc_info is None, [r.getMessage() for r in lines]
    monkeypatch.undo()  # the server takes connections again
    again = await client.post("/v1/wallet/withdrawals", json=WITHDRAWAL, headers=auth(token))
    assert again.status_code == 409, again.text


@pytest.mark.postgres_only
@pytest.mark.parametrize(
    "fault",
    [
        asyncpg.exceptions.InvalidPasswordError('password authentication failed for user "marketplace"'),
        RuntimeError("a bug in connecting"),
    ],
)
async def test_a_connection_that_fails_for_a_fault_is_still_a_500(
    app: Litestar, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, fault: Exception
) -> None:
    _, token = await register(client, "lead_buyer")

    async def fail(*_args: object, **_kwargs: object) -> None:
        raise fault

    await app.state.engine.dispose()
    monkeypatch.setattr(asyncpg, "connect", fail)
    answer = await client.post("/v1/wallet/withdrawals", json=WITHDRAWAL, headers=auth(token))
    assert answer.status_code == 500, answer.text
    assert answer.json()["type"] == "https://errors.marketplace.example/internal-error"
    assert "retry-after" not in answer.headers


@pytest.mark.postgres_only
async def test_a_pooled_connection_the_server_ended_a_moment_ago_is_replaced_not_a_500(
    app: Litestar, client: httpx.AsyncClient
) -> None:
    """An administrator's pg_terminate_backend, or a restart, ends a connection the pool used a moment ago (less than
    the idle time after which it is pinged): the driver knows it closed, so the checkout replaces it (it was handed
    out and the request answered 500 "connection is closed", a tester)."""
    import asyncio

    from tests.conftest import PG_ADMIN_DSN

    _, token = await register(client, "lead_buyer")
    first = await client.post("/v1/wallet/withdrawals", json=WITHDRAWAL, headers=auth(token))
    assert first.status_code == 409, first.text
    pool = app.state.engine.pool
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        database = app.state.engine.url.database
        ended = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid() AND state = 'idle'",
            database,
        )
    finally:
        await admin.close()
    assert ended >= 1 and pool.checkedin() >= 1
    await asyncio.sleep(0.2)  # the server's goodbye reaches the driver
    answers = [await client.post("/v1/wallet/withdrawals", json=WITHDRAWAL, headers=auth(token)) for _ in range(3)]
    assert [a.status_code for a in answers] == [409, 409, 409], [a.text for a in answers]
