"""A seeded random order: the baseline that any real policy must beat."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime

from marketplace.ranking.ports import Candidate, LeadView, Ranked


class RandomRanker:
    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)

    def rank(self, lead: LeadView, candidates: Sequence[Candidate], now: datetime) -> list[Ranked]:
        # Sorted first so the draw depends on the seed, not on the order the database returned rows in.
        ordered = sorted(candidates, key=lambda c: c.business_id)
        self._rng.shuffle(ordered)
        return [Ranked(c.business_id, float(len(ordered) - i), {"policy": self.name}) for i, c in enumerate(ordered)]
