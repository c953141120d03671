"""The same actors through dramatiq's Redis broker and a real worker, against the real Redis server."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import redis
from dramatiq import Worker
from litestar import Litestar
from sqlalchemy import func, select

from marketplace.app import create_app, shutdown, startup
from marketplace.db.models import Offer
from marketplace.jobs import heartbeat_key
from marketplace.settings import get_settings
from tests.conftest import make_settings, unavailable
from tests.factories import auth, lead_body, operator_token, register
from tests.integration.fraud_market import answer, claimed_deal, hired, report, survey_token
from tests.redis_clients import admin_client, cut
from workers import runtime

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

pytestmark = pytest.mark.redis


async def _offers(sessions, lead_id: str) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Offer).where(Offer.lead_id == lead_id)) or 0)


@asynccontextmanager
async def app_with_a_worker(database_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Litestar]:
    """The app enqueueing through the Redis broker, and a real dramatiq worker consuming it."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        unavailable("Redis", exc)
    redis_settings = make_settings(database_url, REDIS_URL=REDIS_URL)
    app = create_app(redis_settings, migrate_on_start=False, run_jobs_in_background=False)
    broker = app.state.jobs.broker
    broker.namespace = f"marketplace-test-{uuid.uuid4().hex[:8]}"  # nothing from an earlier run is delivered
    await startup(app.state)
    # The worker builds its own runtime, as a `marketplace worker` process does: from the environment, on
    # dramatiq's event loop thread, with its own ranking core kept in step through Redis.
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    monkeypatch.setenv("SECRET_KEY", "test-secret-key-0123456789abcdef")
    monkeypatch.setenv("MARKETPLACE__WINDOWS__OFF_HOURS", "")  # as make_settings: waves whatever the hour
    get_settings.cache_clear()
    runtime.bind(None)
    worker = Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        yield app
    finally:
        worker.stop()
        # Stopping the worker closed the runtime its actors built (its Redis listener and database pool).
        assert runtime._runtime is None
        await asyncio.get_running_loop().run_in_executor(None, broker.close)
        runtime.bind(None)
        get_settings.cache_clear()
        await shutdown(app.state)


def client_of(app: Litestar) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50001))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_lead_is_dispatched_by_a_dramatiq_worker_through_redis(settings, database_url, monkeypatch):
    # `settings` truncates the database first: businesses an earlier test left would be candidates too.
    async with app_with_a_worker(database_url, monkeypatch) as app:
        broker = app.state.jobs.broker
        async with client_of(app) as client:
            # The queue answers, and the worker's heartbeat (written as it boots, from a thread of its own) is seen.
            for _ in range(50):
                if (await client.get("/health")).json()["jobs"] == "ok":
                    break
                await asyncio.sleep(0.1)
            assert (await client.get("/health")).json()["jobs"] == "ok"
            for _ in range(2):
                await register(client, "lead_buyer")
            response = await client.post("/v1/leads", json=lead_body())
            assert response.status_code == 201
            lead_id = response.json()["id"]
        for _ in range(100):
            if await _offers(app.state.sessions, lead_id) == 2:
                break
            await asyncio.sleep(0.1)
        assert await _offers(app.state.sessions, lead_id) == 2
        # The same message delivered again changes nothing.
        app.state.jobs.enqueue("send_wave", lead_id, 1)
        await asyncio.get_running_loop().run_in_executor(None, lambda: broker.join("leads", timeout=10_000))
        assert await _offers(app.state.sessions, lead_id) == 2


async def test_a_survey_answer_is_assessed_by_a_dramatiq_worker_through_redis(settings, database_url, monkeypatch):
    """The scheduled fraud scan (the periodic loop sends it) runs in the worker and takes the answer's news: the
    hidden deal opens an alert."""
    async with app_with_a_worker(database_url, monkeypatch) as app, client_of(app) as client:
        operator = await operator_token(app)
        business_id, token = await register(client, "deal_maker")
        lead_id, exposure_id = await claimed_deal(app, client, business_id, token)
        await report(client, token, exposure_id, "lost")
        response = await answer(client, await survey_token(client, operator, lead_id), **hired(business_id))
        assert response.status_code == 200, response.text
        app.state.jobs.enqueue("fraud_scan")
        found: list[dict[str, object]] = []
        for _ in range(100):
            found = (await client.get("/v1/fraud/alerts", headers=auth(operator))).json()["items"]
            if found:
                break
            await asyncio.sleep(0.1)
        assert [(a["business_id"], a["status"]) for a in found] == [(business_id, "open")]
        assert found[0]["reasons"][0]["leads"] == [lead_id]  # type: ignore[index]


def test_daily_jobs_are_sent_once_whatever_the_number_of_processes_asking():
    # Every API replica asks for the daily jobs when it starts and once a day after; the queue gets each once.
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        unavailable("Redis", exc)
    from marketplace.jobs import DramatiqJobs
    from workers.broker import make_broker, use_broker

    namespace = f"marketplace-test-{uuid.uuid4().hex[:8]}"
    broker = use_broker(make_broker(REDIS_URL, namespace))
    processes = [DramatiqJobs(broker, REDIS_URL) for _ in range(3)]  # three API workers asking
    client = processes[0].broker.client
    try:
        for jobs in processes:
            jobs.enqueue_once_per("train_ranking_model", 60)
            jobs.enqueue_once_per("train_fraud_model", 60)
        queued = client.lrange(f"{namespace}:maintenance", 0, -1)
        assert len(queued) == 2, queued
        assert 0 < client.ttl(f"{namespace}:once:train_ranking_model") <= 60
        client.delete(f"{namespace}:once:train_ranking_model")  # its time has passed: the next to ask sends it
        processes[2].enqueue_once_per("train_ranking_model", 60)
        assert client.llen(f"{namespace}:maintenance") == 3
        # A send that fails leaves no key behind: the next process to ask sends it, not a day later.
        client.delete(f"{namespace}:once:train_fraud_model")
        processes[0]._send = lambda *_args, **_kw: False  # the broker refused it
        processes[0].enqueue_once_per("train_fraud_model", 60)
        assert client.exists(f"{namespace}:once:train_fraud_model") == 0
        processes[1].enqueue_once_per("train_fraud_model", 60)
        assert client.llen(f"{namespace}:maintenance") == 4
    finally:
        for key in client.keys(f"{namespace}*"):
            client.delete(key)
        broker.close()


async def test_health_calls_a_broker_that_is_back_reachable() -> None:
    # Once Redis came back, the probe's first ping met the pooled connection that had died with it, and /health said
    # "unreachable (ConnectionError)" about a broker that answered.
    from dramatiq.brokers.stub import StubBroker

    from marketplace.jobs import DramatiqJobs

    admin = admin_client(REDIS_URL)
    broker = StubBroker()
    broker.namespace = f"marketplace-test-{uuid.uuid4().hex[:8]}"  # type: ignore[attr-defined]
    admin.set(heartbeat_key(broker.namespace), f"{time.time():.3f}", ex=60)  # a worker runs: "ok" is the queue's
    jobs = DramatiqJobs(broker, REDIS_URL)
    try:
        assert await jobs.status() == "ok"
        assert cut(admin, jobs.probe_name)
        assert await jobs.status() == "ok"
    finally:
        await jobs._probe.aclose()
        admin.delete(heartbeat_key(broker.namespace))
        admin.close()
