"""The service's asyncio Redis clients (ranking sync, shared rate limits, the job queue's health probe): each named
in `CLIENT LIST`, and each replacing at once a pooled connection that died with Redis."""

from __future__ import annotations

from typing import Any


def redis_client(url: str, name: str, *, replace_dead: bool = True, **options: Any) -> Any:
    """A client whose connections are called `name` on the server. `replace_dead`: once Redis is back, the first
    command meets a pooled connection that died with it; it is sent once more on a new connection (a timeout is not
    retried: that would only double the wait). Without it the error reaches the caller (a subscription that came back
    unnoticed would not know what was published meanwhile). `options`: timeouts and the like, as redis-py takes them."""
    import redis.asyncio as redis

    if replace_dead:
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        options |= {"retry": Retry(NoBackoff(), 1), "retry_on_error": [RedisConnectionError]}
    return redis.Redis.from_url(url, client_name=name, **options)
