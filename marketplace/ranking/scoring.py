"""Profitability scores: the marketplace's expected revenue per exposure, one scale for both modes.

deal maker:  P(close and pay | business, category) x expected turnover x commission rate,
             where P(close and pay) = P(won | decided) x P(paid | won)
lead buyer:  price or bid x P(not returned | business, category)
both:        + revenue the marketplace earned from leads the business sold it (what buyers paid and deals' commissions,
               less the seller's own share of it), per lead it received
             x reliability (1 until the fraud module lowers it)

Every estimate is shrunk toward the category's average with a prior of `strength` pseudo-exposures, so a
newcomer starts at the category's fair prior, not at zero, and a few lucky deals do not crown anyone.

Outcomes come late: a customer decides days after the claim and pays days or weeks after that. Counting every
exposure still waiting as a failure would rank every deal maker near zero for its first month (measured: 0.004
against a true 0.2-0.35). So the close rate is split where the delays differ:
- P(won | decided). Won and lost are reported when the customer decides, at the same moment either way, so it
  counts decided exposures only: won, lost or returned, or open and gone stale (the business never said: a
  failure). An exposure still open and fresh is neither a success nor a failure yet.
- P(paid | won). A paid win counts at once; an unpaid one counts as a failure by the share of its payment term
  gone by since the win (the fraud module's `unpaid_days`: a quarter of a failure a quarter of the way in, a whole
  one when the term is over). So a fresh win is not a failure, and a business cannot ride on wins it never
  collects: they turn into failures as their term runs.
Pure: no database, no web framework.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from marketplace.exposures.rules import UNDECIDED, UNPAID
from marketplace.money import BP_WHOLE, div_round_up

# The outcome classes (see `outcome`) that are wins.
WIN_CLASSES = frozenset({"won_unpaid", "paid"})


@dataclass(frozen=True, slots=True)
class History:
    """What the business did with the leads of one category (counts and sums in minor units). With the defaults
    of the last four, every exposure received is decided and every win paid: a history long settled."""

    received: int = 0
    paid_deals: int = 0
    turnover_minor: int = 0  # stated on its wins: won, invoiced or paid deals
    returned: int = 0
    sold_revenue_minor: int = 0  # what leads this business sold brought in (all categories), its own share included
    undecided: int = 0  # open, before any decision, and not stale: the customer may still choose it
    won_unpaid: int = 0  # won or invoiced, not paid (yet)
    unpaid_weight: float = 0.0  # those wins as failures to pay: the share of each one's payment term gone by
    stated: int | None = None  # wins with a stated turnover (None: every one of them)

    @property
    def decided(self) -> int:
        return self.received - self.undecided

    @property
    def wins(self) -> int:
        return self.paid_deals + self.won_unpaid

    @property
    def turnover_known(self) -> int:
        return self.wins if self.stated is None else self.stated


@dataclass(frozen=True, slots=True)
class CategoryPrior:
    """The category's averages over every business, and how many pseudo-exposures they weigh."""

    win_rate: float  # of decided exposures, those won
    mean_turnover_minor: float  # of a win
    return_rate: float
    strength: float = 10.0
    pay_rate: float = 1.0  # of wins due, those paid
    # The most a win's expected turnover is believed to be (a multiple of what the category's customers ask for):
    # a turnover reported far beyond it, paid or not, cannot buy a business the top of the list.
    turnover_cap_minor: float = math.inf

    @property
    def close_rate(self) -> float:
        return self.win_rate * self.pay_rate


@dataclass(frozen=True, slots=True)
class Terms:
    """What the marketplace earns per unit: the category's price (or the buyer's higher bid) and rate."""

    mode: str
    price_minor: int
    commission_rate_bp: int
    bid_minor: int | None = None
    # What the marketplace keeps of the revenue of a lead the business sold it: all but the seller's own share of it
    # (the plan's recommender share), which the marketplace pays out and so does not earn.
    sold_kept_bp: int = BP_WHOLE


@dataclass(frozen=True, slots=True)
class Score:
    value: float
    # Beta posterior of the success probability (winning for deal makers, keeping for lead buyers), and what a
    # success is worth (for a deal maker, a win's commission times P(paid | won)):
    # value = reliability x (p x worth + bonus). Thompson sampling draws p.
    alpha: float
    beta: float
    worth: float
    bonus: float
    reliability: float
    factors: dict[str, Any] = field(default_factory=dict)


def score(history: History, prior: CategoryPrior, terms: Terms, reliability: float = 1.0) -> Score:
    k = prior.strength
    # Net of refunds; never below zero (an event applied out of order could make it so for a moment), so a
    # score is never negative, which the core's early stop relies on.
    kept_minor = max(0, history.sold_revenue_minor) * terms.sold_kept_bp / BP_WHOLE
    bonus = kept_minor / (history.received + k)
    if terms.mode == "deal_maker":
        wins = history.wins
        alpha = wins + k * prior.win_rate
        beta = (history.decided - wins) + k * (1.0 - prior.win_rate)
        p = alpha / (alpha + beta)
        paid = pay_rate(history, prior)
        turnover, capped = expected_turnover(history, prior)
        worth = paid * turnover * terms.commission_rate_bp / 10_000
        factors: dict[str, Any] = {
            "mode": "deal_maker",
            "p_close_and_pay": round(p * paid, 6),
            "p_won": round(p, 6),
            "p_paid_if_won": round(paid, 6),
            "expected_turnover_minor": round(turnover),
            "turnover_capped": capped,
            "commission_rate_bp": terms.commission_rate_bp,
            "decided_exposures": history.decided,
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
            "sold_leads_bonus_minor": round(bonus),
            "sold_revenue_minor": history.sold_revenue_minor,
            "sold_kept_bp": terms.sold_kept_bp,
            "reliability": reliability,
            "history_exposures": history.received,
            "prior_weight": round(k / (history.received + k), 4),
            "score": round(value, 4),
        }
    )
    return Score(value, max(alpha, 1e-9), max(beta, 1e-9), worth, bonus, reliability, factors)


