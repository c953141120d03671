"""What referrers and their sponsors earn from the leads their referral codes brought.

The plan in force when the lead was exposed decides (wallet/plans.py); every payout is an acquisition cost the
marketplace bears on top of what it charged, owed to the referrer's payable account (`referrer_payable`, named by
the referrer). Nothing is taken out of a commission's split. What it is owed is paid out by an operator's bank
transfer; the service records the debt, not the payout, yet (the ledger has `build_payable_payout` for it, and no
route calls it).

- A **partner** (a business or site with a referral link) earns the plan's tiers: the qualified-lead fee when a
  business first pays for one of its leads (a lead buyer's purchase; a deal maker's claim costs nothing, so only its
  deal's commission, once charged, qualifies the lead; taken back when that claim is returned, and earned again by
  the qualifying claim of a business still holding the lead, or by a later one), a share of each closed sale's
  commission, the lifetime bonus when the commission its leads brought crosses a threshold, and the retention bonus on
  a referred customer's repeat purchase. A tier whose role is a sponsor (sponsor, sponsor_2, ...) pays the partner's
  sponsor that many steps up instead (nobody, when there is none).
- A **customer** who refers others earns the customer-referrer rate of the revenue each referred lead brings (a
  lead buyer's net price, a deal's net commission), and its sponsors up the chain theirs: in mode "difference"
  only what the rate below did not already pay (seed 001: 5 % and 20 % of 1,000.00 are 50.00 and 150.00). A
  returned lead's price is given back, and so are the rewards it earned. Nothing else: the tiers are a partner's.

A partner's lifetime bonus is paid once its lifetime (paid deals' commissions, never returned) crosses the threshold,
at most one per threshold (_settle_lifetime_bonuses); a retention bonus stands while an earlier purchase of the
customer does, taken back and paid again as those come and go (_settle_retention), and is held from payout until an
earlier purchase of the customer can no longer be returned (wallet/payables.py). Each is its own transfer, so a
return takes it back alone. (A customer referrer's lifetime and retention bonuses paid before the tiers were a
partner's only are still taken back as they were, never paid again.)
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Select, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.clock import utcnow
from marketplace.db.models import (
    Exposure,
    Lead,
    LeadContact,
    LedgerAccount,
    LedgerPosting,
    LedgerTransaction,
    Referrer,
)
from marketplace.db.statements import starts_with
from marketplace.errors import Conflict, InvalidInput
from marketplace.identity.links import referrer_of
from marketplace.money import Money
from marketplace.wallet import store
from marketplace.wallet.ledger import (
    AccountKey,
    AccountKind,
    build_partner_bonuses,
    build_reversal,
    marketplace_account,
)
from marketplace.wallet.plans import (
    ROLE_REFERRER,
    CommissionPlan,
    EventKind,
    PayoutReason,
    PlanEvent,
    evaluate,
    sponsor_role,
)

PARTNER, CUSTOMER = "partner", "customer"


async def register_referrer(
    session: AsyncSession,
    referrer: str,
    kind: str | None,
    sponsor: str | None,
    created_by: str,
    *,
    sponsor_given: bool = True,
) -> Referrer:
    """The referrer as it is registered now: a new one (a partner with no sponsor unless said otherwise), or the
    same one again (its code never changes; a kind or sponsor left out means as registered). Its kind and sponsor
    are fixed once given: a different kind or sponsor for a known referrer is a 409."""
    known = await session.get(Referrer, referrer)
    if known is not None:
        kind = known.kind if kind is None else kind
        sponsor = known.sponsor_id if not sponsor_given else sponsor
    kind = kind or PARTNER
    if sponsor is not None and (known is None or sponsor != known.sponsor_id):
        if sponsor == referrer:
            raise InvalidInput.field("sponsor", "a referrer cannot be its own sponsor")
        if await session.get(Referrer, sponsor) is None:
            raise InvalidInput.field("sponsor", f"no such referrer: {sponsor} (issue its code first)")
    await store.insert_ignore(
        session,
        Referrer,
        {
            "id": referrer,
            "kind": kind,
            "sponsor_id": sponsor,
            "lifetime_revenue_minor": 0,
            "created_by": created_by,
            "created_at": utcnow(),
        },
    )
    row = await session.get(Referrer, referrer, populate_existing=True)
    assert row is not None
    if (row.kind, row.sponsor_id) != (kind, sponsor):
        raise Conflict(
            f"referrer {referrer} is registered as a {row.kind}"
            + (f" sponsored by {row.sponsor_id}" if row.sponsor_id else " with no sponsor")
            + "; a referrer's kind and sponsor do not change"
        )
    return row


async def _referrer(session: AsyncSession, lead: Lead) -> Referrer | None:
    """The lead's referrer (its kind and sponsor never change, so it is read without a lock); a code issued before
    referrers were kept names a partner with no sponsor."""
    if not lead.referral_code:
        return None
    name = referrer_of(lead.referral_code)
    row = await session.get(Referrer, name)
    if row is None:
        row = await register_referrer(session, name, PARTNER, None, "referral code issued before referrers were kept")
    return row


async def _add_lifetime_revenue(session: AsyncSession, referrer: Referrer, revenue: Money) -> Money:
    """Add the revenue to the referrer's lifetime in one statement (the row is locked by it until the commit, so
    concurrent events of one referrer count in turn) and return what it was before."""
    before = await session.scalar(
        update(Referrer)
        .where(Referrer.id == referrer.id)
        .values(lifetime_revenue_minor=Referrer.lifetime_revenue_minor + revenue.amount_minor)
        .returning(Referrer.lifetime_revenue_minor - revenue.amount_minor)
        .execution_options(synchronize_session=False)
    )
    return Money(int(before or 0), revenue.currency)


async def _sponsors(session: AsyncSession, referrer: Referrer, levels: int) -> list[str]:
    """Who sponsored the referrer, and who sponsored that one, up to `levels` (the plan's chain)."""
    chain: list[str] = []
    current = referrer.sponsor_id
    while current is not None and len(chain) < levels and current not in chain and current != referrer.id:
        chain.append(current)
        current = await session.scalar(select(Referrer.sponsor_id).where(Referrer.id == current))
    return chain


async def _payees(session: AsyncSession, plan: CommissionPlan, referrer: Referrer) -> dict[str, str]:
    """Who the plan pays for the referrer's lead, by role: the referrer, and its sponsors up the chain as far as the
    plan pays them: a customer's by the customer-referrer rule's sponsor rates, a partner's by the tiers that name a
    sponsor role (sponsor, sponsor_2, ...). A role with nobody behind it (a partner with no sponsor) is paid nothing."""
    accounts = {ROLE_REFERRER: referrer.id}
    if referrer.kind == PARTNER:
        levels = plan.tier_sponsor_levels()
    else:
        levels = len(plan.customer_referrer.sponsor_chain_bp) if plan.customer_referrer is not None else 0
    if levels:
        sponsors = await _sponsors(session, referrer, levels)
        accounts.update({sponsor_role(level): sponsor for level, sponsor in enumerate(sponsors, start=1)})
    return accounts


async def _is_repeat_purchase(session: AsyncSession, lead: Lead) -> bool:
    """The same customer (phone), brought by the same code, bought before: an earlier lead of it was bought or
    closed and not returned."""
    phone = select(LeadContact.phone).where(LeadContact.lead_id == lead.id).scalar_subquery()
    earlier = (
        select(Lead.id)
        .join(LeadContact, LeadContact.lead_id == Lead.id)
        .where(
            Lead.referral_code == lead.referral_code,
            Lead.id != lead.id,
            Lead.created_at < lead.created_at,
            LeadContact.phone == phone,
            exists().where(
                Exposure.lead_id == Lead.id,
                Exposure.status != "returned",
                (Exposure.price_minor > 0) | (Exposure.status == "paid"),
            ),
        )
        .limit(1)
    )
    return await session.scalar(earlier) is not None


async def _pay(
    session: AsyncSession,
    key: str,
    payouts: Sequence[tuple[str, Money]],
    accounts: dict[str, str],
    *,
    memo: str,
    reference: str,
) -> None:
    """Post the payouts of roles that name someone (the referrer, its sponsors) as one bonus transfer."""
    owed = [
        (marketplace_account(AccountKind.REFERRER_PAYABLE, accounts[role]), amount)
        for role, amount in payouts
        if role in accounts and amount.is_positive
    ]
    if owed:
        await store.post(session, build_partner_bonuses(key, owed, memo=memo), reference=reference)


async def reward_qualified_lead(
    session: AsyncSession, plan: CommissionPlan, lead: Lead, exposure: Exposure, price: Money
) -> None:
    """A business's claim made a partner's lead a qualified one (charges.qualifying_revenue: a lead buyer's purchase,
    or a deal maker's deal once its commission is charged): the plan's qualified-lead fee, to the referrer or the
    sponsor its role names (a percent tier applies to `price`, what the claim brought, net). Once per lead while it
    stands: a later claim finds it paid, whatever the plan in force says now, unless a return took it back
    (take_back_qualified_fee)."""
    referrer = await _referrer(session, lead)
    if referrer is None or referrer.kind != PARTNER:
        return
    if await _standing_fees(session, lead):
        return
    accounts = await _payees(session, plan, referrer)
    event = PlanEvent(EventKind.QUALIFIED_LEAD, price, present_roles=frozenset(accounts))
    result = evaluate(plan, event)
    await _pay(
        session,
        f"{_QUALIFIED}{lead.id}:{exposure.id}",
        within(price, [(p.recipient_role, p.amount) for p in result.bonuses if p.recipient_role in accounts]),
        accounts,
        memo=f"Qualified lead {lead.id} (plan v{result.plan_version})",
        reference=exposure.id,
    )


def within(revenue: Money, payouts: Sequence[tuple[str, Money]]) -> list[tuple[str, Money]]:
    """The qualified-lead fee never pays out more than the claim that qualified the lead brought, net: a fixed fee above
    it (20.00 on a deal maker's commission of 0.01, a turnover of a few agorot reported paid) is cut to it, its parts
    in proportion (largest remainder), so a partner and a friendly deal maker cannot farm fees for nothing."""
    total = sum(amount.amount_minor for _, amount in payouts)
    if total <= revenue.amount_minor:
        return list(payouts)
    parts = revenue.allocate([amount.amount_minor for _, amount in payouts])
    return [(role, part) for (role, _), part in zip(payouts, parts, strict=True)]


_QUALIFIED = "referral:qualified:"
TAKEN_BACK = _TAKEN_BACK = ":returned"  # a take-back's key: the key it takes back, and this


async def _standing_fees(session: AsyncSession, lead: Lead) -> list[tuple[str, str | None]]:
    """The lead's qualified-lead fees not taken back (one at most), as (key, the claim that earned it): read among
    the ledger transactions of its exposures (each fee and its reversal reference the claim that earned it)."""
    rows = (
        await session.execute(
            select(LedgerTransaction.idempotency_key, LedgerTransaction.reference).where(
                LedgerTransaction.reference.in_(select(Exposure.id).where(Exposure.lead_id == lead.id)),
                starts_with(session, LedgerTransaction.idempotency_key, f"{_QUALIFIED}{lead.id}"),
            )
        )
    ).all()
    keys = {key for key, _ in rows}
    return sorted(
        (key, reference) for key, reference in rows if not key.endswith(_TAKEN_BACK) and key + _TAKEN_BACK not in keys
    )


async def take_back_qualified_fee(session: AsyncSession, lead: Lead, returned: Exposure) -> bool:
    """The claim that earned the lead's qualified-lead fee was returned (e.g. as irrelevant): the fee is taken back,
    so a partner cannot earn fees on leads a business it works with takes and gives back. The fee is held while that
    claim may be returned (wallet/payables.py), so it is never taken back after it was paid out. Returns whether
    there was one (the caller then has another business still holding the lead earn it)."""
    taken = False
    for key, reference in await _standing_fees(session, lead):
        if reference == returned.id:
            memo = f"Returned lead {lead.id}: qualified-lead fee back"
            await _reverse(session, key, f"{key}{_TAKEN_BACK}", memo, reference=returned.id)
            taken = True
    return taken


async def _credited(session: AsyncSession, key: str) -> list[tuple[AccountKey, Money]]:
    """What the transaction under `key` credited to referrers' payables (each credit as a positive amount)."""
    rows = (
        await session.execute(
            select(LedgerAccount.code, LedgerPosting.amount_minor, LedgerPosting.currency)
            .join(LedgerPosting, LedgerPosting.account_id == LedgerAccount.id)
            .join(LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id)
            .where(LedgerTransaction.idempotency_key == key, LedgerAccount.kind == AccountKind.REFERRER_PAYABLE)
        )
    ).all()
    return [(AccountKey.parse(code), Money(-amount, cur)) for code, amount, cur in rows]


async def _reverse(session: AsyncSession, key: str, reversal_key: str, memo: str, *, reference: str) -> None:
    """Take back what the transaction under `key` credited to referrers' payables (if anything)."""
    credited = await _credited(session, key)
    if credited:
        reversal = build_reversal(reversal_key, build_partner_bonuses(key, credited), memo=memo)
        await store.post(session, reversal, reference=reference)


async def reward_revenue(
    session: AsyncSession, plan: CommissionPlan, lead: Lead, exposure: Exposure, revenue: Money, *, step: str
) -> None:
    """A referred lead brought the marketplace revenue (net of VAT): a lead buyer's purchase or upgrade (`step`
    "purchase", "upgrade") or a deal's commission ("commission"). A partner earns the closed-sale share of a
    commission and the lifetime and retention bonuses; a customer and its sponsors their rates of any revenue, and
    nothing else (the plan's tiers are a partner's: evaluate pays a customer_purchase the customer_referrer rule only).

    The rates are one transfer under the event's key; a retention bonus is its own (a return of the purchase that
    made this one a repeat takes it back alone, and this purchase pays back those of later ones it makes repeats
    again: _settle_retention), and so is a lifetime bonus (_settle_lifetime_bonuses: it stands
    while the lifetime is at its threshold, whichever purchase carried it there)."""
    referrer = await _referrer(session, lead)
    if referrer is None or not revenue.is_positive:
        return
    await _lock_referrer(session, referrer.id)  # its events settle in turn, from here to the commit
    await _settle_retention(session, lead, exposure, repay=referrer.kind == PARTNER)  # later ones repeats again?
    if referrer.kind == PARTNER and step != "commission":
        return  # a partner is paid per qualified lead and per closed sale; its lifetime counts commissions
    before = await _add_lifetime_revenue(session, referrer, revenue)  # the referrer's row locked till the commit
    accounts = await _payees(session, plan, referrer)
    kind = EventKind.DEAL_PAID if referrer.kind == PARTNER else EventKind.CUSTOMER_PURCHASE
    event = PlanEvent(
        kind,
        revenue,
        present_roles=frozenset(accounts),
        repeat_purchase=kind is EventKind.DEAL_PAID and await _is_repeat_purchase(session, lead),
    )
    result = evaluate(plan, event)
    memo = f"Referral rewards: lead {lead.id}, {step} (plan v{result.plan_version})"
    await _pay(
        session,
        _revenue_key(step, exposure.id),
        [(p.recipient_role, p.amount) for p in result.bonuses if p.reason is not PayoutReason.RETENTION_BONUS],
        accounts,
        memo=memo,
        reference=exposure.id,
    )
    await _pay(
        session,
        _retention_key(step, exposure.id, 1),
        [(p.recipient_role, p.amount) for p in result.bonuses if p.reason is PayoutReason.RETENTION_BONUS],
        accounts,
        memo=f"Retention bonus: lead {lead.id}, {step} (plan v{result.plan_version})",
        reference=exposure.id,
    )
    if referrer.kind != PARTNER:
        return  # a customer's lifetime is kept (a bonus paid it before the tiers were a partner's goes by it), no bonus
    await _settle_lifetime_bonuses(
        session,
        referrer,
        before,
        before + revenue,
        plan=plan,
        accounts=accounts,
        base=revenue,
        reference=exposure.id,
        memo=f"Lifetime bonus: lead {lead.id}, {step} (plan v{result.plan_version})",
    )


def _revenue_key(step: str, exposure_id: str) -> str:
    return f"referral:{step}:{exposure_id}"


RETENTION_PREFIX = _RETENTION = "referral:retention:"  # held by its earlier purchases too (wallet/payables.py)
_LIFETIME = "referral:lifetime:"


def _lifetime_prefix(referrer_id: str, role: str, threshold: Money) -> str:
    """The keys of one lifetime bonus of a referrer (a role's, at a threshold) end in the crossing's number: the
    first time its lifetime reaches the threshold is 1, a crossing again after a return took the bonus back 2, ..."""
    return f"{_LIFETIME}{referrer_id}:{role}:{threshold.amount_minor}:{threshold.currency}:"


async def _settle_lifetime_bonuses(
    session: AsyncSession,
    referrer: Referrer,
    before: Money,
    lifetime: Money,
    *,
    plan: CommissionPlan | None = None,
    accounts: dict[str, str] | None = None,
    base: Money | None = None,
    reference: str,
    memo: str = "",
) -> None:
    """Bring the referrer's lifetime bonuses in line with its lifetime revenue (`before` this event, `lifetime`
    after it), with its row locked (so events of one referrer settle in turn): a standing bonus whose threshold the
    lifetime is below now is taken back (a return brought it down), and, for a revenue event's plan, a bonus is paid
    when the lifetime reaches its threshold and none of it stands: as the lifetime crosses it, or again after a
    return took it back. So at most one stands per threshold, and only while the lifetime is at it. Each is its own
    transfer, keyed by referrer, role, threshold and crossing number; a percent bonus is of the event that paid it."""
    rows = await session.scalars(
        select(LedgerTransaction.idempotency_key).where(
            starts_with(session, LedgerTransaction.idempotency_key, f"{_LIFETIME}{referrer.id}:")
        )
    )
    keys = set(rows)
    paid: dict[str, int] = {}  # per bonus (its key's prefix): how many were paid
    standing: dict[str, str] = {}  # per bonus: the key of the one that stands
    for key in keys:
        if key.endswith(_TAKEN_BACK):
            continue
        prefix = key[: key.rindex(":") + 1]
        paid[prefix] = paid.get(prefix, 0) + 1
        if key + _TAKEN_BACK not in keys:
            standing[prefix] = key
    for prefix, key in sorted(standing.items()):
        threshold_minor = int(prefix.rstrip(":").split(":")[-2])
        if lifetime.amount_minor < threshold_minor:
            memo_back = f"Lifetime revenue {lifetime} below the bonus's threshold again: lifetime bonus back"
            await _reverse(session, key, f"{key}{_TAKEN_BACK}", memo_back, reference=reference)
            del standing[prefix]
    if plan is None or accounts is None or base is None:
        return
    for bonus in plan.lifetime_bonus:
        prefix = _lifetime_prefix(referrer.id, bonus.role, bonus.threshold)
        if bonus.role not in accounts or prefix in standing or not bonus.threshold <= lifetime:
            continue
        if before < bonus.threshold or paid.get(prefix):  # crossed now, or reached again after a take-back
            amount = bonus.amount.of(base)
            await _pay(
                session,
                f"{prefix}{paid.get(prefix, 0) + 1}",
                [(bonus.role, amount)],
                accounts,
                memo=memo,
                reference=reference,
            )
            standing[prefix] = prefix


async def _lock_referrer(session: AsyncSession, referrer_id: str) -> Referrer | None:
    """The referrer's row, locked until the commit (its events settle in turn)."""
    return await session.scalar(
        select(Referrer).where(Referrer.id == referrer_id).with_for_update()
    )


async def take_back_rewards(session: AsyncSession, lead: Lead, exposure: Exposure, refunded_net: Money) -> None:
    """A returned lead's price was given back: so are the rewards its purchase and upgrade earned (their retention
    bonuses too), and the revenue leaves the referrer's lifetime: a lifetime bonus the lifetime is now below is taken
    back, whichever purchase paid it; and a retention bonus on a later purchase of the same customer that this
    purchase made a repeat, if no other earlier purchase of it stands (_settle_retention)."""
    if not lead.referral_code:
        return
    referrer = await _lock_referrer(session, referrer_of(lead.referral_code))  # before anything is read
    memo = f"Returned lead {lead.id}: rewards back"
    for step in ("purchase", "upgrade"):
        key = _revenue_key(step, exposure.id)
        await _reverse(session, key, f"{key}{_TAKEN_BACK}", memo, reference=exposure.id)
    for _, (_, standing) in sorted((await _retention_bonuses(session, [exposure.id])).items()):
        if standing is not None:
            await _reverse(session, standing, f"{standing}{_TAKEN_BACK}", memo, reference=exposure.id)
    if referrer is None:
        return
    if referrer.kind == CUSTOMER:
        before = await _add_lifetime_revenue(session, referrer, -refunded_net)
        await _settle_lifetime_bonuses(session, referrer, before, before - refunded_net, reference=exposure.id)
    await _settle_retention(session, lead, exposure, repay=referrer.kind == PARTNER)


def _retention_key(step: str, exposure_id: str, number: int) -> str:
    """The key of a purchase's retention bonus (an event's `step` of the exposure): the first one paid has no
    number, as it always had; one paid again after a take-back (an earlier purchase of the customer stands again)
    ends in its number, 2, 3, ...; its take-back adds `:returned`."""
    key = f"{_RETENTION}{step}:{exposure_id}"
    return key if number == 1 else f"{key}:{number}"


async def _retention_bonuses(
    session: AsyncSession, exposure_ids: Sequence[str] | Select[str]
) -> dict[tuple[str, str], tuple[list[str], str | None]]:
    """Per purchase (its step and exposure) of the given ones that was paid a retention bonus: the keys of those
    paid, in order, and the one that stands (not taken back), if any. Each is referenced by its purchase's exposure;
    a take-back may be referenced by the return that caused it, so it is looked up by key."""
    rows = await session.scalars(
        select(LedgerTransaction.idempotency_key).where(
            starts_with(session, LedgerTransaction.idempotency_key, _RETENTION),
            LedgerTransaction.reference.in_(exposure_ids),
        )
    )
    paid = [key for key in rows if not key.endswith(_TAKEN_BACK)]
    if not paid:
        return {}
    taken = set(
        await session.scalars(
            select(LedgerTransaction.idempotency_key).where(
                LedgerTransaction.idempotency_key.in_([key + _TAKEN_BACK for key in paid])
            )
        )
    )
    bonuses: dict[tuple[str, str], tuple[list[str], str | None]] = {}
    for key in sorted(paid, key=lambda k: int(k.split(":")[4]) if k.count(":") == 4 else 1):
        step, exposure_id = key[len(_RETENTION) :].split(":")[:2]
        keys, standing = bonuses.get((step, exposure_id), ([], None))
        keys.append(key)
        if key + _TAKEN_BACK not in taken:
            standing = key
        bonuses[(step, exposure_id)] = (keys, standing)
    return bonuses


async def _settle_retention(session: AsyncSession, lead: Lead, event: Exposure, *, repay: bool = True) -> None:
    """A purchase of the lead (`event`) became standing or was returned, with the referrer's row locked: the retention
    bonuses of later purchases of the same customer (same phone, same code) are brought in line with the rule that
    one stands while its purchase does and an earlier purchase of the customer does. One whose last earlier purchase
    is gone is taken back; one taken back so is paid again (the same amounts as the first, under the next number)
    when an earlier purchase stands again (another business's claim of a returned lead, say). A purchase paid no
    retention bonus (none of its customer's earlier leads was bought when it was made) is left as it is. `repay`
    False (a customer referrer's, which the tiers no longer pay) takes back and pays nothing again."""
    phone = select(LeadContact.phone).where(LeadContact.lead_id == lead.id).scalar_subquery()
    later = (
        select(Exposure.id)
        .join(Lead, Lead.id == Exposure.lead_id)
        .join(LeadContact, LeadContact.lead_id == Lead.id)
        .where(
            Lead.referral_code == lead.referral_code,
            Lead.id != lead.id,
            Lead.created_at > lead.created_at,
            LeadContact.phone == phone,
        )
    )
    repeat: dict[str, bool] = {}
    for (step, exposure_id), (keys, standing) in sorted((await _retention_bonuses(session, later)).items()):
        exposure = await session.get(Exposure, exposure_id)
        later_lead = await session.get(Lead, exposure.lead_id) if exposure is not None else None
        if exposure is None or later_lead is None:
            continue
        if later_lead.id not in repeat:
            repeat[later_lead.id] = await _is_repeat_purchase(session, later_lead)
        stands = exposure.status != "returned" and repeat[later_lead.id]
        if standing is not None and not stands:
            memo = f"Lead {lead.id} returned: lead {later_lead.id} was no repeat purchase, retention bonus back"
            await _reverse(session, standing, f"{standing}{_TAKEN_BACK}", memo, reference=event.id)
        elif standing is None and stands and repay:
            credited = await _credited(session, keys[0])
            if credited:
                memo = f"Retention bonus again: lead {later_lead.id}, {step} (lead {lead.id} bought: a repeat again)"
                key = _retention_key(step, exposure_id, len(keys) + 1)  # the keys are 1, 2, ... in order
                await store.post(session, build_partner_bonuses(key, credited, memo=memo), reference=exposure_id)
