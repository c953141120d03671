"""Business commands: register, change the profile and the bids. An account's status (operators' suspensions, blocks
and the unreliable mark) is businesses/status.py. Services never commit."""

from __future__ import annotations

from typing import TypeVar

from msgspec import UnsetType
from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.businesses import schemas
from marketplace.clock import day_start, month_start, utcnow
from marketplace.clubs import services as clubs
from marketplace.contact import DEFAULT_REGION_BY_CURRENCY, normalise_email, normalise_phone
from marketplace.db.conflicts import violates
from marketplace.db.models import Business, BusinessCategory, BusinessRegion, Lead, Offer
from marketplace.db.models.businesses import with_profile
from marketplace.db.statements import rows_changed
from marketplace.errors import Conflict, FieldError, FieldErrors, Forbidden, InvalidInput, NotFound
from marketplace.identity.services import issue_business_token, refuse_if_blocked
from marketplace.ids import new_id
from marketplace.notifications.outbox import notify
from marketplace.offers.claims import CLOSE_OTHER_OFFERS, RECEIVED_AND_OWED
from marketplace.offers.matching import fits_business
from marketplace.pagination import after_time_cursor, check_limit, time_cursor
from marketplace.schemas import MoneyOut
from marketplace.settings import Settings
from marketplace.text import name_key, name_problem

T = TypeVar("T")


def _check_profile(
    settings: Settings,
    categories: list[str],
    regions: list[str],
    min_deal: int,
    max_deal: int,
    daily_cap: int,
    monthly_cap: int,
    kept: frozenset[str] = frozenset(),
) -> None:
    """`kept`: the profile fields a change left as stored (PATCH). A pair that disagrees is named by the field the
    client sent, not by the stored one it did not touch."""
    errors = [
        FieldError(f"profile.categories[{i}]", f"unknown category {code!r}")
        for i, code in enumerate(categories)
        if code not in settings.categories
    ]
    errors += [
        FieldError(f"profile.regions[{i}]", f"unknown region {code!r}")
        for i, code in enumerate(regions)
        if code not in settings.regions
    ]
    if max_deal < min_deal:
        if "max_deal_minor" in kept:
            errors.append(FieldError("profile.min_deal_minor", f"must not be above max_deal_minor ({max_deal})"))
        else:
            errors.append(FieldError("profile.max_deal_minor", "must not be below min_deal_minor"))
    if monthly_cap < daily_cap:
        if "monthly_cap" in kept:
            errors.append(FieldError("profile.daily_cap", f"must not be above monthly_cap ({monthly_cap})"))
        else:
            errors.append(FieldError("profile.monthly_cap", "must not be below daily_cap"))
    if errors:
        raise InvalidInput(errors[0].message if len(errors) == 1 else "the profile is invalid", errors=errors)


def _check_name(name: str) -> None:
    # The name is what customers and operators see: spaces or invisible characters alone are no name (text.blank).
    problem = name_problem(name)
    if problem is not None:
        raise InvalidInput.field("name", problem)


def _default_phone_region(settings: Settings) -> str:
    return DEFAULT_REGION_BY_CURRENCY.get(settings.currency, "IL")


async def register_business(
    session: AsyncSession, settings: Settings, data: schemas.BusinessCreate, *, by_the_marketplace: bool = False
) -> tuple[Business, str]:
    """A business signs up (or, `by_the_marketplace`, the marketplace registers it itself, as the demo market does:
    no invitation is asked for then, even where sign-up is by invitation)."""
    found = FieldErrors()
    if data.currency != settings.currency:
        found.add("currency", f"this marketplace works in {settings.currency}")
    found.check(_check_name, data.name)
    email = found.check(normalise_email, data.email, "email")
    phone = found.check(normalise_phone, data.phone, "phone", _default_phone_region(settings))
    p = data.profile
    categories, regions = sorted(set(p.categories)), sorted(set(p.regions))
    # Checked as sent, so that an error names the place the client gave the value; stored sorted, once each.
    found.check(
        _check_profile,
        settings,
        p.categories,
        p.regions,
        p.min_deal_minor,
        p.max_deal_minor,
        p.daily_cap,
        p.monthly_cap,
    )
    found.refuse_if_any("the sign-up is invalid")
    assert email is not None and phone is not None
    if data.invitation is None and settings.service.registration_by_invitation and not by_the_marketplace:
        raise Forbidden("sign-up is by invitation: send the invitation code a club gave you as `invitation`")
    if data.invitation is not None:
        await clubs.check_invitation(session, data.invitation, email)  # refused before anything is written
    await _check_phone_free_of_marks(session, phone)
    await _check_name_not_listed(session, data.name.strip())
    now = utcnow()
    business = Business(
        id=new_id("biz"),
        name=data.name.strip(),
        email=email,
        phone=phone,
        mode=data.mode,
        currency=data.currency,
        status="active",
        min_deal_minor=p.min_deal_minor,
        max_deal_minor=p.max_deal_minor,
        daily_cap=p.daily_cap,
        monthly_cap=p.monthly_cap,
        created_at=now,
        updated_at=now,
        category_rows=[BusinessCategory(category=c) for c in categories],
        region_rows=[BusinessRegion(region=r) for r in regions],
    )
    session.add(business)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        if not violates(exc, "uq_businesses_email"):
            raise
        raise _email_taken() from exc
    if data.invitation is not None:
        await clubs.join(session, data.invitation, business.id, email)
    token = issue_business_token(session, business.id)
    return business, token


