"""Creating operators and tokens, resolving a bearer token to a principal, spending single-use links."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from marketplace.clock import utcnow
from marketplace.db.conflicts import violates
from marketplace.db.models import ApiToken, Business, Operator, UsedLink
from marketplace.errors import Forbidden, Gone
from marketplace.identity.links import LinkClaims
from marketplace.identity.tokens import hash_token, new_token
from marketplace.ids import new_id


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str  # "business", "operator" (the marketplace's) or "club" (a club's operator: id is the club's)
    id: str
    mode: str | None = None  # a business's mode
    status: str | None = None  # a business's status

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.id}"


async def create_operator(session: AsyncSession, name: str) -> tuple[Operator, str]:
    operator = Operator(id=new_id("op"), name=name, created_at=utcnow())
    session.add(operator)
    token = new_token("operator")
    await session.flush()
    session.add(ApiToken(id=new_id("tok"), token_hash=hash_token(token), operator_id=operator.id, created_at=utcnow()))
    return operator, token


def issue_business_token(session: AsyncSession, business_id: str) -> str:
    token = new_token("business")
    session.add(ApiToken(id=new_id("tok"), token_hash=hash_token(token), business_id=business_id, created_at=utcnow()))
    return token


def issue_club_token(session: AsyncSession, club_id: str) -> str:
    """A token for a club's operator (shown once): it invites businesses into its club and reads its club."""
    token = new_token("club")
    session.add(ApiToken(id=new_id("tok"), token_hash=hash_token(token), club_id=club_id, created_at=utcnow()))
    return token


async def reissue_club_token(session: AsyncSession, club_id: str) -> str:
    """Revoke every token of the club's operator (lost, leaked, or never had one) and issue a new one."""
    await session.execute(
        update(ApiToken).where(ApiToken.club_id == club_id, ApiToken.revoked_at.is_(None)).values(revoked_at=utcnow())
    )
    return issue_club_token(session, club_id)


# Built once: every request whose token is not in the principal cache reads it, and building the statement and its
# cache key cost SQLAlchemy about as much as the read.
_PRINCIPAL = (
    select(ApiToken.business_id, ApiToken.operator_id, ApiToken.club_id, Business.mode, Business.status)
    .outerjoin(Business, Business.id == ApiToken.business_id)
    .where(ApiToken.token_hash == bindparam("token_hash"), ApiToken.revoked_at.is_(None))
)


async def resolve_token(db: AsyncConnection | AsyncSession, token_hash: str) -> Principal | None:
    """The principal a bearer token (by its hash, `tokens.hash_token`, as the guard's cache keys it) stands for (None:
    unknown or revoked). `db` may be a bare connection: the guard reads it before any unit of work, and an ORM session
    would cost it more than the read."""
    row = (await db.execute(_PRINCIPAL, {"token_hash": token_hash})).first()
    if row is None:
        return None
    if row.operator_id is not None:
        return Principal(kind="operator", id=row.operator_id)
    if row.club_id is not None:
        return Principal(kind="club", id=row.club_id)
    return Principal(kind="business", id=row.business_id, mode=row.mode, status=row.status)


# A business's status as of now, its row held until the transaction ends. FOR SHARE waits for a block's update of
# the status and holds up one that comes after (FOR KEY SHARE would do neither: it does not conflict with an update
# of a non-key column). A block takes the business row first and its deals after, so an act takes this before any
# deal, lead or offer row of its own; an act that updates the business row itself takes that row FOR UPDATE first
# (two of them holding FOR SHARE and each waiting to update would deadlock) and reads this under its own lock.
_HELD_STATUS = select(Business.status).where(Business.id == bindparam("business_id")).with_for_update(read=True)


async def held_status(session: AsyncSession, business_id: str) -> str | None:
    """A business's status in the database, its row held against a block until the transaction ends (None: no such
    business). The guard's principal may be a moment old (another process blocked the business and this one has not
    heard yet): the database, not the cached principal, decides whether an act that changes something may go on."""
    return await session.scalar(_HELD_STATUS, {"business_id": business_id})


def refuse_blocked(status: str | None) -> None:
    """A blocked business's act that changes something is a 403 (what it may still settle is decided by the
    service of that act: exposures.update_status)."""
    if status == "blocked":
        raise Forbidden("this account is blocked")


async def refuse_if_blocked(session: AsyncSession, business_id: str) -> None:
    """403 unless the business is other than blocked in the database now; held so until the transaction ends."""
    refuse_blocked(await held_status(session, business_id))


async def spend_link(session: AsyncSession, claims: LinkClaims) -> None:
    """Mark a link used inside the caller's transaction; a second use is a 410."""
    try:
        async with session.begin_nested():
            # A plain INSERT, not an object: the session may already hold the row this one would duplicate.
            await session.execute(
                insert(UsedLink).values(link_id=claims.link_id, purpose=claims.purpose, used_at=utcnow())
            )
    except IntegrityError as exc:
        if not violates(exc, "pk_used_links"):
            raise
        raise Gone("this link has already been used") from exc
