"""Fraud signals of one business, computed from its deals and what their customers answered. Pure: no web
framework, no database; every signal names the leads behind it so that an operator can check it.

Strong signals are contradictions on one lead (the customer says it hired the business, the business said
otherwise); pattern signals compare the business with its category's peers and only add weight to them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from marketplace.exposures.rules import DECIDED, UNDECIDED, UNPAID, WON

# Kinds of signal. Strong ones are per-lead contradictions; a dismissed alert reopens on a new one.
HIDDEN_DEAL = "hidden_deal"
RETURNED_THEN_HIRED = "returned_then_hired"
UNDER_REPORTED = "under_reported"
# A deal maker's `won` that the customer, asked after it, contradicts (hired nobody, or another business).
WON_CONTRADICTED = "won_contradicted"
# Pattern signals: each adds a little, and together they are capped below the alert threshold.
BELOW_BUDGET = "below_budget"
LOWERED_TURNOVER = "lowered_turnover"
LOST_RATE = "lost_rate"
RETURN_RATE = "return_rate"
STALE_LEADS = "stale_leads"
NEVER_PAID = "never_paid"
LOW_SATISFACTION = "low_satisfaction"

# The contradictions resting on a hire of this business the customer names (the model's `contradicted_share` is their
# share of those hires), and all of them.
HIRE_CONTRADICTIONS = (HIDDEN_DEAL, RETURNED_THEN_HIRED, UNDER_REPORTED)
STRONG = (*HIRE_CONTRADICTIONS, WON_CONTRADICTED)
PATTERNS = (BELOW_BUDGET, LOWERED_TURNOVER, LOST_RATE, RETURN_RATE, STALE_LEADS, NEVER_PAID, LOW_SATISFACTION)

# Evidence weights (the rule score is 1 - exp(-total weight); 0.69 of weight is a score of 0.5).
HIDDEN_AS_LOST = 1.0  # the customer hired it; it reported `lost`
HIDDEN_AS_NOTHING = 0.8  # the customer hired it; it still reports an open deal after the grace period
# The customer hired it and names an amount; the business reported the deal won but never paid, `unpaid_after` since
# the win: the commission, charged at `paid`, is never charged. Half a deal reported as nothing: the survey asks whom
# the customer hired and for how much, so its amount may be the price agreed rather than paid, and a customer may
# still owe a last instalment; one such deal (0.4: risk 0.33) opens no alert, two do.
HIDDEN_AS_UNPAID = 0.4
RETURNED_HIRED = 1.0  # it returned the lead as irrelevant; the customer hired it
UNDER_REPORT_MAX = 1.0  # per deal, scaled by how far below the customer's amount the turnover is
# It reported the deal won; the customer, asked after the win, says it hired nobody or another business. The `won` took
# the lead off the market (offers.closing.take_off_the_market): reported at the claim, it bought exclusivity for free.
# Half a hidden deal's weight: a customer may back out after agreeing, and a won deal cannot be reported lost, so one
# such deal (risk 0.39) opens no alert, two do. (The answer also puts the lead back on the market.)
WON_DENIED = 0.5
STRONG_CAP = 4.0
PATTERN_CAP = 0.6  # patterns alone never reach a score of 0.5 (1 - exp(-0.6) = 0.45)

# A reported turnover below this share of the customer's stated amount counts as under-reported; at
# UNDER_REPORT_FULL or below it counts in full, as much as a hidden deal. Survey amounts are honest estimates
# (about +-10 %), so an honest deal falls below 80 % of one rarely, and then only by a little: on the training
# market (seed 11) no honest deal of 98 with a surveyed amount came below 84 %, while every deal under-reported
# on purpose came below 70 %. 60 % is a quarter of the turnover kept away from the commission on the
# customer's own word: one such deal deserves an operator's look.
UNDER_REPORT_RATIO = 0.8
UNDER_REPORT_FULL = 0.6
# A turnover below this share of the customer's budget counts as a pattern (budgets are rough).
BELOW_BUDGET_RATIO = 0.4
BELOW_BUDGET_EACH = 0.15
# A won deal's turnover cut below UNDER_REPORT_RATIO of the most the business itself reported on it (at `won`, then
# `invoiced` or `paid`): the commission is charged on the last figure, so 10,000 at the win and 1.00 at payment owes
# almost nothing. Deals are renegotiated, so the cut is allowed and only a pattern, weighed like a low budget.
LOWERED_EACH = 0.15
NEVER_PAID_EACH = 0.1
PATTERN_MAX = {
    BELOW_BUDGET: 0.45,
    LOWERED_TURNOVER: 0.45,
    LOST_RATE: 0.35,
    RETURN_RATE: 0.35,
    STALE_LEADS: 0.3,
    NEVER_PAID: 0.3,
    LOW_SATISFACTION: 0.25,
}
# Rates against peers need this many of the business's own deals, and a z-score this high.
MIN_DEALS_FOR_RATE = 6
Z_FLOOR = 2.0
# Satisfaction: shrunk toward a fair prior of this many ratings at this mean.
SATISFACTION_PRIOR = 4.0
SATISFACTION_PRIOR_WEIGHT = 3.0
SATISFACTION_LOW = 3.0
MIN_RATINGS = 3
MAX_LEADS_SHOWN = 20


# Answer and Deal are named tuples, not frozen dataclasses: a scan builds one per deal of every business it
# assesses (thousands), and a frozen dataclass's __init__ sets each field through object.__setattr__, about ten
# times the cost of a tuple's. Immutable and hashable all the same.
class Answer(NamedTuple):
    """A customer's survey answer about one lead."""

    survey_id: str
    hired: bool
    business_id: str | None
    amount_minor: int | None
    satisfaction: int
    answered_at: datetime


