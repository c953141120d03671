"""The simulated market's agents: businesses with hidden traits, customers and their leads, and each deal's
truth. Pure and seeded: no HTTP, no database, no clock.

Every draw comes from a generator seeded by (seed, purpose, ids), never from a shared stream, so the truth
of one business handling one lead is the same whatever happened before it and under whichever ranking
policy: comparing policies then compares them on the same customers, deals and cheats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from marketplace.money import MAX_AMOUNT_MINOR
from marketplace.simulation.scenario import DISHONEST_KINDS, Scenario

# Purposes of the seeded generators (part of their seeds: never reuse a number for another purpose).
_TRAITS, _JOINS, _HONESTY, _DAY, _CLAIM, _DEAL, _REACTION, _SELL = 1, 2, 3, 4, 5, 6, 7, 8
_SURVEY_ANSWER = 101  # (the number benchmarks/fraud_detection.py gave it first: its markets stay as they were)

HONEST = "honest"


def rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([abs(k) for k in key])


@dataclass(frozen=True)
class CatalogCategory:
    code: str
    lead_price_minor: int
    exclusive_price_minor: int
    max_exposures: int
    commission_rate_bp: int


@dataclass(frozen=True)
class Catalog:
    """What the service says it trades (GET /v1/categories and /v1/regions)."""

    currency: str
    categories: dict[str, CatalogCategory]
    regions: tuple[str, ...]

    @classmethod
    def from_api(cls, categories: list[dict[str, Any]], regions: list[dict[str, Any]]) -> Catalog:
        if not categories or not regions:
            raise ValueError("the service lists no categories or no regions")
        return cls(
            currency=categories[0]["lead_price"]["currency"],
            categories={
                c["code"]: CatalogCategory(
                    c["code"],
                    c["lead_price"]["amount_minor"],
                    c["exclusive_price"]["amount_minor"],
                    c["max_exposures"],
                    c["commission_rate_bp"],
                )
                for c in categories
            },
            regions=tuple(r["code"] for r in regions),
        )


@dataclass
class BusinessAgent:
    """A business and its hidden traits; `id` and `token` arrive when it signs up through the API."""

    index: int
    mode: str
    categories: tuple[str, ...]
    regions: tuple[str, ...]
    min_deal_minor: int
    max_deal_minor: int
    daily_cap: int
    monthly_cap: int
    joins_at: datetime
    close_rate: dict[str, float]
    deal_size_factor: float
    claim_rate: float
    reaction_minutes: float
    return_habit: float
    reports_lost: float
    reports_status: bool
    exclusive_rate: float
    sells_per_day: float
    kind: str = HONEST
    # The share of its deals it cheats on (hides, returns, under-reports), and an under-reporter's factor:
    # the share of the true turnover it reports.
    cheat_share: float = 0.0
    under_report_factor: float = 1.0
    id: str | None = None
    token: str | None = None

    def sign_up_body(self, seed: int, currency: str, run: int = 0) -> dict[str, Any]:
        """`run`: 0 in process (a fresh database each time); against a running server, a number of its own per run,
        so a second run's businesses are not the first run's emails (a 409)."""
        tag = f"-run{run}" if run else ""
        return {
            "name": f"Sim business {self.index}",
            "email": f"sim{seed}{tag}-business{self.index}@example.com",
            "phone": f"+97256{(self.index + run) % 10_000_000:07d}",
            "mode": self.mode,
            "currency": currency,
            "profile": {
                "categories": list(self.categories),
                "regions": list(self.regions),
                "min_deal_minor": self.min_deal_minor,
                "max_deal_minor": self.max_deal_minor,
                "daily_cap": self.daily_cap,
                "monthly_cap": self.monthly_cap,
            },
        }

    def truth(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "id": self.id,
            "mode": self.mode,
            "kind": self.kind,
            "cheat_share": round(self.cheat_share, 4),
            "under_report_factor": round(self.under_report_factor, 4),
            "categories": list(self.categories),
            "regions": list(self.regions),
            "joins_at": self.joins_at.isoformat(),
            "close_rate": {k: round(v, 4) for k, v in self.close_rate.items()},
            "deal_size_factor": round(self.deal_size_factor, 4),
            "claim_rate": round(self.claim_rate, 4),
            "reaction_minutes": round(self.reaction_minutes, 1),
            "return_habit": round(self.return_habit, 4),
            "reports_lost": round(self.reports_lost, 4),
            "reports_status": self.reports_status,
        }


@dataclass(frozen=True)
class LeadPlan:
    """A customer's request as it will be sent, and what only the simulator knows about it."""

    index: int
    at: datetime
    category: str
    region: str
    budget_minor: int
    customer: int
    junk: bool
    # The lead this one repeats (the same customer and need, sent again: the service should dedupe it).
    repeats: int | None = None
    # A business selling an inquiry it cannot serve (POST /v1/businesses/me/leads).
    seller: int | None = None
    answers_survey: bool = True

    def body(self, currency: str, run: int = 0) -> dict[str, Any]:
        """`run` as for a sign-up: a second run against one server must not send the first run's customers again
        (the service would take them for the same requests, duplicates)."""
        customer = self.customer + run
        return {
            "category": self.category,
            "region": self.region,
            "description": f"Simulated {self.category} request in {self.region}",
            "budget": {"amount_minor": self.budget_minor, "currency": currency},
            "contact": {
                "name": f"Customer {customer}",
                "phone": f"+97253{customer % 10_000_000:07d}",
                "email": f"customer{customer}@example.com",
            },
            "consent": True,
        }


