"""What the offer routes read: a business's open offers, a lead's offers, how the ranking orders its candidates.

The commands live beside it: waves.py makes offers, claims.py turns one into an exposure, closing.py takes offers
and leads off the market. Services never commit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from sqlalchemy import bindparam, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.clock import utcnow
from marketplace.db.models import Business, ClubMember, Exposure, Lead, Offer
from marketplace.db.statements import table
from marketplace.identity.services import Principal
from marketplace.leads.services import LeadColumns, summary
from marketplace.offers import schemas
from marketplace.offers.waves import rank_lead, takes_waves
from marketplace.pagination import check_cursor
from marketplace.ranking.ports import Ranker
from marketplace.schemas import MoneyOut
from marketplace.settings import Settings
from marketplace.wallet.credit import over_credit_limit
from marketplace.wallet.plan_versions import rates_in_force

_LEADS, _OFFERS, _EXPOSURES = table(Lead), table(Offer), table(Exposure)
_leads, _offers = _LEADS.c, _OFFERS.c
_members = table(ClubMember).c


# A business's open offers, newest first (what it reads each time it is told of one): built once, with and
# without the cursor. The busiest read of a market, so a Core read of the columns an offer shows, one flat row
# each (the lead's own columns under their names, so the row reads as the lead's summary too), no ORM objects.
_OPEN_OFFERS = (
    select(
        _offers.id.label("offer_id"), _offers.wave, _offers.rank, _offers.price_minor, _offers.expires_at,
        _offers.replaces_exposure_id, _leads.id, _leads.category, _leads.region, _leads.description,
        _leads.budget_minor, _leads.currency, _leads.status, _leads.created_at, _leads.exposure_count, _leads.club_id,
        # Nobody has seen the contact, now or before a return: the lead may still be bought exclusively.
        ~exists().where(_EXPOSURES.c.lead_id == _leads.id).label("unseen"),
    )
    .join(_LEADS, _leads.id == _offers.lead_id)
    .where(
        _offers.business_id == bindparam("business_id"),
        _offers.status == "open",
        _offers.expires_at > bindparam("now"),
        _leads.status == "open",
        # A club's lead to its members only (an offer a wave made as the business left the club is not shown).
        _leads.club_id.is_(None) | exists().where(
            _members.club_id == _leads.club_id, _members.business_id == bindparam("business_id")
        ),
    )
)  # fmt: skip
_OPEN_OFFERS_FIRST_PAGE = _OPEN_OFFERS.order_by(_offers.id.desc()).limit(bindparam("limit"))
_OPEN_OFFERS_AFTER = (
    _OPEN_OFFERS.where(_offers.id < bindparam("cursor")).order_by(_offers.id.desc()).limit(bindparam("limit"))
)


async def list_offers(
    session: AsyncSession, settings: Settings, business: Principal, limit: int, cursor: str | None
) -> tuple[list[schemas.Offer], str | None]:
    params = {"business_id": business.id, "now": utcnow(), "limit": limit + 1}
    query = _OPEN_OFFERS_FIRST_PAGE
    if check_cursor(cursor, "off"):
        query, params["cursor"] = _OPEN_OFFERS_AFTER, cursor
    rows = (await session.execute(query, params)).all()
    buyer = business.mode == "lead_buyer"
    rates = None if buyer or not rows else await rates_in_force(session, settings)
    items = [_offer_out(settings, rates, row) for row in rows[:limit]]
    return items, (items[-1].offer_id if len(rows) > limit and items else None)


class _OfferRow(LeadColumns, Protocol):
    """A row of _OPEN_OFFERS: the lead's columns under their names, and the offer's."""

    offer_id: str
    wave: int
    rank: int
    price_minor: int | None
    expires_at: datetime
    replaces_exposure_id: str | None
    exposure_count: int
    unseen: bool


def _offer_out(settings: Settings, rates: dict[str, int] | None, row: _OfferRow) -> schemas.Offer:
    """An offer as a lead buyer sees it (`rates` None: prices) or a deal maker (the commission rate of the plan in
    force, which a claim now would record on its exposure)."""
    category = settings.categories[row.category]
    buyer = rates is None
    return schemas.Offer(
        offer_id=row.offer_id,
        lead_id=row.id,
        lead=summary(row),
        wave=row.wave,
        rank=row.rank,
        price=MoneyOut((row.price_minor or category.lead_price_minor) if buyer else 0, row.currency),
        exclusive_price=MoneyOut(category.exclusive_price_minor, row.currency) if buyer else None,
        commission_rate_bp=None if rates is None else rates[category.code],
        exclusive_available=buyer and bool(row.unseen),
        expires_at=row.expires_at,
        replaces_exposure_id=row.replaces_exposure_id,
    )


async def statuses_of(session: AsyncSession, business_ids: list[str]) -> dict[str, str]:
    """Each business's account status (active, suspended, blocked)."""
    if not business_ids:
        return {}
    rows = await session.execute(select(Business.id, Business.status).where(Business.id.in_(business_ids)))
    return {business_id: status for business_id, status in rows}


