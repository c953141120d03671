"""Exposure commands: read own exposures, move the deal status, upgrade to exclusive, return, mark stale."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, TypeVar

import msgspec
from sqlalchemy import ColumnElement, and_, bindparam, case, exists, func, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.clock import rfc3339, utcnow
from marketplace.db.models import Exposure, ExposureEvent, FraudRelease, Lead, LeadContact, Offer, Survey
from marketplace.db.statements import rows_changed, table
from marketplace.errors import Conflict, FieldError, Forbidden, InvalidInput, NotFound
from marketplace.exposures import rules, schemas
from marketplace.exposures.moves import move_to
from marketplace.exposures.queries import CLOSED_BY_BLOCK, deal_maker_won, won_at_column
from marketplace.fraud import services as fraud
from marketplace.identity.services import Principal, held_status, refuse_if_blocked, refuse_if_inactive
from marketplace.leads.schemas import Contact
from marketplace.leads.services import LeadColumns, end_exclusivity, summary
from marketplace.offers.closing import close_open_offers, take_off_the_market, withdraw_offers_over_credit
from marketplace.offers.waves import offer_replacement
from marketplace.pagination import check_cursor
from marketplace.schemas import MoneyOut
from marketplace.settings import Settings
from marketplace.surveys import services as surveys
from marketplace.text import blank
from marketplace.wallet import charges, refunds
from marketplace.wallet.vat import VatBreakdown


@dataclass(frozen=True, slots=True)
class Before:
    """A deal as it stood before a move: what the ranking's history counted it as."""

    status: str
    stale: bool
    turnover_minor: int | None

    @classmethod
    def of(cls, exposure: Exposure) -> Before:
        return cls(exposure.status, exposure.stale, exposure.turnover_minor)


@dataclass(frozen=True, slots=True)
class StatusChange:
    exposure: Exposure
    before: Before


@dataclass(frozen=True, slots=True)
class Returned:
    exposure: Exposure
    before: Before
    replacement: Offer | None
    refund: VatBreakdown | None
    # The lead's next wave, when the return put it back on the market (an exclusive holder's: end_exclusivity); the
    # caller sends it once the return has committed, as a block's release does. None: its waves go on as they were.
    next_wave: int | None = None


# Built once (SQLAlchemy builds a statement and its cache key at each call otherwise, about as costly as the read):
# every status report reads its deal, and every exposure shown reads its release and history.
_OWN = select(Exposure).where(Exposure.id == bindparam("exposure_id"), Exposure.business_id == bindparam("business_id"))
_OWN_LOCKED = _OWN.with_for_update()
_RELEASED = select(FraudRelease.exposure_id).where(FraudRelease.exposure_id == bindparam("exposure_id"))
_LOCK_LEAD = select(Lead.id).where(Lead.id == bindparam("lead_id")).with_for_update(key_share=True)
# A business's deal's lead and mode, read before any row is locked: an act on a deal that takes its lead's row takes it
# first, before the business's and the deal's (README, "Lock order"). A row, not an object: the deal is loaded under its
# lock after.
_OWN_LEAD = select(Exposure.lead_id, Exposure.mode).where(
    Exposure.id == bindparam("exposure_id"), Exposure.business_id == bindparam("business_id")
)
# A returned deal's replacement offers (ix_offers_replaces_exposure_id): a claimed one first, then an open one.
_REPLACEMENT_OFFERS = (
    select(Offer.id, Offer.status, Offer.expires_at)
    .where(Offer.replaces_exposure_id == bindparam("exposure_id"), Offer.status.in_(("claimed", "open")))
    .order_by((Offer.status == "claimed").desc(), Offer.created_at.desc())
)
# What an exposure shows of its lead, its contact and its history, read as rows of the tables (Core): every answer
# about an exposure (a claim, a status report, the lists) shows them, and loading them as ORM objects cost more than
# reading them. An object the session already holds is used as it is (_held), as session.get would.
_LEAD_COLUMNS, _CONTACT_COLUMNS, _EVENT_COLUMNS = table(Lead).c, table(LeadContact).c, table(ExposureEvent).c
_LEAD_SHOWN = select(
    _LEAD_COLUMNS.id, _LEAD_COLUMNS.category, _LEAD_COLUMNS.region, _LEAD_COLUMNS.description,
    _LEAD_COLUMNS.budget_minor, _LEAD_COLUMNS.currency, _LEAD_COLUMNS.status, _LEAD_COLUMNS.created_at,
    _LEAD_COLUMNS.club_id, _LEAD_COLUMNS.seller_business_id,
).where(_LEAD_COLUMNS.id == bindparam("lead_id"))  # fmt: skip
_CONTACT_SHOWN = select(
    _CONTACT_COLUMNS.name, _CONTACT_COLUMNS.phone, _CONTACT_COLUMNS.email, _CONTACT_COLUMNS.description
).where(_CONTACT_COLUMNS.lead_id == bindparam("lead_id"))
_HISTORY = (
    select(
        _EVENT_COLUMNS.actor, _EVENT_COLUMNS.from_status, _EVENT_COLUMNS.to_status, _EVENT_COLUMNS.at,
        _EVENT_COLUMNS.turnover_minor, _EVENT_COLUMNS.note,
    )
    .where(_EVENT_COLUMNS.exposure_id == bindparam("exposure_id"))
    .order_by(_EVENT_COLUMNS.id)
)  # fmt: skip
# The customer's answered survey of the lead saying it hired this business: the lead made a deal, whatever the status.
_HIRED_ME = (
    select(Survey.id)
    .where(
        Survey.lead_id == bindparam("lead_id"),
        Survey.answered_at.is_not(None),
        Survey.hired.is_(True),
        Survey.business_id == bindparam("business_id"),
    )
    .limit(1)
)

