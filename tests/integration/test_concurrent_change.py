"""A request the database undoes for another transaction's sake (a deadlock on PostgreSQL, a write lock another
process holds past the wait on SQLite) is a 503 problem with Retry-After: nothing of it is kept, its
Idempotency-Key is not spent, and the same request sent again goes through."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from marketplace.db import sqlite_driver
from marketplace.db.models import Exposure, LedgerTransaction
from tests.conftest import PG_ADMIN_DSN, PG_TEST_DB
from tests.factories import auth, offer_lead_to, register, submit_lead


@asynccontextmanager
async def sqlite_writer_elsewhere(database_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """Another process's connection holding SQLite's write lock, and the service waiting a fraction of a second for
    it instead of its thirty."""
    monkeypatch.setattr(sqlite_driver, "LOCK_WAIT_SECONDS", 0.3)
    other = sqlite3.connect(database_url.split("///", 1)[1], isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


async def claim_in_a_postgres_deadlock(client: Any, path: str, headers: dict[str, str], offer_id: str, lead_id: str):
    """The claim takes its lead's row, then waits for its offer's row, which another transaction holds; that one then
    asks for the lead's row. PostgreSQL undoes the claim: the other transaction never looks for a deadlock itself
    (its deadlock_timeout is a minute), while the claim's backend looks a second after it began to wait."""
    dsn = PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{PG_TEST_DB}"
    other, watcher = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        await other.execute("SET deadlock_timeout = '1min'")
        await other.execute("BEGIN")
        await other.execute("SELECT 1 FROM offers WHERE id = $1 FOR UPDATE", offer_id)
        holder = other.get_server_pid()
        claim = asyncio.ensure_future(client.post(path, headers=headers, json={"exclusive": False}))
        for _ in range(1000):  # until the claim waits for the offer's row (read outside any open transaction)
            blocked = "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))"
            if await watcher.fetchval(blocked, holder):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the claim never waited for the offer's row")
        locking = asyncio.ensure_future(other.execute("SELECT 1 FROM leads WHERE id = $1 FOR UPDATE", lead_id))
        answer = await asyncio.wait_for(claim, timeout=30)
        await locking
        await other.execute("ROLLBACK")
        return answer
    finally:
        await other.close()
        await watcher.close()


async def test_a_claim_undone_by_a_concurrent_transaction_is_a_503_and_goes_through_when_sent_again(
    app, client, db, database_url, monkeypatch
):
    business_id, token = await register(client, "lead_buyer")
    lead_id = await submit_lead(client)
    (offer_id,) = await offer_lead_to(app, lead_id, [business_id])
    path, headers = f"/v1/offers/{offer_id}/claim", {**auth(token), "Idempotency-Key": "claim-once"}
    transactions = await db.count(LedgerTransaction)

    if database_url.startswith("sqlite"):
        async with sqlite_writer_elsewhere(database_url, monkeypatch):
            answer = await client.post(path, headers=headers, json={"exclusive": False})
    else:
        answer = await claim_in_a_postgres_deadlock(client, path, headers, offer_id, lead_id)

    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.headers["retry-after"] == "1"
    problem = answer.json()
    assert problem["type"].endswith("/concurrent-change") and problem["retry_after_seconds"] == 1
    assert problem["request_id"]
    # Nothing of it stands: no exposure, no charge.
    assert await db.count(Exposure, Exposure.lead_id == lead_id) == 0
    assert await db.count(LedgerTransaction) == transactions

    again = await client.post(path, headers=headers, json={"exclusive": False})
    assert again.status_code == 201, again.text
    assert again.json()["contact"]["phone"]
    assert await db.count(Exposure, Exposure.lead_id == lead_id) == 1
