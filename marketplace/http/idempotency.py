"""`Idempotency-Key`: the first response to a key is stored in the same transaction as the work it did,
and replayed for a retry with the same body; the same key with another body is a 422.

The record is inserted before the work, so concurrent retries queue on its primary key in the database
(PostgreSQL) or on the write lock (SQLite) and then read the first response instead of working twice.

A part of a response that must not be kept at rest, or may no longer be shown later (a lead's contact once the
exposure is returned), is declared as `Private`: it is left out of the stored body and put back on a replay
from the live data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from litestar import Response
from litestar.params import HeaderParameter
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from marketplace.clock import utcnow
from marketplace.db.models import IdempotencyRecord
from marketplace.errors import Conflict, InvalidInput
from marketplace.uow import UnitOfWork, UnitOfWorkFactory

# The header as a handler parameter: `idempotency_key: IdempotencyKey = None`.
IdempotencyKey = Annotated[str | None, HeaderParameter(name="Idempotency-Key", required=False)]
Work = Callable[[UnitOfWork], Awaitable[tuple[int, Any]]]
MAX_KEY_LENGTH = 200


@dataclass(frozen=True, slots=True)
class Private:
    """What a stored response leaves out (`strip`, on the body as JSON builtins) and how a replay puts it back
    (`restore(uow, scope, body)`, reading the live data as the key's scope, the caller, may see it now)."""

    strip: Callable[[Any], Any]
    restore: Callable[[UnitOfWork, str, Any], Awaitable[Any]]


def request_hash(method: str, path: str, body: Any) -> str:
    digest = hashlib.sha256(f"{method} {path}\n".encode())
    digest.update(msgspec.json.encode(body, order="sorted"))
    return digest.hexdigest()


async def run_idempotent(
    uow_factory: UnitOfWorkFactory,
    scope: str,
    key: str | None,
    fingerprint: str,
    work: Work,
    private: Private | None = None,
) -> Response[Any]:
    if key is None:
        async with uow_factory() as uow:
            status, body = await work(uow)
        return Response(body, status_code=status)
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidInput.field("Idempotency-Key", f"must be 1 to {MAX_KEY_LENGTH} characters")

    try:
        async with uow_factory() as uow:
            previous = await _stored(uow, scope, key)
            if previous is not None:
                return await _replay(uow, previous, fingerprint, private)
            uow.session.add(
                IdempotencyRecord(
                    scope=scope, key=key, request_hash=fingerprint, status_code=0, body=None, created_at=utcnow()
                )
            )
            await uow.session.flush()  # concurrent holders of the same key wait here
            status, body = await work(uow)
            answer = msgspec.to_builtins(body)
            stored_body = private.strip(answer) if private is not None and status < 300 else answer
            await uow.session.execute(
                update(IdempotencyRecord)
                .where(IdempotencyRecord.scope == scope, IdempotencyRecord.key == key)
                .values(status_code=status, body=stored_body)
            )
            return Response(answer, status_code=status)
    except IntegrityError:
        async with uow_factory() as uow:
            previous = await _stored(uow, scope, key)
            if previous is None:
                raise
            return await _replay(uow, previous, fingerprint, private)


async def _stored(uow: UnitOfWork, scope: str, key: str) -> IdempotencyRecord | None:
    return (
        await uow.session.execute(
            select(IdempotencyRecord).where(IdempotencyRecord.scope == scope, IdempotencyRecord.key == key)
        )
    ).scalar_one_or_none()


async def _replay(
    uow: UnitOfWork, record: IdempotencyRecord, fingerprint: str, private: Private | None
) -> Response[Any]:
    """The first answer again, in the unit of work that read it (what it keeps private read back from there)."""
    if record.request_hash != fingerprint:
        raise InvalidInput.field("Idempotency-Key", "this key was already used with a different request")
    if record.status_code == 0:
        raise Conflict("a request with this Idempotency-Key is still being processed; retry shortly")
    body = record.body
    if private is not None and record.status_code < 300:
        body = await private.restore(uow, record.scope, body)
    return Response(body, status_code=record.status_code, headers={"Idempotent-Replayed": "true"})
