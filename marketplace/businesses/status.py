"""An account's status, as operators change it: suspend, reactivate, block (by hand, or on a confirmed fraud alert:
fraud.decide), the public unreliable mark with it, and what follows: the business is told, a block gives its open
deals back to the market and takes the inquiries it sold off it, a business let back in is assessed afresh and offered
the open leads that fit it.

The fraud assessment a reactivation runs is passed in by the caller (`assess`: fraud.services.assess_businesses), so
that this module and the businesses' services do not import fraud (fraud imports them; only the HTTP routes,
`businesses/controllers.py`, hand the assessment over). Services never commit.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from msgspec import UnsetType
from sqlalchemy import exists, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.businesses import schemas
from marketplace.businesses.services import get_business
from marketplace.clock import utcnow
from marketplace.db.models import (
    Business,
    BusinessStatusChange,
    Exposure,
    FraudRelease,
    Lead,
    Offer,
    Operator,
    Survey,
)
from marketplace.errors import InvalidInput
from marketplace.exposures.moves import move_to
from marketplace.exposures.rules import UNDECIDED
from marketplace.identity.services import Principal
from marketplace.ids import new_id
from marketplace.jobs import Jobs
from marketplace.leads.services import free_a_place
from marketplace.leads.status import on_the_market
from marketplace.notifications.outbox import notify
from marketplace.offers.closing import withdraw_sold_leads
from marketplace.pagination import check_cursor, check_limit, page_of
from marketplace.settings import Settings
from marketplace.text import blank
from marketplace.uow import UnitOfWork

# Re-assesses businesses for fraud (fraud.services.assess_businesses): what a reactivation runs.
Assess = Callable[[AsyncSession, Settings, Sequence[str]], Awaitable[object]]


async def block_lists_unreliable(session: AsyncSession, business_id: str, asked: bool | UnsetType) -> bool | None:
    """What `POST .../block` asks of set_status for the public mark: `unreliable: true` lists the business, false
    leaves the list as it is (a block never takes a mark back: the status call does, with a reason), and left out
    lists it unless the business is blocked already. A retry, or a second block for another reason, changes only
    what it names: it would otherwise publish the mark the first block declined (`unreliable: false`). Read under
    the business's lock (set_status takes it again), so a block on its way is waited for, and read as it left it."""
    if not isinstance(asked, UnsetType):
        return True if asked else None
    await lock_a_blocks_leads(session, business_id)  # the leads' rows before the business's (README, "Lock order")
    business = await get_business(session, business_id, for_update=True)
    return None if business.status == "blocked" else True


async def lock_a_blocks_leads(session: AsyncSession, business_id: str) -> None:
    """The rows of the leads a block of this business may write, locked (FOR NO KEY UPDATE, as every taker of a lead's
    row) in id order, before its business's row is taken (README, "Lock order": a lead's row before any business's):
    those of its deal maker's deals a release may give back (release_open_deals: leads.free_a_place) and the inquiries
    it sold (offers.closing.withdraw_sold_leads), while on the market. Which they are is read unlocked, in the same
    statement. A claim or a wave holds a lead's row while it takes business rows (the claimant's, FOR SHARE; a wave's
    picks): a block that took its business's row first and its deals' leads after deadlocked with one on such a lead,
    and a business's own return, upgrade or deciding report (lead, then its business FOR SHARE) likewise. A deal made
    between this read and the business's lock (a claim that committed meanwhile) has its lead's row taken after, by the
    release, as before."""
    deals = select(Exposure.lead_id).where(
        Exposure.business_id == business_id,
        Exposure.mode == "deal_maker",
        Exposure.status.in_((*UNDECIDED, "lost")),
    )
    await session.execute(
        select(Lead.id)
        .where(
            or_(Lead.id.in_(deals), Lead.seller_business_id == business_id),
            *on_the_market(Lead, utcnow()),
        )
        .order_by(Lead.id)
        .with_for_update(key_share=True)
    )