# The customer hired a business for the lead, any business (its answer, or a deal maker's deal reported won on the
# lead: its word commits it to a commission; a lead buyer's free `won` is a lead manager of its own and takes nobody's
# return away, as it leaves the lead on the market): a customer with a real need, so the lead was relevant to whoever
# lost it to a competitor, whose return would turn a lost race into a free replacement or a refund (a lead closed
# because its seller was blocked, with no hire, may still be returned: it may never have been a customer's).
# A deal maker's `won` the customer contradicted, answering after the win that it hired nobody, is no hire: that
# answer put the lead back on the market (offers.closing.back_on_the_market), and those who take it then may return
# it as anyone may (the contradicted `won` left every later claim unreturnable, refunds and replacements lost).
_HIRED_ANYONE = select(
    exists().where(Survey.lead_id == bindparam("lead_id"), Survey.answered_at.is_not(None), Survey.hired.is_(True))
    | deal_maker_won(
        bindparam("lead_id"),
        ~exists().where(
            Survey.lead_id == Exposure.lead_id, Survey.answered_at >= won_at_column(), Survey.hired.is_(False)
        ),
    )
)


async def get_own(session: AsyncSession, business: Principal, exposure_id: str, *, lock: bool = False) -> Exposure:
    """A business's own exposure; another's is a 404, so ids reveal nothing."""
    params = {"exposure_id": exposure_id, "business_id": business.id}
    exposure = (await session.execute(_OWN_LOCKED if lock else _OWN, params)).scalar_one_or_none()
    if exposure is None:
        raise NotFound(f"no exposure {exposure_id}")
    return exposure


async def _lock_lead_of_own(session: AsyncSession, business: Principal, exposure_id: str) -> Any:
    """The business's deal's lead row locked (FOR NO KEY UPDATE), before its business's row and the deal's: claims and
    waves hold a lead's row while they take business rows, so an act that took the business's row first and the lead's
    after deadlocked with them. Returns the deal's (lead_id, mode); a deal not the business's is a 404."""
    row = (await session.execute(_OWN_LEAD, {"exposure_id": exposure_id, "business_id": business.id})).one_or_none()
    if row is None:
        raise NotFound(f"no exposure {exposure_id}")
    await session.execute(_LOCK_LEAD, {"lead_id": row.lead_id})
    return row


async def _released(session: AsyncSession, exposure: Exposure) -> bool:
    """Whether a block gave this (lost) deal's place back to the market (businesses.status.release_open_deals)."""
    found = await session.scalar(_RELEASED, {"exposure_id": exposure.id})
    return found is not None


