"""Claiming an offer: it becomes an exposure (a lead bought, shared or exclusive, or assigned to a deal maker), or
is refused with the reason as it stands now.

Limits are decided by the database: a claim is a conditional UPDATE of the lead row (exposure count below
the limit, no exclusive owner), so fifty concurrent claims can never exceed it. Services never commit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NoReturn

from sqlalchemy import and_, bindparam, case, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.clock import day_start, month_start, utcnow
from marketplace.clubs.services import is_member
from marketplace.db.conflicts import violates
from marketplace.db.models import Business, Exposure, ExposureEvent, Lead, LedgerAccount, Offer, Survey
from marketplace.db.statements import attach, rows_changed, table
from marketplace.errors import Conflict, Forbidden, NotFound
from marketplace.exposures.queries import deal_maker_won
from marketplace.identity.services import Principal, refuse_inactive
from marketplace.ids import new_id
from marketplace.offers.closing import close_open_offers
from marketplace.settings import Settings
from marketplace.wallet.charges import charge_exposure, lead_taken
from marketplace.wallet.credit import refuse_if_over_limit, refuse_new_leads_over_limit
from marketplace.wallet.ledger import AccountKind
from marketplace.wallet.plan_versions import active_plan

_LEADS, _OFFERS, _BUSINESSES, _EXPOSURES = table(Lead), table(Offer), table(Business), table(Exposure)
_leads, _offers, _businesses = _LEADS.c, _OFFERS.c, _BUSINESSES.c


# A claim's statements, built once. Each is a conditional UPDATE: the database, not this process, decides who
# wins a race. The lead row comes back from its UPDATE with every column (RETURNING) and goes into the session by
# db.statements.attach: no read after it.
_OPEN_LEAD = and_(_leads.id == bindparam("lead_id"), _leads.status == "open", _leads.expires_at > bindparam("now"))
# Exclusive only while no competitor has seen the contact: no exposure now, and none returned either.
_TAKE_EXCLUSIVE = (
    update(_LEADS)
    .where(_OPEN_LEAD, _leads.exposure_count == 0, ~exists().where(_EXPOSURES.c.lead_id == _leads.id))
    .values(exposure_count=1, is_exclusive=True, status="full")
    .returning(*_LEADS.c)
)
_TAKE_SHARED = (
    update(_LEADS)
    .where(_OPEN_LEAD, _leads.is_exclusive.is_(False), _leads.exposure_count < _leads.max_exposures)
    .values(
        exposure_count=_leads.exposure_count + 1,
        status=case((_leads.exposure_count + 1 >= _leads.max_exposures, "full"), else_=_leads.status),
    )
    .returning(*_LEADS.c)
)
# With its business's status as of now: a block withdraws the business's open offers, and its claim (the principal
# a moment old, in a process that has not heard of the block yet) is a 403 as every other act of it, not a 409.
_OFFER = select(
    _offers.id, _offers.lead_id, _offers.business_id, _offers.status, _offers.expires_at, _offers.price_minor,
    _offers.replaces_exposure_id, _offers.withdrawn_for,
    select(_businesses.status).where(_businesses.id == _offers.business_id).scalar_subquery().label("business_status"),
).where(_offers.id == bindparam("offer_id"))  # fmt: skip
# Offers by table: a claim reads its offer as a row, so the session holds no offer object to keep in step.
_CLAIM_OFFER = (
    update(_OFFERS).where(_offers.id == bindparam("offer_id"), _offers.status == "open").values(status="claimed")
)
_SETTLE_OWED = (
    update(_EXPOSURES)
    .where(
        _EXPOSURES.c.id == bindparam("exposure_id"),
        _EXPOSURES.c.business_id == bindparam("owed_to"),
        _EXPOSURES.c.replacement_owed_since.is_not(None),
    )
    .values(replacement_owed_since=None)
)
CLOSE_OTHER_OFFERS = (
    update(_OFFERS)
    .where(
        _offers.business_id == bindparam("of_business"),
        _offers.status == "open",
        # A replacement too: its claim would be refused as well. The debt it was offered for stands (settled only by a
        # replacement claimed, _SETTLE_OWED), so the next lead that fits once the cap allows offers it again
        # (offer_owed_replacement, which passes over a debt only while its replacement offer is open).
        _offers.id != bindparam("claimed"),
        # But not one whose debt is not recorded (windows.replacement_days 0: no later lead is offered as one, so the
        # offer made at the return is all that is owed): withdrawn, the replacement would be lost without a word. It
        # stays, its claim refused while the cap holds (a lead returned meanwhile makes room for it).
        or_(
            _offers.replaces_exposure_id.is_(None),
            exists().where(
                _EXPOSURES.c.id == _offers.replaces_exposure_id, _EXPOSURES.c.replacement_owed_since.is_not(None)
            ),
        ),
    )
    .values(status="closed", withdrawn_for="cap")
)


# The claimer's caps, credit limit and status, its row locked: its concurrent claims queue here, so two of them cannot
# both take the last place under a cap, and a block waits for the claim (its release then finds the deal) or the
# claim for the block (and reads the business blocked: the lock re-reads the row). What it has received and owes is
# read after the lock, in a statement of its own: on PostgreSQL a statement that waited for a row lock still reads
# what it counts as of its start.
_LOCK_CLAIMER = (
    select(
        _businesses.daily_cap,
        _businesses.monthly_cap,
        _businesses.credit_limit_minor,
        _businesses.currency,
        _businesses.status,
    )
    .where(_businesses.id == bindparam("business_id"))
    # FOR NO KEY UPDATE: it does not wait for, nor hold up, the key-share locks that rows referring to the business
    # take (another business's claim writing its earnings), which FOR UPDATE would deadlock with.
    .with_for_update(key_share=True)
)
_ACCOUNTS = table(LedgerAccount).c
RECEIVED_AND_OWED = select(
    func.count().filter(_EXPOSURES.c.created_at >= bindparam("day")),
    func.count(),
    select(_ACCOUNTS.balance_minor)
    .where(
        _ACCOUNTS.owner == "business",
        _ACCOUNTS.owner_id == bindparam("business_id"),
        _ACCOUNTS.kind == AccountKind.RECEIVABLE.value,
        _ACCOUNTS.currency == bindparam("currency"),
    )
    .scalar_subquery(),
).where(
    _EXPOSURES.c.business_id == bindparam("business_id"),
    _EXPOSURES.c.created_at >= bindparam("month"),
    _EXPOSURES.c.returned_at.is_(None),  # a lead it gave back does not count against its caps
)


async def _check_claimer(session: AsyncSession, settings: Settings, business: Principal, now: datetime) -> bool:
    """Offers are made below the caps, but several may be open at once: a claim that would take the business over
    its daily or monthly cap of leads is refused (409), and so is a deal maker's while it owes more than its credit
    limit (refuse_new_leads_over_limit). The offer stays open. A returned lead does not count: the business
    gave it back, and its replacement (or any other lead) takes its place within the caps. A blocked or suspended
    business's claim is a 403. Returns whether this claim reaches a cap (its other open offers are then withdrawn: see
    claim_offer)."""
    row = (await session.execute(_LOCK_CLAIMER, {"business_id": business.id})).one_or_none()
    if row is None:
        return False
    daily_cap, monthly_cap, limit, currency, status = row
    refuse_inactive(status)
    zone = settings.jurisdiction.zone
    params = {
        "business_id": business.id,
        "day": day_start(now, zone),
        "month": month_start(now, zone),
        "currency": currency,
    }
    today, this_month, owed = (await session.execute(RECEIVED_AND_OWED, params)).one()
    if today >= daily_cap:
        raise Conflict(f"the business's daily cap of {daily_cap} leads is reached; it takes more tomorrow")
    if this_month >= monthly_cap:
        raise Conflict(f"the business's monthly cap of {monthly_cap} leads is reached")
    refuse_new_leads_over_limit(settings, business.mode, int(owed or 0), limit, currency)
    return today + 1 >= daily_cap or this_month + 1 >= monthly_cap


async def _refuse_closed(session: AsyncSession, settings: Settings, business_id: str, offer: Any, why: str) -> NoReturn:
    """A claim of an offer no longer open, refused with `why` (_why_closed). One withdrawn as its business came to owe
    more than its credit limit (a deal maker's paid deal, a lowered limit), or for no recorded reason, is told what it
    must do (pay), with the amounts, as a claim of an open offer is (_check_claimer), if that is what stands now."""
    if why is _WITHDRAWN or why is WITHDRAWN_FOR["credit_limit"]:
        await refuse_if_over_limit(session, settings, business_id, offer.price_minor)
    raise Conflict(why)


async def claim_offer(
    session: AsyncSession, settings: Settings, business: Principal, offer_id: str, exclusive: bool
) -> tuple[Exposure, ExposureEvent]:
    """Turn an open offer into an exposure: a lead buyer buys a shared or exclusive one, a deal maker is assigned.

    Records what the claim owes (price, commission rate in force); the wallet settles it. Returns the exposure and
    its history's first (and so far only) event.
    """
    now = utcnow()
    offer = (await session.execute(_OFFER, {"offer_id": offer_id})).one_or_none()
    if offer is None or offer.business_id != business.id:
        raise NotFound(f"no offer {offer_id}")
    # A blocked or suspended business's offers were withdrawn: it is told why it may not claim, not that the offer
    # was withdrawn. Held against a block only later, by _check_claimer's lock.
    refuse_inactive(offer.business_status)
    if exclusive and business.mode != "lead_buyer":
        raise Forbidden("only lead buyers buy a lead exclusively; a deal maker claims it shared")
    if offer.status == "claimed":
        raise Conflict("this offer has already been claimed")
    if offer.status != "open" or offer.expires_at <= now:
        await _refuse_closed(session, settings, business.id, offer, await _why_closed(session, offer, now))

    # The lead row is taken first, so racing claims queue on it before touching any offer row (no deadlock
    # with the winner closing the lead's other offers).
    take, refusal = (
        (_TAKE_EXCLUSIVE, "another business has seen this lead's contact, so it can no longer be bought exclusively")
        if exclusive
        else (_TAKE_SHARED, "this lead is taken: it is full, bought exclusively, closed (off the market) or expired")
    )
    taken = (await session.execute(take, {"lead_id": offer.lead_id, "now": now})).one_or_none()
    if taken is None:
        # Lost a race on the lead row (a deal won, the lead filled or bought exclusively while this claim waited for
        # it): told why as a claim a moment later is, from the offer and its lead as they are now (read after the
        # winner committed), the fixed refusal only where they say nothing more precise.
        again = (await session.execute(_OFFER, {"offer_id": offer_id})).one()
        refuse_inactive(again.business_status)  # blocked or suspended meanwhile: a 403, as a claim a moment later
        if again.status == "claimed":
            raise Conflict(_WHY_NOT_OPEN["claimed"])
        why = await _why_closed(session, again, now)
        if why is _WITHDRAWN and again.status == "open":
            why = refusal
        await _refuse_closed(session, settings, business.id, again, why)
    lead = attach(session, Lead, taken)
    if lead.club_id is not None and not await is_member(session, lead.club_id, business.id):
        # Offered while it was a member (a wave that read the members as it left): the contact is for members only.
        raise Conflict(f"this lead is for the members of club {lead.club_id}, and the business is no longer one")
    # After the lead row, in the order a wave takes them.
    reaches_cap = await _check_claimer(session, settings, business, now)
    if await rows_changed(session, _CLAIM_OFFER, {"offer_id": offer_id}) != 1:
        # Claimed, or withdrawn (a block, the deal won elsewhere) while this claim was on its way: said as it is now.
        # (Its lead is read as this claim changed it, so the offer's own status says why.)
        again = (await session.execute(_OFFER, {"offer_id": offer_id})).one()
        raise Conflict(_WHY_NOT_OPEN.get(again.status) or WITHDRAWN_FOR.get(again.withdrawn_for, _WITHDRAWN))
    if reaches_cap:
        # Its other open offers could only be refused: withdrawn, they leave its list and the leads' places (a
        # withdrawn offer does not count as offered, so a lead still open when the cap allows is offered again).
        await session.execute(CLOSE_OTHER_OFFERS, {"of_business": business.id, "claimed": offer_id})
    if offer.replaces_exposure_id is not None:  # a replacement taken: what its return was owed is settled
        await session.execute(_SETTLE_OWED, {"exposure_id": offer.replaces_exposure_id, "owed_to": business.id})

    category = settings.categories[lead.category]
    plan_version_id, plan = await active_plan(session, settings)
    if business.mode == "lead_buyer":
        kind = "exclusive" if exclusive else "shared"
        # A shared claim pays the second price the ranking set on the offer (the list price without one).
        shared_price = offer.price_minor if offer.price_minor is not None else category.lead_price_minor
        price = category.exclusive_price_minor if exclusive else shared_price
    else:
        kind, price = "assigned", 0
    exposure = Exposure(
        id=new_id("exp"),
        lead_id=lead.id,
        business_id=business.id,
        offer_id=offer.id,
        mode=business.mode or "",
        kind=kind,
        price_minor=price,
        currency=lead.currency,
        # The rate the deal maker was shown and will be charged: the plan in force's for the category.
        commission_rate_bp=plan.rate_bp(category.code, category.commission_rate_bp),
        plan_version_id=plan_version_id,
        status="new",
        stale=False,
        created_at=now,
        status_changed_at=now,
    )
    session.add(exposure)
    first = ExposureEvent(exposure_id=exposure.id, actor=business.actor, from_status=None, to_status="new", at=now)
    session.add(first)
    try:
        await session.flush()
    except IntegrityError as exc:
        if not violates(exc, "uq_exposures_lead_id_business_id"):
            raise
        raise Conflict("this business already holds an exposure of this lead") from exc
    if lead.status == "full":
        await close_open_offers(session, lead.id)
    if price:
        # In the same transaction as the claim: no contact without the charge, no charge without the contact.
        await charge_exposure(session, settings, exposure, lead, price_minor=price, step="purchase")
    await lead_taken(session, settings, plan, exposure, lead)
    return exposure, first


async def _why_closed(session: AsyncSession, offer: Any, now: datetime) -> str:
    """Why an offer can no longer be claimed, as the business would want to hear it: its lead's state first."""
    lead = await session.get(Lead, offer.lead_id)
    if lead is not None and lead.expires_at < offer.expires_at:
        # Its lead's expiry was brought forward, which only closing it does (_off_the_market; an offer never outlives
        # its lead otherwise: offer_expiry): withdrawn because the lead left the market, not because time ran out. (By
        # the expiry, not the lead's status: an offer whose own time ran out before the lead closed has expired.)
        # First: a lead full or bought exclusively and then closed has left the market, which is what stands now.
        return await _why_off_the_market(session, lead)
    if lead is not None and lead.is_exclusive:
        return "this lead is taken: another business bought it exclusively"
    if lead is not None and (lead.status == "full" or lead.exposure_count >= lead.max_exposures):
        return "this lead is full: as many businesses as it may reach have had its contact"
    if offer.status == "expired" or offer.expires_at <= now or (lead is not None and lead.expires_at <= now):
        return "this offer has expired"
    return WITHDRAWN_FOR.get(offer.withdrawn_for, _WITHDRAWN)


async def _why_off_the_market(session: AsyncSession, lead: Lead) -> str:
    """Why take_off_the_market took the lead off, as it can be told: its customer hired a business (a deal maker's
    deal reported won, or the customer's survey answer), or the business that sold it was blocked
    (withdraw_sold_leads). A hire is said first: a seller blocked after it took nothing more off."""
    hired = exists().where(Survey.lead_id == lead.id, Survey.hired.is_(True))
    if await session.scalar(select(or_(hired, deal_maker_won(lead.id)))):
        return _LEFT_THE_MARKET
    if lead.seller_business_id is not None:
        seller_status = await session.scalar(select(Business.status).where(Business.id == lead.seller_business_id))
        if seller_status == "blocked":
            return _SELLER_BLOCKED
    return _TAKEN_OFF


# For an offer withdrawn with no reason recorded: before migration 0027, or before its reason had an entry below.
_WITHDRAWN = (
    "this offer was withdrawn: the business reached a cap or its credit limit, no longer fits the lead, lowered its "
    "bid below the offer's price, left the lead's club, or was blocked"
)
# Why an offer was withdrawn, where the offer records it (offers.withdrawn_for).
WITHDRAWN_FOR = {
    "bid_lowered": "this offer was withdrawn: the business lowered its bid below the offer's price",
    "cap": "this offer was withdrawn: the business reached its daily or monthly cap of leads",
    "credit_limit": (
        "this offer was withdrawn: the business's credit limit did not cover it (a deal maker owing more than the "
        "limit, or a lead buyer whose wallet and limit could not pay the offer's price)"
    ),
    "unfit": (
        "this offer was withdrawn: the business's profile (categories, regions, deal range) no longer fits the lead"
    ),
    "club_left": "this offer was withdrawn: the business left the lead's club, whose leads are for its members only",
    # Withdrawn with its lead (filled, bought exclusively, taken off the market), told so only once the lead is back on
    # the market (a returned exclusive purchase, a customer's "hired nobody"): the lead's state says why before.
    "lead_taken": (
        "this offer was withdrawn as its lead filled, was bought exclusively or left the market; the lead is back on "
        "the market and is offered again (GET /v1/offers)"
    ),
    "seller_blocked": "this offer was withdrawn: the business that sold the lead was blocked",
    "club_removed": (
        "this offer was withdrawn: the business was removed from the lead's club, whose leads are for its members only"
    ),
    "suspended": "this offer was withdrawn: the business's account was suspended",
    "blocked": "this offer was withdrawn: the business's account was blocked",
    "fraud_alert": (
        "this replacement offer was withdrawn: the customer of the lead it replaces says it hired this business, and "
        "an operator reviews the return (no replacement is offered meanwhile; none is owed once the alert is confirmed)"
    ),
}
_LEFT_THE_MARKET = (
    "this offer was withdrawn: its lead has left the market, the customer having hired a business (a deal reported "
    "won, or the customer's own answer)"
)
_SELLER_BLOCKED = "this offer was withdrawn: its lead was taken off the market, the business that sold it was blocked"
_TAKEN_OFF = "this offer was withdrawn: its lead was taken off the market"
_WHY_NOT_OPEN = {"claimed": "this offer has already been claimed", "expired": "this offer has expired"}
