"""Matching: the active businesses whose profile fits a lead and whose caps are not reached."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, ColumnElement, Select, String, and_, bindparam, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.clock import day_start, month_start
from marketplace.db.models import Business, BusinessCategory, BusinessRegion, ClubMember, Exposure, Lead, Offer
from marketplace.ranking.ports import Candidate, LeadView


def fits_business(
    business: Business,
    categories: Iterable[str] | Select[Any] | None = None,
    regions: Iterable[str] | Select[Any] | None = None,
) -> ColumnElement[bool]:
    """A lead (Lead's columns) fits this business's profile: one of its categories and regions (its stored ones
    unless others are given, as a profile change has them before they are written), its currency, its deal range
    (a budget of 0 is "not stated" and fits every range), and not the lead it sold itself."""
    if categories is None:
        categories = select(BusinessCategory.category).where(BusinessCategory.business_id == business.id)
    if regions is None:
        regions = select(BusinessRegion.region).where(BusinessRegion.business_id == business.id)
    return and_(
        Lead.category.in_(categories),
        Lead.region.in_(regions),
        Lead.currency == business.currency,
        (Lead.budget_minor == 0) | Lead.budget_minor.between(business.min_deal_minor, business.max_deal_minor),
        (Lead.seller_business_id.is_(None)) | (Lead.seller_business_id != business.id),
        (Lead.club_id.is_(None))
        | exists().where(ClubMember.club_id == Lead.club_id, ClubMember.business_id == business.id),
    )


async def find_candidates(
    session: AsyncSession, lead: LeadView, seller_business_id: str | None, now: datetime, zone: ZoneInfo
) -> list[Candidate]:
    """Active businesses serving the lead's category and region, whose deal range holds the budget
    (a budget of 0 means "not stated" and fits every range), that were not offered this lead yet,
    are not its seller, and have not reached their daily or monthly cap of exposures (days and months of the
    marketplace's time zone; a lead it returned does not count)."""
    day, month = day_start(now, zone), month_start(now, zone)
    received_today = (
        select(func.count())
        .where(Exposure.business_id == Business.id, Exposure.created_at >= day, Exposure.returned_at.is_(None))
        .correlate(Business)
        .scalar_subquery()
    )
    received_month = (
        select(func.count())
        .where(Exposure.business_id == Business.id, Exposure.created_at >= month, Exposure.returned_at.is_(None))
        .correlate(Business)
        .scalar_subquery()
    )
    already_offered = select(Offer.business_id).where(Offer.lead_id == lead.id, Offer.status != "closed")
    query = (
        select(Business.id, Business.mode, Business.created_at, Business.last_offered_at)
        .join(
            BusinessCategory,
            and_(BusinessCategory.business_id == Business.id, BusinessCategory.category == lead.category),
        )
        .join(BusinessRegion, and_(BusinessRegion.business_id == Business.id, BusinessRegion.region == lead.region))
        .where(
            Business.status == "active",
            Business.currency == lead.currency,
            Business.id.not_in(already_offered),
            received_today < Business.daily_cap,
            received_month < Business.monthly_cap,
        )
    )
    if seller_business_id is not None:
        query = query.where(Business.id != seller_business_id)
    if lead.club_id is not None:  # a club's lead goes to its members only
        query = query.join(ClubMember, and_(ClubMember.business_id == Business.id, ClubMember.club_id == lead.club_id))
    if lead.budget_minor > 0:
        query = query.where(Business.min_deal_minor <= lead.budget_minor, Business.max_deal_minor >= lead.budget_minor)
    rows = (await session.execute(query)).all()
    return [
        Candidate(business_id=r.id, mode=r.mode, created_at=r.created_at, last_offered_at=r.last_offered_at)
        for r in rows
    ]


# A business's profile holds the bound lead's category, region and budget (a budget of 0 is not stated: any range).
FITS_THE_LEAD = (
    exists().where(BusinessCategory.business_id == Business.id, BusinessCategory.category == bindparam("category")),
    exists().where(BusinessRegion.business_id == Business.id, BusinessRegion.region == bindparam("region")),
    or_(
        bindparam("budget", type_=BigInteger) == 0,
        bindparam("budget", type_=BigInteger).between(Business.min_deal_minor, Business.max_deal_minor),
    ),
)


# The bound business's profile holds the bound lead (FITS_THE_LEAD, in the business's currency): asked of one business,
# a seller of an inquiry it could serve itself (leads.services).
_PROFILE_HOLDS = select(Business.id).where(
    Business.id == bindparam("business"), Business.currency == bindparam("currency"), *FITS_THE_LEAD
)


async def profile_fits(
    session: AsyncSession, business_id: str, category: str, region: str, budget_minor: int, currency: str
) -> bool:
    """Whether this business's profile holds a lead of this category, region and budget (in this currency), as
    matching reads a profile: one of its categories and regions, a budget within its deal range or not stated (0)."""
    found = await session.scalar(
        _PROFILE_HOLDS,
        {
            "business": business_id,
            "currency": currency,
            "category": category,
            "region": region,
            "budget": budget_minor,
        },
    )
    return found is not None


def _received_since(start: str) -> Any:
    """How many leads the business received since the bound moment, not counting those it returned (its caps)."""
    received = Exposure.__table__.alias(f"received_{start}")  # apart from the owed exposure the query reads
    return (
        select(func.count())
        .where(
            received.c.business_id == Business.id,
            received.c.created_at >= bindparam(start),
            received.c.returned_at.is_(None),
        )
        .correlate(Business)
        .scalar_subquery()
    )


# Below its daily and monthly caps (bound `day` and `month`: the local day's and month's first moments), as the
# database counts them: a wave's and a replacement's picks, whatever a process's ranking core last heard.
UNDER_CAPS = (_received_since("day") < Business.daily_cap, _received_since("month") < Business.monthly_cap)


# The deal maker owed a replacement the longest whom a new lead fits (profile, club, caps) and that holds no open
# replacement offer for it already, nor an open fraud alert holding it: built once, read by every first wave (the
# partial index holds only the debts).
# On PostgreSQL the debt's row is locked, and one a concurrent wave holds is skipped: two first waves at once offer
# two different debts, not the same one twice (and not none to the second).
_OWED = (
    select(Exposure.id, Exposure.business_id)
    .join(Business, Business.id == Exposure.business_id)
    .where(
        Exposure.replacement_owed_since.is_not(None),
        Exposure.replacement_owed_since >= bindparam("since"),
        # Not while an open fraud alert names its return as contradicted by the customer (fraud.services: held).
        Exposure.replacement_held_by.is_(None),
        ~exists().where(Offer.replaces_exposure_id == Exposure.id, Offer.status == "open"),
        Business.status == "active",
        Business.currency == bindparam("currency"),
        *FITS_THE_LEAD,
        Business.id != bindparam("seller"),
        or_(
            bindparam("club", type_=String) == None,  # noqa: E711 (a bound value compared in SQL)
            exists().where(ClubMember.club_id == bindparam("club"), ClubMember.business_id == Business.id),
        ),
        Business.id.not_in(select(Offer.business_id).where(Offer.lead_id == bindparam("lead_id"))),
        *UNDER_CAPS,
    )
    .order_by(Exposure.replacement_owed_since)
    .limit(1)
    .with_for_update(of=Exposure, skip_locked=True)
)


async def owed_replacement(
    session: AsyncSession, lead: LeadView, seller_business_id: str | None, now: datetime, zone: ZoneInfo,
    since: datetime,
) -> tuple[str, str] | None:
    """The returned exposure whose replacement this lead should be, and its business: the debt owed the longest (since
    `since`) of an active deal maker the lead fits. None when nobody is owed one."""
    row = (
        await session.execute(
            _OWED,
            {
                "since": since,
                "currency": lead.currency,
                "category": lead.category,
                "region": lead.region,
                "budget": lead.budget_minor,
                "seller": seller_business_id or "",
                "club": lead.club_id,
                "lead_id": lead.id,
                "day": day_start(now, zone),
                "month": month_start(now, zone),
            },
        )
    ).one_or_none()
    return None if row is None else (str(row.id), str(row.business_id))