async def set_status(
    session: AsyncSession,
    business_id: str,
    status: str,
    *,
    actor: str,
    reason: str,
    unreliable: bool | None = None,
    told: str | None = None,
) -> Business:
    """Operators only, kept with who made the change and why, and told to the business (an `account_status` message
    to its email, in this transaction's outbox) when it changes something, with `told` as the reason if given (the
    operators' own note may be theirs alone: a confirmed fraud alert's block tells what the alert found). A business
    that is no longer active loses the offers it has not claimed. `unreliable`: True lists it publicly as unreliable,
    False takes it off that list (an operator's correction, kept with its reason, which it needs), None leaves the
    list as it is, and so does False with a block (a block never takes a mark back, as `POST .../block`: the status
    call's `{"status": "blocked", "unreliable": false}` took the public warning off a business it kept blocked; the
    mark comes off as the business is let back in, `{"status": "active", "unreliable": false}`)."""
    if status == "blocked" and unreliable is False:
        unreliable = None
    if unreliable is False and blank(reason):  # zero-width characters alone say nothing either (text.blank)
        raise InvalidInput.field("reason", "say why the business comes off the unreliable list")
    business = await get_business(session, business_id, for_update=True)
    now = utcnow()
    # Saying it again (a second block, say) is kept as asked, but changes nothing: updated_at stays.
    listed = business.unreliable_since is not None
    changes = status != business.status or (unreliable is not None and unreliable != listed)
    if changes:
        shown = reason if told is None else told
        _tell_status(session, business, status, shown, listed=listed if unreliable is None else unreliable)
    if unreliable is False and business.unreliable_since is not None:
        business.unreliable_since = None
        reason = f"taken off the unreliable list: {reason}" if reason else "taken off the unreliable list"
    session.add(
        BusinessStatusChange(
            id=new_id("bsc"),
            business_id=business_id,
            from_status=business.status,
            to_status=status,
            unreliable=bool(unreliable) and business.unreliable_since is None,
            reason=reason or "no reason given",  # that none was given is worth keeping too
            changed_by=actor,
            changed_at=now,
        )
    )
    business.status = status
    if changes:
        business.updated_at = now
    if unreliable and business.unreliable_since is None:
        business.unreliable_since = now
    if status != "active":  # withdrawn for it ("suspended", "blocked"), which a claim once let back in is told
        await session.execute(
            update(Offer)
            .where(Offer.business_id == business_id, Offer.status == "open")
            .values(status="closed", withdrawn_for=status)
        )
    await session.flush()
    return business


async def status_changes(
    session: AsyncSession, business_id: str, limit: int, cursor: str | None
) -> tuple[list[schemas.StatusChangeOut], str | None]:
    """Every operator's change of the business's status or public mark, newest first (ids are time-ordered), with
    who made it and why; an unknown business is a 404."""
    after = check_cursor(cursor, "bsc")
    await get_business(session, business_id)
    query = (
        select(BusinessStatusChange, Operator.id, Operator.name)
        .outerjoin(Operator, BusinessStatusChange.changed_by == literal("operator:") + Operator.id)
        .where(BusinessStatusChange.business_id == business_id)
    )
    if after is not None:
        query = query.where(BusinessStatusChange.id < after)
    rows = list(await session.execute(query.order_by(BusinessStatusChange.id.desc()).limit(check_limit(limit) + 1)))
    items, next_cursor = page_of(rows, limit, lambda row: row[0].id)
    return [
        schemas.StatusChangeOut(
            id=change.id,
            from_status=change.from_status,
            status=change.to_status,
            listed_unreliable=change.unreliable,
            reason=change.reason,
            changed_by=change.changed_by,
            operator_id=operator_id,
            operator_name=operator_name,
            at=change.changed_at,
        )
        for change, operator_id, operator_name in items
    ], next_cursor


_STATUS_NEWS = {
    "active": (
        "Your account is active again",
        "An operator let your account back in: you are offered the leads that fit your profile again.",
    ),
    "suspended": (
        "Your account is suspended",
        "An operator suspended your account. Until it is let back in you are offered no leads and may not claim one, "
        "buy one exclusively, sell inquiries nor withdraw earnings; you may still read your account, report and "
        "return the deals you hold, and pay what you owe.",
    ),
    "blocked": (
        "Your account is blocked",
        "An operator blocked your account. You are offered no leads and may change nothing but the deals you kept: "
        "report them won, invoiced and paid. What you owe stays owed.",
    ),
}


def _tell_status(session: AsyncSession, business: Business, status: str, reason: str, *, listed: bool) -> None:
    """The business hears of an operator's change of its account from the marketplace, not by finding its calls
    refused: why, and what it may still do (a message to its email; `listed`: on the public unreliable list after
    the change)."""
    subject, body = _STATUS_NEWS[status]
    was_listed = business.unreliable_since is not None
    if status == business.status:  # only the public mark changes
        subject = "Your account is listed as unreliable" if listed else "Your account is off the unreliable list"
        body = ""
    if listed and not was_listed:
        body += " It is listed publicly as unreliable (GET /v1/unreliable)."
    elif was_listed and not listed:
        body += " It is no longer on the public list of unreliable businesses."
    body = f"{business.name}: {body.strip()} Reason: {reason.strip() or 'none given'}."
    notify(session, "account_status", business.email, subject, body, reference=business.id)


