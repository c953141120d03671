"""An IntegrityError is a conflict only when it broke the unique key the service means (CONVENTIONS §5): the
duplicate it guards against is still the documented 409, anything else (another key, a foreign key) is an error,
a 500 logged with its request id, never disguised as a conflict. Each test runs on SQLite and PostgreSQL, whose
errors name the broken key differently (db/conflicts.violates)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from marketplace.clock import utcnow
from marketplace.db.conflicts import violates
from marketplace.db.models import Business, CommissionPlanVersion, FraudAlert, UsedLink
from marketplace.fraud import services as fraud_services
from marketplace.fraud.rules import Score
from marketplace.ids import new_id
from tests.factories import business_body, register
from tests.integration.test_bad_input import assert_problem


async def broken(session: Any, write: Callable[[], Awaitable[Any]]) -> IntegrityError:
    """The IntegrityError the write raises (in a savepoint, so that the session goes on)."""
    with pytest.raises(IntegrityError) as raised:
        async with session.begin_nested():
            await write()
    return raised.value


def alert_row(business_id: str) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": new_id("alr"),
        "business_id": business_id,
        "status": "open",
        "risk_score": 0.9,
        "rule_score": 0.9,
        "model_score": None,
        "reasons": [],
        "evidence": [],
        "features": {},
        "opened_at": now,
        "updated_at": now,
    }


async def test_the_database_s_own_errors_name_the_key_they_broke(app, client):
    first, _ = await register(client)
    second, _ = await register(client)
    async with app.state.sessions() as session:
        email = await session.scalar(select(Business.email).where(Business.id == first))

        async def take_the_email() -> None:
            await session.execute(update(Business).where(Business.id == second).values(email=email))

        exc = await broken(session, take_the_email)
        assert violates(exc, "uq_businesses_email") and not violates(exc, "pk_businesses")

        async def reuse_a_link() -> None:
            row = {"link_id": "lnk-1", "purpose": "survey", "used_at": utcnow()}
            await session.execute(insert(UsedLink).values(row))
            await session.execute(insert(UsedLink).values(row))

        assert violates(await broken(session, reuse_a_link), "pk_used_links")

        async def open_a_second_alert() -> None:  # a partial unique index
            await session.execute(insert(FraudAlert).values(alert_row(first)))
            await session.execute(insert(FraudAlert).values(alert_row(first)))

        assert violates(await broken(session, open_a_second_alert), "uq_fraud_alerts_business_id_open")

        async def save_a_plan_version_twice() -> None:
            for _ in range(2):
                row = {"id": new_id("plan"), "name": "p", "version": 1, "definition": {}, "created_by": "x"}
                await session.execute(insert(CommissionPlanVersion).values(**row, created_at=utcnow()))

        assert violates(await broken(session, save_a_plan_version_twice), "uq_commission_plans_name_version")

        async def alert_a_business_that_is_not_there() -> None:  # a foreign key: no unique key at all
            await session.execute(insert(FraudAlert).values(alert_row("biz_missing")))

        exc = await broken(session, alert_a_business_that_is_not_there)
        assert not violates(exc, "uq_fraud_alerts_business_id_open") and not violates(exc, "pk_fraud_alerts")


async def test_a_duplicate_email_at_sign_up_is_still_the_documented_409(client):
    """Sign-up does not read the email first: the unique key refuses the duplicate, and that is the conflict."""
    body = business_body()
    assert (await client.post("/v1/businesses", json=body)).status_code == 201
    again = await client.post("/v1/businesses", json=business_body(email=body["email"]))
    problem = assert_problem(again, 409, "email")
    assert problem["errors"] == [{"field": "email", "message": "already registered"}]


async def test_a_sign_up_that_breaks_another_key_is_a_logged_500_not_email_taken(client, monkeypatch, caplog):
    """A new business whose id is already taken (here forced) breaks the primary key, not the email's: an error
    of the service, not the client's. (It was a 409 "a business with this email is already registered".)"""
    from marketplace.businesses import services as business_services

    existing, _ = await register(client)
    monkeypatch.setattr(business_services, "new_id", lambda prefix: existing if prefix == "biz" else new_id(prefix))
    with caplog.at_level(logging.ERROR, logger="marketplace"):
        response = await client.post("/v1/businesses", json=business_body())
    problem = assert_problem(response, 500)
    logged = [r for r in caplog.records if problem["request_id"] in r.getMessage()]
    assert logged and isinstance(logged[0].exc_info[1], IntegrityError)


async def test_an_alert_for_a_business_that_is_not_there_is_an_error_not_another_scan_s_alert(app, client):
    """_open_alert takes the one-open-alert key's violation as another scan's alert opened a moment ago (None);
    a broken foreign key is no such thing and raises. (It returned None: the alert silently lost.)"""
    ghost = Business(id="biz_missing", name="Ghost")
    score = Score(risk=0.9, rule=0.9, model=None, reasons=())
    async with app.state.sessions() as session:
        with pytest.raises(IntegrityError):
            await fraud_services._open_alert(session, app.state.settings, ghost, score, [], {}, utcnow())