class Deal(NamedTuple):
    """One exposure of the business: what it reported, and what the customer answered about the lead."""

    exposure_id: str
    lead_id: str
    category: str
    status: str
    budget_minor: int
    turnover_minor: int | None
    created_at: datetime
    status_changed_at: datetime
    stale: bool = False
    answers: tuple[Answer, ...] = ()
    won_at: datetime | None = None  # a won, invoiced or paid deal: when it was won (None: at its last step)
    # A won, invoiced or paid deal: the most the business reported as its turnover, at any step (None: unknown)
    highest_turnover_minor: int | None = None

    def verdict(self) -> Answer | None:
        """What the customer says: the latest answer that names a hire, else the latest answer."""
        if not self.answers:
            return None
        hired = [a for a in self.answers if a.hired]
        pool = hired or list(self.answers)
        return max(pool, key=lambda a: (a.answered_at, a.survey_id))


@dataclass(frozen=True, slots=True)
class CategoryCounts:
    """Deal makers' counts in one category: exposures, decided deals, lost, returned, stale."""

    exposures: int = 0
    decided: int = 0
    lost: int = 0
    returned: int = 0
    stale: int = 0

    def minus(self, other: CategoryCounts) -> CategoryCounts:
        return CategoryCounts(
            max(0, self.exposures - other.exposures),
            max(0, self.decided - other.decided),
            max(0, self.lost - other.lost),
            max(0, self.returned - other.returned),
            max(0, self.stale - other.stale),
        )


# Before a category has history, its peers are taken to lose this share of decided deals, and so on.
DEFAULT_PEERS = CategoryCounts(exposures=100, decided=100, lost=70, returned=8, stale=10)
PEER_PRIOR_WEIGHT = 20.0


@dataclass(frozen=True, slots=True)
class RuleConfig:
    report_grace: timedelta = timedelta(days=2)
    unpaid_after: timedelta = timedelta(days=45)


