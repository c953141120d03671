"""Principals resolved from bearer tokens, kept in memory for a short while: every authenticated request
would otherwise open a transaction of its own just to read its token.

Keyed by the token's hash (never the token). An entry lives `ttl` seconds of wall time at most, and a
business's entries are forgotten as soon as its status changes (`forget`), so a block takes effect at once
in the process that made it and, where the change is broadcast, in the others; a club operator's, as soon as its
token is replaced, in the process that replaced it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from marketplace.identity.services import Principal

OWNED = ("business", "club")  # principals whose tokens are forgotten by their owner's id


class PrincipalCache:
    def __init__(self, ttl_seconds: float, max_entries: int = 100_000, now: Callable[[], float] = time.monotonic):
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._now = now
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._by_owner: dict[str, set[str]] = {}  # a business's or a club's id -> its cached token hashes

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def get(self, token_hash: str) -> Principal | None:
        entry = self._entries.get(token_hash)
        if entry is None:
            return None
        if entry[0] <= self._now():
            self._drop(token_hash)
            return None
        return entry[1]

    def put(self, token_hash: str, principal: Principal) -> None:
        if not self.enabled:
            return
        if len(self._entries) >= self.max_entries:
            self._evict()
        self._entries[token_hash] = (self._now() + self.ttl, principal)
        if principal.kind in OWNED:
            self._by_owner.setdefault(principal.id, set()).add(token_hash)

    def forget(self, owner_ids: Iterable[str]) -> None:
        """Every cached token of these businesses or clubs: the next request reads its token again."""
        for owner_id in owner_ids:
            for token_hash in self._by_owner.pop(owner_id, ()):
                self._entries.pop(token_hash, None)

    def clear(self) -> None:
        self._entries.clear()
        self._by_owner.clear()

    def _drop(self, token_hash: str) -> None:
        entry = self._entries.pop(token_hash, None)
        if entry is not None and entry[1].kind in OWNED:
            hashes = self._by_owner.get(entry[1].id)
            if hashes is not None:
                hashes.discard(token_hash)
                if not hashes:
                    del self._by_owner[entry[1].id]

    def _evict(self) -> None:
        now = self._now()
        for token_hash in [h for h, (until, _) in self._entries.items() if until <= now]:
            self._drop(token_hash)
        while len(self._entries) >= self.max_entries:  # still full of live entries: drop the oldest
            self._drop(next(iter(self._entries)))
