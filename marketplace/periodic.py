"""The periodic loop of an API process: it enqueues the periodic and daily jobs, refreshes the ranking core in
full now and then, and (in process) runs the jobs that are due."""

from __future__ import annotations

import asyncio
import logging

from litestar.datastructures import State

from marketplace.ranking.sync import ALL

log = logging.getLogger("marketplace")

# How often the periodic jobs (expiry, stale leads, lost first waves) are enqueued.
PERIODIC_SECONDS = 30.0
PERIODIC_RETRY_SECONDS = 5.0  # after a round of the periodic loop failed
RANKING_REFRESH_SECONDS = 300.0
# The daily jobs (model trainings): every process asks once a day, from its start; the first to ask in 23 hours
# sends them (a process started later in the day finds them sent).
DAILY_ONCE_SECONDS = 23 * 3600.0


async def run_periodic(state: State) -> None:
    """Enqueue the periodic jobs (every replica may: they are idempotent) and, in process, run due jobs. A round
    that fails (the database or the broker away for a moment) is logged and the loop goes on: ended, it would leave
    this process without its sweeps and its full ranking refresh for good."""
    from workers.actors import DAILY, PERIODIC

    loop = asyncio.get_running_loop()
    last = last_daily = float("-inf")
    last_ranking = loop.time()  # start-up has just built the core
    while True:
        try:
            if loop.time() - last >= PERIODIC_SECONDS:
                last = loop.time()
                for name in PERIODIC:  # not while the last one waits for a worker
                    state.jobs.enqueue_unless_queued(name)
            if loop.time() - last_daily >= 24 * 3600:
                last_daily = loop.time()
                for name in DAILY:  # once a day across the processes that share the queue
                    state.jobs.enqueue_once_per(name, DAILY_ONCE_SECONDS)
            if loop.time() - last_ranking >= RANKING_REFRESH_SECONDS:
                # Every process refreshes its own core in full now and then: caps reset with the day, and
                # category averages drift with history.
                last_ranking = loop.time()
                state.ranking_sync.changed(ALL)
            await state.jobs.run_due()
        except Exception:
            log.exception("a round of the periodic loop failed; the next one comes in %s s", PERIODIC_RETRY_SECONDS)
            await asyncio.sleep(PERIODIC_RETRY_SECONDS)
        await asyncio.sleep(0.2)