@dataclass(frozen=True, slots=True)
class Signal:
    kind: str
    weight: float
    count: int
    text: str
    leads: tuple[str, ...] = ()
    # What a contradiction rests on (its exposures) and the weight of each: a dismissed alert reopens only on
    # evidence it did not contain. Patterns have none; their growth is what counts.
    keys: tuple[str, ...] = ()
    key_weights: tuple[float, ...] = ()
    value: float = 0.0

    @property
    def strong(self) -> bool:
        return self.kind in STRONG

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "weight": round(self.weight, 4),
            "count": self.count,
            "text": self.text,
            "leads": list(self.leads[:MAX_LEADS_SHOWN]),
            "keys": list(self.keys),
            "key_weights": [round(w, 4) for w in self.key_weights],
            "value": round(self.value, 4),
        }


@dataclass(frozen=True, slots=True)
class Assessment:
    """Every signal of a business, and the features the model reads."""

    business_id: str
    signals: tuple[Signal, ...]
    features: dict[str, float] = field(default_factory=dict)


def _leads(deals: Iterable[Deal]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(d.lead_id for d in deals))


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _share(ratio: float) -> str:
    # A cut to 1.00 of 10,000 is "0%" rounded, which reads as no turnover at all.
    return f"{ratio:.0%}" if ratio >= 0.01 else "under 1%"


def _customer_agrees(turnover_minor: int, answer: Answer | None, business_id: str) -> bool:
    """The customer says it hired this business and names an amount the turnover is not under-reported against."""
    return bool(
        answer is not None
        and answer.hired
        and answer.business_id == business_id
        and answer.amount_minor
        and turnover_minor >= UNDER_REPORT_RATIO * answer.amount_minor
    )


def _binomial_z(own: Sequence[tuple[int, int, float]]) -> float:
    """z-score of the business's count against its peers' rates, pooled over categories: (k, n, p0) each."""
    expected = sum(n * p for _, n, p in own)
    variance = sum(n * p * (1 - p) for _, n, p in own)
    observed = sum(k for k, _, _ in own)
    if variance <= 0:
        return 0.0
    return (observed - expected) / math.sqrt(variance)


def _peer_rate(count: int, total: int, default: float) -> float:
    return (count + PEER_PRIOR_WEIGHT * default) / (total + PEER_PRIOR_WEIGHT)


def own_counts(deals: Sequence[Deal], as_of: datetime | None = None) -> dict[str, CategoryCounts]:
    """A business's own counts per category, in the shape its peers' are given (to take itself out).

    `as_of`: what the business had added to norms summed at that moment (they are read at most every few hours): a deal
    made since adds nothing, and one whose status moved since counts as the plain exposure it most likely was then (an
    open deal), so that taking the business out of older norms never takes out more than they hold."""
    # Summed in lists and made into counts once per category: a busy business has hundreds of deals, and a frozen
    # count built per deal was most of an assessment's time.
    sums: dict[str, list[int]] = {}
    for d in deals:
        if as_of is not None and d.created_at > as_of:
            continue
        c = sums.get(d.category)
        if c is None:
            c = sums[d.category] = [0, 0, 0, 0, 0]
        c[0] += 1
        if as_of is not None and d.status_changed_at > as_of:
            continue
        status = d.status
        if status in DECIDED:
            c[1] += 1
            c[2] += status == "lost"
        elif status == "returned":
            c[3] += 1
        elif d.stale and status in UNDECIDED:
            c[4] += 1
    return {code: CategoryCounts(*c) for code, c in sums.items()}


