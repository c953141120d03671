"""`Idempotency-Key` under refusal: the refused work is undone in a savepoint and the refusal is kept under the key in
the same transaction, so the key is never free in between (a concurrent request with it cannot work under it)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

from marketplace.clock import utcnow
from marketplace.db.models import FraudDirty, IdempotencyRecord
from marketplace.errors import Conflict, InvalidInput
from marketplace.fraud.services import mark_dirty
from marketplace.http.idempotency import run_idempotent
from marketplace.uow import UnitOfWork

SCOPE = "biz_idempotency_test"


def _marker(key: str) -> dict[str, Any]:
    # A row the work writes, to see whether its writes stood: a record of another scope (any table would do).
    return {"scope": "marker", "key": key, "request_hash": "-", "status_code": 200, "body": None,
            "created_at": utcnow()}


async def test_a_refusal_undoes_the_work_and_is_kept_under_the_key(client, app, db):
    ran: list[str] = []

    async def refused(uow: UnitOfWork) -> tuple[int, Any]:
        uow.session.add(IdempotencyRecord(**_marker("refused")))
        await uow.session.flush()
        uow.after_commit(lambda: ran.append("refused's job"))
        mark_dirty(uow.session, "biz_refused")  # a write left for the commit (db/at_commit.py)
        raise Conflict("this lead is full")

    with pytest.raises(Conflict):
        await run_idempotent(app.state.uow, SCOPE, "k-1", "body-1", refused)

    assert ran == []  # its follow-up never went out, nor the write it left for the commit
    assert await db.scalar(select(FraudDirty).where(FraudDirty.business_id == "biz_refused")) is None
    assert await db.scalar(select(IdempotencyRecord).where(IdempotencyRecord.key == "refused")) is None
    kept = await db.scalar(select(IdempotencyRecord).where(IdempotencyRecord.scope == SCOPE))
    assert (kept.key, kept.status_code, kept.body["status"]) == ("k-1", 409, 409)

    async def must_not_run(uow: UnitOfWork) -> tuple[int, Any]:
        raise AssertionError("a used key's work ran again")

    replay = await run_idempotent(app.state.uow, SCOPE, "k-1", "body-1", must_not_run)
    assert replay.status_code == 409 and replay.headers["Idempotent-Replayed"] == "true"
    with pytest.raises(InvalidInput):
        await run_idempotent(app.state.uow, SCOPE, "k-1", "body-2", must_not_run)


async def test_a_request_racing_a_refused_one_for_its_key_gets_the_refusal_not_a_turn(client, app, db):
    # The first request's work is refused while the second, with the same key and another body, waits for the key.
    # The key was let go between the refusal's rollback and storing it: the second then took the key and did its work.
    started = asyncio.Event()
    second_ran: list[bool] = []

    async def refused_slowly(uow: UnitOfWork) -> tuple[int, Any]:
        started.set()
        await asyncio.sleep(0.3)  # the second request is waiting for the key by now
        raise Conflict("no longer exclusive-able")

    async def second(uow: UnitOfWork) -> tuple[int, Any]:
        second_ran.append(True)
        uow.session.add(IdempotencyRecord(**_marker("second")))
        return 201, {"done": True}

    async def after_the_first_started() -> Any:
        await started.wait()
        return await run_idempotent(app.state.uow, SCOPE, "k-race", "body-B", second)

    first, other = await asyncio.gather(
        run_idempotent(app.state.uow, SCOPE, "k-race", "body-A", refused_slowly),
        after_the_first_started(),
        return_exceptions=True,
    )
    assert isinstance(first, Conflict)
    assert isinstance(other, InvalidInput), other  # the key was answered (with the refusal) for another body
    assert second_ran == []
    assert await db.scalar(select(IdempotencyRecord).where(IdempotencyRecord.key == "second")) is None
    kept = await db.scalar(select(IdempotencyRecord).where(IdempotencyRecord.key == "k-race"))
    assert (kept.request_hash, kept.status_code) == ("body-A", 409)


async def test_a_failure_that_is_not_a_refusal_leaves_the_key_free(client, app, db):
    # A 500 (or a 401/403, which say nothing of the request) keeps nothing: a retry works.
    async def broken(uow: UnitOfWork) -> tuple[int, Any]:
        raise RuntimeError("the disk is full")

    with pytest.raises(RuntimeError):
        await run_idempotent(app.state.uow, SCOPE, "k-free", "body", broken)
    assert await db.scalar(select(IdempotencyRecord).where(IdempotencyRecord.key == "k-free")) is None

    async def works(uow: UnitOfWork) -> tuple[int, Any]:
        return 201, {"ok": True}

    done = await run_idempotent(app.state.uow, SCOPE, "k-free", "body", works)
    assert done.status_code == 201


async def test_a_write_left_for_the_commit_comes_after_the_transactions_own_changes(client, app, db):
    """The fraud mark is a statement on the table, which does not autoflush: written first, its row would be held
    through the flush of the transaction's own changes (db/at_commit.py flushes them before the writers run)."""
    from sqlalchemy import event

    from marketplace.db.models import Business
    from tests.factories import register

    business_id, _ = await register(client)
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(" ".join(statement.split()[:3]).lower())

    engine = app.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        async with app.state.uow() as uow:
            business = await uow.session.get(Business, business_id)
            assert business is not None
            business.name = "Renamed at the commit"  # pending: flushed by the commit
            mark_dirty(uow.session, business_id)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    updates = [i for i, s in enumerate(sent) if s.startswith("update businesses")]
    marks = [i for i, s in enumerate(sent) if s.startswith("insert into fraud_dirty")]
    assert updates and marks and updates[0] < marks[0], sent
