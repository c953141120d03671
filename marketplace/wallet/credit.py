"""Credit limits: how much a business may owe through the payment provider, and the rule that a deal maker owing
more than its limit is assigned no new lead until it pays, in Python and as the SQL expression the waves and the
offer withdrawals filter by (the two agree: tests/integration/test_credit_rule.py)."""

from __future__ import annotations

from sqlalchemy import and_, bindparam, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.db.models import Business, Exposure, LedgerAccount, Settlement
from marketplace.db.statements import table
from marketplace.errors import InsufficientFunds
from marketplace.money import Money
from marketplace.settings import Settings
from marketplace.wallet.ledger import AccountKind

_BUSINESSES = table(Business)
_businesses, _ledger = _BUSINESSES.c, table(LedgerAccount).c


def standing_limit(settings: Settings, own_limit_minor: int | None) -> int:
    """An operator's limit for the business, else the marketplace's default: what a business known to pay may owe."""
    return settings.wallet.default_credit_limit_minor if own_limit_minor is None else own_limit_minor


def within_first_limit(settings: Settings, own_limit_minor: int | None, owing_minor: int) -> bool:
    """Whether owing this much is allowed whatever the business's history (so that the hot path reads none)."""
    limit = standing_limit(settings, own_limit_minor)
    if own_limit_minor is None:
        limit = min(settings.wallet.first_credit_limit_minor, limit)
    return owing_minor <= limit


async def credit_limit(session: AsyncSession, settings: Settings, business_id: str, own_limit_minor: int | None) -> int:
    """How much a business may owe through the payment provider: its own limit (an operator's), else the
    marketplace's default once it has paid a charge of its own, and the smaller first limit until then."""
    limit = standing_limit(settings, own_limit_minor)
    if own_limit_minor is not None or settings.wallet.first_credit_limit_minor >= limit:
        return limit
    return limit if await has_paid(session, business_id) else settings.wallet.first_credit_limit_minor


async def has_paid(session: AsyncSession, business_id: str) -> bool:
    """Whether a charge of the business's own has been received (an operator confirmed its bank transfer) for
    something it kept: a lead it returned gave the money back (as credit), so paying for it proves nothing."""
    paid = await session.scalar(
        select(Settlement.id)
        .where(
            Settlement.business_id == business_id,
            Settlement.direction == "charge",
            Settlement.status == "confirmed",
            ~exists().where(Exposure.id == Settlement.reference, Exposure.status == "returned"),
        )
        .limit(1)
    )
    return paid is not None


# --- new leads for a deal maker over its limit -------------------------------------------------------------------


def over_limit(settings: Settings, mode: str | None, owed_minor: int, own_limit_minor: int | None) -> bool:
    """Whether a business is assigned no new lead until it pays: a deal maker owing more than its standing limit
    (OVER_CREDIT says the same in SQL)."""
    return mode == "deal_maker" and owed_minor > standing_limit(settings, own_limit_minor)


def refuse_new_leads_over_limit(
    settings: Settings, mode: str | None, owed_minor: int, limit_minor: int | None, currency: str
) -> None:
    """A deal maker that owes more than its credit limit (commissions on deals it reported paid, not paid yet) is
    assigned no new lead until it pays: the limit never refuses the report of a paid deal (that would reward not
    reporting), so it guards the next lead instead. An operator can raise the limit. (The first limit, for businesses
    not yet known to pay, guards purchases: a deal maker owes only on deals it reports paid, and a throw-away one
    reports none.)"""
    if over_limit(settings, mode, owed_minor, limit_minor):
        owed, allowed = Money(owed_minor, currency), Money(standing_limit(settings, limit_minor), currency)
        raise InsufficientFunds(
            f"this business owes {owed}, above its credit limit of {allowed}: it is assigned new leads again once it "
            "has paid what it owes",
            extra={"owed": owed.to_json(), "credit_limit": allowed.to_json()},
        )


# What a business owes through the payment provider now: its receivable account in its own currency.
_OWES = (
    select(_ledger.balance_minor)
    .where(
        _ledger.owner == "business",
        _ledger.owner_id == _businesses.id,
        _ledger.kind == AccountKind.RECEIVABLE.value,
        _ledger.currency == _businesses.currency,
    )
    .correlate(_BUSINESSES)
    .scalar_subquery()
)
# over_limit over the businesses table, for statements that filter by it; they bind over_credit_params.
OVER_CREDIT = and_(
    _businesses.mode == "deal_maker",
    func.coalesce(_OWES, 0) > func.coalesce(_businesses.credit_limit_minor, bindparam("default_limit")),
)


def over_credit_params(settings: Settings) -> dict[str, int]:
    """The parameters OVER_CREDIT takes."""
    return {"default_limit": settings.wallet.default_credit_limit_minor}


# What refuse_new_leads_over_limit reads, for one business.
_CREDIT_STANDING = select(
    _businesses.mode, func.coalesce(_OWES, 0), _businesses.credit_limit_minor, _businesses.currency
).where(_businesses.id == bindparam("business_id"))


async def refuse_if_over_limit(session: AsyncSession, settings: Settings, business_id: str) -> None:
    """refuse_new_leads_over_limit, of what the business owes and may owe now: for a claim of an offer its limit
    withdrew (withdraw_offers_over_credit), which is told what it owes, as a claim of an open offer is, not only that
    the offer was withdrawn."""
    row = (await session.execute(_CREDIT_STANDING, {"business_id": business_id})).one_or_none()
    if row is not None:
        mode, owed, limit, currency = row
        refuse_new_leads_over_limit(settings, mode, int(owed), limit, currency)


_OVER_CREDIT_AMONG = select(_businesses.id).where(_businesses.id.in_(bindparam("ids", expanding=True)), OVER_CREDIT)


async def over_credit_limit(session: AsyncSession, settings: Settings, business_ids: list[str]) -> set[str]:
    """The deal makers among these that owe more than their credit limit: a wave passes over them (offers'
    _MARK_OFFERED) until they pay."""
    if not business_ids:
        return set()
    params = {"ids": business_ids, **over_credit_params(settings)}
    return set((await session.execute(_OVER_CREDIT_AMONG, params)).scalars())
