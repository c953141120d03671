"""Commission plans as data: parse and validate an operator's plan, and evaluate it for an event into payouts.

A plan is JSON an operator edits (``default_plan()`` shows every part)::

    version               int >= 1; a settlement records the version it used
    name                  free text
    commission_rates_bp   {category: bp} overriding the category's configured rate; {} = category defaults
    commission_split      how a paid deal's commission is shared: recipients, each with share_bp (the
                          share_bp of all such recipients sum to 10,000) or a fixed amount (taken first);
                          unclaimed_to: the role that receives the share of a role absent from the deal
                          (no club, no recommender)
    tiers                 a partner's fees and bonuses, paid by the marketplace on top, each {role, fixed |
                          percent_bp}: qualified_lead (a qualified lead), closed_sale (a paid deal, percent of
                          the commission), lifetime_bonus (a list, each with a threshold: paid when the
                          role's lifetime revenue, its paid deals' commissions, crosses it), retention_bonus
                          (a paid deal of a customer who bought before); never a customer referrer's
    customer_referrer     {referrer_bp, sponsor_chain_bp: [bp, ...], mode}: a referred customer's revenue
                          earns the referrer referrer_bp and each sponsor up the chain its rate, and nothing
                          else (the tiers are a partner's; seed 001: customers stay customers); mode
                          "difference" pays a sponsor only the difference to what was already paid below it
                          (seed 001: 20 % - 5 % = 15 %), "company_pays" pays every rate in full
    rewards               non-cash thanks [{on, role, description}], recorded and never paid

Events: ``qualified_lead`` (amount: the lead's price), ``deal_paid`` (amount: the commission; the split
applies, so pass the net commission, since VAT is not shared; with the partner's tiers), ``customer_purchase``
(amount: the revenue from a referred customer; the customer_referrer rule only).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from marketplace.errors import FieldError, InvalidInput
from marketplace.money import BP_WHOLE, MAX_AMOUNT_MINOR, CurrencyMismatch, Money, minor_unit_exponent

__all__ = [
    "ROLE_CLUB_OPERATOR",
    "ROLE_PLATFORM",
    "ROLE_RECOMMENDER",
    "ROLE_REFERRER",
    "Amount",
    "CommissionPlan",
    "CustomerReferrerRule",
    "EventKind",
    "LifetimeBonus",
    "Payout",
    "PayoutReason",
    "PlanError",
    "PlanEvent",
    "PlanResult",
    "ReferrerMode",
    "Reward",
    "SplitRecipient",
    "Tier",
    "deal_commission",
    "default_plan",
    "evaluate",
    "is_referral_role",
    "parse_plan",
    "sponsor_level",
    "sponsor_role",
]

ROLE_PLATFORM = "platform"
ROLE_RECOMMENDER = "recommender"
ROLE_CLUB_OPERATOR = "club_operator"
ROLE_REFERRER = "referrer"

_ROLE_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")


def sponsor_role(level: int) -> str:
    """The role of the sponsor `level` steps above the referrer: sponsor, sponsor_2, sponsor_3, ..."""
    return "sponsor" if level == 1 else f"sponsor_{level}"


def sponsor_level(role: str) -> int | None:
    """The level of a sponsor role (sponsor 1, sponsor_2 2, ...); None for any other role."""
    if role == "sponsor":
        return 1
    found = re.fullmatch(r"sponsor_([2-9]|[1-9][0-9]+)", role)
    return int(found.group(1)) if found else None


_REFERRAL_ROLE_RE = re.compile(r"referrer|sponsor(_[2-9]|_[1-9][0-9]+)?")


def is_referral_role(role: str) -> bool:
    """Whether a tier's role is one the referral rewards pay: the referrer or a sponsor above it."""
    return _REFERRAL_ROLE_RE.fullmatch(role) is not None


class PlanError(InvalidInput):
    """A plan is not valid; errors name every wrong field by its path (commission_split.recipients[1])."""


class EventKind(StrEnum):
    QUALIFIED_LEAD = "qualified_lead"
    DEAL_PAID = "deal_paid"
    CUSTOMER_PURCHASE = "customer_purchase"


class ReferrerMode(StrEnum):
    DIFFERENCE = "difference"
    COMPANY_PAYS = "company_pays"


