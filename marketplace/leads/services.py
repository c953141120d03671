"""Lead intake: validate, normalise, deduplicate and store a lead with its contact kept apart."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Exists, Select, and_, bindparam, case, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.clock import utcnow
from marketplace.clubs.services import is_member
from marketplace.contact import DEFAULT_REGION_BY_CURRENCY, hide_contact_details, normalise_email, normalise_phone
from marketplace.db.models import Club, Exposure, Lead, LeadContact
from marketplace.db.models.leads import LeadStatus
from marketplace.errors import Conflict, FieldError, Forbidden, InvalidInput, NotFound
from marketplace.identity.links import read_referral_code
from marketplace.identity.services import refuse_if_inactive
from marketplace.ids import new_id
from marketplace.leads import schemas
from marketplace.leads.status import on_the_market
from marketplace.offers.matching import profile_fits
from marketplace.schemas import MoneyOut
from marketplace.settings import Settings
from marketplace.text import blank, name_problem


def dedup_key(category: str, phone_e164: str) -> str:
    return hashlib.sha256(f"{category}|{phone_e164}".encode()).hexdigest()


def _validate(settings: Settings, data: schemas.LeadCreate) -> list[FieldError]:
    errors = []
    if not data.consent:
        errors.append(FieldError("consent", "the customer must consent to being contacted"))
    if not data.category.strip():
        errors.append(FieldError("category", "required: one of GET /v1/categories"))
    elif data.category not in settings.categories:
        errors.append(FieldError("category", f"unknown category {data.category!r}"))
    if not data.region.strip():
        errors.append(FieldError("region", "required: one of GET /v1/regions"))
    elif data.region not in settings.regions:
        errors.append(FieldError("region", f"unknown region {data.region!r}"))
    if data.budget.currency != settings.currency:
        errors.append(FieldError("budget.currency", f"this marketplace works in {settings.currency}"))
    # Both are stored stripped: spaces or invisible characters alone would leave a lead nobody can read or a customer
    # without a name.
    if blank(data.description):
        errors.append(FieldError("description", "must not be blank"))
    name_wrong = name_problem(data.contact.name)
    if name_wrong is not None:
        errors.append(FieldError("contact.name", name_wrong))
    if data.referral_code is not None and read_referral_code(settings.service.secret_key, data.referral_code) is None:
        errors.append(FieldError("referral_code", "unknown referral code: codes are issued by the marketplace"))
    return errors


def _same_need(in_club: bool) -> Select[str]:
    """The lead a submission joins, if any (built once per shape: every intake reads it).

    The same customer's need inside a club and on the open market (or in another club) are two leads: served by
    different businesses, neither joins the other. Within the window a lead is joined while it is open, and once any
    business has had its contact whatever became of it since (sold in full, returned, or taken off the market because
    the customer hired someone: a submission a moment later is the same request again; as a new lead it would sell
    buyers a customer already served; a business selling back a contact it got here is refused before:
    _refuse_contact_received_here). Only a lead that ended unserved, its time run out with nobody holding it
    (`lead_ttl_hours` shorter than the window), is joined by nothing: asking again is the same need still unserved."""
    return (
        select(Lead.id)
        .where(
            Lead.dedup_key == bindparam("key"),
            Lead.created_at >= bindparam("window_start"),
            or_(Lead.exposure_count > 0, and_(Lead.status == "open", Lead.expires_at > bindparam("now"))),
            Lead.club_id == bindparam("club") if in_club else Lead.club_id.is_(None),
        )
        .order_by(Lead.created_at.desc())
        .limit(1)
    )


_SAME_NEED, _SAME_NEED_IN_CLUB = _same_need(False), _same_need(True)


def _received_here(column: Any) -> Exists:
    """Whether the seller ever held an exposure (any category, returned or not, whatever became of it) of a lead
    whose contact has this phone or email (`column`, compared with the normalised value)."""
    return exists().where(
        Exposure.business_id == bindparam("seller"),
        LeadContact.lead_id == Exposure.lead_id,
        column == bindparam("value"),
    )


_PHONE_RECEIVED_HERE = select(_received_here(LeadContact.phone))
_EMAIL_RECEIVED_HERE = select(_received_here(LeadContact.email))


async def _refuse_contact_received_here(session: AsyncSession, seller_business_id: str, phone: str, email: str) -> None:
    """A business sells only its own inquiries: a customer whose phone or email it got from the marketplace (a lead it
    was sold or assigned, in any category) is not one. Sold back, in the same category past the duplicate window or in
    another at any time, it would earn the seller's share of every claim of a contact it bought once (three claims pay
    more than the one price it paid), and the customer, who agreed to be called about its own request, would be called
    all over again about one it never made. Asked before the duplicate check, so that a refusal writes nothing."""
    errors = [
        FieldError(field, "a contact this business received from the marketplace")
        for field, query, value in (
            ("contact.phone", _PHONE_RECEIVED_HERE, phone),
            ("contact.email", _EMAIL_RECEIVED_HERE, email),
        )
        if await session.scalar(query, {"seller": seller_business_id, "value": value})
    ]
    if errors:
        raise Conflict(
            "this customer came to this business from the marketplace (a lead with this phone or email): a contact "
            "received here is not the business's own inquiry to sell",
            errors=errors,
        )


async def _refuse_what_the_seller_serves(
    session: AsyncSession, seller_business_id: str, data: schemas.LeadCreate
) -> None:
    """A business sells the inquiries it cannot serve: one its own profile holds (its category, region and deal size,
    as matching reads a profile: offers.matching) is its own customer to serve. Sold, it would be paid its share of
    what every rival pays for a contact it may serve itself. Asked before the duplicate check, so that a refusal
    writes nothing."""
    budget = data.budget.amount_minor
    if not await profile_fits(session, seller_business_id, data.category, data.region, budget, data.budget.currency):
        return
    raise InvalidInput(
        "this inquiry fits your own profile: serve it, or change your profile (its category, region and budget are "
        "all within it, and a business sells only the inquiries it cannot serve)",
        errors=[
            FieldError("category", "one of your profile's categories"),
            FieldError("region", "one of your profile's regions"),
            FieldError(
                "budget.amount_minor",
                "within your profile's deal range" if budget else "not stated (0), which fits every deal range",
            ),
        ],
    )


async def submit_lead(
    session: AsyncSession,
    settings: Settings,
    data: schemas.LeadCreate,
    *,
    seller_business_id: str | None = None,
) -> tuple[Lead, bool]:
    """Store a new lead, or count a duplicate (same contact and category within the window) as seen again.

    Returns the lead and whether it was a duplicate.
    """
    if seller_business_id is not None and data.referral_code is not None:
        # The seller is the sold inquiry's recommender, paid its share of what the lead brings: a referrer's rewards
        # on top (a partner's qualified-lead fee, 20.00 on a 60.00 lead whose seller earns 35.60) would cost the
        # marketplace more than the lead earns it. A referral code is a customer's own request's.
        raise InvalidInput.field(
            "referral_code", "an inquiry a business sells has its seller as recommender and takes no referral code"
        )
    if seller_business_id is not None:  # a blocked or suspended one sells nothing (it would earn from the claims)
        await refuse_if_inactive(session, seller_business_id)
    errors = _validate(settings, data)
    region = DEFAULT_REGION_BY_CURRENCY.get(settings.currency, "IL")
    phone = email = None
    try:
        phone = normalise_phone(data.contact.phone, "contact.phone", region)
    except InvalidInput as exc:
        errors += exc.errors
    try:
        email = normalise_email(data.contact.email, "contact.email")
    except InvalidInput as exc:
        errors += exc.errors
    if data.club is not None and await session.get(Club, data.club) is None:
        errors.append(FieldError("club", f"unknown club {data.club!r}"))
    if errors or phone is None or email is None:
        raise InvalidInput(errors[0].message if len(errors) == 1 else "the lead is invalid", errors=errors)
    if seller_business_id is not None and data.club is not None and not await is_member(
        session, data.club, seller_business_id
    ):
        raise Forbidden(f"only members of club {data.club} bring leads into it")
    if seller_business_id is not None:
        # A customer it got here is not its own, whatever the inquiry: that refusal (a 409) first.
        await _refuse_contact_received_here(session, seller_business_id, phone, email)
        await _refuse_what_the_seller_serves(session, seller_business_id, data)

    now = utcnow()
    key = dedup_key(data.category, phone)
    await _queue_on(session, key)
    window_start = now - timedelta(hours=settings.windows.dedup_hours)
    existing = await session.scalar(
        _SAME_NEED if data.club is None else _SAME_NEED_IN_CLUB,
        {"key": key, "window_start": window_start, "now": now, "club": data.club},
    )
    if existing is not None:
        await session.execute(
            update(Lead).where(Lead.id == existing).values(seen_count=Lead.seen_count + 1, last_seen_at=now)
        )
        lead = await session.get(Lead, existing, populate_existing=True)
        assert lead is not None
        return lead, True

    category = settings.categories[data.category]
    description = data.description.strip()
    # The lead's own phone and email are hidden however they are written in it: the service knows them.
    shown = hide_contact_details(description, region, phone=phone, email=email)
    lead = Lead(
        id=new_id("lead"),
        category=data.category,
        region=data.region,
        # Phone numbers and emails in the customer's words are part of its contact: hidden from the summary every
        # business is offered for free, and kept with the contact for those that hold it.
        description=shown,
        budget_minor=data.budget.amount_minor,
        currency=data.budget.currency,
        source="business" if seller_business_id else "customer",
        seller_business_id=seller_business_id,
        referral_code=data.referral_code,
        club_id=data.club,
        status="open",
        max_exposures=category.max_exposures,
        exposure_count=0,
        is_exclusive=False,
        waves_sent=0,
        seen_count=1,
        last_seen_at=now,
        dedup_key=key,
        created_at=now,
        expires_at=now + timedelta(hours=settings.windows.lead_ttl_hours),
    )
    session.add(lead)
    session.add(
        LeadContact(
            lead_id=lead.id,
            name=data.contact.name.strip(),
            phone=phone,
            email=email,
            description=description if description != shown else None,
        )
    )
    await session.flush()
    return lead, False


async def _queue_on(session: AsyncSession, key: str) -> None:
    """Make two submissions of one customer's need at the same moment queue, so that the second finds the first's
    lead (a 200 naming it) instead of both finding none and making two leads of one customer, which could then be
    sold exclusively twice. PostgreSQL: a lock on the key's hash until the commit (the look-up after it is a new
    statement and sees what the first committed). SQLite: every write transaction holds the database's write lock
    from its BEGIN IMMEDIATE (db/engine.py), so they queue already."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(func.pg_advisory_xact_lock(int.from_bytes(bytes.fromhex(key[:16]), signed=True))))


