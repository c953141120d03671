"""`marketplace serve`: the links in messages point at the address the service answers on."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from marketplace import cli
from marketplace.settings import load_settings


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[pytest.MonkeyPatch]:
    # Set, then removed: monkeypatch restores the variable's absence after the test, even if serve sets it.
    monkeypatch.setenv(cli._BASE_URL_ENV, "placeholder")
    monkeypatch.delenv(cli._BASE_URL_ENV)
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    monkeypatch.setenv("SECRET_KEY", "unit-test-secret-0123456789abcdef")
    cli.get_settings.cache_clear()
    yield monkeypatch
    cli.get_settings.cache_clear()


def test_links_follow_the_served_port_while_the_base_url_is_the_shipped_default(environment):
    settings = cli.get_settings()  # as `main` reads them first (and keeps them)
    assert settings.notifications.public_base_url == cli._SHIPPED_BASE_URL
    served = cli._served_at(settings, argparse.Namespace(host="0.0.0.0", port=8768))
    assert served.notifications.public_base_url == "http://127.0.0.1:8768"
    environment.delenv(cli._BASE_URL_ENV)
    served = cli._served_at(settings, argparse.Namespace(host="::1", port=8769))
    assert served.notifications.public_base_url == "http://[::1]:8769"


def test_a_configured_base_url_is_kept(environment):
    environment.setenv(cli._BASE_URL_ENV, "https://leads.example")
    settings = load_settings()
    served = cli._served_at(settings, argparse.Namespace(host="127.0.0.1", port=9000))
    assert served.notifications.public_base_url == "https://leads.example"


# --- found driving a real server (helper-75) -------------------------------------------------------------------


def test_serve_with_several_workers_and_no_redis_is_refused_before_anything_runs(environment, capsys):
    # Without Redis each API process keeps its own ranking core, token cache, rate limits and job queue: a
    # business that signed up in one process was not offered the leads the other took in (6 of 8 leads reached it
    # over real HTTP with `--workers 2`). The README's "without Redis there is one process" is now what serve holds.
    import uvicorn

    environment.delenv("REDIS_URL", raising=False)
    environment.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("uvicorn started"))
    environment.setattr(cli, "_upgrade", lambda *a, **k: pytest.fail("migrated before refusing"))
    assert cli.main(["serve", "--workers", "2", "--port", "8770"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("configuration error: REDIS_URL: required for `marketplace serve --workers 2`"), err


def test_serve_with_one_worker_needs_no_redis(environment):
    import uvicorn

    ran: list[dict] = []
    environment.delenv("REDIS_URL", raising=False)
    environment.setattr(uvicorn, "run", lambda *a, **k: ran.append(k))
    assert cli.main(["serve", "--port", "8771"]) == 0
    assert ran and ran[0]["port"] == 8771


async def test_the_demo_loaded_again_makes_no_second_operator(environment):
    # `marketplace serve --demo` run again (a restart, as the README says) made a new "Demo operator" with a new
    # token every time; the businesses and leads were found and not made again.
    from sqlalchemy import func, select

    from marketplace.db.engine import create_engine
    from marketplace.db.models import ApiToken, Business, Lead, Operator

    settings = cli.get_settings()
    await cli._upgrade(settings)
    first = await cli._load_demo(settings)
    second = await cli._load_demo(settings)
    assert first[1].startswith("  operator token: mko_")
    assert "mko_" not in "\n".join(second) and "operator token: already created" in second[1]
    engine = create_engine(settings.service.database_url)
    try:
        async with engine.connect() as conn:
            counts = [
                (await conn.execute(select(func.count()).select_from(model))).scalar_one()
                for model in (Operator, Business, Lead)
            ]
            operator_tokens = (
                await conn.execute(select(func.count()).select_from(ApiToken).where(ApiToken.operator_id.is_not(None)))
            ).scalar_one()
    finally:
        await engine.dispose()
    assert counts == [1, 4, 3] and operator_tokens == 1


@pytest.mark.parametrize("name", ["", "   ", "\u200b", "x" * 201])
def test_an_operator_needs_a_name_that_shows(environment, capsys, name):
    # `marketplace operator create --name ""` made an operator with no name (its decisions are kept under it).
    with pytest.raises(SystemExit) as exited:
        cli.main(["operator", "create", "--name", name])
    assert exited.value.code == 2
    assert "--name" in capsys.readouterr().err


async def test_the_demo_loads_where_sign_up_is_by_invitation(environment):
    # `marketplace serve --demo` died with a traceback (Forbidden: sign-up is by invitation): the demo's businesses are
    # the marketplace's own, registered by it, not signing up.
    environment.setenv("MARKETPLACE__SERVICE__REGISTRATION_BY_INVITATION", "true")
    cli.get_settings.cache_clear()
    settings = cli.get_settings()
    assert settings.service.registration_by_invitation
    await cli._upgrade(settings)
    lines = await cli._load_demo(settings)
    assert sum("token: mkb_" in line for line in lines) == 4, lines


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--port", "70000"], "argument --port: must be between 1 and 65535, got 70000"),
        (["--port", "0"], "argument --port: must be between 1 and 65535, got 0"),
        (["--workers", "0"], "argument --workers: must be at least 1, got 0"),
        (["--workers", "-2"], "argument --workers: must be at least 1, got -2"),
    ],
    ids=["port-beyond-65535", "port-zero", "no-workers", "negative-workers"],
)
def test_serve_refuses_a_port_or_worker_count_out_of_range(environment, capsys, args, said):
    # --port 70000 listened on 4464 (the socket takes the port modulo 65536) while announcing :70000, and
    # --workers 0 or -2 were accepted.
    import uvicorn

    environment.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("uvicorn started"))
    with pytest.raises(SystemExit) as stopped:
        cli.main(["serve", *args])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip().endswith(f"marketplace serve: error: {said}")