class PayoutReason(StrEnum):
    SPLIT = "split"
    QUALIFIED_LEAD = "qualified_lead"
    CLOSED_SALE = "closed_sale"
    LIFETIME_BONUS = "lifetime_bonus"
    RETENTION_BONUS = "retention_bonus"
    CUSTOMER_REFERRER = "customer_referrer"
    SPONSOR = "sponsor"


# --- the plan ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Amount:
    """A fixed amount or a percentage (basis points) of the event's amount; exactly one is set."""

    fixed: Money | None = None
    percent_bp: int | None = None

    def of(self, base: Money) -> Money:
        if self.fixed is not None:
            if self.fixed.currency != base.currency:
                raise CurrencyMismatch(self.fixed.currency, base.currency, "apply a fixed plan amount to")
            return self.fixed
        assert self.percent_bp is not None  # parse_plan guarantees one of the two
        return base.percent_bp(self.percent_bp)

    def to_json(self) -> dict[str, Any]:
        return {"fixed": self.fixed.to_json()} if self.fixed is not None else {"percent_bp": self.percent_bp}


@dataclass(frozen=True, slots=True)
class SplitRecipient:
    role: str
    share_bp: int | None = None
    fixed: Money | None = None

    def to_json(self) -> dict[str, Any]:
        if self.fixed is not None:
            return {"role": self.role, "fixed": self.fixed.to_json()}
        return {"role": self.role, "share_bp": self.share_bp}


@dataclass(frozen=True, slots=True)
class Tier:
    role: str
    amount: Amount

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role, **self.amount.to_json()}


@dataclass(frozen=True, slots=True)
class LifetimeBonus:
    role: str
    threshold: Money
    amount: Amount

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role, "threshold": self.threshold.to_json(), **self.amount.to_json()}


@dataclass(frozen=True, slots=True)
class CustomerReferrerRule:
    referrer_bp: int
    sponsor_chain_bp: tuple[int, ...]
    mode: ReferrerMode

    def to_json(self) -> dict[str, Any]:
        return {
            "referrer_bp": self.referrer_bp,
            "sponsor_chain_bp": list(self.sponsor_chain_bp),
            "mode": self.mode.value,
        }


@dataclass(frozen=True, slots=True)
class RewardRule:
    on: EventKind
    role: str
    description: str

    def to_json(self) -> dict[str, Any]:
        return {"on": self.on.value, "role": self.role, "description": self.description}


@dataclass(frozen=True, slots=True)
class CommissionPlan:
    version: int
    name: str
    split: tuple[SplitRecipient, ...]
    unclaimed_to: str
    commission_rates_bp: Mapping[str, int] = field(default_factory=dict)
    qualified_lead: Tier | None = None
    closed_sale: Tier | None = None
    lifetime_bonus: tuple[LifetimeBonus, ...] = ()
    retention_bonus: Tier | None = None
    customer_referrer: CustomerReferrerRule | None = None
    rewards: tuple[RewardRule, ...] = ()

    def rate_bp(self, category: str, default_bp: int) -> int:
        """The commission rate for a category under this plan, or the category's configured default."""
        return self.commission_rates_bp.get(category, default_bp)

    def tier_sponsor_levels(self) -> int:
        """How far up a partner's sponsor chain its tiers pay: the deepest sponsor level a tier's role names (0 when
        they pay the referrer only)."""
        roles = [t.role for t in (self.qualified_lead, self.closed_sale, self.retention_bonus) if t is not None]
        roles += [b.role for b in self.lifetime_bonus]
        return max((sponsor_level(role) or 0 for role in roles), default=0)

    def recommender_share_bp(self) -> int:
        """The recommender's share of the split (what a business that sold a lead earns of its revenue), in basis
        points; a fixed amount is no share of it and counts nothing here."""
        return sum(r.share_bp or 0 for r in self.split if r.role == ROLE_RECOMMENDER)

    def to_json(self) -> dict[str, Any]:
        """The plan as canonical JSON; parse_plan(plan.to_json()) == plan."""
        return {
            "version": self.version,
            "name": self.name,
            "commission_rates_bp": dict(self.commission_rates_bp),
            "commission_split": {
                "recipients": [r.to_json() for r in self.split],
                "unclaimed_to": self.unclaimed_to,
            },
            "tiers": {
                "qualified_lead": self.qualified_lead.to_json() if self.qualified_lead else None,
                "closed_sale": self.closed_sale.to_json() if self.closed_sale else None,
                "lifetime_bonus": [b.to_json() for b in self.lifetime_bonus],
                "retention_bonus": self.retention_bonus.to_json() if self.retention_bonus else None,
            },
            "customer_referrer": self.customer_referrer.to_json() if self.customer_referrer else None,
            "rewards": [r.to_json() for r in self.rewards],
        }


