"""The profitability ranker behind the `Ranker` interface: keeps the in-memory core in step with the
database (the truth), learns estimates from history, and prices lead buyers by generalised second price.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.clock import day_start, local_date, month_start, utcnow
from marketplace.db.models import Business, BusinessCategory, BusinessRegion, Exposure, Lead, RankingModel
from marketplace.exposures.queries import CLOSED_BY_BLOCK, won_at_column
from marketplace.exposures.rules import UNDECIDED, UNPAID, WON
from marketplace.ids import new_id
from marketplace.money import BP_WHOLE
from marketplace.ranking.core import LeadFactor, Profile, Ranking, RankingCore, warm_up
from marketplace.ranking.events import Event, Exposed, Joined, Moved, business_ids
from marketplace.ranking.model import Sample, train
from marketplace.ranking.ports import Candidate, LeadView, Ranked
from marketplace.ranking.scoring import (
    WIN_CLASSES,
    CategoryPrior,
    History,
    Ratio,
    Score,
    Terms,
    category_prior,
    exact_value,
    expected_turnover,
    gsp_price,
    outcome,
    pay_rate,
    score,
    unpaid_weight,
)
from marketplace.settings import Settings
from marketplace.wallet.plan_versions import plan_in_force, rates_of

if TYPE_CHECKING:
    from marketplace.exposures.services import Before

# Before any history, a category's win rate (of decided deals), pay rate (of wins), return rate, and the
# weight of its prior in pseudo-exposures: a close rate of 0.25 x 0.8 = 0.2.
DEFAULT_WIN_RATE = 0.25
# A win's expected turnover is believed up to this multiple of the category's typical budget (scoring.CategoryPrior).
TURNOVER_CAP_MULTIPLE = 10.0
# A category's typical budget, its prior's turnover before any deal states one (typical_budget): over the category's
# latest served leads (its latest TYPICAL_BUDGET_LEADS claims), one vote per business that served them, the median
# budget of the leads it served; the median of the votes, at least TYPICAL_BUDGET_MIN_BUSINESSES of them, else the
# default (20 times its lead price). Anyone may post a lead with any budget, and a deal maker's claim is free: a
# business claiming its own absurd leads, however many, is one vote among the category's businesses, so neither a
# lead nobody took nor one business may move it.
TYPICAL_BUDGET_LEADS = 1000
TYPICAL_BUDGET_MIN_BUSINESSES = 5
TYPICAL_BUDGET_DEFAULT_LEAD_PRICES = 20
# A backstop where the votes are a handful of sign-ups (a quiet category): the typical budget is held within these
# multiples of the default. From the lead price itself (nobody pays more for a lead than its job is worth) to 2,000
# lead prices: the simulated market's categories ask 1.25 (plumbing) to 13.3 (renovation) times their default
# (config/scenarios/default.toml against config/categories.toml), so real markets stay well inside.
TYPICAL_BUDGET_FLOOR = 1 / TYPICAL_BUDGET_DEFAULT_LEAD_PRICES
TYPICAL_BUDGET_CEILING = 100.0
DEFAULT_PAY_RATE = 0.8
DEFAULT_RETURN_RATE = 0.1
PRIOR_STRENGTH = 10.0

# A business's history row per category: counts and the turnover of its wins, in this order.
RECEIVED, PAID, TURNOVER, RETURNED, OPEN_FRESH, WON_UNPAID, STATED = range(7)
ROW_WIDTH = STATED + 1
# Where each outcome class is counted (lost and silent deals are decided non-wins: received minus the rest).
SLOT = {"paid": PAID, "returned": RETURNED, "undecided": OPEN_FRESH, "won_unpaid": WON_UNPAID}


@dataclass
class _Snapshot:
    profile: Profile
    scores: dict[str, Score]


class ProfitabilityRanker:
    name = "profitability"

    def __init__(self, settings: Settings, *, explore_share: float = 0.1, seed: int = 0) -> None:
        self.settings = settings
        self.core = RankingCore(explore_share=explore_share, seed=seed)
        self.priors: dict[str, CategoryPrior] = {}
        self.rates: dict[str, int] = {}  # each category's commission rate under the plan in force
        self.sold_kept_bp = BP_WHOLE  # what the marketplace keeps of a sold lead's revenue under that plan
        self.standings: dict[str, Standing] = {}
        # Active businesses the core holds out for now because they reached a cap, and the local day the core counts
        # caps on: when a new day starts they are candidates again (turn_of_day), without a database read.
        self._capped: set[str] = set()
        self._day: date | None = None

    # --- keeping the core in step --------------------------------------------------------------

    async def load(self, session: AsyncSession, now: datetime) -> int:
        """Build the core from the database (start-up); later changes go through `refresh`."""
        warm_up()
        self.priors = await load_category_priors(session, self.settings)
        await self._load_plan(session)
        await self._load_model(session)
        ids = list(await session.scalars(select(Business.id)))
        for start in range(0, len(ids), 2000):
            await self.refresh(session, ids[start : start + 2000], now)
        self.core.compact()
        return len(ids)

    async def refresh(self, session: AsyncSession, business_ids: Sequence[str], now: datetime) -> None:
        """Reload these businesses (profile, caps, history, status) and update the core in place."""
        if not business_ids:
            return
        if not self.priors:
            self.priors = await load_category_priors(session, self.settings)
            await self._load_plan(session)
        standings = await load_standings(session, business_ids, now, self.settings.jurisdiction.zone)
        for business_id, standing in standings.items():
            self._put(business_id, standing)
        for missing in set(business_ids) - standings.keys():
            self.standings.pop(missing, None)
            self.core.remove(missing)

    def apply(self, events: Sequence[Event]) -> list[str]:
        """Update the core from events this process has just committed, without a database read. Returns
        the businesses it holds no standing for (or cannot tell about): those need a `refresh`."""
        if not self.priors:  # not built yet: nothing to update in place
            return business_ids(events)
        unknown: list[str] = []
        touched: dict[str, Standing] = {}

        def standing(business_id: str) -> Standing | None:
            found = self.standings.get(business_id)
            if found is None and business_id not in unknown:
                unknown.append(business_id)
            return found

        for event in events:
            if isinstance(event, Joined):
                touched[event.business_id] = Standing(
                    mode=event.mode,
                    status=event.status,
                    regions=event.regions,
                    min_deal_minor=event.min_deal_minor,
                    max_deal_minor=event.max_deal_minor,
                    daily_cap=event.daily_cap,
                    monthly_cap=event.monthly_cap,
                    reliability=event.reliability_bp / 10_000,
                    bids={c: None for c in event.categories},
                    history={},
                    won_at={},
                    sold_minor=0,
                    day=local_date(utcnow(), self.settings.jurisdiction.zone),
                    today=0,
                    this_month=0,
                )
                continue
            if event.category not in self.priors:
                unknown.append(event.business_id)
                continue
            s = standing(event.business_id)
            earned = 0
            if isinstance(event, Exposed):
                if s is not None:
                    s.expose(event, self.settings.jurisdiction.zone)
                    touched[event.business_id] = s
                earned = event.price_minor
            elif isinstance(event, Moved):
                if not event.moves_score:
                    continue
                if event.was is None or event.was == "silent":
                    # Not known what it left, or a stale deal: this core may still count it as undecided (stale
                    # marks reach it by a read). Read it back.
                    unknown.append(event.business_id)
                elif event.becomes == "returned" and event.claimed_at is None:
                    unknown.append(event.business_id)  # when it was claimed decides which cap it frees: read back
                elif s is not None:
                    s.move(event)
                    if event.becomes == "returned" and event.claimed_at is not None:
                        s.uncount_exposure(local_date(event.claimed_at, self.settings.jurisdiction.zone))
                    touched[event.business_id] = s
                earned = event.commission_minor - event.refunded_minor
            if event.seller_id and earned:
                seller = standing(event.seller_id)
                if seller is not None:
                    seller.sold_minor += earned
                    touched[event.seller_id] = seller
        for business_id, s in touched.items():
            if business_id not in unknown:
                self._put(business_id, s)
        return unknown

    def _put(self, business_id: str, standing: Standing) -> None:
        self.standings[business_id] = standing
        snapshot = lay_out(
            self.settings, self.priors, self.rates, business_id, standing, utcnow(), sold_kept_bp=self.sold_kept_bp
        )
        self.core.upsert(snapshot.profile, snapshot.scores)
        if standing.status == "active" and not snapshot.profile.active:
            self._capped.add(business_id)
        else:
            self._capped.discard(business_id)

    def turn_of_day(self, now: datetime) -> None:
        """Caps count per local day and month: once a new day has started, the businesses held out at a cap are
        candidates again, in this core at once (not at its next full refresh, minutes later: a wave sent as the day
        starts would pass them over). Their counts start again (Standing.start_day)."""
        today = local_date(now, self.settings.jurisdiction.zone)
        if today == self._day:
            return
        self._day = today
        # In the order of their ids (sign-up order), not the set's: at equal scores the core prefers the entry written
        # first, and a set of strings iterates in an order that changes from process to process (hash seeds), so the
        # same seeded simulation gave its ties to different businesses after each local midnight.
        for business_id in sorted(self._capped):
            standing = self.standings.get(business_id)
            if standing is None:
                self._capped.discard(business_id)
                continue
            if standing.day < today:
                standing.start_day(today)
                self._put(business_id, standing)

    async def refresh_priors(self, session: AsyncSession) -> None:
        self.priors = await load_category_priors(session, self.settings)
        await self._load_plan(session)
        await self._load_model(session)

    def inputs_of(self, business_id: str, category: str) -> dict[str, Any] | None:
        """What a score is worked out from, beside its factors, so that an operator can check it by hand: the
        business's record in the category (exposures received, decided, won, paid, returned, the turnover its wins
        state), what the leads it sold brought in and the share of it the marketplace keeps, and the category's
        prior it is shrunk toward (`strength` pseudo-exposures of it)."""
        standing = self.standings.get(business_id)
        if standing is None:
            return None
        prior = self.priors.get(category)
        h = standing.history_of(category, utcnow(), payment_term(self.settings))
        return {
            "received": h.received,
            "decided": h.decided,
            "undecided": h.undecided,
            "wins": h.wins,
            "paid_deals": h.paid_deals,
            "won_unpaid": h.won_unpaid,
            "returned": h.returned,
            "stated_turnover_minor": h.turnover_minor,
            "wins_with_turnover": h.turnover_known,
            "sold_revenue_minor": h.sold_revenue_minor,
            "sold_kept_bp": self.sold_kept_bp,
            "category_prior": _prior_out(prior),
        }

    def _turnover_capped(self, business_id: str, category: str, prior: CategoryPrior | None) -> bool:
        """Whether the turnover its wins state, shrunk toward the category's, is above what a win is believed to be
        worth at most (the prior's cap): its expected turnover is the cap, not what it reported."""
        standing = self.standings.get(business_id)
        if standing is None or prior is None:
            return False
        return expected_turnover(standing.history_of(category, utcnow(), payment_term(self.settings)), prior)[1]

    async def _load_plan(self, session: AsyncSession) -> None:
        """The commission plan in force: each category's rate, and the share of a sold lead's revenue its seller
        earns (the rest is what the marketplace earns of it: the sold-leads bonus)."""
        plan = await plan_in_force(session, self.settings)
        self.rates = rates_of(plan, self.settings)
        self.sold_kept_bp = BP_WHOLE - plan.recommender_share_bp()

    async def _load_model(self, session: AsyncSession) -> None:
        row = (
            await session.execute(select(RankingModel).order_by(RankingModel.trained_at.desc()).limit(1))
        ).scalar_one_or_none()
        if row is not None:
            c = row.coefficients
            self.core.lead_factor = LeadFactor(
                float(c.get("w_budget", 0.0)), float(c.get("w_fit", 0.0)), dict(c.get("mean_log_budget", {}))
            )

    # --- the Ranker interface ------------------------------------------------------------------

    def rank(self, lead: LeadView, candidates: Sequence[Candidate], now: datetime) -> list[Ranked]:
        """Order given candidates (the explanation endpoint): the core's ranking restricted to them."""
        self.turn_of_day(now)
        wanted = {c.business_id for c in candidates}
        ranking = self.core.rank(lead.category, lead.region, lead.budget_minor, k=10**9, explore=False)
        picked = [i for i, b in enumerate(ranking.business_ids) if b in wanted]
        # In the order the waves offer them: each wave_size in turn is a wave (the database path of a wave takes the
        # first wave_size of this list), priced against the first candidate after it.
        wave_size = self.settings.categories[lead.category].wave_size
        return self._ranked(lead, ranking, picked, wave_size, explain=True)

    def select(self, lead: LeadView, k: int, exclude: Iterable[str]) -> list[Ranked]:
        """The hot path: the top k matching businesses straight from the in-memory buckets."""
        self.turn_of_day(utcnow())
        exclude = set(exclude)
        ranking = self.core.rank(lead.category, lead.region, lead.budget_minor, k, exclude=exclude)
        after = None
        n = len(ranking)
        if any(ranking.buyer[i] and not ranking.explored[i] for i in range(n)):
            # The wave's lead buyers pay what keeps their places in it against whoever comes next: the best of the rest.
            wave = exclude | set(ranking.business_ids)
            rest = self.core.rank(lead.category, lead.region, lead.budget_minor, 1, exclude=wave, explore=False)
            after = (exact_score(rest, 0), rest.business_ids[0]) if len(rest) else None
        return self._ranked(lead, ranking, list(range(n)), max(n, 1), after=after)

    def offered(self, lead: LeadView, business_ids: Iterable[str]) -> None:
        """The wave offering the lead to these businesses committed: the core's newcomers among them had their turn."""
        self.core.offered(lead.category, lead.region, business_ids)

    def remaining(self, lead: LeadView, exclude: Iterable[str]) -> bool:
        """Whether any matching business is left besides these (a next wave would have someone to offer)."""
        return len(self.core.rank(lead.category, lead.region, lead.budget_minor, 1, exclude=exclude, explore=False)) > 0

    def _ranked(
        self,
        lead: LeadView,
        ranking: Ranking,
        indexes: list[int],
        wave_size: int,
        after: tuple[Ratio, str] | None = None,
        *,
        explain: bool = False,
    ) -> list[Ranked]:
        """The picks with their factors, in waves of `wave_size` places in turn. A place in a wave is one good (every
        offer of a wave is made at once, with one expiry, and a category's wave holds its max_exposures), so each lead
        buyer of a wave pays the least that keeps it in the wave: the second price against the best candidate outside
        it, the first the ranking takes next (the (k+1)-th, as a uniform-price auction of k places has it; an
        explored place is a random draw, not a competitor; after the last wave, `after`: the exact score of the best
        outside the picks), never below the list price nor above its bid. An explored place pays the list price.
        `explain`: for the ranking's explanation, not a wave (whose factors every offer stores): a deal maker's
        factors also say whether its expected turnover is the category's cap."""
        category = self.settings.categories[lead.category]
        rate = self.rates.get(lead.category, category.commission_rate_bp)
        prior = self.priors.get(lead.category)
        out = []
        for position, i in enumerate(indexes):
            parts = ranking.parts(i)
            p = mean = parts.alpha / (parts.alpha + parts.beta)
            explored = bool(ranking.explored[i])
            if explored:
                p = drawn_chance(float(ranking.scores[i]), parts, mean)
            received = ranking.received(i)
            factors: dict[str, Any] = {"policy": self.name, "score": round(float(ranking.scores[i]), 4)}
            price: int | None = None
            rival: str | None = None
            if ranking.buyer[i]:
                # The bid its score was made with (lay_out): the standing's, never below the list price.
                standing = self.standings.get(ranking.business_ids[i])
                lead_price = category.lead_price_minor
                bid = max(lead_price, (standing.bids.get(lead.category) if standing else None) or 0)
                next_score = None
                if not ranking.explored[i]:
                    outside = (position // wave_size + 1) * wave_size
                    beaten = next((j for j in indexes[outside:] if not ranking.explored[j]), None)
                    if beaten is not None:
                        next_score, rival = exact_score(ranking, beaten), ranking.business_ids[beaten]
                    elif after is not None:
                        next_score, rival = after
                price = gsp_price(
                    next_score, parts.alpha, parts.beta, reliability_bp(parts), parts.bonus, lead_price, bid
                )
                factors.update(
                    mode="lead_buyer", price_or_bid_minor=bid, p_not_returned=round(p, 6), price_minor=price
                )
                if explored:
                    factors["p_not_returned_mean"] = round(mean, 6)
            else:
                standing = self.standings.get(ranking.business_ids[i])
                paid = (
                    pay_rate(standing.history_of(lead.category, utcnow(), payment_term(self.settings)), prior)
                    if standing is not None and prior is not None
                    else 1.0
                )
                factors.update(
                    mode="deal_maker",
                    p_close_and_pay=round(p * paid, 6),
                    p_won=round(p, 6),
                    p_paid_if_won=round(paid, 6),
                    commission_rate_bp=rate,
                    expected_turnover_minor=round(parts.worth * 10_000 / max(rate, 1) / max(paid, 1e-9)),
                )
                if explored:
                    factors.update(p_close_and_pay_mean=round(mean * paid, 6), p_won_mean=round(mean, 6))
                if explain:
                    factors["turnover_capped"] = self._turnover_capped(ranking.business_ids[i], lead.category, prior)
            factors.update(
                sold_leads_bonus_minor=round(parts.bonus),
                reliability=round(parts.reliability, 4),
                history_exposures=received,
                prior_weight=round(prior.strength / (received + prior.strength), 4) if prior else None,
                lead_factor=round(ranking.lead_factor(i), 4),
                explored=explored,
            )
            out.append(Ranked(ranking.business_ids[i], float(ranking.scores[i]), factors, price, rival))
        return out


def _prior_out(prior: CategoryPrior | None) -> dict[str, Any] | None:
    if prior is None:
        return None
    cap = None if math.isinf(prior.turnover_cap_minor) else round(prior.turnover_cap_minor)
    return {
        "win_rate": round(prior.win_rate, 6),
        "pay_rate": round(prior.pay_rate, 6),
        "mean_turnover_minor": round(prior.mean_turnover_minor),
        "turnover_cap_minor": cap,
        "return_rate": round(prior.return_rate, 6),
        "strength": prior.strength,
    }


def exact_score(ranking: Ranking, j: int) -> Ratio:
    """The score of a ranking's place j, exactly, for a second price: from its parts (scoring.exact_value) when the
    ranking compared its base score as it is (every lead buyer; a deal maker without a per-lead factor), else the
    float score the ranking compared, as the rational it is."""
    parts = ranking.parts(j)
    value = float(ranking.scores[j])
    if value != parts.value:
        return value.as_integer_ratio()
    return exact_value(parts.alpha, parts.beta, parts.worth, parts.bonus, reliability_bp(parts))


def drawn_chance(value: float, parts: Score, mean: float) -> float:
    """The probability an explored place's Thompson draw took (of a win for a deal maker, of keeping the lead for a
    lead buyer), from the score it gave: value = reliability x (draw x worth + bonus), so its factors multiply out to
    its score (a newcomer explored next is drawn at its mean). Where the probability weighs nothing in the score (no
    worth, no reliability), the mean."""
    if parts.worth <= 0 or parts.reliability <= 0:
        return mean
    return min(max((value / parts.reliability - parts.bonus) / parts.worth, 0.0), 1.0)


def reliability_bp(parts: Score) -> int:
    """A score's reliability as the integer basis points it came from (Business.reliability_bp / 10,000, see
    `load_standings`): the float is within 1e-12 of a whole number of basis points, so rounding gives them back."""
    return round(parts.reliability * BP_WHOLE)


# --- events from what a request committed (the pure event types are in ranking/events.py) ------------


def joined(business: Business) -> Joined:
    return Joined(
        business.id,
        business.mode,
        business.status,
        tuple(business.categories),
        tuple(business.regions),
        business.min_deal_minor,
        business.max_deal_minor,
        business.daily_cap,
        business.monthly_cap,
        business.reliability_bp if business.reliability_bp is not None else 10_000,
    )


def exposed(exposure: Exposure, lead: Lead) -> Exposed:
    return Exposed(
        exposure.business_id, lead.category, exposure.created_at, exposure.price_minor or 0, lead.seller_business_id
    )


def payment_term(settings: Settings) -> timedelta:
    """How long a win may stay unpaid before it counts as a whole failure to pay: the fraud module's rule."""
    return timedelta(days=settings.fraud.unpaid_days)


class EventLead(Protocol):
    """What a ranking event reads of the lead: a Lead, or a row with these of its columns."""

    category: str
    seller_business_id: str | None


def moved(exposure: Exposure, lead: Lead | EventLead, before: Before | None = None) -> Moved:
    """The event of a committed status move, from the deal as it stood `before` (None: not known, so the
    business is read back)."""
    turnover = exposure.turnover_minor
    commission = (
        (turnover or 0) * (exposure.commission_rate_bp or 0) // 10_000
        if exposure.status == "paid" and exposure.mode == "deal_maker"
        else 0
    )
    refunded = (exposure.price_minor or 0) if exposure.status == "returned" else 0
    return Moved(
        exposure.business_id,
        lead.category,
        exposure.status,
        turnover,
        lead.seller_business_id,
        commission,
        refunded,
        None if before is None else outcome(before.status, stale=before.stale),
        None if before is None else before.turnover_minor,
        exposure.id,
        exposure.status_changed_at,
        exposure.created_at,
    )


def history_columns() -> list[ColumnElement[Any]]:
    """Aggregates of exposures into a history row (RECEIVED, PAID, TURNOVER, ...), as `scoring.outcome` classes
    them. Every read of a history leaves out the deals a block closed (CLOSED_BY_BLOCK): the block's doing, not a
    loss the business reported, so one let back in ranks as its own reports have it."""
    win = Exposure.status.in_(WON)
    stated = and_(win, Exposure.turnover_minor.is_not(None))

    def count(condition: ColumnElement[bool]) -> ColumnElement[Any]:
        return func.sum(case((condition, 1), else_=0))

    return [
        func.count(Exposure.id),
        count(Exposure.status == "paid"),
        func.sum(case((stated, Exposure.turnover_minor), else_=0)),
        count(Exposure.status == "returned"),
        count(and_(Exposure.status.in_(UNDECIDED), Exposure.stale.is_(False))),
        count(Exposure.status.in_(UNPAID)),
        count(stated),
    ]


def history(row: Sequence[int], sold_minor: int = 0, weight: float = 0.0) -> History:
    return History(
        received=row[RECEIVED],
        paid_deals=row[PAID],
        turnover_minor=row[TURNOVER],
        returned=row[RETURNED],
        sold_revenue_minor=sold_minor,
        undecided=row[OPEN_FRESH],
        won_unpaid=row[WON_UNPAID],
        unpaid_weight=weight,
        stated=row[STATED],
    )


async def load_category_priors(session: AsyncSession, settings: Settings) -> dict[str, CategoryPrior]:
    """Each category's prior: win, pay and turnover figures from its deal makers' deals, the return rate from its
    lead buyers' (lead buyers need not report a status, so their deals would read as silent failures)."""
    now, term = utcnow(), payment_term(settings)
    rows = await session.execute(
        select(Lead.category, Exposure.mode, *history_columns())
        .join(Lead, Lead.id == Exposure.lead_id)
        .where(Exposure.id.not_in(CLOSED_BY_BLOCK))
        .group_by(Lead.category, Exposure.mode)
    )
    stats = {(r[0], r[1]): [int(v or 0) for v in r[2:]] for r in rows}
    won_at: dict[str, list[datetime]] = defaultdict(list)
    for category, at in await session.execute(
        select(Lead.category, won_at_column())
        .join(Lead, Lead.id == Exposure.lead_id)
        .where(Exposure.mode == "deal_maker", Exposure.status.in_(UNPAID))
    ):
        won_at[category].append(at)
    priors = {}
    empty = [0] * ROW_WIDTH
    for code, category in settings.categories.items():
        typical_turnover = await typical_budget(session, code, category.lead_price_minor)
        default = CategoryPrior(
            DEFAULT_WIN_RATE,
            typical_turnover,
            DEFAULT_RETURN_RATE,
            PRIOR_STRENGTH,
            DEFAULT_PAY_RATE,
            TURNOVER_CAP_MULTIPLE * typical_turnover,
        )
        makers = history(stats.get((code, "deal_maker"), empty), weight=unpaid_weight(won_at[code], now, term))
        buyers = history(stats.get((code, "lead_buyer"), empty))
        priors[code] = category_prior(makers, default=default, returns=buyers)
    return priors


async def typical_budget(session: AsyncSession, category: str, lead_price_minor: int) -> float:
    """The category's typical budget: over its latest served leads (TYPICAL_BUDGET_LEADS claims, a return or a
    block's closing left out), each business that served them votes the median budget of those it served, and the
    median of the votes (the lower middle one: a tie is no majority) is it, held within TYPICAL_BUDGET_FLOOR and
    TYPICAL_BUDGET_CEILING times the default; the default (TYPICAL_BUDGET_DEFAULT_LEAD_PRICES lead prices) while fewer
    than TYPICAL_BUDGET_MIN_BUSINESSES businesses vote. A median over leads let one deal maker move it for free (a
    tester: six anonymous leads of 10^15 it claimed itself took the prior from 240,000 to 10^15, a newcomer's score
    from 9,600 to 5.1e13, and lead buyers out of the category's offers); the mean of every lead posted before it, three
    anonymous leads that nobody took. A blocked business does not vote."""
    default = float(lead_price_minor * TYPICAL_BUDGET_DEFAULT_LEAD_PRICES)
    served: dict[str, list[int]] = defaultdict(list)
    for business_id, budget in await session.execute(
        select(Exposure.business_id, Lead.budget_minor)
        .join(Lead, Lead.id == Exposure.lead_id)
        .where(
            Lead.category == category,
            Lead.budget_minor > 0,
            Exposure.status != "returned",
            Exposure.id.not_in(CLOSED_BY_BLOCK),
            Exposure.business_id.not_in(select(Business.id).where(Business.status == "blocked")),
        )
        .order_by(Exposure.created_at.desc(), Exposure.id.desc())
        .limit(TYPICAL_BUDGET_LEADS)
    ):
        served[business_id].append(budget)
    if len(served) < TYPICAL_BUDGET_MIN_BUSINESSES:
        return default
    typical = float(statistics.median_low([statistics.median(budgets) for budgets in served.values()]))
    return min(max(typical, TYPICAL_BUDGET_FLOOR * default), TYPICAL_BUDGET_CEILING * default)


@dataclass
class Standing:
    """What a business's scores are computed from: kept beside the core, so that an event this process
    committed (a claim, a paid deal, a return) updates them without reading the database back."""

    mode: str
    status: str
    regions: tuple[str, ...]
    min_deal_minor: int
    max_deal_minor: int
    daily_cap: int
    monthly_cap: int
    reliability: float
    bids: dict[str, int | None]  # per category it serves: its highest bid (None: the list price)
    history: dict[str, list[int]]  # category -> its history row (RECEIVED, PAID, TURNOVER, ...)
    won_at: dict[str, dict[str, datetime]]  # category -> its unpaid wins: exposure id -> when it was won
    sold_minor: int  # what the leads this business sold brought in, its own share of it included
    day: date  # the local day `today` counts exposures of
    today: int
    this_month: int

    def history_of(self, category: str, now: datetime, term: timedelta) -> History:
        weight = unpaid_weight(self.won_at.get(category, {}).values(), now, term)
        return history(self.history.get(category, [0] * ROW_WIDTH), self.sold_minor, weight)

    def expose(self, event: Exposed, zone: ZoneInfo) -> None:
        """It took a lead: one more exposure received, undecided, counted against its caps."""
        row = self.history.setdefault(event.category, [0] * ROW_WIDTH)
        row[RECEIVED] += 1
        row[OPEN_FRESH] += 1
        self.count_exposure(local_date(event.at, zone))

    def move(self, event: Moved) -> None:
        """A deal moved from the class `event.was` (known, and as this standing counts it) to another."""
        row = self.history.setdefault(event.category, [0] * ROW_WIDTH)
        if event.was in SLOT:
            row[SLOT[event.was]] -= 1
        if event.was in WIN_CLASSES and event.was_turnover_minor is not None:
            row[TURNOVER] -= event.was_turnover_minor
            row[STATED] -= 1
        if event.becomes in SLOT:
            row[SLOT[event.becomes]] += 1
        if event.becomes in WIN_CLASSES and event.turnover_minor is not None:
            row[TURNOVER] += event.turnover_minor
            row[STATED] += 1
        if event.was == "won_unpaid" and event.becomes != "won_unpaid":
            unpaid = self.won_at.get(event.category, {})
            unpaid.pop(event.exposure_id, None)
            if not unpaid:
                self.won_at.pop(event.category, None)
        elif event.becomes == "won_unpaid" and event.was != "won_unpaid" and event.at is not None:
            self.won_at.setdefault(event.category, {})[event.exposure_id] = event.at

    def uncount_exposure(self, on: date) -> None:
        """A lead claimed on the local date `on` was returned: it no longer counts against the caps."""
        if on == self.day:
            self.today = max(0, self.today - 1)
        if (on.year, on.month) == (self.day.year, self.day.month):
            self.this_month = max(0, self.this_month - 1)

    def count_exposure(self, on: date) -> None:
        """One more exposure on the local date `on`: the day's count starts again on a new day, the month's
        on a new month."""
        if on != self.day:
            self.start_day(on)
        self.today += 1
        self.this_month += 1

    def start_day(self, on: date) -> None:
        """The counts of a new local day: the day's from zero, the month's too on a new month."""
        if (on.year, on.month) != (self.day.year, self.day.month):
            self.this_month = 0
        self.day, self.today = on, 0


def lay_out(
    settings: Settings,
    priors: dict[str, CategoryPrior],
    rates: dict[str, int],
    business_id: str,
    s: Standing,
    now: datetime,
    *,
    sold_kept_bp: int = BP_WHOLE,
) -> _Snapshot:
    """The core's view of a standing: its profile (active only below its caps) and a score per category."""
    active = s.status == "active" and s.today < s.daily_cap and s.this_month < s.monthly_cap
    categories = tuple(c for c in s.bids if c in settings.categories)
    profile = Profile(business_id, s.mode, categories, s.regions, s.min_deal_minor, s.max_deal_minor, active)
    scores = {}
    for code in categories:
        category = settings.categories[code]
        rate = rates.get(code, category.commission_rate_bp)
        terms = Terms(s.mode, category.lead_price_minor, rate, s.bids.get(code), sold_kept_bp)
        history = s.history_of(code, now, payment_term(settings))
        scores[code] = score(history, priors[code], terms, reliability=s.reliability)
    return _Snapshot(profile, scores)


async def load_standings(
    session: AsyncSession, ids: Sequence[str], now: datetime, zone: ZoneInfo
) -> dict[str, Standing]:
    """These businesses' standings from the database, in seven statements whatever their number."""
    businesses = list(await session.scalars(select(Business).where(Business.id.in_(ids))))
    if not businesses:
        return {}
    bids: dict[str, dict[str, int | None]] = defaultdict(dict)
    for business_id, code, bid in await session.execute(
        select(BusinessCategory.business_id, BusinessCategory.category, BusinessCategory.max_bid_minor)
        .where(BusinessCategory.business_id.in_(ids))
        .order_by(BusinessCategory.business_id, BusinessCategory.category)
    ):
        bids[business_id][code] = bid
    regions: dict[str, list[str]] = defaultdict(list)
    for business_id, region in await session.execute(
        select(BusinessRegion.business_id, BusinessRegion.region)
        .where(BusinessRegion.business_id.in_(ids))
        .order_by(BusinessRegion.business_id, BusinessRegion.region)
    ):
        regions[business_id].append(region)
    history_rows = await session.execute(
        select(Exposure.business_id, Lead.category, *history_columns())
        .join(Lead, Lead.id == Exposure.lead_id)
        .where(Exposure.business_id.in_(ids), Exposure.id.not_in(CLOSED_BY_BLOCK))
        .group_by(Exposure.business_id, Lead.category)
    )
    rows: dict[str, dict[str, list[int]]] = defaultdict(dict)
    for r in history_rows:
        rows[r[0]][r[1]] = [int(v or 0) for v in r[2:]]
    won_at: dict[str, dict[str, dict[str, datetime]]] = defaultdict(dict)
    for business_id, category, exposure_id, at in await session.execute(
        select(Exposure.business_id, Lead.category, Exposure.id, won_at_column())
        .join(Lead, Lead.id == Exposure.lead_id)
        .where(Exposure.business_id.in_(ids), Exposure.status.in_(UNPAID))
    ):
        won_at[business_id].setdefault(category, {})[exposure_id] = at
    # What the leads each business sold brought in: prices paid (not those refunded on a
    # return) and commissions on them.
    sold_rows = await session.execute(
        select(
            Lead.seller_business_id,
            func.sum(case((Exposure.status == "returned", 0), else_=Exposure.price_minor)),
            func.sum(
                case(
                    (
                        and_(Exposure.status == "paid", Exposure.mode == "deal_maker"),
                        Exposure.turnover_minor * Exposure.commission_rate_bp / 10_000,
                    ),
                    else_=0,
                )
            ),
        )
        .join(Lead, Lead.id == Exposure.lead_id)
        .where(Lead.seller_business_id.in_(ids))
        .group_by(Lead.seller_business_id)
    )
    sold = {r[0]: int((r[1] or 0) + (r[2] or 0)) for r in sold_rows}
    day, month = day_start(now, zone), month_start(now, zone)
    caps_rows = await session.execute(
        select(
            Exposure.business_id,
            func.sum(case((Exposure.created_at >= day, 1), else_=0)),
            func.sum(case((Exposure.created_at >= month, 1), else_=0)),
        )
        .where(Exposure.business_id.in_(ids), Exposure.created_at >= month, Exposure.returned_at.is_(None))
        .group_by(Exposure.business_id)
    )
    caps = {r[0]: (int(r[1] or 0), int(r[2] or 0)) for r in caps_rows}
    standings = {}
    for b in businesses:
        today, this_month = caps.get(b.id, (0, 0))
        standings[b.id] = Standing(
            mode=b.mode,
            status=b.status,
            regions=tuple(regions.get(b.id, ())),
            min_deal_minor=b.min_deal_minor,
            max_deal_minor=b.max_deal_minor,
            daily_cap=b.daily_cap,
            monthly_cap=b.monthly_cap,
            reliability=b.reliability_bp / 10_000,
            bids=dict(bids.get(b.id, {})),
            history=rows.get(b.id, {}),
            won_at=won_at.get(b.id, {}),
            sold_minor=sold.get(b.id, 0),
            day=local_date(now, zone),
            today=today,
            this_month=this_month,
        )
    return standings


async def load_snapshots(
    session: AsyncSession, settings: Settings, priors: dict[str, CategoryPrior], ids: Sequence[str], now: datetime
) -> list[_Snapshot]:
    standings = await load_standings(session, ids, now, settings.jurisdiction.zone)
    plan = await plan_in_force(session, settings)
    rates, kept = rates_of(plan, settings), BP_WHOLE - plan.recommender_share_bp()
    return [lay_out(settings, priors, rates, b, s, now, sold_kept_bp=kept) for b, s in standings.items()]


async def train_conversion_model(session: AsyncSession, settings: Settings) -> RankingModel | None:
    """Train the conversion model on deal makers' decided exposures (won or not: the factor it gives scales
    P(won)) and store its coefficients; every process's core picks them up on its next full refresh. None while
    the history is too thin."""
    priors = await load_category_priors(session, settings)
    won = Exposure.status.in_(WON)
    decided = or_(
        won,
        Exposure.status.in_(("lost", "returned")),
        and_(Exposure.status.in_(UNDECIDED), Exposure.stale.is_(True)),
    )
    result = await session.execute(
        select(
            Exposure.business_id,
            won.label("won"),
            Lead.category,
            Lead.budget_minor,
            Business.min_deal_minor,
            Business.max_deal_minor,
        )
        .join(Lead, Lead.id == Exposure.lead_id)
        .join(Business, Business.id == Exposure.business_id)
        .where(Exposure.mode == "deal_maker", decided, Exposure.id.not_in(CLOSED_BY_BLOCK))
        .order_by(Exposure.id)
        .limit(200_000)
    )
    rows = list(result)
    history_rows = await session.execute(
        select(Exposure.business_id, Lead.category, *history_columns())
        .join(Lead, Lead.id == Exposure.lead_id)
        .where(Exposure.mode == "deal_maker", Exposure.id.not_in(CLOSED_BY_BLOCK))
        .group_by(Exposure.business_id, Lead.category)
    )
    win_rate = {}
    for r in history_rows:
        prior = priors.get(r[1])
        if prior is not None:
            h = history([int(v or 0) for v in r[2:]])
            k = prior.strength
            win_rate[(r[0], r[1])] = (h.wins + k * prior.win_rate) / (h.decided + k)
    samples = [
        Sample(
            r.category,
            r.budget_minor,
            r.min_deal_minor,
            r.max_deal_minor,
            win_rate.get((r.business_id, r.category), DEFAULT_WIN_RATE),
            bool(r.won),
        )
        for r in rows
    ]
    trained = train(samples)
    if trained is None:
        return None
    row = RankingModel(
        id=new_id("rmod"),
        trained_at=utcnow(),
        coefficients=trained.coefficients.to_json(),
        metrics={"samples": trained.samples, "positive_rate": trained.positive_rate, "auc": trained.auc},
    )
    session.add(row)
    await session.flush()
    return row
