"""What happened to a business that moves its ranking, told by the process that committed it.

The process applies these to its own in-memory core at once, without reading the database back; other
processes hear only the business ids (over Redis) and refresh those from the database, the truth. A full
refresh now and then (caps reset with the day, category averages drift) mends any drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime


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
    """An exposure reached `status` (`paid` with its turnover, or `returned`). On a lead that `seller_id` sold
    the marketplace, a paid deal earned the marketplace `commission_minor`, and a return gave back the
    `refunded_minor` it had been paid for the lead: that seller's bonus moves by as much."""

    business_id: str
    category: str
    status: str
    turnover_minor: int = 0
    seller_id: str | None = None
    commission_minor: int = 0
    refunded_minor: int = 0


Event = Joined | Exposed | Moved

# The statuses whose counts enter a score; any other move leaves the ranking as it was.
SCORED_STATUSES = frozenset({"paid", "returned"})


def business_ids(events: Sequence[Event]) -> list[str]:
    """Every business whose ranking an event moves (a seller's too), each once."""
    seen: dict[str, None] = {}
    for event in events:
        seen[event.business_id] = None
        seller = getattr(event, "seller_id", None)
        if seller:
            seen[seller] = None
    return list(seen)
