"""Profitability scores: the marketplace's expected revenue per exposure, one scale for both modes.

deal maker:  P(close and pay | business, category) x expected turnover x commission rate
lead buyer:  price or bid x P(not returned | business, category)
both:        + revenue the marketplace earned from leads the business sold it, per lead it received
             x reliability (1 until the fraud module lowers it)

Every estimate is shrunk toward the category's average with a prior of `strength` pseudo-exposures, so a
newcomer starts at the category's fair prior, not at zero, and a few lucky deals do not crown anyone.
Pure: no database, no web framework.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class History:
    """What the business did with the leads of one category (counts and sums in minor units)."""

    received: int = 0
    paid_deals: int = 0
    turnover_minor: int = 0
    returned: int = 0
    sold_revenue_minor: int = 0  # what the marketplace earned from leads this business sold it (all categories)


@dataclass(frozen=True, slots=True)
class CategoryPrior:
    """The category's averages over every business, and how many pseudo-exposures they weigh."""

    close_rate: float
    mean_turnover_minor: float
    return_rate: float
    strength: float = 10.0


@dataclass(frozen=True, slots=True)
class Terms:
    """What the marketplace earns per unit: the category's price (or the buyer's higher bid) and rate."""

    mode: str
    price_minor: int
    commission_rate_bp: int
    bid_minor: int | None = None


@dataclass(frozen=True, slots=True)
class Score:
    value: float
    # Beta posterior of the success probability (closing for deal makers, keeping for lead buyers),
    # and what a success is worth: value = reliability x (p x worth + bonus). Thompson sampling draws p.
    alpha: float
    beta: float
    worth: float
    bonus: float
    reliability: float
    factors: dict[str, Any] = field(default_factory=dict)

    def sampled(self, p: float) -> float:
        return self.reliability * (p * self.worth + self.bonus)


def score(history: History, prior: CategoryPrior, terms: Terms, reliability: float = 1.0) -> Score:
    k = prior.strength
    # Net of refunds; never below zero (an event applied out of order could make it so for a moment), so a
    # score is never negative, which the core's early stop relies on.
    bonus = max(0, history.sold_revenue_minor) / (history.received + k)
    if terms.mode == "deal_maker":
        alpha = history.paid_deals + k * prior.close_rate
        beta = (history.received - history.paid_deals) + k * (1.0 - prior.close_rate)
        p = alpha / (alpha + beta)
        turnover = (history.turnover_minor + k * prior.mean_turnover_minor) / (history.paid_deals + k)
        worth = turnover * terms.commission_rate_bp / 10_000
        factors: dict[str, Any] = {
            "mode": "deal_maker",
            "p_close_and_pay": round(p, 6),
            "expected_turnover_minor": round(turnover),
            "commission_rate_bp": terms.commission_rate_bp,
        }
    else:
        price = max(terms.price_minor, terms.bid_minor or 0)
        alpha = (history.received - history.returned) + k * (1.0 - prior.return_rate)
        beta = history.returned + k * prior.return_rate
        p = alpha / (alpha + beta)
        worth = float(price)
        factors = {"mode": "lead_buyer", "price_or_bid_minor": price, "p_not_returned": round(p, 6)}
    value = reliability * (p * worth + bonus)
    factors.update(
        {
            "sold_leads_bonus_minor": round(bonus, 2),
            "reliability": reliability,
            "history_exposures": history.received,
            "prior_weight": round(k / (history.received + k), 4),
            "score": round(value, 4),
        }
    )
    return Score(value, max(alpha, 1e-9), max(beta, 1e-9), worth, bonus, reliability, factors)


def category_prior(
    received: int, paid_deals: int, turnover_minor: int, returned: int, *, default: CategoryPrior
) -> CategoryPrior:
    """The category's averages from all businesses' history, themselves shrunk toward configured defaults."""
    k = default.strength
    close = (paid_deals + k * default.close_rate) / (received + k)
    turnover = (turnover_minor + k * default.mean_turnover_minor) / (paid_deals + k)
    returns = (returned + k * default.return_rate) / (received + k)
    return CategoryPrior(close, turnover, returns, k)


def gsp_price(next_score: float | None, p_keep: float, reliability: float, bonus: float, reserve: int, bid: int) -> int:
    """Generalised second price: the least a lead buyer could have bid and kept its place above the next
    candidate, never below the category's price (the reserve) and never above its own bid."""
    if next_score is None or p_keep <= 0 or reliability <= 0:
        return reserve
    needed = (next_score / reliability - bonus) / p_keep
    return max(reserve, min(bid, math.ceil(needed)))
