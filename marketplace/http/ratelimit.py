"""Per-client-address rate limit for public endpoints: a sliding one-minute window kept in process."""

from __future__ import annotations

import time
from collections import deque

from marketplace.errors import TooManyRequests


class RateLimiter:
    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._hits: dict[str, deque[float]] = {}

    def hit(self, client: str) -> None:
        now = time.monotonic()
        window = self._hits.setdefault(client, deque())
        while window and window[0] <= now - 60:
            window.popleft()
        if len(window) >= self.per_minute:
            raise TooManyRequests(
                f"at most {self.per_minute} requests a minute from one address",
                extra={"retry_after_seconds": max(1, int(60 - (now - window[0])))},
            )
        window.append(now)
        if len(self._hits) > 100_000:  # forget idle clients so the map cannot grow without bound
            for key in [k for k, v in self._hits.items() if not v or v[-1] <= now - 60]:
                del self._hits[key]
