"""Two processes' ranking syncs over a real Redis: a change is read back in the other process and makes its
listeners (the principal cache) forget the business; a recorded claim moves only the ranking."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest

from marketplace.ranking.events import Exposed, Moved
from marketplace.ranking.sync import RankingSync
from tests.redis_clients import admin_client, cut
from tests.unit.ranking.fakes import RecordingRanker, no_session

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

pytestmark = pytest.mark.redis


async def _until(check: Any, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not heard within the time")


@contextlib.asynccontextmanager
async def _processes(*rankers: RecordingRanker, urls: tuple[str, ...] = ()) -> AsyncIterator[list[RankingSync]]:
    """One sync per ranker, as one process each (the first publishes; every other listens), started and stopped."""
    syncs = [RankingSync(r, no_session, urls[i] if i < len(urls) else REDIS_URL) for i, r in enumerate(rankers)]
    for sync in syncs:
        await sync.start()
    listening = [asyncio.create_task(sync.listen()) for sync in syncs[1:]]
    try:
        await asyncio.sleep(0.3)  # they have subscribed
        yield syncs
    finally:
        for task in listening:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sync in syncs:
            await sync.stop()


async def test_changes_and_records_reach_the_other_process() -> None:
    admin_client(REDIS_URL).close()
    here, there = RecordingRanker(), RecordingRanker()
    forgotten: list[str] = []
    async with _processes(here, there) as (a, b):
        b.listeners.append(forgotten.extend)
        a.changed("biz_blocked")
        await _until(lambda: "biz_blocked" in there.refreshed)
        assert "biz_blocked" in forgotten

        a.record(Exposed("biz_buyer", "plumbing", datetime(2026, 1, 5), 500, "biz_seller"))
        await _until(lambda: {"biz_buyer", "biz_seller"} <= set(there.refreshed))
        assert [e.business_id for e in here.applied] == ["biz_buyer"]  # applied in place where it happened
        assert "biz_buyer" not in here.refreshed  # nor read back there

        # A step inside one outcome class moves no score: it is neither applied nor published. The marker
        # sent after it arrives alone (one publisher's messages keep their order).
        a.record(Moved("biz_quiet", "plumbing", "contacted", was="undecided"))
        a.changed("biz_marker")
        await _until(lambda: "biz_marker" in there.refreshed)
        assert "biz_quiet" not in there.refreshed and not any(e.business_id == "biz_quiet" for e in here.applied)
        assert not {"biz_buyer", "biz_seller"} & set(forgotten)  # a claim leaves their tokens valid

        # Many reports published at once are read back together: one read of all their businesses, not one each.
        reads = there.reads
        many = [f"biz_busy_{i}" for i in range(20)]
        for business_id in many:
            a.record(Moved(business_id, "plumbing", "lost", was="undecided"))
        await _until(lambda: set(many) <= set(there.refreshed))
        assert there.reads - reads <= 2, there.reads - reads


async def test_a_listener_that_lost_redis_listens_again_and_reads_everything_back() -> None:
    # A Redis blip ended the listener for good: no process heard another again, and the job worker's waves never
    # reached a business that signed up afterwards. Its connection is cut here as a restart of Redis would.
    admin = admin_client(REDIS_URL)
    here, there = RecordingRanker(), RecordingRanker()
    forgotten: list[str] = []
    async with _processes(here, there) as (a, b):
        b.listeners.append(forgotten.extend)
        a.changed("biz_before")
        await _until(lambda: "biz_before" in there.refreshed)
        loads = there.loads
        assert cut(admin, f"marketplace-ranking-{b._origin}")  # its listening connection (and its publishing one)
        # It subscribes again, and reads everything back: what was published meanwhile is lost.
        await _until(lambda: there.loads > loads and "*" in forgotten)
        a.changed("biz_after")
        await _until(lambda: "biz_after" in there.refreshed)
        # A's publishing connection is cut as well: its next publish goes out all the same, on a new one.
        assert cut(admin, f"marketplace-ranking-{a._origin}")
        a.changed("biz_after_publisher_lost")
        await _until(lambda: "biz_after_publisher_lost" in there.refreshed)
    admin.close()


async def test_deployments_on_other_redis_databases_do_not_hear_each_other() -> None:
    # Pub/sub channels belong to the Redis server, not to a database: two deployments sharing a server on different
    # database numbers heard each other's changes (and full refreshes) before the channel was named for the database.
    admin_client(REDIS_URL).close()
    base, _, db = REDIS_URL.rpartition("/")
    other_url = f"{base}/{(int(db or 0) + 1) % 16}"
    same, other = RecordingRanker(), RecordingRanker()
    async with _processes(RecordingRanker(), same, other, urls=(REDIS_URL, REDIS_URL, other_url)) as (a, _, _):
        a.changed("biz_one_deployment")
        await _until(lambda: "biz_one_deployment" in same.refreshed)
        await asyncio.sleep(0.3)
        assert other.refreshed == []