async def get_business(session: AsyncSession, business_id: str, *, for_update: bool = False) -> Business:
    query = select(Business).where(Business.id == business_id).options(*with_profile())
    if for_update:
        # FOR NO KEY UPDATE, as offers._LOCK_CLAIMER: its callers change no key of the row, and FOR UPDATE would wait
        # for, and hold up, the key-share locks that a transaction writing a row referring to the business takes,
        # deadlocking with them. It still queues with a claim's lock on the row and a status held FOR SHARE
        # (identity.held_status).
        query = query.with_for_update(key_share=True)
    business = (await session.execute(query)).scalar_one_or_none()
    if business is None:
        raise NotFound(f"no business {business_id}")
    return business


def _given(value: T | UnsetType, current: T) -> T:
    """A patched field's new value, or its current one when the patch leaves it out."""
    return current if isinstance(value, UnsetType) else value


async def update_business(
    session: AsyncSession, settings: Settings, business_id: str, data: schemas.BusinessUpdate
) -> Business:
    business = await get_business(session, business_id, for_update=True)
    await refuse_if_blocked(session, business_id)  # under the row lock just taken: its status as of now
    # Every field is checked before any is changed, and all that are wrong are named at once.
    found = FieldErrors()
    if not isinstance(data.name, UnsetType):
        found.check(_check_name, data.name)
    email = found.check(normalise_email, data.email, "email") if not isinstance(data.email, UnsetType) else None
    phone = (
        found.check(normalise_phone, data.phone, "phone", _default_phone_region(settings))
        if not isinstance(data.phone, UnsetType)
        else None
    )
    profile = None
    if not isinstance(data.profile, UnsetType):
        p = data.profile
        profile = (
            _given(p.categories, business.categories),  # as sent: an error names the place the client gave it
            _given(p.regions, business.regions),
            _given(p.min_deal_minor, business.min_deal_minor),
            _given(p.max_deal_minor, business.max_deal_minor),
            _given(p.daily_cap, business.daily_cap),
            _given(p.monthly_cap, business.monthly_cap),
        )
        pairs = ("max_deal_minor", "monthly_cap")
        kept = frozenset(name for name in pairs if isinstance(getattr(p, name), UnsetType))
        found.check(_check_profile, settings, *profile, kept)
    found.refuse_if_any("the change is invalid")
    # Conflicts with the current state are checked before any field changes too: a refused change changes nothing.
    name = data.name.strip() if not isinstance(data.name, UnsetType) else business.name
    if name != business.name and business.unreliable_since is not None:
        # The public unreliable list names the business by its name: renamed, the warning would name whoever it
        # took the name of (an honest competitor, say) and no longer the business it is about.
        raise Conflict(
            "a business marked unreliable keeps the name it is listed under until an operator takes it off the list",
            errors=[FieldError("name", "cannot change while the business is marked unreliable")],
        )
    if name != business.name:
        await _check_name_not_listed(session, name, business.id)
    if phone is not None and phone != business.phone:
        await _check_phone_free_of_marks(session, phone)
    new_email = email if email is not None and email != business.email else None
    if new_email is not None:
        taken = await session.scalar(select(Business.id).where(Business.email == new_email, Business.id != business.id))
        if taken:
            raise _email_taken()
        # The address it had hears of the change, in this transaction: whoever holds a leaked token could otherwise
        # move the account's mail to itself first and then replace the token unheard (identity: the replacement's
        # message goes to the address of the moment; a review).
        notify(
            session,
            "account_email",
            business.email,
            "Your account's email was changed",
            f"{business.name}: the account's email was changed from this address to {new_email}. If you did not "
            "change it, its API token may be in someone else's hands: ask an operator for a new token, which cuts "
            "off every earlier one.",
            reference=business.id,
        )
        business.email = new_email
    business.name = name
    if phone is not None:
        business.phone = phone
    if profile is not None:
        sent_categories, sent_regions, min_deal, max_deal, daily, monthly = profile
        categories, regions = sorted(set(sent_categories)), sorted(set(sent_regions))
        if categories != business.categories:
            business.category_rows = [BusinessCategory(category=c) for c in categories]
        if regions != business.regions:
            business.region_rows = [BusinessRegion(region=r) for r in regions]
        business.min_deal_minor, business.max_deal_minor = min_deal, max_deal
        business.daily_cap, business.monthly_cap = daily, monthly
        # Offers it holds for leads that no longer fit the profile are withdrawn, as new ones are not made.
        unfit = select(Lead.id).where(~fits_business(business, categories, regions))
        await session.execute(
            update(Offer)
            .where(Offer.business_id == business.id, Offer.status == "open", Offer.lead_id.in_(unfit))
            .values(status="closed", withdrawn_for="unfit")
        )
        await _withdraw_offers_at_cap(session, settings, business)
    if session.is_modified(business):  # a change that changes nothing (an empty PATCH) is not an update
        business.updated_at = utcnow()
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        if not violates(exc, "uq_businesses_email"):
            raise
        raise _email_taken() from exc  # another business took the email between the check above and this write
    return business


