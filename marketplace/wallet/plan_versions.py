"""Commission plan versions: saving a new version (never editing one), the plan in force and its rates, the
plan a claim was settled under."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from marketplace.clock import utcnow
from marketplace.db.conflicts import violates
from marketplace.db.models import CommissionPlanVersion
from marketplace.errors import Conflict, FieldError, InvalidInput
from marketplace.ids import new_id
from marketplace.settings import Settings
from marketplace.wallet import store
from marketplace.wallet.plans import (
    ROLE_CLUB_OPERATOR,
    ROLE_PLATFORM,
    ROLE_RECOMMENDER,
    CommissionPlan,
    LifetimeBonus,
    Tier,
    default_plan,
    is_referral_role,
    parse_plan,
)

DEFAULT_PLAN_NAME = "default"

# Who can share a commission (charges._present_roles); a referrer or a sponsor is paid by the referral tiers on top.
SPLIT_ROLES = (ROLE_RECOMMENDER, ROLE_PLATFORM, ROLE_CLUB_OPERATOR)
_NOT_IN_SPLIT = "a referrer and its sponsors are paid by the referral tiers, on top of the split"
_TIERS_PAY = "the referral tiers pay a lead's referrer and its sponsors; a commission's sharers are in the split"
# What a tier's role may be (plans.is_referral_role): the first sponsor up the chain is "sponsor", never "sponsor_1".
_TIER_ROLES = "referrer, sponsor (the referrer's sponsor) or sponsor_2, sponsor_3, ... (sponsors further up its chain)"

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
    """A new version of the plan (never an edit of an old one, which settled deals still point at), numbered after
    the latest. `version` may be left out; sent, it must be that next number (a 422 naming it otherwise): it was
    required and then replaced by the next number, so a plan sent as version 99 was stored as 9 without a word."""
    sent = "version" in definition
    # Refuses an invalid plan with every bad field named (a version left out is numbered below, so not missing).
    plan = parse_plan(definition if sent else dict(definition, version=1), currency)
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
        FieldError(f"tiers.{name}.role", f"{_TIER_ROLES} ({_TIERS_PAY})")
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
    if sent and plan.version != version:  # an old or a future number would name another version than the one saved
        raise InvalidInput(
            f"version: must be the next version number, {version} (or left out)",
            errors=[FieldError("version", f"must be the next version number, {version} (or left out)")],
            extra={"expected_version": version},
        )
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
