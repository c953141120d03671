"""What happened to a business that moves its ranking, told by the process that committed it.

The process applies these to its own in-memory core at once, without reading the database back; other
processes hear only the business ids (over Redis) and refresh those from the database, the truth. A full
refresh now and then (caps reset with the day, category averages drift) mends any drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from marketplace.ranking.scoring import WIN_CLASSES, outcome


@dataclass(frozen=True, slots=True)
class Joined:
    """A business signed up: its profile, no history yet."""

    business_id: str
    mode: str
    status: str
    categories: tuple[str, ...]
    regions: tuple[str, ...]
    min_deal_minor: int
    max_deal_minor: int
    daily_cap: int
    monthly_cap: int
    reliability_bp: int = 10_000


@dataclass(frozen=True, slots=True)
class Exposed:
    """A business took a lead of `category` at `at` (its history and caps move); the marketplace earned
    `price_minor` on a lead that `seller_id` sold it."""

    business_id: str
    category: str
    at: datetime
    price_minor: int = 0
    seller_id: str | None = None


@dataclass(frozen=True, slots=True)
class Moved:
    """Exposure `exposure_id` reached `status` at `at`, stating `turnover_minor` (None: none stated), from the
    outcome class `was` (see `scoring.outcome`; None: not known, so the business is read back) with
    `was_turnover_minor` stated. On a lead that `seller_id` sold the marketplace, a paid deal earned the marketplace
    `commission_minor`, and a return gave back the `refunded_minor` it had been paid for the lead: that seller's
    bonus moves by as much."""

    business_id: str
    category: str
    status: str
    turnover_minor: int | None = None
    seller_id: str | None = None
    commission_minor: int = 0
    refunded_minor: int = 0
    was: str | None = None
    was_turnover_minor: int | None = None
    exposure_id: str = ""
    at: datetime | None = None
    claimed_at: datetime | None = None  # when the exposure was claimed: a return frees its place under that day's cap

    @property
    def becomes(self) -> str:
        """The outcome class it moves to: a move leaves a deal fresh (not stale)."""
        return outcome(self.status)

    @property
    def moves_score(self) -> bool:
        """Whether any score can change: a step inside one class (new to contacted, won to invoiced: a win's
        payment term runs from the win) changes none unless the turnover stated changes."""
        return (
            self.was is None
            or self.was != self.becomes
            or (self.becomes in WIN_CLASSES and self.was_turnover_minor != self.turnover_minor)
            or bool(self.commission_minor or self.refunded_minor)
        )


Event = Joined | Exposed | Moved


def business_ids(events: Sequence[Event]) -> list[str]:
    """Every business whose ranking an event moves (a seller's too), each once."""
    seen: dict[str, None] = {}
    for event in events:
        seen[event.business_id] = None
        seller = getattr(event, "seller_id", None)
        if seller:
            seen[seller] = None
    return list(seen)
