"""The dramatiq broker: Redis when REDIS_URL is set, otherwise a stub broker whose jobs run in process."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware.asyncio import AsyncIO


def make_broker(redis_url: str, namespace: str = "marketplace") -> dramatiq.Broker:
    broker: dramatiq.Broker = RedisBroker(url=redis_url, namespace=namespace) if redis_url else StubBroker()
    broker.add_middleware(AsyncIO())
    return broker


def use_broker(broker: dramatiq.Broker) -> dramatiq.Broker:
    """Make `broker` the global one and re-declare every actor on it (actors bind at import time)."""
    from workers import actors

    dramatiq.set_broker(broker)
    for actor in actors.ALL:
        actor.broker = broker
        broker.declare_actor(actor)
    return broker