def assess(
    business_id: str,
    mode: str,
    deals: Sequence[Deal],
    peers: Mapping[str, CategoryCounts],
    now: datetime,
    config: RuleConfig | None = None,
    peers_at: datetime | None = None,
) -> Assessment:
    """Every signal of one business. Lead buyers owe no commission, so only what cheats them out of a price
    counts for them (returning a lead they converted, and their customers' satisfaction). `peers_at`: when the
    norms were summed (the business is taken out of them as it stood then; None: they are current)."""
    config = config or RuleConfig()
    deal_maker = mode == "deal_maker"
    mine = [(d, d.verdict()) for d in deals]
    hired_me = [(d, a) for d, a in mine if a is not None and a.hired and a.business_id == business_id]

    # --- contradictions on one lead -------------------------------------------------------------
    found: list[Signal | None] = [_returned_then_hired(hired_me)]
    hidden_unpaid: set[str] = set()
    if deal_maker:
        hidden, hidden_unpaid = _hidden_deals(hired_me, now, config)
        under, under_ids = _under_reported(hired_me)
        found += [
            hidden,
            under,
            _won_contradicted(deals, business_id),
            _below_budget(deals, under_ids),
            _lowered_turnover(mine, business_id, under_ids),
        ]

    # --- patterns against the category's peers -------------------------------------------------------
    own, others = _own_and_others(deals, peers, peers_at)
    if deal_maker:
        found += [
            _lost_rate(deals, own, others),
            _stale_leads(deals, own, others),
            _never_paid(deals, now, config, hidden_unpaid),
        ]
    return_rate, return_z = _return_rate(deals, own, others)
    low_satisfaction, satisfaction = _low_satisfaction(hired_me)
    found += [return_rate, low_satisfaction]

    signals = [s for s in found if s is not None]
    signals.sort(key=lambda s: (-s.weight, s.kind))
    features = _features(signals, deals, hired_me, satisfaction, return_z)
    return Assessment(business_id, tuple(signals), features)


def _returned_then_hired(hired_me: Sequence[tuple[Deal, Answer]]) -> Signal | None:
    """Leads returned as irrelevant whose customer then says it hired this business (both modes)."""
    returned = [d for d, _ in hired_me if d.status == "returned"]
    if not returned:
        return None
    return Signal(
        RETURNED_THEN_HIRED,
        RETURNED_HIRED * len(returned),
        len(returned),
        f"{_plural(len(returned), 'lead')} returned as irrelevant, then the customer said it hired this business",
        _leads(returned),
        tuple(d.exposure_id for d in returned),
        tuple(RETURNED_HIRED for _ in returned),
        float(len(returned)),
    )


def _hidden_deals(
    hired_me: Sequence[tuple[Deal, Answer]], now: datetime, config: RuleConfig
) -> tuple[Signal | None, set[str]]:
    """Deals the customer says it hired this business for that the business reported lost, did not report won or lost
    (open past the grace period, or stale), or reported won and never paid though the customer names an amount.

    Also returns the exposures of the last kind (won, paid by the customer, never reported paid): NEVER_PAID
    does not count them again."""
    as_lost = [d for d, _ in hired_me if d.status == "lost"]
    as_nothing = [
        d for d, a in hired_me if d.status in UNDECIDED and (d.stale or now - a.answered_at >= config.report_grace)
    ]
    # Won and never paid, though the customer says it paid this business a named amount: dated from the win as
    # NEVER_PAID dates it. Without the customer's word it is only that pattern, which can never open an alert.
    as_unpaid = [
        d
        for d, a in hired_me
        if d.status in UNPAID and a.amount_minor and now - (d.won_at or d.status_changed_at) >= config.unpaid_after
    ]
    hidden_unpaid = {d.exposure_id for d in as_unpaid}
    hidden = as_lost + as_nothing + as_unpaid
    if not hidden:
        return None, hidden_unpaid
    parts = []
    if as_lost:
        parts.append(f"{len(as_lost)} reported lost")
    if as_nothing:
        # Still open: the business may have called and quoted (`contacted`, `quoted`), so "never reported" misread it.
        parts.append(f"{len(as_nothing)} not reported won or lost")
    if as_unpaid:
        parts.append(f"{len(as_unpaid)} won, paid by the customer, never reported paid")
    # One weight per exposure, in the order of `hidden`: rules.undecided and new_evidence read them in pairs.
    key_weights = (
        [HIDDEN_AS_LOST] * len(as_lost) + [HIDDEN_AS_NOTHING] * len(as_nothing) + [HIDDEN_AS_UNPAID] * len(as_unpaid)
    )
    signal = Signal(
        HIDDEN_DEAL,
        HIDDEN_AS_LOST * len(as_lost) + HIDDEN_AS_NOTHING * len(as_nothing) + HIDDEN_AS_UNPAID * len(as_unpaid),
        len(hidden),
        f"{_plural(len(hidden), 'deal')} the customer says it hired this business for ({', '.join(parts)})",
        _leads(hidden),
        tuple(d.exposure_id for d in hidden),
        tuple(key_weights),
        float(len(hidden)),
    )
    return signal, hidden_unpaid


