"""The dramatiq broker: Redis when REDIS_URL is set, otherwise a stub broker whose jobs run in process."""

from __future__ import annotations

import dramatiq
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware
from dramatiq.middleware.asyncio import AsyncIO


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


def make_broker(redis_url: str, namespace: str = "marketplace") -> dramatiq.Broker:
    broker: dramatiq.Broker = RedisBroker(url=redis_url, namespace=namespace) if redis_url else StubBroker()
    broker.add_middleware(AsyncIO())
    broker.add_middleware(RuntimeShutdown())
    return broker


def use_broker(broker: dramatiq.Broker) -> dramatiq.Broker:
    """Make `broker` the global one and re-declare every actor on it (actors bind at import time)."""
    from workers import actors

    dramatiq.set_broker(broker)
    for actor in actors.ALL:
        actor.broker = broker
        broker.declare_actor(actor)
    return broker
