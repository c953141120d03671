"""The intake rate limit across processes: with Redis, two API processes share one window per address (with a
window each, two workers let twice the limit through); without a reachable Redis, each process still limits."""

from __future__ import annotations

import os
import uuid

import pytest
import redis

from marketplace.errors import TooManyRequests
from marketplace.http.ratelimit import RedisRateLimiter
from tests.conftest import unavailable
from tests.redis_clients import admin_client, cut

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

pytestmark = pytest.mark.redis


async def _passed(limiters: list[RedisRateLimiter], client: str, requests: int) -> int:
    passed = 0
    for i in range(requests):
        try:
            await limiters[i % len(limiters)].hit(client)
            passed += 1
        except TooManyRequests as exc:
            assert exc.extra["retry_after_seconds"] >= 1
    return passed


async def test_two_processes_share_one_window_per_address() -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        unavailable("Redis", exc)
    prefix = f"test:ratelimit:{uuid.uuid4().hex}"
    a, b = RedisRateLimiter(5, REDIS_URL, prefix), RedisRateLimiter(5, REDIS_URL, prefix)
    try:
        assert await _passed([a, b], "203.0.113.7", 12) == 5
        # Refused requests are not counted: retrying does not push the address's window further out.
        stored = redis.Redis.from_url(REDIS_URL)
        assert sum(int(stored.get(k) or 0) for k in stored.keys(f"{prefix}:203.0.113.7:*")) == 5
        assert await _passed([a, b], "198.51.100.9", 3) == 3  # another address has its own window
    finally:
        await a.close()
        await b.close()


async def test_without_redis_each_process_still_limits() -> None:
    down = RedisRateLimiter(4, "redis://127.0.0.1:6399/0", f"test:ratelimit:{uuid.uuid4().hex}")
    try:
        assert await _passed([down], "203.0.113.8", 9) == 4
        assert down._redis_down_until > 0  # and it stops asking the unreachable Redis for a while
    finally:
        await down.close()


async def test_a_connection_lost_with_redis_is_replaced_not_a_fallback() -> None:
    # Once Redis came back, the first call met a pooled connection that had died with it and fell back to this
    # process's own window for a while (each process then let its own limit through).
    admin = admin_client(REDIS_URL)
    limiter = RedisRateLimiter(5, REDIS_URL, f"test:ratelimit:{uuid.uuid4().hex}")
    try:
        assert await _passed([limiter], "203.0.113.9", 2) == 2
        assert cut(admin, limiter.name)
        assert await _passed([limiter], "203.0.113.9", 6) == 3  # the shared window, still counting
        assert limiter._redis_down_until == 0.0
    finally:
        await limiter.close()
        admin.close()
