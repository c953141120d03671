"""Writes a transaction leaves to its commit.

A few rows are taken by nearly every transaction of the marketplace: the invoice number's sequence (every charge)
and a business's fraud mark (every report on its deals). A transaction that takes one holds it until it ends, so
whatever it does after taking it, every other transaction that needs the row waits for. Such writes are queued on
the session instead (`defer`) and done by a writer registered for them (`at_commit`), as the outermost transaction
commits: the row is held for the commit alone. Writers run in the order they were registered, so transactions
take these rows in one order (no deadlock between them). A transaction that rolls back forgets what it queued;
a savepoint rolled back does not by itself: its owner puts the queues back as they were (`queued`, `requeue`:
see `UnitOfWork.attempt`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

Writer = Callable[[Session, list[Any]], None]
_WRITERS: dict[str, Writer] = {}


def at_commit(key: str) -> Callable[[Writer], Writer]:
    """Register the writer of what transactions queue under `key`; it runs inside the commit, after the session's
    pending changes are flushed."""

    def register(writer: Writer) -> Writer:
        _WRITERS[key] = writer
        return writer

    return register


def defer(session: AsyncSession | Session, key: str, item: Any) -> None:
    """Queue `item` for the writer of `key`, to be written as this session's transaction commits."""
    session.info.setdefault(key, []).append(item)


def queued(session: AsyncSession | Session) -> dict[str, int]:
    """How much is queued under each key now: a mark to put the queues back to (`requeue`)."""
    return {key: len(session.info.get(key, ())) for key in _WRITERS}


def requeue(session: AsyncSession | Session, mark: dict[str, int]) -> None:
    """Forget what was queued since `mark` (the work of a savepoint that rolled back)."""
    for key in _WRITERS:
        items = session.info.get(key)
        if items is not None:
            del items[mark.get(key, 0) :]


@event.listens_for(Session, "before_commit")
def _write(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint: the writes wait for the transaction itself
    if any(session.info.get(key) for key in _WRITERS):
        # The transaction's own changes first: a writer's statement on a table does not flush them (only an ORM
        # statement autoflushes), and the row it takes would be held through that flush too.
        session.flush()
    for key, writer in _WRITERS.items():
        items = session.info.pop(key, None)
        if items:
            writer(session, items)


@event.listens_for(Session, "after_soft_rollback")
def _forget(session: Session, previous_transaction: Any) -> None:
    if not session.in_transaction():  # the outermost transaction ended: what it queued never happened
        for key in _WRITERS:
            session.info.pop(key, None)
