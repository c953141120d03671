"""Enqueueing background jobs by actor name: dramatiq (Redis) in production, an in-process queue otherwise.

Both run the same actor functions from `workers.actors`. The in-process queue keys due times on the
service clock, so a simulation or a test that advances the clock sees waves and expiries happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import inspect
import itertools
import logging
import time
import uuid
from datetime import datetime, timedelta
from typing import Any, Protocol

import dramatiq
import dramatiq.errors
import redis.exceptions

from marketplace.clock import utcnow
from marketplace.redis_clients import redis_client

log = logging.getLogger("marketplace.jobs")


class Jobs(Protocol):
    def enqueue(self, actor_name: str, *args: Any, delay_seconds: float = 0) -> None: ...

    def enqueue_once_per(self, actor_name: str, seconds: float) -> None: ...

    def enqueue_unless_queued(self, actor_name: str) -> None: ...

    async def run_due(self) -> int: ...

    async def status(self) -> str: ...


# After a send failed (Redis refused, timed out or hung), further sends are skipped this long: a Redis that hangs
# costs an API process one short stall (the broker's timeouts, workers/broker.py) per interval, not one per job.
BREAKER_SECONDS = 5.0
# A job worker (`marketplace worker`) writes this key every HEARTBEAT_SECONDS (workers/broker.py: WorkerHeartbeat);
# GET /health names the queue "no worker seen" when it is missing or older than WORKER_SEEN_SECONDS.
HEARTBEAT_KEY = "worker:heartbeat"
HEARTBEAT_SECONDS = 10.0
HEARTBEAT_KEEP_SECONDS = 7 * 24 * 3600  # the key's expiry: /health can say for how long no worker was seen
WORKER_SEEN_SECONDS = 60.0
# A periodic job sent and not yet taken by a worker is not sent again (every API process sends each every 30 s: a
# weekend without a worker piled up some 80,000); should its message be lost, another goes out after this long.
QUEUED_KEEP_SECONDS = 600


def queued_key(namespace: str, actor_name: str) -> str:
    return f"{namespace}:queued:{actor_name}"


def heartbeat_key(namespace: str) -> str:
    return f"{namespace}:{HEARTBEAT_KEY}"


class DramatiqJobs:
    def __init__(self, broker: dramatiq.Broker, redis_url: str = "") -> None:
        self.broker = broker
        self._redis_url = redis_url
        self._probe: Any = None  # a client of its own for status(), with short timeouts
        self.probe_name = f"marketplace-health-{uuid.uuid4().hex[:12]}"  # its connection's name in `CLIENT LIST`
        self._closed_until = 0.0  # time.monotonic() before which sends are skipped (the breaker is open)

    def enqueue(self, actor_name: str, *args: Any, delay_seconds: float = 0) -> None:
        """Send the job to the workers. A broker that cannot be reached is logged, not raised: the caller has
        committed what the job follows up (a lead, a sign-up), and its answer must go out; the periodic sweeps
        (lost first waves, businesses with fraud news, overdue waves) take up the work from the database."""
        self._send(actor_name, args, delay_seconds)

    def _open(self) -> bool:
        return time.monotonic() < self._closed_until

    def _failed(self, what: str, exc: BaseException) -> None:
        self._closed_until = time.monotonic() + BREAKER_SECONDS
        log.error("could not enqueue %s (%s: %s); the periodic sweeps take up what they can; no job is sent for "
                  "%.0f s", what, type(exc).__name__, exc, BREAKER_SECONDS)

    def _send(self, actor_name: str, args: tuple[Any, ...], delay_seconds: float = 0) -> bool:
        actor = self.broker.get_actor(actor_name)  # an unknown actor is a mistake in the code: raised
        if self._open():
            log.warning("not enqueueing %s%r: the job queue failed less than %.0f s ago", actor_name, args,
                        BREAKER_SECONDS)
            return False
        try:
            actor.send_with_options(args=args, delay=int(delay_seconds * 1000) or None)
        except (redis.exceptions.RedisError, dramatiq.errors.BrokerError, OSError) as exc:
            self._failed(f"{actor_name}{args!r}", exc)
            return False
        return True

    def enqueue_once_per(self, actor_name: str, seconds: float) -> None:
        """Send the job unless another process (every API replica runs the same schedule, and each starts it anew
        when it starts) has sent it within `seconds`: the first to set a key in Redis, expiring after that long,
        sends it. So the daily trainings run once a day, not once per process and restart."""
        namespace = getattr(self.broker, "namespace", "dramatiq")
        self._send_unless_keyed(actor_name, f"{namespace}:once:{actor_name}", max(1, int(seconds)))

    def enqueue_unless_queued(self, actor_name: str) -> None:
        """Send a periodic job (no arguments) unless one is in the queue, sent by any process, that no worker has
        taken yet: a key set when it is sent, deleted when a worker takes it (workers/broker.py: PeriodicTaken)."""
        key = queued_key(getattr(self.broker, "namespace", "dramatiq"), actor_name)
        self._send_unless_keyed(actor_name, key, QUEUED_KEEP_SECONDS)

    def _send_unless_keyed(self, actor_name: str, key: str, expire_seconds: int) -> None:
        """Send the job (no arguments) if this process is the one to set the key (in Redis, expiring after
        `expire_seconds`); without a Redis client (the stub broker), send it."""
        client = getattr(self.broker, "client", None)
        if client is None:
            self._send(actor_name, ())
            return
        if self._open():
            log.warning("not enqueueing %s: the job queue failed less than %.0f s ago", actor_name, BREAKER_SECONDS)
            return
        try:
            if not client.set(key, utcnow().isoformat(), nx=True, ex=expire_seconds):
                return  # another process sent it (within the period, or it waits for a worker)
        except (redis.exceptions.RedisError, OSError) as exc:
            self._failed(actor_name, exc)
            return
        if not self._send(actor_name, ()):
            # Not sent after all: the key must not keep every process from sending it.
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                client.delete(key)

    async def run_due(self) -> int:
        return 0  # dramatiq workers run the jobs

    async def status(self) -> str:
        """"ok" when the broker answers within a second and a job worker wrote its heartbeat within a minute, else
        what is wrong (GET /health says it). The probe has its own client with one-second timeouts: a broker that
        hangs holds no thread or pooled connection of the service's."""
        if not self._redis_url:
            return "ok"
        if self._probe is None:
            self._probe = redis_client(self._redis_url, self.probe_name, socket_connect_timeout=1, socket_timeout=1)
        try:
            beat = await asyncio.wait_for(
                self._probe.get(heartbeat_key(getattr(self.broker, "namespace", "dramatiq"))), 1.5
            )
        except Exception as exc:  # any failure to reach it
            return f"unreachable ({type(exc).__name__})"
        try:
            age = time.time() - float(beat)
        except (TypeError, ValueError):  # none (never, or not for a week), or not a time
            return "no worker seen"
        if age > WORKER_SEEN_SECONDS:
            return f"no worker seen for {int(age)} s"
        return "ok"