async def get_lead(session: AsyncSession, lead_id: str) -> Lead:
    lead = await session.get(Lead, lead_id)
    if lead is None:
        raise NotFound(f"no lead {lead_id}")
    return lead


class LeadColumns(Protocol):
    """What a lead's summary reads: a Lead, or a row holding these of its columns under their names."""

    id: str
    category: str
    region: str
    description: str
    budget_minor: int
    currency: str
    status: LeadStatus
    created_at: datetime
    club_id: str | None


def summary(lead: Lead | LeadColumns) -> schemas.LeadSummary:
    return schemas.LeadSummary(
        id=lead.id,
        category=lead.category,
        region=lead.region,
        description=lead.description,
        budget=MoneyOut(lead.budget_minor, lead.currency),
        status=lead.status,
        created_at=lead.created_at,
        club_id=lead.club_id,
    )


async def detail(session: AsyncSession, lead: Lead) -> schemas.LeadDetail:
    contact = await session.get(LeadContact, lead.id)
    assert contact is not None
    return schemas.LeadDetail(
        id=lead.id,
        category=lead.category,
        region=lead.region,
        description=contact.description or lead.description,  # operators see the customer's words
        budget=MoneyOut(lead.budget_minor, lead.currency),
        status=lead.status,
        source=lead.source,
        seller_business_id=lead.seller_business_id,
        referral_code=lead.referral_code,
        exposure_count=lead.exposure_count,
        max_exposures=lead.max_exposures,
        is_exclusive=lead.is_exclusive,
        seen_count=lead.seen_count,
        created_at=lead.created_at,
        expires_at=lead.expires_at,
        contact=schemas.Contact(name=contact.name, phone=contact.phone, email=contact.email),
        club_id=lead.club_id,
    )


