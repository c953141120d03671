"""Configuration: config/*.toml with the environment on top; a wrong or missing setting is one line naming it."""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from marketplace.settings import (
    DEFAULT_CONFIG_DIR,
    SQLITE_DEFAULT_URL,
    DatabaseSettings,
    ServiceSettings,
    SettingsError,
    WalletSettings,
    Windows,
    installed_config_dir,
    load_settings,
)

SECRET = "unit-test-secret-0123456789abcdef"
REPO = Path(__file__).resolve().parents[2]


def shipped() -> dict:
    """The shipped configuration as plain data, to compare loaded settings with."""
    merged: dict = {}
    for path in sorted(DEFAULT_CONFIG_DIR.glob("*.toml")):
        merged.update(tomllib.loads(path.read_text(encoding="utf-8")))
    return merged


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A private copy of config/ to break."""
    return Path(shutil.copytree(DEFAULT_CONFIG_DIR, tmp_path / "config"))


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def one_line_naming(error: SettingsError, name: str) -> str:
    message = str(error)
    assert "\n" not in message, message
    assert message.startswith(f"{name}:"), message
    assert len(message) > len(name) + 2, message  # and says why
    return message


# --- what loads ------------------------------------------------------------------------------------------


def test_the_shipped_defaults_load(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={"SECRET_KEY": SECRET})
    data = shipped()
    assert settings.service.database_url == SQLITE_DEFAULT_URL and settings.service.is_sqlite
    assert settings.service.redis_url == ""
    assert settings.service.max_body_bytes == data["service"]["max_body_bytes"]
    assert settings.windows.return_days == data["windows"]["return_days"]
    assert settings.windows.dedup_hours == data["windows"]["dedup_hours"]
    assert settings.service.jurisdiction == data["service"]["jurisdiction"]
    assert settings.currency == data["jurisdictions"][settings.service.jurisdiction]["currency"]
    assert list(settings.categories) == [c["code"] for c in data["categories"]]
    here = settings.service.jurisdiction
    assert list(settings.regions) == [r["code"] for r in data["regions"] if r.get("jurisdiction", here) == here]
    assert "tel-aviv" in settings.regions and "berlin" not in settings.regions
    germany = load_settings(env={"SECRET_KEY": SECRET, "MARKETPLACE_JURISDICTION": "DE"})
    assert "berlin" in germany.regions and "tel-aviv" not in germany.regions  # a marketplace lists its own regions
    assert germany.jurisdiction.issuer_tax_id.startswith("DE") and settings.jurisdiction.issuer_tax_id == ""
    plumbing = next(c for c in data["categories"] if c["code"] == "plumbing")
    assert settings.categories["plumbing"].lead_price_minor == plumbing["lead_price_minor"]
    assert settings.categories["plumbing"].exclusive_price_minor == plumbing["exclusive_price_minor"]
    assert settings.categories["plumbing"].max_exposures == plumbing["max_exposures"]
    assert settings.categories["plumbing"].commission_rate_bp == plumbing["commission_rate_bp"]


def test_a_setting_the_files_leave_out_takes_its_dataclass_default_which_the_shipped_file_repeats(tmp_path):
    """An optional setting's default is its settings dataclass's field default; config/default.toml spells each one
    out too (it documents them), and must say the same."""
    optional = {
        "service": (ServiceSettings, ("trusted_proxies", "signup_rate_limit_per_minute", "registration_by_invitation",
                                      "invitation_days", "club_invitations_per_email_per_day",
                                      "club_invitation_emails_per_day")),
        "windows": (Windows, ("replacement_days",)),
        "wallet": (WalletSettings, ("first_credit_limit_minor",)),
        "database": (DatabaseSettings, ("pool_size", "max_overflow", "pool_timeout_seconds")),
    }  # fmt: skip
    data = shipped()
    text = (DEFAULT_CONFIG_DIR / "default.toml").read_text(encoding="utf-8")
    for section, (of, keys) in optional.items():
        defaults = {f.name: f.default for f in dataclasses.fields(of)}
        for key in keys:
            assert data[section][key] == defaults[key], f"{section}.{key}"
            text = "\n".join(line for line in text.splitlines() if not line.startswith(f"{key} ="))
    folder = tmp_path / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, folder)
    (folder / "default.toml").write_text(text, encoding="utf-8")
    left_out = load_settings(env={"SECRET_KEY": SECRET}, config_dir=folder)
    assert left_out.service == load_settings(env={"SECRET_KEY": SECRET}).service
    assert left_out.wallet == load_settings(env={"SECRET_KEY": SECRET}).wallet
    assert left_out.database == load_settings(env={"SECRET_KEY": SECRET}).database == DatabaseSettings()
    assert left_out.windows.replacement_days == data["windows"]["replacement_days"]


def test_with_no_settings_at_all_it_runs_on_sqlite_in_the_working_folder_with_a_kept_secret(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = load_settings(env={})
    assert first.service.database_url == SQLITE_DEFAULT_URL
    secret_file = tmp_path / "marketplace.secret"
    assert secret_file.read_text(encoding="utf-8").strip() == first.service.secret_key
    assert len(first.service.secret_key) >= 32
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    # A restart reads the same secret, so the links already sent stay valid.
    assert load_settings(env={}).service.secret_key == first.service.secret_key


def test_environment_overrides_the_files():
    defaults = load_settings(env={"SECRET_KEY": SECRET})
    assert defaults.windows.return_days != 14 and defaults.currency == "ILS"
    settings = load_settings(
        env={
            "DATABASE_URL": "postgresql://market:pw@db.internal:5432/market",
            "REDIS_URL": "redis://cache.internal:6379/0",
            "SECRET_KEY": SECRET,
            "MARKETPLACE_JURISDICTION": "DE",
            "MARKETPLACE__WINDOWS__RETURN_DAYS": "14",
            "MARKETPLACE__SERVICE__MAX_BODY_BYTES": "2048",
        }
    )
    # A plain postgresql:// URL is taken to mean the async driver the service uses.
    assert settings.service.database_url == "postgresql+asyncpg://market:pw@db.internal:5432/market"
    assert not settings.service.is_sqlite
    assert settings.service.redis_url == "redis://cache.internal:6379/0"
    assert settings.service.secret_key == SECRET
    assert settings.windows.return_days == 14
    assert settings.windows.dedup_hours == defaults.windows.dedup_hours  # the rest of the section stays
    assert settings.service.max_body_bytes == 2048
    assert settings.currency == "EUR" and settings.jurisdiction.prices_include_vat is False


def test_the_config_folder_comes_from_the_environment_or_the_argument(config, tmp_path):
    edit(config / "categories.toml", "lead_price_minor = 6000", "lead_price_minor = 7000")
    from_env = load_settings(env={"SECRET_KEY": SECRET, "MARKETPLACE_CONFIG_DIR": str(config)})
    assert from_env.categories["plumbing"].lead_price_minor == 7000
    from_argument = load_settings(env={"SECRET_KEY": SECRET}, config_dir=config)
    assert from_argument.categories["plumbing"].lead_price_minor == 7000
    assert load_settings(env={"SECRET_KEY": SECRET}).categories["plumbing"].lead_price_minor == 6000


def test_an_explicit_env_mapping_ignores_the_process_environment(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "mysql://nope")
    monkeypatch.setenv("MARKETPLACE__WINDOWS__RETURN_DAYS", "not a number")
    settings = load_settings(env={"SECRET_KEY": SECRET, "DATABASE_URL": "sqlite+aiosqlite:///:memory:"})
    assert settings.service.database_url == "sqlite+aiosqlite:///:memory:"
    with pytest.raises(SettingsError):
        load_settings()  # while without a mapping, the process environment is read


def test_the_database_pool_is_set_per_process_and_the_shipped_one_fits_the_production_shape_under_100():
    shipped_pool = load_settings(env={"SECRET_KEY": SECRET}).database
    # The README's production shape: `serve --workers 4` and one `marketplace worker`, against PostgreSQL's default
    # max_connections of 100 (3 of them kept for superusers), with room left for psql and migrations.
    assert (4 + 1) * shipped_pool.connections_per_process <= 100 - 3 - 10
    assert shipped_pool.pool_timeout_seconds > 0
    settings = load_settings(
        env={
            "SECRET_KEY": SECRET,
            "MARKETPLACE__DATABASE__POOL_SIZE": "4",
            "MARKETPLACE__DATABASE__MAX_OVERFLOW": "0",
            "MARKETPLACE__DATABASE__POOL_TIMEOUT_SECONDS": "7",
        }
    )
    assert settings.database == DatabaseSettings(pool_size=4, max_overflow=0, pool_timeout_seconds=7)


async def test_the_engine_takes_its_pool_from_the_settings():
    from marketplace.db.engine import create_engine

    pool = DatabaseSettings(pool_size=3, max_overflow=2, pool_timeout_seconds=9)
    engine = create_engine("postgresql+asyncpg://market@db.invalid/market", pool)  # connects only when used
    try:
        queue = engine.sync_engine.pool
        assert (queue.size(), queue._max_overflow, queue._timeout) == (3, 2, 9)  # type: ignore[attr-defined]
    finally:
        await engine.dispose()
    shipped_engine = create_engine("postgresql+asyncpg://market@db.invalid/market")
    try:
        queue = shipped_engine.sync_engine.pool
        default = DatabaseSettings()
        assert (queue.size(), queue._max_overflow) == (default.pool_size, default.max_overflow)  # type: ignore[attr-defined]
    finally:
        await shipped_engine.dispose()


# --- what does not ----------------------------------------------------------------------------------------

ENV_CASES = [
    ("database-url-scheme", {"DATABASE_URL": "mysql://market@db/market"}, "DATABASE_URL"),
    ("database-url-sync-driver", {"DATABASE_URL": "sqlite:///market.db"}, "DATABASE_URL"),
    ("redis-url-scheme", {"REDIS_URL": "http://cache:6379"}, "REDIS_URL"),
    ("secret-key-required-for-postgresql", {"DATABASE_URL": "postgresql+asyncpg://db/market", "SECRET_KEY": ""},
     "SECRET_KEY"),
    ("secret-key-too-short", {"SECRET_KEY": "short"}, "SECRET_KEY"),
    ("jurisdiction-unknown", {"MARKETPLACE_JURISDICTION": "XX"}, "MARKETPLACE_JURISDICTION"),
    ("window-not-a-number", {"MARKETPLACE__WINDOWS__RETURN_DAYS": "soon"}, "windows.return_days"),
    ("window-negative", {"MARKETPLACE__WINDOWS__RETURN_DAYS": "-1"}, "windows.return_days"),
    ("window-a-float", {"MARKETPLACE__WINDOWS__DEDUP_HOURS": "1.5"}, "windows.dedup_hours"),
    ("body-limit-too-small", {"MARKETPLACE__SERVICE__MAX_BODY_BYTES": "10"}, "service.max_body_bytes"),
    ("pool-size-zero", {"MARKETPLACE__DATABASE__POOL_SIZE": "0"}, "database.pool_size"),
    ("pool-overflow-negative", {"MARKETPLACE__DATABASE__MAX_OVERFLOW": "-1"}, "database.max_overflow"),
    ("pool-timeout-a-word", {"MARKETPLACE__DATABASE__POOL_TIMEOUT_SECONDS": "long"}, "database.pool_timeout_seconds"),
    ("override-name-malformed", {"MARKETPLACE__WINDOWS": "3"}, "MARKETPLACE__WINDOWS"),
    ("config-folder-missing", {"MARKETPLACE_CONFIG_DIR": "/nonexistent/config"}, "MARKETPLACE_CONFIG_DIR"),
    # A misspelt name was ignored, its default left in force (sign-up stayed open).
    ("key-misspelt", {"MARKETPLACE__WINDOWS__RETURN_DAY": "14"}, "MARKETPLACE__WINDOWS__RETURN_DAY"),
    ("section-misspelt", {"MARKETPLACE__WINDOW__RETURN_DAYS": "14"}, "MARKETPLACE__WINDOW__RETURN_DAYS"),
    ("invitation-misspelt", {"MARKETPLACE__SERVICE__REGISTRATION_BY_INVITATON": "true"},
     "MARKETPLACE__SERVICE__REGISTRATION_BY_INVITATON"),
    ("entries-from-the-environment", {"MARKETPLACE__CATEGORIES__PLUMBING": "1"}, "MARKETPLACE__CATEGORIES__PLUMBING"),
]


@pytest.mark.parametrize(("env", "name"), [c[1:] for c in ENV_CASES], ids=[c[0] for c in ENV_CASES])
def test_a_wrong_environment_setting_is_one_line_naming_it(env, name):
    with pytest.raises(SettingsError) as raised:
        load_settings(env={"SECRET_KEY": SECRET, **env})
    one_line_naming(raised.value, name)


PLUMBING = 'code = "plumbing"\nname = "Plumbing"\n'
FILE_CASES = [
    ("category-field-missing", "categories.toml", PLUMBING + "lead_price_minor = 6000\n", PLUMBING,
     "categories.plumbing.lead_price_minor"),
    ("category-price-negative", "categories.toml", "lead_price_minor = 6000", "lead_price_minor = -6000",
     "categories.plumbing.lead_price_minor"),
    ("category-price-a-float", "categories.toml", "lead_price_minor = 6000", "lead_price_minor = 60.5",
     "categories.plumbing.lead_price_minor"),
    ("exclusive-below-shared-price", "categories.toml", "exclusive_price_minor = 15000",
     "exclusive_price_minor = 100", "categories.plumbing.exclusive_price_minor"),
    ("commission-over-everything", "categories.toml", "commission_rate_bp = 1500", "commission_rate_bp = 10001",
     "categories.plumbing.commission_rate_bp"),
    ("category-defined-twice", "categories.toml", 'code = "legal"', 'code = "plumbing"', "categories.plumbing"),
    ("category-without-code", "categories.toml", 'code = "renovation"\n', "", "categories[0].code"),
    ("no-categories", "categories.toml", "[[categories]]", "[[categorie]]", "categorie"),
    ("region-name-missing", "regions.toml", 'name = "Haifa"\n', "", "regions.haifa.name"),
    ("jurisdiction-unknown", "default.toml", 'jurisdiction = "IL"', 'jurisdiction = "FR"',
     "MARKETPLACE_JURISDICTION"),
    ("jurisdiction-missing", "default.toml", 'jurisdiction = "IL"\n', "", "service.jurisdiction"),
    ("currency-not-iso", "default.toml", 'currency = "ILS"', 'currency = "shekel"', "jurisdictions.IL.currency"),
    ("vat-rate-a-string", "default.toml", "vat_rate_bp = 1800", 'vat_rate_bp = "18%"', "jurisdictions.IL.vat_rate_bp"),
    ("vat-included-not-a-boolean", "default.toml", "prices_include_vat = true", 'prices_include_vat = "yes"',
     "jurisdictions.IL.prices_include_vat"),
    ("windows-section-misspelt", "default.toml", "[windows]", "[windowz]", "windowz"),
    ("window-missing", "default.toml", "return_days = 7\n", "", "windows.return_days"),
    ("window-misspelt", "default.toml", "return_days = 7\n", "return_day = 7\n", "windows.return_day"),
    ("wallet-section-misspelt", "default.toml", "[wallet]", "[walet]", "walet"),
    ("jurisdiction-key-misspelt", "default.toml", 'time_zone = "Europe/Berlin"', 'timezone = "Europe/Berlin"',
     "jurisdictions.DE.timezone"),
    ("category-key-misspelt", "categories.toml", "wave_size = 3\nwave_delay_seconds = 300",
     "wave_sise = 3\nwave_delay_seconds = 300", "categories.plumbing.wave_sise"),
    ("region-key-misspelt", "regions.toml", 'jurisdiction = "IL"', 'jurisdictoin = "IL"',
     "regions.tel-aviv.jurisdictoin"),
    ("not-toml", "default.toml", "[service]", "[service", "default.toml"),
    ("not-toml-value", "regions.toml", 'name = "Haifa"', "name = Haifa", "regions.toml"),
]


@pytest.mark.parametrize(
    ("file", "old", "new", "name"), [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES]
)
def test_a_wrong_or_missing_file_setting_is_one_line_naming_it(config, tmp_path, file, old, new, name):
    load_settings(env={"SECRET_KEY": SECRET}, config_dir=config)  # the copy loads before it is broken
    edit(config / file, old, new)
    embedded = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'market.db'}"}
    with pytest.raises(SettingsError) as raised:
        load_settings(env=embedded, config_dir=config)
    one_line_naming(raised.value, name)
    # Refused before the embedded default created its secret file: a failed start leaves nothing behind.
    assert not (tmp_path / "market.secret").exists()


def test_a_misspelt_name_is_refused_with_the_closest_known_one(config):
    with pytest.raises(SettingsError) as raised:
        load_settings(env={"SECRET_KEY": SECRET, "MARKETPLACE__SERVICE__REGISTRATION_BY_INVITATON": "true"})
    assert str(raised.value) == (
        "MARKETPLACE__SERVICE__REGISTRATION_BY_INVITATON: no such setting"
        " (did you mean MARKETPLACE__SERVICE__REGISTRATION_BY_INVITATION?)"
    )
    edit(config / "default.toml", "[windows]", "[windowz]")
    with pytest.raises(SettingsError) as raised:
        load_settings(env={"SECRET_KEY": SECRET}, config_dir=config)
    assert str(raised.value) == "windowz: no such section in default.toml (did you mean windows?)"


def test_the_codes_of_jurisdictions_categories_and_regions_are_free(config):
    # Entries are named by their codes, which a marketplace chooses: only the keys inside them are checked.
    with (config / "zz-france.toml").open("w", encoding="utf-8") as more:
        more.write('[jurisdictions.FR]\nname = "France"\ncurrency = "EUR"\nvat_rate_bp = 2000\n'
                   'prices_include_vat = false\ntime_zone = "Europe/Paris"\n\n'
                   '[[regions]]\ncode = "paris"\nname = "Paris"\njurisdiction = "FR"\n')  # fmt: skip
    edit(config / "categories.toml", 'code = "plumbing"', 'code = "roofing-and-gutters"')
    settings = load_settings(env={"SECRET_KEY": SECRET, "MARKETPLACE_JURISDICTION": "FR"}, config_dir=config)
    assert settings.currency == "EUR" and list(settings.regions) == ["paris"]
    assert "roofing-and-gutters" in settings.categories


def test_a_text_setting_from_the_environment_is_the_text_given():
    # A secret of digits was read as a TOML number and refused as "must be a non-empty string, got <the secret>".
    digits = "98765432109876543210"
    settings = load_settings(env={"MARKETPLACE__SERVICE__SECRET_KEY": digits, "MARKETPLACE__WINDOWS__OFF_HOURS": ""})
    assert settings.service.secret_key == digits
    numbers = load_settings(env={"SECRET_KEY": SECRET, "MARKETPLACE__WINDOWS__RETURN_DAYS": "14"})
    assert numbers.windows.return_days == 14  # the others are still TOML literals


def test_no_error_prints_a_secret(config):
    with pytest.raises(SettingsError) as raised:
        load_settings(env={"SECRET_KEY": SECRET, "REDIS_URL": "http://u:hunter2@redis:6379/0"})
    assert str(raised.value) == "REDIS_URL: must start with redis:// or rediss://, got 'http://redis:6379/0'"
    with pytest.raises(SettingsError) as raised:
        load_settings(env={"SECRET_KEY": SECRET, "MARKETPLACE__NOTIFICATIONS__SMTP_URL": "mail://u:hun/ter2@mx:25"})
    assert "hun" not in str(raised.value) and "mail://mx:25" in str(raised.value)
    with pytest.raises(SettingsError) as raised:  # a password in the query string is one too (a tester)
        load_settings(env={"SECRET_KEY": SECRET, "REDIS_URL": "http://h:6379/0?password=s3cretpw2#x"})
    assert "s3cret" not in str(raised.value) and "'http://h:6379/0'" in str(raised.value), raised.value
    edit(config / "default.toml", 'secret_key = ""', "secret_key = 98765432109876543210")
    with pytest.raises(SettingsError) as raised:
        load_settings(env={}, config_dir=config)
    one_line_naming(raised.value, "service.secret_key")
    assert "98765" not in str(raised.value)


@pytest.mark.parametrize(
    "proxies",
    ["10.0.0.1;10.0.0.2", "10.0.0.300", "10.0.0.1,,10.0.0.2", "proxy.internal", "10.1.2.3/8", "*, 10.0.0.1"],
)
def test_trusted_proxies_that_are_no_address_stop_start_up(proxies):
    # uvicorn takes what it cannot read as an address for a literal host name that never matches: the proxy the
    # operator meant to trust would be trusted by nobody, the rate limit counting every customer as the proxy.
    with pytest.raises(SettingsError) as raised:
        load_settings(env={"SECRET_KEY": SECRET, "MARKETPLACE__SERVICE__TRUSTED_PROXIES": proxies})
    one_line_naming(raised.value, "service.trusted_proxies")


@pytest.mark.parametrize("proxies", ["", "*", "10.0.0.1", "10.0.0.1, 10.0.0.0/8", "::1,fd00::/8"])
def test_trusted_proxies_are_addresses_networks_or_everyone(proxies):
    settings = load_settings(env={"SECRET_KEY": SECRET, "MARKETPLACE__SERVICE__TRUSTED_PROXIES": proxies})
    assert settings.service.trusted_proxies == proxies


def test_a_refused_configuration_leaves_no_secret_file_behind(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingsError):
        load_settings(env={"MARKETPLACE__WINDOWS__RETURN_DAYS": "-1"})
    assert list(tmp_path.iterdir()) == []
    load_settings(env={})
    assert [p.name for p in tmp_path.iterdir()] == ["marketplace.secret"]


# --- the command ------------------------------------------------------------------------------------------


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY") and not k.startswith("MARKETPLACE")}
    return subprocess.run(
        [sys.executable, "-m", "marketplace.cli", *args],
        env={**clean, "PYTHONPATH": str(REPO), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "env", "name"),
    [
        (("serve", "--port", "1"), {"DATABASE_URL": "mysql://market@db/market"}, "DATABASE_URL"),
        (("db", "upgrade"), {"DATABASE_URL": "postgresql+asyncpg://db/market"}, "SECRET_KEY"),
        (("operator", "create", "--name", "Ops"), {"MARKETPLACE__WINDOWS__RETURN_DAYS": "-3"}, "windows.return_days"),
    ],
    ids=["serve", "db-upgrade", "operator-create"],
)
def test_the_command_stops_with_code_2_and_one_line_naming_the_setting(tmp_path, args, env, name):
    result = run_cli(tmp_path, *args, **env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"configuration error: {name}:"), lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert list(tmp_path.iterdir()) == []  # it stopped before creating a database or a secret


def test_the_command_stops_on_a_broken_config_file(config, tmp_path):
    edit(config / "categories.toml", "lead_price_minor = 6000", "lead_price_minor = -1")
    result = run_cli(tmp_path, "db", "upgrade", MARKETPLACE_CONFIG_DIR=str(config))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.strip() == (
        "configuration error: categories.plumbing.lead_price_minor: must be at least 1, got -1"
    )


def test_an_installed_wheel_carries_every_config_file_and_finds_them_under_its_prefix(tmp_path: Path) -> None:
    """A wheel has no checkout beside its package: config/ travels as data files (pyproject's data-files, every
    file of config/ and its scenarios) and the settings look for it under the environment's prefix."""
    root = Path(__file__).resolve().parents[2]
    data_files = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    shipped = {
        (target, Path(path).name)
        for target, patterns in data_files.items()
        for pattern in patterns
        for path in glob.glob(str(root / pattern))
    }
    config = root / "config"
    wanted = {
        (str(Path("share/marketplace") / path.parent.relative_to(root)), path.name) for path in config.rglob("*.toml")
    }
    assert wanted and shipped == wanted
    # Installed: the package under site-packages, no config/ beside it; the prefix's share/ holds it.
    package = tmp_path / "lib" / "site-packages" / "marketplace" / "settings.py"
    package.parent.mkdir(parents=True)
    assert installed_config_dir(str(package), str(tmp_path)) == tmp_path / "share" / "marketplace" / "config"
    # Another distribution's `config` package beside ours in site-packages is not ours.
    (package.parent.parent / "config").mkdir()
    (package.parent.parent / "config" / "__init__.py").write_text("")
    assert installed_config_dir(str(package), str(tmp_path)) == tmp_path / "share" / "marketplace" / "config"
    # A checkout: config/ beside the package.
    assert installed_config_dir(str(root / "marketplace" / "settings.py"), str(tmp_path)) == config


def test_a_wheel_installed_under_another_prefix_finds_its_config_by_its_record(tmp_path, monkeypatch):
    """`pip install --user` (or --prefix) puts the data files under that base, not the interpreter's prefix (a
    tester): the distribution's record of its files says where."""
    site = tmp_path / "lib" / "site-packages"
    info = site / "marketplace-9.9.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: marketplace\nVersion: 9.9\n")
    (info / "RECORD").write_text("../../share/marketplace/config/default.toml,,\nmarketplace/settings.py,,\n")
    config = tmp_path / "share" / "marketplace" / "config"
    config.mkdir(parents=True)
    (config / "default.toml").write_text("")
    monkeypatch.syspath_prepend(str(site))
    package = site / "marketplace" / "settings.py"
    assert installed_config_dir(str(package), str(tmp_path / "elsewhere")) == config.resolve()