class InProcessJobs:
    """A heap of (due time, job) run on the service's own event loop."""

    def __init__(self, broker: dramatiq.Broker) -> None:
        self.broker = broker
        self._heap: list[tuple[datetime, int, str, tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self._lock = asyncio.Lock()
        self.stats: dict[str, tuple[int, float]] = {}
        """Per actor: jobs run and the seconds they took (a simulation's report shows where its time went)."""

    def enqueue(self, actor_name: str, *args: Any, delay_seconds: float = 0) -> None:
        self.broker.get_actor(actor_name)  # fail now, not later, on an unknown actor
        due = utcnow() + timedelta(seconds=delay_seconds)
        heapq.heappush(self._heap, (due, next(self._seq), actor_name, args))

    def enqueue_once_per(self, actor_name: str, seconds: float) -> None:
        self.enqueue(actor_name)  # one process: its own schedule is the only one

    def enqueue_unless_queued(self, actor_name: str) -> None:
        if not any(name == actor_name and not args for _, _, name, args in self._heap):
            self.enqueue(actor_name)

    def pending(self) -> int:
        return len(self._heap)

    async def status(self) -> str:
        return "in process"

    async def run_due(self) -> int:
        """Run every job whose time has come (including jobs those jobs enqueue for now)."""
        ran = 0
        async with self._lock:
            while self._heap and self._heap[0][0] <= utcnow():
                _, _, name, args = heapq.heappop(self._heap)
                # dramatiq wraps async actors to run on its own loop thread; here we await the coroutine itself.
                job = inspect.unwrap(self.broker.get_actor(name).fn)
                started = time.perf_counter()
                try:
                    result = job(*args)
                    if asyncio.iscoroutine(result):
                        await result
                except Exception:
                    log.exception("job %s%r failed", name, args)
                count, seconds = self.stats.get(name, (0, 0.0))
                self.stats[name] = (count + 1, seconds + time.perf_counter() - started)
                ran += 1
        return ran