async def free_a_place(session: AsyncSession, lead_id: str, now: datetime) -> tuple[str, int] | None:
    """An exposure of the lead gave its place back (a block's release; a return does not: end_exclusivity): the lead is
    open again, and exclusive no more. Returns its status and waves sent, or None when it is no longer on the market
    (open or full, before its time) or held no place (never below zero): nothing changed, and the caller leaves its
    deal as it is.

    The condition is in the update, not in what the caller read before: a deal maker's `won` on the same lead
    (offers.closing.take_off_the_market) may commit between the two, closing it with its expiry brought forward to a
    time after `now`; on PostgreSQL the update waits for that row and re-reads it, so a hired lead never goes back
    out."""
    row = (
        await session.execute(
            update(Lead)
            .where(
                Lead.id == lead_id,
                Lead.exposure_count > 0,
                *on_the_market(Lead, now),
            )
            .values(exposure_count=Lead.exposure_count - 1, is_exclusive=False, status="open")
            .returning(Lead.status, Lead.waves_sent)
        )
    ).one_or_none()
    return None if row is None else (row.status, row.waves_sent)


async def end_exclusivity(session: AsyncSession, lead_id: str, now: datetime) -> tuple[str, int] | None:
    """Its exclusive holder returned the lead (the one exposure an exclusive lead has): it is exclusive no more, and
    back on the market as a shared lead with the places it has left, open again unless none is left. The returned
    place stays used (a lead's contact reaches at most `max_exposures` businesses, returns included; unlike a block's
    release, free_a_place), and nobody may buy the lead exclusively again: the returner saw the contact (a claim or an
    upgrade refuses while any exposure of the lead, a returned one too, exists). Returns its status and waves sent, or
    None when it is no longer on the market (open or full, before its time) or was not exclusive: nothing changed.
    The caller holds the lead's row (exposures.services.return_exposure: README, "Lock order")."""
    row = (
        await session.execute(
            update(Lead)
            .where(Lead.id == lead_id, Lead.is_exclusive.is_(True), *on_the_market(Lead, now))
            .values(
                is_exclusive=False,
                status=case((Lead.exposure_count >= Lead.max_exposures, "full"), else_="open"),
                # Its next wave is due now: the caller sends it once this commits, and the periodic sweep of waves due
                # (offers.waves.waves_to_send_again) finds it again if that job is lost.
                next_wave_at=now,
            )
            .returning(Lead.status, Lead.waves_sent)
        )
    ).one_or_none()
    return None if row is None else (row.status, row.waves_sent)
