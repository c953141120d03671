"""Settings: grouped dataclasses read from config/*.toml with environment variables on top.

A wrong or missing setting raises SettingsError with one line naming the setting and the reason.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import secrets
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from marketplace.off_hours import NO_OFF_HOURS, OffHours, OffHoursError


def installed_config_dir(package_file: str = __file__, prefix: str = sys.prefix) -> Path:
    """config/ beside the package in a checkout (an editable install, a clone); an installed wheel carries it as data
    files (pyproject.toml, tool.setuptools.data-files) under the prefix it was installed to: the environment's, or
    another (`pip install --user`: the user's base), which the distribution's record of its files says."""
    checkout = Path(package_file).resolve().parent.parent / "config"
    # Ours by its default.toml: under site-packages, another distribution's `config` folder may sit beside us.
    if (checkout / "default.toml").is_file():
        return checkout
    recorded = _recorded_config_dir()
    return recorded if recorded is not None else Path(prefix) / "share" / "marketplace" / "config"


def _recorded_config_dir() -> Path | None:
    """Where the installed distribution's record puts its config/default.toml, if it was installed with one."""
    from importlib import metadata

    try:
        files = metadata.distribution("marketplace").files or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.as_posix().endswith("share/marketplace/config/default.toml"):
            return Path(str(file.locate())).resolve().parent
    return None


DEFAULT_CONFIG_DIR = installed_config_dir()
SQLITE_DEFAULT_URL = "sqlite+aiosqlite:///./marketplace.db"


class SettingsError(Exception):
    """A setting is missing or wrong; the message is one line naming it and why."""


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    database_url: str
    redis_url: str
    secret_key: str
    jurisdiction: str
    max_body_bytes: int
    intake_rate_limit_per_minute: int
    principal_cache_ms: int
    # Addresses of reverse proxies whose X-Forwarded-For names the client (comma-separated; "*" trusts any).
    # Empty: the connection's own address is the client's, so nobody evades the intake rate limit with a header.
    trusted_proxies: str = ""
    # Sign-ups a minute from one client address (a limit of their own: they never use up lead intake's).
    signup_rate_limit_per_minute: int = 300
    # Sign-up only with an invitation into a club (POST /v1/businesses with `invitation`); false: anyone signs up.
    registration_by_invitation: bool = False
    # How long a club's invitation may be used.
    invitation_days: int = 30
    # Invitations a club's operator has the marketplace mail in a day: to one address, and in all.
    club_invitations_per_email_per_day: int = 3
    club_invitation_emails_per_day: int = 100

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """Each process's connection pool on PostgreSQL (SQLite keeps one connection a process, whatever these say).

    Every process (each API worker, each `marketplace worker`) may open pool_size + max_overflow connections: their
    sum over the processes must stay under the server's max_connections, with room for psql and migrations. The
    defaults keep the README's production shape (four API workers and one worker: 5 x 15 = 75) under PostgreSQL's
    default of 100."""

    pool_size: int = 10
    max_overflow: int = 5
    # How long a request waits for a connection of its process's pool when all are in use (a burst queues here
    # rather than asking the server for more than it allows); beyond, a 503 with Retry-After.
    pool_timeout_seconds: int = 30

    @property
    def connections_per_process(self) -> int:
        return self.pool_size + self.max_overflow


@dataclass(frozen=True, slots=True)
class Windows:
    dedup_hours: int
    return_days: int
    stale_days: int
    offer_ttl_minutes: int
    lead_ttl_hours: int
    # How long a deal maker's return that found no lead to replace it waits for one (the next lead that fits).
    replacement_days: int = 14
    # The nightly stretch in which later waves wait and offers' lifetimes stand still (marketplace/off_hours.py);
    # set once the jurisdiction is known (its time zone, unless windows.off_hours_time_zone names another).
    off_hours: OffHours = NO_OFF_HOURS


@dataclass(frozen=True, slots=True)
class RankingSettings:
    policy: str
    explore_share_bp: int


RANKING_POLICIES = ("profitability", "rotation", "random")


@dataclass(frozen=True, slots=True)
class NotificationSettings:
    # Empty: messages are only kept in the outbox (GET /v1/notifications); smtp://[user:password@]host[:port]
    # (STARTTLS when the server offers it) or smtps://... sends them.
    smtp_url: str
    from_address: str
    # Where operators' messages (fraud alerts) go.
    operator_address: str
    # The public base URL that customers' links (surveys) start with.
    public_base_url: str


@dataclass(frozen=True, slots=True)
class FraudSettings:
    # A customer's survey link works this many days.
    survey_ttl_days: int
    # A lead whose open deals had no news for this many days has gone quiet: its customer is asked.
    quiet_days: int
    # At most this many surveys per lead (a later one only once the earlier expired or said "not hired").
    max_surveys_per_lead: int
    # A deal the customer says it hired the business for, while the business reported nothing, counts as
    # hidden once the answer is this many days old and the business still has not reported it.
    report_grace_days: int
    # A won deal not paid after this many days counts as never reaching `paid`.
    unpaid_days: int
    # An alert opens at this risk score (basis points of 1.0).
    alert_threshold_bp: int
    # Operator decisions of each kind (confirm, dismiss) before the supervised model replaces the unsupervised one.
    min_labels_per_class: int


@dataclass(frozen=True, slots=True)
class WalletSettings:
    default_credit_limit_minor: int
    issuer_name: str
    issuer_tax_id: str
    issuer_address: str
    # What a business may owe before any payment of its own has been received (a new account is not yet known to pay:
    # a throw-away sign-up could otherwise take contacts on credit up to the full default limit).
    first_credit_limit_minor: int = 500_000


@dataclass(frozen=True, slots=True)
class Jurisdiction:
    code: str
    name: str
    currency: str
    vat_rate_bp: int
    prices_include_vat: bool
    time_zone: str = "UTC"
    # Who issues the marketplace's invoices there (empty: the [wallet] issuer).
    issuer_name: str = ""
    issuer_tax_id: str = ""
    issuer_address: str = ""

    @property
    def zone(self) -> ZoneInfo:
        """Its time zone: days (and the caps counted per day and month) begin at its midnight."""
        return ZoneInfo(self.time_zone)


@dataclass(frozen=True, slots=True)
class Category:
    code: str
    name: str
    lead_price_minor: int
    exclusive_price_minor: int
    max_exposures: int
    commission_rate_bp: int
    wave_size: int
    wave_delay_seconds: int


@dataclass(frozen=True, slots=True)
class Region:
    code: str
    name: str


@dataclass(frozen=True, slots=True)
class Settings:
    service: ServiceSettings
    windows: Windows
    jurisdictions: Mapping[str, Jurisdiction]
    categories: Mapping[str, Category]
    regions: Mapping[str, Region]
    wallet: WalletSettings
    ranking: RankingSettings
    notifications: NotificationSettings
    fraud: FraudSettings
    database: DatabaseSettings = DatabaseSettings()

    @property
    def jurisdiction(self) -> Jurisdiction:
        return self.jurisdictions[self.service.jurisdiction]

    @property
    def currency(self) -> str:
        return self.jurisdiction.currency


# --- the names there are ---------------------------------------------------------------------------
# A name the files or the environment give that is not one of these is a misspelling: refused with the closest
# known name, rather than ignored with the default left in force (MARKETPLACE__SERVICE__REGISTRATION_BY_INVITATON
# left sign-up open). What is free-form is the codes: a jurisdiction's table is named by its code
# (jurisdictions.IL), categories and regions are lists of entries each carrying its code.


def _kinds(of: type) -> dict[str, str]:
    """A settings dataclass's fields and their types' names (`str`, `int`, ...)."""
    return {f.name: str(f.type) for f in fields(of)}


# The sections of single settings, each key with its type's name: the environment may set any of them
# (MARKETPLACE__<SECTION>__<KEY>), and a `str` one is taken as it is written, whatever its characters.
SECTIONS: dict[str, dict[str, str]] = {
    "service": _kinds(ServiceSettings),
    "database": _kinds(DatabaseSettings),
    # off_hours is written as text (parsed into the field), and its time zone has no field of its own.
    "windows": {**_kinds(Windows), "off_hours": "str", "off_hours_time_zone": "str"},
    "ranking": _kinds(RankingSettings),
    "notifications": _kinds(NotificationSettings),
    "fraud": _kinds(FraudSettings),
    "wallet": _kinds(WalletSettings),
}
# The sections of entries, and the keys of an entry: files only.
ENTRIES: dict[str, set[str]] = {
    "jurisdictions": set(_kinds(Jurisdiction)) - {"code"},  # the code is the table's name
    "categories": set(_kinds(Category)),
    "regions": set(_kinds(Region)) | {"jurisdiction"},
}


def _closest(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to a misspelt one, if one is close."""
    match = difflib.get_close_matches(name, sorted(known), n=1)
    return match[0] if match else None


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    match = _closest(name, known)
    return f" (did you mean {match}?)" if match else ""


def _check_names(data: Mapping[str, Any], file: str) -> None:
    """Every section and key of one config file is known (the values are checked later, merged)."""
    for section, value in data.items():
        if section in SECTIONS:
            if isinstance(value, Mapping):
                for key in value:
                    if key not in SECTIONS[section]:
                        raise SettingsError(
                            f"{section}.{key}: no such setting in {file}{_did_you_mean(key, SECTIONS[section])}"
                        )
        elif section == "jurisdictions":
            if isinstance(value, Mapping):
                for code, entry in value.items():
                    _check_entry(entry, ENTRIES[section], f"{section}.{code}", file)
        elif section in ENTRIES:
            if isinstance(value, list):
                for i, entry in enumerate(value):
                    code = entry.get("code") if isinstance(entry, Mapping) else None
                    where = f"{section}.{code}" if isinstance(code, str) else f"{section}[{i}]"
                    _check_entry(entry, ENTRIES[section], where, file)
        else:
            raise SettingsError(
                f"{section}: no such section in {file}{_did_you_mean(section, [*SECTIONS, *ENTRIES])}"
            )


def _check_entry(entry: Any, known: set[str], where: str, file: str) -> None:
    if isinstance(entry, Mapping):
        for key in entry:
            if key not in known:
                raise SettingsError(f"{where}.{key}: no such setting in {file}{_did_you_mean(key, known)}")


# --- reading -------------------------------------------------------------------------------------


def _read_toml_dir(config_dir: Path) -> dict[str, Any]:
    if not config_dir.is_dir():
        raise SettingsError(f"MARKETPLACE_CONFIG_DIR: {config_dir} is not a folder")
    merged: dict[str, Any] = {}
    for path in sorted(config_dir.glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path.name}: not valid TOML ({exc})") from exc
        _check_names(data, path.name)
        _deep_merge(merged, data)
    return merged


def _deep_merge(into: dict[str, Any], data: Mapping[str, Any]) -> None:
    for key, value in data.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value


def _env_value(raw: str) -> Any:
    """Environment values are TOML literals when they parse as one (numbers, booleans), strings otherwise."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> None:
    service = data.setdefault("service", {})
    for name, key in (
        ("DATABASE_URL", "database_url"),
        ("REDIS_URL", "redis_url"),
        ("SECRET_KEY", "secret_key"),
        ("MARKETPLACE_JURISDICTION", "jurisdiction"),
    ):
        if name in env:
            service[key] = env[name]
    for name, raw in env.items():
        if not name.startswith("MARKETPLACE__"):
            continue
        path = [part.lower() for part in name.removeprefix("MARKETPLACE__").split("__")]
        if len(path) != 2 or not all(path):
            raise SettingsError(f"{name}: expected MARKETPLACE__<SECTION>__<KEY>")
        section, key = path
        if section in ENTRIES:
            raise SettingsError(f"{name}: {section} are set in config/*.toml, not the environment")
        if section not in SECTIONS:
            match = _closest(section, SECTIONS)
            hint = f" (did you mean MARKETPLACE__{match.upper()}__{key.upper()}?)" if match else ""
            raise SettingsError(f"{name}: no such section {section}{hint}")
        kind = SECTIONS[section].get(key)
        if kind is None:
            match = _closest(key, SECTIONS[section])
            hint = f" (did you mean MARKETPLACE__{section.upper()}__{match.upper()}?)" if match else ""
            raise SettingsError(f"{name}: no such setting{hint}")
        # A text setting is the text given (a secret of digits is not a number); the others are TOML literals.
        data.setdefault(section, {})[key] = raw if kind == "str" else _env_value(raw)


# --- validation ----------------------------------------------------------------------------------


def _int(section: Mapping[str, Any], where: str, key: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    if key not in section:
        raise SettingsError(f"{where}.{key}: missing")
    value = section[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(f"{where}.{key}: must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise SettingsError(f"{where}.{key}: must be {bound}, got {value}")
    return value


def _str(
    section: Mapping[str, Any], where: str, key: str, *, allow_empty: bool = False, secret: bool = False
) -> str:
    """A text setting; a `secret` one's value is never part of the error (it would reach logs and terminals)."""
    if key not in section:
        raise SettingsError(f"{where}.{key}: missing")
    value = section[key]
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        got = "" if secret else f", got {value!r}"
        quote = " (in a file, quote it)" if secret and not isinstance(value, str) else ""
        raise SettingsError(f"{where}.{key}: must be a {'' if allow_empty else 'non-empty '}string{quote}{got}")
    return value.strip()


def _without_credentials(url: str) -> str:
    """A URL fit for an error message: the user and password before its host left out, and its query and fragment
    (`?password=...` is a password too)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    return f"{scheme}{sep}{rest.rpartition('@')[2]}"


def _bool(section: Mapping[str, Any], where: str, key: str) -> bool:
    value = section.get(key)
    if not isinstance(value, bool):
        raise SettingsError(f"{where}.{key}: must be true or false, got {value!r}")
    return value


def _section(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    if not isinstance(value, Mapping):
        raise SettingsError(f"{key}: missing section")
    return value


def _database_url(raw: str) -> str:
    url = raw or SQLITE_DEFAULT_URL
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+asyncpg://" + url.split("://", 1)[1]
    if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise SettingsError(
            f"DATABASE_URL: must start with sqlite+aiosqlite:// or postgresql+asyncpg://, got {url.split(':', 1)[0]}:"
        )
    return url


def _secret_key(raw: str, database_url: str) -> str:
    if raw:
        if len(raw) < 16:
            raise SettingsError("SECRET_KEY: must be at least 16 characters")
        return raw
    if not database_url.startswith("sqlite"):
        raise SettingsError("SECRET_KEY: required when the database is PostgreSQL (links must survive restarts)")
    # The embedded default keeps a random secret beside its SQLite file so that links survive a restart.
    db_path = database_url.split(":///", 1)[1] if ":///" in database_url else ""
    if not db_path or db_path == ":memory:" or "mode=memory" in db_path:
        return secrets.token_urlsafe(32)
    secret_file = Path(db_path.split("?", 1)[0]).with_suffix(".secret")
    if secret_file.exists():
        return secret_file.read_text(encoding="utf-8").strip()
    secret = secrets.token_urlsafe(32)
    secret_file.parent.mkdir(parents=True, exist_ok=True)
    secret_file.write_text(secret, encoding="utf-8")
    secret_file.chmod(0o600)
    return secret


def _default(of: type, key: str) -> Any:
    """The default the settings dataclass `of` gives its field `key`: what that setting is when the files leave it
    out (one place for it, the dataclass; a field without a default is a required setting)."""
    for f in fields(of):
        if f.name == key:
            if f.default is MISSING:
                raise TypeError(f"{of.__name__}.{key} has no default: it is a required setting")
            return f.default
    raise TypeError(f"{of.__name__} has no field {key}")


def _opt_int(
    section: Mapping[str, Any], where: str, key: str, of: type, *, minimum: int = 0, maximum: int | None = None
) -> int:
    """An integer setting the files may leave out (then the default of `of`'s field `key`)."""
    if key not in section:
        return cast(int, _default(of, key))
    return _int(section, where, key, minimum=minimum, maximum=maximum)


def _opt_str(section: Mapping[str, Any], where: str, key: str, of: type, *, allow_empty: bool = False) -> str:
    """A string setting the files may leave out (then the default of `of`'s field `key`)."""
    if key not in section:
        return cast(str, _default(of, key))
    return _str(section, where, key, allow_empty=allow_empty)


def _proxies(value: str) -> str:
    """service.trusted_proxies: comma-separated addresses or networks (uvicorn's forwarded_allow_ips), or "*". One it
    cannot read would trust nobody, silently, and the operator would believe the proxy trusted: refused at start."""
    if value.strip() in ("", "*"):  # nobody, or everyone (uvicorn reads "*" so only when it stands alone)
        return value
    for item in (part.strip() for part in value.split(",")):
        try:
            # As uvicorn reads it (strict: a network with host bits set, 10.1.2.3/8, is no network to it either).
            ipaddress.ip_network(item, strict=True)
        except ValueError:
            raise SettingsError(
                f"service.trusted_proxies: {item!r} is no IP address or network (comma-separated, host bits "
                "clear, or * alone)"
            ) from None
    return value


def _opt_bool(section: Mapping[str, Any], where: str, key: str, of: type) -> bool:
    """A boolean setting the files may leave out (then the default of `of`'s field `key`)."""
    if key not in section:
        return cast(bool, _default(of, key))
    return _bool(section, where, key)


def _build(data: Mapping[str, Any]) -> Settings:
    service = _service(_section(data, "service"))
    win = _section(data, "windows")
    windows = _windows(win)
    jurisdictions = _jurisdictions(_section(data, "jurisdictions"), service.jurisdiction)
    windows = replace(windows, off_hours=_off_hours(win, jurisdictions[service.jurisdiction].time_zone))
    categories = _categories(data.get("categories"))
    regions = _regions(data.get("regions"), jurisdictions, service.jurisdiction)
    wallet = _wallet(_section(data, "wallet"))
    ranking = _ranking(_section(data, "ranking"))
    notifications = _notifications(_section(data, "notifications"))
    fraud = _fraud(_section(data, "fraud"))
    database = _database(data.get("database", {}))
    # Last, once every other setting is valid: the embedded default may create its secret file, and a
    # refused start-up must leave nothing behind.
    service = replace(service, secret_key=_secret_key(service.secret_key, service.database_url))
    return Settings(
        service, windows, jurisdictions, categories, regions, wallet, ranking, notifications, fraud, database
    )


def _database(section: Any) -> DatabaseSettings:
    if not isinstance(section, Mapping):
        raise SettingsError("database: must be a table")
    return DatabaseSettings(
        pool_size=_opt_int(section, "database", "pool_size", DatabaseSettings, minimum=1),
        max_overflow=_opt_int(section, "database", "max_overflow", DatabaseSettings, minimum=0),
        pool_timeout_seconds=_opt_int(section, "database", "pool_timeout_seconds", DatabaseSettings, minimum=1),
    )


def _service(svc: Mapping[str, Any]) -> ServiceSettings:
    database_url = _database_url(_str(svc, "service", "database_url", allow_empty=True, secret=True))
    redis_url = _str(svc, "service", "redis_url", allow_empty=True, secret=True)
    if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise SettingsError(
            f"REDIS_URL: must start with redis:// or rediss://, got {_without_credentials(redis_url)!r}"
        )
    return ServiceSettings(
        database_url=database_url,
        redis_url=redis_url,
        secret_key=_str(svc, "service", "secret_key", allow_empty=True, secret=True),  # checked last (_build)
        jurisdiction=_str(svc, "service", "jurisdiction"),
        max_body_bytes=_int(svc, "service", "max_body_bytes", minimum=1024),
        intake_rate_limit_per_minute=_int(svc, "service", "intake_rate_limit_per_minute", minimum=1),
        principal_cache_ms=_int(svc, "service", "principal_cache_ms", minimum=0),
        trusted_proxies=_proxies(_opt_str(svc, "service", "trusted_proxies", ServiceSettings, allow_empty=True)),
        signup_rate_limit_per_minute=_opt_int(
            svc, "service", "signup_rate_limit_per_minute", ServiceSettings, minimum=1
        ),
        registration_by_invitation=_opt_bool(svc, "service", "registration_by_invitation", ServiceSettings),
        invitation_days=_opt_int(svc, "service", "invitation_days", ServiceSettings, minimum=1),
        club_invitations_per_email_per_day=_opt_int(
            svc, "service", "club_invitations_per_email_per_day", ServiceSettings, minimum=1
        ),
        club_invitation_emails_per_day=_opt_int(
            svc, "service", "club_invitation_emails_per_day", ServiceSettings, minimum=1
        ),
    )


def _windows(win: Mapping[str, Any]) -> Windows:
    """The windows but their off hours, which need the jurisdiction's time zone (_off_hours)."""
    return Windows(
        dedup_hours=_int(win, "windows", "dedup_hours", minimum=0),
        return_days=_int(win, "windows", "return_days", minimum=0),
        stale_days=_int(win, "windows", "stale_days", minimum=1),
        offer_ttl_minutes=_int(win, "windows", "offer_ttl_minutes", minimum=1),
        lead_ttl_hours=_int(win, "windows", "lead_ttl_hours", minimum=1),
        replacement_days=_opt_int(win, "windows", "replacement_days", Windows, minimum=0),
    )


def _off_hours(win: Mapping[str, Any], jurisdiction_zone: str) -> OffHours:
    # Both optional, read as text (the Windows field `off_hours` is what they are parsed into): no `off_hours` is
    # none; no `off_hours_time_zone` is the jurisdiction's.
    zone = _str(win, "windows", "off_hours_time_zone", allow_empty=True) if "off_hours_time_zone" in win else ""
    spec = _str(win, "windows", "off_hours", allow_empty=True) if "off_hours" in win else ""
    try:
        return OffHours.parse(spec, zone or jurisdiction_zone)
    except OffHoursError as exc:
        raise SettingsError(f"windows.off_hours: {exc}") from None


def _jurisdictions(section: Mapping[str, Any], served: str) -> dict[str, Jurisdiction]:
    """Every jurisdiction the files describe; `served` (service.jurisdiction) must be one of them."""
    jurisdictions: dict[str, Jurisdiction] = {}
    for code, raw in section.items():
        where = f"jurisdictions.{code}"
        if not isinstance(raw, Mapping):
            raise SettingsError(f"{where}: must be a table")
        currency = _str(raw, where, "currency")
        if len(currency) != 3 or not currency.isalpha() or not currency.isupper():
            raise SettingsError(f"{where}.currency: must be an ISO 4217 code like ILS, got {currency!r}")
        jurisdictions[code] = Jurisdiction(
            code=code,
            name=_str(raw, where, "name"),
            currency=currency,
            vat_rate_bp=_int(raw, where, "vat_rate_bp", maximum=10000),
            prices_include_vat=_bool(raw, where, "prices_include_vat"),
            time_zone=_opt_str(raw, where, "time_zone", Jurisdiction),
            issuer_name=_opt_str(raw, where, "issuer_name", Jurisdiction),
            issuer_tax_id=_opt_str(raw, where, "issuer_tax_id", Jurisdiction),
            issuer_address=_opt_str(raw, where, "issuer_address", Jurisdiction),
        )
        try:
            ZoneInfo(jurisdictions[code].time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise SettingsError(
                f"{where}.time_zone: {jurisdictions[code].time_zone!r} is not a time zone (e.g. Asia/Jerusalem)"
            ) from None
    if served not in jurisdictions:
        raise SettingsError(f"MARKETPLACE_JURISDICTION: {served!r} is not one of {sorted(jurisdictions)}")
    return jurisdictions


def _categories(raw_categories: Any) -> dict[str, Category]:
    categories: dict[str, Category] = {}
    if not isinstance(raw_categories, list) or not raw_categories:
        raise SettingsError("categories: at least one [[categories]] entry is required")
    for i, raw in enumerate(raw_categories):
        where = f"categories[{i}]"
        code = _str(raw, where, "code")
        where = f"categories.{code}"
        if code in categories:
            raise SettingsError(f"{where}: defined twice")
        category = Category(
            code=code,
            name=_str(raw, where, "name"),
            lead_price_minor=_int(raw, where, "lead_price_minor", minimum=1),
            exclusive_price_minor=_int(raw, where, "exclusive_price_minor", minimum=1),
            max_exposures=_int(raw, where, "max_exposures", minimum=1),
            commission_rate_bp=_int(raw, where, "commission_rate_bp", maximum=10000),
            wave_size=_int(raw, where, "wave_size", minimum=1),
            wave_delay_seconds=_int(raw, where, "wave_delay_seconds", minimum=0),
        )
        if category.exclusive_price_minor < category.lead_price_minor:
            raise SettingsError(f"{where}.exclusive_price_minor: must not be below lead_price_minor")
        categories[code] = category
    return categories


def _regions(raw_regions: Any, jurisdictions: Mapping[str, Jurisdiction], served: str) -> dict[str, Region]:
    """The regions of the jurisdiction served (`served`) and those that name none."""
    regions: dict[str, Region] = {}
    if not isinstance(raw_regions, list) or not raw_regions:
        raise SettingsError("regions: at least one [[regions]] entry is required")
    for i, raw in enumerate(raw_regions):
        code = _str(raw, f"regions[{i}]", "code")
        if code in regions:
            raise SettingsError(f"regions.{code}: defined twice")
        # A region of another jurisdiction is not this marketplace's (Germany does not serve Tel Aviv); one that
        # names none is everybody's.
        served_in = raw.get("jurisdiction") if isinstance(raw, Mapping) else None
        if served_in is not None and (not isinstance(served_in, str) or served_in not in jurisdictions):
            raise SettingsError(f"regions.{code}.jurisdiction: {served_in!r} is not one of {sorted(jurisdictions)}")
        if served_in in (None, served):
            regions[code] = Region(code=code, name=_str(raw, f"regions.{code}", "name"))
    if not regions:
        raise SettingsError(f"regions: none for the jurisdiction {served}")
    return regions


def _wallet(wal: Mapping[str, Any]) -> WalletSettings:
    return WalletSettings(
        default_credit_limit_minor=_int(wal, "wallet", "default_credit_limit_minor"),
        issuer_name=_str(wal, "wallet", "issuer_name"),
        issuer_tax_id=_str(wal, "wallet", "issuer_tax_id"),
        issuer_address=_str(wal, "wallet", "issuer_address"),
        first_credit_limit_minor=_opt_int(wal, "wallet", "first_credit_limit_minor", WalletSettings),
    )


def _ranking(rank: Mapping[str, Any]) -> RankingSettings:
    ranking = RankingSettings(
        policy=_str(rank, "ranking", "policy"),
        explore_share_bp=_int(rank, "ranking", "explore_share_bp", maximum=10_000),
    )
    if ranking.policy not in RANKING_POLICIES:
        raise SettingsError(f"ranking.policy: must be one of {', '.join(RANKING_POLICIES)}, got {ranking.policy!r}")
    return ranking


def _notifications(section: Mapping[str, Any]) -> NotificationSettings:
    smtp_url = _str(section, "notifications", "smtp_url", allow_empty=True, secret=True)
    if smtp_url and not smtp_url.startswith(("smtp://", "smtps://")):
        raise SettingsError(
            "notifications.smtp_url: must be empty or start with smtp:// or smtps://, "
            f"got {_without_credentials(smtp_url)!r}"
        )
    base_url = _str(section, "notifications", "public_base_url").rstrip("/")
    if not base_url.startswith(("http://", "https://")):
        raise SettingsError(f"notifications.public_base_url: must start with http:// or https://, got {base_url!r}")
    return NotificationSettings(
        smtp_url=smtp_url,
        from_address=_str(section, "notifications", "from_address"),
        operator_address=_str(section, "notifications", "operator_address"),
        public_base_url=base_url,
    )


def _fraud(section: Mapping[str, Any]) -> FraudSettings:
    return FraudSettings(
        survey_ttl_days=_int(section, "fraud", "survey_ttl_days", minimum=1),
        quiet_days=_int(section, "fraud", "quiet_days", minimum=1),
        max_surveys_per_lead=_int(section, "fraud", "max_surveys_per_lead", minimum=1),
        report_grace_days=_int(section, "fraud", "report_grace_days", minimum=0),
        unpaid_days=_int(section, "fraud", "unpaid_days", minimum=1),
        alert_threshold_bp=_int(section, "fraud", "alert_threshold_bp", minimum=1, maximum=10_000),
        min_labels_per_class=_int(section, "fraud", "min_labels_per_class", minimum=1),
    )


def load_settings(env: Mapping[str, str] | None = None, config_dir: Path | None = None) -> Settings:
    env = os.environ if env is None else env
    directory = Path(config_dir or env.get("MARKETPLACE_CONFIG_DIR") or DEFAULT_CONFIG_DIR)
    data = _read_toml_dir(directory)
    _apply_env(data, env)
    return _build(data)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
