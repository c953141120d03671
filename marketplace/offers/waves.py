"""A lead's waves: each offers the lead to the next candidates the ranker orders and the database lets take it
(active, fitting it, under their caps and credit limit); the replacement a returned lead is owed; the open leads
whose next wave is due. A wave is idempotent, and services never commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, bindparam, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.clock import day_start, month_start, next_day_start, utcnow
from marketplace.db.conflicts import violates
from marketplace.db.models import Business, Exposure, Lead, Offer
from marketplace.db.statements import of_session, per_database, table
from marketplace.ids import new_id
from marketplace.jobs import Jobs
from marketplace.offers.matching import FITS_THE_LEAD, UNDER_CAPS, find_candidates, fits_business, owed_replacement
from marketplace.ranking.ports import LeadView, Ranked, Ranker
from marketplace.settings import Settings
from marketplace.uow import UnitOfWork
from marketplace.wallet.credit import OVER_CREDIT, over_credit_params


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
_LEADS, _OFFERS, _BUSINESSES = table(Lead), table(Offer), table(Business)
_leads, _offers, _businesses = _LEADS.c, _OFFERS.c, _BUSINESSES.c


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
# A later round's picks below an id the wave already holds: taken only if free now (SKIP LOCKED never waits), as
# waiting for a lower id while holding a higher one breaks the order every transaction takes business rows in.
_TRY_LOCK_PICKS = (
    select(_businesses.id)
    .where(_businesses.id.in_(bindparam("ids", expanding=True)))
    .order_by(_businesses.id)
    .with_for_update(key_share=True, skip_locked=True)
)
# The same question, marking nobody: asked of a wave's picks and of the business whose score set a lead buyer's price.
_ABLE = select(_businesses.id).where(*_CAN_TAKE_IT)
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


async def _lock_in_order(session: AsyncSession, ids: set[str], locked: set[str]) -> set[str]:
    """Lock these business rows (FOR NO KEY UPDATE) without breaking the id order: those above every id in `locked`
    waiting for their holders, in id order; those below only if free now. Adds what it locked to `locked`; returns
    those below that another transaction holds (not locked: the wave passes them over)."""
    top = max(locked) if locked else None
    below = sorted(i for i in ids if top is not None and i < top)
    above = sorted(i for i in ids if top is None or i > top)
    got = set((await session.execute(_TRY_LOCK_PICKS, {"ids": below})).scalars()) if below else set()
    # (A row that is not there is not returned either: passed over as well, as _able would refuse it anyway.)
    if above:
        await session.execute(_LOCK_PICKS, {"ids": above})
    locked |= got | set(above)
    return set(below) - got


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
    # prices included: a lead buyer's second price is set by the best candidate outside the wave, and one the
    # database would refuse is no competitor either. Asked first, marked after: a pick marked offered and then left
    # out of a wave chosen again would lose its turn in the rotation for nothing.
    # On PostgreSQL the rows asked about are locked first (FOR NO KEY UPDATE), in a statement of their own, so that the
    # question reads them as committed: a report taking a deal maker over its credit limit holds its row (FOR SHARE)
    # until it commits, and a statement that had waited for it would judge the balance by its own older snapshot
    # (offering the lead to a business whose report had just withdrawn its offers: a tester). The rows are taken in the
    # one order of the service (README, "Lock order"): the lead's (its wave counter, above) before any business's, and
    # businesses in id order. A round's new rows above every id the wave holds are waited for in id order; one below
    # (a later round's pick, after a refusal) is taken only if nobody holds it now, and one held is passed over for
    # this wave as a refused one is (waiting for it while holding a higher id deadlocked with a claim, a report or
    # another wave holding it and waiting for ours). One passed over so is still a candidate, merely busy (any act of
    # its own holds its row FOR SHARE): the lead goes on with a next wave after the delay, which asks it again, even
    # when the ranker, told it was left out, says nobody is left (else the lead waited for the next local day).
    left_out: set[str] = set()
    locked: set[str] = set()
    passed_over_busy: set[str] = set()
    lock_first = session.get_bind().dialect.name == "postgresql"
    while True:
        picks, more = await _candidates_in_order(
            session, ranker, lead, category.wave_size, now, settings.jurisdiction.zone, left_out
        )
        asked = {p.business_id for p in picks} | {p.priced_against for p in picks if p.priced_against is not None}
        busy: set[str] = set()
        if lock_first and asked - locked:
            busy = await _lock_in_order(session, asked - locked, locked)
            passed_over_busy |= busy
        refused = (asked - await _able(session, settings, lead, asked - busy, now)) if asked else set()
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
        # A newcomer waiting in the ranking core for its turn has had it once the offer stands (not when a ranking
        # placed it: a wave chosen again, or rolled back, ranks the lead again).
        told = getattr(ranker, "offered", None)
        if told is not None:
            view, offered_to = lead.view, [p.business_id for p in chosen]
            uow.after_commit(lambda: told(view, offered_to))
    # Candidates are left for a next wave (a busy one passed over among them), if the lead is not taken by then (the
    # delay counts open time).
    if more or passed_over_busy:
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
