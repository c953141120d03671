"""What a claim and a paid deal charge: a lead buyer's purchase (or upgrade) and a deal maker's commission, paid
from the wallet first and the rest charged through the provider, and what the lead's seller, club and partner
earn from them.

Services never commit; each runs inside the caller's unit of work, so the money moves with the claim,
the status change or the return that caused it, or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.db.models import (
    Business,
    Exposure,
    Invoice,
    Lead,
    Notification,
    Settlement,
)
from marketplace.errors import InsufficientFunds, NotFound
from marketplace.money import Money, format_rate_bp
from marketplace.notifications.outbox import notify
from marketplace.settings import Settings
from marketplace.wallet import provider, referrals, store
from marketplace.wallet.credit import credit_limit, within_first_limit
from marketplace.wallet.debts import charge_key, collect_debts
from marketplace.wallet.invoices import breakdown, issue_invoice
from marketplace.wallet.ledger import (
    AccountKind,
    Allocation,
    build_deal_commission,
    build_exposure_purchase,
    build_lead_earnings,
    business_account,
    earnings_account_kind,
    marketplace_account,
)
from marketplace.wallet.offset import OffsetPlan, plan_offset
from marketplace.wallet.plan_versions import plan_of
from marketplace.wallet.plans import (
    ROLE_CLUB_OPERATOR,
    ROLE_PLATFORM,
    ROLE_RECOMMENDER,
    CommissionPlan,
    EventKind,
    PlanEvent,
    PlanResult,
    deal_commission,
    evaluate,
)
from marketplace.wallet.queries import spendable
from marketplace.wallet.vat import VatBreakdown


@dataclass(frozen=True, slots=True)
class Charged:
    transaction_id: str
    invoice_id: str | None
    offset: OffsetPlan
    settlement_id: str | None


async def business_of(session: AsyncSession, business_id: str) -> Business:
    business = await session.get(Business, business_id)
    if business is None:
        raise NotFound(f"no business {business_id}")
    return business


async def _charge(
    session: AsyncSession,
    settings: Settings,
    business: Business,
    amount: VatBreakdown,
    key: str,
    description: str,
    reference: str,
    shares: tuple[Allocation, ...] = (),
    commission: bool = False,
) -> Charged:
    """Wallet first (credit, then available), the rest charged through the provider (for a purchase, within the
    credit limit)."""
    balances = await store.lock_wallet(session, business.id, amount.currency)
    credit, available = await spendable(session, settings, business.id, amount.currency, balances)
    offset = plan_offset(amount.gross, Money(credit, amount.currency), Money(available, amount.currency))
    owed_after = balances[AccountKind.RECEIVABLE] + offset.to_charge.amount_minor
    # The limit guards purchases only: a commission on a paid deal is owed whatever the business already owes,
    # and refusing it would refuse the deal maker's status report (an incentive never to report `paid`).
    over = not commission and not within_first_limit(settings, business.credit_limit_minor, owed_after)
    limit = await credit_limit(session, settings, business.id, business.credit_limit_minor) if over else 0
    if over and owed_after > limit:
        raise InsufficientFunds(
            f"this needs {offset.to_charge} charged, and the account may owe at most "
            f"{Money(limit, amount.currency)} (it owes {Money(balances[AccountKind.RECEIVABLE], amount.currency)})",
            extra={"to_charge": offset.to_charge.to_json(), "credit_limit": Money(limit, amount.currency).to_json()},
        )
    if commission:
        transfer = build_deal_commission(key, business.id, amount, offset, shares=shares, memo=description)
    else:
        transfer = build_exposure_purchase(key, business.id, amount, offset, memo=description)
    posted = await store.post(session, transfer, business_id=business.id, reference=reference)
    if posted.replayed:
        invoice_id = await session.scalar(select(Invoice.id).where(Invoice.transaction_id == posted.transaction_id))
        settlement_id = await session.scalar(
            select(Settlement.id).where(Settlement.transaction_id == posted.transaction_id)
        )
        return Charged(posted.transaction_id, invoice_id, offset, settlement_id)
    invoice = issue_invoice(
        session, settings, business, amount, description, transaction_id=posted.transaction_id, offset=offset
    )
    settlement = None
    if offset.to_charge.is_positive:
        settlement = await provider.in_use.charge(
            session,
            business.id,
            offset.to_charge,
            transaction_id=posted.transaction_id,
            reference=reference,
            invoice_id=invoice.id,
            idempotency_key=charge_key(posted.transaction_id, 1),
        )
    return Charged(posted.transaction_id, invoice.id, offset, settlement.id if settlement else None)


def _present_roles(lead: Lead) -> frozenset[str]:
    """Who shares a commission: the platform, the business that sold the lead (its recommender), and the operator
    of the club the lead came in through. A referrer's rewards are not a share of it but acquisition costs on top
    (wallet/referrals.py)."""
    roles = {ROLE_PLATFORM}
    if lead.seller_business_id:
        roles.add(ROLE_RECOMMENDER)
    if lead.club_id:
        roles.add(ROLE_CLUB_OPERATOR)
    return frozenset(roles)


async def _seller(session: AsyncSession, lead: Lead) -> Business | None:
    return await session.get(Business, lead.seller_business_id) if lead.seller_business_id else None


async def charge_exposure(
    session: AsyncSession, settings: Settings, exposure: Exposure, lead: Lead, *, price_minor: int, step: str
) -> Charged:
    """A lead buyer pays for an exposure (`step` "purchase"), or the difference of an upgrade ("upgrade");
    a business that sold the lead earns its share of the net price under the plan in force."""
    business = await business_of(session, exposure.business_id)
    amount = breakdown(settings, Money(price_minor, exposure.currency))
    description = f"Lead {lead.id} ({lead.category}), {'exclusive' if exposure.kind == 'exclusive' else 'shared'}"
    if step == "upgrade":
        description = f"Lead {lead.id} ({lead.category}): upgrade to exclusive"
    seller = await _seller(session, lead)
    seller_owed = 0
    if seller is not None:
        locked = await store.lock_wallets(session, (business.id, seller.id), exposure.currency)
        seller_owed = locked[seller.id].get(AccountKind.RECEIVABLE, 0)
    charged = await _charge(
        session, settings, business, amount, f"{step}:{exposure.id}", description, reference=exposure.id
    )
    if lead.referral_code is None and seller is None:
        return charged
    plan = await plan_of(session, settings, exposure.plan_version_id)
    if lead.referral_code:
        await referrals.reward_revenue(session, plan, lead, exposure, amount.net, step=step)
    if seller is not None:
        # The seller's share of a purchase is split as a paid deal's; its non-cash rewards are not given: the plan
        # gives them on a paid deal, and a lead buyer reports no deal (and may still return the lead).
        result = evaluate(plan, PlanEvent(EventKind.DEAL_PAID, amount.net, present_roles=_present_roles(lead)))
        earned = result.by_role().get(ROLE_RECOMMENDER)
        if earned is not None and earned.is_positive:
            await store.post(
                session,
                build_lead_earnings(
                    f"earnings:{step}:{exposure.id}",
                    seller.id,
                    seller.mode,
                    earned,
                    memo=f"Sold lead {lead.id} bought by another business",
                ),
                business_id=seller.id,
                reference=exposure.id,
            )
            if seller_owed > 0:  # the seller's earnings pay what it owes first
                await collect_debts(session, settings, seller.id, exposure.currency)
    return charged


def qualifying_revenue(settings: Settings, exposure: Exposure) -> Money | None:
    """What a claim brought the marketplace that makes its lead a qualified one for its partner (the base of a
    percent qualified-lead tier), or None while it brought nothing: a lead buyer's purchase its net price, at once; a
    deal maker's claim, which costs it nothing, only its deal's net commission once charged (reported paid with a
    turnover whose commission is above nothing: settle_commission). A deal maker's deal lost, returned or released by
    a block never brings one, so a partner cannot earn fees through a deal maker that claims leads and drops them."""
    if exposure.mode != "deal_maker":
        return breakdown(settings, Money(exposure.price_minor, exposure.currency)).net
    if exposure.status != "paid" or exposure.turnover_minor is None:
        return None
    gross = deal_commission(Money(exposure.turnover_minor, exposure.currency), exposure.commission_rate_bp)
    return breakdown(settings, gross).net if gross.is_positive else None


async def lead_taken(
    session: AsyncSession, settings: Settings, plan: CommissionPlan, exposure: Exposure, lead: Lead
) -> None:
    """A business claimed the lead: a lead buyer's purchase of a referred lead earns its partner the qualified-lead
    fee while no kept claim holds it (once per lead: a later claim finds it standing; after the returns of every
    claim that held it, the next qualifying claim earns it again). A deal maker's claim earns it only when its
    commission is charged (settle_commission)."""
    if lead.referral_code:  # (the lead's place count says nothing: returned places are not given again)
        price = qualifying_revenue(settings, exposure)
        if price is not None:
            await referrals.reward_qualified_lead(session, plan, lead, exposure, price)


async def settle_commission(
    session: AsyncSession, settings: Settings, exposure: Exposure, lead: Lead
) -> Charged | None:
    """A deal maker's deal reached paid: rate times turnover is due, split by the plan in force at exposure.
    A commission of nothing (a plan's rate of 0 %, a turnover of a few agorot) closes the deal with no charge."""
    assert exposure.turnover_minor is not None
    rate = exposure.commission_rate_bp  # the plan's rate when it was claimed, as the deal maker was shown it
    gross = deal_commission(Money(exposure.turnover_minor, exposure.currency), rate)
    if not gross.is_positive:
        return None
    business = await business_of(session, exposure.business_id)
    plan = await plan_of(session, settings, exposure.plan_version_id)
    amount = breakdown(settings, gross)
    result = evaluate(plan, PlanEvent(EventKind.DEAL_PAID, amount.net, present_roles=_present_roles(lead)))
    shares: list[Allocation] = []
    seller = await _seller(session, lead)
    seller_owed = 0
    if seller is not None:  # both wallets in one order, as for a purchase (see store.lock_wallets)
        locked = await store.lock_wallets(session, (business.id, seller.id), exposure.currency)
        seller_owed = locked[seller.id].get(AccountKind.RECEIVABLE, 0)
    for payout in result.split:
        if payout.recipient_role == ROLE_RECOMMENDER and seller is not None:
            account = business_account(seller.id, earnings_account_kind(seller.mode))
            shares.append(Allocation(account, payout.amount))
        elif payout.recipient_role == ROLE_CLUB_OPERATOR and lead.club_id:
            # Owed to the club's operator, paid out by an operator's bank transfer (wallet/payables.py).
            shares.append(Allocation(marketplace_account(AccountKind.CLUB_PAYABLE, lead.club_id), payout.amount))
    description = f"Commission {format_rate_bp(rate)} % on deal for lead {lead.id} (plan v{result.plan_version})"
    charged = await _charge(
        session,
        settings,
        business,
        amount,
        f"commission:{exposure.id}",
        description,
        reference=exposure.id,
        shares=tuple(shares),
        commission=True,
    )
    if seller is not None and seller_owed > 0 and seller.id != business.id:
        await collect_debts(session, settings, seller.id, exposure.currency)
    await _record_rewards(session, result, lead, seller, exposure)
    if lead.referral_code:
        # The deal brought revenue: the lead is a qualified one now, if no kept purchase made it one already. The fee
        # references this deal, so it is held while the commission's charge is unpaid (wallet/payables.py).
        await referrals.reward_qualified_lead(session, plan, lead, exposure, amount.net)
        await referrals.reward_revenue(session, plan, lead, exposure, amount.net, step="commission")
    return charged


async def _record_rewards(
    session: AsyncSession, result: PlanResult, lead: Lead, seller: Business | None, exposure: Exposure
) -> None:
    """The plan's non-cash rewards for a paid deal (a business lunch, say): recorded, never paid, as a message to the
    business that earned it in the outbox (`GET /v1/notifications?kind=reward`), once per exposure however often
    its status is said again. A reward of a role with no business behind it here (a club's operator, a referrer) is
    listed by the plan's evaluation only."""
    for index, reward in enumerate(result.rewards):
        if reward.recipient_role != ROLE_RECOMMENDER or seller is None:
            continue
        key = f"reward:{exposure.id}:{index}"
        if await session.scalar(select(Notification.id).where(Notification.reference == key).limit(1)) is not None:
            continue
        notify(
            session,
            "reward",
            seller.email,
            f"A thank-you for lead {lead.id}: {reward.description}",
            f"The lead you handed the marketplace ({lead.id}, {lead.category}) became business: {reward.description}. "
            "The marketplace's team will be in touch to arrange it.",
            reference=key,
        )
