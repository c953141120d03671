"""The unit of work: one database transaction per request or job, and the jobs to enqueue once it commits."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from marketplace.db import at_commit

if TYPE_CHECKING:
    from marketplace.jobs import Jobs

log = logging.getLogger("marketplace.uow")

_JOBS_KEY = "jobs_after_commit"


def enqueue_after_commit(session: AsyncSession | Session, actor_name: str, *args: Any) -> None:
    """Queue a job for once this session's transaction has committed, from code that holds the session alone (the
    ledger: whoever moved the money): its unit of work sends it, once however often it was queued."""
    session.info.setdefault(_JOBS_KEY, {})[(actor_name, *args)] = None


def _queued_jobs(session: AsyncSession) -> dict[tuple[Any, ...], None]:
    queued: dict[tuple[Any, ...], None] = session.info.setdefault(_JOBS_KEY, {})
    return queued


@dataclass
class UnitOfWork:
    session: AsyncSession
    jobs: Jobs | None = None
    """Where the jobs the session queued (enqueue_after_commit) are sent once it commits (None: nowhere, a command
    line tool's unit of work that moves no money)."""
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
        queued = dict(_queued_jobs(self.session))
        savepoint = await self.session.begin_nested()
        try:
            yield
        except BaseException:
            await savepoint.rollback()
            del self._after_commit[jobs:]
            at_commit.requeue(self.session, writes)
            self.session.info[_JOBS_KEY] = queued
            raise
        await savepoint.commit()

    async def commit(self) -> None:
        await self.session.commit()
        jobs, self._after_commit = self._after_commit, []
        queued = self.session.info.pop(_JOBS_KEY, {})
        if self.jobs is not None:
            jobs.extend(functools.partial(self.jobs.enqueue, *job) for job in queued)
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
        self.session.info.pop(_JOBS_KEY, None)
        await self.session.rollback()


class UnitOfWorkFactory:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], jobs: Jobs | None = None) -> None:
        self.sessions = sessions
        self.jobs = jobs

    def __call__(self) -> _UowContext:
        return _UowContext(self.sessions, self.jobs)


class _UowContext:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], jobs: Jobs | None = None) -> None:
        self._sessions = sessions
        self._jobs = jobs
        self._uow: UnitOfWork | None = None

    async def __aenter__(self) -> UnitOfWork:
        self._uow = UnitOfWork(self._sessions(), self._jobs)
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
