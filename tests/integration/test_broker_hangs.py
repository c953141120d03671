"""A job queue (Redis) that accepts connections and never answers: an API process keeps answering. dramatiq's Redis
client is synchronous and sends on the event loop, so its waits are bounded (workers/broker.py) and, after one
failed, `DramatiqJobs` skips sending for a while (its breaker) instead of every job waiting its own timeout."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import redis.exceptions

from marketplace import jobs as jobs_module
from marketplace.app import create_app, shutdown, startup
from marketplace.jobs import DramatiqJobs
from marketplace.ranking.sync import RankingSync
from tests.conftest import make_settings
from tests.factories import lead_body
from workers.broker import API_SOCKET_TIMEOUT_SECONDS, make_broker, use_broker


@pytest.fixture
def hung_redis() -> Iterator[str]:
    """A TCP server on the loopback that accepts every connection and never sends a byte (a Redis that hangs). It
    runs on a thread of its own: the process's event loop is what a hang would block."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)  # kept open, never read nor answered

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def test_a_send_to_a_hung_queue_costs_one_short_stall_then_none(hung_redis, caplog):
    jobs = DramatiqJobs(use_broker(make_broker(hung_redis, socket_timeout=API_SOCKET_TIMEOUT_SECONDS)), hung_redis)
    caplog.set_level(logging.WARNING, "marketplace.jobs")
    try:
        started = time.monotonic()
        assert jobs._send("expire_lapsed", ()) is False
        first = time.monotonic() - started
        assert first < 2.0, first  # redis-py's own timeouts were 5 s a command
        started = time.monotonic()
        assert jobs._send("mark_stale", ()) is False  # the breaker is open: not tried at all
        jobs.enqueue("lead_submitted", "lead-1")
        jobs.enqueue_once_per("train_fraud_model", 3600)
        assert time.monotonic() - started < 0.1
        assert any(m.startswith("could not enqueue expire_lapsed") for m in caplog.messages), caplog.messages
        assert any(m.startswith("not enqueueing lead_submitted('lead-1',)") for m in caplog.messages), caplog.messages
        # Once the breaker's time is over, a send is tried again (and fails again, as short).
        jobs._closed_until = time.monotonic()
        started = time.monotonic()
        assert jobs._send("expire_lapsed", ()) is False
        assert time.monotonic() - started < 2.0
    finally:
        jobs.broker.close()


async def test_the_api_answers_while_its_job_queue_hangs(settings, database_url, hung_redis, monkeypatch):
    monkeypatch.setattr(jobs_module, "BREAKER_SECONDS", 30.0)  # one stall in this test, whatever the machine
    app = create_app(make_settings(database_url, REDIS_URL=hung_redis), migrate_on_start=False)
    await startup(app.state)  # the periodic loop sends its jobs now, on this loop
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50003))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            started = time.monotonic()
            await asyncio.sleep(0.05)  # the periodic loop's first round meets the hung queue, holding this loop
            assert (await client.get("/v1/categories")).status_code == 200
            # One short stall for the round's nine jobs (was 50 s: 5 s each), not one per job.
            assert time.monotonic() - started < 1.5
            for _ in range(3):
                started = time.monotonic()
                assert (await client.get("/v1/categories")).status_code == 200
                assert time.monotonic() - started < 0.5
            started = time.monotonic()
            lead = await client.post("/v1/leads", json=lead_body())
            assert lead.status_code == 201, lead.text
            # The shared rate limit's first wait (0.5 s), never a job's: the breaker skips its after-commit send.
            assert time.monotonic() - started < 2.0
            started = time.monotonic()
            health = await client.get("/health")
            assert health.status_code == 200 and health.json()["jobs"] == "unreachable (TimeoutError)", health.text
            assert time.monotonic() - started < 2.0
    finally:
        # Stopped while its ranking listener is connecting to the hung Redis: the shutdown ends all the same.
        await asyncio.wait_for(shutdown(app.state), 2.0)
        app.state.jobs.broker.close()


async def test_a_listener_cancelled_while_connecting_stops(caplog):
    """redis-py's connect can turn a cancellation into its own TimeoutError (seen against the hung server: a
    shutdown then waited for good while the listener subscribed again and again)."""

    class PubSub:
        async def subscribe(self, channel: str) -> None:
            try:
                await asyncio.Event().wait()  # connecting to a Redis that never answers
            except asyncio.CancelledError:
                raise redis.exceptions.TimeoutError("Timeout connecting to server") from None

        async def aclose(self) -> None:
            pass

    class Subscriber:
        def pubsub(self) -> PubSub:
            return PubSub()

    sync = RankingSync(object(), None, "redis://127.0.0.1:1/0")  # type: ignore[arg-type]
    sync._subscriber = Subscriber()
    task = asyncio.create_task(sync.listen())
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.wait({task}, timeout=2.0)
    try:
        assert task.cancelled(), "the listener went on subscribing after it was cancelled"
    finally:
        sync._subscriber = None  # (ends the loop of one that went on)
        await asyncio.wait({task}, timeout=3.0)
