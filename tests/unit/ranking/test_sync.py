"""The ranking sync's timing within one process: other processes' news waits to be read back in batches, this
process's own changes never wait for that, and an event of this process moves its core at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime

import pytest

from marketplace.db.engine import DatabaseUnavailable
from marketplace.ranking import sync as sync_module
from marketplace.ranking.events import Exposed
from marketplace.ranking.sync import RankingSync
from tests.unit.ranking.fakes import RecordingRanker, no_session


def _gathering(sync: RankingSync, *ids: str, seconds: float = 30.0) -> None:
    """What the Redis listener does with another process's news: pending, read back after a while."""
    sync._pending.update(ids)
    sync._schedule(after=seconds)


async def test_a_change_of_this_process_does_not_wait_for_other_processes_news_to_gather() -> None:
    ranker = RecordingRanker()
    sync = RankingSync(ranker, no_session)  # type: ignore[arg-type]
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
    sync = RankingSync(ranker, no_session)  # type: ignore[arg-type]
    _gathering(sync, "biz_remote")
    await asyncio.wait_for(sync.settled(), 2.0)  # e.g. a wave job, before it ranks
    assert ranker.refreshed == ["biz_remote"]


async def test_other_processes_news_gathers_into_one_read() -> None:
    ranker = RecordingRanker()
    sync = RankingSync(ranker, no_session)  # type: ignore[arg-type]
    _gathering(sync, "biz_a", seconds=0.05)
    _gathering(sync, "biz_b", seconds=0.05)
    await asyncio.sleep(0.01)
    assert ranker.refreshed == []
    await asyncio.sleep(0.2)
    assert sorted(ranker.refreshed) == ["biz_a", "biz_b"]


async def test_an_event_of_this_process_moves_its_core_at_once_even_while_a_read_is_pending() -> None:
    ranker = RecordingRanker()
    sync = RankingSync(ranker, no_session)  # type: ignore[arg-type]
    _gathering(sync, "biz_busy")
    event = Exposed("biz_busy", "plumbing", datetime(2026, 1, 5), 500)
    sync.record(event)
    assert ranker.applied == [event]  # at once; the pending read still comes, and has the last word
    await asyncio.wait_for(sync.settled(), 2.0)
    assert ranker.refreshed == ["biz_busy"]


class FailingSessions:
    """A session factory whose first `failures` sessions cannot be had (the database refused the connection)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[None]:
        if self.failures:
            self.failures -= 1
            raise DatabaseUnavailable("TooManyConnectionsError", "sorry, too many clients already")
        yield None


async def test_businesses_whose_read_back_failed_are_still_pending_and_read_by_the_next_one() -> None:
    ranker = RecordingRanker()
    sync = RankingSync(ranker, FailingSessions(failures=1))  # type: ignore[arg-type]
    sync._pending.update({"biz_a", "biz_b"})
    with pytest.raises(DatabaseUnavailable):
        await sync.flush()
    assert sync._pending == {"biz_a", "biz_b"}  # not lost: this process's core would stay stale until a full refresh
    assert ranker.refreshed == []
    await sync.flush()
    assert sorted(ranker.refreshed) == ["biz_a", "biz_b"]
    assert not sync._pending


async def test_a_background_read_back_that_fails_is_logged_and_tried_again(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sync_module, "REFLUSH_FIRST_SECONDS", 0.0)
    ranker = RecordingRanker()
    sync = RankingSync(ranker, FailingSessions(failures=1))  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="marketplace.ranking"):
        sync.changed("biz_a")
        first = sync._flushing
        assert first is not None
        await asyncio.wait([first])
    assert first.exception() is None  # not a task that died with "Task exception was never retrieved"
    assert "could not read 1 businesses back into the ranking" in caplog.text
    for _ in range(100):  # the retry, once the database answers again
        if ranker.refreshed:
            break
        await asyncio.sleep(0.01)
    assert ranker.refreshed == ["biz_a"]
    assert not sync._pending
    await sync.stop()
