"""The unit of work: one database transaction per request or job, and the jobs to enqueue once it commits."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from marketplace.db import at_commit

log = logging.getLogger("marketplace.uow")


@dataclass
class UnitOfWork:
    session: AsyncSession
    _after_commit: list[Callable[[], Any]] = field(default_factory=list)

    def after_commit(self, job: Callable[[], Any]) -> None:
        """Run `job` only once the transaction has committed (e.g. enqueue a worker message)."""
        self._after_commit.append(job)

    @asynccontextmanager
    async def attempt(self) -> AsyncIterator[None]:
        """A part of the unit of work that may fail on its own (in a savepoint): if it raises, everything it did is
        undone (its rows, the jobs and the writes it left for the commit) and the rest of the unit of work stands,
        to be committed with what the caller does next."""
        jobs, writes = len(self._after_commit), at_commit.queued(self.session)
        savepoint = await self.session.begin_nested()
        try:
            yield
        except BaseException:
            await savepoint.rollback()
            del self._after_commit[jobs:]
            at_commit.requeue(self.session, writes)
            raise
        await savepoint.commit()

    async def commit(self) -> None:
        await self.session.commit()
        jobs, self._after_commit = self._after_commit, []
        for job in jobs:
            # What is committed stands, and its answer goes out: a follow-up that fails here (a job queue that
            # cannot be reached) is logged, and the periodic sweeps take up its work (a lead's first wave, a
            # business's fraud scan) from what the database holds. Failing the request instead would hide a
            # change that was made (a sign-up's token, shown once, lost).
            try:
                result = job()
                if hasattr(result, "__await__"):
                    await result
            except Exception:
                log.exception("a follow-up of a committed change failed; the periodic sweeps take it up")

    async def rollback(self) -> None:
        self._after_commit.clear()
        await self.session.rollback()


class UnitOfWorkFactory:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    def __call__(self) -> _UowContext:
        return _UowContext(self.sessions)


class _UowContext:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._uow: UnitOfWork | None = None

    async def __aenter__(self) -> UnitOfWork:
        self._uow = UnitOfWork(self._sessions())
        return self._uow

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self._uow is not None
        try:
            if exc_type is None:
                await self._uow.commit()
            else:
                await self._uow.rollback()
        finally:
            await self._uow.session.close()
