"""Offer commands: send a wave, list a business's offers, claim one, expire what lapsed.

Limits are decided by the database: a claim is a conditional UPDATE of the lead row (exposure count below
the limit, no exclusive owner), so fifty concurrent claims can never exceed it. Services never commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, bindparam, case, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.clock import day_start, month_start, next_day_start, utcnow
from marketplace.clubs.services import is_member
from marketplace.db.conflicts import violates
from marketplace.db.models import (
    Business,
    ClubMember,
    Exposure,
    ExposureEvent,
    Lead,
    LedgerAccount,
    Offer,
    Survey,
)
from marketplace.db.statements import attach, of_session, per_database, rows_changed, table
from marketplace.errors import Conflict, Forbidden, InvalidInput, NotFound
from marketplace.exposures import rules as exposure_rules
from marketplace.identity.services import Principal, refuse_inactive
from marketplace.ids import new_id
from marketplace.jobs import Jobs
from marketplace.leads.services import LeadColumns, summary
from marketplace.leads.status import on_the_market
from marketplace.money import Money
from marketplace.offers import schemas
from marketplace.offers.matching import FITS_THE_LEAD, UNDER_CAPS, find_candidates, fits_business, owed_replacement
from marketplace.pagination import check_cursor
from marketplace.ranking.ports import LeadView, Ranked, Ranker
from marketplace.schemas import MoneyOut
from marketplace.settings import Settings
from marketplace.uow import UnitOfWork
from marketplace.wallet.charges import charge_exposure, lead_taken
from marketplace.wallet.credit import (
    OVER_CREDIT,
    cannot_pay_sql,
    over_credit_limit,
    over_credit_params,
    refuse_if_over_limit,
    refuse_new_leads_over_limit,
    standing_limit,
)
from marketplace.wallet.ledger import AccountKind
from marketplace.wallet.plan_versions import active_plan, rates_in_force


@dataclass(frozen=True, slots=True)
class WaveLead:
    """What a wave reads of its lead, returned by the update that moves its wave counter."""

    view: LeadView
    expires_at: datetime
    seller_business_id: str | None


def lead_view(lead: Lead | WaveLead) -> LeadView:
    if isinstance(lead, WaveLead):
        return lead.view
    return LeadView(
        lead.id, lead.category, lead.region, lead.budget_minor, lead.currency, lead.created_at, lead.club_id
    )


async def rank_lead(
    session: AsyncSession, ranker: Ranker, lead: Lead | WaveLead, now: datetime, zone: ZoneInfo
) -> list[Ranked]:
    view = lead_view(lead)
    return ranker.rank(view, await find_candidates(session, view, lead.seller_business_id, now, zone), now)


# The wave's statements, built once: a lead gets about ten waves, so this is the service's busiest job, and
# building a statement (and its cache key) costs SQLAlchemy more than SQLite takes to run it. They are Core
# statements on the tables: a wave's session holds no objects to keep in step.
_LEADS, _OFFERS, _BUSINESSES, _EXPOSURES = table(Lead), table(Offer), table(Business), table(Exposure)
_leads, _offers, _businesses = _LEADS.c, _OFFERS.c, _BUSINESSES.c
_members = table(ClubMember).c


def takes_waves(lead: Any, now: Any) -> tuple[Any, ...]:
    """The lead still takes waves: open, and not expired at `now`. The one definition for SQL and Python: given a
    lead's columns (`table(Lead).c`, with `now` a bind parameter) the conditions of a WHERE; given a Lead, booleans
    that are all true when it does."""
    return (lead.status == "open", lead.expires_at > now)


# The wave counter moves from wave-1 to wave, and the lead is read, in one statement.
_TAKE_WAVE = (
    update(_LEADS)
    .where(
        _leads.id == bindparam("lead_id"),
        _leads.waves_sent == bindparam("previous"),
        *takes_waves(_leads, bindparam("now")),
    )
    .values(waves_sent=bindparam("wave"), next_wave_at=None)
    .returning(
        _leads.id, _leads.category, _leads.region, _leads.budget_minor, _leads.currency, _leads.created_at,
        _leads.expires_at, _leads.seller_business_id, _leads.club_id,
    )
)  # fmt: skip
_NEXT_WAVE_DUE = update(_LEADS).where(_leads.id == bindparam("lead_id")).values(next_wave_at=bindparam("due"))
# Unless a wave went out meanwhile (the counter moved on): a wave put off by the night.
_DUE_UNLESS_SENT = _NEXT_WAVE_DUE.where(_leads.waves_sent == bindparam("previous"))
# Who was offered the lead already; an offer withdrawn (closed: the lead filled, the business was blocked or its
# profile changed) does not count, so the business may be offered it again once it fits and a place is free.
_OFFERED = select(_offers.business_id).where(_offers.lead_id == bindparam("lead_id"), _offers.status != "closed")
# The wave's picks that may still be offered the lead: active, fitting it, below its caps, and not a deal maker owing
# more than its credit limit (credit.OVER_CREDIT; its claim would be refused, refuse_new_leads_over_limit: the offer
# would take a place in the wave that a business able to take the lead should have; the ranking core does not know
# balances, and a process's core may not have heard of claims another process took while Redis was away: the caps are
# counted here).
_CAN_TAKE_IT = (
    _businesses.id.in_(bindparam("ids", expanding=True)),
    _businesses.status == "active",
    *FITS_THE_LEAD,
    ~OVER_CREDIT,
    *UNDER_CAPS,
)
_MARK_OFFERED = (
    update(_BUSINESSES).where(*_CAN_TAKE_IT).values(last_offered_at=bindparam("now")).returning(_businesses.id)
)
_LOCK_PICKS = (
    select(_businesses.id)
    .where(_businesses.id.in_(bindparam("ids", expanding=True)))
    .order_by(_businesses.id)
    .with_for_update(key_share=True)
)
# The same question, marking nobody: asked of a wave's picks and of the business whose score set a lead buyer's price.
_ABLE = select(_businesses.id).where(*_CAN_TAKE_IT)
# A deal maker owing more than its credit limit is assigned no new lead until it pays (its claim would be refused:
# refuse_new_leads_over_limit, with the same limit), and a lead buyer that could not pay an offer's price is refused
# its claim (charges._charge): their open offers could only be refused. (The offer's price is a lower bound of what
# its claim is charged, VAT included.)
_WITHDRAW_OVER_CREDIT = (
    update(_OFFERS)
    .where(
        _offers.business_id == bindparam("of_business"),
        _offers.status == "open",
        exists().where(
            _businesses.id == bindparam("of_business"), cannot_pay_sql(func.coalesce(_offers.price_minor, 1))
        ),
    )
    .values(status="closed", withdrawn_for="credit_limit")
)
# Under a new id too: the business's list is newest first by id, and a client that reads it until an id it knows would
# never see an offer made again under its old one (a withdrawn offer has no exposure: nothing refers to its id).
_MADE_AGAIN = (
    "id", "wave", "rank", "score", "factors", "price_minor", "replaces_exposure_id", "created_at", "expires_at"
)  # fmt: skip


def _offer_upsert(make: Any) -> Any:
    """Insert the offer; a withdrawn offer of the same lead to the same business (one row per pair) is made again."""
    stmt = make(_OFFERS)
    again = {c: stmt.excluded[c] for c in _MADE_AGAIN}
    return stmt.on_conflict_do_update(
        index_elements=["lead_id", "business_id"],
        set_={**again, "status": "open", "withdrawn_for": None},
        where=_offers.status == "closed",
    )


_INSERT_OFFER = per_database(_offer_upsert)


async def _candidates_in_order(
    session: AsyncSession,
    ranker: Ranker,
    lead: WaveLead,
    wave_size: int,
    now: datetime,
    zone: ZoneInfo,
    left_out: set[str],
) -> tuple[list[Ranked], bool]:
    """The wave's candidates, best first, and whether anyone is left for a next wave; none of `left_out` (those the
    database refused a moment ago: send_wave), who are no competitors either (a lead buyer's second price is against
    those who could take the lead).

    A ranker with an in-memory core selects them itself (the hot path: its explored places are among the
    wave's, not beyond it); send_wave then keeps those the database still has active. Otherwise the database
    matches and the ranker orders.
    """
    select_top = getattr(ranker, "select", None)
    view = lead.view
    if select_top is None or view.club_id is not None:  # the core's buckets do not know clubs; clubs are small
        found = await find_candidates(session, view, lead.seller_business_id, now, zone)
        ranked = ranker.rank(view, [c for c in found if c.business_id not in left_out], now)
        return ranked[:wave_size], len(ranked) > wave_size
    offered = set((await session.execute(_OFFERED, {"lead_id": view.id})).scalars()) | left_out
    if lead.seller_business_id:
        offered.add(lead.seller_business_id)
    picks: list[Ranked] = select_top(view, wave_size, offered)
    if not picks:
        return [], False
    more = bool(ranker.remaining(view, offered | {p.business_id for p in picks}))  # type: ignore[attr-defined]
    return picks, more


async def _mark_offered(
    session: AsyncSession, settings: Settings, lead: WaveLead, picks: list[Ranked], now: datetime
) -> set[str]:
    """Those of the picks the database has active, fitting the lead, under their caps and credit limit, marked
    offered now (for the fair rotation)."""
    if not picks:
        return set()
    params = _can_take_params(settings, lead, [p.business_id for p in picks], now)
    return set((await session.execute(_MARK_OFFERED, params)).scalars())


async def _able(session: AsyncSession, settings: Settings, lead: WaveLead, ids: set[str], now: datetime) -> set[str]:
    """Those of these businesses the database would let take the lead now (as _mark_offered asks, marking none)."""
    params = _can_take_params(settings, lead, sorted(ids), now)
    return set((await session.execute(_ABLE, params)).scalars())


def _can_take_params(settings: Settings, lead: WaveLead, ids: list[str], now: datetime) -> dict[str, Any]:
    zone = settings.jurisdiction.zone
    return {
        "ids": ids,
        "now": now,
        **over_credit_params(settings, lead.view.category),
        "day": day_start(now, zone),
        "month": month_start(now, zone),
        "category": lead.view.category,
        "region": lead.view.region,
        "budget": lead.view.budget_minor,
    }


def offer_expiry(settings: Settings, now: datetime, lead_expires_at: datetime) -> datetime:
    """An offer made now may be claimed for `offer_ttl_minutes` of open time (off hours do not count), and never
    after its lead expires."""
    lifetime = timedelta(minutes=settings.windows.offer_ttl_minutes)
    return min(settings.windows.off_hours.add(now, lifetime), lead_expires_at)


def next_wave_at(settings: Settings, category: str, last_wave_at: datetime) -> datetime:
    """When a lead's next wave is due: the category's wave delay after its last, in open time (off hours do not
    count, so a wave due in the night goes out as the morning's delay runs out)."""
    delay = timedelta(seconds=settings.categories[category].wave_delay_seconds)
    return settings.windows.off_hours.add(last_wave_at, delay)


async def send_wave(uow: UnitOfWork, settings: Settings, jobs: Jobs, ranker: Ranker, lead_id: str, wave: int) -> int:
    """Offer the lead to the next `wave_size` candidates. Returns how many offers were made.

    Idempotent: the wave counter moves from wave-1 to wave with a conditional update, so a message
    delivered twice, or a wave whose lead is already full or expired, changes nothing.
    """
    session, now = uow.session, utcnow()
    off_hours = settings.windows.off_hours
    if wave > 1 and off_hours.is_off(now):  # no escalation at night: the wave goes out when the off hours end
        morning = off_hours.open_at(now)
        # Due then (the lost-wave sweep would otherwise find it overdue all night and send it again and again).
        await session.execute(_DUE_UNLESS_SENT, {"lead_id": lead_id, "previous": wave - 1, "due": morning})
        due_in = (morning - now).total_seconds()
        uow.after_commit(lambda: jobs.enqueue("send_wave", lead_id, wave, delay_seconds=due_in))
        return 0
    row = (
        await session.execute(_TAKE_WAVE, {"lead_id": lead_id, "previous": wave - 1, "now": now, "wave": wave})
    ).one_or_none()
    if row is None:
        return 0
    view = LeadView(row.id, row.category, row.region, row.budget_minor, row.currency, row.created_at, row.club_id)
    lead = WaveLead(view, row.expires_at, row.seller_business_id)
    category = settings.categories[lead.view.category]
    if wave == 1:  # first, the deal maker owed a replacement the longest that it fits; the ranked come beside it
        await offer_owed_replacement(session, settings, lead, now, offer_expiry(settings, now, lead.expires_at))
    # The picks the database would let take the lead: one it refuses (over its credit limit, at a cap another process
    # counted, blocked a moment ago) leaves its place to the next candidate, and the wave is chosen again without it,
    # prices included: a lead buyer's second price is set by the best candidate below it, which may be outside the
    # wave, and one the database would refuse is no competitor either. Asked first, marked after: a pick marked
    # offered and then left out of a wave chosen again would lose its turn in the rotation for nothing.
    # On PostgreSQL the rows asked about are locked first (FOR NO KEY UPDATE), in a statement of their own, so that the
    # question reads them as committed: a report taking a deal maker over its credit limit holds its row (FOR SHARE)
    # until it commits, and a statement that had waited for it would judge the balance by its own older snapshot
    # (offering the lead to a business whose report had just withdrawn its offers: a tester). Each round's new rows in
    # id order (two waves deadlocked once, locking their picks each in its own scan's order).
    left_out: set[str] = set()
    locked: set[str] = set()
    lock_first = session.get_bind().dialect.name == "postgresql"
    while True:
        picks, more = await _candidates_in_order(
            session, ranker, lead, category.wave_size, now, settings.jurisdiction.zone, left_out
        )
        asked = {p.business_id for p in picks} | {p.priced_against for p in picks if p.priced_against is not None}
        if lock_first and asked - locked:
            await session.execute(_LOCK_PICKS, {"ids": sorted(asked - locked)})
            locked |= asked
        refused = asked - await _able(session, settings, lead, asked, now) if asked else set()
        if not refused:
            break
        left_out |= refused
    # Marked in one statement, which asks again (on SQLite, the one writer, nothing came between; on PostgreSQL the
    # rows are held): the answer is the question's.
    active = await _mark_offered(session, settings, lead, picks, now)
    chosen = [p for p in picks if p.business_id in active]
    if chosen:
        expires_at = offer_expiry(settings, now, lead.expires_at)
        await session.execute(
            of_session(_INSERT_OFFER, session),
            [
                {
                    "id": new_id("off"),
                    "lead_id": lead_id,
                    "business_id": pick.business_id,
                    "wave": wave,
                    "rank": rank,
                    "score": pick.score,
                    "factors": pick.factors,
                    "price_minor": pick.price_minor,
                    "replaces_exposure_id": None,
                    "status": "open",
                    "created_at": now,
                    "expires_at": expires_at,
                }
                for rank, pick in enumerate(chosen, start=1)
            ],
        )
    if more:  # candidates are left for a next wave, if the lead is not taken by then (the delay counts open time)
        due = next_wave_at(settings, category.code, now)
        await session.execute(_NEXT_WAVE_DUE, {"lead_id": lead_id, "due": due})  # found again if the job is lost
        due_in = (due - now).total_seconds()
        uow.after_commit(lambda: jobs.enqueue("send_wave", lead_id, wave + 1, delay_seconds=due_in))
    else:
        # Nobody left to offer it now. A business at its daily cap (or, on the 1st, its monthly one) becomes a candidate
        # again when the local day starts, with no change of its own to wake the lead (a sign-up, a wider profile or a
        # business back to active do: offer_open_leads): the lead tries once more then, while it is on the market, or
        # as the off hours end if the day starts in them (no wave goes out at night). Due then for the periodic sweep of
        # waves due (resend_lost_waves), not a message held for hours by a worker.
        retry = next_day_start(now, settings.jurisdiction.zone)
        if off_hours.is_off(retry):
            retry = off_hours.open_at(retry)
        if retry < lead.expires_at:
            await session.execute(_NEXT_WAVE_DUE, {"lead_id": lead_id, "due": retry})
    return len(chosen)


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
_CLOSE_OPEN_OFFERS = (
    update(_OFFERS).where(_offers.lead_id == bindparam("of_lead"), _offers.status == "open").values(status="closed")
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


async def _refuse_closed(
    session: AsyncSession, settings: Settings, business_id: str, offer: Any, why: str
) -> NoReturn:
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
    won = exists().where(
        Exposure.lead_id == lead.id, Exposure.mode == "deal_maker", Exposure.status.in_(exposure_rules.WON)
    )
    if await session.scalar(select(or_(hired, won))):
        return _LEFT_THE_MARKET
    if lead.seller_business_id is not None:
        seller_status = await session.scalar(select(Business.status).where(Business.id == lead.seller_business_id))
        if seller_status == "blocked":
            return _SELLER_BLOCKED
    return _TAKEN_OFF


_WITHDRAWN = (
    "this offer was withdrawn: the business reached a cap or its credit limit, no longer fits the lead, lowered its "
    "bid below the offer's price, or was blocked"
)
# Why an offer was withdrawn, where the offer records it (offers.withdrawn_for).
WITHDRAWN_FOR = {
    "bid_lowered": "this offer was withdrawn: the business lowered its bid below the offer's price",
    "cap": "this offer was withdrawn: the business reached its daily or monthly cap of leads",
    "credit_limit": "this offer was withdrawn: the business owed more than its credit limit allowed it to take",
}
_LEFT_THE_MARKET = (
    "this offer was withdrawn: its lead has left the market, the customer having hired a business (a deal reported "
    "won, or the customer's own answer)"
)
_SELLER_BLOCKED = "this offer was withdrawn: its lead was taken off the market, the business that sold it was blocked"
_TAKEN_OFF = "this offer was withdrawn: its lead was taken off the market"
_WHY_NOT_OPEN = {"claimed": "this offer has already been claimed", "expired": "this offer has expired"}


async def offer_owed_replacement(
    session: AsyncSession, settings: Settings, lead: WaveLead, now: datetime, expires_at: datetime
) -> str | None:
    """A new lead's first wave also offers it to the deal maker owed a replacement the longest that it fits (a return
    that found no open lead then), as the replacement of the lead it returned. The debt is settled when the deal maker
    claims a replacement (claim_offer): one that closes unclaimed (the lead filled first, the offer expired) leaves
    it owed, and the next lead that fits is offered. Returns that business's id."""
    view = lead.view
    since = now - timedelta(days=settings.windows.replacement_days)
    zone = settings.jurisdiction.zone
    for _ in range(OWED_TRIES):
        owed = await owed_replacement(session, view, lead.seller_business_id, now, zone, since)
        if owed is None:
            return None
        exposure_id, business_id = owed
        row = {
            "id": new_id("off"),
            "lead_id": view.id,
            "business_id": business_id,
            "wave": 0,
            "rank": 1,
            "score": 0.0,
            "factors": {"policy": "replacement", "replaces_exposure_id": exposure_id},
            "price_minor": None,
            "replaces_exposure_id": exposure_id,
            "status": "open",
            "created_at": now,
            "expires_at": expires_at,
        }
        try:
            async with session.begin_nested():
                await session.execute(of_session(_INSERT_OFFER, session), row)
        except IntegrityError as exc:
            if not violates(exc, "ux_offers_open_replacement"):
                raise
            # A concurrent first wave offered this debt (one open replacement per exposure): its offer is committed
            # now, so the next read passes over the debt to the next one.
            continue
        return business_id
    return None


# Debts read again when a concurrent first wave took the one read (each try sees the other waves' offers).
OWED_TRIES = 3


async def close_open_offers(session: AsyncSession, lead_id: str) -> None:
    await session.execute(_CLOSE_OPEN_OFFERS, {"of_lead": lead_id})


async def apply_credit_limit(uow: UnitOfWork, settings: Settings, jobs: Jobs, business_id: str, amount: Money) -> None:
    """An operator sets how much a business may owe through the payment provider. A deal maker that now owes more,
    or a lead buyer that could not pay an offer's price, has its open offers withdrawn at once (their claims would be
    refused until it pays); one let owe more is offered the open leads whose waves passed it over, once the new limit
    has committed (the job reads it)."""
    business = await uow.session.get(Business, business_id, with_for_update=True)
    if business is None:
        raise NotFound(f"no business {business_id}")
    if amount.currency != business.currency:
        raise InvalidInput.field("amount.currency", f"the wallet is in {business.currency}")
    before = standing_limit(settings, business.credit_limit_minor)
    business.credit_limit_minor = amount.amount_minor
    await uow.session.flush()
    await withdraw_offers_over_credit(uow.session, settings, business_id)
    if amount.amount_minor > before:
        uow.after_commit(lambda: jobs.enqueue("offer_open_leads", business_id))


async def withdraw_offers_over_credit(session: AsyncSession, settings: Settings, business_id: str) -> None:
    """A deal maker's paid deal made it owe more than its credit limit: its open offers are withdrawn (its claims
    would be refused until it pays). (The ranking core does not know the limit: the waves check it, _MARK_OFFERED.)"""
    await session.execute(_WITHDRAW_OVER_CREDIT, {"of_business": business_id, **over_credit_params(settings)})


async def take_off_the_market(session: AsyncSession, lead_id: str) -> None:
    """The customer has hired someone (its survey says so, or a business reports the deal won): it has been
    served, and more calls would only bother it, or sell a buyer a customer already taken. Its lead goes out in
    no more waves and takes no more claims (it is closed, its expiry brought forward to now), and its open offers
    are withdrawn."""
    await _off_the_market(session, Lead.id == lead_id)
    await close_open_offers(session, lead_id)


async def withdraw_sold_leads(session: AsyncSession, seller_business_id: str) -> list[str]:
    """A blocked business's inquiries still on the market leave it, as a hired customer's lead does
    (take_off_the_market): a business blocked as a fraud must not go on earning from the claims of leads it sold
    (a fake inquiry is the obvious fraud of a seller). What was bought of them stands, returns included. Returns the
    leads taken off. In three statements however many they are (a block holds their rows until it commits)."""
    lead_ids = await _off_the_market(session, Lead.seller_business_id == seller_business_id)
    if lead_ids:
        await session.execute(
            update(_OFFERS).where(_offers.lead_id.in_(lead_ids), _offers.status == "open").values(status="closed")
        )
    return lead_ids


async def _off_the_market(session: AsyncSession, which: ColumnElement[bool]) -> list[str]:
    """The leads `which` names that are still on the market (open or full, before their time) leave it now: closed,
    their expiry brought forward to now. Returns them.

    Closed, not expired: the deal maker that won it and the operator are told the customer was served (or the
    seller blocked), not that nobody took it in time; and at once, not at the next sweep (a duplicate of the request,
    the exposures' lead summaries and the operator's view would show it open meanwhile). A full one closes too: a
    block's release reopens only a lead still open or full (businesses.status.release_open_deals). An ORM update with
    plain values: a Lead this session holds sees them."""
    now = utcnow()
    closed = (
        update(Lead)
        .where(which, *on_the_market(Lead, now))
        .values(expires_at=now, status="closed")
    )
    return sorted(await session.scalars(closed.returning(Lead.id)))


async def offer_replacement(
    session: AsyncSession, settings: Settings, business_id: str, returned: Exposure
) -> Offer | None:
    """A deal maker who returned a lead gets an offer of another open lead that fits its profile."""
    now = utcnow()
    business = await session.get(Business, business_id)
    returned_lead = await session.get(Lead, returned.lead_id)
    if business is None or business.status != "active" or returned_lead is None:
        return None
    returned_category = returned_lead.category
    query = (
        select(Lead)
        .where(
            Lead.status == "open",
            Lead.expires_at > now,
            Lead.id != returned.lead_id,
            fits_business(business),
            # Not offered to it already; an offer withdrawn (the lead filled, a block) is made again.
            ~exists().where(Offer.lead_id == Lead.id, Offer.business_id == business_id, Offer.status != "closed"),
        )
        # The returned lead's own category first, then the lead that has waited longest.
        .order_by((Lead.category != returned_category).asc(), Lead.created_at)
        .limit(1)
    )
    lead = (await session.execute(query)).scalar_one_or_none()
    if lead is None:
        return None
    made = await session.execute(
        of_session(_INSERT_OFFER, session).returning(_offers.id),
        {
            "id": new_id("off"),
            "lead_id": lead.id,
            "business_id": business_id,
            "wave": 0,
            "rank": 1,
            "score": 0.0,
            "factors": {"policy": "replacement", "replaces_exposure_id": returned.id},
            "price_minor": None,
            "replaces_exposure_id": returned.id,
            "status": "open",
            "created_at": now,
            "expires_at": offer_expiry(settings, now, lead.expires_at),
        },
    )
    offer_id = made.scalar_one_or_none()  # None: a wave offered it the same moment (its offer stands)
    return None if offer_id is None else await session.get(Offer, offer_id, populate_existing=True)


# (The status is written into the SQL, not bound, as with every comparison of offers.status: db.base.PartialIndexKey.
# The partial index of open offers, migration 0010, serves only a statement that names its condition.)
_EXPIRE_OFFERS = (
    update(_OFFERS).where(_offers.status == "open", _offers.expires_at <= bindparam("now")).values(status="expired")
)


async def expire_lapsed(session: AsyncSession, settings: Settings) -> tuple[int, int]:
    """Offers past their time, leads nobody filled in time, and replacements owed longer than
    `windows.replacement_days` (no longer offered). Idempotent."""
    now = utcnow()
    offers = await rows_changed(session, _EXPIRE_OFFERS, {"now": now})
    leads = await rows_changed(
        session, update(Lead).where(Lead.status == "open", Lead.expires_at <= now).values(status="expired")
    )
    lapsed = now - timedelta(days=settings.windows.replacement_days)
    await session.execute(
        update(Exposure)
        .where(Exposure.replacement_owed_since.is_not(None), Exposure.replacement_owed_since < lapsed)
        .values(replacement_owed_since=None)
    )
    return offers, leads


async def open_leads_for(
    session: AsyncSession, settings: Settings, business_id: str, limit: int = 100
) -> list[tuple[str, int, float]]:
    """Open leads with a place left that fit this business (category, region, currency, deal range; not its own,
    not offered to it, or offered and withdrawn). A business that just became a candidate (a sign-up, a wider
    profile, back to active) may be the only one left for them, and their waves may have stopped for want of one.
    Returns each lead with its next wave and when to send it: never sooner than the category's wave delay after its
    last wave, so that nobody can hurry a lead past the businesses ranked first by signing up (a wave is
    idempotent: one already scheduled for that number makes the other delivery change nothing)."""
    now = utcnow()
    business = await session.get(Business, business_id)
    if business is None or business.status != "active":
        return []
    offered_here = exists().where(
        _offers.lead_id == _leads.id, _offers.business_id == business_id, _offers.status != "closed"
    )
    last_wave_at = select(func.max(_offers.created_at)).where(_offers.lead_id == _leads.id).scalar_subquery()
    rows = await session.execute(
        select(_leads.id, _leads.waves_sent, _leads.category, last_wave_at)
        .where(
            _leads.status == "open",
            _leads.expires_at > now,
            _leads.is_exclusive.is_(False),
            _leads.exposure_count < _leads.max_exposures,
            _leads.waves_sent > 0,  # a first wave is the intake's (or the sweep's) to send
            fits_business(business),
            ~offered_here,
        )
        .order_by(_leads.created_at)
        .limit(limit)
    )
    waves = []
    for lead_id, waves_sent, category, last_at in rows:
        due = 0.0
        if last_at is not None:
            last = last_at if last_at.tzinfo is not None else last_at.replace(tzinfo=now.tzinfo)
            due = max(0.0, (next_wave_at(settings, category, last) - now).total_seconds())
        waves.append((lead_id, waves_sent + 1, due))
    return waves


async def waves_to_send_again(session: AsyncSession, overdue_by: timedelta | None) -> list[tuple[str, int, float]]:
    """Open leads whose next wave should be on its way, as (lead, wave, seconds until it is due): a first wave that
    never went out, or a next wave due (`next_wave_at`) whose job was lost (a lost message; in process, a restart).
    `overdue_by`: those late by that much (the periodic sweep); None: every one scheduled, each at its time (a
    process that kept its jobs in memory starting again). A wave is idempotent: one sent twice changes nothing."""
    now = utcnow()
    cutoff = now - (overdue_by or timedelta(0))
    first = and_(Lead.waves_sent == 0, Lead.created_at <= cutoff)
    later = Lead.next_wave_at.is_not(None) if overdue_by is None else Lead.next_wave_at <= cutoff
    rows = await session.execute(
        select(Lead.id, Lead.waves_sent, Lead.next_wave_at)
        .where(Lead.status == "open", Lead.expires_at > now, or_(first, later))
        .limit(1000)
    )
    return [
        (lead_id, sent + 1, max(0.0, (due - now).total_seconds()) if due is not None else 0.0)
        for lead_id, sent, due in rows
    ]


async def statuses_of(session: AsyncSession, business_ids: list[str]) -> dict[str, str]:
    """Each business's account status (active, suspended, blocked)."""
    if not business_ids:
        return {}
    rows = await session.execute(select(Business.id, Business.status).where(Business.id.in_(business_ids)))
    return {business_id: status for business_id, status in rows}


async def offers_of_lead(session: AsyncSession, lead_id: str) -> list[Offer]:
    return list(await session.scalars(select(Offer).where(Offer.lead_id == lead_id).order_by(Offer.wave, Offer.rank)))


async def explain_ranking(
    session: AsyncSession, settings: Settings, ranker: Ranker, lead: Lead
) -> list[schemas.RankedCandidate]:
    """The lead's candidates as the ranker orders them now, each with its `position` in the whole list: those already
    offered the lead first (wave, rank and score as recorded on the offer, and the offer's status; `excluded` when the
    business has since been blocked or suspended), then the others in the order the next waves would offer it to them
    (none once no next wave goes out; a withdrawn offer's business among them; `excluded` when a deal maker owes more
    than its credit limit)."""
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
            rank=o.rank,
            score=o.score,
            factors=o.factors,
            offered=True,
            wave=o.wave,
            offer_status=o.status,
            excluded=None if statuses.get(o.business_id, "active") == "active" else statuses[o.business_id],
        )
        for o in offered
    ] + [
        schemas.RankedCandidate(
            business_id=r.business_id,
            rank=i,
            score=r.score,
            factors=r.factors,
            offered=False,
            excluded=schemas.OVER_CREDIT_LIMIT if r.business_id in owing else None,
        )
        for i, r in enumerate(ranked, start=1)
    ]
    inputs_of = getattr(ranker, "inputs_of", None)
    for position, candidate in enumerate(candidates, start=1):
        candidate.position = position
        if inputs_of is not None:
            candidate.inputs = inputs_of(candidate.business_id, lead.category)
    return candidates
