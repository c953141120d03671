"""Identity in the database: single-use links spent inside units of work, and the operator token command."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from marketplace import cli
from marketplace.app import create_app, shutdown, startup
from marketplace.clock import utcnow
from marketplace.db.models import ApiToken, Operator, UsedLink
from marketplace.errors import Gone
from marketplace.identity.links import LinkClaims, read_link, sign_link
from marketplace.identity.services import spend_link
from marketplace.identity.tokens import hash_token
from tests.conftest import DbProbe, make_settings
from tests.factories import auth

REPO = Path(__file__).resolve().parents[2]


def claims_for(settings, subject: str = "lead_01abc") -> LinkClaims:
    secret = settings.service.secret_key
    token = sign_link(secret, "survey", subject, utcnow() + timedelta(days=7))
    return read_link(secret, token, "survey", utcnow())


async def test_a_link_is_spent_once_across_units_of_work(app, db, settings):
    claims = claims_for(settings)
    async with app.state.uow() as uow:
        await spend_link(uow.session, claims)
    with pytest.raises(Gone):
        async with app.state.uow() as uow:
            await spend_link(uow.session, claims)
    used = await db.scalars(select(UsedLink))
    assert [(u.link_id, u.purpose) for u in used] == [(claims.link_id, "survey")]
    # Another link of the same subject is a different link, still unused.
    async with app.state.uow() as uow:
        await spend_link(uow.session, claims_for(settings))
    assert await db.count(UsedLink) == 2


async def test_a_spend_rolled_back_with_its_request_leaves_the_link_usable(app, db, settings):
    claims = claims_for(settings)
    with pytest.raises(RuntimeError):
        async with app.state.uow() as uow:
            await spend_link(uow.session, claims)
            raise RuntimeError("the request failed after spending the link")
    assert await db.count(UsedLink) == 0
    async with app.state.uow() as uow:
        await spend_link(uow.session, claims)
    assert await db.count(UsedLink) == 1


async def test_a_second_use_in_the_same_transaction_is_gone_and_the_transaction_goes_on(app, db, settings):
    first, second = claims_for(settings), claims_for(settings)
    async with app.state.uow() as uow:
        await spend_link(uow.session, first)
        with pytest.raises(Gone):
            await spend_link(uow.session, first)
        # Only the savepoint was rolled back (PostgreSQL would otherwise refuse every further statement).
        await spend_link(uow.session, second)
    assert sorted(await db.scalars(select(UsedLink.link_id))) == sorted([first.link_id, second.link_id])


async def test_two_requests_racing_for_one_link_spend_it_once(app, db, settings):
    claims = claims_for(settings)
    spent = asyncio.Event()

    async def attempt(hold: bool) -> str:
        try:
            async with app.state.uow() as uow:
                await spend_link(uow.session, claims)
                if hold:
                    spent.set()
                    await asyncio.sleep(0.2)  # keep the transaction open while the other one tries
            return "spent"
        except Gone:
            return "gone"

    async def second() -> str:
        await spent.wait()
        return await attempt(hold=False)

    assert sorted(await asyncio.gather(attempt(hold=True), second())) == ["gone", "spent"]
    assert await db.count(UsedLink) == 1


async def run_cli(*args: str, cwd: Path, **env: str) -> tuple[int, str, str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY") and not k.startswith("MARKETPLACE")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "marketplace.cli", *args,
        env={**clean, "PYTHONPATH": str(REPO), **env},
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    return int(process.returncode or 0), out.decode(), err.decode()


async def test_operator_create_prints_a_token_that_authenticates_as_an_operator(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    code, out, err = await run_cli("operator", "create", "--name", "Night shift", cwd=tmp_path, DATABASE_URL=url)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1, out  # the token alone, so that scripts can capture it
    token = lines[0]
    code, again, err = await run_cli("operator", "create", "--name", "Day shift", cwd=tmp_path, DATABASE_URL=url)
    assert code == 0, err
    other = again.strip()
    assert other and other != token

    app = create_app(make_settings(url), migrate_on_start=False, run_jobs_in_background=False)
    await startup(app.state)
    try:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            # Through the guard as an operator: the unknown id is a 404, not a 401 or 403.
            unknown = await client.get("/v1/businesses/biz_unknown", headers=auth(token))
            assert unknown.status_code == 404, unknown.text
            assert (await client.get("/v1/businesses/biz_unknown", headers=auth(other))).status_code == 404
            # An operator is not a business, and an altered token is nobody.
            assert (await client.get("/v1/businesses/me", headers=auth(token))).status_code == 403
            forged = token[:-1] + ("A" if token[-1] != "A" else "B")
            assert (await client.get("/v1/businesses/biz_unknown", headers=auth(forged))).status_code == 401
        probe = DbProbe(app)
        operators = await probe.scalars(select(Operator).order_by(Operator.name))
        assert [o.name for o in operators] == ["Day shift", "Night shift"]
        stored = await probe.scalars(select(ApiToken))
        assert {t.token_hash for t in stored} == {hash_token(token), hash_token(other)}
        assert all(t.operator_id and t.business_id is None for t in stored)
        assert not any(token in t.token_hash or other in t.token_hash for t in stored)
    finally:
        await shutdown(app.state)


@pytest.fixture
def cli_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """The command run in process, on a SQLite file of its own (`main` reads and keeps its settings)."""
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    monkeypatch.setenv("SECRET_KEY", "unit-test-secret-0123456789abcdef")
    cli.get_settings.cache_clear()
    yield monkeypatch
    cli.get_settings.cache_clear()


async def _principal(settings, token: str):
    from marketplace.db.engine import create_engine
    from marketplace.identity.services import resolve_token
    from marketplace.identity.tokens import hash_token

    engine = create_engine(settings.service.database_url)
    try:
        async with engine.connect() as conn:
            return await resolve_token(conn, hash_token(token))
    finally:
        await engine.dispose()


def test_operator_revoke_cuts_off_a_leaked_token_and_prints_a_new_one(cli_environment, capsys):
    # An operator's token could not be revoked at all: a leaked one read every business's data for good.
    assert cli.main(["operator", "create", "--name", "Night shift"]) == 0
    leaked = capsys.readouterr().out.strip()
    assert cli.main(["operator", "create", "--name", "Day shift"]) == 0
    other = capsys.readouterr().out.strip()
    settings = cli.get_settings()
    operator = asyncio.run(_principal(settings, leaked))
    assert operator is not None and operator.kind == "operator"

    assert cli.main(["operator", "revoke", "--token", leaked]) == 0
    new = capsys.readouterr().out.strip()
    assert new.startswith("mko_") and len(new.splitlines()) == 1  # the token alone, for scripts
    assert asyncio.run(_principal(settings, leaked)) is None  # the guard's read: 401
    assert asyncio.run(_principal(settings, new)) == operator  # the same operator: its decisions stay its own
    assert asyncio.run(_principal(settings, other)) is not None  # another operator is untouched
    # By id too (a lost token); the revoked one still names its operator, so it may be used to find it again.
    assert cli.main(["operator", "revoke", "--id", operator.id]) == 0
    newer = capsys.readouterr().out.strip()
    assert asyncio.run(_principal(settings, new)) is None and asyncio.run(_principal(settings, newer)) == operator
    assert cli.main(["operator", "revoke", "--token", leaked]) == 0
    assert asyncio.run(_principal(settings, newer)) is None
    capsys.readouterr()
    # A token or an id of no operator: refused, nothing printed to stdout.
    for args in (["--token", "mko_nobody"], ["--id", "op_nobody"]):
        assert cli.main(["operator", "revoke", *args]) == 1
        out, err = capsys.readouterr()
        assert out == "" and "no operator has that" in err