def default_plan(currency: str = "ILS") -> dict[str, Any]:
    """The design's default plan as editable JSON, its fixed amounts in currency (a fresh copy each call)."""
    Money.zero(currency)  # refuses a malformed code before it reaches an operator's plan
    unit = 10 ** minor_unit_exponent(currency)

    def major(amount: int) -> dict[str, Any]:
        return Money(amount * unit, currency).to_json()

    return {
        "version": 1,
        "name": "Marketplace default",
        "commission_rates_bp": {},
        "commission_split": {
            # Seed 000: the recommender 70 %, the platform 25 %, the club operator 5 %.
            "recipients": [
                {"role": ROLE_RECOMMENDER, "share_bp": 7000},
                {"role": ROLE_PLATFORM, "share_bp": 2500},
                {"role": ROLE_CLUB_OPERATOR, "share_bp": 500},
            ],
            "unclaimed_to": ROLE_PLATFORM,
        },
        "tiers": {
            "qualified_lead": {"role": ROLE_REFERRER, "fixed": major(20)},
            "closed_sale": {"role": ROLE_REFERRER, "percent_bp": 500},
            "lifetime_bonus": [{"role": ROLE_REFERRER, "threshold": major(100_000), "fixed": major(500)}],
            "retention_bonus": {"role": ROLE_REFERRER, "percent_bp": 200},
        },
        # Seed 001: the customer who refers earns 5 %, its sponsor 20 % as a difference bonus.
        "customer_referrer": {
            "referrer_bp": 500,
            "sponsor_chain_bp": [2000],
            "mode": ReferrerMode.DIFFERENCE.value,
        },
        "rewards": [
            {
                "on": EventKind.DEAL_PAID.value,
                "role": ROLE_RECOMMENDER,
                "description": "A business lunch as thanks",
            }
        ],
    }


# --- parsing -----------------------------------------------------------------------------------------


