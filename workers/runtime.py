"""What an actor needs to run: a unit-of-work factory, settings, the job queue and the ranking.

The API process binds its own (in-process mode); a dramatiq worker process builds them on first use on
the event loop the AsyncIO middleware runs actors on, builds its ranking core from the database, and
keeps it in step with the API processes through Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace.db.engine import create_engine, create_session_factory
from marketplace.jobs import DramatiqJobs, Jobs
from marketplace.offers.closing import after_commit_handlers
from marketplace.ranking.policies import make_ranker
from marketplace.ranking.ports import Ranker
from marketplace.ranking.sync import RankingSync
from marketplace.settings import Settings, get_settings
from marketplace.uow import UnitOfWorkFactory


@dataclass
class Runtime:
    settings: Settings
    uow: UnitOfWorkFactory
    jobs: Jobs
    ranker: Ranker
    ranking_sync: RankingSync
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    engine: AsyncEngine | None = None
    """The engine this runtime made (None when the API process bound its own, which it closes itself)."""

    async def close(self) -> None:
        """Stop listening, finish the ranking sync and close the database pool (a worker shutting down)."""
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()
        await self.ranking_sync.stop()
        if self.engine is not None:
            await self.engine.dispose()


_runtime: Runtime | None = None
# One lock per event loop: a lock waited on binds to its loop, and a process may run actors on a new loop after
# an old one has stopped (a worker started again, as the tests do).
_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def loop_lock() -> asyncio.Lock:
    """The lock that builds the runtime once, on the running loop."""
    return _locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())


def bind(runtime: Runtime | None) -> None:
    global _runtime
    _runtime = runtime


async def current() -> Runtime:
    global _runtime
    if _runtime is not None:
        return _runtime
    async with loop_lock():
        if _runtime is None:
            import dramatiq

            settings = get_settings()
            engine = create_engine(settings.service.database_url, settings.database)
            sessions = create_session_factory(engine)
            ranker = make_ranker(settings.ranking.policy, settings)
            sync = RankingSync(ranker, sessions, settings.service.redis_url)
            await sync.start()
            jobs = DramatiqJobs(dramatiq.get_broker())
            uow = UnitOfWorkFactory(sessions, after_commit_handlers(settings, jobs))
            runtime = Runtime(settings, uow, jobs, ranker, sync, engine=engine)
            runtime.tasks.append(asyncio.get_running_loop().create_task(sync.listen()))
            _runtime = runtime
    return _runtime


async def close() -> None:
    """Close the runtime this process built for its actors, if any (see workers/broker.py: RuntimeShutdown)."""
    global _runtime
    runtime = _runtime
    if runtime is not None and runtime.engine is not None:  # not one the API process bound (it closes its own)
        _runtime = None
        await runtime.close()