def _won_contradicted(deals: Sequence[Deal], business_id: str) -> Signal | None:
    """Deals the business reported won (invoiced, paid) that the customer, answering after the win, says it did not
    hire it for: its word then (the latest answer naming a hire, else the latest answer, as Deal.verdict reads them)
    is that it hired nobody, or another business. An answer before the win says nothing of it (the customer had not
    decided yet), nor does a hire whose business the customer leaves unnamed. A customer who confirms the hire, at any
    time after the win, clears it."""
    hired_nobody: list[Deal] = []
    hired_another: list[Deal] = []
    for d in deals:
        if d.status not in WON or not d.answers:
            continue
        won_at = d.won_at or d.status_changed_at
        after = [a for a in d.answers if a.answered_at >= won_at]
        if not after:
            continue
        hires = [a for a in after if a.hired]
        said = max(hires or after, key=lambda a: (a.answered_at, a.survey_id))
        if not said.hired:
            hired_nobody.append(d)
        elif said.business_id is not None and said.business_id != business_id:
            hired_another.append(d)
    contradicted = hired_nobody + hired_another
    if not contradicted:
        return None
    parts = []
    if hired_nobody:
        parts.append(f"{len(hired_nobody)} hired nobody")
    if hired_another:
        parts.append(f"{len(hired_another)} hired another business")
    return Signal(
        WON_CONTRADICTED,
        WON_DENIED * len(contradicted),
        len(contradicted),
        f"{_plural(len(contradicted), 'deal')} reported won (its lead taken off the market) that the customer, asked "
        f"after the win, says it did not hire this business for ({', '.join(parts)})",
        _leads(contradicted),
        tuple(d.exposure_id for d in contradicted),
        tuple(WON_DENIED for _ in contradicted),
        float(len(contradicted)),
    )


def _under_reported(hired_me: Sequence[tuple[Deal, Answer]]) -> tuple[Signal | None, set[str]]:
    """Won deals whose turnover is below UNDER_REPORT_RATIO of the amount the customer says it paid, each weighed by
    how far below (in full at UNDER_REPORT_FULL). Also returns their exposures: the patterns on turnover (below
    budget, lowered) do not count them again."""
    under: list[tuple[Deal, float]] = []
    for d, a in hired_me:
        if d.status not in WON or d.turnover_minor is None:
            continue
        if a.amount_minor:
            ratio = d.turnover_minor / a.amount_minor
            if ratio < UNDER_REPORT_RATIO:
                under.append((d, ratio))
    under_ids = {d.exposure_id for d, _ in under}
    if not under:
        return None, under_ids
    weights = tuple(
        UNDER_REPORT_MAX * min(1.0, (UNDER_REPORT_RATIO - r) / (UNDER_REPORT_RATIO - UNDER_REPORT_FULL))
        for _, r in under
    )
    worst = min(r for _, r in under)
    signal = Signal(
        UNDER_REPORTED,
        sum(weights),
        len(under),
        f"{_plural(len(under), 'deal')} reported with a turnover below what the customer says it "
        f"paid (lowest {worst:.0%} of it)",
        _leads(d for d, _ in under),
        tuple(d.exposure_id for d, _ in under),
        weights,
        worst,
    )
    return signal, under_ids