def expected_turnover(history: History, prior: CategoryPrior) -> tuple[float, bool]:
    """What a win is expected to be worth: the turnover its wins state, shrunk toward the category's mean, at most the
    category's cap; and whether the cap cut it (a turnover reported far beyond what the category's customers ask for
    cannot buy a business the top of the list)."""
    k = prior.strength
    reported = (history.turnover_minor + k * prior.mean_turnover_minor) / (history.turnover_known + k)
    return min(reported, prior.turnover_cap_minor), reported > prior.turnover_cap_minor


def pay_rate(history: History, prior: CategoryPrior) -> float:
    """P(paid | won): paid wins against paid ones plus unpaid ones weighted by how much of their payment term has
    gone by, shrunk toward the prior."""
    k = prior.strength
    return (history.paid_deals + k * prior.pay_rate) / (history.paid_deals + history.unpaid_weight + k)


def unpaid_weight(won_at: Iterable[datetime], now: datetime, term: timedelta) -> float:
    """Unpaid wins, won at these moments, as failures to pay: each the share of its payment term gone by."""
    seconds = term.total_seconds()
    return sum(min(1.0, max(0.0, (now - at).total_seconds() / seconds)) for at in won_at)


def category_prior(history: History, *, default: CategoryPrior, returns: History | None = None) -> CategoryPrior:
    """The category's averages from its deal makers' history (summed), and its return rate from `returns` (its
    lead buyers' history; the same history if not given), themselves shrunk toward defaults."""
    k = default.strength
    wins = history.wins
    win = (wins + k * default.win_rate) / (history.decided + k)
    cap = default.turnover_cap_minor
    turnover = min(cap, (history.turnover_minor + k * default.mean_turnover_minor) / (history.turnover_known + k))
    kept = history if returns is None else returns
    return_rate = (kept.returned + k * default.return_rate) / (kept.received + k)
    return CategoryPrior(win, turnover, return_rate, k, pay_rate(history, default), cap)


def outcome(status: str, *, stale: bool = False) -> str:
    """The class a deal counts in: `undecided` (open, the customer may still choose it), `silent` (open and stale:
    the business never said, a failure), `won_unpaid` (won or invoiced), or its final status (paid, lost,
    returned). A deal that has just moved is not stale."""
    if status in UNDECIDED:
        return "silent" if stale else "undecided"
    if status in UNPAID:
        return "won_unpaid"
    return status


# An exact rational as (numerator, denominator), the denominator positive: a second price's inputs. Plain integers,
# not fractions.Fraction, whose every step looks for a common divisor: a wave prices its places in microseconds.
Ratio = tuple[int, int]


def exact_value(alpha: float, beta: float, worth: float, bonus: float, reliability_bp: int) -> Ratio:
    """A score's value from its parts, exactly: reliability x (alpha / (alpha + beta) x worth + bonus), the reliability
    the integer basis points it is kept in (Business.reliability_bp), every other part the exact rational its float is
    (the float `Score.value` is this, rounded at every step)."""
    an, ad = alpha.as_integer_ratio()
    bn, bd = beta.as_integer_ratio()
    wn, wd = worth.as_integer_ratio()
    on, od = bonus.as_integer_ratio()
    kept = an * bd  # alpha / (alpha + beta) = kept / whole
    whole = kept + bn * ad
    return reliability_bp * (kept * wn * od + on * whole * wd), BP_WHOLE * whole * wd * od


def gsp_price(
    next_score: Ratio | None,
    alpha: float,
    beta: float,
    reliability_bp: int,
    bonus: float,
    reserve: int,
    ceiling: int,
) -> int:
    """Generalised second price: the least whole amount a lead buyer could have bid and kept its place above the next
    candidate (whose exact score is `next_score`, see `exact_value`), never below the category's price (the reserve)
    and never above its own bid (the ceiling). `alpha`, `beta`, `reliability_bp` and `bonus` are the buyer's parts.

    Exact: with p = alpha / (alpha + beta) and r = reliability_bp / 10,000, keeping the place at a price x needs
    r x (p x x + bonus) >= next_score, so x >= (next_score / r - bonus) x (alpha + beta) / alpha: a rational computed
    in integers, without rounding, then rounded up once to a minor unit (money.div_round_up). So a next bidder with
    the same return record, bonus and reliability is matched at exactly its own bid, whatever float error their
    scores carry."""
    if next_score is None or alpha <= 0 or reliability_bp <= 0:
        return reserve
    sn, sd = next_score
    an, ad = alpha.as_integer_ratio()
    bn, bd = beta.as_integer_ratio()
    on, od = bonus.as_integer_ratio()
    # next_score / r - bonus = (sn 10,000 od - on sd r_bp) / (sd r_bp od); (alpha + beta) / alpha = whole / kept.
    kept = an * bd
    whole = kept + bn * ad
    numerator = (sn * BP_WHOLE * od - on * sd * reliability_bp) * whole
    denominator = sd * reliability_bp * od * kept
    return max(reserve, min(ceiling, div_round_up(numerator, denominator)))
