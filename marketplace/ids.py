"""Opaque, time-ordered ids: a prefix naming the kind, then 26 base32 characters (48-bit ms + 80 random bits).

Time order lets lists page by id with a plain cursor.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id(prefix: str) -> str:
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"


def is_id(value: str, prefix: str) -> bool:
    """Whether value has the shape of an id new_id(prefix) makes (not whether one exists)."""
    head, sep, tail = value.partition("_")
    return head == prefix and sep == "_" and len(tail) == 26 and all(c in _ALPHABET for c in tail)