def _below_budget(deals: Sequence[Deal], under_ids: set[str]) -> Signal | None:
    """Pattern: won deals reported below BELOW_BUDGET_RATIO of the customer's budget, but for the `under_ids` the
    customer's amount already shows under-reported."""
    below = [
        d
        for d in deals
        if d.status in WON
        and d.turnover_minor is not None
        and d.budget_minor > 0
        and d.turnover_minor < BELOW_BUDGET_RATIO * d.budget_minor
        and d.exposure_id not in under_ids
    ]
    text = f"{_plural(len(below), 'deal')} reported below {BELOW_BUDGET_RATIO:.0%} of the customer's budget"
    return _counted(BELOW_BUDGET, BELOW_BUDGET_EACH, below, text)


def _counted(kind: str, each: float, deals: Sequence[Deal], text: str) -> Signal | None:
    """A pattern that counts deals: `each` per deal, capped at the pattern's most (PATTERN_MAX); none without one."""
    if not deals:
        return None
    n = len(deals)
    return Signal(kind, min(PATTERN_MAX[kind], each * n), n, text, _leads(deals), value=float(n))


def _lowered_turnover(
    mine: Sequence[tuple[Deal, Answer | None]], business_id: str, under_ids: set[str]
) -> Signal | None:
    """Pattern: won deals whose turnover the business cut below UNDER_REPORT_RATIO of the most it reported on them.

    On the business's own word: a higher turnover it reported earlier on the deal says what the deal was worth.
    A deal the customer's amount already shows under-reported (`under_ids`) says so more strongly, and is not counted
    again; one whose customer names an amount the lower turnover agrees with was renegotiated, not hidden."""
    lowered = [
        (d, d.turnover_minor / d.highest_turnover_minor)
        for d, a in mine
        if d.status in WON
        and d.turnover_minor is not None
        and d.highest_turnover_minor
        and d.turnover_minor < UNDER_REPORT_RATIO * d.highest_turnover_minor
        and d.exposure_id not in under_ids
        and not _customer_agrees(d.turnover_minor, a, business_id)
    ]
    if not lowered:
        return None
    deepest = min(r for _, r in lowered)
    text = (
        f"{_plural(len(lowered), 'won deal')} whose turnover it lowered after the win (lowest "
        f"{_share(deepest)} of the most it had reported)"
    )
    return _counted(LOWERED_TURNOVER, LOWERED_EACH, [d for d, _ in lowered], text)


def _own_and_others(
    deals: Sequence[Deal], peers: Mapping[str, CategoryCounts], peers_at: datetime | None
) -> tuple[dict[str, CategoryCounts], dict[str, CategoryCounts]]:
    """The business's own counts per category, and its peers' in the same categories without it: taken out as it
    stood at `peers_at`, when the norms were summed (None: they are current)."""
    own = own_counts(deals)
    counted = own if peers_at is None else own_counts(deals, as_of=peers_at)
    others = {code: peers.get(code, CategoryCounts()).minus(counted.get(code, CategoryCounts())) for code in own}
    return own, others


def _rate_weight(kind: str, z: float) -> float:
    """A rate pattern's weight: 0.1 at Z_FLOOR, 0.1 more per unit of z, capped."""
    return min(PATTERN_MAX[kind], 0.1 * (z - Z_FLOOR + 1))


def _lost_rate(
    deals: Sequence[Deal], own: Mapping[str, CategoryCounts], others: Mapping[str, CategoryCounts]
) -> Signal | None:
    """Pattern: a share of decided deals reported lost far above the category's peers (z >= Z_FLOOR, pooled over
    categories, on at least MIN_DEALS_FOR_RATE decided deals)."""
    default = DEFAULT_PEERS
    rows = [
        (c.lost, c.decided, _peer_rate(others[code].lost, others[code].decided, default.lost / default.decided))
        for code, c in own.items()
    ]
    decided = sum(n for _, n, _ in rows)
    z = _binomial_z(rows)
    if not (decided >= MIN_DEALS_FOR_RATE and z >= Z_FLOOR):
        return None
    lost = [d for d in deals if d.status == "lost"]
    expected = sum(n * p for _, n, p in rows) / decided
    return Signal(
        LOST_RATE,
        _rate_weight(LOST_RATE, z),
        len(lost),
        f"loses {len(lost) / decided:.0%} of its decided deals where its category's peers lose "
        f"{expected:.0%} (z = {z:.1f}, {decided} deals)",
        _leads(lost),
        value=z,
    )