class _Reader:
    """Collects every error of a plan, each named by its path, so an operator fixes them in one go."""

    def __init__(self, currency: str | None = None) -> None:
        self.errors: list[FieldError] = []
        self.currencies: dict[str, str] = {}
        self.currency = currency

    def fail(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))

    def mapping(
        self, value: Any, path: str, *, required: Sequence[str], optional: Sequence[str] = ()
    ) -> Mapping[str, Any] | None:
        if not isinstance(value, Mapping):
            self.fail(path or "plan", f"must be an object, got {_type(value)}")
            return None
        for key in required:
            if key not in value:
                self.fail(_join(path, key), "is required")
        for key in value:
            if key not in required and key not in optional:
                self.fail(_join(path, str(key)), "is not a known field")
        return value

    def integer(self, value: Any, path: str, *, minimum: int, maximum: int | None = None) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"must be an integer, got {_type(value)}")
            return None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            self.fail(path, f"must be {bound}, got {value}")
            return None
        return value

    def bp(self, value: Any, path: str) -> int | None:
        return self.integer(value, path, minimum=0, maximum=BP_WHOLE)

    def role(self, value: Any, path: str) -> str | None:
        if not isinstance(value, str) or not _ROLE_RE.fullmatch(value):
            self.fail(path, f"must be a role name of lower-case letters, digits and _, got {value!r}")
            return None
        return value

    def text(self, value: Any, path: str, *, allow_empty: bool = False) -> str | None:
        if not isinstance(value, str) or (not allow_empty and not value.strip()):
            self.fail(path, f"must be {'a' if allow_empty else 'a non-empty'} string, got {value!r}")
            return None
        return value.strip()

    def money(self, value: Any, path: str, *, positive: bool = True) -> Money | None:
        try:
            money = Money.from_json(value)
        except (TypeError, ValueError) as exc:
            self.fail(path, f"must be {{amount_minor, currency}}: {exc}")
            return None
        if positive and not money.is_positive:
            self.fail(path, f"must be positive, got {money}")
            return None
        if abs(money.amount_minor) > MAX_AMOUNT_MINOR:  # it would overflow the ledger at the first event it pays
            self.fail(path, f"amount_minor must be at most {MAX_AMOUNT_MINOR}")
            return None
        # The marketplace's currency, and one currency per plan: a fixed amount in another could never apply to
        # its events (every deal settled under the plan would fail).
        if self.currency is not None and money.currency != self.currency:
            self.fail(path, f"is in {money.currency}; this marketplace's amounts are in {self.currency}")
            return None
        if self.currencies and money.currency not in self.currencies.values():
            first_path, first = next(iter(self.currencies.items()))
            self.fail(path, f"is in {money.currency} but {first_path} is in {first}; one currency per plan")
            return None
        self.currencies.setdefault(path, money.currency)
        return money

    def amount(self, value: Mapping[str, Any], path: str) -> Amount | None:
        has_fixed, has_percent = "fixed" in value, "percent_bp" in value
        if has_fixed == has_percent:
            self.fail(path, "needs exactly one of fixed or percent_bp")
            return None
        if has_fixed:
            fixed = self.money(value["fixed"], _join(path, "fixed"))
            return Amount(fixed=fixed) if fixed is not None else None
        percent = self.bp(value["percent_bp"], _join(path, "percent_bp"))
        return Amount(percent_bp=percent) if percent is not None else None

    def tier(self, value: Any, path: str) -> Tier | None:
        if value is None:
            return None
        data = self.mapping(value, path, required=("role",), optional=("fixed", "percent_bp"))
        if data is None:
            return None
        role = self.role(data.get("role"), _join(path, "role")) if "role" in data else None
        amount = self.amount(data, path)
        return Tier(role, amount) if role is not None and amount is not None else None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _listed(reader: _Reader, value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        reader.fail(path, f"must be a list, got {_type(value)}")
        return []
    return value


def _or_empty(value: Any) -> Any:
    return {} if value is None else value


def parse_plan(data: Mapping[str, Any], currency: str | None = None) -> CommissionPlan:
    """A validated CommissionPlan, or PlanError listing every wrong field by its path; with `currency`, every fixed
    amount must be in it (the marketplace's)."""
    r = _Reader(currency)
    top = r.mapping(
        data,
        "",
        required=("version", "commission_split"),
        optional=("name", "commission_rates_bp", "tiers", "customer_referrer", "rewards"),
    )
    if top is None:
        raise PlanError("plan: must be an object", errors=r.errors)

    version = r.integer(top.get("version"), "version", minimum=1) if "version" in top else None
    name = r.text(top.get("name", ""), "name", allow_empty=True) or ""

    rates: dict[str, int] = {}
    # Left out or null is none; any other falsy value (0, "", [], false) is the wrong type, named as such.
    raw_rates = _or_empty(top.get("commission_rates_bp"))
    if not isinstance(raw_rates, Mapping):
        r.fail("commission_rates_bp", f"must be an object of category: bp, got {_type(raw_rates)}")
    else:
        for category, rate in raw_rates.items():
            checked = r.bp(rate, f"commission_rates_bp.{category}")
            if checked is not None:
                rates[str(category)] = checked

    split, unclaimed_to = _parse_split(r, top.get("commission_split"))

    tiers = (
        r.mapping(
            _or_empty(top.get("tiers")),
            "tiers",
            required=(),
            optional=("qualified_lead", "closed_sale", "lifetime_bonus", "retention_bonus"),
        )
        or {}
    )
    qualified_lead = r.tier(tiers.get("qualified_lead"), "tiers.qualified_lead")
    closed_sale = r.tier(tiers.get("closed_sale"), "tiers.closed_sale")
    retention_bonus = r.tier(tiers.get("retention_bonus"), "tiers.retention_bonus")
    lifetime: list[LifetimeBonus] = []
    for index, item in enumerate(_listed(r, tiers.get("lifetime_bonus"), "tiers.lifetime_bonus")):
        path = f"tiers.lifetime_bonus[{index}]"
        bonus = r.mapping(item, path, required=("role", "threshold"), optional=("fixed", "percent_bp"))
        if bonus is None:
            continue
        role = r.role(bonus.get("role"), f"{path}.role") if "role" in bonus else None
        threshold = r.money(bonus.get("threshold"), f"{path}.threshold") if "threshold" in bonus else None
        amount = r.amount(bonus, path)
        if role is not None and threshold is not None and amount is not None:
            lifetime.append(LifetimeBonus(role, threshold, amount))

    customer_referrer = _parse_customer_referrer(r, top.get("customer_referrer"))

    rewards: list[RewardRule] = []
    for index, item in enumerate(_listed(r, top.get("rewards"), "rewards")):
        path = f"rewards[{index}]"
        reward = r.mapping(item, path, required=("on", "role", "description"))
        if reward is None:
            continue
        on = reward.get("on")
        if not isinstance(on, str) or on not in {kind.value for kind in EventKind}:  # a list would be unhashable
            r.fail(f"{path}.on", f"must be one of {', '.join(k.value for k in EventKind)}, got {on!r}")
            on = None
        role = r.role(reward.get("role"), f"{path}.role") if "role" in reward else None
        description = (
            r.text(reward.get("description"), f"{path}.description") if "description" in reward else None
        )
        if on is not None and role is not None and description is not None:
            rewards.append(RewardRule(EventKind(on), role, description))

    if r.errors or version is None or unclaimed_to is None:
        detail = "; ".join(f"{e.field}: {e.message}" for e in r.errors) or "plan: invalid"
        raise PlanError(f"invalid commission plan: {detail}", errors=r.errors)
    return CommissionPlan(
        version=version,
        name=name,
        split=tuple(split),
        unclaimed_to=unclaimed_to,
        commission_rates_bp=rates,
        qualified_lead=qualified_lead,
        closed_sale=closed_sale,
        lifetime_bonus=tuple(lifetime),
        retention_bonus=retention_bonus,
        customer_referrer=customer_referrer,
        rewards=tuple(rewards),
    )


def _parse_split(r: _Reader, value: Any) -> tuple[list[SplitRecipient], str | None]:
    path = "commission_split"
    data = r.mapping(value, path, required=("recipients", "unclaimed_to"))
    if data is None:
        return [], None
    recipients: list[SplitRecipient] = []
    share_total = 0
    roles: set[str] = set()
    raw = _listed(r, data.get("recipients"), f"{path}.recipients")
    if "recipients" in data and not raw:
        r.fail(f"{path}.recipients", "must name at least one recipient")
    for index, item in enumerate(raw):
        item_path = f"{path}.recipients[{index}]"
        recipient = r.mapping(item, item_path, required=("role",), optional=("share_bp", "fixed"))
        if recipient is None:
            continue
        role = r.role(recipient.get("role"), f"{item_path}.role") if "role" in recipient else None
        if role is not None and role in roles:
            r.fail(f"{item_path}.role", f"{role!r} is named twice")
            role = None
        if ("share_bp" in recipient) == ("fixed" in recipient):
            r.fail(item_path, "needs exactly one of share_bp or fixed")
            continue
        if "fixed" in recipient:
            fixed = r.money(recipient["fixed"], f"{item_path}.fixed")
            if role is not None and fixed is not None:
                roles.add(role)
                recipients.append(SplitRecipient(role, fixed=fixed))
            continue
        share = r.bp(recipient["share_bp"], f"{item_path}.share_bp")
        if share is not None:
            share_total += share
            if role is not None:
                roles.add(role)
                recipients.append(SplitRecipient(role, share_bp=share))
    if raw and not any("share_bp" in item for item in raw if isinstance(item, Mapping)):
        r.fail(
            f"{path}.recipients", "at least one recipient needs a share_bp to take what the fixed parts leave"
        )
    elif raw and share_total != BP_WHOLE:
        r.fail(f"{path}.recipients", f"share_bp must add up to {BP_WHOLE} (100 %), got {share_total}")
    unclaimed_to = (
        r.role(data.get("unclaimed_to"), f"{path}.unclaimed_to") if "unclaimed_to" in data else None
    )
    if unclaimed_to is not None and roles and unclaimed_to not in roles:
        r.fail(f"{path}.unclaimed_to", f"must be one of the recipients' roles, got {unclaimed_to!r}")
        unclaimed_to = None
    return recipients, unclaimed_to


def _parse_customer_referrer(r: _Reader, value: Any) -> CustomerReferrerRule | None:
    if value is None:
        return None
    path = "customer_referrer"
    data = r.mapping(value, path, required=("referrer_bp", "mode"), optional=("sponsor_chain_bp",))
    if data is None:
        return None
    referrer_bp = r.bp(data.get("referrer_bp"), f"{path}.referrer_bp") if "referrer_bp" in data else None
    chain: list[int] = []
    chain_ok = True
    for index, rate in enumerate(_listed(r, data.get("sponsor_chain_bp"), f"{path}.sponsor_chain_bp")):
        checked = r.bp(rate, f"{path}.sponsor_chain_bp[{index}]")
        if checked is None:
            chain_ok = False
        else:
            chain.append(checked)
    mode = data.get("mode")
    if not isinstance(mode, str) or mode not in {m.value for m in ReferrerMode}:  # a list would be unhashable
        if "mode" in data:
            r.fail(f"{path}.mode", f"must be difference or company_pays, got {mode!r}")
        return None
    if referrer_bp is None or not chain_ok:
        return None
    if mode == ReferrerMode.COMPANY_PAYS and referrer_bp + sum(chain) > BP_WHOLE:
        r.fail(path, f"referrer and sponsors together take more than 100 % ({referrer_bp + sum(chain)} bp)")
        return None
    return CustomerReferrerRule(referrer_bp, tuple(chain), ReferrerMode(mode))


# --- evaluation --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanEvent:
    """What happened, with what the plan needs to know about it.

    present_roles: the roles that have a recipient for this event (None: all of them); an absent split
    role's share goes to the plan's unclaimed_to, an absent tier or referrer role gets nothing.
    lifetime_revenue_before: the revenue the tier's role had brought before this event (for the
    lifetime bonus); None skips that bonus.
    """

    kind: EventKind
    amount: Money
    present_roles: frozenset[str] | None = None
    lifetime_revenue_before: Money | None = None
    repeat_purchase: bool = False

    def __post_init__(self) -> None:
        if self.amount.is_negative:
            raise ValueError(
                f"an event's amount must not be negative, got {self.amount}; reverse transfers instead"
            )

    def has(self, role: str) -> bool:
        return self.present_roles is None or role in self.present_roles


@dataclass(frozen=True, slots=True)
class Payout:
    recipient_role: str
    amount: Money
    reason: PayoutReason

    def to_json(self) -> dict[str, Any]:
        return {
            "recipient_role": self.recipient_role,
            "amount": self.amount.to_json(),
            "reason": self.reason.value,
        }


@dataclass(frozen=True, slots=True)
class Reward:
    recipient_role: str
    description: str

    def to_json(self) -> dict[str, Any]:
        return {"recipient_role": self.recipient_role, "description": self.description}


@dataclass(frozen=True, slots=True)
class PlanResult:
    plan_version: int
    event: EventKind
    currency: str
    payouts: tuple[Payout, ...]
    rewards: tuple[Reward, ...]

    @property
    def split(self) -> tuple[Payout, ...]:
        """The commission's shares; for a deal_paid event they sum exactly to its amount."""
        return tuple(p for p in self.payouts if p.reason is PayoutReason.SPLIT)

    @property
    def bonuses(self) -> tuple[Payout, ...]:
        """Fees and bonuses the marketplace pays on top (booked as acquisition costs)."""
        return tuple(p for p in self.payouts if p.reason is not PayoutReason.SPLIT)

    @property
    def total(self) -> Money:
        return Money.sum((p.amount for p in self.payouts), self.currency)

    def by_role(self) -> dict[str, Money]:
        totals: dict[str, Money] = {}
        for payout in self.payouts:
            totals[payout.recipient_role] = (
                totals.get(payout.recipient_role, Money.zero(self.currency)) + payout.amount
            )
        return totals

    def to_json(self) -> dict[str, Any]:
        return {
            "plan_version": self.plan_version,
            "event": self.event.value,
            "payouts": [p.to_json() for p in self.payouts],
            "rewards": [r.to_json() for r in self.rewards],
        }


def deal_commission(turnover: Money, rate_bp: int) -> Money:
    """The commission on a paid deal: rate times turnover, half-up (10,000.00 at 30 % → 3,000.00)."""
    if turnover.is_negative:
        raise ValueError(f"turnover must not be negative, got {turnover}")
    if isinstance(rate_bp, bool) or not isinstance(rate_bp, int) or not 0 <= rate_bp <= BP_WHOLE:
        raise ValueError(f"rate_bp must be an integer between 0 and {BP_WHOLE}, got {rate_bp!r}")
    return turnover.percent_bp(rate_bp)


def evaluate(plan: CommissionPlan, event: PlanEvent) -> PlanResult:
    """The payouts and rewards plan grants for event; payouts of zero are left out."""
    payouts: list[Payout] = []

    def pay(role: str, amount: Money, reason: PayoutReason) -> None:
        if not amount.is_zero:
            payouts.append(Payout(role, amount, reason))

    def tier(rule: Tier | None, reason: PayoutReason) -> None:
        if rule is not None and event.has(rule.role):
            pay(rule.role, rule.amount.of(event.amount), reason)

    if event.kind is EventKind.QUALIFIED_LEAD:
        tier(plan.qualified_lead, PayoutReason.QUALIFIED_LEAD)
    elif event.kind is EventKind.DEAL_PAID:
        for role, amount in _split(plan, event.amount, event.has):
            pay(role, amount, PayoutReason.SPLIT)
        tier(plan.closed_sale, PayoutReason.CLOSED_SALE)
    elif event.kind is EventKind.CUSTOMER_PURCHASE and plan.customer_referrer is not None:
        for role, amount, reason in _customer_referrer(plan.customer_referrer, event.amount, event.has):
            pay(role, amount, reason)

    if event.kind is EventKind.DEAL_PAID:  # the partner's tiers: a customer referrer earns its rate only
        if event.repeat_purchase:
            tier(plan.retention_bonus, PayoutReason.RETENTION_BONUS)
        before = event.lifetime_revenue_before
        if before is not None:
            after = before + event.amount
            for bonus in plan.lifetime_bonus:
                # Paid once: only the event that carries the lifetime revenue across the threshold earns it.
                if event.has(bonus.role) and before < bonus.threshold <= after:
                    pay(bonus.role, bonus.amount.of(event.amount), PayoutReason.LIFETIME_BONUS)

    rewards = tuple(
        Reward(rule.role, rule.description)
        for rule in plan.rewards
        if rule.on is event.kind and event.has(rule.role)
    )
    return PlanResult(plan.version, event.kind, event.amount.currency, tuple(payouts), rewards)


def _split(plan: CommissionPlan, total: Money, has: Callable[[str], bool]) -> list[tuple[str, Money]]:
    """Fixed parts first (never more than is left), the rest by share_bp with the largest remainder. An absent role's
    part, fixed or shared, is unclaimed_to's: the shares divide what the fixed parts leave, whoever is at the deal."""
    zero = Money.zero(total.currency)
    left = total
    parts: dict[str, Money] = {}
    for recipient in plan.split:
        if recipient.fixed is not None:
            if recipient.fixed.currency != total.currency:
                raise CurrencyMismatch(recipient.fixed.currency, total.currency, "split")
            taken = min(recipient.fixed, left)
            role = recipient.role if has(recipient.role) else plan.unclaimed_to
            parts.setdefault(recipient.role, zero)
            parts[role] = parts.get(role, zero) + taken
            left = left - taken
    # An absent role's share joins unclaimed_to before allocating, so rounding sees one combined share.
    weights: dict[str, int] = {}
    for recipient in plan.split:
        if recipient.share_bp is not None:
            role = recipient.role if has(recipient.role) else plan.unclaimed_to
            weights[recipient.role] = weights.get(recipient.role, 0)
            weights[role] = weights.get(role, 0) + recipient.share_bp
    roles = list(weights)
    for role, amount in zip(roles, left.allocate([weights[r] for r in roles]), strict=True):
        parts[role] = parts.get(role, zero) + amount
    return [(recipient.role, parts[recipient.role]) for recipient in plan.split]


def _customer_referrer(
    rule: CustomerReferrerRule, revenue: Money, has: Callable[[str], bool]
) -> list[tuple[str, Money, PayoutReason]]:
    result: list[tuple[str, Money, PayoutReason]] = []
    paid_bp = 0
    if has(ROLE_REFERRER):
        result.append((ROLE_REFERRER, revenue.percent_bp(rule.referrer_bp), PayoutReason.CUSTOMER_REFERRER))
        paid_bp = rule.referrer_bp
    for level, rate in enumerate(rule.sponsor_chain_bp, start=1):
        role = sponsor_role(level)
        if not has(role):
            continue
        if rule.mode is ReferrerMode.COMPANY_PAYS:
            amount = revenue.percent_bp(rate)
        else:
            # Seed 001: the sponsor "sees" what was already paid below it and gets only the difference;
            # subtracting rounded amounts keeps the chain's total equal to the top rate of the revenue.
            reached = max(rate, paid_bp)
            amount = revenue.percent_bp(reached) - revenue.percent_bp(paid_bp)
            paid_bp = reached
        result.append((role, amount, PayoutReason.SPONSOR))
    return result