@dataclass(frozen=True)
class DealPlan:
    """What happens when one business holds one lead: decided by the seed, before anybody acts."""

    # Would the customer hire this business (if nobody was hired before)?
    could_close: bool
    turnover_minor: int
    decision_after: timedelta
    payment_after: timedelta
    # For a dishonest business: does it cheat on this deal, and how.
    cheats: bool
    hide_with_lost: bool
    # For the rest: does it return a junk lead, report a lost deal, use its status pipeline.
    returns_junk: bool
    reports_lost: bool
    satisfaction: int
    survey_noise: float


@dataclass
class Market:
    """Every agent of a run: businesses (those present at the start, then newcomers) and the lead stream."""

    scenario: Scenario
    catalog: Catalog
    businesses: list[BusinessAgent] = field(default_factory=list)

    @property
    def end(self) -> datetime:
        return self.scenario.start + timedelta(days=self.scenario.days)


def _weights(values: list[float]) -> np.ndarray:
    w = np.asarray(values, float)
    return w / w.sum()


def build_market(scenario: Scenario, catalog: Catalog) -> Market:
    """Businesses with hidden traits; the first `businesses` exist at the start, newcomers join later."""
    s, traits = scenario, scenario.business
    market = Market(scenario, catalog)
    codes = list(catalog.categories)
    demand = _weights([s.category(c, catalog.categories[c].lead_price_minor).demand_weight or 1e-9 for c in codes])
    total = s.businesses + s.newcomers
    join_rng = rng(s.seed, _JOINS)
    join_offsets = np.sort(join_rng.uniform(0.0, s.days, size=s.newcomers))
    for i in range(total):
        g = rng(s.seed, _TRAITS, i)
        mode = "lead_buyer" if g.random() < traits.lead_buyer_share else "deal_maker"
        n_cat = int(g.integers(1, min(traits.categories_max, len(codes)) + 1))
        categories = tuple(sorted(str(c) for c in g.choice(codes, size=n_cat, replace=False, p=demand)))
        n_reg = int(g.integers(1, min(traits.regions_max, len(catalog.regions)) + 1))
        regions = tuple(sorted(str(r) for r in g.choice(list(catalog.regions), size=n_reg, replace=False)))
        medians = [s.category(c, catalog.categories[c].lead_price_minor).budget_median_minor for c in categories]
        # Half the businesses take any deal size; the rest name a floor and a ceiling around their market.
        if g.random() < 0.5:
            min_deal, max_deal = 0, 10**12
        else:
            min_deal = int(min(medians) * g.uniform(0.0, 0.5))
            max_deal = int(max(medians) * g.uniform(2.5, 8.0))
        daily = int(g.integers(traits.daily_cap[0], traits.daily_cap[1] + 1))
        lo, hi = traits.reaction_minutes
        joins_at = s.start if i < s.businesses else s.start + timedelta(days=float(join_offsets[i - s.businesses]))
        market.businesses.append(
            BusinessAgent(
                index=i,
                mode=mode,
                categories=categories,
                regions=regions,
                min_deal_minor=min_deal,
                max_deal_minor=max_deal,
                daily_cap=daily,
                monthly_cap=daily * traits.monthly_cap_days,
                joins_at=joins_at,
                close_rate={
                    c: min(
                        0.95,
                        s.category(c, catalog.categories[c].lead_price_minor).close_rate
                        * g.uniform(*traits.close_rate_factor),
                    )
                    for c in categories
                },
                deal_size_factor=float(g.lognormal(0.0, 0.2)),
                claim_rate=float(g.uniform(*traits.claim_rate)),
                # Log-uniform: most businesses react within the hour, a few take most of the day.
                reaction_minutes=float(math.exp(g.uniform(math.log(lo), math.log(hi)))),
                return_habit=float(g.uniform(*traits.return_habit)),
                reports_lost=float(g.uniform(*traits.reports_lost)),
                reports_status=mode == "deal_maker" or g.random() < traits.lead_buyer_reports_share,
                exclusive_rate=float(g.uniform(*traits.exclusive_rate)) if mode == "lead_buyer" else 0.0,
                sells_per_day=traits.sold_inquiries_per_day,
            )
        )
    _assign_honesty(market)
    return market


