"""Offers and leads leaving the market unclaimed: withdrawn (a lead full or its customer served, its seller
blocked, a business over its credit limit) or expired (their time ran out), and replacement debts lapsed.
Services never commit."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, bindparam, case, exists, func, or_, update
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.clock import utcnow
from marketplace.db.models import Business, BusinessStatusChange, Exposure, Lead, Offer, Survey
from marketplace.db.statements import rows_changed, table
from marketplace.errors import InvalidInput, NotFound
from marketplace.exposures.queries import deal_maker_won
from marketplace.jobs import Jobs
from marketplace.leads.status import on_the_market
from marketplace.money import Money
from marketplace.settings import Settings
from marketplace.uow import Handler, UnitOfWork
from marketplace.wallet.credit import (
    WalletEased,
    cannot_pay_sql,
    credit_freed,
    over_credit_params,
    standing_limit,
)

_OFFERS, _BUSINESSES = table(Offer), table(Business)
_offers, _businesses = _OFFERS.c, _BUSINESSES.c


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
_CLOSE_OPEN_OFFERS = (
    update(_OFFERS)
    .where(_offers.lead_id == bindparam("of_lead"), _offers.status == "open")
    .values(status="closed", withdrawn_for="lead_taken")
)


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


def after_commit_handlers(settings: Settings, jobs: Jobs) -> Mapping[type, Handler]:
    """What the units of work of the service and the workers do with the ledger's facts once committed
    (UnitOfWorkFactory(handlers=...)): a business that a debt paid, a refund, earnings or a failed payout took back
    within its credit rule (wallet.credit.credit_freed) is offered the open leads whose waves passed it over (job
    offer_open_leads, as a raised limit is: apply_credit_limit), not at the lead's next try the next day. One whose
    money moved without its having been outside the rule (a sale's seller that could pay anyway) is offered nothing."""

    async def offer_open_leads_once_freed(session: AsyncSession, facts: list[WalletEased]) -> None:
        for business_id in await credit_freed(session, settings, facts):
            jobs.enqueue("offer_open_leads", business_id)

    return {WalletEased: offer_open_leads_once_freed}


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


async def back_on_the_market(session: AsyncSession, settings: Settings, lead: Lead, now: datetime) -> int | None:
    """The customer answered that it hired nobody, while the lead was closed by a deal maker's `won` (or invoiced, or
    paid) alone: that report took it off the market on the business's word, and the customer's contradicts it. Unless
    something else closed it (a customer's earlier answer naming a hire, its seller's block), and while its time
    (`windows.lead_ttl_hours` from its request: closing it brought its expiry forward to then) has not run out, it
    goes back on the market with the places it has left, open again unless none is, so that other businesses may
    serve the customer; the won deals stay as reported (the fraud module weighs them: signals.WON_CONTRADICTED).
    Returns its next wave, for the caller to send once this commits (None: it stays as it is). The caller holds the
    lead's row (surveys.answer_survey: README, "Lock order")."""
    ends_at = lead.created_at + timedelta(hours=settings.windows.lead_ttl_hours)
    if lead.status != "closed" or ends_at <= now:
        return None
    hired = exists().where(Survey.lead_id == Lead.id, Survey.hired.is_(True))
    seller_blocked = exists().where(
        BusinessStatusChange.business_id == Lead.seller_business_id,
        BusinessStatusChange.to_status == "blocked",
        BusinessStatusChange.changed_at >= Lead.created_at,
    )
    row = (
        await session.execute(
            update(Lead)
            .where(
                Lead.id == lead.id,
                Lead.status == "closed",
                deal_maker_won(Lead.id),
                ~hired,
                or_(Lead.seller_business_id.is_(None), ~seller_blocked),
            )
            .values(
                status=case(
                    (or_(Lead.is_exclusive.is_(True), Lead.exposure_count >= Lead.max_exposures), "full"),
                    else_="open",
                ),
                expires_at=ends_at,
                # Due now: the caller sends it once this commits, and the periodic sweep of waves due
                # (offers.waves.waves_to_send_again) finds it again if that job is lost.
                next_wave_at=now,
            )
            .returning(Lead.status, Lead.waves_sent)
        )
    ).one_or_none()
    if row is None or row.status != "open":
        return None
    return int(row.waves_sent) + 1


async def withdraw_sold_leads(session: AsyncSession, seller_business_id: str) -> list[str]:
    """A blocked business's inquiries still on the market leave it, as a hired customer's lead does
    (take_off_the_market): a business blocked as a fraud must not go on earning from the claims of leads it sold
    (a fake inquiry is the obvious fraud of a seller). What was bought of them stands, returns included. Returns the
    leads taken off. In three statements however many they are (a block holds their rows until it commits)."""
    lead_ids = await _off_the_market(session, Lead.seller_business_id == seller_business_id)
    if lead_ids:
        await session.execute(
            update(_OFFERS)
            .where(_offers.lead_id.in_(lead_ids), _offers.status == "open")
            .values(status="closed", withdrawn_for="seller_blocked")
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
