"""Policy replay: estimate what another ranking policy would have earned on the recorded history of leads,
before it goes live (offline evaluation with the direct method).

For every recorded lead, each policy orders the businesses that match it; the reward model (the learned
profitability estimates: expected marketplace revenue per exposure) values the first `max_exposures` of
that order. The same estimate of the logged order, set beside the revenue the lead really brought,
shows how far the reward model can be trusted. Only on leads whose outcomes are in, though: the reward model
estimates what a lead will earn, the revenue recorded is what it has earned so far, and a deal is decided (or
goes stale) within `stale_days` and paid within `unpaid_days` after that. The report counts the leads younger
than that.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.clock import utcnow
from marketplace.db.models import Business, BusinessCategory, BusinessRegion, ClubMember, Exposure, Lead, Offer
from marketplace.ranking.ports import Candidate, LeadView, Ranker
from marketplace.ranking.service import load_category_priors, load_snapshots
from marketplace.settings import Settings


@dataclass
class PolicyValue:
    policy: str
    leads: int = 0
    estimated_revenue_minor: float = 0.0

    @property
    def per_lead(self) -> float:
        return self.estimated_revenue_minor / self.leads if self.leads else 0.0


@dataclass
class ReplayReport:
    leads: int
    logged_actual_per_lead: float
    logged_estimated_per_lead: float
    policies: list[PolicyValue] = field(default_factory=list)
    maturing: int = 0  # leads whose deals may still be decided or paid: their recorded revenue is not all in
    maturing_days: int = 0


async def replay(
    session: AsyncSession, settings: Settings, policies: dict[str, Ranker], limit: int = 5000
) -> ReplayReport:
    now = utcnow()
    priors = await load_category_priors(session, settings)
    ids = list(await session.scalars(select(Business.id)))
    reward: dict[tuple[str, str], float] = {}
    matching: dict[tuple[str, str], list[Candidate]] = defaultdict(list)
    ranges: dict[str, tuple[int, int]] = {}
    for start in range(0, len(ids), 2000):
        for snap in await load_snapshots(session, settings, priors, ids[start : start + 2000], now):
            for category, score in snap.scores.items():
                reward[(snap.profile.business_id, category)] = score.value
            ranges[snap.profile.business_id] = (snap.profile.min_deal_minor, snap.profile.max_deal_minor)
    businesses = {b.id: b for b in await session.scalars(select(Business).where(Business.status == "active"))}
    regions = defaultdict(list)
    for r in await session.scalars(select(BusinessRegion)):
        regions[r.business_id].append(r.region)
    for c in await session.scalars(select(BusinessCategory)):
        b = businesses.get(c.business_id)
        if b is None:
            continue
        for region in regions[b.id]:
            matching[(c.category, region)].append(Candidate(b.id, b.mode, b.created_at, b.last_offered_at))
    leads = list(
        await session.scalars(
            select(Lead).where(Lead.id.in_(select(Offer.lead_id))).order_by(Lead.created_at).limit(limit)
        )
    )
    earned = dict(
        (
            await session.execute(
                select(
                    Exposure.lead_id,
                    func.sum(Exposure.price_minor)
                    + func.sum(
                        case(
                            (Exposure.status == "paid", Exposure.turnover_minor * Exposure.commission_rate_bp / 10_000),
                            else_=0,
                        )
                    ),
                ).group_by(Exposure.lead_id)
            )
        ).all()
    )
    members: dict[str, set[str]] = defaultdict(set)  # a club's lead goes to its members only
    for club_id, business_id in await session.execute(select(ClubMember.club_id, ClubMember.business_id)):
        members[club_id].add(business_id)
    logged_order: dict[str, list[str]] = defaultdict(list)
    for lead_id, business_id in await session.execute(
        select(Offer.lead_id, Offer.business_id).order_by(Offer.lead_id, Offer.wave, Offer.rank)
    ):
        logged_order[lead_id].append(business_id)
    values = {name: PolicyValue(name) for name in policies}
    actual = estimated_logged = 0.0
    for lead in leads:
        n = settings.categories[lead.category].max_exposures
        candidates = [
            c
            for c in matching.get((lead.category, lead.region), [])
            if c.business_id != lead.seller_business_id
            and _fits(ranges.get(c.business_id), lead.budget_minor)
            and (lead.club_id is None or c.business_id in members[lead.club_id])
        ]
        view = LeadView(
            lead.id, lead.category, lead.region, lead.budget_minor, lead.currency, lead.created_at, lead.club_id
        )
        actual += float(earned.get(lead.id) or 0)
        estimated_logged += sum(reward.get((b, lead.category), 0.0) for b in logged_order[lead.id][:n])
        for name, policy in policies.items():
            order = policy.rank(view, candidates, lead.created_at)
            values[name].leads += 1
            values[name].estimated_revenue_minor += sum(
                reward.get((r.business_id, lead.category), 0.0) for r in order[:n]
            )
    count = len(leads)
    horizon = timedelta(days=settings.windows.stale_days + settings.fraud.unpaid_days)
    return ReplayReport(
        leads=count,
        logged_actual_per_lead=actual / count if count else 0.0,
        logged_estimated_per_lead=estimated_logged / count if count else 0.0,
        policies=list(values.values()),
        maturing=sum(1 for lead in leads if lead.created_at > now - horizon),
        maturing_days=horizon.days,
    )


def _fits(deal_range: tuple[int, int] | None, budget: int) -> bool:
    if deal_range is None:
        return False
    return budget <= 0 or deal_range[0] <= budget <= deal_range[1]


def format_report(report: ReplayReport, currency: str, as_of: datetime | None = None) -> str:
    lines = [
        f"Replayed {report.leads} recorded leads (amounts per lead, {currency} minor units)",
        f"  logged policy, actual revenue:     {report.logged_actual_per_lead:12.0f}",
        f"  logged policy, estimated revenue:  {report.logged_estimated_per_lead:12.0f}",
    ]
    if report.maturing:
        lines.insert(
            1,
            f"  ({report.maturing} of them younger than {report.maturing_days} days: their deals may still be decided "
            "or paid, so their actual revenue is not all in)",
        )
    for value in report.policies:
        lines.append(f"  {value.policy:<14} estimated revenue: {value.per_lead:12.0f}")
    return "\n".join(lines)
