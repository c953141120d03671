"""Scenarios: the market's size, shares and behaviours as data (config/scenarios/*.toml), with overrides.

A scenario file sets any subset of the fields below; what it leaves out keeps the defaults here. The
command line overrides a file with first-class options (`--days 10`) or any field by its dotted path
(`--set honesty.dishonest_share=0.3`). A misspelt key or a value of the wrong type stops with one line
naming it, so a typo never silently runs the default market.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from marketplace.settings import DEFAULT_CONFIG_DIR

SCENARIO_DIR = DEFAULT_CONFIG_DIR / "scenarios"

Range = tuple[float, float]


class ScenarioError(Exception):
    """A scenario file or override is wrong; the message names the key and why."""


@dataclass(frozen=True)
class CategoryMarket:
    """Demand for one of the service's categories. Categories the scenario does not name get defaults
    derived from their lead price, so a new category in config/categories.toml still trades."""

    demand_weight: float = 1.0
    # Customers' budgets are log-normal around this median (minor units); 0: 100 x the lead price.
    budget_median_minor: int = 0
    # The share of honest, non-junk exposures that end in a deal, on average over businesses.
    close_rate: float = 0.25


@dataclass(frozen=True)
class Customers:
    # Leads that are irrelevant or fake: an honest business returns them (or reports them lost).
    junk_share: float = 0.06
    # Customers who send the same request twice within the service's dedup window.
    duplicate_share: float = 0.02
    budget_sigma: float = 0.5
    # A hired business's turnover against the budget the customer stated: log-normal spread.
    turnover_sigma: float = 0.25
    # The survey links the service sends: a share of customers answer them (truthfully: whom they hired, for the
    # amount with this relative noise), within about survey_answer_hours (exponential); the others never answer.
    survey_response_rate: float = 0.65
    survey_amount_noise: float = 0.1
    survey_answer_hours: float = 10.0
    # Hours of the day (UTC on the service clock) weighting when leads arrive; 24 numbers.
    hourly_profile: tuple[float, ...] = (
        0.2, 0.1, 0.1, 0.1, 0.2, 0.4, 0.8, 1.2, 1.6, 1.8, 1.8, 1.7,
        1.5, 1.5, 1.6, 1.6, 1.5, 1.4, 1.3, 1.2, 1.0, 0.8, 0.5, 0.3,
    )  # fmt: skip


@dataclass(frozen=True)
class Businesses:
    lead_buyer_share: float = 0.4
    categories_max: int = 2
    regions_max: int = 3
    # A business's own close rate is its category's times a factor drawn from this range.
    close_rate_factor: Range = (0.4, 1.6)
    # Probability of claiming an offer it sees, drawn per business.
    claim_rate: Range = (0.5, 0.95)
    # Minutes from a new offer's notification to looking at it (log-normal median, per business).
    reaction_minutes: Range = (5.0, 240.0)
    # Working hours on the service clock: offers are looked at and deals reported only then.
    work_hours: tuple[int, int] = (7, 21)
    # Probability of returning a junk lead (else it is reported lost or left alone).
    return_habit: Range = (0.3, 0.9)
    # Probability that an honest deal maker reports a lost deal at all (the rest go stale).
    reports_lost: Range = (0.6, 1.0)
    # Share of lead buyers who keep their statuses current (optional for them).
    lead_buyer_reports_share: float = 0.3
    # Lead buyers' appetite for exclusive purchases when a lead still allows it.
    exclusive_rate: Range = (0.0, 0.2)
    daily_cap: tuple[int, int] = (3, 15)
    monthly_cap_days: int = 20
    # Days from claim to the customer's decision, and from a won deal to the customer paying.
    decision_days: Range = (0.5, 9.0)
    payment_days: Range = (2.0, 20.0)
    # Inquiries a business sells to the marketplace (outside its own categories), per business and day.
    sold_inquiries_per_day: float = 0.004


@dataclass(frozen=True)
class Honesty:
    dishonest_share: float = 0.15
    mix: Mapping[str, float] = field(
        default_factory=lambda: {"hider": 0.4, "returner": 0.3, "under_reporter": 0.3}
    )
    # hider: the share of its won deals it hides (reports lost or nothing).
    hide_share: Range = (0.4, 0.9)
    # under_reporter: the share of its won deals it under-reports, and the reported share of the turnover.
    under_report_share: Range = (0.6, 1.0)
    under_report_factor: Range = (0.3, 0.7)
    # returner: the share of its converted leads it returns as irrelevant (within the window).
    return_converted_share: Range = (0.4, 0.9)


@dataclass(frozen=True)
class Scenario:
    name: str = "default"
    seed: int = 1
    days: int = 28
    start: datetime = datetime(2026, 1, 5, tzinfo=UTC)
    businesses: int = 2000
    # Businesses that sign up during the run (spread over its days), on top of `businesses`.
    newcomers: int = 400
    # A business counts as a newcomer for this many simulated days after signing up.
    newcomer_days: int = 30
    leads_per_day: float = 800.0
    # Minutes between the service's periodic sweeps (offer/lead expiry, lost first waves); stale daily.
    periodic_minutes: int = 60
    # Minutes between checks for due jobs (later waves) and new offers to notify.
    tick_minutes: int = 2
    # With a real server (--url) the service's wall clock runs; pause this long after each simulated
    # hour so that its in-process jobs send the first waves before the businesses look.
    url_pause_seconds: float = 0.5
    customers: Customers = field(default_factory=Customers)
    # What each business is like: its hidden traits are drawn from these ranges.
    business: Businesses = field(default_factory=Businesses)
    honesty: Honesty = field(default_factory=Honesty)
    categories: Mapping[str, CategoryMarket] = field(default_factory=dict)

    def category(self, code: str, lead_price_minor: int) -> CategoryMarket:
        market = self.categories.get(code, CategoryMarket())
        if market.budget_median_minor <= 0:
            market = dataclasses.replace(market, budget_median_minor=lead_price_minor * 100)
        return market

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["start"] = self.start.isoformat()
        return data


_SECTIONS: dict[str, Any] = {"customers": Customers, "business": Businesses, "honesty": Honesty}


def available() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def load_scenario(
    name_or_path: str = "default",
    *,
    overrides: Mapping[str, Any] | None = None,
    settings_overrides: list[str] | None = None,
) -> Scenario:
    """A scenario by name (config/scenarios/NAME.toml) or path, then `overrides` (field -> value, the
    command line's first-class options, None meaning "not given") and `--set key=value` strings."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = SCENARIO_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise ScenarioError(f"scenario {name_or_path!r}: no file {path} (known: {', '.join(available()) or 'none'})")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path.name}: not valid TOML ({exc})") from exc
    data.setdefault("name", path.stem)
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_path(data, key, value)
    for item in settings_overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ScenarioError(f"--set {item!r}: expected KEY=VALUE, e.g. honesty.dishonest_share=0.3")
        _set_path(data, key.strip(), _literal(raw.strip()))
    return build(data)


def _literal(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ScenarioError(f"{dotted}: {part} is not a section")
    node[parts[-1]] = value


def build(data: Mapping[str, Any]) -> Scenario:
    """A Scenario from plain data (a parsed TOML file), checking every key and type."""
    values: dict[str, Any] = {}
    for key, raw in data.items():
        if key in _SECTIONS:
            values[key] = _struct(_SECTIONS[key], raw, key)
        elif key == "categories":
            if not isinstance(raw, Mapping):
                raise ScenarioError("categories: must be a table of [categories.CODE] tables")
            values[key] = {code: _struct(CategoryMarket, v, f"categories.{code}") for code, v in raw.items()}
        else:
            values[key] = raw
    scenario = _struct(Scenario, values, "")
    _check(scenario)
    return scenario


def _struct(cls: Any, raw: Any, where: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ScenarioError(f"{where}: must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        name = f"{where}.{key}" if where else key
        if key not in known:
            raise ScenarioError(f"{name}: unknown key (known: {', '.join(sorted(known))})")
        kwargs[key] = _coerce(hints[key], value, name)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, name: str) -> Any:
    """TOML values to the field's type: ints where floats are wanted, lists to tuples; nothing looser."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(value):  # a section `build` has already checked
        return value
    if origin is Mapping:
        if not isinstance(value, Mapping):
            raise ScenarioError(f"{name}: must be a table")
        _, value_type = typing.get_args(hint)
        if dataclasses.is_dataclass(value_type):
            return dict(value)
        return {str(k): _coerce(value_type, v, f"{name}.{k}") for k, v in value.items()}
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ScenarioError(f"{name}: must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ScenarioError(f"{name}: must be an integer, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ScenarioError(f"{name}: must be a string, got {value!r}")
        return value
    if hint is datetime:
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError as exc:
                raise ScenarioError(f"{name}: not an RFC 3339 time ({exc})") from exc
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ScenarioError(f"{name}: must be a time with its UTC offset, e.g. 2026-01-05T00:00:00Z")
        return value.astimezone(UTC)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            raise ScenarioError(f"{name}: must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{name}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ScenarioError(f"{name}: must have {len(args)} items, got {len(value)}")
        return tuple(_coerce(a, v, f"{name}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    raise ScenarioError(f"{name}: unsupported setting type {hint!r}")


def _share(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ScenarioError(f"{name}: must be between 0 and 1, got {value}")


def _range(name: str, value: Range, lo: float = 0.0, hi: float | None = None) -> None:
    if value[0] > value[1] or value[0] < lo or (hi is not None and value[1] > hi):
        bound = f"within [{lo}, {hi}]" if hi is not None else f"at least {lo}"
        raise ScenarioError(f"{name}: must be [low, high] with low <= high, {bound}, got {list(value)}")


def _check(s: Scenario) -> None:
    if s.seed < 0:
        raise ScenarioError(f"seed (--seed): must be a non-negative integer, got {s.seed}")
    if s.days < 1 or s.businesses < 1 or s.newcomers < 0 or s.leads_per_day < 0:
        raise ScenarioError("days and businesses must be at least 1; newcomers and leads_per_day not negative")
    if s.periodic_minutes < 1 or s.tick_minutes < 1 or s.newcomer_days < 1:
        raise ScenarioError("periodic_minutes, tick_minutes and newcomer_days must be at least 1")
    c, b, h = s.customers, s.business, s.honesty
    for name, value in (
        ("customers.junk_share", c.junk_share),
        ("customers.duplicate_share", c.duplicate_share),
        ("customers.survey_response_rate", c.survey_response_rate),
        ("business.lead_buyer_share", b.lead_buyer_share),
        ("business.lead_buyer_reports_share", b.lead_buyer_reports_share),
        ("honesty.dishonest_share", h.dishonest_share),
    ):
        _share(name, value)
    if c.survey_answer_hours <= 0:
        raise ScenarioError("customers.survey_answer_hours: must be above 0")
    if len(c.hourly_profile) != 24 or min(c.hourly_profile) < 0 or sum(c.hourly_profile) <= 0:
        raise ScenarioError("customers.hourly_profile: must be 24 non-negative weights, not all zero")
    for name, bounds, hi in (
        ("business.claim_rate", b.claim_rate, 1.0),
        ("business.return_habit", b.return_habit, 1.0),
        ("business.reports_lost", b.reports_lost, 1.0),
        ("business.exclusive_rate", b.exclusive_rate, 1.0),
        ("business.close_rate_factor", b.close_rate_factor, None),
        ("business.reaction_minutes", b.reaction_minutes, None),
        ("business.decision_days", b.decision_days, None),
        ("business.payment_days", b.payment_days, None),
        ("honesty.hide_share", h.hide_share, 1.0),
        ("honesty.under_report_share", h.under_report_share, 1.0),
        ("honesty.under_report_factor", h.under_report_factor, 1.0),
        ("honesty.return_converted_share", h.return_converted_share, 1.0),
    ):
        _range(name, bounds, 0.0, hi)
    if b.reaction_minutes[0] <= 0:
        raise ScenarioError("business.reaction_minutes: must be above zero")
    if not 0 <= b.work_hours[0] < b.work_hours[1] <= 24:
        raise ScenarioError(f"business.work_hours: must be [start, end] hours within 0..24, got {b.work_hours}")
    if not 1 <= b.daily_cap[0] <= b.daily_cap[1] or b.monthly_cap_days < 1:
        raise ScenarioError("business.daily_cap must be [low, high] from 1; monthly_cap_days at least 1")
    if b.categories_max < 1 or b.regions_max < 1:
        raise ScenarioError("business.categories_max and regions_max must be at least 1")
    unknown = set(h.mix) - set(DISHONEST_KINDS)
    if unknown or any(v < 0 for v in h.mix.values()) or (h.dishonest_share > 0 and sum(h.mix.values()) <= 0):
        raise ScenarioError(f"honesty.mix: weights >= 0 over {', '.join(DISHONEST_KINDS)}, got {dict(h.mix)}")
    for code, market in s.categories.items():
        if market.demand_weight < 0 or market.budget_median_minor < 0:
            raise ScenarioError(f"categories.{code}: demand_weight and budget_median_minor must not be negative")
        _share(f"categories.{code}.close_rate", market.close_rate)


DISHONEST_KINDS = ("hider", "returner", "under_reporter")


def check_categories(scenario: Scenario, known: Iterable[str]) -> None:
    """Every [categories.CODE] the scenario tunes must be a category the service trades: a misspelt code would
    otherwise leave the real category on its defaults without a word, as no other misspelt key does."""
    codes = sorted(known)
    unknown = sorted(set(scenario.categories) - set(codes))
    if unknown:
        raise ScenarioError(
            f"categories.{unknown[0]}: unknown category (known: {', '.join(codes)})"
            + (f"; also unknown: {', '.join(unknown[1:])}" if unknown[1:] else "")
        )
