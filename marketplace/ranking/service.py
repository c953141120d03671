"""The profitability ranker behind the `Ranker` interface: keeps the in-memory core in step with the
database (the truth), learns estimates from history, and prices lead buyers by generalised second price.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.clock import utcnow
from marketplace.db.models import Business, BusinessCategory, BusinessRegion, Exposure, Lead, RankingModel
from marketplace.ids import new_id
from marketplace.ranking.core import LeadFactor, Profile, Ranking, RankingCore
from marketplace.ranking.model import Sample, train
from marketplace.ranking.ports import Candidate, LeadView, Ranked
from marketplace.ranking.scoring import CategoryPrior, History, Score, Terms, category_prior, gsp_price, score
from marketplace.settings import Settings

# Before any history, a category's close rate, return rate and the weight of its prior in pseudo-exposures.
DEFAULT_CLOSE_RATE = 0.2
DEFAULT_RETURN_RATE = 0.1
PRIOR_STRENGTH = 10.0


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

    # --- keeping the core in step --------------------------------------------------------------

    async def load(self, session: AsyncSession, now: datetime) -> int:
        """Build the core from the database (start-up); later changes go through `refresh`."""
        self.priors = await load_category_priors(session, self.settings)
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
        snapshots = await load_snapshots(session, self.settings, self.priors, business_ids, now)
        for snapshot in snapshots:
            self.core.upsert(snapshot.profile, snapshot.scores)
        found = {snapshot.profile.business_id for snapshot in snapshots}
        for missing in set(business_ids) - found:
            self.core.remove(missing)

    async def refresh_priors(self, session: AsyncSession) -> None:
        self.priors = await load_category_priors(session, self.settings)
        await self._load_model(session)

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
        wanted = {c.business_id for c in candidates}
        ranking = self.core.rank(lead.category, lead.region, lead.budget_minor, k=10**9, explore=False)
        picked = [i for i, b in enumerate(ranking.business_ids) if b in wanted]
        return self._ranked(lead, ranking, picked)

    def select(self, lead: LeadView, k: int, exclude: Iterable[str]) -> list[Ranked]:
        """The hot path: the top k matching businesses straight from the in-memory buckets."""
        ranking = self.core.rank(lead.category, lead.region, lead.budget_minor, k, exclude=exclude)
        return self._ranked(lead, ranking, list(range(len(ranking))))

    def _ranked(self, lead: LeadView, ranking: Ranking, indexes: list[int]) -> list[Ranked]:
        category = self.settings.categories[lead.category]
        prior = self.priors.get(lead.category)
        out = []
        for position, i in enumerate(indexes):
            parts = ranking.parts(i)
            p = parts.alpha / (parts.alpha + parts.beta)
            received = ranking.received(i)
            factors: dict[str, Any] = {"policy": self.name, "score": round(float(ranking.scores[i]), 4)}
            if ranking.buyer[i]:
                bid = round(parts.worth)
                next_score = float(ranking.scores[indexes[position + 1]]) if position + 1 < len(indexes) else None
                factors.update(
                    mode="lead_buyer",
                    price_or_bid_minor=bid,
                    p_not_returned=round(p, 6),
                    price_minor=gsp_price(
                        next_score,
                        p,
                        parts.reliability,
                        parts.bonus,
                        category.lead_price_minor,
                        max(bid, category.lead_price_minor),
                    ),
                )
            else:
                factors.update(
                    mode="deal_maker",
                    p_close_and_pay=round(p, 6),
                    commission_rate_bp=category.commission_rate_bp,
                    expected_turnover_minor=round(parts.worth * 10_000 / max(category.commission_rate_bp, 1)),
                )
            factors.update(
                sold_leads_bonus_minor=round(parts.bonus, 2),
                reliability=round(parts.reliability, 4),
                history_exposures=received,
                prior_weight=round(prior.strength / (received + prior.strength), 4) if prior else None,
                lead_factor=round(ranking.lead_factor(i), 4),
                explored=bool(ranking.explored[i]),
            )
            out.append(Ranked(ranking.business_ids[i], float(ranking.scores[i]), factors))
        return out


async def load_category_priors(session: AsyncSession, settings: Settings) -> dict[str, CategoryPrior]:
    rows = await session.execute(
        select(
            Lead.category,
            func.count(Exposure.id),
            func.sum(case((Exposure.status == "paid", 1), else_=0)),
            func.sum(case((Exposure.status == "paid", Exposure.turnover_minor), else_=0)),
            func.sum(case((Exposure.status == "returned", 1), else_=0)),
        )
        .join(Lead, Lead.id == Exposure.lead_id)
        .group_by(Lead.category)
    )
    stats = {r[0]: r[1:] for r in rows}
    budgets: dict[str, float] = dict(
        (await session.execute(select(Lead.category, func.avg(Lead.budget_minor)).group_by(Lead.category))).all()
    )
    priors = {}
    for code, category in settings.categories.items():
        typical_turnover = float(budgets.get(code) or category.lead_price_minor * 20)
        default = CategoryPrior(DEFAULT_CLOSE_RATE, typical_turnover, DEFAULT_RETURN_RATE, PRIOR_STRENGTH)
        received, paid, turnover, returned = (int(v or 0) for v in stats.get(code, (0, 0, 0, 0)))
        priors[code] = category_prior(received, paid, turnover, returned, default=default)
    return priors


async def load_snapshots(
    session: AsyncSession, settings: Settings, priors: dict[str, CategoryPrior], ids: Sequence[str], now: datetime
) -> list[_Snapshot]:
    businesses = list(await session.scalars(select(Business).where(Business.id.in_(ids))))
    if not businesses:
        return []
    bids = {
        (r.business_id, r.category): r.max_bid_minor
        for r in await session.scalars(select(BusinessCategory).where(BusinessCategory.business_id.in_(ids)))
    }
    regions: dict[str, list[str]] = defaultdict(list)
    for r in await session.scalars(select(BusinessRegion).where(BusinessRegion.business_id.in_(ids))):
        regions[r.business_id].append(r.region)
    history_rows = await session.execute(
        select(
            Exposure.business_id,
            Lead.category,
            func.count(Exposure.id),
            func.sum(case((Exposure.status == "paid", 1), else_=0)),
            func.sum(case((Exposure.status == "paid", Exposure.turnover_minor), else_=0)),
            func.sum(case((Exposure.status == "returned", 1), else_=0)),
        )
        .join(Lead, Lead.id == Exposure.lead_id)
        .where(Exposure.business_id.in_(ids))
        .group_by(Exposure.business_id, Lead.category)
    )
    history = {(r[0], r[1]): tuple(int(v or 0) for v in r[2:]) for r in history_rows}
    # What the marketplace earned from leads each business sold it: prices paid and commissions on them.
    sold_rows = await session.execute(
        select(
            Lead.seller_business_id,
            func.sum(Exposure.price_minor),
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
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    caps_rows = await session.execute(
        select(
            Exposure.business_id,
            func.sum(case((Exposure.created_at >= day, 1), else_=0)),
            func.sum(case((Exposure.created_at >= month, 1), else_=0)),
        )
        .where(Exposure.business_id.in_(ids), Exposure.created_at >= month)
        .group_by(Exposure.business_id)
    )
    caps = {r[0]: (int(r[1] or 0), int(r[2] or 0)) for r in caps_rows}
    snapshots = []
    for b in businesses:
        today, this_month = caps.get(b.id, (0, 0))
        active = b.status == "active" and today < b.daily_cap and this_month < b.monthly_cap
        categories = tuple(c for c in b.categories if c in settings.categories)
        profile = Profile(
            b.id, b.mode, categories, tuple(regions.get(b.id, ())), b.min_deal_minor, b.max_deal_minor, active
        )
        scores = {}
        for code in categories:
            category = settings.categories[code]
            received, paid, turnover, returned = history.get((b.id, code), (0, 0, 0, 0))
            terms = Terms(b.mode, category.lead_price_minor, category.commission_rate_bp, bids.get((b.id, code)))
            scores[code] = score(
                History(received, paid, turnover, returned, sold.get(b.id, 0)),
                priors[code],
                terms,
                reliability=b.reliability_bp / 10_000,
            )
        snapshots.append(_Snapshot(profile, scores))
    return snapshots


async def train_conversion_model(session: AsyncSession, settings: Settings) -> RankingModel | None:
    """Train the conversion model on deal makers' settled exposures and store its coefficients; every
    process's core picks them up on its next full refresh. None while the history is too thin."""
    priors = await load_category_priors(session, settings)
    result = await session.execute(
        select(
            Exposure.business_id,
            Exposure.status,
            Lead.category,
            Lead.budget_minor,
            Business.min_deal_minor,
            Business.max_deal_minor,
        )
        .join(Lead, Lead.id == Exposure.lead_id)
        .join(Business, Business.id == Exposure.business_id)
        .where(Exposure.mode == "deal_maker", Exposure.status.in_(("paid", "lost", "returned")))
        .order_by(Exposure.id)
        .limit(200_000)
    )
    rows = list(result)
    history = await session.execute(
        select(
            Exposure.business_id,
            Lead.category,
            func.count(Exposure.id),
            func.sum(case((Exposure.status == "paid", 1), else_=0)),
        )
        .join(Lead, Lead.id == Exposure.lead_id)
        .where(Exposure.mode == "deal_maker")
        .group_by(Exposure.business_id, Lead.category)
    )
    close_rate = {}
    for business_id, category, received, paid in history:
        prior = priors.get(category)
        if prior is not None:
            k = prior.strength
            close_rate[(business_id, category)] = (int(paid or 0) + k * prior.close_rate) / (int(received) + k)
    samples = [
        Sample(
            r.category,
            r.budget_minor,
            r.min_deal_minor,
            r.max_deal_minor,
            close_rate.get((r.business_id, r.category), DEFAULT_CLOSE_RATE),
            r.status == "paid",
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
