"""The migrations build exactly the schema the models declare, on both databases (tables, columns, indexes,
constraints): a model changed without its migration, or the reverse, fails here."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from litestar import Litestar

import marketplace.db.models  # noqa: F401  (every model registered on the metadata)
from marketplace.db.base import Base
from tests.conftest import fresh_postgres


async def test_the_migrated_database_matches_the_models(app: Litestar) -> None:
    async with app.state.engine.connect() as conn:
        dialect = conn.dialect.name

        def made_here(obj, name, type_, reflected, compare_to) -> bool:
            """Not what the models make on another database only (`.ddl_if(dialect=...)`)."""
            only_on = getattr(getattr(obj, "_ddl_if", None), "dialect", None)
            return only_on is None or only_on == dialect

        differences = await conn.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"include_object": made_here}), Base.metadata
            )
        )
    assert differences == []


async def test_answers_stored_before_0009_lose_the_contact_they_held(tmp_path) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from marketplace.db.migrate import upgrade

    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'before.db'}")
    try:
        await upgrade(engine, "0008_offers_created_at")
        claim = '{"id": "exp_1", "contact": {"name": "Dana", "phone": "+972501234567", "email": null}}'
        refused = '{"title": "Conflict", "contact": {"name": "kept as it was"}}'
        async with engine.begin() as conn:
            for key, status, body in (("k1", 201, claim), ("k2", 409, refused), ("k3", 201, '{"id": "tx_1"}')):
                await conn.execute(
                    text(
                        "INSERT INTO idempotency_records (scope, key, request_hash, status_code, body, created_at)"
                        " VALUES ('biz_1', :key, 'h', :status, :body, '2026-11-26 00:00:00')"
                    ),
                    {"key": key, "status": status, "body": body},
                )
        await upgrade(engine)
        async with engine.connect() as conn:
            rows = dict((await conn.execute(text("SELECT key, body FROM idempotency_records"))).all())
    finally:
        await engine.dispose()
    import json

    assert json.loads(rows["k1"]) == {"id": "exp_1", "contact": None}
    assert json.loads(rows["k2"]) == json.loads(refused)  # not a stored answer of an exposure: untouched
    assert json.loads(rows["k3"]) == {"id": "tx_1"}


async def test_sqlite_plans_the_busy_statements_on_their_own_indexes(app: Litestar) -> None:
    """SQLite keeps no statistics (no ANALYZE), and its planner once walked every active business (by an index
    on status) to mark the three a wave offers a lead to, and every open offer of the market (by an index on
    (status, expires_at)) to list one business's offers or close one lead's. Each busy statement is run here
    as the service sends it, and its plan must use the index meant for it."""
    from datetime import UTC, datetime

    from sqlalchemy import event

    from marketplace.offers.closing import _CLOSE_OPEN_OFFERS, _EXPIRE_OFFERS
    from marketplace.offers.services import _OPEN_OFFERS_FIRST_PAGE
    from marketplace.offers.waves import _MARK_OFFERED

    engine = app.state.engine
    if engine.dialect.name != "sqlite":
        return  # PostgreSQL plans from its own statistics
    now = datetime(2026, 1, 5, tzinfo=UTC)
    cases = {
        "wave marks businesses": (
            _MARK_OFFERED,
            {
                "ids": ["biz_1", "biz_2", "biz_3"],
                "now": now,
                "category": "plumbing",
                "region": "haifa",
                "budget": 0,
                "default_limit": 0,
                "first_limit": 0,
                "least_price": 1,
                "day": now,
                "month": now,
            },
        ),
        "a business's open offers": (_OPEN_OFFERS_FIRST_PAGE, {"business_id": "biz_1", "now": now, "limit": 21}),
        "a lead's open offers closed": (_CLOSE_OPEN_OFFERS, {"of_lead": "lead_1"}),
        "expiry sweep": (_EXPIRE_OFFERS, {"now": now}),
    }
    sent: dict[str, str] = {}
    async with engine.connect() as conn:
        for name, (statement, params) in cases.items():

            def capture(_conn, _cursor, sql, *_rest, name=name):  # type: ignore[no-untyped-def]
                sent[name] = sql

            event.listen(engine.sync_engine, "before_cursor_execute", capture)
            try:
                await conn.execute(statement, params)
            finally:
                event.remove(engine.sync_engine, "before_cursor_execute", capture)
        plans = {}
        for name, sql in sent.items():
            rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", (None,) * sql.count("?"))
            plans[name] = " | ".join(str(r[-1]) for r in rows)
        await conn.rollback()
    assert "USING INDEX sqlite_autoindex_businesses_1 (id=?)" in plans["wave marks businesses"], plans
    assert "SEARCH ledger_accounts USING INDEX" in plans["wave marks businesses"], plans  # what a pick owes
    # Whether a lead buyer has paid a charge of its own (the first credit limit until then), off its own settlements.
    assert (
        "SEARCH settlements USING INDEX ix_settlements_business_id (business_id=?)" in plans["wave marks businesses"]
    ), plans
    # What a pick has received today and this month (its caps), off the business's own exposures.
    assert "USING INDEX ix_exposures_business_id_created_at (business_id=?" in plans["wave marks businesses"], plans
    assert "ix_offers_business_id_status (business_id=? AND status=?)" in plans["a business's open offers"], plans
    assert "ix_offers_lead_id (lead_id=?)" in plans["a lead's open offers closed"], plans
    assert "ix_offers_open_expires_at (expires_at<?)" in plans["expiry sweep"], plans

    # The outbox by kind, newest first, a page after a cursor: read off the index, not sorted whole.
    from marketplace.ids import new_id
    from marketplace.notifications.services import list_notifications

    listed: list[str] = []

    def capture_list(_conn, _cursor, sql, *_rest):  # type: ignore[no-untyped-def]
        listed.append(sql)

    event.listen(engine.sync_engine, "before_cursor_execute", capture_list)
    try:
        async with app.state.uow() as uow:
            await list_notifications(uow.session, 200, new_id("ntf"), "survey")
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", capture_list)
    (sql,) = [q for q in listed if "FROM notifications" in q]
    async with engine.connect() as conn:
        rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", (None,) * sql.count("?"))
        plan = " | ".join(str(r[-1]) for r in rows)
    assert "ix_notifications_kind_id (kind=? AND id<?)" in plan and "TEMP B-TREE" not in plan, plan


async def test_leads_taken_off_the_market_before_0023_are_closed(tmp_path) -> None:
    """Before 0023 a lead taken off the market was left `expired` (an open one) or `full`, its expiry brought forward
    to the moment: those whose hire (a deal maker's won, invoiced or paid; a customer's answer naming a hire) or
    seller's block came by then are closed; one whose time ran out first, or only a lead buyer's report, stays."""
    from alembic import command
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from marketplace.db.migrate import _config, upgrade

    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'before.db'}")
    day = "2026-11-2{} {}:00:00.000000".format
    leads = {  # id: (status, seller, exposure_count, max_exposures, expires_at)
        "won_early": ("expired", None, 1, 2, day(1, 12)),
        "seller_blocked": ("full", "biz_seller", 2, 2, day(1, 9)),
        "hired_early": ("full", None, 2, 2, day(1, 8)),
        "won_late": ("expired", None, 1, 2, day(3, 10)),
        "buyer_won": ("expired", None, 1, 2, day(1, 12)),
        "on_the_market": ("open", None, 0, 2, day(9, 10)),
    }
    try:
        await upgrade(engine, "0022_referral_indexes")
        async with engine.begin() as conn:
            for lead_id, (status, seller, count, most, expires_at) in leads.items():
                await conn.execute(
                    text(
                        "INSERT INTO leads (id, category, region, description, budget_minor, currency, source,"
                        " seller_business_id, status, max_exposures, exposure_count, is_exclusive, waves_sent,"
                        " seen_count, last_seen_at, dedup_key, created_at, expires_at) VALUES (:id, 'plumbing',"
                        " 'tel-aviv', 'x', 0, 'ILS', 'customer', :seller, :status, :most, :count, FALSE, 1, 1, :at,"
                        " :id, :at, :expires_at)"
                    ),
                    {"id": lead_id, "seller": seller, "status": status, "most": most, "count": count,
                     "at": day(0, 10), "expires_at": expires_at},
                )  # fmt: skip
            for lead_id, mode, at in (
                ("won_early", "deal_maker", day(1, 12)),
                ("won_late", "deal_maker", day(4, 10)),
                ("buyer_won", "lead_buyer", day(1, 11)),
            ):
                await conn.execute(
                    text(
                        "INSERT INTO exposures (id, lead_id, business_id, offer_id, mode, kind, price_minor, currency,"
                        " commission_rate_bp, status, stale, created_at, status_changed_at) VALUES (:id, :lead,"
                        " 'biz_1', :id, :mode, 'shared', 0, 'ILS', 0, 'won', FALSE, :at, :at)"
                    ),
                    {"id": f"exp_{lead_id}", "lead": lead_id, "mode": mode, "at": at},
                )
                await conn.execute(
                    text(
                        "INSERT INTO exposure_events (exposure_id, actor, from_status, to_status, at)"
                        " VALUES (:id, 'business:biz_1', 'new', 'won', :at)"
                    ),
                    {"id": f"exp_{lead_id}", "at": at},
                )
            await conn.execute(
                text(
                    "INSERT INTO surveys (id, lead_id, link_id, cause, hired, answered_at, created_at, expires_at)"
                    " VALUES ('srv_1', 'hired_early', 'l1', 'quiet', TRUE, :at, :at, :at)"
                ),
                {"at": day(1, 8)},
            )
            await conn.execute(
                text(
                    "INSERT INTO business_status_changes (id, business_id, from_status, to_status, unreliable, reason,"
                    " changed_by, changed_at) VALUES ('bsc_1', 'biz_seller', 'active', 'blocked', TRUE, '', 'op', :at)"
                ),
                {"at": day(1, 9)},
            )
        await upgrade(engine)
        async with engine.connect() as conn:
            statuses = dict((await conn.execute(text("SELECT id, status FROM leads"))).all())
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: command.downgrade(_config(sync), "0022_referral_indexes"))
        async with engine.connect() as conn:
            before = dict((await conn.execute(text("SELECT id, status FROM leads"))).all())
    finally:
        await engine.dispose()
    assert statuses == {
        "won_early": "closed",
        "seller_blocked": "closed",
        "hired_early": "closed",
        "won_late": "expired",
        "buyer_won": "expired",
        "on_the_market": "open",
    }
    # Downgraded, each is as that revision left it: a full one full, an open one expired.
    assert before == {lead_id: status for lead_id, (status, *_) in leads.items()}


# --- a PostgreSQL database not at this code's revision ------------------------------------------------------------
# PostgreSQL is migrated by hand (`marketplace db upgrade`): code deployed on a database one migration behind started,
# said healthy and answered 500s (a column it writes missing); on an empty one a command printed a 137-line traceback.


async def _drop_postgres(name: str) -> None:
    import asyncpg

    from tests.conftest import PG_ADMIN_DSN, PG_TEST_DB

    admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{PG_TEST_DB}_{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def _migrate(url: str, revision: str | None, *statements: str) -> None:
    """Migrate to `revision` (None: not at all), then run `statements`."""
    from sqlalchemy import text

    from marketplace.db.engine import create_engine
    from marketplace.db.migrate import upgrade

    engine = create_engine(url)
    try:
        if revision is not None:
            await upgrade(engine, revision)
        async with engine.begin() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


def test_the_commands_refuse_a_postgresql_database_not_at_this_codes_revision(monkeypatch, capsys) -> None:
    import asyncio

    import uvicorn

    from marketplace import cli
    from marketplace.db.migrate import head

    url = asyncio.run(fresh_postgres("revision"))
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("SECRET_KEY", "test-secret-key-0123456789abcdef")
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("uvicorn started"))

    def refused(*argv: str, redis: bool = False) -> str:
        if redis:
            monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/15")  # never reached: refused before
        cli.get_settings.cache_clear()
        try:
            code = cli.main(list(argv))
        finally:
            monkeypatch.delenv("REDIS_URL", raising=False)
        captured = capsys.readouterr()
        assert (code, captured.out) == (2, ""), (argv, captured)
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 or (argv == ("worker",) and lines[0].startswith("warning:")), captured.err
        return lines[-1]

    commands = [("serve", "--port", "8772"), ("operator", "create", "--name", "Ops"),
                ("operator", "revoke", "--id", "op_1"), ("ranking", "train")]  # fmt: skip
    try:
        needed = head()
        empty = f"database error: the database is empty (no migration applied); this code needs {needed}: run `marketplace db upgrade`"  # noqa: E501
        for argv in commands:
            assert refused(*argv) == empty
        assert refused("worker", redis=True) == empty

        asyncio.run(_migrate(url, "0028_replacement_forfeits"))  # the release before, not upgraded
        behind = (
            f"database error: the database is at revision 0028_replacement_forfeits; this code needs {needed}: "
            "run `marketplace db upgrade`"
        )
        for argv in commands:
            assert refused(*argv) == behind
        assert refused("worker", redis=True) == behind

        # Migrated by a later release than this code: refused too, with what to do about it.
        asyncio.run(_migrate(url, "head", "UPDATE alembic_version SET version_num = '0099_from_a_later_release'"))
        ahead = refused("operator", "create", "--name", "Ops")
        assert ahead.startswith(
            "database error: the database is at revision 0099_from_a_later_release, which this code does not know"
        ), ahead
        # Nor can this code's `db upgrade` migrate it: one line, not alembic's traceback (a tester).
        upgrade = refused("db", "upgrade")
        assert "0099_from_a_later_release" in upgrade and f"this code's migrations end at {needed}" in upgrade, upgrade

        asyncio.run(_migrate(url, None, f"UPDATE alembic_version SET version_num = '{needed}'"))
        cli.get_settings.cache_clear()
        assert cli.main(["operator", "create", "--name", "Ops"]) == 0  # at the head, it runs
        assert capsys.readouterr().out.startswith("mko_")
    finally:
        cli.get_settings.cache_clear()
        asyncio.run(_drop_postgres("revision"))


async def test_health_says_the_database_is_behind() -> None:
    """A server started on a database behind (`uvicorn marketplace.asgi:app` runs no command's check) is not called
    healthy: /health is a 503 naming the revisions, so a load balancer keeps requests off it."""
    import httpx

    from marketplace.app import create_app, shutdown, startup
    from marketplace.db.migrate import head
    from tests.conftest import make_settings

    url = await fresh_postgres("health")
    try:
        await _migrate(url, "0028_replacement_forfeits")
        app = create_app(make_settings(url), migrate_on_start=False, run_jobs_in_background=False)
        await startup(app.state)
        try:
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                answer = await client.get("/health")
                assert answer.status_code == 503, answer.text
                assert answer.json()["detail"] == (
                    f"the database is at revision 0028_replacement_forfeits; this code needs {head()}: "
                    "run `marketplace db upgrade`"
                )
                await _migrate(url, "head")
                assert (await client.get("/health")).status_code == 200  # upgraded: healthy, no restart needed
        finally:
            await shutdown(app.state)
    finally:
        await _drop_postgres("health")
