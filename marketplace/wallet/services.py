"""Every money movement of the product, through the ledger: lead purchases, refunds, earnings for sold leads
(and their reversal when the lead is returned), deal commissions, withdrawals, settlements confirmed by operators,
the collection of open debts; invoices for every charge; plans.

Services never commit; each runs inside the caller's unit of work, so the money moves with the claim,
the status change or the return that caused it, or not at all.

Open debts. What a business owes is its `receivable`, and each part of it is an open charge: a settlement in
`pending` (the provider is collecting it) or `failed`. A debt is collected (collect_debts) from wallet money as it
arrives (earnings, refunds, a failed payout), before any withdrawal, and by the `collect_debts` worker,
which also tries failed charges again on a schedule. Either way the charge it replaces is `cancelled` (paid from
the wallet, or superseded by the next attempt, which keeps its transaction, invoice and reference), so that the
open charges always add up to what is owed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, bindparam, exists, func, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, aliased

from marketplace.clock import utcnow
from marketplace.db.at_commit import at_commit, defer
from marketplace.db.conflicts import violates
from marketplace.db.models import (
    Business,
    CommissionPlanVersion,
    Exposure,
    FraudRelease,
    Invoice,
    InvoiceSequence,
    Lead,
    LedgerAccount,
    LedgerPosting,
    LedgerTransaction,
    Notification,
    Settlement,
)
from marketplace.db.statements import of_session, per_database, rows_changed, table
from marketplace.errors import Conflict, FieldError, InsufficientFunds, InvalidInput, NotFound
from marketplace.identity.services import refuse_if_blocked
from marketplace.ids import key_digest, new_id
from marketplace.money import Money, format_rate_bp
from marketplace.notifications.outbox import notify
from marketplace.settings import Settings
from marketplace.uow import UnitOfWorkFactory
from marketplace.wallet import referrals, store
from marketplace.wallet.invoice_pdf import (
    InvoiceDocument,
    InvoiceKind,
    InvoiceLine,
    Party,
    PaymentStep,
    steps_from_offset,
)
from marketplace.wallet.ledger import (
    AccountKind,
    Allocation,
    SettlementDirection,
    TransferKind,
    build_charge_received,
    build_deal_commission,
    build_debt_offset,
    build_earnings_reversal,
    build_exposure_purchase,
    build_lead_earnings,
    build_lead_refund,
    build_provider_settlement,
    build_reversal,
    build_withdrawal,
    business_account,
    earnings_account_kind,
    marketplace_account,
)
from marketplace.wallet.offset import OffsetPlan, plan_offset
from marketplace.wallet.plans import (
    ROLE_CLUB_OPERATOR,
    ROLE_PLATFORM,
    ROLE_RECOMMENDER,
    CommissionPlan,
    EventKind,
    LifetimeBonus,
    PlanEvent,
    PlanResult,
    Tier,
    deal_commission,
    default_plan,
    evaluate,
    is_referral_role,
    parse_plan,
)
from marketplace.wallet.provider import ManualBankTransfer, PaymentProvider
from marketplace.wallet.queries import (
    REFUND_CANCELLED,
    REFUND_TO,
    ChargedPart,
    charged_parts,
    credit_limit,
    held_earnings,
    spendable,
    standing_limit,
    within_first_limit,
)
from marketplace.wallet.vat import VatBreakdown, vat_breakdown

ISSUER = "marketplace"
DEFAULT_PLAN_NAME = "default"
provider: PaymentProvider = ManualBankTransfer()

OPEN_CHARGE = ("pending", "failed")
# A failed charge is tried again a day after it failed, then two, four, eight days after each further failure;
# after MAX_CHARGE_ATTEMPTS attempts it stays failed (open, visible) for an operator to pursue.
CHARGE_RETRY_AFTER = timedelta(days=1)
MAX_CHARGE_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Charged:
    transaction_id: str
    invoice_id: str | None
    offset: OffsetPlan
    settlement_id: str | None


def charge_key(transaction_id: str, attempt: int) -> str:
    """The idempotency key of the n-th attempt to charge the debt a ledger transaction left open."""
    return f"charge:{transaction_id}:{attempt}"


def breakdown(settings: Settings, amount: Money) -> VatBreakdown:
    jurisdiction = settings.jurisdiction
    return vat_breakdown(amount, jurisdiction.vat_rate_bp, jurisdiction.prices_include_vat)


# --- commission plans --------------------------------------------------------------------------------


# A plan version is never edited once saved (settled deals point at it), so its parsed form can be kept by id.
_PARSED_PLANS: dict[str, CommissionPlan] = {}
_PARSED_PLANS_KEPT = 256


def _parsed(row: CommissionPlanVersion) -> CommissionPlan:
    plan = _PARSED_PLANS.get(row.id)
    if plan is None:
        plan = parse_plan(row.definition)
        if len(_PARSED_PLANS) >= _PARSED_PLANS_KEPT:
            _PARSED_PLANS.clear()
        _PARSED_PLANS[row.id] = plan
    return plan


# Read at every claim (the plan in force is recorded on the exposure) and every deal maker's offer list: built once,
# and only the version's id (a version is never edited, so its parsed definition is kept by id: _parsed).
_LATEST_PLAN_ID = (
    select(CommissionPlanVersion.id)
    .where(CommissionPlanVersion.name == DEFAULT_PLAN_NAME)
    .order_by(CommissionPlanVersion.version.desc())
    .limit(1)
)


async def _latest_plan(session: AsyncSession) -> tuple[str, CommissionPlan] | None:
    plan_id = await session.scalar(_LATEST_PLAN_ID)
    if plan_id is None:
        return None
    plan = _PARSED_PLANS.get(plan_id)
    if plan is None:
        row = await session.get(CommissionPlanVersion, plan_id)
        assert row is not None
        plan = _parsed(row)
    return plan_id, plan


async def active_plan(session: AsyncSession, settings: Settings) -> tuple[str, CommissionPlan]:
    """The plan in force now, as its version's id and its parsed definition; the design's default becomes version
    1 the first time one is needed."""
    latest = await _latest_plan(session)
    if latest is None:
        # Concurrent first uses (many claims at once on a new market) insert version 1 once: the others wait for
        # it on the unique (name, version) and read it, instead of failing the claim.
        definition = dict(default_plan(settings.currency), version=1)
        parse_plan(definition)
        await store.insert_ignore(
            session,
            CommissionPlanVersion,
            {
                "id": new_id("plan"),
                "name": DEFAULT_PLAN_NAME,
                "version": 1,
                "definition": definition,
                "created_by": "system",
                "created_at": utcnow(),
            },
        )
        latest = await _latest_plan(session)
        assert latest is not None
    return latest


async def plan_in_force(session: AsyncSession, settings: Settings) -> CommissionPlan:
    """The commission plan a claim made now would be settled under. Read only (before a first version is saved,
    the default plan's, as active_plan would save it)."""
    latest = await _latest_plan(session)
    if latest is not None:
        return latest[1]
    return _DEFAULT_PARSED.get(settings.currency) or _DEFAULT_PARSED.setdefault(
        settings.currency, parse_plan(dict(default_plan(settings.currency), version=1))
    )


def rates_of(plan: CommissionPlan, settings: Settings) -> dict[str, int]:
    """Each category's commission rate under the plan."""
    return {code: plan.rate_bp(code, c.commission_rate_bp) for code, c in settings.categories.items()}


async def rates_in_force(session: AsyncSession, settings: Settings) -> dict[str, int]:
    """Each category's commission rate under the plan in force: what a deal maker claiming a lead now is shown and
    charged."""
    return rates_of(await plan_in_force(session, settings), settings)


_DEFAULT_PARSED: dict[str, CommissionPlan] = {}


async def save_plan(
    session: AsyncSession,
    definition: dict[str, Any],
    created_by: str,
    *,
    currency: str | None = None,
    categories: Mapping[str, object] | None = None,
) -> CommissionPlanVersion:
    """A new version of the plan (never an edit of an old one, which settled deals still point at)."""
    plan = parse_plan(definition, currency)  # refuses an invalid plan with every bad field named
    unknown = sorted(set(plan.commission_rates_bp) - set(categories)) if categories is not None else []
    if unknown:  # a misspelt code would silently set nobody's rate
        raise InvalidInput(
            f"no such category: {', '.join(unknown)}",
            errors=[FieldError(f"commission_rates_bp.{code}", "no such category") for code in unknown],
        )
    # A share of a role this service pays no one from a commission would go to `unclaimed_to` on every deal, unseen.
    unpaid = [
        FieldError(f"commission_split.recipients[{i}].role", f"one of {', '.join(SPLIT_ROLES)} ({_NOT_IN_SPLIT})")
        for i, r in enumerate(plan.split)
        if r.role not in SPLIT_ROLES
    ]
    # A tier pays the referrer or a sponsor above it; any other role (a misspelt "refferer") would never be paid.
    tier_roles: dict[str, Tier | LifetimeBonus | None] = {"qualified_lead": plan.qualified_lead}
    tier_roles |= {"closed_sale": plan.closed_sale}
    tier_roles |= {"retention_bonus": plan.retention_bonus}
    tier_roles |= {f"lifetime_bonus[{i}]": bonus for i, bonus in enumerate(plan.lifetime_bonus)}
    unpaid += [
        FieldError(f"tiers.{name}.role", f"referrer, sponsor or sponsor_N ({_TIERS_PAY})")
        for name, tier in tier_roles.items()
        if tier is not None and not is_referral_role(tier.role)
    ]
    if unpaid:
        raise InvalidInput("the plan names a role nobody is paid as", errors=unpaid)
    # Concurrent saves queue on the first version's row (the latest would change under them), then number theirs
    # after whatever was saved meanwhile.
    await session.execute(
        select(CommissionPlanVersion.id)
        .where(CommissionPlanVersion.name == DEFAULT_PLAN_NAME, CommissionPlanVersion.version == 1)
        .with_for_update()
    )
    latest = await session.scalar(
        select(func.max(CommissionPlanVersion.version)).where(CommissionPlanVersion.name == DEFAULT_PLAN_NAME)
    )
    version = int(latest or 0) + 1
    stored = dict(definition, version=version)
    row = CommissionPlanVersion(
        id=new_id("plan"),
        name=DEFAULT_PLAN_NAME,
        version=version,
        definition=stored,
        created_by=created_by,
        created_at=utcnow(),
    )
    try:
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError as exc:  # the very first versions, saved at once before any row existed to queue on
        if not violates(exc, "uq_commission_plans_name_version"):
            raise
        raise Conflict("another version of the plan was saved at the same time; send it again") from exc
    return row


async def plan_of(session: AsyncSession, settings: Settings, plan_version_id: str | None) -> CommissionPlan:
    if plan_version_id is not None:
        row = await session.get(CommissionPlanVersion, plan_version_id)
        if row is not None:
            return _parsed(row)
    return (await active_plan(session, settings))[1]


# --- invoices ----------------------------------------------------------------------------------------


_SEQUENCES = table(InvoiceSequence)
_TAKE_INVOICE_NUMBERS = (
    update(_SEQUENCES)
    .where(_SEQUENCES.c.issuer == ISSUER)
    .values(next_number=_SEQUENCES.c.next_number + bindparam("count"))
    .returning(_SEQUENCES.c.next_number - bindparam("count"))
)
_CREATE_SEQUENCE = per_database(
    lambda insert: insert(InvoiceSequence).values(issuer=ISSUER, next_number=1).on_conflict_do_nothing()
)
_UNNUMBERED = "wallet.unnumbered_invoices"
_PROVISIONAL = "(numbered at commit)"


def _take_invoice_numbers(session: Session, count: int) -> int:
    """The first of `count` consecutive numbers per issuer, with no gaps: the sequence row is taken by a
    conditional update in this transaction, so concurrent invoices queue on it and a rolled-back transaction gives
    its numbers back."""
    for _ in range(2):
        first = session.execute(_TAKE_INVOICE_NUMBERS, {"count": count}).scalar()
        if first is not None:
            return int(first)
        session.execute(of_session(_CREATE_SEQUENCE, session))
    raise RuntimeError("invoice sequence could not be created")


@dataclass
class _Unnumbered:
    """An invoice issued in this transaction, waiting for its number (see _number_invoices)."""

    invoice: Invoice
    document: InvoiceDocument  # checked when issued, under a provisional number and date
    business: Business
    description: str
    public_base_url: str


@at_commit(_UNNUMBERED)
def _number_invoices(session: Session, pending: list[_Unnumbered]) -> None:
    """Invoices get their numbers as their transaction commits: one update of the sequence row for all of them,
    then the invoices and their messages are written by the commit's flush. Every charge across the marketplace
    queues on that row until its transaction ends: taken at the commit (db/at_commit.py), it is held for the commit
    alone, not for the rest of the claim or status report that charged. Numbers follow the order of the commits and
    issued_at is the moment of numbering, so a later number is never dated before an earlier one."""
    first = _take_invoice_numbers(session, len(pending))
    now = utcnow()
    for offset, item in enumerate(pending):
        invoice = item.invoice
        document = dataclasses.replace(item.document, number=f"LM-{first + offset:06d}", issued_at=now)
        invoice.number, invoice.issued_at, invoice.document = first + offset, now, document.to_json()
        session.add(invoice)
        # The business gets its invoice by message (in the embedded default it lands in GET /v1/notifications).
        title = "Credit note" if document.kind is InvoiceKind.CREDIT_NOTE else "Invoice"
        notify(
            session,
            "invoice",
            item.business.email,
            f"{title} {document.number}: {document.gross}",
            f"{title} {document.number} for {item.business.name}: {item.description}. Net {document.net}, "
            f"VAT {document.vat}, total {document.gross}.",
            link=f"{item.public_base_url}/v1/invoices/{invoice.id}",
            reference=invoice.id,
        )


def _parties(settings: Settings, business: Business) -> tuple[Party, Party]:
    """The invoice's issuer (the jurisdiction's, or the [wallet] default) and the business it is for."""
    w, j = settings.wallet, settings.jurisdiction
    if j.issuer_name:  # the jurisdiction's company, as a whole (never its name with another's tax id)
        issuer = Party(j.issuer_name, (j.issuer_address,), j.issuer_tax_id or None)
    else:
        issuer = Party(w.issuer_name, (w.issuer_address,), w.issuer_tax_id)
    return issuer, Party(business.name, (business.email,), None)


def issue_invoice(
    session: AsyncSession,
    settings: Settings,
    business: Business,
    amount: VatBreakdown,
    description: str,
    *,
    transaction_id: str,
    offset: OffsetPlan | None = None,
    corrects: Invoice | None = None,
    steps: tuple[PaymentStep, ...] = (),
) -> Invoice:
    """An invoice (or, with `corrects`, a credit note) for a charge of this transaction. Its id is known at once;
    its number, date, document and message are written when the transaction commits (_number_invoices)."""
    issuer, recipient = _parties(settings, business)
    kind = InvoiceKind.CREDIT_NOTE if corrects is not None else InvoiceKind.INVOICE
    invoice = Invoice(
        id=new_id("inv"),
        issuer=ISSUER,
        kind=kind.value,
        business_id=business.id,
        transaction_id=transaction_id,
        corrects_invoice_id=corrects.id if corrects is not None else None,
        currency=amount.currency,
        net_minor=amount.net.amount_minor,
        vat_minor=amount.vat.amount_minor,
        gross_minor=amount.gross.amount_minor,
        vat_rate_bp=settings.jurisdiction.vat_rate_bp,
    )
    document = InvoiceDocument(
        number=_PROVISIONAL,
        issuer=issuer,
        recipient=recipient,
        issued_at=utcnow(),
        currency=amount.currency,
        lines=(InvoiceLine(description, amount.net, amount.vat, amount.gross),),
        net=amount.net,
        vat=amount.vat,
        gross=amount.gross,
        vat_rate_bp=settings.jurisdiction.vat_rate_bp,
        steps=steps_from_offset(offset) if offset is not None else steps,
        kind=kind,
        corrects=corrects.document["number"] if corrects is not None else None,
    )
    item = _Unnumbered(invoice, document, business, description, settings.notifications.public_base_url)
    defer(session, _UNNUMBERED, item)
    return invoice


# --- charges -----------------------------------------------------------------------------------------


async def _business(session: AsyncSession, business_id: str) -> Business:
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
        settlement = await provider.charge(
            session,
            business.id,
            offset.to_charge,
            transaction_id=posted.transaction_id,
            reference=reference,
            invoice_id=invoice.id,
            idempotency_key=charge_key(posted.transaction_id, 1),
        )
    return Charged(posted.transaction_id, invoice.id, offset, settlement.id if settlement else None)


# Who can share a commission (_present_roles): a referrer or a sponsor is paid by the plan's referral tiers on top.
SPLIT_ROLES = (ROLE_RECOMMENDER, ROLE_PLATFORM, ROLE_CLUB_OPERATOR)
_NOT_IN_SPLIT = "a referrer and its sponsors are paid by the referral tiers, on top of the split"
_TIERS_PAY = "the referral tiers pay a lead's referrer and its sponsors; a commission's sharers are in the split"


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
    business = await _business(session, exposure.business_id)
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


async def lead_taken(
    session: AsyncSession, settings: Settings, plan: CommissionPlan, exposure: Exposure, lead: Lead
) -> None:
    """A business claimed the lead: a claim of a referred lead earns its partner the qualified-lead fee while no
    claim kept holds it (once per lead: a later claim finds it standing; after the returns of every claim that held
    it, the next claim earns it again)."""
    if lead.referral_code:  # (the lead's place count says nothing: returned places are not given again)
        price = breakdown(settings, Money(exposure.price_minor, exposure.currency)).net
        await referrals.reward_qualified_lead(session, plan, lead, exposure, price)


async def claim_returned(session: AsyncSession, settings: Settings, lead: Lead, exposure: Exposure) -> None:
    """A claim of a partner's lead was returned: the qualified-lead fee it earned is taken back, and the claim of a
    business still holding the lead (the earliest; not one a block released) earns it instead."""
    if not lead.referral_code or not await referrals.take_back_qualified_fee(session, lead, exposure):
        return
    holder = await session.scalar(
        select(Exposure)
        .where(
            Exposure.lead_id == lead.id,
            Exposure.id != exposure.id,
            Exposure.status != "returned",
            ~exists().where(FraudRelease.exposure_id == Exposure.id),
        )
        .order_by(Exposure.created_at, Exposure.id)
        .limit(1)
    )
    if holder is not None:
        plan = await plan_of(session, settings, holder.plan_version_id)
        price = breakdown(settings, Money(holder.price_minor, holder.currency)).net
        await referrals.reward_qualified_lead(session, plan, lead, holder, price)


def refuse_new_leads_over_limit(settings: Settings, owed_minor: int, limit_minor: int | None, currency: str) -> None:
    """A deal maker that owes more than its credit limit (commissions on deals it reported paid, not paid yet) is
    assigned no new lead until it pays: the limit never refuses the report of a paid deal (that would reward not
    reporting), so it guards the next lead instead. An operator can raise the limit. (The first limit, for businesses
    not yet known to pay, guards purchases: a deal maker owes only on deals it reports paid, and a throw-away one
    reports none.)"""
    limit = standing_limit(settings, limit_minor)
    if owed_minor > limit:
        owed, allowed = Money(owed_minor, currency), Money(limit, currency)
        raise InsufficientFunds(
            f"this business owes {owed}, above its credit limit of {allowed}: it is assigned new leads again once it "
            "has paid what it owes",
            extra={"owed": owed.to_json(), "credit_limit": allowed.to_json()},
        )


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
    business = await _business(session, exposure.business_id)
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


async def refund_exposure(session: AsyncSession, settings: Settings, exposure: Exposure) -> Money | None:
    """A lead buyer's returned lead: its price comes back, first cancelling what is still unpaid of the
    charge, then what was paid from the available balance back to it (at the purchase, or later from earnings that
    paid the charge: withdrawable money stays withdrawable), the rest as wallet credit. Each credit note lists how.
    Returns the price given back.

    The lead's seller earned a share of that price (charge_exposure); the price is given back, so the share is
    taken back too (reverse_earnings), in the same transaction.
    """
    if exposure.price_minor <= 0:
        return None
    refunded = await session.scalar(
        select(func.sum(LedgerPosting.amount_minor))
        .join(LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id)
        .join(LedgerAccount, LedgerAccount.id == LedgerPosting.account_id)
        .where(LedgerTransaction.idempotency_key == f"refund:{exposure.id}", LedgerAccount.owner == "business")
    )
    if refunded is not None:  # refunded before: what it gave back, and nothing moves again (its charges are gone)
        return Money(-int(refunded), exposure.currency)
    business = await _business(session, exposure.business_id)
    lead = await session.get(Lead, exposure.lead_id)
    seller_id = lead.seller_business_id if lead is not None else None
    charged = list(
        await session.scalars(
            select(Invoice)
            .where(
                Invoice.business_id == business.id,
                Invoice.kind == "invoice",
                Invoice.transaction_id.in_(
                    select(LedgerTransaction.id).where(LedgerTransaction.reference == exposure.id)
                ),
            )
            .order_by(Invoice.number)
        )
    )
    amount = breakdown(settings, Money(exposure.price_minor, exposure.currency))
    # The price is the invoices' gross where prices include VAT (Israel), their net where they do not (Germany).
    priced = (lambda i: i.gross_minor) if settings.jurisdiction.prices_include_vat else (lambda i: i.net_minor)
    invoiced_exactly = bool(charged) and sum(priced(i) for i in charged) == exposure.price_minor
    if invoiced_exactly:
        # Reverse exactly what was invoiced: a purchase and its upgrade to exclusive each rounded their own VAT,
        # which can differ by an agora from the VAT of the whole price at once.
        amount = VatBreakdown(
            Money(sum(i.net_minor for i in charged), exposure.currency),
            Money(sum(i.vat_minor for i in charged), exposure.currency),
            Money(sum(i.gross_minor for i in charged), exposure.currency),
        )
    # A failed charge is as unpaid as a pending one (its debt stays open): both are cancelled, never credited.
    pending = list(
        await session.scalars(
            select(Settlement)
            .where(
                Settlement.business_id == business.id,
                Settlement.reference == exposure.id,
                Settlement.direction == "charge",
                Settlement.status.in_(OPEN_CHARGE),
            )
            .with_for_update()
        )
    )
    unpaid = Money(sum(s.amount_minor for s in pending), exposure.currency)
    cancel = min(unpaid, amount.gross)
    # What the buyer paid out of its available balance (at the purchase, or later from its earnings for the charge it
    # left) goes back there: withdrawable money stays withdrawable. Read before the charges are cancelled below.
    refunds = _refund_parts(amount, cancel, charged if invoiced_exactly else [], await charged_parts(session, charged))
    to_available = Money.sum((r.to_available for r in refunds), exposure.currency)
    # Buyer and seller locked in one order, as for the purchase that paid the seller (store.lock_wallets).
    wallets = {business.id} | ({seller_id} if seller_id else set())
    locked = await store.lock_wallets(session, wallets, exposure.currency)
    posted = await store.post(
        session,
        build_lead_refund(
            f"refund:{exposure.id}",
            business.id,
            amount,
            cancel_receivable=cancel if cancel.is_positive else None,
            to_available=to_available if to_available.is_positive else None,
            memo=f"Returned lead {exposure.lead_id}",
        ),
        business_id=business.id,
        reference=exposure.id,
    )
    if not posted.replayed:
        for settlement in pending:
            settlement.status = "cancelled"
        if invoiced_exactly:  # a credit note for each invoice (a purchase, its upgrade), for what that one said
            for original, refund in zip(charged, refunds, strict=True):
                issue_invoice(
                    session,
                    settings,
                    business,
                    VatBreakdown(
                        Money(original.net_minor, original.currency),
                        Money(original.vat_minor, original.currency),
                        Money(original.gross_minor, original.currency),
                    ),
                    f"Credit note: returned lead {exposure.lead_id}",
                    transaction_id=posted.transaction_id,
                    corrects=original,
                    steps=refund.steps(),
                )
        else:
            (refund,) = refunds
            issue_invoice(
                session,
                settings,
                business,
                amount,
                f"Credit note: returned lead {exposure.lead_id}",
                transaction_id=posted.transaction_id,
                corrects=charged[0] if charged else None,
                steps=refund.steps(),
            )
    if seller_id is not None and seller_id != business.id:
        await reverse_earnings(session, exposure, seller_id)
    if lead is not None and lead.referral_code and not posted.replayed:  # once, with the refund itself
        await referrals.take_back_rewards(session, lead, exposure, amount.net)
    # Credit given back pays the buyer's other open debts first.
    if locked[business.id].get(AccountKind.RECEIVABLE, 0) > cancel.amount_minor and amount.gross > cancel:
        await collect_debts(session, settings, business.id, exposure.currency)
    return amount.gross


@dataclass(frozen=True, slots=True)
class _Refund:
    """How one credit note's amount comes back: the open charge cancelled, to available, the rest as credit."""

    gross: Money
    cancelled: Money
    to_available: Money

    def steps(self) -> tuple[PaymentStep, ...]:
        parts = (
            (REFUND_CANCELLED, self.cancelled),
            (REFUND_TO[AccountKind.AVAILABLE], self.to_available),
            (REFUND_TO[AccountKind.CREDIT], self.gross - self.cancelled - self.to_available),
        )
        return tuple(PaymentStep(description, part) for description, part in parts if part.is_positive)


def _refund_parts(
    amount: VatBreakdown, cancel: Money, notes: list[Invoice], parts: Mapping[str, ChargedPart]
) -> list[_Refund]:
    """A refund of `amount` that cancels `cancel` of open charges, per credit note: one for each of `notes` (the
    invoices it corrects one by one), else one for the whole. Each gives back what its invoice's buyer paid from
    `available` to available, after its own open charge is cancelled; the rest is credit."""
    currency = amount.currency
    if not notes:
        paid = sum(part.paid_from_available for part in parts.values())
        return [_Refund(amount.gross, cancel, min(Money(paid, currency), amount.gross - cancel))]
    gross = [Money(note.gross_minor, currency) for note in notes]
    none = ChargedPart(from_available=0, to_charge=0, later={}, confirmed=0, pending=0, failed=0)
    part_of = [parts.get(note.id, none) for note in notes]
    owed = [Money(part.pending + part.failed, currency) for part in part_of]
    cancelled, left = [], cancel
    for index in range(len(notes)):  # each note's own open charge first
        cancelled.append(min(owed[index], gross[index], left))
        left = left - cancelled[index]
    for index in range(len(notes)):  # what is left (an open charge of the lead on no invoice: none known)
        more = min(left, gross[index] - cancelled[index])
        cancelled[index], left = cancelled[index] + more, left - more
    refunds = []
    for part, whole, cut in zip(part_of, gross, cancelled, strict=True):
        refunds.append(_Refund(whole, cut, min(Money(part.paid_from_available, currency), whole - cut)))
    return refunds


async def reverse_earnings(session: AsyncSession, exposure: Exposure, seller_id: str) -> Money | None:
    """Take back what a lead's seller earned for this exposure (its purchase and any upgrade), now that the buyer
    returned the lead and got its price back. It comes out of the account it was paid into, then the seller's other
    wallet account; what the seller has already spent is owed as an open debt (a charge, like any other), never a
    negative balance. Returns the amount taken back, or None when the seller earned nothing for it."""
    keys = [f"earnings:{step}:{exposure.id}" for step in ("purchase", "upgrade")]
    credited = await session.scalar(
        select(func.coalesce(func.sum(LedgerPosting.amount_minor), 0))
        .join(LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id)
        .join(LedgerAccount, LedgerAccount.id == LedgerPosting.account_id)
        .where(
            LedgerTransaction.idempotency_key.in_(keys),
            LedgerAccount.owner == "business",
            LedgerAccount.owner_id == seller_id,
            LedgerPosting.currency == exposure.currency,
        )
    )
    earned = -int(credited or 0)  # credits to a business account are negative postings
    if earned <= 0:
        return None
    seller = await _business(session, seller_id)
    balances = await store.lock_wallet(session, seller_id, exposure.currency)
    taken = plan_offset(
        Money(earned, exposure.currency),
        Money(balances[AccountKind.CREDIT], exposure.currency),
        Money(balances[AccountKind.AVAILABLE], exposure.currency),
        available_first=earnings_account_kind(seller.mode) is AccountKind.AVAILABLE,
    )
    posted = await store.post(
        session,
        build_earnings_reversal(
            f"earnings-reversal:{exposure.id}",
            seller_id,
            taken,
            memo=f"Sold lead {exposure.lead_id} returned by its buyer: earnings reversed",
        ),
        business_id=seller_id,
        reference=exposure.id,
    )
    if not posted.replayed and taken.to_charge.is_positive:
        await provider.charge(
            session,
            seller_id,
            taken.to_charge,
            transaction_id=posted.transaction_id,
            reference=f"earnings-reversal:{exposure.id}",
            invoice_id=None,  # no sale: the marketplace takes back what it paid for the lead
            idempotency_key=charge_key(posted.transaction_id, 1),
        )
    return taken.total


# --- open debts --------------------------------------------------------------------------------------


async def collect_debts(session: AsyncSession, settings: Settings, business_id: str, currency: str) -> Money:
    """Pay a business's open debts from its wallet (credit, then available), oldest first. Returns what was paid.

    Each debt paid is one ledger transaction keyed on the charge it settles (`debt-offset:<settlement>`); the charge
    is cancelled at the provider (a pending one only if the provider can still stop it) and, when the wallet pays
    part of it, the rest is a new charge of the same debt. Charges another transaction holds right now (an operator
    confirming one) are skipped, not waited for: their wallet is locked after them elsewhere.
    """
    zero = Money.zero(currency)
    open_charges = list(
        await session.scalars(_open_charges_query(business_id, currency).with_for_update(skip_locked=True))
    )
    if not open_charges:
        return zero
    balances = await store.lock_wallet(session, business_id, currency)
    credit, available = await spendable(session, settings, business_id, currency, balances)
    owed = balances[AccountKind.RECEIVABLE]
    paid_total = 0
    for charge in open_charges:
        payable = min(charge.amount_minor, credit + available, owed)
        if payable <= 0:
            break
        was = charge.status
        if was == "pending" and not await provider.cancel(session, charge):
            continue
        if not await _close_charge(session, charge, was):
            continue
        paid = plan_offset(Money(payable, currency), Money(credit, currency), Money(available, currency))
        posted = await store.post(
            session,
            build_debt_offset(
                f"debt-offset:{charge.id}",
                business_id,
                paid,
                memo=f"Open debt paid from the wallet ({charge.reference or charge.id})",
            ),
            business_id=business_id,
            reference=charge.reference,
        )
        charge.confirmed_transaction_id = posted.transaction_id
        if payable < charge.amount_minor:
            await _next_attempt(session, charge, charge.amount_minor - payable, failed=was == "failed")
        credit -= paid.from_credit.amount_minor
        available -= paid.from_available.amount_minor
        owed -= payable
        paid_total += payable
    await session.flush()
    return Money(paid_total, currency)


async def _close_charge(session: AsyncSession, charge: Settlement, was: str) -> bool:
    """Cancel an open charge (paid from the wallet, or superseded by a new attempt), if it is still as it was."""
    changed = await rows_changed(
        session,
        update(Settlement).where(Settlement.id == charge.id, Settlement.status == was).values(status="cancelled"),
    )
    if changed == 1:
        charge.status = "cancelled"  # the loaded row, in step with the update
    return changed == 1


def _chain_query(charge: Settlement) -> Select[Settlement]:
    """Every charge of the debt this charge belongs to (the same ledger transaction)."""
    return select(Settlement).where(
        Settlement.business_id == charge.business_id,
        Settlement.transaction_id == charge.transaction_id,
        Settlement.direction == "charge",
    )


async def _chain(session: AsyncSession, charge: Settlement) -> list[Settlement]:
    """Every charge of the debt this charge belongs to (the same ledger transaction), one after the other."""
    return list(await session.scalars(_chain_query(charge)))


def _failures(chain: list[Settlement]) -> int:
    """How many times a debt's charge failed: failed charges and those superseded by a retry carry the time of the
    failure and no transaction (one paid from the wallet links its debt offset; a confirmed one, the money in)."""
    return sum(1 for c in chain if c.confirmed_at is not None and c.confirmed_transaction_id is None)


async def _next_attempt(session: AsyncSession, previous: Settlement, amount_minor: int, *, failed: bool) -> Settlement:
    """The rest of a debt as a charge of its own, keeping the debt's transaction, invoice and reference.

    After a pending charge the provider is asked for the rest; after a failed one the rest stays failed with the
    same time of failure, so that the retry schedule decides when to charge it again."""
    amount = Money(amount_minor, previous.currency)
    if not failed:
        attempt = len(await _chain(session, previous)) + 1
        return await provider.charge(
            session,
            previous.payer,
            amount,
            transaction_id=previous.transaction_id,
            reference=previous.reference or previous.id,
            invoice_id=previous.invoice_id,
            idempotency_key=charge_key(previous.transaction_id, attempt),
        )
    rest = Settlement(
        id=new_id("stl"),
        business_id=previous.business_id,
        direction="charge",
        method=previous.method,
        amount_minor=amount_minor,
        currency=previous.currency,
        status="failed",
        transaction_id=previous.transaction_id,
        invoice_id=previous.invoice_id,
        reference=previous.reference,
        created_at=utcnow(),
        confirmed_at=previous.confirmed_at,
        confirmed_by=previous.confirmed_by,
    )
    session.add(rest)
    return rest


def retry_due(failed_at: datetime, failures: int, now: datetime) -> bool:
    """Whether a debt whose charge failed `failures` times, the last at failed_at, is to be charged again."""
    if failures >= MAX_CHARGE_ATTEMPTS:
        return False
    return now >= failed_at + CHARGE_RETRY_AFTER * 2 ** max(failures - 1, 0)


async def retry_failed_charges(
    session: AsyncSession, now: datetime, *, limit: int = 200, after: tuple[datetime, str] | None = None
) -> tuple[list[Settlement], tuple[datetime, str] | None]:
    """Charge again the failed debts whose time has come: each as a new attempt with its own idempotency key
    (`charge:<transaction>:<attempt>`), the failed charge superseded by it, so that a debt is charged once at a
    time however often (or concurrently) this runs. One page of candidates, oldest failure first, after `after`;
    returns the new charges and where the next page starts (None after the last)."""
    chain = aliased(Settlement)
    failures = (
        select(func.count())
        .select_from(chain)
        .where(
            chain.business_id == Settlement.business_id,
            chain.transaction_id == Settlement.transaction_id,
            chain.direction == "charge",
            chain.confirmed_at.is_not(None),
            chain.confirmed_transaction_id.is_(None),
        )
        .scalar_subquery()
    )
    query = (
        select(Settlement)
        .where(
            Settlement.direction == "charge",
            Settlement.status == "failed",
            Settlement.confirmed_at <= now - CHARGE_RETRY_AFTER,
            failures < MAX_CHARGE_ATTEMPTS,  # those left to an operator would fill every page
        )
        .order_by(Settlement.confirmed_at, Settlement.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if after is not None:
        query = query.where(tuple_(Settlement.confirmed_at, Settlement.id) > tuple_(*after))
    due = list(await session.scalars(query))
    retried = []
    for charge in due:
        debt = await _chain(session, charge)
        if charge.confirmed_at is None or not retry_due(charge.confirmed_at, _failures(debt), now):
            continue
        if not await _close_charge(session, charge, "failed"):
            continue
        retried.append(
            await provider.charge(
                session,
                charge.payer,
                Money(charge.amount_minor, charge.currency),
                transaction_id=charge.transaction_id,
                reference=charge.reference or charge.id,
                invoice_id=charge.invoice_id,
                idempotency_key=charge_key(charge.transaction_id, len(debt) + 1),
            )
        )
    await session.flush()
    last = due[-1] if len(due) == limit else None
    return retried, (last.confirmed_at, last.id) if last is not None and last.confirmed_at is not None else None


@dataclass(frozen=True, slots=True)
class DebtCollection:
    businesses: int
    """Businesses whose wallet paid (part of) their debts."""
    retried: int
    """Failed charges tried again."""


async def collect_open_debts(
    uow_factory: UnitOfWorkFactory, settings: Settings, *, limit: int = 500
) -> DebtCollection:
    """The worker's round: every business that owes and has wallet money pays from it (one transaction each, so a
    busy wallet holds up nobody else), then failed charges whose time has come are tried again."""
    # Driven by the open charges (settlements by status are indexed; owing businesses are few), not by a scan of
    # every wallet.
    async with uow_factory() as uow:
        rows = await uow.session.execute(
            select(Settlement.business_id, Settlement.currency)
            .join(
                LedgerAccount,
                and_(
                    LedgerAccount.owner_id == Settlement.business_id,
                    LedgerAccount.currency == Settlement.currency,
                    LedgerAccount.owner == "business",
                    LedgerAccount.kind.in_((AccountKind.CREDIT.value, AccountKind.AVAILABLE.value)),
                    LedgerAccount.balance_minor > 0,
                ),
            )
            .where(Settlement.direction == "charge", Settlement.status.in_(OPEN_CHARGE))
            .distinct()
            .limit(limit)
        )
        owing = [(str(owner_id), str(currency)) for owner_id, currency in rows]
    paid = 0
    for business_id, currency in owing:
        async with uow_factory() as uow:
            if (await collect_debts(uow.session, settings, business_id, currency)).is_positive:
                paid += 1
    now, retried, after = utcnow(), 0, None
    for _ in range(50):  # a page per transaction; what is left waits for the next round
        async with uow_factory() as uow:
            charged, after = await retry_failed_charges(uow.session, now, after=after)
        retried += len(charged)
        if after is None:
            break
    return DebtCollection(paid, retried)


# --- withdrawals and settlements ---------------------------------------------------------------------


async def withdraw(
    session: AsyncSession, settings: Settings, business: Business, amount: Money, key: str
) -> Settlement:
    """A lead buyer takes money out of its available balance (never credit); the payout waits for an operator.

    What the business owes is paid first: its open debts are offset from the wallet (credit, then available, as
    for any charge), and only the available balance left after that can be paid out. Asking for more is a 409
    naming the open debts and what can be withdrawn; nothing is changed then.
    """
    if amount.currency != business.currency:
        raise InvalidInput.field("amount.currency", f"the wallet is in {business.currency}")
    if not amount.is_positive:
        raise InvalidInput.field("amount.amount_minor", "must be above zero")
    # Its status as of now, the row held against a block until this commits: a block that committed after the
    # request was let in refuses it here, and a block that comes after this payout is written finds it written.
    await refuse_if_blocked(session, business.id)
    ref = key_digest(key)  # a key may be longer than the references' columns take
    ledger_key = f"withdrawal:{business.id}:{ref}"
    transfer = build_withdrawal(
        ledger_key, business.id, business.mode, amount, memo="Withdrawal to the business's bank account"
    )
    balances = await store.lock_wallet(session, business.id, amount.currency)
    # Looked up with the wallet locked: a concurrent request with the same key has committed by now.
    done = await session.scalar(select(LedgerTransaction.id).where(LedgerTransaction.idempotency_key == ledger_key))
    if done is None:
        owed = Money(balances[AccountKind.RECEIVABLE], amount.currency)
        # As they stand before the collection below (which settles or cancels them in this transaction): a refusal
        # rolls that back and names them as they still are.
        debts = (
            [_OpenDebt.of(d) for d in await _open_charges(session, business.id, amount.currency)]
            if owed.is_positive
            else []
        )
        if owed.is_positive:
            await collect_debts(session, settings, business.id, amount.currency)
            balances = await store.lock_wallet(session, business.id, amount.currency)
        available = Money(balances[AccountKind.AVAILABLE], amount.currency)
        held_in = await held_earnings(session, settings, business.id, amount.currency)
        held = Money(held_in[AccountKind.AVAILABLE], amount.currency)
        # What is still owed after that (a debt whose charge an operator is settling at this moment is passed over
        # by the collection, its row locked) stays in the wallet too: a payout never leaves a debt behind.
        still_owed = Money(balances[AccountKind.RECEIVABLE], amount.currency)
        free = max(available - held - still_owed, Money(0, amount.currency))
        if free < amount:
            raise _not_withdrawable(amount, free, owed, debts, held)
    posted = await store.post(session, transfer, business_id=business.id, reference=f"withdrawal:{ref}")
    if posted.replayed:
        existing = await session.scalar(select(Settlement).where(Settlement.transaction_id == posted.transaction_id))
        assert existing is not None
        return existing
    settlement = await provider.payout(
        session, business.id, amount, transaction_id=posted.transaction_id, reference=f"withdrawal:{ref}"
    )
    await session.flush()
    return settlement


def _open_charges_query(business_id: str, currency: str) -> Select[Settlement]:
    """A business's open debts, oldest first: its charges still pending or failed."""
    return (
        select(Settlement)
        .where(
            Settlement.business_id == business_id,
            Settlement.currency == currency,
            Settlement.direction == "charge",
            Settlement.status.in_(OPEN_CHARGE),
        )
        .order_by(Settlement.created_at, Settlement.id)
    )


async def _open_charges(session: AsyncSession, business_id: str, currency: str) -> list[Settlement]:
    return list(await session.scalars(_open_charges_query(business_id, currency)))


@dataclass(frozen=True, slots=True)
class _OpenDebt:
    """An open debt as a withdrawal read it, before its collection changed the row."""

    id: str
    amount: Money
    status: str
    reference: str | None

    @classmethod
    def of(cls, row: Settlement) -> _OpenDebt:
        return cls(row.id, Money(row.amount_minor, row.currency), row.status, row.reference)


def _not_withdrawable(
    amount: Money, available: Money, owed: Money, debts: list[_OpenDebt], held: Money
) -> InsufficientFunds:
    """The refusal of a withdrawal: what can be withdrawn, the earnings held (until their buyers pay and can no longer
    return the leads), and the open debts that come first, by name."""
    extra: dict[str, object] = {"withdrawable": available.to_json(), "owed": owed.to_json(), "held": held.to_json()}
    waiting = (
        f" ({held} of earnings wait for the buyers of the leads sold to pay, or for their return windows to close)"
        if held.is_positive
        else ""
    )
    if not owed.is_positive:
        return InsufficientFunds(f"{amount} asked, {available} can be withdrawn{waiting}", extra=extra)
    extra["open_debts"] = [
        {"settlement_id": d.id, "amount": d.amount.to_json(), "status": d.status, "reference": d.reference}
        for d in debts
    ]
    named = ", ".join(f"{d.id} ({d.amount}, {d.status})" for d in debts) or "none listed"
    return InsufficientFunds(
        f"the business owes {owed} (open debts: {named}); what it owes is paid from the wallet before any "
        f"withdrawal, which leaves {available} to withdraw{waiting}, not {amount}",
        extra=extra,
    )


async def confirm_settlement(
    session: AsyncSession, settings: Settings, settlement_id: str, operator: str
) -> Settlement:
    """The operator saw the money arrive (a charge) or leave (a payout): the ledger moves it through clearing.

    A charge is confirmed while it is pending, and also once it has failed while it is still the open debt (not
    cancelled: paid from the wallet, superseded by a later attempt, or its lead returned): a business whose charges
    failed, until the collector gave up or between two attempts, may pay by bank transfer all the same. The debt
    is paid once: its charges are locked first, and only its latest attempt, while none of them is confirmed, can
    be; a superseded charge's refusal names the attempt to confirm instead (_supersede_older_charges)."""
    settlement = await _settlement(session, settlement_id)
    if settlement.status == "confirmed":
        return settlement
    others: list[Settlement] = []  # the debt's other charges, as they stand under the lock
    if settlement.direction == "charge":
        # Every attempt at this debt, held until the commit (in id order, as any two confirmations take them): of two
        # confirmations of one debt's charges at once, the second reads what the first did.
        chain = await session.scalars(
            _chain_query(settlement).order_by(Settlement.id).with_for_update().execution_options(populate_existing=True)
        )
        others = sorted((c for c in chain if c.id != settlement.id), key=lambda c: (c.created_at, c.id))
    confirmable = or_(
        Settlement.status == "pending", and_(Settlement.status == "failed", Settlement.direction == "charge")
    )
    changed = await rows_changed(
        session,
        update(Settlement)
        .where(Settlement.id == settlement_id, confirmable)
        .values(status="confirmed", confirmed_at=utcnow(), confirmed_by=operator),
    )
    if changed != 1:
        settlement = await _decided_meanwhile(session, settlement_id)
        if settlement.status == "confirmed":  # by a repeat of this very call that got there first
            return settlement
        raise _not_confirmable(settlement, others)
    amount = Money(settlement.amount_minor, settlement.currency)
    if settlement.direction == "charge":
        await _supersede_older_charges(session, settlement, others)
        # Whoever earned from what this charge paid for (a sold lead's seller) may spend those earnings now: they pay
        # its open debts first. Every wallet locked in one order, as a purchase locks buyer and seller.
        earners = await _earned_from(session, settlement)
        await store.lock_wallets(session, (settlement.payer, *earners), settlement.currency)
        received = await store.post(
            session,
            build_charge_received(f"received:{settlement.id}", settlement.payer, amount),
            business_id=settlement.business_id,
            reference=settlement.id,
        )
        settlement.confirmed_transaction_id = received.transaction_id
        await store.post(
            session,
            build_provider_settlement(f"banked:{settlement.id}", amount, SettlementDirection.TO_BANK),
            reference=settlement.id,
        )
        for earner in earners:
            await collect_debts(session, settings, earner, settlement.currency)
    else:
        paid = await store.post(
            session,
            build_provider_settlement(f"paid-out:{settlement.id}", amount, SettlementDirection.FROM_BANK),
            reference=settlement.id,
        )
        settlement.confirmed_transaction_id = paid.transaction_id
    await session.refresh(settlement)
    return settlement


async def _supersede_older_charges(session: AsyncSession, charge: Settlement, others: list[Settlement]) -> None:
    """The charge being confirmed pays its debt: a debt is never collected twice. Each attempt cancels the one
    before it (the collector's and the wallet's conditional updates), so its debt has no other open or confirmed
    charge; should it ever have one, a newer attempt or a payment refuses this confirmation, naming it, and an
    older attempt still open is cancelled, superseded by this one (or the collector would charge it again): at the
    provider too when it is pending, as collect_debts cancels a charge the wallet paid. One the provider can no longer
    stop may yet collect the debt: this confirmation is refused, naming it, until its outcome is known. `others`: the
    debt's other charges, read under confirm_settlement's lock, oldest first."""
    for other in others:
        newer = (other.created_at, other.id) > (charge.created_at, charge.id)
        if other.status == "confirmed" or (newer and other.status in OPEN_CHARGE):
            raise _already_charged(charge, other)
    for other in others:
        if other.status not in OPEN_CHARGE:
            continue
        was = other.status
        if was == "pending" and not await provider.cancel(session, other):
            amount = Money(other.amount_minor, other.currency)
            raise Conflict(
                f"its debt is also charged as settlement {other.id} ({amount}, pending), which the payment provider "
                "can no longer stop: confirm or fail that one first",
                extra={"charge_of_debt": {"settlement_id": other.id, "status": was}},
            )
        await _close_charge(session, other, was)


def _already_charged(charge: Settlement, other: Settlement) -> Conflict:
    """The refusal to confirm a charge whose debt is open, or was paid, as another charge."""
    amount = Money(other.amount_minor, other.currency)
    if other.status == "confirmed":
        detail = f"settlement {charge.id} is {charge.status}; its debt was paid as settlement {other.id} ({amount})"
    else:
        detail = (
            f"settlement {charge.id} is {charge.status}; its debt is open as settlement {other.id} ({amount}, "
            f"{other.status}): confirm that one"
        )
    return Conflict(detail, extra={"charge_of_debt": {"settlement_id": other.id, "status": other.status}})


def _not_confirmable(settlement: Settlement, others: list[Settlement]) -> Conflict:
    """Why a settlement that is not confirmed cannot be: a charge superseded by a later attempt at its debt (`others`,
    oldest first) names that attempt (the one an operator who saw the money arrive confirms instead)."""
    if settlement.direction == "charge":
        standing = [c for c in others if c.status in ("confirmed", *OPEN_CHARGE)]
        if standing:
            return _already_charged(settlement, standing[-1])
        return Conflict(
            f"settlement {settlement.id} is {settlement.status}; only a pending charge, or a failed one still owed, "
            "can be confirmed"
        )
    return Conflict(f"settlement {settlement.id} is {settlement.status}; only a pending one can be confirmed")


async def _earned_from(session: AsyncSession, charge: Settlement) -> list[str]:
    """The businesses (other than the payer) whose earnings were paid from what this charge is for."""
    if charge.reference is None:
        return []
    rows = await session.scalars(
        select(LedgerAccount.owner_id)
        .distinct()
        .join(LedgerPosting, LedgerPosting.account_id == LedgerAccount.id)
        .join(LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id)
        .where(
            LedgerTransaction.reference == charge.reference,
            LedgerTransaction.kind.in_((TransferKind.LEAD_EARNINGS.value, TransferKind.DEAL_COMMISSION.value)),
            LedgerAccount.owner == "business",
            LedgerAccount.kind.in_((AccountKind.AVAILABLE.value, AccountKind.CREDIT.value)),
            LedgerAccount.owner_id != charge.business_id,
        )
    )
    return sorted(r for r in rows if r is not None)


async def fail_settlement(
    session: AsyncSession, settings: Settings, settlement_id: str, operator: str
) -> Settlement:
    """A charge that failed leaves the debt open (the receivable stays); a failed payout goes back to the wallet.
    Saying so again answers as the first time (as a confirmation does), and moves nothing."""
    settlement = await _settlement(session, settlement_id)
    if settlement.status == "failed":
        return settlement
    changed = await rows_changed(
        session,
        update(Settlement)
        .where(Settlement.id == settlement_id, Settlement.status == "pending")
        .values(status="failed", confirmed_at=utcnow(), confirmed_by=operator),
    )
    if changed != 1:
        settlement = await _decided_meanwhile(session, settlement_id)
        if settlement.status == "failed":  # by a repeat of this very call that got there first
            return settlement
        raise Conflict(f"settlement {settlement_id} is {settlement.status}; only a pending one can fail")
    if settlement.direction == "payout":
        # Back to the business's wallet, or owed again to the club operator or referrer it was paying.
        business_id = settlement.business_id
        original = await store.transfer_of(session, settlement.transaction_id)
        if business_id is not None:
            await store.lock_wallet(session, business_id, settlement.currency)
        memo = "Payout failed: " + ("back to the wallet" if business_id is not None else "owed again")
        await store.post(
            session,
            build_reversal(f"reversal:{settlement.id}", original, memo=memo),
            business_id=business_id,
            reference=settlement.id,
        )
        if business_id is not None:
            await collect_debts(session, settings, business_id, settlement.currency)
    await session.refresh(settlement)
    return settlement


async def _decided_meanwhile(session: AsyncSession, settlement_id: str) -> Settlement:
    """The settlement as another transaction left it: its decision committed between our read and our update (on
    PostgreSQL the update waited for it, then found the row no longer pending)."""
    settlement = await session.get(Settlement, settlement_id, populate_existing=True)
    assert settlement is not None
    return settlement


async def _settlement(session: AsyncSession, settlement_id: str) -> Settlement:
    settlement = await session.get(Settlement, settlement_id)
    if settlement is None:
        raise NotFound(f"no settlement {settlement_id}")
    return settlement
