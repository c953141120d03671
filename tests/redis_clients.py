"""A test's own Redis client, to look at the service's connections and cut them as a restart of Redis would."""

from __future__ import annotations

import redis

from tests.conftest import unavailable


def admin_client(url: str) -> redis.Redis:
    """A client of the test's own (the test fails under CI, and is skipped elsewhere, without Redis)."""
    try:
        admin = redis.Redis.from_url(url, socket_connect_timeout=2)
        admin.ping()
    except redis.RedisError as exc:
        unavailable("Redis", exc)
    return admin


def cut(admin: redis.Redis, name: str) -> int:
    """Close every connection whose client name is `name` from the server's side; how many there were."""
    ids = [c["id"] for c in admin.client_list() if c.get("name") == name]
    for client_id in ids:
        admin.client_kill_filter(_id=client_id)
    return len(ids)