class ContactColumns(Protocol):
    """What an exposure shows of a lead's contact: a LeadContact, or a row of these of its columns."""

    name: str
    phone: str
    email: str | None
    description: str | None


class ShownLead(LeadColumns, Protocol):
    """What an exposure's answer and its ranking event read of the lead: a Lead, or a row of _LEAD_SHOWN."""

    seller_business_id: str | None


M = TypeVar("M")


def _held(session: AsyncSession, model: type[M], key: str) -> M | None:
    """The object of this row that the session holds, loaded and not expired (what session.get would hand back
    without a query); None when it holds none."""
    mapper = sa_inspect(model)
    held = session.sync_session.identity_map.get(mapper.identity_key_from_primary_key([key]))
    if held is None or sa_inspect(held).expired_attributes:
        return None
    return held


async def lead_shown(session: AsyncSession, lead_id: str) -> Lead | ShownLead:
    """The exposure's lead as its answer shows it: the Lead the session holds, else its columns read as a row."""
    held = _held(session, Lead, lead_id)
    if held is not None:
        return held
    row = (await session.execute(_LEAD_SHOWN, {"lead_id": lead_id})).one_or_none()
    if row is None:
        raise NotFound(f"no lead {lead_id}")
    return row


def _contact_of(row: ContactColumns | None) -> Contact | None:
    return None if row is None else Contact(name=row.name, phone=row.phone, email=row.email)


def _description(lead: LeadColumns, row: ContactColumns | None) -> str:
    """The lead's description as the exposure shows it: the customer's words, contact details and all, while the
    contact is visible; else the summary's, with them hidden."""
    return row.description if row is not None and row.description is not None else lead.description


async def _visible_contact_row(session: AsyncSession, exposure: Exposure) -> ContactColumns | None:
    """The lead's contact as its exposure shows it: none once returned, or released by a block (its place went
    back to the market, so the contact is no longer this business's to see)."""
    if exposure.status == "returned":
        return None
    if exposure.status == "lost" and await _released(session, exposure):
        return None
    held = _held(session, LeadContact, exposure.lead_id)
    if held is not None:
        return held
    return (await session.execute(_CONTACT_SHOWN, {"lead_id": exposure.lead_id})).one_or_none()


async def to_schema(
    session: AsyncSession,
    settings: Settings,
    exposure: Exposure,
    *,
    history: Sequence[ExposureEvent] | None = None,
    lead: Lead | ShownLead | None = None,
) -> schemas.Exposure:
    """The exposure as its business sees it. `history`: its events, when the caller holds all of them (a claim
    just made the first), so they are not read back; `lead`: its lead, when the caller has read it (lead_shown)."""
    if lead is None:
        lead = await lead_shown(session, exposure.lead_id)
    row = await _visible_contact_row(session, exposure)
    contact = _contact_of(row)
    shown = msgspec.structs.replace(summary(lead), description=_description(lead, row))
    events = history if history is not None else (await session.execute(_HISTORY, {"exposure_id": exposure.id})).all()
    cur = exposure.currency
    return schemas.Exposure(
        id=exposure.id,
        lead_id=exposure.lead_id,
        offer_id=exposure.offer_id,
        business_id=exposure.business_id,
        mode=exposure.mode,
        kind=exposure.kind,
        price=MoneyOut(exposure.price_minor, cur),
        commission_rate_bp=exposure.commission_rate_bp if exposure.mode == "deal_maker" else None,
        status=exposure.status,
        turnover=None if exposure.turnover_minor is None else MoneyOut(exposure.turnover_minor, cur),
        # A won deal marked stale before mark_stale kept to undecided deals is not stale (rules.STALEABLE).
        stale=exposure.stale and exposure.status in rules.STALEABLE,
        lead=shown,
        contact=contact,
        created_at=exposure.created_at,
        status_changed_at=exposure.status_changed_at,
        returnable_until=(
            exposure.created_at + timedelta(days=settings.windows.return_days)
            if exposure.status in rules.RETURNABLE
            else None
        ),
        returned_at=exposure.returned_at,
        return_reason=exposure.return_reason,
        replacement=await replacement_of(session, settings, exposure),
        history=[schemas.HistoryEntry.of(e, cur) for e in events],
    )


