"""Per-client-address rate limit for public endpoints (lead intake): a sliding one-minute window, kept in process in
the embedded default, and in Redis when the service has one, so that the limit holds across all API processes (with
a window per process, n workers would let n times the limit through)."""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import deque
from typing import Any, Protocol

from marketplace.errors import TooManyRequests
from marketplace.redis_clients import redis_client

log = logging.getLogger("marketplace.http")
WINDOW_SECONDS = 60


class Limiter(Protocol):
    per_minute: int

    async def hit(self, client: str) -> None:
        """Count a request from `client`; TooManyRequests (429) when it is over the limit."""
        ...


def _refuse(per_minute: int, retry_after: float) -> TooManyRequests:
    return TooManyRequests(
        f"at most {per_minute} requests a minute from one address",
        extra={"retry_after_seconds": max(1, math.ceil(retry_after))},  # waited in whole seconds, never short
    )


class RateLimiter:
    """The window in this process: exact (a deque of the last minute's request times per address)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._hits: dict[str, deque[float]] = {}

    async def hit(self, client: str) -> None:
        self.hit_now(client)

    def hit_now(self, client: str) -> None:
        now = time.monotonic()
        window = self._hits.setdefault(client, deque())
        while window and window[0] <= now - WINDOW_SECONDS:
            window.popleft()
        if len(window) >= self.per_minute:
            raise _refuse(self.per_minute, WINDOW_SECONDS - (now - window[0]))
        window.append(now)
        if len(self._hits) > 100_000:  # forget idle clients so the map cannot grow without bound
            for key in [k for k, v in self._hits.items() if not v or v[-1] <= now - WINDOW_SECONDS]:
                del self._hits[key]


# One round trip, atomic: the requests let through in the current minute and the previous one, the previous weighted
# by the part of it still inside the last 60 seconds (ARGV[1]; the usual sliding window counter); this request is
# counted only if it stays within the limit (ARGV[2]), as in process: a client that waits as long as it was told
# gets through, and one that keeps retrying does not lock itself out for good.
_COUNT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
if previous * tonumber(ARGV[1]) + current + 1 > tonumber(ARGV[2]) then return {0, current, previous} end
if redis.call('INCR', KEYS[1]) == 1 then redis.call('EXPIRE', KEYS[1], 120) end
return {1, current + 1, previous}
"""
# After Redis failed, this process's own window decides for a while instead of every request waiting for a timeout.
RETRY_REDIS_AFTER_SECONDS = 5.0


def retry_after(current: int, previous: int, into_minute: float, limit: int) -> float:
    """Seconds until the sliding window lets one more request through, if no other comes meanwhile: `current`
    requests let through in this minute so far, `previous` in the one before, `into_minute` seconds into this one."""
    if current + 1 <= limit:  # this minute has room once enough of the previous one slides out
        if previous <= 0:
            return 0.0
        needed = 1 - (limit - current - 1) / previous  # the previous minute's weight must fall to this
        return max(0.0, WINDOW_SECONDS * needed - into_minute)
    # Not before the next minute, where this one is the previous, weighing less and less.
    needed = 1 - (limit - 1) / current
    return (WINDOW_SECONDS - into_minute) + WINDOW_SECONDS * max(0.0, needed)


class RedisRateLimiter:
    """The window shared by every process through Redis. Should Redis fail, this process's own window decides (the
    intake stays open and still limited), and the failure is logged."""

    def __init__(self, per_minute: int, redis_url: str, prefix: str = "marketplace:ratelimit:intake") -> None:
        self.per_minute = per_minute
        self.prefix = prefix
        self.name = f"marketplace-ratelimit-{uuid.uuid4().hex[:12]}"
        self._redis: Any = redis_client(redis_url, self.name, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._script: Any = self._redis.register_script(_COUNT)
        self._local = RateLimiter(per_minute)
        self._redis_down_until = 0.0

    async def hit(self, client: str) -> None:
        if time.monotonic() < self._redis_down_until:
            self._hit_locally(client)
            return
        now = time.time()
        minute = int(now // WINDOW_SECONDS)
        into_minute = now - minute * WINDOW_SECONDS
        keys = [f"{self.prefix}:{client}:{minute}", f"{self.prefix}:{client}:{minute - 1}"]
        try:
            allowed, current, previous = await self._script(
                keys=keys, args=[1 - into_minute / WINDOW_SECONDS, self.per_minute]
            )
        except Exception as exc:  # any Redis trouble: fall back, never a 500 on intake
            log.warning("rate limit: Redis unavailable (%r); this process's own window applies for a while", exc)
            self._redis_down_until = time.monotonic() + RETRY_REDIS_AFTER_SECONDS
            self._hit_locally(client)
            return
        if not int(allowed):
            raise _refuse(self.per_minute, retry_after(int(current), int(previous), into_minute, self.per_minute))

    def _hit_locally(self, client: str) -> None:
        self._local.per_minute = self.per_minute  # (a limit changed on this one holds for its fallback too)
        self._local.hit_now(client)

    async def close(self) -> None:
        await self._redis.aclose()


def make_limiter(per_minute: int, redis_url: str, name: str) -> Limiter:
    if redis_url:
        return RedisRateLimiter(per_minute, redis_url, prefix=f"marketplace:ratelimit:{name}")
    return RateLimiter(per_minute)