async def _withdraw_offers_at_cap(session: AsyncSession, settings: Settings, business: Business) -> None:
    """A cap lowered to what the business has already received today or this month (leads it gave back do not
    count): every claim of its open offers would be refused, so they are withdrawn, as when a claim reaches a cap
    (offers.claims.claim_offer, with the same count and statement), a replacement's too (the debt stands, and is
    offered again once the cap allows)."""
    now, zone = utcnow(), settings.jurisdiction.zone
    today, this_month, _ = (
        await session.execute(
            RECEIVED_AND_OWED,
            {
                "business_id": business.id,
                "day": day_start(now, zone),
                "month": month_start(now, zone),
                "currency": business.currency,
            },
        )
    ).one()
    if today >= business.daily_cap or this_month >= business.monthly_cap:
        # No offer is being claimed here: an id no offer has keeps every open one in the withdrawal.
        await session.execute(CLOSE_OTHER_OFFERS, {"of_business": business.id, "claimed": ""})


async def _check_phone_free_of_marks(session: AsyncSession, phone: str) -> None:
    """Refuses a phone (normalised) of a business that is blocked or marked unreliable. Only the email is unique, so
    without this a blocked business came back at once under its name and phone with a new email, and was offered
    the leads its block had released. Businesses may otherwise share a phone (a franchise's branches)."""
    query = select(Business.id).where(
        Business.phone == phone,
        or_(Business.status == "blocked", Business.unreliable_since.is_not(None)),
    )
    if await session.scalar(query.limit(1)):
        raise Conflict(
            "this phone belongs to an account that was blocked or marked unreliable; contact the marketplace",
            errors=[FieldError("phone", "belongs to an account that was blocked or marked unreliable")],
        )


async def _check_name_not_listed(session: AsyncSession, name: str, business_id: str = "") -> None:
    """Refuses the name of a business on the public unreliable list, however it is written (text.name_key: case,
    punctuation and spaces aside): the list warns by name, so another business under it would carry the warning, and
    the listed one could come back under it with a new email and phone. (The listed business itself keeps its name:
    update_business.) Compared here, not in SQL, where SQLite's lower() folds ASCII letters only: the list is short."""
    key = name_key(name)
    listed = await session.scalars(
        select(Business.name).where(Business.unreliable_since.is_not(None), Business.id != business_id)
    )
    if any(name_key(other) == key for other in listed):
        raise Conflict(
            "a business of this name is on the public list of unreliable businesses; choose a name that tells yours "
            "apart",
            errors=[FieldError("name", "the name of a business listed as unreliable")],
        )


def _email_taken() -> Conflict:
    return Conflict(
        "a business with this email is already registered", errors=[FieldError("email", "already registered")]
    )


async def list_unreliable(session: AsyncSession, limit: int, cursor: str | None) -> tuple[list[Business], str | None]:
    """Newest marks first; the cursor holds the last listed business's mark time and id, so the next page goes on
    from there even if that business has since been taken off the list, or marked again."""
    query = select(Business).where(Business.unreliable_since.is_not(None))
    if cursor:
        since, after_id = after_time_cursor(cursor)
        query = query.where(
            or_(
                Business.unreliable_since < since,
                and_(Business.unreliable_since == since, Business.id < after_id),
            )
        )
    rows = list(
        await session.scalars(
            query.order_by(Business.unreliable_since.desc(), Business.id.desc()).limit(check_limit(limit) + 1)
        )
    )
    items = rows[:limit]
    last = items[-1] if len(rows) > limit and items else None
    return items, (time_cursor(last.unreliable_since, last.id) if last and last.unreliable_since else None)


