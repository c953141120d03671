"""Opaque, time-ordered ids: a prefix naming the kind, then 26 base32 characters (48-bit ms + 80 random bits).

Time order lets lists page by id with a plain cursor, and lists ordered by id read newest first: so within a
process an id always sorts after every id made before it (as monotonic ULIDs do), even in the same millisecond
or after the clock stepped back.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_RANDOM_BITS = 80

# The last value handed out in this process; ids may be made from threads (tests, anyio.to_thread), so the
# read-compare-write of it is guarded.
_lock = threading.Lock()
_last = 0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _next_value() -> int:
    global _last
    fresh = (_now_ms() << _RANDOM_BITS) | int.from_bytes(os.urandom(_RANDOM_BITS // 8), "big")
    with _lock:
        # A later millisecond starts afresh; the same one (or a clock that stepped back) counts on from the last
        # value, so that the order of ids is the order they were made in. A carry out of the random part moves
        # the time part on by a millisecond, still in order.
        if fresh >> _RANDOM_BITS <= _last >> _RANDOM_BITS:
            fresh = _last + 1
        _last = fresh
    return fresh


def _encode(value: int) -> str:
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    return f"{prefix}_{_encode(_next_value())}"


def is_id(value: str, prefix: str) -> bool:
    """Whether value has the shape of an id new_id(prefix) makes (not whether one exists)."""
    head, sep, tail = value.partition("_")
    return head == prefix and sep == "_" and len(tail) == 26 and all(c in _ALPHABET for c in tail)


def key_digest(key: str) -> str:
    """A client's Idempotency-Key (up to 200 characters of its choosing) as 32 hex characters, for the ledger keys
    and references made of it, whose columns are shorter: the same key always names the same record."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]

