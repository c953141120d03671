"""`Idempotency-Key`: the first response to a key is stored in the same transaction as the work it did,
and replayed for a retry with the same body; the same key with another body is a 422. A refusal (404, 409, 422
from the work) is kept under the key too: the work ran in a savepoint, undone, and the refusal is stored in its place.

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
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from marketplace.clock import utcnow
from marketplace.db.models import IdempotencyRecord
from marketplace.db.statements import table
from marketplace.errors import Conflict, InvalidInput, MarketplaceError
from marketplace.http.problems import PROBLEM, problem_body
from marketplace.uow import UnitOfWork, UnitOfWorkFactory

# The header as a handler parameter: `idempotency_key: IdempotencyKey = None`.
IDEMPOTENCY_KEY = "Idempotency-Key"
MAX_KEY_LENGTH = 200
IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name=IDEMPOTENCY_KEY,
        required=False,
        description=(
            "Any string of 1 to 200 characters, unique per request: a retry with the same key and body gets the first "
            "answer (`Idempotent-Replayed: true`), the same key with another body a 422. Keys are the caller's own."
        ),
        # Checked by run_idempotent (a 422 naming the header); here for the schema.
        schema_extra={"minLength": 1, "maxLength": MAX_KEY_LENGTH},
    ),
]
Work = Callable[[UnitOfWork], Awaitable[tuple[int, Any]]]


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

    refusal: MarketplaceError | None = None
    try:
        async with uow_factory() as uow:
            # The key is taken first, by its primary key: a key used before (or being used by a concurrent retry,
            # which this insert waits for) raises, and is answered from its record below. No read first: a used key
            # is the rare case, and the read cost a retry-free request as much as the insert.
            await uow.session.execute(
                _TAKE,
                {
                    "scope": scope,
                    "key": key,
                    "request_hash": fingerprint,
                    "status_code": 0,
                    "body": None,
                    "created_at": utcnow(),
                },
            )
            try:
                # The work in a savepoint: a refusal undoes it but keeps the key, answered with the refusal in this
                # same transaction. The key is never free in between, so a concurrent request with the key (another
                # body, or the same one once the state has changed) gets this answer rather than working under it.
                async with uow.attempt():
                    status, body = await work(uow)
            except MarketplaceError as exc:
                if exc.status_code not in KEPT_REFUSALS:
                    raise
                refusal = exc
                await uow.session.execute(
                    _ANSWER,
                    {"b_scope": scope, "b_key": key, "status_code": exc.status_code, "body": problem_body(exc)},
                )
            else:
                answer = msgspec.to_builtins(body)
                stored_body = private.strip(answer) if private is not None and status < 300 else answer
                await uow.session.execute(
                    _ANSWER, {"b_scope": scope, "b_key": key, "status_code": status, "body": stored_body}
                )
                return Response(answer, status_code=status)
    except IntegrityError:
        # The key's record was there (or the work broke a constraint of its own: then there is none, and it raises).
        async with uow_factory() as uow:
            previous = await _stored(uow, scope, key)
            if previous is None:
                raise
            return await _replay(uow, previous, fingerprint, private)
    assert refusal is not None  # the only way out of the unit of work above without an answer
    raise refusal  # kept under the key, now committed


# Built once (SQLAlchemy builds a statement and its cache key at each call otherwise), on the table: the record is
# never an object of the session, and statements on the mapped class went through the ORM's bulk insert and update.
_RECORDS = table(IdempotencyRecord)
_TAKE = insert(_RECORDS)
_ANSWER = update(_RECORDS).where(_RECORDS.c.scope == bindparam("b_scope"), _RECORDS.c["key"] == bindparam("b_key"))


# A refusal the key answers again (the state or the body refused it: not found, a conflict, invalid): once a key has
# been answered, a retry gets that answer and another body is a 422, as for a success. Not an authentication or a
# permission refusal, which says nothing about the request (no work was tried).
KEPT_REFUSALS = frozenset({404, 409, 422})


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
    headers = {"Idempotent-Replayed": "true"}
    if record.status_code >= 400:  # a refusal kept under the key
        return Response(body, status_code=record.status_code, media_type=PROBLEM, headers=headers)
    if private is not None and record.status_code < 300:
        body = await private.restore(uow, record.scope, body)
    return Response(body, status_code=record.status_code, headers=headers)
