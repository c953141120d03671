"""Customers' surveys: a signed link mailed when a deal is reported won or lost or its lead goes quiet, the
customer's answer (whom it hired, for how much, how satisfied), and what that answer changes: the lead leaves the
market on a hire (and goes back on it when the customer hired nobody and a deal maker's `won` alone had taken it
off), and the lead's businesses are due for the fraud module's assessment (fraud.services.mark_dirty)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import and_, bindparam, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.clock import utcnow
from marketplace.db.models import (
    Business,
    Exposure,
    Lead,
    LeadContact,
    Survey,
    UsedLink,
)
from marketplace.errors import FieldError, Gone, InvalidInput, NotFound
from marketplace.exposures.queries import CLOSED_BY_BLOCK
from marketplace.exposures.rules import UNDECIDED
from marketplace.fraud.services import mark_dirty
from marketplace.identity.links import read_link, sign_link
from marketplace.identity.services import spend_link
from marketplace.ids import new_id
from marketplace.notifications.outbox import notify
from marketplace.offers.closing import back_on_the_market, take_off_the_market
from marketplace.settings import Settings
from marketplace.surveys import schemas

SURVEY = "survey"  # the signed link's purpose
# Deals that leave a lead quiet: open ones, returned ones, and a deal maker's own `lost` report (reported lost at
# once, its lead's only survey went out before the customer decided, and a deal closed later would stay hidden behind
# it; asked again, a customer who names the business contradicts the report). Not a lead buyer's lost (it owes no
# commission on its deals), nor a deal a block closed (not the business's report).
QUIET_DEALS = or_(
    Exposure.status.in_((*UNDECIDED, "returned")),
    and_(Exposure.status == "lost", Exposure.mode == "deal_maker", Exposure.id.not_in(CLOSED_BY_BLOCK)),
)
# Leads older than this are not surveyed when they go quiet (a first deploy must not mail last year's customers).
QUIET_HORIZON = timedelta(days=90)


# Built once (SQLAlchemy builds a statement and its cache key at each call otherwise, about as costly as the read):
# a won or lost report asks for a survey, and a customer's answer reads the survey and the lead's holders.
# FOR NO KEY UPDATE, as every other taker of a lead's row: it serialises the reports all the same, and does not wait
# for (nor hold up) the key-share locks of rows referring to the lead (an offer made of it, an exposure).
_LEAD_LOCKED = select(Lead).where(Lead.id == bindparam("lead_id")).with_for_update(key_share=True)
_SURVEYS_OF_LEAD = select(Survey).where(Survey.lead_id == bindparam("lead_id"))
_SURVEY_OF_LINK = select(Survey).where(Survey.link_id == bindparam("link_id"))
_HOLDERS = (
    select(Business.id, Business.name)
    .join(Exposure, Exposure.business_id == Business.id)
    .where(Exposure.lead_id == bindparam("lead_id"))
    .order_by(Exposure.created_at, Exposure.id)
)


async def request_survey(
    session: AsyncSession, settings: Settings, lead_id: str, cause: str, exposure_id: str | None = None
) -> Survey | None:
    """Send the lead's customer a survey link, unless it cannot be reached or was asked enough: one
    unanswered survey at a time, none after the customer named whom it hired, at most
    `max_surveys_per_lead`, and after a lead went quiet only if no survey went out for as long."""
    now = utcnow()
    contact = await session.get(LeadContact, lead_id)
    if contact is None or not contact.email:
        return None
    # The lead row serialises two businesses reporting on the same lead at once (one survey, not two).
    lead = (await session.execute(_LEAD_LOCKED, {"lead_id": lead_id})).scalar_one_or_none()
    if lead is None:
        return None
    fraud = settings.fraud
    earlier = list(await session.scalars(_SURVEYS_OF_LEAD, {"lead_id": lead_id}))
    if len(earlier) >= fraud.max_surveys_per_lead or any(s.hired for s in earlier):
        return None
    if any(s.answered_at is None and s.expires_at > now for s in earlier):
        return None
    if cause == "quiet" and any(s.created_at > now - timedelta(days=fraud.quiet_days) for s in earlier):
        return None
    expires_at = now + timedelta(days=fraud.survey_ttl_days)
    token = sign_link(settings.service.secret_key, SURVEY, lead_id, expires_at)
    claims = read_link(settings.service.secret_key, token, SURVEY, now)
    survey = Survey(
        id=new_id("srv"),
        lead_id=lead_id,
        link_id=claims.link_id,
        cause=cause,
        exposure_id=exposure_id,
        created_at=now,
        expires_at=expires_at,
    )
    session.add(survey)
    category = settings.categories.get(lead.category)
    what = category.name.lower() if category else lead.category
    link = f"{settings.notifications.public_base_url}/v1/surveys/{token}"
    # Dates as the customer reads them: on the marketplace's local calendar, not UTC's (a request at 00:45 in
    # Jerusalem was "29 November" in UTC, and a link working until 00:45 local "until 13 December").
    zone = settings.jurisdiction.zone
    asked, until = lead.created_at.astimezone(zone), expires_at.astimezone(zone)
    notify(
        session,
        "survey",
        contact.email,
        f"How did your {what} request go?",
        f"Hello {contact.name},\n\nyou asked for help with {what} on {asked:%d %B %Y}. Did you hire one "
        f"of the businesses we put you in touch with, for how much, and how satisfied are you? It takes a "
        f"minute:\n\n{link}\n\nThe link works once, until {until:%d %B %Y, %H:%M}.",
        link=link,
        reference=lead_id,
    )
    await session.flush()
    return survey


async def check_survey_link(session: AsyncSession, settings: Settings, token: str) -> None:
    """Refuse a forged (404), expired or spent (410) survey link, whatever the answer sent with it."""
    await _survey_by_token(session, settings, token)


async def _survey_by_token(session: AsyncSession, settings: Settings, token: str) -> Survey:
    """The survey behind a link: a forged one is a 404; an expired, answered or used one a 410."""
    claims = read_link(settings.service.secret_key, token, SURVEY, utcnow())
    survey = (await session.execute(_SURVEY_OF_LINK, {"link_id": claims.link_id})).scalar_one_or_none()
    if survey is None or survey.lead_id != claims.subject:
        raise NotFound("no such survey")
    if survey.answered_at is not None or await session.get(UsedLink, claims.link_id) is not None:
        raise Gone("this survey has already been answered")
    return survey


async def _holders(session: AsyncSession, lead_id: str) -> list[tuple[str, str]]:
    """(id, name) of every business that received the lead's contact, first holder first."""
    rows = await session.execute(_HOLDERS, {"lead_id": lead_id})
    return [(r[0], r[1]) for r in rows]