def _assign_honesty(market: Market) -> None:
    """`dishonest_share` of all businesses cheat, split over the kinds by the mix (largest remainder, at
    least one of each kind with a weight when there are enough). Hiding deals and under-reporting turnover
    only pay for deal makers (lead buyers owe no commission), so those kinds are drawn among them."""
    s = market.scenario
    h = s.honesty
    count = round(h.dishonest_share * len(market.businesses))
    kinds = [k for k in DISHONEST_KINDS if h.mix.get(k, 0.0) > 0]
    if count <= 0 or not kinds:
        return
    weights = _weights([h.mix[k] for k in kinds])
    exact = weights * count
    per_kind = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - per_kind), kind="stable")[: count - int(per_kind.sum())]:
        per_kind[i] += 1
    if count >= len(kinds):
        for i in range(len(kinds)):
            if per_kind[i] == 0:
                per_kind[int(np.argmax(per_kind))] -= 1
                per_kind[i] = 1
    g = rng(s.seed, _HONESTY)
    order = [int(i) for i in g.permutation(len(market.businesses))]
    taken: set[int] = set()
    shares = {"hider": h.hide_share, "under_reporter": h.under_report_share, "returner": h.return_converted_share}
    for kind, n in zip(kinds, per_kind, strict=True):
        eligible = [
            i for i in order if i not in taken and (kind == "returner" or market.businesses[i].mode == "deal_maker")
        ]
        for i in eligible[: int(n)]:
            taken.add(i)
            business = market.businesses[i]
            business.kind = kind
            business.cheat_share = float(g.uniform(*shares[kind]))
            if kind == "under_reporter":
                business.under_report_factor = float(g.uniform(*h.under_report_factor))


def fits_profile(business: BusinessAgent, category: str, region: str, budget_minor: int) -> bool:
    """Whether the business's profile holds an inquiry, as the service matches one (offers/matching.py): one of its
    categories and regions, and a budget within its deal range or not stated (0)."""
    return (
        category in business.categories
        and region in business.regions
        and (budget_minor == 0 or business.min_deal_minor <= budget_minor <= business.max_deal_minor)
    )


def outside_profile(
    business: BusinessAgent, regions: tuple[str, ...], category: str, region: str, budget_minor: int
) -> tuple[str, int] | None:
    """The region and budget of an inquiry of `category` the business cannot serve, the service refusing the sale of
    one its profile holds (a 422): those drawn when they are already outside its profile (its categories leave
    others, the usual case); otherwise another region, else a budget beyond its deal range, chosen from the draw
    (no draw of their own: the day's other leads stay as the seed made them). None when it serves them all."""
    if not fits_profile(business, category, region, budget_minor):
        return region, budget_minor
    outside = [r for r in regions if r not in business.regions]
    if outside:
        return outside[regions.index(region) % len(outside)], budget_minor
    if business.max_deal_minor < MAX_AMOUNT_MINOR:
        return region, min(MAX_AMOUNT_MINOR, business.max_deal_minor + budget_minor)
    if business.min_deal_minor > 1:
        return region, business.min_deal_minor // 2
    return None


