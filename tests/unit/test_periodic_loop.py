"""The app's periodic loop goes on after a failed round (a broker or a database away for a moment): ended, it
would leave the process without its sweeps and its full ranking refresh for good."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace

from marketplace import periodic


class FlakyJobs:
    def __init__(self) -> None:
        self.enqueued: list[str] = []
        self.rounds = 0

    def enqueue(self, name: str, *args: object, delay_seconds: float = 0) -> None:
        if not self.enqueued:
            self.enqueued.append("refused")
            raise ConnectionError("the broker is away")
        self.enqueued.append(name)

    def enqueue_once_per(self, name: str, seconds: float) -> None:
        self.enqueue(name)

    def enqueue_unless_queued(self, name: str) -> None:
        self.enqueue(name)

    async def run_due(self) -> int:
        self.rounds += 1
        return 0


async def test_a_failed_round_does_not_end_the_periodic_loop(monkeypatch):
    monkeypatch.setattr(periodic, "PERIODIC_RETRY_SECONDS", 0.01)
    jobs = FlakyJobs()
    state = SimpleNamespace(jobs=jobs, ranking_sync=SimpleNamespace(changed=lambda *ids: None))
    task = asyncio.create_task(periodic.run_periodic(state))  # type: ignore[arg-type]
    try:
        for _ in range(100):
            await asyncio.sleep(0.02)
            if jobs.rounds >= 2:
                break
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert jobs.enqueued[0] == "refused" and jobs.rounds >= 2  # it went on, and the daily jobs were sent after
    assert "train_ranking_model" in jobs.enqueued