async def replacement_of(session: AsyncSession, settings: Settings, exposure: Exposure) -> schemas.Replacement | None:
    """What a deal maker's returned exposure is owed (None for any other). The debt itself is cleared both when a
    replacement is claimed and when it lapses (offers.closing.expire_lapsed): the offers that name the exposure tell
    the two apart, and the window the lapse, before the sweep has run too."""
    if exposure.mode != "deal_maker" or exposure.returned_at is None:
        return None
    owed_until = exposure.returned_at + timedelta(days=settings.windows.replacement_days)
    now = utcnow()
    offers = list(await session.execute(_REPLACEMENT_OFFERS, {"exposure_id": exposure.id}))
    for offer_id, status, _ in offers:
        if status == "claimed":  # taken before any alert said the return was false: it stands, as it was
            return schemas.Replacement("claimed", owed_until, offer_id)
    if exposure.replacement_forfeited_at is not None:  # a confirmed alert found the return false
        return schemas.Replacement("forfeited", owed_until, forfeited_at=exposure.replacement_forfeited_at)
    for offer_id, _, expires_at in offers:
        if expires_at > now:  # open and not past its time (the expiry sweep may not have run yet)
            return schemas.Replacement("offered", owed_until, offer_id)
    if exposure.replacement_owed_since is not None and now <= owed_until:
        # Held while an open alert names the return as contradicted by its customer (fraud.services).
        return schemas.Replacement("held" if exposure.replacement_held_by else "owed", owed_until)
    return schemas.Replacement("lapsed", owed_until)


@dataclass(frozen=True, slots=True)
class ShownNow:
    """What a business's exposure shows of the lead now: its contact (None once returned or released) and the
    description (None when the lead is not found)."""

    contact: Contact | None
    description: str | None


async def shown_now(session: AsyncSession, business_id: str, exposure_id: Any) -> ShownNow | None:
    """The contact and description as the business's exposure may show them now (once it was returned: no contact,
    and the description with contact details hidden); None when the exposure is not the business's."""
    exposure = await session.get(Exposure, exposure_id)
    if exposure is None or exposure.business_id != business_id:
        return None
    row = await _visible_contact_row(session, exposure)
    contact = _contact_of(row)
    lead = await session.get(Lead, exposure.lead_id)
    return ShownNow(contact, None if lead is None else _description(lead, row))


async def list_own(
    session: AsyncSession, business: Principal, limit: int, cursor: str | None, status: str | None
) -> tuple[list[Exposure], str | None]:
    query = select(Exposure).where(Exposure.business_id == business.id)
    if status is not None:
        # A misspelt filter is an error, not an empty list that reads as "no such deals".
        if status not in rules.NEXT:
            raise InvalidInput.field("status", f"one of {', '.join(rules.NEXT)}")
        query = query.where(Exposure.status == status)
    if check_cursor(cursor, "exp"):
        query = query.where(Exposure.id < cursor)
    rows = list(await session.scalars(query.order_by(Exposure.id.desc()).limit(limit + 1)))
    items = rows[:limit]
    return items, (items[-1].id if len(rows) > limit and items else None)


