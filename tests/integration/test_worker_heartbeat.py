"""GET /health names a job queue nobody takes jobs from: a `marketplace worker` writes a heartbeat to Redis, and the
API reads it (a Redis that answers said "ok" while no worker ran, and the periodic jobs piled up)."""

from __future__ import annotations

import os
import time
import uuid

import httpx
import pytest
from dramatiq import Message, Worker
from dramatiq.broker import MessageProxy

from marketplace.app import create_app, shutdown, startup
from marketplace.jobs import DramatiqJobs, heartbeat_key
from tests.conftest import make_settings
from tests.redis_clients import admin_client
from workers.broker import PeriodicTaken, make_broker, use_broker

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

pytestmark = pytest.mark.redis


async def test_health_says_when_no_worker_was_seen(settings, database_url):
    admin = admin_client(REDIS_URL)
    app = create_app(make_settings(database_url, REDIS_URL=REDIS_URL), migrate_on_start=False,
                     run_jobs_in_background=False)
    namespace = app.state.jobs.broker.namespace = f"marketplace-test-{uuid.uuid4().hex[:8]}"
    key = heartbeat_key(namespace)
    await startup(app.state)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50004))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            health = await client.get("/health")
            assert health.status_code == 200 and health.json()["jobs"] == "no worker seen", health.text
            admin.set(key, f"{time.time() - 125:.3f}", ex=60)
            health = await client.get("/health")
            assert health.status_code == 200, health.text
            assert health.json()["jobs"] in ("no worker seen for 125 s", "no worker seen for 126 s"), health.text
            admin.set(key, f"{time.time() - 5:.3f}", ex=60)
            assert (await client.get("/health")).json() == {"status": "ok", "database": "ok", "jobs": "ok"}
    finally:
        admin.delete(key)
        await shutdown(app.state)
        app.state.jobs.broker.close()


def test_a_running_worker_writes_its_heartbeat():
    admin = admin_client(REDIS_URL)
    namespace = f"marketplace-test-{uuid.uuid4().hex[:8]}"
    broker = use_broker(make_broker(REDIS_URL, namespace))
    key = heartbeat_key(namespace)
    worker = Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        deadline = time.monotonic() + 2
        while admin.get(key) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        beat = admin.get(key)
        assert beat is not None and abs(time.time() - float(beat)) < 5
        assert 0 < admin.ttl(key) <= 7 * 24 * 3600  # gone in time should the workers go for good
    finally:
        worker.stop()
        broker.close()
        admin.delete(key)


def test_a_periodic_job_is_not_queued_again_until_a_worker_takes_it():
    """Every API process sends each periodic job every 30 s: without a worker they piled up (a weekend, ~80,000)."""
    admin = admin_client(REDIS_URL)
    namespace = f"marketplace-test-{uuid.uuid4().hex[:8]}"
    broker = use_broker(make_broker(REDIS_URL, namespace))
    processes = [DramatiqJobs(broker, REDIS_URL), DramatiqJobs(broker, REDIS_URL)]  # two API processes

    def queued() -> int:
        return sum(int(admin.hlen(key)) for key in admin.keys(f"{namespace}:*.msgs"))

    try:
        for _ in range(3):
            for jobs in processes:
                jobs.enqueue_unless_queued("expire_lapsed")
                jobs.enqueue_unless_queued("mark_stale")
        assert queued() == 2  # one of each, waiting for a worker
        # A worker takes the one of expire_lapsed (what dramatiq's worker calls before it runs a message): the next
        # round sends that one again, not the other, still waiting.
        taken = next(m for m in broker.middleware if isinstance(m, PeriodicTaken))
        taken.before_process_message(broker, MessageProxy(Message("default", "expire_lapsed", (), {}, {})))
        for jobs in processes:
            jobs.enqueue_unless_queued("expire_lapsed")
            jobs.enqueue_unless_queued("mark_stale")
        assert queued() == 3
    finally:
        for key in admin.keys(f"{namespace}*"):
            admin.delete(key)
        broker.close()
