"""The ranking sync's timing within one process: other processes' news waits to be read back in batches, this
process's own changes never wait for that, and an event of this process moves its core at once."""

from __future__ import annotations

import asyncio
from datetime import datetime

from marketplace.ranking.events import Exposed
from marketplace.ranking.sync import RankingSync
from tests.unit.ranking.fakes import RecordingRanker, no_session


def _gathering(sync: RankingSync, *ids: str, seconds: float = 30.0) -> None:
    """What the Redis listener does with another process's news: pending, read back after a while."""
    sync._pending.update(ids)
    sync._schedule(after=seconds)


async def test_a_change_of_this_process_does_not_wait_for_other_processes_news_to_gather() -> None:
    ranker = RecordingRanker()
    sync = RankingSync(ranker, no_session)
    _gathering(sync, "biz_remote")
    await asyncio.sleep(0.01)
    assert ranker.refreshed == []  # still gathering
    sync.changed("biz_local")
    for _ in range(100):  # read back within moments, not after the 30 s of gathering
        if ranker.refreshed:
            break
        await asyncio.sleep(0.01)
    assert sorted(ranker.refreshed) == ["biz_local", "biz_remote"]  # one read took both


async def test_waiting_for_the_core_does_not_wait_for_other_processes_news_to_gather() -> None:
    ranker = RecordingRanker()
    sync = RankingSync(ranker, no_session)
    _gathering(sync, "biz_remote")
    await asyncio.wait_for(sync.settled(), 2.0)  # e.g. a wave job, before it ranks
    assert ranker.refreshed == ["biz_remote"]


async def test_other_processes_news_gathers_into_one_read() -> None:
    ranker = RecordingRanker()
    sync = RankingSync(ranker, no_session)
    _gathering(sync, "biz_a", seconds=0.05)
    _gathering(sync, "biz_b", seconds=0.05)
    await asyncio.sleep(0.01)
    assert ranker.refreshed == []
    await asyncio.sleep(0.2)
    assert sorted(ranker.refreshed) == ["biz_a", "biz_b"]


async def test_an_event_of_this_process_moves_its_core_at_once_even_while_a_read_is_pending() -> None:
    ranker = RecordingRanker()
    sync = RankingSync(ranker, no_session)
    _gathering(sync, "biz_busy")
    event = Exposed("biz_busy", "plumbing", datetime(2026, 1, 5), 500)
    sync.record(event)
    assert ranker.applied == [event]  # at once; the pending read still comes, and has the last word
    await asyncio.wait_for(sync.settled(), 2.0)
    assert ranker.refreshed == ["biz_busy"]