async def update_status(
    session: AsyncSession, settings: Settings, business: Principal, exposure_id: str, data: schemas.StatusUpdate
) -> StatusChange:
    # A report that may decide the deal (won, invoiced, paid, lost) takes the lead's row first (README, "Lock order"):
    # a decision asks the customer (surveys.request_survey holds the lead's row: one survey for two reports at once),
    # and a deal maker's win takes the lead off the market, so a return of another holder's deal on the lead, which
    # refuses once the customer hired someone (_HIRED_ANYONE), either committed first or waits and sees this win; never
    # refunded beside it (a review found the gap). Taken after the business's row, as it was, it deadlocked with claims
    # and waves, which hold the lead's row while they take business rows.
    if data.status in rules.DECIDED:
        await _lock_lead_of_own(session, business, exposure_id)
    # Its status in the database (the principal may be a moment old: another process's block), its row taken
    # before the deal's, as a block takes them.
    status = await held_status(session, business.id)
    exposure = await get_own(session, business, exposure_id, lock=True)
    before = Before.of(exposure)
    if status == "blocked":
        # What it may still report: the deals it kept through the block (those it won, and those whose customer
        # says it hired it) won, invoiced and paid, so their commission is charged.
        if data.status not in rules.WON:
            raise Forbidden("this account is blocked: it may only report the deals it still holds won, invoiced, paid")
        if data.turnover is not None and exposure.turnover_minor not in (None, data.turnover.amount_minor):
            raise Forbidden("this account is blocked: the turnover it reported stands")
    if not rules.can_move(exposure.status, data.status):
        allowed = rules.allowed_next(exposure.status)
        raise Conflict(
            f"cannot go from {exposure.status} to {data.status}; allowed next: {', '.join(allowed) or 'none'}",
            extra={"current_status": exposure.status, "allowed_next": list(allowed)},
        )
    if data.turnover is not None:
        if data.status not in rules.WON:
            raise InvalidInput.field("turnover", "a turnover belongs to a won, invoiced or paid deal")
        if data.turnover.currency != exposure.currency:
            raise InvalidInput.field("turnover.currency", f"this deal is in {exposure.currency}")
        if data.turnover.amount_minor == 0:
            raise InvalidInput.field("turnover.amount_minor", "a deal's turnover is above zero")
        exposure.turnover_minor = data.turnover.amount_minor
    if rules.turnover_required(data.status, exposure.mode) and exposure.turnover_minor is None:
        raise InvalidInput(
            "a deal maker's paid deal needs its turnover (the commission is its share)",
            errors=[FieldError("turnover", "required for paid")],
        )
    # The customer's decision this report states (won, lost, or none): a skip past won wins the deal on the way.
    decided = rules.decision(before.status, data.status)
    # One moment for the event and the deal: the ranking dates a win by either (events.Moved.at, won_at_column).
    now = utcnow()
    move_to(session, exposure, business.actor, data.status, data.note, now)
    await session.flush()
    # A won or lost deal asks the customer how it went; every report is news for the fraud assessment. Won by its
    # decision, not its name: a report of invoiced or paid straight from an undecided deal wins it on the way.
    await surveys.on_deal_reported(session, settings, exposure, decided)
    if exposure.mode == "deal_maker" and decided == "won":
        # The customer hired this business: nobody else is offered, nor sold, its contact from now on. Only a deal
        # maker's word, which commits it to a commission: a lead buyer's reports are a lead manager of its own that
        # owes nothing, and its free `won` would otherwise buy exclusivity at the shared price. (Its customer's
        # survey answer naming a hire still takes the lead off the market: surveys.answer_survey.)
        await take_off_the_market(session, exposure.lead_id)
    if data.status == "paid" and exposure.mode == "deal_maker":
        lead = await session.get(Lead, exposure.lead_id)
        assert lead is not None
        await charges.settle_commission(session, settings, exposure, lead)
        await withdraw_offers_over_credit(session, settings, exposure.business_id)
    return StatusChange(exposure, before)