async def change_status(
    uow: UnitOfWork,
    settings: Settings,
    jobs: Jobs,
    business_id: str,
    status: str,
    *,
    operator: Principal,
    reason: str,
    assess: Assess,
    unreliable: bool | None = None,
    alert_id: str | None = None,
    told: str | None = None,
) -> Business:
    """An operator's change of an account's status, with what follows from it (by hand, or a confirmed alert's
    block, `alert_id`): a block gives the business's open leads back to the market (their next waves go out once it
    commits) and takes the inquiries it sold off it (offers.closing.withdraw_sold_leads); a business let back in is
    assessed afresh, as a dismissal does (what a decided alert held no longer counts against it, so the ranking reads
    its reliability as of now, not as of the block; `assess` does it: fraud.services.assess_businesses), and offered the
    open leads that fit it once it commits. The caller tells the ranking of the change (ranking_sync.changed)."""
    session = uow.session
    actor = operator.actor
    if status == "blocked":  # the leads it gives back or takes off the market, before the business's row
        await lock_a_blocks_leads(session, business_id)
    business = await set_status(
        session, business_id, status, actor=actor, reason=reason, unreliable=unreliable, told=told
    )
    if status == "blocked":
        for lead_id, wave in await release_open_deals(session, business_id, operator, utcnow(), alert_id=alert_id):
            uow.after_commit(functools.partial(jobs.enqueue, "send_wave", lead_id, wave))
        await withdraw_sold_leads(session, business_id)
    elif status == "active":
        await assess(session, settings, [business_id])
        uow.after_commit(functools.partial(jobs.enqueue, "offer_open_leads", business_id))
    return business


async def release_open_deals(
    session: AsyncSession, business_id: str, operator: Principal, now: datetime, *, alert_id: str | None = None
) -> list[tuple[str, int]]:
    """Give a blocked business's leads back to the market (on a confirmed fraud alert, or an operator's block):
    its open deals (closed as lost, with a note) and the leads it reported lost, each freeing its lead's slot
    once. Only leads still on the market (open or full, not past their time): a deal on an expired lead, or on a
    closed one (its customer hired a business, its seller was blocked), stays as it is. A lead whose customer says it
    hired a business (this one or another) stays where it is, whatever the business reported: that customer has been
    served, and a fresh round of calls would only bother them. Returns
    (lead, next wave) of the leads that are open again. Won, invoiced and paid deals stay: their commissions are
    owed whatever happens (the blocked business may still report a hired deal won, invoiced and paid). A deal
    maker's deals only: a lead buyer paid for its leads, and keeps them (and their contacts) as it keeps what it
    owes for them."""
    why = "after a confirmed fraud alert" if alert_id else "by an operator"
    hired = exists().where(Survey.lead_id == Exposure.lead_id, Survey.hired.is_(True))  # by whomever
    # Only a lead still on the market can go back to it: one past its time (expired, or not yet swept) would be
    # offered to nobody, so its deal stays as it is, contact and report duty with it (the business is blocked anyway).
    still_offered = exists().where(Lead.id == Exposure.lead_id, *on_the_market(Lead, now))
    exposures = list(
        await session.scalars(
            select(Exposure)
            .where(
                Exposure.business_id == business_id,
                Exposure.mode == "deal_maker",
                Exposure.status.in_((*UNDECIDED, "lost")),
                ~hired,
                still_offered,
                ~exists().where(FraudRelease.exposure_id == Exposure.id),
            )
            # In the leads' order: their rows are updated in it below, as another block's release updates them.
            .order_by(Exposure.lead_id, Exposure.id)
            .with_for_update()
        )
    )
    reopened: list[tuple[str, int]] = []
    for exposure in exposures:
        # The place first: the select above locked the business's deals, not their leads, and another deal maker's
        # `won` on the lead may have taken it off the market since (free_a_place checks again, in its update). Such a
        # deal stays as it is, as one on a closed lead does.
        freed = await free_a_place(session, exposure.lead_id, now)
        if freed is None:
            continue
        closing = exposure.status in UNDECIDED
        session.add(
            FraudRelease(
                exposure_id=exposure.id, lead_id=exposure.lead_id, alert_id=alert_id, released_at=now, closed=closing
            )
        )
        if closing:
            note = f"released to the market: the business was blocked {why}"
            move_to(session, exposure, operator.actor, "lost", note, now)
        reopened.append((exposure.lead_id, freed[1] + 1))
    await session.flush()
    return reopened