def to_schema(business: Business) -> schemas.Business:
    return schemas.Business(
        id=business.id,
        name=business.name,
        email=business.email,
        phone=business.phone,
        mode=business.mode,
        currency=business.currency,
        status=business.status,
        unreliable=business.unreliable,
        profile=schemas.Profile(
            categories=business.categories,
            regions=business.regions,
            min_deal_minor=business.min_deal_minor,
            max_deal_minor=business.max_deal_minor,
            daily_cap=business.daily_cap,
            monthly_cap=business.monthly_cap,
        ),
        created_at=business.created_at,
        updated_at=business.updated_at,
    )


async def set_bids(
    session: AsyncSession, settings: Settings, business_id: str, data: schemas.BidsIn
) -> tuple[list[schemas.Bid], bool]:
    """A lead buyer's highest bid per category it serves, all of them at once (a category not named has its bid
    withdrawn); never below the category's price (the reserve). It pays the generalised second price of each lead,
    at most its bid. Refused as a whole, naming every error, with nothing changed. Returns the bids and whether a
    lowered bid withdrew open offers (their leads are then to be offered again: the controller's job)."""
    business = await get_business(session, business_id, for_update=True)
    await refuse_if_blocked(session, business_id)  # under the row lock just taken: its status as of now
    rows = {row.category: row for row in business.category_rows}
    errors = []
    named: set[str] = set()
    for i, bid in enumerate(data.bids):
        category = settings.categories.get(bid.category)
        if bid.category in named:
            errors.append(FieldError(f"bids[{i}].category", f"{bid.category!r} is named twice"))
            continue
        named.add(bid.category)
        if bid.category not in rows or category is None:
            errors.append(FieldError(f"bids[{i}].category", f"{bid.category!r} is not one of your categories"))
            continue
        if bid.max_bid is None:
            continue
        if bid.max_bid.currency != business.currency:
            errors.append(FieldError(f"bids[{i}].max_bid.currency", f"this marketplace works in {business.currency}"))
        elif bid.max_bid.amount_minor < category.lead_price_minor:
            errors.append(
                FieldError(
                    f"bids[{i}].max_bid.amount_minor",
                    f"must be at least the category's price {category.lead_price_minor}",
                )
            )
        elif bid.max_bid.amount_minor > category.exclusive_price_minor:
            # A shared place never costs more than the whole lead: above it, buy the lead exclusively.
            errors.append(
                FieldError(
                    f"bids[{i}].max_bid.amount_minor",
                    f"must be at most the category's exclusive price {category.exclusive_price_minor}",
                )
            )
    if errors:
        raise InvalidInput(errors[0].message if len(errors) == 1 else "the bids are invalid", errors=errors)
    # A PUT replaces the bids: a category of the business the body does not name has its bid withdrawn, as an
    # explicit null does (RFC 9110: the body is the new state, not a patch of the old one).
    wanted: dict[str, int | None] = {category: None for category in rows}
    wanted.update({bid.category: bid.max_bid.amount_minor if bid.max_bid is not None else None for bid in data.bids})
    withdrawn = 0
    for category_code, max_bid_minor in wanted.items():
        rows[category_code].max_bid_minor = max_bid_minor
        if category_code not in settings.categories:
            continue  # a category the marketplace no longer lists has no open offers to withdraw
        # An open offer's place was earned by the old bid: its second price is the least that kept the place in its
        # wave against the best candidate outside it. A bid lowered (or withdrawn: the list price) below that price
        # would not have earned it, so the offer is withdrawn rather than kept at a lower price (a buyer bidding high
        # to take a place and lowering the bid before claiming would otherwise take it at the list price, while the
        # others of its wave pay more for theirs). A bid still at or above the price would have earned the place: the
        # offer stays, at its price. A withdrawn offer does not count as offered: the lead is offered again (the
        # controller's offer_open_leads job), the business ranked by the bid in force among those not offered it yet.
        list_price = settings.categories[category_code].lead_price_minor
        ceiling = max_bid_minor if max_bid_minor is not None else list_price
        withdrawn += await rows_changed(
            session,
            update(Offer)
            .where(
                Offer.business_id == business.id,
                Offer.status == "open",
                Offer.price_minor > ceiling,
                Offer.lead_id.in_(select(Lead.id).where(Lead.category == category_code)),
            )
            .values(status="closed", withdrawn_for="bid_lowered"),
        )
    business.updated_at = utcnow()
    await session.flush()
    return bids_of(settings, business), withdrawn > 0


def bids_of(settings: Settings, business: Business) -> list[schemas.Bid]:
    return [
        schemas.Bid(
            category=row.category,
            list_price=MoneyOut(settings.categories[row.category].lead_price_minor, business.currency),
            max_bid=MoneyOut(row.max_bid_minor, business.currency) if row.max_bid_minor is not None else None,
        )
        for row in business.category_rows
        if row.category in settings.categories
    ]