async def upgrade_to_exclusive(
    session: AsyncSession, settings: Settings, business: Principal, exposure_id: str
) -> Exposure:
    """A lead buyer holding the only exposure buys it exclusively, paying the difference to the exclusive price."""
    # The lead's row first, then the business's and the deal's (README, "Lock order"): the upgrade writes the lead.
    await _lock_lead_of_own(session, business, exposure_id)
    await refuse_if_inactive(session, business.id)  # the business row before the deal's, as a block takes them
    exposure = await get_own(session, business, exposure_id, lock=True)
    if exposure.kind == "exclusive":
        raise Conflict("this exposure is already exclusive")
    if exposure.status == "returned":  # its contact went back with it: nothing is left to buy exclusively
        raise Conflict("this exposure was returned: a returned lead cannot be bought exclusively")
    if exposure.kind != "shared":
        raise Conflict("only a lead buyer's shared exposure can become exclusive")
    # Decided by the lead row: only while this exposure is the one and only, and no competitor has ever seen the
    # contact (an exposure returned since still counts).
    won = await rows_changed(
        session,
        update(Lead)
        .where(
            Lead.id == exposure.lead_id,
            # Still on the market: once its time is up (or the customer hired someone), exclusivity keeps nobody out.
            Lead.expires_at > utcnow(),
            Lead.exposure_count == 1,
            Lead.is_exclusive.is_(False),
            ~exists().where(Exposure.lead_id == Lead.id, Exposure.business_id != business.id),
        )
        .values(is_exclusive=True, status="full"),
    )
    if won != 1:
        lead = await session.get(Lead, exposure.lead_id, populate_existing=True)
        if lead is not None and lead.status == "closed":
            raise Conflict(
                "this lead is closed: it was taken off the market (its customer hired a business, or its seller was "
                "blocked)"
            )
        if lead is not None and lead.expires_at <= utcnow():
            raise Conflict("this lead is no longer on the market: its time ran out")
        raise Conflict("a competitor has seen this lead's contact, so it can no longer be exclusive")
    lead = await session.get(Lead, exposure.lead_id, populate_existing=True)
    assert lead is not None
    category = settings.categories[lead.category]
    difference = category.exclusive_price_minor - exposure.price_minor
    exposure.kind = "exclusive"
    if difference > 0:
        exposure.price_minor = category.exclusive_price_minor
        await charges.charge_exposure(session, settings, exposure, lead, price_minor=difference, step="upgrade")
    session.add(
        ExposureEvent(
            exposure_id=exposure.id,
            actor=business.actor,
            from_status=exposure.status,
            to_status=exposure.status,
            note="upgraded to exclusive",
            at=utcnow(),
        )
    )
    await close_open_offers(session, lead.id)
    await session.flush()
    return exposure


async def return_exposure(
    session: AsyncSession, settings: Settings, business: Principal, exposure_id: str, reason: str
) -> Returned:
    """Return an irrelevant lead within the window, while new or contacted (rules.RETURNABLE): a deal maker gets a
    replacement offer (another lead), a lead buyer's price is owed back as a refund (the wallet credits it). The
    returned lead's place does not go back to the market: the business has seen the contact, and a lead is exposed to
    at most `max_exposures` businesses (the customer is called by no more; nor can a claim and a return hand the
    contact on). It no longer counts against the business's caps. An exclusive lead returned by its holder is
    exclusive no more and goes back on the market with the places it has left (end_exclusivity; `next_wave` of the
    answer: its next wave, for the caller to send once this commits)."""
    if blank(reason):  # zero-width characters alone say nothing either (text.blank)
        raise InvalidInput.field("reason", "say why the lead is irrelevant")
    # The lead's row first (README, "Lock order"), before anything is checked, then the business's and the deal's: its
    # claims and waves take it before any business row, and so does a customer's survey answer (surveys.answer_survey).
    # A return and a concurrent claim of the lead follow one another, so each sees the other (the qualified-lead fee a
    # return takes back goes to a claim made meanwhile); and an answer that this business was hired either committed
    # before the hire check below reads it (a 409), or waits until the return has committed (a return then hired: a
    # fraud signal), never a refund made after the hire was committed.
    await _lock_lead_of_own(session, business, exposure_id)
    await refuse_if_blocked(session, business.id)  # the business row before the deal's, as a block takes them
    exposure = await get_own(session, business, exposure_id, lock=True)
    before = Before.of(exposure)
    now = utcnow()
    # A deal a block released is `lost` by the block's doing, not the business's report: said as it is.
    if exposure.status == "lost" and await _released(session, exposure):
        raise Conflict("this lead was released by a block: its place already went back to the market")
    if exposure.status not in rules.RETURNABLE:
        raise Conflict(rules.why_not_returnable(exposure.status))
    # A lead is returnable only before it was worked as a relevant one (rules.RETURNABLE): the customer's word that it
    # hired this business is a deal, whatever the business reported (contacted, or nothing yet).
    if await session.scalar(_HIRED_ME, {"lead_id": exposure.lead_id, "business_id": business.id}) is not None:
        raise Conflict("the customer says it hired this business for this lead: it is a deal, not an irrelevant lead")
    if await session.scalar(_HIRED_ANYONE, {"lead_id": exposure.lead_id}):
        raise Conflict(
            "the customer hired a business for this lead (a competitor's deal, or the customer's own answer): a lead "
            "whose customer hired someone was relevant, and is not returned"
        )
    deadline = exposure.created_at + timedelta(days=settings.windows.return_days)
    if now > deadline:
        raise Conflict(
            f"the return window closed at {rfc3339(deadline)}", extra={"returnable_until": rfc3339(deadline)}
        )
    move_to(session, exposure, business.actor, "returned", reason.strip(), now)
    exposure.returned_at = now
    exposure.return_reason = reason.strip()
    fraud.mark_dirty(session, business.id)
    replacement, refund, next_wave = None, None, None
    if exposure.mode == "deal_maker":
        replacement = await offer_replacement(session, settings, business.id, exposure)
        if settings.windows.replacement_days > 0:
            # Owed until a replacement is claimed: with none open now, the next lead that fits is offered as one;
            # one offered now that closes unclaimed (its lead filled first, the offer expired) leaves it owed too.
            exposure.replacement_owed_since = now
    else:
        refund = await refunds.refund_exposure(session, settings, exposure)
    if exposure.kind == "exclusive":
        # The only holder of an exclusive lead gave it back: kept off the market until it expired, the lead was a
        # refund's worth of keeping every competitor out. It goes back as a shared lead with the places it has left (the
        # returned one stays used, and none may buy it exclusively now that the returner saw the contact); its waves go
        # on, offering it again to those whose offers were withdrawn as it filled (a withdrawn offer is made again).
        reopened = await end_exclusivity(session, exposure.lead_id, now)
        if reopened is not None and reopened[0] == "open":
            next_wave = reopened[1] + 1
    lead = await session.get(Lead, exposure.lead_id)
    if lead is not None:  # a partner's qualified-lead fee stands on a claim that is kept
        await refunds.claim_returned(session, settings, lead, exposure)
    await session.flush()
    return Returned(exposure, before, replacement, refund, next_wave)