def _stale_leads(
    deals: Sequence[Deal], own: Mapping[str, CategoryCounts], others: Mapping[str, CategoryCounts]
) -> Signal | None:
    """Pattern: a share of leads left open with no status update for too long far above the category's peers."""
    default = DEFAULT_PEERS
    rows = [
        (c.stale, c.exposures, _peer_rate(others[code].stale, others[code].exposures, default.stale / 100))
        for code, c in own.items()
    ]
    total = sum(n for _, n, _ in rows)
    z = _binomial_z(rows)
    if not (total >= MIN_DEALS_FOR_RATE and z >= Z_FLOOR):
        return None
    stale = [d for d in deals if d.stale and d.status in UNDECIDED]
    return Signal(
        STALE_LEADS,
        _rate_weight(STALE_LEADS, z),
        len(stale),
        f"{_plural(len(stale), 'lead')} with no status update for too long, {len(stale) / total:.0%} of "
        f"its leads (z = {z:.1f} against its peers)",
        _leads(stale),
        value=z,
    )


def _never_paid(deals: Sequence[Deal], now: datetime, config: RuleConfig, hidden_unpaid: set[str]) -> Signal | None:
    """Pattern: won deals not paid `config.unpaid_after` since the win.

    Dated from the win, as the ranking dates its payment term: an invoice does not restart it. A deal the customer
    says it paid (`hidden_unpaid`) is a hidden deal already, and not counted twice."""
    unpaid = [
        d
        for d in deals
        if d.status in UNPAID
        and now - (d.won_at or d.status_changed_at) >= config.unpaid_after
        and d.exposure_id not in hidden_unpaid
    ]
    text = f"{_plural(len(unpaid), 'won deal')} not paid {config.unpaid_after.days} days after the win"
    return _counted(NEVER_PAID, NEVER_PAID_EACH, unpaid, text)


def _return_rate(
    deals: Sequence[Deal], own: Mapping[str, CategoryCounts], others: Mapping[str, CategoryCounts]
) -> tuple[Signal | None, float]:
    """Pattern (both modes): a share of leads returned far above the category's peers. Also returns the z-score,
    which the model reads whether or not it is a signal."""
    default = DEFAULT_PEERS
    rows = [
        (c.returned, c.exposures, _peer_rate(others[code].returned, others[code].exposures, default.returned / 100))
        for code, c in own.items()
    ]
    total = sum(n for _, n, _ in rows)
    z = _binomial_z(rows)
    if not (total >= MIN_DEALS_FOR_RATE and z >= Z_FLOOR):
        return None, z
    returned = [d for d in deals if d.status == "returned"]
    signal = Signal(
        RETURN_RATE,
        _rate_weight(RETURN_RATE, z),
        len(returned),
        f"returns {len(returned) / total:.0%} of its leads, far more than its category's peers (z = {z:.1f})",
        _leads(returned),
        value=z,
    )
    return signal, z