def status_at(offer: Offer, now: datetime) -> str:
    """The offer's status as it stands at `now`: an open offer past its time has expired, as a claim of it and
    GET /v1/offers already have it, though the sweep that writes so (expire_lapsed) may not have run yet."""
    return "expired" if offer.status == "open" and offer.expires_at <= now else offer.status


async def offers_of_lead(session: AsyncSession, lead_id: str) -> list[Offer]:
    return list(await session.scalars(select(Offer).where(Offer.lead_id == lead_id).order_by(Offer.wave, Offer.rank)))


async def explain_ranking(
    session: AsyncSession, settings: Settings, ranker: Ranker, lead: Lead
) -> list[schemas.RankedCandidate]:
    """The lead's candidates as the ranker orders them now, each with its `rank` (and `position`) in the whole list:
    those already offered the lead first (wave, rank within it as `wave_rank`, and score as recorded on the offer, and
    the offer's status; `excluded` when the business has since been blocked or suspended), then the others in the
    order the next waves would offer it to them (none once no next wave goes out; a withdrawn offer's business among
    them; `excluded` when a deal maker owes more than its credit limit)."""
    now = utcnow()
    offered = await offers_of_lead(session, lead.id)
    waves_go_on = all(takes_waves(lead, now)) and not lead.is_exclusive
    ranked = await rank_lead(session, ranker, lead, now, settings.jurisdiction.zone) if waves_go_on else []
    statuses = await statuses_of(session, sorted({o.business_id for o in offered}))
    holding = {o.business_id for o in offered if o.status != "closed"}
    ranked = [r for r in ranked if r.business_id not in holding]
    owing = await over_credit_limit(session, settings, [r.business_id for r in ranked], lead.category)
    candidates = [
        schemas.RankedCandidate(
            business_id=o.business_id,
            rank=0,  # its place in the whole list, set below
            score=o.score,
            factors=o.factors,
            offered=True,
            wave=o.wave,
            wave_rank=o.rank,
            offer_status=status_at(o, now),
            excluded=None if statuses.get(o.business_id, "active") == "active" else statuses[o.business_id],
        )
        for o in offered
    ] + [
        schemas.RankedCandidate(
            business_id=r.business_id,
            rank=0,
            score=r.score,
            factors=r.factors,
            offered=False,
            excluded=schemas.OVER_CREDIT_LIMIT if r.business_id in owing else None,
        )
        for r in ranked
    ]
    inputs_of = getattr(ranker, "inputs_of", None)
    for position, candidate in enumerate(candidates, start=1):
        # One order over the whole list: an offered candidate's rank within its wave is its `wave_rank`.
        candidate.rank = candidate.position = position
        if inputs_of is not None:
            candidate.inputs = inputs_of(candidate.business_id, lead.category)
    return candidates
