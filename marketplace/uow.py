"""The unit of work: one database transaction per request or job, and the jobs to enqueue once it commits."""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from marketplace.db import at_commit

log = logging.getLogger("marketplace.uow")

_QUEUE = "after_commit"

Handler = Callable[[AsyncSession, list[Any]], Any]
"""What a unit of work does, once committed, with the facts of one type its transaction recorded (after_commit):
given its session and those facts in the order they were recorded; it may be a coroutine function."""


def after_commit(session: AsyncSession | Session, follow_up: Any) -> None:
    """Queue something for once this session's transaction has committed, from code that holds the session alone:
    a callable (a job to enqueue, say), called then; or a fact (an object of a type that a layer above handles, e.g.
    the ledger's "credit freed"), handed with the others of its type to the handler its unit of work was given
    (UnitOfWorkFactory(handlers=...)). Forgotten if the transaction rolls back; a failed UnitOfWork.attempt
    forgets what it queued."""
    session.info.setdefault(_QUEUE, []).append(follow_up)


def _queued(session: AsyncSession | Session) -> list[Any]:
    queued: list[Any] = session.info.setdefault(_QUEUE, [])
    return queued


@event.listens_for(Session, "after_soft_rollback")
def _forget(session: Session, _transaction: Any) -> None:
    if not session.in_transaction():  # the outermost transaction ended: what it queued never happened
        session.info.pop(_QUEUE, None)


@dataclass
class UnitOfWork:
    session: AsyncSession
    handlers: Mapping[type, Handler] = field(default_factory=dict)
    """What is done, once the transaction commits, with the facts of each type it recorded (after_commit). A fact
    of a type with no handler (a command line tool's unit of work) is logged as dropped."""

    def after_commit(self, job: Callable[[], Any]) -> None:
        """Run `job` only once the transaction has committed (e.g. enqueue a worker message)."""
        after_commit(self.session, job)

    @asynccontextmanager
    async def attempt(self) -> AsyncIterator[None]:
        """A part of the unit of work that may fail on its own (in a savepoint): if it raises, everything it did is
        undone (its rows, the jobs and the writes it left for the commit) and the rest of the unit of work stands,
        to be committed with what the caller does next."""
        follow_ups, writes = len(_queued(self.session)), at_commit.queued(self.session)
        savepoint = await self.session.begin_nested()
        try:
            yield
        except BaseException:
            await savepoint.rollback()
            del _queued(self.session)[follow_ups:]
            at_commit.requeue(self.session, writes)
            raise
        await savepoint.commit()

    async def commit(self) -> None:
        await self.session.commit()
        follow_ups: list[Callable[[], Any]] = []
        facts: dict[type, list[Any]] = defaultdict(list)
        for item in self.session.info.pop(_QUEUE, ()):
            if callable(item):
                follow_ups.append(item)
            else:
                facts[type(item)].append(item)
        for kind, items in facts.items():
            handler = self.handlers.get(kind)
            if handler is None:
                log.warning(
                    "%d %s recorded for after the commit dropped: this unit of work has no handler for them",
                    len(items),
                    kind.__name__,
                )
                continue
            follow_ups.append(functools.partial(handler, self.session, items))
        for job in follow_ups:
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
        self.session.info.pop(_QUEUE, None)
        await self.session.rollback()


class UnitOfWorkFactory:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], handlers: Mapping[type, Handler] | None = None
    ) -> None:
        self.sessions = sessions
        self.handlers: Mapping[type, Handler] = handlers or {}

    def __call__(self) -> _UowContext:
        return _UowContext(self.sessions, self.handlers)


class _UowContext:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], handlers: Mapping[type, Handler]) -> None:
        self._sessions = sessions
        self._handlers = handlers
        self._uow: UnitOfWork | None = None

    async def __aenter__(self) -> UnitOfWork:
        self._uow = UnitOfWork(self._sessions(), self._handlers)
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
