"""The dramatiq broker: Redis when REDIS_URL is set, otherwise a stub broker whose jobs run in process."""

from __future__ import annotations

import logging
import threading
import time

import dramatiq
import redis
from dramatiq.asyncio import EventLoopThread, get_event_loop_thread, set_event_loop_thread
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware
from dramatiq.middleware.asyncio import AsyncIO
from redis.backoff import NoBackoff
from redis.retry import Retry

from marketplace.jobs import HEARTBEAT_KEEP_SECONDS, HEARTBEAT_SECONDS, heartbeat_key, queued_key

log = logging.getLogger("marketplace.jobs")


class DaemonAsyncIO(AsyncIO):
    """dramatiq's AsyncIO middleware, its event loop thread a daemon. dramatiq's is not: a worker process that
    exits without stopping the worker (dramatiq's "Killing worker process...", a second SIGTERM calling sys.exit in
    the middle of `worker.stop`) waited for that thread forever in `threading._shutdown` while its consumer and
    worker threads, daemons, went on taking jobs; only SIGKILL ended it. A graceful stop is unchanged: the loop
    is stopped and joined in `after_worker_shutdown`."""

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        event_loop_thread = EventLoopThread(self.logger)
        event_loop_thread.daemon = True
        event_loop_thread.start(timeout=1.0)
        set_event_loop_thread(event_loop_thread)


class RuntimeShutdown(Middleware):
    """When a worker has stopped, close the runtime its actors built (the ranking sync's Redis listener, the
    database pool) on the actors' event loop. `after_` hooks run in reverse order of the middleware, so added
    after AsyncIO this one runs once the worker's threads are joined (no actor still running) and before AsyncIO
    stops that loop."""

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        from workers import runtime

        loop_thread = get_event_loop_thread()
        if loop_thread is not None and loop_thread.loop.is_running():
            loop_thread.run_coroutine(runtime.close())


class WorkerHeartbeat(Middleware):
    """While a worker runs, write the time to a key every few seconds (expiring after a week), so that GET /health
    can tell a queue that nobody takes jobs from ("no worker seen for N s") from a working one: a Redis that
    answers says nothing about that."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if not isinstance(broker, RedisBroker):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, args=(broker,), name="marketplace-heartbeat", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _beat(self, broker: RedisBroker) -> None:
        failing = False
        while True:
            try:
                broker.client.set(heartbeat_key(broker.namespace), f"{time.time():.3f}", ex=HEARTBEAT_KEEP_SECONDS)
                failing = False
            except (redis.RedisError, OSError) as exc:
                if not failing:  # once per outage, not every few seconds
                    log.warning("could not write the worker's heartbeat (%r)", exc)
                failing = True
            if self._stop.wait(HEARTBEAT_SECONDS):
                return


class PeriodicTaken(Middleware):
    """A worker taking a periodic job (one without arguments) lets the next one be sent (`Jobs.enqueue_unless_queued`
    sends none while one waits in the queue)."""

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        if message.args or not isinstance(broker, RedisBroker):
            return
        try:
            broker.client.delete(queued_key(broker.namespace, message.actor_name))
        except (redis.RedisError, OSError) as exc:  # it expires: the next is sent a few minutes late at worst
            log.warning("could not mark %s taken (%r)", message.actor_name, exc)


# An API process sends on its event loop (dramatiq's Redis client is synchronous): a Redis that accepts and never
# answers must hold the loop, and every request on it, this long at most, not redis-py's 5 s per command (a round of
# the periodic jobs took 35 s). `DramatiqJobs` then skips sending for a while (its breaker).
API_CONNECT_TIMEOUT_SECONDS = 0.5
API_SOCKET_TIMEOUT_SECONDS = 1.0


def make_broker(
    redis_url: str, namespace: str = "marketplace", *, socket_timeout: float | None = None
) -> dramatiq.Broker:
    """The broker: Redis when `redis_url` is set. `socket_timeout` bounds every command's wait for an answer (and
    connecting, API_CONNECT_TIMEOUT_SECONDS at most); None keeps redis-py's 5 s (a worker: its consumer holds no
    loop of the API's)."""
    broker: dramatiq.Broker
    if not redis_url:
        broker = StubBroker()
    elif socket_timeout is None:
        broker = RedisBroker(url=redis_url, namespace=namespace)
    else:
        # RedisBroker(url=...) ignores connection options: the client is built here (no retry: a timeout retried
        # would only double the wait).
        client = redis.Redis.from_url(
            redis_url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=min(socket_timeout, API_CONNECT_TIMEOUT_SECONDS),
            retry=Retry(NoBackoff(), 0),
        )
        broker = RedisBroker(client=client, namespace=namespace)
    broker.add_middleware(DaemonAsyncIO())
    broker.add_middleware(RuntimeShutdown())
    if isinstance(broker, RedisBroker):
        broker.add_middleware(WorkerHeartbeat())
        broker.add_middleware(PeriodicTaken())
    return broker


def use_broker(broker: dramatiq.Broker) -> dramatiq.Broker:
    """Make `broker` the global one and re-declare every actor on it (actors bind at import time)."""
    from workers import actors

    dramatiq.set_broker(broker)
    for actor in actors.ALL:
        actor.broker = broker
        broker.declare_actor(actor)
    return broker