async def survey_view(session: AsyncSession, settings: Settings, token: str) -> schemas.SurveyView:
    survey = await _survey_by_token(session, settings, token)
    lead = await session.get(Lead, survey.lead_id)
    assert lead is not None
    return schemas.SurveyView(
        lead_id=lead.id,
        category=lead.category,
        businesses=[schemas.SurveyBusiness(id=i, name=n) for i, n in await _holders(session, lead.id)],
        expires_at=survey.expires_at,
    )


def recheck_delay_seconds(settings: Settings) -> float:
    """When to assess a business a customer says it hired once more: after its grace for reporting the deal (a
    hire still unreported then is a hidden deal), and a minute."""
    return settings.fraud.report_grace_days * 86_400 + 60


async def answer_survey(
    session: AsyncSession, settings: Settings, token: str, data: schemas.SurveyAnswerIn
) -> tuple[Survey, list[str], int | None]:
    """Store the customer's answer (the link is spent in the same transaction) and mark every business of
    the lead for re-assessment. A hire takes the lead off the market; "hired nobody" puts back on it a lead that a
    deal maker's `won` alone had taken off (offers.closing.back_on_the_market). Returns the survey, those businesses,
    and the lead's next wave when it is back on the market (for the caller to send once this commits)."""
    survey = await _survey_by_token(session, settings, token)
    # The lead's row, locked as a return locks it (FOR NO KEY UPDATE), whether or not the lead is still on the market
    # (take_off_the_market updates, and so locks, only one that is): a return of one of its deals waits for this
    # answer, or this answer for the return (exposures.return_exposure), never a refund after a hire committed.
    lead = await session.get(Lead, survey.lead_id, with_for_update={"key_share": True})
    assert lead is not None
    holders = [business_id for business_id, _ in await _holders(session, lead.id)]
    errors = []
    if data.business_id is not None:
        if not data.hired:
            errors.append(FieldError("business_id", "name a business only when you hired one"))
        elif data.business_id not in holders:
            errors.append(FieldError("business_id", "not one of the businesses this survey lists"))
    if data.amount is not None:
        if not data.hired:
            errors.append(FieldError("amount", "an amount belongs to a hire"))
        elif data.amount.currency != lead.currency:
            errors.append(FieldError("amount.currency", f"this request was in {lead.currency}"))
        elif data.amount.amount_minor == 0:
            errors.append(FieldError("amount.amount_minor", "what the customer paid is above zero (or left out)"))
    if errors:
        raise InvalidInput(errors[0].message if len(errors) == 1 else "the answer is invalid", errors=errors)
    await spend_link(session, read_link(settings.service.secret_key, token, SURVEY, utcnow()))
    survey.answered_at = utcnow()
    survey.hired = data.hired
    survey.business_id = data.business_id
    survey.amount_minor = data.amount.amount_minor if data.amount is not None else None
    survey.currency = data.amount.currency if data.amount is not None else None
    survey.satisfaction = data.satisfaction
    survey.comment = data.comment.strip() if data.comment and data.comment.strip() else None
    mark_dirty(session, *holders)
    next_wave = None
    if data.hired:
        await take_off_the_market(session, lead.id)
    else:
        # A deal maker reporting `won` at its claim took the lead off the market on its own word: the customer who
        # hired nobody was left with that one business, which had exclusivity without paying for it (a tester).
        next_wave = await back_on_the_market(session, settings, lead, utcnow())
    await session.flush()
    return survey, holders, next_wave


