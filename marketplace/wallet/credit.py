"""Credit limits: how much a business may owe through the payment provider, and the rules that a deal maker owing
more than its limit is assigned no new lead until it pays, and that a lead buyer that could not pay for a lead (its
wallet first, the rest charged within its limit) is offered none, in Python and as the SQL expression the waves, the
second prices and the offer withdrawals filter by (the two agree: tests/integration/test_credit_rule.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, case, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.db.models import Business, Exposure, LedgerAccount, Settlement
from marketplace.db.statements import table
from marketplace.errors import InsufficientFunds
from marketplace.money import Money
from marketplace.settings import Settings
from marketplace.wallet.ledger import AccountKind
from marketplace.wallet.vat import vat_breakdown

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


@dataclass(frozen=True, slots=True)
class WalletEased:
    """A fact the ledger records for the commit (store.post): a transfer lowered what a business owes or added to
    its wallet (a charge confirmed, a debt paid from its wallet, a refund, earnings, a payout that failed). `before`
    and `after` are its balances around the transfer, as the transaction locked them (store.lock_wallets), or None
    when it did not lock them. Whether that took the business back within its credit rule is credit_freed's to say."""

    business_id: str
    currency: str
    before: Mapping[AccountKind, int] | None
    after: Mapping[AccountKind, int] | None


def _owed_and_wallet(balances: Mapping[AccountKind, int]) -> tuple[int, int]:
    wallet = balances.get(AccountKind.CREDIT, 0) + balances.get(AccountKind.AVAILABLE, 0)
    return balances.get(AccountKind.RECEIVABLE, 0), wallet


def _list_prices(settings: Settings) -> list[int]:
    return sorted({least_price(settings, category) for category in settings.categories}) or [1]


async def credit_freed(session: AsyncSession, settings: Settings, facts: list[WalletEased]) -> list[str]:
    """The businesses these transfers took from outside their credit rule to within it (cannot_pay_sql's): a deal
    maker from owing more than its limit to within it; a lead buyer from unable to pay some lead's list price
    (least_price, of any category) to able. Of the balances the transfers had (the first before and the last after
    of each business): no read of them, and the business's row is the session's own when the transaction loaded it
    (a sale's seller, a refund's buyer). A lead buyer with no limit of its own is taken as not yet known to pay
    before (the first limit), so a first confirmed payment that lifts its limit counts; after, its limit is read
    (has_paid) only if the answer turns on it. A business whose balances were not locked is taken as freed."""
    first: dict[str, WalletEased] = {}
    last: dict[str, WalletEased] = {}
    for fact in facts:
        first.setdefault(fact.business_id, fact)
        last[fact.business_id] = fact
    freed = []
    for business_id, earliest in first.items():
        before, after = earliest.before, last[business_id].after
        if before is None or after is None:
            freed.append(business_id)
            continue
        business = await session.get(Business, business_id)
        if business is None or business.currency != earliest.currency:
            continue
        owed_before, wallet_before = _owed_and_wallet(before)
        owed_after, wallet_after = _owed_and_wallet(after)
        own = business.credit_limit_minor
        if business.mode == "deal_maker":
            limit = standing_limit(settings, own)
            if owed_before > limit >= owed_after:
                freed.append(business_id)
            continue
        if business.mode != "lead_buyer":
            continue
        prices = _list_prices(settings)
        first_limit = min(settings.wallet.first_credit_limit_minor, settings.wallet.default_credit_limit_minor)
        limit_before = own if own is not None else first_limit
        could_not = [p for p in prices if cannot_pay(owed_before, max(0, wallet_before), p, limit_before)]
        if not could_not:
            continue
        most = standing_limit(settings, own)
        if all(cannot_pay(owed_after, max(0, wallet_after), p, most) for p in could_not):
            continue  # not even on its standing limit
        limit_after = most
        if (
            own is None
            and first_limit < most
            and any(cannot_pay(owed_after, max(0, wallet_after), p, first_limit) for p in could_not)
        ):
            limit_after = await credit_limit(session, settings, business_id, own)
        if any(not cannot_pay(owed_after, max(0, wallet_after), p, limit_after) for p in could_not):
            freed.append(business_id)
    return freed


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
# What its wallet holds to pay a purchase from first: credit and available, in its own currency. All of it, held
# earnings included (what it may spend, queries.spendable, is no more): so a lead buyer told apart here as unable to pay
# is one that could not pay even if all of it were spendable, never one that could.
_WALLET = (
    select(func.coalesce(func.sum(_ledger.balance_minor), 0))
    .where(
        _ledger.owner == "business",
        _ledger.owner_id == _businesses.id,
        _ledger.kind.in_((AccountKind.CREDIT.value, AccountKind.AVAILABLE.value)),
        _ledger.currency == _businesses.currency,
    )
    .correlate(_BUSINESSES)
    .scalar_subquery()
)
_settlements, _exposures = table(Settlement).c, table(Exposure).c
# has_paid, over the businesses table.
_HAS_PAID = (
    exists()
    .where(
        _settlements.business_id == _businesses.id,
        _settlements.direction == "charge",
        # `status || ''`: the same test, on no index. SQLite's planner (no statistics) weighs the status index (one
        # equality) as the business's own and chose it in some builds of the same schema: every confirmed charge of
        # the market read for each candidate of a wave, not the few of the business.
        _settlements.status.concat("") == "confirmed",
        ~exists().where(_exposures.id == _settlements.reference, _exposures.status == "returned"),
    )
    .correlate(_BUSINESSES)
)