def leads_of_day(market: Market, day: int, first_index: int, first_customer: int) -> list[LeadPlan]:
    """The day's customer requests, arriving as a Poisson process shaped by the hourly profile, plus the
    inquiries businesses sell that day. Indexes continue from the previous day's."""
    s, catalog = market.scenario, market.catalog
    g = rng(s.seed, _DAY, day)
    day_start = s.start + timedelta(days=day)
    codes = list(catalog.categories)
    demand = _weights([s.category(c, catalog.categories[c].lead_price_minor).demand_weight or 1e-9 for c in codes])
    profile = _weights(list(s.customers.hourly_profile))
    arrivals: list[tuple[float, int | None]] = []
    for hour in range(24):
        n = int(g.poisson(s.leads_per_day * profile[hour]))
        arrivals += [(hour * 3600 + float(x), None) for x in np.sort(g.uniform(0, 3600, size=n))]
    # Sold inquiries: each present business sells with its daily rate, during its working hours.
    sell = rng(s.seed, _SELL, day)
    lo, hi = s.business.work_hours
    for b in market.businesses:
        if b.joins_at <= day_start and sell.random() < b.sells_per_day:
            arrivals.append((float(sell.uniform(lo * 3600, hi * 3600)), b.index))
    arrivals.sort(key=lambda a: (a[0], -1 if a[1] is None else a[1]))
    plans: list[LeadPlan] = []
    recent: list[LeadPlan] = []
    customer = first_customer
    for offset, seller in arrivals:
        at = day_start + timedelta(seconds=offset)
        index = first_index + len(plans)
        if seller is None and recent and g.random() < s.customers.duplicate_share:
            # The same customer sends the same request again (impatience, a second form).
            prior = recent[int(g.integers(0, len(recent)))]
            plans.append(
                LeadPlan(
                    index, at, prior.category, prior.region, prior.budget_minor, prior.customer, prior.junk,
                    repeats=prior.index, answers_survey=prior.answers_survey,
                )
            )
            continue
        if seller is None:
            category = codes[int(g.choice(len(codes), p=demand))]
        else:
            own = set(market.businesses[seller].categories)
            others = [c for c in codes if c not in own] or codes
            category = others[int(g.integers(0, len(others)))]
        median = s.category(category, catalog.categories[category].lead_price_minor).budget_median_minor
        budget = max(100, int(round(median * g.lognormal(0.0, s.customers.budget_sigma), -2)))
        region = catalog.regions[int(g.integers(0, len(catalog.regions)))]
        junk = bool(g.random() < s.customers.junk_share)
        answers_survey = bool(g.random() < s.customers.survey_response_rate)
        if seller is not None:
            sold = outside_profile(market.businesses[seller], catalog.regions, category, region, budget)
            if sold is None:  # it serves every inquiry it could be asked: none of its own to sell
                continue
            region, budget = sold
        plan = LeadPlan(
            index=index,
            at=at,
            category=category,
            region=region,
            budget_minor=budget,
            customer=customer,
            junk=junk,
            seller=seller,
            answers_survey=answers_survey,
        )
        customer += 1
        plans.append(plan)
        if seller is None:
            recent.append(plan)
    return plans


def claim_choice(scenario: Scenario, business: BusinessAgent, lead: int, exclusive_available: bool,
                 replacement: bool) -> tuple[bool, bool]:
    """Whether the business claims this offer, and exclusively (lead buyers, while a lead allows it)."""
    g = rng(scenario.seed, _CLAIM, business.index, lead)
    rate = max(business.claim_rate, 0.9) if replacement else business.claim_rate
    claim = bool(g.random() < rate)
    exclusive = business.mode == "lead_buyer" and exclusive_available and bool(g.random() < business.exclusive_rate)
    return claim, exclusive


def reaction_delay(scenario: Scenario, business: BusinessAgent, key: int) -> timedelta:
    """How long after a notification the business looks at its offers (exponential around its habit)."""
    g = rng(scenario.seed, _REACTION, business.index, key)
    return timedelta(minutes=float(g.exponential(business.reaction_minutes)) + 1.0)


def survey_delay(scenario: Scenario, lead: int, nth: int) -> timedelta:
    """How long after the service sent it the customer answers the lead's nth survey (exponential)."""
    hours = float(rng(scenario.seed, _SURVEY_ANSWER, lead, nth).exponential(scenario.customers.survey_answer_hours))
    return timedelta(hours=hours)


def deal_plan(scenario: Scenario, business: BusinessAgent, lead: LeadPlan) -> DealPlan:
    g = rng(scenario.seed, _DEAL, business.index, lead.index)
    traits = scenario.business
    close = business.close_rate.get(lead.category, 0.0)
    could_close = not lead.junk and bool(g.random() < close)
    turnover = lead.budget_minor * g.lognormal(0.0, scenario.customers.turnover_sigma) * business.deal_size_factor
    return DealPlan(
        could_close=could_close,
        turnover_minor=max(100, int(round(turnover, -2))),
        decision_after=timedelta(days=float(g.uniform(*traits.decision_days))),
        payment_after=timedelta(days=float(g.uniform(*traits.payment_days))),
        cheats=business.kind != HONEST and bool(g.random() < business.cheat_share),
        hide_with_lost=bool(g.random() < 0.5),
        returns_junk=bool(g.random() < business.return_habit),
        reports_lost=bool(g.random() < business.reports_lost),
        satisfaction=int(np.clip(round(g.normal(4.0 if could_close else 2.5, 0.8)), 1, 5)),
        survey_noise=float(g.normal(0.0, scenario.customers.survey_amount_noise)),
    )


def within_work_hours(scenario: Scenario, at: datetime) -> datetime:
    """The first moment at or after `at` inside the businesses' working hours (same every day)."""
    start, end = scenario.business.work_hours
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    if at < day + timedelta(hours=start):
        return day + timedelta(hours=start)
    if at >= day + timedelta(hours=end):
        return day + timedelta(days=1, hours=start)
    return at