async def on_deal_reported(
    session: AsyncSession, settings: Settings, exposure: Exposure, decision: str | None
) -> None:
    """A business moved a deal: its assessment is due again, and a move that decided it (`decision`, won or lost:
    exposures.rules.decision) asks the customer."""
    mark_dirty(session, exposure.business_id)
    if decision in ("won", "lost"):
        await request_survey(session, settings, exposure.lead_id, decision, exposure.id)


async def send_quiet_surveys(session: AsyncSession, settings: Settings, limit: int = 500) -> int:
    """Leads gone quiet: an open, lost or returned deal with no news for `quiet_days`. Their customers are asked
    who they hired, which is how deals hidden behind silence, a return or an early `lost` come to light."""
    now = utcnow()
    fraud = settings.fraud
    cutoff = now - timedelta(days=fraud.quiet_days)
    blocking_survey = exists().where(
        Survey.lead_id == Exposure.lead_id,
        or_(
            Survey.created_at > cutoff,
            Survey.hired.is_(True),
            and_(Survey.answered_at.is_(None), Survey.expires_at > now),
        ),
    )
    surveys_so_far = (
        select(func.count(Survey.id)).where(Survey.lead_id == Exposure.lead_id).correlate(Exposure).scalar_subquery()
    )
    lead_ids = list(
        await session.scalars(
            select(Exposure.lead_id)
            .join(LeadContact, LeadContact.lead_id == Exposure.lead_id)
            .where(
                QUIET_DEALS,
                Exposure.status_changed_at <= cutoff,
                Exposure.created_at >= now - QUIET_HORIZON,
                LeadContact.email.is_not(None),
                ~blocking_survey,
                surveys_so_far < fraud.max_surveys_per_lead,
            )
            .group_by(Exposure.lead_id)
            .order_by(Exposure.lead_id)
            .limit(limit)
        )
    )
    sent = 0
    for lead_id in lead_ids:
        if await request_survey(session, settings, lead_id, "quiet") is not None:
            sent += 1
    return sent
