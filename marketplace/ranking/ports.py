"""The Ranker interface: given a lead and its candidates, return them in order with score and factors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class LeadView:
    id: str
    category: str
    region: str
    budget_minor: int
    currency: str
    created_at: datetime
    club_id: str | None = None  # offered to this club's members only


@dataclass(frozen=True, slots=True)
class Candidate:
    business_id: str
    mode: str
    created_at: datetime
    last_offered_at: datetime | None


@dataclass(frozen=True, slots=True)
class Ranked:
    business_id: str
    score: float
    factors: dict[str, Any] = field(default_factory=dict)  # the explanation: shown, never charged from
    # What a lead buyer's claim of this offer costs (a shared one), in minor units; None: no price of its own (a deal
    # maker, or a policy that sets none: the category's list price applies).
    price_minor: int | None = None
    # Whose score set that price (the best candidate outside its wave, which it beat), when it is not the list price.
    priced_against: str | None = None


class Ranker(Protocol):
    name: str

    def rank(self, lead: LeadView, candidates: Sequence[Candidate], now: datetime) -> list[Ranked]:
        """All candidates, best first; each with its score and the factors that produced it."""
        ...