async def mark_stale(session: AsyncSession, settings: Settings) -> int:
    """Undecided deals with no update for `stale_days` become stale (a won deal waiting for its payment does not:
    rules.STALEABLE); their businesses have news for the fraud assessment (a stale lead is one of its signals).
    Idempotent. Returns how many deals became stale."""
    cutoff = utcnow() - timedelta(days=settings.windows.stale_days)
    owners = list(
        await session.scalars(
            update(Exposure)
            .where(
                Exposure.status.in_(rules.STALEABLE), Exposure.status_changed_at <= cutoff, Exposure.stale.is_(False)
            )
            .values(stale=True)
            .returning(Exposure.business_id)
        )
    )
    fraud.mark_dirty(session, *owners)
    return len(owners)


async def business_stats(session: AsyncSession, business_id: str) -> schemas.BusinessStats:
    def count_where(condition: ColumnElement[bool]) -> ColumnElement[int]:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    row = (
        await session.execute(
            select(
                func.count(Exposure.id),
                count_where(Exposure.status == "returned"),
                count_where(and_(Exposure.stale.is_(True), Exposure.status.in_(rules.STALEABLE))),
                count_where(Exposure.status.in_(rules.WON)),
                count_where(and_(Exposure.status == "lost", Exposure.id.not_in(CLOSED_BY_BLOCK))),
                count_where(Exposure.status == "paid"),
                count_where(Exposure.id.in_(CLOSED_BY_BLOCK)),
            ).where(Exposure.business_id == business_id)
        )
    ).one()
    total, returned, stale, won, lost, paid, closed_by_block = (int(v or 0) for v in row)
    return schemas.BusinessStats(
        business_id=business_id,
        exposures=total,
        returned=returned,
        return_rate_bp=(returned * 10_000 // total) if total else 0,
        stale=stale,
        won=won,
        lost=lost,
        paid=paid,
        closed_by_block=closed_by_block,
    )
