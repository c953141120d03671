"""The fair rotation: whoever was offered a lead longest ago goes first; never-offered newcomers first of all."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from marketplace.ranking.ports import Candidate, LeadView, Ranked

# A business never offered anything waits "forever"; a finite number keeps scores JSON-friendly and ordered.
NEVER_OFFERED_WAIT_SECONDS = 10.0 * 365 * 24 * 3600


class RotationRanker:
    name = "rotation"

    def rank(self, lead: LeadView, candidates: Sequence[Candidate], now: datetime) -> list[Ranked]:
        def waited(c: Candidate) -> float:
            if c.last_offered_at is None:
                return NEVER_OFFERED_WAIT_SECONDS
            return max(0.0, (now - c.last_offered_at).total_seconds())

        # Ties (e.g. several newcomers) go to the earlier sign-up, then the id, so the order is deterministic.
        ordered = sorted(candidates, key=lambda c: (-waited(c), c.created_at, c.business_id))
        return [
            Ranked(
                business_id=c.business_id,
                score=waited(c),
                factors={
                    "policy": self.name,
                    "seconds_since_last_offer": None if c.last_offered_at is None else waited(c),
                    "never_offered": c.last_offered_at is None,
                },
            )
            for c in ordered
        ]