def _low_satisfaction(hired_me: Sequence[tuple[Deal, Answer]]) -> tuple[Signal | None, float]:
    """Pattern (both modes): the customers who hired the business rate it low, their mean shrunk toward a fair prior
    (SATISFACTION_PRIOR over SATISFACTION_PRIOR_WEIGHT ratings), on at least MIN_RATINGS ratings. Also returns the
    satisfaction the model reads: that shrunk mean, or the prior without any rating."""
    ratings = [(d, a) for d, a in hired_me if 1 <= a.satisfaction <= 5]
    mean = (sum(a.satisfaction for _, a in ratings) + SATISFACTION_PRIOR * SATISFACTION_PRIOR_WEIGHT) / (
        len(ratings) + SATISFACTION_PRIOR_WEIGHT
    )
    satisfaction = mean if ratings else SATISFACTION_PRIOR
    if not (len(ratings) >= MIN_RATINGS and mean < SATISFACTION_LOW):
        return None, satisfaction
    low = [d for d, a in ratings if a.satisfaction <= 2]
    signal = Signal(
        LOW_SATISFACTION,
        min(PATTERN_MAX[LOW_SATISFACTION], 0.25 * (SATISFACTION_LOW - mean)),
        len(ratings),
        f"its customers rate it {sum(a.satisfaction for _, a in ratings) / len(ratings):.1f} of 5 on "
        f"average ({_plural(len(ratings), 'answer')})",
        _leads(low),
        value=mean,
    )
    return signal, satisfaction


# The model's inputs, oriented so that more is more suspicious (the unsupervised model looks for outliers).
FEATURES = (
    "hidden_weight",
    "returned_hired",
    "under_reported_weight",
    "below_budget",
    "lost_z",
    "stale_z",
    "return_z",
    "never_paid",
    "satisfaction_gap",
    "contradicted_share",
    "log_deals",
)


def _features(
    signals: Sequence[Signal],
    deals: Sequence[Deal],
    hired_me: Sequence[tuple[Deal, Answer]],
    satisfaction: float,
    return_z: float,
) -> dict[str, float]:
    by_kind = {s.kind: s for s in signals}

    def weight(kind: str) -> float:
        s = by_kind.get(kind)
        return s.weight if s else 0.0

    def value(kind: str) -> float:
        s = by_kind.get(kind)
        return s.value if s else 0.0

    contradicted = sum(by_kind[k].count for k in HIRE_CONTRADICTIONS if k in by_kind)
    return {
        "hidden_weight": weight(HIDDEN_DEAL),
        "returned_hired": weight(RETURNED_THEN_HIRED),
        "under_reported_weight": weight(UNDER_REPORTED),
        "below_budget": value(BELOW_BUDGET),
        "lost_z": value(LOST_RATE),
        "stale_z": value(STALE_LEADS),
        "return_z": max(0.0, return_z),
        "never_paid": value(NEVER_PAID),
        "satisfaction_gap": max(0.0, SATISFACTION_PRIOR - satisfaction),
        "contradicted_share": contradicted / len(hired_me) if hired_me else 0.0,
        "log_deals": math.log1p(len(deals)),
    }


def undecided_features(
    features: dict[str, float], signals: Sequence[Signal], undecided: Sequence[Signal]
) -> dict[str, float]:
    """The model's features with the contradictions operators decided on (`rules.undecided` left them out) taken
    out as well, so that the model, like the rules, reads only the evidence nobody decided: what a dismissed alert
    held counts against the business in neither."""
    if len(undecided) == len(signals) and all(a is b for a, b in zip(undecided, signals, strict=True)):
        return features
    before = {s.kind: s for s in signals if s.kind in HIRE_CONTRADICTIONS}
    after = {s.kind: s for s in undecided if s.kind in HIRE_CONTRADICTIONS}
    out = dict(features)
    for kind, feature in ((HIDDEN_DEAL, "hidden_weight"), (RETURNED_THEN_HIRED, "returned_hired"),
                          (UNDER_REPORTED, "under_reported_weight")):
        out[feature] = after[kind].weight if kind in after else 0.0
    contradicted = sum(s.count for s in before.values())
    if contradicted:  # the share of the hires customers reported that contradict the business, less the decided
        out["contradicted_share"] = features["contradicted_share"] * sum(s.count for s in after.values()) / contradicted
    return out