def _buyer_cannot_pay(least_price: ColumnElement[Any]) -> ColumnElement[bool]:
    """cannot_pay over the businesses table, for a purchase of at least `least_price` (gross): what it owes, plus what
    its wallet would leave of the price, beyond its limit (credit_limit's: its own, else the default once it has paid,
    the smaller first limit until then). Each subquery written once: they run for every candidate of a wave."""
    wallet = func.coalesce(_WALLET, 0)
    left_to_charge = case((least_price > wallet, least_price - wallet), else_=0)  # max(0, ...): SQLite has no GREATEST
    own = _businesses.credit_limit_minor
    limit = case(
        (own.is_not(None), own),
        (_HAS_PAID, bindparam("default_limit")),
        else_=bindparam("first_limit"),  # over_credit_params binds the smaller of the first and default limits
    )
    return and_(_businesses.mode == "lead_buyer", func.coalesce(_OWES, 0) + left_to_charge > limit)


def cannot_pay_sql(least_price: ColumnElement[Any]) -> ColumnElement[bool]:
    """Whether the business is passed over by a wave and set no lead buyer's price, and its open offers are withdrawn:
    a deal maker owing more than its standing limit (over_limit), or a lead buyer that could not pay a purchase of
    `least_price` (cannot_pay). Statements using it bind over_credit_params."""
    deal_maker_over = and_(
        _businesses.mode == "deal_maker",
        func.coalesce(_OWES, 0) > func.coalesce(_businesses.credit_limit_minor, bindparam("default_limit")),
    )
    return or_(deal_maker_over, _buyer_cannot_pay(least_price))


def cannot_pay(owed_minor: int, wallet_minor: int, price_minor: int, limit_minor: int) -> bool:
    """Whether a lead buyer could not pay a purchase of `price_minor` (gross) now: paid from its wallet (credit and
    available, `wallet_minor`) first, the rest is charged and may take what it owes (`owed_minor`) up to its credit
    limit (credit_limit: the first one until it has paid) and no further (charges._charge refuses the claim). A buyer
    already owing its limit with nothing in its wallet can pay nothing. OVER_CREDIT says the same in SQL."""
    return owed_minor + max(0, price_minor - wallet_minor) > limit_minor


# Who a wave passes over, for a lead whose least price binds `least_price` (a lead buyer's shared price is never below
# its category's list price, the ranking's reserve; its exclusive price is higher still). Bind over_credit_params.
OVER_CREDIT = cannot_pay_sql(bindparam("least_price"))


def least_price(settings: Settings, category: str | None) -> int:
    """The least a lead buyer pays for a lead of the category, VAT included: its list price (the reserve of the second
    price). A lead buyer that could not pay that could pay no claim of it."""
    if category is None or category not in settings.categories:
        return 1
    jurisdiction = settings.jurisdiction
    price = Money(settings.categories[category].lead_price_minor, jurisdiction.currency)
    return vat_breakdown(price, jurisdiction.vat_rate_bp, jurisdiction.prices_include_vat).gross.amount_minor


def over_credit_params(settings: Settings, category: str | None = None) -> dict[str, int]:
    """The parameters OVER_CREDIT takes (for a lead of `category`; without one, the least price is one minor unit:
    a lead buyer that could pay nothing)."""
    return {
        "default_limit": settings.wallet.default_credit_limit_minor,
        # What a business that has not paid yet may owe (credit_limit): the first limit, or the default if smaller.
        "first_limit": min(settings.wallet.first_credit_limit_minor, settings.wallet.default_credit_limit_minor),
        "least_price": least_price(settings, category),
    }


# What refuse_if_over_limit reads, for one business.
_CREDIT_STANDING = select(
    _businesses.mode,
    func.coalesce(_OWES, 0),
    _businesses.credit_limit_minor,
    _businesses.currency,
    func.coalesce(_WALLET, 0),
).where(_businesses.id == bindparam("business_id"))


async def refuse_if_over_limit(
    session: AsyncSession, settings: Settings, business_id: str, price_minor: int | None = None
) -> None:
    """refuse_new_leads_over_limit, of what the business owes and may owe now, and for a lead buyer whether it could
    pay the offer's price (cannot_pay): for a claim of an offer its limit withdrew (withdraw_offers_over_credit),
    which is told what it owes, as a claim of an open offer is, not only that the offer was withdrawn."""
    row = (await session.execute(_CREDIT_STANDING, {"business_id": business_id})).one_or_none()
    if row is None:
        return
    mode, owed, own_limit, currency, wallet = row
    if mode != "lead_buyer":
        refuse_new_leads_over_limit(settings, mode, int(owed), own_limit, currency)
        return
    limit = await credit_limit(session, settings, business_id, own_limit)
    price = price_minor if price_minor is not None else 1
    if cannot_pay(int(owed), max(0, int(wallet)), price, limit):
        owes, allowed = Money(int(owed), currency), Money(limit, currency)
        raise InsufficientFunds(
            f"this business owes {owes} and may owe at most {allowed}: its wallet cannot pay the offer's price of "
            f"{Money(price, currency)}, and charging the rest would take it beyond its credit limit",
            extra={"owed": owes.to_json(), "credit_limit": allowed.to_json()},
        )


_OVER_CREDIT_AMONG = select(_businesses.id).where(_businesses.id.in_(bindparam("ids", expanding=True)), OVER_CREDIT)


async def over_credit_limit(
    session: AsyncSession, settings: Settings, business_ids: list[str], category: str | None = None
) -> set[str]:
    """Those among these that a wave of a lead of `category` passes over (offers' _MARK_OFFERED) until they pay: the
    deal makers owing more than their credit limit, and the lead buyers that could not pay its least price."""
    if not business_ids:
        return set()
    params = {"ids": business_ids, **over_credit_params(settings, category)}
    return set((await session.execute(_OVER_CREDIT_AMONG, params)).scalars())
